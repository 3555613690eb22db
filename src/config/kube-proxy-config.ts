/**
 * KubeProxyConfiguration (kubeproxy.config.k8s.io/v1alpha1), the `--config FILE` of kube-proxy, every
 * field of it. Parsing is pure (text in, config + warnings out); defaults and validation follow
 * kube-proxy's (pkg/proxy/apis/config/v1alpha1/defaults.go, validation.go), so the file kubeadm writes
 * (every field present, unset ones as zero values and nulls) reads as kube-proxy's defaults.
 *
 * - Unknown fields are warnings (with the path); what svcplane does not implement is judged on the
 *   resolved configuration (options.ts), whether it came from the file or from flags.
 * - Invalid values throw a ConfigError naming every bad field and the reason.
 * - Durations use Go's syntax (`1s`, `500ms`, `1m30s`) and are held in milliseconds (`…Ms` fields).
 * - `mergeConfig(file, flags)`: flags override the file, as in kube-proxy.
 */
import { readFile } from 'node:fs/promises';
import { parseAllDocuments, stringify } from 'yaml';
import { parseCIDR, parseIP } from '../model/ip.js';
import { DEFAULT_NODE_PORT_RANGE, formatPortRange, parsePortRange } from '../model/limits.js';
import { formatGoDuration, parseGoDuration } from './duration.js';

export { formatGoDuration, parseGoDuration };

export const KUBE_PROXY_CONFIG_API_VERSION = 'kubeproxy.config.k8s.io/v1alpha1';
export const KUBE_PROXY_CONFIG_KIND = 'KubeProxyConfiguration';

export type ProxyMode = 'iptables' | 'ipvs' | 'nftables';
export type DetectLocalMode = 'ClusterCIDR' | 'NodeCIDR' | 'BridgeInterface' | 'InterfaceNamePrefix';
export const DETECT_LOCAL_MODES: readonly DetectLocalMode[] = [
  'ClusterCIDR',
  'NodeCIDR',
  'BridgeInterface',
  'InterfaceNamePrefix',
];
/**
 * The IPVS schedulers: the kernel's (ip_vs_*.ko), all of them tested with real connections in UML.
 * The one list: the flag, the configuration file and the IPVS mode check against it (kube-proxy's
 * validation knows rr … nq and mh; fo, ovf and twos are svcplane's additions).
 */
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
  'fo',
  'ovf',
  'twos',
] as const;

export type LoggingFormat = 'text' | 'json';
export const LOGGING_FORMATS: readonly LoggingFormat[] = ['text', 'json'];

export interface LogStreamOptions {
  readonly splitStream: boolean;
  /** A Kubernetes quantity (`0`, `64Ki`); svcplane never buffers. */
  readonly infoBufferSize: string;
}

