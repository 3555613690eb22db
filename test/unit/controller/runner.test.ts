import assert from 'node:assert/strict';
import { BoundedFrequencyRunner } from '../../../src/controller/runner.js';

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
