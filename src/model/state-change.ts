import { compareStrings, deepEqual } from './validate.js';
import { servicePortName, type ClusterState, type Service, type ServicePort } from './types.js';

/**
 * The change tracker (kube-proxy's ServiceChangeTracker and EndpointsChangeTracker in one pure
 * function): what changed between two cluster states. The controller computes it once per sync,
 * from the state every backend applied last to the state it syncs, and hands the same object to
 * the backends (partial syncs), the metrics and the conntrack cleaner.
 *
 * The builder keeps a Service object when nothing in it changed, so identity settles almost every
 * Service; objects that differ are compared structurally (states built without `previous`). The
 * builder also records which Services each of its maps changed (recordServiceChanges): from one of
 * its states to a later one only those are compared, O(changed) instead of O(Services). Any other
 * pair of states (built by hand, a record gone with its map) gets the full comparison.
 */
export interface StateChange {
  /** The state the change starts from; undefined on the first sync (everything is new). */
  readonly previous: ClusterState | undefined;
  readonly next: ClusterState;
  /** Services of `next` that are new or differ in any way (definition or endpoints): the ones a partial sync rewrites. */
  readonly changed: ReadonlySet<string>;
  /** Services of `previous` that `next` no longer has. */
  readonly removed: ReadonlySet<string>;
  /** Services whose definition (everything but the endpoints) changed; added and removed ones too. */
  readonly services: ReadonlySet<string>;
  /** Services whose endpoints changed (any port); added and removed ones too. */
  readonly endpoints: ReadonlySet<string>;
  /** Service ports (kube-proxy's ServicePortName: `ns/name[:port]`) whose endpoints changed, or that came or went. */
  readonly endpointPorts: ReadonlySet<string>;
  /**
   * Services with endpoint changes that had or have a UDP port (kube-proxy's
   * ConntrackCleanupRequired): their stale UDP flows must be cleaned. Service-only changes do not count.
   */
  readonly udpEndpoints: ReadonlySet<string>;
}

export function stateChange(previous: ClusterState | undefined, next: ClusterState): StateChange {
  const changed = new Set<string>();
  const removed = new Set<string>();
  const services = new Set<string>();
  const endpoints = new Set<string>();
  const endpointPorts = new Set<string>();
  const udpEndpoints = new Set<string>();
  const before = previous?.services;
  const compare = (key: string, a: Service | undefined, b: Service | undefined): void => {
    if (a === b) return;
    const specSame = a !== undefined && b !== undefined && sameDefinition(a, b);
    const endpointsSame = a !== undefined && b !== undefined && sameEndpoints(a, b);
    if (specSame && endpointsSame) return;
    if (b !== undefined) changed.add(key);
    else removed.add(key);
    if (!specSame) services.add(key);
    if (endpointsSame) return;
    endpoints.add(key);
    for (const p of changedEndpointPorts(a, b)) endpointPorts.add(p);
    if (hasUDP(a) || hasUDP(b)) udpEndpoints.add(key);
  };
  const recorded = before && changedBetween(before, next.services);
  if (recorded !== undefined) {
    // The builder's maps are in key order: the sets come out in the order of the full comparison.
    const keys = [...recorded].sort(compareStrings);
    for (const key of keys) {
      const svc = next.services.get(key);
      if (svc !== undefined) compare(key, before?.get(key), svc);
    }
    for (const key of keys) {
      const svc = before?.get(key);
      if (svc !== undefined && !next.services.has(key)) compare(key, svc, undefined);
    }
  } else {
    for (const [key, svc] of next.services) compare(key, before?.get(key), svc);
    if (before !== undefined) {
      for (const [key, svc] of before) if (!next.services.has(key)) compare(key, svc, undefined);
    }
  }
  return { previous, next, changed, removed, services, endpoints, endpointPorts, udpEndpoints };
}

type Services = ReadonlyMap<string, Service>;

