import type { ObjectRef, Problem, Protocol } from './types.js';

/**
 * Field readers and syntax checks for untrusted Kubernetes objects. Readers never throw: a wrong JSON
 * type is recorded as a problem and reads as `undefined`, so callers can keep collecting problems and
 * decide at the end whether the object (or one endpoint) is usable.
 */

export type JsonRecord = Readonly<Record<string, unknown>>;

export function isRecord(v: unknown): v is JsonRecord {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Collects the problems of one object. */
export class Issues {
  readonly problems: Problem[] = [];
  constructor(readonly object: ObjectRef) {}

  add(field: string, reason: string): void {
    this.problems.push({ object: this.object, field, reason });
  }

  get count(): number {
    return this.problems.length;
  }
}

/** A value rendered for a problem reason: JSON-quoted and truncated, so it cannot smuggle newlines. */
export function show(v: unknown): string {
  const text = preview(v, 0, { left: 120 });
  return text.length > 100 ? `${text.slice(0, 100)}...` : text;
}

/**
 * JSON text of `v` as far as it fits in `budget` characters, nested at most 4 levels: never walks
 * a huge or deeply nested value (a 10 MB string, 10k nested arrays) to show 100 characters of it.
 */
function preview(v: unknown, depth: number, budget: { left: number }): string {
  if (typeof v === 'string') {
    const text = JSON.stringify(v.length > 80 ? `${v.slice(0, 80)}...` : v);
    budget.left -= text.length;
    return text;
  }
  if (typeof v !== 'object' || v === null) {
    const text = String(JSON.stringify(v));
    budget.left -= text.length;
    return text;
  }
  const array = Array.isArray(v);
  if (depth >= 4) return array ? '[...]' : '{...}';
  const parts: string[] = [];
  const entries = array ? (v as unknown[]).entries() : Object.entries(v).values();
  for (const [k, item] of entries) {
    if (budget.left <= 0) {
      parts.push('...');
      break;
    }
    const key = array ? '' : `${JSON.stringify(String(k).slice(0, 80))}:`;
    budget.left -= key.length + 1;
    parts.push(`${key}${preview(item, depth + 1, budget)}`);
  }
  return array ? `[${parts.join(',')}]` : `{${parts.join(',')}}`;
}

/** A name safe to show in an ObjectRef: kept when it is plain printable ASCII, else quoted. */
export function displayName(v: unknown): string {
  if (typeof v === 'string' && /^[\x21-\x7e]{1,253}$/.test(v)) return v;
  if (v === undefined || v === null) return '';
  return show(v);
}

const typeName = (v: unknown): string => (v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v);

// null means "absent" in Kubernetes JSON (omitempty), so every reader treats it like a missing key.

export function readString(iss: Issues, obj: JsonRecord, key: string, path: string): string | undefined {
  const v = obj[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') {
    iss.add(path, `must be a string, got ${typeName(v)}`);
    return undefined;
  }
  return v;
}

export function readInt(iss: Issues, obj: JsonRecord, key: string, path: string): number | undefined {
  const v = obj[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isSafeInteger(v)) {
    iss.add(path, `must be an integer, got ${typeName(v)} ${show(v)}`);
    return undefined;
  }
  return v;
}

export function readBool(iss: Issues, obj: JsonRecord, key: string, path: string): boolean | undefined {
  const v = obj[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'boolean') {
    iss.add(path, `must be a boolean, got ${typeName(v)} ${show(v)}`);
    return undefined;
  }
  return v;
}

export function readArray(
  iss: Issues,
  obj: JsonRecord,
  key: string,
  path: string,
): readonly unknown[] | undefined {
  const v = obj[key];
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v)) {
    iss.add(path, `must be an array, got ${typeName(v)}`);
    return undefined;
  }
  return v as readonly unknown[];
}

export function readRecord(iss: Issues, obj: JsonRecord, key: string, path: string): JsonRecord | undefined {
  const v = obj[key];
  if (v === undefined || v === null) return undefined;
  if (!isRecord(v)) {
    iss.add(path, `must be an object, got ${typeName(v)}`);
    return undefined;
  }
  return v;
}

/** A string array; non-string elements are problems. */
export function readStringArray(
  iss: Issues,
  obj: JsonRecord,
  key: string,
  path: string,
): string[] | undefined {
  const arr = readArray(iss, obj, key, path);
  if (!arr) return undefined;
  const out: string[] = [];
  arr.forEach((v, i) => {
    if (typeof v === 'string') out.push(v);
    else iss.add(`${path}[${i}]`, `must be a string, got ${typeName(v)}`);
  });
  return out;
}

