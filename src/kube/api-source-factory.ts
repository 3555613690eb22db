import type { ProxyOptions } from '../cli/proxy-options.js';
import { log, redactUrlCredentials } from '../util/log.js';
import { ApiSource } from './api-source.js';
import type { ReflectorOptions } from './informer.js';
import { loadKubeConfig } from './kubeconfig.js';
import type { StateSource } from './source.js';

/**
 * Builds the Kubernetes API source from the CLI options: `--kubeconfig` (with `--master` overriding
 * its server), else in-cluster (service account), else `--master` alone, else a clear error (never
 * client-node's silent localhost fallback). The Node informer watches `--hostname-override`, the
 * same name the backends look up in the state, so the Node object feeds node IPs and the zone.
 */

/** Knobs the CLI leaves at their defaults; tests shorten them. */
export interface ApiSourceTuning {
  /** Disconnected from the API longer than this → /healthz unhealthy. Default 60 s. */
  readonly healthGraceMs?: number;
  readonly reflector?: Partial<ReflectorOptions>;
  /** Environment for the in-cluster check (tests). Default `process.env`. */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** Prefix for the service-account paths (tests). */
  readonly inClusterPathPrefix?: string;
}

export const DEFAULT_API_HEALTH_GRACE_MS = 60_000;

export function createApiSource(opts: ProxyOptions, tuning: ApiSourceTuning = {}): Promise<StateSource> {
  try {
    const kubeConfig = loadKubeConfig({
      kubeconfig: opts.kubeconfig,
      master: opts.master,
      env: tuning.env,
      inClusterPathPrefix: tuning.inClusterPathPrefix,
    });
    const server = kubeConfig.getCurrentCluster()?.server;
    log.info('using the Kubernetes API', {
      server: server === undefined ? undefined : redactUrlCredentials(server),
      node: opts.hostnameOverride,
    });
    return Promise.resolve(
      new ApiSource(kubeConfig, {
        nodeName: opts.hostnameOverride,
        healthGraceMs: tuning.healthGraceMs ?? DEFAULT_API_HEALTH_GRACE_MS,
        reflector: tuning.reflector,
      }),
    );
  } catch (err) {
    return Promise.reject(err instanceof Error ? err : new Error(String(err)));
  }
}
