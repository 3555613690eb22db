import { EventEmitter } from 'node:events';
import type { StateSource } from '../kube/source.js';
import { stateChange, type StateChange } from '../model/state-change.js';
import type { ClusterState } from '../model/types.js';
import { log } from '../util/log.js';
import type { Backend, SyncReport } from '../modes/backend.js';
import { BoundedFrequencyRunner } from './runner.js';
import { massRemovalVerdict, programmedKeys, SAFETY_VALVE, type ValveVerdict } from './safety-valve.js';

/**
 * The reconcile loop: waits for the source's first complete state, then converges every backend to
 * the latest state, at most once per minSyncPeriod and at least once per syncPeriod. Drift (rules
 * changed by another agent) is checked on a timer of its own, every syncPeriod whatever the syncs in
 * between, so a repair never waits more than one period plus one sync. Failures are retried with
 * backoff; the kernel keeps the previous rules meanwhile. A state that would take most Services out
 * of service while as many objects became invalid is refused by the safety valve (safety-valve.ts).
 */

export interface ControllerOptions {
  readonly minSyncPeriodMs: number;
  readonly syncPeriodMs: number;
}

export interface ControllerEvents {
  /** Every backend synced `state`; `change` is what each was handed (the metrics and conntrack use it too). */
  synced: [reports: SyncReport[], state: ClusterState, change: StateChange];
  syncError: [error: Error];
  /** The safety valve refused to apply `state`; nothing was written. */
  syncRefused: [verdict: ValveVerdict, state: ClusterState];
}

/** `svcplane sync` (and tests): the safety valve refused the state. */
export class SafetyValveError extends Error {
  constructor(readonly verdict: ValveVerdict) {
    super(refusalText(verdict));
    this.name = 'SafetyValveError';
  }
}

function refusalText(v: ValveVerdict): string {
  return (
    `safety valve: refused a sync that would take ${v.removed + v.emptied} of ${v.programmed} programmed ` +
    `Services out of service (${v.removed} removed, ${v.emptied} left without endpoints) while ` +
    `${v.newProblems} objects became invalid; the kernel keeps its rules. Fix or delete the invalid ` +
    'objects (logged as "skipped invalid input") to lift it'
  );
}

export class SyncError extends Error {
  constructor(readonly failures: readonly { backend: string; error: unknown }[]) {
    super(
      failures
        .map((f) => `${f.backend}: ${f.error instanceof Error ? f.error.message : String(f.error)}`)
        .join('; '),
    );
    this.name = 'SyncError';
  }
}

export class Controller extends EventEmitter<ControllerEvents> {
  private readonly runner: BoundedFrequencyRunner;
  private unsubscribe: (() => void) | undefined;
  /** Fires every syncPeriod; change-driven syncs do not reset it (unlike the runner's periodic sync). */
  private driftTimer: NodeJS.Timeout | undefined;
  /** Set by the drift timer; the next sync (requested at once) checks every backend first. */
  private driftCheckDue = false;
  /** Wall-clock ms of the oldest change not yet in the kernel (0 when none). */
  private queuedSince = 0;
  private lastSyncedAt = 0;
  /** Set while a sync runs; a change arriving meanwhile stays queued (its time is kept here). */
  private syncing = false;
  private changedDuringSync = 0;
  private setupDone = false;
  /** Problems of the last synced state that were logged: exactly those still present (pruned each sync). */
  private problemsLogged = new Set<string>();
  /** The last state every backend applied (the valve's "programmed"). */
  private applied: ClusterState | undefined;
  /** The state the valve refused last, and since when syncs are refused (0: not refused). */
  private refusedState: ClusterState | undefined;
  private refusedSince = 0;
  private stopped = false;
  /** Set while start() waits for the first sync; stop() calls it so start() returns. */
  private wakeStart: (() => void) | undefined;

