import { createHash } from 'node:crypto';
import type { IPFamily, Protocol } from '../model/types.js';
import type { SetElementsDiff } from './plan-diff.js';
import {
  type AddressPort,
  isolatedSetName,
  localSetName,
  type PlanRule,
  type PlanSet,
  type PolicyPlan,
  type PortRange,
  ruleKey,
} from './plan.js';
import type { Direction } from './pod-index.js';

/**
 * The policy plan as nftables text for `nft -f`: one table of svcplane's own, `inet svcplane-netpol`,
 * which no proxy mode, CNI or kube-proxy writes (its own hooks, its own sets). Pure: strings in,
 * strings out; src/netpol/enforcer.ts hands them to nft through src/util/exec.
 *
 * Layout (docs/network-policy.md):
 * - every plan set as an nft set (addresses, interval sets for networks and port ranges, a
 *   concatenation `address . protocol . port` for named ports), plus `self-v4/6` (`addr . addr` of each
 *   local pod: a pod reaching itself through a Service hairpin is always allowed);
 * - base chains on `forward` (pod traffic, bridged through br_netfilter or routed, after DNAT) and
 *   `input` (pod → node, egress only): established/related accepted, IPv6 neighbour discovery
 *   accepted, then an isolated source jumps to `egress-v4/6` and an isolated destination to
 *   `ingress-v4/6`; each plan rule there `return`s on a match, and the chain ends in a counted reject.
 *   Both checks must pass: a `return` from egress continues to the ingress check.
 * - The node's own traffic (kubelet probes) leaves through `output`, which this table does not hook:
 *   the node reaching its pods is always allowed; replies to it are established.
 */

export const NETPOL_TABLE = 'svcplane-netpol';
export const NETPOL_FAMILY = 'inet';

const DIGIT: Readonly<Record<IPFamily, string>> = { IPv4: '4', IPv6: '6' };
const ADDR_TYPE: Readonly<Record<IPFamily, string>> = { IPv4: 'ipv4_addr', IPv6: 'ipv6_addr' };
const L3: Readonly<Record<IPFamily, string>> = { IPv4: 'ip', IPv6: 'ip6' };
const PROTO: Readonly<Record<Protocol, string>> = { TCP: 'tcp', UDP: 'udp', SCTP: 'sctp' };

export function selfSetName(family: IPFamily): string {
  return `self-v${DIGIT[family]}`;
}
export function directionChain(direction: Direction, family: IPFamily): string {
  return `${direction}-v${DIGIT[family]}`;
}

/** Priority of the base chains: just before the filter tables (kube-proxy's, a CNI's): a drop here is final. */
export const BASE_PRIORITY = 'filter - 5';

/** nft names: what plan.ts derives (letters, digits, '-'); anything else never reaches a rule. */
const NAME = /^[a-z][a-z0-9-]{0,62}$/;
function name(n: string): string {
  if (!NAME.test(n)) throw new Error(`netpol: refusing nft name ${JSON.stringify(n)}`);
  return n;
}

/** A rule's comment: the hash of its identity (drift and diff read it back) and the policy it comes from. */
export function ruleTag(r: PlanRule): string {
  return createHash('sha256').update(ruleKey(r)).digest('hex').slice(0, 16);
}
export function ruleComment(r: PlanRule): string {
  // Policy names are DNS labels/subdomains (validated by the model): no quote can reach the comment.
  const text = `${ruleTag(r)} ${r.policy} ${r.direction}[${r.rule}]`;
  return text.length > 120 ? text.slice(0, 120) : text;
}

function setType(set: PlanSet): { type: string; interval: boolean } {
  switch (set.kind) {
    case 'addresses':
      return { type: ADDR_TYPE[set.family], interval: false };
    case 'networks':
      return { type: ADDR_TYPE[set.family], interval: true };
    case 'ports':
      return { type: 'inet_proto . inet_service', interval: true };
    case 'address-ports':
      return { type: `${ADDR_TYPE[set.family]} . inet_proto . inet_service`, interval: false };
  }
}

function portRangeElement(p: PortRange): string {
  return `${PROTO[p.protocol]} . ${p.first === p.last ? p.first : `${p.first}-${p.last}`}`;
}
function addressPortElement(e: AddressPort): string {
  return `${e.address} . ${PROTO[e.protocol]} . ${e.port}`;
}

