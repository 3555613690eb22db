import { structuredPatch } from 'diff';
import type { JumpRule } from './jumps.js';
import { KUBE_PROXY_CANARY } from '../iptables/iptables.js';
import {
  KUBE_CHAIN_PREFIX,
  KUBE_EXTERNAL_SERVICES,
  KUBE_FIREWALL,
  KUBE_FORWARD,
  KUBE_KUBELET_CANARY,
  KUBE_MARK_DROP,
  KUBE_MARK_MASQ,
  KUBE_NODEPORTS,
  KUBE_POSTROUTING,
  KUBE_PROXY_FIREWALL,
  KUBE_SERVICES,
  isServiceChainName,
} from '../iptables/names.js';
import { ruleComment, ruleTarget, type SavedRule, type SavedRuleset } from '../iptables/save-parse.js';
import type { IPFamily } from '../model/types.js';
import { servicePortNameFromComment, type OwnerIndex, type ServiceChainKind } from './owners.js';
import { canonicalRuleText } from './rule-spec.js';

/**
 * Desired vs kernel for iptables mode, the one comparison behind both `svcplane diff` and the
 * daemon's drift check (the daemon compares only the chains another agent touched, see
 * commit-log.ts, or everything when it cannot tell which). Pure: what svcplane would program (the renderer's restore input, parsed)
 * against what the kernel holds (iptables-save, parsed), chain by chain, grouped by the Service port
 * each chain or rule belongs to. Both sides go through the same parser and canonical form, so
 * counters, iptables-save's reordering and spelled-out defaults never count as drift. Order matters
 * inside a chain, except between the rules of different Services in a shared chain (KUBE-SERVICES,
 * KUBE-NODEPORTS, the filter chains): kube-proxy writes Services in random map order.
 */

export interface DiffInput {
  readonly family: IPFamily;
  /** The desired rules (svcplane's restore input, parsed). */
  readonly desired: SavedRuleset;
  /** The kernel's rules (iptables-save, parsed). */
  readonly actual: SavedRuleset;
  readonly owners: OwnerIndex;
  /** Rules in built-in chains that must jump into kube-proxy's chains. */
  readonly jumps: readonly JumpRule[];
}

export interface RuleChange {
  /** missing: desired, not in the kernel; extra: in the kernel, not desired; misplaced: wrong position. */
  readonly op: 'missing' | 'extra' | 'misplaced';
  /** Canonical rule text (`-A CHAIN …`). */
  readonly rule: string;
  /** An extra rule nobody of kube-proxy's kind writes (no Service comment, not a kube jump). */
  readonly foreign: boolean;
}

export interface ChainDrift {
  readonly table: string;
  readonly chain: string;
  /**
   * changed: the chain's rules (or this owner's rules in a shared chain) differ; missing: the chain
   * is desired but absent; stale: a per-service chain that should not exist; unknown: a KUBE-*
   * chain nobody writes.
   */
  readonly status: 'changed' | 'missing' | 'stale' | 'unknown';
  readonly kind?: ServiceChainKind;
  readonly endpoint?: string;
  readonly changes: readonly RuleChange[];
  /** Unified diff, desired → kernel. */
  readonly patch: string;
}

export interface DriftGroup {
  /** `service:<ServicePortName>`, `node` or `unknown`. */
  readonly key: string;
  readonly servicePortName?: string;
  /** The Service port exists in the current state (false: the kernel has rules for a gone Service). */
  readonly known: boolean;
  readonly title: string;
  readonly chains: readonly ChainDrift[];
}

export interface MissingJump {
  readonly table: string;
  readonly chain: string;
  readonly target: string;
  readonly rule: string;
}

export interface DriftSummary {
  readonly servicePorts: number;
  readonly missingRules: number;
  readonly extraRules: number;
  readonly foreignRules: number;
  readonly misplacedRules: number;
  readonly missingChains: number;
  readonly staleChains: number;
  readonly unknownChains: number;
  readonly missingJumps: number;
}

export interface FamilyDrift {
  readonly family: IPFamily;
  readonly inSync: boolean;
  readonly groups: readonly DriftGroup[];
  readonly missingJumps: readonly MissingJump[];
  readonly summary: DriftSummary;
}

/** KUBE-* chains that are not kube-proxy's rules to compare: canaries and kubelet's. */
const IGNORED_CHAINS = new Set([KUBE_PROXY_CANARY, KUBE_KUBELET_CANARY, KUBE_MARK_DROP]);
/** kubelet writes KUBE-FIREWALL too; it is compared only when svcplane wants it. */
const KUBELET_CHAINS = new Set([KUBE_FIREWALL]);
const NOTE_LAST = 'kubernetes service nodeports; NOTE: this must be the last rule in this chain';
const TABLES = ['filter', 'nat'] as const;

