import type { IPFamily } from '../model/types.js';
import {
  CLUSTER_IPS_CHECK,
  CLUSTER_IPS_SET,
  ELEMENT_CONTAINERS,
  FILTER_FORWARD,
  FILTER_INPUT,
  FILTER_OUTPUT,
  FILTER_OUTPUT_POST_DNAT,
  FILTER_PREROUTING,
  FIREWALL_CHECK,
  FIREWALL_IPS_MAP,
  MARK_MASQ_CHAIN,
  MASQUERADING_CHAIN,
  nftFamily,
  NAT_OUTPUT,
  NAT_POSTROUTING,
  NAT_PREROUTING,
  NO_ENDPOINT_NODEPORTS_MAP,
  NO_ENDPOINT_SERVICES_MAP,
  NODEPORT_ENDPOINTS_CHECK,
  NODEPORT_IPS_SET,
  REJECT_CHAIN,
  SERVICE_ENDPOINTS_CHECK,
  SERVICE_IPS_MAP,
  SERVICE_NODEPORTS_MAP,
  SERVICES_CHAIN,
  TABLE,
  type ElementContainer,
} from './names.js';
import type { CheckedNftConfig, NftElement, NftRenderConfig, ServiceRules } from './render.js';

/**
 * `nft -f` transactions from rendered Services (pure): kube-proxy's full sync (setupNFTables plus
 * every Service, map and set contents reset), written as several bounded transactions in
 * dependency order, and its partial sync (only the chains of changed Services, map/set elements
 * diffed against what was written, stale chains flushed now and deleted at least a second later).
 * Each builder also says what the table holds once its transactions are committed (`WrittenModel`),
 * which drift detection compares with the kernel's listing.
 */

/** What svcplane's transactions left in the table (for partial syncs and drift detection). */
export interface WrittenModel {
  /** Every chain we created, with how many rules we put in it. */
  readonly chains: Map<string, number>;
  /** Affinity sets (name → timeout seconds). */
  readonly affinitySets: Map<string, number>;
  /** Map/set elements: container → key → `value` (+ ` comment "…"`). */
  readonly elements: Map<ElementContainer, Map<string, string>>;
}

export function emptyModel(): WrittenModel {
  return {
    chains: new Map(),
    affinitySets: new Map(),
    elements: new Map(ELEMENT_CONTAINERS.map((c) => [c, new Map<string, string>()])),
  };
}

/** An element's stored form: its value, and its comment when it has one. */
export function elementValue(value: string, comment: string | undefined): string {
  return comment === undefined ? value : `${value} comment "${comment}"`;
}

interface BaseChain {
  readonly name: string;
  readonly type: 'filter' | 'nat';
  readonly hook: string;
  /** Numeric: nft 1.0.6 accepts `dstnat` by name only in prerouting. dstnat = -100, srcnat = 100. */
  readonly priority: number;
}

/** kube-proxy's nftablesBaseChains (filter chains before DNAT; one filter chain after it). */
export const BASE_CHAINS: readonly BaseChain[] = [
  { name: FILTER_PREROUTING, type: 'filter', hook: 'prerouting', priority: -110 },
  { name: FILTER_INPUT, type: 'filter', hook: 'input', priority: -110 },
  { name: FILTER_FORWARD, type: 'filter', hook: 'forward', priority: -110 },
  { name: FILTER_OUTPUT, type: 'filter', hook: 'output', priority: -110 },
  { name: FILTER_OUTPUT_POST_DNAT, type: 'filter', hook: 'output', priority: -90 },
  { name: NAT_PREROUTING, type: 'nat', hook: 'prerouting', priority: -100 },
  { name: NAT_OUTPUT, type: 'nat', hook: 'output', priority: -100 },
  { name: NAT_POSTROUTING, type: 'nat', hook: 'postrouting', priority: 100 },
];

