import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ClusterState, IPFamily } from '../model/types.js';
import { CommandError, run, type RunResult } from '../util/exec.js';
import { log } from '../util/log.js';
import { changeSinceApplied, type StateChange } from '../model/state-change.js';
import {
  batchDeleteInput,
  countDeleted,
  flowsDeletedOf,
  deleteFilters,
  filterArgs,
  parseConntrackList,
  staleUDPEntries,
  type ConntrackDeleteFilter,
  type ConntrackEntry,
} from './entries.js';

/**
 * Runs kube-proxy's conntrack cleanup after successful syncs: lists UDP flows with the `conntrack`
 * tool (argument arrays, inside `netns` when given) and deletes the stale ones in one batch per
 * family (`conntrack -R FILE`, one filter per stale frontend/backend pair). Runs coalesce: at most one is
 * in flight and one waits, for the latest state only, so a burst of syncs costs two runs, not one per
 * sync. A failure is logged and counted, and retried after the next sync.
 */

export interface ConntrackReconcilerOptions {
  readonly families: readonly IPFamily[];
  readonly netns?: string;
  /** Default `conntrack`. */
  readonly binary?: string;
  readonly metrics?: ConntrackMetrics;
  readonly timeoutMs?: number;
}

export interface ReconcileResult {
  readonly listed: number;
  /** Delete filters applied (one per stale frontend/backend pair). */
  readonly filters: number;
  readonly deleted: number;
  readonly durationMs: number;
}

/** The counters the cleaner feeds (ProxyMetrics has them; declared here so conntrack stays below the controller). */
export interface ConntrackMetrics {
  readonly conntrackCommands: { inc(): void };
  readonly conntrackRuns: { inc(): void };
  readonly conntrackDuration: { observe(seconds: number): void };
  readonly conntrackDeleted: { inc(n: number): void };
  readonly conntrackFailures: { inc(): void };
}

/** Work done so far (tests and metrics). */
export interface ReconcilerStats {
  /** Reconcile runs started. */
  readonly runs: number;
  /** `conntrack` processes spawned. */
  readonly commands: number;
}

/** The subset of the Controller the reconciler listens to. */
export interface SyncedEvents {
  on(event: 'synced', fn: (reports: unknown[], state: ClusterState, change: StateChange) => void): unknown;
  off(event: 'synced', fn: (reports: unknown[], state: ClusterState, change: StateChange) => void): unknown;
}

interface PendingRun {
  /** Replaced by every later state until the run starts. */
  state: ClusterState;
  promise: Promise<ReconcileResult | undefined>;
  readonly start: () => void;
}

export class ConntrackReconciler {
  /** The state of the last afterSync call (what the next change is compared with). */
  private lastSeen: ClusterState | undefined;
  /** Whether the last needed cleanup failed (then the next sync retries even without a change). */
  private retry = false;
  private disabled = false;
  /** The run in flight, if any. */
  private inFlight: Promise<ReconcileResult | undefined> | undefined;
  /** The latest state waiting for the run in flight, and the promise its run will settle. */
  private pending: PendingRun | undefined;
  /** Whether `conntrack -R` (batch) works; false after an old tool refused it. */
  private batchSupported = true;
  private counts = { runs: 0, commands: 0 };

  constructor(private readonly opts: ConntrackReconcilerOptions) {}

  get stats(): ReconcilerStats {
    return { ...this.counts };
  }

