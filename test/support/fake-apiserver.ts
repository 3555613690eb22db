/**
 * A Kubernetes API stand-in for tests: an in-process HTTP server on 127.0.0.1 that follows the real
 * API's list/watch semantics for Services, EndpointSlices and Nodes (resourceVersion, ADDED/MODIFIED/
 * DELETED/BOOKMARK/ERROR events, 410 Gone, label/field selectors, server-side watch timeouts), plus
 * fault injection (HTTP errors, latency, watch ERROR events, hung lists, dead connections, outages,
 * compaction) and request counters.
 *
 * It is not a mock of client behaviour: a client that works against it has to cope with the same
 * things a real API server does to it.
 */
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { KubeConfig } from '@kubernetes/client-node';

export type FakeKind = 'Service' | 'EndpointSlice' | 'Node';
export type WatchEventType = 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR';
/** As RBAC names them: a collection read (`list`), a watch, or a single-object read (`get`). */
export type RequestVerb = 'list' | 'watch' | 'get';

/** A stored object: plain JSON with at least metadata.name. */
export type KubeObj = Record<string, unknown> & {
  metadata?: Record<string, unknown>;
};

export interface FakeApiServerOptions {
  /** Events kept for watches from an older resourceVersion (older → 410 Gone). Default 1000. */
  readonly historySize?: number;
  /** Bookmark period for watches with allowWatchBookmarks=true. Default 1000 ms. */
  readonly bookmarkIntervalMs?: number;
  /** Server-side watch timeout when the client sends no timeoutSeconds. Default 1800 s. */
  readonly defaultWatchTimeoutSeconds?: number;
  /** Port to listen on (0 = ephemeral). */
  readonly port?: number;
}

interface KindInfo {
  readonly apiVersion: string;
  readonly listKind: string;
  readonly namespaced: boolean;
}

const KINDS: Readonly<Record<FakeKind, KindInfo>> = {
  Service: { apiVersion: 'v1', listKind: 'ServiceList', namespaced: true },
  EndpointSlice: { apiVersion: 'discovery.k8s.io/v1', listKind: 'EndpointSliceList', namespaced: true },
  Node: { apiVersion: 'v1', listKind: 'NodeList', namespaced: false },
};

interface HistoryEvent {
  readonly rv: number;
  readonly kind: FakeKind;
  readonly type: 'ADDED' | 'MODIFIED' | 'DELETED';
  readonly object: KubeObj;
  /** The object before this event (MODIFIED/DELETED), to send ADDED/DELETED when selectors flip. */
  readonly previous?: KubeObj;
}

interface Watcher {
  readonly kind: FakeKind;
  readonly matches: (obj: KubeObj) => boolean;
  readonly res: http.ServerResponse;
  lastSentRv: number;
  /** Dead connection: socket stays open, nothing is ever sent again, timeouts do not fire. */
  stalled: boolean;
  timeoutTimer?: NodeJS.Timeout;
  bookmarkTimer?: NodeJS.Timeout;
  close(): void;
}

// ---------------------------------------------------------------------------------------------
// Selectors (pure)
// ---------------------------------------------------------------------------------------------

type LabelRequirement =
  | { readonly op: 'exists' | '!exists'; readonly key: string }
  | { readonly op: '=' | '!='; readonly key: string; readonly value: string }
  | { readonly op: 'in' | 'notin'; readonly key: string; readonly values: readonly string[] };

/** Splits on commas outside parentheses. */
function splitTopLevel(text: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let cur = '';
  for (const ch of text) {
    if (ch === '(') depth++;
    if (ch === ')') depth--;
    if (ch === ',' && depth === 0) {
      parts.push(cur);
      cur = '';
    } else cur += ch;
  }
  parts.push(cur);
  return parts.map((p) => p.trim()).filter((p) => p !== '');
}

const KEY_RE = /^[A-Za-z0-9]([A-Za-z0-9._/-]*[A-Za-z0-9])?$/;