/** kube-proxy's nftablesJumpChains: [to, from, match]. */
export const JUMP_CHAINS: readonly (readonly [string, string, string])[] = [
  // reject is only valid in input/forward/output hooks (kernels before 5.9).
  [NODEPORT_ENDPOINTS_CHECK, FILTER_INPUT, 'ct state new'],
  [SERVICE_ENDPOINTS_CHECK, FILTER_INPUT, 'ct state new'],
  [SERVICE_ENDPOINTS_CHECK, FILTER_FORWARD, 'ct state new'],
  [SERVICE_ENDPOINTS_CHECK, FILTER_OUTPUT, 'ct state new'],
  [FIREWALL_CHECK, FILTER_PREROUTING, 'ct state new'],
  [FIREWALL_CHECK, FILTER_OUTPUT, 'ct state new'],
  [SERVICES_CHAIN, NAT_OUTPUT, ''],
  [SERVICES_CHAIN, NAT_PREROUTING, ''],
  [MASQUERADING_CHAIN, NAT_POSTROUTING, ''],
  [CLUSTER_IPS_CHECK, FILTER_FORWARD, 'ct state new'],
  [CLUSTER_IPS_CHECK, FILTER_OUTPUT_POST_DNAT, 'ct state new'],
];

const isMap = (c: ElementContainer): boolean => c !== CLUSTER_IPS_SET;

/**
 * Writes commands and tracks what they leave in the table. A full sync builds its model from
 * nothing; a partial sync records its changes and applies them once the kernel took the transaction.
 */
class Tx {
  readonly lines: string[] = [];
  private readonly ops: ((m: WrittenModel) => void)[] = [];
  private readonly t: string;

  constructor(
    family: IPFamily,
    /** Full syncs write into a fresh model directly (no closure per command at 10k Services). */
    private readonly fresh: WrittenModel | undefined,
  ) {
    this.t = `${nftFamily(family)} ${TABLE}`;
  }

  private change(fn: (m: WrittenModel) => void): void {
    if (this.fresh !== undefined) fn(this.fresh);
    else this.ops.push(fn);
  }

  apply(model: WrittenModel): void {
    for (const op of this.ops) op(model);
  }

  raw(line: string): void {
    this.lines.push(line);
  }

  addChain(name: string, spec = ''): void {
    this.lines.push(`add chain ${this.t} ${name}${spec === '' ? '' : ` { ${spec} }`}`);
    this.change((m) => {
      if (!m.chains.has(name)) m.chains.set(name, 0);
    });
  }

  flushChain(name: string): void {
    this.lines.push(`flush chain ${this.t} ${name}`);
    this.change((m) => m.chains.set(name, 0));
  }

  /** kube-proxy's ensureChain: create it, empty it. */
  ensureChain(name: string, spec = ''): void {
    this.addChain(name, spec);
    this.flushChain(name);
  }

  deleteChain(name: string): void {
    this.lines.push(`delete chain ${this.t} ${name}`);
    this.change((m) => m.chains.delete(name));
  }

  rule(chain: string, rule: string): void {
    this.lines.push(`add rule ${this.t} ${chain} ${rule}`);
    this.change((m) => m.chains.set(chain, (m.chains.get(chain) ?? 0) + 1));
  }

  declare(kind: 'set' | 'map', name: string, spec: string): void {
    this.lines.push(`add ${kind} ${this.t} ${name} { ${spec} }`);
  }

  flushContainer(c: ElementContainer): void {
    this.lines.push(`flush ${isMap(c) ? 'map' : 'set'} ${this.t} ${c}`);
    this.change((m) => m.elements.get(c)!.clear());
  }

  addAffinitySet(name: string, addrType: string, timeout: number): void {
    // "dynamic": the kernel adds it anyway once `update` rules use the set, and re-adding a set
    // without it would then look like a flags change (kube-proxy's comment on RHEL 8).
    this.lines.push(
      `add set ${this.t} ${name} { type ${addrType} ; flags dynamic,timeout ; timeout ${timeout}s ; }`,
    );
    this.change((m) => m.affinitySets.set(name, timeout));
  }

