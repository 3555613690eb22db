import { masqueradeMark } from '../iptables/render-fixed.js';
import { formatArgs } from '../iptables/save-parse.js';
import type { JumpRule } from '../iptables/jumps.js';
import type { IPFamily } from '../model/types.js';
import { SETS, setName, type SetId } from './ipset.js';
import type { IpvsDesired } from './plan.js';

/**
 * The iptables rules kube-proxy writes around IPVS (writeIptablesRules, reference §1.6), rendered as
 * one `iptables-restore --noflush` input for nat and filter. Declaring a chain flushes it, so every
 * chain is fully rewritten each sync. Pure.
 */

export const IPVS_NAT_CHAINS = [
  'KUBE-SERVICES',
  'KUBE-POSTROUTING',
  'KUBE-NODE-PORT',
  'KUBE-LOAD-BALANCER',
  'KUBE-MARK-MASQ',
] as const;
export const IPVS_FILTER_CHAINS = [
  'KUBE-FORWARD',
  'KUBE-NODE-PORT',
  'KUBE-PROXY-FIREWALL',
  'KUBE-SOURCE-RANGES-FIREWALL',
  'KUBE-IPVS-FILTER',
  'KUBE-IPVS-OUT-FILTER',
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
  jump('nat', 'OUTPUT', 'KUBE-SERVICES', 'kubernetes service portals'),
  jump('nat', 'PREROUTING', 'KUBE-SERVICES', 'kubernetes service portals'),
  jump('nat', 'POSTROUTING', 'KUBE-POSTROUTING', 'kubernetes postrouting rules'),
  jump('filter', 'FORWARD', 'KUBE-FORWARD', 'kubernetes forwarding rules'),
  jump('filter', 'INPUT', 'KUBE-NODE-PORT', 'kubernetes health check rules'),
  jump('filter', 'INPUT', 'KUBE-PROXY-FIREWALL', 'kube-proxy firewall rules'),
  jump('filter', 'FORWARD', 'KUBE-PROXY-FIREWALL', 'kube-proxy firewall rules'),
  jump('filter', 'INPUT', 'KUBE-IPVS-FILTER', 'kubernetes ipvs access filter'),
  jump('filter', 'OUTPUT', 'KUBE-IPVS-OUT-FILTER', 'kubernetes ipvs access filter'),
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
  A(nat, 'KUBE-SERVICES', 'loopback traffic is not for IPVS services', '-s', loopback, '-j', 'RETURN');
  A(nat, 'KUBE-POSTROUTING', SETS.loopBack.comment, ...match('loopBack', 'dst,dst,src'), '-j', 'MASQUERADE');
  A(
    nat,
    'KUBE-SERVICES',
    SETS.loadBalancer.comment,
    ...match('loadBalancer', 'dst,dst'),
    '-j',
    'KUBE-LOAD-BALANCER',
  );
  A(
    nat,
    'KUBE-LOAD-BALANCER',
    SETS.loadBalancerLocal.comment,
    ...match('loadBalancerLocal', 'dst,dst'),
    '-j',
    'RETURN',
  );
  A(nat, 'KUBE-LOAD-BALANCER', 'mark MASQ for external traffic policy not local', '-j', 'KUBE-MARK-MASQ');
  for (const [proto, all, local] of [
    ['tcp', 'nodePortTCP', 'nodePortLocalTCP'],
    ['udp', 'nodePortUDP', 'nodePortLocalUDP'],
  ] as const) {
    A(nat, 'KUBE-NODE-PORT', SETS[local].comment, '-p', proto, ...match(local, 'dst'), '-j', 'RETURN');
    A(nat, 'KUBE-NODE-PORT', SETS[all].comment, '-p', proto, ...match(all, 'dst'), '-j', 'KUBE-MARK-MASQ');
  }
  if (has('nodePortSCTP')) {
    A(
      nat,
      'KUBE-NODE-PORT',
      SETS.nodePortLocalSCTP.comment,
      '-p',
      'sctp',
      ...match('nodePortLocalSCTP', 'dst,dst'),
      '-j',
      'RETURN',
    );
    A(
      nat,
      'KUBE-NODE-PORT',
      SETS.nodePortSCTP.comment,
      '-p',
      'sctp',
      ...match('nodePortSCTP', 'dst,dst'),
      '-j',
      'KUBE-MARK-MASQ',
    );
  }
  // ClusterIP masquerade: all, or off-cluster sources, or host traffic that picked a VIP as source.
  if (config.masqueradeAll) {
    A(nat, 'KUBE-SERVICES', SETS.clusterIP.comment, ...match('clusterIP', 'dst,dst'), '-j', 'KUBE-MARK-MASQ');
  } else if (config.notLocal !== undefined) {
    A(
      nat,
      'KUBE-SERVICES',
      SETS.clusterIP.comment,
      ...match('clusterIP', 'dst,dst'),
      ...config.notLocal,
      '-j',
      'KUBE-MARK-MASQ',
    );
  } else {
    A(nat, 'KUBE-SERVICES', SETS.clusterIP.comment, ...match('clusterIP', 'src,dst'), '-j', 'KUBE-MARK-MASQ');
  }
  A(nat, 'KUBE-SERVICES', SETS.externalIP.comment, ...match('externalIP', 'dst,dst'), '-j', 'KUBE-MARK-MASQ');
  for (const id of ['externalIP', 'externalIPLocal'] as const) {
    A(
      nat,
      'KUBE-SERVICES',
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
    'KUBE-SERVICES',
    'kubernetes service nodeports',
    '-m',
    'addrtype',
    '--dst-type',
    'LOCAL',
    '-j',
    'KUBE-NODE-PORT',
  );
  A(nat, 'KUBE-SERVICES', SETS.clusterIP.comment, ...match('clusterIP', 'dst,dst'), '-j', 'ACCEPT');
  A(nat, 'KUBE-SERVICES', SETS.loadBalancer.comment, ...match('loadBalancer', 'dst,dst'), '-j', 'ACCEPT');
  A(
    nat,
    'KUBE-POSTROUTING',
    'kubernetes service traffic requiring SNAT',
    '-m',
    'mark',
    '!',
    '--mark',
    `${mark}/${mark}`,
    '-j',
    'RETURN',
  );
  A(nat, 'KUBE-POSTROUTING', 'kubernetes service traffic requiring SNAT', '-j', 'MARK', '--xor-mark', mark);
  A(
    nat,
    'KUBE-POSTROUTING',
    'kubernetes service traffic requiring SNAT',
    '-j',
    'MASQUERADE',
    ...(config.randomFully ? ['--random-fully'] : []),
  );
  A(nat, 'KUBE-MARK-MASQ', 'mark for masquerade', '-j', 'MARK', '--or-mark', mark);

  // filter
  A(
    filter,
    'KUBE-FORWARD',
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
    'KUBE-FORWARD',
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
    'KUBE-NODE-PORT',
    SETS.healthCheckNodePort.comment,
    ...match('healthCheckNodePort', 'dst'),
    '-j',
    'ACCEPT',
  );
  A(
    filter,
    'KUBE-PROXY-FIREWALL',
    SETS.loadBalancerFW.comment,
    ...match('loadBalancerFW', 'dst,dst'),
    '-j',
    'KUBE-SOURCE-RANGES-FIREWALL',
  );
  A(
    filter,
    'KUBE-SOURCE-RANGES-FIREWALL',
    SETS.loadBalancerSourceCIDR.comment,
    ...match('loadBalancerSourceCIDR', 'dst,dst,src'),
    '-j',
    'RETURN',
  );
  A(
    filter,
    'KUBE-SOURCE-RANGES-FIREWALL',
    SETS.loadBalancerSourceIP.comment,
    ...match('loadBalancerSourceIP', 'dst,dst,src'),
    '-j',
    'RETURN',
  );
  A(filter, 'KUBE-SOURCE-RANGES-FIREWALL', 'source not in loadBalancerSourceRanges', '-j', 'DROP');
  // svcplane: what iptables mode does and kube-proxy's IPVS mode does not (docs/modes.md, "IPVS mode").
  A(
    filter,
    'KUBE-IPVS-FILTER',
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
    'KUBE-IPVS-FILTER',
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
    A(filter, 'KUBE-IPVS-FILTER', SETS[id].comment, ...match(id, 'dst,dst'), '-j', 'RETURN');
  }
  A(
    filter,
    'KUBE-IPVS-FILTER',
    SETS.healthCheckNodePort.comment,
    ...match('healthCheckNodePort', 'dst'),
    '-j',
    'RETURN',
  );
  A(
    filter,
    'KUBE-IPVS-FILTER',
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
      'KUBE-IPVS-OUT-FILTER',
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
