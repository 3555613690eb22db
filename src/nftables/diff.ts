import type { IPFamily } from '../model/types.js';
import type { ListedTable } from './listing.js';
import { ELEMENT_CONTAINERS, isServiceChainName, serviceOfName } from './names.js';
import type { ServiceRules } from './render.js';
import type { WrittenModel } from './transaction.js';

/**
 * `svcplane diff` for nftables mode (pure): what a full sync would leave in the table compared with
 * the kernel's listing, every difference named with the Service that owns it (an element by the
 * Service that renders it, a per-Service chain or affinity set by its name).
 */

export interface NftDifference {
  readonly kind: 'missing' | 'extra' | 'changed';
  /** `chain X`, `set X`, `service-ips element 10.96.0.10 . tcp . 80`. */
  readonly what: string;
  readonly detail?: string;
  /** `namespace/name`, when a Service owns it. */
  readonly service?: string;
}

export interface NftFamilyDrift {
  readonly family: IPFamily;
  readonly inSync: boolean;
  readonly tablePresent: boolean;
  readonly differences: readonly NftDifference[];
}

export function diffNftables(
  family: IPFamily,
  desired: WrittenModel,
  services: ReadonlyMap<string, ServiceRules>,
  table: ListedTable | undefined,
): NftFamilyDrift {
  const out: NftDifference[] = [];
  const owners = new Map<string, string>();
  for (const [key, r] of services) for (const e of r.elements) owners.set(`${e.container}\n${e.key}`, key);
  const owned = (what: string, service: string | undefined): { what: string; service?: string } =>
    service === undefined ? { what } : { what, service };
  if (table === undefined) {
    return {
      family,
      inSync: false,
      tablePresent: false,
      differences: [{ kind: 'missing', what: `table ${family === 'IPv6' ? 'ip6' : 'ip'} kube-proxy` }],
    };
  }
  for (const [name, count] of desired.chains) {
    const have = table.chains.get(name);
    if (have === undefined) out.push({ kind: 'missing', ...owned(`chain ${name}`, serviceOfName(name)) });
    else if (have.rules.length !== count) {
      out.push({
        kind: 'changed',
        ...owned(`chain ${name}`, serviceOfName(name)),
        detail: `${have.rules.length} rules, expected ${count}`,
      });
    }
  }
  for (const name of table.chains.keys()) {
    // Flushed stale chains (no rules) wait for their deletion: not drift.
    if (desired.chains.has(name)) continue;
    if (isServiceChainName(name) && table.chains.get(name)!.rules.length === 0) continue;
    out.push({ kind: 'extra', ...owned(`chain ${name}`, serviceOfName(name)) });
  }
  for (const name of desired.affinitySets.keys()) {
    if (!table.containers.has(name))
      out.push({ kind: 'missing', ...owned(`set ${name}`, serviceOfName(name)) });
  }
  for (const container of ELEMENT_CONTAINERS) {
    const want = desired.elements.get(container)!;
    const have = table.containers.get(container);
    if (have === undefined) {
      out.push({ kind: 'missing', what: `${container}` });
      continue;
    }
    for (const [key, value] of want) {
      const v = have.elements.get(key);
      const what = `${container} element ${key}`;
      const owner = owners.get(`${container}\n${key}`);
      if (v === undefined) out.push({ kind: 'missing', ...owned(what, owner), detail: value });
      else if (v !== value)
        out.push({ kind: 'changed', ...owned(what, owner), detail: `${v}, expected ${value}` });
    }
    for (const [key, v] of have.elements) {
      if (!want.has(key)) {
        out.push({ kind: 'extra', what: `${container} element ${key}`, detail: v });
      }
    }
  }
  return { family, inSync: out.length === 0, tablePresent: true, differences: out };
}

export function formatNftDriftText(families: readonly NftFamilyDrift[]): string {
  const lines: string[] = [];
  for (const f of families) {
    if (f.inSync) {
      lines.push(`${f.family}: in sync`);
      continue;
    }
    lines.push(`${f.family}: ${f.differences.length} difference(s)`);
    for (const d of f.differences) {
      const who = d.service !== undefined ? ` [${d.service}]` : '';
      lines.push(`  ${d.kind} ${d.what}${who}${d.detail !== undefined ? `: ${d.detail}` : ''}`);
    }
  }
  return lines.join('\n') + '\n';
}
