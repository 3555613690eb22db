import { familyFrontends } from '../model/selection.js';
import { parseIP } from '../model/ip.js';
import type { ClusterState, IPFamily } from '../model/types.js';

/**
 * The pure half of kube-proxy's conntrack reconciler (pkg/proxy/conntrack/cleanup.go): parse
 * `conntrack -L -o extended` output and decide which UDP flows are stale. A UDP "connection" keeps
 * its DNAT for as long as the client keeps sending, so without this a client stuck on a removed
 * endpoint (or on the REJECT of a Service that had none) would never move.
 */

export interface ConntrackTuple {
  /** Canonical IPs. */
  readonly src: string;
  readonly dst: string;
  readonly sport: number;
  readonly dport: number;
}

export interface ConntrackEntry {
  readonly family: IPFamily;
  readonly protocol: string;
  readonly orig: ConntrackTuple;
  readonly reply: ConntrackTuple;
}

/** One line of `conntrack -L -o extended`; undefined for anything else (summary lines, other shapes). */
export function parseConntrackLine(line: string): ConntrackEntry | undefined {
  const words = line.trim().split(/\s+/);
  const fam = words[0];
  if (fam !== 'ipv4' && fam !== 'ipv6') return undefined;
  const protocol = words[2];
  if (protocol === undefined) return undefined;
  const tuples: Partial<Record<'src' | 'dst' | 'sport' | 'dport', string>>[] = [];
  for (const w of words.slice(3)) {
    const m = /^(src|dst|sport|dport)=(.+)$/.exec(w);
    if (!m) continue;
    const key = m[1] as 'src' | 'dst' | 'sport' | 'dport';
    // Each tuple starts with src=: the first is the original direction, the second the reply.
    if (key === 'src') {
      if (tuples.length === 2) break;
      tuples.push({});
    }
    const cur = tuples[tuples.length - 1];
    if (cur && cur[key] === undefined) cur[key] = m[2];
  }
  const [o, r] = tuples;
  const family: IPFamily = fam === 'ipv4' ? 'IPv4' : 'IPv6';
  const tuple = (t: (typeof tuples)[number] | undefined): ConntrackTuple | undefined => {
    if (!t) return undefined;
    const src = parseIP(t.src ?? '');
    const dst = parseIP(t.dst ?? '');
    const sport = Number(t.sport);
    const dport = Number(t.dport);
    if (!src || !dst || src.family !== family || dst.family !== family) return undefined;
    if (!Number.isInteger(sport) || !Number.isInteger(dport)) return undefined;
    return { src: src.ip, dst: dst.ip, sport, dport };
  };
  const orig = tuple(o);
  const reply = tuple(r);
  if (!orig || !reply) return undefined;
  return { family, protocol, orig, reply };
}

export function parseConntrackList(text: string): ConntrackEntry[] {
  const out: ConntrackEntry[] = [];
  for (const line of text.split('\n')) {
    const e = parseConntrackLine(line);
    if (e) out.push(e);
  }
  return out;
}

const hp = (ip: string, port: number): string => `${ip}|${port}`;

/** UDP frontends (`ip|port`) and NodePorts of one family → the serving endpoints behind them. */
export function udpServingMap(
  state: ClusterState,
  family: IPFamily,
): { frontends: Map<string, Set<string>>; nodePorts: Map<number, Set<string>> } {
  const frontends = new Map<string, Set<string>>();
  const nodePorts = new Map<number, Set<string>>();
  for (const svc of state.services.values()) {
    if (svc.skipReason !== undefined) continue;
    const fe = familyFrontends(svc, family);
    const vips = [
      ...(fe.clusterIP !== undefined ? [fe.clusterIP] : []),
      ...fe.loadBalancerVIPs,
      ...fe.externalIPs,
    ];
    for (const port of svc.ports) {
      if (port.protocol !== 'UDP') continue;
      // Policy, topology and terminating state are ignored, as kube-proxy does.
      const serving = port.endpoints.filter((ep) => ep.serving && parseIP(ep.ip)?.family === family);
      if (serving.length === 0) continue; // nothing to move the flows to
      const set = new Set(serving.map((ep) => hp(ep.ip, ep.port)));
      for (const ip of vips) frontends.set(hp(ip, port.port), set);
      if (port.nodePort !== 0) nodePorts.set(port.nodePort, set);
    }
  }
  return { frontends, nodePorts };
}

