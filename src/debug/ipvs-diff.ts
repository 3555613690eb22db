import type { IpvsTable } from '../ipvs/ipvsadm.js';
import type { IpvsDesired } from '../ipvs/plan.js';
import { compareIpvs } from '../ipvs/diff.js';
import { rsKey, splitIPPort, vsKey, type VirtualServer } from '../ipvs/types.js';
import type { IPFamily, Protocol } from '../model/types.js';
import { summaryLine, type FamilyDrift } from '../iptables-rules/compare.js';
import { formatDriftText } from './diff.js';
import { svcplaneOnlySets, type IpvsLayout, type TakeoverChange } from './ipvs-kube-proxy.js';

/**
 * `svcplane diff` in IPVS mode, the pure part: the planner's desired state (virtual/real servers,
 * kube-ipvs0 addresses, ipset members) against the kernel's (ipvsadm -Sn, ipset save, ip address),
 * each difference attributed to the Service port that owns it, plus the iptables diff of the rules
 * around the sets (computed by ./diff.ts). Virtual and real servers are judged by the daemon's own
 * comparison (compareIpvs, src/ipvs/diff.ts): a busy weight-0 TCP real server nobody wants is
 * graceful termination at work ("draining"), not drift; a UDP/SCTP one is drift (the daemon deletes
 * it at once). On a node kube-proxy wrote (./ipvs-kube-proxy.ts),
 * svcplane's own sets and the real servers kube-proxy gives Local-policy frontends without a local
 * endpoint are what svcplane would change on taking over, listed apart from drift.
 */

export interface IpvsKernelView {
  readonly table: IpvsTable;
  readonly ipsets: ReadonlyMap<string, { readonly type: string; readonly members: ReadonlySet<string> }>;
  /** Addresses of this family bound on kube-ipvs0. */
  readonly boundAddresses: readonly string[];
}

export interface IpvsDiffInput {
  readonly family: IPFamily;
  readonly desired: IpvsDesired;
  readonly kernel: IpvsKernelView;
  /** --ipvs-exclude-cidrs: virtual servers there are someone else's. */
  readonly excludeCIDRs: readonly string[];
  /** The iptables diff of this family (renderIpvsRules vs iptables-save). */
  readonly iptables: FamilyDrift;
  /** Who wrote the kernel's rules (default svcplane). */
  readonly layout?: IpvsLayout;
  /** kube-proxy layout: the rule changes set aside while aligning the iptables rules. */
  readonly takeover?: readonly TakeoverChange[];
}

export type IpvsDriftKind =
  | 'vs-missing'
  | 'vs-extra'
  | 'vs-attributes'
  | 'rs-missing'
  | 'rs-extra'
  | 'rs-weight'
  | 'rs-draining'
  | 'address-missing'
  | 'address-extra'
  | 'set-missing'
  | 'set-type'
  | 'member-missing'
  | 'member-extra';

export interface IpvsDriftItem {
  readonly kind: IpvsDriftKind;
  /** One line, human readable. */
  readonly detail: string;
  /** `-t 10.96.0.1:80` when the item is about a virtual server. */
  readonly virtualServer?: string;
  readonly realServer?: string;
  readonly set?: string;
  readonly member?: string;
  readonly address?: string;
}

export interface IpvsDriftGroup {
  /** `ns/name[:port]/PROTO` (a Service port), `ns/name` (the Service, port unknown), `node` or `unknown`. */
  readonly key: string;
  readonly title: string;
  readonly items: readonly IpvsDriftItem[];
}

export interface IpvsDriftSummary {
  /** Services with drift (by port or on their addresses). */
  readonly services: number;
  readonly virtualServers: number;
  readonly realServers: number;
  readonly addresses: number;
  readonly setMembers: number;
  readonly sets: number;
  readonly draining: number;
}

