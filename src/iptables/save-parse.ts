import { isServiceChainName } from './names.js';

/**
 * Pure parser for `iptables-save` / `ip6tables-save` output (with or without `-c` counters) and for
 * `iptables-restore` input of the same shape. Shared by cleanup, partial sync, `svcplane diff` and
 * `svcplane trace`: keep it general and never spawn anything here.
 *
 * Tokenizing follows iptables-restore's own (`add_param_to_argv` in xshared.c), so the args of a
 * parsed rule are exactly the argv iptables-restore would build from the line: a double quote opens
 * and closes a quoted token (`""` is an empty token), a backslash escapes the next character only
 * inside double quotes, single quotes are ordinary characters.
 */

export interface SavedChain {
  readonly name: string;
  /** Built-in chains (PREROUTING, INPUT, ...) carry a policy; user chains are written with `-`. */
  readonly builtin: boolean;
  /** `ACCEPT` / `DROP` for built-in chains, undefined for user chains. */
  readonly policy?: string;
  readonly packets: number;
  readonly bytes: number;
  /** 1-based line of the `:CHAIN` declaration. */
  readonly line: number;
}

export interface SavedRule {
  readonly chain: string;
  /** Tokens after `-A CHAIN`, unquoted. */
  readonly args: readonly string[];
  /** From a `[packets:bytes]` prefix (iptables-save -c), when present. */
  readonly packets?: number;
  readonly bytes?: number;
  /** 1-based line in the parsed text. */
  readonly line: number;
  /** The rule as written, from `-A` on (without a counter prefix), for display and diffs. */
  readonly text: string;
}

export interface SavedTable {
  readonly name: string;
  /** Declared chains in input order. */
  readonly chains: readonly SavedChain[];
  readonly chainsByName: ReadonlyMap<string, SavedChain>;
  /** All `-A` rules in input order. */
  readonly rules: readonly SavedRule[];
  /** Rules per chain, in order (chains without rules are absent). */
  readonly rulesByChain: ReadonlyMap<string, readonly SavedRule[]>;
  /** Chains deleted with `-X CHAIN` (restore input only; iptables-save never writes these). */
  readonly deletedChains: readonly string[];
  /** Rules deleted with `-D CHAIN spec` (restore input only), in order. */
  readonly deletedRules: readonly SavedRule[];
  /** 1-based line of the `*table` header. */
  readonly line: number;
  /** Whether the table block ended with COMMIT. */
  readonly committed: boolean;
}

export interface SavedRuleset {
  /** Tables by name, in input order. A table that appears twice is merged (later lines append). */
  readonly tables: ReadonlyMap<string, SavedTable>;
}

export class SaveParseError extends Error {
  constructor(
    readonly line: number,
    readonly lineText: string,
    readonly reason: string,
  ) {
    super(`iptables-save line ${line}: ${reason}: ${JSON.stringify(lineText.slice(0, 200))}`);
    this.name = 'SaveParseError';
  }
}

interface MutableTable {
  name: string;
  chains: SavedChain[];
  chainsByName: Map<string, SavedChain>;
  rules: SavedRule[];
  rulesByChain: Map<string, SavedRule[]>;
  deletedChains: string[];
  deletedRules: SavedRule[];
  line: number;
  committed: boolean;
}

const COUNTERS = /^\[(\d+):(\d+)\]$/;

