import type { Command } from 'commander';
import type { Backend } from '../controller/backend.js';
import type { Servers } from '../controller/servers-factory.js';
import { Controller } from '../controller/controller.js';
import { cleanupLeftovers } from '../iptables/cleanup.js';
import { Iptables } from '../iptables/iptables.js';
import { IptablesProxier, type IptablesProxierConfig } from '../iptables/proxier.js';
import { ManifestSource } from '../kube/manifests.js';
import type { StateSource } from '../kube/source.js';
import type { ClusterState, IPFamily } from '../model/types.js';
import { CommandError } from '../util/exec.js';
import { log, redactText, setVerbosity } from '../util/log.js';
import {
  NODE_POD_CIDR_TIMEOUT_MS,
  resolveNodePodCIDRs,
  StartOnceSource,
  watchNodePodCIDRs,
} from './node-cidr.js';
import {
  addProxyOptions,
  iptablesBinaries,
  resolveProxyOptions,
  type ProxyOptions,
} from './proxy-options.js';

/** `svcplane run`, `svcplane sync` and `svcplane cleanup`. */

export function registerProxyCommands(program: Command): void {
  addProxyOptions(
    program
      .command('run')
      .description('run the dataplane controller (the daemon): watch the source, keep the kernel converged'),
  ).action(async (raw: Record<string, unknown>) => {
    const opts = resolveProxyOptions(raw);
    setVerbosity(opts.verbosity);
    process.exitCode = await runDaemon(opts);
  });

  addProxyOptions(
    program
      .command('sync')
      .description('converge the kernel once from the source and exit (0 once the rules are in the kernel)'),
  ).action(async (raw: Record<string, unknown>) => {
    const opts = resolveProxyOptions(raw);
    setVerbosity(opts.verbosity);
    process.exitCode = await syncOnce(opts);
  });

  program
    .command('cleanup')
    .description('remove every rule svcplane (or kube-proxy) created, like kube-proxy --cleanup')
    .option('--iptables-binary <name>', 'iptables command to use, e.g. iptables-legacy', 'iptables')
    .action(async (raw: { iptablesBinary: string }) => {
      process.exitCode = await cleanup(raw.iptablesBinary);
    });
}

/** The state source; `readOnce` for commands that use one state and exit (sync, diff). */
export async function createSource(opts: ProxyOptions, readOnce = false): Promise<StateSource> {
  if (opts.manifests !== undefined) {
    // A scan hanging longer than kube-proxy's health timeout (2 × sync period) turns /healthz unhealthy.
    return new ManifestSource(opts.manifests, {
      limits: opts.serviceLimits,
      stuckAfterMs: 2 * opts.syncPeriodMs,
      readOnce,
    });
  }
  const { createApiSource } = await import('../kube/api-source-factory.js');
  return createApiSource(opts);
}

/** The families whose iptables binaries work here; IPv6 is dropped with a warning when unavailable. */
export async function usableFamilies(opts: ProxyOptions): Promise<IPFamily[]> {
  const families: IPFamily[] = [];
  for (const family of opts.ipFamilies) {
    const ipt = new Iptables({ family, binaries: iptablesBinaries(opts.iptablesBinary, family) });
    try {
      await ipt.save('nat');
      families.push(family);
    } catch (err) {
      log.warn(`${family} iptables unavailable; not programming ${family}`, { error: err });
    }
  }
  if (families.length === 0) throw new Error('no usable iptables binary for any IP family');
  return families;
}

export async function createBackends(opts: ProxyOptions): Promise<Backend[]> {
  if (opts.proxyMode === 'ipvs') {
    const { createIpvsBackends } = await import('../ipvs/backend-factory.js');
    return createIpvsBackends(opts);
  }
  const families = await usableFamilies(opts);
  return families.map((family) => new IptablesProxier(iptablesProxierConfig(opts, family)));
}

/**
 * The proxier configuration for one family (shared with `svcplane diff`, which renders the same).
 */
export function iptablesProxierConfig(opts: ProxyOptions, family: IPFamily): IptablesProxierConfig {
  return {
    family,
    nodeName: opts.hostnameOverride,
    bindAddress: opts.bindAddress,
    masqueradeBit: opts.masqueradeBit,
    masqueradeAll: opts.masqueradeAll,
    detectLocalMode: opts.detectLocalMode,
    clusterCIDRs: opts.clusterCIDRs,
    bridgeInterface: opts.bridgeInterface,
    interfaceNamePrefix: opts.interfaceNamePrefix,
    ...(opts.nodePodCIDRs !== undefined ? { podCIDRs: opts.nodePodCIDRs } : {}),
    nodePortAddresses: opts.nodePortAddresses,
    localhostNodePorts: opts.localhostNodePorts,
    binaries: iptablesBinaries(opts.iptablesBinary, family),
    fullSyncMode: opts.iptablesFullSyncMode,
  };
}

