import type { IPFamily } from '../model/types.js';

/**
 * kube-proxy's IPVS-mode ipsets (pkg/proxy/ipvs/ipset.go) plus svcplane's two gap-closing sets, the
 * parser of `ipset save` and the renderer of one `ipset restore` batch. Pure.
 */

export type SetType = 'hash:ip' | 'hash:ip,port' | 'hash:ip,port,ip' | 'hash:ip,port,net' | 'bitmap:port';

export interface SetDef {
  /** Base name (`KUBE-CLUSTER-IP`); {@link setName} adds the IPv6 prefix. */
  readonly base: string;
  readonly type: SetType;
  readonly comment: string;
}

const def = (base: string, type: SetType, comment: string): SetDef => ({ base, type, comment });

export const SETS = {
  loopBack: def(
    'KUBE-LOOP-BACK',
    'hash:ip,port,ip',
    'Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose',
  ),
  clusterIP: def(
    'KUBE-CLUSTER-IP',
    'hash:ip,port',
    'Kubernetes service cluster ip + port for masquerade purpose',
  ),
  externalIP: def(
    'KUBE-EXTERNAL-IP',
    'hash:ip,port',
    'Kubernetes service external ip + port for masquerade and filter purpose',
  ),
  externalIPLocal: def(
    'KUBE-EXTERNAL-IP-LOCAL',
    'hash:ip,port',
    'Kubernetes service external ip + port with externalTrafficPolicy=local',
  ),
  loadBalancer: def('KUBE-LOAD-BALANCER', 'hash:ip,port', 'Kubernetes service lb portal'),
  loadBalancerLocal: def(
    'KUBE-LOAD-BALANCER-LOCAL',
    'hash:ip,port',
    'Kubernetes service load balancer ip + port with externalTrafficPolicy=local',
  ),
  loadBalancerFW: def(
    'KUBE-LOAD-BALANCER-FW',
    'hash:ip,port',
    'Kubernetes service load balancer ip + port for load balancer with sourceRange',
  ),
  loadBalancerSourceCIDR: def(
    'KUBE-LOAD-BALANCER-SOURCE-CIDR',
    'hash:ip,port,net',
    'Kubernetes service load balancer ip + port + source cidr for packet filter purpose',
  ),
  loadBalancerSourceIP: def(
    'KUBE-LOAD-BALANCER-SOURCE-IP',
    'hash:ip,port,ip',
    'Kubernetes service load balancer ip + port + source IP for packet filter purpose',
  ),
  nodePortTCP: def(
    'KUBE-NODE-PORT-TCP',
    'bitmap:port',
    'Kubernetes nodeport TCP port for masquerade purpose',
  ),
  nodePortLocalTCP: def(
    'KUBE-NODE-PORT-LOCAL-TCP',
    'bitmap:port',
    'Kubernetes nodeport TCP port with externalTrafficPolicy=local',
  ),
  nodePortUDP: def(
    'KUBE-NODE-PORT-UDP',
    'bitmap:port',
    'Kubernetes nodeport UDP port for masquerade purpose',
  ),
  nodePortLocalUDP: def(
    'KUBE-NODE-PORT-LOCAL-UDP',
    'bitmap:port',
    'Kubernetes nodeport UDP port with externalTrafficPolicy=local',
  ),
  nodePortSCTP: def(
    'KUBE-NODE-PORT-SCTP-HASH',
    'hash:ip,port',
    'Kubernetes nodeport SCTP port for masquerade purpose with type of hash ip:port',
  ),
  nodePortLocalSCTP: def(
    'KUBE-NODE-PORT-LOCAL-SCTP-HASH',
    'hash:ip,port',
    'Kubernetes nodeport SCTP port with externalTrafficPolicy=local with type of hash ip:port',
  ),
  healthCheckNodePort: def('KUBE-HEALTH-CHECK-NODE-PORT', 'bitmap:port', 'Kubernetes health check node port'),
  ipvsIPs: def('KUBE-IPVS-IPS', 'hash:ip', 'IPVS service ip'),
  // svcplane: frontends whose service has no usable endpoint at all (REJECT, as iptables mode).
  noEndpoints: def(
    'KUBE-IPVS-NO-ENDPOINTS',
    'hash:ip,port',
    'svcplane: service frontends without endpoints (reject)',
  ),
  // svcplane: Local-policy frontends with endpoints elsewhere but none on this node (DROP, as iptables mode).
  noLocalEndpoints: def(
    'KUBE-IPVS-NO-LOCAL-ENDPOINTS',
    'hash:ip,port',
    'svcplane: Local-policy frontends without local endpoints (drop)',
  ),
} as const satisfies Record<string, SetDef>;

export type SetId = keyof typeof SETS;
export const SET_IDS = Object.keys(SETS) as SetId[];

/** kube-proxy's NewIPSet naming: IPv6 sets get `KUBE-6-` instead of `KUBE-`, cut to 31 characters. */
export function setName(base: string, family: IPFamily): string {
  const name = family === 'IPv6' ? `KUBE-6-${base.slice('KUBE-'.length)}` : base;
  return name.slice(0, 31);
}

