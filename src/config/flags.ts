import { IPVS_SCHEDULERS } from './kube-proxy-config.js';

/**
 * Every command-line flag of the daemon and its one-shot relatives (`run`, `sync`, `diff`, `explain`),
 * as data: kube-proxy's 47 flags, its logging flags, and svcplane's own. The parser
 * (command-line.ts), the resolution into ProxyOptions (options.ts), `--help` and docs/flags.md are all
 * built from this table, so they cannot disagree.
 */

/** How a flag's text becomes a value (pflag's types, as kube-proxy declares them). */
export type FlagKind =
  /** any text */
  | 'string'
  /** bare `--flag` = true; `--flag=false` */
  | 'bool'
  /** integer (Go's Int32Var: decimal, 0x…, 0o…) */
  | 'int'
  /** floating point */
  | 'float'
  /** Go duration (`500ms`, `1m30s`), held in milliseconds */
  | 'duration'
  /** comma-separated; repeating the flag appends */
  | 'list'
  /** `key=bool,key=bool` */
  | 'map';

/** Where a flag comes from: kube-proxy's own flags, its logging flags, or svcplane's additions. */
export type FlagOrigin = 'kube-proxy' | 'logging' | 'svcplane';

/**
 * What svcplane does with the flag:
 * - `honoured`: as kube-proxy does;
 * - `noop`: accepted; kube-proxy's behaviour is what svcplane always does (nothing to warn about);
 * - `ignored`: accepted, not implemented: a value asking for something gets one warning naming it.
 */
export type FlagSupport = 'honoured' | 'noop' | 'ignored';

export interface FlagSpec {
  /** Long name without dashes, e.g. `iptables-sync-period`. */
  readonly name: string;
  /** One-letter alias (`v`). */
  readonly short?: string;
  readonly kind: FlagKind;
  /** Placeholder in help, e.g. `duration`. */
  readonly value?: string;
  /** Default as shown in help ('' = none). */
  readonly default: string;
  readonly help: string;
  readonly origin: FlagOrigin;
  /** KubeProxyConfiguration field (v1alpha1 path) this flag sets. */
  readonly field?: string;
  /**
   * kube-proxy's precedence with `--config`: `file` = the flag is ignored when a configuration file
   * is given (kube-proxy replaces its whole flag-built configuration with the file); `flag` = it
   * still applies (hostname override, logging flags, --master, the one-shot actions, svcplane's own).
   */
  readonly withConfig: 'file' | 'flag';
  readonly support: FlagSupport;
  /** For `noop`/`ignored`: why, in words an operator reads in the warning and the reference. */
  readonly note?: string;
  readonly deprecated?: string;
  /** Integer bounds (inclusive). */
  readonly min?: number;
  readonly max?: number;
}

/** commander-style attribute name: `iptables-sync-period` → `iptablesSyncPeriod`. */
export function attributeName(flag: string): string {
  return flag.replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase());
}

const kp = (
  s: Omit<FlagSpec, 'origin' | 'support' | 'withConfig'> & Partial<Pick<FlagSpec, 'support' | 'withConfig'>>,
): FlagSpec => ({ origin: 'kube-proxy', support: 'honoured', withConfig: 'file', ...s });