export interface IpvsFamilyDrift {
  readonly family: IPFamily;
  readonly inSync: boolean;
  /** Drift only (draining real servers are in `draining`). */
  readonly groups: readonly IpvsDriftGroup[];
  readonly draining: readonly (IpvsDriftItem & { readonly owner: string })[];
  readonly summary: IpvsDriftSummary;
  readonly iptables: FamilyDrift;
  readonly layout: IpvsLayout;
  /** kube-proxy layout: what svcplane would add or remove on taking the node over (not drift). */
  readonly takeover: readonly TakeoverChange[];
}

/** Who owns what: virtual servers, addresses and real servers → owners (`ns/name[:port]/PROTO`). */
export interface IpvsOwnerIndex {
  readonly byVs: ReadonlyMap<string, string>;
  readonly byAddress: ReadonlyMap<string, ReadonlySet<string>>;
  readonly byReal: ReadonlyMap<string, ReadonlySet<string>>;
  /** `PROTO:port` of virtual servers on node addresses (NodePorts). */
  readonly byNodePort: ReadonlyMap<string, ReadonlySet<string>>;
}

/** `ns/name` of an owner `ns/name[:port]/PROTO`. */
export function ipvsServiceKey(owner: string): string {
  return owner.split('/').slice(0, 2).join('/').replace(/:.*$/, '');
}

export function buildIpvsOwnerIndex(desired: IpvsDesired): IpvsOwnerIndex {
  const byVs = new Map<string, string>();
  const byAddress = new Map<string, Set<string>>();
  const byReal = new Map<string, Set<string>>();
  const byNodePort = new Map<string, Set<string>>();
  const add = (m: Map<string, Set<string>>, k: string, v: string): void => {
    let s = m.get(k);
    if (!s) m.set(k, (s = new Set()));
    s.add(v);
  };
  const bound = new Set(desired.bindAddresses);
  for (const [key, ps] of desired.services) {
    byVs.set(key, ps.owner);
    add(byAddress, ps.vs.address, ps.owner);
    if (!bound.has(ps.vs.address)) add(byNodePort, `${ps.vs.protocol}:${ps.vs.port}`, ps.owner);
    for (const rs of ps.reals) add(byReal, `${ps.vs.protocol}:${rsKey(rs)}`, ps.owner);
  }
  return { byVs, byAddress, byReal, byNodePort };
}

/** One owner when the candidates agree on it, else their common Service, else undefined. */
function single(owners: ReadonlySet<string> | undefined): string | undefined {
  if (!owners || owners.size === 0) return undefined;
  if (owners.size === 1) return [...owners][0];
  const services = new Set([...owners].map(ipvsServiceKey));
  return services.size === 1 ? [...services][0] : undefined;
}

const PROTO_OF: Readonly<Record<string, Protocol>> = { tcp: 'TCP', udp: 'UDP', sctp: 'SCTP' };

