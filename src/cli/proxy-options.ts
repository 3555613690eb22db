import { hostname } from 'node:os';
import type { Command } from 'commander';
import { parseCIDR, parseIP } from '../model/ip.js';
import type { DetectLocalMode } from '../iptables/proxier.js';
import { boolOption, parseDuration, parseIntInRange, parseList } from './flags.js';

/**
 * The options shared by `run`, `sync` and `diff`, named as kube-proxy's flags, plus the resolved
 * and validated form the controller is built from.
 */

export interface ProxyOptions {
  readonly manifests?: string;
  readonly kubeconfig?: string;
  readonly master?: string;
  readonly config?: string;
  readonly proxyMode: 'iptables' | 'ipvs';
  readonly hostnameOverride: string;
  readonly bindAddress?: string;
  readonly clusterCIDRs: readonly string[];
  readonly detectLocalMode: DetectLocalMode;
  readonly bridgeInterface?: string;
  readonly interfaceNamePrefix?: string;
  readonly nodePortAddresses: readonly string[];
  readonly localhostNodePorts: boolean;
  readonly masqueradeAll: boolean;
  readonly masqueradeBit: number;
  readonly minSyncPeriodMs: number;
  readonly syncPeriodMs: number;
  /** e.g. `iptables-legacy`: restore/save and ip6tables names are derived from it. */
  readonly iptablesBinary: string;
  readonly ipFamilies: readonly ('IPv4' | 'IPv6')[];
  readonly healthzBindAddress: string;
  readonly metricsBindAddress: string;
  readonly verbosity: number;
}

type Raw = Record<string, unknown>;

export function addProxyOptions(cmd: Command): Command {
  cmd
    .option('--manifests <path>', 'read Services/EndpointSlices/Endpoints/Nodes from a file or directory')
    .option('--kubeconfig <file>', 'kubeconfig of the cluster to watch')
    .option('--master <url>', 'API server address (overrides the kubeconfig)')
    .option('--config <file>', 'KubeProxyConfiguration file; flags override it')
    .option('--proxy-mode <mode>', 'iptables or ipvs', 'iptables')
    .option('--hostname-override <name>', 'this node name (default: the hostname)')
    .option(
      '--bind-address <ip>',
      'the node IP (default: from the Node object, else the first global address)',
    )
    .option('--cluster-cidr <cidrs>', 'pod CIDRs (comma-separated), for local-traffic detection', parseList)
    .option('--detect-local-mode <mode>', 'ClusterCIDR, BridgeInterface or InterfaceNamePrefix')
    .option('--pod-bridge-interface <name>', 'bridge for --detect-local-mode=BridgeInterface')
    .option('--pod-interface-name-prefix <prefix>', 'prefix for --detect-local-mode=InterfaceNamePrefix')
    .option(
      '--nodeport-addresses <cidrs>',
      'CIDRs (or "primary") NodePorts listen on; default all',
      parseList,
    )
    .option('--iptables-masquerade-bit <n>', 'fwmark bit for SNAT (0-31)', parseIntInRange(0, 31))
    .option('--iptables-min-sync-period <d>', 'minimum interval between syncs (e.g. 1s)', parseDuration)
    .option('--iptables-sync-period <d>', 'maximum interval between syncs (e.g. 30s)', parseDuration)
    .option('--iptables-binary <name>', 'iptables command to use, e.g. iptables-legacy', 'iptables')
    .option('--ip-families <list>', 'IPv4, IPv6 or both (default both)', parseList)
    .option('--healthz-bind-address <ip:port>', 'health server address', '0.0.0.0:10256')
    .option('--metrics-bind-address <ip:port>', 'metrics server address', '127.0.0.1:10249')
    .option('-v, --v <level>', 'log verbosity', parseIntInRange(0, 10), 0);
  boolOption(cmd, 'masquerade-all', 'SNAT all traffic sent via Service cluster IPs', false);
  boolOption(cmd, 'iptables-localhost-nodeports', 'allow NodePorts on 127.0.0.1 (IPv4)', true);
  return cmd;
}

