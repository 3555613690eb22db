/**
 * KubeProxyConfiguration (kubeproxy.config.k8s.io/v1alpha1), the `--config FILE` of kube-proxy, for
 * the fields svcplane supports. Parsing is pure (text in, config + warnings out); defaults and
 * validation follow kube-proxy's (pkg/proxy/apis/config/v1alpha1/defaults.go, validation.go).
 *
 * - Unknown fields, and kube-proxy fields svcplane does not implement, are warnings (with the path).
 * - Invalid values throw a ConfigError naming every bad field and the reason.
 * - Durations use Go's syntax (`1s`, `500ms`, `1m30s`) and are held in milliseconds (`…Ms` fields).
 * - `mergeConfig(file, flags)`: flags override the file, as in kube-proxy.
 */
import { readFile } from 'node:fs/promises';
import { parseAllDocuments } from 'yaml';
import { parseCIDR, parseIP } from '../model/ip.js';
import { DEFAULT_NODE_PORT_RANGE, formatPortRange, parsePortRange } from '../model/limits.js';
import { formatGoDuration, parseGoDuration } from './duration.js';

export { formatGoDuration, parseGoDuration };

export const KUBE_PROXY_CONFIG_API_VERSION = 'kubeproxy.config.k8s.io/v1alpha1';
export const KUBE_PROXY_CONFIG_KIND = 'KubeProxyConfiguration';

export type ProxyMode = 'iptables' | 'ipvs';
export type DetectLocalMode = 'ClusterCIDR' | 'NodeCIDR' | 'BridgeInterface' | 'InterfaceNamePrefix';
export const DETECT_LOCAL_MODES: readonly DetectLocalMode[] = [
  'ClusterCIDR',
  'NodeCIDR',
  'BridgeInterface',
  'InterfaceNamePrefix',
];
/** Schedulers kube-proxy's IPVS mode accepts. */
export const IPVS_SCHEDULERS = [
  'rr',
  'wrr',
  'lc',
  'wlc',
  'lblc',
  'lblcr',
  'sh',
  'dh',
  'sed',
  'nq',
  'mh',
] as const;

export interface ProxyConfig {
  /** The node IP to use (0.0.0.0 / :: = detect). */
  readonly bindAddress: string;
  readonly clientConnection: { readonly kubeconfig: string };
  /** From `clusterCIDR` (comma-separated, at most one per family). */
  readonly clusterCIDRs: readonly string[];
  readonly hostnameOverride: string;
  readonly mode: ProxyMode;
  /** `ip:port`; the port is appended (10256) when missing, as kube-proxy does. */
  readonly healthzBindAddress: string;
  /** `ip:port`; the port is appended (10249) when missing. */
  readonly metricsBindAddress: string;
  /** CIDRs, or `['primary']`; empty = all local addresses. */
  readonly nodePortAddresses: readonly string[];
  /**
   * svcplane's own field (kube-apiserver's --service-node-port-range): the node ports Services may
   * use, `first-last`; default 30000-32767.
   */
  readonly serviceNodePortRange: string;
  readonly detectLocalMode: DetectLocalMode;
  readonly detectLocal: { readonly bridgeInterface: string; readonly interfaceNamePrefix: string };
  readonly iptables: {
    readonly masqueradeAll: boolean;
    readonly masqueradeBit: number;
    readonly minSyncPeriodMs: number;
    readonly syncPeriodMs: number;
    readonly localhostNodePorts: boolean;
  };
  readonly ipvs: {
    readonly scheduler: string;
    readonly syncPeriodMs: number;
    readonly minSyncPeriodMs: number;
    readonly strictARP: boolean;
    readonly excludeCIDRs: readonly string[];
    readonly tcpTimeoutMs: number;
    readonly tcpFinTimeoutMs: number;
    readonly udpTimeoutMs: number;
  };
  /** Accepted and validated; svcplane does not tune conntrack sysctls. */
  readonly conntrack: {
    readonly maxPerCore: number;
    readonly min: number;
    readonly tcpEstablishedTimeoutMs: number;
    readonly tcpCloseWaitTimeoutMs: number;
    readonly tcpBeLiberal: boolean;
    readonly udpTimeoutMs: number;
    readonly udpStreamTimeoutMs: number;
  };
  readonly logging: { readonly verbosity: number };
}

