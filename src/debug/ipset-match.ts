import { cidrContains, parseCIDR, parseIP } from '../model/ip.js';
import type { IPFamily } from '../model/types.js';
import type { SavedIpset, SavedIpsetEntry } from '../ipvs/ipset.js';

/**
 * `svcplane trace` in IPVS mode: the kernel's ipsets (`ipset save`) and the `-m set --match-set NAME
 * FLAGS` match the way xt_set evaluates it for one packet. Pure. Every set type kube-proxy and
 * svcplane use is understood (hash:ip, hash:ip,port, hash:ip,port,ip, hash:ip,port,net, hash:net,
 * bitmap:port); for any other the match answers "unknown" and the trace says so.
 */

export type SetFlag = 'src' | 'dst';

/** What the set match looks at: the packet as it is at that point of the walk. */
export interface SetPacket {
  readonly family: IPFamily;
  readonly proto: 'tcp' | 'udp' | 'sctp';
  readonly src: string;
  readonly dst: string;
  readonly sport: number;
  readonly dport: number;
}

type Dim = 'ip' | 'port' | 'net';

/** The dimensions of each understood set type, in member order. */
const DIMENSIONS: Readonly<Record<string, readonly Dim[]>> = {
  'hash:ip': ['ip'],
  'hash:net': ['net'],
  'hash:ip,port': ['ip', 'port'],
  'hash:ip,port,ip': ['ip', 'port', 'ip'],
  'hash:ip,port,net': ['ip', 'port', 'net'],
  'hash:net,port': ['net', 'port'],
  'bitmap:port': ['port'],
};

/** `src,dst,…` of `--match-set NAME FLAGS`; undefined when malformed. */
export function parseSetFlags(text: string | undefined): SetFlag[] | undefined {
  if (text === undefined || text === '') return undefined;
  const flags = text.split(',');
  return flags.every((f): f is SetFlag => f === 'src' || f === 'dst') ? flags : undefined;
}

export interface SetMatchResult {
  /** undefined: the set type (or a member) is not understood. */
  readonly matched: boolean | undefined;
  /** Why, in one line (for the trace's path). */
  readonly why: string;
}

/**
 * xt_set's test: fewer flags than the set's dimensions never match, nor does a set of the other
 * family (bitmap:port has none); then each dimension takes the packet's source or destination as
 * its flag says. hash:*net* members marked nomatch are exceptions (the longest prefix decides).
 */
export function matchSet(set: SavedIpset, flags: readonly SetFlag[], pkt: SetPacket): SetMatchResult {
  const dims = DIMENSIONS[set.type];
  if (!dims) return { matched: undefined, why: `set type ${set.type} is not understood` };
  if (flags.length < dims.length) {
    return { matched: false, why: `${flags.length} flag(s) for a ${dims.length}-dimension set never match` };
  }
  if (set.family !== undefined && set.family !== pkt.family) {
    return { matched: false, why: `an ${set.family} set never matches an ${pkt.family} packet` };
  }
  const ipOf = (f: SetFlag): string => (f === 'src' ? pkt.src : pkt.dst);
  const portOf = (f: SetFlag): number => (f === 'src' ? pkt.sport : pkt.dport);
  const key = dims
    .map((d, i) => (d === 'port' ? `${pkt.proto}:${portOf(flags[i]!)}` : ipOf(flags[i]!)))
    .join(',');
  // For sets with a net dimension, the most specific matching member decides (nomatch included).
  let best: { entry: SavedIpsetEntry; prefix: number } | undefined;
  for (const entry of set.entries) {
    if (entry.parts.length !== dims.length) continue;
    let prefix = 0;
    let ok = true;
    for (let i = 0; i < dims.length && ok; i++) {
      const part = entry.parts[i] ?? '';
      const flag = flags[i]!;
      switch (dims[i]) {
        case 'ip': {
          const r = ipMatches(part, ipOf(flag), set.netmask);
          if (r === undefined)
            return { matched: undefined, why: `member ${entry.parts.join(',')} not understood` };
          ok = r;
          break;
        }
        case 'net': {
          const r = netMatch(part, ipOf(flag));
          if (r === undefined)
            return { matched: undefined, why: `member ${entry.parts.join(',')} not understood` };
          ok = r >= 0;
          prefix += Math.max(r, 0);
          break;
        }
        case 'port': {
          const r = portMatches(part, pkt.proto, portOf(flag), set.type === 'bitmap:port');
          if (r === undefined)
            return { matched: undefined, why: `member ${entry.parts.join(',')} not understood` };
          ok = r;
          break;
        }
      }
    }
    if (ok && (!best || prefix > best.prefix)) best = { entry, prefix };
  }
  if (!best) return { matched: false, why: `${key} is not in ${set.name}` };
  if (best.entry.nomatch) {
    return {
      matched: false,
      why: `${key} hits the nomatch member ${best.entry.parts.join(',')} of ${set.name}`,
    };
  }
  return { matched: true, why: `${key} is in ${set.name} (member ${best.entry.parts.join(',')})` };
}

function ipMatches(member: string, ip: string, netmask: number | undefined): boolean | undefined {
  if (member.includes('/')) {
    const r = netMatch(member, ip);
    return r === undefined ? undefined : r >= 0;
  }
  const m = parseIP(member);
  if (!m) return undefined;
  const p = parseIP(ip);
  if (!p || p.family !== m.family) return false;
  if (netmask === undefined) return m.ip === p.ip;
  const c = parseCIDR(`${m.ip}/${netmask}`);
  return c ? cidrContains(c.cidr, p.ip) : undefined;
}

/** Prefix length of `member` (a CIDR or a bare IP) when it holds `ip`, -1 when not, undefined when malformed. */
function netMatch(member: string, ip: string): number | undefined {
  const withLen = member.includes('/') ? member : `${member}/${member.includes(':') ? 128 : 32}`;
  const c = parseCIDR(withLen);
  if (!c) return undefined;
  const p = parseIP(ip);
  if (!p || p.family !== c.family) return -1;
  return cidrContains(c.cidr, p.ip) ? Number(withLen.split('/')[1]) : -1;
}

/** `tcp:80`, `udp:53`, a bitmap:port number `30080` or range `30000-30010`. */
function portMatches(member: string, proto: string, port: number, bitmap: boolean): boolean | undefined {
  let spec = member;
  if (!bitmap) {
    const m = /^([a-z]+):(.+)$/.exec(member);
    if (!m) return /^\d+$/.test(member) ? proto === 'tcp' && Number(member) === port : undefined;
    if (m[1] !== proto) return /^(tcp|udp|sctp|udplite|icmp|icmpv6)$/.test(m[1] ?? '') ? false : undefined;
    spec = m[2] ?? '';
  }
  const r = /^(\d+)(?:-(\d+))?$/.exec(spec);
  if (!r) return undefined;
  const lo = Number(r[1]);
  const hi = r[2] !== undefined ? Number(r[2]) : lo;
  return port >= lo && port <= hi;
}