/** The set's elements as nft writes them (addresses and CIDRs were validated by the model). */
export function setElements(set: PlanSet): string[] {
  switch (set.kind) {
    case 'addresses':
    case 'networks':
      return [...set.elements];
    case 'ports':
      return set.elements.map(portRangeElement);
    case 'address-ports':
      return set.elements.map(addressPortElement);
  }
}

const PROTOCOL_OF: Readonly<Record<string, Protocol>> = { TCP: 'TCP', UDP: 'UDP', SCTP: 'SCTP' };

/** An element key of plan-diff (elementKeys) as an nft element of a set of that kind. */
export function elementOfKey(kind: PlanSet['kind'], key: string): string {
  if (kind === 'addresses' || kind === 'networks') return key;
  if (kind === 'ports') {
    const m = /^([A-Z]+):(\d+)-(\d+)$/.exec(key);
    const protocol = m && PROTOCOL_OF[m[1]!];
    if (!m || !protocol) throw new Error(`netpol: not a port range key: ${key}`);
    return portRangeElement({ protocol, first: Number(m[2]), last: Number(m[3]) });
  }
  const m = /^(.+),([A-Z]+):(\d+)$/.exec(key);
  const protocol = m && PROTOCOL_OF[m[2]!];
  if (!m || !protocol) throw new Error(`netpol: not an address-port key: ${key}`);
  return addressPortElement({ address: m[1]!, protocol, port: Number(m[3]) });
}

/** At most this many elements per `add element` line: keeps each line (and nft's parser) small. */
const ELEMENTS_PER_LINE = 1000;

function elementLines(verb: 'add' | 'delete', set: string, elements: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < elements.length; i += ELEMENTS_PER_LINE) {
    const chunk = elements.slice(i, i + ELEMENTS_PER_LINE);
    out.push(`${verb} element ${NETPOL_FAMILY} ${NETPOL_TABLE} ${name(set)} { ${chunk.join(', ')} }`);
  }
  return out;
}

/** The plan's sets plus the derived self sets, with their elements as nft writes them. */
export interface RenderedSet {
  readonly name: string;
  readonly type: string;
  readonly interval: boolean;
  readonly elements: readonly string[];
}

export function renderedSets(plan: PolicyPlan): RenderedSet[] {
  const out: RenderedSet[] = [];
  for (const set of plan.sets.values()) {
    out.push({ name: set.name, ...setType(set), elements: setElements(set) });
  }
  for (const family of plan.families) {
    const local = plan.sets.get(localSetName(family));
    const addrs = local?.kind === 'addresses' ? local.elements : [];
    out.push({
      name: selfSetName(family),
      type: `${ADDR_TYPE[family]} . ${ADDR_TYPE[family]}`,
      interval: false,
      elements: addrs.map((a) => `${a} . ${a}`),
    });
  }
  return out;
}

/** One plan rule as the body of an nft rule in its direction chain (ends in `return`). */
export function ruleBody(r: PlanRule): string {
  const l3 = L3[r.family];
  const local = r.direction === 'ingress' ? 'daddr' : 'saddr';
  const other = r.direction === 'ingress' ? 'saddr' : 'daddr';
  const parts = [`${l3} ${local} @${name(r.targets)}`];
  if (r.peer !== undefined) parts.push(`${l3} ${other} @${name(r.peer)}`);
  if (r.ports?.kind === 'ports') parts.push(`meta l4proto . th dport @${name(r.ports.set)}`);
  else if (r.ports?.kind === 'named')
    parts.push(`${l3} daddr . meta l4proto . th dport @${name(r.ports.set)}`);
  return `${parts.join(' ')} return comment "${ruleComment(r)}"`;
}

/**
 * What ends a direction chain: nothing allowed the packet. Rejected, not dropped, so a client fails
 * at once (as kube-router and Antrea's reject do): TCP with a reset (ICMP errors are rate-limited per
 * destination, ~1/s after a burst of 6), everything else with ICMP administratively prohibited.
 */
export const DENY: readonly string[] = [
  'meta l4proto tcp counter reject with tcp reset',
  'counter reject with icmpx admin-prohibited',
];