/** What the builder made a services map from: the map before it (weakly) and the keys whose value is not the very same object. */
interface ServicesRecord {
  readonly from: WeakRef<Services>;
  readonly keys: ReadonlySet<string>;
}

/** Keyed by the map the record leads to: a record lives as long as its map, never keeps an old map alive. */
const records = new WeakMap<Services, ServicesRecord>();

/** Records that `to` differs from `from` exactly in `keys` (values not the very same object, added or removed). */
export function recordServiceChanges(from: Services, to: Services, keys: ReadonlySet<string>): void {
  records.set(to, { from: new WeakRef(from), keys });
}

/** Most records one comparison walks back, and most keys it collects, before comparing everything. */
const MAX_RECORDS = 256;
const MAX_RECORDED_KEYS = 4096;

/**
 * The keys whose value may differ between `from` and `to`, from the records of the maps in between
 * (newest first), or undefined when they do not lead back to `from`.
 */
function changedBetween(from: Services, to: Services): Set<string> | undefined {
  const keys = new Set<string>();
  let at = to;
  for (let hops = 0; at !== from; hops++) {
    const rec = records.get(at);
    const earlier = rec?.from.deref();
    if (rec === undefined || earlier === undefined || hops >= MAX_RECORDS) return undefined;
    for (const key of rec.keys) keys.add(key);
    if (keys.size > MAX_RECORDED_KEYS) return undefined;
    at = earlier;
  }
  return keys;
}

/**
 * The change a backend writes from: `given` (the controller's, once per sync) when it starts at the
 * state this backend applied last and ends at `next`; else the change from `applied` to `next`
 * (the backend synced a state alone while another failed, or was called without a change).
 */
export function changeSinceApplied(
  given: StateChange | undefined,
  applied: ClusterState | undefined,
  next: ClusterState,
): StateChange {
  if (given !== undefined && given.previous === applied && given.next === next) return given;
  return stateChange(applied, next);
}

/** Whether nothing a backend, the metrics or the conntrack cleaner acts on changed. */
export function isEmptyChange(c: StateChange): boolean {
  return c.changed.size === 0 && c.removed.size === 0;
}

function hasUDP(s: Service | undefined): boolean {
  return s?.ports.some((p) => p.protocol === 'UDP') ?? false;
}

/** Everything but the endpoints (a port's own fields count: its number, protocol, nodePort …). */
function sameDefinition(a: Service, b: Service): boolean {
  for (const k of new Set([...Object.keys(a), ...Object.keys(b)]) as Set<keyof Service>) {
    if (k === 'ports') continue;
    if (!deepEqual(a[k], b[k])) return false;
  }
  if (a.ports.length !== b.ports.length) return false;
  return a.ports.every((p, i) => {
    const q = b.ports[i]!;
    if (p === q) return true;
    const { endpoints: _pe, ...pd } = p;
    const { endpoints: _qe, ...qd } = q;
    return deepEqual(pd, qd);
  });
}

/** The endpoints of every port, port by port (a renamed port with the same endpoints is a definition change). */
function sameEndpoints(a: Service, b: Service): boolean {
  if (a.ports.length !== b.ports.length) return false;
  return a.ports.every((p, i) => {
    const q = b.ports[i]!;
    return p.endpoints === q.endpoints || deepEqual(p.endpoints, q.endpoints);
  });
}

/**
 * Service ports whose endpoints differ between `a` and `b` (matched by port name), and ports only
 * one side has.
 */
function changedEndpointPorts(a: Service | undefined, b: Service | undefined): string[] {
  const out: string[] = [];
  const bByName = new Map<string, ServicePort>((b?.ports ?? []).map((p) => [p.portName, p]));
  for (const p of a?.ports ?? []) {
    const q = bByName.get(p.portName);
    bByName.delete(p.portName);
    if (q === undefined || (p.endpoints !== q.endpoints && !deepEqual(p.endpoints, q.endpoints))) {
      out.push(servicePortName(p));
    }
  }
  for (const q of bByName.values()) out.push(servicePortName(q));
  return out;
}