  deleteSet(name: string): void {
    this.lines.push(`delete set ${this.t} ${name}`);
    this.change((m) => m.affinitySets.delete(name));
  }

  addElement(e: NftElement): void {
    const comment = e.comment === undefined ? '' : ` comment "${e.comment}"`;
    const value = isMap(e.container) ? ` : ${e.value}` : '';
    this.lines.push(`add element ${this.t} ${e.container} { ${e.key}${comment}${value} }`);
    const stored = elementValue(e.value, e.comment);
    this.change((m) => m.elements.get(e.container)!.set(e.key, stored));
  }

  deleteElement(container: ElementContainer, key: string): void {
    this.lines.push(`delete element ${this.t} ${container} { ${key} }`);
    this.change((m) => m.elements.get(container)!.delete(key));
  }
}

export interface PartialTransaction {
  /** `nft -f` input, one command per line. */
  readonly lines: readonly string[];
  /** Service chains flushed by this transaction, to delete at least a second later. */
  readonly staleChains: readonly string[];
  /** Services whose chains were (re)written. */
  readonly writtenServices: number;
  /** Applies the transaction's changes to the model of the table (after the kernel took it). */
  apply(model: WrittenModel): void;
}

/** kube-proxy's setupNFTables: the table, base chains, jumps, fixed chains, maps and sets. */
function writeSetup(tx: Tx, config: NftRenderConfig, c: CheckedNftConfig, recreateBaseChains: boolean): void {
  const { ipX, addrType } = c;
  const noLocalhost = c.v6 ? 'ip6 daddr != ::1' : 'ip daddr != 127.0.0.0/8';
  tx.raw(`add table ${nftFamily(config.family)} ${TABLE} { comment "rules for kube-proxy" ; }`);
  if (recreateBaseChains) {
    // Once per process: base chains are recreated, so a changed priority (another version's
    // layout) cannot fail the transaction. Atomic: nothing stops serving.
    for (const bc of BASE_CHAINS) {
      tx.addChain(bc.name);
      tx.deleteChain(bc.name);
    }
  }
  for (const bc of BASE_CHAINS) {
    tx.ensureChain(bc.name, `type ${bc.type} hook ${bc.hook} priority ${bc.priority} ;`);
  }
  const created = new Set<string>();
  const ensure = (name: string): void => {
    if (created.has(name)) return;
    created.add(name);
    tx.ensureChain(name);
  };
  for (const [to, from, match] of JUMP_CHAINS) {
    ensure(to);
    tx.rule(from, `${match === '' ? '' : `${match} `}jump ${to}`);
  }
  for (const name of [SERVICES_CHAIN, CLUSTER_IPS_CHECK, MASQUERADING_CHAIN, MARK_MASQ_CHAIN]) ensure(name);

  tx.rule(MARK_MASQ_CHAIN, `mark set mark or ${c.mark}`);
  tx.rule(MASQUERADING_CHAIN, `mark and ${c.mark} == 0 return`);
  tx.rule(MASQUERADING_CHAIN, `mark set mark xor ${c.mark}`);
  tx.rule(MASQUERADING_CHAIN, 'masquerade fully-random');

  tx.declare('set', CLUSTER_IPS_SET, `type ${addrType} ; comment "Active ClusterIPs" ;`);
  tx.rule(
    CLUSTER_IPS_CHECK,
    `${ipX} daddr @${CLUSTER_IPS_SET} reject comment "Reject traffic to invalid ports of ClusterIPs"`,
  );
  const cidrs = config.serviceCIDRs ?? [];
  if (cidrs.length > 0) {
    tx.rule(
      CLUSTER_IPS_CHECK,
      `${ipX} daddr { ${cidrs.join(', ')} } drop comment "Drop traffic to unallocated ClusterIPs"`,
    );
  }

  tx.declare('set', NODEPORT_IPS_SET, `type ${addrType} ; comment "IPs that accept NodePort traffic" ;`);
  const np = config.nodePortAddresses;
  if (np.matchAll) tx.raw(`delete set ${nftFamily(config.family)} ${TABLE} ${NODEPORT_IPS_SET}`);
  else {
    tx.raw(`flush set ${nftFamily(config.family)} ${TABLE} ${NODEPORT_IPS_SET}`);
    // Localhost NodePorts are not supported in nftables mode (as in kube-proxy).
    const ips = np.addresses.filter((ip) => !(ip.startsWith('127.') || ip === '::1'));
    if (ips.length > 0) {
      tx.raw(`add element ${nftFamily(config.family)} ${TABLE} ${NODEPORT_IPS_SET} { ${ips.join(', ')} }`);
    }
  }

  tx.declare(
    'map',
    NO_ENDPOINT_SERVICES_MAP,
    `type ${addrType} . inet_proto . inet_service : verdict ; comment "vmap to drop or reject packets to services with no endpoints" ;`,
  );
  tx.declare(
    'map',
    NO_ENDPOINT_NODEPORTS_MAP,
    'type inet_proto . inet_service : verdict ; comment "vmap to drop or reject packets to service nodeports with no endpoints" ;',
  );
  tx.ensureChain(REJECT_CHAIN, 'comment "helper for @no-endpoint-services / @no-endpoint-nodeports" ;');
  tx.rule(REJECT_CHAIN, 'reject');
  tx.rule(
    SERVICE_ENDPOINTS_CHECK,
    `${ipX} daddr . meta l4proto . th dport vmap @${NO_ENDPOINT_SERVICES_MAP}`,
  );
  const nodePortMatch = np.matchAll ? noLocalhost : `${ipX} daddr @${NODEPORT_IPS_SET}`;
  tx.rule(
    NODEPORT_ENDPOINTS_CHECK,
    `${nodePortMatch} meta l4proto . th dport vmap @${NO_ENDPOINT_NODEPORTS_MAP}`,
  );

  tx.declare(
    'map',
    FIREWALL_IPS_MAP,
    `type ${addrType} . inet_proto . inet_service : verdict ; comment "destinations that are subject to LoadBalancerSourceRanges" ;`,
  );
  tx.rule(FIREWALL_CHECK, `${ipX} daddr . meta l4proto . th dport vmap @${FIREWALL_IPS_MAP}`);

  tx.declare(
    'map',
    SERVICE_IPS_MAP,
    `type ${addrType} . inet_proto . inet_service : verdict ; comment "ClusterIP, ExternalIP and LoadBalancer IP traffic" ;`,
  );
  tx.declare(
    'map',
    SERVICE_NODEPORTS_MAP,
    'type inet_proto . inet_service : verdict ; comment "NodePort traffic" ;',
  );
  tx.rule(SERVICES_CHAIN, `${ipX} daddr . meta l4proto . th dport vmap @${SERVICE_IPS_MAP}`);
  tx.rule(
    SERVICES_CHAIN,
    np.matchAll
      ? `fib daddr type local ${noLocalhost} meta l4proto . th dport vmap @${SERVICE_NODEPORTS_MAP}`
      : `${ipX} daddr @${NODEPORT_IPS_SET} meta l4proto . th dport vmap @${SERVICE_NODEPORTS_MAP}`,
  );
}

