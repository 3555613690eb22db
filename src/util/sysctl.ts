import { readFile, writeFile } from 'node:fs/promises';
import { CommandError, failureOfErrno, run, type FailureCause } from './exec.js';

/**
 * Per-network-namespace sysctls (net.ipv4.ip_forward, net.ipv4.conf.all.route_localnet,
 * net.netfilter.nf_conntrack_tcp_be_liberal, ...). /proc/sys/net shows the namespace of the process
 * that opens it, so inside another namespace we read and write through a child started there
 * (`cat` / `tee` via run({netns})); in our own namespace we use the file directly.
 */

export interface SysctlOptions {
  /** Named network namespace; default: the namespace svcplane runs in. */
  readonly netns?: string;
}

// Dots separate levels; slashes are accepted too (needed for interface names containing dots).
const KEY = /^[A-Za-z0-9_][A-Za-z0-9_./-]*$/;

/** `/proc/sys/...` path for a key such as `net.ipv4.ip_forward` or `net/ipv4/conf/eth0.1/rp_filter`. */
export function sysctlPath(key: string): string {
  if (!KEY.test(key) || key.split(/[./]/).some((p) => p === '' || p === '..')) {
    throw new Error(`invalid sysctl key ${JSON.stringify(key)}`);
  }
  return `/proc/sys/${key.includes('/') ? key : key.replaceAll('.', '/')}`;
}

/** Reading or writing a sysctl (or a /sys parameter) in this process failed: the key, and why. */
export class SysctlError extends Error {
  /** Classified once from the errno (src/util/exec.ts). */
  readonly failure: FailureCause;
  constructor(
    message: string,
    readonly key: string,
    cause: unknown,
  ) {
    super(message, { cause });
    this.name = 'SysctlError';
    this.failure = failureOfErrno(cause);
  }
}

/** The value (trimmed), or undefined when the key does not exist in that namespace. */
export async function readSysctl(key: string, opts: SysctlOptions = {}): Promise<string | undefined> {
  const path = sysctlPath(key);
  if (!opts.netns) {
    try {
      return (await readFile(path, 'utf8')).trim();
    } catch (err) {
      const e = new SysctlError(`reading sysctl ${key} (${path}): ${(err as Error).message}`, key, err);
      if (e.failure === 'no-such-object') return undefined;
      throw e;
    }
  }
  const r = await run(['cat', path], { netns: opts.netns, allowFailure: true });
  if (r.exitCode === 0) return r.stdout.trim();
  if (r.failure === 'no-such-object') return undefined;
  throw new CommandError(r.argv, r.exitCode, r.stderr, 'exit');
}

/** Write a value; throws (with the key) when it does not exist or the kernel refuses the value. */
export async function writeSysctl(
  key: string,
  value: string | number,
  opts: SysctlOptions = {},
): Promise<void> {
  const path = sysctlPath(key);
  const text = String(value);
  if (/[\n\0]/.test(text)) throw new Error(`invalid value for sysctl ${key}: ${JSON.stringify(text)}`);
  if (!opts.netns) {
    try {
      await writeFile(path, `${text}\n`);
      return;
    } catch (err) {
      throw new SysctlError(`writing sysctl ${key}=${text} (${path}): ${(err as Error).message}`, key, err);
    }
  }
  const r = await run(['tee', path], { netns: opts.netns, input: `${text}\n`, allowFailure: true });
  if (r.exitCode !== 0) {
    const e = new CommandError(r.argv, r.exitCode, r.stderr, 'exit');
    e.message = `writing sysctl ${key}=${text} in netns ${opts.netns}: ${e.message}`;
    throw e;
  }
}

/**
 * kube-proxy's EnsureSysctl: write only when the value differs, so a read-only /proc/sys (an
 * unprivileged container whose runtime already set the value) is not an error.
 */
export async function ensureSysctl(
  key: string,
  value: string | number,
  opts: { netns?: string } = {},
): Promise<boolean> {
  const current = await readSysctl(key, opts);
  if (current !== undefined && current.trim() === String(value)) return false;
  await writeSysctl(key, value, opts);
  return true;
}