/** kube-proxy's flags (cmd/kube-proxy/app/options.go, 1.35), in its order. */
export const KUBE_PROXY_FLAGS: readonly FlagSpec[] = [
  kp({
    name: 'config',
    kind: 'string',
    value: 'file',
    default: '',
    help: 'KubeProxyConfiguration file (YAML or JSON). With it, kube-proxy ignores most other flags: see "with --config"',
    withConfig: 'flag',
  }),
  kp({
    name: 'write-config-to',
    kind: 'string',
    value: 'file',
    default: '',
    help: 'write the resolved configuration (defaults, flags or --config) as a KubeProxyConfiguration to this file and exit',
    withConfig: 'flag',
  }),
  kp({
    name: 'cleanup',
    kind: 'bool',
    default: 'false',
    help: 'remove the rules of every mode (iptables, IPVS) that svcplane or kube-proxy created, then exit',
    withConfig: 'flag',
  }),
  kp({
    name: 'feature-gates',
    kind: 'map',
    value: 'gate=bool,…',
    default: '',
    help: "kube-proxy's feature gates",
    field: 'featureGates',
    support: 'ignored',
    note: 'svcplane has no feature gates; each gate set is named in a warning',
  }),
  kp({
    name: 'kubeconfig',
    kind: 'string',
    value: 'file',
    default: '',
    help: 'kubeconfig of the cluster (default: in-cluster service account)',
    field: 'clientConnection.kubeconfig',
  }),
  kp({
    name: 'master',
    kind: 'string',
    value: 'url',
    default: '',
    help: "API server URL; overrides the kubeconfig's server",
    withConfig: 'flag',
  }),
  kp({
    name: 'kube-api-content-type',
    kind: 'string',
    value: 'type',
    default: 'application/vnd.kubernetes.protobuf',
    help: 'content type of requests to the API server',
    field: 'clientConnection.contentType',
    support: 'noop',
    note: 'svcplane always talks JSON to the API server; nothing else depends on the wire format',
  }),
  kp({
    name: 'kube-api-burst',
    kind: 'int',
    value: 'int',
    default: '10',
    help: 'client-side request burst towards the API server',
    field: 'clientConnection.burst',
    support: 'noop',
    note: 'svcplane makes one list and one watch per resource, far below any limit; it does not rate-limit',
    min: 0,
  }),
  kp({
    name: 'kube-api-qps',
    kind: 'float',
    value: 'float',
    default: '5',
    help: 'client-side requests per second towards the API server',
    field: 'clientConnection.qps',
    support: 'noop',
    note: 'svcplane makes one list and one watch per resource, far below any limit; it does not rate-limit',
  }),
  kp({
    name: 'hostname-override',
    kind: 'string',
    value: 'name',
    default: '',
    help: "this node's name (default: the hostname); overrides the file's hostnameOverride",
    field: 'hostnameOverride',
    withConfig: 'flag',
  }),
  kp({
    name: 'bind-address',
    kind: 'string',
    value: 'ip',
    default: '0.0.0.0',
    help: "the node's primary IP (0.0.0.0 or :: mean: take it from the Node object); no socket is bound to it",
    field: 'bindAddress',
  }),
  kp({
    name: 'healthz-bind-address',
    kind: 'string',
    value: 'ip:port',
    default: '0.0.0.0:10256',
    help: 'address of the /healthz and /livez server; empty disables it',
    field: 'healthzBindAddress',
  }),
  kp({
    name: 'metrics-bind-address',
    kind: 'string',
    value: 'ip:port',
    default: '127.0.0.1:10249',
    help: 'address of the /metrics server (0.0.0.0:10249 or [::]:10249 for all interfaces); empty disables it',
    field: 'metricsBindAddress',
  }),
  kp({
    name: 'bind-address-hard-fail',
    kind: 'bool',
    default: 'false',
    help: 'exit when the healthz or metrics server cannot bind its port (default: log and retry every 5 s)',
    field: 'bindAddressHardFail',
  }),
  kp({
    name: 'profiling',
    kind: 'bool',
    default: 'false',
    help: 'profiling handlers under /debug/pprof on the metrics server',
    field: 'enableProfiling',
    support: 'ignored',
    note: 'svcplane has no pprof handlers (use node --cpu-prof on a test machine)',
  }),
  kp({
    name: 'show-hidden-metrics-for-version',
    kind: 'string',
    value: 'version',
    default: '',
    help: 'show metrics hidden since this version',
    field: 'showHiddenMetricsForVersion',
    support: 'noop',
    note: 'svcplane hides no metrics',
  }),
  kp({
    name: 'init-only',
    kind: 'bool',
    default: 'false',
    help: 'do what needs full root privileges (conntrack sysctls, the mode’s kernel settings) and exit',
    withConfig: 'flag',
  }),
  kp({
    name: 'proxy-mode',
    kind: 'string',
    value: 'mode',
    default: 'iptables',
    help: "iptables, ipvs or nftables (kube-proxy's nftables layout; no localhost NodePorts)",
    field: 'mode',
  }),
  kp({
    name: 'iptables-masquerade-bit',
    kind: 'int',
    value: 'bit',
    default: '14',
    help: 'fwmark bit marking packets that need SNAT (0-31)',
    field: 'iptables.masqueradeBit',
    min: 0,
    max: 31,
  }),
  kp({
    name: 'masquerade-all',
    kind: 'bool',
    default: 'false',
    help: 'SNAT all traffic sent to Service cluster IPs',
    field: 'iptables.masqueradeAll',
  }),
  kp({
    name: 'iptables-localhost-nodeports',
    kind: 'bool',
    default: 'true',
    help: 'allow NodePorts on 127.0.0.1 (iptables mode, IPv4 only)',
    field: 'iptables.localhostNodePorts',
  }),
  kp({
    name: 'iptables-sync-period',
    kind: 'duration',
    value: 'duration',
    default: '30s',
    help: 'longest interval between full resyncs (> 0)',
    field: 'iptables.syncPeriod',
  }),
  kp({
    name: 'iptables-min-sync-period',
    kind: 'duration',
    value: 'duration',
    default: '1s',
    help: 'shortest interval between syncs; 0 syncs on every change',
    field: 'iptables.minSyncPeriod',
  }),
  kp({
    name: 'ipvs-sync-period',
    kind: 'duration',
    value: 'duration',
    default: '30s',
    help: 'IPVS mode: longest interval between full resyncs (> 0)',
    field: 'ipvs.syncPeriod',
  }),
  kp({
    name: 'ipvs-min-sync-period',
    kind: 'duration',
    value: 'duration',
    default: '0s',
    help: 'IPVS mode: shortest interval between syncs',
    field: 'ipvs.minSyncPeriod',
  }),
  kp({
    name: 'ipvs-scheduler',
    kind: 'string',
    value: 'name',
    default: 'rr',
    help: `IPVS scheduler: ${IPVS_SCHEDULERS.join(', ')}`,
    field: 'ipvs.scheduler',
  }),
  kp({
    name: 'ipvs-exclude-cidrs',
    kind: 'list',
    value: 'cidrs',
    default: '',
    help: 'IPVS virtual servers in these CIDRs are never removed',
    field: 'ipvs.excludeCIDRs',
  }),
  kp({
    name: 'ipvs-strict-arp',
    kind: 'bool',
    default: 'false',
    help: 'set arp_ignore=1 and arp_announce=2 so kube-ipvs0 addresses are not answered for',
    field: 'ipvs.strictARP',
  }),
  kp({
    name: 'ipvs-tcp-timeout',
    kind: 'duration',
    value: 'duration',
    default: '0s',
    help: 'IPVS idle TCP session timeout (0 leaves the kernel value)',
    field: 'ipvs.tcpTimeout',
  }),
  kp({
    name: 'ipvs-tcpfin-timeout',
    kind: 'duration',
    value: 'duration',
    default: '0s',
    help: 'IPVS TCP timeout after a FIN (0 leaves the kernel value)',
    field: 'ipvs.tcpFinTimeout',
  }),
  kp({
    name: 'ipvs-udp-timeout',
    kind: 'duration',
    value: 'duration',
    default: '0s',
    help: 'IPVS UDP timeout (0 leaves the kernel value)',
    field: 'ipvs.udpTimeout',
  }),
  kp({
    name: 'detect-local-mode',
    kind: 'string',
    value: 'mode',
    default: 'ClusterCIDR',
    help: 'how traffic from local pods is told apart: ClusterCIDR, NodeCIDR, BridgeInterface, InterfaceNamePrefix',
    field: 'detectLocalMode',
  }),
  kp({
    name: 'pod-bridge-interface',
    kind: 'string',
    value: 'name',
    default: '',
    help: 'bridge of the pods, for --detect-local-mode=BridgeInterface',
    field: 'detectLocal.bridgeInterface',
  }),
  kp({
    name: 'pod-interface-name-prefix',
    kind: 'string',
    value: 'prefix',
    default: '',
    help: "prefix of the pods' interfaces, for --detect-local-mode=InterfaceNamePrefix",
    field: 'detectLocal.interfaceNamePrefix',
  }),
  kp({
    name: 'cluster-cidr',
    kind: 'list',
    value: 'cidrs',
    default: '',
    help: 'pod CIDRs (one per family), for --detect-local-mode=ClusterCIDR',
    field: 'clusterCIDR',
  }),
  kp({
    name: 'nodeport-addresses',
    kind: 'list',
    value: 'cidrs',
    default: '',
    help: "CIDRs of the node addresses NodePorts answer on, or 'primary'; default all local addresses",
    field: 'nodePortAddresses',
  }),
  kp({
    name: 'oom-score-adj',
    kind: 'int',
    value: 'int',
    default: '-999',
    help: "the process's oom_score_adj (-1000..1000)",
    field: 'oomScoreAdj',
    min: -1000,
    max: 1000,
  }),
  kp({
    name: 'conntrack-max-per-core',
    kind: 'int',
    value: 'int',
    default: '32768',
    help: 'nf_conntrack_max = this × CPUs (at least --conntrack-min, at most 1048576); 0 leaves it as is',
    field: 'conntrack.maxPerCore',
    min: 0,
  }),
  kp({
    name: 'conntrack-min',
    kind: 'int',
    value: 'int',
    default: '131072',
    help: 'lower bound of nf_conntrack_max',
    field: 'conntrack.min',
    min: 0,
  }),
  kp({
    name: 'conntrack-tcp-timeout-established',
    kind: 'duration',
    value: 'duration',
    default: '24h0m0s',
    help: 'nf_conntrack_tcp_timeout_established (0 leaves it as is)',
    field: 'conntrack.tcpEstablishedTimeout',
  }),
  kp({
    name: 'conntrack-tcp-timeout-close-wait',
    kind: 'duration',
    value: 'duration',
    default: '1h0m0s',
    help: 'nf_conntrack_tcp_timeout_close_wait (0 leaves it as is)',
    field: 'conntrack.tcpCloseWaitTimeout',
  }),
  kp({
    name: 'conntrack-tcp-be-liberal',
    kind: 'bool',
    default: 'false',
    help: 'set nf_conntrack_tcp_be_liberal=1 (out-of-window TCP packets are not INVALID)',
    field: 'conntrack.tcpBeLiberal',
  }),
  kp({
    name: 'conntrack-udp-timeout',
    kind: 'duration',
    value: 'duration',
    default: '0s',
    help: 'nf_conntrack_udp_timeout, for unreplied UDP flows (0 leaves it as is)',
    field: 'conntrack.udpTimeout',
  }),
  kp({
    name: 'conntrack-udp-timeout-stream',
    kind: 'duration',
    value: 'duration',
    default: '0s',
    help: 'nf_conntrack_udp_timeout_stream, for assured UDP flows (0 leaves it as is)',
    field: 'conntrack.udpStreamTimeout',
  }),
  kp({
    name: 'config-sync-period',
    kind: 'duration',
    value: 'duration',
    default: '15m0s',
    help: "how often kube-proxy's informers re-deliver their cache (> 0)",
    field: 'configSyncPeriod',
    support: 'noop',
    note: "svcplane's informers keep one watch open; its periodic full resync (--iptables-sync-period) re-applies the whole state",
  }),
  kp({
    name: 'healthz-port',
    kind: 'int',
    value: 'port',
    default: '10256',
    help: 'port of the healthz server; 0 disables it',
    deprecated: 'use --healthz-bind-address',
    min: 0,
    max: 65535,
  }),
  kp({
    name: 'metrics-port',
    kind: 'int',
    value: 'port',
    default: '10249',
    help: 'port of the metrics server; 0 disables it',
    deprecated: 'use --metrics-bind-address',
    min: 0,
    max: 65535,
  }),
];