interface Keyed {
  readonly rule: SavedRule;
  readonly key: string;
}

interface MutableGroup {
  key: string;
  servicePortName?: string;
  known: boolean;
  chains: ChainDrift[];
}

export function diffRulesets(input: DiffInput): FamilyDrift {
  const groups = new Map<string, MutableGroup>();
  const groupFor = (key: string): MutableGroup => {
    let g = groups.get(key);
    if (!g) {
      const spn = key.startsWith('service:') ? key.slice('service:'.length) : undefined;
      g = {
        key,
        ...(spn !== undefined ? { servicePortName: spn } : {}),
        known: spn === undefined || input.owners.servicePorts.has(spn),
        chains: [],
      };
      groups.set(key, g);
    }
    return g;
  };

  const missingChains = new Set<string>();
  for (const table of TABLES) {
    const d = input.desired.tables.get(table);
    const a = input.actual.tables.get(table);
    const desiredChains = new Set((d?.chains ?? []).map((c) => c.name));
    const actualChains = new Set(
      (a?.chains ?? [])
        .map((c) => c.name)
        .filter(
          (n) =>
            n.startsWith(KUBE_CHAIN_PREFIX) &&
            !IGNORED_CHAINS.has(n) &&
            (!KUBELET_CHAINS.has(n) || desiredChains.has(n)),
        ),
    );
    const names = [...new Set([...desiredChains, ...actualChains])].sort(chainOrder);
    for (const chain of names) {
      const dRules = keyed(d?.rulesByChain.get(chain) ?? []);
      const aRules = keyed(a?.rulesByChain.get(chain) ?? []);
      const inDesired = desiredChains.has(chain);
      const inActual = actualChains.has(chain);
      if (isServiceChainName(chain)) {
        if (!inActual) missingChains.add(`${table}/${chain}`);
        const owner = input.owners.chains.get(chain);
        const spn = owner?.ref.servicePortName ?? commentOwner([...aRules, ...dRules]);
        const key = spn !== undefined ? `service:${spn}` : 'unknown';
        const status: ChainDrift['status'] = !inActual ? 'missing' : !inDesired ? 'stale' : 'changed';
        const drift = compareChain(table, chain, status, dRules, aRules, (r) => isForeignIn(r, spn));
        if (drift) {
          groupFor(key).chains.push({
            ...drift,
            ...(owner ? { kind: owner.kind } : {}),
            ...(owner?.endpoint !== undefined ? { endpoint: owner.endpoint } : {}),
          });
        }
        continue;
      }
      if (!inActual) missingChains.add(`${table}/${chain}`);
      if (!inDesired) {
        const drift = compareChain(table, chain, 'unknown', [], aRules, () => true);
        if (drift) groupFor('unknown').chains.push(drift);
        continue;
      }
      // A shared chain: compare each owner's rules in order, owners independently.
      const byOwner = new Map<string, { d: Keyed[]; a: Keyed[] }>();
      const put = (side: 'd' | 'a', k: Keyed): void => {
        const o = ruleOwner(k.rule, input.owners);
        let e = byOwner.get(o);
        if (!e) byOwner.set(o, (e = { d: [], a: [] }));
        e[side].push(k);
      };
      dRules.forEach((k) => put('d', k));
      aRules.forEach((k) => put('a', k));
      const status: ChainDrift['status'] = inActual ? 'changed' : 'missing';
      // A missing shared chain is always reported under the node, even when it holds no node rules.
      if (!inActual && !byOwner.has('node')) byOwner.set('node', { d: [], a: [] });
      for (const [o, { d: dr, a: ar }] of [...byOwner].sort(([x], [y]) => (x < y ? -1 : x > y ? 1 : 0))) {
        const drift = compareChain(table, chain, status, dr, ar, (r) =>
          o === 'node' ? true : isForeignIn(r, o.slice('service:'.length)),
        );
        if (drift) groupFor(o).chains.push(drift);
      }
      const misplaced = checkLastRule(table, chain, dRules, aRules);
      if (misplaced) groupFor('node').chains.push(misplaced);
    }
  }

  const missingJumps = findMissingJumps(input.actual, input.jumps);
  const out: DriftGroup[] = [...groups.values()]
    .filter((g) => g.chains.length > 0)
    .sort((x, y) => groupRank(x) - groupRank(y) || (x.key < y.key ? -1 : x.key > y.key ? 1 : 0))
    .map((g) => ({ ...g, title: groupTitle(g, input.owners) }));
  const summary = summarize(out, missingJumps, missingChains.size);
  const inSync = out.length === 0 && missingJumps.length === 0 && missingChains.size === 0;
  return { family: input.family, inSync, groups: out, missingJumps, summary };
}

function keyed(rules: readonly SavedRule[]): Keyed[] {
  return rules.map((rule) => ({ rule, key: canonicalRuleText(rule.chain, rule.args) }));
}

