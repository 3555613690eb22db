import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { run, startProcess } from '../../src/util/exec.js';
import { packageRoot } from '../../src/util/paths.js';
import { requireRoot } from '../support/sandbox.js';

/**
 * scripts/uml-run.sh leaves nothing behind: not on a command that outlives --timeout, not on a kernel
 * panic, not when the runner itself is stopped (SIGTERM) or killed (SIGKILL), and it refuses a working
 * directory that User-mode Linux would hide. "Nothing behind" = no process whose command line names this
 * run's work directory (the kernel's processes carry uml_dir=<work>/uml) and no work directory.
 */

const RUNNER = join(packageRoot(), 'scripts/uml-run.sh');

/** PIDs of processes whose command line mentions `needle`. */
async function processesWith(needle: string): Promise<number[]> {
  const pids: number[] = [];
  for (const name of await readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const cmdline = await readFile(`/proc/${name}/cmdline`, 'utf8').catch(() => '');
    if (cmdline.includes(needle)) pids.push(Number(name));
  }
  return pids;
}

async function eventually(what: string, check: () => Promise<boolean>, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const workDirOf = (text: string): string => {
  const m = /^uml-run: work directory (\/tmp\/svcplane-uml\.\S+)$/m.exec(text);
  assert.ok(m, `the work directory in:\n${text}`);
  return m[1]!;
};

async function assertNothingLeft(work: string): Promise<void> {
  await eventually('no kernel process left', async () => (await processesWith(work)).length === 0);
  assert.equal(existsSync(work), false, `${work} removed`);
}

describe('scripts/uml-run.sh cleans up (timeout, panic, stopped, killed)', function () {
  this.timeout(120_000);
  before(function () {
    requireRoot(this);
  });

  it('a command that outlives --timeout: exit 124 with the reason; the kernel and its files are gone', async () => {
    const r = await run(['bash', RUNNER, '--timeout', '2', '--verbose', '--', 'sleep', '600'], {
      allowFailure: true,
      timeoutMs: 100_000,
    });
    assert.equal(r.exitCode, 124, r.stderr);
    assert.match(r.stderr, /command timed out after 2s/);
    await assertNothingLeft(workDirOf(r.stderr));
  });

  it('a kernel panic: exit 125 naming it, with the last console lines; nothing left', async () => {
    const r = await run(
      [
        'bash',
        RUNNER,
        '--timeout',
        '60',
        '--verbose',
        '--',
        'sh',
        '-c',
        'echo c >/proc/sysrq-trigger; sleep 60',
      ],
      { allowFailure: true, timeoutMs: 100_000 },
    );
    assert.equal(r.exitCode, 125, r.stderr);
    assert.match(r.stderr, /did not finish the command \(kernel panic\)/);
    assert.match(r.stderr, /last console lines:\n(.*\n)*.*panic/);
    await assertNothingLeft(workDirOf(r.stderr));
  });

  for (const signal of ['SIGTERM', 'SIGKILL'] as const) {
    it(`the runner ${signal === 'SIGTERM' ? 'stopped (SIGTERM)' : 'killed (SIGKILL): the kernel dies with it'}; nothing left`, async () => {
      const child = startProcess(['bash', RUNNER, '--timeout', '600', '--verbose', '--', 'sleep', '600']);
      const lines: string[] = [];
      child.onLine((l) => lines.push(l));
      let work = '';
      try {
        await eventually('the work directory announced', () =>
          Promise.resolve(lines.some((l) => l.includes('work directory'))),
        );
        work = workDirOf(lines.join('\n'));
        // The command runs once init wrote its log line: the kernel is fully up.
        await eventually(
          'the command running inside',
          async () => (await readFile(join(work, 'init.log'), 'utf8').catch(() => '')).includes('running at'),
          60_000,
        );
        assert.ok((await processesWith(work)).length > 0, 'kernel processes found by their uml_dir');
        process.kill(child.pid, signal);
        await child.exited;
        await eventually('no kernel process left', async () => (await processesWith(work)).length === 0);
        // SIGKILL runs no trap: the work directory stays (under /tmp, mktemp-named), the processes do not.
        if (signal === 'SIGTERM') assert.equal(existsSync(work), false, `${work} removed`);
      } finally {
        await child.stop(1000);
        if (work) {
          // Only on failure: whatever of this run's kernel is still there, by PID.
          for (const pid of await processesWith(work)) process.kill(pid, 'SIGKILL');
          await rm(work, { recursive: true, force: true });
        }
      }
    });
  }

  it('refuses a working directory User-mode Linux would hide (/run), saying so, before booting', async () => {
    const r = await run(['bash', RUNNER, '--cwd', '/run', '--', 'true'], { allowFailure: true });
    assert.equal(r.exitCode, 125);
    assert.match(r.stderr, /\/run is under \/run, which is private inside User-mode Linux/);
  });
});
