import { parseEndpointSlice, type ParsedSlice } from './endpointslice.js';
import { parseLegacyEndpoints, type ParsedEndpoints } from './endpoints.js';
import { joinHostPort } from './ip.js';
import { DEFAULT_NAMESPACE, rawRef } from './meta.js';
import { parseNetworkPolicy } from './networkpolicy.js';
import { parseNode } from './node.js';
import { parseNamespace, parsePod } from './pod.js';
import type { NamespaceInfo, NetworkPolicy, PodInfo } from './policy-types.js';
import { policyKey } from './policy-types.js';
import { parseService, type ParsedService } from './service.js';
import type { ClusterState, Endpoint, NodeInfo, ObjectRef, Problem, Service, ServicePort } from './types.js';
import { serviceKey } from './types.js';
import { DEFAULT_SERVICE_LIMITS, applyServiceLimits, type ServiceLimits } from './limits.js';
import {
  compareStrings,
  deepEqual,
  displayName,
  isRecord,
  Issues,
  type JsonRecord,
  show,
} from './validate.js';

/**
 * Turns raw Kubernetes objects (from manifests or the API) into a validated ClusterState. Pure: no I/O,
 * never throws, deterministic. Bad objects are reported as problems and left out; nothing else changes.
 */

/** One raw object and where it came from (`file.yaml#2`), for problems. */
export interface SourceObject {
  readonly obj: unknown;
  readonly source?: string;
}

type Kind = 'Service' | 'EndpointSlice' | 'Endpoints' | 'Node' | 'Namespace' | 'Pod' | 'NetworkPolicy';

/** The (apiVersion, kind) pairs svcplane reads; every other kind is ignored. */
const KINDS: Readonly<Record<Kind, string>> = {
  Service: 'v1',
  EndpointSlice: 'discovery.k8s.io/v1',
  Endpoints: 'v1',
  Node: 'v1',
  // Read for NetworkPolicy enforcement (kept in the state whether or not it is switched on).
  Namespace: 'v1',
  Pod: 'v1',
  NetworkPolicy: 'networking.k8s.io/v1',
};

const CLUSTER_SCOPED: ReadonlySet<Kind> = new Set(['Node', 'Namespace']);

const isKind = (k: string): k is Kind => Object.hasOwn(KINDS, k);

/** Edit distance of two short strings, for "did you mean" (inputs cut at 40 characters). */
function editDistance(a: string, b: string): number {
  const x = a.slice(0, 40);
  const y = b.slice(0, 40);
  let row = Array.from({ length: y.length + 1 }, (_, j) => j);
  for (let i = 1; i <= x.length; i++) {
    const next = [i];
    for (let j = 1; j <= y.length; j++) {
      next[j] = Math.min(row[j]! + 1, next[j - 1]! + 1, row[j - 1]! + (x[i - 1] === y[j - 1] ? 0 : 1));
    }
    row = next;
  }
  return row[y.length]!;
}

function unknownKindReason(kind: string): string {
  const known = Object.keys(KINDS);
  const near = known.find((k) => k.toLowerCase() === kind.toLowerCase() || editDistance(k, kind) <= 2);
  return `${show(kind)} is not a kind svcplane reads (${known.join(', ')}, or a List of them); the object is ignored${near ? ` (did you mean ${near}?)` : ''}`;
}
const MAX_LIST_DEPTH = 8;

/**
 * Flattens `v1 List` (and typed `ServiceList`-style lists, whose items may omit kind/apiVersion) into
 * their items, recursively. Item sources read `file.yaml#0.items[3]`.
 */