export interface ProxyConfig {
  readonly featureGates: Readonly<Record<string, boolean>>;
  /** The node IP to use (0.0.0.0 / :: = detect). */
  readonly bindAddress: string;
  readonly clientConnection: {
    readonly kubeconfig: string;
    readonly acceptContentTypes: string;
    readonly contentType: string;
    readonly qps: number;
    readonly burst: number;
  };
  /** Exit when a server cannot bind (else: log and retry every 5 s). */
  readonly bindAddressHardFail: boolean;
  readonly enableProfiling: boolean;
  readonly showHiddenMetricsForVersion: string;
  /** -1000..1000, written to /proc/self/oom_score_adj. */
  readonly oomScoreAdj: number;
  readonly configSyncPeriodMs: number;
  /** Unused by kube-proxy since the userspace proxy's removal; kept for round trips. */
  readonly portRange: string;
  /** From `clusterCIDR` (comma-separated, at most one per family). */
  readonly clusterCIDRs: readonly string[];
  readonly hostnameOverride: string;
  readonly mode: ProxyMode;
  /** `ip:port`; the port is appended (10256) when missing, as kube-proxy does; '' = off (flag only). */
  readonly healthzBindAddress: string;
  /** `ip:port`; the port is appended (10249) when missing; '' = off (flag only). */
  readonly metricsBindAddress: string;
  /** CIDRs, or `['primary']`; empty = all local addresses. */
  readonly nodePortAddresses: readonly string[];
  /**
   * svcplane's own field (kube-apiserver's --service-node-port-range): the node ports Services may
   * use, `first-last`; default 30000-32767.
   */
  readonly serviceNodePortRange: string;
  /**
   * svcplane's own field (flag --network-policy): enforce NetworkPolicy for the pods of this node.
   * Off by default, so that svcplane stays a kube-proxy drop-in beside a network plugin that does.
   */
  readonly networkPolicy: boolean;
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
  /** nftables mode's settings (kube-proxy's `nftables` section). */
  readonly nftables: {
    readonly masqueradeAll: boolean;
    readonly masqueradeBit: number;
    readonly minSyncPeriodMs: number;
    readonly syncPeriodMs: number;
  };
  /** The conntrack sysctls set at start-up (conntrack/sysctls.ts); 0 = leave the sysctl as it is. */
  readonly conntrack: {
    readonly maxPerCore: number;
    readonly min: number;
    readonly tcpEstablishedTimeoutMs: number;
    readonly tcpCloseWaitTimeoutMs: number;
    readonly tcpBeLiberal: boolean;
    readonly udpTimeoutMs: number;
    readonly udpStreamTimeoutMs: number;
  };
  readonly logging: {
    readonly format: LoggingFormat;
    readonly flushFrequencyMs: number;
    readonly verbosity: number;
    /** `pattern=N` entries. */
    readonly vmodule: readonly string[];
    readonly options: { readonly text: LogStreamOptions; readonly json: LogStreamOptions };
  };
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
    featureGates: {},
    bindAddress: '0.0.0.0',
    clientConnection: {
      kubeconfig: '',
      acceptContentTypes: '',
      contentType: 'application/vnd.kubernetes.protobuf',
      qps: 5,
      burst: 10,
    },
    bindAddressHardFail: false,
    enableProfiling: false,
    showHiddenMetricsForVersion: '',
    oomScoreAdj: -999,
    configSyncPeriodMs: 15 * 60_000,
    portRange: '',
    clusterCIDRs: [],
    hostnameOverride: '',
    mode: 'iptables',
    healthzBindAddress: `0.0.0.0:${HEALTHZ_PORT}`,
    metricsBindAddress: `127.0.0.1:${METRICS_PORT}`,
    nodePortAddresses: [],
    serviceNodePortRange: formatPortRange(DEFAULT_NODE_PORT_RANGE),
    networkPolicy: false,
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
    nftables: { masqueradeAll: false, masqueradeBit: 14, minSyncPeriodMs: 1000, syncPeriodMs: 30_000 },
    conntrack: {
      maxPerCore: 32 * 1024,
      min: 128 * 1024,
      tcpEstablishedTimeoutMs: 24 * 3_600_000,
      tcpCloseWaitTimeoutMs: 3_600_000,
      tcpBeLiberal: false,
      udpTimeoutMs: 0,
      udpStreamTimeoutMs: 0,
    },
    logging: {
      format: 'text',
      flushFrequencyMs: 5000,
      verbosity: 0,
      vmodule: [],
      options: {
        text: { splitStream: false, infoBufferSize: '0' },
        json: { splitStream: false, infoBufferSize: '0' },
      },
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Reading the file
// ---------------------------------------------------------------------------------------------

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
      this.warnings.push({ field: path, message: 'unknown field; ignored' });
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

  number(obj: Json, key: string, prefix: string): number | undefined {
    const v = obj[key];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'number' || !Number.isFinite(v)) {
      return this.fail(`${prefix}${key}`, `must be a number, got ${JSON.stringify(v)}`);
    }
    return v;
  }

  /** A Kubernetes quantity (`0`, `512`, `64Ki`, `1M`), as a string or a number. */
  quantity(obj: Json, key: string, prefix: string): string | undefined {
    const v = obj[key];
    if (v === undefined || v === null) return undefined;
    const text = typeof v === 'number' ? String(v) : v;
    if (typeof text !== 'string' || !/^\d+(\.\d+)?([KMGTPE]i?|[kmun])?$/.test(text)) {
      return this.fail(`${prefix}${key}`, `must be a quantity like 0, 512 or 64Ki, got ${JSON.stringify(v)}`);
    }
    return text;
  }