/** Parses a label selector as the API server does; throws on syntax errors. */
export function parseLabelSelector(text: string): LabelRequirement[] {
  return splitTopLevel(text).map((req): LabelRequirement => {
    let m = /^(\S+)\s+(in|notin)\s*\(([^)]*)\)$/.exec(req);
    if (m) {
      const values = m[3]!
        .split(',')
        .map((v) => v.trim())
        .filter((v) => v !== '');
      return { op: m[2] as 'in' | 'notin', key: checkKey(m[1]!, req), values };
    }
    m = /^([^!=\s]+)\s*(==|=|!=)\s*(\S*)$/.exec(req);
    if (m) {
      return { op: m[2] === '!=' ? '!=' : '=', key: checkKey(m[1]!, req), value: m[3]! };
    }
    if (req.startsWith('!')) return { op: '!exists', key: checkKey(req.slice(1).trim(), req) };
    return { op: 'exists', key: checkKey(req, req) };
  });
}

function checkKey(key: string, req: string): string {
  if (!KEY_RE.test(key))
    throw new Error(`unable to parse requirement: invalid label key "${key}" in "${req}"`);
  return key;
}

export function labelsMatch(
  reqs: readonly LabelRequirement[],
  labels: Readonly<Record<string, string>>,
): boolean {
  return reqs.every((r) => {
    const has = Object.hasOwn(labels, r.key);
    const v = labels[r.key];
    switch (r.op) {
      case 'exists':
        return has;
      case '!exists':
        return !has;
      case '=':
        return has && v === r.value;
      case '!=':
        return !has || v !== r.value;
      case 'in':
        return has && r.values.includes(v!);
      case 'notin':
        return !has || !r.values.includes(v!);
    }
    return false;
  });
}

interface FieldRequirement {
  readonly field: 'metadata.name' | 'metadata.namespace';
  readonly negate: boolean;
  readonly value: string;
}

export function parseFieldSelector(text: string): FieldRequirement[] {
  return splitTopLevel(text).map((req) => {
    const m = /^([^!=\s]+)\s*(==|=|!=)\s*(\S*)$/.exec(req);
    if (!m) throw new Error(`invalid field selector "${req}"`);
    const field = m[1]!;
    if (field !== 'metadata.name' && field !== 'metadata.namespace') {
      throw new Error(`field label not supported: ${field}`);
    }
    return { field, negate: m[2] === '!=', value: m[3]! };
  });
}

function fieldsMatch(reqs: readonly FieldRequirement[], obj: KubeObj): boolean {
  return reqs.every((r) => {
    const actual = r.field === 'metadata.name' ? nameOf(obj) : namespaceOf(obj);
    return r.negate ? actual !== r.value : actual === r.value;
  });
}

function nameOf(obj: KubeObj): string {
  const n = obj.metadata?.name;
  return typeof n === 'string' ? n : '';
}

function namespaceOf(obj: KubeObj): string {
  const n = obj.metadata?.namespace;
  return typeof n === 'string' ? n : '';
}

function labelsOf(obj: KubeObj): Record<string, string> {
  const l = obj.metadata?.labels;
  return typeof l === 'object' && l !== null ? (l as Record<string, string>) : {};
}

function statusBody(code: number, reason: string, message: string): Record<string, unknown> {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code };
}

const REASONS: Readonly<Record<number, string>> = {
  400: 'BadRequest',
  404: 'NotFound',
  410: 'Expired',
  429: 'TooManyRequests',
  500: 'InternalError',
  503: 'ServiceUnavailable',
};

function str(v: unknown): string {
  return typeof v === 'string' ? v : '';
}

function finalizersOf(obj: KubeObj): unknown[] {
  const f = obj.metadata?.finalizers;
  return Array.isArray(f) ? f : [];
}

function clone<T>(v: T): T {
  return structuredClone(v);
}

// ---------------------------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------------------------

interface ParsedPath {
  readonly kind: FakeKind;
  readonly namespace?: string;
  /** Set for a single-object path (`.../services/NAME`): a `get`, not a `list`. */
  readonly name?: string;
}

const COLLECTIONS: readonly (readonly [FakeKind, string])[] = [
  ['Service', '/api/v1'],
  ['EndpointSlice', '/apis/discovery.k8s.io/v1'],
  ['Node', '/api/v1'],
];
const RESOURCE: Readonly<Record<FakeKind, string>> = {
  Service: 'services',
  EndpointSlice: 'endpointslices',
  Node: 'nodes',
};