const lg = (s: Omit<FlagSpec, 'origin' | 'withConfig' | 'support'> & Partial<FlagSpec>): FlagSpec => ({
  origin: 'logging',
  withConfig: 'flag',
  support: 'honoured',
  ...s,
});

/** kube-proxy's logging flags (k8s.io/component-base/logs/api/v1): they apply even with --config. */
export const LOGGING_FLAGS: readonly FlagSpec[] = [
  lg({
    name: 'logging-format',
    kind: 'string',
    value: 'format',
    default: 'text',
    help: 'text (one klog-style line per message) or json (one JSON object per line)',
    field: 'logging.format',
  }),
  lg({
    name: 'log-flush-frequency',
    kind: 'duration',
    value: 'duration',
    default: '5s',
    help: 'longest time between log flushes',
    field: 'logging.flushFrequency',
    support: 'noop',
    note: 'svcplane writes every line at once',
  }),
  lg({
    name: 'v',
    short: 'v',
    kind: 'int',
    value: 'level',
    default: '0',
    help: 'log verbosity: 0 start-up, changes and problems; 2 every sync; 4 details and stack traces; 5+ debugging',
    field: 'logging.verbosity',
    min: 0,
    max: 2147483647,
  }),
  lg({
    name: 'vmodule',
    kind: 'list',
    value: 'pattern=N,…',
    default: '',
    help: 'per-file verbosity',
    field: 'logging.vmodule',
    support: 'ignored',
    note: 'svcplane has one verbosity for all its modules (use -v)',
  }),
  lg({
    name: 'log-text-split-stream',
    kind: 'bool',
    default: 'false',
    help: 'text format: info lines to stdout, warnings and errors to stderr (default: all to stderr)',
    field: 'logging.options.text.splitStream',
  }),
  lg({
    name: 'log-text-info-buffer-size',
    kind: 'string',
    value: 'quantity',
    default: '0',
    help: 'text format with split streams: bytes of info lines to buffer',
    field: 'logging.options.text.infoBufferSize',
    support: 'noop',
    note: 'svcplane writes every line at once',
  }),
  lg({
    name: 'log-json-split-stream',
    kind: 'bool',
    default: 'false',
    help: 'json format: info lines to stdout, warnings and errors to stderr (default: all to stderr)',
    field: 'logging.options.json.splitStream',
  }),
  lg({
    name: 'log-json-info-buffer-size',
    kind: 'string',
    value: 'quantity',
    default: '0',
    help: 'json format with split streams: bytes of info lines to buffer',
    field: 'logging.options.json.infoBufferSize',
    support: 'noop',
    note: 'svcplane writes every line at once',
  }),
];

