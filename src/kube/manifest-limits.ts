import type { CST } from 'yaml';

/**
 * Bounds on what one manifest file may cost, checked before the parts of parsing that recurse or
 * expand. Each check is a small pure function another parser can reuse: `jsonNestingDepth` reads JSON
 * text, `measureValue` any parsed JS value (aliases counted as expanded), `yamlNestingDepth` the
 * `yaml` package's concrete syntax tree, which its parser builds without recursion (composing that
 * tree into objects recurses, and a stack overflow there can abort the process: V8 gives up when the
 * overflow hits its regexp compiler).
 */

/** Larger files are refused unread (YAML costs ~30× its size in memory while parsed). */
export const MAX_MANIFEST_FILE_BYTES = 8 * 1024 * 1024;

/** Kubernetes objects nest ~10 levels (a List adds 2, a CRD schema a few dozen); yaml overflows at ~800. */
export const MAX_NESTING_DEPTH = 100;

/**
 * Aliases may not make a document bigger than its text: without them every value costs at least one
 * character, so a document expands to at most one value per byte (small files get this many anyway).
 */
export const MIN_EXPANSION_BUDGET = 10_000;

/**
 * Deepest `[`/`{` nesting of JSON text, strings skipped: exact for valid JSON (invalid JSON fails to
 * parse anyway). One pass before parsing; strings are jumped over with indexOf (17 MB of the bench's
 * manifests in ~30 ms, a third of JSON.parse).
 */
export function jsonNestingDepth(text: string): number {
  let depth = 0;
  let max = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22) {
      i = closingQuote(text, i);
      if (i < 0) break;
    } else if (c === 0x5b || c === 0x7b) {
      if (++depth > max) max = depth;
    } else if (c === 0x5d || c === 0x7d) depth--;
  }
  return max;
}

/** Index of the quote closing the string opened at `open` (not escaped by an odd run of backslashes), or -1. */
function closingQuote(text: string, open: number): number {
  for (let j = text.indexOf('"', open + 1); j >= 0; j = text.indexOf('"', j + 1)) {
    let backslashes = 0;
    while (text.charCodeAt(j - 1 - backslashes) === 0x5c) backslashes++;
    if (backslashes % 2 === 0) return j;
  }
  return -1;
}

/** Deepest collection nesting in a YAML concrete syntax tree (documents' values), walked without recursion. */
export function yamlNestingDepth(tokens: Iterable<CST.Token>): number {
  let max = 0;
  const stack: [CST.Token, number][] = [];
  for (const t of tokens) if (t.type === 'document' && t.value) stack.push([t.value, 0]);
  for (let top = stack.pop(); top !== undefined; top = stack.pop()) {
    const [token, depth] = top;
    if (token.type !== 'block-map' && token.type !== 'block-seq' && token.type !== 'flow-collection')
      continue;
    const d = depth + 1;
    if (d > max) max = d;
    for (const item of token.items) {
      if (item.key) stack.push([item.key, d]);
      if (item.value) stack.push([item.value, d]);
    }
  }
  return max;
}

/**
 * Counts the values of a parsed document as if every alias were expanded (a value reached twice
 * counts twice) and checks its depth; walks without recursion and stops at the first excess, so it
 * costs at most `budget` steps. Returns the count, or why the document is too deep or too big.
 */
export function measureValue(value: unknown, budget: number): { values: number } | { problem: string } {
  let count = 0;
  const stack: [unknown, number][] = [[value, 0]];
  for (let top = stack.pop(); top !== undefined; top = stack.pop()) {
    const [v, depth] = top;
    if (++count > budget) {
      return { problem: 'aliases expand it beyond one value per byte of the file' };
    }
    if (typeof v !== 'object' || v === null) continue;
    if (depth >= MAX_NESTING_DEPTH) return { problem: `nested deeper than ${MAX_NESTING_DEPTH} levels` };
    for (const child of Array.isArray(v) ? (v as unknown[]) : Object.values(v))
      stack.push([child, depth + 1]);
  }
  return { values: count };
}
