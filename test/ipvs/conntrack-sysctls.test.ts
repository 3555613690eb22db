// The host-wide conntrack settings, written and read back where that is allowed without touching the
// host: inside User-mode Linux, whose root network namespace is its own kernel's. nf_conntrack_max and
// the module's hashsize are one value per kernel (read-only from any other network namespace), so the
// host-side test (test/integration/kube-proxy-cli.test.ts) can only check the warning there.
import { strict as assert } from 'node:assert';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { run, type RunResult } from '../../src/util/exec.js';
import { packageRoot } from '../../src/util/paths.js';
import { cmd, requireUml } from './helpers.js';

const CLI = join(packageRoot(), 'bin', 'svcplane.js');
const MAX = '/proc/sys/net/netfilter/nf_conntrack_max';
const HASHSIZE = '/sys/module/nf_conntrack/parameters/hashsize';

const read = (path: string): number => Number(readFileSync(path, 'utf8').trim());

/** `svcplane [flags]` as a process in UML's root namespace (behind `wrapper`, e.g. a read-only /sys). */
function svcplane(args: readonly string[], wrapper: readonly string[] = []): Promise<RunResult> {
  return run([...wrapper, process.execPath, CLI, '--hostname-override=node-1', '--init-only', ...args], {
    allowFailure: true,
    timeoutMs: 120_000,
  });
}

describe('conntrack: nf_conntrack_max and hashsize (UML: its own kernel)', function () {
  this.timeout(180_000);
  before(async function () {
    requireUml(this);
    // conntrack is loaded once a nat table is in use.
    await cmd(['iptables', '-t', 'nat', '-S']);
  });

  it('raises nf_conntrack_max to max(maxPerCore × CPUs, min) and hashsize to a quarter of it', async () => {
    const want = Math.max(read(MAX) + 4096, 4 * read(HASHSIZE) + 4096);
    const res = await svcplane(['--conntrack-max-per-core=1', `--conntrack-min=${want}`]);
    assert.equal(res.exitCode, 0, res.stderr);
    assert.equal(read(MAX), want);
    assert.equal(read(HASHSIZE), Math.floor(want / 4));
    assert.doesNotMatch(res.stderr, /^W/m, res.stderr);
  });

  it('never lowers them; maxPerCore=0 leaves them as they are', async () => {
    const [max, hash] = [read(MAX), read(HASHSIZE)];
    assert.equal((await svcplane(['--conntrack-max-per-core=1', '--conntrack-min=1024'])).exitCode, 0);
    assert.deepEqual([read(MAX), read(HASHSIZE)], [max, hash]);
    assert.equal((await svcplane(['--conntrack-max-per-core=0', `--conntrack-min=${max * 2}`])).exitCode, 0);
    assert.deepEqual([read(MAX), read(HASHSIZE)], [max, hash]);
  });

  it('a read-only /sys (a container): nf_conntrack_max is set, hashsize is one warning, start-up goes on', async () => {
    const want = read(MAX) + 8192;
    const hash = read(HASHSIZE);
    assert.ok(Math.floor(want / 4) > hash, 'the hashsize must need raising for this test');
    const res = await svcplane(
      ['--conntrack-max-per-core=1', `--conntrack-min=${want}`],
      [
        'unshare',
        '-m',
        'sh',
        '-c',
        'mount --bind /sys /sys && mount -o remount,bind,ro /sys && exec "$@"',
        'ro',
      ],
    );
    assert.equal(res.exitCode, 0, res.stderr);
    assert.equal(read(MAX), want);
    assert.equal(read(HASHSIZE), hash);
    const warnings = res.stderr.split('\n').filter((l) => l.startsWith('W'));
    assert.equal(warnings.length, 1, res.stderr);
    assert.match(
      warnings[0]!,
      new RegExp(
        `cannot set nf_conntrack hashsize=${Math.floor(want / 4)} \\(now ${hash}\\): read-only file system; the container sees /sys or /proc/sys read-only`,
      ),
    );
  });
});
