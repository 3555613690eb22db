import { cidrContains, parseCIDR, parseIP } from '../model/ip.js';
import type { IPFamily } from '../model/types.js';
import { run } from '../util/exec.js';

/** Interface addresses of a network namespace, from `ip -j address show`. */

export interface InterfaceAddress {
  readonly ifname: string;
  readonly ifindex: number;
  /** Canonical IP. */
  readonly ip: string;
  readonly family: IPFamily;
  readonly prefixLen: number;
  /** `global`, `host`, `link`, `site`, or a number. */
  readonly scope: string;
  /** Address flags set to true by ip(8): `secondary`, `tentative`, `deprecated`, `dadfailed`, `dynamic`, `nodad`, ... */
  readonly flags: readonly string[];
  /** Link flags: `UP`, `LOOPBACK`, `LOWER_UP`, ... */
  readonly linkFlags: readonly string[];
}

interface IpJsonAddr {
  family?: unknown;
  local?: unknown;
  prefixlen?: unknown;
  scope?: unknown;
  [k: string]: unknown;
}

interface IpJsonLink {
  ifindex?: unknown;
  ifname?: unknown;
  flags?: unknown;
  addr_info?: unknown;
}

/** Pure: parse `ip -j address show` output. Entries that are not inet/inet6 addresses are skipped. */
export function parseIpAddressJson(json: string): InterfaceAddress[] {
  let data: unknown;
  try {
    data = JSON.parse(json);
  } catch (err) {
    throw new Error(`cannot parse "ip -j address show" output: ${(err as Error).message}`, { cause: err });
  }
  if (!Array.isArray(data)) throw new Error('"ip -j address show" output is not a JSON array');
  const out: InterfaceAddress[] = [];
  for (const link of data as IpJsonLink[]) {
    if (typeof link !== 'object' || link === null || typeof link.ifname !== 'string') continue;
    const linkFlags = Array.isArray(link.flags)
      ? link.flags.filter((f): f is string => typeof f === 'string')
      : [];
    const addrs = Array.isArray(link.addr_info) ? (link.addr_info as IpJsonAddr[]) : [];
    for (const a of addrs) {
      if (typeof a !== 'object' || a === null) continue;
      if ((a.family !== 'inet' && a.family !== 'inet6') || typeof a.local !== 'string') continue;
      const parsed = parseIP(a.local);
      if (!parsed) continue;
      const flags = Object.entries(a)
        .filter(([, v]) => v === true)
        .map(([k]) => k);
      out.push({
        ifname: link.ifname,
        ifindex: typeof link.ifindex === 'number' ? link.ifindex : 0,
        ip: parsed.ip,
        family: parsed.family,
        prefixLen: typeof a.prefixlen === 'number' ? a.prefixlen : parsed.family === 'IPv4' ? 32 : 128,
        scope: typeof a.scope === 'string' || typeof a.scope === 'number' ? String(a.scope) : 'global',
        flags,
        linkFlags,
      });
    }
  }
  return out;
}

/** All inet/inet6 addresses of the namespace (default: ours). */
export async function listAddresses(opts: { netns?: string } = {}): Promise<InterfaceAddress[]> {
  return (await readAddressShow(opts.netns)).addresses;
}

/** One `ip -j address show`: the addresses, and the names of every link (with or without one). */
export interface AddressShow {
  readonly addresses: InterfaceAddress[];
  readonly links: readonly string[];
}

/** Pure: parse `ip -j address show` output into addresses and link names. */
export function parseAddressShow(json: string): AddressShow {
  const addresses = parseIpAddressJson(json);
  const links = (JSON.parse(json) as IpJsonLink[])
    .map((l) => (typeof l === 'object' && l !== null ? l.ifname : undefined))
    .filter((n): n is string => typeof n === 'string');
  return { addresses, links };
}

/**
 * `ip -j address show` in a namespace (default: ours). The timeout is that of the kernel writers'
 * (an IPVS node holds one address per Service IP on kube-ipvs0: 11k at 10k Services).
 */
export async function readAddressShow(netns: string | undefined): Promise<AddressShow> {
  const r = await run(['ip', '-j', 'address', 'show'], { netns, timeoutMs: 600_000 });
  return parseAddressShow(r.stdout);
}

function usable(a: InterfaceAddress): boolean {
  return !a.flags.includes('tentative') && !a.flags.includes('dadfailed');
}

/**
 * Global-scope addresses of a family, in `ip address` order (interface index, then primary before
 * secondary). The first one is the node IP a kube-proxy operator would expect when none is given.
 */
export function nodeIPsFromInterfaces(addrs: readonly InterfaceAddress[], family: IPFamily): string[] {
  const out: string[] = [];
  for (const a of addrs) {
    if (a.family === family && a.scope === 'global' && usable(a) && !out.includes(a.ip)) out.push(a.ip);
  }
  return out;
}

/** The first global-scope address of a family, or undefined. */
export function nodeIPFromInterfaces(
  addrs: readonly InterfaceAddress[],
  family: IPFamily,
): string | undefined {
  return nodeIPsFromInterfaces(addrs, family)[0];
}

function isLoopback(a: InterfaceAddress): boolean {
  return a.family === 'IPv4' ? cidrContains('127.0.0.0/8', a.ip) : a.ip === '::1';
}

/**
 * `--nodeport-addresses` resolution (kube-proxy's NodePortAddresses.GetNodeIPs): the local addresses
 * inside any of the CIDRs (any family; filter by `family` if needed), one entry per IP, in interface
 * order. Loopback addresses are included only with `includeLoopback` (localhost NodePorts).
 * Throws on an invalid CIDR.
 */
export function addressesInCIDRs(
  addrs: readonly InterfaceAddress[],
  cidrs: readonly string[],
  opts: { includeLoopback?: boolean } = {},
): InterfaceAddress[] {
  const nets = cidrs.map((c) => {
    const p = parseCIDR(c);
    if (!p) throw new Error(`invalid CIDR ${JSON.stringify(c)} in node port addresses`);
    return p.cidr;
  });
  const seen = new Set<string>();
  const out: InterfaceAddress[] = [];
  for (const a of addrs) {
    if (isLoopback(a) && !opts.includeLoopback) continue;
    if (seen.has(a.ip)) continue;
    if (nets.some((n) => cidrContains(n, a.ip))) {
      seen.add(a.ip);
      out.push(a);
    }
  }
  return out;
}
