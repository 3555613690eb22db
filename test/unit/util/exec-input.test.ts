import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CommandError, run } from '../../../src/util/exec.js';

/**
 * A child's stdin as a stream of pieces (src/util/exec.ts, ChildInput): produced only as the child
 * reads them, never joined, and a producer that fails never lets the child see a truncated input
 * as complete. Real children (sh, cat, head), no mock.
 */
describe('run: stdin from a lazy producer', () => {
  const piece = (i: number): string => `${String(i).padStart(8, '0')}${'x'.repeat(100_000 - 9)}\n`;

  it('writes every piece in order, from a generator and from an async iterable', async () => {
    function* gen(): Generator<string> {
      for (let i = 0; i < 50; i++) yield piece(i);
    }
    async function* agen(): AsyncGenerator<string> {
      for (let i = 0; i < 50; i++) {
        await new Promise((r) => setImmediate(r));
        yield piece(i);
      }
    }
    const want = Array.from({ length: 50 }, (_, i) => piece(i)).join('');
    for (const input of [gen(), agen()]) {
      const r = await run(['cat'], { input });
      assert.equal(r.stdout.length, want.length);
      assert.equal(r.stdout, want);
    }
  });

  it('asks for the next piece only when the child has taken the previous ones (backpressure)', async () => {
    let produced = 0;
    function* gen(): Generator<string> {
      for (let i = 0; i < 200; i++) {
        produced++;
        yield piece(i);
      }
    }
    // The child reads nothing until the test lets it: the pipe (64 KiB) and the stream's buffer
    // fill, and the producer must wait (200 pieces are 20 MB; unbounded, all would be produced).
    const dir = mkdtempSync(join(tmpdir(), 'svcplane-exec-'));
    try {
      const go = join(dir, 'go');
      const child = run(['sh', '-c', 'while [ ! -e "$0" ]; do sleep 0.02; done; wc -c', go], {
        input: gen(),
      });
      await new Promise((r) => setTimeout(r, 300));
      const producedWhileBlocked = produced;
      writeFileSync(go, '');
      const r = await child;
      assert.equal(r.stdout.trim(), String(200 * 100_000));
      assert.ok(producedWhileBlocked >= 1 && producedWhileBlocked <= 3, `produced ${producedWhileBlocked}`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    assert.equal(produced, 200);
  });

  it('stops producing when the child exits early, and reports its exit and stderr', async () => {
    let produced = 0;
    let finished = false;
    function* gen(): Generator<string> {
      try {
        for (let i = 0; i < 10_000; i++) {
          produced++;
          yield piece(i);
        }
      } finally {
        finished = true;
      }
    }
    await assert.rejects(
      run(['sh', '-c', 'head -c 10 >/dev/null; echo "line 1 failed" >&2; exit 2'], { input: gen() }),
      (err: unknown) =>
        err instanceof CommandError &&
        err.reason === 'exit' &&
        err.exitCode === 2 &&
        err.stderr.includes('line 1 failed'),
    );
    assert.ok(produced < 10, `produced ${produced}`);
    assert.ok(finished, 'the producer was closed (its finally ran)');
  });

  it("a producer that throws: the child is killed before its stdin closes, and run rejects with the producer's error", async () => {
    class RenderBroke extends Error {}
    function* gen(): Generator<string> {
      yield 'first\n';
      throw new RenderBroke('render broke');
    }
    // Were stdin closed first, the child would see EOF and take the truncated input for a whole
    // one (iptables-restore would commit the transactions it got): here it would leave a marker.
    const dir = mkdtempSync(join(tmpdir(), 'svcplane-exec-'));
    try {
      const marker = join(dir, 'read-to-eof');
      await assert.rejects(
        run(['sh', '-c', 'cat >/dev/null && touch "$0"', marker], { input: gen() }),
        (err: unknown) => err instanceof RenderBroke,
      );
      assert.equal(existsSync(marker), false, 'the child saw end of input');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
