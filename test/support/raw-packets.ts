import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Sandbox, Where } from '../../src/netns/sandbox.js';

/**
 * Hand-made IPv4/TCP frames for traffic no socket would send (a FIN for a connection that does not
 * exist, a packet to 127.0.0.x arriving from the wire). They leave a sandbox namespace through
 * `socat INTERFACE:<dev>` (an AF_PACKET socket), so the sender's own routing never sees them; the
 * receiving namespace processes them like any frame off the wire.
 */

export const TCP_FIN = 0x01;
export const TCP_SYN = 0x02;
export const TCP_RST = 0x04;
export const TCP_ACK = 0x10;

export interface TcpSpec {
  readonly src: string;
  readonly dst: string;
  readonly srcPort: number;
  readonly dstPort: number;
  readonly flags: number;
  readonly seq?: number;
  readonly ack?: number;
}

function ipv4Bytes(ip: string): Buffer {
  const parts = ip.split('.').map((p) => Number.parseInt(p, 10));
  if (parts.length !== 4 || parts.some((p) => !(p >= 0 && p <= 255)))
    throw new Error(`not an IPv4 address: ${ip}`);
  return Buffer.from(parts);
}

/** The Internet checksum (RFC 1071) of `data`. */
export function internetChecksum(data: Buffer): number {
  let sum = 0;
  for (let i = 0; i < data.length; i += 2) sum += (data[i]! << 8) + (data[i + 1] ?? 0);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/** A 20-byte TCP header (no options, no payload) with a correct checksum. */
export function tcpSegment(t: TcpSpec): Buffer {
  const seg = Buffer.alloc(20);
  seg.writeUInt16BE(t.srcPort, 0);
  seg.writeUInt16BE(t.dstPort, 2);
  seg.writeUInt32BE((t.seq ?? 0x1000) >>> 0, 4);
  seg.writeUInt32BE((t.ack ?? 0) >>> 0, 8);
  seg[12] = 5 << 4; // data offset: 5 words
  seg[13] = t.flags;
  seg.writeUInt16BE(64240, 14); // window
  const pseudo = Buffer.concat([ipv4Bytes(t.src), ipv4Bytes(t.dst), Buffer.from([0, 6, 0, seg.length])]);
  seg.writeUInt16BE(internetChecksum(Buffer.concat([pseudo, seg])), 16);
  return seg;
}

/** An IPv4 packet (TTL 64, DF) around `payload`, header checksum included. */
export function ipv4Packet(src: string, dst: string, protocol: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(20);
  h[0] = 0x45;
  h.writeUInt16BE(20 + payload.length, 2);
  h.writeUInt16BE(0x4000, 6); // DF
  h[8] = 64;
  h[9] = protocol;
  ipv4Bytes(src).copy(h, 12);
  ipv4Bytes(dst).copy(h, 16);
  h.writeUInt16BE(internetChecksum(h), 10);
  return Buffer.concat([h, payload]);
}

function macBytes(mac: string): Buffer {
  const parts = mac.split(':');
  if (parts.length !== 6 || parts.some((p) => !/^[0-9a-f]{2}$/i.test(p)))
    throw new Error(`not a MAC: ${mac}`);
  return Buffer.from(parts.map((p) => Number.parseInt(p, 16)));
}

export function ethernetFrame(dstMac: string, srcMac: string, ipPacket: Buffer): Buffer {
  return Buffer.concat([macBytes(dstMac), macBytes(srcMac), Buffer.from([0x08, 0x00]), ipPacket]);
}

/** The MAC address of `dev` in a sandbox namespace. */
export async function macOf(sb: Sandbox, where: Where, dev: string): Promise<string> {
  const out = (await sb.exec(where, ['ip', '-j', 'link', 'show', 'dev', dev])).stdout;
  const links = JSON.parse(out) as { address?: string }[];
  const mac = links[0]?.address;
  if (!mac) throw new Error(`no MAC for ${dev} in ${where}`);
  return mac;
}

/**
 * Sends a TCP segment as one Ethernet frame out of `dev` in `from`, addressed to the MAC of `toDev`
 * in `to` (its link peer). Each frame goes through a file: socat writes one read() per frame.
 */
export async function sendTcpFrame(
  sb: Sandbox,
  link: { readonly from: Where; readonly dev: string; readonly to: Where; readonly toDev: string },
  tcp: TcpSpec,
  count = 1,
): Promise<void> {
  const frame = ethernetFrame(
    await macOf(sb, link.to, link.toDev),
    await macOf(sb, link.from, link.dev),
    ipv4Packet(tcp.src, tcp.dst, 6, tcpSegment(tcp)),
  );
  const dir = await mkdtemp(join(tmpdir(), 'svcp-frame-'));
  try {
    const file = join(dir, 'frame');
    await writeFile(file, frame);
    for (let i = 0; i < count; i++) {
      await sb.exec(link.from, ['socat', '-u', `OPEN:${file}`, `INTERFACE:${link.dev}`], {
        timeoutMs: 10_000,
      });
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
