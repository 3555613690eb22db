import type { Command } from 'commander';
import { loadState } from '../kube/open-source.js';
import { modeNamed } from '../modes/registry.js';
import { configureLogging } from '../util/log.js';
import { resolveProxyOptions, type ProxyOptions } from '../config/options.js';
import { INSPECT_FLAGS } from './diff.js';
import { commandUsage, describeFailure } from './proxy.js';
import { loadConfiguration, logNotices, RENDER_FLAGS } from './proxy-options.js';

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
  try {
    const target = await explainTarget(
      args,
      specs,
      'Service',
      [
        'svcplane explain NAMESPACE/NAME [flags]',
        "Explain one Service on this node: frontends, endpoints, the kernel's rules and counters, warnings.",
      ],
      out,
    );
    if (target === undefined) return 0;
    return await explainWith(target.key, target.loaded.options, target.loaded.flags.values, out, err);
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
    err.write(`svcplane explain: ${describeFailure(e)}\n`);
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
    const netns = typeof raw.netns === 'string' && raw.netns !== '' ? raw.netns : undefined;
    const mode = modeNamed(opts.proxyMode);
    const state = await loadState(opts);
    const explained = await mode.explain(key, opts, state, netns);
    out.write(raw.output === 'json' ? `${JSON.stringify(explained.report, null, 2)}\n` : explained.text);
    if (!explained.known) {
      err.write(`svcplane explain: Service ${key} not found (neither in the state nor in the kernel)\n`);
      return 2;
    }
    return 0;
  } catch (e) {
    err.write(`svcplane explain: ${describeFailure(e)}\n`);
    return 2;
  }
}

type FlagSpecs = Parameters<typeof loadConfiguration>[1];

/**
 * What `explain` and `explain pod` share before they differ: --help (printed; then undefined), the
 * flags and the one NAMESPACE/NAME positional (the Service's or the pod's), logging configured.
 */
async function explainTarget(
  args: readonly string[],
  specs: FlagSpecs,
  what: 'Service' | 'pod',
  [usage, summary]: readonly [string, string],
  out: Writer,
): Promise<{ loaded: Awaited<ReturnType<typeof loadConfiguration>>; key: string } | undefined> {
  if (args.includes('-h') || args.includes('--help')) {
    out.write(commandUsage(usage, summary, specs));
    return undefined;
  }
  const loaded = await loadConfiguration(args, specs, { positionals: 1 });
  const key = loaded.flags.positionals[0];
  if (key === undefined || !SERVICE_KEY.test(key)) {
    throw new Error(`expected the ${what} as NAMESPACE/NAME, got ${JSON.stringify(key ?? '')}`);
  }
  configureLogging(loaded.options.logging);
  logNotices(loaded.notices);
  return { loaded, key };
}

/**
 * `svcplane explain pod NAMESPACE/NAME [flags]`: the NetworkPolicies selecting the pod, what they
 * allow, and whether the kernel's policy table (inet svcplane-netpol) says the same. Exit 0 when
 * explained, 2 on error or when the pod is unknown.
 */
async function explainPodMain(
  args: readonly string[],
  specs: FlagSpecs,
  out: Writer,
  err: Writer,
): Promise<number> {
  try {
    const target = await explainTarget(
      args,
      specs,
      'pod',
      [
        'svcplane explain pod NAMESPACE/NAME [flags]',
        "Explain NetworkPolicy for one pod: the policies selecting it, what they allow, the kernel's table.",
      ],
      out,
    );
    if (target === undefined) return 0;
    const { loaded, key } = target;
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
      nftBinary: opts.nftBinary,
      ...(netns !== undefined ? { netns } : {}),
    });
    let kernel;
    try {
      kernel = await enforcer.compare(enforcer.plan(state));
    } catch (e) {
      kernel = { lines: [`cannot read the policy table: ${describeFailure(e)}`] };
    }
    const report = explainPod(state, opts.hostnameOverride, key, kernel);
    out.write(report.text);
    return report.found ? 0 : 2;
  } catch (e) {
    err.write(`svcplane explain pod: ${describeFailure(e)}\n`);
    return 2;
  }
}
