import { KUBE_PROXY_CANARY } from '../iptables/iptables.js';
import { jumpRuleArgs, type JumpRule } from './jumps.js';
import { formatArgs, ruleComment, ruleTarget, type SavedRuleset } from '../iptables/save-parse.js';

/**
 * Folds the full-sync extras into the one restore transaction instead of a dozen `iptables -C/-I`
 * processes: the jump rules from built-in chains that are missing, and the canary chains.
 * Pure: the caller passes what iptables-save showed.
 */

export type ExtraLines = ReadonlyMap<string, readonly string[]>;

/** `-I <chain> 1 …` lines for the jumps the kernel lacks, per table, in kube-proxy's prepend order. */
export function missingJumpLines(
  saved: SavedRuleset,
  jumps: readonly JumpRule[],
  declared: ReadonlySet<string>,
): ExtraLines {
  const out = new Map<string, string[]>();
  const add = (table: string, line: string): void => {
    const lines = out.get(table) ?? [];
    lines.push(line);
    out.set(table, lines);
  };
  for (const jump of jumps) {
    const table = saved.tables.get(jump.table);
    const present = (table?.rulesByChain.get(jump.chain) ?? []).some(
      (r) => ruleTarget(r) === jump.target && ruleComment(r) === jump.comment,
    );
    if (present) continue;
    // A target chain we do not render (kubelet's KUBE-FIREWALL) must exist; declaring an existing
    // chain would flush it, so it is declared only when absent.
    if (!declared.has(`${jump.table}/${jump.target}`) && !table?.chainsByName.has(jump.target)) {
      add(jump.table, `:${jump.target} - [0:0]`);
    }
    add(jump.table, `-I ${jump.chain} 1 ${formatArgs(jumpRuleArgs(jump))}`);
  }
  return out;
}

/** Canary chains (kube-proxy's flush detection) in mangle, nat and filter. */
export function canaryLines(saved: SavedRuleset): ExtraLines {
  const out = new Map<string, string[]>();
  for (const t of ['mangle', 'nat', 'filter']) {
    // Declaring flushes; the canary is empty by design, so that is harmless, but skip when present.
    if (!saved.tables.get(t)?.chainsByName.has(KUBE_PROXY_CANARY))
      out.set(t, [`:${KUBE_PROXY_CANARY} - [0:0]`]);
  }
  return out;
}

/** Inserts extra lines before each table's COMMIT (declarations first); adds missing tables. */
export function mergeExtraLines(input: string, ...extras: ExtraLines[]): string {
  const byTable = new Map<string, string[]>();
  for (const extra of extras) {
    for (const [t, lines] of extra) byTable.set(t, [...(byTable.get(t) ?? []), ...lines]);
  }
  if (byTable.size === 0) return input;
  const ordered = (lines: string[]): string[] => [
    ...lines.filter((l) => l.startsWith(':')),
    ...lines.filter((l) => !l.startsWith(':')),
  ];
  const sections = input.split(/(?=^\*)/m);
  const result: string[] = [];
  for (const section of sections) {
    const m = /^\*(\S+)\n/.exec(section);
    const lines = m ? byTable.get(m[1]!) : undefined;
    if (m && lines) {
      byTable.delete(m[1]!);
      const at = section.lastIndexOf('COMMIT\n');
      result.push(section.slice(0, at) + ordered(lines).join('\n') + '\n' + section.slice(at));
    } else {
      result.push(section);
    }
  }
  for (const [t, lines] of byTable) result.push(`*${t}\n${ordered(lines).join('\n')}\nCOMMIT\n`);
  return result.join('');
}