/** Turns commander's raw values into validated ProxyOptions; throws with the flag and the reason. */
export function resolveProxyOptions(raw: Raw): ProxyOptions {
  const str = (k: string): string | undefined => (typeof raw[k] === 'string' ? raw[k] : undefined);
  const list = (k: string): string[] => (Array.isArray(raw[k]) ? (raw[k] as string[]) : []);
  const bool = (k: string, d: boolean): boolean => (typeof raw[k] === 'boolean' ? raw[k] : d);
  const num = (k: string, d: number): number => (typeof raw[k] === 'number' ? raw[k] : d);

  const mode = str('proxyMode') ?? 'iptables';
  if (mode !== 'iptables' && mode !== 'ipvs') throw new Error(`--proxy-mode: unsupported mode "${mode}"`);
  const clusterCIDRs = list('clusterCidr');
  for (const c of clusterCIDRs) if (!parseCIDR(c)) throw new Error(`--cluster-cidr: invalid CIDR "${c}"`);
  const npa = list('nodeportAddresses');
  for (const c of npa) {
    if (c !== 'primary' && !parseCIDR(c)) throw new Error(`--nodeport-addresses: invalid CIDR "${c}"`);
  }
  if (npa.includes('primary') && npa.length > 1) {
    throw new Error('--nodeport-addresses: "primary" cannot be combined with CIDRs');
  }
  const bindAddress = str('bindAddress');
  if (bindAddress !== undefined && !parseIP(bindAddress)) {
    throw new Error(`--bind-address: invalid IP "${bindAddress}"`);
  }
  let detect = (str('detectLocalMode') ?? (clusterCIDRs.length > 0 ? 'ClusterCIDR' : '')) as DetectLocalMode;
  if (!['ClusterCIDR', 'NodeCIDR', 'BridgeInterface', 'InterfaceNamePrefix', ''].includes(detect)) {
    throw new Error(`--detect-local-mode: unsupported mode "${String(detect)}"`);
  }
  if (detect === 'ClusterCIDR' && clusterCIDRs.length === 0) detect = '';
  const families = list('ipFamilies');
  for (const f of families) {
    if (f !== 'IPv4' && f !== 'IPv6') throw new Error(`--ip-families: "${f}" is not IPv4 or IPv6`);
  }
  const binary = str('iptablesBinary') ?? 'iptables';
  if (!/^[A-Za-z0-9_./-]+$/.test(binary) || !binary.includes('iptables')) {
    throw new Error(`--iptables-binary: "${binary}" must name an iptables command`);
  }
  const hostnameOverride = (str('hostnameOverride') ?? hostname()).trim().toLowerCase();
  if (!/^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/.test(hostnameOverride)) {
    throw new Error(`--hostname-override: "${hostnameOverride}" is not a valid node name`);
  }
  return {
    manifests: str('manifests'),
    kubeconfig: str('kubeconfig'),
    master: str('master'),
    config: str('config'),
    proxyMode: mode,
    hostnameOverride,
    bindAddress,
    clusterCIDRs,
    detectLocalMode: detect,
    bridgeInterface: str('podBridgeInterface'),
    interfaceNamePrefix: str('podInterfaceNamePrefix'),
    nodePortAddresses: npa,
    localhostNodePorts: bool('iptablesLocalhostNodeports', true),
    masqueradeAll: bool('masqueradeAll', false),
    masqueradeBit: num('iptablesMasqueradeBit', 14),
    minSyncPeriodMs: num('iptablesMinSyncPeriod', 1000),
    syncPeriodMs: num('iptablesSyncPeriod', 30_000),
    iptablesBinary: binary,
    ipFamilies: families.length > 0 ? (families as ('IPv4' | 'IPv6')[]) : ['IPv4', 'IPv6'],
    healthzBindAddress: str('healthzBindAddress') ?? '0.0.0.0:10256',
    metricsBindAddress: str('metricsBindAddress') ?? '127.0.0.1:10249',
    verbosity: num('v', 0),
  };
}

/** Binary names for one family, derived from --iptables-binary (iptables-legacy → ip6tables-legacy-save …). */
export function iptablesBinaries(
  binary: string,
  family: 'IPv4' | 'IPv6',
): { iptables: string; restore: string; save: string } {
  const base = family === 'IPv6' ? binary.replace(/iptables/, 'ip6tables') : binary;
  const m = /^(.*?)(ip6?tables)(-legacy|-nft)?$/.exec(base);
  if (!m) return { iptables: base, restore: `${base}-restore`, save: `${base}-save` };
  const [, dir = '', name = '', variant = ''] = m;
  return {
    iptables: `${dir}${name}${variant}`,
    restore: `${dir}${name}${variant}-restore`,
    save: `${dir}${name}${variant}-save`,
  };
}
