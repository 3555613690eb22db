import {
  KUBE_EXTERNAL_SERVICES,
  KUBE_FIREWALL,
  KUBE_FORWARD,
  KUBE_NODEPORTS,
  KUBE_POSTROUTING,
  KUBE_PROXY_FIREWALL,
  KUBE_SERVICES,
} from '../iptables/names.js';
import type { IPFamily } from '../model/types.js';

/**
 * The rules that link built-in chains to kube-proxy's chains (kube-proxy's `iptablesJumpChains` +
 * `iptablesKubeletJumpChains`). They cannot go through iptables-restore --noflush without
 * rewriting whole built-in chains, so the executor ensures each one with `-C` / `-I <chain> 1`
 * on full syncs.
 */

export interface JumpRule {
  readonly table: 'filter' | 'nat';
  /** The built-in chain the rule is inserted into. */
  readonly chain: string;
  /** The kube-proxy chain it jumps to (also ensured to exist before the rule). */
  readonly target: string;
  /** Comment text (unquoted); absent for kubelet's KUBE-FIREWALL jumps. */
  readonly comment?: string;
  /** Matches before the comment, e.g. `-m conntrack --ctstate NEW`. */
  readonly extraArgs: readonly string[];
}

const CT_NEW = ['-m', 'conntrack', '--ctstate', 'NEW'] as const;

function jump(
  table: JumpRule['table'],
  target: string,
  chain: string,
  comment: string,
  extraArgs: readonly string[] = [],
): JumpRule {
  return comment === '' ? { table, chain, target, extraArgs } : { table, chain, target, comment, extraArgs };
}

const KUBE_PROXY_JUMPS: readonly JumpRule[] = [
  jump('filter', KUBE_EXTERNAL_SERVICES, 'INPUT', 'kubernetes externally-visible service portals', CT_NEW),
  jump('filter', KUBE_EXTERNAL_SERVICES, 'FORWARD', 'kubernetes externally-visible service portals', CT_NEW),
  jump('filter', KUBE_NODEPORTS, 'INPUT', 'kubernetes health check service ports'),
  jump('filter', KUBE_SERVICES, 'FORWARD', 'kubernetes service portals', CT_NEW),
  jump('filter', KUBE_SERVICES, 'OUTPUT', 'kubernetes service portals', CT_NEW),
  jump('filter', KUBE_FORWARD, 'FORWARD', 'kubernetes forwarding rules'),
  jump('filter', KUBE_PROXY_FIREWALL, 'INPUT', 'kubernetes load balancer firewall', CT_NEW),
  jump('filter', KUBE_PROXY_FIREWALL, 'OUTPUT', 'kubernetes load balancer firewall', CT_NEW),
  jump('filter', KUBE_PROXY_FIREWALL, 'FORWARD', 'kubernetes load balancer firewall', CT_NEW),
  jump('nat', KUBE_SERVICES, 'OUTPUT', 'kubernetes service portals'),
  jump('nat', KUBE_SERVICES, 'PREROUTING', 'kubernetes service portals'),
  jump('nat', KUBE_POSTROUTING, 'POSTROUTING', 'kubernetes postrouting rules'),
];

// Duplicates of kubelet's jumps; kube-proxy ensures them but never deletes them.
const KUBELET_JUMPS: readonly JumpRule[] = [
  jump('filter', KUBE_FIREWALL, 'INPUT', ''),
  jump('filter', KUBE_FIREWALL, 'OUTPUT', ''),
];

const ALL_JUMPS: readonly JumpRule[] = [...KUBE_PROXY_JUMPS, ...KUBELET_JUMPS];

/**
 * Jump rules in the order kube-proxy ensures them; each is *prepended* (`-I <chain> 1`), so on a
 * fresh node INPUT ends up as KUBE-FIREWALL, KUBE-PROXY-FIREWALL, KUBE-NODEPORTS,
 * KUBE-EXTERNAL-SERVICES.
 *
 * Like kube-proxy, the KUBE-FIREWALL jumps are ensured for both families and whether or not
 * localhost NodePorts are on (the chain is then empty or kubelet's); `opts` is accepted so callers
 * need not change if that ever becomes conditional.
 */
export function jumpRules(_family: IPFamily, _opts: { localhostNodePorts: boolean }): readonly JumpRule[] {
  return ALL_JUMPS;
}

/** The rule specification after `-I <chain> 1` / `-C <chain>`: extra args, comment, `-j target`. */
export function jumpRuleArgs(rule: JumpRule): string[] {
  const args = [...rule.extraArgs];
  if (rule.comment !== undefined) args.push('-m', 'comment', '--comment', rule.comment);
  args.push('-j', rule.target);
  return args;
}
