/**
 * A small reflector (list → watch → re-watch / relist) over the Kubernetes API.
 *
 * Why not client-node's `makeInformer`: in 1.4.0 it has no reconnect backoff, its timeout never
 * fires, it stops for good on any error but 410, it never asks for bookmarks or a server timeout, and
 * `stop()` emits 'error' (../shared/notes/stack.md). Working around all of that is more code than this
 * loop. client-node is still used for what it does well: kubeconfig, auth and TLS (`ApiTransport`).
 *
 * Behaviour (as client-go's reflector and pager):
 * - the first list asks for `resourceVersion=0` (served from the API server's watch cache) with
 *   `limit=500`; a server that pages anyway is followed through `continue` tokens, and when a token
 *   expires (410) the list is redone in one piece at the latest resourceVersion;
 * - list items come without `kind`/`apiVersion` (kube-apiserver leaves TypeMeta off the items of
 *   typed lists, kubernetes/kubernetes#3030): they are filled in from the resource being listed;
 * - then watch from the list's resourceVersion, with `allowWatchBookmarks` and `timeoutSeconds`;
 *   a watch that ends is re-opened from the last seen resourceVersion (bookmarks advance it);
 * - 410 Expired (HTTP or ERROR event) → relist from the last resourceVersion (served from the cache);
 *   if that list is expired or too new for the server, relist at once with resourceVersion="";
 * - any other failure → retry with exponential backoff and jitter (Retry-After respected);
 * - deadlines measure inactivity: a list or watch is dead after that long without a byte, however
 *   long a big response takes in total;
 * - one watch event may take at most `maxEventBytes`; a longer line is an error and a relist, and
 *   lines are split in time linear in the bytes received.
 */
import http from 'node:http';
import https from 'node:https';
import type { KubeConfig } from '@kubernetes/client-node';
import { log } from '../util/log.js';

/** Minimal view of an API object: what the reflector needs to key and version it. */
export interface ObjectMeta {
  readonly name?: string;
  readonly namespace?: string;
  readonly resourceVersion?: string;
}

export interface KubeObject {
  readonly metadata?: ObjectMeta;
  readonly [field: string]: unknown;
}

/** One GET against the API server; the body is streamed (watches never end on their own). */
export interface ApiResponse {
  readonly status: number;
  readonly body: NodeJS.ReadableStream & { destroy(error?: Error): void };
  /** `Retry-After` in seconds, when the server sent one. */
  readonly retryAfterSeconds?: number;
}

/** How the reflector talks to the API: path (with query) in, response out; aborted via `signal`. */
export interface ApiTransport {
  get(pathAndQuery: string, signal: AbortSignal): Promise<ApiResponse>;
}

/** What to list/watch. */
export interface ResourceSpec {
  /** Name for logs and health, e.g. "services". */
  readonly name: string;
  /** Collection path, e.g. `/api/v1/services`. */
  readonly path: string;
  /** The kind of the items, e.g. `Service` (set on list items, which carry none). */
  readonly kind: string;
  /** Their apiVersion, e.g. `v1` or `discovery.k8s.io/v1`. */
  readonly apiVersion: string;
  readonly labelSelector?: string;
  readonly fieldSelector?: string;
  /**
   * Keeps only what the state is built from (a Pod's labels, node, addresses and named ports, not
   * its managedFields, conditions or container statuses): applied to list items and watch objects
   * before they are stored, so 10k pods cost kilobytes each less. A MODIFIED event whose object,
   * transformed, is the stored one but for its resourceVersion changes nothing and wakes nobody:
   * the pods' frequent status writes do not rebuild the state. Must keep metadata.name, namespace
   * and resourceVersion.
   */
  readonly transform?: (obj: KubeObject) => KubeObject;
}

export interface BackoffOptions {
  readonly initialMs: number;
  readonly maxMs: number;
  readonly factor: number;
  /** 0..1: the delay is multiplied by a random factor in [1 - jitter, 1]. */
  readonly jitter: number;
}

