import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { access, mkdir, mkdtemp, realpath, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, delimiter, isAbsolute, join } from 'node:path';

/**
 * A process name of our own for the iptables tools svcplane runs, so that the kernel's report of
 * every nf_tables commit (`# new generation N by process PID (COMM)`, read by commit-log.ts) says
 * which commits are ours. The PID in that report cannot: the kernel gives it in the initial PID
 * namespace, and a pod without hostPID (kube-proxy's DaemonSet, ours) sees its children under
 * other PIDs. COMM is the name of the file a process was executed from (15 characters), so the
 * tools run from a symlink named after a random token in a private directory (mode 0700: no other
 * agent can run as it). iptables-nft's tools are one multi-call binary (xtables-nft-multi) that
 * takes the tool from its first argument when its own name is not one: `TOKEN iptables-restore …`
 * runs iptables-restore. A commit by any other process name, the same tool run by someone else
 * included, is foreign.
 */

/** The named tools, ready to run: argv[0] to use for each original binary. */
export interface CommitName {
  /** What nft monitor prints as COMM for our commits. */
  readonly name: string;
  /** The private directory of the symlinks (removed by `removeCommitName`). */
  readonly dir: string;
  /** argv prefix replacing each named binary (by its configured name). */
  readonly prefixes: ReadonlyMap<string, readonly string[]>;
}

/** Longest COMM the kernel keeps (TASK_COMM_LEN 16, with its NUL). */
const COMM_LENGTH = 15;
const MULTI_BINARY = 'xtables-nft-multi';

/** The absolute path of `bin` (searched on PATH like execvp when it has no slash). */
async function resolveBinary(bin: string): Promise<string | undefined> {
  if (bin.includes('/')) return isAbsolute(bin) ? bin : join(process.cwd(), bin);
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir === '') continue;
    const p = join(dir, bin);
    try {
      await access(p, constants.X_OK);
      return p;
    } catch {
      /* not here */
    }
  }
  return undefined;
}

/**
 * Symlinks named after a fresh token for each of `binaries` (iptables-nft tools), or why it cannot
 * (a binary that is not xtables-nft-multi: a wrapper script, the legacy backend).
 */
export async function createCommitName(binaries: readonly string[]): Promise<CommitName | string> {
  const targets: [string, string][] = [];
  for (const bin of new Set(binaries)) {
    const path = await resolveBinary(bin);
    if (path === undefined) return `${bin} not found on PATH`;
    const real = await realpath(path);
    if (basename(real) !== MULTI_BINARY) return `${bin} is ${real}, not ${MULTI_BINARY}`;
    targets.push([bin, real]);
  }
  const name = `svcp${randomBytes(8).toString('hex')}`.slice(0, COMM_LENGTH);
  let dir: string;
  try {
    dir = await mkdtemp(join(tmpdir(), 'svcplane-commits-'));
  } catch (err) {
    // A read-only root file system without a writable TMPDIR.
    return `cannot create a directory in ${tmpdir()}: ${err instanceof Error ? err.message : String(err)}`;
  }
  const prefixes = new Map<string, readonly string[]>();
  try {
    for (const [i, [bin, real]] of targets.entries()) {
      // One subdirectory per tool: every link carries the same name.
      const link = join(dir, String(i), name);
      await mkdir(join(dir, String(i)), { mode: 0o700 });
      await symlink(real, link);
      prefixes.set(bin, [link, basename(bin)]);
    }
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    return `cannot link ${dir}: ${err instanceof Error ? err.message : String(err)}`;
  }
  return { name, dir, prefixes };
}

/** argv with its binary replaced by the named one (unchanged when it is not a named binary). */
export function namedArgv(cn: CommitName | undefined, argv: readonly string[]): readonly string[] {
  const prefix = cn === undefined ? undefined : cn.prefixes.get(argv[0] ?? '');
  return prefix === undefined ? argv : [...prefix, ...argv.slice(1)];
}

export async function removeCommitName(cn: CommitName): Promise<void> {
  await rm(cn.dir, { recursive: true, force: true });
}