  constructor(
    readonly source: StateSource,
    readonly backends: readonly Backend[],
    private readonly opts: ControllerOptions,
  ) {
    super();
    this.runner = new BoundedFrequencyRunner(
      () => this.syncAll(),
      { minIntervalMs: opts.minSyncPeriodMs, maxIntervalMs: opts.syncPeriodMs },
      (err, retryIn) => {
        log.error('sync failed; previous rules stay in place', { error: err, retryInMs: retryIn });
      },
    );
  }

  /**
   * Starts the loop; resolves once the first sync has been attempted, or at once when stop() is
   * called meanwhile (the source may never complete its first state: an API that is never reached).
   */
  async start(): Promise<void> {
    try {
      await this.source.start();
    } catch (err) {
      if (this.stopped) return; // the source's start was aborted by stop()
      throw err;
    }
    if (this.stopped) return;
    this.unsubscribe = this.source.onChange(() => {
      const now = Date.now();
      if (this.queuedSince === 0) this.queuedSince = now;
      if (this.syncing && this.changedDuringSync === 0) this.changedDuringSync = now;
      this.runner.request();
    });
    // Every family's watch arms at once: the first sync waits for the slowest, not for their sum.
    await Promise.all(
      this.backends.map(async (b) => {
        try {
          await b.watchKernel?.();
        } catch (err) {
          log.warn('cannot watch the kernel for drift; drift checks read every rule', {
            backend: b.name,
            error: err,
          });
        }
      }),
    );
    if (this.stopped) return;
    this.queuedSince = Date.now();
    const first = new Promise<void>((resolve) => {
      const done = (): void => {
        this.off('synced', done);
        this.off('syncError', done);
        this.off('syncRefused', done);
        this.wakeStart = undefined;
        resolve();
      };
      this.on('synced', done);
      this.on('syncError', done);
      this.on('syncRefused', done);
      this.wakeStart = done;
    });
    this.runner.start();
    this.driftTimer = setInterval(() => {
      // Inside the runner, so a check never overlaps a sync (iptables-save during a restore).
      this.driftCheckDue = true;
      this.runner.request();
    }, this.opts.syncPeriodMs);
    this.driftTimer.unref();
    await first;
  }

  /** Stops the loop and the source (also while start() still waits for them); the rules stay. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.wakeStart?.();
    clearInterval(this.driftTimer);
    this.driftTimer = undefined;
    this.runner.stop();
    this.unsubscribe?.();
    await this.source.stop();
    for (const b of this.backends) await b.close?.();
  }

  /** One convergence, for `svcplane sync`: start the source, sync once, stop. Throws on failure. */
  async syncOnce(): Promise<SyncReport[]> {
    await this.source.start();
    try {
      const state = this.requireState();
      const verdict = await this.valve(state);
      if (verdict?.refuse) {
        this.logProblems(state);
        throw new SafetyValveError(verdict);
      }
      return (await this.syncState(state)).reports;
    } finally {
      await this.source.stop();
    }
  }

  /**
   * kube-proxy's healthz view: the oldest unsynced change and the last successful sync; plus since
   * when the safety valve refuses the latest state (0: it does not).
   */
  health(): { queuedSince: number; lastSyncedAt: number; refusedSince: number } {
    return {
      queuedSince: this.queuedSince,
      lastSyncedAt: this.lastSyncedAt,
      refusedSince: this.refusedSince,
    };
  }

  /** Asks for a sync soon (e.g. an operator signal). */
  requestSync(): void {
    this.runner.request();
  }

  private requireState(): ClusterState {
    const state = this.source.current();
    if (!state) throw new Error('source has no complete state yet');
    return state;
  }

  private async syncAll(): Promise<void> {
    if (this.driftCheckDue) {
      this.driftCheckDue = false;
      await this.checkDrift();
    }
    this.syncing = true;
    this.changedDuringSync = 0;
    try {
      const state = this.requireState();
      const verdict = await this.valve(state);
      if (verdict?.refuse) {
        this.refuse(verdict, state);
        return;
      }
      if (this.refusedSince !== 0) {
        log.info('safety valve: the new state is accepted again; syncing', {});
        this.refusedSince = 0;
        this.refusedState = undefined;
      }
      const { reports, change } = await this.syncState(state);
      // Changes seen during the sync are not in the kernel yet: they stay queued (healthz).
      this.queuedSince = this.changedDuringSync;
      this.lastSyncedAt = Date.now();
      this.emit('synced', reports, state, change);
    } catch (err) {
      this.emit('syncError', err instanceof Error ? err : new Error(String(err)));
      throw err;
    } finally {
      this.syncing = false;
    }
  }

