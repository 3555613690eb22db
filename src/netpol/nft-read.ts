import { parseNftTable } from '../nftables/listing.js';
import { DENY, directionChain, NETPOL_FAMILY, NETPOL_TABLE, renderedSets, ruleTag } from './nft-render.js';
import type { PolicyPlan } from './plan.js';
import { DIRECTIONS } from './pod-index.js';

/**
 * The policy table as the kernel holds it (`nft -j list table inet svcplane-netpol`), parsed, and
 * compared with a plan: what drift checks and `svcplane diff` report. Pure.
 */

export interface KernelTable {
  /** Set name → its elements, written as nft-render writes them. */
  readonly sets: ReadonlyMap<string, ReadonlySet<string>>;
  /** Chain name → the tags of its commented rules (plan rules), and how many rules it has. */
  readonly chains: ReadonlyMap<string, { readonly tags: readonly string[]; readonly rules: number }>;
}

/**
 * Parses `nft -j list table inet svcplane-netpol` with the one parser of nft listings
 * (src/nftables/listing.ts); an output without that table gives an empty one (the caller decides).
 */
export function parseKernelTable(json: string): KernelTable {
  const listed = parseNftTable(json, NETPOL_FAMILY, NETPOL_TABLE);
  const sets = new Map<string, Set<string>>();
  const chains = new Map<string, { tags: string[]; rules: number }>();
  for (const c of listed?.containers.values() ?? []) {
    if (c.kind === 'set') sets.set(c.name, new Set(c.elements.keys()));
  }
  for (const c of listed?.chains.values() ?? []) {
    const tags = c.rules.flatMap((r) => (r.comment === undefined ? [] : [r.comment.split(' ')[0] ?? '']));
    chains.set(c.name, { tags, rules: c.rules.length });
  }
  return { sets, chains };
}

/** An interval set prints a single address (a /32, /128 network) without its length. */
function kernelForm(element: string): string {
  return element.replace(/^([0-9.]+)\/32$/, '$1').replace(/^([0-9a-f:]+)\/128$/, '$1');
}

export interface TableDifference {
  /** One line per difference, e.g. "set tgt4-…: 1 element missing (10.244.0.2)". */
  readonly lines: readonly string[];
}

const BASE_RULES = (hook: 'forward' | 'input', families: number, v6: boolean): number =>
  1 + (v6 ? 1 : 0) + (hook === 'forward' ? 3 * families : families);

function sample(xs: readonly string[]): string {
  return xs.length <= 3 ? xs.join(', ') : `${xs.slice(0, 3).join(', ')}, …`;
}

/** What the kernel holds that the plan does not say, and what it lacks; empty when they agree. */
export function compareTable(plan: PolicyPlan, kernel: KernelTable | undefined): TableDifference {
  if (!kernel) return { lines: ['table inet svcplane-netpol is missing'] };
  const lines: string[] = [];
  const expected = renderedSets(plan);
  for (const s of expected) {
    const have = kernel.sets.get(s.name);
    if (!have) {
      lines.push(`set ${s.name}: missing`);
      continue;
    }
    const want = new Set(s.elements.map(kernelForm));
    const missing = [...want].filter((e) => !have.has(e));
    const extra = [...have].filter((e) => !want.has(e));
    if (missing.length > 0)
      lines.push(`set ${s.name}: ${missing.length} element(s) missing (${sample(missing)})`);
    if (extra.length > 0) lines.push(`set ${s.name}: ${extra.length} element(s) extra (${sample(extra)})`);
  }
  const names = new Set(expected.map((s) => s.name));
  for (const name of kernel.sets.keys()) if (!names.has(name)) lines.push(`set ${name}: not in the plan`);
  const v6 = plan.families.includes('IPv6');
  for (const hook of ['forward', 'input'] as const) {
    const c = kernel.chains.get(hook);
    const want = BASE_RULES(hook, plan.families.length, v6);
    if (!c) lines.push(`chain ${hook}: missing`);
    else if (c.rules !== want) lines.push(`chain ${hook}: ${c.rules} rules, expected ${want}`);
  }
  for (const family of plan.families) {
    for (const direction of DIRECTIONS) {
      const chain = directionChain(direction, family);
      const c = kernel.chains.get(chain);
      const tags = plan.rules.filter((r) => r.family === family && r.direction === direction).map(ruleTag);
      if (!c) {
        lines.push(`chain ${chain}: missing`);
        continue;
      }
      const have = new Set(c.tags);
      const missing = tags.filter((t) => !have.has(t));
      const wanted = new Set(tags);
      const extra = c.tags.filter((t) => !wanted.has(t));
      if (missing.length > 0) lines.push(`chain ${chain}: ${missing.length} rule(s) missing`);
      if (extra.length > 0) lines.push(`chain ${chain}: ${extra.length} rule(s) not in the plan`);
      // Every plan rule, plus the final rejects.
      if (missing.length + extra.length === 0 && c.rules !== tags.length + DENY.length) {
        lines.push(`chain ${chain}: ${c.rules} rules, expected ${tags.length + DENY.length}`);
      }
    }
  }
  return { lines };
}