/** Collection paths (all namespaces or one) and single-object paths, as the API server routes them. */
function parsePath(pathname: string): ParsedPath | undefined {
  for (const [kind, prefix] of COLLECTIONS) {
    if (!pathname.startsWith(`${prefix}/`)) continue;
    const rest = pathname.slice(prefix.length + 1).split('/');
    let namespace: string | undefined;
    if (KINDS[kind].namespaced && rest[0] === 'namespaces' && rest.length >= 3) {
      namespace = decodeURIComponent(rest[1]!);
      rest.splice(0, 2);
    }
    if (rest[0] !== RESOURCE[kind] || rest.length > 2) continue;
    const name = rest.length === 2 ? decodeURIComponent(rest[1]!) : undefined;
    // A namespaced object is only addressable inside its namespace.
    if (name !== undefined && KINDS[kind].namespaced && namespace === undefined) continue;
    return {
      kind,
      ...(namespace !== undefined ? { namespace } : {}),
      ...(name !== undefined ? { name } : {}),
    };
  }
  return undefined;
}

function objKey(kind: FakeKind, namespace: string, name: string): string {
  return KINDS[kind].namespaced ? `${namespace}/${name}` : name;
}

export class FakeApiServer {
  private readonly historySize: number;
  private readonly bookmarkIntervalMs: number;
  private readonly defaultWatchTimeoutSeconds: number;
  private readonly server: http.Server;
  private readonly sockets = new Set<Socket>();
  private readonly watchers = new Set<Watcher>();
  private readonly stores: Record<FakeKind, Map<string, KubeObj>> = {
    Service: new Map(),
    EndpointSlice: new Map(),
    Node: new Map(),
  };
  private history: HistoryEvent[] = [];
  /** Watches from a resourceVersion below this get 410 Gone. */
  private compactedRv: number;
  private rv = 1000;
  private failures: { remaining: number; status: number } = { remaining: 0, status: 500 };
  private latencyMs = 0;
  private stalled = false;
  /** While set, LIST requests are accepted and never answered (hung lists). */
  private listsStalled = false;
  private readonly hungLists = new Set<http.ServerResponse>();
  private listening = false;
  /** The Authorization header of the last request (to check that credentials are sent). */
  lastAuthorization?: string;
  private boundPort: number;
  private readonly counts = new Map<string, number>();
  private readonly requestLog: {
    readonly at: number;
    readonly kind: FakeKind;
    readonly verb: RequestVerb;
  }[] = [];

  private constructor(options: FakeApiServerOptions) {
    this.historySize = options.historySize ?? 1000;
    this.bookmarkIntervalMs = options.bookmarkIntervalMs ?? 1000;
    this.defaultWatchTimeoutSeconds = options.defaultWatchTimeoutSeconds ?? 1800;
    this.boundPort = options.port ?? 0;
    this.compactedRv = this.rv;
    this.server = http.createServer((req, res) => {
      this.handle(req, res).catch((err: unknown) => {
        if (!res.headersSent) this.sendStatus(res, 500, `internal error: ${String(err)}`);
        else res.destroy();
      });
    });
    this.server.on('connection', (s: Socket) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
  }

  /** Creates and starts a stand-in on 127.0.0.1 (ephemeral port unless `port` is given). */
  static async create(options: FakeApiServerOptions = {}): Promise<FakeApiServer> {
    const s = new FakeApiServer(options);
    await s.start();
    return s;
  }

  get port(): number {
    return this.boundPort;
  }

  get url(): string {
    return `http://127.0.0.1:${this.boundPort}`;
  }

  /** The current (latest) global resourceVersion. */
  get resourceVersion(): string {
    return String(this.rv);
  }

  /** A KubeConfig pointing at this server (plain HTTP needs skipTLSVerify: client-node trap). */
  kubeConfig(): KubeConfig {
    const kc = new KubeConfig();
    kc.loadFromClusterAndUser(
      { name: 'fake', server: this.url, skipTLSVerify: true },
      { name: 'fake-user', token: 'fake-token' },
    );
    return kc;
  }

  // ----- lifecycle -----

  /** Starts listening (again, on the same port after stop()). */
  async start(): Promise<void> {
    if (this.listening) return;
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.boundPort, '127.0.0.1', () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    this.boundPort = (this.server.address() as AddressInfo).port;
    this.listening = true;
  }

  /** The API goes away: closes the listener and every connection (watches end abruptly). */
  async stop(): Promise<void> {
    if (!this.listening) return;
    this.listening = false;
    for (const w of [...this.watchers]) w.close();
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const s of this.sockets) s.destroy();
    this.server.closeAllConnections();
    await closed;
  }