type DeepPartial<T> = {
  -readonly [K in keyof T]?: T[K] extends readonly unknown[]
    ? T[K]
    : T[K] extends object
      ? DeepPartial<T[K]>
      : T[K];
};

/** What flags may set: any subset of the config; `undefined` means "flag not given". */
export type ProxyConfigOverrides = DeepPartial<ProxyConfig>;

export interface ConfigWarning {
  /** Field path, e.g. `ipvs.foo`. */
  readonly field: string;
  readonly message: string;
}

export interface ConfigProblem {
  readonly field: string;
  readonly reason: string;
}

export class ConfigError extends Error {
  constructor(
    readonly source: string,
    readonly problems: readonly ConfigProblem[],
  ) {
    super(`invalid configuration ${source}: ${problems.map((p) => `${p.field}: ${p.reason}`).join('; ')}`);
    this.name = 'ConfigError';
  }
}

export interface ParsedProxyConfig {
  readonly config: ProxyConfig;
  readonly warnings: readonly ConfigWarning[];
}

const HEALTHZ_PORT = 10256;
const METRICS_PORT = 10249;

/** kube-proxy's defaults (v1alpha1 SetDefaults_KubeProxyConfiguration). */
export function defaultProxyConfig(): ProxyConfig {
  return {
    bindAddress: '0.0.0.0',
    clientConnection: { kubeconfig: '' },
    clusterCIDRs: [],
    hostnameOverride: '',
    mode: 'iptables',
    healthzBindAddress: `0.0.0.0:${HEALTHZ_PORT}`,
    metricsBindAddress: `127.0.0.1:${METRICS_PORT}`,
    nodePortAddresses: [],
    serviceNodePortRange: formatPortRange(DEFAULT_NODE_PORT_RANGE),
    detectLocalMode: 'ClusterCIDR',
    detectLocal: { bridgeInterface: '', interfaceNamePrefix: '' },
    iptables: {
      masqueradeAll: false,
      masqueradeBit: 14,
      minSyncPeriodMs: 1000,
      syncPeriodMs: 30_000,
      localhostNodePorts: true,
    },
    ipvs: {
      scheduler: 'rr',
      syncPeriodMs: 30_000,
      minSyncPeriodMs: 0,
      strictARP: false,
      excludeCIDRs: [],
      tcpTimeoutMs: 0,
      tcpFinTimeoutMs: 0,
      udpTimeoutMs: 0,
    },
    conntrack: {
      maxPerCore: 32 * 1024,
      min: 128 * 1024,
      tcpEstablishedTimeoutMs: 24 * 3_600_000,
      tcpCloseWaitTimeoutMs: 3_600_000,
      tcpBeLiberal: false,
      udpTimeoutMs: 0,
      udpStreamTimeoutMs: 0,
    },
    logging: { verbosity: 0 },
  };
}

// ---------------------------------------------------------------------------------------------
// Reading the file
// ---------------------------------------------------------------------------------------------

/** kube-proxy fields svcplane knows but does not implement: ignored with a specific warning. */
const UNSUPPORTED = new Set([
  'featureGates',
  'enableProfiling',
  'showHiddenMetricsForVersion',
  'oomScoreAdj',
  'portRange',
  'configSyncPeriod',
  'winkernel',
  'nftables',
  'clientConnection.acceptContentTypes',
  'clientConnection.contentType',
  'clientConnection.qps',
  'clientConnection.burst',
  'logging.format',
  'logging.flushFrequency',
  'logging.options',
]);

type Json = Record<string, unknown>;

