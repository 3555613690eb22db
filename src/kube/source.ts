import type { ClusterState } from '../model/types.js';

/**
 * Where cluster state comes from: manifest files or the Kubernetes API. The controller only sees this
 * interface, so both sources drive the same reconcile loop.
 */

/**
 * Why a source is unhealthy, as a fixed category: what /healthz and metrics may show (never error
 * text, which can quote a server, a file or a credential plugin).
 */
export type SourceProblem =
  | 'api-unreachable'
  | 'api-unauthorized'
  | 'api-forbidden'
  | 'api-credentials'
  | 'api-tls'
  | 'api-server-error'
  | 'api-bad-response'
  | 'manifests-missing'
  | 'manifests-unreadable'
  | 'manifests-stuck';

export interface SourceHealth {
  readonly healthy: boolean;
  /** The category when unhealthy (absent: unknown). */
  readonly problem?: SourceProblem;
  /** Details for logs (e.g. "manifest directory missing since ..."); never served over HTTP. */
  readonly reason?: string;
}

export interface StateSource {
  /** Starts watching; resolves once the first complete state is known (informers synced / files read). */
  start(): Promise<void>;
  /** Latest complete state; undefined before `start()` resolved. */
  current(): ClusterState | undefined;
  /** Called after every new complete state (not for no-op changes). Returns an unsubscribe function. */
  onChange(listener: (state: ClusterState) => void): () => void;
  health(): SourceHealth;
  stop(): Promise<void>;
}
