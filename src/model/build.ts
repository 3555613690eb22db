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
import { recordServiceChanges } from './state-change.js';
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

/** A Service joined with the very same slices is the very same built Service. */
const joinCache = new WeakMap<Service, { slices: readonly ParsedSlice[]; built: Service }>();

/**
 * Validates a classified object. Each object is validated once, when its group is set; the builder
 * keeps what this gives (and the reference), never the raw object (issue 14: memory).
 */
function parseClassified(c: Classified): Parsed {
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
  return parsed;
}

function sameItems<T>(a: readonly T[], b: readonly T[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/**
 * One Service joined with its slices (and mirrored legacy Endpoints): the endpoints of every port.
 * A Service joined with the very same slices is the very same built Service.
 */
function joinService(
  { service, hasSelector }: ParsedService,
  sorted: readonly ParsedSlice[],
  eps: ParsedEndpoints | undefined,
): Service {
  if (service.skipReason !== undefined) return service;
  // Mirroring: a selector-less Service gets its Endpoints mirrored. The manifest source has no
  // EndpointSlice controller, so a selector Service also falls back to its Endpoints when no slice
  // names it (in a real cluster that controller would have written the slices).
  const slices = eps && (!hasSelector || sorted.length === 0) ? [...sorted, ...eps.slices] : sorted;
  const memo = joinCache.get(service);
  if (memo && sameItems(memo.slices, slices)) return memo.built;
  const built = {
    ...service,
    ports: service.ports.map((p) => ({ ...p, endpoints: endpointsFor(p, slices) })),
  };
  joinCache.set(service, { slices, built });
  return built;
}

/** One classified object of a group, with its validated model. */
interface Item {
  readonly group: string;
  /** Position among the group's classified objects: groups in name order, then this. */
  readonly index: number;
  readonly kind: Kind;
  /** The object's reference, for problems (its raw object is not kept). */
  readonly ref: ObjectRef;
  readonly identity: string | undefined;
  readonly parsed: Parsed;
  /** The key it is filed under (with its kind), when it is valid. */
  readonly key: string | undefined;
}

/** A group's objects (a file's, or one API object) and what they gave. */
interface Group {
  /** The source's own problems for the group (a file that cannot be read), first in the state. */
  readonly problems: readonly Problem[];
  readonly listProblems: readonly Problem[];
  readonly classifyProblems: readonly Problem[];
  readonly items: readonly Item[];
  readonly parseProblems: boolean;
}

/** Whether `a` comes before `b` in the order of the objects (the order a full build reads them in). */
const before = (a: Item, b: Item): boolean => (a.group === b.group ? a.index < b.index : a.group < b.group);

const lastOf = (items: readonly Item[]): Item | undefined =>
  items.reduce<Item | undefined>(
    (last, it) => (last === undefined || before(last, it) ? it : last),
    undefined,
  );

const KIND_LIST = Object.keys(KINDS) as Kind[];
const perKind = <V>(make: () => V): Record<Kind, V> =>
  Object.fromEntries(KIND_LIST.map((k) => [k, make()])) as Record<Kind, V>;

/** The node ports a Service claims (none when it gets no dataplane). */
function claimedPorts(svc: Service): readonly number[] {
  if (svc.skipReason !== undefined) return NO_PORTS;
  let out: number[] | undefined;
  for (const p of svc.ports) if (p.nodePort > 0) (out ??= []).push(p.nodePort);
  if (svc.healthCheckNodePort > 0) (out ??= []).push(svc.healthCheckNodePort);
  return out ?? NO_PORTS;
}
const NO_PORTS: readonly number[] = [];

/**
 * The next map, in key order, from the previous one and the values of the keys that may have changed
 * (undefined: gone). A value equal to its previous version is the very same object. `incremental`:
 * the previous map is this builder's (sorted, complete but for `updates`); else `updates` holds every
 * key and the map is made anew. Returns the previous map itself when nothing changed.
 */
function nextSortedMap<V>(
  prev: ReadonlyMap<string, V> | undefined,
  updates: ReadonlyMap<string, V | undefined>,
  incremental: boolean,
): { map: ReadonlyMap<string, V>; changed: Set<string> } {
  const changed = new Set<string>();
  const values = new Map<string, V | undefined>();
  const fresh: string[] = [];
  for (const [k, v] of updates) {
    const p = prev?.get(k);
    const value = v !== undefined && p !== undefined && (p === v || deepEqual(p, v)) ? p : v;
    values.set(k, value);
    if (value === p) continue;
    changed.add(k);
    if (p === undefined) fresh.push(k);
  }
  if (!incremental || prev === undefined) {
    const entries: [string, V][] = [];
    for (const [k, v] of values) if (v !== undefined) entries.push([k, v]);
    return { map: sortedMap(entries), changed };
  }
  if (changed.size === 0) return { map: prev, changed };
  const map = new Map<string, V>();
  if (fresh.length === 0) {
    // Same keys or fewer: the order stands.
    for (const [k, v] of prev) {
      const next = changed.has(k) ? values.get(k) : v;
      if (next !== undefined) map.set(k, next);
    }
    return { map, changed };
  }
  fresh.sort(compareStrings);
  let i = 0;
  for (const [k, v] of prev) {
    for (; i < fresh.length && fresh[i]! < k; i++) map.set(fresh[i]!, values.get(fresh[i]!)!);
    const next = changed.has(k) ? values.get(k) : v;
    if (next !== undefined) map.set(k, next);
  }
  for (; i < fresh.length; i++) map.set(fresh[i]!, values.get(fresh[i]!)!);
  return { map, changed };
}

/**
 * The validated cluster state, kept up to date object by object (issue 14: event-to-rules). A source
 * hands over its objects in groups (a manifest file, one API object) and replaces or deletes a group
 * when it changes; each object is classified and validated once, when its group is set, and build()
 * redoes only what the changed objects touch: the keys they are filed under, the Services those
 * join (a Service, its EndpointSlices and Endpoints), the node ports those share with others. The
 * result is the state a full build of every group's objects, in group-name order, gives: same
 * values, same problems in the same order (test/unit/model/state-builder.test.ts holds the two
 * against each other). A value equal to its previous version is the very same object, so consumers
 * detect changes with `!==`; the Services that are not are recorded for the change tracker
 * (recordServiceChanges), which then compares those only.
 */
export class ClusterStateBuilder {
  private readonly groups = new Map<string, Group>();
  /** Groups with a problem of any kind (few): the state's problems are gathered from them. */
  private readonly problemGroups = new Set<string>();
  /** Items by raw identity: more than one is a duplicate, and the last one is used. */
  private readonly byIdentity = new Map<string, Item[]>();
  private readonly duplicated = new Set<string>();
  /** Items by kind and key, and the keys whose value may have changed since the last build. */
  private readonly filed = perKind(() => new Map<string, Item[]>());
  private readonly dirty = perKind(() => new Set<string>());
  /** Services joined with their endpoints, before the limits, and their references. */
  private readonly joined = new Map<string, { service: Service; ref: ObjectRef }>();
  /** Node port → the keys of the joined Services that claim it. */
  private readonly claims = new Map<number, Set<string>>();
  /** Services that pass the limits, and the problems of the others. */
  private readonly kept = new Map<string, Service>();
  private readonly limitProblems = new Map<string, readonly Problem[]>();
  private readonly triggers = new Map<string, number>();
  private podProblems: readonly Problem[] = [];
  private last: ClusterState | undefined;

  /** Objects of every group (classified ones, valid or not). */
  private items = 0;

  /** How many objects the groups hold (classified ones, valid or not). */
  get objectCount(): number {
    return this.items;
  }

  /** `previous`: the state the first build reuses equal values of (a state built elsewhere). */
  constructor(
    private readonly limits: ServiceLimits = DEFAULT_SERVICE_LIMITS,
    private readonly seed?: ClusterState,
  ) {}

  /**
   * Sets (or replaces) a group's objects and the source's problems for it. The objects are validated
   * now and not kept: a source may let them go once this returns (issue 14: a 10k-file load never
   * holds every file's raw objects at once).
   */
  set(group: string, objects: readonly SourceObject[], problems: readonly Problem[] = []): void {
    const old = this.groups.get(group);
    if (old !== undefined) this.removeItems(old);
    const flat = flattenLists(objects);
    const classifyProblems: Problem[] = [];
    const items: Item[] = [];
    let parseProblems = false;
    for (const so of flat.objects) {
      const classified = classify(so, classifyProblems);
      if (classified === undefined) continue;
      const parsed = parseClassified(classified);
      if (parsed.problems.length > 0) parseProblems = true;
      const key = parsed.value !== undefined ? parsed.key : undefined;
      const { kind, ref } = classified;
      const identity = rawIdentity(classified);
      items.push({ group, index: items.length, kind, ref, identity, parsed, key });
    }
    this.setGroup(group, { problems, listProblems: flat.problems, classifyProblems, items, parseProblems });
    this.items += items.length;
    for (const it of items) this.addItem(it);
  }

  /**
   * Replaces the source's problems for a group and keeps its objects' validated models (a file that
   * cannot be read keeps its last good content). An unknown group is set with no objects.
   */
  setProblems(group: string, problems: readonly Problem[]): void {
    const old = this.groups.get(group);
    if (old === undefined) return this.set(group, [], problems);
    if (deepEqual(old.problems, problems)) return;
    this.setGroup(group, { ...old, problems });
  }

  private setGroup(group: string, g: Group): void {
    this.groups.set(group, g);
    const hasProblems =
      g.problems.length > 0 || g.listProblems.length > 0 || g.classifyProblems.length > 0 || g.parseProblems;
    if (hasProblems) this.problemGroups.add(group);
    else this.problemGroups.delete(group);
  }

  delete(group: string): void {
    const old = this.groups.get(group);
    if (old === undefined) return;
    this.removeItems(old);
    this.groups.delete(group);
    this.problemGroups.delete(group);
  }

  private addItem(it: Item): void {
    if (it.identity !== undefined) {
      const same = this.byIdentity.get(it.identity);
      if (same === undefined) this.byIdentity.set(it.identity, [it]);
      else {
        // Which of them is used may change: every one's key is looked at again.
        same.push(it);
        this.duplicated.add(it.identity);
        for (const x of same) this.touch(x);
      }
    }
    if (it.key !== undefined) {
      const filed = this.filed[it.parsed.kind];
      const list = filed.get(it.key);
      if (list === undefined) filed.set(it.key, [it]);
      else list.push(it);
      this.dirty[it.parsed.kind].add(it.key);
    }
  }

  private removeItems(g: Group): void {
    this.items -= g.items.length;
    for (const it of g.items) {
      if (it.identity !== undefined) {
        const same = this.byIdentity.get(it.identity) ?? [];
        same.splice(same.indexOf(it), 1);
        if (same.length === 0) this.byIdentity.delete(it.identity);
        if (same.length <= 1) this.duplicated.delete(it.identity);
        for (const x of same) this.touch(x);
      }
      if (it.key !== undefined) {
        const filed = this.filed[it.parsed.kind];
        const list = filed.get(it.key) ?? [];
        list.splice(list.indexOf(it), 1);
        if (list.length === 0) filed.delete(it.key);
        this.dirty[it.parsed.kind].add(it.key);
      }
    }
  }

  private touch(it: Item): void {
    if (it.key !== undefined) this.dirty[it.parsed.kind].add(it.key);
  }

  /** Whether an object is used: it is not a duplicate, or the last of its duplicates. */
  private isKept(it: Item): boolean {
    if (it.identity === undefined || !this.duplicated.has(it.identity)) return true;
    return lastOf(this.byIdentity.get(it.identity) ?? []) === it;
  }

  /** The used items filed under a key, in object order. */
  private keptItems(kind: Kind, key: string): readonly Item[] {
    const list = this.filed[kind].get(key);
    if (list === undefined) return [];
    if (list.length === 1) return this.isKept(list[0]!) ? list : [];
    const kept = list.filter((it) => this.isKept(it));
    return kept.length > 1 ? kept.sort((a, b) => (before(a, b) ? -1 : 1)) : kept;
  }

  /** The item whose value a key holds: the last one (a later definition replaces an earlier one). */
  private lastKept(kind: Kind, key: string): Item | undefined {
    const kept = this.keptItems(kind, key);
    return kept[kept.length - 1];
  }

  private sliceItems(key: string): ParsedSlice[] {
    const out: ParsedSlice[] = [];
    for (const it of this.keptItems('EndpointSlice', key)) {
      if (it.parsed.kind === 'EndpointSlice' && it.parsed.value !== undefined) out.push(it.parsed.value);
    }
    return out;
  }

  /** The state of every group's objects now. Returns the last state itself when nothing changed. */
  build(): ClusterState {
    const previous = this.last ?? this.seed;
    const incremental = this.last !== undefined;
    const serviceKeys = new Set<string>();
    const nodes = new Map<string, NodeInfo | undefined>();
    const namespaces = new Map<string, NamespaceInfo | undefined>();
    const pods = new Map<string, PodInfo | undefined>();
    const policies = new Map<string, NetworkPolicy | undefined>();
    for (const kind of ['Service', 'EndpointSlice', 'Endpoints'] as const) {
      for (const key of this.dirty[kind]) serviceKeys.add(key);
    }
    for (const key of this.dirty.Node) {
      const p = this.lastKept('Node', key)?.parsed;
      nodes.set(key, p?.kind === 'Node' ? p.value : undefined);
    }
    for (const key of this.dirty.Namespace) {
      const p = this.lastKept('Namespace', key)?.parsed;
      namespaces.set(key, p?.kind === 'Namespace' ? p.value : undefined);
    }
    for (const key of this.dirty.Pod) {
      const p = this.lastKept('Pod', key)?.parsed;
      pods.set(key, p?.kind === 'Pod' ? p.value : undefined);
    }
    for (const key of this.dirty.NetworkPolicy) {
      const p = this.lastKept('NetworkPolicy', key)?.parsed;
      policies.set(key, p?.kind === 'NetworkPolicy' ? p.value : undefined);
    }
    for (const kind of KIND_LIST) this.dirty[kind].clear();

    const keptChanged = this.joinAndLimit(serviceKeys);
    let triggersChanged = false;
    for (const key of new Set([...serviceKeys, ...keptChanged])) {
      let newest: number | undefined;
      if (this.kept.has(key)) {
        for (const sl of this.sliceItems(key)) {
          if (sl.triggerTime !== undefined && sl.triggerTime > (newest ?? -Infinity)) newest = sl.triggerTime;
        }
      }
      if (newest === this.triggers.get(key)) continue;
      triggersChanged = true;
      if (newest === undefined) this.triggers.delete(key);
      else this.triggers.set(key, newest);
    }

    const serviceUpdates = new Map<string, Service | undefined>();
    for (const key of keptChanged) serviceUpdates.set(key, this.kept.get(key));
    if (!incremental) {
      const fill = <V>(
        updates: Map<string, V | undefined>,
        prev: ReadonlyMap<string, V> | undefined,
      ): void => {
        for (const key of prev?.keys() ?? []) if (!updates.has(key)) updates.set(key, undefined);
      };
      fill(serviceUpdates, previous?.services);
      fill(nodes, previous?.nodes);
      fill(namespaces, previous?.namespaces);
      fill(pods, previous?.pods);
      fill(policies, previous?.networkPolicies);
    }
    const services = nextSortedMap(previous?.services, serviceUpdates, incremental);
    const nodeMap = nextSortedMap(previous?.nodes, nodes, incremental).map;
    const namespaceMap = nextSortedMap(previous?.namespaces, namespaces, incremental).map;
    const podMap = nextSortedMap(previous?.pods, pods, incremental).map;
    const policyMap = nextSortedMap(previous?.networkPolicies, policies, incremental).map;
    if (!incremental || podMap !== previous?.pods) {
      const refs = new Map<string, ObjectRef>();
      for (const key of podMap.keys()) {
        const ref = this.lastKept('Pod', key)?.ref;
        if (ref !== undefined) refs.set(key, ref);
      }
      this.podProblems = podAddressConflicts(podMap, refs);
    }
    const prevTriggers = incremental ? this.last?.endpointsTriggerTimes : undefined;
    const triggerMap =
      triggersChanged || !incremental
        ? sortedMap(this.triggers)
        : (prevTriggers ?? new Map<string, number>());
    const problems = this.problems();
    const last = this.last;
    if (
      last !== undefined &&
      services.map === last.services &&
      nodeMap === last.nodes &&
      namespaceMap === last.namespaces &&
      podMap === last.pods &&
      policyMap === last.networkPolicies &&
      !triggersChanged &&
      deepEqual(problems, last.problems)
    ) {
      return last;
    }
    if (previous !== undefined && services.map !== previous.services) {
      recordServiceChanges(previous.services, services.map, services.changed);
    }
    const state: ClusterState = {
      services: services.map,
      nodes: nodeMap,
      namespaces: namespaceMap,
      pods: podMap,
      networkPolicies: policyMap,
      problems,
      ...(triggerMap.size > 0 ? { endpointsTriggerTimes: triggerMap } : {}),
    };
    this.last = state;
    return state;
  }

  /**
   * Joins the Services of `keys` anew and applies the limits to them and to every Service they share
   * a node port with, transitively (who keeps a port depends on the others claiming it, in key
   * order). Returns the keys whose kept Service changed (came, went or is another object).
   */
  private joinAndLimit(keys: ReadonlySet<string>): Set<string> {
    const seeds: string[] = [];
    for (const key of keys) {
      seeds.push(key);
      const before = this.joined.get(key);
      const item = this.lastKept('Service', key);
      const parsed = item?.parsed.kind === 'Service' ? item.parsed.value : undefined;
      let next: { service: Service; ref: ObjectRef } | undefined;
      if (item !== undefined && parsed !== undefined) {
        const slices = this.sliceItems(key).sort((a, b) => compareStrings(a.name, b.name));
        const eps = this.lastKept('Endpoints', key)?.parsed;
        const service = joinService(parsed, slices, eps?.kind === 'Endpoints' ? eps.value : undefined);
        next = { service, ref: item.ref };
      }
      // The Services that shared a port this one let go of decide again too.
      for (const port of before ? claimedPorts(before.service) : []) {
        const holders = this.claims.get(port);
        holders?.delete(key);
        if (holders?.size === 0) this.claims.delete(port);
        for (const other of holders ?? []) seeds.push(other);
      }
      if (next === undefined) {
        this.joined.delete(key);
        continue;
      }
      this.joined.set(key, next);
      for (const port of claimedPorts(next.service)) {
        const holders = this.claims.get(port);
        if (holders === undefined) this.claims.set(port, new Set([key]));
        else holders.add(key);
      }
    }
    const component = new Set<string>();
    while (seeds.length > 0) {
      const key = seeds.pop()!;
      if (component.has(key)) continue;
      component.add(key);
      const j = this.joined.get(key);
      for (const port of j ? claimedPorts(j.service) : []) {
        for (const other of this.claims.get(port) ?? []) if (!component.has(other)) seeds.push(other);
      }
    }
    const entries: [string, Service][] = [];
    const refs = new Map<string, ObjectRef>();
    for (const key of [...component].sort(compareStrings)) {
      const j = this.joined.get(key);
      if (j === undefined) continue;
      entries.push([key, j.service]);
      refs.set(key, j.ref);
    }
    const limited = applyServiceLimits(entries, refs, this.limits);
    const keptNow = new Map(limited.kept);
    const changed = new Set<string>();
    for (const key of component) {
      const now = keptNow.get(key);
      if (now !== this.kept.get(key)) {
        changed.add(key);
        if (now === undefined) this.kept.delete(key);
        else this.kept.set(key, now);
      }
      const rejected = limited.rejected.get(key);
      if (rejected === undefined) this.limitProblems.delete(key);
      else this.limitProblems.set(key, rejected);
    }
    return changed;
  }

  /** Every problem, in the order of a full build: source, list, kind, duplicate, object, limit, pod address. */
  private problems(): Problem[] {
    const groups = [...this.problemGroups].sort(compareStrings).map((name) => this.groups.get(name)!);
    const out: Problem[] = [];
    for (const g of groups) out.push(...g.problems);
    for (const g of groups) out.push(...g.listProblems);
    for (const g of groups) out.push(...g.classifyProblems);
    out.push(...this.duplicateProblems());
    for (const g of groups) {
      if (!g.parseProblems) continue;
      for (const it of g.items)
        if (it.parsed.problems.length > 0 && this.isKept(it)) out.push(...it.parsed.problems);
    }
    for (const key of [...this.limitProblems.keys()].sort(compareStrings))
      out.push(...this.limitProblems.get(key)!);
    out.push(...this.podProblems);
    return out;
  }

  /** A problem on each later definition of an object, naming the one before it; in object order. */
  private duplicateProblems(): Problem[] {
    const found: { at: Item; problem: Problem }[] = [];
    const where = (r: ObjectRef): string => r.source ?? '(unknown source)';
    for (const identity of this.duplicated) {
      const same = [...(this.byIdentity.get(identity) ?? [])].sort((a, b) => (before(a, b) ? -1 : 1));
      for (let i = 1; i < same.length; i++) {
        const it = same[i]!;
        const what = it.ref.namespace !== undefined ? `${it.ref.namespace}/${it.ref.name}` : it.ref.name;
        found.push({
          at: same[i]!,
          problem: {
            object: it.ref,
            field: 'metadata.name',
            reason: `duplicate ${it.kind} ${what}: defined in ${where(same[i - 1]!.ref)} and ${where(it.ref)}; the last one is used`,
          },
        });
      }
    }
    return found.sort((a, b) => (before(a.at, b.at) ? -1 : 1)).map((f) => f.problem);
  }
}

/**
 * Builds the validated cluster state of `objects` at once. With `previous`, a value equal to its
 * previous version is the very same object, so consumers detect changes with `!==`.
 */
export function buildClusterState(
  objects: readonly SourceObject[],
  previous?: ClusterState,
  limits: ServiceLimits = DEFAULT_SERVICE_LIMITS,
): ClusterState {
  const builder = new ClusterStateBuilder(limits, previous);
  builder.set('', objects);
  return builder.build();
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
