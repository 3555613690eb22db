import type { Protocol } from '../model/types.js';
import { canonicalPacket, type Packet } from './evaluate.js';
import { cidrHas } from './ip-ranges.js';
import {
  addressPortKey,
  isolatedSetName,
  localSetName,
  type PlanRule,
  type PlanSet,
  type PolicyPlan,
} from './plan.js';
import type { Direction } from './pod-index.js';

/**
 * The plan run as the kernel will run it: set lookups and rules, nothing else (no selector, no
 * policy). What a renderer must reproduce; the property test holds it to evaluate(). Pure.
 */

export type PlanSide = 'not-isolated' | 'exempt' | 'allowed' | 'denied';

export interface PlanVerdict {
  readonly allowed: boolean;
  readonly egress: PlanSide;
  readonly ingress: PlanSide;
  /** The rules that matched (for trace). */
  readonly rules: readonly PlanRule[];
}

/** Membership tests on the plan's sets, the kernel's lookups. */
class Lookup {
  private readonly addressPorts = new Map<string, ReadonlySet<string>>();

  constructor(private readonly plan: PolicyPlan) {}

  private set(name: string): PlanSet {
    const s = this.plan.sets.get(name);
    if (!s) throw new Error(`the plan has no set ${name}`);
    return s;
  }

  /** An `addresses` set holds the address, or a `networks` set covers it. */
  hasAddress(name: string, ip: string): boolean {
    const s = this.set(name);
    if (s.kind === 'addresses') return s.elements.includes(ip);
    if (s.kind === 'networks') return s.elements.some((c) => cidrHas(c, s.family, ip));
    throw new Error(`set ${name} holds no addresses`);
  }

  hasPort(name: string, protocol: Protocol, port: number): boolean {
    const s = this.set(name);
    if (s.kind !== 'ports') throw new Error(`set ${name} holds no ports`);
    return s.elements.some((r) => r.protocol === protocol && port >= r.first && port <= r.last);
  }

  hasAddressPort(name: string, address: string, protocol: Protocol, port: number): boolean {
    const s = this.set(name);
    if (s.kind !== 'address-ports') throw new Error(`set ${name} holds no (address, port) pairs`);
    let keys = this.addressPorts.get(name);
    if (!keys) {
      keys = new Set(s.elements.map(addressPortKey));
      this.addressPorts.set(name, keys);
    }
    return keys.has(addressPortKey({ address, protocol, port }));
  }
}

const lookups = new WeakMap<PolicyPlan, Lookup>();

function lookupOf(plan: PolicyPlan): Lookup {
  let lookup = lookups.get(plan);
  if (!lookup) {
    lookup = new Lookup(plan);
    lookups.set(plan, lookup);
  }
  return lookup;
}

export function planVerdict(plan: PolicyPlan, raw: Packet): PlanVerdict {
  const packet = canonicalPacket(raw);
  if ('error' in packet) throw new Error(`not a packet: ${packet.error}`);
  const lookup = lookupOf(plan);
  const family = packet.family;
  if (!plan.families.includes(family)) {
    return { allowed: true, egress: 'not-isolated', ingress: 'not-isolated', rules: [] };
  }
  const matched: PlanRule[] = [];
  const side = (direction: Direction): PlanSide => {
    const local = direction === 'egress' ? packet.src : packet.dst;
    const other = direction === 'egress' ? packet.dst : packet.src;
    if (!lookup.hasAddress(isolatedSetName(direction, family), local)) return 'not-isolated';
    // Fixed allowances of the mechanism: a pod to itself; the node to its own pods.
    if (packet.src === packet.dst && lookup.hasAddress(localSetName(family), local)) return 'exempt';
    if (direction === 'ingress' && packet.fromNode) return 'exempt';
    const hits = plan.rules.filter(
      (r) =>
        r.direction === direction &&
        r.family === family &&
        lookup.hasAddress(r.targets, local) &&
        (r.peer === undefined || lookup.hasAddress(r.peer, other)) &&
        (r.ports === undefined ||
          (r.ports.kind === 'ports'
            ? lookup.hasPort(r.ports.set, packet.protocol, packet.port)
            : lookup.hasAddressPort(r.ports.set, packet.dst, packet.protocol, packet.port))),
    );
    matched.push(...hits);
    return hits.length > 0 ? 'allowed' : 'denied';
  };
  const egress = side('egress');
  const ingress = side('ingress');
  return { allowed: egress !== 'denied' && ingress !== 'denied', egress, ingress, rules: matched };
}
