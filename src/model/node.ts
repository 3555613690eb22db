import { parseCIDR, parseIP } from './ip.js';
import { readMeta } from './meta.js';
import type { NodeInfo } from './types.js';
import {
  checkDNS1123Subdomain,
  checkLabelKey,
  checkLabelValue,
  isRecord,
  type Issues,
  type JsonRecord,
  readArray,
  readRecord,
  readString,
  readStringArray,
  show,
} from './validate.js';

/** Address types the dataplane uses, in the order kube-proxy prefers them. */
type AddressType = 'InternalIP' | 'ExternalIP';

/**
 * Validates a v1 Node: name, addresses (InternalIP first, then ExternalIP, canonical), labels,
 * pod CIDRs (for --detect-local-mode=NodeCIDR), and the deletion timestamp and taint keys (for
 * /healthz's nodeEligible).
 */
export function parseNode(iss: Issues, obj: JsonRecord): NodeInfo | undefined {
  const meta = readMeta(iss, obj, false, checkDNS1123Subdomain);
  if (meta) {
    for (const [k, v] of Object.entries(meta.labels)) {
      const r = checkLabelKey(k) ?? checkLabelValue(v);
      if (r) iss.add(`metadata.labels[${show(k)}]`, r);
    }
  }
  const status = readRecord(iss, obj, 'status', 'status');
  const raw = (status && readArray(iss, status, 'addresses', 'status.addresses')) ?? [];
  const byType: Record<AddressType, string[]> = { InternalIP: [], ExternalIP: [] };
  raw.forEach((a, i) => {
    const path = `status.addresses[${i}]`;
    if (!isRecord(a)) return iss.add(path, 'must be an object');
    const type = readString(iss, a, 'type', `${path}.type`);
    const address = readString(iss, a, 'address', `${path}.address`);
    if (type !== 'InternalIP' && type !== 'ExternalIP') return; // Hostname, InternalDNS, ...: not IPs
    if (address === undefined) return iss.add(`${path}.address`, 'is required');
    const ip = parseIP(address);
    if (!ip) return iss.add(`${path}.address`, `${show(address)} is not a valid IP address`);
    if (!byType[type].includes(ip.ip)) byType[type].push(ip.ip);
  });
  const podCIDRs = readPodCIDRs(iss, obj);
  const deletionTimestamp = readDeletionTimestamp(iss, obj);
  const taintKeys = readTaintKeys(iss, obj);
  if (!meta || iss.count > 0) return undefined;
  const addresses = [...new Set([...byType.InternalIP, ...byType.ExternalIP])];
  return {
    name: meta.name,
    addresses,
    labels: meta.labels,
    podCIDRs,
    ...(deletionTimestamp !== undefined ? { deletionTimestamp } : {}),
    ...(taintKeys.length > 0 ? { taintKeys } : {}),
  };
}

/** `metadata.deletionTimestamp`: an RFC 3339 time when set. */
function readDeletionTimestamp(iss: Issues, obj: JsonRecord): string | undefined {
  const md = isRecord(obj.metadata) ? obj.metadata : {};
  if (md.deletionTimestamp === undefined || md.deletionTimestamp === null) return undefined;
  const ts = readString(iss, md, 'deletionTimestamp', 'metadata.deletionTimestamp');
  if (ts === undefined) return undefined;
  if (!/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/.test(ts) || Number.isNaN(Date.parse(ts))) {
    iss.add('metadata.deletionTimestamp', `${show(ts)} is not an RFC 3339 time`);
    return undefined;
  }
  return ts;
}

const TAINT_EFFECTS: readonly string[] = ['NoSchedule', 'PreferNoSchedule', 'NoExecute'];

/** Keys of `spec.taints` (each a qualified name with one of the three effects, as the API validates). */
function readTaintKeys(iss: Issues, obj: JsonRecord): string[] {
  const spec = isRecord(obj.spec) ? obj.spec : undefined;
  if (!spec) return [];
  const taints = readArray(iss, spec, 'taints', 'spec.taints') ?? [];
  const keys: string[] = [];
  taints.forEach((t, i) => {
    const path = `spec.taints[${i}]`;
    if (!isRecord(t)) return iss.add(path, 'must be an object');
    const key = readString(iss, t, 'key', `${path}.key`);
    const effect = readString(iss, t, 'effect', `${path}.effect`);
    if (key === undefined || key === '') return iss.add(`${path}.key`, 'is required');
    const bad = checkLabelKey(key);
    if (bad) return iss.add(`${path}.key`, bad);
    if (effect === undefined || !TAINT_EFFECTS.includes(effect)) {
      return iss.add(`${path}.effect`, `must be one of ${TAINT_EFFECTS.join(', ')}`);
    }
    if (!keys.includes(key)) keys.push(key);
  });
  return keys;
}

/**
 * `spec.podCIDRs` (or the older single `spec.podCIDR` when the list is absent), canonical, at most
 * one per family: what the API server allows and what kube-proxy's NodeCIDR detector reads.
 */
function readPodCIDRs(iss: Issues, obj: JsonRecord): string[] {
  const spec = readRecord(iss, obj, 'spec', 'spec');
  if (!spec) return [];
  const list = readStringArray(iss, spec, 'podCIDRs', 'spec.podCIDRs') ?? [];
  const single = readString(iss, spec, 'podCIDR', 'spec.podCIDR') ?? '';
  const useList = list.length > 0;
  const texts = useList ? list : single !== '' ? [single] : [];
  const path = (i: number): string => (useList ? `spec.podCIDRs[${i}]` : 'spec.podCIDR');
  const out: string[] = [];
  const families = new Set<string>();
  texts.forEach((text, i) => {
    const cidr = parseCIDR(text);
    if (!cidr) return iss.add(path(i), `${show(text)} is not a valid CIDR`);
    if (families.has(cidr.family))
      return iss.add(path(i), `a second ${cidr.family} pod CIDR (one per family)`);
    families.add(cidr.family);
    out.push(cidr.cidr);
  });
  return out;
}
