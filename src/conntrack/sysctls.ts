import { readFile, writeFile } from 'node:fs/promises';
import { cpus as osCpus } from 'node:os';
import type { ConntrackOptions } from '../config/options.js';
import { log } from '../util/log.js';
import { CommandError } from '../util/exec.js';
import { readSysctl, SysctlError, writeSysctl } from '../util/sysctl.js';

/**
 * kube-proxy's conntrack settings (pkg/proxy/conntrack/sysctls.go), applied once at start-up:
 *
 * - nf_conntrack_max = maxPerCore × CPUs, at least `min`, at most 1048576; only ever raised. It is
 *   one value for the whole host: a network namespace other than the host's sees it read-only.
 * - the conntrack module's hashsize (/sys/module/nf_conntrack/parameters/hashsize) raised to a quarter
 *   of that; also host-wide, and writable only from the host's network namespace.
 * - TCP established / close-wait timeouts, UDP timeouts, tcp_be_liberal: per network namespace.
 *
 * A value of 0 (false) leaves a setting as it is. The plan is pure; applying reads the current values
 * and writes only what differs. A setting this process may not write (read-only /proc/sys or /sys in
 * a container, a namespace other than the host's, no privilege) is one warning naming it and what to
 * do; a value the kernel refuses fails the start-up.
 */

export const HASHSIZE_PATH = '/sys/module/nf_conntrack/parameters/hashsize';
/** kube-proxy caps the scaled value (memory on many-core machines). */
export const CONNTRACK_MAX_LIMIT = 1_048_576;

export interface ConntrackWrite {
  /** A sysctl key (net.netfilter.…) or the hashsize path. */
  readonly key: string;
  readonly value: number;
  /** `host`: one value for the whole machine; `netns`: per network namespace. */
  readonly scope: 'host' | 'netns';
}

/** Current values the plan depends on (undefined: unknown, e.g. conntrack not loaded). */
export interface ConntrackCurrent {
  readonly [key: string]: number | undefined;
}

/** kube-proxy's getConntrackMax: the nf_conntrack_max to ensure, 0 = leave it. */
export function conntrackMax(settings: Pick<ConntrackOptions, 'maxPerCore' | 'min'>, cpus: number): number {
  if (settings.maxPerCore <= 0) return 0;
  const scaled = settings.maxPerCore * cpus;
  if (scaled > CONNTRACK_MAX_LIMIT) return CONNTRACK_MAX_LIMIT;
  return Math.max(scaled, settings.min);
}

const seconds = (ms: number): number => Math.floor(ms / 1000);

/** Pure: the writes kube-proxy would make, given the CPU count and the current values. */
export function conntrackPlan(
  settings: ConntrackOptions,
  cpus: number,
  current: ConntrackCurrent,
): ConntrackWrite[] {
  const out: ConntrackWrite[] = [];
  const max = conntrackMax(settings, cpus);
  if (max > 0) {
    const now = current['net.netfilter.nf_conntrack_max'];
    if (now === undefined || now < max) {
      out.push({ key: 'net.netfilter.nf_conntrack_max', value: max, scope: 'host' });
    }
    const hash = current[HASHSIZE_PATH];
    const wantHash = Math.floor(max / 4);
    if (hash !== undefined && hash < wantHash)
      out.push({ key: HASHSIZE_PATH, value: wantHash, scope: 'host' });
  }
  const perNetns: [string, number][] = [
    ['net.netfilter.nf_conntrack_tcp_timeout_established', seconds(settings.tcpEstablishedTimeoutMs)],
    ['net.netfilter.nf_conntrack_tcp_timeout_close_wait', seconds(settings.tcpCloseWaitTimeoutMs)],
    ['net.netfilter.nf_conntrack_tcp_be_liberal', settings.tcpBeLiberal ? 1 : 0],
    ['net.netfilter.nf_conntrack_udp_timeout', seconds(settings.udpTimeoutMs)],
    ['net.netfilter.nf_conntrack_udp_timeout_stream', seconds(settings.udpStreamTimeoutMs)],
  ];
  for (const [key, value] of perNetns) {
    if (value > 0 && current[key] !== value) out.push({ key, value, scope: 'netns' });
  }
  return out;
}

/** Every key the plan may read. */
export const CONNTRACK_KEYS: readonly string[] = [
  'net.netfilter.nf_conntrack_max',
  HASHSIZE_PATH,
  'net.netfilter.nf_conntrack_tcp_timeout_established',
  'net.netfilter.nf_conntrack_tcp_timeout_close_wait',
  'net.netfilter.nf_conntrack_tcp_be_liberal',
  'net.netfilter.nf_conntrack_udp_timeout',
  'net.netfilter.nf_conntrack_udp_timeout_stream',
];