export function flattenLists(objects: readonly SourceObject[]): {
  objects: SourceObject[];
  problems: Problem[];
} {
  const out: SourceObject[] = [];
  const problems: Problem[] = [];
  const visit = (so: SourceObject, depth: number): void => {
    const o = so.obj;
    if (!isRecord(o) || typeof o.kind !== 'string' || !o.kind.endsWith('List') || !('items' in o)) {
      out.push(so);
      return;
    }
    const ref = { ...rawRef(o.kind, o, false, so.source), name: '' };
    if (depth >= MAX_LIST_DEPTH) {
      problems.push({
        object: ref,
        field: 'items',
        reason: `Lists nested deeper than ${MAX_LIST_DEPTH} levels`,
      });
      return;
    }
    if (!Array.isArray(o.items)) {
      if (o.items !== null) problems.push({ object: ref, field: 'items', reason: 'must be an array' });
      return;
    }
    const itemKind = o.kind === 'List' ? undefined : o.kind.slice(0, -'List'.length);
    (o.items as unknown[]).forEach((item, i) => {
      const source = `${so.source ?? ''}${so.source ? '.' : ''}items[${i}]`;
      // Typed lists from the API (ServiceList) carry kind/apiVersion on the list only.
      const obj =
        itemKind && isRecord(item) && item.kind === undefined
          ? { apiVersion: o.apiVersion, kind: itemKind, ...item }
          : item;
      visit({ obj, source }, depth + 1);
    });
  };
  for (const so of objects) visit(so, 0);
  return { objects: out, problems };
}

interface Classified {
  readonly kind: Kind;
  readonly obj: JsonRecord;
  readonly ref: ObjectRef;
}

const typeName = (v: unknown): string => (v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v);

function classify(so: SourceObject, problems: Problem[]): Classified | undefined {
  const o = so.obj;
  const src = so.source !== undefined ? { source: so.source } : {};
  if (!isRecord(o)) {
    problems.push({
      object: { kind: 'Unknown', name: '', ...src },
      field: '',
      reason: `not an object: ${typeName(o)}`,
    });
    return undefined;
  }
  if (typeof o.kind !== 'string' || o.kind === '') {
    const ref = rawRef('Unknown', o, false, so.source);
    problems.push({
      object: ref,
      field: 'kind',
      reason: o.kind === undefined ? 'is required' : 'must be a non-empty string',
    });
    return undefined;
  }
  if (!isKind(o.kind)) {
    // Reported, not silently dropped: a typo (`kind: Servise`) would otherwise lose a Service unseen.
    problems.push({
      object: rawRef(displayName(o.kind), o, isRecord(o.metadata) && !!o.metadata.namespace, so.source),
      field: 'kind',
      reason: unknownKindReason(o.kind),
    });
    return undefined;
  }
  const ref = rawRef(o.kind, o, !CLUSTER_SCOPED.has(o.kind), so.source);
  if (o.apiVersion !== KINDS[o.kind]) {
    problems.push({
      object: ref,
      field: 'apiVersion',
      reason: `unsupported apiVersion ${show(o.apiVersion)} for ${o.kind}: expected ${KINDS[o.kind]}`,
    });
    return undefined;
  }
  return { kind: o.kind, obj: o, ref };
}

/**
 * classify() per raw object and source, with the raw identity: sources hand over the same raw objects
 * of unchanged files on every rebuild (20k of them at 10k Services), so only new objects are looked at.
 */
interface Classification {
  readonly source: string | undefined;
  readonly classified: Classified | undefined;
  readonly identity: string | undefined;
  readonly problems: readonly Problem[];
}
const classifyCache = new WeakMap<object, Classification>();

function classifyCached(so: SourceObject): Classification {
  const key = isRecord(so.obj) ? so.obj : undefined;
  const hit = key && classifyCache.get(key);
  if (hit && hit.source === so.source) return hit;
  const problems: Problem[] = [];
  const classified = classify(so, problems);
  const result: Classification = {
    source: so.source,
    classified,
    identity: classified && rawIdentity(classified),
    problems,
  };
  if (key) classifyCache.set(key, result);
  return result;
}

/** Raw identity for duplicate detection, before validation. */
function rawIdentity(c: Classified): string | undefined {
  const md = isRecord(c.obj.metadata) ? c.obj.metadata : undefined;
  if (!md || typeof md.name !== 'string') return undefined;
  const ns = CLUSTER_SCOPED.has(c.kind)
    ? ''
    : typeof md.namespace === 'string' && md.namespace !== ''
      ? md.namespace
      : DEFAULT_NAMESPACE;
  return `${c.kind}\u0000${ns}\u0000${md.name}`;
}