const sp = (s: Omit<FlagSpec, 'origin' | 'withConfig' | 'support'> & Partial<FlagSpec>): FlagSpec => ({
  origin: 'svcplane',
  withConfig: 'flag',
  support: 'honoured',
  ...s,
});

/** svcplane's own flags (no kube-proxy counterpart); they apply with --config too. */
export const SVCPLANE_FLAGS: readonly FlagSpec[] = [
  sp({
    name: 'manifests',
    kind: 'string',
    value: 'path',
    default: '',
    help: 'read Services, EndpointSlices, Endpoints and Nodes from a file or directory instead of the API',
  }),
  sp({
    name: 'iptables-binary',
    kind: 'string',
    value: 'name',
    default: 'iptables',
    help: 'iptables command (e.g. iptables-legacy); the restore/save and ip6tables names derive from it',
  }),
  sp({
    name: 'nft-binary',
    kind: 'string',
    value: 'path',
    default: 'nft',
    help: 'nft command for nftables mode and --network-policy (e.g. .nft/bin/nft from scripts/nft-install.sh: nft 1.1.3, faster partial syncs; see docs/performance.md)',
  }),
  sp({
    name: 'iptables-full-sync-mode',
    kind: 'string',
    value: 'mode',
    default: 'auto',
    help: "how full syncs write: auto (chunked on nf_tables, noflush on legacy), chunked, noflush (kube-proxy's way), or whole-table (fastest; may lose a rule another agent adds during the write)",
  }),
  sp({
    name: 'ip-families',
    kind: 'list',
    value: 'families',
    default: 'IPv4,IPv6',
    help: 'IP families to program (kube-proxy programs every family its iptables supports)',
  }),
  sp({
    name: 'service-node-port-range',
    kind: 'string',
    value: 'first-last',
    default: '30000-32767',
    help: "node ports Services may use (kube-apiserver's flag); others, and svcplane's own ports, are refused",
    field: 'serviceNodePortRange',
  }),
  sp({
    name: 'network-policy',
    kind: 'bool',
    default: 'false',
    help: 'enforce NetworkPolicy for the pods of this node in nftables table inet svcplane-netpol (off: leave it to the network plugin)',
    field: 'networkPolicy',
  }),
  sp({
    name: 'ipvs-scheduler-flags',
    kind: 'list',
    value: 'flags',
    default: '',
    help: 'IPVS scheduler flags for sh/mh: flag-1 (fallback), flag-2 (port); default mh-port for mh, as kube-proxy',
  }),
];

/** Every flag of the daemon form, in reference order. */
export const PROXY_FLAGS: readonly FlagSpec[] = [...KUBE_PROXY_FLAGS, ...LOGGING_FLAGS, ...SVCPLANE_FLAGS];

/** Flags of the `svcplane [flags]` form only (not of run/sync/diff/explain). */
export const TOP_LEVEL_FLAGS: readonly FlagSpec[] = [
  sp({ name: 'help', short: 'h', kind: 'bool', default: 'false', help: 'print this help and exit' }),
  sp({
    name: 'version',
    kind: 'bool',
    default: 'false',
    help: "print svcplane's version and exit",
  }),
];

/** The spec of a flag by long name. */
export function flagSpec(name: string, specs: readonly FlagSpec[] = PROXY_FLAGS): FlagSpec | undefined {
  return specs.find((s) => s.name === name);
}

/** The flag that sets a configuration field (e.g. `iptables.syncPeriod` → `iptables-sync-period`). */
export function flagForField(field: string): FlagSpec | undefined {
  return PROXY_FLAGS.find((s) => s.field === field);
}
