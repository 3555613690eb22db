import type { Iptables } from './iptables.js';
import {
  KUBE_EXTERNAL_SERVICES,
  KUBE_FORWARD,
  KUBE_NODEPORTS,
  KUBE_POSTROUTING,
  KUBE_PROXY_FIREWALL,
  KUBE_SERVICES,
  isServiceChainName,
} from './names.js';
import { OWNED_CHAINS } from '../iptables-rules/owned-chains.js';
import {
  formatArgs,
  parseIptablesSave,
  quoteArg,
  ruleTarget,
  type SavedRule,
  type SavedRuleset,
  type SavedTable,
} from './save-parse.js';

/**
 * `kube-proxy --cleanup` for iptables mode: unlink and delete everything kube-proxy (or svcplane)
 * owns, in one `iptables-restore --noflush` transaction. Works from iptables-save output, so it also
 * removes rules another kube-proxy version wrote (whatever their comments). Kubelet's chains
 * (KUBE-FIREWALL, KUBE-KUBELET-CANARY) and anything foreign stay.
 */

/** Chains entered from built-in chains by kube-proxy's jump rules. */
export const JUMP_ENTRY_CHAINS: ReadonlySet<string> = new Set([
  KUBE_SERVICES,
  KUBE_EXTERNAL_SERVICES,
  KUBE_NODEPORTS,
  KUBE_POSTROUTING,
  KUBE_FORWARD,
  KUBE_PROXY_FIREWALL,
]);

const BUILTIN_CHAINS = new Set(['PREROUTING', 'INPUT', 'FORWARD', 'OUTPUT', 'POSTROUTING']);

export interface CleanupPlan {
  /** iptables-restore --noflush input; '' when there is nothing to do. */
  readonly restoreInput: string;
  /** What the input removes, as iptables commands (`-t nat -X KUBE-SERVICES`). */
  readonly removed: readonly string[];
  /** Owned chains left in place because a foreign rule still jumps to them, with the reason. */
  readonly kept: readonly string[];
}

export interface CleanupResult {
  readonly removed: string[];
  readonly kept: string[];
}

function isBuiltin(table: SavedTable, chain: string): boolean {
  return table.chainsByName.get(chain)?.builtin ?? BUILTIN_CHAINS.has(chain);
}

function planTable(table: SavedTable): { lines: string[]; removed: string[]; kept: string[] } {
  const owned = new Set(OWNED_CHAINS[table.name] ?? []);
  const candidates = new Set<string>();
  for (const c of table.chains) {
    if (c.builtin) continue;
    if (owned.has(c.name) || (table.name === 'nat' && isServiceChainName(c.name))) candidates.add(c.name);
  }
  const isOurJump = (r: SavedRule, target: string | undefined): boolean =>
    target !== undefined && JUMP_ENTRY_CHAINS.has(target) && isBuiltin(table, r.chain);

  // A chain still referenced by a rule we do not remove cannot be deleted: keep it, untouched,
  // and then whatever it jumps to as well (fixpoint).
  const kept: string[] = [];
  for (let changed = true; changed;) {
    changed = false;
    for (const r of table.rules) {
      if (candidates.has(r.chain)) continue;
      const target = ruleTarget(r);
      if (target === undefined || !candidates.has(target) || isOurJump(r, target)) continue;
      candidates.delete(target);
      kept.push(`-t ${table.name} ${target}: still referenced by "-A ${r.chain} ${formatArgs(r.args)}"`);
      changed = true;
    }
  }

  const jumps = table.rules.filter((r) => {
    const target = ruleTarget(r);
    return isOurJump(r, target) && target !== undefined && candidates.has(target);
  });
  if (candidates.size === 0 && jumps.length === 0) return { lines: [], removed: [], kept };

  const ordered = table.chains.map((c) => c.name).filter((n) => candidates.has(n));
  const lines = [`*${table.name}`];
  const removed: string[] = [];
  for (const c of ordered) lines.push(`:${c} - [0:0]`);
  for (const r of jumps) {
    const spec = `${quoteArg(r.chain)} ${formatArgs(r.args)}`;
    lines.push(`-D ${spec}`);
    removed.push(`-t ${table.name} -D ${spec}`);
  }
  for (const c of ordered) {
    lines.push(`-X ${c}`);
    removed.push(`-t ${table.name} -X ${c}`);
  }
  lines.push('COMMIT');
  return { lines, removed, kept };
}

/** Pure: what to remove from a parsed iptables-save, as one restore transaction. */
export function planCleanup(ruleset: SavedRuleset): CleanupPlan {
  const lines: string[] = [];
  const removed: string[] = [];
  const kept: string[] = [];
  for (const table of ruleset.tables.values()) {
    const p = planTable(table);
    lines.push(...p.lines);
    removed.push(...p.removed);
    kept.push(...p.kept);
  }
  return { restoreInput: lines.length ? `${lines.join('\n')}\n` : '', removed, kept };
}

/** Remove kube-proxy's iptables leftovers for one family. Idempotent. */
export async function cleanupLeftovers(ipt: Iptables): Promise<CleanupResult> {
  const plan = planCleanup(parseIptablesSave(await ipt.save()));
  if (plan.restoreInput !== '') await ipt.restore(plan.restoreInput, { noflush: true, counters: false });
  return { removed: [...plan.removed], kept: [...plan.kept] };
}
