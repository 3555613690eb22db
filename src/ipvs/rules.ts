import {
  KUBE_FORWARD,
  KUBE_IPVS_FILTER,
  KUBE_IPVS_OUT_FILTER,
  KUBE_LOAD_BALANCER,
  KUBE_MARK_MASQ,
  KUBE_NODE_PORT,
  KUBE_POSTROUTING,
  KUBE_PROXY_FIREWALL,
  KUBE_SERVICES,
  KUBE_SOURCE_RANGES_FIREWALL,
} from '../iptables/names.js';
import { masqueradeMark } from '../iptables-rules/masquerade-mark.js';
import { formatArgs } from '../iptables/save-parse.js';
import type { JumpRule } from '../iptables-rules/jumps.js';
import type { IPFamily } from '../model/types.js';
import { SETS, setName, type SetId } from './ipset.js';
import type { IpvsDesired } from './plan.js';

/**
 * The iptables rules kube-proxy writes around IPVS (writeIptablesRules, reference §1.6), rendered as
 * one `iptables-restore --noflush` input for nat and filter. Declaring a chain flushes it, so every
 * chain is fully rewritten each sync. Pure.
 */

export const IPVS_NAT_CHAINS = [
  KUBE_SERVICES,
  KUBE_POSTROUTING,
  KUBE_NODE_PORT,
  KUBE_LOAD_BALANCER,
  KUBE_MARK_MASQ,
] as const;
export const IPVS_FILTER_CHAINS = [
  KUBE_FORWARD,
  KUBE_NODE_PORT,
  KUBE_PROXY_FIREWALL,
  KUBE_SOURCE_RANGES_FIREWALL,
  KUBE_IPVS_FILTER,
  KUBE_IPVS_OUT_FILTER,
] as const;

export interface IpvsRulesConfig {
  readonly family: IPFamily;
  readonly masqueradeBit: number;
  readonly masqueradeAll: boolean;
  /**
   * The local-traffic detector's "not from a pod" match (kube-proxy's IfNotLocal): `! -s <cluster
   * CIDR>` or `! -i <bridge or prefix+>`; undefined = no detector.
   */
  readonly notLocal?: readonly string[];
  readonly randomFully: boolean;
}

const jump = (table: 'nat' | 'filter', chain: string, target: string, comment: string): JumpRule => ({
  table,
  chain,
  target,
  comment,
  extraArgs: [],
});

/** kube-proxy's IPVS iptablesJumpChain, in the order they are ensured (each prepended). */
export const IPVS_JUMPS: readonly JumpRule[] = [
  jump('nat', 'OUTPUT', KUBE_SERVICES, 'kubernetes service portals'),
  jump('nat', 'PREROUTING', KUBE_SERVICES, 'kubernetes service portals'),
  jump('nat', 'POSTROUTING', KUBE_POSTROUTING, 'kubernetes postrouting rules'),
  jump('filter', 'FORWARD', KUBE_FORWARD, 'kubernetes forwarding rules'),
  jump('filter', 'INPUT', KUBE_NODE_PORT, 'kubernetes health check rules'),
  jump('filter', 'INPUT', KUBE_PROXY_FIREWALL, 'kube-proxy firewall rules'),
  jump('filter', 'FORWARD', KUBE_PROXY_FIREWALL, 'kube-proxy firewall rules'),
  jump('filter', 'INPUT', KUBE_IPVS_FILTER, 'kubernetes ipvs access filter'),
  jump('filter', 'OUTPUT', KUBE_IPVS_OUT_FILTER, 'kubernetes ipvs access filter'),
];

