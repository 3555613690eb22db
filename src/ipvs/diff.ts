import { cidrContains, ipFamilyOf } from '../model/ip.js';
import type { IPFamily } from '../model/types.js';
import { ipvsLine, type IpvsService, type IpvsTable } from './ipvsadm.js';
import type { PlannedService } from './plan.js';
import { rsKey, sameAttributes, type RealServer, type VirtualServer } from './types.js';

/**
 * Desired vs kernel IPVS table, compared once (pure): `compareIpvs` judges every virtual and real
 * server, and both the daemon's repair (`diffIpvs`: one `ipvsadm -R` batch) and `svcplane diff`
 * (src/debug/ipvs-diff.ts) are built on its verdicts, so what the diff prints as drift is exactly
 * what the next sync changes. Unchanged virtual servers get no line at all, so their connections
 * are never disturbed.
 *
 * Graceful termination is derived from the kernel itself instead of an in-memory list (which
 * kube-proxy loses on restart): a TCP real server that is no longer wanted is set to weight 0 and
 * deleted by the first diff that sees it drained (ActiveConn + InActConn = 0); UDP/SCTP ones go at
 * once, whatever their weight. A wanted real server found at a weight other than 1 (a leftover of a
 * previous run, or one that came back while draining) is reset to 1.
 */

export interface IpvsDiffOptions {
  readonly family: IPFamily;
  /** --ipvs-exclude-cidrs: virtual servers in these ranges are never deleted. */
  readonly excludeCIDRs: readonly string[];
  /** Connections per `vsKey|rsKey` (ipvsadm -Ln); missing = unknown, treated as busy. */
  readonly connections: ReadonlyMap<string, number>;
}

/**
 * One verdict of the comparison. Every kind but `rs-draining` is drift: the next sync changes it.
 * - `rs-extra`: an unwanted real server deleted now (UDP/SCTP at any weight, TCP once idle);
 * - `rs-drain`: an unwanted TCP real server still in use at a weight above 0, set to weight 0;
 * - `rs-draining`: an unwanted TCP real server at weight 0 still in use (or its use unknown):
 *   graceful termination at work, left alone until idle.
 */
export type IpvsDifference =
  | { readonly kind: 'vs-missing'; readonly key: string; readonly want: PlannedService }
  | {
      readonly kind: 'vs-attributes';
      readonly key: string;
      readonly want: PlannedService;
      readonly have: VirtualServer;
    }
  | {
      readonly kind: 'rs-missing';
      readonly key: string;
      readonly want: PlannedService;
      readonly rs: RealServer;
    }
  | {
      readonly kind: 'rs-weight';
      readonly key: string;
      readonly want: PlannedService;
      readonly rs: RealServer;
      readonly have: RealServer;
    }
  | {
      readonly kind: 'rs-extra' | 'rs-drain' | 'rs-draining';
      readonly key: string;
      readonly want: PlannedService;
      /** As the kernel holds it. */
      readonly rs: RealServer;
    }
  | { readonly kind: 'vs-extra'; readonly key: string; readonly have: IpvsService };

/** Every difference between the kernel's table and the desired one, in the order a batch applies them. */
export function compareIpvs(
  current: IpvsTable,
  desired: ReadonlyMap<string, PlannedService>,
  opts: IpvsDiffOptions,
): IpvsDifference[] {
  const out: IpvsDifference[] = [];
  for (const [key, want] of desired) {
    const have = current.get(key);
    if (!have) {
      out.push({ kind: 'vs-missing', key, want });
      continue;
    }
    if (!sameAttributes(have.vs, want.vs)) out.push({ kind: 'vs-attributes', key, want, have: have.vs });
    const wanted = new Map(want.reals.map((rs) => [rsKey(rs), rs]));
    for (const [k, rs] of wanted) {
      const old = have.reals.get(k);
      if (!old) out.push({ kind: 'rs-missing', key, want, rs });
      else if (old.weight !== rs.weight) out.push({ kind: 'rs-weight', key, want, rs, have: old });
    }
    for (const [k, old] of have.reals) {
      if (wanted.has(k)) continue;
      const conns = opts.connections.get(`${key}|${k}`);
      const kind =
        want.vs.protocol !== 'TCP' || conns === 0
          ? 'rs-extra'
          : old.weight !== 0
            ? 'rs-drain'
            : 'rs-draining';
      out.push({ kind, key, want, rs: old });
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
    out.push({ kind: 'vs-extra', key, have });
  }
  return out;
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

/** The `ipvsadm -R` batch that repairs every difference `compareIpvs` finds. */
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
  for (const d of compareIpvs(current, desired, opts)) {
    switch (d.kind) {
      case 'vs-missing':
        lines.push(ipvsLine.addService(d.want.vs));
        addedServices++;
        for (const rs of d.want.reals) {
          lines.push(ipvsLine.addReal(d.want.vs, rs));
          addedReals++;
        }
        break;
      case 'vs-attributes':
        lines.push(ipvsLine.editService(d.want.vs));
        editedServices++;
        break;
      case 'rs-missing':
        lines.push(ipvsLine.addReal(d.want.vs, d.rs));
        addedReals++;
        break;
      case 'rs-weight':
        lines.push(ipvsLine.editReal(d.want.vs, d.rs));
        break;
      case 'rs-extra':
        lines.push(ipvsLine.deleteReal(d.want.vs, d.rs));
        deletedReals++;
        break;
      case 'rs-drain':
        lines.push(ipvsLine.editReal(d.want.vs, { ...d.rs, weight: 0 }));
        draining.push({ vs: d.want.vs, rs: { ...d.rs, weight: 0 } });
        break;
      case 'rs-draining':
        draining.push({ vs: d.want.vs, rs: d.rs });
        break;
      case 'vs-extra':
        lines.push(ipvsLine.deleteService(d.have.vs));
        deletedServices++;
        break;
    }
  }
  return { lines, addedServices, editedServices, deletedServices, addedReals, deletedReals, draining };
}
