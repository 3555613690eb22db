import type { ProxyOptions } from '../config/options.js';
import { iptablesMode } from '../iptables/mode.js';
import { ipvsMode } from '../ipvs/mode.js';
import { nftablesMode } from '../nftables/mode.js';
import { StartupError } from '../util/errors.js';
import { CommandError } from '../util/exec.js';
import { log } from '../util/log.js';
import type { Backend } from './backend.js';
import type {
  CleanupOutcome,
  DataplaneMode,
  ModeStart,
  TraceKernel,
  TraceKernelRequest,
} from './contract.js';

/**
 * Every dataplane mode, found by its --proxy-mode name. Adding a mode = its folder with a `mode.ts`
 * implementing DataplaneMode (./contract.ts) + one entry here. Nothing else branches on a mode's name.
 */
const MODES: readonly DataplaneMode[] = [iptablesMode, ipvsMode, nftablesMode];

/** The mode named by --proxy-mode (the configuration has validated the name). */
export function modeNamed(name: ProxyOptions['proxyMode']): DataplaneMode {
  const mode = MODES.find((m) => m.name === name);
  if (mode === undefined) throw new Error(`--proxy-mode ${String(name)}: no such mode`);
  return mode;
}

/** Every registered mode, in registration order. */
export function allModes(): readonly DataplaneMode[] {
  return MODES;
}

/**
 * The mode to run: the configured one when its availability probe passes, else its fallback (with
 * the reason logged), and its backends. The returned options carry the mode in effect.
 */
export async function startMode(opts: ProxyOptions): Promise<{
  readonly options: ProxyOptions;
  readonly mode: DataplaneMode;
  readonly backends: Backend[];
}> {
  const mode = modeNamed(opts.proxyMode);
  const reason = await mode.unavailable(opts);
  if (reason !== undefined) {
    if (mode.fallback === undefined) throw new Error(`${mode.title} proxy mode is unavailable: ${reason}`);
    log.warn(
      `${mode.title} proxy mode is unavailable (${reason}); falling back to ${mode.fallback} mode`,
      mode.probeContext?.(opts) ?? {},
    );
    return startMode({ ...opts, proxyMode: mode.fallback });
  }
  const start: ModeStart = {
    cleanupOtherModes: () =>
      cleanupModes(
        MODES.filter((m) => m !== mode),
        opts,
      ),
  };
  return { options: opts, mode, backends: await mode.createBackends(opts, start) };
}

/**
 * The daemon's backends: the mode's (startMode), and with --network-policy the policy enforcer after
 * them (a rule producer of its own, its own nftables table, whatever the mode).
 */
export async function startDataplane(opts: ProxyOptions): Promise<{
  readonly options: ProxyOptions;
  readonly mode: DataplaneMode;
  readonly backends: Backend[];
}> {
  const started = await startMode(opts);
  if (!started.options.networkPolicy) return started;
  const { NetpolEnforcer } = await import('../netpol/enforcer.js');
  const enforcer = new NetpolEnforcer({
    nodeName: opts.hostnameOverride,
    families: opts.ipFamilies,
    nftBinary: opts.nftBinary,
  });
  try {
    // Probed at start-up: a node without nft or nf_tables (User-mode Linux's kernel) must not run
    // with every policy unenforced, nor retry a failing setup forever with the Services unprogrammed.
    await enforcer.setup();
  } catch (err) {
    throw new StartupError(
      `--network-policy: nftables is not usable here (${err instanceof Error ? err.message : String(err)}); ` +
        'NetworkPolicy cannot be enforced on this node: refusing rather than running without it',
      { cause: err },
    );
  }
  return { ...started, backends: [...started.backends, enforcer] };
}

/** The given modes' own rules removed, highest cleanupPriority first. */
async function cleanupModes(
  modes: readonly DataplaneMode[],
  opts: Pick<ProxyOptions, 'iptablesBinary' | 'nftBinary'>,
): Promise<CleanupOutcome[]> {
  const ordered = [...modes].sort((a, b) => b.cleanupPriority - a.cleanupPriority);
  const outcomes: CleanupOutcome[] = [];
  for (const mode of ordered) outcomes.push(...(await mode.cleanup(opts)));
  return outcomes;
}

/** kube-proxy --cleanup: every mode's own rules, highest cleanupPriority first. */
export async function cleanupEveryMode(
  opts: Pick<ProxyOptions, 'iptablesBinary' | 'nftBinary'>,
): Promise<CleanupOutcome[]> {
  const outcomes = await cleanupModes(MODES, opts);
  // The NetworkPolicy enforcer's table (whatever the mode).
  try {
    const { cleanupNetpol } = await import('../netpol/enforcer.js');
    const removed = await cleanupNetpol({ nftBinary: opts.nftBinary });
    outcomes.push({
      part: 'netpol',
      text: removed ? 'removed table inet svcplane-netpol' : 'no policy table',
    });
  } catch (error) {
    // No nft here: nothing of ours can be in nf_tables' policy table either.
    if (!(error instanceof CommandError && error.reason === 'not-found'))
      outcomes.push({ part: 'netpol', error });
  }
  return outcomes;
}

/** What `svcplane trace` walks: each mode adds what it reads of the kernel, in registration order. */
export async function readTraceKernel(request: TraceKernelRequest): Promise<TraceKernel> {
  let kernel: TraceKernel = {};
  for (const mode of MODES) kernel = await mode.traceKernel(request, kernel);
  return kernel;
}
