import type { Writable } from 'node:stream';
import { spawn, type ChildProcess, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { execa } from 'execa';

/**
 * The one place svcplane starts child processes. Argument arrays only, never a shell.
 * Errors carry the command, its exit code and its stderr.
 */

/**
 * What a child reads on stdin: one text, or its pieces in order. Pieces may be produced lazily (a
 * generator, an async iterable): each is asked for only when the child has taken the previous ones
 * (backpressure), so a large input is never held whole and its producer runs while the child
 * reads. A producer that throws gets the child killed (SIGKILL, before its stdin closes: a
 * truncated input is never read as complete) and `run` rejects with the producer's own error.
 */
export type ChildInput = string | Iterable<string> | AsyncIterable<string>;

export interface RunOptions {
  /** Written to the child's stdin (see ChildInput). */
  readonly input?: ChildInput;
  readonly timeoutMs?: number;
  /** Run inside this named network namespace (`ip netns exec NS ...`). */
  readonly netns?: string;
  /** Do not throw on a non-zero exit; the caller inspects `exitCode`. */
  readonly allowFailure?: boolean;
  readonly env?: Readonly<Record<string, string>>;
  /** Told the child's PID as soon as it runs (the kernel watch compares it with the PID the kernel reports). */
  readonly onSpawn?: (pid: number) => void;
}

export interface RunResult {
  readonly argv: readonly string[];
  readonly exitCode: number;
  readonly stdout: string;
  readonly stderr: string;
  readonly durationMs: number;
  /** Why it failed, from its stderr (undefined when it exited 0). */
  readonly failure?: FailureCause;
}

/**
 * Why a kernel tool failed, as its stderr says it: the strerror text of the errno the kernel
 * returned (iptables, ipset, ipvsadm, nft, ip, sysctl and conntrack all print it), or the tool's own
 * complaint about an option. Classified once, here, where the output is read; callers test the
 * cause, never the text.
 */
export type FailureCause =
  /** ENOENT: the table, chain, set, device or file is not there. */
  | 'no-such-object'
  /** EEXIST. */
  | 'exists'
  /** EOPNOTSUPP: the kernel lacks the feature (User-mode Linux has no nf_tables). */
  | 'not-supported'
  /** EPERM / EACCES, or the tool's "must be root". */
  | 'permission'
  /** EBUSY: still referenced. */
  | 'busy'
  /** EROFS. */
  | 'read-only'
  /** The tool does not know an option (an older version). */
  | 'unknown-option'
  | 'other';

const FAILURE_TEXTS: readonly (readonly [FailureCause, RegExp])[] = [
  ['unknown-option', /unknown option|invalid option|unrecognized option/i],
  ['no-such-object', /No such file or directory|ENOENT|does not exist/i],
  ['exists', /File exists|EEXIST/i],
  ['not-supported', /Operation not supported|EOPNOTSUPP/i],
  ['permission', /Permission denied|must be root|Operation not permitted|EACCES|EPERM/i],
  ['busy', /Device or resource busy|EBUSY/i],
  ['read-only', /Read-only file system|EROFS/i],
];

/** The cause of a failure from a tool's stderr (pure; the first match in FAILURE_TEXTS' order). */
export function classifyFailure(stderr: string): FailureCause {
  for (const [cause, re] of FAILURE_TEXTS) if (re.test(stderr)) return cause;
  return 'other';
}

const ERRNO_FAILURES: Readonly<Record<string, FailureCause>> = {
  ENOENT: 'no-such-object',
  EEXIST: 'exists',
  EOPNOTSUPP: 'not-supported',
  ENOTSUP: 'not-supported',
  EPERM: 'permission',
  EACCES: 'permission',
  EBUSY: 'busy',
  EROFS: 'read-only',
};

/** The same causes for a failed file operation of this process (Node's `err.code`). */
export function failureOfErrno(err: unknown): FailureCause {
  const code = (err as { code?: unknown } | undefined)?.code;
  return typeof code === 'string' ? (ERRNO_FAILURES[code] ?? 'other') : 'other';
}

export class CommandError extends Error {
  /** Why the command failed, from its stderr ('other' when it says nothing we know). */
  readonly failure: FailureCause;
  constructor(
    readonly argv: readonly string[],
    readonly exitCode: number | undefined,
    readonly stderr: string,
    readonly reason: 'exit' | 'timeout' | 'not-found' | 'spawn',
  ) {
    const what =
      reason === 'timeout'
        ? 'timed out'
        : reason === 'not-found'
          ? 'not found (is it installed?)'
          : reason === 'spawn'
            ? 'could not be started'
            : `exited with status ${String(exitCode)}`;
    const tail = stderr.trim();
    super(`command "${argv.join(' ')}" ${what}${tail ? `: ${tail.slice(0, 2000)}` : ''}`);
    this.name = 'CommandError';
    this.failure = classifyFailure(stderr);
  }
}

/** `argv` run by `setpriv`, which asks for SIGKILL at this process's death and execs it. */
export function withParentDeathSignal(argv: readonly string[]): string[] {
  return ['setpriv', '--pdeathsig', 'KILL', '--', ...argv];
}

export function withNetns(netns: string | undefined, argv: readonly string[]): string[] {
  return netns ? ['ip', 'netns', 'exec', netns, ...argv] : [...argv];
}

/**
 * Children of `run` still running; the process's exit ends them (SIGTERM), as execa's cleanup did for
 * them before: a `svcplane sync` stopped by a signal leaves no restore or listing behind.
 */
const running = new Set<ChildProcess>();
let exitHook = false;

/** SIGTERM, then SIGKILL after this long, for a child past its timeout (execa's default before). */
const KILL_GRACE_MS = 5000;

/**
 * One short-lived child, stdin written (see ChildInput), stdout and stderr collected. On
 * node:child_process directly, not execa: execa's per-child machinery cost 2-6 ms of the main thread
 * per spawn at 10k (issue 14, event-to-rules: the one-endpoint restore is a few ms over the floor).
 */
export async function run(argv: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const full = withNetns(opts.netns, argv);
  const [file, ...args] = full;
  if (!file) throw new Error('run: empty argv');
  const started = performance.now();
  const input = opts.input ?? '';
  let child: ChildProcess;
  try {
    child = spawn(file, args, {
      stdio: ['pipe', 'pipe', 'pipe'],
      ...(opts.env ? { env: { ...process.env, ...opts.env } } : {}),
    });
  } catch (err) {
    throw new CommandError(full, undefined, err instanceof Error ? err.message : String(err), 'spawn');
  }
  if (child.pid !== undefined) {
    opts.onSpawn?.(child.pid);
    running.add(child);
    if (!exitHook) {
      exitHook = true;
      process.once('exit', () => {
        for (const c of running) c.kill('SIGTERM');
      });
    }
  }
  const stdout: Buffer[] = [];
  const stderr: Buffer[] = [];
  child.stdout!.on('data', (b: Buffer) => stdout.push(b));
  child.stderr!.on('data', (b: Buffer) => stderr.push(b));
  let timedOut = false;
  let killTimer: NodeJS.Timeout | undefined;
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill('SIGTERM');
    killTimer = setTimeout(() => child.kill('SIGKILL'), KILL_GRACE_MS);
  }, opts.timeoutMs ?? 60_000);
  const closed = new Promise<{ code: number | null; error?: NodeJS.ErrnoException }>((resolve) => {
    child.once('error', (error: NodeJS.ErrnoException) => resolve({ code: null, error }));
    child.once('close', (code: number | null) => resolve({ code }));
  });
  const stdin = child.stdin!;
  let fed: Promise<{ error: unknown } | undefined>;
  if (typeof input === 'string') {
    // EPIPE when the child exits before reading it all: its exit status is what to report.
    stdin.on('error', () => undefined);
    stdin.end(input);
    fed = Promise.resolve(undefined);
  } else {
    fed = feedStdin(stdin, input, () => child.kill('SIGKILL'));
  }
  const [{ code, error }, producerError] = await Promise.all([closed, fed]);
  clearTimeout(timer);
  clearTimeout(killTimer);
  running.delete(child);
  if (producerError !== undefined) throw producerError.error;
  const durationMs = performance.now() - started;
  const err = Buffer.concat(stderr).toString('utf8');
  if (error?.code === 'ENOENT') throw new CommandError(full, undefined, '', 'not-found');
  if (error !== undefined) throw new CommandError(full, undefined, err || error.message, 'spawn');
  if (timedOut) throw new CommandError(full, code ?? undefined, err, 'timeout');
  // Ended by a signal: no exit status (as execa reported it before).
  if (code === null) throw new CommandError(full, undefined, err, 'spawn');
  const res: RunResult = {
    argv: full,
    exitCode: code,
    stdout: Buffer.concat(stdout).toString('utf8'),
    stderr: err,
    durationMs,
    ...(code !== 0 ? { failure: classifyFailure(err) } : {}),
  };
  if (res.exitCode !== 0 && !opts.allowFailure) {
    throw new CommandError(full, res.exitCode, res.stderr, 'exit');
  }
  return res;
}

