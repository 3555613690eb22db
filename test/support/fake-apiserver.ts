/**
 * A Kubernetes API stand-in for tests: an in-process HTTP(S) server that answers list and watch of
 * Services, EndpointSlices and Nodes, and (for NetworkPolicy enforcement) NetworkPolicies, Pods and
 * Namespaces, the way kube-apiserver does (shapes and semantics from kube-apiserver's sources; see
 * docs/cluster.md, "Behaviour against the API"):
 *
 * - list: `{"kind":"ServiceList","apiVersion":"v1","metadata":{"resourceVersion":…},"items":[…]}` whose
 *   items carry NO kind/apiVersion (kubernetes/kubernetes#3030); `continue` and `remainingItemCount`
 *   (the latter only without selectors) when a page is not the last; `limit` ignored for
 *   resourceVersion=0 (served from the watch cache) unless the watch cache is off; Exact/NotOlderThan
 *   `resourceVersionMatch` with their 422s; `continue` tokens as base64url JSON; 410 Expired for an
 *   exact resourceVersion or a continue token older than the compaction; 504 for a resourceVersion
 *   the server has not reached;
 * - watch: one JSON event per line, objects WITH kind/apiVersion; DELETED carries the deletion's
 *   resourceVersion; BOOKMARK objects are empty objects of the kind with only the resourceVersion
 *   (plus the `k8s.io/initial-events-end` annotation after the initial events of a watch-list);
 *   a too-old resourceVersion is an ERROR event carrying a 410 Expired Status in a 200 stream;
 *   selector transitions become ADDED/DELETED; the server ends watches at timeoutSeconds;
 * - objects as stored: the API server's defaulting (NetworkPolicy protocol TCP and policyTypes; Pod
 *   and container defaults, container port protocol TCP, status.phase Pending on create; the
 *   Namespace's kubernetes.io/metadata.name label, spec.finalizers and status.phase), generation
 *   where the strategy keeps one (EndpointSlice, NetworkPolicy, Pod), and a Namespace deleted in
 *   two steps (Terminating, then gone: it must be empty first, there is no namespace controller);
 * - errors: Status objects (`kind: Status`, `apiVersion: v1`, `metadata: {}`, `status: Failure`,
 *   message, reason, details, code); 401 without an accepted bearer token when tokens are required;
 * - TLS with a self-signed certificate on request (kube-apiserver serves nothing else), and
 *   listening inside another network namespace (a sandbox node reaches it as a remote API).
 *
 * Fault injection: HTTP errors, latency, watch ERROR events, hung lists, slow list bodies, raw bytes
 * on watches, dead connections, outages (stop/start), compaction; request counters with queries.
 * It is not a mock of client behaviour: a client that works against it has to cope with the same
 * things a real API server does to it.
 */
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo, Server as NetServer, Socket } from 'node:net';
import { KubeConfig } from '@kubernetes/client-node';
import { testCertificate } from './test-cert.js';

export type FakeKind = 'Service' | 'EndpointSlice' | 'Node' | 'NetworkPolicy' | 'Pod' | 'Namespace';
export type WatchEventType = 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR';
/** As RBAC names them: a collection read (`list`), a watch, or a single-object read (`get`). */
export type RequestVerb = 'list' | 'watch' | 'get';

/** A stored object: plain JSON with at least metadata.name. */
export type KubeObj = Record<string, unknown> & {
  metadata?: Record<string, unknown>;
};

export interface FakeApiServerOptions {
  /** Events kept for watches and exact lists from an older resourceVersion (older → 410). Default 1000. */
  readonly historySize?: number;
  /** Bookmark period for watches with allowWatchBookmarks=true. Default 1000 ms (real: ~1 min). */
  readonly bookmarkIntervalMs?: number;
  /** Server-side watch timeout when the client sends no timeoutSeconds. Default 1800 s. */
  readonly defaultWatchTimeoutSeconds?: number;
  /** Port to listen on (0 = ephemeral). */
  readonly port?: number;
  /** Address to listen on. Default 127.0.0.1. */
  readonly host?: string;
  /** Serve HTTPS with the test certificate (test-cert.ts). Default false (plain HTTP). */
  readonly tls?: boolean;
  /** More IP addresses the certificate names (its default ones: test-cert.ts). */
  readonly certificateIPs?: readonly string[];
  /**
   * Bearer tokens the server accepts. When set, a request without one of them gets 401 Unauthorized
   * (as kube-apiserver's authenticator answers). Default: anonymous requests are served.
   */
  readonly tokens?: readonly string[];
  /**
   * Where the listening socket comes from (instead of host/port in this process's namespace), e.g.
   * `() => netnsListener.listen('192.0.2.2', 6443)`; called on every start().
   */
  readonly listenHandle?: () => Promise<NetServer>;
  /**
   * The server's WatchList feature gate (on from 1.34): a watch from resourceVersion ""/"0" without
   * sendInitialEvents is defaulted to sendInitialEvents=true, and sendInitialEvents is accepted.
   * Default true.
   */
  readonly watchList?: boolean;
  /**
   * The watch cache (on by default in kube-apiserver). Off: a list with resourceVersion=0 and a
   * limit is paginated like any other (served by etcd). Default true.
   */
  readonly watchCache?: boolean;
  /** How long a request for a resourceVersion the server has not reached waits before 504. Default 3000 ms. */
  readonly tooLargeResourceVersionWaitMs?: number;
}

interface KindInfo {
  readonly apiVersion: string;
  readonly listKind: string;
  readonly namespaced: boolean;
  readonly resource: string;
}

const KINDS: Readonly<Record<FakeKind, KindInfo>> = {
  Service: { apiVersion: 'v1', listKind: 'ServiceList', namespaced: true, resource: 'services' },
  EndpointSlice: {
    apiVersion: 'discovery.k8s.io/v1',
    listKind: 'EndpointSliceList',
    namespaced: true,
    resource: 'endpointslices',
  },
  Node: { apiVersion: 'v1', listKind: 'NodeList', namespaced: false, resource: 'nodes' },
  NetworkPolicy: {
    apiVersion: 'networking.k8s.io/v1',
    listKind: 'NetworkPolicyList',
    namespaced: true,
    resource: 'networkpolicies',
  },
  Pod: { apiVersion: 'v1', listKind: 'PodList', namespaced: true, resource: 'pods' },
  Namespace: { apiVersion: 'v1', listKind: 'NamespaceList', namespaced: false, resource: 'namespaces' },
};

/** Kinds whose registry strategy keeps metadata.generation (bumped when the spec changes). */
const HAS_GENERATION: ReadonlySet<FakeKind> = new Set(['EndpointSlice', 'NetworkPolicy', 'Pod']);

/** The annotation on the BOOKMARK that ends a watch-list's initial events. */
export const INITIAL_EVENTS_END_ANNOTATION = 'k8s.io/initial-events-end';

