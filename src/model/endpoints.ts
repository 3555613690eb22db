import { readSlicePorts, type ParsedSlice, type SliceEndpoint } from './endpointslice.js';
import { parseIP, specialAddressReason } from './ip.js';
import { readMeta } from './meta.js';
import type { IPFamily } from './types.js';
import {
  checkDNS1123Label,
  checkDNS1123Subdomain,
  isRecord,
  type Issues,
  type JsonRecord,
  readArray,
  readString,
  show,
} from './validate.js';

/** `endpointslice.kubernetes.io/skip-mirror: "true"` opts an Endpoints object out of mirroring. */
export const SKIP_MIRROR_LABEL = 'endpointslice.kubernetes.io/skip-mirror';

export interface ParsedEndpoints {
  readonly namespace: string;
  /** Same as the Service's name. */
  readonly name: string;
  /** The subsets as the EndpointSlice mirroring controller would write them: one slice per subset and family. */
  readonly slices: readonly ParsedSlice[];
}

function readAddress(
  iss: Issues,
  a: unknown,
  path: string,
  ready: boolean,
): { family: IPFamily; endpoint: SliceEndpoint } | undefined {
  if (!isRecord(a)) {
    iss.add(path, 'must be an object');
    return undefined;
  }
  const before = iss.count;
  const ipText = readString(iss, a, 'ip', `${path}.ip`);
  const ip = ipText === undefined ? undefined : parseIP(ipText);
  if (ipText === undefined) {
    if (iss.count === before) iss.add(`${path}.ip`, 'is required');
  } else if (!ip) iss.add(`${path}.ip`, `${show(ipText)} is not a valid IP address`);
  else {
    const special = specialAddressReason(ip.ip);
    if (special) iss.add(`${path}.ip`, `${ip.ip} ${special}`);
  }
  const nodeName = readString(iss, a, 'nodeName', `${path}.nodeName`);
  if (nodeName !== undefined && nodeName !== '') {
    const r = checkDNS1123Subdomain(nodeName);
    if (r) iss.add(`${path}.nodeName`, r);
  }
  const hostname = readString(iss, a, 'hostname', `${path}.hostname`);
  if (hostname !== undefined && hostname !== '') {
    const r = checkDNS1123Label(hostname);
    if (r) iss.add(`${path}.hostname`, r);
  }
  if (iss.count > before || !ip) return undefined;
  // The mirroring controller writes only `ready`; serving follows it and terminating is false.
  return {
    family: ip.family,
    endpoint: { ip: ip.ip, ready, serving: ready, terminating: false, ...(nodeName ? { nodeName } : {}) },
  };
}

/**
 * Validates a legacy v1 Endpoints object and converts it the way the EndpointSlice mirroring controller
 * does: subsets × addresses become ready endpoints, notReadyAddresses not-ready ones, ports keep their
 * names. Returns undefined (no problem) when it carries the skip-mirror label.
 */
export function parseLegacyEndpoints(iss: Issues, obj: JsonRecord): ParsedEndpoints | undefined {
  const meta = readMeta(iss, obj, true, checkDNS1123Label);
  const subsets = readArray(iss, obj, 'subsets', 'subsets') ?? [];
  const slices: ParsedSlice[] = [];
  const before = iss.count;
  subsets.forEach((sub, i) => {
    const path = `subsets[${i}]`;
    if (!isRecord(sub)) return iss.add(path, 'must be an object');
    const subsetBefore = iss.count;
    const ports = readSlicePorts(iss, sub, `${path}.ports`);
    if (iss.count > subsetBefore || !meta) return;
    const byFamily: Record<IPFamily, SliceEndpoint[]> = { IPv4: [], IPv6: [] };
    for (const [key, ready] of [
      ['addresses', true],
      ['notReadyAddresses', false],
    ] as const) {
      (readArray(iss, sub, key, `${path}.${key}`) ?? []).forEach((a, j) => {
        const parsed = readAddress(iss, a, `${path}.${key}[${j}]`, ready);
        if (parsed) byFamily[parsed.family].push(parsed.endpoint);
      });
    }
    for (const family of ['IPv4', 'IPv6'] as const) {
      if (byFamily[family].length === 0) continue;
      slices.push({
        namespace: meta.namespace,
        name: `${meta.name}-subset-${i}-${family.toLowerCase()}`,
        serviceName: meta.name,
        family,
        ports,
        endpoints: byFamily[family],
      });
    }
  });
  if (!meta) return undefined;
  // Port problems reject the whole object; address problems drop only that address.
  const portProblem = iss.problems.slice(before).some((p) => /^subsets\[\d+\](\.ports|$)/.test(p.field));
  const structural = iss.problems.slice(0, before).length > 0;
  if (portProblem || structural) return undefined;
  if (meta.labels[SKIP_MIRROR_LABEL] === 'true') return undefined;
  return { namespace: meta.namespace, name: meta.name, slices };
}