  boolMap(obj: Json, key: string, prefix: string): Record<string, boolean> | undefined {
    const v = obj[key];
    if (v === undefined || v === null) return undefined;
    if (!isRecord(v) || Object.values(v).some((x) => typeof x !== 'boolean')) {
      return this.fail(`${prefix}${key}`, 'must map feature names to true or false');
    }
    return v as Record<string, boolean>;
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

/** kube-proxy's zero-value defaulting of a duration (`0s` = unset), as defaults.go does. */
function nonZeroDuration(r: Reader, obj: Json, key: string, prefix: string): number | undefined {
  return nonZero(r.duration(obj, key, prefix));
}

function readConfig(doc: Json, r: Reader): ProxyConfigOverrides {
  r.checkKeys(doc, '', [
    'apiVersion',
    'kind',
    'featureGates',
    'bindAddress',
    'bindAddressHardFail',
    'clientConnection',
    'clusterCIDR',
    'configSyncPeriod',
    'conntrack',
    'detectLocal',
    'detectLocalMode',
    'enableProfiling',
    'healthzBindAddress',
    'hostnameOverride',
    'iptables',
    'ipvs',
    'logging',
    'metricsBindAddress',
    'mode',
    'nftables',
    'nodePortAddresses',
    'oomScoreAdj',
    'portRange',
    'showHiddenMetricsForVersion',
    // svcplane's own (kube-apiserver's --service-node-port-range); kube-proxy does not have it.
    'serviceNodePortRange',
    // svcplane's own: NetworkPolicy enforcement (--network-policy).
    'networkPolicy',
    // Windows-only: kube-proxy ignores them on Linux, so does svcplane.
    'winkernel',
    'windowsRunAsService',
  ]);
  const out: ProxyConfigOverrides = {};
  const gates = r.boolMap(doc, 'featureGates', '');
  if (gates !== undefined) out.featureGates = gates;
  const cc = r.object(doc, 'clientConnection', '');
  if (cc) {
    r.checkKeys(cc, 'clientConnection', ['kubeconfig', 'acceptContentTypes', 'contentType', 'qps', 'burst']);
    const p = 'clientConnection.';
    const contentType = r.string(cc, 'contentType', p);
    out.clientConnection = defined({
      kubeconfig: r.string(cc, 'kubeconfig', p),
      acceptContentTypes: r.string(cc, 'acceptContentTypes', p),
      contentType: contentType === '' ? undefined : contentType,
      qps: nonZero(r.number(cc, 'qps', p)),
      burst: nonZero(r.int(cc, 'burst', p)),
    });
  }
  const bindAddress = r.string(doc, 'bindAddress', '');
  if (bindAddress !== undefined && bindAddress !== '') out.bindAddress = bindAddress;
  const hardFail = r.bool(doc, 'bindAddressHardFail', '');
  if (hardFail !== undefined) out.bindAddressHardFail = hardFail;
  const profiling = r.bool(doc, 'enableProfiling', '');
  if (profiling !== undefined) out.enableProfiling = profiling;
  const hidden = r.string(doc, 'showHiddenMetricsForVersion', '');
  if (hidden !== undefined) out.showHiddenMetricsForVersion = hidden;
  const oom = r.int(doc, 'oomScoreAdj', '');
  if (oom !== undefined) out.oomScoreAdj = oom;
  const configSync = nonZeroDuration(r, doc, 'configSyncPeriod', '');
  if (configSync !== undefined) out.configSyncPeriodMs = configSync;
  const portRange = r.string(doc, 'portRange', '');
  if (portRange !== undefined) out.portRange = portRange;
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
  const networkPolicy = r.bool(doc, 'networkPolicy', '');
  if (networkPolicy !== undefined) out.networkPolicy = networkPolicy;
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
      'snatNodeInternalIP',
    ]);
    if (r.bool(ipt, 'snatNodeInternalIP', 'iptables.') === true) {
      r.warnings.push({
        field: 'iptables.snatNodeInternalIP',
        message: "not implemented by svcplane: SNAT uses the egress interface's address (MASQUERADE)",
      });
    }
    out.iptables = defined({
      masqueradeAll: r.bool(ipt, 'masqueradeAll', 'iptables.'),
      masqueradeBit: r.int(ipt, 'masqueradeBit', 'iptables.'),
      minSyncPeriodMs: nonZeroDuration(r, ipt, 'minSyncPeriod', 'iptables.'),
      syncPeriodMs: nonZeroDuration(r, ipt, 'syncPeriod', 'iptables.'),
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
      syncPeriodMs: nonZeroDuration(r, ipvs, 'syncPeriod', 'ipvs.'),
      minSyncPeriodMs: r.duration(ipvs, 'minSyncPeriod', 'ipvs.'),
      strictARP: r.bool(ipvs, 'strictARP', 'ipvs.'),
      excludeCIDRs: r.stringList(ipvs, 'excludeCIDRs', 'ipvs.'),
      tcpTimeoutMs: r.duration(ipvs, 'tcpTimeout', 'ipvs.'),
      tcpFinTimeoutMs: r.duration(ipvs, 'tcpFinTimeout', 'ipvs.'),
      udpTimeoutMs: r.duration(ipvs, 'udpTimeout', 'ipvs.'),
    });
  }
  const nft = r.object(doc, 'nftables', '');
  if (nft) {
    r.checkKeys(nft, 'nftables', ['masqueradeAll', 'masqueradeBit', 'minSyncPeriod', 'syncPeriod']);
    out.nftables = defined({
      masqueradeAll: r.bool(nft, 'masqueradeAll', 'nftables.'),
      masqueradeBit: r.int(nft, 'masqueradeBit', 'nftables.'),
      minSyncPeriodMs: nonZeroDuration(r, nft, 'minSyncPeriod', 'nftables.'),
      syncPeriodMs: nonZeroDuration(r, nft, 'syncPeriod', 'nftables.'),
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
    r.checkKeys(logging, 'logging', ['format', 'flushFrequency', 'verbosity', 'vmodule', 'options']);
    const format = r.string(logging, 'format', 'logging.');
    const options = r.object(logging, 'options', 'logging.');
    const stream = (name: 'text' | 'json'): Partial<LogStreamOptions> | undefined => {
      const o = options ? r.object(options, name, 'logging.options.') : undefined;
      if (!o) return undefined;
      const p = `logging.options.${name}.`;
      r.checkKeys(o, `logging.options.${name}`, ['splitStream', 'infoBufferSize']);
      return defined({
        splitStream: r.bool(o, 'splitStream', p),
        infoBufferSize: r.quantity(o, 'infoBufferSize', p),
      });
    };
    if (options) r.checkKeys(options, 'logging.options', ['text', 'json']);
    out.logging = defined({
      format: format === '' ? undefined : (format as LoggingFormat),
      flushFrequencyMs: nonZero(flushFrequency(r, logging)),
      verbosity: r.int(logging, 'verbosity', 'logging.'),
      vmodule: vmoduleList(r, logging),
      options: options ? defined({ text: stream('text'), json: stream('json') }) : undefined,
    });
  }
  return out;
}

/** logging.flushFrequency: a duration string, or nanoseconds as a number (component-base accepts both). */
function flushFrequency(r: Reader, logging: Json): number | undefined {
  const v = logging.flushFrequency;
  if (typeof v === 'number') {
    if (!Number.isInteger(v) || v < 0)
      return r.fail('logging.flushFrequency', `${v} must be 0 or more nanoseconds`);
    return v / 1e6;
  }
  return r.duration(logging, 'flushFrequency', 'logging.');
}

/** logging.vmodule: a list of {filePattern, verbosity} or of `pattern=N` strings. */
function vmoduleList(r: Reader, logging: Json): string[] | undefined {
  const v = logging.vmodule;
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v)) return r.fail('logging.vmodule', 'must be a list');
  const out: string[] = [];
  for (const item of v) {
    if (typeof item === 'string') out.push(item);
    else if (isRecord(item) && typeof item.filePattern === 'string' && Number.isInteger(item.verbosity)) {
      out.push(`${item.filePattern}=${String(item.verbosity)}`);
    } else return r.fail('logging.vmodule', 'entries must be {filePattern, verbosity}');
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
    featureGates: { ...(o.featureGates ?? base.featureGates) } as Record<string, boolean>,
    clientConnection: { ...base.clientConnection, ...defined(o.clientConnection ?? {}) },
    detectLocal: { ...base.detectLocal, ...defined(o.detectLocal ?? {}) },
    iptables: { ...base.iptables, ...defined(o.iptables ?? {}) },
    ipvs: { ...base.ipvs, ...defined(o.ipvs ?? {}) },
    nftables: { ...base.nftables, ...defined(o.nftables ?? {}) },
    conntrack: { ...base.conntrack, ...defined(o.conntrack ?? {}) },
    logging: {
      ...base.logging,
      ...defined({ ...(o.logging ?? {}), options: undefined }),
      vmodule: [...(o.logging?.vmodule ?? base.logging.vmodule)],
      options: {
        text: { ...base.logging.options.text, ...defined(o.logging?.options?.text ?? {}) },
        json: { ...base.logging.options.json, ...defined(o.logging?.options?.json ?? {}) },
      },
    },
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
  if (value === '') return; // off (only a flag can say so: the file's '' means the default)
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
  if (
    (c.mode as string) !== 'iptables' &&
    (c.mode as string) !== 'ipvs' &&
    (c.mode as string) !== 'nftables'
  ) {
    p.push({
      field: 'mode',
      reason: `"${c.mode}" is not supported by svcplane (supported: iptables, ipvs, nftables)`,
    });
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
  // The rule the renderers check again before a name reaches a rule (iptables/render-lines.ts).
  const ifname = /^(?!-)[A-Za-z0-9._-]{1,15}$/;
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
  if (!LOGGING_FORMATS.includes(c.logging.format)) {
    p.push({
      field: 'logging.format',
      reason: `"${c.logging.format}" must be one of ${LOGGING_FORMATS.join(', ')}`,
    });
  }
  checkDuration('logging.flushFrequency', c.logging.flushFrequencyMs, p);
  for (const [i, m] of c.logging.vmodule.entries()) {
    if (!/^[^=,\s]+=\d+$/.test(m))
      p.push({ field: `logging.vmodule[${i}]`, reason: `"${m}" is not pattern=N` });
  }
  if (!Number.isInteger(c.oomScoreAdj) || c.oomScoreAdj < -1000 || c.oomScoreAdj > 1000) {
    p.push({ field: 'oomScoreAdj', reason: `${c.oomScoreAdj} must be within the range [-1000, 1000]` });
  }
  checkDuration('configSyncPeriod', c.configSyncPeriodMs, p, true);
  if (c.clientConnection.qps < 0) p.push({ field: 'clientConnection.qps', reason: 'must be 0 or more' });
  if (c.clientConnection.burst < 0) p.push({ field: 'clientConnection.burst', reason: 'must be 0 or more' });
  const nft = c.nftables;
  if (!Number.isInteger(nft.masqueradeBit) || nft.masqueradeBit < 0 || nft.masqueradeBit > 31) {
    p.push({
      field: 'nftables.masqueradeBit',
      reason: `${nft.masqueradeBit} must be within the range [0, 31]`,
    });
  }
  checkDuration('nftables.syncPeriod', nft.syncPeriodMs, p, true);
  checkDuration('nftables.minSyncPeriod', nft.minSyncPeriodMs, p);
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

// ---------------------------------------------------------------------------------------------
// Writing (--write-config-to)
// ---------------------------------------------------------------------------------------------

/**
 * The configuration as a KubeProxyConfiguration v1alpha1 document, every field present with keys
 * sorted (as kube-proxy's encoder writes it), so kube-proxy and svcplane read it back to the same
 * values. '' server addresses (a flag turned the server off) are written as kube-proxy would: empty.
 */
export function formatKubeProxyConfig(c: ProxyConfig): string {
  const d = formatGoDuration;
  const doc = {
    apiVersion: KUBE_PROXY_CONFIG_API_VERSION,
    kind: KUBE_PROXY_CONFIG_KIND,
    bindAddress: c.bindAddress,
    bindAddressHardFail: c.bindAddressHardFail,
    clientConnection: { ...c.clientConnection },
    clusterCIDR: c.clusterCIDRs.join(','),
    configSyncPeriod: d(c.configSyncPeriodMs),
    conntrack: {
      maxPerCore: c.conntrack.maxPerCore,
      min: c.conntrack.min,
      tcpBeLiberal: c.conntrack.tcpBeLiberal,
      tcpCloseWaitTimeout: d(c.conntrack.tcpCloseWaitTimeoutMs),
      tcpEstablishedTimeout: d(c.conntrack.tcpEstablishedTimeoutMs),
      udpStreamTimeout: d(c.conntrack.udpStreamTimeoutMs),
      udpTimeout: d(c.conntrack.udpTimeoutMs),
    },
    detectLocal: { ...c.detectLocal },
    detectLocalMode: c.detectLocalMode,
    enableProfiling: c.enableProfiling,
    featureGates: { ...c.featureGates },
    healthzBindAddress: c.healthzBindAddress,
    hostnameOverride: c.hostnameOverride,
    iptables: {
      localhostNodePorts: c.iptables.localhostNodePorts,
      masqueradeAll: c.iptables.masqueradeAll,
      masqueradeBit: c.iptables.masqueradeBit,
      minSyncPeriod: d(c.iptables.minSyncPeriodMs),
      syncPeriod: d(c.iptables.syncPeriodMs),
    },
    ipvs: {
      excludeCIDRs: c.ipvs.excludeCIDRs.length > 0 ? [...c.ipvs.excludeCIDRs] : null,
      minSyncPeriod: d(c.ipvs.minSyncPeriodMs),
      scheduler: c.ipvs.scheduler,
      strictARP: c.ipvs.strictARP,
      syncPeriod: d(c.ipvs.syncPeriodMs),
      tcpFinTimeout: d(c.ipvs.tcpFinTimeoutMs),
      tcpTimeout: d(c.ipvs.tcpTimeoutMs),
      udpTimeout: d(c.ipvs.udpTimeoutMs),
    },
    logging: {
      flushFrequency: d(c.logging.flushFrequencyMs),
      format: c.logging.format,
      options: {
        json: { ...c.logging.options.json },
        text: { ...c.logging.options.text },
      },
      verbosity: c.logging.verbosity,
      vmodule: c.logging.vmodule.map((m) => {
        const [filePattern = '', level = '0'] = m.split('=');
        return { filePattern, verbosity: Number(level) };
      }),
    },
    metricsBindAddress: c.metricsBindAddress,
    mode: c.mode,
    nftables: {
      masqueradeAll: c.nftables.masqueradeAll,
      masqueradeBit: c.nftables.masqueradeBit,
      minSyncPeriod: d(c.nftables.minSyncPeriodMs),
      syncPeriod: d(c.nftables.syncPeriodMs),
    },
    nodePortAddresses: c.nodePortAddresses.length > 0 ? [...c.nodePortAddresses] : null,
    oomScoreAdj: c.oomScoreAdj,
    portRange: c.portRange,
    showHiddenMetricsForVersion: c.showHiddenMetricsForVersion,
    // svcplane's own field: written only when set, so kube-proxy reads the default file strictly.
    ...(c.serviceNodePortRange !== formatPortRange(DEFAULT_NODE_PORT_RANGE)
      ? { serviceNodePortRange: c.serviceNodePortRange }
      : {}),
    ...(c.networkPolicy ? { networkPolicy: true } : {}),
  };
  return stringify(doc, { sortMapEntries: true, lineWidth: 0 });
}