/** CPUs of the machine (not of this process's cpuset), as kube-proxy counts them for the limit. */
export async function onlineCpus(path = '/sys/devices/system/cpu/online'): Promise<number> {
  try {
    const n = countCpuList(await readFile(path, 'utf8'));
    if (n > 0) return n;
  } catch {
    // fall back below
  }
  return Math.max(1, osCpus().length);
}

/** `0-3,6,8-9` → 7. */
export function countCpuList(text: string): number {
  let n = 0;
  for (const part of text.trim().split(',')) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part.trim());
    if (!m) continue;
    n += m[2] === undefined ? 1 : Number(m[2]) - Number(m[1]) + 1;
  }
  return n;
}

/** Why this process may not write `key` (a read-only mount, another namespace, no privilege), or undefined. */
function notWritable(err: unknown): string | undefined {
  const failure = err instanceof SysctlError || err instanceof CommandError ? err.failure : undefined;
  if (failure === 'read-only') return 'read-only file system';
  if (failure === 'permission') return 'permission denied';
  if (failure === 'not-supported') return 'not supported here';
  return undefined;
}

function advice(w: ConntrackWrite, why: string): string {
  if (w.scope === 'host') {
    return why === 'read-only file system'
      ? 'the container sees /sys or /proc/sys read-only (Docker does without --privileged); run svcplane privileged with hostNetwork, as the DaemonSet does, or set it on the host'
      : "only a privileged process in the host's network namespace may set it; run svcplane with hostNetwork and privileged, or set it on the host";
  }
  return why === 'read-only file system'
    ? "the container sees /proc/sys read-only; run svcplane privileged, or set it in the pod's sysctls"
    : 'run svcplane as root (CAP_NET_ADMIN)';
}

async function readValue(key: string): Promise<number | undefined> {
  try {
    const text = key.startsWith('/') ? (await readFile(key, 'utf8')).trim() : await readSysctl(key);
    if (text === undefined) return undefined;
    const n = Number.parseInt(text, 10);
    return Number.isFinite(n) ? n : undefined;
  } catch {
    return undefined;
  }
}

async function writeValue(key: string, value: number): Promise<void> {
  if (!key.startsWith('/')) return writeSysctl(key, value);
  try {
    await writeFile(key, String(value));
  } catch (err) {
    throw new SysctlError(`writing ${key}=${value}: ${(err as Error).message}`, key, err);
  }
}

export interface ConntrackResult {
  readonly written: readonly ConntrackWrite[];
  /** Writes this process may not make, with the reason (each logged as one warning). */
  readonly skipped: readonly { readonly write: ConntrackWrite; readonly reason: string }[];
}

/**
 * Applies the settings in this process's network namespace. Throws (naming the sysctl, the value and
 * the kernel's reason) when the kernel refuses a value; warns for what may not be written here.
 */
export async function applyConntrackSysctls(
  settings: ConntrackOptions,
  opts: { readonly cpus?: number } = {},
): Promise<ConntrackResult> {
  const current: Record<string, number | undefined> = {};
  for (const key of CONNTRACK_KEYS) current[key] = await readValue(key);
  const plan = conntrackPlan(settings, opts.cpus ?? (await onlineCpus()), current);
  const written: ConntrackWrite[] = [];
  const skipped: { write: ConntrackWrite; reason: string }[] = [];
  for (const w of plan) {
    const name = w.key.startsWith('/') ? 'nf_conntrack hashsize' : w.key;
    if (!w.key.startsWith('/') && current[w.key] === undefined) {
      const reason = 'absent (the nf_conntrack module is not loaded)';
      skipped.push({ write: w, reason });
      log.warn(
        `cannot set ${name}=${w.value}: ${reason}; conntrack settings take effect once it is loaded and svcplane restarts`,
      );
      continue;
    }
    try {
      await writeValue(w.key, w.value);
      written.push(w);
      log.info('set conntrack parameter', { key: name, value: w.value, was: current[w.key] });
    } catch (err) {
      const why = notWritable(err);
      if (why === undefined) {
        throw new Error(
          `cannot set ${name}=${w.value}: ${err instanceof Error ? err.message : String(err)}`,
          { cause: err },
        );
      }
      skipped.push({ write: w, reason: why });
      log.warn(`cannot set ${name}=${w.value} (now ${String(current[w.key])}): ${why}; ${advice(w, why)}`);
    }
  }
  return { written, skipped };
}
