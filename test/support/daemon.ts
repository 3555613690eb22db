import assert from 'node:assert/strict';
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { run, startProcess, withNetns, type ChildHandle, type RunResult } from '../../src/util/exec.js';
import { packageRoot } from '../../src/util/paths.js';

/**
 * `svcplane <args>` as its own process, the way users run it: from the source through tsx on the host,
 * from the build (bin/svcplane.js → dist) inside User-mode Linux, where tsx is too slow. Its JSON log
 * lines are parsed as they come, so tests wait on what the daemon says it did (events), not on time.
 */

export type LogLine = Record<string, unknown>;

export class Daemon {
  readonly lines: LogLine[] = [];
  readonly raw: string[] = [];
  private exitCode: number | null | undefined;

  private constructor(readonly child: ChildHandle) {
    child.onLine((l) => {
      this.raw.push(l);
      if (!l.startsWith('{')) return;
      try {
        this.lines.push(JSON.parse(l) as LogLine);
      } catch {
        /* not a log line */
      }
    });
    void child.exited.then((code) => (this.exitCode = code));
  }

  /**
   * Starts `svcplane ...args` (inside `netns` when given; behind `prefix`, e.g. `nsenter --mount=…`,
   * which then runs `ip netns exec`).
   */
  static start(
    args: readonly string[],
    opts: { netns?: string; fromBuild?: boolean; prefix?: readonly string[] } = {},
  ): Daemon {
    // This class reads JSON log lines, and waits on the per-sync line (-v=2, as kube-proxy logs it).
    if (args[0] === 'run' && !args.some((a) => a.startsWith('--logging-format'))) {
      args = ['run', '--logging-format=json', '-v=2', ...args.slice(1)];
    }
    const argv = svcplaneArgv(args, opts.fromBuild);
    if (opts.prefix) return new Daemon(startProcess([...opts.prefix, ...withNetns(opts.netns, argv)]));
    return new Daemon(startProcess(argv, opts.netns ? { netns: opts.netns } : {}));
  }

  /** Log lines from index `from` on that match. */
  logged(from: number, pred: (l: LogLine) => boolean): LogLine[] {
    return this.lines.slice(from).filter(pred);
  }

  /** Waits for the `count`-th line from `from` on that matches; fails with the log tail if the daemon exits. */
  async waitFor(
    what: string,
    from: number,
    pred: (l: LogLine) => boolean,
    timeoutMs = 15_000,
    count = 1,
  ): Promise<LogLine[]> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const got = this.logged(from, pred);
      if (got.length >= count) return got;
      if (this.exitCode !== undefined)
        assert.fail(`${what}: the daemon exited (${String(this.exitCode)})\n${this.tail()}`);
      if (Date.now() > deadline) assert.fail(`${what}: not within ${timeoutMs} ms\n${this.tail()}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  tail(n = 30): string {
    return this.raw.slice(-n).join('\n');
  }

  stop(graceMs = 5000): Promise<number | null> {
    return this.child.stop(graceMs);
  }
}

/**
 * The command line of `svcplane ...args`: from the source through tsx (the CLI as the source is now),
 * or from the build (bin/svcplane.js → dist; SVCPLANE_CLI names another one).
 */
export function svcplaneArgv(args: readonly string[], fromBuild = false): string[] {
  const root = packageRoot();
  // SVCPLANE_CLI may name another build's bin/svcplane.js (to run a suite against an older build).
  if (fromBuild)
    return [process.execPath, process.env.SVCPLANE_CLI ?? join(root, 'bin', 'svcplane.js'), ...args];
  const main = pathToFileURL(join(root, 'src', 'cli', 'main.ts')).href;
  const entry = `import(${JSON.stringify(main)}).then(async (m) => { process.exitCode = await m.main(['node', 'svcplane', ...process.argv.slice(1)]); }, (e) => { console.error(e instanceof Error ? e.message : e); process.exitCode = 2; });`;
  return [process.execPath, '--import=tsx', '-e', entry, ...args];
}

/** A one-shot `svcplane ...args` (sync, cleanup, trace …) inside `netns`, from the source; any exit status. */
export function runSvcplane(netns: string, args: readonly string[]): Promise<RunResult> {
  return run(svcplaneArgv(args), { netns, allowFailure: true, timeoutMs: 60_000 });
}

/** Polls `probe` until it returns a value (not undefined); fails after `timeoutMs`. */
export async function eventually<T>(
  what: string,
  timeoutMs: number,
  probe: () => Promise<T | undefined>,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) assert.fail(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * Polls `check` until it returns a value (not undefined, not false); fails with the last error after
 * `timeoutMs`.
 */
export async function until<T>(
  what: string,
  check: () => T | undefined | false | Promise<T | undefined | false>,
  timeoutMs = 15_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v !== undefined && v !== false) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline)
      assert.fail(`${what}: not within ${timeoutMs} ms${last instanceof Error ? ` (${last.message})` : ''}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The newest mtime under `dir` (files only): whether a build is older than its sources. */
export function newestMtime(dir: string): number {
  let t = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    t = Math.max(t, e.isDirectory() ? newestMtime(p) : statSync(p).mtimeMs);
  }
  return t;
}
