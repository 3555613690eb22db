import { hostname } from 'node:os';
import type { Command } from 'commander';
import { parseCIDR, parseIP } from '../model/ip.js';
import { isFullSyncMode, type DetectLocalMode, type FullSyncMode } from '../iptables/proxier.js';
import { isSafeInterfaceName } from '../iptables/render-lines.js';
import {
  ConfigError,
  loadKubeProxyConfigFile,
  mergeConfig,
  type ConfigWarning,
  type ProxyConfig,
  type ProxyConfigOverrides,
  type ProxyMode,
} from '../config/kube-proxy-config.js';
import {
  DEFAULT_NODE_PORT_RANGE,
  formatPortRange,
  parsePortRange,
  serviceLimits,
  type ServiceLimits,
} from '../model/limits.js';
import { log } from '../util/log.js';
import { addIpvsOptions, resolveIpvsOptions, type IpvsOptions } from '../ipvs/options.js';
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
  /**
   * The Node object's pod CIDRs (spec.podCIDRs), resolved at startup for
   * --detect-local-mode=NodeCIDR (node-cidr.ts); undefined until then.
   */
  readonly nodePodCIDRs?: readonly string[];
  readonly nodePortAddresses: readonly string[];
  readonly localhostNodePorts: boolean;
  readonly masqueradeAll: boolean;
  readonly masqueradeBit: number;
  readonly minSyncPeriodMs: number;
  readonly syncPeriodMs: number;
  /** e.g. `iptables-legacy`: restore/save and ip6tables names are derived from it. */
  readonly iptablesBinary: string;
  /**
   * svcplane's --iptables-full-sync-mode: how full syncs write (docs/performance.md). `auto`:
   * `--noflush` in chunks on nf_tables, kube-proxy's single `--noflush` on legacy.
   */
  readonly iptablesFullSyncMode: FullSyncMode;
  readonly ipFamilies: readonly ('IPv4' | 'IPv6')[];
  readonly healthzBindAddress: string;
  readonly metricsBindAddress: string;
  /**
   * --service-node-port-range (kube-apiserver's flag; config `serviceNodePortRange`), with the
   * healthz and metrics ports reserved: what a Service's node ports may be.
   */
  readonly serviceLimits: ServiceLimits;
  readonly verbosity: number;
  /** --ipvs-… flags (used with --proxy-mode ipvs). */
  readonly ipvs: IpvsOptions;
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
    .option(
      '--iptables-full-sync-mode <mode>',
      "svcplane: auto (chunked on nf_tables, noflush on legacy), chunked, noflush (kube-proxy's way), or whole-table (fastest; may lose a rule another agent adds during the write)",
      'auto',
    )
    .option('--ip-families <list>', 'IPv4, IPv6 or both (default both)', parseList)
    .option('--healthz-bind-address <ip:port>', 'health server address', '0.0.0.0:10256')
    .option('--metrics-bind-address <ip:port>', 'metrics server address', '127.0.0.1:10249')
    .option(
      '--service-node-port-range <first-last>',
      "node ports Services may use (kube-apiserver's flag); others, and svcplane's own ports, are refused",
      formatPortRange(DEFAULT_NODE_PORT_RANGE),
    )
    .option('-v, --v <level>', 'log verbosity', parseIntInRange(0, 10), 0);
  boolOption(cmd, 'masquerade-all', 'SNAT all traffic sent via Service cluster IPs', false);
  boolOption(cmd, 'iptables-localhost-nodeports', 'allow NodePorts on 127.0.0.1 (IPv4)', true);
  addIpvsOptions(cmd);
  // --config is read before the action runs, so every command built here gets it the same way.
  cmd.hook('preAction', async (hooked) => {
    await applyConfigFile(hooked);
  });
  return cmd;
}

/**
 * Turns commander's raw values into validated ProxyOptions; throws with the flag and the reason.
 * `companions: false` skips the checks that a --config file may still satisfy (the detect-local
 * modes' companion flags), for the flag check that runs before the file is merged.
 */
