import { createServer, type Server } from 'node:http';
import type { ProxyOptions } from '../config/options.js';
import { ConntrackReconciler } from '../conntrack/reconciler.js';
import type { ClusterState, IPFamily } from '../model/types.js';
import { splitHostPort } from '../model/ip.js';
import { log } from '../util/log.js';
import type { Controller } from './controller.js';
import {
  healthHandler,
  healthzStatus,
  isStale,
  NodeEligibilityTracker,
  type HealthInputs,
  type HealthStatus,
} from './health.js';
import { HealthCheckNodePorts } from './healthcheck-nodeports.js';
import { attachMetrics, ProxyMetrics } from './metrics.js';

/**
 * What runs beside the reconcile loop in the daemon: the healthz server (--healthz-bind-address),
 * the metrics server (--metrics-bind-address, localhost by default: metrics reveal the cluster's
 * shape), the health-check node ports of eTP=Local LoadBalancer Services, and the conntrack
 * reconciler. Everything is wired to the controller before it starts.
 */

export interface Servers {
  readonly metrics: ProxyMetrics;
  readonly healthCheckNodePorts: HealthCheckNodePorts;
  readonly conntrack: ConntrackReconciler | undefined;
  /** Bound addresses (`host:port`), for logs and tests; absent when off ('' or port 0) or not bound yet. */
  readonly healthzAddress?: string;
  readonly metricsAddress?: string;
  close(): Promise<void>;
}

/** A bind address `ip:port` / `[ip]:port` (the host may be empty); throws naming it when malformed. */
export function bindHostPort(value: string): { host: string; port: number } {
  const hp = splitHostPort(value);
  if (Number(/:(\d+)$/.exec(value)?.[1]) > 65535) {
    throw new Error(`invalid address "${value}": port out of range`);
  }
  if (hp === undefined) throw new Error(`invalid address "${value}" (want ip:port)`);
  return hp;
}

/**
 * Health inputs of a controller (kube-proxy's healthTimeout = 2 × syncPeriod), with the eligibility
 * of the node `nodeName` (--hostname-override) from the Node in the source's current state.
 */
export function controllerHealth(
  controller: Controller,
  opts: { readonly syncPeriodMs: number; readonly nodeName: string },
): () => HealthInputs {
  const node = new NodeEligibilityTracker();
  return () => ({
    ...controller.health(),
    source: controller.source.health(),
    node: node.observe(controller.source.current()?.nodes.get(opts.nodeName)),
    syncPeriodMs: opts.syncPeriodMs,
    now: Date.now(),
  });
}

/** The /healthz answer for a controller now (kept for callers of the minimal server's API). */
export function healthStatus(
  controller: Controller,
  opts: { readonly syncPeriodMs: number; readonly nodeName: string },
  now = Date.now(),
): HealthStatus {
  return healthzStatus({ ...controllerHealth(controller, opts)(), now });
}

/** kube-proxy retries a server that cannot bind every 5 s (unless --bind-address-hard-fail). */
export const BIND_RETRY_MS = 5000;

async function listenOnce(server: Server, host: string, port: number): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error): void => reject(err);
    server.once('error', onError);
    server.listen(port, host, () => {
      server.off('error', onError);
      resolve();
    });
  });
}

interface Listening {
  /** The address once bound; undefined when off or still retrying. */
  readonly address: string | undefined;
  stop(): void;
}

/**
 * Binds `server` to `address` ('' or port 0: off). A failure throws with --bind-address-hard-fail;
 * otherwise it is logged and retried every BIND_RETRY_MS, as kube-proxy does.
 */
