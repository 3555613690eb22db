import type { ProxyOptions } from '../config/options.js';
import type { ClusterState } from '../model/types.js';
import { ManifestSource } from './manifests.js';
import type { StateSource } from './source.js';

/**
 * The state source the configuration names: --manifests, else the API (kubeconfig / in-cluster).
 * `readOnce` for commands that use one state and exit (sync, diff, explain, trace).
 */
export async function createSource(opts: ProxyOptions, readOnce = false): Promise<StateSource> {
  if (opts.manifests !== undefined) {
    // A scan hanging longer than kube-proxy's health timeout (2 × sync period) turns /healthz unhealthy.
    return new ManifestSource(opts.manifests, {
      limits: opts.serviceLimits,
      stuckAfterMs: 2 * opts.syncPeriodMs,
      readOnce,
    });
  }
  const { createApiSource } = await import('./api-source-factory.js');
  return createApiSource(opts);
}

/** One complete state from the source (manifests or the API), then the source is stopped. */
export async function loadState(opts: ProxyOptions): Promise<ClusterState> {
  const source = await createSource(opts, true);
  try {
    await source.start();
    const state = source.current();
    if (!state) throw new Error('the source produced no state');
    return state;
  } finally {
    await source.stop();
  }
}
