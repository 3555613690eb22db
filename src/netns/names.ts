/**
 * The sandbox's functional core: names, addresses and the `ip -batch` scripts that build it.
 * Nothing here spawns or touches the kernel, so every rule about names and addressing is testable
 * as plain data.
 *
 * Layout of one sandbox `<id>` (everything carries the prefix `svcp-<id>-`):
 *
 *   svcp-<id>-outside             svcp-<id>-node                          svcp-<id>-<pod>
 *   eth0 192.0.2.2/24   <-veth->  ext0 192.0.2.1/24 (the node's address)
 *        2001:db8::2/64                2001:db8::1/64
 *   default via 192.0.2.1         cbr0 10.244.0.1/24, fd00:10:244::1/64
 *                                   └ vethN (hairpin on)   <-veth->    eth0 10.244.0.N/24
 *                                 default via 192.0.2.2 (-> outside,          fd00:10:244::N/64
 *                                 a dead end: nothing leaves the sandbox) default via the bridge
 */

export const NS_PREFIX = 'svcp-';
export const BRIDGE = 'cbr0';
export const NODE_EXT_LINK = 'ext0';
export const POD_LINK = 'eth0';
export const OUTSIDE_LINK = 'eth0';
/**
 * Host-side veth names are `veth<N>`. They are bridge ports, so pod packets enter the node's IP layer
 * on cbr0: here `--detect-local-mode=BridgeInterface --pod-bridge-interface=cbr0` matches pods, and
 * InterfaceNamePrefix needs routed pod interfaces (as Calico's), not these.
 */
export const HOST_VETH_PREFIX = 'veth';

export const POD_CIDR_V4 = '10.244.0.0/24';
export const POD_CIDR_V6 = 'fd00:10:244::/64';
export const GATEWAY_V4 = '10.244.0.1';
export const GATEWAY_V6 = 'fd00:10:244::1';
export const NODE_IP_V4 = '192.0.2.1';
export const NODE_IP_V6 = '2001:db8::1';
export const OUTSIDE_IP_V4 = '192.0.2.2';
export const OUTSIDE_IP_V6 = '2001:db8::2';
/** A fixed MAC keeps the bridge's address from changing as ports come and go. */
export const BRIDGE_MAC = '02:53:76:70:00:01';

/** Lowest and highest pod index (10.244.0.N); .1 is the bridge gateway. */
export const MIN_POD_INDEX = 2;
export const MAX_POD_INDEX = 254;

/** Names of the two fixed namespaces, as `from`/`where` arguments. */
export type Place = 'node' | 'outside';
const RESERVED = new Set<string>(['node', 'outside']);

const ID_RE = /^[a-z0-9]{1,8}$/;
/** Pod names: DNS-label-like, short enough for a readable namespace name. */
const POD_RE = /^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$/;

export function validateId(id: string): string {
  if (typeof id !== 'string' || !ID_RE.test(id)) {
    throw new Error(`sandbox id ${JSON.stringify(id)} is invalid: expected 1-8 characters of [a-z0-9]`);
  }
  return id;
}

export function validatePodName(name: string): string {
  if (typeof name !== 'string' || !POD_RE.test(name)) {
    throw new Error(
      `pod name ${JSON.stringify(name)} is invalid: expected 1-32 characters of [a-z0-9-], starting and ending alphanumeric`,
    );
  }
  if (RESERVED.has(name))
    throw new Error(`pod name "${name}" is reserved (the node and outside namespaces use it)`);
  return name;
}

export function validatePodIndex(index: number): number {
  if (!Number.isInteger(index) || index < MIN_POD_INDEX || index > MAX_POD_INDEX) {
    throw new Error(
      `pod index ${String(index)} is invalid: expected an integer ${MIN_POD_INDEX}-${MAX_POD_INDEX}`,
    );
  }
  return index;
}

export function validatePort(port: number, what = 'port'): number {
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new Error(`${what} ${String(port)} is invalid: expected an integer 1-65535`);
  }
  return port;
}

export function sandboxPrefix(id: string): string {
  return `${NS_PREFIX}${validateId(id)}-`;
}

export function nodeNsName(id: string): string {
  return `${sandboxPrefix(id)}node`;
}

export function outsideNsName(id: string): string {
  return `${sandboxPrefix(id)}outside`;
}

export function podNsName(id: string, pod: string): string {
  return `${sandboxPrefix(id)}${validatePodName(pod)}`;
}

/** The sandbox id a namespace name belongs to, or undefined when it is not a sandbox namespace. */
export function idOfNamespace(ns: string): string | undefined {
  const m = /^svcp-([a-z0-9]{1,8})-[a-z0-9-]+$/.exec(ns);
  return m?.[1];
}

export function hostVethName(index: number): string {
  return `${HOST_VETH_PREFIX}${validatePodIndex(index)}`;
}

export function podIPv4(index: number): string {
  return `10.244.0.${validatePodIndex(index)}`;
}