export interface ReflectorOptions {
  /**
   * Watches ask for a server timeout between this and twice this (random, as client-go's
   * minWatchTimeout: nodes do not reconnect in step). Default 300.
   */
  readonly watchTimeoutSeconds: number;
  /** Extra time past the watch's timeout of silence before the watchdog declares it dead. */
  readonly watchdogGraceMs: number;
  /** A list (each page) with no byte received for this long is dead. Default 60 s. */
  readonly listIdleTimeoutMs: number;
  /**
   * A watch that the server ends sooner than this without delivering anything counts as a failure
   * (backoff), so a server that closes every watch at once cannot drive a hot reconnect loop.
   */
  readonly minWatchMs: number;
  /** Page size of lists (`limit`), as client-go's pager. Default 500. */
  readonly pageSize: number;
  /** The largest watch event (one line) accepted. Default 16 MiB. */
  readonly maxEventBytes: number;
  /** The largest list response (one page) accepted. Default 500 MiB (under V8's string limit). */
  readonly maxListBytes: number;
  readonly backoff: BackoffOptions;
}

export const DEFAULT_REFLECTOR_OPTIONS: ReflectorOptions = {
  watchTimeoutSeconds: 300,
  watchdogGraceMs: 30_000,
  listIdleTimeoutMs: 60_000,
  minWatchMs: 1000,
  pageSize: 500,
  // etcd refuses objects over 1.5 MiB; their JSON with managedFields stays well below this.
  maxEventBytes: 16 * 1024 * 1024,
  maxListBytes: 500 * 1024 * 1024,
  backoff: { initialMs: 200, maxMs: 30_000, factor: 2, jitter: 0.5 },
};

/**
 * Why the API cannot be used, in fixed words (for /healthz and metrics: no error text, which can
 * carry a server's message or a credential plugin's output).
 */
export type ApiErrorCategory =
  'unreachable' | 'unauthorized' | 'forbidden' | 'credentials' | 'tls' | 'server-error' | 'bad-response';

export interface ReflectorStatus {
  readonly synced: boolean;
  /** Set while the reflector cannot reach (or keep) a working list/watch; epoch ms. */
  readonly disconnectedSince?: number;
  /** The last failure's text, for logs (may quote the server). */
  readonly lastError?: string;
  readonly lastErrorCategory?: ApiErrorCategory;
  /** Last resourceVersion seen (list, event or bookmark). */
  readonly resourceVersion?: string;
}

/** Backoff delay for the n-th consecutive failure (n >= 1). Pure given `random`. */
export function backoffDelay(
  failures: number,
  b: BackoffOptions,
  random: () => number = Math.random,
): number {
  if (failures <= 0) return 0;
  const base = Math.min(b.maxMs, b.initialMs * b.factor ** (failures - 1));
  return Math.round(base * (1 - b.jitter * random()));
}

/** `namespace/name`, or `name` for cluster-scoped objects. */
export function objectKey(obj: KubeObject): string {
  const md = obj.metadata ?? {};
  return md.namespace ? `${md.namespace}/${md.name ?? ''}` : (md.name ?? '');
}

