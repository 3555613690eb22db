import type { ListedTable } from '../nftables/listing.js';
import { traceNftables } from '../nftables/trace.js';
import type { NodeView, TracePacket, TraceResult, TraceStep } from './trace.js';

/**
 * `svcplane trace` on a node programmed in nftables mode: the walk over `nft -j list table ip|ip6
 * kube-proxy` (src/nftables/trace.ts) in the shape the CLI prints and tests check (TraceResult).
 * Random choices carry 1/N each; an endpoint chosen by an affinity set carries 1.
 */
export function traceNftablesPacket(table: ListedTable, packet: TracePacket, node: NodeView): TraceResult {
  const r = traceNftables(
    table,
    {
      family: packet.family,
      src: packet.src,
      dst: packet.dst,
      proto: packet.proto === 'udp' ? 'udp' : packet.proto === 'sctp' ? 'sctp' : 'tcp',
      dport: packet.dport,
      fromNode: packet.fromNode,
      ...(packet.inInterface !== undefined ? { iifname: packet.inInterface } : {}),
    },
    { localAddresses: node.addresses.map((a) => a.ip) },
  );
  const family = table.family;
  const path: TraceStep[] = r.steps.map((s) => {
    const colon = s.indexOf(': ');
    return {
      table: `${family} ${table.name}`,
      chain: colon > 0 ? s.slice(0, colon) : '',
      text: colon > 0 ? s.slice(colon + 2) : s,
      action: colon > 0 ? s.slice(colon + 2) : s,
    };
  });
  const n = r.endpoints.length;
  return {
    verdict: r.verdict,
    endpoints: r.endpoints.map((e) => ({
      endpoint: e.endpoint,
      probability: e.via === 'random' ? 1 / n : 1,
      masquerade: r.masquerade,
    })),
    masquerade: r.masquerade,
    masqueradeReason: r.masquerade ? 'marked by mark-for-masquerade (masquerading chain)' : '',
    ...(r.service !== undefined ? { service: r.service } : {}),
    path,
    branches: [],
    affinity: [],
    unsupported: [],
    notes: [
      `nftables mode: walked table ${family} ${table.name}` +
        (r.endpoints.some((e) => e.via === 'affinity') ? ' (endpoint from an affinity set)' : ''),
    ],
    ...(packet.inInterface !== undefined ? { inInterface: packet.inInterface } : {}),
  };
}
