import { joinHostPort } from '../model/ip.js';
import type { TracePacket, TraceResult, TraceStep } from './trace.js';

/** Text and JSON renderings of a trace (pure). */

export interface TraceJson {
  readonly verdict: TraceResult['verdict'];
  readonly endpoints: TraceResult['endpoints'];
  readonly masquerade: boolean;
  readonly masqueradeReason: string;
  readonly service: string | null;
  readonly packet: {
    readonly proto: string;
    readonly src: string;
    readonly dst: string;
    readonly dport: number;
    readonly fromNode: boolean;
    readonly inInterface: string | null;
  };
  readonly path: readonly TraceStep[];
  readonly branches: readonly {
    readonly probability: number;
    readonly verdict: string;
    readonly endpoint: string | null;
    readonly masquerade: boolean;
    readonly masqueradeReason: string;
    /** The steps after `path`. */
    readonly path: readonly TraceStep[];
  }[];
  readonly affinity: TraceResult['affinity'];
  readonly unsupported: readonly string[];
  readonly notes: readonly string[];
  readonly ipvs?: TraceResult['ipvs'];
}

export function traceJson(packet: TracePacket, r: TraceResult): TraceJson {
  const common = r.path.length;
  return {
    verdict: r.verdict,
    endpoints: r.endpoints,
    masquerade: r.masquerade,
    masqueradeReason: r.masqueradeReason,
    service: r.service ?? null,
    packet: {
      proto: packet.proto,
      src: packet.src,
      dst: packet.dst,
      dport: packet.dport,
      fromNode: packet.fromNode,
      inInterface: r.inInterface ?? null,
    },
    path: r.path,
    branches: r.branches.map((b) => ({
      probability: b.probability,
      verdict: b.verdict,
      endpoint: b.endpoint ?? null,
      masquerade: b.masquerade,
      masqueradeReason: b.masqueradeReason,
      path: b.steps.slice(common),
    })),
    affinity: r.affinity,
    unsupported: r.unsupported,
    notes: r.notes,
    ...(r.ipvs ? { ipvs: r.ipvs } : {}),
  };
}

const pct = (p: number): string => `${(p * 100).toFixed(1)}%`;

function stepHead(s: TraceStep): string {
  const where = `${s.table} ${s.chain}${s.rule !== undefined ? ` #${s.rule}` : ''}`;
  // IPVS schedules by weight (rr alternates); the iptables statistic match is random.
  const p =
    s.probability !== undefined ? ` (${s.table === 'ipvs' ? 'share' : 'random'} ${pct(s.probability)})` : '';
  return `${where}: ${s.action}${p}`;
}

export function formatTraceText(packet: TracePacket, r: TraceResult): string {
  const out: string[] = [];
  const sport = packet.sport !== undefined ? `:${packet.sport}` : '';
  const entry = packet.fromNode
    ? 'sent by the node (nat OUTPUT)'
    : `arriving${r.inInterface ? ` on ${r.inInterface}` : ''} (nat PREROUTING)`;
  out.push(
    `Packet:     ${packet.proto} ${packet.src}${sport} -> ${joinHostPort(packet.dst, packet.dport)}, new connection, ${entry}`,
  );
  out.push(`Service:    ${r.service ?? '(none: no Service rule matched)'}`);
  out.push(`Verdict:    ${r.verdict}${verdictNote(r)}`);
  if (r.endpoints.length > 0) {
    out.push('Endpoints:');
    const w = Math.max(...r.endpoints.map((e) => e.endpoint.length));
    for (const e of r.endpoints) {
      out.push(
        `  ${e.endpoint.padEnd(w)}  ${pct(e.probability).padStart(6)}  masquerade ${e.masquerade ? 'yes' : 'no'}`,
      );
    }
  }
  if (r.ipvs) {
    out.push(
      `IPVS:       ${r.ipvs.virtualServer} scheduler ${r.ipvs.scheduler}${r.ipvs.persistenceSeconds !== undefined ? `, persistent ${r.ipvs.persistenceSeconds} s` : ''}`,
    );
    for (const x of r.ipvs.reals) out.push(`  ${x.endpoint}  weight ${x.weight}  (${pct(x.share)})`);
  }
  out.push(`Masquerade: ${r.masqueradeReason}`);
  if (r.affinity.length > 0) {
    const secs = r.affinity.find((a) => a.seconds !== undefined)?.seconds;
    const listed = r.affinity.filter((a) => a.clientListed === true).map((a) => a.list);
    out.push(
      `Affinity:   ClientIP (xt_recent lists ${r.affinity.map((a) => a.list).join(', ')}${secs !== undefined ? `, ${secs} s` : ''}): ` +
        (listed.length > 0
          ? `the client has an entry in ${listed.join(', ')} (age not checked), so it sticks to that endpoint`
          : 'a returning client goes back to the endpoint it used last; a new one is spread as shown'),
    );
  } else {
    out.push('Affinity:   none');
  }
  out.push('Path:');
  r.path.forEach((s, i) => {
    out.push(`  ${String(i + 1).padStart(2)}. ${stepHead(s)}`);
    if (s.rule !== undefined) out.push(`        ${s.text}`);
  });
  if (r.branches.length > 1) {
    // The branches usually join again after the DNAT (filter, POSTROUTING): print that tail once.
    const tails = r.branches.map((b) => b.steps.slice(r.path.length));
    const tail = commonSuffix(tails);
    out.push(
      r.ipvs
        ? `Branches (chosen by the IPVS scheduler ${r.ipvs.scheduler} per new connection):`
        : 'Branches (chosen at random per new connection):',
    );
    for (const [i, b] of r.branches.entries()) {
      out.push(`  ${pct(b.probability).padStart(6)} -> ${b.endpoint ?? b.verdict}`);
      const own = tails[i] ?? [];
      for (const s of own.slice(0, own.length - tail)) out.push(`           ${stepHead(s)}`);
    }
    if (tail > 0) {
      out.push('  then, on every branch:');
      const first = tails[0] ?? [];
      for (const s of first.slice(first.length - tail)) out.push(`           ${stepHead(s)}`);
    }
  } else if (r.branches[0]) {
    for (const s of r.branches[0].steps.slice(r.path.length)) out.push(`      ${stepHead(s)}`);
  }
  for (const u of r.unsupported) out.push(`Warning:    ${u} (treated as not matching)`);
  for (const n of r.notes) out.push(`Note:       ${n}`);
  return `${out.join('\n')}\n`;
}

/** How many trailing steps all lists share (same table, chain, rule and action). */
function commonSuffix(lists: readonly (readonly TraceStep[])[]): number {
  const min = Math.min(...lists.map((l) => l.length));
  let n = 0;
  while (n < min) {
    const ref = lists[0]?.[lists[0].length - 1 - n];
    const same = lists.every((l) => {
      const s = l[l.length - 1 - n];
      return (
        s &&
        ref &&
        s.table === ref.table &&
        s.chain === ref.chain &&
        s.rule === ref.rule &&
        s.action === ref.action
      );
    });
    if (!same) break;
    n++;
  }
  return n;
}

function verdictNote(r: TraceResult): string {
  switch (r.verdict) {
    case 'dnat':
      return ` (DNAT to ${r.endpoints.length} possible endpoint${r.endpoints.length === 1 ? '' : 's'})`;
    case 'reject':
      return ' (REJECT: the client gets "connection refused" / ICMP port unreachable)';
    case 'drop':
      return ' (DROP: the client times out)';
    case 'local':
      return ' (delivered to a process on the node, not translated)';
    case 'untouched':
      return ' (no Service rule translated it; routed as is)';
  }
}