/** Collection path with the selectors and `extra`, keys sorted as client-go encodes them. */
export function buildQuery(spec: ResourceSpec, extra: Readonly<Record<string, string>>): string {
  const params: Record<string, string> = { ...extra };
  if (spec.labelSelector) params.labelSelector = spec.labelSelector;
  if (spec.fieldSelector) params.fieldSelector = spec.fieldSelector;
  const q = new URLSearchParams(Object.entries(params).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  const s = q.toString();
  return s === '' ? spec.path : `${spec.path}?${s}`;
}

/**
 * An object as the watched type: `kind`/`apiVersion` from the resource (client-go decodes items
 * into the list's item type, whatever they say themselves). Pure.
 */
export function withTypeMeta(spec: Pick<ResourceSpec, 'kind' | 'apiVersion'>, obj: object): KubeObject {
  const { kind: _kind, apiVersion: _apiVersion, ...rest } = obj as Record<string, unknown>;
  void _kind;
  void _apiVersion;
  return { kind: spec.kind, apiVersion: spec.apiVersion, ...rest };
}

/** What a Status body says (kind Status, apiVersion v1). */
interface StatusInfo {
  readonly message?: string;
  readonly reason?: string;
  readonly code?: number;
  readonly causes: readonly string[];
  readonly retryAfterSeconds?: number;
}

function parseStatus(value: unknown): StatusInfo {
  const s = (typeof value === 'object' && value !== null ? value : {}) as Record<string, unknown>;
  const details = (typeof s.details === 'object' && s.details !== null ? s.details : {}) as Record<
    string,
    unknown
  >;
  const causes = Array.isArray(details.causes)
    ? details.causes.map((c) => {
        const reason = (c as { reason?: unknown } | null)?.reason;
        return typeof reason === 'string' ? reason : '';
      })
    : [];
  return {
    ...(typeof s.message === 'string' ? { message: s.message } : {}),
    ...(typeof s.reason === 'string' ? { reason: s.reason } : {}),
    ...(typeof s.code === 'number' ? { code: s.code } : {}),
    causes,
    ...(typeof details.retryAfterSeconds === 'number'
      ? { retryAfterSeconds: details.retryAfterSeconds }
      : {}),
  };
}

function statusOfText(text: string): StatusInfo {
  try {
    return parseStatus(JSON.parse(text));
  } catch {
    return { message: text.slice(0, 200), causes: [] };
  }
}

/** An error answer of the API (HTTP status or ERROR event), with the Status' reason. */
export class ApiError extends Error {
  readonly reason: string | undefined;
  readonly retryAfterSeconds: number | undefined;
  readonly causes: readonly string[];
  constructor(
    readonly code: number,
    message: string,
    status: StatusInfo = { causes: [] },
  ) {
    super(message);
    this.name = 'ApiError';
    this.reason = status.reason;
    this.retryAfterSeconds = status.retryAfterSeconds;
    this.causes = status.causes;
  }

  /** 410 Expired / Gone: the resourceVersion (or continue token) is no longer available. */
  get expired(): boolean {
    return this.code === 410 || this.reason === 'Expired' || this.reason === 'Gone';
  }

  /** 504 with the cause ResourceVersionTooLarge: the server has not reached that resourceVersion. */
  get tooLargeResourceVersion(): boolean {
    return this.code === 504 && this.causes.includes('ResourceVersionTooLarge');
  }
}

/**
 * The credentials of the kubeconfig user could not be prepared (an exec plugin or auth provider
 * failed, a token file is missing). The message never quotes the plugin's output: exec plugins
 * print refresh tokens and client secrets in their errors.
 */
export class CredentialError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CredentialError';
  }
}

/** A response broke the protocol (invalid JSON, an event too large, an unknown event type). */
export class ProtocolError extends Error {
  constructor(
    message: string,
    /** Whether a relist (rather than a re-watch) is needed to recover. */
    readonly relist: boolean,
  ) {
    super(message);
    this.name = 'ProtocolError';
  }
}

const TLS_CODES = new Set([
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'ERR_TLS_CERT_ALTNAME_INVALID',
  'ERR_SSL_WRONG_VERSION_NUMBER',
  'EPROTO',
]);

/** The fixed category of a failure (health and metrics never show the text). Pure. */
export function errorCategory(err: unknown): ApiErrorCategory {
  if (err instanceof CredentialError) return 'credentials';
  if (err instanceof ApiError) {
    if (err.code === 401) return 'unauthorized';
    if (err.code === 403) return 'forbidden';
    return 'server-error';
  }
  if (err instanceof ProtocolError) return 'bad-response';
  for (let e: unknown = err, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && TLS_CODES.has(code)) return 'tls';
  }
  return 'unreachable';
}

/**
 * Splits a byte stream into lines in time linear in its length (each byte is looked at once, a line
 * is joined once), refusing a line longer than `maxLineBytes` before buffering it. Lines are decoded
 * as UTF-8 whole, so a character split between chunks stays intact.
 */
export class LineSplitter {
  private parts: Buffer[] = [];
  private size = 0;

  constructor(readonly maxLineBytes: number) {}

