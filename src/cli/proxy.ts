import { writeFile } from 'node:fs/promises';
import type { Command } from 'commander';
import type { Servers } from '../controller/servers-factory.js';
import { Controller } from '../controller/controller.js';
import { formatKubeProxyConfig } from '../config/kube-proxy-config.js';
import { PROXY_FLAGS, TOP_LEVEL_FLAGS, type FlagSpec } from '../config/flags.js';
import type { ProxyOptions } from '../config/options.js';
import { formatFlagHelp } from '../config/reference.js';
import { createSource } from '../kube/open-source.js';
import { cleanupEveryMode, startDataplane } from '../modes/registry.js';
import { describeProblem, type ClusterState } from '../model/types.js';
import { configureLogging, log, logVerbosity, redactText, STACK_VERBOSITY } from '../util/log.js';
import { defaultHeapGrowth, startupHeapGrowth } from '../util/memory.js';
import { setOomScoreAdj } from '../util/process.js';
import { applyConntrackSysctls } from '../conntrack/sysctls.js';
import {
  NODE_POD_CIDR_TIMEOUT_MS,
  resolveNodePodCIDRs,
  StartOnceSource,
  watchNodePodCIDRs,
} from './node-cidr.js';
import { loadConfiguration, logNotices, RENDER_FLAGS, type LoadedConfiguration } from './proxy-options.js';

/**
 * The daemon as kube-proxy's command line runs it (`svcplane [flags]`, `svcplane run [flags]`), with
 * kube-proxy's one-shot actions (--cleanup, --write-config-to, --init-only), and `svcplane sync`
 * (converge once) and `svcplane cleanup`.
 */

/** The usage text of the daemon form. */
export function daemonUsage(commands: string): string {
  return [
    'Usage: svcplane [flags]          run the dataplane daemon, as kube-proxy [flags]',
    '       svcplane COMMAND [...]    (svcplane help COMMAND)',
    '',
    'svcplane programs the Linux kernel (iptables or IPVS) so that Kubernetes Services reach their',
    "pods, as kube-proxy does; it takes kube-proxy's flags and configuration file.",
    commands === '' ? '' : `\nCommands:\n${commands}`,
    formatFlagHelp([...PROXY_FLAGS, ...TOP_LEVEL_FLAGS]),
    '',
  ].join('\n');
}

/** Usage of a flag command (sync, diff, explain). */
export function commandUsage(usage: string, description: string, specs: readonly FlagSpec[]): string {
  return `Usage: ${usage}\n\n${description}\n${formatFlagHelp(specs)}\n`;
}

/** Why a start-up failed, as one line (credentials redacted by content, as the logs are). */
export function describeFailure(err: unknown): string {
  return redactText(err instanceof Error ? err.message : String(err));
}

export function registerProxyCommands(program: Command): void {
  // `run` and `sync` parse their own kube-proxy style flags (main.ts routes them); listed here for help.
  program
    .command('run')
    .description('run the daemon: the same as `svcplane [flags]` (kube-proxy [flags])')
    .helpOption(false);
  program
    .command('sync')
    .description('converge the kernel once from the source and exit (0 once the rules are in the kernel)')
    .helpOption(false);
  program
    .command('cleanup')
    .description('remove every rule svcplane (or kube-proxy) created, like kube-proxy --cleanup')
    .option('--iptables-binary <name>', 'iptables command to use, e.g. iptables-legacy', 'iptables')
    .option('--nft-binary <path>', 'nft command to use, e.g. .nft/bin/nft', 'nft')
    .action(async (raw: { iptablesBinary: string; nftBinary: string }) => {
      process.exitCode = await cleanup(raw);
    });
}

/** Applies the logging settings of a resolved configuration, then says what it ignores. */
function startLogging(loaded: LoadedConfiguration): void {
  configureLogging(loaded.options.logging);
  logNotices(loaded.notices);
}

/**
 * `svcplane [flags]` / `svcplane run [flags]`: kube-proxy's command line. Resolves to the exit
 * status; an expected failure is one line on stderr (exit 1).
 */