  private exec(args: readonly string[], opts: { allowFailure?: boolean } = {}) {
    this.counts.commands++;
    this.opts.metrics?.conntrackCommands.inc();
    return run([this.opts.binary ?? 'conntrack', ...args], {
      netns: this.opts.netns,
      timeoutMs: this.opts.timeoutMs ?? 30_000,
      allowFailure: opts.allowFailure ?? false,
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

  /**
   * Applies delete filters: one `conntrack -R` for all of them; with a tool too old for `-R`, one
   * `conntrack -D` per filter. Returns the flows deleted.
   */
  async deleteBatch(filters: readonly ConntrackDeleteFilter[]): Promise<number> {
    if (filters.length === 0) return 0;
    if (this.batchSupported) {
      const r = await withBatchFile(batchDeleteInput(filters), (path) =>
        this.exec(['-R', path], { allowFailure: true }),
      );
      if (r.exitCode === 0) return countDeleted(r.stdout);
      if (r.failure !== 'unknown-option') throw commandError(r);
      log.warn('conntrack has no batch mode (-R); deleting stale flows one filter at a time', {
        stderr: r.stderr.trim(),
      });
      this.batchSupported = false;
    }
    let deleted = 0;
    for (const f of filters) {
      const r = await this.exec(filterArgs(f), { allowFailure: true });
      const flows = flowsDeletedOf(r.stderr);
      // conntrack -D exits 1 when the filter matched nothing ("0 flow entries have been deleted").
      if (r.exitCode !== 0 && flows !== 0) throw commandError(r);
      deleted += flows ?? 0;
    }
    return deleted;
  }

  /** Deletes every stale UDP flow for `state` (all families). */
  async reconcile(state: ClusterState): Promise<ReconcileResult> {
    this.counts.runs++;
    this.opts.metrics?.conntrackRuns.inc();
    const started = performance.now();
    let listed = 0;
    let deleted = 0;
    let filterCount = 0;
    for (const family of this.opts.families) {
      const entries = await this.list(family);
      listed += entries.length;
      const filters = deleteFilters(staleUDPEntries(state, family, entries));
      if (filters.length === 0) continue;
      filterCount += filters.length;
      deleted += await this.deleteBatch(filters);
      for (const f of filters) {
        log.verbose('deleted stale UDP conntrack entries', {
          family,
          origDst: `${f.origDst}:${f.origDport}`,
          replySrc: `${f.replySrc}:${f.replySport}`,
          flows: f.flows,
        });
      }
    }
    const durationMs = performance.now() - started;
    this.opts.metrics?.conntrackDuration.observe(durationMs / 1000);
    this.opts.metrics?.conntrackDeleted.inc(deleted);
    return { listed, filters: filterCount, deleted, durationMs };
  }

  /**
   * Reconciles after a synced state when its UDP endpoints changed (never throws): `change` is the
   * sync's (the controller's, src/model/state-change.ts); without one, or when it does not start at
   * the state of the last call, the change since that state. While a run is in flight, later states
   * replace each other as the one pending run; the promise settles with the run that covers `state`
   * (undefined when no cleanup was needed or it failed).
   */
  afterSync(state: ClusterState, change?: StateChange): Promise<ReconcileResult | undefined> {
    const prev = this.lastSeen;
    this.lastSeen = state;
    if (this.pending) {
      // A run is already waiting: it now cleans for this newer state.
      this.pending.state = state;
      return this.pending.promise;
    }
    // The first sync after a start also cleans: flows may predate a restart.
    const needed =
      !this.disabled &&
      (this.retry || prev === undefined || changeSinceApplied(change, prev, state).udpEndpoints.size > 0);
    if (!needed) return Promise.resolve(undefined);
    if (!this.inFlight) return this.runGuarded(state);
    let start!: () => void;
    const gate = new Promise<void>((resolve) => (start = resolve));
    const pending: PendingRun = { state, start, promise: Promise.resolve(undefined) };
    pending.promise = gate.then(() => {
      this.pending = undefined;
      return this.runGuarded(pending.state);
    });
    this.pending = pending;
    return pending.promise;
  }

  /** One run; when it ends the pending one (if any) starts. */
  private runGuarded(state: ClusterState): Promise<ReconcileResult | undefined> {
    const p = this.runOnce(state).finally(() => {
      if (this.inFlight === p) this.inFlight = undefined;
      this.pending?.start();
    });
    this.inFlight = p;
    return p;
  }

  private async runOnce(state: ClusterState): Promise<ReconcileResult | undefined> {
    if (this.disabled) return undefined;
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
  }

  /** Listens to a controller's 'synced' events. Returns a detach function. */
  attach(controller: SyncedEvents): () => void {
    const fn = (_reports: unknown[], state: ClusterState, change: StateChange): void =>
      void this.afterSync(state, change);
    controller.on('synced', fn);
    return () => controller.off('synced', fn);
  }

  /** Resolves when no run is in flight or pending. */
  async idle(): Promise<void> {
    while (this.inFlight || this.pending) {
      await (this.pending?.promise ?? this.inFlight);
    }
  }
}

/**
 * `conntrack -R` reads a file: `-` means /dev/stdin, which it cannot open when stdin is a socket (as
 * Node's child pipes are). The batch goes through a private temporary file (TMPDIR: a tmpfs in the
 * image, whose root filesystem is read-only).
 */
async function withBatchFile<T>(content: string, fn: (path: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'svcplane-conntrack-'));
  try {
    const path = join(dir, 'batch');
    await writeFile(path, content, { mode: 0o600 });
    return await fn(path);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

function commandError(r: RunResult): CommandError {
  return new CommandError(r.argv, r.exitCode, r.stderr, 'exit');
}
