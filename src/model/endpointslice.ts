import { parseIP, specialAddressReason } from './ip.js';
import { readMeta } from './meta.js';
import type { Endpoint, IPFamily, Protocol } from './types.js';
import { SERVICE_NAME_LABEL, TRIGGER_TIME_ANNOTATION } from './types.js';
import {
  checkDNS1123Label,
  checkDNS1123Subdomain,
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
  readStringArray,
  show,
} from './validate.js';

/** An endpoint of a slice, before it is paired with a port number. */
export type SliceEndpoint = Omit<Endpoint, 'port'>;

export interface SlicePort {
  /** '' when unnamed. */
  readonly name: string;
  readonly protocol: Protocol;
  readonly port: number;
}

/** A validated EndpointSlice (or a legacy Endpoints subset mirrored into one). */
export interface ParsedSlice {
  readonly namespace: string;
  readonly name: string;
  /** The `kubernetes.io/service-name` label (a slice without a valid one is a problem, not parsed). */
  readonly serviceName: string;
  readonly family: IPFamily;
  readonly ports: readonly SlicePort[];
  readonly endpoints: readonly SliceEndpoint[];
  /** The trigger-time annotation (ms since the epoch), when present and a valid timestamp. */
  readonly triggerTime?: number;
}

/** Slices of headless Services; kube-proxy's informer filters them out. */
const HEADLESS_LABEL = 'service.kubernetes.io/headless';

/** Validates the slice-level port list; any bad port makes the whole slice unusable. */
export function readSlicePorts(iss: Issues, obj: JsonRecord, field: string): SlicePort[] {
  const out: SlicePort[] = [];
  (readArray(iss, obj, 'ports', field) ?? []).forEach((p, i) => {
    const path = `${field}[${i}]`;
    if (!isRecord(p)) return iss.add(path, 'must be an object');
    const before = iss.count;
    const name = readString(iss, p, 'name', `${path}.name`) ?? '';
    if (name !== '') {
      const r = checkDNS1123Label(name);
      if (r) iss.add(`${path}.name`, r);
    }
    const protocol = readProtocol(iss, p, `${path}.protocol`);
    const port = readInt(iss, p, 'port', `${path}.port`);
    if (port !== undefined) {
      const r = checkPort(port, false);
      if (r) iss.add(`${path}.port`, r);
    }
    // A port without a number (possible for named targetPorts no pod exposes) is ignored, as kube-proxy does.
    if (iss.count > before || protocol === undefined || port === undefined) return;
    out.push({ name, protocol, port });
  });
  return out;
}

function readHintNames(
  iss: Issues,
  hints: JsonRecord,
  key: string,
  path: string,
  check: (s: string) => string | undefined,
): string[] | undefined {
  const arr = readArray(iss, hints, key, path);
  if (!arr) return undefined;
  const out: string[] = [];
  arr.forEach((h, i) => {
    if (!isRecord(h)) return iss.add(`${path}[${i}]`, 'must be an object');
    const name = readString(iss, h, 'name', `${path}[${i}].name`);
    if (name === undefined) {
      if (h.name === undefined || h.name === null) iss.add(`${path}[${i}].name`, 'is required');
      return;
    }
    const r = name === '' ? 'must not be empty' : check(name);
    if (r) iss.add(`${path}[${i}].name`, r);
    else out.push(name);
  });
  return out;
}

