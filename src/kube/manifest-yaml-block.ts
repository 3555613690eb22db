import { CORE_SCHEMA, type ScalarTagDefinition } from 'js-yaml';
import { MAX_NESTING_DEPTH } from './manifest-limits.js';

/**
 * A front for js-yaml (manifest-parse.ts) that reads the YAML generated manifests are written in,
 * without js-yaml's event list: block mappings and sequences (also compact, `- key: v`, and a
 * sequence at its key's indentation), plain and single-line quoted scalars, empty flow collections
 * (`{}`, `[]`), full-line and trailing comments, `---` between documents. Anything else (tabs,
 * characters outside printable ASCII, anchors, aliases, tags, flow collections with content,
 * multi-line or block scalars, escapes in double quotes, directives, `...`, complex or duplicate
 * keys, `__proto__`, indentation it does not expect, nesting beyond MAX_NESTING_DEPTH) returns
 * undefined, and js-yaml reads the file: what this gives is what js-yaml gives, or nothing.
 *
 * Plain scalars resolve through js-yaml's own schema (CORE_SCHEMA's implicit tags, in its order,
 * dispatched by first character as js-yaml does), and keys become strings as its `{}`-based map
 * does (`String(key)`). Why: at 10k one-Service files (12 MB), js-yaml's events and their
 * construction were ~0.9 s of the load's CPU and most of its garbage (issue 14).
 */

/** Thrown (one instance, made once: no stack per throw) to leave the text to js-yaml; never escapes parseBlockYaml. */
const NOT_FAST = new Error('not block YAML the front reads');

/** Anything outside printable ASCII and newline (tabs, CR, control characters, non-ASCII). */
const OUTSIDE_FAST_CHARS = /[^\x20-\x7e\n]/;

/** V8's shortest sliced string (SlicedString::kMinLength); shorter substrings are copies already. */
const SLICE_MIN_LENGTH = 13;
/** A copy of `s` whose characters live in a string of its own (flattening the pair copies them). */
const copied = (s: string): string => (s.length >= SLICE_MIN_LENGTH ? (' ' + s).slice(1) : s);

const implicitTags: readonly ScalarTagDefinition[] = CORE_SCHEMA.tags.filter(
  (t): t is ScalarTagDefinition => t.nodeKind === 'scalar' && t.implicit,
);
/** js-yaml's dispatch of plain scalars by first character ('' for the empty scalar). */
const anyFirstChar = implicitTags.filter((t) => t.implicitFirstChars === null);
const byFirstChar = new Map<string, readonly ScalarTagDefinition[]>();
for (const t of implicitTags)
  for (const c of t.implicitFirstChars ?? [])
    byFirstChar.set(
      c,
      implicitTags.filter((u) => u.implicitFirstChars === null || u.implicitFirstChars.includes(c)),
    );
const strTag = CORE_SCHEMA.tags.find(
  (t): t is ScalarTagDefinition => t.nodeKind === 'scalar' && t.tagName === 'tag:yaml.org,2002:str',
);
if (strTag === undefined) throw new Error('js-yaml CORE_SCHEMA has no !!str tag');

/** A plain scalar's value, as js-yaml's CORE_SCHEMA resolves it. */
function plainValue(source: string): unknown {
  const candidates = byFirstChar.get(source.charAt(0)) ?? anyFirstChar;
  for (const tag of candidates) {
    const v: unknown = tag.resolve(source, false, tag.tagName);
    if (typeof v !== 'symbol') return v;
  }
  return strTag!.resolve(source, false, strTag!.tagName);
}

/** Longer plain scalars are left to js-yaml (YAML bounds implicit keys at 1024 characters). */
const MAX_PLAIN_CHARS = 1024;

const SPACE = 0x20;
const HASH = 0x23;
const DASH = 0x2d;
const COLON = 0x3a;
const DQUOTE = 0x22;
const SQUOTE = 0x27;

/** Characters that may not start a plain scalar here (`-`, `?`, `:` only when a space follows). */
function badPlainStart(c: number): boolean {
  switch (c) {
    case 0x2c: // ,
    case 0x5b: // [
    case 0x5d: // ]
    case 0x7b: // {
    case 0x7d: // }
    case HASH:
    case 0x26: // &
    case 0x2a: // *
    case 0x21: // !
    case 0x7c: // |
    case 0x3e: // >
    case SQUOTE:
    case DQUOTE:
    case 0x25: // %
    case 0x40: // @
    case 0x60: // `
      return true;
    default:
      return false;
  }
}

class BlockParser {
  /** The current line: its start, its first non-space character, its end without trailing spaces. */
  private lineStart = 0;
  private content = 0;
  private end = 0;
  /** Where the next line starts (past the current line's newline). */
  private next = 0;
  /** No current line: the text ended. */
  private eof = false;

  constructor(private readonly text: string) {}

  get indent(): number {
    return this.content - this.lineStart;
  }