/** Drops all but the last definition of each object, with a problem naming both sources. */
function dropDuplicates(items: readonly Classification[], problems: Problem[]): Classified[] {
  const last = new Map<string, number>();
  items.forEach(({ classified: c, identity: id }, i) => {
    if (c === undefined || id === undefined) return;
    const prev = last.get(id);
    if (prev !== undefined) {
      const earlier = items[prev];
      const where = (r: ObjectRef | undefined): string => r?.source ?? '(unknown source)';
      const what = c.ref.namespace !== undefined ? `${c.ref.namespace}/${c.ref.name}` : c.ref.name;
      problems.push({
        object: c.ref,
        field: 'metadata.name',
        reason: `duplicate ${c.kind} ${what}: defined in ${where(earlier?.classified?.ref)} and ${where(c.ref)}; the last one is used`,
      });
    }
    last.set(id, i);
  });
  const out: Classified[] = [];
  items.forEach(({ classified: c, identity: id }, i) => {
    if (c !== undefined && (id === undefined || last.get(id) === i)) out.push(c);
  });
  return out;
}

/** Endpoints of one service port from its slices: matched by (name, protocol), deduplicated, sorted. */
function endpointsFor(port: ServicePort, slices: readonly ParsedSlice[]): Endpoint[] {
  const byAddr = new Map<string, Endpoint>();
  for (const slice of slices) {
    const sp = slice.ports.find((p) => p.name === port.portName && p.protocol === port.protocol);
    if (!sp) continue;
    for (const ep of slice.endpoints) {
      const endpoint: Endpoint = { ...ep, port: sp.port };
      const key = joinHostPort(ep.ip, sp.port);
      const existing = byAddr.get(key);
      // Same ip:port in two slices (e.g. during a rollout): keep one, preferring the non-terminating.
      if (!existing || (existing.terminating && !endpoint.terminating)) byAddr.set(key, endpoint);
    }
  }
  return [...byAddr.entries()].sort(([a], [b]) => compareStrings(a, b)).map(([, ep]) => ep);
}

function sortedMap<V>(entries: Iterable<[string, V]>): Map<string, V> {
  return new Map([...entries].sort(([a], [b]) => compareStrings(a, b)));
}

/** A parsed object and (when valid) the key it is filed under: `ns/name` of its Service, or the Node's name. */
type Parsed = { readonly problems: readonly Problem[]; readonly key?: string } & (
  | { kind: 'Service'; value: ParsedService | undefined }
  | { kind: 'EndpointSlice'; value: ParsedSlice | undefined }
  | { kind: 'Endpoints'; value: ParsedEndpoints | undefined }
  | { kind: 'Node'; value: NodeInfo | undefined }
  | { kind: 'Namespace'; value: NamespaceInfo | undefined }
  | { kind: 'Pod'; value: PodInfo | undefined }
  | { kind: 'NetworkPolicy'; value: NetworkPolicy | undefined }
);

/**
 * Parsing is pure in (raw object, reference). Sources keep the raw objects of unchanged files, so a
 * rebuild after one file changed re-validates only that file's objects (issue 7: event-to-rules).
 * Raw objects are never mutated; the cache is weak, so dropped objects free their entries.
 */
const parseCache = new WeakMap<object, { ref: ObjectRef; parsed: Parsed }>();
/** A Service joined with the very same slices is the very same built Service. */
const joinCache = new WeakMap<Service, { slices: readonly ParsedSlice[]; built: Service }>();

