import { hostname as osHostname } from 'node:os';
import type { ParsedCommandLine } from './command-line.js';
import { FlagError, parseCommandLine } from './command-line.js';
import { parseIP } from '../model/ip.js';
import { parsePortRange, serviceLimits, type ServiceLimits } from '../model/limits.js';
import { formatGoDuration } from './duration.js';
import { attributeName, flagForField, PROXY_FLAGS, type FlagSpec } from './flags.js';
import {
  ConfigError,
  mergeConfig,
  type DetectLocalMode,
  type LoggingFormat,
  type ParsedProxyConfig,
  type ProxyConfig,
  type ProxyConfigOverrides,
} from './kube-proxy-config.js';

/**
 * The resolved configuration of the daemon and its one-shot relatives: command-line flags and the
 * `--config` file in, one validated ProxyOptions out, with kube-proxy's precedence (with a file, the
 * file decides every field; only the hostname override, the logging flags, --master and svcplane's own
 * flags still apply, and each other flag given is named in a notice). Pure: no I/O, no logging.
 */

export type IPFamilyName = 'IPv4' | 'IPv6';

/** kube-proxy's `--ipvs-…` settings, resolved. */
export interface IpvsOptions {
  readonly scheduler: string;
  /**
   * svcplane's --ipvs-scheduler-flags as given; undefined = kube-proxy's default for the scheduler
   * (the IPVS mode resolves and validates them against the scheduler).
   */
  readonly schedulerFlags?: readonly string[];
  readonly strictARP: boolean;
  readonly excludeCIDRs: readonly string[];
  readonly syncPeriodMs: number;
  readonly minSyncPeriodMs: number;
  /** Milliseconds; 0 keeps the kernel's value. */
  readonly tcpTimeoutMs: number;
  readonly tcpFinTimeoutMs: number;
  readonly udpTimeoutMs: number;
}

/** kube-proxy's conntrack settings, as the configuration holds them. */
export type ConntrackOptions = ProxyConfig['conntrack'];

export interface LoggingOptions {
  readonly format: LoggingFormat;
  readonly verbosity: number;
  /** Info lines to stdout, warnings and errors to stderr (default: all to stderr). */
  readonly splitStream: boolean;
}

export interface ProxyOptions {
  readonly manifests?: string;
  readonly kubeconfig?: string;
  readonly master?: string;
  readonly config?: string;
  readonly proxyMode: 'iptables' | 'ipvs' | 'nftables';
  readonly hostnameOverride: string;
  /** The node IP (undefined: from the Node object, else the first global address). */
  readonly bindAddress?: string;
  readonly clusterCIDRs: readonly string[];
  /** '' = no local-traffic detection (ClusterCIDR without a CIDR). */
  readonly detectLocalMode: DetectLocalMode | '';
  readonly bridgeInterface?: string;
  readonly interfaceNamePrefix?: string;
  /**
   * The Node object's pod CIDRs (spec.podCIDRs), resolved at startup for
   * --detect-local-mode=NodeCIDR (cli/node-cidr.ts); undefined until then.
   */
  readonly nodePodCIDRs?: readonly string[];
  readonly nodePortAddresses: readonly string[];
  readonly localhostNodePorts: boolean;
  readonly masqueradeAll: boolean;
  readonly masqueradeBit: number;
  /** The mode's periods (iptables.* or ipvs.*, as kube-proxy converts them). */
  readonly minSyncPeriodMs: number;
  readonly syncPeriodMs: number;
  /** e.g. `iptables-legacy`: restore/save and ip6tables names are derived from it. */
  readonly iptablesBinary: string;
  /**
   * svcplane's --iptables-full-sync-mode: how full syncs write (docs/performance.md). `auto`:
   * `--noflush` in chunks on nf_tables, kube-proxy's single `--noflush` on legacy.
   */
  readonly iptablesFullSyncMode: FullSyncModeName;
  /**
   * svcplane's --nft-binary: the nft every nftables spawn of the process uses (nftables mode, the
   * NetworkPolicy enforcer, cleanup, diff, trace). One for all: Debian 12's nft 1.0.6 crashes on
   * sets that nft 1.1 wrote.
   */
  readonly nftBinary: string;
  readonly ipFamilies: readonly IPFamilyName[];
  /** `ip:port`; '' = no healthz server. */
  readonly healthzBindAddress: string;
  /** `ip:port`; '' = no metrics server. */
  readonly metricsBindAddress: string;
  /**
   * --service-node-port-range (kube-apiserver's flag; config `serviceNodePortRange`), with the
   * healthz and metrics ports reserved: what a Service's node ports may be.
   */
  readonly serviceLimits: ServiceLimits;
  readonly bindAddressHardFail: boolean;
  /** --network-policy (config `networkPolicy`): NetworkPolicy enforcement for this node's pods. */
  readonly networkPolicy: boolean;
  /** Written to /proc/self/oom_score_adj at start-up. */
  readonly oomScoreAdj: number;
  readonly conntrack: ConntrackOptions;
  readonly logging: LoggingOptions;
  /** Same as logging.verbosity (kept for the callers that only need the level). */
  readonly verbosity: number;
  readonly ipvs: IpvsOptions;
}

