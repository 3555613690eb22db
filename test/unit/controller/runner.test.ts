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

  it('with no wait due, a request runs in the same turn of the event loop (no 1 ms timer)', async () => {
    let n = 0;
    const r = new BoundedFrequencyRunner(
      () => {
        n++;
        return Promise.resolve();
      },
      { minIntervalMs: 0, maxIntervalMs: 10_000 },
    );
    r.start();
    await r.idle();
    assert.equal(n, 1);
    // Asked for from a callback, as a source's change is: the run comes with the immediates queued
    // after it, not on a timer (1 ms at least, then the loop's wake-up).
    await new Promise<void>((resolve) =>
      setImmediate(() => {
        r.request();
        setImmediate(() => {
          assert.equal(n, 2, 'ran in the turn it was asked for');
          resolve();
        });
      }),
    );
    r.stop();
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
    // Waits on what happened, never on a window of time: a loaded machine delays every timer.
    const PERIOD = 1000;
    const t0 = performance.now();
    const source = new HandSource();
    const backend = new TimedBackend(t0);
    const c = new Controller(source, [backend], { minSyncPeriodMs: 10, syncPeriodMs: PERIOD });
    await c.start();
    try {
      // A change half a period before the drift timer fires: the runner's periodic sync is re-armed
      // from it, the drift check is not (it used to wait for the next periodic sync: one whole
      // period after the change's sync).
      await sleep(PERIOD / 2);
      const before = backend.syncs.length;
      source.change();
      await poll('the change synced', () => backend.syncs.length > before);
      const changeSynced = backend.syncs[before]!;
      await poll('a drift check', () => backend.driftChecks.length >= 1);
      const first = backend.driftChecks[0]!;
      assert.ok(
        changeSynced < first,
        `the change synced at ${changeSynced} ms, before the check at ${first} ms`,
      );
      assert.ok(
        first - changeSynced < PERIOD * 0.8,
        `first drift check ${Math.round(first - changeSynced)} ms after the change's sync (period ${PERIOD} ms)`,
      );
      await poll('a second drift check', () => backend.driftChecks.length >= 2);
      assert.ok(
        backend.driftChecks[1]! - first < PERIOD * 1.5,
        `drift checks at ${backend.driftChecks.join()}`,
      );
    } finally {
      await c.stop();
    }
    const n = backend.driftChecks.length;
    await sleep(PERIOD + 50);
    assert.equal(backend.driftChecks.length, n, 'no drift check after stop()');
  });
});

/** Polls `cond` every 10 ms; fails after 10 s. */
async function poll(what: string, cond: () => boolean): Promise<void> {
  const deadline = performance.now() + 10_000;
  while (!cond()) {
    if (performance.now() > deadline) assert.fail(`${what}: not within 10 s`);
    await sleep(10);
  }
}

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