  /** Moves to the next line with content (blank and comment lines skipped). */
  advance(): void {
    const text = this.text;
    for (;;) {
      const start = this.next;
      if (start >= text.length) {
        this.eof = true;
        return;
      }
      let nl = text.indexOf('\n', start);
      if (nl < 0) nl = text.length;
      this.next = nl + 1;
      let c = start;
      while (c < nl && text.charCodeAt(c) === SPACE) c++;
      if (c === nl || text.charCodeAt(c) === HASH) continue;
      let e = nl;
      while (text.charCodeAt(e - 1) === SPACE) e--;
      this.lineStart = start;
      this.content = c;
      this.end = e;
      return;
    }
  }

  /** Whether the current line is `---` (a document marker); other `---`/`...`/`%` lines at column 0 are not read here. */
  private atDocumentMarker(): boolean {
    if (this.eof || this.content !== this.lineStart) return false;
    const text = this.text;
    const c = text.charCodeAt(this.content);
    if (c === 0x25) throw NOT_FAST; // %
    if (text.startsWith('---', this.content)) {
      if (this.end === this.content + 3) return true;
      throw NOT_FAST;
    }
    if (text.startsWith('...', this.content)) throw NOT_FAST;
    return false;
  }

  documents(): unknown[] {
    const docs: unknown[] = [];
    let explicit = false;
    this.advance();
    while (!this.eof) {
      if (this.atDocumentMarker()) {
        if (explicit) docs.push(null);
        explicit = true;
        this.advance();
        continue;
      }
      if (this.indent !== 0) throw NOT_FAST;
      docs.push(this.node(this.content, 0));
      explicit = false;
      // A document's root is followed by the end or a marker.
      if (!this.eof && !this.atDocumentMarker()) throw NOT_FAST;
    }
    if (explicit) docs.push(null);
    return docs;
  }

  /** Whether `pos` (on the current line) opens a sequence entry: `-` then a space or the line's end. */
  private isEntry(pos: number): boolean {
    return (
      this.text.charCodeAt(pos) === DASH && (pos + 1 === this.end || this.text.charCodeAt(pos + 1) === SPACE)
    );
  }

  /** A collection starting at `pos` of the current line (its column is the collection's indentation). */
  private node(pos: number, depth: number): unknown {
    if (depth >= MAX_NESTING_DEPTH) throw NOT_FAST;
    const col = pos - this.lineStart;
    if (this.isEntry(pos)) return this.sequence(col, depth + 1);
    return this.mapping(pos, col, depth + 1);
  }

  private sequence(col: number, depth: number): unknown[] {
    const items: unknown[] = [];
    for (;;) {
      // The current line has `-` at column col.
      let p = this.lineStart + col + 1;
      while (p < this.end && this.text.charCodeAt(p) === SPACE) p++;
      if (p === this.end) {
        items.push(this.valueBelow(col, false, depth));
      } else if (this.isEntry(p) || this.keyEnd(p) >= 0) {
        items.push(this.node(p, depth));
      } else {
        items.push(this.inlineValue(p, depth));
        this.advance();
        if (!this.eof && this.indent > col) throw NOT_FAST;
      }
      if (this.eof || this.indent < col) return items;
      if (this.indent > col) throw NOT_FAST;
      if (!this.isEntry(this.content)) return items;
    }
  }

  private mapping(pos: number, col: number, depth: number): Record<string, unknown> {
    const obj: Record<string, unknown> = {};
    let p = pos;
    for (;;) {
      const colon = this.keyEnd(p);
      if (colon < 0) throw NOT_FAST;
      const key = this.key(p, colon);
      if (key === '__proto__' || Object.hasOwn(obj, key)) throw NOT_FAST;
      let v = colon + 1;
      while (v < this.end && this.text.charCodeAt(v) === SPACE) v++;
      if (v === this.end) {
        obj[key] = this.valueBelow(col, true, depth);
      } else {
        obj[key] = this.inlineValue(v, depth);
        this.advance();
        if (!this.eof && this.indent > col) throw NOT_FAST;
      }
      if (this.eof || this.indent < col) return obj;
      if (this.indent > col) throw NOT_FAST;
      if (this.atDocumentMarker()) return obj;
      p = this.content;
    }
  }

  /**
   * The value of `key:` or `-` with nothing after it on its line: a collection on the lines below,
   * more indented (for a key, also a sequence at the key's own indentation), or null.
   */
  private valueBelow(col: number, sameIndentSequence: boolean, depth: number): unknown {
    this.advance();
    if (this.eof || this.atDocumentMarker()) return null;
    if (this.indent > col || (sameIndentSequence && this.indent === col && this.isEntry(this.content))) {
      return this.node(this.content, depth);
    }
    return null;
  }

