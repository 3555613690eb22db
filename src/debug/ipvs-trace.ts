import type { IpvsTable } from '../ipvs/ipvsadm.js';
import { vsKey } from '../ipvs/types.js';
import { joinHostPort } from '../model/ip.js';
import type { Protocol } from '../model/types.js';

/**
 * The IPVS part of `svcplane trace` (pure): in IPVS mode the Service IPs are local addresses
 * (kube-ipvs0) and the kernel's IPVS table, not iptables, picks the backend. This looks the packet's
 * destination up in the parsed `ipvsadm -Sn` table and reports the scheduler and each real server's
 * weight share (the exact choice of lc/sh/mh/… schedulers depends on live connection state). The
 * walk itself (./trace.ts) schedules the packet there and carries on with the real server.
 */

export interface IpvsTraceResult {
  /** `-t 10.96.0.10:80` */
  readonly virtualServer: string;
  readonly scheduler: string;
  readonly persistenceSeconds?: number;
  /** Real servers with their weight and weight share (what rr/wrr converge to). */
  readonly reals: readonly { endpoint: string; weight: number; share: number }[];
  /** How to read `share` for this scheduler. */
  readonly note: string;
}

const WEIGHTED_EXACTLY = new Set(['rr', 'wrr']);

export function traceIpvs(
  table: IpvsTable,
  packet: { readonly proto: 'tcp' | 'udp' | 'sctp'; readonly dst: string; readonly dport: number },
): IpvsTraceResult | undefined {
  const protocol = packet.proto.toUpperCase() as Protocol;
  const svc = table.get(vsKey({ protocol, address: packet.dst, port: packet.dport }));
  if (!svc) return undefined;
  const reals = [...svc.reals.values()];
  const total = reals.reduce((n, r) => n + r.weight, 0);
  const scheduler = svc.vs.scheduler;
  return {
    virtualServer: vsKey(svc.vs),
    scheduler,
    ...(svc.vs.persistence !== undefined ? { persistenceSeconds: svc.vs.persistence } : {}),
    reals: reals
      .map((r) => ({
        endpoint: joinHostPort(r.address, r.port),
        weight: r.weight,
        share: total > 0 ? Math.round((r.weight / total) * 1e6) / 1e6 : 0,
      }))
      .sort((a, b) => (a.endpoint < b.endpoint ? -1 : a.endpoint > b.endpoint ? 1 : 0)),
    note:
      total === 0
        ? 'every real server has weight 0 (draining): new connections are not scheduled'
        : WEIGHTED_EXACTLY.has(scheduler)
          ? `${scheduler}: new connections are spread by weight`
          : `${scheduler}: the choice depends on live connection state; the share is by weight only`,
  };
}