/**
 * A new, empty object of each kind as Go's encoding/json writes it (non-omitempty zero fields and
 * struct fields appear): what a BOOKMARK carries besides metadata.resourceVersion (1.34+ shape).
 */
function emptyObject(kind: FakeKind): Record<string, unknown> {
  switch (kind) {
    case 'Service':
      return { spec: {}, status: { loadBalancer: {} } };
    case 'EndpointSlice':
      return { addressType: '', endpoints: null, ports: null };
    case 'Node':
      return {
        spec: {},
        status: {
          daemonEndpoints: { kubeletEndpoint: { Port: 0 } },
          nodeInfo: {
            machineID: '',
            systemUUID: '',
            bootID: '',
            kernelVersion: '',
            osImage: '',
            containerRuntimeVersion: '',
            kubeletVersion: '',
            kubeProxyVersion: '',
            operatingSystem: '',
            architecture: '',
          },
        },
      };
    case 'NetworkPolicy':
      return { spec: { podSelector: {} } };
    case 'Pod':
      return { spec: { containers: null }, status: {} };
    case 'Namespace':
      return { spec: {}, status: {} };
  }
}

interface HistoryEvent {
  readonly rv: number;
  readonly kind: FakeKind;
  readonly key: string;
  readonly type: 'ADDED' | 'MODIFIED' | 'DELETED';
  readonly object: KubeObj;
  /** The stored object before this event (MODIFIED/DELETED). */
  readonly previous?: KubeObj;
}

interface Watcher {
  readonly kind: FakeKind;
  readonly matches: (obj: KubeObj) => boolean;
  readonly res: http.ServerResponse;
  lastSentRv: number;
  /** Dead connection: socket stays open, nothing is ever sent again, timeouts do not fire. */
  stalled: boolean;
  /** Bookmarks this watch received (for tests that wait for one). */
  bookmarks: number;
  lastBookmarkRv: number;
  timers: NodeJS.Timeout[];
  close(): void;
}

/** What a request asked for, as the counters keep it. */
export interface LoggedRequest {
  readonly at: number;
  readonly kind: FakeKind;
  readonly verb: RequestVerb;
  readonly query: Readonly<Record<string, string>>;
  readonly status: number;
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
  readonly field: string;
  readonly negate: boolean;
  readonly value: string;
}

/** Selectable fields per kind (kube-apiserver's SelectableFields; Services' spec fields since 1.31). */
const FIELDS: Readonly<Record<FakeKind, readonly string[]>> = {
  Service: ['metadata.name', 'metadata.namespace', 'spec.clusterIP', 'spec.type'],
  Node: ['metadata.name', 'metadata.namespace', 'spec.unschedulable'],
  EndpointSlice: ['metadata.name', 'metadata.namespace'],
  NetworkPolicy: ['metadata.name', 'metadata.namespace'],
  // pkg/registry/core/pod/strategy.go PodToSelectableFields.
  Pod: [
    'metadata.name',
    'metadata.namespace',
    'spec.nodeName',
    'spec.restartPolicy',
    'spec.schedulerName',
    'spec.serviceAccountName',
    'spec.hostNetwork',
    'status.phase',
    'status.podIP',
    'status.nominatedNodeName',
  ],
  Namespace: ['metadata.name', 'metadata.namespace', 'status.phase'],
};

/** Kinds without a field-label conversion function of their own answer with the default one's words. */
const DEFAULT_FIELD_CONVERSION: ReadonlySet<FakeKind> = new Set(['EndpointSlice', 'NetworkPolicy']);

/**
 * Parses a field selector for `kind` (default: the fields every kind has); throws with the API
 * server's message for a field the kind does not support.
 */
export function parseFieldSelector(text: string, kind?: FakeKind): FieldRequirement[] {
  return splitTopLevel(text).map((req) => {
    const m = /^([^!=\s]+)\s*(==|=|!=)\s*(\S*)$/.exec(req);
    if (!m) throw new Error(`invalid selector: '${req}'; can't understand '${req}'`);
    const field = m[1]!;
    const supported = kind ? FIELDS[kind] : ['metadata.name', 'metadata.namespace'];
    if (!supported.includes(field)) {
      // Kinds with their own conversion function say it this way; the rest use the default one.
      throw new Error(
        kind !== undefined && DEFAULT_FIELD_CONVERSION.has(kind)
          ? `"${field}" is not a known field selector: only "metadata.name", "metadata.namespace"`
          : `field label not supported: ${field}`,
      );
    }
    return { field, negate: m[2] === '!=', value: m[3]! };
  });
}

function fieldValue(obj: KubeObj, field: string): string {
  const spec = (obj.spec ?? {}) as Record<string, unknown>;
  const status = (obj.status ?? {}) as Record<string, unknown>;
  switch (field) {
    case 'spec.nodeName':
    case 'spec.restartPolicy':
    case 'spec.schedulerName':
    case 'spec.serviceAccountName':
      return str(spec[field.slice('spec.'.length)]);
    case 'spec.hostNetwork':
      return spec.hostNetwork === true ? 'true' : 'false';
    case 'status.phase':
    case 'status.podIP':
    case 'status.nominatedNodeName':
      return str(status[field.slice('status.'.length)]);
    case 'metadata.name':
      return nameOf(obj);
    case 'metadata.namespace':
      return namespaceOf(obj);
    case 'spec.clusterIP':
      return str(spec.clusterIP);
    case 'spec.type':
      return str(spec.type);
    case 'spec.unschedulable':
      return spec.unschedulable === true ? 'true' : 'false';
    default:
      return '';
  }
}

function fieldsMatch(reqs: readonly FieldRequirement[], obj: KubeObj): boolean {
  return reqs.every((r) =>
    r.negate ? fieldValue(obj, r.field) !== r.value : fieldValue(obj, r.field) === r.value,
  );
}

function nameOf(obj: KubeObj): string {
  return str(obj.metadata?.name);
}

function namespaceOf(obj: KubeObj): string {
  return str(obj.metadata?.namespace);
}

function labelsOf(obj: KubeObj): Record<string, string> {
  const l = obj.metadata?.labels;
  return typeof l === 'object' && l !== null ? (l as Record<string, string>) : {};
}

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

/** Go's RFC 3339 in UTC with whole seconds, as metav1.Time encodes. */
function timestamp(): string {
  return new Date().toISOString().replace(/\.\d+Z$/, 'Z');
}

/** Go's encoding/json escapes <, > and & in strings. */
function goJson(value: unknown): string {
  return JSON.stringify(value).replace(/[<>&]/g, (c) => `\\u00${c.charCodeAt(0).toString(16)}`);
}

// ---------------------------------------------------------------------------------------------
// Status objects
// ---------------------------------------------------------------------------------------------

export interface StatusDetails {
  readonly name?: string;
  readonly group?: string;
  readonly kind?: string;
  readonly causes?: readonly { reason?: string; message?: string; field?: string }[];
  readonly retryAfterSeconds?: number;
}