  /**
   * Where the key starting at `p` ends: the index of its `:` (followed by a space or the line's end),
   * or -1 when the line holds no key (a scalar). Quoted keys end at their closing quote.
   */
  private keyEnd(p: number): number {
    const text = this.text;
    const c = text.charCodeAt(p);
    if (c === DQUOTE || c === SQUOTE) {
      const close = this.closingQuote(p);
      if (close < 0) return -1;
      return text.charCodeAt(close + 1) === COLON &&
        (close + 2 === this.end || text.charCodeAt(close + 2) === SPACE)
        ? close + 1
        : -1;
    }
    for (let i = text.indexOf(':', p); i >= 0 && i < this.end; i = text.indexOf(':', i + 1)) {
      if (i + 1 === this.end || text.charCodeAt(i + 1) === SPACE) return i;
    }
    return -1;
  }

  /** The key text from `p` to the `:` at `colon`, as js-yaml's map stores it. */
  private key(p: number, colon: number): string {
    const c = this.text.charCodeAt(p);
    if (c === DQUOTE || c === SQUOTE) return this.quoted(p, colon - 1);
    const source = this.plainSource(p, colon);
    return String(plainValue(source));
  }

  /** A plain scalar's text from `p` to `end` (exclusive): checked, not resolved. */
  private plainSource(p: number, end: number): string {
    const text = this.text;
    // Empty, or longer than YAML lets an implicit key be.
    if (end <= p || end - p > MAX_PLAIN_CHARS) throw NOT_FAST;
    const c = text.charCodeAt(p);
    if (badPlainStart(c)) throw NOT_FAST;
    if ((c === DASH || c === 0x3f || c === COLON) && (p + 1 === end || text.charCodeAt(p + 1) === SPACE))
      throw NOT_FAST;
    const source = text.slice(p, end);
    // A comment, a key inside the value, or trailing spaces before the key's colon: js-yaml decides.
    if (source.includes(' #') || source.includes(': ') || source.endsWith(':') || source.endsWith(' '))
      throw NOT_FAST;
    return source;
  }

  /**
   * A scalar (or `{}`/`[]`, collections in one at `depth`) from `p` to the end of the current line,
   * a comment after it allowed.
   */
  private inlineValue(p: number, depth: number): unknown {
    const text = this.text;
    const c = text.charCodeAt(p);
    if (c === DQUOTE || c === SQUOTE) {
      const close = this.closingQuote(p);
      if (close < 0) throw NOT_FAST;
      this.restIsComment(close + 1);
      return copied(this.quoted(p, close));
    }
    if (c === 0x7b || c === 0x5b) {
      if (text.charCodeAt(p + 1) !== c + 2 || depth >= MAX_NESTING_DEPTH) throw NOT_FAST; // `{}` or `[]` only
      this.restIsComment(p + 2);
      return c === 0x7b ? {} : [];
    }
    // A comment starts at ` #` (searched on this line only).
    let end = this.end;
    for (let i = p + 1; i < end; i++) {
      if (text.charCodeAt(i) === HASH && text.charCodeAt(i - 1) === SPACE) {
        end = i - 1;
        while (text.charCodeAt(end - 1) === SPACE) end--;
        break;
      }
    }
    const v = plainValue(this.plainSource(p, end));
    return typeof v === 'string' ? copied(v) : v;
  }

  /** After a closing quote: the line ends, or a comment follows a space. */
  private restIsComment(p: number): void {
    if (p === this.end) return;
    if (this.text.charCodeAt(p) !== SPACE) throw NOT_FAST;
    let q = p;
    while (q < this.end && this.text.charCodeAt(q) === SPACE) q++;
    if (q !== this.end && this.text.charCodeAt(q) !== HASH) throw NOT_FAST;
  }

  /** The quote closing the one at `p` on the current line, or -1 (a multi-line or escaped one is not read here). */
  private closingQuote(p: number): number {
    const text = this.text;
    const q = text.charCodeAt(p);
    for (let i = p + 1; i < this.end; i++) {
      const c = text.charCodeAt(i);
      if (c === 0x5c && q === DQUOTE) return -1; // escapes: js-yaml decodes them
      if (c === q) {
        if (q === SQUOTE && text.charCodeAt(i + 1) === SQUOTE) {
          i++;
          continue;
        }
        return i;
      }
    }
    return -1;
  }

  /** The text of the quoted scalar from `open` to `close` (its quotes). */
  private quoted(open: number, close: number): string {
    const s = this.text.slice(open + 1, close);
    return this.text.charCodeAt(open) === SQUOTE && s.includes("''") ? s.replaceAll("''", "'") : s;
  }
}

/**
 * The documents of `text` as js-yaml (CORE_SCHEMA, `{}` maps) reads them, or undefined when the
 * text holds anything this front does not read (js-yaml reads it then, errors included).
 */
export function parseBlockYaml(text: string): unknown[] | undefined {
  if (OUTSIDE_FAST_CHARS.test(text)) return undefined;
  try {
    return new BlockParser(text).documents();
  } catch (err) {
    if (err === NOT_FAST) return undefined;
    throw err;
  }
}