export function resolveProxyOptions(raw: Raw, opts: { companions?: boolean } = {}): ProxyOptions {
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
  const bridgeInterface = str('podBridgeInterface');
  const interfaceNamePrefix = str('podInterfaceNamePrefix');
  if (opts.companions !== false) {
    // kube-proxy refuses these modes without their interface (validation.go); never fall back to none.
    if (detect === 'BridgeInterface' && !bridgeInterface) {
      throw new Error('--detect-local-mode=BridgeInterface requires --pod-bridge-interface');
    }
    if (detect === 'InterfaceNamePrefix' && !interfaceNamePrefix) {
      throw new Error('--detect-local-mode=InterfaceNamePrefix requires --pod-interface-name-prefix');
    }
  }
  if (bridgeInterface !== undefined && !isSafeInterfaceName(bridgeInterface)) {
    throw new Error(`--pod-bridge-interface: "${bridgeInterface}" is not an interface name`);
  }
  if (interfaceNamePrefix !== undefined && !isSafeInterfaceName(interfaceNamePrefix)) {
    throw new Error(`--pod-interface-name-prefix: "${interfaceNamePrefix}" is not an interface name prefix`);
  }
  const families = list('ipFamilies');
  for (const f of families) {
    if (f !== 'IPv4' && f !== 'IPv6') throw new Error(`--ip-families: "${f}" is not IPv4 or IPv6`);
  }
  const binary = str('iptablesBinary') ?? 'iptables';
  if (!/^[A-Za-z0-9_./-]+$/.test(binary) || !binary.includes('iptables')) {
    throw new Error(`--iptables-binary: "${binary}" must name an iptables command`);
  }
  const fullSyncMode = str('iptablesFullSyncMode') ?? 'auto';
  if (!isFullSyncMode(fullSyncMode)) {
    throw new Error(
      `--iptables-full-sync-mode: "${fullSyncMode}" is not auto, chunked, noflush or whole-table`,
    );
  }
  const hostnameOverride = (str('hostnameOverride') ?? hostname()).trim().toLowerCase();
  const badName = nodeNameProblem(hostnameOverride);
  if (badName) throw new Error(`--hostname-override: ${badName}`);
  const minSyncPeriodMs = num('iptablesMinSyncPeriod', 1000);
  const syncPeriodMs = num('iptablesSyncPeriod', 30_000);
  if (syncPeriodMs <= 0) throw new Error('--iptables-sync-period: must be greater than 0');
  if (minSyncPeriodMs > syncPeriodMs) {
    throw new Error('--iptables-sync-period: must be greater than or equal to --iptables-min-sync-period');
  }
  const ipvs = resolveIpvsOptions(raw);
  const healthzBindAddress = str('healthzBindAddress') ?? '0.0.0.0:10256';
  const metricsBindAddress = str('metricsBindAddress') ?? '127.0.0.1:10249';
  const nodePortRange = parsePortRange(
    str('serviceNodePortRange') ?? formatPortRange(DEFAULT_NODE_PORT_RANGE),
  );
  if ('error' in nodePortRange) throw new Error(`--service-node-port-range: ${nodePortRange.error}`);
  const portOf = (hostPort: string): number => Number(/:(\d+)$/.exec(hostPort)?.[1] ?? 0);
  const serviceLimitsValue = serviceLimits(nodePortRange, [
    { port: portOf(healthzBindAddress), what: "svcplane's healthz port (--healthz-bind-address)" },
    { port: portOf(metricsBindAddress), what: "svcplane's metrics port (--metrics-bind-address)" },
  ]);
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
    bridgeInterface,
    interfaceNamePrefix,
    nodePortAddresses: npa,
    localhostNodePorts: bool('iptablesLocalhostNodeports', true),
    masqueradeAll: bool('masqueradeAll', false),
    masqueradeBit: num('iptablesMasqueradeBit', 14),
    // In IPVS mode the --ipvs-… periods apply when given (kube-proxy reads ipvs.syncPeriod there).
    minSyncPeriodMs: mode === 'ipvs' ? (ipvs.minSyncPeriodMs ?? minSyncPeriodMs) : minSyncPeriodMs,
    syncPeriodMs: mode === 'ipvs' ? (ipvs.syncPeriodMs ?? syncPeriodMs) : syncPeriodMs,
    ipvs,
    iptablesBinary: binary,
    iptablesFullSyncMode: fullSyncMode,
    ipFamilies: families.length > 0 ? (families as ('IPv4' | 'IPv6')[]) : ['IPv4', 'IPv6'],
    healthzBindAddress,
    metricsBindAddress,
    serviceLimits: serviceLimitsValue,
    verbosity: num('v', 0),
  };
}