/** Parse iptables-save output. Throws SaveParseError on a line it cannot make sense of. */
export function parseIptablesSave(text: string): SavedRuleset {
  const tables = new Map<string, MutableTable>();
  let current: MutableTable | undefined;
  const lines = text.split('\n');
  let lastLine = 0;
  for (let i = 0; i < lines.length; i++) {
    let raw = lines[i] ?? '';
    if (raw.endsWith('\r')) raw = raw.slice(0, -1);
    const lineNo = i + 1;
    const line = raw.trim();
    if (line === '' || line.charCodeAt(0) === 35 /* # */) continue;
    lastLine = lineNo;
    const c0 = line.charCodeAt(0);
    if (c0 === 42 /* * */) {
      const name = line.slice(1).trim();
      if (!name || /\s/.test(name)) throw new SaveParseError(lineNo, raw, 'bad table header');
      if (current && !current.committed)
        throw new SaveParseError(lineNo, raw, `table ${current.name} not committed`);
      const existing = tables.get(name);
      if (existing) {
        existing.committed = false;
        current = existing;
      } else {
        current = {
          name,
          chains: [],
          chainsByName: new Map(),
          rules: [],
          rulesByChain: new Map(),
          deletedChains: [],
          deletedRules: [],
          line: lineNo,
          committed: false,
        };
        tables.set(name, current);
      }
      continue;
    }
    if (line === 'COMMIT') {
      if (!current || current.committed) throw new SaveParseError(lineNo, raw, 'COMMIT outside a table');
      current.committed = true;
      continue;
    }
    if (!current || current.committed) throw new SaveParseError(lineNo, raw, 'line outside a table');
    if (c0 === 58 /* : */) {
      const chain = parseChainLine(line, lineNo, raw);
      if (!current.chainsByName.has(chain.name)) {
        current.chains.push(chain);
        current.chainsByName.set(chain.name, chain);
      }
      continue;
    }
    let rest = line;
    let packets: number | undefined;
    let bytes: number | undefined;
    if (c0 === 91 /* [ */) {
      const end = line.indexOf(']');
      const m = end > 0 ? COUNTERS.exec(line.slice(0, end + 1)) : null;
      if (!m) throw new SaveParseError(lineNo, raw, 'bad counters');
      packets = Number(m[1]);
      bytes = Number(m[2]);
      rest = line.slice(end + 1).trimStart();
    }
    if (rest.startsWith('-A ')) {
      // Hot path (every rule of a big save): split off the chain only; args are tokenized on
      // first use, so callers that only need chains (stale-chain detection) allocate little.
      let start = 3;
      while (rest.charCodeAt(start) === 32 || rest.charCodeAt(start) === 9) start++;
      let end = start;
      while (end < rest.length && rest.charCodeAt(end) !== 32 && rest.charCodeAt(end) !== 9) end++;
      if (end > start && rest.charCodeAt(start) !== 34) {
        if (rest.indexOf('"', end) !== -1) checkQuotes(rest, end, lineNo, raw);
        const rule = new LazyRule(rest.slice(start, end), packets, bytes, lineNo, rest, end);
        current.rules.push(rule);
        const list = current.rulesByChain.get(rule.chain);
        if (list) list.push(rule);
        else current.rulesByChain.set(rule.chain, [rule]);
        continue;
      }
    }
    const tokens = tokenize(rest, lineNo, raw);
    const cmd = tokens[0];
    const chain = tokens[1];
    if ((cmd === '-A' || cmd === '--append') && chain) {
      // One object shape for every rule (counters undefined when absent) keeps V8 fast.
      tokens.splice(0, 2);
      const rule: SavedRule = { chain, args: tokens, packets, bytes, line: lineNo, text: rest };
      current.rules.push(rule);
      const list = current.rulesByChain.get(chain);
      if (list) list.push(rule);
      else current.rulesByChain.set(chain, [rule]);
      continue;
    }
    if ((cmd === '-D' || cmd === '--delete') && chain && tokens.length > 2) {
      current.deletedRules.push({ chain, args: tokens.slice(2), line: lineNo, text: rest });
      continue;
    }
    if ((cmd === '-X' || cmd === '--delete-chain') && chain && tokens.length === 2) {
      current.deletedChains.push(chain);
      continue;
    }
    throw new SaveParseError(lineNo, raw, 'unsupported line');
  }
  if (current && !current.committed) {
    throw new SaveParseError(
      lastLine,
      lines[lastLine - 1] ?? '',
      `table ${current.name} not committed (truncated output?)`,
    );
  }
  return { tables };
}

