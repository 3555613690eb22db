import { createServer, type Server } from 'node:http';
import type { ClusterState } from '../model/types.js';
import { needsHealthCheck } from '../model/selection.js';
import { log } from '../util/log.js';

/**
 * kube-proxy's service health-check servers (pkg/proxy/healthcheck/service_health.go): for every
 * LoadBalancer Service with externalTrafficPolicy Local, an HTTP server on its healthCheckNodePort
 * that tells the cloud load balancer whether this node has a local ready endpoint (200) or not (503),
 * so the load balancer only sends traffic to nodes that can serve it without a second hop.
 */

export interface HealthCheckTarget {
  readonly namespace: string;
  readonly name: string;
  readonly localEndpoints: number;
}

/** healthCheckNodePort → Service and its count of ready endpoints on `nodeName` (pure). */
export function healthCheckTargets(state: ClusterState, nodeName: string): Map<number, HealthCheckTarget> {
  const out = new Map<number, HealthCheckTarget>();
  for (const svc of state.services.values()) {
    if (svc.skipReason !== undefined || svc.healthCheckNodePort === 0 || !needsHealthCheck(svc)) continue;
    let local = 0;
    // As kube-proxy's LocalReadyEndpoints: counted per service port.
    for (const p of svc.ports)
      for (const ep of p.endpoints) if (ep.ready && ep.nodeName === nodeName) local++;
    if (out.has(svc.healthCheckNodePort)) {
      log.warn('healthCheckNodePort used by two Services; keeping the first', {
        port: svc.healthCheckNodePort,
        service: `${svc.namespace}/${svc.name}`,
      });
      continue;
    }
    out.set(svc.healthCheckNodePort, { namespace: svc.namespace, name: svc.name, localEndpoints: local });
  }
  return out;
}

/** The response for one target (pure). */
export function healthCheckResponse(
  t: HealthCheckTarget,
  proxyHealthy: boolean,
): { code: 200 | 503; body: string } {
  const body = JSON.stringify({
    service: { namespace: t.namespace, name: t.name },
    localEndpoints: t.localEndpoints,
    serviceProxyHealthy: proxyHealthy,
  });
  return { code: t.localEndpoints > 0 && proxyHealthy ? 200 : 503, body };
}

export interface HealthCheckServersOptions {
  /** Listen address (default '' = all addresses of the namespace svcplane runs in, both families). */
  readonly host?: string;
  /** Whether the proxy itself is healthy (kube-proxy ANDs it into the answer). */
  readonly proxyHealthy?: () => boolean;
}

export class HealthCheckNodePorts {
  private readonly servers = new Map<number, { server: Server; target: HealthCheckTarget }>();
  private readonly failed = new Set<number>();
  private queue: Promise<void> = Promise.resolve();

  constructor(private readonly opts: HealthCheckServersOptions = {}) {}

  /** Ports currently served. */
  ports(): number[] {
    return [...this.servers.keys()].sort((a, b) => a - b);
  }

  /**
   * Starts servers for new ports, stops those of Services that are gone, updates counts. Updates
   * are serialized (syncs can follow each other faster than a server opens).
   */
  update(state: ClusterState, nodeName: string): Promise<void> {
    const next = this.queue.then(() => this.apply(state, nodeName));
    this.queue = next.catch(() => undefined);
    return next;
  }

  private async apply(state: ClusterState, nodeName: string): Promise<void> {
    const want = healthCheckTargets(state, nodeName);
    for (const [port, entry] of [...this.servers]) {
      if (!want.has(port)) {
        this.servers.delete(port);
        await stopServer(entry.server);
        log.info('health check node port closed', {
          port,
          service: `${entry.target.namespace}/${entry.target.name}`,
        });
      }
    }
    for (const [port, target] of want) {
      const existing = this.servers.get(port);
      if (existing) {
        existing.target = target;
        continue;
      }
      await this.open(port, target);
    }
    for (const p of [...this.failed]) if (!want.has(p)) this.failed.delete(p);
  }

  private async open(port: number, target: HealthCheckTarget): Promise<void> {
    const entry = { server: createServer(), target };
    entry.server.on('request', (_req, res) => {
      const r = healthCheckResponse(entry.target, this.opts.proxyHealthy?.() ?? true);
      res.writeHead(r.code, { 'Content-Type': 'application/json', 'X-Content-Type-Options': 'nosniff' });
      res.end(r.body);
    });
    try {
      await new Promise<void>((resolve, reject) => {
        entry.server.once('error', reject);
        entry.server.listen(port, this.opts.host ?? '', () => {
          entry.server.off('error', reject);
          resolve();
        });
      });
      this.servers.set(port, entry);
      this.failed.delete(port);
      log.info('health check node port serving', { port, service: `${target.namespace}/${target.name}` });
    } catch (err) {
      // Retried on the next update; logged once per port.
      if (!this.failed.has(port)) {
        log.error('cannot open health check node port', {
          port,
          service: `${target.namespace}/${target.name}`,
          error: err,
        });
      }
      this.failed.add(port);
    }
  }

  async close(): Promise<void> {
    await this.queue;
    const all = [...this.servers.values()];
    this.servers.clear();
    await Promise.all(all.map((e) => stopServer(e.server)));
  }
}

/** Stops listening and drops kept-alive connections, so a removed port really stops answering. */
function stopServer(server: Server): Promise<void> {
  const closed = new Promise<void>((r) => server.close(() => r()));
  server.closeAllConnections();
  return closed;
}