/** Why `name` is not a valid node name (a lowercase DNS-1123 subdomain), or undefined. */
export function nodeNameProblem(name: string): string | undefined {
  return /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/.test(name)
    ? undefined
    : `"${name}" is not a valid node name (lowercase DNS subdomain)`;
}

// ---------------------------------------------------------------------------------------------
// --config FILE (KubeProxyConfiguration)
// ---------------------------------------------------------------------------------------------

/** One flag that has a KubeProxyConfiguration field: how values move between the two. */
interface ConfigFlag {
  /** commander's attribute name of the flag (`--iptables-sync-period` → `iptablesSyncPeriod`). */
  readonly key: string;
  /** The field's path in the file, for messages. */
  readonly field: string;
  /** The flag value the (merged) configuration stands for; undefined leaves the flag unset. */
  readonly fromConfig: (c: ProxyConfig) => unknown;
  /** Puts a flag value into the overrides mergeConfig applies over the file. */
  readonly toOverrides: (o: ProxyConfigOverrides, value: unknown) => void;
}

const asString = (v: unknown): string => String(v);
const asStrings = (v: unknown): string[] => (Array.isArray(v) ? v.map(String) : []);
const asNumber = (v: unknown): number => Number(v);
const asBool = (v: unknown): boolean => v === true;
const orUndefined = (s: string): string | undefined => (s === '' ? undefined : s);

/**
 * Flags with a configuration field. The `ipvs*` flags apply only to commands that define them
 * (kube-proxy's --ipvs-… names; durations in ms like the iptables ones).
 */
