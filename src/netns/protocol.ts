/**
 * The JSON-lines protocol between a sandbox and its agents (one agent per namespace).
 *
 * Server side: the agent answers every TCP connection (at once, and again for every line received
 * on it) and every UDP datagram with one {@link EchoReply} line.
 * Client side: the agent reads {@link AgentCommand} lines on stdin and writes {@link AgentResponse}
 * lines (same `id`) on stdout; unsolicited events carry no `id`.
 */

export type Proto = 'tcp' | 'udp';

/** What an echo server says: who answered, on which port, and the peer address it saw. */
export interface EchoReply {
  readonly pod: string;
  /** The server's own address for this connection/datagram (the destination after any DNAT). */
  readonly ip: string;
  readonly port: number;
  /** `ip:port` (`[ip]:port` for IPv6) of the client as the server saw it: shows (absence of) SNAT. */
  readonly peer: string;
  readonly proto: Proto;
}

/**
 * Why a probe failed. 'refused': RST or ICMP port unreachable (TCP, and connected UDP);
 * 'timeout': no answer (a DROP); 'unreachable': ICMP host/net unreachable or no route;
 * 'reset': an established connection was reset; 'closed': the peer closed it; 'error': anything else.
 */
export type ProbeError = 'refused' | 'timeout' | 'unreachable' | 'reset' | 'closed' | 'error';

export type ProbeResult =
  | { readonly ok: true; readonly reply: EchoReply }
  | { readonly ok: false; readonly error: ProbeError; readonly detail: string };

export interface RequestSpec {
  readonly proto: Proto;
  readonly ip: string;
  readonly port: number;
  /** Default {@link DEFAULT_TIMEOUT_MS}. */
  readonly timeoutMs?: number;
  /** Bind the client socket to this local port. */
  readonly sourcePort?: number;
  /** Bind the client socket to this local address. */
  readonly sourceIP?: string;
}

export const DEFAULT_TIMEOUT_MS = 1000;

export type AgentCommand =
  | ({ readonly id: number; readonly op: 'request' } & RequestSpec)
  /** Opens a TCP connection and waits for the greeting; keeps it open under `conn`. */
  | ({ readonly id: number; readonly op: 'open'; readonly conn: number } & RequestSpec)
  /** Sends one line on an open connection and waits for the next reply line. */
  | { readonly id: number; readonly op: 'send'; readonly conn: number; readonly timeoutMs?: number }
  | { readonly id: number; readonly op: 'close'; readonly conn: number }
  /** Starts more listeners. */
  | {
      readonly id: number;
      readonly op: 'listen';
      readonly tcpPorts?: readonly number[];
      readonly udpPorts?: readonly number[];
    };

export type AgentResponse =
  | { readonly id: number; readonly result: ProbeResult }
  | { readonly id: number; readonly done: true }
  | { readonly id: number; readonly failed: string };

export type AgentEvent =
  { readonly event: 'ready'; readonly pid: number } | { readonly event: 'fatal'; readonly error: string };

/** Maps a Node.js socket error code to a {@link ProbeError}. */
export function probeErrorOf(code: string | undefined): ProbeError {
  switch (code) {
    case 'ECONNREFUSED':
      return 'refused';
    case 'ETIMEDOUT':
      return 'timeout';
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
    case 'EADDRNOTAVAIL':
      return 'unreachable';
    case 'ECONNRESET':
    case 'EPIPE':
      return 'reset';
    default:
      return 'error';
  }
}

/** Strips the `::ffff:` of IPv4-mapped addresses a dual-stack socket reports. */
export function unmapIPv4(ip: string): string {
  return /^::ffff:\d+\.\d+\.\d+\.\d+$/i.test(ip) ? ip.slice(7) : ip;
}

export function hostPort(ip: string, port: number): string {
  return ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`;
}

/** Parses one reply line from an echo server; undefined if it is not one. */
export function parseEchoReply(line: string): EchoReply | undefined {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch {
    return undefined;
  }
  if (typeof v !== 'object' || v === null) return undefined;
  const r = v as Record<string, unknown>;
  if (
    typeof r.pod !== 'string' ||
    typeof r.ip !== 'string' ||
    typeof r.port !== 'number' ||
    typeof r.peer !== 'string' ||
    (r.proto !== 'tcp' && r.proto !== 'udp')
  ) {
    return undefined;
  }
  return { pod: r.pod, ip: r.ip, port: r.port, peer: r.peer, proto: r.proto };
}

/** The IP part of an `ip:port` / `[ip]:port` peer string. */
export function peerIP(peer: string): string {
  const m = /^\[(.*)\]:\d+$/.exec(peer);
  if (m?.[1] !== undefined) return m[1];
  const i = peer.lastIndexOf(':');
  return i < 0 ? peer : peer.slice(0, i);
}
