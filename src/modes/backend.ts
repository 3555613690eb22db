import type { StateChange } from '../model/state-change.js';
import type { ClusterState } from '../model/types.js';

/** What one sync did, for logs, metrics and tests. */
export interface SyncReport {
  readonly backend: string;
  readonly full: boolean;
  readonly durationMs: number;
  /** Bytes and lines handed to the kernel writer (restore input, ipvsadm batch …). */
  readonly bytes: number;
  readonly lines: number;
  readonly writtenServices: number;
  readonly staleChains: number;
  readonly details?: Readonly<Record<string, number | string | boolean>>;
  /** kube-proxy's sync_proxy_rules_iptables_{total,last} figures, from modes that write iptables rules. */
  readonly ruleCounts?: RuleCounts;
  /** kube-proxy's sync_proxy_rules_no_local_endpoints_total figures, from modes that compute them. */
  readonly noLocalEndpoints?: { readonly internal: number; readonly external: number };
}

/** Rules written by the last sync and rules in the tables, per table (kube-proxy's iptables gauges). */
export interface RuleCounts {
  readonly filterRules: number;
  readonly totalFilterRules: number;
  readonly natRules: number;
  readonly totalNatRules: number;
}

/**
 * A dataplane backend for one IP family (iptables/IPv4, ipvs/IPv6 …). The controller owns timing;
 * the backend owns converging the kernel to a state.
 */
export interface Backend {
  readonly name: string;
  /** Node-level setup done once before the first sync (sysctls, binaries probed). */
  setup(): Promise<void>;
  /**
   * Converges the kernel to `state`. Throws (with context) when the kernel write failed.
   * `change` is what changed since the state every backend applied last, computed once per sync by
   * the controller (src/model/state-change.ts); a partial sync writes from it. A backend whose kernel
   * holds another state than `change.previous` (it synced alone while another backend failed), or
   * called without a change (`svcplane sync`, tests), computes its own with the same function.
   */
  sync(state: ClusterState, change?: StateChange): Promise<SyncReport>;
  /** Whether the last sync attempted (failed ones too) was full; absent: every sync is full. */
  readonly lastAttemptFull?: boolean;
  /** Periodic check that our rules are still as written; true when a full resync is needed. */
  detectDrift(): Promise<boolean>;
  /**
   * A daemon (not a one-shot sync) calls this once before its first sync: the backend may start
   * watching the kernel so that detectDrift reads it only when something moved. Optional.
   */
  watchKernel?(): Promise<void>;
  /** Stops what watchKernel started (child processes). Optional. */
  close?(): Promise<void>;
  /** The next sync rewrites everything. */
  forceFullSync(): void;
  /**
   * Service keys (namespace/name) whose rules the kernel holds now, whoever wrote them (an earlier
   * run, kube-proxy): the safety valve's "programmed" before this process applied anything.
   * Optional: a backend that cannot tell leaves the first sync unguarded.
   */
  programmedServices?(): Promise<ReadonlySet<string>>;
}