const CONFIG_FLAGS: readonly ConfigFlag[] = [
  {
    key: 'bindAddress',
    field: 'bindAddress',
    // 0.0.0.0 / :: mean "detect the node IP", which is what an unset --bind-address does.
    fromConfig: (c) => (c.bindAddress === '0.0.0.0' || c.bindAddress === '::' ? undefined : c.bindAddress),
    toOverrides: (o, v) => (o.bindAddress = asString(v)),
  },
  {
    key: 'clusterCidr',
    field: 'clusterCIDR',
    fromConfig: (c) => [...c.clusterCIDRs],
    toOverrides: (o, v) => (o.clusterCIDRs = asStrings(v)),
  },
  {
    key: 'hostnameOverride',
    field: 'hostnameOverride',
    fromConfig: (c) => orUndefined(c.hostnameOverride),
    toOverrides: (o, v) => (o.hostnameOverride = asString(v).trim().toLowerCase()),
  },
  {
    key: 'proxyMode',
    field: 'mode',
    fromConfig: (c) => c.mode,
    toOverrides: (o, v) => (o.mode = asString(v) as ProxyMode),
  },
  {
    key: 'healthzBindAddress',
    field: 'healthzBindAddress',
    fromConfig: (c) => c.healthzBindAddress,
    toOverrides: (o, v) => (o.healthzBindAddress = asString(v)),
  },
  {
    key: 'metricsBindAddress',
    field: 'metricsBindAddress',
    fromConfig: (c) => c.metricsBindAddress,
    toOverrides: (o, v) => (o.metricsBindAddress = asString(v)),
  },
  {
    key: 'serviceNodePortRange',
    field: 'serviceNodePortRange',
    fromConfig: (c) => c.serviceNodePortRange,
    toOverrides: (o, v) => (o.serviceNodePortRange = asString(v)),
  },
  {
    key: 'nodeportAddresses',
    field: 'nodePortAddresses',
    fromConfig: (c) => [...c.nodePortAddresses],
    toOverrides: (o, v) => (o.nodePortAddresses = asStrings(v)),
  },
  {
    key: 'detectLocalMode',
    field: 'detectLocalMode',
    fromConfig: (c) => c.detectLocalMode,
    toOverrides: (o, v) => (o.detectLocalMode = asString(v) as ProxyConfig['detectLocalMode']),
  },
  {
    key: 'podBridgeInterface',
    field: 'detectLocal.bridgeInterface',
    fromConfig: (c) => orUndefined(c.detectLocal.bridgeInterface),
    toOverrides: (o, v) => (o.detectLocal = { ...o.detectLocal, bridgeInterface: asString(v) }),
  },
  {
    key: 'podInterfaceNamePrefix',
    field: 'detectLocal.interfaceNamePrefix',
    fromConfig: (c) => orUndefined(c.detectLocal.interfaceNamePrefix),
    toOverrides: (o, v) => (o.detectLocal = { ...o.detectLocal, interfaceNamePrefix: asString(v) }),
  },
  {
    key: 'masqueradeAll',
    field: 'iptables.masqueradeAll',
    fromConfig: (c) => c.iptables.masqueradeAll,
    toOverrides: (o, v) => (o.iptables = { ...o.iptables, masqueradeAll: asBool(v) }),
  },
  {
    key: 'iptablesMasqueradeBit',
    field: 'iptables.masqueradeBit',
    fromConfig: (c) => c.iptables.masqueradeBit,
    toOverrides: (o, v) => (o.iptables = { ...o.iptables, masqueradeBit: asNumber(v) }),
  },
  {
    key: 'iptablesMinSyncPeriod',
    field: 'iptables.minSyncPeriod',
    fromConfig: (c) => c.iptables.minSyncPeriodMs,
    toOverrides: (o, v) => (o.iptables = { ...o.iptables, minSyncPeriodMs: asNumber(v) }),
  },
  {
    key: 'iptablesSyncPeriod',
    field: 'iptables.syncPeriod',
    fromConfig: (c) => c.iptables.syncPeriodMs,
    toOverrides: (o, v) => (o.iptables = { ...o.iptables, syncPeriodMs: asNumber(v) }),
  },
  {
    key: 'iptablesLocalhostNodeports',
    field: 'iptables.localhostNodePorts',
    fromConfig: (c) => c.iptables.localhostNodePorts,
    toOverrides: (o, v) => (o.iptables = { ...o.iptables, localhostNodePorts: asBool(v) }),
  },
  {
    key: 'ipvsScheduler',
    field: 'ipvs.scheduler',
    fromConfig: (c) => c.ipvs.scheduler,
    toOverrides: (o, v) => (o.ipvs = { ...o.ipvs, scheduler: asString(v) }),
  },
  {
    key: 'ipvsSyncPeriod',
    field: 'ipvs.syncPeriod',
    fromConfig: (c) => c.ipvs.syncPeriodMs,
    toOverrides: (o, v) => (o.ipvs = { ...o.ipvs, syncPeriodMs: asNumber(v) }),
  },
  {
    key: 'ipvsMinSyncPeriod',
    field: 'ipvs.minSyncPeriod',
    fromConfig: (c) => c.ipvs.minSyncPeriodMs,
    toOverrides: (o, v) => (o.ipvs = { ...o.ipvs, minSyncPeriodMs: asNumber(v) }),
  },
  {
    key: 'ipvsStrictArp',
    field: 'ipvs.strictARP',
    fromConfig: (c) => c.ipvs.strictARP,
    toOverrides: (o, v) => (o.ipvs = { ...o.ipvs, strictARP: asBool(v) }),
  },
  {
    key: 'ipvsExcludeCidrs',
    field: 'ipvs.excludeCIDRs',
    fromConfig: (c) => [...c.ipvs.excludeCIDRs],
    toOverrides: (o, v) => (o.ipvs = { ...o.ipvs, excludeCIDRs: asStrings(v) }),
  },
  {
    key: 'ipvsTcpTimeout',
    field: 'ipvs.tcpTimeout',
    fromConfig: (c) => c.ipvs.tcpTimeoutMs,
    toOverrides: (o, v) => (o.ipvs = { ...o.ipvs, tcpTimeoutMs: asNumber(v) }),
  },
  {
    key: 'ipvsTcpfinTimeout',
    field: 'ipvs.tcpFinTimeout',
    fromConfig: (c) => c.ipvs.tcpFinTimeoutMs,
    toOverrides: (o, v) => (o.ipvs = { ...o.ipvs, tcpFinTimeoutMs: asNumber(v) }),
  },
  {
    key: 'ipvsUdpTimeout',
    field: 'ipvs.udpTimeout',
    fromConfig: (c) => c.ipvs.udpTimeoutMs,
    toOverrides: (o, v) => (o.ipvs = { ...o.ipvs, udpTimeoutMs: asNumber(v) }),
  },
  {
    key: 'v',
    field: 'logging.verbosity',
    fromConfig: (c) => c.logging.verbosity,
    toOverrides: (o, v) => (o.logging = { verbosity: asNumber(v) }),
  },
  {
    key: 'kubeconfig',
    field: 'clientConnection.kubeconfig',
    fromConfig: (c) => orUndefined(c.clientConnection.kubeconfig),
    toOverrides: (o, v) => (o.clientConnection = { kubeconfig: asString(v) }),
  },
];

