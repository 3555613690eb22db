import { parseIP, specialAddressReason } from './ip.js';
import { DEFAULT_NAMESPACE } from './meta.js';
import type { NamedPort, NamespaceInfo, PodInfo, PodPhase } from './policy-types.js';
import { NAMESPACE_NAME_LABEL } from './policy-types.js';
import type { IPFamily } from './types.js';
import {
  checkDNS1123Label,
  checkDNS1123Subdomain,
  checkIanaSvcName,
  checkLabelKey,
  checkLabelValue,
  checkPort,
  isRecord,
  type Issues,
  type JsonRecord,
  readArray,
  readBool,
  readInt,
  readProtocol,
  readRecord,
  readString,
  readStringMap,
  show,
} from './validate.js';

/**
 * v1 Pods and v1 Namespaces as NetworkPolicy enforcement sees them. A Pod with a field svcplane
 * cannot read is kept, marked invalid (see PodInfo.invalid), as long as its namespace and name are
 * known: dropping it would leave a pod of this node unenforced, which is failing open.
 */

const PHASES: readonly PodPhase[] = ['Pending', 'Running', 'Succeeded', 'Failed', 'Unknown'];

/** namespace and name when they are readable (checked), for objects kept even when invalid. */
export function readIdentity(
  iss: Issues,
  obj: JsonRecord,
  namespaced: boolean,
  nameCheck: (s: string) => string | undefined,
): { namespace: string; name: string } | undefined {
  const md = readRecord(iss, obj, 'metadata', 'metadata');
  if (!md) {
    if (obj.metadata === undefined || obj.metadata === null) iss.add('metadata', 'is required');
    return undefined;
  }
  const before = iss.count;
  const name = readString(iss, md, 'name', 'metadata.name');
  if (name === undefined || name === '') {
    if (iss.count === before) iss.add('metadata.name', 'is required');
    return undefined;
  }
  const bad = nameCheck(name);
  if (bad) iss.add('metadata.name', bad);
  let namespace = DEFAULT_NAMESPACE;
  if (namespaced) {
    const ns = readString(iss, md, 'namespace', 'metadata.namespace');
    if (ns === undefined && md.namespace !== undefined && md.namespace !== null) return undefined;
    if (ns !== undefined && ns !== '') {
      const r = checkDNS1123Label(ns);
      // A namespace that no real namespace can have places the object nowhere.
      if (r) {
        iss.add('metadata.namespace', r);
        return undefined;
      }
      namespace = ns;
    }
  }
  return { namespace, name };
}

/** metadata.labels, each key and value checked. */
export function readLabels(iss: Issues, obj: JsonRecord): Record<string, string> {
  const md = isRecord(obj.metadata) ? obj.metadata : {};
  const labels = readStringMap(iss, md, 'labels', 'metadata.labels') ?? {};
  for (const [k, v] of Object.entries(labels)) {
    const r = checkLabelKey(k) ?? checkLabelValue(v);
    if (r) iss.add(`metadata.labels[${show(k)}]`, r);
  }
  return labels;
}

/** Fields of the problems recorded since `before`, deduplicated. */
function fieldsSince(iss: Issues, before: number): string[] {
  return [...new Set(iss.problems.slice(before).map((p) => p.field))];
}

export function parseNamespace(iss: Issues, obj: JsonRecord): NamespaceInfo | undefined {
  const id = readIdentity(iss, obj, false, checkDNS1123Label);
  const labels = readLabels(iss, obj);
  if (!id || iss.count > 0) return undefined;
  const given = labels[NAMESPACE_NAME_LABEL];
  if (given !== undefined && given !== id.name) {
    // The API server overwrites it; a manifest that says otherwise is told, and overwritten the same way.
    iss.add(
      `metadata.labels[${show(NAMESPACE_NAME_LABEL)}]`,
      `${show(given)} is replaced by the namespace's name ${show(id.name)}, as the API server does`,
    );
  }
  return { name: id.name, labels: { ...labels, [NAMESPACE_NAME_LABEL]: id.name } };
}

