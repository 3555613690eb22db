/**
 * The parser of `nft -j list table <family> kube-proxy` (and `nft -j list chains|sets <family>`):
 * libnftables' JSON schema (man libnftables-json) into chains with their rules' expressions, sets
 * and maps with their elements in the same text form the transaction builder writes
 * (`10.96.0.10 . tcp . 80` → `goto service-…`). Pure; unknown objects are ignored.
 */

export type NftExpr = Readonly<Record<string, unknown>>;

export interface ListedRule {
  readonly handle: number;
  readonly expr: readonly NftExpr[];
  readonly comment?: string;
}

export interface ListedChain {
  readonly name: string;
  readonly handle: number;
  readonly type?: string;
  readonly hook?: string;
  readonly prio?: number;
  readonly rules: ListedRule[];
}

export interface ListedContainer {
  readonly name: string;
  readonly kind: 'set' | 'map';
  readonly type: string;
  readonly flags: readonly string[];
  readonly timeout?: number;
  /** key → value (+ ` comment "…"`); '' for set elements without a comment. */
  readonly elements: Map<string, string>;
}

export interface ListedTable {
  readonly family: string;
  readonly name: string;
  readonly handle?: number;
  readonly chains: Map<string, ListedChain>;
  readonly containers: Map<string, ListedContainer>;
}

export class ListingParseError extends Error {
  constructor(reason: string) {
    super(`nft -j listing: ${reason}`);
    this.name = 'ListingParseError';
  }
}

const obj = (v: unknown): Record<string, unknown> | undefined =>
  typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;

/** A key or value expression as nft writes it in a command: concatenations joined by ` . `. */
export function exprText(v: unknown): string {
  if (typeof v === 'string' || typeof v === 'number') return String(v);
  const o = obj(v);
  if (o === undefined) return JSON.stringify(v);
  if (Array.isArray(o.concat)) return o.concat.map(exprText).join(' . ');
  const prefix = obj(o.prefix);
  if (prefix) return `${exprText(prefix.addr)}/${String(prefix.len)}`;
  const range = o.range;
  if (Array.isArray(range)) return `${exprText(range[0])}-${exprText(range[1])}`;
  for (const verdict of ['goto', 'jump']) {
    const t = obj(o[verdict]);
    if (t && typeof t.target === 'string') return `${verdict} ${t.target}`;
  }
  for (const verdict of ['drop', 'accept', 'return', 'continue']) if (verdict in o) return verdict;
  return JSON.stringify(v);
}

/** One element: the key, and value (+ comment) as stored by the transaction builder. */
function elementEntry(raw: unknown, isMap: boolean): [string, string] {
  let keyExpr: unknown = raw;
  let valueExpr: unknown;
  if (isMap && Array.isArray(raw)) {
    keyExpr = raw[0];
    valueExpr = raw[1];
  }
  let comment: string | undefined;
  const wrapped = obj(obj(keyExpr)?.elem);
  if (wrapped) {
    keyExpr = wrapped.val;
    if (typeof wrapped.comment === 'string') comment = wrapped.comment;
  }
  const value = valueExpr === undefined ? '' : exprText(valueExpr);
  return [exprText(keyExpr), comment === undefined ? value : `${value} comment "${comment}"`];
}

/** Parses the JSON output; tables other than `table` (if given) are left out. */
export function parseNftJson(text: string, only?: { family: string; table: string }): ListedTable[] {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new ListingParseError(`not JSON: ${(err as Error).message}`);
  }
  const items = obj(doc)?.nftables;
  if (!Array.isArray(items)) throw new ListingParseError('no "nftables" array');
  const tables = new Map<string, ListedTable>();
  const tableOf = (family: unknown, name: unknown): ListedTable | undefined => {
    if (typeof family !== 'string' || typeof name !== 'string') return undefined;
    if (only && (only.family !== family || only.table !== name)) return undefined;
    const k = `${family} ${name}`;
    let t = tables.get(k);
    if (t === undefined) {
      t = { family, name, chains: new Map(), containers: new Map() };
      tables.set(k, t);
    }
    return t;
  };
  for (const item of items) {
    const o = obj(item);
    if (o === undefined) continue;
    const table = obj(o.table);
    if (table) {
      const t = tableOf(table.family, table.name);
      if (t && typeof table.handle === 'number') {
        tables.set(`${t.family} ${t.name}`, { ...t, handle: table.handle });
      }
      continue;
    }
    const chain = obj(o.chain);
    if (chain) {
      const t = tableOf(chain.family, chain.table);
      if (t && typeof chain.name === 'string') {
        const prev = t.chains.get(chain.name);
        t.chains.set(chain.name, {
          name: chain.name,
          handle: typeof chain.handle === 'number' ? chain.handle : 0,
          ...(typeof chain.type === 'string' ? { type: chain.type } : {}),
          ...(typeof chain.hook === 'string' ? { hook: chain.hook } : {}),
          ...(typeof chain.prio === 'number' ? { prio: chain.prio } : {}),
          rules: prev?.rules ?? [],
        });
      }
      continue;
    }
    const set = obj(o.set) ?? obj(o.map);
    if (set) {
      const t = tableOf(set.family, set.table);
      if (t && typeof set.name === 'string') {
        const kind = o.map !== undefined ? 'map' : 'set';
        const elements = new Map<string, string>();
        if (Array.isArray(set.elem)) {
          for (const e of set.elem) {
            const [k, v] = elementEntry(e, kind === 'map');
            elements.set(k, v);
          }
        }
        const type = Array.isArray(set.type) ? set.type.map(String).join(' . ') : String(set.type);
        t.containers.set(set.name, {
          name: set.name,
          kind,
          type: kind === 'map' ? `${type} : ${String(set.map)}` : type,
          flags: Array.isArray(set.flags) ? set.flags.map(String) : [],
          ...(typeof set.timeout === 'number' ? { timeout: set.timeout } : {}),
          elements,
        });
      }
      continue;
    }
    const rule = obj(o.rule);
    if (rule) {
      const t = tableOf(rule.family, rule.table);
      if (t && typeof rule.chain === 'string') {
        let c = t.chains.get(rule.chain);
        if (c === undefined) {
          c = { name: rule.chain, handle: 0, rules: [] };
          t.chains.set(rule.chain, c);
        }
        c.rules.push({
          handle: typeof rule.handle === 'number' ? rule.handle : 0,
          expr: Array.isArray(rule.expr) ? (rule.expr.filter((x) => obj(x) !== undefined) as NftExpr[]) : [],
          ...(typeof rule.comment === 'string' ? { comment: rule.comment } : {}),
        });
      }
    }
  }
  return [...tables.values()];
}

/** The one table of a `nft -j list table` output (undefined when the output has none). */
export function parseNftTable(text: string, family: string, table: string): ListedTable | undefined {
  return parseNftJson(text, { family, table })[0];
}