export function renderIpvsRules(desired: IpvsDesired, config: IpvsRulesConfig): string {
  const set = (id: SetId): string => setName(SETS[id].base, config.family);
  const mark = masqueradeMark(config.masqueradeBit);
  const nat: string[] = [];
  const filter: string[] = [];
  const A = (buf: string[], chain: string, comment: string, ...args: string[]): void => {
    buf.push(`-A ${chain} ${formatArgs(['-m', 'comment', '--comment', comment, ...args])}`);
  };
  const match = (id: SetId, flags: string): string[] => ['-m', 'set', '--match-set', set(id), flags];
  const loopback = config.family === 'IPv6' ? '::1/128' : '127.0.0.0/8';
  const has = (id: SetId): boolean => (desired.sets.find((s) => s.name === set(id))?.members.size ?? 0) > 0;

  // nat
  A(nat, KUBE_SERVICES, 'loopback traffic is not for IPVS services', '-s', loopback, '-j', 'RETURN');
  A(nat, KUBE_POSTROUTING, SETS.loopBack.comment, ...match('loopBack', 'dst,dst,src'), '-j', 'MASQUERADE');
  A(
    nat,
    KUBE_SERVICES,
    SETS.loadBalancer.comment,
    ...match('loadBalancer', 'dst,dst'),
    '-j',
    KUBE_LOAD_BALANCER,
  );
  A(
    nat,
    KUBE_LOAD_BALANCER,
    SETS.loadBalancerLocal.comment,
    ...match('loadBalancerLocal', 'dst,dst'),
    '-j',
    'RETURN',
  );
  A(nat, KUBE_LOAD_BALANCER, 'mark MASQ for external traffic policy not local', '-j', KUBE_MARK_MASQ);
  for (const [proto, all, local] of [
    ['tcp', 'nodePortTCP', 'nodePortLocalTCP'],
    ['udp', 'nodePortUDP', 'nodePortLocalUDP'],
  ] as const) {
    A(nat, KUBE_NODE_PORT, SETS[local].comment, '-p', proto, ...match(local, 'dst'), '-j', 'RETURN');
    A(nat, KUBE_NODE_PORT, SETS[all].comment, '-p', proto, ...match(all, 'dst'), '-j', KUBE_MARK_MASQ);
  }
  if (has('nodePortSCTP')) {
    A(
      nat,
      KUBE_NODE_PORT,
      SETS.nodePortLocalSCTP.comment,
      '-p',
      'sctp',
      ...match('nodePortLocalSCTP', 'dst,dst'),
      '-j',
      'RETURN',
    );
    A(
      nat,
      KUBE_NODE_PORT,
      SETS.nodePortSCTP.comment,
      '-p',
      'sctp',
      ...match('nodePortSCTP', 'dst,dst'),
      '-j',
      KUBE_MARK_MASQ,
    );
  }
  // ClusterIP masquerade: all, or off-cluster sources, or host traffic that picked a VIP as source.
  if (config.masqueradeAll) {
    A(nat, KUBE_SERVICES, SETS.clusterIP.comment, ...match('clusterIP', 'dst,dst'), '-j', KUBE_MARK_MASQ);
  } else if (config.notLocal !== undefined) {
    A(
      nat,
      KUBE_SERVICES,
      SETS.clusterIP.comment,
      ...match('clusterIP', 'dst,dst'),
      ...config.notLocal,
      '-j',
      KUBE_MARK_MASQ,
    );
  } else {
    A(nat, KUBE_SERVICES, SETS.clusterIP.comment, ...match('clusterIP', 'src,dst'), '-j', KUBE_MARK_MASQ);
  }
  A(nat, KUBE_SERVICES, SETS.externalIP.comment, ...match('externalIP', 'dst,dst'), '-j', KUBE_MARK_MASQ);
  for (const id of ['externalIP', 'externalIPLocal'] as const) {
    A(
      nat,
      KUBE_SERVICES,
      'external IP traffic goes to IPVS',
      ...match(id, 'dst,dst'),
      '-m',
      'addrtype',
      '--dst-type',
      'LOCAL',
      '-j',
      'ACCEPT',
    );
  }
  A(
    nat,
    KUBE_SERVICES,
    'kubernetes service nodeports',
    '-m',
    'addrtype',
    '--dst-type',
    'LOCAL',
    '-j',
    KUBE_NODE_PORT,
  );
  A(nat, KUBE_SERVICES, SETS.clusterIP.comment, ...match('clusterIP', 'dst,dst'), '-j', 'ACCEPT');
  A(nat, KUBE_SERVICES, SETS.loadBalancer.comment, ...match('loadBalancer', 'dst,dst'), '-j', 'ACCEPT');
  A(
    nat,
    KUBE_POSTROUTING,
    'kubernetes service traffic requiring SNAT',
    '-m',
    'mark',
    '!',
    '--mark',
    `${mark}/${mark}`,
    '-j',
    'RETURN',
  );
  A(nat, KUBE_POSTROUTING, 'kubernetes service traffic requiring SNAT', '-j', 'MARK', '--xor-mark', mark);
  A(
    nat,
    KUBE_POSTROUTING,
    'kubernetes service traffic requiring SNAT',
    '-j',
    'MASQUERADE',
    ...(config.randomFully ? ['--random-fully'] : []),
  );
  A(nat, KUBE_MARK_MASQ, 'mark for masquerade', '-j', 'MARK', '--or-mark', mark);

  // filter
  A(
    filter,
    KUBE_FORWARD,
    'kubernetes forwarding rules',
    '-m',
    'mark',
    '--mark',
    `${mark}/${mark}`,
    '-j',
    'ACCEPT',
  );
  A(
    filter,
    KUBE_FORWARD,
    'kubernetes forwarding conntrack rule',
    '-m',
    'conntrack',
    '--ctstate',
    'RELATED,ESTABLISHED',
    '-j',
    'ACCEPT',
  );
  A(
    filter,
    KUBE_NODE_PORT,
    SETS.healthCheckNodePort.comment,
    ...match('healthCheckNodePort', 'dst'),
    '-j',
    'ACCEPT',
  );
  A(
    filter,
    KUBE_PROXY_FIREWALL,
    SETS.loadBalancerFW.comment,
    ...match('loadBalancerFW', 'dst,dst'),
    '-j',
    KUBE_SOURCE_RANGES_FIREWALL,
  );
  A(
    filter,
    KUBE_SOURCE_RANGES_FIREWALL,
    SETS.loadBalancerSourceCIDR.comment,
    ...match('loadBalancerSourceCIDR', 'dst,dst,src'),
    '-j',
    'RETURN',
  );
  A(
    filter,
    KUBE_SOURCE_RANGES_FIREWALL,
    SETS.loadBalancerSourceIP.comment,
    ...match('loadBalancerSourceIP', 'dst,dst,src'),
    '-j',
    'RETURN',
  );
  A(filter, KUBE_SOURCE_RANGES_FIREWALL, 'source not in loadBalancerSourceRanges', '-j', 'DROP');
  // svcplane: what iptables mode does and kube-proxy's IPVS mode does not (docs/modes.md, "IPVS mode").
  A(
    filter,
    KUBE_IPVS_FILTER,
    SETS.noLocalEndpoints.comment,
    '-m',
    'conntrack',
    '--ctstate',
    'NEW',
    ...match('noLocalEndpoints', 'dst,dst'),
    '-j',
    'DROP',
  );
  A(
    filter,
    KUBE_IPVS_FILTER,
    SETS.noEndpoints.comment,
    '-m',
    'conntrack',
    '--ctstate',
    'NEW',
    ...match('noEndpoints', 'dst,dst'),
    '-j',
    'REJECT',
  );
  for (const id of ['loadBalancer', 'clusterIP', 'externalIP', 'externalIPLocal'] as const) {
    A(filter, KUBE_IPVS_FILTER, SETS[id].comment, ...match(id, 'dst,dst'), '-j', 'RETURN');
  }
  A(
    filter,
    KUBE_IPVS_FILTER,
    SETS.healthCheckNodePort.comment,
    ...match('healthCheckNodePort', 'dst'),
    '-j',
    'RETURN',
  );
  A(
    filter,
    KUBE_IPVS_FILTER,
    'other ports of IPVS service addresses',
    '-m',
    'conntrack',
    '--ctstate',
    'NEW',
    ...match('ipvsIPs', 'dst'),
    '-j',
    'REJECT',
  );
  for (const o of desired.outFilter) {
    A(
      filter,
      KUBE_IPVS_OUT_FILTER,
      'node to load balancer IP outside its source ranges',
      '-s',
      o.ip,
      '-m',
      'ipvs',
      '--vaddr',
      o.ip,
      '--vproto',
      o.protocol,
      '--vport',
      String(o.port),
      '-j',
      'DROP',
    );
  }

  const section = (table: string, chains: readonly string[], rules: string[]): string[] => [
    `*${table}`,
    ...chains.map((c) => `:${c} - [0:0]`),
    ...rules,
    'COMMIT',
  ];
  return [...section('nat', IPVS_NAT_CHAINS, nat), ...section('filter', IPVS_FILTER_CHAINS, filter), ''].join(
    '\n',
  );
}
