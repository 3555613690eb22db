import {
  KUBE_EXTERNAL_SERVICES,
  KUBE_FIREWALL,
  KUBE_FORWARD,
  KUBE_MARK_MASQ,
  KUBE_NODEPORTS,
  KUBE_POSTROUTING,
  KUBE_PROXY_FIREWALL,
  KUBE_SERVICES,
} from './names.js';
import { chainLine, type LineBuffer } from './render-lines.js';

/**
 * The chains and rules kube-proxy writes on every sync regardless of Services (spec §2, §6 tail,
 * §7): top-level chain declarations, KUBE-POSTROUTING, KUBE-MARK-MASQ, KUBE-FIREWALL,
 * KUBE-FORWARD and the final KUBE-SERVICES → KUBE-NODEPORTS rule.
 */

/** Filter chains declared every sync, in kube-proxy's order (KUBE-FIREWALL is added separately). */
export const FILTER_CHAINS = [
  KUBE_SERVICES,
  KUBE_EXTERNAL_SERVICES,
  KUBE_FORWARD,
  KUBE_NODEPORTS,
  KUBE_PROXY_FIREWALL,
] as const;

/** Nat chains declared every sync, before the per-service chains. */
export const NAT_CHAINS = [KUBE_SERVICES, KUBE_NODEPORTS, KUBE_POSTROUTING, KUBE_MARK_MASQ] as const;

/**
 * Fixed nat chains whose rules are all in the head and jump to no chain of ours: the Services' own
 * chains jump to KUBE-MARK-MASQ, so a streamed full sync writes these first (render.ts).
 */
export const NAT_LEAF_CHAINS: readonly string[] = [KUBE_POSTROUTING, KUBE_MARK_MASQ];

export interface FixedHeadOptions {
  readonly mark: string;
  readonly randomFully: boolean;
  /** IPv4 with localhost NodePorts: KUBE-FIREWALL blocks martian localnet traffic. */
  readonly kubeFirewall: boolean;
}

/** Chain declarations and the rules kube-proxy writes before any Service. */
export function renderFixedHead(
  opts: FixedHeadOptions,
  filterChains: LineBuffer,
  filterRules: LineBuffer,
  natChains: LineBuffer,
  natRules: LineBuffer,
): void {
  for (const c of FILTER_CHAINS) filterChains.add(chainLine(c));
  for (const c of NAT_CHAINS) natChains.add(chainLine(c));

  const m = opts.mark;
  natRules.add(`-A ${KUBE_POSTROUTING} -m mark ! --mark ${m}/${m} -j RETURN`);
  // Clear the mark so a packet that re-traverses the stack is not masqueraded twice.
  natRules.add(`-A ${KUBE_POSTROUTING} -j MARK --xor-mark ${m}`);
  natRules.add(
    `-A ${KUBE_POSTROUTING} -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE` +
      (opts.randomFully ? ' --random-fully' : ''),
  );
  natRules.add(`-A ${KUBE_MARK_MASQ} -j MARK --or-mark ${m}`);

  if (opts.kubeFirewall) {
    // route_localnet opens 127.0.0.0/8 to the outside (issue 90259); kubelet writes the same rule.
    filterChains.add(chainLine(KUBE_FIREWALL));
    filterRules.add(
      `-A ${KUBE_FIREWALL} -m comment --comment "block incoming localnet connections" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP`,
    );
  }
}

export type NodePortDestinations =
  { readonly matchAll: true } | { readonly matchAll: false; readonly addresses: readonly string[] };

export interface FixedTailOptions {
  readonly mark: string;
  readonly v6: boolean;
  readonly localhostNodePorts: boolean;
  readonly nodePorts: NodePortDestinations;
  readonly conntrackTCPBeLiberal: boolean;
}

const NODEPORTS_COMMENT = '"kubernetes service nodeports; NOTE: this must be the last rule in this chain"';

function isLoopback(ip: string, v6: boolean): boolean {
  return v6 ? ip === '::1' : ip.startsWith('127.');
}

/** The rules kube-proxy writes after all Services (and after stale-chain deletion). */
export function renderFixedTail(opts: FixedTailOptions, filterRules: LineBuffer, natRules: LineBuffer): void {
  if (opts.nodePorts.matchAll) {
    // Localhost NodePorts never work on IPv6 and need route_localnet on IPv4.
    const exclude = opts.v6 ? ' ! -d ::1/128' : opts.localhostNodePorts ? '' : ' ! -d 127.0.0.0/8';
    natRules.add(
      `-A ${KUBE_SERVICES} -m comment --comment ${NODEPORTS_COMMENT} -m addrtype --dst-type LOCAL${exclude} -j ${KUBE_NODEPORTS}`,
    );
  } else {
    for (const ip of opts.nodePorts.addresses) {
      if (isLoopback(ip, opts.v6) && (opts.v6 || !opts.localhostNodePorts)) continue;
      natRules.add(
        `-A ${KUBE_SERVICES} -m comment --comment ${NODEPORTS_COMMENT} -d ${ip} -j ${KUBE_NODEPORTS}`,
      );
    }
  }

  // INVALID packets would reset connections unless nf_conntrack_tcp_be_liberal is set. kube-proxy
  // adds `-m nfacct --nfacct-name ct_state_invalid_dropped_pkts` when the counter exists; svcplane
  // has no nfacct counters, so the rule is written without it.
  if (!opts.conntrackTCPBeLiberal) {
    filterRules.add(`-A ${KUBE_FORWARD} -m conntrack --ctstate INVALID -j DROP`);
  }
  filterRules.add(
    `-A ${KUBE_FORWARD} -m comment --comment "kubernetes forwarding rules" -m mark --mark ${opts.mark}/${opts.mark} -j ACCEPT`,
  );
  filterRules.add(
    `-A ${KUBE_FORWARD} -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`,
  );
}
