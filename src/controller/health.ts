import type { IncomingMessage, ServerResponse } from 'node:http';
import type { SourceHealth, SourceProblem } from '../kube/source.js';
import type { NodeInfo } from '../model/types.js';
import type { ProxyMetrics } from './metrics.js';

/**
 * kube-proxy's proxier health (pkg/proxy/healthcheck/proxy_health.go), as a pure function plus an
 * HTTP handler: /healthz is 200 with lastUpdated/currentTime/nodeEligible unless a change has waited
 * for the kernel longer than twice the sync period, nothing was synced yet, the source is unhealthy,
 * or this node is not eligible (KEP-3836: being deleted, or tainted for deletion by the cluster
 * autoscaler, so load balancers drain it first), or a sync was refused by the safety valve — 503.
 * /livez only fails on the stuck-change condition: a missing manifest directory, an unreachable API
 * or a node on its way out is not cured by restarting svcplane.
 *
 * The body says why in fixed words only (kube-proxy's carries no reason at all): /healthz listens on
 * all addresses without authentication, and error text can quote an API server, a file path or a
 * credential plugin's output (tokens). Details go to the logs, redacted.
 */

/** The cluster autoscaler's taint on a node it is about to delete (kube-proxy's ToBeDeletedTaint). */
export const TO_BE_DELETED_TAINT = 'ToBeDeletedByClusterAutoscaler';

export interface NodeEligibility {
  readonly eligible: boolean;
  /** Why not, when not. */
  readonly reason?: string;
}

/** The fixed reasons /healthz may give. */
export const HEALTH_REASONS = {
  stale: 'a change has not reached the kernel within twice the sync period',
  neverSynced: 'no successful sync yet',
  refused: 'a sync was refused by the safety valve (it would have removed most Services)',
  nodeDeleting: 'not eligible: node is being deleted',
  nodeTainted: `not eligible: node has the taint ToBeDeletedByClusterAutoscaler`,
} as const;

/** What /healthz says about each source problem (fixed words). */
export const SOURCE_PROBLEMS: Readonly<Record<SourceProblem, string>> = {
  'api-unreachable': 'Kubernetes API unreachable',
  'api-unauthorized': 'Kubernetes API rejects the credentials (401)',
  'api-forbidden': 'Kubernetes API forbids list/watch (403)',
  'api-credentials': 'kubeconfig credential plugin or auth provider failed',
  'api-tls': 'TLS with the Kubernetes API failed',
  'api-server-error': 'Kubernetes API answers with errors',
  'api-bad-response': 'Kubernetes API sent an invalid response',
  'manifests-missing': 'manifest path missing',
  'manifests-unreadable': 'manifest path unreadable',
  'manifests-stuck': 'manifest read hanging',
};

/** kube-proxy's SyncNode: not eligible when the Node has a deletionTimestamp or the autoscaler's taint. */
export function nodeEligibility(node: NodeInfo): NodeEligibility {
  if (node.deletionTimestamp !== undefined) return { eligible: false, reason: HEALTH_REASONS.nodeDeleting };
  if (node.taintKeys?.includes(TO_BE_DELETED_TAINT))
    return { eligible: false, reason: HEALTH_REASONS.nodeTainted };
  return { eligible: true };
}

/**
 * This node's eligibility over time, as kube-proxy keeps it: eligible while starting up, then as
 * the last Node object seen says (a Node that vanished from the state keeps its last verdict, as
 * kube-proxy's delete handler syncs the deleted object's last state).
 */
export class NodeEligibilityTracker {
  private last: NodeEligibility = { eligible: true };
  observe(node: NodeInfo | undefined): NodeEligibility {
    if (node !== undefined) this.last = nodeEligibility(node);
    return this.last;
  }
}

export interface HealthInputs {
  /** Wall-clock ms of the oldest change not yet in the kernel (0: none). */
  readonly queuedSince: number;
  /** Wall-clock ms of the last successful sync (0: never). */
  readonly lastSyncedAt: number;
  readonly source: SourceHealth;
  readonly node: NodeEligibility;
  readonly syncPeriodMs: number;
  readonly now: number;
  /** Wall-clock ms since when the latest state's sync is refused by the safety valve (0/absent: none). */
  readonly refusedSince?: number;
}

