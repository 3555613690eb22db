import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import winston from 'winston';
import type { Backend, SyncReport } from '../../../src/modes/backend.js';
import { Controller } from '../../../src/controller/controller.js';
import type { ClusterState, Problem } from '../../../src/model/types.js';
import { configureLogging, log } from '../../../src/util/log.js';
import { HandSource } from '../../support/hand-source.js';

/**
 * The controller logs each problem once while it lasts. The set of logged problems is pruned to the
 * problems still present: it does not grow with every problem ever seen (a churning bad object, file
 * names with timestamps), and a problem that was fixed and comes back is logged again.
 */

/** Resolves `synced` after each sync; reports nothing interesting. */
class CountingBackend implements Backend {
  readonly name = 'count/IPv4';
  syncs = 0;
  private waiters: (() => void)[] = [];
  setup(): Promise<void> {
    return Promise.resolve();
  }
  sync(): Promise<SyncReport> {
    this.syncs++;
    for (const w of this.waiters.splice(0)) w();
    return Promise.resolve({
      backend: this.name,
      full: true,
      durationMs: 1,
      bytes: 0,
      lines: 0,
      writtenServices: 0,
      staleChains: 0,
    });
  }
  detectDrift(): Promise<boolean> {
    return Promise.resolve(false);
  }
  forceFullSync(): void {}
  nextSync(): Promise<void> {
    return new Promise((resolve) => this.waiters.push(resolve));
  }
}

const problem = (name: string): Problem => ({
  object: { kind: 'Service', namespace: 'p', name, source: `${name}.yaml#0` },
  field: 'spec.externalIPs[0]',
  reason: '127.0.0.1 may not be in the loopback range (127.0.0.0/8)',
});
const withProblems = (...names: string[]): ClusterState => ({
  services: new Map(),
  nodes: new Map(),
  problems: names.map(problem),
});

describe('hardening: the problem log is pruned to the problems still present', () => {
  const logged: string[] = [];
  const sink = new winston.transports.Stream({
    stream: new Writable({
      write(chunk: Buffer, _enc, done) {
        const line = JSON.parse(chunk.toString()) as { message?: string; object?: { name?: string } };
        if (line.message === 'skipped invalid input') logged.push(line.object?.name ?? '?');
        done();
      },
    }),
  });
  before(() => {
    configureLogging({ format: 'json' });
    log.add(sink);
  });
  after(() => {
    log.remove(sink);
    configureLogging({ format: 'text' });
  });

  it('logs a problem once while it lasts, and again when it comes back after a fix', async () => {
    const src = new HandSource(withProblems('a', 'b'));
    const be = new CountingBackend();
    const c = new Controller(src, [be], { minSyncPeriodMs: 1, syncPeriodMs: 60_000 });
    await c.start();
    try {
      assert.deepEqual(logged.splice(0), ['a', 'b']);
      const step = async (s: ClusterState): Promise<string[]> => {
        const synced = be.nextSync();
        src.set(s);
        await synced;
        return logged.splice(0);
      };
      assert.deepEqual(await step(withProblems('a', 'b')), [], 'still present: not logged again');
      assert.deepEqual(await step(withProblems('a')), [], 'b fixed');
      assert.deepEqual(await step(withProblems('a', 'b')), ['b'], 'b broken again: logged again');
      // Three hundred different problems one after the other: each logged, none kept once gone.
      for (let i = 0; i < 300; i++) assert.deepEqual(await step(withProblems(`churn-${i}`)), [`churn-${i}`]);
      assert.deepEqual(await step(withProblems('a', 'b')), ['a', 'b'], 'the churn forgot a and b too');
      const kept = (c as unknown as { problemsLogged: ReadonlySet<string> }).problemsLogged;
      assert.equal(kept.size, 2, 'only the current problems are remembered');
    } finally {
      await c.stop();
    }
  });
});
