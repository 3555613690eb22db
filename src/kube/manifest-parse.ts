import { constructFromEvents, EVENT_ID, parseEvents, YAMLException, type Event } from 'js-yaml';
import type { SourceObject } from '../model/build.js';
import {
  jsonNestingDepth,
  MAX_NESTING_DEPTH,
  MIN_EXPANSION_BUDGET,
  measureValue,
} from './manifest-limits.js';
import { parseBlockYaml } from './manifest-yaml-block.js';

/**
 * Manifest text to objects: JSON (`.json`, and YAML files whose text is JSON) through JSON.parse,
 * everything else through js-yaml's YAML 1.2 core schema. Pure; every limit of manifest-limits.ts is
 * checked before the part of parsing it protects.
 *
 * Why js-yaml (5.x), measured on the one-file-per-Service layout (10k files, 12 MB, 20k documents):
 * 1.5 s against 4.5 s for the `yaml` package's Parser + Composer (3.1 s for its syntax tree alone),
 * with less garbage; JSON.parse reads the same objects as JSON in ~0.05 s. js-yaml's parser recurses
 * but counts its depth itself (`maxDepth`), and it builds values from a flat event list without
 * recursion, so the depth is checked on the events before any value exists, and aliases (which
 * js-yaml shares, never copies) are measured as expanded by measureValue, as before.
 *
 * Differences from the `yaml` package, all refusals of what Kubernetes does not accept either: a tag
 * js-yaml does not know (`!foo`, `!!binary`, `!!set`, `!!timestamp`) or a complex key (`? [a, b]`)
 * fails the file; a `%YAML 1.1` directive does not switch to YAML 1.1 scalars.
 */

/** One file's objects, or why it cannot be used. */
export type FileContent = { objects: SourceObject[] } | { error: string };

/** Reasons quote the parser, which may quote the file: one line, bounded. */
const MAX_REASON_CHARS = 300;
const oneLine = (s: string): string => {
  const line = s.split('\n')[0] ?? '';
  return line.length > MAX_REASON_CHARS ? `${line.slice(0, MAX_REASON_CHARS)}…` : line;
};

const TOO_DEEP = `nested deeper than ${MAX_NESTING_DEPTH} levels`;

/**
 * js-yaml's own bound, a backstop against its recursion only: it counts every node on the path,
 * scalars and document included, so a few more than the collections' bound, which is checked
 * exactly on the events.
 */
const PARSER_MAX_DEPTH = MAX_NESTING_DEPTH + 3;

/** Parses one file's text into source objects (`name.yaml#<document index>`), or a reason it cannot be used. */
export function parseManifestText(text: string, label: string, json: boolean): FileContent {
  const values = json || looksLikeJson(text) ? parseJson(text, json) : undefined;
  const docs = values ?? parseYamlDocuments(text);
  if ('error' in docs) return docs;
  const objects: SourceObject[] = [];
  docs.docs.forEach((obj, i) => {
    // Empty documents (a trailing "---", comments only) are not objects.
    if (obj !== null && obj !== undefined) objects.push({ obj, source: `${label}#${i}` });
  });
  return { objects };
}

/** A YAML file that may be JSON: its first character that is not white space opens an object or array. */
function looksLikeJson(text: string): boolean {
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) continue;
    return c === 0x7b || c === 0x5b;
  }
  return false;
}

/**
 * A JSON file: one value, or an array of them (as kubectl accepts). For YAML text that only looks
 * like JSON (`strict` false), undefined when it is not JSON: YAML reads it then (flow style).
 */
function parseJson(text: string, strict: boolean): { docs: unknown[] } | { error: string } | undefined {
  // JSON has no aliases: only the depth can be out of bounds (JSON.parse itself does not recurse,
  // but whatever walks the value later might). The YAML path bounds it as well.
  if (jsonNestingDepth(text) > MAX_NESTING_DEPTH) return strict ? { error: TOO_DEEP } : undefined;
  let value: unknown;
  try {
    value = JSON.parse(text) as unknown;
  } catch (err) {
    return strict ? { error: `invalid JSON: ${oneLine(errorMessage(err))}` } : undefined;
  }
  return { docs: Array.isArray(value) && strict ? (value as unknown[]) : [value] };
}

const errorMessage = (err: unknown): string => (err instanceof Error ? err.message : String(err));

/** Where a js-yaml error is: `line L, column C` (1-based), if it says. */
function position(err: unknown): string {
  const mark = err instanceof YAMLException ? err.mark : undefined;
  return mark ? ` at line ${mark.line + 1}, column ${mark.column + 1}` : '';
}