/**
 * Writes the pieces to a child's stdin as it reads them, then closes it. Stops asking for pieces
 * when the child stops reading (it exited: its exit code and stderr tell why). Resolves with the
 * producer's error, if it threw, after `kill` was called.
 */
async function feedStdin(
  stdin: Writable,
  pieces: Iterable<string> | AsyncIterable<string>,
  kill: () => void,
): Promise<{ error: unknown } | undefined> {
  let closed = false;
  // EPIPE when the child exits before reading everything: its exit status is the error to report.
  const onError = (): void => {
    closed = true;
  };
  stdin.on('error', onError);
  stdin.once('close', onError);
  try {
    for await (const piece of pieces) {
      if (closed) break;
      if (piece === '' || stdin.write(piece)) continue;
      // Backpressure: the next piece is produced once the child took this one.
      await drainedOrClosed(stdin);
    }
  } catch (error) {
    kill();
    stdin.destroy();
    return { error };
  }
  if (!closed) stdin.end();
  return undefined;
}

function drainedOrClosed(stdin: Writable): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      stdin.off('drain', done);
      stdin.off('close', done);
      resolve();
    };
    stdin.on('drain', done);
    stdin.on('close', done);
  });
}

/** A long-lived child (a daemon under test or demo). Stopped by PID, never by name. */
export interface ChildHandle {
  readonly pid: number;
  /** Resolves with the exit code (or null when killed by a signal). */
  readonly exited: Promise<number | null>;
  /** Calls `onLine` for every stdout line, and every stderr line unless stderr is kept apart. */
  onLine(listener: (line: string) => void): void;
  /** Calls `onErrorLine` for every stderr line when stderr is kept apart (startProcess). */
  onErrorLine(listener: (line: string) => void): void;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves when the child is gone. */
  stop(graceMs?: number): Promise<number | null>;
}

