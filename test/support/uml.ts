// Host-side helper for Node tests that need a real IPVS kernel: runs one command inside User-mode Linux
// through scripts/uml-run.sh (boot ~4-6 s per call, so batch work into one command).
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { run, type RunResult } from '../../src/util/exec.js';

const repoRoot = fileURLToPath(new URL('../..', import.meta.url)).replace(/\/dist\/$/, '/');
const runner = `${repoRoot}scripts/uml-run.sh`;

export interface UmlOptions {
  /** Seconds the command may run inside UML (default 300). */
  readonly timeoutS?: number;
  /** Guest memory, e.g. '512M' (default '1G'). */
  readonly mem?: string;
  /** Extra environment for the command (SVCPLANE_* of this process are passed automatically). */
  readonly env?: Readonly<Record<string, string>>;
  /** Working directory inside (default: the repository root). */
  readonly cwd?: string;
}

/** Exit status uml-run.sh uses when UML itself failed (no boot, panic, hard timeout). */
export const UML_FAILED = 125;

/** True when this machine can boot User-mode Linux (root, linux.uml, kmod, UML modules). */
export function umlAvailable(): boolean {
  return (
    process.getuid?.() === 0 &&
    (existsSync('/usr/bin/linux.uml') || existsSync('/usr/bin/linux')) &&
    existsSync('/usr/lib/uml/modules')
  );
}

/** Runs argv inside UML; never throws on the command's exit status (check `exitCode`). */
export function runInUml(argv: readonly string[], opts: UmlOptions = {}): Promise<RunResult> {
  const timeoutS = opts.timeoutS ?? 300;
  const args = ['--timeout', String(timeoutS), '--mem', opts.mem ?? '1G', '--cwd', opts.cwd ?? repoRoot];
  for (const [k, v] of Object.entries(opts.env ?? {})) args.push('--env', `${k}=${v}`);
  return run(['bash', runner, ...args, '--', ...argv], {
    timeoutMs: (timeoutS + 120) * 1000,
    allowFailure: true,
  });
}