/** A metav1.Status in its key order; `reason` and `details` omitted when empty, as Go's omitempty. */
export function statusBody(
  code: number,
  reason: string,
  message: string,
  details?: StatusDetails,
  continueToken?: string,
): Record<string, unknown> {
  return {
    kind: 'Status',
    apiVersion: 'v1',
    metadata: continueToken ? { continue: continueToken } : {},
    status: 'Failure',
    message,
    ...(reason !== '' ? { reason } : {}),
    ...(details !== undefined ? { details } : {}),
    code,
  };
}

const REASONS: Readonly<Record<number, string>> = {
  400: 'BadRequest',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'NotFound',
  410: 'Expired',
  422: 'Invalid',
  429: 'TooManyRequests',
  500: 'InternalError',
  503: 'ServiceUnavailable',
  504: 'Timeout',
};

class HttpStatusError extends Error {
  constructor(
    readonly code: number,
    readonly reason: string,
    message: string,
    readonly details?: StatusDetails,
    readonly continueToken?: string,
  ) {
    super(message);
  }
}

/** 422 Invalid for ListOptions, as apimachinery's validation words it. */
function invalidListOptions(field: string, detail: string): HttpStatusError {
  return new HttpStatusError(422, 'Invalid', `ListOptions.meta.k8s.io "" is invalid: ${field}: ${detail}`, {
    kind: 'ListOptions',
    group: 'meta.k8s.io',
    causes: [{ reason: 'FieldValueInvalid', message: detail, field }],
  });
}

const EXPIRED_LIST = 'The resourceVersion for the provided list is too old.';
const EXPIRED_CONTINUE =
  'The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.';

// ---------------------------------------------------------------------------------------------
// Continue tokens: base64url (no padding) of {"v":"meta.k8s.io/v1","rv":N,"start":"<key>\u0000"}
// ---------------------------------------------------------------------------------------------

export function encodeContinue(rv: number, lastKey: string): string {
  return Buffer.from(JSON.stringify({ v: 'meta.k8s.io/v1', rv, start: `${lastKey}\u0000` })).toString(
    'base64url',
  );
}

function decodeContinue(token: string): { rv: number; start: string } {
  let parsed: { v?: unknown; rv?: unknown; start?: unknown };
  try {
    parsed = JSON.parse(Buffer.from(token, 'base64url').toString('utf8')) as typeof parsed;
  } catch {
    throw new HttpStatusError(400, 'BadRequest', `invalid continue token: ${token}`);
  }
  if (parsed.v !== 'meta.k8s.io/v1' || typeof parsed.rv !== 'number' || typeof parsed.start !== 'string') {
    throw new HttpStatusError(400, 'BadRequest', 'invalid continue token: unsupported or malformed token');
  }
  return { rv: parsed.rv, start: parsed.start };
}

/** Go's ParseBool-like query booleans: present and not "0"/"false". */
function queryBool(q: URLSearchParams, name: string): boolean {
  const v = q.get(name);
  return v !== null && v.toLowerCase() !== 'false' && v !== '0';
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
  ['NetworkPolicy', '/apis/networking.k8s.io/v1'],
  ['Pod', '/api/v1'],
  ['Namespace', '/api/v1'],
];

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
    if (rest[0] !== KINDS[kind].resource || rest.length > 2) continue;
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

/** ObjectMeta in Go's field order (what the API writes). */
const META_ORDER = [
  'name',
  'generateName',
  'namespace',
  'selfLink',
  'uid',
  'resourceVersion',
  'generation',
  'creationTimestamp',
  'deletionTimestamp',
  'deletionGracePeriodSeconds',
  'labels',
  'annotations',
  'ownerReferences',
  'finalizers',
  'managedFields',
];

function orderedMeta(md: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const k of META_ORDER) if (md[k] !== undefined) out[k] = md[k];
  for (const [k, v] of Object.entries(md)) if (!(k in out) && v !== undefined) out[k] = v;
  return out;
}

/** The object as a watch event or a GET carries it: kind and apiVersion first. */
function withTypeMeta(kind: FakeKind, obj: KubeObj): KubeObj {
  return { kind, apiVersion: KINDS[kind].apiVersion, ...obj };
}

/** A stored object: server-owned fields set, no TypeMeta (items of a list keep none). */
function stored(kind: FakeKind, o: KubeObj, md: Record<string, unknown>): KubeObj {
  const { kind: _k, apiVersion: _a, metadata: _m, ...rest } = o;
  void _k;
  void _a;
  void _m;
  const body: Record<string, unknown> = { metadata: orderedMeta(md), ...rest };
  // Struct fields without omitempty appear even when empty.
  if (kind === 'Service') body.status ??= { loadBalancer: {} };
  if (kind === 'EndpointSlice') {
    body.addressType ??= '';
    body.endpoints ??= null;
    body.ports ??= null;
  }
  return body;
}

const isObj = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

/** pkg/apis/networking/v1/defaults.go: protocol TCP on every port; policyTypes from the rules. */
function defaultNetworkPolicy(o: KubeObj): void {
  const spec = isObj(o.spec) ? o.spec : (o.spec = {});
  spec.podSelector ??= {};
  for (const dir of ['ingress', 'egress']) {
    for (const rule of Array.isArray(spec[dir]) ? (spec[dir] as unknown[]) : []) {
      for (const port of isObj(rule) && Array.isArray(rule.ports) ? (rule.ports as unknown[]) : []) {
        if (isObj(port)) port.protocol ??= 'TCP';
      }
    }
  }
  if (!Array.isArray(spec.policyTypes) || spec.policyTypes.length === 0) {
    const egress = Array.isArray(spec.egress) && spec.egress.length > 0;
    spec.policyTypes = egress ? ['Ingress', 'Egress'] : ['Ingress'];
  }
}

/** pkg/apis/core/v1/defaults.go for what a pod spec needs; admission plugins' additions left out. */
function defaultPod(o: KubeObj, creating: boolean): void {
  const spec = isObj(o.spec) ? o.spec : (o.spec = {});
  spec.restartPolicy ??= 'Always';
  spec.terminationGracePeriodSeconds ??= 30;
  spec.dnsPolicy ??= 'ClusterFirst';
  spec.securityContext ??= {};
  spec.schedulerName ??= 'default-scheduler';
  spec.enableServiceLinks ??= true;
  for (const c of Array.isArray(spec.containers) ? (spec.containers as unknown[]) : []) {
    if (!isObj(c)) continue;
    c.resources ??= {};
    c.terminationMessagePath ??= '/dev/termination-log';
    c.terminationMessagePolicy ??= 'File';
    c.imagePullPolicy ??= typeof c.image === 'string' && !c.image.includes(':') ? 'Always' : 'IfNotPresent';
    for (const p of Array.isArray(c.ports) ? (c.ports as unknown[]) : []) if (isObj(p)) p.protocol ??= 'TCP';
  }
  // The registry's PrepareForCreate: a new pod's status is Pending, whatever the client sent.
  if (creating) o.status = { phase: 'Pending', qosClass: 'BestEffort' };
}