/** The owner of an ipset member (`ip,proto:port[,…]`, a bare IP or a port number). */
export function memberOwner(idx: IpvsOwnerIndex, setType: string, member: string): string | undefined {
  const parts = member.split(',');
  const first = parts[0] ?? '';
  const pp = /^(tcp|udp|sctp):(\d+)$/.exec(parts[1] ?? '');
  if (pp) {
    const protocol = PROTO_OF[pp[1] ?? '']!;
    const port = Number(pp[2]);
    const ip = first.replace(/^\[|\]$/g, '');
    // loopBack members are `endpoint,proto:port,endpoint`: the real server names the owner.
    if (parts.length === 3 && parts[2] === first) {
      const rs = splitIPPort(ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`);
      if (rs) return single(idx.byReal.get(`${protocol}:${rsKey(rs)}`));
    }
    const hp = splitIPPort(ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`);
    const owner = hp ? idx.byVs.get(vsKey({ protocol, ...hp })) : undefined;
    return owner ?? single(hp ? idx.byAddress.get(hp.address) : undefined);
  }
  if (setType === 'bitmap:port' && /^\d+$/.test(first)) {
    const owners = new Set<string>();
    for (const [k, o] of idx.byNodePort) if (k.endsWith(`:${first}`)) o.forEach((x) => owners.add(x));
    return single(owners);
  }
  return single(idx.byAddress.get(first));
}

export function diffIpvsState(input: IpvsDiffInput): IpvsFamilyDrift {
  const { family, desired, kernel } = input;
  const idx = buildIpvsOwnerIndex(desired);
  const groups = new Map<string, IpvsDriftItem[]>();
  const draining: (IpvsDriftItem & { owner: string })[] = [];
  const push = (owner: string | undefined, item: IpvsDriftItem): void => {
    const k = owner ?? 'unknown';
    let g = groups.get(k);
    if (!g) groups.set(k, (g = []));
    g.push(item);
  };
  const vsText = (vs: VirtualServer): string => vsKey(vs);
  const kubeProxy = input.layout === 'kube-proxy';
  const takeover: TakeoverChange[] = [...(input.takeover ?? [])];
  const own = svcplaneOnlySets(family);
  const ownSets = new Set([own.noEndpoints, own.noLocalEndpoints]);
  const noLocal = desired.sets.find((s) => s.name === own.noLocalEndpoints)?.members ?? new Set<string>();

  // Virtual and real servers: the daemon's own comparison (ipvs/diff.ts), so drift here is exactly
  // what its next sync changes. Connection counts are not read: a weight-0 TCP real server counts
  // as busy (draining), as in the daemon's first pass.
  const differences = compareIpvs(kernel.table, desired.services, {
    family,
    excludeCIDRs: input.excludeCIDRs,
    connections: new Map(),
  });
  for (const d of differences) {
    if (d.kind === 'vs-extra') {
      // An unwanted port on a Service's address belongs to the Service, not to one of its ports.
      const owner = single(idx.byAddress.get(d.have.vs.address));
      push(owner === undefined ? undefined : ipvsServiceKey(owner), {
        kind: 'vs-extra',
        virtualServer: vsText(d.have.vs),
        detail: `extra virtual server ${vsText(d.have.vs)} (${attrs(d.have.vs)}, ${d.have.reals.size} real server(s))`,
      });
      continue;
    }
    const { want } = d;
    const vs = vsText(want.vs);
    switch (d.kind) {
      case 'vs-missing':
        push(want.owner, {
          kind: 'vs-missing',
          virtualServer: vs,
          detail: `virtual server ${vs} missing (${want.reals.length} real server(s) wanted)`,
        });
        break;
      case 'vs-attributes':
        push(want.owner, {
          kind: 'vs-attributes',
          virtualServer: vs,
          detail: `virtual server ${vs}: kernel has ${attrs(d.have)}, want ${attrs(want.vs)}`,
        });
        break;
      case 'rs-missing':
        push(want.owner, {
          kind: 'rs-missing',
          virtualServer: vs,
          realServer: rsKey(d.rs),
          detail: `virtual server ${vs}: real server ${rsKey(d.rs)} missing (weight ${d.rs.weight})`,
        });
        break;
      case 'rs-weight':
        push(want.owner, {
          kind: 'rs-weight',
          virtualServer: vs,
          realServer: rsKey(d.rs),
          detail: `virtual server ${vs}: real server ${rsKey(d.rs)} has weight ${d.have.weight}, want ${d.rs.weight}`,
        });
        break;
      case 'rs-draining':
        draining.push({
          kind: 'rs-draining',
          virtualServer: vs,
          realServer: rsKey(d.rs),
          detail: `virtual server ${vs}: real server ${rsKey(d.rs)} draining (weight 0, deleted once idle)`,
          owner: want.owner,
        });
        break;
      case 'rs-extra':
      case 'rs-drain': {
        const k = rsKey(d.rs);
        const member = `${want.vs.address},${want.vs.protocol.toLowerCase()}:${want.vs.port}`;
        if (kubeProxy && want.reals.length === 0 && noLocal.has(member)) {
          takeover.push({
            op: 'remove',
            kind: 'real-server',
            where: vs,
            what: k,
            effect: true,
            why: `${want.owner}: Local policy and no local endpoint; kube-proxy sends this traffic to remote endpoints, svcplane drops it (as iptables mode)`,
          });
          break;
        }
        const fate = d.kind === 'rs-drain' ? 'set to weight 0 and drained' : 'deleted';
        push(want.owner, {
          kind: 'rs-extra',
          virtualServer: vs,
          realServer: k,
          detail: `virtual server ${vs}: extra real server ${k} (weight ${d.rs.weight}; ${fate} by the next sync)`,
        });
        break;
      }
    }
  }

  // Addresses on kube-ipvs0.
  const bound = new Set(kernel.boundAddresses);
  const want = new Set(desired.bindAddresses);
  for (const ip of desired.bindAddresses) {
    if (!bound.has(ip)) {
      push(single(idx.byAddress.get(ip)), {
        kind: 'address-missing',
        address: ip,
        detail: `address ${ip} missing from kube-ipvs0`,
      });
    }
  }
  for (const ip of kernel.boundAddresses) {
    if (!want.has(ip)) {
      push('node', { kind: 'address-extra', address: ip, detail: `extra address ${ip} on kube-ipvs0` });
    }
  }

  // ipset members.
  let sets = 0;
  for (const set of desired.sets) {
    const have = kernel.ipsets.get(set.name);
    if (!have && kubeProxy && ownSets.has(set.name)) {
      takeover.push({
        op: 'add',
        kind: 'ipset',
        where: set.name,
        what: `${set.members.size} member(s)`,
        effect: false,
        why: "svcplane's own set (kube-proxy has none); its rules are listed with the rules",
      });
      continue;
    }
    if (!have) {
      sets++;
      push('node', { kind: 'set-missing', set: set.name, detail: `ipset ${set.name} missing` });
      continue;
    }
    if (have.type !== set.type) {
      sets++;
      push('node', {
        kind: 'set-type',
        set: set.name,
        detail: `ipset ${set.name} has type ${have.type}, want ${set.type}`,
      });
    }
    for (const m of [...set.members].sort()) {
      if (have.members.has(m)) continue;
      push(memberOwner(idx, set.type, m) ?? 'node', {
        kind: 'member-missing',
        set: set.name,
        member: m,
        detail: `ipset ${set.name}: member ${m} missing`,
      });
    }
    for (const m of [...have.members].sort()) {
      if (set.members.has(m)) continue;
      push(memberOwner(idx, set.type, m), {
        kind: 'member-extra',
        set: set.name,
        member: m,
        detail: `ipset ${set.name}: extra member ${m}`,
      });
    }
  }

  const out: IpvsDriftGroup[] = [...groups]
    .sort(([a], [b]) => rank(a) - rank(b) || (a < b ? -1 : a > b ? 1 : 0))
    .map(([key, items]) => ({ key, title: ipvsGroupTitle(key), items }));
  const all = out.flatMap((g) => g.items);
  const count = (...kinds: IpvsDriftKind[]): number => all.filter((i) => kinds.includes(i.kind)).length;
  const summary: IpvsDriftSummary = {
    services: new Set(
      out.filter((g) => g.key !== 'node' && g.key !== 'unknown').map((g) => ipvsServiceKey(g.key)),
    ).size,
    virtualServers: count('vs-missing', 'vs-extra', 'vs-attributes'),
    realServers: count('rs-missing', 'rs-extra', 'rs-weight'),
    addresses: count('address-missing', 'address-extra'),
    setMembers: count('member-missing', 'member-extra'),
    sets,
    draining: draining.length,
  };
  return {
    family,
    inSync: all.length === 0 && input.iptables.inSync,
    groups: out,
    draining,
    summary,
    iptables: input.iptables,
    layout: input.layout ?? 'svcplane',
    takeover,
  };
}

function attrs(vs: VirtualServer): string {
  const parts = [`-s ${vs.scheduler}`];
  if (vs.schedFlags.length > 0) parts.push(`-b ${vs.schedFlags.join(',')}`);
  if (vs.persistence !== undefined) parts.push(`-p ${vs.persistence}`);
  return parts.join(' ');
}

function rank(key: string): number {
  return key === 'node' ? 2 : key === 'unknown' ? 1 : 0;
}

export function ipvsGroupTitle(key: string): string {
  if (key === 'node') return 'node (not specific to a Service)';
  if (key === 'unknown') return 'unknown owner (no Service of the current state)';
  const m = /^(.+?)\/(TCP|UDP|SCTP)$/.exec(key);
  return m ? `Service port ${m[1]} (${m[2]})` : `Service ${key} (port unknown)`;
}

// ---- output ----

export function ipvsSummaryLine(r: IpvsFamilyDrift): string {
  const s = r.summary;
  const ipvsDrift = r.groups.length > 0;
  const parts = [
    s.services ? `${s.services} Service(s) drifted` : '',
    s.virtualServers ? `${s.virtualServers} virtual server(s)` : '',
    s.realServers ? `${s.realServers} real server(s)` : '',
    s.addresses ? `${s.addresses} kube-ipvs0 address(es)` : '',
    s.sets ? `${s.sets} ipset(s)` : '',
    s.setMembers ? `${s.setMembers} ipset member(s)` : '',
  ].filter((p) => p !== '');
  const ipvs = ipvsDrift ? `DRIFT: ${parts.join(', ') || 'see above'}` : 'in sync';
  const drain = s.draining ? ` (${s.draining} real server(s) draining)` : '';
  return `ipvs ${ipvs}${drain}; iptables ${summaryLine(r.iptables)}${takeoverSummary(r)}`;
}

function takeoverSummary(r: IpvsFamilyDrift): string {
  if (r.layout !== 'kube-proxy') return '';
  const add = r.takeover.filter((c) => c.op === 'add').length;
  const remove = r.takeover.length - add;
  const effect = r.takeover.filter((c) => c.effect).length;
  return `; written by kube-proxy: svcplane would add ${add} and remove ${remove} item(s) on taking over, ${effect} of them changing packet handling`;
}

/** Per family: IPVS drift by Service port, draining real servers, the iptables diff; then a summary. */
export function formatIpvsDriftText(reports: readonly IpvsFamilyDrift[]): string {
  const out: string[] = [];
  for (const r of reports) {
    for (const g of r.groups) {
      out.push(`=== ${r.family}: ${g.title} ===`);
      for (const i of g.items) out.push(`  ${marker(i.kind)} ${i.detail}`);
      out.push('');
    }
    if (r.draining.length > 0) {
      out.push(`=== ${r.family}: draining (graceful termination, not drift) ===`);
      for (const d of r.draining) out.push(`  ~ ${d.detail} [${d.owner}]`);
      out.push('');
    }
    if (!r.iptables.inSync) {
      const text = formatDriftText([r.iptables]);
      const cut = text.lastIndexOf('Summary:');
      // The iptables rules around the ipsets, in the iptables diff's own layout.
      out.push((cut >= 0 ? text.slice(0, cut) : text).trimEnd(), '');
    }
    if (r.layout === 'kube-proxy') {
      out.push(
        `=== ${r.family}: written by kube-proxy: what svcplane would change on taking over (not drift) ===`,
      );
      for (const c of r.takeover) {
        out.push(
          `  ${c.op === 'add' ? '+' : '-'} ${c.kind} ${c.where}: ${c.what}`,
          `      ${c.effect ? 'changes packet handling' : 'no effect now'}: ${c.why}`,
        );
      }
      if (r.takeover.length === 0) out.push('  nothing');
      out.push('');
    }
  }
  out.push('Summary:');
  for (const r of reports)
    out.push(`  ${r.family}: ${r.inSync ? 'in sync' : 'DRIFT'}: ${ipvsSummaryLine(r)}`);
  return `${out.join('\n')}\n`;
}

/** `-` desired but missing from the kernel, `+` in the kernel but not desired, `!` different. */
function marker(kind: IpvsDriftKind): string {
  if (kind.endsWith('-missing')) return '-';
  if (kind.endsWith('-extra')) return '+';
  return '!';
}
