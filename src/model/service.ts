import { parseCIDR, parseIP, specialAddressReason } from './ip.js';
import { readMeta } from './meta.js';
import type {
  IPFamily,
  LoadBalancerIngress,
  Protocol,
  Service,
  ServicePort,
  ServiceType,
  TrafficPolicy,
} from './types.js';
import { DEFAULT_AFFINITY_TIMEOUT_SECONDS, SERVICE_PROXY_NAME_LABEL } from './types.js';
import {
  checkDNS1123Label,
  checkIanaSvcName,
  checkPort,
  isRecord,
  type Issues,
  type JsonRecord,
  readArray,
  readInt,
  readProtocol,
  readRecord,
  readString,
  readStringArray,
  readStringMap,
  show,
} from './validate.js';

/** A validated Service before endpoints are joined (every port has `endpoints: []`). */
export interface ParsedService {
  readonly service: Service;
  /** Whether `spec.selector` is non-empty (decides how legacy Endpoints are used). */
  readonly hasSelector: boolean;
}

const SERVICE_TYPES = ['ClusterIP', 'NodePort', 'LoadBalancer', 'ExternalName'] as const;
const TRAFFIC_DISTRIBUTIONS = ['PreferClose', 'PreferSameZone', 'PreferSameNode'];
const MAX_AFFINITY_TIMEOUT_SECONDS = 86400;

function readEnum<T extends string>(
  iss: Issues,
  obj: JsonRecord,
  key: string,
  path: string,
  allowed: readonly T[],
  dflt: T,
): T | undefined {
  const v = readString(iss, obj, key, path);
  if (v === undefined || v === '')
    return obj[key] === undefined || obj[key] === null || v === '' ? dflt : undefined;
  if ((allowed as readonly string[]).includes(v)) return v as T;
  iss.add(path, `unsupported value ${show(v)}: must be one of ${allowed.join(', ')}`);
  return undefined;
}

/** spec.clusterIPs (else spec.clusterIP): canonical, at most one per family; 'None' means headless. */
function readClusterIPs(iss: Issues, spec: JsonRecord): { ips: string[]; headless: boolean } {
  const single = readString(iss, spec, 'clusterIP', 'spec.clusterIP');
  const list = readStringArray(iss, spec, 'clusterIPs', 'spec.clusterIPs');
  const field = list && list.length > 0 ? 'spec.clusterIPs' : 'spec.clusterIP';
  const raw = list && list.length > 0 ? list : single ? [single] : [];
  if (list && list.length > 0 && single && single !== list[0]) {
    iss.add('spec.clusterIP', `${show(single)} must match spec.clusterIPs[0] ${show(list[0])}`);
  }
  if (raw[0] === 'None') {
    if (raw.length > 1) iss.add(field, 'a headless Service ("None") may not have other cluster IPs');
    return { ips: [], headless: true };
  }
  const ips: string[] = [];
  const seen = new Set<IPFamily>();
  raw.forEach((text, i) => {
    const f = field === 'spec.clusterIPs' ? `spec.clusterIPs[${i}]` : field;
    const ip = parseIP(text);
    if (!ip) return iss.add(f, `${show(text)} is not a valid IP address`);
    // No allocator vouches for a manifest's cluster IP: 127.0.0.1 would capture the node's own traffic.
    const special = specialAddressReason(ip.ip);
    if (special) return iss.add(f, `${ip.ip} ${special}`);
    if (seen.has(ip.family))
      return iss.add(f, `${ip.ip} is a second ${ip.family} cluster IP (at most one per family)`);
    seen.add(ip.family);
    ips.push(ip.ip);
  });
  return { ips, headless: false };
}

function readExternalIPs(iss: Issues, spec: JsonRecord): string[] {
  const out: string[] = [];
  (readStringArray(iss, spec, 'externalIPs', 'spec.externalIPs') ?? []).forEach((text, i) => {
    const ip = parseIP(text);
    const special = ip && specialAddressReason(ip.ip);
    if (!ip) iss.add(`spec.externalIPs[${i}]`, `${show(text)} is not a valid IP address`);
    else if (special) iss.add(`spec.externalIPs[${i}]`, `${ip.ip} ${special}`);
    else if (!out.includes(ip.ip)) out.push(ip.ip);
  });
  return out;
}

function readIngress(iss: Issues, obj: JsonRecord): LoadBalancerIngress[] {
  const status = readRecord(iss, obj, 'status', 'status');
  const lb = status && readRecord(iss, status, 'loadBalancer', 'status.loadBalancer');
  const ingress = lb && readArray(iss, lb, 'ingress', 'status.loadBalancer.ingress');
  const out: LoadBalancerIngress[] = [];
  (ingress ?? []).forEach((ing, i) => {
    const path = `status.loadBalancer.ingress[${i}]`;
    if (!isRecord(ing)) return iss.add(path, 'must be an object');
    readString(iss, ing, 'hostname', `${path}.hostname`);
    const ipText = readString(iss, ing, 'ip', `${path}.ip`);
    const ipMode = readEnum(iss, ing, 'ipMode', `${path}.ipMode`, ['VIP', 'Proxy'] as const, 'VIP');
    // Hostname-only ingress (some cloud LBs) has nothing for the dataplane.
    if (ipText === undefined || ipText === '') return;
    const ip = parseIP(ipText);
    if (!ip) return iss.add(`${path}.ip`, `${show(ipText)} is not a valid IP address`);
    const special = specialAddressReason(ip.ip);
    if (special) return iss.add(`${path}.ip`, `${ip.ip} ${special}`);
    if (ipMode && !out.some((o) => o.ip === ip.ip)) out.push({ ip: ip.ip, ipMode });
  });
  return out;
}