/** `fd00:10:244::<N in hex>`, so the v6 address has the same numeric host part as the v4 one. */
export function podIPv6(index: number): string {
  return `fd00:10:244::${validatePodIndex(index).toString(16)}`;
}

/** Next free index, as host-local IPAM would hand out (lowest unused first). */
export function nextFreeIndex(used: Iterable<number>): number {
  const taken = new Set(used);
  for (let i = MIN_POD_INDEX; i <= MAX_POD_INDEX; i++) if (!taken.has(i)) return i;
  throw new Error(`no free pod index left in ${POD_CIDR_V4}`);
}

/** Parses a comma-separated port list ("80,9376"); empty text gives []. */
export function parsePortList(text: string | undefined, what = 'port'): number[] {
  if (text === undefined || text.trim() === '') return [];
  return text.split(',').map((p) => {
    const t = p.trim();
    if (!/^\d{1,5}$/.test(t)) throw new Error(`${what} "${t}" is invalid: expected a number 1-65535`);
    return validatePort(Number.parseInt(t, 10), what);
  });
}

export interface PodPlan {
  readonly name: string;
  readonly index: number;
  readonly ns: string;
  readonly hostVeth: string;
  readonly ipv4: string;
  readonly ipv6: string;
}

export function planPod(id: string, name: string, index: number): PodPlan {
  return {
    name: validatePodName(name),
    index: validatePodIndex(index),
    ns: podNsName(id, name),
    hostVeth: hostVethName(index),
    ipv4: podIPv4(index),
    ipv6: podIPv6(index),
  };
}

/** Lines for `ip -n <node> -batch -` that create the pod's veth pair and attach the host end to the bridge. */
export function renderNodePodLinks(pod: PodPlan): string[] {
  return [
    `link add ${pod.hostVeth} type veth peer name ${POD_LINK} netns ${pod.ns}`,
    `link set dev ${pod.hostVeth} master ${BRIDGE}`,
    // As the CNI bridge plugin with hairpinMode: a pod can reach itself through a Service.
    `link set dev ${pod.hostVeth} type bridge_slave hairpin on`,
    `link set dev ${pod.hostVeth} up`,
  ];
}

/** Lines for `ip -n <pod> -batch -`: addresses (v6 without DAD, usable at once) and default routes. */
export function renderPodSetup(pod: PodPlan): string[] {
  return [
    'link set dev lo up',
    `addr add ${pod.ipv4}/24 dev ${POD_LINK}`,
    `addr add ${pod.ipv6}/64 dev ${POD_LINK} nodad`,
    `link set dev ${POD_LINK} up`,
    `route add default via ${GATEWAY_V4} dev ${POD_LINK}`,
    `route add default via ${GATEWAY_V6} dev ${POD_LINK}`,
  ];
}

/** Lines for `ip -n <node> -batch -`: loopback, bridge, the link to the outside namespace, default routes. */
export function renderNodeSetup(outsideNs: string): string[] {
  return [
    'link set dev lo up',
    `link add ${BRIDGE} address ${BRIDGE_MAC} type bridge`,
    `addr add ${GATEWAY_V4}/24 dev ${BRIDGE}`,
    `addr add ${GATEWAY_V6}/64 dev ${BRIDGE} nodad`,
    `link set dev ${BRIDGE} up`,
    `link add ${NODE_EXT_LINK} type veth peer name ${OUTSIDE_LINK} netns ${outsideNs}`,
    `addr add ${NODE_IP_V4}/24 dev ${NODE_EXT_LINK}`,
    `addr add ${NODE_IP_V6}/64 dev ${NODE_EXT_LINK} nodad`,
    `link set dev ${NODE_EXT_LINK} up`,
    // Locally generated traffic to service IPs needs a route; this one ends in the outside namespace.
    `route add default via ${OUTSIDE_IP_V4} dev ${NODE_EXT_LINK}`,
    `route add default via ${OUTSIDE_IP_V6} dev ${NODE_EXT_LINK}`,
  ];
}

/** Lines for `ip -n <outside> -batch -`: the external client, routing everything via the node. */
export function renderOutsideSetup(): string[] {
  return [
    'link set dev lo up',
    `addr add ${OUTSIDE_IP_V4}/24 dev ${OUTSIDE_LINK}`,
    `addr add ${OUTSIDE_IP_V6}/64 dev ${OUTSIDE_LINK} nodad`,
    `link set dev ${OUTSIDE_LINK} up`,
    `route add default via ${NODE_IP_V4} dev ${OUTSIDE_LINK}`,
    `route add default via ${NODE_IP_V6} dev ${OUTSIDE_LINK}`,
  ];
}

/** sysctl assignments for the node namespace (forwarding on; DAD off for links created later). */
export const NODE_SYSCTLS: readonly string[] = [
  'net.ipv4.ip_forward=1',
  'net.ipv6.conf.all.forwarding=1',
  'net.ipv6.conf.default.forwarding=1',
  'net.ipv6.conf.default.accept_dad=0',
  'net.ipv6.conf.all.accept_dad=0',
];