function parseClassified(c: Classified): Parsed {
  const hit = parseCache.get(c.obj);
  if (hit && hit.ref.source === c.ref.source && hit.ref.kind === c.ref.kind) return hit.parsed;
  const iss = new Issues(c.ref);
  let parsed: Parsed;
  // Keys are computed once per object: the same string each rebuild keeps its hash for the maps.
  switch (c.kind) {
    case 'Service': {
      const value = parseService(iss, c.obj);
      const key = value && serviceKey(value.service.namespace, value.service.name);
      parsed = { kind: c.kind, value, problems: iss.problems, ...(key !== undefined ? { key } : {}) };
      break;
    }
    case 'EndpointSlice': {
      const value = parseEndpointSlice(iss, c.obj);
      const key =
        value?.serviceName !== undefined ? serviceKey(value.namespace, value.serviceName) : undefined;
      parsed = { kind: c.kind, value, problems: iss.problems, ...(key !== undefined ? { key } : {}) };
      break;
    }
    case 'Endpoints': {
      const value = parseLegacyEndpoints(iss, c.obj);
      const key = value && serviceKey(value.namespace, value.name);
      parsed = { kind: c.kind, value, problems: iss.problems, ...(key !== undefined ? { key } : {}) };
      break;
    }
    case 'Node': {
      const value = parseNode(iss, c.obj);
      parsed = { kind: c.kind, value, problems: iss.problems, ...(value ? { key: value.name } : {}) };
      break;
    }
    case 'Namespace': {
      const value = parseNamespace(iss, c.obj);
      parsed = { kind: c.kind, value, problems: iss.problems, ...(value ? { key: value.name } : {}) };
      break;
    }
    case 'Pod': {
      const value = parsePod(iss, c.obj);
      const key = value && serviceKey(value.namespace, value.name);
      parsed = { kind: c.kind, value, problems: iss.problems, ...(key !== undefined ? { key } : {}) };
      break;
    }
    case 'NetworkPolicy': {
      const value = parseNetworkPolicy(iss, c.obj);
      const key = value && policyKey(value.namespace, value.name);
      parsed = { kind: c.kind, value, problems: iss.problems, ...(key !== undefined ? { key } : {}) };
      break;
    }
  }
  parseCache.set(c.obj, { ref: c.ref, parsed });
  return parsed;
}

/**
 * Validates raw objects ahead of a build: fills the per-object caches that buildClusterState reads,
 * so a source can do this part while it is still reading other files (issue 14). Changes no result.
 */
export function prepareSourceObjects(objects: readonly SourceObject[]): void {
  for (const so of flattenLists(objects).objects) {
    const c = classifyCached(so);
    if (c.classified) parseClassified(c.classified);
  }
}