/** Fixed chains first (in kube-proxy's declaration order), then the rest by name. */
const FIXED_ORDER = [
  KUBE_SERVICES,
  KUBE_EXTERNAL_SERVICES,
  KUBE_FORWARD,
  KUBE_NODEPORTS,
  KUBE_PROXY_FIREWALL,
  KUBE_FIREWALL,
  KUBE_POSTROUTING,
  KUBE_MARK_MASQ,
];
function chainOrder(a: string, b: string): number {
  const ia = FIXED_ORDER.indexOf(a);
  const ib = FIXED_ORDER.indexOf(b);
  if (ia >= 0 || ib >= 0) return (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib);
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Owner of a rule in a shared chain: the Service its comment or its jump names, else the node. */
function ruleOwner(rule: SavedRule, owners: OwnerIndex): string {
  const spn = servicePortNameFromComment(ruleComment(rule));
  if (spn !== undefined) return `service:${spn}`;
  const target = ruleTarget(rule);
  const owner = target === undefined ? undefined : owners.chains.get(target);
  return owner ? `service:${owner.ref.servicePortName}` : 'node';
}

function commentOwner(rules: readonly Keyed[]): string | undefined {
  for (const k of rules) {
    const spn = servicePortNameFromComment(ruleComment(k.rule));
    if (spn !== undefined) return spn;
  }
  return undefined;
}

/** An extra rule is foreign unless it carries this Service's comment or jumps where kube-proxy jumps. */
function isForeignIn(rule: SavedRule, spn: string | undefined): boolean {
  const target = ruleTarget(rule);
  if (target !== undefined && (target.startsWith(KUBE_CHAIN_PREFIX) || target === 'DNAT')) return false;
  const named = servicePortNameFromComment(ruleComment(rule));
  return spn === undefined || named !== spn;
}

function compareChain(
  table: string,
  chain: string,
  status: ChainDrift['status'],
  desired: readonly Keyed[],
  actual: readonly Keyed[],
  foreign: (r: SavedRule) => boolean,
): ChainDrift | undefined {
  const dk = desired.map((k) => k.key);
  const ak = actual.map((k) => k.key);
  if (status === 'changed' && dk.length === ak.length && dk.every((k, i) => k === ak[i])) return undefined;
  const patch = structuredPatch(
    `desired ${table} ${chain}`,
    `kernel ${table} ${chain}`,
    lines(dk),
    lines(ak),
    '',
    '',
    { context: 3 },
  );
  const changes: RuleChange[] = [];
  const actualByKey = new Map(actual.map((k) => [k.key, k.rule]));
  for (const h of patch.hunks) {
    for (const l of h.lines) {
      if (l.startsWith('-')) changes.push({ op: 'missing', rule: l.slice(1), foreign: false });
      else if (l.startsWith('+')) {
        const rule = actualByKey.get(l.slice(1));
        changes.push({ op: 'extra', rule: l.slice(1), foreign: rule !== undefined && foreign(rule) });
      }
    }
  }
  if (changes.length === 0 && status === 'changed') return undefined;
  return { table, chain, status, changes, patch: formatHunks(patch) };
}

/** kube-proxy's KUBE-SERVICES must end with the jump to KUBE-NODEPORTS. */
function checkLastRule(
  table: string,
  chain: string,
  desired: readonly Keyed[],
  actual: readonly Keyed[],
): ChainDrift | undefined {
  const last = desired[desired.length - 1];
  if (!last || ruleComment(last.rule) !== NOTE_LAST) return undefined;
  const at = actual.findIndex((k) => k.key === last.key);
  if (at < 0 || at === actual.length - 1) return undefined;
  const after = actual.slice(at + 1).map((k) => `+${k.key}`);
  return {
    table,
    chain,
    status: 'changed',
    changes: [{ op: 'misplaced', rule: last.key, foreign: false }],
    patch: [
      `@@ ${chain}: this rule must be the last one, ${after.length} rule(s) follow it @@`,
      ` ${last.key}`,
      ...after,
    ].join('\n'),
  };
}

function lines(keys: readonly string[]): string {
  return keys.length === 0 ? '' : `${keys.join('\n')}\n`;
}

function formatHunks(patch: ReturnType<typeof structuredPatch>): string {
  if (patch.hunks.length === 0) return ''; // e.g. an empty stale chain
  const out = [`--- ${patch.oldFileName}`, `+++ ${patch.newFileName}`];
  for (const h of patch.hunks) {
    out.push(`@@ -${h.oldStart},${h.oldLines} +${h.newStart},${h.newLines} @@`);
    for (const l of h.lines) if (!l.startsWith('\\')) out.push(l);
  }
  return out.join('\n');
}

function findMissingJumps(actual: SavedRuleset, jumps: readonly JumpRule[]): MissingJump[] {
  const out: MissingJump[] = [];
  for (const j of jumps) {
    const rules = actual.tables.get(j.table)?.rulesByChain.get(j.chain) ?? [];
    const present = rules.some((r) => ruleTarget(r) === j.target && ruleComment(r) === j.comment);
    if (!present) {
      const comment = j.comment !== undefined ? ` -m comment --comment "${j.comment}"` : '';
      out.push({
        table: j.table,
        chain: j.chain,
        target: j.target,
        rule: `-A ${j.chain}${j.extraArgs.length ? ` ${j.extraArgs.join(' ')}` : ''}${comment} -j ${j.target}`,
      });
    }
  }
  return out;
}

function groupRank(g: MutableGroup): number {
  return g.key.startsWith('service:') ? 0 : g.key === 'node' ? 1 : 2;
}

function groupTitle(g: MutableGroup, owners: OwnerIndex): string {
  if (g.servicePortName !== undefined) {
    const ref = owners.servicePorts.get(g.servicePortName);
    return ref
      ? `Service ${ref.serviceKey} port ${g.servicePortName.includes(':') ? `${g.servicePortName.slice(g.servicePortName.indexOf(':') + 1)} ` : ''}${ref.port}/${ref.protocol}`
      : `${g.servicePortName} (not in the current state: stale rules)`;
  }
  return g.key === 'node' ? 'node-wide chains and rules' : 'chains nobody owns (unknown or unattributable)';
}

function summarize(
  groups: readonly DriftGroup[],
  jumps: readonly MissingJump[],
  missingChains: number,
): DriftSummary {
  let missingRules = 0;
  let extraRules = 0;
  let foreignRules = 0;
  let misplacedRules = 0;
  let staleChains = 0;
  let unknownChains = 0;
  for (const g of groups) {
    for (const c of g.chains) {
      if (c.status === 'stale') staleChains++;
      if (c.status === 'unknown') unknownChains++;
      for (const ch of c.changes) {
        if (ch.op === 'missing') missingRules++;
        else if (ch.op === 'extra') extraRules++;
        else misplacedRules++;
        if (ch.foreign) foreignRules++;
      }
    }
  }
  return {
    servicePorts: groups.filter((g) => g.servicePortName !== undefined).length,
    missingRules,
    extraRules,
    foreignRules,
    misplacedRules,
    missingChains,
    staleChains,
    unknownChains,
    missingJumps: jumps.length,
  };
}

export function summaryLine(r: FamilyDrift): string {
  if (r.inSync) return 'in sync';
  const s = r.summary;
  const parts = [
    s.servicePorts ? `${s.servicePorts} service port(s) drifted` : '',
    s.missingRules ? `${s.missingRules} missing rule(s)` : '',
    s.extraRules
      ? `${s.extraRules} extra rule(s)${s.foreignRules ? ` (${s.foreignRules} foreign)` : ''}`
      : '',
    s.misplacedRules ? `${s.misplacedRules} misplaced rule(s)` : '',
    s.missingChains ? `${s.missingChains} missing chain(s)` : '',
    s.staleChains ? `${s.staleChains} stale chain(s)` : '',
    s.unknownChains ? `${s.unknownChains} unknown chain(s)` : '',
    s.missingJumps ? `${s.missingJumps} missing jump(s)` : '',
  ].filter((p) => p !== '');
  return `DRIFT: ${parts.join(', ')}`;
}

/**
 * The named chains of a restore input as iptables-save text (their declarations and rules), for a
 * comparison scoped to them. Pure; one pass over the input.
 */
export function chainsOfRestoreInput(
  input: string,
  wanted: ReadonlyMap<string, ReadonlySet<string>>,
): string {
  const out = new Map<string, string[]>();
  let chains: ReadonlySet<string> | undefined;
  let lines: string[] = [];
  for (let start = 0; start < input.length;) {
    let end = input.indexOf('\n', start);
    if (end === -1) end = input.length;
    const c = input.charCodeAt(start);
    if (c === 42 /* * */) {
      const table = input.slice(start + 1, end).trim();
      chains = wanted.get(table);
      lines = out.get(table) ?? [];
      if (chains !== undefined) out.set(table, lines);
    } else if (chains !== undefined && (c === 58 /* : */ || input.startsWith('-A ', start))) {
      const from = c === 58 ? start + 1 : start + 3;
      const sp = input.indexOf(' ', from);
      const chain = input.slice(from, sp === -1 || sp > end ? end : sp);
      if (chains.has(chain)) lines.push(input.slice(start, end));
    }
    start = end + 1;
  }
  const text: string[] = [];
  for (const [table, l] of out) text.push(`*${table}`, ...l, 'COMMIT');
  return text.length === 0 ? '' : `${text.join('\n')}\n`;
}