  // ----- objects -----

  /** Creates an object; the server sets resourceVersion, uid, creationTimestamp and generation. */
  create(kind: FakeKind, obj: object): KubeObj {
    const o = clone(obj) as KubeObj;
    const md = { ...(o.metadata ?? {}) };
    const name = typeof md.name === 'string' ? md.name : '';
    if (name === '') throw new Error(`create ${kind}: metadata.name is required`);
    if (KINDS[kind].namespaced && typeof md.namespace !== 'string') md.namespace = 'default';
    if (!KINDS[kind].namespaced) delete md.namespace;
    const key = objKey(kind, str(md.namespace), name);
    if (this.stores[kind].has(key)) throw new Error(`create ${kind} ${key}: already exists`);
    // Server-owned: a client cannot create an object that is being deleted.
    delete md.deletionTimestamp;
    delete md.deletionGracePeriodSeconds;
    const rv = ++this.rv;
    const stored: KubeObj = {
      ...o,
      kind,
      apiVersion: KINDS[kind].apiVersion,
      metadata: {
        ...md,
        uid: randomUUID(),
        resourceVersion: String(rv),
        creationTimestamp: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
        generation: 1,
      },
    };
    this.stores[kind].set(key, stored);
    this.record({ rv, kind, type: 'ADDED', object: stored });
    return clone(stored);
  }

  /**
   * Replaces an existing object (by namespace/name); bumps resourceVersion (and generation). The
   * deletion timestamp stays the server's; an update that removes the last finalizer of an object
   * being deleted deletes it, as the API server does.
   */
  update(kind: FakeKind, obj: object): KubeObj {
    const o = clone(obj) as KubeObj;
    const md = { ...(o.metadata ?? {}) };
    if (KINDS[kind].namespaced && typeof md.namespace !== 'string') md.namespace = 'default';
    const key = objKey(kind, str(md.namespace), str(md.name));
    const previous = this.stores[kind].get(key);
    if (!previous) throw new Error(`update ${kind} ${key}: not found`);
    const pmd = previous.metadata ?? {};
    delete md.deletionTimestamp;
    delete md.deletionGracePeriodSeconds;
    if (pmd.deletionTimestamp !== undefined) {
      md.deletionTimestamp = pmd.deletionTimestamp;
      md.deletionGracePeriodSeconds = pmd.deletionGracePeriodSeconds;
    }
    const rv = ++this.rv;
    const specChanged = JSON.stringify(o.spec) !== JSON.stringify(previous.spec);
    const stored: KubeObj = {
      ...o,
      kind,
      apiVersion: KINDS[kind].apiVersion,
      metadata: {
        ...md,
        uid: pmd.uid,
        creationTimestamp: pmd.creationTimestamp,
        resourceVersion: String(rv),
        generation: (typeof pmd.generation === 'number' ? pmd.generation : 1) + (specChanged ? 1 : 0),
      },
    };
    this.stores[kind].set(key, stored);
    this.record({ rv, kind, type: 'MODIFIED', object: stored, previous });
    if (md.deletionTimestamp !== undefined && finalizersOf(stored).length === 0) {
      this.delete(kind, str(md.namespace), str(md.name));
    }
    return clone(stored);
  }

  /** Creates or updates. */
  apply(kind: FakeKind, obj: object): KubeObj {
    const md = (obj as KubeObj).metadata ?? {};
    const ns = KINDS[kind].namespaced ? str(md.namespace) || 'default' : '';
    return this.get(kind, ns, str(md.name)) ? this.update(kind, obj) : this.create(kind, obj);
  }