/** Something to tell the operator once at start-up (a flag or a setting svcplane does not act on). */
export interface Notice {
  /** The flag (`--profiling`) or field (`enableProfiling`) concerned. */
  readonly subject: string;
  readonly message: string;
}

export interface ResolvedConfiguration {
  /** The KubeProxyConfiguration in effect (what --write-config-to writes). */
  readonly config: ProxyConfig;
  readonly options: ProxyOptions;
  readonly notices: readonly Notice[];
}

export interface ResolveInput {
  readonly flags: ParsedCommandLine;
  /** The parsed `--config` file, when one was given. */
  readonly file?: { readonly path: string; readonly parsed: ParsedProxyConfig };
  /** The machine's hostname (default: os.hostname()). */
  readonly hostname?: string;
  /** Flags the command knows (default: every proxy flag). */
  readonly specs?: readonly FlagSpec[];
}

type Mutable = Record<string, unknown>;

/** `iptables.syncPeriod` (a duration) → the ProxyConfig path `iptables.syncPeriodMs`. */
function configPath(spec: FlagSpec): string[] {
  const parts = spec.field!.split('.');
  if (spec.field === 'clusterCIDR') return ['clusterCIDRs'];
  if (spec.kind === 'duration') parts[parts.length - 1] = `${parts[parts.length - 1]}Ms`;
  return parts;
}

function setPath(target: Mutable, path: readonly string[], value: unknown): void {
  let node = target;
  for (const key of path.slice(0, -1)) {
    const next = (node[key] ?? {}) as Mutable;
    node[key] = next;
    node = next;
  }
  node[path[path.length - 1]!] = value;
}

/** The configuration fields set by the given flags (only those with a field and allowed by `keep`). */
function overridesFromFlags(
  flags: ParsedCommandLine,
  specs: readonly FlagSpec[],
  keep: (s: FlagSpec) => boolean,
): ProxyConfigOverrides {
  const out: Mutable = {};
  for (const name of flags.given) {
    const spec = specs.find((s) => s.name === name);
    if (!spec?.field || !keep(spec)) continue;
    let value = flags.values[attributeName(name)];
    if (spec.name === 'hostname-override') {
      const trimmed = String(value).trim();
      // kube-proxy: an empty override means "not given"; only spaces is an error.
      if (String(value) === '') continue;
      if (trimmed === '') throw new FlagError('--hostname-override', 'must not be empty or blank');
      value = trimmed.toLowerCase();
    }
    setPath(out, configPath(spec), value);
  }
  return out;
}

/** A ConfigError about flag-built values (no file), its fields named as the flags that set them. */
function asFlagError(err: ConfigError): Error {
  const parts = err.problems.map((p) => {
    const flag = flagForField(p.field.replace(/\[\d+\]$/, ''));
    return `${flag ? `--${flag.name}` : p.field}: ${p.reason}`;
  });
  return new Error(parts.join('; '));
}

/**
 * kube-proxy's deprecated --healthz-port / --metrics-port over the address flag (undefined: not given,
 * the default has its port): 0 turns the server off, another port completes a bare IP.
 */
function applyDeprecatedPort(address: string | undefined, port: number | undefined): string | undefined {
  if (port === undefined) return address;
  if (port === 0) return '';
  if (address === undefined || address === '') return address;
  const ip = parseIP(address.replace(/^\[(.*)\]$/, '$1'));
  return ip ? (ip.family === 'IPv6' ? `[${ip.ip}]:${port}` : `${ip.ip}:${port}`) : address;
}