function isRecord(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Collects typed values, warnings and errors while walking the document. */
class Reader {
  readonly warnings: ConfigWarning[] = [];
  readonly problems: ConfigProblem[] = [];

  /** Warns about every key of `obj` (at `prefix`) not in `known`. */
  checkKeys(obj: Json, prefix: string, known: readonly string[]): void {
    for (const k of Object.keys(obj)) {
      if (known.includes(k)) continue;
      const path = prefix === '' ? k : `${prefix}.${k}`;
      this.warnings.push({
        field: path,
        message: UNSUPPORTED.has(path) ? 'not supported by svcplane; ignored' : 'unknown field; ignored',
      });
    }
  }

  object(obj: Json, key: string, prefix: string): Json | undefined {
    const v = obj[key];
    if (v === undefined || v === null) return undefined;
    if (!isRecord(v)) return this.fail(`${prefix}${key}`, 'must be an object');
    return v;
  }

  string(obj: Json, key: string, prefix: string): string | undefined {
    const v = obj[key];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'string')
      return this.fail(`${prefix}${key}`, `must be a string, got ${JSON.stringify(v)}`);
    return v;
  }

  bool(obj: Json, key: string, prefix: string): boolean | undefined {
    const v = obj[key];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'boolean')
      return this.fail(`${prefix}${key}`, `must be true or false, got ${JSON.stringify(v)}`);
    return v;
  }

  int(obj: Json, key: string, prefix: string): number | undefined {
    const v = obj[key];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'number' || !Number.isInteger(v)) {
      return this.fail(`${prefix}${key}`, `must be an integer, got ${JSON.stringify(v)}`);
    }
    return v;
  }

  duration(obj: Json, key: string, prefix: string): number | undefined {
    const v = obj[key];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'string') {
      return this.fail(`${prefix}${key}`, `must be a duration string like "30s", got ${JSON.stringify(v)}`);
    }
    try {
      return parseGoDuration(v);
    } catch (err) {
      return this.fail(`${prefix}${key}`, (err as Error).message);
    }
  }

  stringList(obj: Json, key: string, prefix: string): string[] | undefined {
    const v = obj[key];
    if (v === undefined || v === null) return undefined;
    if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) {
      return this.fail(`${prefix}${key}`, 'must be a list of strings');
    }
    return v as string[];
  }

  fail(field: string, reason: string): undefined {
    this.problems.push({ field, reason });
    return undefined;
  }
}

/** Drops undefined values so spreading over defaults keeps the defaults. */
function defined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** kube-proxy treats zero sync periods as "unset" and applies the default. */
function nonZero(ms: number | undefined): number | undefined {
  return ms === 0 ? undefined : ms;
}