  /**
   * DELETE, as the API server does it: an object without finalizers goes at once (DELETED); one with
   * finalizers only gets a deletionTimestamp (MODIFIED) and stays until they are removed (update).
   */
  delete(kind: FakeKind, namespace: string, name: string): void {
    const key = objKey(kind, namespace, name);
    const previous = this.stores[kind].get(key);
    if (!previous) throw new Error(`delete ${kind} ${key}: not found`);
    if (finalizersOf(previous).length > 0) {
      if (previous.metadata?.deletionTimestamp !== undefined) return; // already being deleted
      const rv = ++this.rv;
      const stored: KubeObj = {
        ...previous,
        metadata: {
          ...previous.metadata,
          resourceVersion: String(rv),
          deletionTimestamp: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
          deletionGracePeriodSeconds: 0,
        },
      };
      this.stores[kind].set(key, stored);
      this.record({ rv, kind, type: 'MODIFIED', object: stored, previous });
      return;
    }
    this.stores[kind].delete(key);
    const rv = ++this.rv;
    // The real API sends the last state of the object with the deletion's resourceVersion.
    const object: KubeObj = { ...previous, metadata: { ...previous.metadata, resourceVersion: String(rv) } };
    this.record({ rv, kind, type: 'DELETED', object, previous });
  }

  get(kind: FakeKind, namespace: string, name: string): KubeObj | undefined {
    const o = this.stores[kind].get(objKey(kind, namespace, name));
    return o ? clone(o) : undefined;
  }

  list(kind: FakeKind): KubeObj[] {
    return [...this.stores[kind].values()].map(clone);
  }

  // ----- faults -----

  /** Ends every open watch cleanly, as an API server does on its own timeout or restart. */
  closeAllWatches(): void {
    for (const w of [...this.watchers]) w.close();
  }

  /** The next `n` list/watch requests get HTTP `status` with a Status body. */
  failNext(n: number, status = 500): void {
    this.failures = { remaining: n, status };
  }

  /** Delay before every response (list and watch headers). */
  setLatencyMs(ms: number): void {
    this.latencyMs = ms;
  }

  /**
   * Dead connections: open watches go silent for good (no events, no bookmarks, no timeout close),
   * and while `on`, new watch requests are accepted but never answered.
   */
  stallWatches(on = true): void {
    this.stalled = on;
    if (on) for (const w of this.watchers) w.stalled = true;
  }

  /**
   * A failure on the server's side of open watches (of `kind`, or all): each gets one ERROR event
   * carrying a Status with `code` (e.g. 500 "etcdserver: request timed out", 429), then the stream
   * ends, as the API server ends a watch after an error event. Returns how many watches were hit.
   * (410 happens by itself for watches from a compacted resourceVersion: see compact().)
   */
  injectWatchError(code: number, message = `injected watch error (${code})`, kind?: FakeKind): number {
    let hit = 0;
    for (const w of [...this.watchers]) {
      if (w.stalled || (kind !== undefined && w.kind !== kind)) continue;
      const status = statusBody(code, REASONS[code] ?? 'InternalError', message);
      w.res.write(JSON.stringify({ type: 'ERROR', object: status }) + '\n');
      w.close();
      hit++;
    }
    return hit;
  }

  /**
   * Hung lists: while `on`, LIST requests are accepted and never answered (no status line), as with
   * an overloaded server or a dead connection; the client's own timeout has to end them. Lists
   * already hanging stay hung after `stallLists(false)` until the client gives up.
   */
  stallLists(on = true): void {
    this.listsStalled = on;
  }

  /** LIST requests currently hanging (the client has not closed them yet). */
  get hungListCount(): number {
    return this.hungLists.size;
  }

  /** Forgets the event history: watches from any older resourceVersion get 410 Gone. */
  compact(): void {
    this.history = [];
    this.compactedRv = this.rv;
  }

  // ----- counters -----

  /** Requests received (after fault injection counts too), optionally by kind and verb. */
  requests(kind?: FakeKind, verb?: RequestVerb): number {
    let total = 0;
    for (const [k, n] of this.counts) {
      const [ck, cv] = k.split(':');
      if ((kind === undefined || ck === kind) && (verb === undefined || cv === verb)) total += n;
    }
    return total;
  }