  /** Feeds one chunk; returns the lines it completed (without the newline). */
  push(chunk: Buffer): string[] {
    const lines: string[] = [];
    let from = 0;
    for (let nl = chunk.indexOf(10, from); nl >= 0; nl = chunk.indexOf(10, from)) {
      this.check(nl - from);
      const piece = chunk.subarray(from, nl);
      lines.push(
        this.size === 0 ? piece.toString('utf8') : Buffer.concat([...this.parts, piece]).toString('utf8'),
      );
      this.parts = [];
      this.size = 0;
      from = nl + 1;
    }
    if (from < chunk.length) {
      this.check(chunk.length - from);
      this.parts.push(chunk.subarray(from));
      this.size += chunk.length - from;
    }
    return lines;
  }

  /** Bytes of the incomplete line held. */
  get pending(): number {
    return this.size;
  }

  private check(more: number): void {
    if (this.size + more > this.maxLineBytes) {
      throw new ProtocolError(
        `watch event larger than ${this.maxLineBytes} bytes (no newline after ${this.size + more} bytes)`,
        true,
      );
    }
  }
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done(): void {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}

interface ListPage {
  readonly items: readonly KubeObject[];
  readonly resourceVersion: string;
  readonly continueToken?: string;
}

export class Reflector {
  private readonly options: ReflectorOptions;
  private readonly store = new Map<string, KubeObject>();
  private readonly listeners = new Set<() => void>();
  private readonly stopController = new AbortController();
  private running?: Promise<void>;
  private synced = false;
  private syncWaiters: { resolve: () => void; reject: (e: Error) => void }[] = [];
  private rv?: string;
  /** client-go's isLastSyncResourceVersionUnavailable: the next list asks for the latest state. */
  private rvUnavailable = false;
  /** The server paged a list before: it honours limits (no watch cache), keep paging. */
  private paginated = false;
  private disconnectedSince?: number;
  private lastError?: string;
  private lastErrorCategory?: ApiErrorCategory;
  private failures = 0;
  /** When the current watch was established (for resetting the backoff after a good run). */
  private watchEstablishedAt?: number;
  /** Whether the current watch delivered any event (bookmarks included). */
  private watchDelivered = false;

  constructor(
    private readonly transport: ApiTransport,
    readonly spec: ResourceSpec,
    options: Partial<ReflectorOptions> = {},
    private readonly now: () => number = Date.now,
    private readonly random: () => number = Math.random,
  ) {
    this.options = { ...DEFAULT_REFLECTOR_OPTIONS, ...options };
  }

  /** Starts the list/watch loop (idempotent). */
  start(): void {
    if (this.running || this.stopController.signal.aborted) return;
    this.disconnectedSince = this.now();
    this.running = this.loop().catch((err: unknown) => {
      // The loop handles its own errors; reaching here is a bug, but must not kill the process.
      log.error('reflector loop crashed', { resource: this.spec.name, error: errorText(err) });
    });
  }

  async stop(): Promise<void> {
    this.stopController.abort();
    for (const w of this.syncWaiters) w.reject(new Error(`${this.spec.name}: stopped before initial sync`));
    this.syncWaiters = [];
    await this.running;
  }

  /** Resolves after the first complete list. */
  waitForSync(): Promise<void> {
    if (this.synced) return Promise.resolve();
    if (this.stopController.signal.aborted) {
      return Promise.reject(new Error(`${this.spec.name}: stopped before initial sync`));
    }
    return new Promise((resolve, reject) => this.syncWaiters.push({ resolve, reject }));
  }

  hasSynced(): boolean {
    return this.synced;
  }

  /** Current objects (the store), keyed by namespace/name, each with kind and apiVersion. */
  items(): ReadonlyMap<string, KubeObject> {
    return this.store;
  }

  /** Called after the store changed (relist or event). Returns an unsubscribe function. */
  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  status(): ReflectorStatus {
    return {
      synced: this.synced,
      ...(this.disconnectedSince !== undefined ? { disconnectedSince: this.disconnectedSince } : {}),
      ...(this.lastError !== undefined ? { lastError: this.lastError } : {}),
      ...(this.lastErrorCategory !== undefined ? { lastErrorCategory: this.lastErrorCategory } : {}),
      ...(this.rv !== undefined ? { resourceVersion: this.rv } : {}),
    };
  }

