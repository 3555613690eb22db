import type { ProxyOptions } from '../config/options.js';
import { ClusterStateBuilder } from '../model/build.js';
import { log, redactUrlCredentials } from '../util/log.js';
import { ApiSource } from './api-source.js';
import type { ReflectorOptions } from './informer.js';
import { credentialsWithheldOverHttp, loadKubeConfig } from './kubeconfig.js';
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

/**
 * `SVCPLANE_API_HEALTH_GRACE_SECONDS`: how long the API may be unreachable before /healthz turns
 * 503 (default 60). An environment knob, not a flag: kube-proxy has no such flag, and its /healthz
 * ignores the API altogether.
 */
export function healthGraceFromEnv(env: Readonly<Record<string, string | undefined>>): number | undefined {
  const raw = env.SVCPLANE_API_HEALTH_GRACE_SECONDS;
  if (raw === undefined || raw === '') return undefined;
  const secs = Number(raw);
  if (!Number.isFinite(secs) || secs < 0) {
    throw new Error(
      `SVCPLANE_API_HEALTH_GRACE_SECONDS=${JSON.stringify(raw)}: expected a number of seconds >= 0`,
    );
  }
  return secs * 1000;
}

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
    const withheld = credentialsWithheldOverHttp(kubeConfig);
    if (withheld.length > 0) {
      // client-go's rule: credentials only over TLS. Say so loudly: the requests go anonymous and
      // will likely be refused (401/403), which would otherwise look like an RBAC problem.
      log.warn(
        'INSECURE API URL: the API server URL is plain http://, so the kubeconfig credentials are NOT sent ' +
          '(as client-go); requests are anonymous. Use an https:// server to authenticate.',
        {
          server: server === undefined ? undefined : redactUrlCredentials(server),
          withheld: withheld.join(', '),
        },
      );
    }
    return Promise.resolve(
      new ApiSource(kubeConfig, {
        nodeName: opts.hostnameOverride,
        healthGraceMs:
          tuning.healthGraceMs ??
          healthGraceFromEnv(tuning.env ?? process.env) ??
          DEFAULT_API_HEALTH_GRACE_MS,
        reflector: tuning.reflector,
        builder: new ClusterStateBuilder(opts.serviceLimits),
        networkPolicy: opts.networkPolicy,
      }),
    );
  } catch (err) {
    return Promise.reject(err instanceof Error ? err : new Error(String(err)));
  }
}