function readConfig(doc: Json, r: Reader): ProxyConfigOverrides {
  r.checkKeys(doc, '', [
    'apiVersion',
    'kind',
    'bindAddress',
    'clientConnection',
    'clusterCIDR',
    'hostnameOverride',
    'mode',
    'healthzBindAddress',
    'metricsBindAddress',
    'nodePortAddresses',
    'serviceNodePortRange',
    'detectLocalMode',
    'detectLocal',
    'iptables',
    'ipvs',
    'conntrack',
    'logging',
  ]);
  const out: ProxyConfigOverrides = {};
  const cc = r.object(doc, 'clientConnection', '');
  if (cc) {
    r.checkKeys(cc, 'clientConnection', ['kubeconfig']);
    const kubeconfig = r.string(cc, 'kubeconfig', 'clientConnection.');
    if (kubeconfig !== undefined) out.clientConnection = { kubeconfig };
  }
  const bindAddress = r.string(doc, 'bindAddress', '');
  if (bindAddress !== undefined && bindAddress !== '') out.bindAddress = bindAddress;
  const cidr = r.string(doc, 'clusterCIDR', '');
  if (cidr !== undefined) {
    out.clusterCIDRs = cidr
      .split(',')
      .map((c) => c.trim())
      .filter((c) => c !== '');
  }
  const hostnameOverride = r.string(doc, 'hostnameOverride', '');
  if (hostnameOverride !== undefined) out.hostnameOverride = hostnameOverride.trim().toLowerCase();
  const mode = r.string(doc, 'mode', '');
  // '' is kube-proxy's "platform default", iptables on Linux.
  if (mode !== undefined) out.mode = (mode === '' ? 'iptables' : mode) as ProxyMode;
  const healthz = r.string(doc, 'healthzBindAddress', '');
  if (healthz) out.healthzBindAddress = healthz;
  const metrics = r.string(doc, 'metricsBindAddress', '');
  if (metrics) out.metricsBindAddress = metrics;
  const npa = r.stringList(doc, 'nodePortAddresses', '');
  if (npa !== undefined) out.nodePortAddresses = npa;
  const range = r.string(doc, 'serviceNodePortRange', '');
  if (range) out.serviceNodePortRange = range;
  const dlm = r.string(doc, 'detectLocalMode', '');
  if (dlm) out.detectLocalMode = dlm as DetectLocalMode;

  const dl = r.object(doc, 'detectLocal', '');
  if (dl) {
    r.checkKeys(dl, 'detectLocal', ['bridgeInterface', 'interfaceNamePrefix']);
    out.detectLocal = defined({
      bridgeInterface: r.string(dl, 'bridgeInterface', 'detectLocal.'),
      interfaceNamePrefix: r.string(dl, 'interfaceNamePrefix', 'detectLocal.'),
    });
  }
  const ipt = r.object(doc, 'iptables', '');
  if (ipt) {
    r.checkKeys(ipt, 'iptables', [
      'masqueradeAll',
      'masqueradeBit',
      'minSyncPeriod',
      'syncPeriod',
      'localhostNodePorts',
    ]);
    out.iptables = defined({
      masqueradeAll: r.bool(ipt, 'masqueradeAll', 'iptables.'),
      masqueradeBit: r.int(ipt, 'masqueradeBit', 'iptables.'),
      minSyncPeriodMs: nonZero(r.duration(ipt, 'minSyncPeriod', 'iptables.')),
      syncPeriodMs: nonZero(r.duration(ipt, 'syncPeriod', 'iptables.')),
      localhostNodePorts: r.bool(ipt, 'localhostNodePorts', 'iptables.'),
    });
  }
  const ipvs = r.object(doc, 'ipvs', '');
  if (ipvs) {
    r.checkKeys(ipvs, 'ipvs', [
      'scheduler',
      'syncPeriod',
      'minSyncPeriod',
      'strictARP',
      'excludeCIDRs',
      'tcpTimeout',
      'tcpFinTimeout',
      'udpTimeout',
    ]);
    const scheduler = r.string(ipvs, 'scheduler', 'ipvs.');
    out.ipvs = defined({
      scheduler: scheduler === '' ? undefined : scheduler,
      syncPeriodMs: nonZero(r.duration(ipvs, 'syncPeriod', 'ipvs.')),
      minSyncPeriodMs: r.duration(ipvs, 'minSyncPeriod', 'ipvs.'),
      strictARP: r.bool(ipvs, 'strictARP', 'ipvs.'),
      excludeCIDRs: r.stringList(ipvs, 'excludeCIDRs', 'ipvs.'),
      tcpTimeoutMs: r.duration(ipvs, 'tcpTimeout', 'ipvs.'),
      tcpFinTimeoutMs: r.duration(ipvs, 'tcpFinTimeout', 'ipvs.'),
      udpTimeoutMs: r.duration(ipvs, 'udpTimeout', 'ipvs.'),
    });
  }
  const ct = r.object(doc, 'conntrack', '');
  if (ct) {
    r.checkKeys(ct, 'conntrack', [
      'maxPerCore',
      'min',
      'tcpEstablishedTimeout',
      'tcpCloseWaitTimeout',
      'tcpBeLiberal',
      'udpTimeout',
      'udpStreamTimeout',
    ]);
    out.conntrack = defined({
      maxPerCore: r.int(ct, 'maxPerCore', 'conntrack.'),
      min: r.int(ct, 'min', 'conntrack.'),
      tcpEstablishedTimeoutMs: r.duration(ct, 'tcpEstablishedTimeout', 'conntrack.'),
      tcpCloseWaitTimeoutMs: r.duration(ct, 'tcpCloseWaitTimeout', 'conntrack.'),
      tcpBeLiberal: r.bool(ct, 'tcpBeLiberal', 'conntrack.'),
      udpTimeoutMs: r.duration(ct, 'udpTimeout', 'conntrack.'),
      udpStreamTimeoutMs: r.duration(ct, 'udpStreamTimeout', 'conntrack.'),
    });
  }
  const logging = r.object(doc, 'logging', '');
  if (logging) {
    r.checkKeys(logging, 'logging', ['verbosity']);
    const verbosity = r.int(logging, 'verbosity', 'logging.');
    if (verbosity !== undefined) out.logging = { verbosity };
  }
  return out;
}

