import { createServer, type Server } from 'node:http';
import type { ProxyOptions } from '../cli/proxy-options.js';
import { ConntrackReconciler } from '../conntrack/reconciler.js';
import type { ClusterState, IPFamily } from '../model/types.js';
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
  /** Bound addresses (`host:port`), for logs and tests; absent when disabled (port 0). */
  readonly healthzAddress?: string;
  readonly metricsAddress?: string;
  close(): Promise<void>;
}

export function splitHostPort(value: string): { host: string; port: number } {
  const m = /^\[?([^\]]*)\]?:(\d+)$/.exec(value);
  if (!m) throw new Error(`invalid address "${value}" (want ip:port)`);
  const port = Number.parseInt(m[2]!, 10);
  if (port > 65535) throw new Error(`invalid address "${value}": port out of range`);
  return { host: m[1]!, port };
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

async function listen(server: Server, address: string, what: string): Promise<string | undefined> {
  const { host, port } = splitHostPort(address);
  if (port === 0) return undefined;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) => reject(new Error(`${what} server on ${address}: ${err.message}`)));
    server.listen(port, host, resolve);
  });
  return address;
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

export async function startServers(opts: ProxyOptions, controller: Controller): Promise<Servers> {
  const metrics = new ProxyMetrics();
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

  const close = async (): Promise<void> => {
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
    const healthzAddress = await listen(health, opts.healthzBindAddress, 'healthz');
    const metricsAddress = await listen(metricsServer, opts.metricsBindAddress, 'metrics');
    log.info('servers listening', { healthz: healthzAddress ?? 'off', metrics: metricsAddress ?? 'off' });
    return {
      metrics,
      healthCheckNodePorts: hcPorts,
      conntrack,
      ...(healthzAddress ? { healthzAddress } : {}),
      ...(metricsAddress ? { metricsAddress } : {}),
      close,
    };
  } catch (err) {
    log.error('cannot start servers', { error: err });
    await close();
    throw err;
  }
}