/** The UDP entries of `family` that point at something other than a serving endpoint of their frontend. */
export function staleUDPEntries(
  state: ClusterState,
  family: IPFamily,
  entries: readonly ConntrackEntry[],
): ConntrackEntry[] {
  const { frontends, nodePorts } = udpServingMap(state, family);
  return entries.filter((e) => {
    if (e.family !== family || e.protocol !== 'udp') return false;
    const backend = hp(e.reply.src, e.reply.sport);
    const byVIP = frontends.get(hp(e.orig.dst, e.orig.dport));
    if (byVIP) return !byVIP.has(backend);
    const byNodePort = nodePorts.get(e.orig.dport);
    if (byNodePort) return !byNodePort.has(backend);
    return false;
  });
}

/**
 * One `conntrack -D` filter that deletes a group of stale flows at once. Staleness depends only on
 * the flow's family, protocol, original destination and port and its reply source and port (the
 * backend), so one filter on exactly those fields deletes every stale flow of the group and nothing
 * else: thousands of clients stuck on one removed endpoint cost one filter, not one process each.
 * (kube-proxy builds the same kind of filter, on the reply source IP only, for its netlink delete.)
 */
export interface ConntrackDeleteFilter {
  readonly family: IPFamily;
  readonly protocol: string;
  readonly origDst: string;
  readonly origDport: number;
  readonly replySrc: string;
  readonly replySport: number;
  /** Stale flows of the listing this filter covers. */
  readonly flows: number;
}

/** Groups stale entries into delete filters (pure; order of first appearance). */
export function deleteFilters(stale: readonly ConntrackEntry[]): ConntrackDeleteFilter[] {
  const byKey = new Map<string, { filter: Omit<ConntrackDeleteFilter, 'flows'>; flows: number }>();
  for (const e of stale) {
    const key = [e.family, e.protocol, e.orig.dst, e.orig.dport, e.reply.src, e.reply.sport].join('|');
    const cur = byKey.get(key);
    if (cur) {
      cur.flows++;
      continue;
    }
    byKey.set(key, {
      filter: {
        family: e.family,
        protocol: e.protocol,
        origDst: e.orig.dst,
        origDport: e.orig.dport,
        replySrc: e.reply.src,
        replySport: e.reply.sport,
      },
      flows: 1,
    });
  }
  return [...byKey.values()].map(({ filter, flows }) => ({ ...filter, flows }));
}

/** `conntrack` arguments of one delete filter (validated values only: canonical IPs, integer ports). */
export function filterArgs(f: ConntrackDeleteFilter): string[] {
  const ip = (v: string): string => {
    const p = parseIP(v);
    if (!p || p.family !== f.family) throw new Error(`conntrack filter: invalid ${f.family} address "${v}"`);
    return p.ip;
  };
  const port = (v: number): string => {
    if (!Number.isInteger(v) || v < 0 || v > 65535) throw new Error(`conntrack filter: invalid port ${v}`);
    return String(v);
  };
  if (!/^[a-z0-9]+$/.test(f.protocol)) throw new Error(`conntrack filter: invalid protocol "${f.protocol}"`);
  return [
    '-D',
    '-f',
    f.family === 'IPv4' ? 'ipv4' : 'ipv6',
    '-p',
    f.protocol,
    '--orig-dst',
    ip(f.origDst),
    '--dport',
    port(f.origDport),
    '--reply-src',
    ip(f.replySrc),
    '--reply-port-src',
    port(f.replySport),
  ];
}

/**
 * Input for one `conntrack -R FILE` (--load-file, conntrack-tools >= 1.4.6): one delete
 * command per line, all run by a single process.
 */
export function batchDeleteInput(filters: readonly ConntrackDeleteFilter[]): string {
  return filters.map((f) => filterArgs(f).join(' ') + '\n').join('');
}

/**
 * Flows a `conntrack -R` batch deleted: it prints each deleted entry on stdout (one line, with its
 * `src=` tuples) and no summary.
 */
export function countDeleted(stdout: string): number {
  let n = 0;
  for (const line of stdout.split('\n')) if (/\bsrc=\S+ dst=\S+/.test(line)) n++;
  return n;
}

/** The count of `conntrack -D`'s summary ("N flow entries have been deleted", on stderr), if it printed one. */
export function flowsDeletedOf(stderr: string): number | undefined {
  const m = /(\d+) flow entries have been deleted/.exec(stderr);
  return m ? Number(m[1]) : undefined;
}
