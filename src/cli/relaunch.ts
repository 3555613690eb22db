import { daemonNodeArgv } from '../util/memory.js';

/**
 * What bin/svcplane.js asks before loading the CLI: whether node must start again with the daemon's
 * V8 flags (util/memory.ts: its young generation), and with which command line. Kept apart from
 * main.ts so that the question costs no module loading (the answer is usually "no").
 */

/** `svcplane [flags]` with no command: kube-proxy's command line, the daemon (-V/--version aside). */
export function isDaemonForm(first: string | undefined): boolean {
  return first === undefined || (first.startsWith('-') && first !== '-V' && first !== '--version');
}

/**
 * The command line to start node again with (process.execve), or undefined. Only the daemon
 * (`svcplane [flags]`, `svcplane run`) is started again, not for its help; one-shot commands keep
 * V8's defaults (`svcplane sync` meets its peak-RSS target with them, and a smaller young
 * generation costs its load time).
 */
export function relaunchArgv(
  argv: readonly string[],
  execPath: string,
  execArgv: readonly string[],
  nodeOptions: string | undefined,
): string[] | undefined {
  const [, script, first, ...rest] = argv;
  if (script === undefined) return undefined;
  if (!isDaemonForm(first) && first !== 'run') return undefined;
  const args = first === undefined ? [] : [first, ...rest];
  if (args.includes('-h') || args.includes('--help')) return undefined;
  return daemonNodeArgv(execPath, execArgv, [script, ...args], nodeOptions);
}
