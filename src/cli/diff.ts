import { CommanderError, InvalidArgumentError, type Command } from 'commander';
import { loadState } from '../kube/open-source.js';
import { modeNamed } from '../modes/registry.js';
import { describeProblem, type ClusterState } from '../model/types.js';
import { configureLogging } from '../util/log.js';
import type { FlagSpec } from '../config/flags.js';
import { resolveProxyOptions, type ProxyOptions } from '../config/options.js';
import { commandUsage, describeFailure } from './proxy.js';
import { loadConfiguration, logNotices, RENDER_FLAGS } from './proxy-options.js';

/**
 * `svcplane diff`: what svcplane would program for the current state (from --manifests or the
 * cluster, rendered with the same configuration and node facts as the proxier) against what the
 * kernel holds. Exit 0 in sync, 1 on drift, 2 on error. The mode in effect reads and compares
 * (DataplaneMode.inspect, src/modes/contract.ts); this module prints.
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
    err.write(`svcplane diff: ${describeFailure(e)}\n`);
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
  const mode = modeNamed(opts.proxyMode);
  const result = await mode.inspect(opts, state, netns);
  // --network-policy: the policy table against the plan of this state (src/netpol).
  const policy = opts.networkPolicy ? await diffPolicyTable(opts, state, netns) : undefined;
  const inSync = result.inSync && (policy?.lines.length ?? 0) === 0;
  const notes = [...result.notes, ...state.problems.map((p) => describeProblem(p))];
  for (const note of notes) err.write(`note: ${note}\n`);
  if (output === 'json') {
    const networkPolicy = policy
      ? { inSync: policy.lines.length === 0, differences: policy.lines }
      : undefined;
    const json = {
      inSync,
      mode: mode.name,
      families: result.families,
      ...(networkPolicy ? { networkPolicy } : {}),
    };
    out.write(`${JSON.stringify(json, null, 2)}\n`);
  } else {
    out.write(result.formatText());
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
    nftBinary: opts.nftBinary,
    ...(netns !== undefined ? { netns } : {}),
  });
  return enforcer.compare(enforcer.plan(state));
}