export async function daemonMain(args: readonly string[], commands = ''): Promise<number> {
  let loaded: LoadedConfiguration;
  try {
    if (args.includes('-h') || args.includes('--help')) {
      process.stdout.write(daemonUsage(commands));
      return 0;
    }
    loaded = await loadConfiguration(args, [...PROXY_FLAGS, ...TOP_LEVEL_FLAGS]);
  } catch (err) {
    process.stderr.write(`svcplane: ${describeFailure(err)}\n`);
    return 1;
  }
  if (loaded.flags.values.version === true) {
    const { packageVersion } = await import('./version.js');
    process.stdout.write(`svcplane v${packageVersion()}\n`);
    return 0;
  }
  startLogging(loaded);
  const { values } = loaded.flags;
  try {
    if (typeof values.writeConfigTo === 'string' && values.writeConfigTo !== '') {
      await writeFile(values.writeConfigTo, formatKubeProxyConfig(loaded.config));
      log.info('wrote the configuration', { file: values.writeConfigTo });
      return 0;
    }
    if (values.cleanup === true) return await cleanup(loaded.options);
    if (values.initOnly === true) return await initOnly(loaded.options);
    return await runDaemon(loaded.options);
  } catch (err) {
    // One line with the cause; the stack only at -v=4 and above.
    log.error(
      `svcplane cannot start: ${describeFailure(err)}`,
      logVerbosity() >= STACK_VERBOSITY ? { error: err } : {},
    );
    return 1;
  }
}

/** `svcplane sync [flags]`. */
export async function syncMain(args: readonly string[]): Promise<number> {
  if (args.includes('-h') || args.includes('--help')) {
    process.stdout.write(
      commandUsage(
        'svcplane sync [flags]',
        'Converge the kernel once from the source (--manifests, else the API) and exit.',
        RENDER_FLAGS,
      ),
    );
    return 0;
  }
  let loaded: LoadedConfiguration;
  try {
    loaded = await loadConfiguration(args, RENDER_FLAGS);
  } catch (err) {
    process.stderr.write(`svcplane sync: ${describeFailure(err)}\n`);
    return 1;
  }
  startLogging(loaded);
  return syncOnce(loaded.options);
}

async function syncOnce(opts: ProxyOptions): Promise<number> {
  let source: StartOnceSource;
  try {
    source = new StartOnceSource(await createSource(opts, true));
  } catch (err) {
    process.stderr.write(`svcplane sync: ${describeFailure(err)}\n`);
    return 1;
  }
  try {
    await source.start();
    refuseBrokenFiles(source.current());
    const resolved = await resolveNodePodCIDRs(opts, source, 0);
    const controller = new Controller(source, (await startDataplane(resolved)).backends, resolved);
    const reports = await controller.syncOnce();
    for (const r of reports) {
      process.stdout.write(
        `${r.backend}: ${r.full ? 'full' : 'partial'} sync, ${r.lines} lines, ${r.writtenServices} services written, ${r.staleChains} stale chains removed, ${Math.round(r.durationMs)} ms\n`,
      );
    }
    const problems = controller.source.current()?.problems ?? [];
    for (const p of problems) process.stderr.write(`${describeProblem(p, { withSource: true })}\n`);
    return 0;
  } catch (err) {
    process.stderr.write(`svcplane sync failed: ${describeFailure(err)}\n`);
    await source.stop().catch(() => undefined);
    return 1;
  }
}

/**
 * A one-shot sync has no last good content for a manifest file it cannot read or parse: converging
 * without it would delete that file's Services. Refuse instead (the kernel stays as it is); invalid
 * objects inside readable files are skipped and reported as usual.
 */
function refuseBrokenFiles(state: ClusterState | undefined): void {
  const broken = (state?.problems ?? []).filter((p) => p.object.kind === 'File');
  if (broken.length === 0) return;
  const list = broken.map((p) => `${p.object.source ?? p.object.name}: ${p.reason}`).join('; ');
  throw new Error(`cannot use ${broken.length} manifest file(s), rules left unchanged: ${list}`);
}

/** Resolves with an exit status when svcplane should stop: 0 on SIGTERM/SIGINT, or `request(code)`. */
function stopRequests(): { readonly stopped: Promise<number>; request(code: number): void; dispose(): void } {
  let resolve: (code: number) => void = () => undefined;
  const stopped = new Promise<number>((r) => (resolve = r));
  let signalled = false;
  const onSignal = (signal: string): void => {
    if (!signalled) log.info('stopping; rules stay in place', { signal });
    signalled = true;
    resolve(0);
  };
  // `on`, not `once`, until dispose(): while a child runs (the kernel watch's `nft monitor`) execa's
  // exit hook also listens, and re-raises the signal, killing node, when it finds itself alone.
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  // The daemon runs until stopped: with both servers off (--healthz-bind-address= and
  // --metrics-bind-address=) and a source whose timers are unref'd, nothing else keeps node alive.
  const keepAlive = setInterval(() => undefined, 2 ** 30);
  return {
    stopped,
    request: (code) => resolve(code),
    dispose: () => {
      clearInterval(keepAlive);
      process.off('SIGTERM', onSignal);
      process.off('SIGINT', onSignal);
    },
  };
}

