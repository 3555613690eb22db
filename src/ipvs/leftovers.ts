import { OWNED_CHAINS } from '../iptables-rules/owned-chains.js';
import { KUBE_PROXY_CANARY } from '../iptables/iptables.js';
import type { ExtraLines } from '../iptables-rules/jump-plan.js';
import { jumpRules, type JumpRule } from '../iptables-rules/jumps.js';
import { KUBE_FIREWALL, KUBE_KUBELET_CANARY, isServiceChainName } from '../iptables/names.js';
import {
  formatArgs,
  quoteArg,
  ruleComment,
  ruleTarget,
  type SavedRule,
  type SavedRuleset,
} from '../iptables/save-parse.js';
import type { IPFamily } from '../model/types.js';
import { IPVS_JUMPS } from './rules.js';

/**
 * iptables-mode leftovers on a node switched to IPVS mode (kube-proxy's IPVS mode runs the iptables
 * CleanupLeftovers at start for the same reason). Otherwise they keep acting: filter KUBE-SERVICES /
 * KUBE-EXTERNAL-SERVICES still REJECT or DROP a Service that had no endpoints back then, even after
 * it got some. Pure: from what iptables-save showed, the lines to fold into the first IPVS restore —
 * the IPVS chains are rewritten in the same transaction, so by COMMIT nothing of ours refers to the
 * removed chains. Chains IPVS mode declares itself (nat KUBE-SERVICES, KUBE-MARK-MASQ, …) are left to
 * that rewrite; kubelet's KUBE-FIREWALL and the canaries stay.
 */

const KUBELET_CHAINS = new Set([KUBE_FIREWALL, KUBE_KUBELET_CANARY, KUBE_PROXY_CANARY]);

export interface LeftoverPlan {
  /** Per table: declarations (flush), `-D` of the jumps into them, `-X` of the chains. */
  readonly lines: ExtraLines;
  /** What goes, as iptables commands (`-t filter -X KUBE-EXTERNAL-SERVICES`), for the log. */
  readonly removed: readonly string[];
}

const sameJump = (r: SavedRule, j: JumpRule): boolean =>
  r.chain === j.chain && ruleTarget(r) === j.target && ruleComment(r) === j.comment;

/**
 * `declared`: `table/chain` names the IPVS restore declares (and so rewrites). A leftover chain that a
 * foreign rule still jumps to is flushed but kept (deleting it would fail the whole restore).
 */
export function planIptablesModeLeftovers(
  saved: SavedRuleset,
  declared: ReadonlySet<string>,
  family: IPFamily,
): LeftoverPlan {
  const lines = new Map<string, string[]>();
  const removed: string[] = [];
  const iptablesJumps = jumpRules(family, { localhostNodePorts: true }).filter(
    (j) => !KUBELET_CHAINS.has(j.target),
  );
  for (const [name, table] of saved.tables) {
    if (name !== 'nat' && name !== 'filter') continue;
    const isOurs = (chain: string): boolean => declared.has(`${name}/${chain}`);
    const owned = new Set(OWNED_CHAINS[name] ?? []);
    const doomed = new Set(
      table.chains
        .filter((c) => !c.builtin && !isOurs(c.name) && !KUBELET_CHAINS.has(c.name))
        .filter((c) => owned.has(c.name) || (name === 'nat' && isServiceChainName(c.name)))
        .map((c) => c.name),
    );
    // iptables mode's jumps from built-in chains: into a doomed chain, or into a chain both modes use
    // but in iptables mode's form (FORWARD -> KUBE-PROXY-FIREWALL "kubernetes load balancer firewall").
    const jumps = table.rules.filter((r) => {
      const builtin = table.chainsByName.get(r.chain)?.builtin ?? false;
      const target = ruleTarget(r);
      if (!builtin || target === undefined) return false;
      if (IPVS_JUMPS.some((j) => j.table === name && sameJump(r, j))) return false;
      if (doomed.has(target)) return true;
      return isOurs(target) && iptablesJumps.some((j) => j.table === name && sameJump(r, j));
    });
    if (doomed.size === 0 && jumps.length === 0) continue;
    const jumpSet = new Set(jumps);
    // Still referenced after this transaction: a rule in a chain that is neither rewritten by us nor
    // removed, other than the jumps deleted here.
    const referenced = new Set(
      table.rules
        .filter((r) => !jumpSet.has(r) && !doomed.has(r.chain) && !isOurs(r.chain))
        .map((r) => ruleTarget(r))
        .filter((t): t is string => t !== undefined && doomed.has(t)),
    );
    const out: string[] = [];
    const ordered = table.chains.map((c) => c.name).filter((c) => doomed.has(c));
    for (const c of ordered) out.push(`:${c} - [0:0]`);
    for (const r of jumps) {
      const spec = `${quoteArg(r.chain)} ${formatArgs(r.args)}`;
      out.push(`-D ${spec}`);
      removed.push(`-t ${name} -D ${spec}`);
    }
    for (const c of ordered) {
      if (referenced.has(c)) {
        removed.push(`-t ${name} -F ${c} (kept: a foreign rule still jumps to it)`);
        continue;
      }
      out.push(`-X ${c}`);
      removed.push(`-t ${name} -X ${c}`);
    }
    lines.set(name, out);
  }
  return { lines, removed };
}
