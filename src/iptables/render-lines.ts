/**
 * Output buffers of the iptables renderer and the input checks that keep object text from ever
 * breaking a restore line. Lines are collected in arrays and joined once at the end.
 */

/** Lines of one section of the restore input, and how many of them are rules. */
export class LineBuffer {
  private readonly kept: string[] = [];
  /** Rules written (`-X CHAIN` lines are not rules). */
  count = 0;

  add(line: string): void {
    this.count++;
    this.kept.push(line);
  }

  /** Appends rule lines rendered elsewhere (a Service's memoised contribution). */
  append(lines: readonly string[]): void {
    this.count += lines.length;
    for (const l of lines) this.kept.push(l);
  }

  /** A line that is written but not counted as a rule (`-X CHAIN`). */
  addUncounted(line: string): void {
    this.kept.push(line);
  }

  clear(): void {
    this.count = 0;
    this.kept.length = 0;
  }

  get lines(): readonly string[] {
    return this.kept;
  }
}

/**
 * Complete lines as one flat text (no final newline): `lines` of them, `rules` of which are rules. A
 * Service's lines are joined as soon as they are rendered, so the rendered lines (ropes of their
 * pieces) die young instead of living through the whole render (45 MB at 10k Services).
 */
export interface Block {
  readonly text: string;
  readonly lines: number;
  readonly rules: number;
}

export const EMPTY_BLOCK: Block = { text: '', lines: 0, rules: 0 };

export function blockOf(buffer: LineBuffer): Block {
  const lines = buffer.lines;
  return lines.length === 0
    ? EMPTY_BLOCK
    : { text: lines.join('\n'), lines: lines.length, rules: buffer.count };
}

/** Blocks of one part of the restore input, in order, with their line and rule totals. */
export class Section {
  readonly blocks: string[] = [];
  lines = 0;
  rules = 0;

  add(block: Block): void {
    if (block.text === '') return;
    this.blocks.push(block.text);
    this.lines += block.lines;
    this.rules += block.rules;
  }
}

/**
 * A copy of `s` that does not point into the string it was sliced from. V8 keeps a substring as a
 * view of its parent: a chain name sliced out of a 21 MB restore input and kept as a map key would
 * keep the whole input alive until the next sync.
 */
export function detached(s: string): string {
  return s.length < 13 ? s : (' ' + s).slice(1);
}

/** `:CHAIN - [0:0]`: with --noflush, creates or flushes the chain. */
export function chainLine(chain: string): string {
  return `:${chain} - [0:0]`;
}

/*
 * Input checks. The model validates everything already; these cheap character scans (no regexes,
 * they run per object in the hot loop) guarantee the renderer can never emit a newline, a quote, a
 * space or an option from object text whatever it is handed.
 */

function isHexOrDigit(c: number): boolean {
  return (c >= 48 && c <= 57) || (c >= 97 && c <= 102) || (c >= 65 && c <= 70);
}

/** Canonical-looking IP text of the given family: digits/dots (IPv4) or hex/colons/dots (IPv6). */
export function isSafeIP(text: string, v6: boolean): boolean {
  const n = text.length;
  if (n < 2 || n > 45) return false;
  let colons = 0;
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i);
    if (c === 58) colons++;
    else if (c === 46) continue;
    else if (v6 ? !isHexOrDigit(c) : c < 48 || c > 57) return false;
  }
  return v6 ? colons >= 2 : colons === 0;
}

/** `ip/len` with a safe IP and a 1–3 digit prefix length. */
export function isSafeCIDR(text: string, v6: boolean): boolean {
  const slash = text.indexOf('/');
  if (slash <= 0) return false;
  const len = text.length - slash - 1;
  if (len < 1 || len > 3) return false;
  for (let i = slash + 1; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 48 || c > 57) return false;
  }
  const bits = Number(text.slice(slash + 1));
  return bits <= (v6 ? 128 : 32) && isSafeIP(text.slice(0, slash), v6);
}

/** ServicePortName text: DNS labels, `/` and `:` only (it appears unquoted in comments). */
export function isSafeServicePortName(text: string): boolean {
  const n = text.length;
  if (n < 3 || n > 512) return false;
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i);
    const ok =
      (c >= 97 && c <= 122) ||
      (c >= 65 && c <= 90) ||
      (c >= 48 && c <= 57) ||
      c === 45 || // -
      c === 46 || // .
      c === 95 || // _
      c === 47 || // /
      c === 58; // :
    if (!ok) return false;
  }
  return text.charCodeAt(0) !== 45;
}

/** Interface name or prefix (IFNAMSIZ 16 incl. NUL); no leading dash so it can't look like an option. */
export function isSafeInterfaceName(text: string): boolean {
  const n = text.length;
  if (n < 1 || n > 15 || text.charCodeAt(0) === 45) return false;
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i);
    const ok =
      (c >= 97 && c <= 122) ||
      (c >= 65 && c <= 90) ||
      (c >= 48 && c <= 57) ||
      c === 45 ||
      c === 46 ||
      c === 95;
    if (!ok) return false;
  }
  return true;
}

export function isPort(n: number): boolean {
  return Number.isInteger(n) && n >= 1 && n <= 65535;
}
