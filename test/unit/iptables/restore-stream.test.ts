import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Iptables, RestoreError } from '../../../src/iptables/iptables.js';
import { requireRoot } from '../../support/sandbox.js';

/**
 * Iptables.restore with a streamed input (pieces produced while iptables-restore reads): the real
 * iptables-restore, in a private empty network namespace (a wrapper runs it under `unshare -n`).
 * Its counts are the input's, and a failure blames the right line of the whole input although only
 * the last pieces are kept.
 */
describe('iptables-restore of a streamed input (unshare -n)', function () {
  let dir: string;
  let ipt: Iptables;
  before(function () {
    requireRoot(this);
    dir = mkdtempSync(join(tmpdir(), 'svcplane-restore-stream-'));
    const wrapper = join(dir, 'iptables-restore');
    writeFileSync(wrapper, '#!/bin/sh\nexec unshare -n iptables-restore "$@"\n');
    chmodSync(wrapper, 0o755);
    ipt = new Iptables({ family: 'IPv4', binaries: { restore: wrapper } });
  });
  after(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  // A transaction of its own, preceded by 2 MB of comment lines (so that early pieces leave the
  // window the blame keeps).
  const padding = '# padding\n'.repeat(200_000);
  const piece = (i: number, bad = false): string =>
    `${padding}*filter\n:KUBE-T${i} - [0:0]\n-A KUBE-T${i} -j ${bad ? 'KUBE-NOT-THERE' : 'ACCEPT'}\nCOMMIT\n`;

  it('writes every piece and counts its bytes and lines', async () => {
    function* pieces(): Generator<string> {
      for (let i = 0; i < 4; i++) yield piece(i);
    }
    const r = await ipt.restore(pieces(), { noflush: true, counters: false });
    const whole = [0, 1, 2, 3].map((i) => piece(i)).join('');
    assert.equal(r.bytes, whole.length);
    assert.equal(r.lines, whole.split('\n').length - 1);
  });

  it('blames the failing line of the whole input, past the pieces it let go', async () => {
    function* pieces(): Generator<string> {
      for (let i = 0; i < 3; i++) yield piece(i);
      yield piece(3, true);
    }
    const whole = [0, 1, 2].map((i) => piece(i)).join('') + piece(3, true);
    const lines = whole.split('\n');
    const want = lines.indexOf('-A KUBE-T3 -j KUBE-NOT-THERE') + 1;
    await assert.rejects(ipt.restore(pieces(), { noflush: true, counters: false }), (err: unknown) => {
      assert.ok(err instanceof RestoreError, String(err));
      assert.ok(err.reportedLine !== undefined && err.reportedLine > 600_000, `reported ${err.reportedLine}`);
      assert.equal(err.line, want, err.message);
      assert.equal(err.lineText, '-A KUBE-T3 -j KUBE-NOT-THERE');
      return true;
    });
  });

  it('blames the failing line when each transaction comes in pieces of its own (a streamed full sync)', async () => {
    const tx = (i: number): string[] => [
      `*filter\n:KUBE-U${i} - [0:0]\n`,
      `-A KUBE-U${i} -j ${i === 30 ? 'KUBE-NOT-THERE' : 'ACCEPT'}\n`,
      'COMMIT\n',
    ];
    const all = Array.from({ length: 40 }, (_, i) => tx(i)).flat();
    const want = all.join('').split('\n').indexOf('-A KUBE-U30 -j KUBE-NOT-THERE') + 1;
    await assert.rejects(ipt.restore(all.values(), { noflush: true, counters: false }), (err: unknown) => {
      assert.ok(err instanceof RestoreError, String(err));
      assert.equal(err.line, want, err.message);
      assert.equal(err.lineText, '-A KUBE-U30 -j KUBE-NOT-THERE');
      return true;
    });
  });
});