/** The `create` line arguments (after the name) for a set. */
export function createArgs(type: SetType, family: IPFamily): string {
  if (type === 'bitmap:port') return 'bitmap:port range 0-65535';
  return `${type} family ${family === 'IPv6' ? 'inet6' : 'inet'} hashsize 1024 maxelem 65536`;
}

/** Canonical member text, as `ipset save` prints it (a /32 or /128 net is printed as a bare IP). */
export function normalizeMember(m: string): string {
  return m.replace(/\/(32|128)$/, '');
}

export interface SavedIpsetEntry {
  /** The member split at commas: `['10.96.0.1', 'tcp:80']`. */
  readonly parts: readonly string[];
  /** `nomatch` (hash:*net* exceptions). */
  readonly nomatch: boolean;
}

export interface SavedIpset {
  readonly name: string;
  /** `hash:ip,port`, `bitmap:port`, … as ipset prints it. */
  readonly type: string;
  /** From `family inet|inet6`; undefined for types without a family (bitmap:port). */
  readonly family?: IPFamily;
  /** hash:ip `netmask N`: members and lookups are masked to this prefix length. */
  readonly netmask?: number;
  readonly entries: readonly SavedIpsetEntry[];
}

export type IpsetView = ReadonlyMap<string, SavedIpset>;

/** Splits one `ipset save` line into words; `"..."` is one word (comments). */
function words(line: string): string[] {
  const out: string[] = [];
  const re = /"((?:[^"\\]|\\.)*)"|(\S+)/g;
  for (let m = re.exec(line); m; m = re.exec(line)) out.push(m[1] ?? m[2] ?? '');
  return out;
}

/**
 * `ipset save` → every set with its members (in the order ipset printed them). Never throws. The one
 * parser of this listing: the IPVS proxier, `svcplane diff`, cleanup and `svcplane trace` read it.
 */
export function parseIpsetSaveText(text: string): Map<string, SavedIpset> {
  const sets = new Map<string, { set: Omit<SavedIpset, 'entries'>; entries: SavedIpsetEntry[] }>();
  for (const raw of text.split('\n')) {
    const w = words(raw.trim());
    if (w[0] === 'create' && w[1] !== undefined && w[2] !== undefined) {
      const opt = (name: string): string | undefined => {
        const at = w.indexOf(name, 3);
        return at >= 0 ? w[at + 1] : undefined;
      };
      const fam = opt('family');
      const netmask = opt('netmask');
      sets.set(w[1], {
        set: {
          name: w[1],
          type: w[2],
          ...(fam === 'inet'
            ? { family: 'IPv4' as const }
            : fam === 'inet6'
              ? { family: 'IPv6' as const }
              : {}),
          ...(netmask !== undefined && /^\d+$/.test(netmask) ? { netmask: Number(netmask) } : {}),
        },
        entries: [],
      });
    } else if (w[0] === 'add' && w[1] !== undefined && w[2] !== undefined) {
      sets.get(w[1])?.entries.push({ parts: w[2].split(','), nomatch: w.includes('nomatch', 3) });
    }
  }
  const out = new Map<string, SavedIpset>();
  for (const [name, { set, entries }] of sets) out.set(name, { ...set, entries });
  return out;
}

/** Set name → type and normalized members: what the proxier and the diff compare. */
export function parseIpsetSave(text: string): Map<string, { type: string; members: Set<string> }> {
  const out = new Map<string, { type: string; members: Set<string> }>();
  for (const [name, set] of parseIpsetSaveText(text)) {
    out.set(name, {
      type: set.type,
      members: new Set(set.entries.map((e) => normalizeMember(e.parts.join(',')))),
    });
  }
  return out;
}

export interface DesiredSet {
  readonly name: string;
  readonly type: SetType;
  readonly members: ReadonlySet<string>;
}

export interface IpsetChange {
  /** `ipset restore -exist` input; '' when nothing changes. */
  readonly input: string;
  readonly added: number;
  readonly deleted: number;
  readonly created: number;
}

/**
 * One restore batch: create missing sets, add missing members, delete extra ones. A set whose type
 * differs (written by something else) is destroyed and re-created — only possible when no rule
 * references it, which the caller's first sync guarantees by writing sets before rules.
 */
export function diffIpsets(
  current: ReadonlyMap<string, { type: string; members: ReadonlySet<string> }>,
  desired: readonly DesiredSet[],
  family: IPFamily,
): IpsetChange {
  const lines: string[] = [];
  let added = 0;
  let deleted = 0;
  let created = 0;
  for (const set of desired) {
    const have = current.get(set.name);
    const fresh = have === undefined || have.type !== set.type;
    if (have !== undefined && fresh) lines.push(`destroy ${set.name}`);
    if (fresh) {
      lines.push(`create ${set.name} ${createArgs(set.type, family)}`);
      created++;
    }
    const existing = fresh ? new Set<string>() : have.members;
    for (const m of [...set.members].sort()) {
      if (!existing.has(m)) {
        lines.push(`add ${set.name} ${m}`);
        added++;
      }
    }
    for (const m of [...existing].sort()) {
      if (!set.members.has(m)) {
        lines.push(`del ${set.name} ${m}`);
        deleted++;
      }
    }
  }
  return { input: lines.length ? `${lines.join('\n')}\n` : '', added, deleted, created };
}