async function syncOnce(opts: ProxyOptions): Promise<number> {
  // A source that cannot be built (no --manifests and no cluster) is a usage error: thrown.
  const source = new StartOnceSource(await createSource(opts, true));
  try {
    await source.start();
    refuseBrokenFiles(source.current());
    const resolved = await resolveNodePodCIDRs(opts, source, 0);
    const controller = new Controller(source, await createBackends(resolved), resolved);
    const reports = await controller.syncOnce();
    for (const r of reports) {
      process.stdout.write(
        `${r.backend}: ${r.full ? 'full' : 'partial'} sync, ${r.lines} lines, ${r.writtenServices} services written, ${r.staleChains} stale chains removed, ${Math.round(r.durationMs)} ms\n`,
      );
    }
    const problems = controller.source.current()?.problems ?? [];
    for (const p of problems) {
      const o = p.object;
      process.stderr.write(
        `skipped ${o.kind} ${o.namespace ? `${o.namespace}/` : ''}${o.name}${o.source ? ` (${o.source})` : ''}: ${p.field}: ${p.reason}\n`,
      );
    }
    return 0;
  } catch (err) {
    process.stderr.write(`svcplane sync failed: ${describe(err)}\n`);
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
  const onSignal = (signal: string): void => {
    log.info('stopping; rules stay in place', { signal });
    resolve(0);
  };
  process.once('SIGTERM', onSignal);
  process.once('SIGINT', onSignal);
  return {
    stopped,
    request: (code) => resolve(code),
    dispose: () => {
      process.off('SIGTERM', onSignal);
      process.off('SIGINT', onSignal);
    },
  };
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
    const opts = await resolveNodePodCIDRs(initial, source, NODE_POD_CIDR_TIMEOUT_MS, aborted.signal);
    const backends = await createBackends(opts);
    if (aborted.signal.aborted) return;
    controller = new Controller(source, backends, opts);
    const { startServers } = await import('../controller/servers-factory.js');
    servers = await startServers(opts, controller);
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
    // Resolves after the first sync, or as soon as controller.stop() is called.
    await controller.start();
    if (!aborted.signal.aborted) {
      log.info('svcplane running', { mode: opts.proxyMode, node: opts.hostnameOverride });
    }
  };
  const started = startup();
  const teardown = async (): Promise<void> => {
    aborted.abort();
    unwatch();
    // Stopping the source (through the controller when there is one) ends every wait of startup.
    await (controller ?? source).stop();
    await started.catch((err: unknown) => {
      log.verbose('start-up ended by the stop', { error: err });
    });
    await servers?.close();
    stop.dispose();
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

async function cleanup(binary: string): Promise<number> {
  let status = 0;
  // IPVS first: its chains reference shared ones (KUBE-MARK-MASQ) and its sets.
  try {
    const { cleanupIpvs } = await import('../ipvs/cleanup.js');
    const ipts = (['IPv4', 'IPv6'] as const).map(
      (f) => new Iptables({ family: f, binaries: iptablesBinaries(binary, f) }),
    );
    const { removed } = await cleanupIpvs(ipts);
    process.stdout.write(`ipvs: removed ${removed.length} chains/rules/sets/links\n`);
  } catch (err) {
    process.stderr.write(`ipvs: cleanup failed: ${describe(err)}\n`);
    status = 1;
  }
  for (const family of ['IPv4', 'IPv6'] as const) {
    const ipt = new Iptables({ family, binaries: iptablesBinaries(binary, family) });
    try {
      const { removed } = await cleanupLeftovers(ipt);
      process.stdout.write(`${family}: removed ${removed.length} chains/rules\n`);
    } catch (err) {
      if (err instanceof CommandError && err.reason === 'not-found') continue;
      process.stderr.write(`${family}: cleanup failed: ${describe(err)}\n`);
      status = 1;
    }
  }
  return status;
}

/** An error's message for stderr, with credentials redacted by content (as the logs are). */
function describe(err: unknown): string {
  return redactText(err instanceof Error ? err.message : String(err));
}
