import assert from 'node:assert/strict';
import { flowsDeletedOf } from '../../../src/conntrack/entries.js';
import { RestoreError } from '../../../src/iptables/iptables.js';
import { NftError } from '../../../src/nftables/nft.js';
import { classifyFailure, CommandError, failureOfErrno, run } from '../../../src/util/exec.js';
import { readSysctl, SysctlError } from '../../../src/util/sysctl.js';

/**
 * Kernel tool failures are classified once, where the tool's output is read (src/util/exec.ts):
 * callers test `failure`, never the stderr text. The texts below are what the tools print.
 */
describe('failure causes of kernel tools, classified once', () => {
  it('classifies what the tools print', () => {
    const cases: [string, ReturnType<typeof classifyFailure>][] = [
      [
        'Error: No such file or directory\nlist table ip kube-proxy\n                 ^^^^^^^^^^',
        'no-such-object',
      ],
      ['RTNETLINK answers: File exists', 'exists'],
      ['Error: Could not process rule: Operation not supported\nadd table ip kube-proxy', 'not-supported'],
      [
        'iptables v1.8.9 (nf_tables): Could not fetch rule set generation id: Permission denied (you must be root)',
        'permission',
      ],
      ['Error: Could not process rule: Device or resource busy\ndelete chain ip kube-proxy x', 'busy'],
      ['tee: /proc/sys/net/netfilter/nf_conntrack_tcp_be_liberal: Read-only file system', 'read-only'],
      ["conntrack v1.4.7 (conntrack-tools): unknown option `-R'", 'unknown-option'],
      ["iptables-restore: line 3 failed\nChain 'KUBE-SVC-X' does not exist", 'no-such-object'],
      ['iptables-restore: line 3 failed', 'other'],
      ['', 'other'],
    ];
    for (const [stderr, cause] of cases) assert.equal(classifyFailure(stderr), cause, stderr);
  });

  it('classifies errno codes of this process alike', () => {
    assert.equal(failureOfErrno({ code: 'ENOENT' }), 'no-such-object');
    assert.equal(failureOfErrno({ code: 'EROFS' }), 'read-only');
    assert.equal(failureOfErrno({ code: 'EACCES' }), 'permission');
    assert.equal(failureOfErrno(new Error('no code')), 'other');
  });

  it('every error of a tool carries its cause: CommandError, RestoreError, NftError', () => {
    const c = new CommandError(['ip', 'link', 'add'], 2, 'RTNETLINK answers: File exists', 'exit');
    assert.equal(c.failure, 'exists');
    const r = new RestoreError(
      ['iptables-restore'],
      1,
      "iptables-restore: line 3 failed: Chain 'KUBE-SEP-ABC' does not exist",
      'exit',
      3,
      'x',
      3,
    );
    assert.equal(r.missingChain, 'KUBE-SEP-ABC');
    assert.equal(
      new RestoreError(['iptables-restore'], 1, 'line 2 failed', 'exit', 2, 'x', 2).missingChain,
      undefined,
    );
    const n = new NftError(
      new CommandError(
        ['nft', '-f', '-'],
        1,
        'Error: Could not process rule: Operation not supported',
        'exit',
      ),
      'nftables cleanup',
    );
    assert.ok(n instanceof CommandError, 'printed and classified as every command failure');
    assert.equal(n.message, `nftables cleanup: ${new CommandError(n.argv, 1, n.stderr, 'exit').message}`);
    assert.equal(n.failure, 'not-supported');
  });

  it('run() classifies a real failed command; a sysctl that is not there reads as undefined', async () => {
    const missing = await run(['cat', '/nonexistent/svcplane-test'], { allowFailure: true });
    assert.equal(missing.failure, 'no-such-object');
    const option = await run(['ls', '--svcplane-no-such-option'], { allowFailure: true });
    assert.equal(option.failure, 'unknown-option');
    const ok = await run(['cat', '/dev/null']);
    assert.equal(ok.failure, undefined);
    await assert.rejects(run(['cat', '/nonexistent/svcplane-test']), (e: unknown) => {
      assert.ok(e instanceof CommandError);
      assert.equal(e.failure, 'no-such-object');
      return true;
    });
    assert.equal(await readSysctl('net.svcplane.no_such_key'), undefined);
    assert.equal(new SysctlError('x', 'k', { code: 'EROFS' }).failure, 'read-only');
  });

  it("reads conntrack -D's summary line", () => {
    assert.equal(
      flowsDeletedOf('conntrack v1.4.7 (conntrack-tools): 3 flow entries have been deleted.\n'),
      3,
    );
    assert.equal(
      flowsDeletedOf('conntrack v1.4.7 (conntrack-tools): 0 flow entries have been deleted.\n'),
      0,
    );
    assert.equal(flowsDeletedOf('conntrack: unknown option'), undefined);
  });
});