function readSourceRanges(iss: Issues, spec: JsonRecord): string[] {
  const out: string[] = [];
  (readStringArray(iss, spec, 'loadBalancerSourceRanges', 'spec.loadBalancerSourceRanges') ?? []).forEach(
    (text, i) => {
      const cidr = parseCIDR(text.trim());
      if (!cidr) iss.add(`spec.loadBalancerSourceRanges[${i}]`, `${show(text)} is not a valid CIDR`);
      else if (!out.includes(cidr.cidr)) out.push(cidr.cidr);
    },
  );
  return out;
}

function readSessionAffinity(iss: Issues, spec: JsonRecord): Service['sessionAffinity'] | undefined {
  const type = readEnum(
    iss,
    spec,
    'sessionAffinity',
    'spec.sessionAffinity',
    ['None', 'ClientIP'] as const,
    'None',
  );
  const cfg = readRecord(iss, spec, 'sessionAffinityConfig', 'spec.sessionAffinityConfig');
  const clientIP = cfg && readRecord(iss, cfg, 'clientIP', 'spec.sessionAffinityConfig.clientIP');
  const path = 'spec.sessionAffinityConfig.clientIP.timeoutSeconds';
  const timeout = clientIP && readInt(iss, clientIP, 'timeoutSeconds', path);
  if (type !== 'ClientIP') return type === 'None' ? { type: 'None' } : undefined;
  const timeoutSeconds = timeout ?? DEFAULT_AFFINITY_TIMEOUT_SECONDS;
  if (timeoutSeconds < 1 || timeoutSeconds > MAX_AFFINITY_TIMEOUT_SECONDS) {
    iss.add(path, `${timeoutSeconds} must be between 1 and ${MAX_AFFINITY_TIMEOUT_SECONDS}`);
    return undefined;
  }
  return { type: 'ClientIP', timeoutSeconds };
}

function readPorts(
  iss: Issues,
  spec: JsonRecord,
  ns: string,
  name: string,
  type: ServiceType,
  portsRequired: boolean,
): ServicePort[] {
  const raw = readArray(iss, spec, 'ports', 'spec.ports');
  if (raw === undefined || raw.length === 0) {
    const absent = spec.ports === undefined || spec.ports === null || raw?.length === 0;
    if (portsRequired && absent) iss.add('spec.ports', 'at least one port is required');
    return [];
  }
  const out: ServicePort[] = [];
  const names = new Set<string>();
  const portKeys = new Set<string>();
  const nodePortKeys = new Set<string>();
  raw.forEach((p, i) => {
    const path = `spec.ports[${i}]`;
    if (!isRecord(p)) return iss.add(path, 'must be an object');
    const before = iss.count;
    const portName = readString(iss, p, 'name', `${path}.name`) ?? '';
    if (portName !== '') {
      const r = checkDNS1123Label(portName);
      if (r) iss.add(`${path}.name`, r);
      else if (names.has(portName)) iss.add(`${path}.name`, `duplicate port name ${show(portName)}`);
      names.add(portName);
    } else if (raw.length > 1) {
      iss.add(`${path}.name`, 'is required when a Service has more than one port');
    }
    const protocol: Protocol | undefined = readProtocol(iss, p, `${path}.protocol`);
    const port = readInt(iss, p, 'port', `${path}.port`);
    if (port === undefined) {
      if (p.port === undefined || p.port === null) iss.add(`${path}.port`, 'is required');
    } else {
      const r = checkPort(port, false);
      if (r) iss.add(`${path}.port`, r);
    }
    const targetPort = readTargetPort(iss, p, `${path}.targetPort`, port);
    const nodePort = readInt(iss, p, 'nodePort', `${path}.nodePort`) ?? 0;
    const npr = checkPort(nodePort, true);
    if (npr) iss.add(`${path}.nodePort`, npr);
    else if (nodePort !== 0 && type === 'ClusterIP') {
      iss.add(`${path}.nodePort`, 'may not be set when type is ClusterIP');
    }
    if (iss.count > before || port === undefined || protocol === undefined || targetPort === undefined)
      return;
    const key = `${port}/${protocol}`;
    if (portKeys.has(key)) return iss.add(`${path}.port`, `duplicate port ${port}/${protocol}`);
    portKeys.add(key);
    if (nodePort !== 0) {
      if (nodePortKeys.has(`${nodePort}/${protocol}`)) {
        return iss.add(`${path}.nodePort`, `duplicate nodePort ${nodePort}/${protocol}`);
      }
      nodePortKeys.add(`${nodePort}/${protocol}`);
    }
    out.push({
      namespace: ns,
      serviceName: name,
      portName,
      protocol,
      port,
      targetPort,
      nodePort,
      endpoints: [],
    });
  });
  return out;
}