/** A rule whose args are tokenized on first access (see the hot path in parseIptablesSave). */
class LazyRule implements SavedRule {
  private argsCache: readonly string[] | undefined;
  constructor(
    readonly chain: string,
    readonly packets: number | undefined,
    readonly bytes: number | undefined,
    readonly line: number,
    readonly text: string,
    private readonly argsStart: number,
  ) {}

  get args(): readonly string[] {
    this.argsCache ??= tokenize(this.text.slice(this.argsStart), this.line, this.text);
    return this.argsCache;
  }

  toJSON(): SavedRule {
    return {
      chain: this.chain,
      args: this.args,
      packets: this.packets,
      bytes: this.bytes,
      line: this.line,
      text: this.text,
    };
  }
}

/** Throw the tokenizer's error for an unterminated quote without building tokens. */
function checkQuotes(text: string, from: number, lineNo: number, raw: string): void {
  let quoted = false;
  for (let i = from; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (quoted && c === 92 /* backslash */) i++;
    else if (c === 34) quoted = !quoted;
  }
  if (quoted) throw new SaveParseError(lineNo, raw, 'unterminated quote');
}

function parseChainLine(line: string, lineNo: number, raw: string): SavedChain {
  const parts = line.slice(1).split(/\s+/);
  const name = parts[0];
  const policy = parts[1];
  if (!name || !policy || parts.length > 3) throw new SaveParseError(lineNo, raw, 'bad chain line');
  let packets = 0;
  let bytes = 0;
  if (parts[2] !== undefined) {
    const m = COUNTERS.exec(parts[2]);
    if (!m) throw new SaveParseError(lineNo, raw, 'bad chain counters');
    packets = Number(m[1]);
    bytes = Number(m[2]);
  }
  const builtin = policy !== '-';
  return builtin
    ? { name, builtin, policy, packets, bytes, line: lineNo }
    : { name, builtin, packets, bytes, line: lineNo };
}

/**
 * Split one line into tokens the way iptables-restore does (see the module comment).
 * Throws on an unterminated quote.
 */
export function tokenize(line: string, lineNo = 0, raw = line): string[] {
  const out: string[] = [];
  const n = line.length;
  let i = 0;
  while (i < n) {
    let c = line.charCodeAt(i);
    if (c === 32 || c === 9) {
      i++;
      continue;
    }
    // A token: plain characters, possibly with a quoted part that ends it.
    const start = i;
    while (i < n) {
      c = line.charCodeAt(i);
      if (c === 32 || c === 9 || c === 34) break;
      i++;
    }
    if (c !== 34 || i >= n) {
      out.push(line.slice(start, i));
      continue;
    }
    let buf = line.slice(start, i);
    i++; // opening quote
    let seg = i;
    for (;;) {
      if (i >= n) throw new SaveParseError(lineNo, raw, 'unterminated quote');
      c = line.charCodeAt(i);
      if (c === 92 /* backslash */) {
        buf += line.slice(seg, i);
        if (i + 1 >= n) throw new SaveParseError(lineNo, raw, 'unterminated quote');
        buf += line[i + 1] as string;
        i += 2;
        seg = i;
      } else if (c === 34) {
        buf += line.slice(seg, i);
        i++;
        break;
      } else {
        i++;
      }
    }
    // The closing quote ends the token, as in iptables-restore.
    out.push(buf);
  }
  return out;
}

