import { parseIP } from './ip.js';
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
  show,
} from './validate.js';

/** Address types the dataplane uses, in the order kube-proxy prefers them. */
type AddressType = 'InternalIP' | 'ExternalIP';

/** Validates a v1 Node: name, addresses (InternalIP first, then ExternalIP, canonical) and labels. */
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
  if (!meta || iss.count > 0) return undefined;
  const addresses = [...new Set([...byType.InternalIP, ...byType.ExternalIP])];
  return { name: meta.name, addresses, labels: meta.labels };
}