/** One Service's chains and affinity sets, without rules; `replaceSets`: sets whose timeout changed. */
function declareServiceChains(
  tx: Tx,
  r: ServiceRules,
  addrType: string,
  replaceSets: (name: string, t: number) => boolean,
): void {
  for (const name of r.chains.keys()) tx.ensureChain(name);
  for (const [name, timeout] of r.affinitySets) {
    // A set's timeout cannot be changed by `add`: its rules were just flushed, so delete it first.
    if (replaceSets(name, timeout)) tx.deleteSet(name);
    tx.addAffinitySet(name, addrType, timeout);
  }
}

/** One Service's chains, affinity sets and rules; `replaceSets`: sets whose timeout changed. */
function writeServiceChains(
  tx: Tx,
  r: ServiceRules,
  addrType: string,
  replaceSets: (name: string, t: number) => boolean,
): void {
  declareServiceChains(tx, r, addrType, replaceSets);
  for (const [name, rules] of r.chains) for (const rule of rules) tx.rule(name, rule);
}

/**
 * A rule with an anonymous set or map (`{ … }` outside a comment; not the key of `update @set { … }`):
 * the kernel binds one per rule.
 */
export function holdsAnonymousSet(rule: string): boolean {
  const text = rule.replace(/update @\S+ \{[^}]*\}/g, '');
  const brace = text.indexOf('{');
  if (brace < 0) return false;
  const quote = text.indexOf('"');
  return quote < 0 || brace < quote;
}

