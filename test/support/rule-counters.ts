import assert from 'node:assert/strict';
import { parseIptablesSave, rulesOf, type SavedRule } from '../../src/iptables/save-parse.js';
import type { IPFamily } from '../../src/model/types.js';
import type { Sandbox } from '../../src/netns/sandbox.js';

/**
 * Packet counters of the rules in a sandbox node's kernel (`iptables-save -c`), so a test can show
 * that *this* rule dropped its packets rather than only seeing a timeout.
 */

export interface RuleRef {
  readonly family?: IPFamily;
  readonly table: 'filter' | 'nat';
  readonly chain: string;
  /** Picks the rule (exactly one must match). */
  readonly match: (rule: SavedRule) => boolean;
  /** For messages. */
  readonly what: string;
}

/** The packet counter of one rule; fails when no rule or more than one matches. */
export async function rulePackets(sb: Sandbox, ref: RuleRef): Promise<number> {
  const save = ref.family === 'IPv6' ? 'ip6tables-save' : 'iptables-save';
  const saved = parseIptablesSave((await sb.exec('node', [save, '-c', '-t', ref.table])).stdout);
  const rules = rulesOf(saved, ref.table, ref.chain).filter(ref.match);
  assert.equal(
    rules.length,
    1,
    `${ref.what}: expected one rule in ${ref.table}/${ref.chain}, found ${rules.length}`,
  );
  return rules[0]!.packets ?? 0;
}

/**
 * Runs `traffic` and asserts that the rule's packet counter grew by at least `min` meanwhile.
 * Returns the increase.
 */
export async function expectRuleCounted(
  sb: Sandbox,
  ref: RuleRef,
  traffic: () => Promise<unknown>,
  min = 1,
): Promise<number> {
  const before = await rulePackets(sb, ref);
  await traffic();
  const after = await rulePackets(sb, ref);
  assert.ok(
    after - before >= min,
    `${ref.what}: counter went ${before} → ${after}, expected +${min} or more`,
  );
  return after - before;
}