  /** Requests received since `sinceMs` (Date.now() based). */
  requestsSince(sinceMs: number, kind?: FakeKind, verb?: RequestVerb): number {
    return this.requestLog.filter(
      (r) =>
        r.at >= sinceMs && (kind === undefined || r.kind === kind) && (verb === undefined || r.verb === verb),
    ).length;
  }

  resetCounts(): void {
    this.counts.clear();
    this.requestLog.length = 0;
  }

  /** Open watch connections (stalled ones included). */
  get openWatches(): number {
    return this.watchers.size;
  }

  // ----- internals -----

  private record(ev: HistoryEvent): void {
    this.history.push(ev);
    if (this.history.length > this.historySize) {
      const dropped = this.history.splice(0, this.history.length - this.historySize);
      this.compactedRv = dropped[dropped.length - 1]!.rv;
    }
    for (const w of this.watchers) if (w.kind === ev.kind) this.deliver(w, ev);
  }

  /** Sends one history event to a watcher, translating selector transitions like the API does. */
  private deliver(w: Watcher, ev: HistoryEvent): void {
    if (w.stalled || ev.rv <= w.lastSentRv) return;
    const now = w.matches(ev.object);
    const before = ev.previous !== undefined && w.matches(ev.previous);
    let type: WatchEventType | undefined;
    if (ev.type === 'ADDED') type = now ? 'ADDED' : undefined;
    else if (ev.type === 'DELETED') type = before ? 'DELETED' : undefined;
    else if (now && before) type = 'MODIFIED';
    else if (now) type = 'ADDED';
    else if (before) type = 'DELETED';
    w.lastSentRv = ev.rv;
    if (type) w.res.write(JSON.stringify({ type, object: ev.object }) + '\n');
  }

  private sendStatus(res: http.ServerResponse, code: number, message: string): void {
    res.writeHead(code, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify(statusBody(code, REASONS[code] ?? 'Unknown', message)));
  }

  private count(kind: FakeKind, verb: RequestVerb): void {
    const k = `${kind}:${verb}`;
    this.counts.set(k, (this.counts.get(k) ?? 0) + 1);
    this.requestLog.push({ at: Date.now(), kind, verb });
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    this.lastAuthorization = req.headers.authorization;
    const url = new URL(req.url ?? '/', 'http://localhost');
    const target = parsePath(url.pathname);
    if (req.method !== 'GET' || !target) {
      this.sendStatus(
        res,
        404,
        `the server could not find the requested resource (${req.method} ${url.pathname})`,
      );
      return;
    }
    const q = url.searchParams;
    const watch = q.get('watch') === '1' || q.get('watch') === 'true';
    this.count(target.kind, target.name !== undefined ? 'get' : watch ? 'watch' : 'list');

    if (this.latencyMs > 0) await new Promise((r) => setTimeout(r, this.latencyMs));
    if (this.failures.remaining > 0) {
      this.failures.remaining--;
      const code = this.failures.status;
      this.sendStatus(res, code, `injected failure (${code})`);
      return;
    }

    if (target.name !== undefined) {
      const obj = this.stores[target.kind].get(objKey(target.kind, target.namespace ?? '', target.name));
      if (!obj) {
        this.sendStatus(res, 404, `${RESOURCE[target.kind]} "${target.name}" not found`);
        return;
      }
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify(obj));
      return;
    }

    let labelReqs: LabelRequirement[];
    let fieldReqs: FieldRequirement[];
    try {
      labelReqs = parseLabelSelector(q.get('labelSelector') ?? '');
      fieldReqs = parseFieldSelector(q.get('fieldSelector') ?? '');
    } catch (err) {
      this.sendStatus(res, 400, (err as Error).message);
      return;
    }
    const matches = (o: KubeObj): boolean =>
      (target.namespace === undefined || namespaceOf(o) === target.namespace) &&
      labelsMatch(labelReqs, labelsOf(o)) &&
      fieldsMatch(fieldReqs, o);

