import { KUBE_IPVS_FILTER, KUBE_NODE_PORT, KUBE_SERVICES } from '../iptables/names.js';
import { formatArgs, parseIptablesSave, type SavedRule, type SavedRuleset } from '../iptables/save-parse.js';
import { SETS, setName, type DesiredSet } from '../ipvs/ipset.js';
import type { IPFamily } from '../model/types.js';
import { canonicalRuleText, parseRuleSpec } from '../iptables-rules/rule-spec.js';

/**
 * `svcplane diff` on a node whose IPVS-mode rules kube-proxy wrote (pure). Both proxies program the
 * same chains, sets and virtual servers, but kube-proxy writes a set-based rule only when its set is
 * non-empty, puts comments elsewhere, adds an externalIP ACCEPT for traffic not from a bridge
 * (`-m physdev ! --physdev-is-in`), and has neither svcplane's two sets nor their rules
 * (KUBE-IPVS-NO-ENDPOINTS, KUBE-IPVS-NO-LOCAL-ENDPOINTS). Comparing rule texts would report all of
 * that as drift; instead the rules are aligned first (comments dropped, rules on an empty set that
 * kube-proxy left out set aside) and what is left is real drift. What svcplane would add or remove
 * on taking the node over is listed on its own, each item saying whether it changes how packets
 * are handled today.
 */

export type IpvsLayout = 'svcplane' | 'kube-proxy';

export interface TakeoverChange {
  readonly op: 'add' | 'remove';
  readonly kind: 'rule' | 'ipset' | 'real-server';
  /** `nat KUBE-SERVICES` for rules, the set name, or the virtual server. */
  readonly where: string;
  /** Canonical rule text, `N member(s)`, or the real server. */
  readonly what: string;
  readonly why: string;
  /** True when it changes how packets are handled now (false: inert, e.g. a rule on an empty set). */
  readonly effect: boolean;
}

/** svcplane's own ipsets (iptables-mode parity); kube-proxy has none of them. */
export function svcplaneOnlySets(family: IPFamily): { noEndpoints: string; noLocalEndpoints: string } {
  return {
    noEndpoints: setName(SETS.noEndpoints.base, family),
    noLocalEndpoints: setName(SETS.noLocalEndpoints.base, family),
  };
}

/**
 * Who wrote the node's IPVS-mode rules: svcplane always has its two own sets and marks its rules on
 * them with a `svcplane:` comment; a node with kube-proxy's IPVS chains and neither is kube-proxy's.
 */
export function detectIpvsLayout(
  actual: SavedRuleset,
  ipsets: ReadonlyMap<string, unknown>,
  family: IPFamily,
): IpvsLayout {
  const own = svcplaneOnlySets(family);
  if (ipsets.has(own.noEndpoints) || ipsets.has(own.noLocalEndpoints)) return 'svcplane';
  const filter = actual.tables.get('filter');
  if (!filter?.chainsByName.has(KUBE_IPVS_FILTER)) return 'svcplane';
  const marked = filter.rules.some((r) => r.text.includes('--comment "svcplane:'));
  return marked ? 'svcplane' : 'kube-proxy';
}

/** The rule's args without its `-m comment --comment X`. */
function withoutComment(args: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '-m' && args[i + 1] === 'comment' && args[i + 2] === '--comment') {
      i += 3;
      continue;
    }
    out.push(args[i] as string);
  }
  return out;
}

/** Set names a rule matches positively (`-m set --match-set NAME …`, not negated). */
function positiveSets(rule: SavedRule): string[] {
  const spec = parseRuleSpec(rule.args);
  return spec.matches
    .filter((m) => m.module === 'set')
    .flatMap((m) => m.options.filter((o) => o.name === '--match-set' && !o.negated))
    .map((o) => o.values[0] ?? '');
}

/** Chains kube-proxy writes in full whatever its sets hold (KUBE-IPVS-FILTER, the health-check ACCEPT). */
const UNCONDITIONAL_FILTER_CHAINS = new Set([KUBE_IPVS_FILTER, KUBE_NODE_PORT]);

const isPhysdevExternalAccept = (rule: SavedRule): boolean =>
  rule.chain === KUBE_SERVICES && rule.args.includes('physdev') && rule.args.includes('--physdev-is-in');

/**
 * Re-renders a ruleset with some rules left out and the comments of the kube chains dropped (the
 * jumps in the built-in chains keep theirs: both proxies write the same, and they are found by it).
 */