/**
 * Parses a KubeProxyConfiguration document (YAML or JSON). Throws ConfigError for invalid values,
 * a missing/wrong apiVersion or kind, or unparsable text; returns warnings for ignored fields.
 */
export function parseKubeProxyConfig(text: string, source = '<config>'): ParsedProxyConfig {
  const docs = parseAllDocuments(text, { uniqueKeys: true });
  if (!Array.isArray(docs))
    throw new ConfigError(source, [{ field: '(document)', reason: 'empty document' }]);
  const nonEmpty = docs.filter((d) => d.contents !== null);
  for (const d of docs) {
    if (d.errors.length > 0) {
      throw new ConfigError(source, [
        { field: '(document)', reason: `invalid YAML/JSON: ${d.errors[0]!.message}` },
      ]);
    }
  }
  if (nonEmpty.length !== 1) {
    throw new ConfigError(source, [
      {
        field: '(document)',
        reason: `expected one KubeProxyConfiguration document, found ${nonEmpty.length}`,
      },
    ]);
  }
  const doc: unknown = nonEmpty[0]!.toJS();
  if (!isRecord(doc)) throw new ConfigError(source, [{ field: '(document)', reason: 'must be a mapping' }]);

  const r = new Reader();
  if (doc.apiVersion !== KUBE_PROXY_CONFIG_API_VERSION) {
    r.fail(
      'apiVersion',
      `must be "${KUBE_PROXY_CONFIG_API_VERSION}", got ${JSON.stringify(doc.apiVersion ?? null)}`,
    );
  }
  if (doc.kind !== KUBE_PROXY_CONFIG_KIND) {
    r.fail('kind', `must be "${KUBE_PROXY_CONFIG_KIND}", got ${JSON.stringify(doc.kind ?? null)}`);
  }
  const overrides = readConfig(doc, r);
  if (r.problems.length > 0) throw new ConfigError(source, r.problems);
  const config = applyOverrides(defaultsFor(overrides), overrides);
  const problems = validateProxyConfig(config);
  if (problems.length > 0) throw new ConfigError(source, problems);
  return { config: normalize(config), warnings: r.warnings };
}

/** Reads and parses a `--config` file. */
export async function loadKubeProxyConfigFile(path: string): Promise<ParsedProxyConfig> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new ConfigError(path, [{ field: '(file)', reason: `cannot read: ${(err as Error).message}` }]);
  }
  return parseKubeProxyConfig(text, path);
}

// ---------------------------------------------------------------------------------------------
// Merging, normalizing, validating
// ---------------------------------------------------------------------------------------------

/** Defaults, with IPv6-flavoured server addresses when bindAddress is IPv6 (as kube-proxy). */
function defaultsFor(o: ProxyConfigOverrides): ProxyConfig {
  const d = defaultProxyConfig();
  if (o.bindAddress !== undefined && parseIP(o.bindAddress)?.family === 'IPv6') {
    return { ...d, healthzBindAddress: `[::]:${HEALTHZ_PORT}`, metricsBindAddress: `[::1]:${METRICS_PORT}` };
  }
  return d;
}

function applyOverrides(base: ProxyConfig, o: ProxyConfigOverrides): ProxyConfig {
  const top = defined({ ...o }) as Partial<ProxyConfig>;
  return {
    ...base,
    ...top,
    clientConnection: { ...base.clientConnection, ...defined(o.clientConnection ?? {}) },
    detectLocal: { ...base.detectLocal, ...defined(o.detectLocal ?? {}) },
    iptables: { ...base.iptables, ...defined(o.iptables ?? {}) },
    ipvs: { ...base.ipvs, ...defined(o.ipvs ?? {}) },
    conntrack: { ...base.conntrack, ...defined(o.conntrack ?? {}) },
    logging: { ...base.logging, ...defined(o.logging ?? {}) },
  };
}

/** `ip` → `ip:port` (IPv6 bracketed), as kube-proxy's AppendPortIfNeeded. */
export function appendPortIfNeeded(addr: string, port: number): string {
  if (parseIP(addr)) return parseIP(addr)!.family === 'IPv6' ? `[${addr}]:${port}` : `${addr}:${port}`;
  return addr;
}

