import { CommanderError, InvalidArgumentError, type Command } from 'commander';
import { diffRulesets, formatDriftText, type FamilyDrift } from '../debug/diff.js';
import { buildOwnerIndex } from '../debug/owners.js';
import { Iptables } from '../iptables/iptables.js';
import { jumpRules } from '../iptables/jumps.js';
import { gatherNodeFacts, readKernelFlags, renderConfigFor } from '../iptables/proxier.js';
import { renderRestoreInput } from '../iptables/render.js';
import { parseIptablesSave, type SavedRuleset } from '../iptables/save-parse.js';
import type { ClusterState, IPFamily } from '../model/types.js';
import { CommandError, run } from '../util/exec.js';
import { parseIpAddressJson } from '../util/netif.js';
import {
  diffIpvsState,
  formatIpvsDriftText,
  type IpvsFamilyDrift,
  type IpvsKernelView,
} from '../debug/ipvs-diff.js';
import { alignWithKubeProxy, detectIpvsLayout } from '../debug/ipvs-kube-proxy.js';
import { parseIpsetSave } from '../ipvs/ipset.js';
import { parseIpvsadmSave } from '../ipvs/ipvsadm.js';
import { planIpvs, type IpvsDesired } from '../ipvs/plan.js';
import { DUMMY_DEVICE, ipvsPlanConfig, ipvsRulesConfig } from '../ipvs/proxier.js';
import { IPVS_JUMPS, renderIpvsRules } from '../ipvs/rules.js';
import { ipvsConfigFor } from '../ipvs/backend-factory.js';
import { configureLogging } from '../util/log.js';
import type { FlagSpec } from '../config/flags.js';
import { iptablesBinaries, resolveProxyOptions, type ProxyOptions } from '../config/options.js';
import { nodePodCIDRsOf } from './node-cidr.js';
import { commandUsage, createSource, describeFailure, iptablesProxierConfig } from './proxy.js';
import { loadConfiguration, logNotices, RENDER_FLAGS } from './proxy-options.js';

/**
 * `svcplane diff`: what svcplane would program for the current state (from --manifests or the
 * cluster, rendered with the same configuration and node facts as the proxier) against what the
 * kernel holds (iptables-save). Exit 0 in sync, 1 on drift, 2 on error. The comparison itself is
 * pure (src/debug/diff.ts); this module only gathers its inputs.
 */

export type OutputFormat = 'text' | 'json';

export function outputOption(v: string): OutputFormat {
  if (v !== 'text' && v !== 'json') throw new InvalidArgumentError('expected text or json');
  return v;
}

/** Usage errors exit 2 like every other error of the debugging commands (help/version stay 0). */
export function exitTwoOnUsageError(cmd: Command): Command {
  return cmd.exitOverride((err) => {
    if (err.exitCode === 0) throw err;
    throw new CommanderError(2, err.code, err.message);
  });
}

/** `--output` and `--netns` of the debugging commands (diff, explain). */
export const INSPECT_FLAGS: readonly FlagSpec[] = [
  {
    name: 'output',
    kind: 'string',
    value: 'format',
    default: 'text',
    help: 'text or json',
    origin: 'svcplane',
    withConfig: 'flag',
    support: 'honoured',
  },
  {
    name: 'netns',
    kind: 'string',
    value: 'name',
    default: '',
    help: 'inspect the rules of this named network namespace (e.g. a sandbox node)',
    origin: 'svcplane',
    withConfig: 'flag',
    support: 'honoured',
  },
];

export function registerDiffCommand(program: Command): void {
  // Its kube-proxy style flags are parsed by diffMain (main.ts routes the command); listed for help.
  program
    .command('diff')
    .description(
      'compare the rules svcplane would program for the current state with the kernel (exit 0 in sync, 1 drift, 2 error)',
    )
    .helpOption(false);
}

interface Writer {
  write(text: string): unknown;
}

/** `svcplane diff [flags]`: exit 0 in sync, 1 drift, 2 error (usage errors included). */
export async function diffMain(args: readonly string[], out: Writer, err: Writer): Promise<number> {
  const specs = [...RENDER_FLAGS, ...INSPECT_FLAGS];
  if (args.includes('-h') || args.includes('--help')) {
    out.write(
      commandUsage(
        'svcplane diff [flags]',
        'Compare the rules svcplane would program (from --manifests or the cluster) with the kernel.',
        specs,
      ),
    );
    return 0;
  }
  try {
    const loaded = await loadConfiguration(args, specs);
    configureLogging(loaded.options.logging);
    logNotices(loaded.notices);
    return await diffWith(loaded.options, loaded.flags.values, out, err);
  } catch (e) {
    err.write(`svcplane diff: ${describeFailure(e)}\n`);
    return 2;
  }
}

/** diff from raw flag values (attribute → typed value), without a --config file. */
export async function runDiff(raw: Record<string, unknown>, out: Writer, err: Writer): Promise<number> {
  try {
    return await diffWith(resolveProxyOptions(raw), raw, out, err);
  } catch (e) {
    err.write(`svcplane diff: ${describe(e)}\n`);
    return 2;
  }
}