  // ----- loop -----

  private async loop(): Promise<void> {
    const stop = this.stopController.signal;
    let needList = true;
    while (!stop.aborted) {
      try {
        if (needList) {
          await this.list();
          needList = false;
        }
        const { events, durationMs } = await this.watch();
        if (stop.aborted) break;
        if (events === 0 && durationMs < this.options.minWatchMs) {
          throw new Error(`watch closed by the server after ${durationMs} ms without events`);
        }
        // A normal server-side close: re-watch at once from the last resourceVersion.
        this.failures = 0;
        this.watchEstablishedAt = undefined;
      } catch (err) {
        if (stop.aborted) break;
        // A watch that worked (for a while, or delivered events) before failing starts a fresh
        // backoff sequence.
        const est = this.watchEstablishedAt;
        if (est !== undefined && (this.watchDelivered || this.now() - est >= this.options.minWatchMs)) {
          this.failures = 0;
        }
        this.watchEstablishedAt = undefined;
        const expired = err instanceof ApiError && err.expired;
        if (err instanceof ApiError && err.tooLargeResourceVersion) this.rvUnavailable = true;
        if (expired || (err instanceof ProtocolError && err.relist) || this.rvUnavailable) needList = true;
        // The first 410 relists at once; repeated failures of any kind back off.
        let delay =
          expired && this.failures === 0 ? 0 : backoffDelay(this.failures + 1, this.options.backoff);
        if (err instanceof ApiError && err.retryAfterSeconds !== undefined) {
          delay = Math.max(delay, Math.min(err.retryAfterSeconds * 1000, this.options.backoff.maxMs));
        }
        this.failures++;
        this.markFailure(err, expired);
        log.warn('watch failed, retrying', {
          resource: this.spec.name,
          error: errorText(err),
          relist: needList,
          retryInMs: delay,
        });
        await sleep(delay, stop);
      }
    }
  }

  private markFailure(err: unknown, expired: boolean): void {
    this.lastError = errorText(err);
    this.lastErrorCategory = errorCategory(err);
    // 410 is not an outage: the API answered; only the resourceVersion is too old.
    if (!expired && this.disconnectedSince === undefined) this.disconnectedSince = this.now();
  }

  private markConnected(): void {
    this.disconnectedSince = undefined;
  }

  /** GET with an abort that fires on stop or when `armTimer`'s inactivity deadline passes. */
  private request(
    pathAndQuery: string,
    idleMs: number,
  ): {
    response: Promise<ApiResponse>;
    controller: AbortController;
    armTimer: () => void;
    done: () => void;
  } {
    const controller = new AbortController();
    const onStop = (): void => controller.abort(new Error('reflector stopped'));
    this.stopController.signal.addEventListener('abort', onStop, { once: true });
    let timer: NodeJS.Timeout | undefined;
    const armTimer = (): void => {
      clearTimeout(timer);
      timer = setTimeout(
        () => controller.abort(new Error(`no data from the API server for ${idleMs} ms`)),
        idleMs,
      );
    };
    armTimer();
    const done = (): void => {
      clearTimeout(timer);
      this.stopController.signal.removeEventListener('abort', onStop);
    };
    return { response: this.transport.get(pathAndQuery, controller.signal), controller, armTimer, done };
  }

  /** client-go's relistResourceVersion: "0" first, then the last seen one, "" once that is unavailable. */
  private relistResourceVersion(): string {
    if (this.rvUnavailable) return '';
    return this.rv ?? '0';
  }