function rebuild(ruleset: SavedRuleset, keep: (table: string, rule: SavedRule) => boolean): SavedRuleset {
  const lines: string[] = [];
  for (const [name, table] of ruleset.tables) {
    lines.push(`*${name}`);
    for (const c of table.chains) lines.push(`:${c.name} ${c.policy ?? '-'} [0:0]`);
    for (const r of table.rules) {
      if (!keep(name, r)) continue;
      const args = table.chainsByName.get(r.chain)?.builtin === true ? r.args : withoutComment(r.args);
      lines.push(args.length > 0 ? `-A ${r.chain} ${formatArgs(args)}` : `-A ${r.chain}`);
    }
    lines.push('COMMIT');
  }
  return parseIptablesSave(`${lines.join('\n')}\n`);
}

export interface AlignInput {
  readonly family: IPFamily;
  /** svcplane's rules (renderIpvsRules, parsed). */
  readonly desired: SavedRuleset;
  /** The kernel's (iptables-save). */
  readonly actual: SavedRuleset;
  /** The planned sets (their members decide whether a rule on them has an effect). */
  readonly sets: readonly DesiredSet[];
}

export interface Aligned {
  readonly desired: SavedRuleset;
  readonly actual: SavedRuleset;
  readonly changes: readonly TakeoverChange[];
}

/** Both rulesets in a comparable form, and what svcplane would change beyond that. */
export function alignWithKubeProxy(input: AlignInput): Aligned {
  const own = svcplaneOnlySets(input.family);
  const members = new Map(input.sets.map((s) => [s.name, s.members.size]));
  const changes: TakeoverChange[] = [];
  // Comment-free canonical texts of the kernel's rules, per table: a rule on an empty set that is
  // there all the same is compared as usual.
  const kernelKeys = new Map<string, Set<string>>();
  for (const [name, table] of input.actual.tables) {
    kernelKeys.set(name, new Set(table.rules.map((r) => canonicalRuleText(r.chain, withoutComment(r.args)))));
  }
  const desired = rebuild(input.desired, (table, rule) => {
    const key = canonicalRuleText(rule.chain, withoutComment(rule.args));
    const where = `${table} ${rule.chain}`;
    const text = canonicalRuleText(rule.chain, rule.args);
    const sets = positiveSets(rule);
    if (sets.includes(own.noEndpoints) || sets.includes(own.noLocalEndpoints)) {
      const noLocal = sets.includes(own.noLocalEndpoints);
      const n = members.get(noLocal ? own.noLocalEndpoints : own.noEndpoints) ?? 0;
      changes.push({
        op: 'add',
        kind: 'rule',
        where,
        what: text,
        // Without endpoints IPVS itself answers ICMP port unreachable: the client sees the same.
        effect: noLocal && n > 0,
        why: noLocal
          ? `svcplane addition: Local-policy frontends without a local endpoint are dropped, as in iptables mode (kube-proxy sends them to remote endpoints); ${n} frontend(s) now`
          : `svcplane addition: frontends without endpoints are rejected by iptables, as in iptables mode (kube-proxy leaves it to IPVS, which answers ICMP port unreachable as well); ${n} frontend(s) now`,
      });
      return false;
    }
    const empty = sets.find((s) => (members.get(s) ?? 0) === 0);
    const always = table === 'filter' && UNCONDITIONAL_FILTER_CHAINS.has(rule.chain);
    if (empty !== undefined && !always && !kernelKeys.get(table)?.has(key)) {
      changes.push({
        op: 'add',
        kind: 'rule',
        where,
        what: text,
        effect: false,
        why: `inert: ipset ${empty} is empty (kube-proxy writes no rule for an empty set)`,
      });
      return false;
    }
    return true;
  });
  const actual = rebuild(input.actual, (table, rule) => {
    if (table !== 'nat' || !isPhysdevExternalAccept(rule)) return true;
    changes.push({
      op: 'remove',
      kind: 'rule',
      where: `${table} ${rule.chain}`,
      what: canonicalRuleText(rule.chain, rule.args),
      effect: false,
      why: "kube-proxy only: ACCEPTs externalIP traffic that is not from a bridge port nor from the node; svcplane's next rules ACCEPT it when the IP is local and IPVS takes it either way",
    });
    return false;
  });
  return { desired, actual, changes };
}