/** targetPort: a number 1–65535 or an IANA_SVC_NAME; 0, '' and absent mean "same as port" (API defaulting). */
function readTargetPort(
  iss: Issues,
  p: JsonRecord,
  path: string,
  port: number | undefined,
): number | string | undefined {
  const v = p.targetPort;
  if (v === undefined || v === null || v === 0 || v === '') return port;
  if (typeof v === 'number') {
    const r = Number.isSafeInteger(v) ? checkPort(v, false) : `must be an integer, got ${show(v)}`;
    if (r) iss.add(path, r);
    return r ? undefined : v;
  }
  if (typeof v === 'string') {
    const r = checkIanaSvcName(v);
    if (r) iss.add(path, r);
    return r ? undefined : v;
  }
  iss.add(path, `must be a number or a port name, got ${Array.isArray(v) ? 'array' : typeof v}`);
  return undefined;
}

/**
 * Validates one v1 Service. Returns undefined (with problems in `iss`) when any part of it is bad:
 * the dataplane never programs half a Service.
 */
export function parseService(iss: Issues, obj: JsonRecord): ParsedService | undefined {
  const meta = readMeta(iss, obj, true, checkDNS1123Label);
  const spec = readRecord(iss, obj, 'spec', 'spec');
  if (!spec) {
    if (obj.spec === undefined || obj.spec === null) iss.add('spec', 'is required');
    return undefined;
  }
  const rawType = readEnum(iss, spec, 'type', 'spec.type', SERVICE_TYPES, 'ClusterIP');
  const beforeIPs = iss.count;
  const { ips, headless } = readClusterIPs(iss, spec);
  const clusterIPProblems = iss.count > beforeIPs;
  const selector = readStringMap(iss, spec, 'selector', 'spec.selector') ?? {};
  const skipReason: Service['skipReason'] =
    meta && Object.hasOwn(meta.labels, SERVICE_PROXY_NAME_LABEL)
      ? 'service-proxy-name'
      : rawType === 'ExternalName'
        ? 'ExternalName'
        : headless
          ? 'headless'
          : undefined;
  const type: ServiceType = rawType === undefined || rawType === 'ExternalName' ? 'ClusterIP' : rawType;
  const externalIPs = readExternalIPs(iss, spec);
  const loadBalancerIngress = readIngress(iss, obj);
  const loadBalancerSourceRanges = readSourceRanges(iss, spec);
  const sessionAffinity = readSessionAffinity(iss, spec);
  const policies = ['Cluster', 'Local'] as const;
  const externalTrafficPolicy: TrafficPolicy | undefined = readEnum(
    iss,
    spec,
    'externalTrafficPolicy',
    'spec.externalTrafficPolicy',
    policies,
    'Cluster',
  );
  const internalTrafficPolicy: TrafficPolicy | undefined = readEnum(
    iss,
    spec,
    'internalTrafficPolicy',
    'spec.internalTrafficPolicy',
    policies,
    'Cluster',
  );
  const healthCheckNodePort = readInt(iss, spec, 'healthCheckNodePort', 'spec.healthCheckNodePort') ?? 0;
  const hcr = checkPort(healthCheckNodePort, true);
  if (hcr) iss.add('spec.healthCheckNodePort', hcr);
  const trafficDistribution = readString(iss, spec, 'trafficDistribution', 'spec.trafficDistribution');
  if (trafficDistribution !== undefined && !TRAFFIC_DISTRIBUTIONS.includes(trafficDistribution)) {
    iss.add(
      'spec.trafficDistribution',
      `unsupported value ${show(trafficDistribution)}: must be one of ${TRAFFIC_DISTRIBUTIONS.join(', ')}`,
    );
  }
  // The manifest source has no IP allocator, so a proxied Service must come with its cluster IP.
  if (skipReason === undefined && ips.length === 0 && !clusterIPProblems && rawType !== undefined) {
    iss.add('spec.clusterIP', `a ${type} Service needs a cluster IP (there is no allocator)`);
  }
  const ports = meta ? readPorts(iss, spec, meta.namespace, meta.name, type, skipReason === undefined) : [];
  if (
    !meta ||
    iss.count > 0 ||
    rawType === undefined ||
    sessionAffinity === undefined ||
    externalTrafficPolicy === undefined ||
    internalTrafficPolicy === undefined
  ) {
    return undefined;
  }
  const service: Service = {
    namespace: meta.namespace,
    name: meta.name,
    type,
    clusterIPs: ips,
    externalIPs,
    loadBalancerIngress,
    loadBalancerSourceRanges,
    sessionAffinity,
    externalTrafficPolicy,
    internalTrafficPolicy,
    healthCheckNodePort,
    ...(trafficDistribution !== undefined ? { trafficDistribution } : {}),
    ports,
    ...(skipReason !== undefined ? { skipReason } : {}),
  };
  return { service, hasSelector: Object.keys(selector).length > 0 };
}
