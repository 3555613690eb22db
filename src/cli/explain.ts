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
} from './diff.js';
import { addProxyOptions, resolveProxyOptions } from './proxy-options.js';

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
    if (opts.proxyMode !== 'iptables') throw new Error('explain supports iptables mode only (IPVS not yet)');
    const netns = typeof raw.netns === 'string' ? raw.netns : undefined;
    const state = await loadState(opts);
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
