import type { ProxyOptions } from '../cli/proxy-options.js';
import type { Backend } from '../controller/backend.js';

/** Builds the IPVS backends (one per family) from the CLI options. */
export function createIpvsBackends(_opts: ProxyOptions): Promise<Backend[]> {
  return Promise.reject(new Error('--proxy-mode ipvs is not wired yet'));
}