  /**
   * The safety valve's verdict on applying `state`, or undefined when it cannot trip (fewer
   * problems than the least number of Services it guards): the kernel is only read then.
   */
  private async valve(state: ClusterState): Promise<ValveVerdict | undefined> {
    if (state.problems.length < SAFETY_VALVE.minServices) return undefined;
    let programmed: ReadonlySet<string>;
    if (this.applied !== undefined) {
      programmed = programmedKeys(this.applied);
    } else {
      // The first sync of this process: what the kernel holds (an earlier run's or kube-proxy's).
      const keys = new Set<string>();
      for (const b of this.backends) {
        try {
          for (const k of (await b.programmedServices?.()) ?? []) keys.add(k);
        } catch (err) {
          log.warn('cannot read the programmed Services for the safety valve', {
            backend: b.name,
            error: err,
          });
        }
      }
      programmed = keys;
    }
    return massRemovalVerdict({ programmed, previous: this.applied, next: state });
  }

  /** Reports a refused state (once per state at error level) and tells listeners (metrics). */
  private refuse(verdict: ValveVerdict, state: ClusterState): void {
    this.logProblems(state);
    if (this.refusedSince === 0) this.refusedSince = Date.now();
    if (this.refusedState !== state) {
      this.refusedState = state;
      log.error(refusalText(verdict), {
        programmed: verdict.programmed,
        removed: verdict.removed,
        emptied: verdict.emptied,
        newProblems: verdict.newProblems,
        services: verdict.examples.join(' '),
      });
    }
    this.emit('syncRefused', verdict, state);
  }

  /** Asks every backend whether its rules are still as written; a drifted one syncs in full next. */
  private async checkDrift(): Promise<void> {
    const drifted: string[] = [];
    for (const b of this.backends) {
      try {
        if (await b.detectDrift()) drifted.push(b.name);
      } catch (err) {
        log.warn('drift check failed; forcing a full sync', { backend: b.name, error: err });
        b.forceFullSync();
        drifted.push(b.name);
      }
    }
    log.verbose('checked the kernel rules for drift', { fullSyncNext: drifted });
  }

  /** One sync of every backend; the change since the state they all applied last is computed once. */
  private async syncState(state: ClusterState): Promise<{ reports: SyncReport[]; change: StateChange }> {
    this.logProblems(state);
    const change = stateChange(this.applied, state);
    if (!this.setupDone) {
      for (const b of this.backends) await b.setup();
      this.setupDone = true;
    }
    const reports: SyncReport[] = [];
    const failures: { backend: string; error: unknown }[] = [];
    for (const b of this.backends) {
      try {
        const report = await b.sync(state, change);
        reports.push(report);
        // kube-proxy logs each sync at -v=2 ("SyncProxyRules complete").
        log.verbose('synced', { ...report, details: undefined, ...report.details });
      } catch (error) {
        failures.push({ backend: b.name, error });
      }
    }
    if (failures.length > 0) throw new SyncError(failures);
    this.applied = state;
    return { reports, change };
  }

  /**
   * Each distinct problem is logged once while it lasts, so a broken object does not flood the log
   * every sync; a fixed one is forgotten (the set never outgrows the current problems) and logged
   * again if it comes back.
   */
  private logProblems(state: ClusterState): void {
    const present = new Set<string>();
    for (const p of state.problems) {
      const key = JSON.stringify(p);
      present.add(key);
      if (this.problemsLogged.has(key)) continue;
      log.warn('skipped invalid input', { object: p.object, field: p.field, reason: p.reason });
    }
    this.problemsLogged = present;
  }
}
