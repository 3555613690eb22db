/**
 * The chunked `--noflush` full sync (nf_tables backend). One `iptables-restore --noflush` transaction
 * of a whole ruleset costs O(commands × distinct chains) in iptables-nft (its cache request keeps the
 * chain names of a transaction in a sorted linked list: see docs/performance.md), so a 10k-Service
 * full sync takes minutes; replacing whole tables instead is linear but drops any rule another agent
 * adds between the listing and the commit. Here the same `--noflush` input is cut into transactions
 * of at most `maxChains` chains each (still one process): foreign chains are never touched, and the
 * quadratic term shrinks by the number of chunks.
 *
 * Every chunk is a consistent state: a chain is declared (flushed) and refilled in the same
 * transaction, after every chain it jumps to (dependencies first, so KUBE-SEP before KUBE-SVC before
 * KUBE-SERVICES), and chains that are deleted (`-X`) go last with the jumps from built-in chains, when
 * nothing references them any more. One exception, when the caller says which chains exist: a long
 * chain that does not exist yet and that only other new chains jump to (KUBE-SERVICES and
 * KUBE-NODEPORTS on a new node) is filled over several transactions (`maxRules` rules each). No
 * packet can reach it until the last transaction adds the jumps from the built-in chains, and one
 * transaction of its 20k rules costs seconds at 10k Services (each rule's jump target goes into the
 * same sorted list, docs/performance.md). Pure: text in, text pieces out.
 */

import type { ExtraLines } from '../iptables-rules/jump-plan.js';

/** One table section of a restore input, split by role. */
interface TableParts {
  readonly table: string;
  /** Chain → its declaration line (`:CHAIN - [0:0]`), in first-seen order. */
  readonly decls: Map<string, string>;
  /** Chain → its `-A` lines, in input order. */
  readonly rules: Map<string, string[]>;
  /** `-X CHAIN` lines. */
  readonly deletes: string[];
  /** Everything else (`-I` jumps from built-in chains …), in input order. */
  readonly tail: string[];
}

export class ChunkingError extends Error {
  constructor(reason: string) {
    super(`chunked restore input: ${reason}`);
    this.name = 'ChunkingError';
  }
}

function splitTables(input: string, extras: readonly ExtraLines[]): TableParts[] {
  const out: TableParts[] = [];
  let cur: TableParts | undefined;
  const open = (table: string): TableParts => {
    const found = out.find((t) => t.table === table);
    if (found) return found;
    const t: TableParts = { table, decls: new Map(), rules: new Map(), deletes: [], tail: [] };
    out.push(t);
    return t;
  };
  const add = (t: TableParts, line: string): void => {
    if (line.startsWith(':')) {
      const chain = line.slice(1, line.indexOf(' ') === -1 ? undefined : line.indexOf(' '));
      if (!t.decls.has(chain)) t.decls.set(chain, line);
    } else if (line.startsWith('-A ')) {
      const chain = line.slice(3, line.indexOf(' ', 3) === -1 ? undefined : line.indexOf(' ', 3));
      const list = t.rules.get(chain);
      if (list) list.push(line);
      else t.rules.set(chain, [line]);
    } else if (line.startsWith('-X ')) {
      t.deletes.push(line);
    } else {
      t.tail.push(line);
    }
  };
  // One pass with indexOf: a 10k-Service input has 270k lines (split() would hold all of them).
  for (let start = 0; start < input.length;) {
    let end = input.indexOf('\n', start);
    if (end === -1) end = input.length;
    const line = input.slice(start, end);
    start = end + 1;
    if (line === '' || line.startsWith('#')) continue;
    if (line.startsWith('*')) {
      if (cur) throw new ChunkingError(`table ${cur.table} has no COMMIT`);
      cur = open(line.slice(1));
    } else if (!cur) {
      throw new ChunkingError(`line outside a table: ${JSON.stringify(line)}`);
    } else if (line === 'COMMIT') {
      cur = undefined;
    } else {
      add(cur, line);
    }
  }
  if (cur) throw new ChunkingError(`table ${cur.table} has no COMMIT`);
  // Extra lines (missing jumps, canaries) join their table as if written before its COMMIT.
  for (const extra of extras) for (const [table, lines] of extra) for (const l of lines) add(open(table), l);
  return out;
}

/** The chain a rule jumps or goes to (`-j X` / `-g X`), if any. */
function targetOf(rule: string): string | undefined {
  const m = / -[jg] (\S+)/.exec(rule);
  return m?.[1];
}