const ND_TYPES =
  'icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, nd-router-advert, nd-redirect }';

function baseChain(hook: 'forward' | 'input', families: readonly IPFamily[]): string[] {
  const lines = [
    `  chain ${hook} {`,
    `    type filter hook ${hook} priority ${BASE_PRIORITY}; policy accept;`,
    '    ct state established,related accept',
  ];
  if (families.includes('IPv6')) lines.push(`    meta l4proto ipv6-icmp ${ND_TYPES} accept`);
  if (hook === 'forward') {
    for (const f of families) lines.push(`    ${L3[f]} saddr . ${L3[f]} daddr @${selfSetName(f)} accept`);
  }
  for (const f of families) {
    lines.push(`    ${L3[f]} saddr @${isolatedSetName('egress', f)} jump ${directionChain('egress', f)}`);
  }
  // Ingress is about this node's pods as destinations: never the node itself (input).
  if (hook === 'forward') {
    for (const f of families) {
      lines.push(`    ${L3[f]} daddr @${isolatedSetName('ingress', f)} jump ${directionChain('ingress', f)}`);
    }
  }
  lines.push('  }');
  return lines;
}

/**
 * The whole table, replacing whatever is there in one transaction (`add table` makes the `delete`
 * safe when it is absent): no moment without rules, no moment with half of them.
 */
export function renderTable(plan: PolicyPlan): string {
  const t = `${NETPOL_FAMILY} ${NETPOL_TABLE}`;
  const lines = [`add table ${t}`, `delete table ${t}`, `table ${t} {`];
  const sets = renderedSets(plan);
  for (const s of sets) {
    lines.push(`  set ${name(s.name)} {`, `    type ${s.type}`);
    if (s.interval) lines.push('    flags interval');
    lines.push('  }');
  }
  for (const family of plan.families) {
    for (const direction of ['egress', 'ingress'] as const) {
      lines.push(`  chain ${directionChain(direction, family)} {`);
      for (const r of plan.rules) {
        if (r.family === family && r.direction === direction) lines.push(`    ${ruleBody(r)}`);
      }
      lines.push(...DENY.map((d) => `    ${d}`), '  }');
    }
  }
  lines.push(...baseChain('forward', plan.families), ...baseChain('input', plan.families), '}');
  // Elements after the declarations, in bounded lines (a 10k-element set is one long line otherwise).
  for (const s of sets) lines.push(...elementLines('add', s.name, s.elements));
  return `${lines.join('\n')}\n`;
}

/**
 * Element changes only (no set or rule created or removed: `diffPlans(..).structural` is false), in
 * one transaction: adds before deletes does not matter inside it, the kernel applies all or nothing.
 * `kinds` gives each changed set's kind (from the new plan).
 */
export function renderElementChanges(
  plan: PolicyPlan,
  changes: readonly SetElementsDiff[],
): { text: string; lines: number } {
  const lines: string[] = [];
  const self = new Map<IPFamily, { added: string[]; removed: string[] }>();
  for (const c of changes) {
    const set = plan.sets.get(c.set);
    if (!set) throw new Error(`netpol: element change for unknown set ${c.set}`);
    lines.push(
      ...elementLines(
        'delete',
        c.set,
        c.removed.map((k) => elementOfKey(set.kind, k)),
      ),
    );
    lines.push(
      ...elementLines(
        'add',
        c.set,
        c.added.map((k) => elementOfKey(set.kind, k)),
      ),
    );
    for (const family of plan.families) {
      if (c.set !== localSetName(family)) continue;
      self.set(family, {
        added: c.added.map((a) => `${a} . ${a}`),
        removed: c.removed.map((a) => `${a} . ${a}`),
      });
    }
  }
  for (const [family, d] of self) {
    lines.push(...elementLines('delete', selfSetName(family), d.removed));
    lines.push(...elementLines('add', selfSetName(family), d.added));
  }
  return { text: lines.length > 0 ? `${lines.join('\n')}\n` : '', lines: lines.length };
}

/** `svcplane cleanup`: removes the table (absent is fine: `add` first). */
export function renderCleanup(): string {
  const t = `${NETPOL_FAMILY} ${NETPOL_TABLE}`;
  return `add table ${t}\ndelete table ${t}\n`;
}
