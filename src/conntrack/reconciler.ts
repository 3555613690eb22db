import type { ProxyMetrics } from '../controller/metrics.js';
import type { ClusterState, IPFamily } from '../model/types.js';
import { CommandError, run } from '../util/exec.js';
import { log } from '../util/log.js';
import {
  conntrackCleanupRequired,
  deleteArgs,
  parseConntrackList,
  staleUDPEntries,
  type ConntrackEntry,
} from './entries.js';

/**
 * Runs kube-proxy's conntrack cleanup after successful syncs: lists UDP flows with the `conntrack`
 * tool (argument arrays, inside `netns` when given), deletes the stale ones flow by flow. Runs are
 * serialized; a failure is logged and counted, and retried on the next sync that needs it.
 */

export interface ConntrackReconcilerOptions {
  readonly families: readonly IPFamily[];
  readonly netns?: string;
  /** Default `conntrack`. */
  readonly binary?: string;
  readonly metrics?: ProxyMetrics;
  readonly timeoutMs?: number;
}

export interface ReconcileResult {
  readonly listed: number;
  readonly deleted: number;
  readonly durationMs: number;
}

/** The subset of the Controller the reconciler listens to. */
export interface SyncedEvents {
  on(event: 'synced', fn: (reports: unknown[], state: ClusterState) => void): unknown;
  off(event: 'synced', fn: (reports: unknown[], state: ClusterState) => void): unknown;
}

export class ConntrackReconciler {
  private lastReconciled: ClusterState | undefined;
  /** Whether the last needed cleanup failed (then the next sync retries even without a change). */
  private retry = false;
  private disabled = false;
  private chain: Promise<unknown> = Promise.resolve();

  constructor(private readonly opts: ConntrackReconcilerOptions) {}

  private exec(args: readonly string[], allowFailure = false) {
    return run([this.opts.binary ?? 'conntrack', ...args], {
      netns: this.opts.netns,
      timeoutMs: this.opts.timeoutMs ?? 30_000,
      allowFailure,
    });
  }

  async list(family: IPFamily): Promise<ConntrackEntry[]> {
    const r = await this.exec([
      '-L',
      '-f',
      family === 'IPv4' ? 'ipv4' : 'ipv6',
      '-p',
      'udp',
      '-o',
      'extended',
    ]);
    return parseConntrackList(r.stdout);
  }

  /** Deletes one flow; false when it was already gone. */
  async delete(e: ConntrackEntry): Promise<boolean> {
    const r = await this.exec(deleteArgs(e), true);
    if (r.exitCode === 0) return true;
    if (/0 flow entries have been deleted/.test(r.stderr)) return false;
    throw new CommandError(r.argv, r.exitCode, r.stderr, 'exit');
  }

  /** Deletes every stale UDP flow for `state` (all families). */
  async reconcile(state: ClusterState): Promise<ReconcileResult> {
    const started = performance.now();
    let listed = 0;
    let deleted = 0;
    for (const family of this.opts.families) {
      const entries = await this.list(family);
      listed += entries.length;
      for (const e of staleUDPEntries(state, family, entries)) {
        if (await this.delete(e)) {
          deleted++;
          log.verbose('deleted stale UDP conntrack entry', {
            family,
            origDst: `${e.orig.dst}:${e.orig.dport}`,
            origSrc: `${e.orig.src}:${e.orig.sport}`,
            replySrc: `${e.reply.src}:${e.reply.sport}`,
          });
        }
      }
    }
    const durationMs = performance.now() - started;
    this.opts.metrics?.conntrackDuration.observe(durationMs / 1000);
    this.opts.metrics?.conntrackDeleted.inc(deleted);
    return { listed, deleted, durationMs };
  }

  /** Reconciles after a synced state when its UDP endpoints changed (serialized; never throws). */
  afterSync(state: ClusterState): Promise<ReconcileResult | undefined> {
    const prev = this.lastReconciled;
    this.lastReconciled = state;
    // The first sync after a start also cleans: flows may predate a restart.
    const needed =
      !this.disabled && (this.retry || prev === undefined || conntrackCleanupRequired(prev, state));
    if (!needed) return Promise.resolve(undefined);
    const p = this.chain.then(async () => {
      try {
        const r = await this.reconcile(state);
        this.retry = false;
        if (r.deleted > 0) log.info('conntrack cleanup', { ...r, durationMs: Math.round(r.durationMs) });
        return r;
      } catch (error) {
        this.opts.metrics?.conntrackFailures.inc();
        if (error instanceof CommandError && error.reason === 'not-found') {
          // No conntrack tool on this node: say so once instead of every sync.
          this.disabled = true;
          log.error('conntrack tool not found; stale UDP flows will not be cleaned up', { error });
          return undefined;
        }
        this.retry = true;
        log.error('conntrack cleanup failed; retrying after the next sync', { error });
        return undefined;
      }
    });
    this.chain = p;
    return p;
  }

  /** Listens to a controller's 'synced' events. Returns a detach function. */
  attach(controller: SyncedEvents): () => void {
    const fn = (_reports: unknown[], state: ClusterState): void => void this.afterSync(state);
    controller.on('synced', fn);
    return () => controller.off('synced', fn);
  }

  /** Resolves when the queued cleanups are done. */
  async idle(): Promise<void> {
    await this.chain;
  }
}
