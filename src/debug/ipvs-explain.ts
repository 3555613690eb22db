import { SETS, setName } from '../ipvs/ipset.js';
import { parseIpvsadmList } from '../ipvs/ipvsadm.js';
import type { IpvsDesired } from '../ipvs/plan.js';
import { rsKey, type VirtualServer } from '../ipvs/types.js';
import type { IPFamily } from '../model/types.js';
import {
  buildIpvsOwnerIndex,
  ipvsServiceKey,
  memberOwner,
  type IpvsFamilyDrift,
  type IpvsKernelView,
} from './ipvs-diff.js';

/**
 * `svcplane explain` in IPVS mode, the pure part: a Service's virtual servers (desired and in the
 * kernel) with their real servers, weights and connection counters (`ipvsadm -Ln`), persistence,
 * its ipset entries, and what looks wrong (no endpoints, no local endpoints, drift).
 */

export interface IpvsExplainReal {
  readonly realServer: string;
  /** ok, missing (wanted, not in the kernel), extra (in the kernel, unwanted), draining (weight 0, unwanted), weight (differs). */
  readonly status: 'ok' | 'missing' | 'extra' | 'draining' | 'weight';
  readonly weight?: number;
  readonly wantWeight?: number;
  readonly active?: number;
  readonly inactive?: number;
}

export interface IpvsExplainVs {
  readonly virtualServer: string;
  readonly owner: string;
  readonly inKernel: boolean;
  readonly wanted: boolean;
  readonly scheduler: string;
  readonly persistenceSeconds?: number;
  readonly reals: readonly IpvsExplainReal[];
}

export interface IpvsExplainFamily {
  readonly family: IPFamily;
  readonly virtualServers: readonly IpvsExplainVs[];
  readonly ipsets: readonly { set: string; member: string; present: boolean; wanted: boolean }[];
  readonly addresses: readonly { address: string; bound: boolean }[];
}

export interface IpvsExplainInput {
  readonly key: string;
  readonly families: readonly {
    readonly family: IPFamily;
    readonly desired: IpvsDesired;
    readonly kernel: IpvsKernelView;
    readonly listing: string;
    readonly drift: IpvsFamilyDrift;
  }[];
}

export interface IpvsExplainResult {
  readonly families: readonly IpvsExplainFamily[];
  readonly warnings: readonly string[];
}