export interface FullSyncInput {
  readonly config: NftRenderConfig;
  readonly checked: CheckedNftConfig;
  readonly services: ReadonlyMap<string, ServiceRules>;
  /** Per-Service chains in the table now (listed from the kernel): those not generated are stale. */
  readonly existingServiceChains: Iterable<string>;
  /** Affinity sets in the table now (name → timeout seconds; NaN when unknown). */
  readonly existingAffinitySets: ReadonlyMap<string, number>;
  /** The first full sync of this process recreates the base chains. */
  readonly recreateBaseChains: boolean;
  /** Chains flushed by an earlier transaction, unreferenced since, to delete now. */
  readonly deleteChains?: readonly string[];
  /** About how many commands one Services transaction holds (default FULL_SYNC_PART_LINES). */
  readonly partLines?: number;
}

/**
 * About how many commands one transaction of a full sync's Services holds. The kernel's cost of a
 * transaction grows with the square of its length (each anonymous set's bind walks the transaction
 * so far: __nft_set_trans_bind), nft's memory with its length; each transaction also pays nft's
 * cache fill and the kernel's validation of the whole table once. docs/performance.md ("Full syncs
 * in parts") has the measurements this value comes from.
 */
export const FULL_SYNC_PART_LINES = 20_000;

/** One `nft -f` of a full sync; `kind` says what it writes (see fullTransaction). */
export interface TransactionPart {
  readonly kind: 'setup' | 'services' | 'elements' | 'stale';
  readonly lines: readonly string[];
}

export interface FullTransaction {
  /**
   * The transactions in the order they must be committed, each generated when asked for (only one
   * part's text exists at a time). Generate them once.
   */
  readonly parts: Iterable<TransactionPart>;
  /** What the table holds after every part was committed (svcplane's part of it); complete once
   * `parts` was iterated to its end. */
  readonly model: WrittenModel;
  /** Service chains flushed by the sync, to delete at least a second later. */
  readonly staleChains: readonly string[];
  /** Services whose chains were (re)written. */
  readonly writtenServices: number;
}

/** Every command of a full sync, in order (tests, and what `svcplane diff` compares with). */
export function fullTransactionLines(tx: FullTransaction): string[] {
  const out: string[] = [];
  for (const part of tx.parts) out.push(...part.lines);
  return out;
}

/** How many commands one Service's chains, sets and rules take (to cut parts at Service edges). */
function serviceLines(r: ServiceRules): number {
  let n = 2 * r.chains.size + 2 * r.affinitySets.size;
  for (const rules of r.chains.values()) n += rules.length;
  return n;
}

/**
 * kube-proxy's full sync, written as several transactions in dependency order, so that no one
 * `nft -f` grows with the cluster (the kernel's cost of one transaction is quadratic in its
 * length; nft's memory linear):
 *   1. setup: the table, base chains, fixed chains and their rules, the maps and sets (declared,
 *      not flushed: they serve until part 3);
 *   2. services: every Service's chains, affinity sets and rules, a group of whole Services per
 *      transaction (each group: its chains and sets, then its rules holding anonymous sets, then
 *      the other rules). A new chain is unreachable until an element points to it; an existing
 *      one is rewritten atomically;
 *   3. elements: every map and set flushed and refilled in one transaction (what makes the new
 *      chains reachable; one verdict per key at any time);
 *   4. stale: chains no Service generates any more flushed (nothing points to them now), stale
 *      affinity sets deleted, chains flushed by an earlier sync deleted.
 * A failure at any part leaves what served serving (the previous verdicts, plus unreachable new
 * chains or Services already rewritten whole); the caller's next sync is full.
 */
