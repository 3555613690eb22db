import { KUBE_PROXY_CANARY } from './iptables.js';
import type { ExtraLines } from '../iptables-rules/jump-plan.js';
import { isServiceChainName } from './names.js';

/**
 * The whole-table full sync (nf_tables backend). `iptables-restore --noflush` costs
 * O(commands × distinct chains) there: iptables-nft keeps the chain names a batch touches in a sorted
 * linked list (nft-cache.c `cache_chain_list_insert`) and walks it for every rule, so a 10k-Service
 * full sync takes minutes. A restore without --noflush replaces whole tables and stays linear, but
 * would drop other agents' rules; so the input re-declares every foreign chain and rule of nat and
 * filter verbatim (listed with `-S` just before) around svcplane's own rendered chains.
 * Pure: the caller lists the kernel and runs the restore.
 */

export interface KernelChain {
  readonly name: string;
  /** A base chain (has a hook): PREROUTING, INPUT, … */
  readonly builtin: boolean;
}

/** `nft list chains <family>` output → chains per iptables table (`nat`, `filter`, …). */
export function parseNftChains(text: string, family: 'ip' | 'ip6'): Map<string, KernelChain[]> {
  const out = new Map<string, KernelChain[]>();
  let table: KernelChain[] | undefined;
  let last: { name: string; builtin: boolean } | undefined;
  const flush = (): void => {
    if (table && last) table.push({ name: last.name, builtin: last.builtin });
    last = undefined;
  };
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    const t = /^table (\S+) (\S+) \{$/.exec(line);
    if (t) {
      flush();
      if (t[1] === family) {
        const name = unquote(t[2]!);
        table = out.get(name) ?? [];
        out.set(name, table);
      } else {
        table = undefined;
      }
      continue;
    }
    const c = /^chain (\S+) \{$/.exec(line);
    if (c) {
      flush();
      last = { name: unquote(c[1]!), builtin: false };
      continue;
    }
    if (last && /\bhook \S+/.test(line)) last.builtin = true;
    if (line === '}' && last) flush();
  }
  flush();
  return out;
}

function unquote(s: string): string {
  return s.length >= 2 && s.startsWith('"') && s.endsWith('"') ? s.slice(1, -1) : s;
}

/** One chain to list with `-S`: built-in chains and chains that are not svcplane's. */
export interface ChainRequest {
  readonly table: string;
  readonly chain: string;
  readonly builtin: boolean;
}

/** The tables a whole-table restore replaces. */
export const WHOLE_TABLES = ['filter', 'nat'] as const;

/**
 * Which kernel chains must be carried over: every built-in chain and every chain svcplane does not
 * own. Ours = declared by the rendered input, the canary, and (nat) any per-service chain, so stale
 * service chains simply disappear with the table.
 */
export function foreignChainRequests(
  kernel: ReadonlyMap<string, readonly KernelChain[]>,
  ours: ReadonlyMap<string, ReadonlySet<string>>,
): ChainRequest[] {
  const out: ChainRequest[] = [];
  for (const table of WHOLE_TABLES) {
    const own = ours.get(table) ?? new Set<string>();
    for (const c of kernel.get(table) ?? []) {
      if (c.builtin) {
        out.push({ table, chain: c.name, builtin: true });
        continue;
      }
      if (own.has(c.name) || c.name === KUBE_PROXY_CANARY) continue;
      if (table === 'nat' && isServiceChainName(c.name)) continue;
      out.push({ table, chain: c.name, builtin: false });
    }
  }
  return out;
}

/**
 * Restore input that lists the requested chains (`-S CHAIN`, with `-v` for counters) in one
 * iptables-restore process. It changes nothing (the batch is empty).
 */
export function listingInput(requests: readonly ChainRequest[], counters: boolean): string {
  const lines: string[] = [];
  for (const table of WHOLE_TABLES) {
    const reqs = requests.filter((r) => r.table === table);
    if (reqs.length === 0) continue;
    lines.push(`*${table}`);
    for (const r of reqs) lines.push(counters ? `-v -S ${r.chain}` : `-S ${r.chain}`);
    lines.push('COMMIT');
  }
  return lines.length === 0 ? '' : lines.join('\n') + '\n';
}

/** Foreign content of one table, as restore lines. */
export interface ForeignTable {
  /** `:CHAIN POLICY [p:b]` (built-in) and `:CHAIN - [0:0]` lines, built-ins first. */
  readonly declarations: readonly string[];
  /** `-A …` lines in kernel order, counters inline (`-c p b`) when listed with `-v`. */
  readonly rules: readonly string[];
}

export class ListingParseError extends Error {
  constructor(reason: string) {
    super(`iptables -S listing: ${reason}`);
    this.name = 'ListingParseError';
  }
}

/**
 * Splits the `-S` output of `listingInput` back into tables. The output names no table, so it is
 * read in request order: each chain starts with its `-P` or `-N` line, then its `-A` lines.
 */
export function parseListing(requests: readonly ChainRequest[], text: string): Map<string, ForeignTable> {
  const lines = text.split('\n').filter((l) => l.trim() !== '');
  const out = new Map<string, { declarations: string[]; builtins: string[]; rules: string[] }>();
  let i = 0;
  const ordered = WHOLE_TABLES.flatMap((t) => requests.filter((r) => r.table === t));
  for (const r of ordered) {
    const head = lines[i] ?? '';
    const entry = out.get(r.table) ?? { declarations: [], builtins: [], rules: [] };
    out.set(r.table, entry);
    if (r.builtin) {
      const m = /^-P (\S+) (\S+)(?: -c (\d+) (\d+))?$/.exec(head);
      if (!m || m[1] !== r.chain)
        throw new ListingParseError(`expected "-P ${r.chain} …", got ${JSON.stringify(head)}`);
      entry.builtins.push(`:${r.chain} ${m[2]} [${m[3] ?? 0}:${m[4] ?? 0}]`);
    } else {
      if (head !== `-N ${r.chain}`)
        throw new ListingParseError(`expected "-N ${r.chain}", got ${JSON.stringify(head)}`);
      entry.declarations.push(`:${r.chain} - [0:0]`);
    }
    i++;
    const prefix = `-A ${r.chain} `;
    while (i < lines.length && lines[i]!.startsWith(prefix)) entry.rules.push(lines[i++]!);
  }
  if (i !== lines.length) throw new ListingParseError(`unexpected line ${JSON.stringify(lines[i])}`);
  const result = new Map<string, ForeignTable>();
  for (const [t, e] of out) {
    result.set(t, { declarations: [...e.builtins, ...e.declarations], rules: e.rules });
  }
  return result;
}

/** The listing with counters removed: what must not change between listing and restore. */
export function withoutCounters(listing: string): string {
  return listing.replace(/ -c \d+ \d+/g, '');
}

/** The listing as iptables-save text, for the jump/canary planners that read a SavedRuleset. */
export function listingAsSave(foreign: ReadonlyMap<string, ForeignTable>): string {
  const out: string[] = [];
  for (const [t, f] of foreign) {
    out.push(`*${t}`, ...f.declarations, ...f.rules.map((r) => r.replace(/ -c \d+ \d+/, '')), 'COMMIT');
  }
  return out.join('\n') + '\n';
}

/** Requests for the built-in chains of nat and filter only (what the chunked full sync lists). */
export function builtinChainRequests(kernel: ReadonlyMap<string, readonly KernelChain[]>): ChainRequest[] {
  return WHOLE_TABLES.flatMap((table) =>
    (kernel.get(table) ?? []).filter((c) => c.builtin).map((c) => ({ table, chain: c.name, builtin: true })),
  );
}

/**
 * iptables-save text of what the chunked full sync knows about the kernel: every chain of mangle,
 * nat and filter (names from `nft list chains`) and the listed rules (built-in chains). Enough for
 * the jump and canary planners, which look at built-in chains' rules and at chain existence.
 */
export function kernelAsSave(
  kernel: ReadonlyMap<string, readonly KernelChain[]>,
  listed: ReadonlyMap<string, ForeignTable>,
): string {
  const out: string[] = [];
  for (const table of ['mangle', ...WHOLE_TABLES]) {
    const chains = kernel.get(table) ?? [];
    const f = listed.get(table);
    if (chains.length === 0 && !f) continue;
    out.push(`*${table}`);
    const declared = new Set<string>();
    for (const d of f?.declarations ?? []) {
      out.push(d);
      declared.add(d.slice(1, d.indexOf(' ')));
    }
    for (const c of chains)
      if (!declared.has(c.name)) out.push(`:${c.name} ${c.builtin ? 'ACCEPT' : '-'} [0:0]`);
    for (const r of f?.rules ?? []) out.push(r.replace(/ -c \d+ \d+/, ''));
    out.push('COMMIT');
  }
  return out.length === 0 ? '' : out.join('\n') + '\n';
}

/** Chains each table section of a rendered input declares. */
export function declaredChains(input: string): Map<string, Set<string>> {
  const out = new Map<string, Set<string>>();
  let current: Set<string> | undefined;
  for (let start = 0; start < input.length;) {
    let end = input.indexOf('\n', start);
    if (end === -1) end = input.length;
    const c = input.charCodeAt(start);
    if (c === 42 /* * */) {
      const name = input.slice(start + 1, end);
      current = out.get(name) ?? new Set<string>();
      out.set(name, current);
    } else if (c === 58 /* : */ && current) {
      const sp = input.indexOf(' ', start);
      current.add(input.slice(start + 1, sp === -1 || sp > end ? end : sp));
    }
    start = end + 1;
  }
  return out;
}

/**
 * The whole-table restore input: per table, foreign declarations, svcplane's declarations, extra
 * declarations (canary, jump targets), then foreign rules (kernel order), svcplane's rules and the
 * extra rules (missing jumps, `-I … 1`). Declarations come first because a rule may only jump to a
 * chain declared above it.
 */
export function wholeTableInput(
  rendered: string,
  foreign: ReadonlyMap<string, ForeignTable>,
  ...extras: ExtraLines[]
): string {
  return wholeTableChunks(rendered, foreign, ...extras).join('');
}

/** wholeTableInput in pieces, in order: the rendered sections are views, not copies. */
export function wholeTableChunks(
  rendered: string,
  foreign: ReadonlyMap<string, ForeignTable>,
  ...extras: ExtraLines[]
): string[] {
  const parts: string[] = [];
  const sections = rendered.split(/(?=^\*)/m);
  const seen = new Set<string>();
  for (const section of sections) {
    const m = /^\*(\S+)\n/.exec(section);
    if (!m) continue;
    const table = m[1]!;
    seen.add(table);
    const body = section.slice(m[0].length, section.lastIndexOf('COMMIT\n'));
    // Rendered sections hold all declarations before any rule.
    const firstRule = body.search(/^[^:]/m);
    const decls = firstRule === -1 ? body : body.slice(0, firstRule);
    const rules = firstRule === -1 ? '' : body.slice(firstRule);
    const f = foreign.get(table);
    const extra = extras.flatMap((e) => e.get(table) ?? []);
    parts.push(
      `*${table}\n`,
      joinLines(f?.declarations ?? []),
      decls,
      joinLines(extra.filter((l) => l.startsWith(':'))),
      joinLines(f?.rules ?? []),
      rules,
      joinLines(extra.filter((l) => !l.startsWith(':'))),
      'COMMIT\n',
    );
  }
  for (const table of WHOLE_TABLES) {
    if (seen.has(table)) continue;
    const f = foreign.get(table);
    const extra = extras.flatMap((e) => e.get(table) ?? []);
    parts.push(
      `*${table}\n`,
      joinLines(f?.declarations ?? []),
      joinLines(extra.filter((l) => l.startsWith(':'))),
      joinLines(f?.rules ?? []),
      joinLines(extra.filter((l) => !l.startsWith(':'))),
      'COMMIT\n',
    );
  }
  return parts.filter((p) => p !== '');
}

function joinLines(lines: readonly string[]): string {
  return lines.length === 0 ? '' : lines.join('\n') + '\n';
}

/** The canary declarations of the replaced tables (a whole-table restore must re-declare them). */
export function wholeTableCanaries(): ExtraLines {
  return new Map(WHOLE_TABLES.map((t) => [t, [`:${KUBE_PROXY_CANARY} - [0:0]`]]));
}