async function diffWith(
  opts: ProxyOptions,
  values: Readonly<Record<string, unknown>>,
  out: Writer,
  err: Writer,
): Promise<number> {
  const output = typeof values.output === 'string' ? values.output : 'text';
  if (output !== 'text' && output !== 'json') throw new Error(`--output: "${output}": expected text or json`);
  const netns = typeof values.netns === 'string' && values.netns !== '' ? values.netns : undefined;
  const state = await loadState(opts);
  const result = await diffNode(opts, state, netns);
  // --network-policy: the policy table against the plan of this state (src/netpol).
  const policy = opts.networkPolicy ? await diffPolicyTable(opts, state, netns) : undefined;
  const inSync = result.inSync && (policy?.lines.length ?? 0) === 0;
  for (const note of result.notes) err.write(`note: ${note}\n`);
  if (output === 'json') {
    const mode = result.mode ?? 'iptables';
    const networkPolicy = policy
      ? { inSync: policy.lines.length === 0, differences: policy.lines }
      : undefined;
    out.write(
      `${JSON.stringify({ inSync, mode, families: result.families, ...(networkPolicy ? { networkPolicy } : {}) }, null, 2)}\n`,
    );
  } else if (result.mode === 'ipvs') {
    out.write(formatIpvsDriftText(result.families as readonly IpvsFamilyDrift[]));
  } else {
    out.write(formatDriftText(result.families as readonly FamilyDrift[]));
  }
  if (policy && output !== 'json') {
    const { formatPolicyDiff } = await import('../netpol/inspect.js');
    out.write(formatPolicyDiff(policy));
  }
  return inSync ? 0 : 1;
}

async function diffPolicyTable(
  opts: ProxyOptions,
  state: ClusterState,
  netns: string | undefined,
): Promise<{ readonly lines: readonly string[] }> {
  const { NetpolEnforcer } = await import('../netpol/enforcer.js');
  const enforcer = new NetpolEnforcer({
    nodeName: opts.hostnameOverride,
    families: opts.ipFamilies,
    ...(netns !== undefined ? { netns } : {}),
  });
  return enforcer.compare(enforcer.plan(state));
}

export interface NodeDiff {
  readonly inSync: boolean;
  readonly mode?: 'ipvs';
  readonly families: readonly FamilyDrift[] | readonly IpvsFamilyDrift[];
  readonly notes: readonly string[];
}

/** Reads the kernel of every family and compares it with the rendered state. */
export async function diffNode(
  opts: ProxyOptions,
  state: ClusterState,
  netns: string | undefined,
): Promise<NodeDiff> {
  if (opts.proxyMode === 'ipvs') return diffIpvsNode(opts, state, netns);
  if (opts.proxyMode !== 'iptables') {
    throw new Error(`--proxy-mode ${String(opts.proxyMode)}: diff supports iptables and ipvs modes only`);
  }
  const families: FamilyDrift[] = [];
  const notes: string[] = [];
  const owners = buildOwnerIndex(state);
  for (const family of opts.ipFamilies) {
    const actual = await readKernelRules(opts, family, netns);
    if (actual === undefined) {
      notes.push(`${family}: ${iptablesBinaries(opts.iptablesBinary, family).save} not available; skipped`);
      continue;
    }
    const desired = await desiredRules(opts, family, state, netns);
    families.push(
      diffRulesets({
        family,
        desired,
        actual,
        owners,
        jumps: jumpRules(family, { localhostNodePorts: opts.localhostNodePorts }),
      }),
    );
  }
  if (families.length === 0) throw new Error('no usable iptables binary for any IP family');
  for (const p of state.problems) {
    const o = p.object;
    notes.push(`skipped ${o.kind} ${o.namespace ? `${o.namespace}/` : ''}${o.name}: ${p.field}: ${p.reason}`);
  }
  return { inSync: families.every((f) => f.inSync), families, notes };
}

/** One complete state from the source (manifests or the API), then the source is stopped. */
export async function loadState(opts: ProxyOptions): Promise<ClusterState> {
  const source = await createSource(opts, true);
  try {
    await source.start();
    const state = source.current();
    if (!state) throw new Error('the source produced no state');
    return state;
  } finally {
    await source.stop();
  }
}

/** The restore input the proxier would write for `state`, parsed (no stale-chain deletions). */
export async function desiredRules(
  opts: ProxyOptions,
  family: IPFamily,
  state: ClusterState,
  netns: string | undefined,
): Promise<SavedRuleset> {
  // NodeCIDR detection: the pod CIDRs of the Node object in this state, as the proxier would use.
  const withPodCIDRs =
    opts.detectLocalMode === 'NodeCIDR' && opts.nodePodCIDRs === undefined
      ? { ...opts, nodePodCIDRs: nodePodCIDRsOf(state, opts.hostnameOverride) ?? [] }
      : opts;
  const pc = { ...iptablesProxierConfig(withPodCIDRs, family), ...(netns !== undefined ? { netns } : {}) };
  const ipt = new Iptables({ family, netns, binaries: pc.binaries });
  const facts = await gatherNodeFacts(pc, state);
  const flags = await readKernelFlags(ipt, netns);
  const rendered = renderRestoreInput({
    state,
    config: renderConfigFor(pc, facts, flags),
    existingServiceChains: new Set(),
  });
  return parseIptablesSave(rendered.restoreInput);
}

