/**
 * A small reflector (list → watch → re-watch / relist) over the Kubernetes API.
 *
 * Why not client-node's `makeInformer`: in 1.4.0 it has no reconnect backoff, its timeout never
 * fires, it stops for good on any error but 410, it never asks for bookmarks or a server timeout, and
 * `stop()` emits 'error' (../shared/notes/stack.md). Working around all of that is more code than this
 * loop. client-node is still used for what it does well: kubeconfig, auth and TLS (`ApiTransport`).
 *
 * Behaviour (as client-go's reflector):
 * - list, then watch from the list's resourceVersion, with `allowWatchBookmarks` and `timeoutSeconds`;
 * - a watch that ends is re-opened from the last seen resourceVersion (bookmarks advance it);
 * - 410 Gone (HTTP or ERROR event) → relist;
 * - any other failure → retry with exponential backoff and jitter;
 * - idle watchdog: no byte for `timeoutSeconds + watchdogGraceMs` → the connection is dead → abort.
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
  readonly labelSelector?: string;
  readonly fieldSelector?: string;
}

export interface BackoffOptions {
  readonly initialMs: number;
  readonly maxMs: number;
  readonly factor: number;
  /** 0..1: the delay is multiplied by a random factor in [1 - jitter, 1]. */
  readonly jitter: number;
}

export interface ReflectorOptions {
  /** Sent as `timeoutSeconds` on every watch. Default 300. */
  readonly watchTimeoutSeconds: number;
  /** Extra time past `watchTimeoutSeconds` of silence before the watchdog declares the watch dead. */
  readonly watchdogGraceMs: number;
  /** Abort a list that has not completed after this long. Default 60 s. */
  readonly listTimeoutMs: number;
  /**
   * A watch that the server ends sooner than this without delivering anything counts as a failure
   * (backoff), so a server that closes every watch at once cannot drive a hot reconnect loop.
   */
  readonly minWatchMs: number;
  readonly backoff: BackoffOptions;
}

export const DEFAULT_REFLECTOR_OPTIONS: ReflectorOptions = {
  watchTimeoutSeconds: 300,
  watchdogGraceMs: 30_000,
  listTimeoutMs: 60_000,
  minWatchMs: 1000,
  backoff: { initialMs: 200, maxMs: 30_000, factor: 2, jitter: 0.5 },
};

export interface ReflectorStatus {
  readonly synced: boolean;
  /** Set while the reflector cannot reach (or keep) a working list/watch; epoch ms. */
  readonly disconnectedSince?: number;
  readonly lastError?: string;
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

export function buildQuery(spec: ResourceSpec, extra: Readonly<Record<string, string>>): string {
  const q = new URLSearchParams();
  if (spec.labelSelector) q.set('labelSelector', spec.labelSelector);
  if (spec.fieldSelector) q.set('fieldSelector', spec.fieldSelector);
  for (const [k, v] of Object.entries(extra)) q.set(k, v);
  const s = q.toString();
  return s === '' ? spec.path : `${spec.path}?${s}`;
}

/** An HTTP error from the API, with the Status reason when the body carried one. */
export class ApiError extends Error {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

class GoneError extends Error {}

async function readAll(body: NodeJS.ReadableStream): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of body) chunks.push(typeof c === 'string' ? Buffer.from(c) : c);
  return Buffer.concat(chunks).toString('utf8');
}

