import { compareStrings } from '../model/validate.js';
import { elementKeys, type PlanRule, type PlanSet, type PolicyPlan, ruleKey } from './plan.js';

/**
 * What changed from one plan to the next, split the way a kernel writer applies it: structure (sets
 * created or removed, rules added or removed) and elements (added to or removed from sets that stay).
 * A change with `structural: false` is a handful of set-element writes. Pure.
 */

export interface SetElementsDiff {
  readonly set: string;
  /** Element keys (elementKeys), sorted. */
  readonly added: readonly string[];
  readonly removed: readonly string[];
}

export interface PlanDiff {
  /** Sets to create (with their elements). */
  readonly setsAdded: readonly PlanSet[];
  /** Names of sets to remove (after the rules that use them). */
  readonly setsRemoved: readonly string[];
  readonly rulesAdded: readonly PlanRule[];
  readonly rulesRemoved: readonly PlanRule[];
  /** Element changes of sets in both plans; sets whose elements did not change are left out. */
  readonly elements: readonly SetElementsDiff[];
  /** Whether any set or rule is created or removed (else: only elements change). */
  readonly structural: boolean;
  /** Number of element additions and removals. */
  readonly elementChanges: number;
}

function difference(a: readonly string[], b: ReadonlySet<string>): string[] {
  return a.filter((x) => !b.has(x)).sort(compareStrings);
}

/** A set that changed kind or family under the same name (cannot happen with derived names) is replaced. */
function sameShape(a: PlanSet, b: PlanSet): boolean {
  return a.kind === b.kind && ('family' in a ? a.family : '') === ('family' in b ? b.family : '');
}

/** Equal elements in equal order (plans sort them): the common case, decided without building keys. */
function sameElements(a: PlanSet, b: PlanSet): boolean {
  if (a.elements.length !== b.elements.length) return false;
  const x = a.elements as readonly unknown[];
  const y = b.elements as readonly unknown[];
  for (let i = 0; i < x.length; i++) {
    const p = x[i];
    const q = y[i];
    if (p === q) continue;
    if (typeof p !== 'object' || typeof q !== 'object' || p === null || q === null) return false;
    const pr = p as Record<string, unknown>;
    const qr = q as Record<string, unknown>;
    for (const k of Object.keys(pr)) if (pr[k] !== qr[k]) return false;
  }
  return true;
}

export function diffPlans(before: PolicyPlan, after: PolicyPlan): PlanDiff {
  const setsAdded: PlanSet[] = [];
  const setsRemoved: string[] = [];
  const elements: SetElementsDiff[] = [];
  let elementChanges = 0;
  for (const [name, set] of after.sets) {
    const old = before.sets.get(name);
    if (!old || !sameShape(old, set)) {
      if (old) setsRemoved.push(name);
      setsAdded.push(set);
      continue;
    }
    if (old === set || sameElements(old, set)) continue;
    const oldKeys = elementKeys(old);
    const newKeys = elementKeys(set);
    const added = difference(newKeys, new Set(oldKeys));
    const removed = difference(oldKeys, new Set(newKeys));
    if (added.length + removed.length === 0) continue;
    elements.push({ set: name, added, removed });
    elementChanges += added.length + removed.length;
  }
  for (const name of before.sets.keys()) if (!after.sets.has(name)) setsRemoved.push(name);
  const beforeRules = new Map(before.rules.map((r) => [ruleKey(r), r]));
  const afterRules = new Map(after.rules.map((r) => [ruleKey(r), r]));
  const rulesAdded = [...afterRules].filter(([k]) => !beforeRules.has(k)).map(([, r]) => r);
  const rulesRemoved = [...beforeRules].filter(([k]) => !afterRules.has(k)).map(([, r]) => r);
  return {
    setsAdded,
    setsRemoved: setsRemoved.sort(compareStrings),
    rulesAdded,
    rulesRemoved,
    elements,
    structural: setsAdded.length + setsRemoved.length + rulesAdded.length + rulesRemoved.length > 0,
    elementChanges,
  };
}
