/**
 * Output buffers of the iptables renderer (the input checks are src/modes/rule-input-checks.ts).
 * Lines are collected in arrays and joined once at the end.
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