/**
 * kube-proxy's privileged start-up steps (platformSetup): the process's OOM score and the conntrack
 * sysctls. A sysctl the kernel refuses fails the start-up; one this container may not write (read-only
 * /proc/sys or /sys, or outside the host's network namespace) is a warning naming it.
 */
async function privilegedSetup(opts: ProxyOptions): Promise<void> {
  await setOomScoreAdj(opts.oomScoreAdj);
  await applyConntrackSysctls(opts.conntrack);
}

/** `--init-only`: the privileged steps (conntrack sysctls, each backend's kernel settings), then exit. */
async function initOnly(opts: ProxyOptions): Promise<number> {
  await privilegedSetup(opts);
  for (const b of (await startDataplane(opts)).backends) await b.setup();
  log.info('initialization done (--init-only); exiting');
  return 0;
}

/** Resolves once `signal` is aborted. */
function abortion(signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) resolve();
    else signal.addEventListener('abort', () => resolve(), { once: true });
  });
}

async function runDaemon(initial: ProxyOptions): Promise<number> {
  const source = new StartOnceSource(await createSource(initial));
  // Listen for signals before anything waits for the source: the API may never answer the first
  // lists (or never give the Node its pod CIDRs), and SIGTERM must still stop svcplane, status 0.
  const stop = stopRequests();
  const aborted = new AbortController();
  let controller: Controller | undefined;
  let servers: Servers | undefined;
  let unwatch = (): void => undefined;
  const startup = async (): Promise<void> => {
    const wanted = await resolveNodePodCIDRs(initial, source, NODE_POD_CIDR_TIMEOUT_MS, aborted.signal);
    // Probing the binaries first: without iptables (or root) that is the one failure to report.
    const { options: opts, mode, backends } = await startDataplane(wanted);
    if (aborted.signal.aborted) return;
    await privilegedSetup(opts);
    controller = new Controller(source, backends, opts);
    const { startServers } = await import('../controller/servers-factory.js');
    servers = await startServers(opts, controller, mode.metrics);
    if (aborted.signal.aborted) return;
    if (opts.nodePodCIDRs !== undefined) {
      unwatch = watchNodePodCIDRs(source, opts.hostnameOverride, opts.nodePodCIDRs, (now) => {
        // kube-proxy exits here too: the detector is built once, a restart picks up the new CIDRs.
        log.error("the Node's pod CIDRs changed (detect-local-mode NodeCIDR); exiting to restart", {
          node: opts.hostnameOverride,
          was: opts.nodePodCIDRs?.join(','),
          now: now.join(','),
        });
        stop.request(1);
      });
    }
    // The first full sync is the daemon's peak of memory (issue 14): V8 collects its garbage on the
    // way, from the end of the load (the source starts once; a failure is the controller's to report)
    // to the end of the first sync, then goes back to its own pace (util/memory.ts).
    // A stop ends this wait too: a first scan stuck in the kernel (a FUSE read) never resolves.
    await Promise.race([source.start().catch(() => undefined), abortion(aborted.signal)]);
    if (aborted.signal.aborted) return;
    startupHeapGrowth();
    // Resolves after the first sync, or as soon as controller.stop() is called.
    await controller.start();
    defaultHeapGrowth();
    if (!aborted.signal.aborted) {
      log.info('svcplane running', { mode: opts.proxyMode, node: opts.hostnameOverride });
    }
  };
  const started = startup();
  const teardown = async (): Promise<void> => {
    try {
      aborted.abort();
      unwatch();
      // Stopping the source (through the controller when there is one) ends every wait of startup.
      await (controller ?? source).stop();
      await started.catch((err: unknown) => {
        log.verbose('start-up ended by the stop', { error: err });
      });
      await servers?.close();
    } finally {
      // Also when a stop step fails: the keep-alive handle must not hold a failing process.
      stop.dispose();
    }
  };
  let code: number;
  try {
    code = await Promise.race([started.then(() => stop.stopped), stop.stopped]);
  } catch (err) {
    // Start-up failed (not a stop): release what it opened, then report the failure.
    await teardown();
    throw err;
  }
  await teardown();
  return code;
}

/** kube-proxy --cleanup: every mode's rules, then the policy table (src/modes/registry.ts). */
async function cleanup(binaries: Pick<ProxyOptions, 'iptablesBinary' | 'nftBinary'>): Promise<number> {
  let status = 0;
  for (const outcome of await cleanupEveryMode(binaries)) {
    if ('error' in outcome) {
      process.stderr.write(`${outcome.part}: cleanup failed: ${describeFailure(outcome.error)}\n`);
      status = 1;
    } else {
      process.stdout.write(`${outcome.part}: ${outcome.text}\n`);
    }
  }
  return status;
}
