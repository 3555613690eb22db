import type { Command } from 'commander';
import { explainService, formatExplainText, type ExplainFamilyInput } from '../debug/explain.js';
import { diffRulesets } from '../debug/diff.js';
import { buildOwnerIndex } from '../debug/owners.js';
import { jumpRules } from '../iptables/jumps.js';
import { nodeContext } from '../model/selection.js';
import { configureLogging } from '../util/log.js';
import { resolveProxyOptions, type ProxyOptions } from '../config/options.js';
import { describe, desiredRules, INSPECT_FLAGS, loadState, readKernelRules, readIpvsNode } from './diff.js';
import { commandUsage, describeFailure } from './proxy.js';
import { loadConfiguration, logNotices, RENDER_FLAGS } from './proxy-options.js';
import { explainIpvs, formatIpvsExplainLines } from '../debug/ipvs-explain.js';
import type { ClusterState } from '../model/types.js';

/**
 * `svcplane explain NAMESPACE/NAME`: frontends, endpoints by category, the kernel's chains and rules
 * for the Service with packet counters, and what looks wrong. Exit 0 when explained (warnings or
 * not), 2 on error or when the Service is unknown to both the state and the kernel.
 */

const SERVICE_KEY = /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?\/[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/;

export function registerExplainCommand(program: Command): void {
  // Its kube-proxy style flags are parsed by explainMain (main.ts routes the command); listed for help.
  program
    .command('explain')
    .description(
      "explain one Service on this node: frontends, endpoints, the kernel's rules and counters, warnings",
    )
    .argument('<namespace/name>', 'the Service')
    .helpOption(false);
}

interface Writer {
  write(text: string): unknown;
}

/** `svcplane explain NAMESPACE/NAME [flags]`. */
export async function explainMain(args: readonly string[], out: Writer, err: Writer): Promise<number> {
  const specs = [...RENDER_FLAGS, ...INSPECT_FLAGS];
  if (args[0] === 'pod') return explainPodMain(args.slice(1), specs, out, err);
  if (args.includes('-h') || args.includes('--help')) {
    out.write(
      commandUsage(
        'svcplane explain NAMESPACE/NAME [flags]',
        "Explain one Service on this node: frontends, endpoints, the kernel's rules and counters, warnings.",
        specs,
      ),
    );
    return 0;
  }
  try {
    const loaded = await loadConfiguration(args, specs, { positionals: 1 });
    const key = loaded.flags.positionals[0];
    if (key === undefined || !SERVICE_KEY.test(key)) {
      throw new Error(`expected the Service as NAMESPACE/NAME, got ${JSON.stringify(key ?? '')}`);
    }
    configureLogging(loaded.options.logging);
    logNotices(loaded.notices);
    return await explainWith(key, loaded.options, loaded.flags.values, out, err);
  } catch (e) {
    err.write(`svcplane explain: ${describeFailure(e)}\n`);
    return 2;
  }
}

/** explain from raw flag values (attribute → typed value), without a --config file. */
export async function runExplain(
  key: string,
  raw: Record<string, unknown>,
  out: Writer,
  err: Writer,
): Promise<number> {
  let opts: ProxyOptions;
  try {
    opts = resolveProxyOptions(raw);
  } catch (e) {
    err.write(`svcplane explain: ${describe(e)}\n`);
    return 2;
  }
  return explainWith(key, opts, raw, out, err);
}

async function explainWith(
  key: string,
  opts: ProxyOptions,
  raw: Readonly<Record<string, unknown>>,
  out: Writer,
  err: Writer,
): Promise<number> {
  try {
    if (raw.output !== undefined && raw.output !== 'text' && raw.output !== 'json') {
      throw new Error(`--output: ${JSON.stringify(raw.output)}: expected text or json`);
    }
    if (opts.proxyMode !== 'iptables' && opts.proxyMode !== 'ipvs') {
      throw new Error(
        `--proxy-mode ${String(opts.proxyMode)}: explain supports iptables and ipvs modes only`,
      );
    }
    const netns = typeof raw.netns === 'string' && raw.netns !== '' ? raw.netns : undefined;
    const state = await loadState(opts);
    if (opts.proxyMode === 'ipvs')
      return await explainIpvsMode(key, opts, state, netns, raw.output, out, err);
    const owners = buildOwnerIndex(state);
    const families: ExplainFamilyInput[] = [];
    for (const family of opts.ipFamilies) {
      const kernel = await readKernelRules(opts, family, netns, true);
      if (!kernel) {
        families.push({ family });
        continue;
      }
      const desired = await desiredRules(opts, family, state, netns);
      const drift = diffRulesets({
        family,
        desired,
        actual: kernel,
        owners,
        jumps: jumpRules(family, { localhostNodePorts: opts.localhostNodePorts }),
      });
      families.push({ family, kernel, drift });
    }
    const node = nodeContext(opts.hostnameOverride, state.nodes.get(opts.hostnameOverride)?.labels ?? {});
    const report = explainService({ key, state, node, families });
    out.write(raw.output === 'json' ? `${JSON.stringify(report, null, 2)}\n` : formatExplainText(report));
    if (!report.found && report.warnings.length === 0) {
      err.write(`svcplane explain: Service ${key} not found (neither in the state nor in the kernel)\n`);
      return 2;
    }
    return 0;
  } catch (e) {
    err.write(`svcplane explain: ${describe(e)}\n`);
    return 2;
  }
}

/** IPVS mode: the Service from the state, plus its virtual servers, real servers and ipset entries. */
async function explainIpvsMode(
  key: string,
  opts: ProxyOptions,
  state: ClusterState,
  netns: string | undefined,
  output: unknown,
  out: Writer,
  err: Writer,
): Promise<number> {
  const { families } = await readIpvsNode(opts, state, netns);
  const node = nodeContext(opts.hostnameOverride, state.nodes.get(opts.hostnameOverride)?.labels ?? {});
  // The iptables chains of iptables mode do not exist here: explain the state only, then IPVS.
  const explained = explainService({
    key,
    state,
    node,
    families: opts.ipFamilies.map((family) => ({ family })),
  });
  const base = {
    ...explained,
    warnings: explained.warnings.filter((w) => !/iptables-save not available/.test(w)),
  };
  const ipvs = explainIpvs({ key, families });
  const report = {
    ...base,
    mode: 'ipvs',
    ipvs: ipvs.families,
    warnings: [...base.warnings, ...ipvs.warnings],
  };
  const found = base.found || ipvs.families.some((f) => f.virtualServers.length > 0);
  if (output === 'json') out.write(`${JSON.stringify(report, null, 2)}\n`);
  else out.write(formatExplainText(report, { rules: false, extra: formatIpvsExplainLines(ipvs) }));
  if (!found) {
    err.write(`svcplane explain: Service ${key} not found (neither in the state nor in the kernel)\n`);
    return 2;
  }
  return 0;
}

/**
 * `svcplane explain pod NAMESPACE/NAME [flags]`: the NetworkPolicies selecting the pod, what they
 * allow, and whether the kernel's policy table (inet svcplane-netpol) says the same. Exit 0 when
 * explained, 2 on error or when the pod is unknown.
 */
async function explainPodMain(
  args: readonly string[],
  specs: Parameters<typeof loadConfiguration>[1],
  out: Writer,
  err: Writer,
): Promise<number> {
  if (args.includes('-h') || args.includes('--help')) {
    out.write(
      commandUsage(
        'svcplane explain pod NAMESPACE/NAME [flags]',
        "Explain NetworkPolicy for one pod: the policies selecting it, what they allow, the kernel's table.",
        specs,
      ),
    );
    return 0;
  }
  try {
    const loaded = await loadConfiguration(args, specs, { positionals: 1 });
    const key = loaded.flags.positionals[0];
    if (key === undefined || !SERVICE_KEY.test(key)) {
      throw new Error(`expected the pod as NAMESPACE/NAME, got ${JSON.stringify(key ?? '')}`);
    }
    configureLogging(loaded.options.logging);
    logNotices(loaded.notices);
    const opts = { ...loaded.options, networkPolicy: true };
    const netns =
      typeof loaded.flags.values.netns === 'string' && loaded.flags.values.netns !== ''
        ? loaded.flags.values.netns
        : undefined;
    const state = await loadState(opts);
    const { NetpolEnforcer } = await import('../netpol/enforcer.js');
    const { explainPod } = await import('../netpol/inspect.js');
    const enforcer = new NetpolEnforcer({
      nodeName: opts.hostnameOverride,
      families: opts.ipFamilies,
      ...(netns !== undefined ? { netns } : {}),
    });
    let kernel;
    try {
      kernel = await enforcer.compare(enforcer.plan(state));
    } catch (e) {
      kernel = { lines: [`cannot read the policy table: ${describe(e)}`] };
    }
    const report = explainPod(state, opts.hostnameOverride, key, kernel);
    out.write(report.text);
    return report.found ? 0 : 2;
  } catch (e) {
    err.write(`svcplane explain pod: ${describeFailure(e)}\n`);
    return 2;
  }
}
