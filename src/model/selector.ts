import {
  checkLabelKey,
  checkLabelValue,
  compareStrings,
  isRecord,
  type Issues,
  type JsonRecord,
  readArray,
  readString,
  readStringArray,
  readStringMap,
  show,
} from './validate.js';

/**
 * metav1.LabelSelector, validated as the API server does (apimachinery's ValidateLabelSelector:
 * qualified-name keys, label values, In/NotIn with values, Exists/DoesNotExist without) and held in
 * one canonical form: matchLabels become `In` requirements with one value, requirements sorted,
 * values sorted and deduplicated. Two selectors that select the same way by construction therefore
 * have the same key (selectorKey), which the policy engine uses to share address sets.
 */

export type SelectorOperator = 'In' | 'NotIn' | 'Exists' | 'DoesNotExist';

const OPERATORS: readonly SelectorOperator[] = ['In', 'NotIn', 'Exists', 'DoesNotExist'];

export interface SelectorRequirement {
  readonly key: string;
  readonly operator: SelectorOperator;
  /** Sorted, deduplicated; empty for Exists and DoesNotExist. */
  readonly values: readonly string[];
}

/** A validated selector: every requirement must hold (AND). No requirement selects everything. */
export interface LabelSelector {
  readonly requirements: readonly SelectorRequirement[];
}

export const SELECT_ALL: LabelSelector = { requirements: [] };

function compareRequirements(a: SelectorRequirement, b: SelectorRequirement): number {
  return (
    compareStrings(a.key, b.key) ||
    compareStrings(a.operator, b.operator) ||
    compareStrings(a.values.join('\u0000'), b.values.join('\u0000'))
  );
}

function sortedUnique(values: readonly string[]): string[] {
  return [...new Set(values)].sort(compareStrings);
}

/**
 * Reads `obj[key]` as a LabelSelector (`path` names it in problems). Returns undefined when the
 * field is absent (a nil selector) or invalid; `invalid` tells the two apart.
 */
export function readLabelSelector(
  iss: Issues,
  obj: JsonRecord,
  key: string,
  path: string,
): { selector?: LabelSelector; invalid: boolean } {
  const raw = obj[key];
  if (raw === undefined || raw === null) return { invalid: false };
  if (!isRecord(raw)) {
    iss.add(path, `must be an object, got ${show(raw)}`);
    return { invalid: true };
  }
  const before = iss.count;
  const requirements: SelectorRequirement[] = [];
  const labels = readStringMap(iss, raw, 'matchLabels', `${path}.matchLabels`) ?? {};
  for (const [k, v] of Object.entries(labels)) {
    const field = `${path}.matchLabels[${show(k)}]`;
    const r = checkLabelKey(k) ?? checkLabelValue(v);
    if (r) iss.add(field, r);
    else requirements.push({ key: k, operator: 'In', values: [v] });
  }
  const exprs = readArray(iss, raw, 'matchExpressions', `${path}.matchExpressions`) ?? [];
  exprs.forEach((e, i) => {
    const req = readRequirement(iss, e, `${path}.matchExpressions[${i}]`);
    if (req) requirements.push(req);
  });
  if (iss.count > before) return { invalid: true };
  const sorted = requirements.sort(compareRequirements);
  // `matchLabels: {k: v}` and `{key: k, operator: In, values: [v]}` together are one requirement.
  const unique = sorted.filter((r, i) => i === 0 || compareRequirements(sorted[i - 1]!, r) !== 0);
  return { selector: { requirements: unique }, invalid: false };
}

function readRequirement(iss: Issues, e: unknown, path: string): SelectorRequirement | undefined {
  if (!isRecord(e)) {
    iss.add(path, 'must be an object');
    return undefined;
  }
  const before = iss.count;
  const key = readString(iss, e, 'key', `${path}.key`);
  if (key === undefined) {
    if (iss.count === before) iss.add(`${path}.key`, 'is required');
  } else {
    const r = checkLabelKey(key);
    if (r) iss.add(`${path}.key`, r);
  }
  const op = readString(iss, e, 'operator', `${path}.operator`);
  const values = readStringArray(iss, e, 'values', `${path}.values`) ?? [];
  if (op === undefined) {
    if (e.operator === undefined || e.operator === null) iss.add(`${path}.operator`, 'is required');
  } else if (!(OPERATORS as readonly string[]).includes(op)) {
    iss.add(
      `${path}.operator`,
      `${show(op)} is not a valid selector operator (In, NotIn, Exists, DoesNotExist)`,
    );
  } else if ((op === 'In' || op === 'NotIn') && values.length === 0) {
    iss.add(`${path}.values`, "must be specified when `operator` is 'In' or 'NotIn'");
  } else if ((op === 'Exists' || op === 'DoesNotExist') && values.length > 0) {
    iss.add(`${path}.values`, "may not be specified when `operator` is 'Exists' or 'DoesNotExist'");
  }
  values.forEach((v, j) => {
    const r = checkLabelValue(v);
    if (r) iss.add(`${path}.values[${j}]`, r);
  });
  if (iss.count > before || key === undefined) return undefined;
  return { key, operator: op as SelectorOperator, values: sortedUnique(values) };
}

/** labels.Requirement.Matches: NotIn and DoesNotExist match objects that lack the key. */
export function requirementMatches(
  req: SelectorRequirement,
  labels: Readonly<Record<string, string>>,
): boolean {
  const has = Object.hasOwn(labels, req.key);
  switch (req.operator) {
    case 'In':
      return has && req.values.includes(labels[req.key]!);
    case 'NotIn':
      return !has || !req.values.includes(labels[req.key]!);
    case 'Exists':
      return has;
    case 'DoesNotExist':
      return !has;
  }
}

export function selectorMatches(sel: LabelSelector, labels: Readonly<Record<string, string>>): boolean {
  return sel.requirements.every((r) => requirementMatches(r, labels));
}

/** The canonical text of a selector, as kubectl prints one: `role=db,env in (a,b),!debug`; `{}` selects all. */
export function formatSelector(sel: LabelSelector): string {
  if (sel.requirements.length === 0) return '{}';
  return sel.requirements
    .map((r) => {
      switch (r.operator) {
        case 'In':
          return r.values.length === 1 ? `${r.key}=${r.values[0]}` : `${r.key} in (${r.values.join(',')})`;
        case 'NotIn':
          return `${r.key} notin (${r.values.join(',')})`;
        case 'Exists':
          return r.key;
        case 'DoesNotExist':
          return `!${r.key}`;
      }
    })
    .join(',');
}

/** Equal keys ⇔ the same canonical requirements. */
export function selectorKey(sel: LabelSelector): string {
  return JSON.stringify(sel.requirements.map((r) => [r.key, r.operator, r.values]));
}