  private async list(): Promise<void> {
    let result: { items: KubeObject[]; resourceVersion: string };
    try {
      result = await this.listAll(this.relistResourceVersion());
    } catch (err) {
      if (!(err instanceof ApiError) || !(err.expired || err.tooLargeResourceVersion)) throw err;
      // The resourceVersion asked for is gone (or not reached): the latest state, at once.
      log.verbose('list: resourceVersion unavailable, listing the latest state', {
        resource: this.spec.name,
        error: err.message,
      });
      this.rvUnavailable = true;
      result = await this.listAll('');
    }
    this.rvUnavailable = false;
    this.store.clear();
    for (const item of result.items) this.store.set(objectKey(item), item);
    this.rv = result.resourceVersion;
    this.markConnected();
    const first = !this.synced;
    this.synced = true;
    if (first) {
      for (const w of this.syncWaiters) w.resolve();
      this.syncWaiters = [];
    }
    log.verbose('listed', {
      resource: this.spec.name,
      items: this.store.size,
      resourceVersion: result.resourceVersion,
    });
    this.notify();
  }

  /**
   * client-go's pager: pages of `pageSize` following `continue` (without resourceVersion); a
   * continue token that expired (410 on page 2+) → the whole list again in one request at the
   * latest resourceVersion. An exact resourceVersion is not paged unless the server paged before,
   * so it is served from the watch cache.
   */
  private async listAll(resourceVersion: string): Promise<{ items: KubeObject[]; resourceVersion: string }> {
    let limit = this.options.pageSize;
    if (!this.paginated && resourceVersion !== '' && resourceVersion !== '0') limit = 0;
    const items: KubeObject[] = [];
    let page = await this.listPage({
      resourceVersion,
      ...(limit > 0 ? { limit: String(limit) } : {}),
    });
    items.push(...page.items);
    let pages = 1;
    while (page.continueToken !== undefined) {
      this.paginated = true;
      try {
        page = await this.listPage({ continue: page.continueToken, limit: String(limit) });
      } catch (err) {
        if (!(err instanceof ApiError) || !err.expired) throw err;
        log.verbose('list: continue token expired, listing everything in one request', {
          resource: this.spec.name,
          pages,
        });
        const full = await this.listPage({ resourceVersion: '' });
        return { items: [...full.items], resourceVersion: full.resourceVersion };
      }
      items.push(...page.items);
      pages++;
    }
    return { items, resourceVersion: page.resourceVersion };
  }

  private async listPage(params: Readonly<Record<string, string>>): Promise<ListPage> {
    const query: Record<string, string> = {};
    for (const [k, v] of Object.entries(params)) if (v !== '' || k === 'resourceVersion') query[k] = v;
    if (query.resourceVersion === '') delete query.resourceVersion;
    const r = this.request(buildQuery(this.spec, query), this.options.listIdleTimeoutMs);
    let text: string;
    let res: ApiResponse;
    try {
      res = await r.response;
      r.armTimer();
      const chunks: Buffer[] = [];
      let size = 0;
      for await (const c of res.body) {
        r.armTimer();
        const b = typeof c === 'string' ? Buffer.from(c) : c;
        size += b.length;
        if (size > this.options.maxListBytes) {
          throw new ProtocolError(`list response larger than ${this.options.maxListBytes} bytes`, true);
        }
        chunks.push(b);
      }
      text = Buffer.concat(chunks).toString('utf8');
    } catch (err) {
      if (err instanceof CredentialError) throw err;
      if (err instanceof ProtocolError)
        throw new ProtocolError(`list ${this.spec.name}: ${err.message}`, true);
      throw new Error(`list ${this.spec.name}: ${errorText(r.controller.signal.reason ?? err)}`, {
        cause: err,
      });
    } finally {
      r.done();
      r.controller.abort();
    }
    if (res.status !== 200) {
      const status = statusOfText(text);
      throw new ApiError(
        res.status,
        `list ${this.spec.name}: HTTP ${res.status}: ${status.message ?? ''}`,
        status.retryAfterSeconds === undefined && res.retryAfterSeconds !== undefined
          ? { ...status, retryAfterSeconds: res.retryAfterSeconds }
          : status,
      );
    }
    let parsed: { metadata?: { resourceVersion?: unknown; continue?: unknown }; items?: unknown };
    try {
      parsed = JSON.parse(text) as typeof parsed;
    } catch (err) {
      throw new ProtocolError(`list ${this.spec.name}: invalid JSON: ${errorText(err)}`, true);
    }
    const rv = parsed.metadata?.resourceVersion;
    if (typeof rv !== 'string' || !Array.isArray(parsed.items)) {
      throw new ProtocolError(
        `list ${this.spec.name}: response has no metadata.resourceVersion or items`,
        true,
      );
    }
    const items: KubeObject[] = [];
    for (const item of parsed.items as unknown[]) {
      // Items of a typed list carry no kind/apiVersion: they are the listed resource.
      if (typeof item === 'object' && item !== null && !Array.isArray(item))
        items.push(this.kept(withTypeMeta(this.spec, item)));
    }
    const cont = parsed.metadata?.continue;
    return {
      items,
      resourceVersion: rv,
      ...(typeof cont === 'string' && cont !== '' ? { continueToken: cont } : {}),
    };
  }