/** The values of --iptables-full-sync-mode (the iptables mode's FullSyncMode). */
export const FULL_SYNC_MODES = ['auto', 'chunked', 'noflush', 'whole-table'] as const;
export type FullSyncModeName = (typeof FULL_SYNC_MODES)[number];

/** Why `name` is not a valid node name (a lowercase DNS-1123 subdomain), or undefined. */
export function nodeNameProblem(name: string): string | undefined {
  return /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/.test(name)
    ? undefined
    : `"${name}" is not a valid node name (lowercase DNS subdomain)`;
}

/** The options of svcplane's own flags (and --master, --manifests), validated, naming the flag. */
function svcplaneOptions(values: Readonly<Record<string, unknown>>): {
  manifests?: string;
  master?: string;
  iptablesBinary: string;
  iptablesFullSyncMode: FullSyncModeName;
  nftBinary: string;
  ipFamilies: IPFamilyName[];
  schedulerFlags?: readonly string[];
} {
  const str = (k: string): string | undefined => (typeof values[k] === 'string' ? values[k] : undefined);
  const families = Array.isArray(values.ipFamilies) ? (values.ipFamilies as string[]) : [];
  for (const f of families) {
    if (f !== 'IPv4' && f !== 'IPv6') throw new FlagError('--ip-families', `"${f}" is not IPv4 or IPv6`);
  }
  const binary = str('iptablesBinary') ?? 'iptables';
  if (!/^[A-Za-z0-9_./-]+$/.test(binary) || !binary.includes('iptables')) {
    throw new FlagError('--iptables-binary', `"${binary}" must name an iptables command`);
  }
  const nftBinary = str('nftBinary') ?? 'nft';
  if (!/^[A-Za-z0-9_./-]+$/.test(nftBinary)) {
    throw new FlagError('--nft-binary', `"${nftBinary}" must be a command name or path`);
  }
  const mode = str('iptablesFullSyncMode') ?? 'auto';
  if (!(FULL_SYNC_MODES as readonly string[]).includes(mode)) {
    throw new FlagError(
      '--iptables-full-sync-mode',
      `"${mode}" is not auto, chunked, noflush or whole-table`,
    );
  }
  const manifests = str('manifests');
  const master = str('master');
  return {
    ...(manifests !== undefined ? { manifests } : {}),
    ...(master !== undefined && master !== '' ? { master } : {}),
    iptablesBinary: binary,
    iptablesFullSyncMode: mode as FullSyncModeName,
    nftBinary,
    ipFamilies: families.length > 0 ? [...new Set(families as IPFamilyName[])] : ['IPv4', 'IPv6'],
    ...(Array.isArray(values.ipvsSchedulerFlags)
      ? { schedulerFlags: values.ipvsSchedulerFlags as string[] }
      : {}),
  };
}