export interface HealthStatus {
  readonly code: 200 | 503;
  readonly body: {
    readonly lastUpdated: string;
    readonly currentTime: string;
    /** /healthz only (kube-proxy's /livez does not report it). */
    readonly nodeEligible?: boolean;
    /** Why it is unhealthy, in fixed words (HEALTH_REASONS, SOURCE_PROBLEMS); absent when healthy. */
    readonly reason?: string;
    readonly queuedSince?: string;
    /** The source's problem in fixed words (SOURCE_PROBLEMS). */
    readonly sourceError?: string;
  };
}

const iso = (ms: number): string => new Date(ms).toISOString();

/** kube-proxy's healthTimeout: twice the sync period. */
export function isStale(h: Pick<HealthInputs, 'queuedSince' | 'syncPeriodMs' | 'now'>): boolean {
  return h.queuedSince !== 0 && h.now - h.queuedSince > 2 * h.syncPeriodMs;
}

/** The source's problem in fixed words; never its own text. */
function sourceProblem(source: SourceHealth): string {
  return source.problem !== undefined ? SOURCE_PROBLEMS[source.problem] : 'source unhealthy';
}

export function healthzStatus(h: HealthInputs): HealthStatus {
  const reasons: string[] = [];
  const stale = isStale(h);
  if (stale) reasons.push(HEALTH_REASONS.stale);
  if (h.lastSyncedAt === 0 && !stale) reasons.push(HEALTH_REASONS.neverSynced);
  if ((h.refusedSince ?? 0) !== 0) reasons.push(HEALTH_REASONS.refused);
  if (!h.source.healthy) reasons.push(`source unhealthy: ${sourceProblem(h.source)}`);
  // Only the tracker's fixed reasons (or the generic one) are shown.
  if (!h.node.eligible) {
    const known = [HEALTH_REASONS.nodeDeleting, HEALTH_REASONS.nodeTainted] as string[];
    reasons.push(
      h.node.reason !== undefined && known.includes(h.node.reason) ? h.node.reason : 'not eligible',
    );
  }
  return {
    code: reasons.length === 0 ? 200 : 503,
    body: {
      lastUpdated: iso(h.lastSyncedAt),
      currentTime: iso(h.now),
      nodeEligible: h.node.eligible,
      ...(reasons.length > 0 ? { reason: reasons.join('; ') } : {}),
      ...(stale ? { queuedSince: iso(h.queuedSince) } : {}),
      ...(h.source.healthy ? {} : { sourceError: sourceProblem(h.source) }),
    },
  };
}

export function livezStatus(h: HealthInputs): HealthStatus {
  const stale = isStale(h);
  return {
    code: stale ? 503 : 200,
    body: {
      lastUpdated: iso(h.lastSyncedAt),
      currentTime: iso(h.now),
      ...(stale ? { reason: HEALTH_REASONS.stale, queuedSince: iso(h.queuedSince) } : {}),
    },
  };
}

/** The request handler of the healthz server (404 for anything but /healthz and /livez). */
export function healthHandler(
  inputs: () => HealthInputs,
  metrics?: ProxyMetrics,
): (req: IncomingMessage, res: ServerResponse) => void {
  return (req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path !== '/healthz' && path !== '/livez') {
      res.writeHead(404, { 'Content-Type': 'text/plain' }).end('not found\n');
      return;
    }
    const h = inputs();
    const status = path === '/healthz' ? healthzStatus(h) : livezStatus(h);
    (path === '/healthz' ? metrics?.healthzTotal : metrics?.livezTotal)?.inc({ code: String(status.code) });
    res.writeHead(status.code, { 'Content-Type': 'application/json', 'X-Content-Type-Options': 'nosniff' });
    res.end(JSON.stringify(status.body));
  };
}
