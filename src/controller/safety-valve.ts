import type { ClusterState, Problem } from '../model/types.js';

/**
 * The safety valve: a sync that would take most of the programmed Services out of service at once,
 * while the new state gained at least as many invalid objects, is refused (the kernel keeps its
 * rules), reported and counted, never applied.
 *
 * Why: a Service goes away legitimately when it is deleted; it does not go away because the objects
 * describing it suddenly fail validation — unless svcplane misreads its input (kube-apiserver
 * leaving `kind` off list items made every object "invalid" and the first sync removed every
 * Service of the node). A mass removal explained by as many new problems is that failure mode, and
 * applying it is an outage of the whole node; keeping the last rules is the safe side.
 *
 * The rule (see docs/cluster.md, "Safety valve"):
 * - "out of service" counts the programmed Services that the new state drops, and those that had
 *   endpoints and would have none (their EndpointSlices became invalid: every connection refused);
 * - refused when that count is at least MIN_SERVICES (2), more than HALF of the programmed
 *   Services, and the new state has at least that many objects with problems that the previous
 *   state did not have.
 * So a one-Service cluster whose Service breaks is not frozen (one broken object is just skipped,
 * as always); deleting most Services is never refused (deletions are no problems); scaling many
 * Services to zero neither. Fixing or deleting the broken objects lifts the refusal by itself.
 * "Programmed" is the last applied state; for the first sync of a process, the Services whose
 * rules the kernel holds (an earlier run's, or kube-proxy's), when the backend can read them.
 */

export const SAFETY_VALVE = {
  /** Fewer Services out of service than this never trip the valve. */
  minServices: 2,
  /** More than this fraction of the programmed Services must be out of service. */
  fraction: 0.5,
} as const;

export interface ValveInput {
  /** Service keys (namespace/name) whose rules are in the kernel now. */
  readonly programmed: ReadonlySet<string>;
  /** The last applied state (endpoints and problems known), if any. */
  readonly previous: ClusterState | undefined;
  readonly next: ClusterState;
}

export interface ValveVerdict {
  readonly refuse: boolean;
  readonly programmed: number;
  /** Programmed Services the new state drops. */
  readonly removed: number;
  /** Programmed Services that had endpoints and would have none. */
  readonly emptied: number;
  /** Objects with problems in the new state that the previous state did not have. */
  readonly newProblems: number;
  /** Up to five of the removed or emptied Services, for the log. */
  readonly examples: readonly string[];
}

function problemObject(p: Problem): string {
  const o = p.object;
  return `${o.kind}\u0000${o.namespace ?? ''}\u0000${o.name}\u0000${o.source ?? ''}`;
}

function hasDataplane(state: ClusterState, key: string): boolean {
  const s = state.services.get(key);
  return s !== undefined && s.skipReason === undefined;
}

function endpointCount(state: ClusterState, key: string): number {
  let n = 0;
  for (const p of state.services.get(key)?.ports ?? []) n += p.endpoints.length;
  return n;
}

/** The valve's decision for one sync. Pure. */
export function massRemovalVerdict(input: ValveInput): ValveVerdict {
  const { programmed, previous, next } = input;
  const out: string[] = [];
  let removed = 0;
  let emptied = 0;
  for (const key of programmed) {
    if (!hasDataplane(next, key)) {
      removed++;
      out.push(key);
    } else if (previous !== undefined && endpointCount(previous, key) > 0 && endpointCount(next, key) === 0) {
      emptied++;
      out.push(key);
    }
  }
  const before = new Set((previous?.problems ?? []).map(problemObject));
  const gained = new Set(next.problems.map(problemObject).filter((o) => !before.has(o)));
  const hurt = removed + emptied;
  const refuse =
    hurt >= SAFETY_VALVE.minServices && hurt > programmed.size * SAFETY_VALVE.fraction && gained.size >= hurt;
  return {
    refuse,
    programmed: programmed.size,
    removed,
    emptied,
    newProblems: gained.size,
    examples: out.sort().slice(0, 5),
  };
}

/** The Service keys a state programs (those with a dataplane). Pure. */
export function programmedKeys(state: ClusterState): Set<string> {
  const out = new Set<string>();
  for (const [key, s] of state.services) if (s.skipReason === undefined) out.add(key);
  return out;
}