/** ProxyOptions from the configuration in effect and the flags that live outside it. */
function toOptions(
  c: ProxyConfig,
  values: Readonly<Record<string, unknown>>,
  configPathGiven: string | undefined,
  machineHostname: string,
): ProxyOptions {
  const own = svcplaneOptions(values);
  const nodeName = (c.hostnameOverride !== '' ? c.hostnameOverride : machineHostname).trim().toLowerCase();
  const badName = nodeNameProblem(nodeName);
  if (badName) {
    const from = c.hostnameOverride !== '' ? 'hostname-override' : 'the hostname';
    throw new Error(`${from === 'the hostname' ? from : `--${from}`}: ${badName}`);
  }
  const detect: DetectLocalMode | '' =
    c.detectLocalMode === 'ClusterCIDR' && c.clusterCIDRs.length === 0 ? '' : c.detectLocalMode;
  const ipvsMode = c.mode === 'ipvs';
  // nftables mode reads kube-proxy's `nftables` section; --masquerade-all and
  // --iptables-masquerade-bit (written to the iptables section) still count, as flags.
  const nftMode = c.mode === 'nftables';
  const masqueradeAll = nftMode
    ? c.nftables.masqueradeAll || c.iptables.masqueradeAll
    : c.iptables.masqueradeAll;
  const masqueradeBit =
    nftMode && c.nftables.masqueradeBit !== 14 ? c.nftables.masqueradeBit : c.iptables.masqueradeBit;
  const periods = ipvsMode ? c.ipvs : nftMode ? c.nftables : c.iptables;
  const kubeconfig = c.clientConnection.kubeconfig;
  const bind = c.bindAddress === '0.0.0.0' || c.bindAddress === '::' ? undefined : c.bindAddress;
  const format = c.logging.format;
  const range = parsePortRange(c.serviceNodePortRange);
  if ('error' in range) throw new FlagError('--service-node-port-range', range.error);
  const portOf = (hostPort: string): number => Number(/:(\d+)$/.exec(hostPort)?.[1] ?? 0);
  const limits = serviceLimits(range, [
    { port: portOf(c.healthzBindAddress), what: "svcplane's healthz port (--healthz-bind-address)" },
    { port: portOf(c.metricsBindAddress), what: "svcplane's metrics port (--metrics-bind-address)" },
  ]);
  return {
    ...(own.manifests !== undefined ? { manifests: own.manifests } : {}),
    ...(kubeconfig !== '' ? { kubeconfig } : {}),
    ...(own.master !== undefined ? { master: own.master } : {}),
    ...(configPathGiven !== undefined ? { config: configPathGiven } : {}),
    proxyMode: c.mode,
    hostnameOverride: nodeName,
    ...(bind !== undefined ? { bindAddress: bind } : {}),
    clusterCIDRs: c.clusterCIDRs,
    detectLocalMode: detect,
    ...(c.detectLocal.bridgeInterface !== '' ? { bridgeInterface: c.detectLocal.bridgeInterface } : {}),
    ...(c.detectLocal.interfaceNamePrefix !== ''
      ? { interfaceNamePrefix: c.detectLocal.interfaceNamePrefix }
      : {}),
    nodePortAddresses: c.nodePortAddresses,
    localhostNodePorts: c.iptables.localhostNodePorts,
    masqueradeAll,
    masqueradeBit,
    minSyncPeriodMs: periods.minSyncPeriodMs,
    syncPeriodMs: periods.syncPeriodMs,
    iptablesBinary: own.iptablesBinary,
    iptablesFullSyncMode: own.iptablesFullSyncMode,
    nftBinary: own.nftBinary,
    ipFamilies: own.ipFamilies,
    healthzBindAddress: c.healthzBindAddress,
    metricsBindAddress: c.metricsBindAddress,
    serviceLimits: limits,
    bindAddressHardFail: c.bindAddressHardFail,
    networkPolicy: c.networkPolicy,
    oomScoreAdj: c.oomScoreAdj,
    conntrack: { ...c.conntrack },
    logging: {
      format,
      verbosity: c.logging.verbosity,
      splitStream: c.logging.options[format].splitStream,
    },
    verbosity: c.logging.verbosity,
    ipvs: {
      scheduler: c.ipvs.scheduler,
      ...(own.schedulerFlags !== undefined ? { schedulerFlags: own.schedulerFlags } : {}),
      strictARP: c.ipvs.strictARP,
      excludeCIDRs: c.ipvs.excludeCIDRs,
      syncPeriodMs: c.ipvs.syncPeriodMs,
      minSyncPeriodMs: c.ipvs.minSyncPeriodMs,
      tcpTimeoutMs: c.ipvs.tcpTimeoutMs,
      tcpFinTimeoutMs: c.ipvs.tcpFinTimeoutMs,
      udpTimeoutMs: c.ipvs.udpTimeoutMs,
    },
  };
}

/**
 * What the configuration asks for that svcplane does not do, one notice per setting, only for
 * values that ask for something (a field at its default never gets one).
 */
export function unhonouredSettings(c: ProxyConfig): Notice[] {
  const out: Notice[] = [];
  const say = (field: string, what: string): void => {
    const flag = flagForField(field);
    out.push({ subject: flag ? `--${flag.name} (${field})` : field, message: what });
  };
  for (const [gate, on] of Object.entries(c.featureGates)) {
    say('featureGates', `feature gate ${gate}=${String(on)} ignored: svcplane has no feature gates`);
  }
  if (c.enableProfiling) say('enableProfiling', 'ignored: svcplane has no /debug/pprof handlers');
  if (c.logging.vmodule.length > 0) {
    say(
      'logging.vmodule',
      `${c.logging.vmodule.join(',')} ignored: svcplane has one verbosity for all modules (use -v)`,
    );
  }
  if (c.mode !== 'ipvs' && c.ipvs.strictARP) {
    // kube-proxy ignores it outside IPVS mode too; said because someone may expect it to act.
    say('ipvs.strictARP', 'has no effect outside IPVS mode (as in kube-proxy)');
  }
  return out;
}