function statusMessage(text: string): string {
  try {
    const s = JSON.parse(text) as { message?: unknown };
    if (typeof s.message === 'string') return s.message;
  } catch {
    // not a Status body
  }
  return text.slice(0, 200);
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

export class Reflector {
  private readonly options: ReflectorOptions;
  private readonly store = new Map<string, KubeObject>();
  private readonly listeners = new Set<() => void>();
  private readonly stopController = new AbortController();
  private running?: Promise<void>;
  private synced = false;
  private syncWaiters: { resolve: () => void; reject: (e: Error) => void }[] = [];
  private rv?: string;
  private disconnectedSince?: number;
  private lastError?: string;
  private failures = 0;
  /** When the current watch was established (for resetting the backoff after a good run). */
  private watchEstablishedAt?: number;

  constructor(
    private readonly transport: ApiTransport,
    readonly spec: ResourceSpec,
    options: Partial<ReflectorOptions> = {},
    private readonly now: () => number = Date.now,
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

  /** Current objects (the store), keyed by namespace/name. */
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
        // A watch that worked for a while before failing starts a fresh backoff sequence.
        const est = this.watchEstablishedAt;
        if (est !== undefined && this.now() - est >= this.options.minWatchMs) this.failures = 0;
        this.watchEstablishedAt = undefined;
        const gone = err instanceof GoneError || (err instanceof ApiError && err.code === 410);
        if (gone) needList = true;
        // The first 410 relists at once; repeated failures of any kind back off.
        const delay = gone && this.failures === 0 ? 0 : backoffDelay(this.failures + 1, this.options.backoff);
        this.failures++;
        this.markFailure(err, gone);
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

  private markFailure(err: unknown, gone: boolean): void {
    this.lastError = errorText(err);
    // 410 is not an outage: the API answered; only the resourceVersion is too old.
    if (!gone && this.disconnectedSince === undefined) this.disconnectedSince = this.now();
  }

  private markConnected(): void {
    this.disconnectedSince = undefined;
  }

  /** GET with an abort that fires on stop or on `timer` (returns a cleanup). */
  private request(
    pathAndQuery: string,
    timeoutMs: number,
  ): {
    response: Promise<ApiResponse>;
    controller: AbortController;
    armTimer: (ms: number) => void;
    done: () => void;
  } {
    const controller = new AbortController();
    const onStop = (): void => controller.abort(new Error('reflector stopped'));
    this.stopController.signal.addEventListener('abort', onStop, { once: true });
    let timer: NodeJS.Timeout | undefined;
    const armTimer = (ms: number): void => {
      clearTimeout(timer);
      timer = setTimeout(() => controller.abort(new Error(`no data from the API server for ${ms} ms`)), ms);
    };
    armTimer(timeoutMs);
    const done = (): void => {
      clearTimeout(timer);
      this.stopController.signal.removeEventListener('abort', onStop);
    };
    return { response: this.transport.get(pathAndQuery, controller.signal), controller, armTimer, done };
  }

  private async list(): Promise<void> {
    const path = buildQuery(this.spec, {});
    const r = this.request(path, this.options.listTimeoutMs);
    let text: string;
    let status: number;
    try {
      const res = await r.response;
      status = res.status;
      text = await readAll(res.body);
    } catch (err) {
      throw new Error(`list ${this.spec.name}: ${errorText(r.controller.signal.reason ?? err)}`, {
        cause: err,
      });
    } finally {
      r.done();
    }
    if (status !== 200)
      throw new ApiError(status, `list ${this.spec.name}: HTTP ${status}: ${statusMessage(text)}`);
    let parsed: { metadata?: { resourceVersion?: unknown }; items?: unknown };
    try {
      parsed = JSON.parse(text) as typeof parsed;
    } catch (err) {
      throw new Error(`list ${this.spec.name}: invalid JSON: ${errorText(err)}`, { cause: err });
    }
    const rv = parsed.metadata?.resourceVersion;
    if (typeof rv !== 'string' || !Array.isArray(parsed.items)) {
      throw new Error(`list ${this.spec.name}: response has no metadata.resourceVersion or items`);
    }
    this.store.clear();
    for (const item of parsed.items as KubeObject[]) {
      if (typeof item === 'object' && item !== null) this.store.set(objectKey(item), item);
    }
    this.rv = rv;
    this.markConnected();
    const first = !this.synced;
    this.synced = true;
    if (first) {
      for (const w of this.syncWaiters) w.resolve();
      this.syncWaiters = [];
    }
    log.verbose('listed', { resource: this.spec.name, items: this.store.size, resourceVersion: rv });
    this.notify();
  }

  /** One watch request, until the server ends it (resolves) or it fails (throws). */
  private async watch(): Promise<{ events: number; durationMs: number }> {
    const started = this.now();
    const { watchTimeoutSeconds, watchdogGraceMs } = this.options;
    const idleMs = watchTimeoutSeconds * 1000 + watchdogGraceMs;
    const path = buildQuery(this.spec, {
      watch: '1',
      resourceVersion: this.rv ?? '',
      allowWatchBookmarks: 'true',
      timeoutSeconds: String(watchTimeoutSeconds),
    });
    const r = this.request(path, idleMs);
    let events = 0;
    try {
      let res: ApiResponse;
      try {
        res = await r.response;
      } catch (err) {
        throw new Error(`watch ${this.spec.name}: ${errorText(r.controller.signal.reason ?? err)}`, {
          cause: err,
        });
      }
      if (res.status !== 200) {
        const text = await readAll(res.body).catch(() => '');
        throw new ApiError(res.status, `watch ${this.spec.name}: HTTP ${res.status}: ${statusMessage(text)}`);
      }
      this.markConnected();
      this.watchEstablishedAt = this.now();
      let buffered = '';
      try {
        for await (const chunk of res.body) {
          r.armTimer(idleMs);
          buffered += typeof chunk === 'string' ? chunk : chunk.toString('utf8');
          let nl: number;
          while ((nl = buffered.indexOf('\n')) >= 0) {
            const line = buffered.slice(0, nl).trim();
            buffered = buffered.slice(nl + 1);
            if (line !== '' && this.handleEvent(line)) events++;
          }
        }
      } catch (err) {
        if (err instanceof GoneError || err instanceof ApiError) throw err;
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

  /** Applies one watch event line; returns true for object events (not bookmarks). */
  private handleEvent(line: string): boolean {
    let ev: { type?: unknown; object?: unknown };
    try {
      ev = JSON.parse(line) as typeof ev;
    } catch (err) {
      throw new Error(`watch ${this.spec.name}: invalid event JSON: ${errorText(err)}`, { cause: err });
    }
    const obj = (typeof ev.object === 'object' && ev.object !== null ? ev.object : {}) as KubeObject;
    const rv = obj.metadata?.resourceVersion;
    switch (ev.type) {
      case 'ADDED':
      case 'MODIFIED':
        this.store.set(objectKey(obj), obj);
        break;
      case 'DELETED':
        this.store.delete(objectKey(obj));
        break;
      case 'BOOKMARK':
        if (typeof rv === 'string' && rv !== '') this.rv = rv;
        return false;
      case 'ERROR': {
        const status = ev.object as { code?: unknown; message?: unknown } | undefined;
        const msg = `watch ${this.spec.name}: ${typeof status?.message === 'string' ? status.message : 'error event'}`;
        if (status?.code === 410) throw new GoneError(msg);
        throw new ApiError(typeof status?.code === 'number' ? status.code : 500, msg);
      }
      default:
        throw new Error(`watch ${this.spec.name}: unknown event type ${String(ev.type)}`);
    }
    if (typeof rv === 'string' && rv !== '') this.rv = rv;
    this.notify();
    return true;
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

/**
 * An `ApiTransport` on top of a client-node KubeConfig: its auth (tokens, client certs, exec
 * plugins) and TLS settings, applied per request so rotated service-account tokens are picked up.
 */
export function kubeTransport(kc: KubeConfig): ApiTransport {
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw new Error('kubeconfig has no current cluster');
  const base = new URL(cluster.server);
  const prefix = base.pathname.replace(/\/+$/, '');
  return {
    async get(pathAndQuery: string, signal: AbortSignal): Promise<ApiResponse> {
      const opts: https.RequestOptions = { method: 'GET', headers: { Accept: 'application/json' } };
      await kc.applyToHTTPSOptions(opts);
      const url = new URL(prefix + pathAndQuery, base);
      const mod = url.protocol === 'http:' ? http : https;
      return new Promise<ApiResponse>((resolve, reject) => {
        const req = mod.request(url, { ...opts, signal }, (res) =>
          resolve({ status: res.statusCode ?? 0, body: res }),
        );
        req.on('error', reject);
        req.end();
      });
    },
  };
}