/** One endpoint; undefined (with problems) when it cannot be used. Only addresses[0] matters. */
function readSliceEndpoint(
  iss: Issues,
  ep: unknown,
  path: string,
  family: IPFamily,
): SliceEndpoint | undefined {
  if (!isRecord(ep)) {
    iss.add(path, 'must be an object');
    return undefined;
  }
  const before = iss.count;
  const addresses = readStringArray(iss, ep, 'addresses', `${path}.addresses`);
  const first = addresses?.[0];
  let ip: string | undefined;
  if (first === undefined) {
    if (iss.count === before) iss.add(`${path}.addresses`, 'at least one address is required');
  } else {
    const parsed = parseIP(first);
    if (!parsed) iss.add(`${path}.addresses[0]`, `${show(first)} is not a valid IP address`);
    else if (parsed.family !== family) {
      iss.add(`${path}.addresses[0]`, `${parsed.ip} is not an ${family} address (slice addressType)`);
    } else {
      const special = specialAddressReason(parsed.ip);
      if (special) iss.add(`${path}.addresses[0]`, `${parsed.ip} ${special}`);
      else ip = parsed.ip;
    }
  }
  const cond = readRecord(iss, ep, 'conditions', `${path}.conditions`) ?? {};
  const readyRaw = readBool(iss, cond, 'ready', `${path}.conditions.ready`);
  const servingRaw = readBool(iss, cond, 'serving', `${path}.conditions.serving`);
  const terminatingRaw = readBool(iss, cond, 'terminating', `${path}.conditions.terminating`);
  const nodeName = readString(iss, ep, 'nodeName', `${path}.nodeName`);
  if (nodeName !== undefined && nodeName !== '') {
    const r = checkDNS1123Subdomain(nodeName);
    if (r) iss.add(`${path}.nodeName`, r);
  }
  const zone = readString(iss, ep, 'zone', `${path}.zone`);
  if (zone !== undefined) {
    const r = checkLabelValue(zone);
    if (r) iss.add(`${path}.zone`, r);
  }
  const hints = readRecord(iss, ep, 'hints', `${path}.hints`);
  const zoneHints = hints && readHintNames(iss, hints, 'forZones', `${path}.hints.forZones`, checkLabelValue);
  const nodeHints =
    hints && readHintNames(iss, hints, 'forNodes', `${path}.hints.forNodes`, checkDNS1123Subdomain);
  if (iss.count > before || ip === undefined) return undefined;
  const ready = readyRaw ?? true;
  return {
    ip,
    ready,
    serving: servingRaw ?? true,
    terminating: terminatingRaw ?? false,
    ...(nodeName ? { nodeName } : {}),
    ...(zone ? { zone } : {}),
    ...(zoneHints ? { zoneHints } : {}),
    ...(nodeHints ? { nodeHints } : {}),
  };
}

/**
 * Validates a discovery.k8s.io/v1 EndpointSlice. A slice-level problem rejects the whole slice; a bad
 * endpoint is dropped on its own (with a problem). FQDN and headless slices yield undefined, no problem.
 */
export function parseEndpointSlice(iss: Issues, obj: JsonRecord): ParsedSlice | undefined {
  const meta = readMeta(iss, obj, true, checkDNS1123Subdomain);
  const addressType = readString(iss, obj, 'addressType', 'addressType');
  let family: IPFamily | undefined;
  if (addressType === 'IPv4' || addressType === 'IPv6') family = addressType;
  else if (addressType === undefined) {
    if (obj.addressType === undefined || obj.addressType === null) iss.add('addressType', 'is required');
  } else if (addressType !== 'FQDN') {
    iss.add('addressType', `unsupported value ${show(addressType)}: must be IPv4, IPv6 or FQDN`);
  }
  const ports = readSlicePorts(iss, obj, 'ports');
  const rawEndpoints = readArray(iss, obj, 'endpoints', 'endpoints') ?? [];
  if (!meta || iss.count > 0 || family === undefined) return undefined;
  if (Object.hasOwn(meta.labels, HEADLESS_LABEL)) return undefined;
  const serviceName = readServiceName(iss, meta.labels);
  if (serviceName === undefined) return undefined;
  const endpoints: SliceEndpoint[] = [];
  rawEndpoints.forEach((ep, i) => {
    const parsed = readSliceEndpoint(iss, ep, `endpoints[${i}]`, family);
    if (parsed) endpoints.push(parsed);
  });
  const triggerTime = readTriggerTime(obj);
  return {
    namespace: meta.namespace,
    name: meta.name,
    serviceName,
    family,
    ports,
    endpoints,
    ...(triggerTime !== undefined ? { triggerTime } : {}),
  };
}

/**
 * The `kubernetes.io/service-name` label: the Service the slice belongs to. Without it, or with a
 * value no Service can have, the slice serves nothing; reported (kube-proxy logs it too), not dropped
 * unseen.
 */
function readServiceName(iss: Issues, labels: Readonly<Record<string, string>>): string | undefined {
  const field = `metadata.labels[${show(SERVICE_NAME_LABEL)}]`;
  const name = labels[SERVICE_NAME_LABEL];
  if (name === undefined || name === '') {
    iss.add(field, 'is required: the slice belongs to no Service and is ignored');
    return undefined;
  }
  const r = checkDNS1123Label(name);
  if (r) {
    iss.add(field, `${r}: no Service has this name; the slice is ignored`);
    return undefined;
  }
  return name;
}

/** Informational only (metrics): a missing or malformed annotation is ignored, never a problem. */
function readTriggerTime(obj: JsonRecord): number | undefined {
  const md = obj.metadata;
  const annotations = isRecord(md) ? md.annotations : undefined;
  const value = isRecord(annotations) ? annotations[TRIGGER_TIME_ANNOTATION] : undefined;
  if (typeof value !== 'string' || !/^\d{4}-\d{2}-\d{2}T[0-9:.]+(Z|[+-]\d{2}:\d{2})$/.test(value)) {
    return undefined;
  }
  const ms = Date.parse(value);
  return Number.isFinite(ms) ? ms : undefined;
}