function describeFlagValue(spec: FlagSpec, value: unknown): string {
  if (spec.kind === 'duration' && typeof value === 'number') return formatGoDuration(value);
  if (Array.isArray(value)) return value.join(',');
  if (typeof value === 'object' && value !== null) {
    return Object.entries(value)
      .map(([k, v]) => `${k}=${String(v)}`)
      .join(',');
  }
  return String(value);
}

/**
 * Flags + `--config` file → the configuration in effect, ProxyOptions and the notices for the
 * operator. Throws FlagError / Error naming the flag, or ConfigError naming the file's field.
 */
export function resolveConfiguration(input: ResolveInput): ResolvedConfiguration {
  const specs = input.specs ?? PROXY_FLAGS;
  const { flags } = input;
  const notices: Notice[] = [];
  let config: ProxyConfig;
  if (input.file) {
    for (const w of input.file.parsed.warnings) {
      notices.push({ subject: `${input.file.path}: ${w.field}`, message: w.message });
    }
    for (const name of flags.given) {
      const spec = specs.find((s) => s.name === name);
      if (spec?.withConfig !== 'file') continue;
      const where = spec.field ? `set ${spec.field} in the file` : 'it has no place in the file';
      notices.push({
        subject: `--${name}`,
        message: `ignored because --config is given: kube-proxy ignores this flag then, and so does svcplane (${where})`,
      });
    }
    const overrides = overridesFromFlags(flags, specs, (s) => s.withConfig === 'flag');
    config = mergeConfig(input.file.parsed.config, overrides);
  } else {
    const overrides = overridesFromFlags(flags, specs, () => true);
    // kube-proxy's deprecated --healthz-port / --metrics-port, only without a file.
    const port = (k: string): number | undefined =>
      typeof flags.values[k] === 'number' ? flags.values[k] : undefined;
    const healthz = applyDeprecatedPort(overrides.healthzBindAddress, port('healthzPort'));
    const metrics = applyDeprecatedPort(overrides.metricsBindAddress, port('metricsPort'));
    try {
      config = mergeConfig(undefined, {
        ...overrides,
        ...(healthz !== undefined ? { healthzBindAddress: healthz } : {}),
        ...(metrics !== undefined ? { metricsBindAddress: metrics } : {}),
      });
    } catch (err) {
      if (err instanceof ConfigError) throw asFlagError(err);
      throw err;
    }
  }
  for (const name of flags.given) {
    const spec = specs.find((s) => s.name === name);
    if (spec?.deprecated) {
      const value = describeFlagValue(spec, flags.values[attributeName(name)]);
      notices.push({ subject: `--${name}=${value}`, message: `deprecated: ${spec.deprecated}` });
    }
  }
  notices.push(...unhonouredSettings(config));
  const configPathGiven = input.file?.path;
  const options = toOptions(config, flags.values, configPathGiven, input.hostname ?? osHostname());
  return { config, options, notices };
}

/**
 * Commander-style raw values (attribute → typed value, as the parser produces them) → ProxyOptions,
 * every key present counting as given. For callers that build options in code (tests, `trace`).
 */
export function resolveProxyOptions(raw: Readonly<Record<string, unknown>>): ProxyOptions {
  const given: string[] = [];
  const values: Record<string, unknown> = {};
  for (const spec of PROXY_FLAGS) {
    const key = attributeName(spec.name);
    if (raw[key] === undefined) continue;
    given.push(spec.name);
    values[key] = raw[key];
  }
  return resolveConfiguration({ flags: { values, given, positionals: [] } }).options;
}

/** Binary names for one family, derived from --iptables-binary (iptables-legacy → ip6tables-legacy-save …). */
export function iptablesBinaries(
  binary: string,
  family: IPFamilyName,
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

/** ProxyOptions from command-line arguments alone (no --config file): for code and tests. */
export function optionsFromArgs(args: readonly string[]): ProxyOptions {
  return resolveConfiguration({ flags: parseCommandLine(args, PROXY_FLAGS) }).options;
}
