import ipaddr from 'ipaddr.js';
import type { IPFamily } from './types.js';

/**
 * IP helpers. kube-proxy accepts legacy IPv4 with leading zeros ("010.0.0.1" means 10.0.0.1, decimal)
 * and re-serializes canonically; IPv6 is printed per RFC 5952.
 */

const IPV4_LEGACY = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

/** Canonical form of an IP address, or undefined if it is not one. */
export function parseIP(text: string): { ip: string; family: IPFamily } | undefined {
  if (typeof text !== 'string' || text.length === 0 || text.length > 45) return undefined;
  const m = IPV4_LEGACY.exec(text);
  if (m) {
    const parts = m.slice(1, 5).map((p) => Number.parseInt(p, 10));
    if (parts.some((p) => p > 255)) return undefined;
    return { ip: parts.join('.'), family: 'IPv4' };
  }
  if (!text.includes(':') || !/^[0-9a-fA-F:.]+$/.test(text)) return undefined;
  if (!ipaddr.IPv6.isValid(text)) return undefined;
  const v6 = ipaddr.IPv6.parse(text);
  // IPv4-mapped IPv6 is treated as IPv6 text but kube-proxy rejects mixing; keep it IPv6.
  return { ip: v6.toRFC5952String(), family: 'IPv6' };
}

export function ipFamilyOf(ip: string): IPFamily {
  return ip.includes(':') ? 'IPv6' : 'IPv4';
}

/** Canonical CIDR (address masked to the network), or undefined. */
export function parseCIDR(text: string): { cidr: string; family: IPFamily } | undefined {
  if (typeof text !== 'string') return undefined;
  const t = text.trim();
  const slash = t.indexOf('/');
  if (slash <= 0) return undefined;
  const addr = parseIP(t.slice(0, slash));
  const lenText = t.slice(slash + 1);
  if (!addr || !/^\d{1,3}$/.test(lenText)) return undefined;
  const len = Number.parseInt(lenText, 10);
  const max = addr.family === 'IPv4' ? 32 : 128;
  if (len > max) return undefined;
  const net = ipaddr.parse(addr.ip);
  const bytes = net.toByteArray();
  for (let bit = len; bit < bytes.length * 8; bit++) {
    const i = Math.floor(bit / 8);
    bytes[i] = (bytes[i] ?? 0) & ~(0x80 >> (bit % 8));
  }
  const masked = ipaddr.fromByteArray(bytes);
  const ip = masked.kind() === 'ipv6' ? (masked as ipaddr.IPv6).toRFC5952String() : masked.toString();
  return { cidr: `${ip}/${len}`, family: addr.family };
}

/** Whether `ip` lies inside `cidr` (both canonical, same family; false across families). */
export function cidrContains(cidr: string, ip: string): boolean {
  const [net, len] = ipaddr.parseCIDR(cidr);
  const addr = ipaddr.parse(ip);
  if (net.kind() !== addr.kind()) return false;
  return addr.match([net, len]);
}

/**
 * `host:port` / `[host]:port` split (Go's net.SplitHostPort for the forms kube-proxy writes): the
 * host as written (possibly empty: `:10256`), the port 0-65535; undefined when malformed. The one
 * splitter: endpoint strings (IPVS, trace) and bind addresses (healthz, metrics) use it.
 */
export function splitHostPort(text: string): { host: string; port: number } | undefined {
  const m = /^\[([^\]]*)\]:(\d{1,5})$/.exec(text) ?? /^([^:[\]]*):(\d{1,5})$/.exec(text);
  if (!m) return undefined;
  const port = Number(m[2]);
  return port > 65535 ? undefined : { host: m[1] ?? '', port };
}

/** `ip:port`, or `[ip]:port` for IPv6 — kube-proxy's endpoint string. */
export function joinHostPort(ip: string, port: number): string {
  return ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`;
}

/**
 * Why a canonical IP (as parseIP returns it) may not be a Service address or an endpoint, or
 * undefined when it may: the API server's ValidateNonSpecialIP (unspecified, loopback, link-local,
 * link-local multicast), widened to all multicast and the limited broadcast, which no DNAT can serve
 * either. Programming one would capture the node's own traffic (`-d 127.0.0.1 -j KUBE-EXT-…`) or its
 * metadata service (169.254.169.254). IPv4-mapped IPv6 addresses are judged by the IPv4 address
 * inside. Reads the canonical text (runs for every endpoint of every rebuild).
 */
export function specialAddressReason(ip: string): string | undefined {
  if (!ip.includes(':')) return specialIPv4Reason(ip);
  if (ip === '::') return 'may not be unspecified (::)';
  if (ip === '::1') return 'may not be the loopback address (::1)';
  const first = ip.startsWith('::') ? 0 : Number.parseInt(ip.slice(0, ip.indexOf(':')), 16);
  if (first >= 0xfe80 && first <= 0xfebf) return 'may not be in the link-local range (fe80::/10)';
  if (first >= 0xff00) return 'may not be in the multicast range (ff00::/8)';
  if (ip.startsWith('::ffff:')) {
    const v6 = ipaddr.IPv6.parse(ip);
    if (v6.isIPv4MappedAddress()) return specialIPv4Reason(v6.toIPv4Address().toString());
  }
  return undefined;
}

function specialIPv4Reason(ip: string): string | undefined {
  const dot = ip.indexOf('.');
  const a = Number(ip.slice(0, dot));
  if (a === 0) {
    return ip === '0.0.0.0'
      ? 'may not be unspecified (0.0.0.0)'
      : 'may not be in the "this network" range (0.0.0.0/8)';
  }
  if (a === 127) return 'may not be in the loopback range (127.0.0.0/8)';
  if (a === 169 && ip.startsWith('169.254.')) return 'may not be in the link-local range (169.254.0.0/16)';
  if (a >= 224 && a <= 239) return 'may not be in the multicast range (224.0.0.0/4)';
  if (ip === '255.255.255.255') return 'may not be the broadcast address';
  return undefined;
}