export function fullTransaction(input: FullSyncInput): FullTransaction {
  const { config, checked, services } = input;
  const model = emptyModel();
  const active = new Set<string>();
  const activeSets = new Set<string>();
  for (const r of services.values()) {
    for (const name of r.chains.keys()) active.add(name);
    for (const name of r.affinitySets.keys()) activeSets.add(name);
  }
  const existingSets = input.existingAffinitySets;
  const existing = new Set(input.existingServiceChains);
  const stale = [...existing].filter((c) => !active.has(c));
  // Only chains the table still holds (another agent may have deleted the table since they were
  // flushed: deleting a missing chain would refuse the part).
  const deleting = new Set((input.deleteChains ?? []).filter((c) => existing.has(c) && !active.has(c)));
  const partLines = Math.max(1, input.partLines ?? FULL_SYNC_PART_LINES);

  function* parts(): Generator<TransactionPart> {
    let tx = new Tx(config.family, model);
    writeSetup(tx, config, checked, input.recreateBaseChains);
    yield { kind: 'setup', lines: tx.lines };

    let group: ServiceRules[] = [];
    let groupLines = 0;
    const writeGroup = (): TransactionPart => {
      tx = new Tx(config.family, model);
      for (const r of group) {
        declareServiceChains(
          tx,
          r,
          checked.addrType,
          (name, t) => existingSets.has(name) && existingSets.get(name) !== t,
        );
      }
      // The rules holding an anonymous set (`numgen … vmap { … }`, source ranges `{ … }`) right
      // after the declarations, then the others: binding each anonymous set walks the transaction
      // so far (__nft_set_trans_bind). A chain's rules stay together and in order.
      for (const anonymous of [true, false]) {
        for (const r of group) {
          for (const [name, rules] of r.chains) {
            if (rules.some(holdsAnonymousSet) !== anonymous) continue;
            for (const rule of rules) tx.rule(name, rule);
          }
        }
      }
      group = [];
      groupLines = 0;
      return { kind: 'services', lines: tx.lines };
    };
    for (const r of services.values()) {
      group.push(r);
      groupLines += serviceLines(r);
      if (groupLines >= partLines) yield writeGroup();
    }
    if (group.length > 0) yield writeGroup();

    tx = new Tx(config.family, model);
    for (const container of ELEMENT_CONTAINERS) tx.flushContainer(container);
    const seen = new Map<ElementContainer, Set<string>>(
      ELEMENT_CONTAINERS.map((c) => [c, new Set<string>()]),
    );
    for (const r of services.values()) {
      for (const e of r.elements) {
        // A key claimed twice (two Services on one externalIP:port) is written once: the first wins.
        const keys = seen.get(e.container)!;
        if (keys.has(e.key)) continue;
        keys.add(e.key);
        tx.addElement(e);
      }
    }
    yield { kind: 'elements', lines: tx.lines };

    tx = new Tx(config.family, model);
    for (const chain of stale) tx.flushChain(chain);
    for (const name of existingSets.keys()) if (!activeSets.has(name)) tx.deleteSet(name);
    deleteDue(tx, [...deleting], active);
    if (tx.lines.length > 0) yield { kind: 'stale', lines: tx.lines };
  }

  let complete = false;
  function* all(): Generator<TransactionPart> {
    yield* parts();
    complete = true;
  }
  return {
    parts: all(),
    get model(): WrittenModel {
      // Filled as the parts are generated: read before that, it would be a wrong (partial) table.
      if (!complete) throw new Error('full sync model read before every part was generated');
      return model;
    },
    staleChains: stale.filter((c) => !deleting.has(c)).sort(),
    writtenServices: services.size,
  };
}