function normalize(c: ProxyConfig): ProxyConfig {
  return {
    ...c,
    healthzBindAddress: appendPortIfNeeded(c.healthzBindAddress, HEALTHZ_PORT),
    metricsBindAddress: appendPortIfNeeded(c.metricsBindAddress, METRICS_PORT),
  };
}

function checkHostPort(field: string, value: string, problems: ConfigProblem[]): void {
  const v = appendPortIfNeeded(value, 0);
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(v);
  const ip = m?.[1] ?? m?.[2];
  if (!m || ip === undefined || !parseIP(ip)) {
    problems.push({ field, reason: `"${value}" must be IP:port (e.g. 0.0.0.0:10256)` });
    return;
  }
  if (Number(m[3]) > 65535) problems.push({ field, reason: `port ${m[3]} out of range [0, 65535]` });
}

function checkCIDRs(field: string, list: readonly string[], problems: ConfigProblem[]): void {
  for (const [i, c] of list.entries()) {
    if (!parseCIDR(c)) problems.push({ field: `${field}[${i}]`, reason: `"${c}" is not a valid CIDR` });
  }
}

function checkDuration(field: string, ms: number, problems: ConfigProblem[], positive = false): void {
  if (positive ? ms <= 0 : ms < 0) {
    problems.push({
      field,
      reason: `${formatGoDuration(ms)}: must be ${positive ? 'greater than 0' : '0 or more'}`,
    });
  }
}

