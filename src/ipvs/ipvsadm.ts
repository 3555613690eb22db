import type { Protocol } from '../model/types.js';
import {
  attributeArgs,
  rsKey,
  serviceSpec,
  splitIPPort,
  vsKey,
  type RealServer,
  type VirtualServer,
} from './types.js';

/**
 * Pure parsers of `ipvsadm -Sn` (configuration) and `ipvsadm -Ln` (connection counters), and the
 * renderer of `ipvsadm -R` lines.
 */

export interface IpvsService {
  readonly vs: VirtualServer;
  /** By rsKey. */
  readonly reals: ReadonlyMap<string, RealServer>;
}

/** The kernel's IPVS table: by vsKey. */
export type IpvsTable = ReadonlyMap<string, IpvsService>;

const PROTO_OF_FLAG: Readonly<Record<string, Protocol>> = {
  '-t': 'TCP',
  '--tcp-service': 'TCP',
  '-u': 'UDP',
  '--udp-service': 'UDP',
  '--sctp-service': 'SCTP',
};

export class IpvsParseError extends Error {
  constructor(lineNo: number, line: string, reason: string) {
    super(`ipvsadm output line ${lineNo} (${JSON.stringify(line.slice(0, 200))}): ${reason}`);
    this.name = 'IpvsParseError';
  }
}

/** Parses `ipvsadm -Sn` output. Firewall-mark services (`-f`) are not ours and are skipped. */
export function parseIpvsadmSave(text: string): IpvsTable {
  const table = new Map<string, { vs: VirtualServer; reals: Map<string, RealServer> }>();
  const lines = text.split('\n');
  lines.forEach((raw, i) => {
    const line = raw.trim();
    if (line === '') return;
    const fail = (reason: string): never => {
      throw new IpvsParseError(i + 1, raw, reason);
    };
    const tok = line.split(/\s+/);
    const op = tok[0];
    if (tok[1] === '-f' || tok[1] === '--fwmark-service') return;
    const protocol = PROTO_OF_FLAG[tok[1] ?? ''];
    const hp = splitIPPort(tok[2] ?? '');
    if (!protocol || !hp) return fail('unknown service spec');
    const key = vsKey({ protocol, ...hp });
    const opt = (flag: string): string | undefined => {
      const at = tok.indexOf(flag, 3);
      return at >= 0 ? tok[at + 1] : undefined;
    };
    if (op === '-A') {
      const persistence = opt('-p');
      const flags = opt('-b');
      table.set(key, {
        vs: {
          protocol,
          ...hp,
          scheduler: opt('-s') ?? 'wlc',
          schedFlags: flags ? flags.split(',').sort() : [],
          ...(persistence !== undefined ? { persistence: Number(persistence) } : {}),
        },
        reals: new Map(),
      });
    } else if (op === '-a') {
      const svc = table.get(key) ?? fail('real server before its virtual server');
      const rs = splitIPPort(opt('-r') ?? '') ?? fail('bad real server');
      const weight = Number(opt('-w') ?? '1');
      svc.reals.set(rsKey(rs), { ...rs, weight });
    } else {
      fail(`unexpected command ${JSON.stringify(op)}`);
    }
  });
  return table;
}

export interface IpvsConnCounts {
  readonly active: number;
  readonly inactive: number;
}

/** `ipvsadm -Ln` → ActiveConn/InActConn per `vsKey|rsKey`: the one parser of this listing. */
export function parseIpvsadmList(text: string): Map<string, IpvsConnCounts> {
  const out = new Map<string, IpvsConnCounts>();
  let current: string | undefined;
  for (const raw of text.split('\n')) {
    const vsm = /^(TCP|UDP|SCTP)\s+(\S+)\s/.exec(`${raw} `);
    if (vsm) {
      const hp = splitIPPort(vsm[2] ?? '');
      current = hp ? vsKey({ protocol: vsm[1] as Protocol, ...hp }) : undefined;
      continue;
    }
    const rsm = /^\s+->\s+(\S+)\s+\S+\s+(\d+)\s+(\d+)\s+(\d+)/.exec(raw);
    const hp = rsm ? splitIPPort(rsm[1] ?? '') : undefined;
    if (rsm && hp && current) {
      out.set(`${current}|${rsKey(hp)}`, { active: Number(rsm[3]), inactive: Number(rsm[4]) });
    }
  }
  return out;
}

/** Active + inactive connections per real server, from `ipvsadm -Ln`: key `vsKey|rsKey`. */
export function parseIpvsadmConnections(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const [key, c] of parseIpvsadmList(text)) out.set(key, c.active + c.inactive);
  return out;
}

/** `ipvsadm -R` lines. */
export const ipvsLine = {
  addService: (vs: VirtualServer): string => ['-A', ...serviceSpec(vs), ...attributeArgs(vs)].join(' '),
  editService: (vs: VirtualServer): string => ['-E', ...serviceSpec(vs), ...attributeArgs(vs)].join(' '),
  deleteService: (vs: VirtualServer): string => ['-D', ...serviceSpec(vs)].join(' '),
  addReal: (vs: VirtualServer, rs: RealServer): string =>
    ['-a', ...serviceSpec(vs), '-r', rsKey(rs), '-m', '-w', String(rs.weight)].join(' '),
  editReal: (vs: VirtualServer, rs: RealServer): string =>
    ['-e', ...serviceSpec(vs), '-r', rsKey(rs), '-m', '-w', String(rs.weight)].join(' '),
  deleteReal: (vs: VirtualServer, rs: Pick<RealServer, 'address' | 'port'>): string =>
    ['-d', ...serviceSpec(vs), '-r', rsKey(rs)].join(' '),
};