/** A map of string to string (labels, annotations, selector). */
export function readStringMap(
  iss: Issues,
  obj: JsonRecord,
  key: string,
  path: string,
): Record<string, string> | undefined {
  const rec = readRecord(iss, obj, key, path);
  if (!rec) return undefined;
  const entries: [string, string][] = [];
  for (const [k, v] of Object.entries(rec)) {
    if (typeof v === 'string') entries.push([k, v]);
    else iss.add(`${path}[${show(k)}]`, `must be a string, got ${typeName(v)}`);
  }
  // fromEntries defines own properties, so a "__proto__" key cannot touch the prototype.
  return Object.fromEntries(entries);
}

// --- syntax checks: each returns a reason, or undefined when valid ---

const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;
const IANA_SVC_NAME = /^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/;

export function checkDNS1123Label(s: string): string | undefined {
  if (s.length === 0) return 'must not be empty';
  if (s.length > 63) return `must be no more than 63 characters (got ${s.length})`;
  if (!DNS1123_LABEL.test(s)) {
    return `${show(s)} must be a DNS-1123 label (lowercase alphanumerics and '-', starting and ending with an alphanumeric)`;
  }
  return undefined;
}

export function checkDNS1123Subdomain(s: string): string | undefined {
  if (s.length === 0) return 'must not be empty';
  if (s.length > 253) return `must be no more than 253 characters (got ${s.length})`;
  if (!DNS1123_SUBDOMAIN.test(s)) {
    return `${show(s)} must be a DNS-1123 subdomain (lowercase alphanumerics, '-' and '.', starting and ending with an alphanumeric)`;
  }
  return undefined;
}

/** IANA_SVC_NAME, as a named targetPort must be: at most 15 chars, a letter, no "--". */
export function checkIanaSvcName(s: string): string | undefined {
  if (s.length === 0) return 'must not be empty';
  if (s.length > 15) return `must be no more than 15 characters (got ${s.length})`;
  if (!IANA_SVC_NAME.test(s)) {
    return `${show(s)} must contain only lowercase alphanumerics and '-', starting and ending with an alphanumeric`;
  }
  if (s.includes('--')) return `${show(s)} must not contain consecutive hyphens`;
  if (!/[a-z]/.test(s)) return `${show(s)} must contain at least one letter`;
  return undefined;
}

export function checkLabelValue(s: string): string | undefined {
  if (s.length > 63) return `must be no more than 63 characters (got ${s.length})`;
  if (!LABEL_VALUE.test(s)) {
    return `${show(s)} must be a label value (alphanumerics, '-', '_' and '.', starting and ending with an alphanumeric)`;
  }
  return undefined;
}

/** A label key: optional DNS subdomain prefix and '/', then a name part like a label value. */
export function checkLabelKey(s: string): string | undefined {
  const slash = s.lastIndexOf('/');
  const prefix = slash >= 0 ? s.slice(0, slash) : undefined;
  const name = slash >= 0 ? s.slice(slash + 1) : s;
  if (prefix !== undefined) {
    const r = checkDNS1123Subdomain(prefix);
    if (r) return `label key prefix: ${r}`;
  }
  if (name.length === 0) return `label key ${show(s)} has an empty name part`;
  const r = checkLabelValue(name);
  return r ? `label key name part: ${r}` : undefined;
}

export function checkPort(n: number, allowZero: boolean): string | undefined {
  if (allowZero && n === 0) return undefined;
  if (n < 1 || n > 65535) return `${n} must be between ${allowZero ? '0' : '1'} and 65535`;
  return undefined;
}

export const PROTOCOLS: readonly Protocol[] = ['TCP', 'UDP', 'SCTP'];

export function isProtocol(s: string): s is Protocol {
  return (PROTOCOLS as readonly string[]).includes(s);
}

/** Reads `protocol` (default TCP) and records a problem when it is not TCP, UDP or SCTP. */
export function readProtocol(iss: Issues, obj: JsonRecord, path: string): Protocol | undefined {
  const p = readString(iss, obj, 'protocol', path);
  if (p === undefined) return obj.protocol === undefined || obj.protocol === null ? 'TCP' : undefined;
  if (isProtocol(p)) return p;
  iss.add(path, `unsupported protocol ${show(p)}: must be TCP, UDP or SCTP`);
  return undefined;
}

/** Structural equality of plain JSON-like values (objects, arrays, primitives). */
export function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (Array.isArray(a) && Array.isArray(b)) {
    return a.length === b.length && a.every((v, i) => deepEqual(v, b[i]));
  }
  const ra = a as Record<string, unknown>;
  const rb = b as Record<string, unknown>;
  const ka = Object.keys(ra).filter((k) => ra[k] !== undefined);
  const kb = Object.keys(rb).filter((k) => rb[k] !== undefined);
  return ka.length === kb.length && ka.every((k) => Object.hasOwn(rb, k) && deepEqual(ra[k], rb[k]));
}

export function compareStrings(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