/** Calls every listener with each complete line of `stream`'s chunks. */
function splitLines(stream: NodeJS.ReadableStream | undefined, listeners: ((line: string) => void)[]): void {
  let partial = '';
  stream?.on('data', (chunk: Buffer) => {
    const lines = (partial + chunk.toString('utf8')).split('\n');
    partial = lines.pop() ?? '';
    for (const l of lines) for (const fn of listeners) fn(l);
  });
}

/**
 * A long-lived child. `stderr: 'apart'` keeps its stderr out of `onLine` (a reader of a tool's
 * output: chunks of the two streams interleave anywhere, even inside a line, when merged).
 * `diesWithParent`: the kernel SIGKILLs the child when this process dies, however it dies (a
 * SIGKILLed daemon's `nft monitor` would otherwise live on until its next write fails). util-linux's
 * `setpriv --pdeathsig` sets it and execs the tool, so the PID is the tool's own.
 */
export function startProcess(
  argv: readonly string[],
  opts: { netns?: string; stderr?: 'merged' | 'apart'; diesWithParent?: boolean } = {},
): ChildHandle {
  const full = withNetns(opts.netns, opts.diesWithParent === true ? withParentDeathSignal(argv) : argv);
  const [file, ...args] = full;
  if (!file) throw new Error('startProcess: empty argv');
  const apart = opts.stderr === 'apart';
  const child = execa(file, args, { reject: false, stdin: 'ignore', buffer: false, all: !apart });
  if (child.pid === undefined) throw new CommandError(full, undefined, '', 'spawn');
  const listeners: ((line: string) => void)[] = [];
  const errorListeners: ((line: string) => void)[] = [];
  if (apart) {
    splitLines(child.stdout, listeners);
    splitLines(child.stderr, errorListeners);
  } else {
    splitLines(child.all, listeners);
  }
  const exited = child.then((r) => (r.signal ? null : (r.exitCode ?? null)));
  return {
    pid: child.pid,
    exited,
    onLine: (fn) => listeners.push(fn),
    onErrorLine: (fn) => errorListeners.push(fn),
    stop: async (graceMs = 5000) => {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      try {
        return await exited;
      } finally {
        clearTimeout(timer);
      }
    },
  };
}

/**
 * A long-lived child whose stdin, stdout and stderr are pipes: a conversation (the sandbox agents'
 * JSON lines, src/netns/agent-process.ts). The caller owns it and stops it by PID.
 */
export type Conversation = ChildProcessWithoutNullStreams;

export function spawnConversation(argv: readonly string[]): Conversation {
  const [file, ...args] = argv;
  if (!file) throw new Error('spawnConversation: empty argv');
  return spawn(file, args, { stdio: ['pipe', 'pipe', 'pipe'] });
}

/** A child that outlives this process (`svcplane netns` agents), its output appended to `logFile`. */
export async function spawnDetached(argv: readonly string[], logFile: string): Promise<number> {
  const [file, ...args] = argv;
  if (!file) throw new Error('spawnDetached: empty argv');
  const fd = openSync(logFile, 'a');
  try {
    const child = spawn(file, args, { stdio: ['ignore', fd, fd], detached: true });
    const pid = await new Promise<number>((resolve, reject) => {
      child.once('error', reject);
      child.once('spawn', () => resolve(child.pid!));
    });
    child.unref();
    return pid;
  } finally {
    closeSync(fd);
  }
}
