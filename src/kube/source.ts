import type { ClusterState } from '../model/types.js';

/**
 * Where cluster state comes from: manifest files or the Kubernetes API. The controller only sees this
 * interface, so both sources drive the same reconcile loop.
 */
export interface SourceHealth {
  readonly healthy: boolean;
  /** Why the source is unhealthy (e.g. "API unreachable since ...", "manifest directory missing"). */
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