/** Declared chains of one table, each after the declared chains it jumps to (DFS post-order). */
function dependencyOrder(t: TableParts, skip: ReadonlySet<string>): string[] {
  const order: string[] = [];
  const state = new Map<string, 'visiting' | 'done'>();
  const visit = (root: string): void => {
    // Iterative DFS: chains of one Service nest a few levels, but a long chain list must not
    // exhaust the stack.
    const stack: { chain: string; targets: string[]; next: number }[] = [];
    const push = (chain: string): void => {
      state.set(chain, 'visiting');
      const targets = (t.rules.get(chain) ?? [])
        .map(targetOf)
        .filter((x): x is string => x !== undefined && x !== chain && t.decls.has(x) && !skip.has(x));
      stack.push({ chain, targets, next: 0 });
    };
    push(root);
    while (stack.length > 0) {
      const top = stack[stack.length - 1]!;
      if (top.next < top.targets.length) {
        const target = top.targets[top.next++]!;
        const s = state.get(target);
        if (s === 'visiting') throw new ChunkingError(`jump cycle through ${target} in ${t.table}`);
        if (s === undefined) push(target);
        continue;
      }
      stack.pop();
      state.set(top.chain, 'done');
      order.push(top.chain);
    }
  };
  for (const chain of t.decls.keys()) {
    if (skip.has(chain) || state.has(chain)) continue;
    visit(chain);
  }
  return order;
}

/** How a chunked input is cut. */
export interface ChunkLimits {
  /** Declared chains per transaction. */
  readonly maxChains: number;
  /**
   * Whether a chain exists in the kernel before the restore. Without it every chain is taken to
   * exist, and each is written whole in one transaction.
   */
  readonly exists?: (table: string, chain: string) => boolean;
  /** Rules per transaction of a new, unreachable chain filled in parts (default 1,000). */
  readonly maxRules?: number;
}

/**
 * The chains of `t` that may be filled over several transactions: they do not exist yet, and every
 * declared chain that jumps to them is such a chain too (rules of undeclared chains, the built-in
 * jumps among them, go in the table's last transaction). Nothing can reach them before that.
 * `order` has every chain after the chains it jumps to, so walking it backwards sees the jumpers first.
 */
function unreachedChains(
  t: TableParts,
  order: readonly string[],
  exists: (table: string, chain: string) => boolean,
): Set<string> {
  const jumpers = new Map<string, string[]>();
  for (const chain of order) {
    for (const r of t.rules.get(chain) ?? []) {
      const target = targetOf(r);
      if (target === undefined || target === chain) continue;
      const list = jumpers.get(target);
      if (list) list.push(chain);
      else jumpers.set(target, [chain]);
    }
  }
  const out = new Set<string>();
  for (let i = order.length - 1; i >= 0; i--) {
    const chain = order[i]!;
    if (!exists(t.table, chain) && (jumpers.get(chain) ?? []).every((j) => out.has(j))) out.add(chain);
  }
  return out;
}

/**
 * The `--noflush` restore input `input` plus `extras` (as mergeExtraLines would add them, without
 * that copy of the input) as transactions of at most `maxChains` declared chains each, in pieces to
 * write in order (one process). Throws ChunkingError on an input it cannot order (a jump cycle);
 * callers then write the merged input as one transaction.
 */
export function chunkedRestoreInput(
  input: string,
  limits: number | ChunkLimits,
  ...extras: readonly ExtraLines[]
): string[] {
  const { maxChains, exists, maxRules = 1000 } = typeof limits === 'number' ? { maxChains: limits } : limits;
  if (!Number.isInteger(maxChains) || maxChains < 1) throw new ChunkingError(`maxChains ${maxChains}`);
  if (!Number.isInteger(maxRules) || maxRules < 1) throw new ChunkingError(`maxRules ${maxRules}`);
  const out: string[] = [];
  for (const t of splitTables(input, extras)) {
    const deleted = new Set(t.deletes.map((l) => l.slice(3).trim()));
    const order = dependencyOrder(t, deleted);
    const inParts = exists === undefined ? new Set<string>() : unreachedChains(t, order, exists);
    for (let i = 0; i < order.length; i += maxChains) {
      const lines = [`*${t.table}`];
      const part = order.slice(i, i + maxChains);
      for (const c of part) lines.push(t.decls.get(c)!);
      const later: string[] = [];
      for (const c of part) {
        const rules = t.rules.get(c) ?? [];
        if (inParts.has(c) && rules.length > maxRules) {
          for (let r = 0; r < maxRules; r++) lines.push(rules[r]!);
          for (let r = maxRules; r < rules.length; r++) later.push(rules[r]!);
        } else {
          for (const r of rules) lines.push(r);
        }
      }
      lines.push('COMMIT');
      out.push(lines.join('\n') + '\n');
      // The rest of the new chains' rules, appended in order (declared above, so not flushed again).
      for (let r = 0; r < later.length; r += maxRules) {
        out.push([`*${t.table}`, ...later.slice(r, r + maxRules), 'COMMIT'].join('\n') + '\n');
      }
    }
    // Rules of chains that are not declared here (built-in chains, chains that already exist) and
    // the deletions: last, when every chain they name exists and nothing jumps to a deleted chain.
    for (const c of deleted) {
      if (t.rules.has(c)) throw new ChunkingError(`chain ${c} is deleted but has rules`);
    }
    const undeclared = [...t.rules].filter(([c]) => !t.decls.has(c)).flatMap(([, r]) => r);
    const last = [
      ...[...deleted].map((c) => t.decls.get(c) ?? `:${c} - [0:0]`),
      ...undeclared,
      ...t.tail,
      ...t.deletes,
    ];
    if (last.length > 0 || order.length === 0) out.push([`*${t.table}`, ...last, 'COMMIT'].join('\n') + '\n');
  }
  return out;
}
