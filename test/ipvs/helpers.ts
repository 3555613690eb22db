// Helpers for tests that run inside User-mode Linux (scripts/test-ipvs.sh boots it; uml-init.sh sets
// SVCPLANE_IN_UML=1). Inside, the root network namespace belongs to the UML kernel, so tests may use it as
// the "node"; nothing reaches the host's network.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Sandbox } from '../../src/netns/sandbox.js';
import { run, type RunResult } from '../../src/util/exec.js';
import { Daemon } from '../support/daemon.js';
import { useSandbox } from '../support/sandbox.js';
import { skipBecause } from '../support/skip.js';

export const inUml = process.env.SVCPLANE_IN_UML === '1';

/** Skips the whole suite unless running inside UML (a failure unless SVCPLANE_SKIP=ipvs). */
export function requireUml(ctx: Mocha.Context): void {
  if (!inUml) skipBecause(ctx, 'runs inside User-mode Linux only (scripts/test-ipvs.sh)');
}

/** Runs a command, throwing with its stderr on a non-zero exit. */
export function cmd(argv: readonly string[], input?: string): Promise<RunResult> {
  return run(argv, { input, timeoutMs: 30_000 });
}

/** Runs a command and never throws on its exit status (for cleanup and probes). */
export function tryCmd(argv: readonly string[], input?: string): Promise<RunResult> {
  return run(argv, { input, timeoutMs: 30_000, allowFailure: true });
}

/** Runs `ip [-n NETNS] -batch -` with the given lines (one process for many link/address changes). */
export async function ipBatch(lines: readonly string[], netns?: string): Promise<void> {
  await cmd(['ip', ...(netns ? ['-n', netns] : []), '-batch', '-'], lines.join('\n') + '\n');
}

/** A long-running child process (e.g. a server in a pod), ended by PID in `stop`. */
export class Background {
  private readonly child: ChildProcess;
  private output = '';

  constructor(argv: readonly string[]) {
    const [file, ...args] = argv;
    if (!file) throw new Error('Background: empty argv');
    this.child = spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child.stdout?.on('data', (d: Buffer) => (this.output += d.toString()));
    this.child.stderr?.on('data', (d: Buffer) => (this.output += d.toString()));
  }

  get log(): string {
    return this.output;
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  async stop(): Promise<void> {
    if (!this.running) return;
    const exited = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 2000);
    await exited;
    clearTimeout(timer);
  }
}

/** Polls `probe` until it resolves true or `timeoutMs` passes. */
export async function waitFor(
  what: string,
  probe: () => Promise<boolean>,
  timeoutMs = 10_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await probe()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The node the UML daemon tests' manifests place local endpoints on. */
export const UML_NODE = 'node-1';

/**
 * `svcplane run` from the build (the TS loader is too slow under UML) in the sandbox node: node-1,
 * IPv4, the manifests in `dir`, /metrics on 127.0.0.1:10249; `flags` on top (mode, sync periods,
 * the healthz address, …).
 */
export function startUmlDaemon(sb: Pick<Sandbox, 'nodeNs'>, dir: string, flags: readonly string[]): Daemon {
  return Daemon.start(
    [
      'run',
      `--manifests=${dir}`,
      `--hostname-override=${UML_NODE}`,
      '--ip-families=IPv4',
      '--metrics-bind-address=127.0.0.1:10249',
      ...flags,
    ],
    { netns: sb.nodeNs, fromBuild: true },
  );
}

/** One suite's sandbox and the UML daemon watching its manifests directory (see useUmlDaemon). */
export interface UmlDaemonSuite {
  readonly sb: Sandbox;
  /** The daemon `start` started. */
  readonly daemon: Daemon;
  /** Writes the first manifests (cluster.json) to a fresh directory and starts the daemon on it. */
  start(objects: readonly object[], flags: readonly string[]): Promise<Daemon>;
  /** Replaces the manifests (cluster.json) the daemon watches. */
  write(objects: readonly object[]): Promise<void>;
}

/**
 * The setup the UML daemon suites share: inside UML only; a sandbox with pods a and b serving TCP
 * `port` and a client pod; `start` (from the suite's before hook) writes the manifests and starts
 * `startUmlDaemon` on them. After the suite the daemon is stopped (before its sandbox goes) and the
 * directory removed.
 */
export function useUmlDaemon(port: number): UmlDaemonSuite {
  let dir = '';
  let daemon: Daemon | undefined;
  before(function () {
    requireUml(this);
  });
  after(async function () {
    this.timeout(30_000);
    await daemon?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });
  const env = useSandbox({
    pods: [{ name: 'a', tcpPorts: [port] }, { name: 'b', tcpPorts: [port] }, { name: 'client' }],
  });
  const write = (objects: readonly object[]): Promise<void> =>
    writeFile(join(dir, 'cluster.json'), JSON.stringify(objects));
  return {
    get sb(): Sandbox {
      return env.sb;
    },
    get daemon(): Daemon {
      if (!daemon) throw new Error('the UML daemon was not started (before hook failed or was skipped)');
      return daemon;
    },
    async start(objects, flags) {
      dir = await mkdtemp(join(tmpdir(), 'svcp-uml-daemon-'));
      await write(objects);
      daemon = startUmlDaemon(env.sb, dir, flags);
      return daemon;
    },
    write,
  };
}