    if (!watch) {
      if (this.listsStalled) {
        this.hungLists.add(res);
        res.on('close', () => this.hungLists.delete(res));
        return;
      }
      const info = KINDS[target.kind];
      const items = [...this.stores[target.kind].values()].filter(matches).sort((a, b) => {
        const ka = `${namespaceOf(a)}/${nameOf(a)}`;
        const kb = `${namespaceOf(b)}/${nameOf(b)}`;
        return ka < kb ? -1 : ka > kb ? 1 : 0;
      });
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(
        JSON.stringify({
          kind: info.listKind,
          apiVersion: info.apiVersion,
          metadata: { resourceVersion: String(this.rv) },
          items,
        }),
      );
      return;
    }
    this.startWatch(req, res, target.kind, matches, q);
  }

  private startWatch(
    req: http.IncomingMessage,
    res: http.ServerResponse,
    kind: FakeKind,
    matches: (o: KubeObj) => boolean,
    q: URLSearchParams,
  ): void {
    const rvParam = q.get('resourceVersion') ?? '';
    let fromRv: number | undefined;
    if (rvParam !== '' && rvParam !== '0') {
      if (!/^\d+$/.test(rvParam)) {
        this.sendStatus(res, 400, `invalid resource version: ${rvParam}`);
        return;
      }
      fromRv = Number(rvParam);
    }
    const timeoutParam = q.get('timeoutSeconds');
    const timeoutSeconds =
      timeoutParam !== null && /^\d+$/.test(timeoutParam)
        ? Number(timeoutParam)
        : this.defaultWatchTimeoutSeconds;
    const bookmarks = q.get('allowWatchBookmarks') === 'true' || q.get('allowWatchBookmarks') === '1';

    const w: Watcher = {
      kind,
      matches,
      res,
      lastSentRv: fromRv ?? this.rv,
      stalled: this.stalled,
      close: () => {
        if (!this.watchers.delete(w)) return;
        clearTimeout(w.timeoutTimer);
        clearTimeout(w.bookmarkTimer);
        // A dead connection cannot end cleanly: drop it.
        if (w.stalled) res.destroy();
        else if (!res.writableEnded) res.end();
      },
    };
    this.watchers.add(w);
    req.on('close', () => {
      this.watchers.delete(w);
      clearTimeout(w.timeoutTimer);
      clearTimeout(w.bookmarkTimer);
    });
    // A dead connection accepts the request and never answers.
    if (w.stalled) return;

    res.writeHead(200, { 'Content-Type': 'application/json', 'Transfer-Encoding': 'chunked' });
    res.flushHeaders();

    if (fromRv === undefined) {
      // "Start at most recent": synthetic ADDED events for the current state, then live events.
      for (const o of this.stores[kind].values()) {
        if (matches(o)) res.write(JSON.stringify({ type: 'ADDED', object: o }) + '\n');
      }
    } else if (fromRv < this.compactedRv) {
      // Real API: HTTP 200, then one ERROR event carrying a 410 Status, then the stream ends.
      const status = statusBody(
        410,
        'Expired',
        `too old resource version: ${fromRv} (${this.compactedRv + 1})`,
      );
      res.write(JSON.stringify({ type: 'ERROR', object: status }) + '\n');
      w.close();
      return;
    } else {
      for (const ev of this.history) if (ev.kind === kind && ev.rv > fromRv) this.deliver(w, ev);
      w.lastSentRv = Math.max(w.lastSentRv, this.rv);
    }

    w.timeoutTimer = setTimeout(() => {
      if (!w.stalled) w.close();
    }, timeoutSeconds * 1000);
    if (bookmarks) {
      const tick = (): void => {
        if (!this.watchers.has(w)) return;
        if (!w.stalled) {
          const info = KINDS[kind];
          const object = {
            kind,
            apiVersion: info.apiVersion,
            metadata: { resourceVersion: String(this.rv) },
          };
          res.write(JSON.stringify({ type: 'BOOKMARK', object }) + '\n');
        }
        w.bookmarkTimer = setTimeout(tick, this.bookmarkIntervalMs);
      };
      w.bookmarkTimer = setTimeout(tick, this.bookmarkIntervalMs);
    }
  }
}
