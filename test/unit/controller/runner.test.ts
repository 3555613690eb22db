import assert from 'node:assert/strict';
import type { Backend, SyncReport } from '../../../src/modes/backend.js';
import { Controller } from '../../../src/controller/controller.js';
import { BoundedFrequencyRunner } from '../../../src/controller/runner.js';
import type { StateSource } from '../../../src/kube/source.js';
import { log } from '../../../src/util/log.js';
import { HandSource } from '../../support/hand-source.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('BoundedFrequencyRunner', () => {
  it('runs at once, then coalesces requests within the minimum interval', async () => {
    const runs: number[] = [];
    const t0 = performance.now();
    const r = new BoundedFrequencyRunner(
      () => {
        runs.push(performance.now() - t0);
        return Promise.resolve();
      },
      { minIntervalMs: 150, maxIntervalMs: 10_000 },
    );
    r.start();
    await sleep(20);
    for (let i = 0; i < 10; i++) r.request();
    await sleep(300);
    r.stop();
    assert.equal(runs.length, 2, `runs at ${runs.join(', ')}`);
    assert.ok(runs[1]! - runs[0]! >= 140, 'second run waited for the minimum interval');
  });

  it('runs periodically at the maximum interval', async () => {
    let n = 0;
    const r = new BoundedFrequencyRunner(
      () => {
        n++;
        return Promise.resolve();
      },
      { minIntervalMs: 10, maxIntervalMs: 60 },
    );
    r.start();
    await sleep(230);
    r.stop();
    assert.ok(n >= 3 && n <= 6, `ran ${n} times`);
  });

  it('retries a failed run with growing backoff and reports the error', async () => {
    const errors: number[] = [];
    let calls = 0;
    const r = new BoundedFrequencyRunner(
      () => {
        calls++;
        return calls <= 3 ? Promise.reject(new Error('boom')) : Promise.resolve();
      },
      { minIntervalMs: 10, maxIntervalMs: 10_000, retryBaseMs: 20 },
      (_err, retryIn) => errors.push(retryIn),
    );
    r.start();
    await sleep(300);
    r.stop();
    assert.deepEqual(errors, [20, 40, 80]);
    assert.equal(calls, 4, 'succeeded on the fourth attempt and stopped retrying');
  });

  it('never overlaps runs', async () => {
    let active = 0;
    let maxActive = 0;
    const r = new BoundedFrequencyRunner(
      async () => {
        active++;
        maxActive = Math.max(maxActive, active);
        await sleep(30);
        active--;
      },
      { minIntervalMs: 0, maxIntervalMs: 10_000 },
    );
    r.start();
    for (let i = 0; i < 5; i++) {
      r.request();
      await sleep(5);
    }
    await sleep(150);
    r.stop();
    assert.equal(maxActive, 1);
  });
});

/** A source the test changes by hand. */

/** Records when syncs and drift checks happen (ms since `t0`). */
class TimedBackend implements Backend {
  readonly name = 'timed/IPv4';
  readonly syncs: number[] = [];
  readonly driftChecks: number[] = [];
  constructor(private readonly t0: number) {}
  setup(): Promise<void> {
    return Promise.resolve();
  }
  detectDrift(): Promise<boolean> {
    this.driftChecks.push(performance.now() - this.t0);
    return Promise.resolve(false);
  }
  forceFullSync(): void {}
  sync(): Promise<SyncReport> {
    this.syncs.push(performance.now() - this.t0);
    return Promise.resolve({
      backend: this.name,
      full: false,
      durationMs: 0,
      bytes: 0,
      lines: 0,
      writtenServices: 0,
      staleChains: 0,
    });
  }
}

describe('Controller drift checks', () => {
  let level = log.level;
  before(() => {
    level = log.level;
    log.level = 'error';
  });
  after(() => {
    log.level = level;
  });

  it('run every sync period on their own timer: a change-driven sync does not postpone them', async () => {
    const PERIOD = 400;
    const t0 = performance.now();
    const source = new HandSource();
    const backend = new TimedBackend(t0);
    const c = new Controller(source, [backend], { minSyncPeriodMs: 10, syncPeriodMs: PERIOD });
    await c.start();
    try {
      // A change just before the period ends: the runner's periodic sync is re-armed from it, but
      // the drift check is not (it used to wait for the next periodic sync, ~2 periods).
      await sleep(PERIOD - 80);
      source.change();
      await sleep(200);
      assert.ok(
        backend.syncs.some((t) => t > PERIOD - 80 && t < PERIOD),
        `change synced: ${backend.syncs.join()}`,
      );
      assert.equal(backend.driftChecks.length, 1, `drift checks at ${backend.driftChecks.join()}`);
      assert.ok(
        backend.driftChecks[0]! >= PERIOD - 20 && backend.driftChecks[0]! < PERIOD + 100,
        `first drift check at ${Math.round(backend.driftChecks[0]!)} ms, period ${PERIOD} ms`,
      );
      await sleep(PERIOD);
      assert.equal(backend.driftChecks.length, 2, `drift checks at ${backend.driftChecks.join()}`);
      assert.ok(backend.driftChecks[1]! - backend.driftChecks[0]! < PERIOD + 100);
    } finally {
      await c.stop();
    }
    const n = backend.driftChecks.length;
    await sleep(PERIOD + 50);
    assert.equal(backend.driftChecks.length, n, 'no drift check after stop()');
  });
});

describe('Controller stop() during start()', () => {
  it('start() returns when stop() is called while the source never completes its first state', async () => {
    let rejectStart: (e: Error) => void = () => undefined;
    const source: StateSource = {
      start: () => new Promise<void>((_, reject) => (rejectStart = reject)),
      current: () => undefined,
      onChange: () => () => undefined,
      health: () => ({ healthy: false, reason: 'API unreachable' }),
      stop: () => {
        rejectStart(new Error('stopped before initial sync'));
        return Promise.resolve();
      },
    };
    const backend = new TimedBackend(performance.now());
    const c = new Controller(source, [backend], { minSyncPeriodMs: 10, syncPeriodMs: 100 });
    let done = false;
    const started = c.start().then(() => (done = true));
    await sleep(50);
    assert.equal(done, false, 'still waiting for the source');
    await c.stop();
    await started;
    await sleep(150);
    assert.deepEqual(backend.syncs, [], 'nothing synced, no timer left running');
    assert.deepEqual(backend.driftChecks, []);
  });

  it('start() returns when stop() is called while the first sync never finishes', async () => {
    const source = new HandSource();
    const hung: Backend = {
      name: 'hung/IPv4',
      setup: () => Promise.resolve(),
      detectDrift: () => Promise.resolve(false),
      forceFullSync: () => undefined,
      sync: () => new Promise<SyncReport>(() => undefined),
    };
    const c = new Controller(source, [hung], { minSyncPeriodMs: 10, syncPeriodMs: 100 });
    let done = false;
    const started = c.start().then(() => (done = true));
    await sleep(50);
    assert.equal(done, false, 'the first sync is still running');
    await c.stop();
    await started;
  });
});
