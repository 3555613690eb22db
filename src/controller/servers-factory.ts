import { createServer, type Server } from 'node:http';
import type { ProxyOptions } from '../cli/proxy-options.js';
import { log } from '../util/log.js';
import type { Controller } from './controller.js';

/**
 * kube-proxy's healthz server: 200 with lastUpdated/currentTime unless a change has been queued
 * for longer than twice the sync period without reaching the kernel (503).
 */

export interface Servers {
  close(): Promise<void>;
}

export function splitHostPort(value: string): { host: string; port: number } {
  const m = /^\[?([^\]]*)\]?:(\d+)$/.exec(value);
  if (!m) throw new Error(`invalid address "${value}" (want ip:port)`);
  return { host: m[1]!, port: Number.parseInt(m[2]!, 10) };
}

export function healthStatus(
  controller: Controller,
  syncPeriodMs: number,
  now = Date.now(),
): { code: number; body: Record<string, string> } {
  const { queuedSince, lastSyncedAt } = controller.health();
  const source = controller.source.health();
  const stale = queuedSince !== 0 && now - queuedSince > 2 * syncPeriodMs;
  const healthy = !stale && source.healthy && lastSyncedAt !== 0;
  return {
    code: healthy ? 200 : 503,
    body: {
      lastUpdated: new Date(lastSyncedAt || 0).toISOString(),
      currentTime: new Date(now).toISOString(),
      ...(source.healthy ? {} : { sourceError: source.reason ?? 'source unhealthy' }),
      ...(stale ? { queuedSince: new Date(queuedSince).toISOString() } : {}),
    },
  };
}

async function listen(server: Server, address: string, what: string): Promise<void> {
  const { host, port } = splitHostPort(address);
  if (port === 0) return;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) => reject(new Error(`${what} server on ${address}: ${err.message}`)));
    server.listen(port, host, resolve);
  });
}

export async function startServers(opts: ProxyOptions, controller: Controller): Promise<Servers> {
  const health = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/healthz' || path === '/livez') {
      const { code, body } = healthStatus(controller, opts.syncPeriodMs);
      res.writeHead(path === '/livez' ? 200 : code, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify(body));
      return;
    }
    res.writeHead(404).end();
  });
  const servers: Server[] = [health];
  try {
    await listen(health, opts.healthzBindAddress, 'healthz');
  } catch (err) {
    log.error('cannot start health server', { error: err });
    throw err;
  }
  return {
    close: async () => {
      await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
    },
  };
}