/**
 * Multi-document YAML: the block YAML generated manifests are written in through the front of
 * manifest-yaml-block.ts (the same values, no aliases, depth bounded); anything else through
 * js-yaml: events first (its recursion bounded by its maxDepth), the collections' nesting measured
 * on them, then values built from them without recursion; documents with aliases are measured as
 * expanded, within one budget for the file.
 */
function parseYamlDocuments(text: string): { docs: unknown[] } | { error: string } {
  const block = parseBlockYaml(text);
  if (block !== undefined) return { docs: block };
  let events: Event[];
  try {
    events = parseEvents(text, { maxDepth: PARSER_MAX_DEPTH });
  } catch (err) {
    if (err instanceof YAMLException && err.reason.startsWith('nesting exceeded maxDepth')) {
      return { error: TOO_DEEP };
    }
    return { error: `invalid YAML: ${oneLine(yamlReason(err))}${position(err)}` };
  }
  const shape = eventShape(events);
  if (shape.depth > MAX_NESTING_DEPTH) return { error: TOO_DEEP };
  let docs: unknown[];
  try {
    docs = constructFromEvents(events, { source: text });
  } catch (err) {
    return { error: `invalid YAML: ${oneLine(yamlReason(err))}${position(err)}` };
  }
  // Aliases share values, so the objects may be bigger and deeper than the events show.
  if (shape.aliases) {
    let budget = Math.max(MIN_EXPANSION_BUDGET, text.length);
    for (const [i, doc] of docs.entries()) {
      const measured = measureValue(doc, budget);
      if ('problem' in measured) return { error: `document ${i}: ${measured.problem}` };
      budget -= measured.values;
    }
  }
  detachStrings(docs, shape.aliases);
  return { docs };
}

/**
 * js-yaml's scalars are slices of the file's text, and V8 keeps a substring of 13 characters or more
 * as a view of its parent: one kept name or address kept the whole text alive (12 MB for 10k files
 * in a watching daemon; in `svcplane sync`, every text until the state was built and whatever the
 * state kept after). Such strings are copied out, in place. With aliases (shared values) each
 * collection is visited once.
 */
function detachStrings(docs: unknown[], shared: boolean): void {
  const seen = shared ? new Set<object>() : undefined;
  const stack: object[] = [docs];
  for (let v = stack.pop(); v !== undefined; v = stack.pop()) {
    if (seen !== undefined) {
      if (seen.has(v)) continue;
      seen.add(v);
    }
    if (Array.isArray(v)) {
      const a = v as unknown[];
      for (let i = 0; i < a.length; i++) {
        const x = a[i];
        if (typeof x === 'string') {
          if (x.length >= SLICE_MIN_LENGTH) a[i] = copied(x);
        } else if (typeof x === 'object' && x !== null) stack.push(x);
      }
    } else {
      const o = v as Record<string, unknown>;
      for (const k of Object.keys(o)) {
        const x = o[k];
        if (typeof x === 'string') {
          if (x.length >= SLICE_MIN_LENGTH) o[k] = copied(x);
        } else if (typeof x === 'object' && x !== null) stack.push(x);
      }
    }
  }
}

/** V8's shortest sliced string (SlicedString::kMinLength); shorter substrings are copies already. */
const SLICE_MIN_LENGTH = 13;

/** A copy of `s` whose characters live in a string of its own (flattening the pair copies them). */
const copied = (s: string): string => (' ' + s).slice(1);

const yamlReason = (err: unknown): string => (err instanceof YAMLException ? err.reason : errorMessage(err));

/** Deepest collection nesting of the events, and whether any is an alias. */
function eventShape(events: readonly Event[]): { depth: number; aliases: boolean } {
  let depth = 0;
  let max = 0;
  let aliases = false;
  // The open nodes: true for a collection, false for a document.
  const open: boolean[] = [];
  for (const e of events) {
    switch (e.type) {
      case EVENT_ID.DOCUMENT:
        open.push(false);
        break;
      case EVENT_ID.SEQUENCE:
      case EVENT_ID.MAPPING:
        open.push(true);
        if (++depth > max) max = depth;
        break;
      case EVENT_ID.POP:
        if (open.pop()) depth--;
        break;
      case EVENT_ID.ALIAS:
        aliases = true;
        break;
    }
  }
  return { depth: max, aliases };
}