/** The namespace's own-name label (always overwritten), its finalizer and phase. */
function defaultNamespace(o: KubeObj, md: Record<string, unknown>): void {
  md.labels = { ...(isObj(md.labels) ? md.labels : {}), 'kubernetes.io/metadata.name': str(md.name) };
  const spec = isObj(o.spec) ? o.spec : (o.spec = {});
  spec.finalizers ??= ['kubernetes'];
  o.status = { phase: 'Active', ...(isObj(o.status) ? o.status : {}) };
}

/** The API server's defaulting of a created or updated object (in place). */
function applyDefaults(kind: FakeKind, o: KubeObj, md: Record<string, unknown>, creating: boolean): void {
  if (kind === 'NetworkPolicy') defaultNetworkPolicy(o);
  else if (kind === 'Pod') defaultPod(o, creating);
  else if (kind === 'Namespace') defaultNamespace(o, md);
}

function managedFields(kind: FakeKind): unknown[] {
  return [
    {
      manager: 'svcplane-tests',
      operation: 'Update',
      apiVersion: KINDS[kind].apiVersion,
      time: timestamp(),
      fieldsType: 'FieldsV1',
      fieldsV1: {},
    },
  ];
}

export class FakeApiServer {
  private readonly historySize: number;
  private readonly bookmarkIntervalMs: number;
  private readonly defaultWatchTimeoutSeconds: number;
  private readonly host: string;
  private readonly watchListGate: boolean;
  private readonly watchCache: boolean;
  private readonly tooLargeWaitMs: number;
  private readonly tokens: readonly string[] | undefined;
  private readonly listenHandle: (() => Promise<NetServer>) | undefined;
  private server!: http.Server;
  private readonly sockets = new Set<Socket>();
  private readonly watchers = new Set<Watcher>();
  private readonly stores: Record<FakeKind, Map<string, KubeObj>> = {
    Service: new Map(),
    EndpointSlice: new Map(),
    Node: new Map(),
    NetworkPolicy: new Map(),
    Pod: new Map(),
    Namespace: new Map(),
  };
  private history: HistoryEvent[] = [];
  /** Events at or below this resourceVersion are gone: older watches and exact lists get 410. */
  private compactedRv: number;
  private rv = 1000;
  private failures: { remaining: number; status: number } = { remaining: 0, status: 500 };
  private latencyMs = 0;
  private watchesEndAtOnce = false;
  private stalled = false;
  /** While set, LIST requests are accepted and never answered (hung lists). */
  private listsStalled = false;
  private readonly hungLists = new Set<http.ServerResponse>();
  /** Set: list bodies are written in pieces of `bytes` every `intervalMs` (a slow link). */
  private listDribble: { bytes: number; intervalMs: number } | undefined;
  private listening = false;
  private rvWaiters: (() => void)[] = [];
  /** The Authorization header of the last request (to check that credentials are sent). */
  lastAuthorization?: string;
  private boundPort: number;
  readonly tls: boolean;
  /** PEM of the serving certificate (the CA a client trusts) when `tls` is on. */
  caPem?: string;
  private readonly requestLog: LoggedRequest[] = [];

  private constructor(options: FakeApiServerOptions) {
    this.historySize = options.historySize ?? 1000;
    this.bookmarkIntervalMs = options.bookmarkIntervalMs ?? 1000;
    this.defaultWatchTimeoutSeconds = options.defaultWatchTimeoutSeconds ?? 1800;
    this.boundPort = options.port ?? 0;
    this.host = options.host ?? '127.0.0.1';
    this.watchListGate = options.watchList ?? true;
    this.watchCache = options.watchCache ?? true;
    this.tooLargeWaitMs = options.tooLargeResourceVersionWaitMs ?? 3000;
    this.tokens = options.tokens;
    this.listenHandle = options.listenHandle;
    this.tls = options.tls ?? false;
    this.compactedRv = this.rv;
  }

  /** Creates and starts a stand-in (127.0.0.1, ephemeral port unless `port` is given). */
  static async create(options: FakeApiServerOptions = {}): Promise<FakeApiServer> {
    const s = new FakeApiServer(options);
    const handler = (req: http.IncomingMessage, res: http.ServerResponse): void => {
      s.handle(req, res).catch((err: unknown) => {
        if (!res.headersSent)
          s.sendStatus(res, 500, 'InternalError', `Internal error occurred: ${String(err)}`);
        else res.destroy();
      });
    };
    if (s.tls) {
      const { cert, key } = await testCertificate(options.certificateIPs);
      s.caPem = cert;
      s.server = https.createServer({ cert, key }, handler);
    } else {
      s.server = http.createServer(handler);
    }
    s.server.on('connection', (sock: Socket) => {
      s.sockets.add(sock);
      sock.on('close', () => s.sockets.delete(sock));
    });
    s.server.on('secureConnection', (sock: Socket) => {
      s.sockets.add(sock);
      sock.on('close', () => s.sockets.delete(sock));
    });
    await s.start();
    return s;
  }

  get port(): number {
    return this.boundPort;
  }

  get url(): string {
    const host = this.host.includes(':') ? `[${this.host}]` : this.host;
    return `${this.tls ? 'https' : 'http'}://${host}:${this.boundPort}`;
  }

  /** The current (latest) global resourceVersion. */
  get resourceVersion(): string {
    return String(this.rv);
  }

  /** A KubeConfig pointing at this server (with the CA when TLS; plain HTTP needs skipTLSVerify). */
  kubeConfig(token = 'fake-token'): KubeConfig {
    const kc = new KubeConfig();
    kc.loadFromClusterAndUser(
      this.tls
        ? {
            name: 'fake',
            server: this.url,
            caData: Buffer.from(this.caPem!).toString('base64'),
            skipTLSVerify: false,
          }
        : { name: 'fake', server: this.url, skipTLSVerify: true },
      { name: 'fake-user', token },
    );
    return kc;
  }

  /**
   * A kubeconfig file's text for this server: `user` is the YAML of the user entry (default a
   * token), e.g. `{token: abc}` or an `exec:` block.
   */
  kubeconfigYaml(user = '{token: fake-token}'): string {
    const ca = this.tls ? `, certificate-authority-data: ${Buffer.from(this.caPem!).toString('base64')}` : '';
    return [
      'apiVersion: v1',
      'kind: Config',
      'clusters:',
      `- name: fake`,
      `  cluster: {server: "${this.url}"${ca}}`,
      'users:',
      '- name: fake-user',
      `  user: ${user}`,
      'contexts:',
      '- name: fake',
      '  context: {cluster: fake, user: fake-user}',
      'current-context: fake',
      '',
    ].join('\n');
  }