const NEEDS_QUOTES = /[\s"\\']/;

/** Quote one argument so that iptables-restore reads it back unchanged. */
export function quoteArg(arg: string): string {
  if (arg !== '' && !NEEDS_QUOTES.test(arg)) return arg;
  return `"${arg.replace(/[\\"]/g, (c) => `\\${c}`)}"`;
}

/** Rule args as one restore-input fragment (`-m comment --comment "a b" -j X`). */
export function formatArgs(args: readonly string[]): string {
  return args.map(quoteArg).join(' ');
}

// ---- rule match-spec helpers ----

type RuleLike = Pick<SavedRule, 'args'> | readonly string[];

function argsOf(rule: RuleLike): readonly string[] {
  return Array.isArray(rule) ? (rule as readonly string[]) : (rule as Pick<SavedRule, 'args'>).args;
}

export interface ArgMatch {
  readonly value: string;
  /** True when the option is preceded by `!` (iptables-save writes `! -s 10.0.0.0/8`, `! --dport 80`). */
  readonly negated: boolean;
  /** Index of the option token in args. */
  readonly index: number;
}

// Options whose value is free text and may itself look like an option (`--comment "-j"`).
const FREE_TEXT_OPTIONS = new Set(['--comment', '--log-prefix', '--nflog-prefix', '--string']);

/** Every occurrence of an option that takes one value, e.g. all `-m` modules. */
export function findArgs(rule: RuleLike, flag: string): ArgMatch[] {
  const args = argsOf(rule);
  const out: ArgMatch[] = [];
  for (let i = 0; i < args.length - 1; i++) {
    const t = args[i];
    if (t === flag) {
      out.push({ value: args[i + 1] as string, negated: i > 0 && args[i - 1] === '!', index: i });
      i++;
    } else if (t !== undefined && FREE_TEXT_OPTIONS.has(t)) {
      i++;
    }
  }
  return out;
}

/** The first occurrence of an option with its value, or undefined. */
export function findArg(rule: RuleLike, flag: string): ArgMatch | undefined {
  return findArgs(rule, flag)[0];
}

/** Value of the first occurrence of `flag` (e.g. `getArg(rule, '-j')`), negated or not. */
export function getArg(rule: RuleLike, flag: string): string | undefined {
  return findArg(rule, flag)?.value;
}

/** Whether the bare option appears (e.g. `--random-fully`), not counting free-text values. */
export function hasArg(rule: RuleLike, flag: string): boolean {
  const args = argsOf(rule);
  for (let i = 0; i < args.length; i++) {
    const t = args[i];
    if (t === flag) return true;
    if (t !== undefined && FREE_TEXT_OPTIONS.has(t)) i++;
  }
  return false;
}

/**
 * The chain or target a rule jumps or goes to (`-j X` / `-g X`), if any. The last one wins, so a
 * comment that happens to read "-j" cannot shadow the real target.
 */
export function ruleTarget(rule: RuleLike): string | undefined {
  const found = [
    ...findArgs(rule, '-j'),
    ...findArgs(rule, '--jump'),
    ...findArgs(rule, '-g'),
    ...findArgs(rule, '--goto'),
  ];
  let best: ArgMatch | undefined;
  for (const m of found) if (!best || m.index > best.index) best = m;
  return best?.value;
}

/** The `-m comment --comment` text, if any. */
export function ruleComment(rule: RuleLike): string | undefined {
  return getArg(rule, '--comment');
}

// ---- ruleset helpers ----

/** Declared chain names of one table (empty set when the table is absent). */
export function chainNamesOf(ruleset: SavedRuleset, table: string): Set<string> {
  return new Set(ruleset.tables.get(table)?.chains.map((c) => c.name) ?? []);
}

/** kube-proxy per-service chains (SVC, SVL, SEP, FW, EXT) declared in a table (normally nat). */
export function serviceChainsOf(ruleset: SavedRuleset, table = 'nat'): Set<string> {
  const out = new Set<string>();
  for (const c of ruleset.tables.get(table)?.chains ?? []) if (isServiceChainName(c.name)) out.add(c.name);
  return out;
}

/** Rules of one chain in order (empty when absent). */
export function rulesOf(ruleset: SavedRuleset, table: string, chain: string): readonly SavedRule[] {
  return ruleset.tables.get(table)?.rulesByChain.get(chain) ?? [];
}
