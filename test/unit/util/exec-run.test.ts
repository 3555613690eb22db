import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CommandError, run } from '../../../src/util/exec.js';
import { packageRoot } from '../../../src/util/paths.js';

/**
 * run() (src/util/exec.ts) on node:child_process: what callers rely on, with real children (sh,
 * cat, sleep), no mock: the output unchanged (no final newline stripped), exit codes and their
 * causes, a missing binary, a timeout that ends the child, a child ended by a signal, the
 * environment added to this process's, and no child left behind when this process exits.
 */
describe('run: children, their output and their end', () => {
  it('returns stdout and stderr as written (final newline kept), the exit code and the cause', async () => {
    const r = await run(['sh', '-c', 'printf "a\\nb\\n"; printf "x" >&2; exit 3'], { allowFailure: true });
    assert.equal(r.stdout, 'a\nb\n');
    assert.equal(r.stderr, 'x');
    assert.equal(r.exitCode, 3);
    assert.equal(r.failure, 'other');
    const ok = await run(['cat'], { input: 'é\n' });
    assert.equal(ok.stdout, 'é\n');
    assert.equal(ok.exitCode, 0);
    assert.equal(ok.failure, undefined);
    assert.ok(ok.durationMs > 0);
  });

  it('throws CommandError: exit (with stderr), not-found, timeout, ended by a signal', async () => {
    await assert.rejects(
      run(['sh', '-c', 'echo "No such file or directory" >&2; exit 1']),
      (e: unknown) =>
        e instanceof CommandError &&
        e.reason === 'exit' &&
        e.exitCode === 1 &&
        e.failure === 'no-such-object',
    );
    await assert.rejects(
      run(['/nonexistent/svcplane-no-such-binary']),
      (e: unknown) => e instanceof CommandError && e.reason === 'not-found',
    );
    const started = performance.now();
    await assert.rejects(
      run(['sleep', '30'], { timeoutMs: 200 }),
      (e: unknown) => e instanceof CommandError && e.reason === 'timeout',
    );
    assert.ok(performance.now() - started < 5000, 'the timed-out child was ended');
    await assert.rejects(
      run(['sh', '-c', 'kill -9 $$']),
      (e: unknown) => e instanceof CommandError && e.exitCode === undefined,
    );
  });

  it("adds env to this process's environment and tells onSpawn the child's PID", async () => {
    let pid: number | undefined;
    const r = await run(['sh', '-c', 'echo "$SVCP_RUN_TEST $$ ${PATH:+path}"'], {
      env: { SVCP_RUN_TEST: 'yes' },
      onSpawn: (p) => (pid = p),
    });
    assert.equal(r.stdout, `yes ${pid} path\n`);
  });

  it('a child still running when this process exits is ended with it', async () => {
    // A node process starts `sleep 30` through run() and exits at once; the sleep must not outlive it.
    const exec = join(packageRoot(), 'src', 'util', 'exec.ts');
    const script = `import { run } from ${JSON.stringify(exec)};
      void run(['sleep', '30'], { onSpawn: (p) => { console.log(p); setTimeout(() => process.exit(0), 100); } });`;
    const r = await run([process.execPath, '--import=tsx', '--input-type=module', '-e', script]);
    const pid = Number(r.stdout.trim());
    assert.ok(pid > 0, r.stdout);
    let alive = true;
    for (let i = 0; i < 50 && alive; i++) {
      const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
      // Gone, or a zombie of the exited parent waiting for init to reap it.
      alive = stat !== '' && !/^\d+ \([^)]*\) Z/.test(stat);
      if (alive) await new Promise((res) => setTimeout(res, 50));
    }
    assert.equal(alive, false, `sleep (pid ${pid}) outlived the process that started it`);
  });
});
