import { cidrContains, ipFamilyOf } from '../model/ip.js';
import type { IPFamily } from '../model/types.js';
import { ipvsLine, type IpvsTable } from './ipvsadm.js';
import type { PlannedService } from './plan.js';
import { rsKey, sameAttributes, type RealServer, type VirtualServer } from './types.js';

/**
 * Desired vs kernel IPVS table → one `ipvsadm -R` batch. Pure. Unchanged virtual servers get no line
 * at all, so their connections are never disturbed.
 *
 * Graceful termination is derived from the kernel itself instead of an in-memory list (which
 * kube-proxy loses on restart): a TCP real server that is no longer wanted is set to weight 0 and
 * deleted by the first diff that sees it drained (ActiveConn + InActConn = 0); UDP/SCTP ones go at
 * once. A wanted real server found at a weight other than 1 (a leftover of a previous run, or one that
 * came back while draining) is reset to 1.
 */

export interface IpvsDiffOptions {
  readonly family: IPFamily;
  /** --ipvs-exclude-cidrs: virtual servers in these ranges are never deleted. */
  readonly excludeCIDRs: readonly string[];
  /** Connections per `vsKey|rsKey` (ipvsadm -Ln); missing = unknown, treated as busy. */
  readonly connections: ReadonlyMap<string, number>;
}

export interface IpvsChange {
  readonly lines: readonly string[];
  readonly addedServices: number;
  readonly editedServices: number;
  readonly deletedServices: number;
  readonly addedReals: number;
  readonly deletedReals: number;
  /** Real servers left at weight 0 until their connections drain. */
  readonly draining: readonly { vs: VirtualServer; rs: RealServer }[];
}

export function diffIpvs(
  current: IpvsTable,
  desired: ReadonlyMap<string, PlannedService>,
  opts: IpvsDiffOptions,
): IpvsChange {
  const lines: string[] = [];
  const draining: { vs: VirtualServer; rs: RealServer }[] = [];
  let addedServices = 0;
  let editedServices = 0;
  let deletedServices = 0;
  let addedReals = 0;
  let deletedReals = 0;

  for (const [key, want] of desired) {
    const have = current.get(key);
    if (!have) {
      lines.push(ipvsLine.addService(want.vs));
      addedServices++;
      for (const rs of want.reals) {
        lines.push(ipvsLine.addReal(want.vs, rs));
        addedReals++;
      }
      continue;
    }
    if (!sameAttributes(have.vs, want.vs)) {
      lines.push(ipvsLine.editService(want.vs));
      editedServices++;
    }
    const wanted = new Map(want.reals.map((rs) => [rsKey(rs), rs]));
    for (const [k, rs] of wanted) {
      const old = have.reals.get(k);
      if (!old) {
        lines.push(ipvsLine.addReal(want.vs, rs));
        addedReals++;
      } else if (old.weight !== rs.weight) {
        lines.push(ipvsLine.editReal(want.vs, rs));
      }
    }
    for (const [k, old] of have.reals) {
      if (wanted.has(k)) continue;
      const conns = opts.connections.get(`${key}|${k}`);
      if (want.vs.protocol !== 'TCP' || conns === 0) {
        lines.push(ipvsLine.deleteReal(want.vs, old));
        deletedReals++;
      } else {
        if (old.weight !== 0) lines.push(ipvsLine.editReal(want.vs, { ...old, weight: 0 }));
        draining.push({ vs: want.vs, rs: { ...old, weight: 0 } });
      }
    }
  }

  for (const [key, have] of current) {
    if (desired.has(key)) continue;
    const ip = have.vs.address;
    if (ipFamilyOf(ip) !== opts.family) continue;
    if (
      opts.excludeCIDRs.some((c) => ipFamilyOf(c.split('/')[0] ?? '') === opts.family && cidrContains(c, ip))
    ) {
      continue;
    }
    lines.push(ipvsLine.deleteService(have.vs));
    deletedServices++;
  }
  return { lines, addedServices, editedServices, deletedServices, addedReals, deletedReals, draining };
}