  // ----- lifecycle -----

  /** Starts listening (again, on the same port after stop()). */
  async start(): Promise<void> {
    if (this.listening) return;
    if (this.listenHandle) {
      const handle = await this.listenHandle();
      await new Promise<void>((resolve, reject) => {
        this.server.once('error', reject);
        this.server.listen(handle, () => {
          this.server.off('error', reject);
          resolve();
        });
      });
    } else {
      await new Promise<void>((resolve, reject) => {
        this.server.once('error', reject);
        this.server.listen(this.boundPort, this.host, () => {
          this.server.off('error', reject);
          resolve();
        });
      });
    }
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

  /**
   * Creates an object; the server sets uid, resourceVersion, creationTimestamp, managedFields and
   * (EndpointSlices) generation, and drops kind/apiVersion from storage. Returns it as a POST's
   * response carries it (with kind/apiVersion).
   */
  create(kind: FakeKind, obj: object): KubeObj {
    const o = clone(obj) as KubeObj;
    const md = { ...(o.metadata ?? {}) };
    const name = str(md.name);
    if (name === '') throw new Error(`create ${kind}: metadata.name is required`);
    if (KINDS[kind].namespaced && typeof md.namespace !== 'string') md.namespace = 'default';
    if (!KINDS[kind].namespaced) delete md.namespace;
    const key = objKey(kind, str(md.namespace), name);
    if (this.stores[kind].has(key)) throw new Error(`create ${kind} ${key}: already exists`);
    applyDefaults(kind, o, md, true);
    // Server-owned: a client cannot create an object that is being deleted.
    delete md.deletionTimestamp;
    delete md.deletionGracePeriodSeconds;
    const rv = ++this.rv;
    const object = stored(kind, o, {
      ...md,
      uid: randomUUID(),
      resourceVersion: String(rv),
      // Only strategies that set it have a generation (EndpointSlices, NetworkPolicies, Pods).
      generation: HAS_GENERATION.has(kind) ? 1 : undefined,
      creationTimestamp: timestamp(),
      managedFields: managedFields(kind),
    });
    this.stores[kind].set(key, object);
    this.record({ rv, kind, key, type: 'ADDED', object });
    return withTypeMeta(kind, clone(object));
  }

  /**
   * Replaces an existing object (by namespace/name); bumps resourceVersion (and an EndpointSlice's
   * generation when anything but metadata changed). The deletion timestamp stays the server's; an
   * update that removes the last finalizer of an object being deleted deletes it.
   */
  update(kind: FakeKind, obj: object): KubeObj {
    const o = clone(obj) as KubeObj;
    const md = { ...(o.metadata ?? {}) };
    if (KINDS[kind].namespaced && typeof md.namespace !== 'string') md.namespace = 'default';
    const key = objKey(kind, str(md.namespace), str(md.name));
    const previous = this.stores[kind].get(key);
    if (!previous) throw new Error(`update ${kind} ${key}: not found`);
    const pmd = previous.metadata ?? {};
    applyDefaults(kind, o, md, false);
    delete md.deletionTimestamp;
    delete md.deletionGracePeriodSeconds;
    if (pmd.deletionTimestamp !== undefined) {
      md.deletionTimestamp = pmd.deletionTimestamp;
      md.deletionGracePeriodSeconds = pmd.deletionGracePeriodSeconds;
    }
    const rv = ++this.rv;
    const candidate = stored(kind, o, {});
    // A status write (the kubelet's) is no spec change: only the spec counts where there is one.
    const bodyOf = (x: KubeObj): string =>
      JSON.stringify('spec' in x ? x.spec : { ...x, metadata: undefined });
    const changed = bodyOf(candidate) !== bodyOf(previous);
    const object = stored(kind, o, {
      ...md,
      uid: pmd.uid,
      resourceVersion: String(rv),
      generation: HAS_GENERATION.has(kind)
        ? (typeof pmd.generation === 'number' ? pmd.generation : 1) + (changed ? 1 : 0)
        : undefined,
      creationTimestamp: pmd.creationTimestamp,
      managedFields: managedFields(kind),
    });
    this.stores[kind].set(key, object);
    this.record({ rv, kind, key, type: 'MODIFIED', object, previous });
    if (md.deletionTimestamp !== undefined && finalizersOf(object).length === 0) {
      this.delete(kind, str(md.namespace), str(md.name));
    }
    return withTypeMeta(kind, clone(object));
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
    if (kind === 'Namespace') return this.deleteNamespace(key, previous);
    if (finalizersOf(previous).length > 0) {
      if (previous.metadata?.deletionTimestamp !== undefined) return; // already being deleted
      const rv = ++this.rv;
      const object: KubeObj = {
        ...previous,
        metadata: orderedMeta({
          ...previous.metadata,
          resourceVersion: String(rv),
          deletionTimestamp: timestamp(),
          deletionGracePeriodSeconds: 0,
        }),
      };
      this.stores[kind].set(key, object);
      this.record({ rv, kind, key, type: 'MODIFIED', object, previous });
      return;
    }
    this.stores[kind].delete(key);
    const rv = ++this.rv;
    // The real API sends the last state of the object with the deletion's resourceVersion.
    const object: KubeObj = { ...previous, metadata: { ...previous.metadata, resourceVersion: String(rv) } };
    this.record({ rv, kind, key, type: 'DELETED', object, previous });
  }

  /**
   * A Namespace goes Terminating (MODIFIED: deletionTimestamp, status.phase), then, once the namespace
   * controller has emptied it and removed its spec finalizer, away (DELETED). The stand-in has no
   * such controller: it refuses to delete a namespace that still holds objects.
   */
  private deleteNamespace(key: string, previous: KubeObj): void {
    const held = (Object.keys(this.stores) as FakeKind[]).filter(
      (k) => KINDS[k].namespaced && [...this.stores[k].values()].some((o) => namespaceOf(o) === key),
    );
    if (held.length > 0) throw new Error(`delete Namespace ${key}: delete its ${held.join(', ')} first`);
    const rv = ++this.rv;
    const terminating: KubeObj = {
      ...previous,
      metadata: orderedMeta({
        ...previous.metadata,
        resourceVersion: String(rv),
        deletionTimestamp: timestamp(),
        deletionGracePeriodSeconds: 0,
      }),
      status: { phase: 'Terminating' },
    };
    this.stores.Namespace.set(key, terminating);
    this.record({ rv, kind: 'Namespace', key, type: 'MODIFIED', object: terminating, previous });
    this.stores.Namespace.delete(key);
    const gone = ++this.rv;
    const object: KubeObj = {
      ...terminating,
      metadata: { ...terminating.metadata, resourceVersion: String(gone) },
      spec: { ...(isObj(terminating.spec) ? terminating.spec : {}), finalizers: [] },
    };
    this.record({ rv: gone, kind: 'Namespace', key, type: 'DELETED', object, previous: terminating });
  }

  /** One object as a GET returns it (with kind/apiVersion), or undefined. */
  get(kind: FakeKind, namespace: string, name: string): KubeObj | undefined {
    const o = this.stores[kind].get(objKey(kind, namespace, name));
    return o ? withTypeMeta(kind, clone(o)) : undefined;
  }

  /** The objects of a kind as a list's items (without kind/apiVersion). */
  list(kind: FakeKind): KubeObj[] {
    return [...this.stores[kind].values()].map(clone);
  }

  // ----- faults -----

  /** Ends every open watch cleanly, as an API server does on its own timeout or restart. */
  closeAllWatches(): void {
    for (const w of [...this.watchers]) w.close();
  }

  /** The next `n` list/watch requests get HTTP `status` with a Status body (429: Retry-After 1). */
  failNext(n: number, status = 500): void {
    this.failures = { remaining: n, status };
  }

  /** While on, every watch ends right after its headers and initial events (a server or proxy that drops them). */
  closeWatchesAtOnce(on = true): void {
    this.watchesEndAtOnce = on;
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
      w.res.write(goJson({ type: 'ERROR', object: status }) + '\n');
      w.close();
      hit++;
    }
    return hit;
  }