  /** One watch request, until the server ends it (resolves) or it fails (throws). */
  private async watch(): Promise<{ events: number; durationMs: number }> {
    const started = this.now();
    const { watchTimeoutSeconds, watchdogGraceMs } = this.options;
    // client-go: a random timeout in [min, 2·min), so many nodes do not reconnect in step.
    const timeoutSeconds = Math.max(1, Math.floor(watchTimeoutSeconds * (1 + this.random())));
    const idleMs = timeoutSeconds * 1000 + watchdogGraceMs;
    const path = buildQuery(this.spec, {
      allowWatchBookmarks: 'true',
      resourceVersion: this.rv ?? '',
      timeoutSeconds: String(timeoutSeconds),
      watch: 'true',
    });
    const r = this.request(path, idleMs);
    let events = 0;
    try {
      let res: ApiResponse;
      try {
        res = await r.response;
      } catch (err) {
        if (err instanceof CredentialError) throw err;
        throw new Error(`watch ${this.spec.name}: ${errorText(r.controller.signal.reason ?? err)}`, {
          cause: err,
        });
      }
      if (res.status !== 200) {
        const text = await readBounded(res.body, 64 * 1024).catch(() => '');
        const status = statusOfText(text);
        throw new ApiError(
          res.status,
          `watch ${this.spec.name}: HTTP ${res.status}: ${status.message ?? ''}`,
          status.retryAfterSeconds === undefined && res.retryAfterSeconds !== undefined
            ? { ...status, retryAfterSeconds: res.retryAfterSeconds }
            : status,
        );
      }
      this.markConnected();
      this.watchEstablishedAt = this.now();
      this.watchDelivered = false;
      const lines = new LineSplitter(this.options.maxEventBytes);
      try {
        for await (const chunk of res.body) {
          r.armTimer();
          for (const line of lines.push(typeof chunk === 'string' ? Buffer.from(chunk) : chunk)) {
            if (line.trim() === '') continue;
            this.handleEvent(line);
            // Bookmarks count too (as client-go's eventCount): the stream demonstrably works.
            events++;
            this.watchDelivered = true;
          }
        }
      } catch (err) {
        if (err instanceof ApiError) throw err;
        if (err instanceof ProtocolError)
          throw new ProtocolError(`watch ${this.spec.name}: ${err.message}`, err.relist);
        throw new Error(`watch ${this.spec.name}: ${errorText(r.controller.signal.reason ?? err)}`, {
          cause: err,
        });
      }
      return { events, durationMs: this.now() - started };
    } finally {
      r.done();
      r.controller.abort();
    }
  }

  /** Applies one watch event line (object event or bookmark); throws on an ERROR event. */
  private handleEvent(line: string): void {
    let ev: { type?: unknown; object?: unknown };
    try {
      ev = JSON.parse(line) as typeof ev;
    } catch (err) {
      throw new ProtocolError(`invalid event JSON: ${errorText(err)}`, false);
    }
    const raw = typeof ev.object === 'object' && ev.object !== null ? ev.object : {};
    switch (ev.type) {
      case 'ADDED':
      case 'MODIFIED':
      case 'DELETED': {
        const obj = this.kept(withTypeMeta(this.spec, raw));
        const key = objectKey(obj);
        this.advance((obj.metadata ?? {}).resourceVersion);
        if (ev.type === 'MODIFIED' && this.spec.transform && sameButVersion(this.store.get(key), obj)) return;
        if (ev.type === 'DELETED') this.store.delete(key);
        else this.store.set(key, obj);
        this.notify();
        return;
      }
      case 'BOOKMARK':
        this.advance((raw as KubeObject).metadata?.resourceVersion);
        return;
      case 'ERROR': {
        const status = parseStatus(raw);
        throw new ApiError(
          status.code ?? 500,
          `watch ${this.spec.name}: ${status.message ?? 'error event'}`,
          status,
        );
      }
      default:
        throw new ProtocolError(`unknown event type ${JSON.stringify(ev.type)}`, false);
    }
  }

