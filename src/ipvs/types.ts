import { joinHostPort, parseIP, splitHostPort } from '../model/ip.js';
import type { Protocol } from '../model/types.js';

/**
 * IPVS virtual and real servers as svcplane plans and reads them. Keys are the `ipvsadm` service
 * and server specs (`-t 10.96.0.1:80`, `10.244.0.2:8080`), so a key is also a valid argument list.
 */

export interface VirtualServer {
  readonly protocol: Protocol;
  /** Canonical IP. */
  readonly address: string;
  readonly port: number;
  readonly scheduler: string;
  /** Scheduler flags as ipvsadm names them (`mh-port`, `sh-fallback` …), sorted. */
  readonly schedFlags: readonly string[];
  /** Persistence timeout in seconds (ClientIP affinity); undefined when not persistent. */
  readonly persistence?: number;
}

export interface RealServer {
  /** Canonical IP. */
  readonly address: string;
  readonly port: number;
  readonly weight: number;
}

const PROTO_FLAG: Readonly<Record<Protocol, string>> = {
  TCP: '-t',
  UDP: '-u',
  SCTP: '--sctp-service',
};

/** `['-t', '10.96.0.1:80']`: the service part of an ipvsadm command. */
export function serviceSpec(vs: Pick<VirtualServer, 'protocol' | 'address' | 'port'>): [string, string] {
  return [PROTO_FLAG[vs.protocol], joinHostPort(vs.address, vs.port)];
}

/** Identity of a virtual server: protocol, address, port. */
export function vsKey(vs: Pick<VirtualServer, 'protocol' | 'address' | 'port'>): string {
  return serviceSpec(vs).join(' ');
}

export function rsKey(rs: Pick<RealServer, 'address' | 'port'>): string {
  return joinHostPort(rs.address, rs.port);
}

/** Scheduler, flags and persistence equal (the attributes `ipvsadm -E` changes). */
export function sameAttributes(a: VirtualServer, b: VirtualServer): boolean {
  return (
    a.scheduler === b.scheduler &&
    a.persistence === b.persistence &&
    a.schedFlags.join(',') === b.schedFlags.join(',')
  );
}

/** `ipvsadm` arguments for the scheduler, flags and persistence of a virtual server. */
export function attributeArgs(vs: VirtualServer): string[] {
  const args = ['-s', vs.scheduler];
  if (vs.schedFlags.length > 0) args.push('-b', vs.schedFlags.join(','));
  if (vs.persistence !== undefined) args.push('-p', String(vs.persistence));
  return args;
}

/** Splits `1.2.3.4:80` / `[fd00::1]:80` into a canonical IP and a port; undefined when malformed. */
export function splitIPPort(text: string): { address: string; port: number } | undefined {
  const hp = splitHostPort(text);
  const ip = hp === undefined ? undefined : parseIP(hp.host);
  // An IPv6 address is written in brackets, an IPv4 one without.
  if (hp === undefined || !ip || text.startsWith('[') !== ip.family.endsWith('6')) return undefined;
  return { address: ip.ip, port: hp.port };
}

/**
 * The two scheduler flags the kernel's schedulers read (IP_VS_SVC_F_SCHED1 / _SCHED2), by the names
 * `ipvsadm -Sn` prints for each scheduler. Only sh and mh use them; flag-3 has no user in the kernel
 * and `ipvsadm -Sn` does not print it, so a virtual server carrying it could never read back equal.
 */
const SCHED_FLAG_NAMES: Readonly<Record<string, readonly [fallback: string, port: string]>> = {
  sh: ['sh-fallback', 'sh-port'],
  mh: ['mh-fallback', 'mh-port'],
};

/**
 * Resolves `--ipvs-scheduler-flags` for a scheduler to the names ipvsadm reads back, sorted.
 * `flag-1` / `<sched>-fallback` (skip real servers at weight 0, e.g. draining ones) and `flag-2` /
 * `<sched>-port` (hash the source port too) are accepted. Without the flag: kube-proxy's choice,
 * `mh-port` for mh (its FlagSourceHash, 0x10) and none otherwise. Throws naming the flag.
 */
export function resolveSchedulerFlags(scheduler: string, flags: readonly string[] | undefined): string[] {
  const names = SCHED_FLAG_NAMES[scheduler];
  if (flags === undefined) return scheduler === 'mh' ? ['mh-port'] : [];
  const out = new Set<string>();
  for (const raw of flags) {
    const f = raw.trim();
    if (f === '') continue;
    if (!names) {
      throw new Error(
        `--ipvs-scheduler-flags: scheduler ${scheduler} takes no flags ("${f}"); only sh and mh do`,
      );
    }
    const [fallback, port] = names;
    if (f === 'flag-1' || f === fallback) out.add(fallback);
    else if (f === 'flag-2' || f === port) out.add(port);
    else {
      throw new Error(
        `--ipvs-scheduler-flags: "${f}" is not a flag of ${scheduler} (flag-1 or ${fallback}, flag-2 or ${port})`,
      );
    }
  }
  return [...out].sort();
}
