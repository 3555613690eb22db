import { cidrContains, parseCIDR } from './ip.js';
import type {
  IPBlock,
  NetworkPolicy,
  PolicyPeer,
  PolicyPort,
  PolicyRule,
  PolicyType,
} from './policy-types.js';
import { readIdentity } from './pod.js';
import { readLabelSelector, SELECT_ALL } from './selector.js';
import {
  checkDNS1123Subdomain,
  checkIanaSvcName,
  checkPort,
  compareStrings,
  isRecord,
  type Issues,
  type JsonRecord,
  readArray,
  readInt,
  readProtocol,
  readRecord,
  readString,
  readStringArray,
  show,
} from './validate.js';

/**
 * networking.k8s.io/v1 NetworkPolicy: validated with the API server's rules
 * (pkg/apis/networking/validation: ValidateNetworkPolicySpec, …Port, …Peer, ValidateIPBlock) and
 * defaulted as it does (pkg/apis/networking/v1/defaults.go: protocol TCP; policyTypes Ingress, plus
 * Egress when spec.egress is non-empty), so a manifest means what the API server would make of it.
 *
 * An invalid policy is kept, never dropped: it allows nothing, and the pods it selects stay isolated
 * for its policy types (a typo must not open what the policy was written to close). When its
 * podSelector cannot be read it isolates every pod of its namespace; when its policyTypes cannot be
 * read it isolates both directions.
 */

const POLICY_TYPES: readonly PolicyType[] = ['Ingress', 'Egress'];

function readPort(iss: Issues, raw: unknown, path: string): PolicyPort | undefined {
  if (!isRecord(raw)) {
    iss.add(path, 'must be an object');
    return undefined;
  }
  const before = iss.count;
  const protocol = readProtocol(iss, raw, `${path}.protocol`);
  const p = raw.port;
  let port: number | string | undefined;
  if (typeof p === 'number') {
    const n = readInt(iss, raw, 'port', `${path}.port`);
    const r = n === undefined ? undefined : checkPort(n, false);
    if (r) iss.add(`${path}.port`, r);
    port = n;
  } else if (typeof p === 'string') {
    const r = checkIanaSvcName(p);
    if (r) iss.add(`${path}.port`, r);
    port = p;
  } else if (p !== undefined && p !== null) {
    iss.add(`${path}.port`, `must be a port number or name, got ${show(p)}`);
  }
  const endPort = readInt(iss, raw, 'endPort', `${path}.endPort`);
  if (endPort !== undefined) {
    if (port === undefined) {
      iss.add(`${path}.endPort`, 'may not be specified when `port` is not specified');
    } else if (typeof port === 'string') {
      iss.add(`${path}.endPort`, 'may not be specified when `port` is non-numeric');
    } else {
      if (endPort < port) iss.add(`${path}.endPort`, `${endPort} must be greater than or equal to \`port\``);
      const r = checkPort(endPort, false);
      if (r) iss.add(`${path}.endPort`, r);
    }
  }
  if (iss.count > before || protocol === undefined) return undefined;
  return {
    protocol,
    ...(port !== undefined ? { port } : {}),
    ...(endPort !== undefined ? { endPort } : {}),
  };
}

function readIPBlock(iss: Issues, raw: unknown, path: string): IPBlock | undefined {
  if (!isRecord(raw)) {
    iss.add(path, 'must be an object');
    return undefined;
  }
  const before = iss.count;
  const text = readString(iss, raw, 'cidr', `${path}.cidr`);
  if (text === undefined || text === '') {
    if (iss.count === before) iss.add(`${path}.cidr`, 'is required');
    return undefined;
  }
  const cidr = parseCIDR(text);
  if (!cidr) {
    iss.add(`${path}.cidr`, `${show(text)} is not a valid CIDR`);
    return undefined;
  }
  const prefix = Number(cidr.cidr.split('/')[1]);
  const except: string[] = [];
  (readStringArray(iss, raw, 'except', `${path}.except`) ?? []).forEach((t, i) => {
    const field = `${path}.except[${i}]`;
    const ex = parseCIDR(t);
    if (!ex) return iss.add(field, `${show(t)} is not a valid CIDR`);
    const [net, len] = ex.cidr.split('/');
    if (ex.family !== cidr.family || !cidrContains(cidr.cidr, net!) || Number(len) <= prefix) {
      return iss.add(field, `${show(t)} must be a strict subset of \`cidr\` ${cidr.cidr}`);
    }
    if (!except.includes(ex.cidr)) except.push(ex.cidr);
  });
  if (iss.count > before) return undefined;
  return { cidr: cidr.cidr, family: cidr.family, except: except.sort(compareStrings) };
}