export interface PartialSyncInput {
  readonly family: IPFamily;
  readonly checked: CheckedNftConfig;
  /** The rendered Services the kernel holds (what the last successful transaction wrote). */
  readonly previous: ReadonlyMap<string, ServiceRules>;
  readonly next: ReadonlyMap<string, ServiceRules>;
  /**
   * The Services whose rules are rewritten: the state change's changed and removed ones
   * (src/model/state-change.ts); the others render as before.
   */
  readonly changed: Iterable<string>;
  readonly written: WrittenModel;
  /** Chains flushed by an earlier transaction, unreferenced since, to delete now. */
  readonly deleteChains?: readonly string[];
}

export function partialTransaction(input: PartialSyncInput): PartialTransaction {
  const { previous, next, written, checked } = input;
  const tx = new Tx(input.family, undefined);
  const changed = [...input.changed];
  const stale: string[] = [];
  let writtenServices = 0;
  for (const key of changed) {
    const before = previous.get(key);
    const after = next.get(key);
    if (after !== undefined) {
      writtenServices++;
      writeServiceChains(
        tx,
        after,
        checked.addrType,
        (name, t) => before?.affinitySets.get(name) !== undefined && before.affinitySets.get(name) !== t,
      );
    }
    if (before === undefined) continue;
    for (const chain of before.chains.keys()) {
      if (after?.chains.has(chain) !== true) {
        tx.flushChain(chain);
        stale.push(chain);
      }
    }
    for (const name of before.affinitySets.keys())
      if (after?.affinitySets.has(name) !== true) tx.deleteSet(name);
  }
  // Elements: deletes first (a key may move between maps: service-ips ↔ no-endpoint-services).
  const deletes: [ElementContainer, string][] = [];
  const adds: NftElement[] = [];
  for (const key of changed) {
    const now = new Map<string, NftElement>();
    for (const e of next.get(key)?.elements ?? []) now.set(`${e.container}\n${e.key}`, e);
    for (const e of previous.get(key)?.elements ?? []) {
      if (!now.has(`${e.container}\n${e.key}`) && written.elements.get(e.container)!.has(e.key)) {
        deletes.push([e.container, e.key]);
      }
    }
    for (const e of now.values()) {
      const have = written.elements.get(e.container)!.get(e.key);
      if (have === elementValue(e.value, e.comment)) continue;
      if (have !== undefined) deletes.push([e.container, e.key]);
      adds.push(e);
    }
  }
  for (const [c, k] of deletes) tx.deleteElement(c, k);
  for (const e of adds) tx.addElement(e);
  const inUse = new Set<string>();
  for (const r of next.values()) for (const c of r.chains.keys()) inUse.add(c);
  deleteDue(tx, input.deleteChains, inUse);
  return {
    lines: tx.lines,
    staleChains: stale.sort(),
    writtenServices,
    apply: (m) => tx.apply(m),
  };
}

/**
 * Deletes chains flushed by an earlier transaction (kube-proxy waits ≥ 1 s: kernels < 6.2 release a
 * map element's reference to a chain lazily), except those generated again. Last in the
 * transaction: nothing after it can refer to them.
 */
function deleteDue(tx: Tx, chains: readonly string[] | undefined, active: ReadonlySet<string>): Set<string> {
  const deleted = new Set<string>();
  for (const c of chains ?? []) {
    if (active.has(c) || deleted.has(c)) continue;
    tx.deleteChain(c);
    deleted.add(c);
  }
  return deleted;
}

/** A transaction deleting chains flushed by an earlier one (kube-proxy waits ≥ 1 s: kernels < 6.2). */
export function deleteChainsTransaction(family: IPFamily, chains: readonly string[]): string[] {
  return chains.map((c) => `delete chain ${nftFamily(family)} ${TABLE} ${c}`);
}