function sameItems<T>(a: readonly T[], b: readonly T[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/**
 * Builds the validated cluster state. With `previous`, a Service (or Node) equal to its previous version
 * is the very same object, so consumers detect changes with `!==`.
 */
export function buildClusterState(
  objects: readonly SourceObject[],
  previous?: ClusterState,
  limits: ServiceLimits = DEFAULT_SERVICE_LIMITS,
): ClusterState {
  const flat = flattenLists(objects);
  const problems: Problem[] = [...flat.problems];
  const classified: Classification[] = [];
  for (const so of flat.objects) {
    const c = classifyCached(so);
    for (const p of c.problems) problems.push(p);
    if (c.classified) classified.push(c);
  }

  const services = new Map<string, ParsedService>();
  const serviceRefs = new Map<string, ObjectRef>();
  const slicesByService = new Map<string, ParsedSlice[]>();
  const legacy = new Map<string, ParsedEndpoints>();
  const nodes = new Map<string, NodeInfo>();
  const namespaces = new Map<string, NamespaceInfo>();
  const pods = new Map<string, PodInfo>();
  const podRefs = new Map<string, ObjectRef>();
  const policies = new Map<string, NetworkPolicy>();
  for (const c of dropDuplicates(classified, problems)) {
    const parsed = parseClassified(c);
    const key = parsed.key;
    if (key !== undefined && parsed.value !== undefined) {
      switch (parsed.kind) {
        case 'Service':
          services.set(key, parsed.value);
          serviceRefs.set(key, c.ref);
          break;
        case 'EndpointSlice': {
          const list = slicesByService.get(key);
          if (list) list.push(parsed.value);
          else slicesByService.set(key, [parsed.value]);
          break;
        }
        case 'Endpoints':
          legacy.set(key, parsed.value);
          break;
        case 'Node':
          nodes.set(key, parsed.value);
          break;
        case 'Namespace':
          namespaces.set(key, parsed.value);
          break;
        case 'Pod':
          pods.set(key, parsed.value);
          podRefs.set(key, c.ref);
          break;
        case 'NetworkPolicy':
          policies.set(key, parsed.value);
          break;
      }
    }
    problems.push(...parsed.problems);
  }

  const joined: [string, Service][] = [];
  for (const [key, { service, hasSelector }] of [...services].sort(([a], [b]) => compareStrings(a, b))) {
    let built = service;
    if (service.skipReason === undefined) {
      let slices: readonly ParsedSlice[] =
        slicesByService.get(key)?.sort((a, b) => compareStrings(a.name, b.name)) ?? [];
      // Mirroring: a selector-less Service gets its Endpoints mirrored. The manifest source has no
      // EndpointSlice controller, so a selector Service also falls back to its Endpoints when no slice
      // names it (in a real cluster that controller would have written the slices).
      const eps = legacy.get(key);
      if (eps && (!hasSelector || slices.length === 0)) slices = [...slices, ...eps.slices];
      const memo = joinCache.get(service);
      if (memo && sameItems(memo.slices, slices)) {
        built = memo.built;
      } else {
        built = {
          ...service,
          ports: service.ports.map((p) => ({ ...p, endpoints: endpointsFor(p, slices) })),
        };
        joinCache.set(service, { slices, built });
      }
    }
    joined.push([key, built]);
  }
  const limited = applyServiceLimits(joined, serviceRefs, limits);
  problems.push(...limited.problems);
  const kept = new Set(limited.kept.map(([key]) => key));
  const outServices: [string, Service][] = limited.kept.map(([key, built]) => {
    const prev = previous?.services.get(key);
    return [key, prev && (prev === built || deepEqual(prev, built)) ? prev : built];
  });
  const outNodes: [string, NodeInfo][] = [...nodes].map(([name, node]) => {
    const prev = previous?.nodes.get(name);
    return [name, prev && deepEqual(prev, node) ? prev : node];
  });
  // Newest trigger time per Service (for kubeproxy_network_programming_duration_seconds).
  const triggers = new Map<string, number>();
  for (const [key, slices] of slicesByService) {
    if (!kept.has(key)) continue;
    for (const sl of slices) {
      if (sl.triggerTime !== undefined && sl.triggerTime > (triggers.get(key) ?? -Infinity)) {
        triggers.set(key, sl.triggerTime);
      }
    }
  }
  problems.push(...podAddressConflicts(pods, podRefs));
  return {
    services: new Map(outServices),
    nodes: sortedMap(outNodes),
    namespaces: reuseEqual(namespaces, previous?.namespaces),
    pods: reuseEqual(pods, previous?.pods),
    networkPolicies: reuseEqual(policies, previous?.networkPolicies),
    problems,
    ...(triggers.size > 0 ? { endpointsTriggerTimes: sortedMap(triggers) } : {}),
  };
}

/** Sorted by key; a value equal to its previous version is the very same object (`!==` means changed). */
function reuseEqual<V>(
  current: ReadonlyMap<string, V>,
  previous: ReadonlyMap<string, V> | undefined,
): Map<string, V> {
  return sortedMap(
    [...current].map(([key, value]): [string, V] => {
      const prev = previous?.get(key);
      return [key, prev !== undefined && (prev === value || deepEqual(prev, value)) ? prev : value];
    }),
  );
}

/**
 * Two live pods claiming one address (a stale pod of a lost node, a bad manifest): reported on each
 * later claimant. The policy engine trusts neither for that address (see src/netpol/pod-index.ts).
 */
function podAddressConflicts(
  pods: ReadonlyMap<string, PodInfo>,
  refs: ReadonlyMap<string, ObjectRef>,
): Problem[] {
  const owner = new Map<string, string>();
  const out: Problem[] = [];
  for (const [key, pod] of [...pods].sort(([a], [b]) => compareStrings(a, b))) {
    if (pod.hostNetwork || pod.phase === 'Succeeded' || pod.phase === 'Failed') continue;
    pod.ips.forEach((ip, i) => {
      const first = owner.get(ip);
      if (first === undefined) return void owner.set(ip, key);
      out.push({
        object: refs.get(key) ?? { kind: 'Pod', namespace: pod.namespace, name: pod.name },
        field: `status.podIPs[${i}]`,
        reason: `${ip} is also the address of Pod ${first}: no policy selector matches that address while both claim it`,
      });
    });
  }
  return out;
}