/**
 * kube-proxy's precedence, pure: the file's values apply, and every flag the user actually passed
 * (`isExplicit`) overrides its field. Returns the flag values to set (attribute → value, undefined =
 * unset) and the merged configuration. Throws ConfigError when the combination is invalid.
 */
export function mergeFlagsWithConfig(
  file: ProxyConfig,
  flags: Readonly<Record<string, unknown>>,
  isExplicit: (key: string) => boolean,
  has: (key: string) => boolean = () => true,
): { config: ProxyConfig; values: Map<string, unknown> } {
  const overrides: ProxyConfigOverrides = {};
  for (const f of CONFIG_FLAGS) {
    if (has(f.key) && isExplicit(f.key) && flags[f.key] !== undefined) f.toOverrides(overrides, flags[f.key]);
  }
  const config = mergeConfig(file, overrides);
  const values = new Map<string, unknown>();
  for (const f of CONFIG_FLAGS) {
    if (has(f.key) && !isExplicit(f.key)) values.set(f.key, f.fromConfig(config));
  }
  return { config, values };
}

/**
 * `--config FILE`: reads the KubeProxyConfiguration and sets every flag the user did not pass to the
 * file's value (value source 'config'), so the command's action sees the merged options. Unknown and
 * unsupported fields are logged as warnings (and returned); invalid values throw ConfigError naming
 * the field and the reason.
 */
export async function applyConfigFile(cmd: Command): Promise<readonly ConfigWarning[]> {
  const raw = cmd.opts<Raw>();
  const path = typeof raw.config === 'string' ? raw.config : undefined;
  if (path === undefined || path === '') return [];
  // Flags first, so a bad flag is reported under its own name (the file may supply companions).
  resolveProxyOptions(raw, { companions: false });
  const parsed = await loadKubeProxyConfigFile(path);
  for (const w of parsed.warnings) {
    log.warn('configuration field ignored', { file: path, field: w.field, reason: w.message });
  }
  const isExplicit = (key: string): boolean => cmd.getOptionValueSource(key) === 'cli';
  const defined = new Set(cmd.options.map((o) => o.attributeName()));
  const { config, values } = mergeFlagsWithConfig(parsed.config, raw, isExplicit, (k) => defined.has(k));
  if (!isExplicit('hostnameOverride') && config.hostnameOverride !== '') {
    const bad = nodeNameProblem(config.hostnameOverride);
    if (bad) throw new ConfigError(path, [{ field: 'hostnameOverride', reason: bad }]);
  }
  for (const [key, value] of values) cmd.setOptionValueWithSource(key, value, 'config');
  return parsed.warnings;
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