/** kube-proxy's validation of the fields svcplane supports. Pure; returns every problem found. */
export function validateProxyConfig(c: ProxyConfig): ConfigProblem[] {
  const p: ConfigProblem[] = [];
  if (!parseIP(c.bindAddress))
    p.push({ field: 'bindAddress', reason: `"${c.bindAddress}" is not a valid IP address` });
  if ((c.mode as string) !== 'iptables' && (c.mode as string) !== 'ipvs') {
    p.push({ field: 'mode', reason: `"${c.mode}" is not supported by svcplane (supported: iptables, ipvs)` });
  }
  checkHostPort('healthzBindAddress', c.healthzBindAddress, p);
  checkHostPort('metricsBindAddress', c.metricsBindAddress, p);

  checkCIDRs('clusterCIDR', c.clusterCIDRs, p);
  const families = c.clusterCIDRs.map((x) => parseCIDR(x)?.family);
  if (c.clusterCIDRs.length > 2 || (c.clusterCIDRs.length === 2 && families[0] === families[1])) {
    p.push({
      field: 'clusterCIDR',
      reason: 'only one CIDR, or one IPv4 and one IPv6 CIDR (dual-stack), is allowed',
    });
  }
  if (c.nodePortAddresses.includes('primary')) {
    if (c.nodePortAddresses.length > 1) {
      p.push({ field: 'nodePortAddresses', reason: '"primary" cannot be combined with CIDRs' });
    }
  } else checkCIDRs('nodePortAddresses', c.nodePortAddresses, p);
  const range = parsePortRange(c.serviceNodePortRange);
  if ('error' in range) p.push({ field: 'serviceNodePortRange', reason: range.error });

  if (!DETECT_LOCAL_MODES.includes(c.detectLocalMode)) {
    p.push({
      field: 'detectLocalMode',
      reason: `"${c.detectLocalMode}" must be one of ${DETECT_LOCAL_MODES.join(', ')}`,
    });
  }
  if (c.detectLocalMode === 'BridgeInterface' && c.detectLocal.bridgeInterface === '') {
    p.push({
      field: 'detectLocal.bridgeInterface',
      reason: 'required when detectLocalMode is BridgeInterface',
    });
  }
  if (c.detectLocalMode === 'InterfaceNamePrefix' && c.detectLocal.interfaceNamePrefix === '') {
    p.push({
      field: 'detectLocal.interfaceNamePrefix',
      reason: 'required when detectLocalMode is InterfaceNamePrefix',
    });
  }
  const ifname = /^[^\s/:]{1,15}$/;
  if (c.detectLocal.bridgeInterface !== '' && !ifname.test(c.detectLocal.bridgeInterface)) {
    p.push({
      field: 'detectLocal.bridgeInterface',
      reason: `"${c.detectLocal.bridgeInterface}" is not an interface name`,
    });
  }
  if (c.detectLocal.interfaceNamePrefix !== '' && !ifname.test(c.detectLocal.interfaceNamePrefix)) {
    p.push({
      field: 'detectLocal.interfaceNamePrefix',
      reason: `"${c.detectLocal.interfaceNamePrefix}" is not an interface name prefix`,
    });
  }

  const ipt = c.iptables;
  if (!Number.isInteger(ipt.masqueradeBit) || ipt.masqueradeBit < 0 || ipt.masqueradeBit > 31) {
    p.push({
      field: 'iptables.masqueradeBit',
      reason: `${ipt.masqueradeBit} must be within the range [0, 31]`,
    });
  }
  checkDuration('iptables.syncPeriod', ipt.syncPeriodMs, p, true);
  checkDuration('iptables.minSyncPeriod', ipt.minSyncPeriodMs, p);
  if (ipt.minSyncPeriodMs > ipt.syncPeriodMs) {
    p.push({
      field: 'iptables.syncPeriod',
      reason: 'must be greater than or equal to iptables.minSyncPeriod',
    });
  }

  const ipvs = c.ipvs;
  if (!(IPVS_SCHEDULERS as readonly string[]).includes(ipvs.scheduler)) {
    p.push({
      field: 'ipvs.scheduler',
      reason: `"${ipvs.scheduler}" must be one of ${IPVS_SCHEDULERS.join(', ')}`,
    });
  }
  checkDuration('ipvs.syncPeriod', ipvs.syncPeriodMs, p, true);
  checkDuration('ipvs.minSyncPeriod', ipvs.minSyncPeriodMs, p);
  if (ipvs.minSyncPeriodMs > ipvs.syncPeriodMs) {
    p.push({ field: 'ipvs.syncPeriod', reason: 'must be greater than or equal to ipvs.minSyncPeriod' });
  }
  checkCIDRs('ipvs.excludeCIDRs', ipvs.excludeCIDRs, p);
  checkDuration('ipvs.tcpTimeout', ipvs.tcpTimeoutMs, p);
  checkDuration('ipvs.tcpFinTimeout', ipvs.tcpFinTimeoutMs, p);
  checkDuration('ipvs.udpTimeout', ipvs.udpTimeoutMs, p);

  const ct = c.conntrack;
  if (!Number.isInteger(ct.maxPerCore) || ct.maxPerCore < 0) {
    p.push({ field: 'conntrack.maxPerCore', reason: `${ct.maxPerCore} must be 0 or more` });
  }
  if (!Number.isInteger(ct.min) || ct.min < 0)
    p.push({ field: 'conntrack.min', reason: `${ct.min} must be 0 or more` });
  checkDuration('conntrack.tcpEstablishedTimeout', ct.tcpEstablishedTimeoutMs, p);
  checkDuration('conntrack.tcpCloseWaitTimeout', ct.tcpCloseWaitTimeoutMs, p);
  checkDuration('conntrack.udpTimeout', ct.udpTimeoutMs, p);
  checkDuration('conntrack.udpStreamTimeout', ct.udpStreamTimeoutMs, p);

  if (!Number.isInteger(c.logging.verbosity) || c.logging.verbosity < 0) {
    p.push({ field: 'logging.verbosity', reason: `${c.logging.verbosity} must be an integer 0 or more` });
  }
  return p;
}

/**
 * Flags override the file (or the defaults when there is no file), field by field; a flag left
 * `undefined` keeps the file's value. The result is validated as a whole (throws ConfigError).
 */
export function mergeConfig(
  fileConfig: ProxyConfig | undefined,
  flagOverrides: ProxyConfigOverrides,
): ProxyConfig {
  const base = fileConfig ?? defaultsFor(flagOverrides);
  const merged = applyOverrides(base, flagOverrides);
  const problems = validateProxyConfig(merged);
  if (problems.length > 0) throw new ConfigError('(flags and configuration file)', problems);
  return normalize(merged);
}
