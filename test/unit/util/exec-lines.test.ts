import assert from 'node:assert/strict';
import { startProcess } from '../../../src/util/exec.js';

/**
 * A long-lived child's output as lines (src/util/exec.ts, startProcess). nft monitor writes
 * "XT target MASQUERADE not found" to stderr while it prints a commit's lines on stdout: merged,
 * the two streams' chunks interleave inside a line (seen: "# new generation 10XT target MASQUERADE
 * not found"), so the kernel watch reads stdout apart. A real child (sh), no mock.
 */
describe('startProcess: output lines', () => {
  // The child flushes half a stdout line, a stderr line, then the rest, each after a pause so the
  // chunks arrive apart.
  const script =
    "printf '# new generation 1'; sleep 0.1; echo 'XT target MASQUERADE not found' >&2; sleep 0.1; echo '0 by process 7 (nft)'";

  it("stderr kept apart: stdout's lines stay whole, stderr's come on their own", async () => {
    const child = startProcess(['sh', '-c', script], { stderr: 'apart' });
    const out: string[] = [];
    const err: string[] = [];
    child.onLine((l) => out.push(l));
    child.onErrorLine((l) => err.push(l));
    assert.equal(await child.exited, 0);
    assert.deepEqual(out, ['# new generation 10 by process 7 (nft)']);
    assert.deepEqual(err, ['XT target MASQUERADE not found']);
  });
});