export function explainIpvs(input: IpvsExplainInput): IpvsExplainResult {
  const warnings: string[] = [];
  const families: IpvsExplainFamily[] = [];
  const mine = (owner: string | undefined): boolean =>
    owner !== undefined && ipvsServiceKey(owner) === input.key;
  for (const f of input.families) {
    const idx = buildIpvsOwnerIndex(f.desired);
    const conns = parseIpvsadmList(f.listing);
    const vss: IpvsExplainVs[] = [];
    const keys = new Set<string>();
    for (const [k, ps] of f.desired.services) if (mine(ps.owner)) keys.add(k);
    // Kernel virtual servers on this Service's addresses that nobody wants (drift).
    for (const [k, have] of f.kernel.table) {
      const owners = idx.byAddress.get(have.vs.address);
      if (!f.desired.services.has(k) && owners && [...owners].some(mine)) keys.add(k);
    }
    for (const k of [...keys].sort()) {
      const want = f.desired.services.get(k);
      const have = f.kernel.table.get(k);
      const vs: VirtualServer = (have?.vs ?? want?.vs)!;
      const reals: IpvsExplainReal[] = [];
      const wanted = new Map((want?.reals ?? []).map((r) => [rsKey(r), r]));
      const names = new Set([...wanted.keys(), ...(have ? [...have.reals.keys()] : [])]);
      for (const rk of [...names].sort()) {
        const w = wanted.get(rk);
        const h = have?.reals.get(rk);
        const c = conns.get(`${k}|${rk}`);
        const status: IpvsExplainReal['status'] = !h
          ? 'missing'
          : !w
            ? h.weight === 0
              ? 'draining'
              : 'extra'
            : h.weight !== w.weight
              ? 'weight'
              : 'ok';
        reals.push({
          realServer: rk,
          status,
          ...(h ? { weight: h.weight } : {}),
          ...(w ? { wantWeight: w.weight } : {}),
          ...(c ? { active: c.active, inactive: c.inactive } : {}),
        });
      }
      vss.push({
        virtualServer: k,
        owner: want?.owner ?? 'unknown (not desired)',
        inKernel: have !== undefined,
        wanted: want !== undefined,
        scheduler: vs.scheduler,
        ...(vs.persistence !== undefined ? { persistenceSeconds: vs.persistence } : {}),
        reals,
      });
    }
    const ipsets: { set: string; member: string; present: boolean; wanted: boolean }[] = [];
    for (const set of f.desired.sets) {
      const have = f.kernel.ipsets.get(set.name)?.members ?? new Set<string>();
      for (const m of [...new Set([...set.members, ...have])].sort()) {
        if (!mine(memberOwner(idx, set.type, m))) continue;
        ipsets.push({ set: set.name, member: m, present: have.has(m), wanted: set.members.has(m) });
      }
    }
    const bound = new Set(f.kernel.boundAddresses);
    const addrs = f.desired.bindAddresses
      .filter((ip) => [...(idx.byAddress.get(ip) ?? [])].some(mine))
      .map((address) => ({ address, bound: bound.has(address) }));
    families.push({ family: f.family, virtualServers: vss, ipsets, addresses: addrs });

    // Warnings: frontends in the no-endpoint sets (rejected / dropped), then this Service's drift.
    const noEp = setName(SETS.noEndpoints.base, f.family);
    const noLocal = setName(SETS.noLocalEndpoints.base, f.family);
    for (const e of ipsets.filter((x) => x.wanted)) {
      if (e.set === noEp) warnings.push(`${f.family}: ${e.member}: no endpoints (traffic is rejected)`);
      if (e.set === noLocal) {
        warnings.push(
          `${f.family}: ${e.member}: no local endpoints for a Local traffic policy (traffic is dropped)`,
        );
      }
    }
    for (const g of f.drift.groups) {
      const gk = g.key === 'node' || g.key === 'unknown' ? undefined : g.key;
      if (!mine(gk)) continue;
      for (const i of g.items) warnings.push(`${f.family}: drift: ${i.detail}`);
    }
    if (!f.drift.iptables.inSync) {
      warnings.push(`${f.family}: the node's iptables rules differ from the plan (see svcplane diff)`);
    }
  }
  return { families, warnings };
}

export function formatIpvsExplainLines(r: IpvsExplainResult): string[] {
  const out: string[] = [];
  for (const f of r.families) {
    out.push('', `IPVS [${f.family}]:`);
    if (f.virtualServers.length === 0) out.push('  (no virtual servers)');
    for (const v of f.virtualServers) {
      const flags = [
        `scheduler ${v.scheduler}`,
        v.persistenceSeconds !== undefined ? `persistent ${v.persistenceSeconds}s` : '',
        !v.inKernel ? 'MISSING from the kernel' : '',
        !v.wanted ? 'EXTRA (not desired)' : '',
      ].filter((x) => x !== '');
      out.push(`  Virtual server ${v.virtualServer} (${v.owner}): ${flags.join(', ')}`);
      if (v.reals.length === 0) out.push('    (no real servers)');
      else
        out.push(
          `    ${'real server'.padEnd(28)} ${'weight'.padEnd(8)} ${'active'.padEnd(8)} ${'inactive'.padEnd(8)} status`,
        );
      for (const rs of v.reals) {
        out.push(
          `    ${rs.realServer.padEnd(28)} ${String(rs.weight ?? '-').padEnd(8)} ${String(rs.active ?? '-').padEnd(8)} ${String(rs.inactive ?? '-').padEnd(8)} ${rs.status}${rs.status === 'weight' ? ` (want ${rs.wantWeight})` : ''}`,
        );
      }
    }
    if (f.addresses.length > 0) {
      out.push(
        `  kube-ipvs0 addresses: ${f.addresses.map((a) => `${a.address}${a.bound ? '' : ' (MISSING)'}`).join(', ')}`,
      );
    }
    out.push('  ipset entries:');
    if (f.ipsets.length === 0) out.push('    (none)');
    for (const e of f.ipsets) {
      const st = e.present && e.wanted ? '' : e.wanted ? ' (MISSING)' : ' (EXTRA)';
      out.push(`    ${e.set.padEnd(32)} ${e.member}${st}`);
    }
  }
  return out;
}