  /**
   * Writes raw bytes on open watches (of `kind`, or all), e.g. an endless line; returns how many got
   * them. `end` closes those watches afterwards.
   */
  writeToWatches(data: string | Buffer, kind?: FakeKind, end = false): number {
    let hit = 0;
    for (const w of [...this.watchers]) {
      if (w.stalled || (kind !== undefined && w.kind !== kind)) continue;
      w.res.write(data);
      if (end) w.close();
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

  /** Slow lists: bodies written `bytes` at a time every `intervalMs` (undefined: at once). */
  dribbleLists(opts: { bytes: number; intervalMs: number } | undefined): void {
    this.listDribble = opts;
  }

  /** LIST requests currently hanging (the client has not closed them yet). */
  get hungListCount(): number {
    return this.hungLists.size;
  }

  /**
   * Compaction: forgets the event history, so watches, exact lists and continue tokens from any
   * older resourceVersion get 410 Expired.
   */
  compact(): void {
    this.history = [];
    this.compactedRv = this.rv;
  }

  // ----- counters -----

  /** Requests received (fault-injected ones too), optionally by kind and verb. */
  requests(kind?: FakeKind, verb?: RequestVerb): number {
    return this.requestLog.filter(
      (r) => (kind === undefined || r.kind === kind) && (verb === undefined || r.verb === verb),
    ).length;
  }

  /** Requests received since `sinceMs` (Date.now() based). */
  requestsSince(sinceMs: number, kind?: FakeKind, verb?: RequestVerb): number {
    return this.requestLog.filter(
      (r) =>
        r.at >= sinceMs && (kind === undefined || r.kind === kind) && (verb === undefined || r.verb === verb),
    ).length;
  }

  /** Every request with its query and status (oldest first). */
  get log(): readonly LoggedRequest[] {
    return this.requestLog;
  }

  resetCounts(): void {
    this.requestLog.length = 0;
  }

  /** Open watch connections (stalled ones included). */
  get openWatches(): number {
    return this.watchers.size;
  }

  /**
   * Bookmarks received by each open watch (of `kind`, or all) whose resourceVersion is at least
   * `minRv`; 0 for a watch that got none yet. Tests wait on this instead of sleeping.
   */
  bookmarksSince(minRv: number, kind?: FakeKind): number[] {
    return [...this.watchers]
      .filter((w) => kind === undefined || w.kind === kind)
      .map((w) => (w.lastBookmarkRv >= minRv ? w.bookmarks : 0));
  }

  // ----- internals -----

  private record(ev: HistoryEvent): void {
    this.history.push(ev);
    if (this.history.length > this.historySize) {
      const dropped = this.history.splice(0, this.history.length - this.historySize);
      this.compactedRv = dropped[dropped.length - 1]!.rv;
    }
    for (const w of this.watchers) if (w.kind === ev.kind) this.deliver(w, ev);
    const waiters = this.rvWaiters;
    this.rvWaiters = [];
    for (const wake of waiters) wake();
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
    if (type) w.res.write(goJson({ type, object: withTypeMeta(w.kind, ev.object) }) + '\n');
  }

  /** The objects of `kind` as they were at `rv` (>= compactedRv), by undoing later events. */
  private stateAt(kind: FakeKind, rv: number): Map<string, KubeObj> {
    const state = new Map(this.stores[kind]);
    for (let i = this.history.length - 1; i >= 0; i--) {
      const ev = this.history[i]!;
      if (ev.rv <= rv) break;
      if (ev.kind !== kind) continue;
      if (ev.type === 'ADDED') state.delete(ev.key);
      else state.set(ev.key, ev.previous!);
    }
    return state;
  }

  /** Waits (up to the server's limit) for the resourceVersion to be reached; else 504. */
  private async waitForRv(rv: number): Promise<void> {
    const deadline = Date.now() + this.tooLargeWaitMs;
    while (rv > this.rv) {
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new HttpStatusError(
          504,
          'Timeout',
          `Timeout: Too large resource version: ${rv}, current: ${this.rv}`,
          {
            causes: [{ reason: 'ResourceVersionTooLarge', message: 'Too large resource version' }],
            retryAfterSeconds: 1,
          },
        );
      }
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.rvWaiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  private sendStatus(
    res: http.ServerResponse,
    code: number,
    reason: string,
    message: string,
    details?: StatusDetails,
    continueToken?: string,
  ): void {
    const headers: Record<string, string> = {
      'Content-Type': 'application/json',
      'Cache-Control': 'no-cache, private',
    };
    if (details?.retryAfterSeconds !== undefined) headers['Retry-After'] = String(details.retryAfterSeconds);
    res.writeHead(code, headers);
    res.end(goJson(statusBody(code, reason, message, details, continueToken)) + '\n');
  }

  private logRequest(kind: FakeKind, verb: RequestVerb, q: URLSearchParams, res: http.ServerResponse): void {
    const entry = { at: Date.now(), kind, verb, query: Object.fromEntries(q.entries()), status: 0 };
    this.requestLog.push(entry);
    // Headers are written once: record the status then (a hung request keeps 0).
    const writeHead = res.writeHead.bind(res) as (...a: unknown[]) => http.ServerResponse;
    (res as unknown as { writeHead: (...a: unknown[]) => http.ServerResponse }).writeHead = (...a) => {
      entry.status = a[0] as number;
      return writeHead(...a);
    };
  }

  private authorized(req: http.IncomingMessage): boolean {
    if (this.tokens === undefined) return true;
    const m = /^Bearer (.+)$/.exec(req.headers.authorization ?? '');
    return m !== null && this.tokens.includes(m[1]!);
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    this.lastAuthorization = req.headers.authorization;
    const url = new URL(req.url ?? '/', 'http://localhost');
    const target = parsePath(url.pathname);
    const q = url.searchParams;
    const watch = queryBool(q, 'watch');
    // Logged before authentication, so a test sees the refused requests (and their 401) too.
    if (req.method === 'GET' && target) {
      this.logRequest(target.kind, target.name !== undefined ? 'get' : watch ? 'watch' : 'list', q, res);
    }
    if (!this.authorized(req)) {
      this.sendStatus(res, 401, 'Unauthorized', 'Unauthorized');
      return;
    }
    if (req.method !== 'GET' || !target) {
      this.sendStatus(res, 404, 'NotFound', 'the server could not find the requested resource', {});
      return;
    }

    if (this.latencyMs > 0) await new Promise((r) => setTimeout(r, this.latencyMs));
    if (this.failures.remaining > 0) {
      this.failures.remaining--;
      const code = this.failures.status;
      const details =
        code === 429
          ? { retryAfterSeconds: 1 }
          : code === 500
            ? { causes: [{ message: `injected failure (${code})` }] }
            : undefined;
      this.sendStatus(res, code, REASONS[code] ?? '', `injected failure (${code})`, details);
      return;
    }

    try {
      if (target.name !== undefined) {
        const obj = this.stores[target.kind].get(objKey(target.kind, target.namespace ?? '', target.name));
        if (!obj) {
          throw new HttpStatusError(
            404,
            'NotFound',
            `${KINDS[target.kind].resource} "${target.name}" not found`,
            {
              name: target.name,
              kind: KINDS[target.kind].resource,
            },
          );
        }
        res.writeHead(200, { 'Content-Type': 'application/json', 'Cache-Control': 'no-cache, private' });
        res.end(goJson(withTypeMeta(target.kind, obj)) + '\n');
        return;
      }

      let labelReqs: LabelRequirement[];
      let fieldReqs: FieldRequirement[];
      try {
        labelReqs = parseLabelSelector(q.get('labelSelector') ?? '');
        fieldReqs = parseFieldSelector(q.get('fieldSelector') ?? '', target.kind);
      } catch (err) {
        throw new HttpStatusError(400, 'BadRequest', (err as Error).message);
      }
      const selectors = (q.get('labelSelector') ?? '') !== '' || (q.get('fieldSelector') ?? '') !== '';
      const matches = (o: KubeObj): boolean =>
        (target.namespace === undefined || namespaceOf(o) === target.namespace) &&
        labelsMatch(labelReqs, labelsOf(o)) &&
        fieldsMatch(fieldReqs, o);

      if (watch) {
        await this.startWatch(req, res, target.kind, matches, q);
        return;
      }
      await this.serveList(res, target.kind, matches, selectors, q);
    } catch (err) {
      if (!(err instanceof HttpStatusError)) throw err;
      this.sendStatus(res, err.code, err.reason, err.message, err.details, err.continueToken);
    }
  }

  /** Parses resourceVersion: "" | "0" | a number; anything else fails as the storage layer does. */
  private static parseRv(rv: string): number | undefined {
    if (rv === '' || rv === '0') return undefined;
    if (!/^\d+$/.test(rv)) {
      // A storage InvalidError is no API status: kube-apiserver answers 500 with no reason.
      throw new HttpStatusError(
        500,
        '',
        `resourceVersion: Invalid value: "${rv}": strconv.ParseUint: parsing "${rv}": invalid syntax`,
      );
    }
    return Number(rv);
  }

  private async serveList(
    res: http.ServerResponse,
    kind: FakeKind,
    matches: (o: KubeObj) => boolean,
    selectors: boolean,
    q: URLSearchParams,
  ): Promise<void> {
    const rvParam = q.get('resourceVersion') ?? '';
    const rvm = q.get('resourceVersionMatch') ?? '';
    const cont = q.get('continue') ?? '';
    const limitParam = q.get('limit') ?? '';
    if (limitParam !== '' && !/^-?\d+$/.test(limitParam)) {
      throw new HttpStatusError(
        400,
        'BadRequest',
        `limit: Invalid value: "${limitParam}": strconv.ParseInt: parsing "${limitParam}": invalid syntax`,
      );
    }
    const limit = Math.max(0, Number(limitParam || '0'));

    // apimachinery's ListOptions validation.
    if (rvm !== '' && rvm !== 'Exact' && rvm !== 'NotOlderThan') {
      throw invalidListOptions(
        'resourceVersionMatch',
        `Unsupported value: "${rvm}": supported values: "Exact", "NotOlderThan"`,
      );
    }
    if (rvm !== '' && cont !== '') {
      throw invalidListOptions(
        'resourceVersionMatch',
        'Forbidden: resourceVersionMatch is forbidden when continue is provided',
      );
    }
    if (rvm !== '' && rvParam === '') {
      throw invalidListOptions(
        'resourceVersionMatch',
        'Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided',
      );
    }
    if (rvm === 'Exact' && rvParam === '0') {
      throw invalidListOptions(
        'resourceVersionMatch',
        'Forbidden: resourceVersionMatch "exact" is forbidden for resourceVersion "0"',
      );
    }
    if (cont !== '' && rvParam !== '' && rvParam !== '0') {
      throw new HttpStatusError(
        400,
        'BadRequest',
        'specifying resource version is not allowed when using continue',
      );
    }

    if (this.listsStalled) {
      this.hungLists.add(res);
      res.on('close', () => this.hungLists.delete(res));
      return;
    }

    // Which snapshot, from which key, and whether pages are cut.
    let snapshotRv = this.rv;
    let start = '';
    let pageLimit = limit;
    let objects: Map<string, KubeObj>;
    if (cont !== '') {
      const token = decodeContinue(cont);
      if (token.rv === -1) {
        // An inconsistent continuation (from a 410's token): the latest state.
        objects = this.stores[kind];
      } else {
        if (token.rv < this.compactedRv) throw new HttpStatusError(410, 'Expired', EXPIRED_CONTINUE);
        snapshotRv = token.rv;
        objects = this.stateAt(kind, token.rv);
      }
      start = token.start;
    } else {
      const rv = FakeApiServer.parseRv(rvParam);
      if (rvParam === '0') {
        // "Any": from the watch cache, which ignores the limit.
        if (this.watchCache) pageLimit = 0;
        objects = this.stores[kind];
      } else if (rv === undefined) {
        // "Most recent" (a consistent read).
        objects = this.stores[kind];
      } else {
        await this.waitForRv(rv);
        const exact = rvm === 'Exact' || (rvm === '' && limit > 0);
        if (exact) {
          if (rv < this.compactedRv) throw new HttpStatusError(410, 'Expired', EXPIRED_LIST);
          snapshotRv = rv;
          objects = this.stateAt(kind, rv);
        } else {
          // "Not older than": the watch cache's current state (limit ignored there as for "0").
          if (this.watchCache && rvm === '') pageLimit = 0;
          objects = this.stores[kind];
        }
      }
    }

    // etcd key order; a continue token's start is the last key returned plus "\u0000".
    const keys = [...objects.keys()].filter((k) => start === '' || k >= start).sort();
    const items: KubeObj[] = [];
    let lastKey = '';
    let remaining = 0;
    for (const k of keys) {
      const o = objects.get(k)!;
      if (!matches(o)) continue;
      if (pageLimit > 0 && items.length >= pageLimit) {
        remaining++;
        continue;
      }
      items.push(o);
      lastKey = k;
    }
    const metadata: Record<string, unknown> = { resourceVersion: String(snapshotRv) };
    if (remaining > 0) {
      metadata.continue = encodeContinue(snapshotRv, lastKey);
      // Only an unfiltered list knows how many are left.
      if (!selectors) metadata.remainingItemCount = remaining;
    }
    const body =
      goJson({ kind: KINDS[kind].listKind, apiVersion: KINDS[kind].apiVersion, metadata, items }) + '\n';
    res.writeHead(200, { 'Content-Type': 'application/json', 'Cache-Control': 'no-cache, private' });
    const dribble = this.listDribble;
    if (!dribble) {
      res.end(body);
      return;
    }
    const bytes = Buffer.from(body);
    for (let off = 0; off < bytes.length; off += dribble.bytes) {
      if (res.destroyed) return;
      res.write(bytes.subarray(off, off + dribble.bytes));
      await new Promise((r) => setTimeout(r, dribble.intervalMs));
    }
    res.end();
  }

  private async startWatch(
    req: http.IncomingMessage,
    res: http.ServerResponse,
    kind: FakeKind,
    matches: (o: KubeObj) => boolean,
    q: URLSearchParams,
  ): Promise<void> {
    const rvParam = q.get('resourceVersion') ?? '';
    const rvm = q.get('resourceVersionMatch') ?? '';
    const sendInitialParam = q.get('sendInitialEvents');
    let sendInitial = sendInitialParam !== null ? queryBool(q, 'sendInitialEvents') : undefined;
    const bookmarks = queryBool(q, 'allowWatchBookmarks');

    // Validation of watch options (apimachinery), then the WatchList defaulting.
    if (sendInitial !== undefined && !this.watchListGate) {
      throw invalidListOptions(
        'sendInitialEvents',
        'Forbidden: sendInitialEvents is forbidden for watch unless the WatchList feature gate is enabled',
      );
    }
    if (sendInitial !== undefined && rvm !== 'NotOlderThan') {
      throw invalidListOptions(
        'resourceVersionMatch',
        `Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan`,
      );
    }
    if (sendInitial === undefined && rvm !== '') {
      throw invalidListOptions(
        'resourceVersionMatch',
        'Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided',
      );
    }
    if (sendInitial === undefined && this.watchListGate && (rvParam === '' || rvParam === '0')) {
      // (and resourceVersionMatch=NotOlderThan, which the rest of this stand-in does not consult)
      sendInitial = true;
    }
    const fromRv = FakeApiServer.parseRv(rvParam);
    if (fromRv !== undefined && fromRv > this.rv) await this.waitForRv(fromRv);

    const timeoutParam = q.get('timeoutSeconds');
    const timeoutSeconds =
      timeoutParam !== null && /^\d+$/.test(timeoutParam) && Number(timeoutParam) > 0
        ? Number(timeoutParam)
        : this.defaultWatchTimeoutSeconds;

    const w: Watcher = {
      kind,
      matches,
      res,
      lastSentRv: fromRv ?? this.rv,
      stalled: this.stalled,
      bookmarks: 0,
      lastBookmarkRv: 0,
      timers: [],
      close: () => {
        if (!this.watchers.delete(w)) return;
        for (const t of w.timers) clearTimeout(t);
        // A dead connection cannot end cleanly: drop it.
        if (w.stalled) res.destroy();
        else if (!res.writableEnded) res.end();
      },
    };
    this.watchers.add(w);
    req.on('close', () => {
      this.watchers.delete(w);
      for (const t of w.timers) clearTimeout(t);
    });
    // A dead connection accepts the request and never answers.
    if (w.stalled) return;

    res.writeHead(200, {
      'Content-Type': 'application/json',
      'Cache-Control': 'no-cache, private',
      'Transfer-Encoding': 'chunked',
    });
    res.flushHeaders();

    const bookmark = (annotated: boolean): void => {
      const object = {
        kind,
        apiVersion: KINDS[kind].apiVersion,
        metadata: {
          resourceVersion: String(this.rv),
          ...(annotated ? { annotations: { [INITIAL_EVENTS_END_ANNOTATION]: 'true' } } : {}),
        },
        ...emptyObject(kind),
      };
      res.write(goJson({ type: 'BOOKMARK', object }) + '\n');
      w.bookmarks++;
      w.lastBookmarkRv = this.rv;
    };

    if (fromRv === undefined || sendInitial === true) {
      // Synthetic ADDED for every matching object, at the latest state ("" / "0" / not older than N).
      for (const o of this.stores[kind].values()) {
        if (matches(o)) res.write(goJson({ type: 'ADDED', object: withTypeMeta(kind, o) }) + '\n');
      }
      w.lastSentRv = this.rv;
      if (sendInitial === true && bookmarks) bookmark(true);
    } else if (fromRv < this.compactedRv) {
      // Real API: HTTP 200, then one ERROR event carrying a 410 Status, then the stream ends.
      const status = statusBody(410, 'Expired', `too old resource version: ${fromRv} (${this.compactedRv})`);
      res.write(goJson({ type: 'ERROR', object: status }) + '\n');
      w.close();
      return;
    } else {
      for (const ev of this.history) if (ev.kind === kind && ev.rv > fromRv) this.deliver(w, ev);
      w.lastSentRv = Math.max(w.lastSentRv, this.rv);
    }

    if (this.watchesEndAtOnce) {
      w.close();
      return;
    }
    const timeoutMs = timeoutSeconds * 1000;
    w.timers.push(
      setTimeout(() => {
        if (!w.stalled) w.close();
      }, timeoutMs),
    );
    if (bookmarks) {
      const tick = (): void => {
        if (!this.watchers.has(w)) return;
        if (!w.stalled) bookmark(false);
        w.timers.push(setTimeout(tick, this.bookmarkIntervalMs));
      };
      w.timers.push(setTimeout(tick, this.bookmarkIntervalMs));
      // kube-apiserver also sends one about 2 s before the deadline.
      if (timeoutMs > 2000) {
        w.timers.push(
          setTimeout(() => {
            if (this.watchers.has(w) && !w.stalled) bookmark(false);
          }, timeoutMs - 2000),
        );
      }
    }
  }
}