function readPeer(iss: Issues, raw: unknown, path: string): PolicyPeer | undefined {
  if (!isRecord(raw)) {
    iss.add(path, 'must be an object');
    return undefined;
  }
  const before = iss.count;
  const pods = readLabelSelector(iss, raw, 'podSelector', `${path}.podSelector`);
  const namespaces = readLabelSelector(iss, raw, 'namespaceSelector', `${path}.namespaceSelector`);
  const hasBlock = raw.ipBlock !== undefined && raw.ipBlock !== null;
  const ipBlock = hasBlock ? readIPBlock(iss, raw.ipBlock, `${path}.ipBlock`) : undefined;
  const hasPods = pods.selector !== undefined || pods.invalid;
  const hasNamespaces = namespaces.selector !== undefined || namespaces.invalid;
  const count = (hasPods ? 1 : 0) + (hasNamespaces ? 1 : 0) + (hasBlock ? 1 : 0);
  if (count === 0) iss.add(path, 'must specify a peer');
  else if (count > 1 && hasBlock) iss.add(path, 'may not specify both ipBlock and another peer');
  if (iss.count > before) return undefined;
  if (ipBlock) return { kind: 'ipBlock', ipBlock };
  return {
    kind: 'pods',
    ...(pods.selector ? { podSelector: pods.selector } : {}),
    ...(namespaces.selector ? { namespaceSelector: namespaces.selector } : {}),
  };
}

function readRules(
  iss: Issues,
  spec: JsonRecord,
  key: 'ingress' | 'egress',
  peersKey: 'from' | 'to',
): PolicyRule[] {
  const rules: PolicyRule[] = [];
  (readArray(iss, spec, key, `spec.${key}`) ?? []).forEach((raw, i) => {
    const path = `spec.${key}[${i}]`;
    if (!isRecord(raw)) return iss.add(path, 'must be an object');
    const before = iss.count;
    const ports = (readArray(iss, raw, 'ports', `${path}.ports`) ?? []).map((p, j) =>
      readPort(iss, p, `${path}.ports[${j}]`),
    );
    const peers = (readArray(iss, raw, peersKey, `${path}.${peersKey}`) ?? []).map((p, j) =>
      readPeer(iss, p, `${path}.${peersKey}[${j}]`),
    );
    if (iss.count > before) return;
    rules.push({ peers: peers as PolicyPeer[], ports: ports as PolicyPort[] });
  });
  return rules;
}

/**
 * spec.policyTypes, defaulted; `unreadable` when it is present but cannot be trusted (then both
 * directions are isolated).
 */
function readPolicyTypes(iss: Issues, spec: JsonRecord): { types: PolicyType[]; unreadable: boolean } {
  const before = iss.count;
  const list = readStringArray(iss, spec, 'policyTypes', 'spec.policyTypes');
  if (list && list.length > POLICY_TYPES.length) {
    iss.add('spec.policyTypes', `may not specify more than two policyTypes, got ${show(list)}`);
  }
  list?.forEach((t, i) => {
    if (!(POLICY_TYPES as readonly string[]).includes(t)) {
      iss.add(`spec.policyTypes[${i}]`, `unsupported value ${show(t)}: must be Ingress or Egress`);
    }
  });
  if (iss.count > before) return { types: [...POLICY_TYPES], unreadable: true };
  if (list && list.length > 0) {
    return { types: POLICY_TYPES.filter((t) => list.includes(t)), unreadable: false };
  }
  // The API server's defaulting; an egress section that is there but unreadable counts as non-empty.
  const egress = spec.egress;
  const hasEgress = egress !== undefined && egress !== null && (!Array.isArray(egress) || egress.length > 0);
  return { types: hasEgress ? ['Ingress', 'Egress'] : ['Ingress'], unreadable: false };
}

/** Validates a NetworkPolicy; undefined only when its namespace or name cannot be read. */
export function parseNetworkPolicy(iss: Issues, obj: JsonRecord): NetworkPolicy | undefined {
  const before = iss.count;
  const id = readIdentity(iss, obj, true, checkDNS1123Subdomain);
  const spec = readRecord(iss, obj, 'spec', 'spec') ?? {};
  const podSelector = readLabelSelector(iss, spec, 'podSelector', 'spec.podSelector');
  const { types } = readPolicyTypes(iss, spec);
  const ingress = readRules(iss, spec, 'ingress', 'from');
  const egress = readRules(iss, spec, 'egress', 'to');
  if (!id) return undefined;
  const selector = podSelector.invalid ? undefined : (podSelector.selector ?? SELECT_ALL);
  const base = {
    namespace: id.namespace,
    name: id.name,
    ...(selector ? { podSelector: selector } : {}),
    policyTypes: types,
  };
  if (iss.count > before) {
    const invalid = [...new Set(iss.problems.slice(before).map((p) => p.field))];
    return { ...base, ingress: [], egress: [], invalid };
  }
  return { ...base, ingress, egress };
}
