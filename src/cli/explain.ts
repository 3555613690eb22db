import { InvalidArgumentError, type Command } from 'commander';
import { explainService, formatExplainText, type ExplainFamilyInput } from '../debug/explain.js';
import { diffRulesets } from '../debug/diff.js';
import { buildOwnerIndex } from '../debug/owners.js';
import { jumpRules } from '../iptables/jumps.js';
import { nodeContext } from '../model/selection.js';
import { setVerbosity } from '../util/log.js';
import {
  describe,
  desiredRules,
  exitTwoOnUsageError,
  loadState,
  outputOption,
  readKernelRules,
  readIpvsNode,
} from './diff.js';
import { addProxyOptions, resolveProxyOptions, type ProxyOptions } from './proxy-options.js';
import { explainIpvs, formatIpvsExplainLines } from '../debug/ipvs-explain.js';
import type { ClusterState } from '../model/types.js';

/**
 * `svcplane explain NAMESPACE/NAME`: frontends, endpoints by category, the kernel's chains and rules
 * for the Service with packet counters, and what looks wrong. Exit 0 when explained (warnings or
 * not), 2 on error or when the Service is unknown to both the state and the kernel.
 */

function serviceArg(v: string): string {
  if (!/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?\/[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(v)) {
    throw new InvalidArgumentError('expected NAMESPACE/NAME');
  }
  return v;
}

export function registerExplainCommand(program: Command): void {
  const cmd = addProxyOptions(
    program
      .command('explain')
      .description(
        "explain one Service on this node: frontends, endpoints, the kernel's rules and counters, warnings",
      )
      .argument('<namespace/name>', 'the Service', serviceArg),
  )
    .option('--output <format>', 'text or json', outputOption, 'text')
    .option('--netns <name>', 'inspect the rules of this named network namespace (e.g. a sandbox node)');
  exitTwoOnUsageError(cmd).action(async (key: string, raw: Record<string, unknown>) => {
    process.exitCode = await runExplain(key, raw, process.stdout, process.stderr);
  });
}

interface Writer {
  write(text: string): unknown;
}

export async function runExplain(
  key: string,
  raw: Record<string, unknown>,
  out: Writer,
  err: Writer,
): Promise<number> {
  try {
    const opts = resolveProxyOptions(raw);
    setVerbosity(opts.verbosity);
    if (opts.proxyMode !== 'iptables' && opts.proxyMode !== 'ipvs') {
      throw new Error(
        `--proxy-mode ${String(opts.proxyMode)}: explain supports iptables and ipvs modes only`,
      );
    }
    const netns = typeof raw.netns === 'string' ? raw.netns : undefined;
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