/** iptables-save of one family, parsed; undefined when that family's binary is missing. */
export async function readKernelRules(
  opts: Pick<ProxyOptions, 'iptablesBinary'>,
  family: IPFamily,
  netns: string | undefined,
  counters = false,
): Promise<SavedRuleset | undefined> {
  const ipt = new Iptables({ family, netns, binaries: iptablesBinaries(opts.iptablesBinary, family) });
  try {
    return parseIptablesSave(await ipt.save(undefined, { counters }));
  } catch (e) {
    if (e instanceof CommandError && e.reason === 'not-found') return undefined;
    throw e;
  }
}

export function describe(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

// ---- IPVS mode ----

/** What an IPVS node holds and wants for one family (the inputs of the pure IPVS diff). */
export interface IpvsNodeFamily {
  readonly family: IPFamily;
  readonly desired: IpvsDesired;
  readonly kernel: IpvsKernelView;
  readonly drift: IpvsFamilyDrift;
  /** `ipvsadm -Ln`, for connection counters. */
  readonly listing: string;
}

/** Reads the kernel once (ipvsadm, ipset, addresses) and compares every family with the plan. */
export async function readIpvsNode(
  opts: ProxyOptions,
  state: ClusterState,
  netns: string | undefined,
): Promise<{ families: IpvsNodeFamily[]; notes: string[] }> {
  const exec = (argv: string[]) => run(argv, { netns, timeoutMs: 30_000 });
  const [saved, listed, sets, addrs] = await Promise.all([
    exec(['ipvsadm', '-Sn']),
    exec(['ipvsadm', '-Ln']),
    exec(['ipset', 'save']),
    exec(['ip', '-j', 'address', 'show']),
  ]);
  const table = parseIpvsadmSave(saved.stdout);
  const ipsets = parseIpsetSave(sets.stdout);
  const addresses = parseIpAddressJson(addrs.stdout);
  const owners = buildOwnerIndex(state);
  const families: IpvsNodeFamily[] = [];
  const notes: string[] = [];
  for (const family of opts.ipFamilies) {
    const config = ipvsConfigFor(opts, family);
    const ipt = new Iptables({ family, netns, binaries: config.iptablesBinaries });
    const actual = await readKernelRules(opts, family, netns);
    if (actual === undefined) {
      notes.push(`${family}: ${iptablesBinaries(opts.iptablesBinary, family).save} not available; skipped`);
      continue;
    }
    const desired = planIpvs(state, ipvsPlanConfig(config, state, addresses), family);
    const rules = parseIptablesSave(
      renderIpvsRules(desired, ipvsRulesConfig(config, await ipt.supportsRandomFully())),
    );
    // kube-proxy's layout: compare like with like, set its differences apart (./ipvs-kube-proxy.ts).
    const layout = detectIpvsLayout(actual, ipsets, family);
    const aligned =
      layout === 'kube-proxy'
        ? alignWithKubeProxy({ family, desired: rules, actual, sets: desired.sets })
        : undefined;
    const iptables = diffRulesets({
      family,
      desired: aligned?.desired ?? rules,
      actual: aligned?.actual ?? actual,
      owners,
      jumps: IPVS_JUMPS,
    });
    const kernel: IpvsKernelView = {
      table,
      ipsets,
      boundAddresses: addresses
        .filter((a) => a.ifname === DUMMY_DEVICE && a.family === family)
        .map((a) => a.ip),
    };
    const drift = diffIpvsState({
      family,
      desired,
      kernel,
      excludeCIDRs: config.excludeCIDRs,
      iptables,
      layout,
      ...(aligned ? { takeover: aligned.changes } : {}),
    });
    families.push({ family, desired, kernel, drift, listing: listed.stdout });
  }
  if (families.length === 0) throw new Error('no usable iptables binary for any IP family');
  return { families, notes };
}

async function diffIpvsNode(
  opts: ProxyOptions,
  state: ClusterState,
  netns: string | undefined,
): Promise<NodeDiff> {
  const { families, notes } = await readIpvsNode(opts, state, netns);
  for (const p of state.problems) {
    const o = p.object;
    notes.push(`skipped ${o.kind} ${o.namespace ? `${o.namespace}/` : ''}${o.name}: ${p.field}: ${p.reason}`);
  }
  const drifts = families.map((f) => f.drift);
  return { inSync: drifts.every((f) => f.inSync), mode: 'ipvs', families: drifts, notes };
}