  private kept(obj: KubeObject): KubeObject {
    return this.spec.transform ? this.spec.transform(obj) : obj;
  }

  private advance(rv: unknown): void {
    if (typeof rv === 'string' && rv !== '') this.rv = rv;
  }

  private notify(): void {
    for (const l of this.listeners) {
      try {
        l();
      } catch (err) {
        log.error('reflector listener failed', { resource: this.spec.name, error: errorText(err) });
      }
    }
  }
}

/** Equal objects but for metadata.resourceVersion (both as transformed: small). */
function sameButVersion(a: KubeObject | undefined, b: KubeObject): boolean {
  if (!a) return false;
  const unversioned = (o: KubeObject): string =>
    JSON.stringify({ ...o, metadata: { ...o.metadata, resourceVersion: undefined } });
  return unversioned(a) === unversioned(b);
}

async function readBounded(body: NodeJS.ReadableStream, max: number): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of body) {
    const b = typeof c === 'string' ? Buffer.from(c) : c;
    if (size + b.length > max) {
      chunks.push(b.subarray(0, max - size));
      break;
    }
    chunks.push(b);
    size += b.length;
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** A Node system error's safe summary (code, syscall, path): no free text. */
function systemErrorSummary(err: unknown): string | undefined {
  const e = err as { code?: unknown; syscall?: unknown; path?: unknown } | null;
  if (typeof e !== 'object' || e === null || typeof e.code !== 'string') return undefined;
  return [e.syscall, e.path, e.code].filter((p) => typeof p === 'string').join(' ');
}

/**
 * An `ApiTransport` on top of a client-node KubeConfig: its auth (tokens, client certs, exec
 * plugins) and TLS settings, applied per request so rotated service-account tokens are picked up.
 *
 * Credentials only travel over TLS, as client-go does (clientcmd reads the user's auth only for a
 * TLS transport): to a plain `http://` server the requests go anonymous. The factory warns about it.
 */
export function kubeTransport(kc: KubeConfig): ApiTransport {
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw new Error('kubeconfig has no current cluster');
  const base = new URL(cluster.server);
  const prefix = base.pathname.replace(/\/+$/, '');
  const plain = base.protocol === 'http:';
  return {
    async get(pathAndQuery: string, signal: AbortSignal): Promise<ApiResponse> {
      const opts: https.RequestOptions = { method: 'GET', headers: { Accept: 'application/json' } };
      if (!plain) {
        try {
          await kc.applyToHTTPSOptions(opts);
        } catch (err) {
          // client-node rejects with an exec plugin's whole stderr as the message: never repeat it.
          const sys = systemErrorSummary(err);
          throw new CredentialError(
            sys !== undefined
              ? `cannot prepare the kubeconfig's credentials or TLS files: ${sys}`
              : "the kubeconfig user's credential plugin or auth provider failed (its output is not logged: it can hold secrets; run the plugin by hand to see it)",
          );
        }
      }
      const url = new URL(prefix + pathAndQuery, base);
      const mod = plain ? http : https;
      return new Promise<ApiResponse>((resolve, reject) => {
        const req = mod.request(url, { ...opts, signal }, (res) => {
          const ra = Number(res.headers['retry-after']);
          resolve({
            status: res.statusCode ?? 0,
            body: res,
            ...(Number.isFinite(ra) && ra > 0 ? { retryAfterSeconds: ra } : {}),
          });
        });
        req.on('error', reject);
        req.end();
      });
    },
  };
}