async function listen(server: Server, address: string, what: string, hardFail: boolean): Promise<Listening> {
  if (address === '') return { address: undefined, stop: () => undefined };
  const { host, port } = bindHostPort(address);
  if (port === 0) return { address: undefined, stop: () => undefined };
  try {
    await listenOnce(server, host, port);
    return { address, stop: () => undefined };
  } catch (err) {
    const message = `${what} server on ${address}: ${(err as Error).message}`;
    if (hardFail) throw new Error(message, { cause: err });
    log.error(`${message}; retrying every ${BIND_RETRY_MS / 1000} s`);
  }
  let bound: string | undefined;
  const timer = setInterval(() => {
    listenOnce(server, host, port).then(
      () => {
        clearInterval(timer);
        bound = address;
        log.info(`${what} server listening`, { address });
      },
      (err: unknown) => log.verbose(`${what} server: bind retry failed`, { reason: (err as Error).message }),
    );
  }, BIND_RETRY_MS);
  timer.unref();
  return {
    get address() {
      return bound;
    },
    stop: () => clearInterval(timer),
  };
}

/** Families the backends program (names end in IPv4/IPv6), for the conntrack reconciler. */
function familiesOf(controller: Controller): IPFamily[] {
  const out = new Set<IPFamily>();
  for (const b of controller.backends) {
    if (b.name.endsWith('IPv4')) out.add('IPv4');
    if (b.name.endsWith('IPv6')) out.add('IPv6');
  }
  return [...out];
}

export async function startServers(
  opts: ProxyOptions,
  controller: Controller,
  /** What the mode in effect registers (src/modes/contract.ts `metrics`). */
  metricFamilies: { readonly iptablesSyncFamilies: boolean; readonly nftablesSyncFamilies?: boolean },
): Promise<Servers> {
  // The mode in effect (an unavailable IPVS fell back to iptables): its metric families, as kube-proxy.
  const metrics = new ProxyMetrics(metricFamilies);
  const detachMetrics = attachMetrics(metrics, controller);
  const inputs = controllerHealth(controller, {
    syncPeriodMs: opts.syncPeriodMs,
    nodeName: opts.hostnameOverride,
  });

  const hcPorts = new HealthCheckNodePorts({ proxyHealthy: () => !isStale(inputs()) });
  const onSynced = (_r: unknown, state: ClusterState): void => {
    void hcPorts.update(state, opts.hostnameOverride);
  };
  controller.on('synced', onSynced);

  const families = familiesOf(controller);
  const conntrack = families.length > 0 ? new ConntrackReconciler({ families, metrics }) : undefined;
  const detachConntrack = conntrack?.attach(controller);

  const health = createServer(healthHandler(inputs, metrics));
  const metricsServer = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/metrics') {
      metrics.registry.metrics().then(
        (text) => res.writeHead(200, { 'Content-Type': metrics.registry.contentType }).end(text),
        (err: unknown) => {
          log.error('cannot render metrics', { error: err });
          res.writeHead(500).end();
        },
      );
      return;
    }
    if (path === '/proxyMode') {
      res.writeHead(200, { 'Content-Type': 'text/plain' }).end(opts.proxyMode);
      return;
    }
    healthHandler(inputs, metrics)(req, res);
  });

  const listening: Listening[] = [];
  const close = async (): Promise<void> => {
    for (const l of listening) l.stop();
    detachMetrics();
    detachConntrack?.();
    controller.off('synced', onSynced);
    await hcPorts.close();
    await conntrack?.idle();
    await Promise.all(
      [health, metricsServer].map((s) => new Promise<void>((r) => (s.listening ? s.close(() => r()) : r()))),
    );
  };
  try {
    const hardFail = opts.bindAddressHardFail;
    const h = await listen(health, opts.healthzBindAddress, 'healthz', hardFail);
    listening.push(h);
    const m = await listen(metricsServer, opts.metricsBindAddress, 'metrics', hardFail);
    listening.push(m);
    const healthzAddress = h.address;
    const metricsAddress = m.address;
    log.info('servers listening', {
      healthz: healthzAddress ?? (opts.healthzBindAddress === '' ? 'off' : 'retrying'),
      metrics: metricsAddress ?? (opts.metricsBindAddress === '' ? 'off' : 'retrying'),
    });
    return {
      metrics,
      healthCheckNodePorts: hcPorts,
      conntrack,
      ...(healthzAddress ? { healthzAddress } : {}),
      ...(metricsAddress ? { metricsAddress } : {}),
      close,
    };
  } catch (err) {
    await close();
    throw err;
  }
}