function readNamedPorts(iss: Issues, spec: JsonRecord): NamedPort[] {
  const out: NamedPort[] = [];
  const containers = readArray(iss, spec, 'containers', 'spec.containers') ?? [];
  containers.forEach((c, i) => {
    const cpath = `spec.containers[${i}]`;
    if (!isRecord(c)) return iss.add(cpath, 'must be an object');
    const ports = readArray(iss, c, 'ports', `${cpath}.ports`) ?? [];
    ports.forEach((p, j) => {
      const path = `${cpath}.ports[${j}]`;
      if (!isRecord(p)) return iss.add(path, 'must be an object');
      const before = iss.count;
      const port = readInt(iss, p, 'containerPort', `${path}.containerPort`);
      if (port === undefined) {
        if (iss.count === before) iss.add(`${path}.containerPort`, 'is required');
      } else {
        const r = checkPort(port, false);
        if (r) iss.add(`${path}.containerPort`, r);
      }
      const protocol = readProtocol(iss, p, `${path}.protocol`);
      const name = readString(iss, p, 'name', `${path}.name`);
      if (name !== undefined && name !== '') {
        const r = checkIanaSvcName(name);
        if (r) iss.add(`${path}.name`, r);
      }
      if (iss.count > before || port === undefined || protocol === undefined) return;
      if (name === undefined || name === '') return;
      const dup = out.find((n) => n.name === name);
      if (dup) {
        // The API server refuses a port name used twice in a pod: which number would it mean?
        iss.add(`${path}.name`, `${show(name)} is already the name of port ${dup.port}/${dup.protocol}`);
        return;
      }
      out.push({ name, protocol, port });
    });
  });
  return out;
}

function readPodIPs(iss: Issues, status: JsonRecord): string[] {
  const single = readString(iss, status, 'podIP', 'status.podIP');
  const list = readArray(iss, status, 'podIPs', 'status.podIPs');
  const raw: { text: unknown; field: string }[] =
    list && list.length > 0
      ? list.map((e, i) => ({
          text: isRecord(e) ? e.ip : e,
          field: `status.podIPs[${i}].ip`,
        }))
      : single
        ? [{ text: single, field: 'status.podIP' }]
        : [];
  const ips: string[] = [];
  const families = new Set<IPFamily>();
  for (const { text, field } of raw) {
    if (typeof text !== 'string') {
      iss.add(field, `must be a string, got ${show(text)}`);
      continue;
    }
    const ip = parseIP(text);
    if (!ip) {
      iss.add(field, `${show(text)} is not a valid IP address`);
      continue;
    }
    const special = specialAddressReason(ip.ip);
    if (special) {
      iss.add(field, `${ip.ip} ${special}`);
      continue;
    }
    if (families.has(ip.family)) {
      iss.add(field, `${ip.ip} is a second ${ip.family} address (at most one per family)`);
      continue;
    }
    families.add(ip.family);
    ips.push(ip.ip);
  }
  if (single && list && list.length > 0) {
    const first = parseIP(single);
    if (!first || first.ip !== ips[0]) {
      iss.add('status.podIP', `${show(single)} must match status.podIPs[0]`);
    }
  }
  return ips;
}

/** Validates a v1 Pod; undefined only when its namespace or name cannot be read. */
export function parsePod(iss: Issues, obj: JsonRecord): PodInfo | undefined {
  const before = iss.count;
  const id = readIdentity(iss, obj, true, checkDNS1123Subdomain);
  const labels = readLabels(iss, obj);
  const spec = readRecord(iss, obj, 'spec', 'spec') ?? {};
  const nodeName = readString(iss, spec, 'nodeName', 'spec.nodeName') ?? '';
  const hostNetwork = readBool(iss, spec, 'hostNetwork', 'spec.hostNetwork') ?? false;
  const namedPorts = readNamedPorts(iss, spec);
  const status = readRecord(iss, obj, 'status', 'status') ?? {};
  const phaseText = readString(iss, status, 'phase', 'status.phase') ?? '';
  let phase: PodPhase | '' = '';
  if ((PHASES as readonly string[]).includes(phaseText)) phase = phaseText as PodPhase;
  else if (phaseText !== '') iss.add('status.phase', `unknown phase ${show(phaseText)}`);
  const ips = readPodIPs(iss, status);
  if (!id) return undefined;
  const base = { namespace: id.namespace, name: id.name, nodeName, hostNetwork, phase, ips };
  if (iss.count > before) {
    // Untrusted labels and ports: keep the pod (its node must still enforce it), trust neither.
    return { ...base, labels: {}, namedPorts: [], invalid: fieldsSince(iss, before) };
  }
  return { ...base, labels, namedPorts };
}
