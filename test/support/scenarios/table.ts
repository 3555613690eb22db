import type { IPFamily } from '../../../src/model/types.js';
import { NODE_NAME, nodeObject, podEndpoints, serviceObject, sliceObject } from '../iptables-harness.js';
import type { Sandbox } from '../../../src/netns/sandbox.js';

/**
 * THE traffic scenario table: every mode's traffic suite runs it (test/support/scenarios/README.md).
 * A scenario = the cluster objects (one set for the whole table, one Service per concern), the
 * kube-proxy flags it runs with, what it changes about the node (topology) and its traffic checks:
 * who sends what to where, and the outcome (which backends answer and which source they see, refused,
 * dropped by which rule, not steered). Where a mode must differ, the check records that mode's
 * expectation and why. A mode's suite is a mode entry (./mode.ts) + `runScenarioTable` (./run.ts).
 */

export type ModeName = 'iptables' | 'nftables' | 'ipvs';

export const WEB = 8080;
export const METRICS = 9100;
export const DNS = 53;
/** The node's bridge address: what a backend sees as the source when traffic was masqueraded. */
export const MASQ = { IPv4: '10.244.0.1', IPv6: 'fd00:10:244::1' } as const;
export const CLUSTER_CIDRS = '10.244.0.0/16,fd00:10:244::/64';
/** A second node address on ext0 (--nodeport-addresses, --bind-address). */
export const NODE_SECOND_IP = '192.0.2.11';
/** An outside address outside the LoadBalancer's source range. */
export const OUTSIDE_OTHER_IP = '192.0.2.3';
/** Distinct outside clients for session affinity (sticky), and others for its expiry. */
export const STICKY_CLIENTS = Array.from({ length: 16 }, (_, i) => `192.0.2.${100 + i}`);
export const EXPIRY_CLIENTS = Array.from({ length: 16 }, (_, i) => `192.0.2.${120 + i}`);
export const EXTERNAL_IP_V6 = '2001:db8:ff::10';
export const LB_IP_V6 = '2001:db8:ff::20';
export const AFFINITY_EXPIRY_S = 2;
/** The routed pod of the InterfaceNamePrefix scenario (its own veth, as Calico wires a pod). */
export const ROUTED_POD = { name: 'routed', hostIf: 'calitest0', ip: '10.244.1.2', gateway: '10.244.1.1' };

/** The sandbox every mode runs the table in (pods a, b, c serve; client only sends). */
export const TOPOLOGY = {
  brNetfilter: true,
  pods: [
    { name: 'a', index: 2, tcpPorts: [WEB, METRICS, DNS], udpPorts: [DNS] },
    { name: 'b', index: 3, tcpPorts: [WEB, METRICS, DNS], udpPorts: [DNS] },
    { name: 'c', index: 4, tcpPorts: [WEB] },
    { name: 'client', index: 10 },
  ],
} as const;

export type Pod = 'a' | 'b' | 'c';
/** Who sends: a pod, the node itself, the outside namespace (routed via the node), the routed pod. */
export type Client = 'client' | Pod | 'node' | 'outside' | 'routed';

export interface Target {
  readonly proto: 'tcp' | 'udp';
  readonly ip: string;
  readonly port: number;
  /** The client's source address (an extra address of the outside namespace). */
  readonly sourceIP?: string;
}

/** Which rule drops: the mode entry names its rule (and reads its counter) for each. */
export type Drop =
  | { readonly kind: 'source-range'; readonly service: string; readonly ip: string }
  | {
      readonly kind: 'external-no-local';
      readonly service: string;
      readonly port: string;
      readonly nodePort: number;
    }
  | {
      readonly kind: 'internal-no-local';
      readonly service: string;
      readonly port: string;
      readonly ip: string;
    };

export type Outcome =
  /**
   * Exactly these pods answer (each at least once, nobody else). `peer`: the source the backend sees,
   * `masq` (the node's bridge address) or `client` (the sender's own address). `port`: the endpoint port.
   */
  | { readonly answeredBy: readonly Pod[]; readonly peer?: 'masq' | 'client'; readonly port?: number }
  /** Refused at once (REJECT: TCP RST / ICMP unreachable), well before a timeout. */
  | { readonly refused: true }
  /** Timed out, and the mode's rule for `drop` counted the packets. */
  | { readonly dropped: Drop }
  /** Not steered to any pod: `refused` by the node itself, a `timeout`, or either (`any`). */
  | { readonly unanswered: 'refused' | 'timeout' | 'any' };

/** Where a mode must differ: its outcome and why (the README says more). */
export type ModeDifference = { readonly expect: Outcome; readonly why: string };

export type Check =
  | {
      readonly kind: 'request';
      readonly from: Client;
      readonly to: Target;
      readonly expect: Outcome;
      /** Also check that `svcplane trace` predicts it (in modes whose entry says trace walks them). */
      readonly trace?: boolean;
      readonly modes?: Partial<Record<ModeName, ModeDifference>>;
    }
  /** sessionAffinity: each source sticks to one backend; together they reach every one of `backends`. */
  | {
      readonly kind: 'sticky';
      readonly from: Client;
      readonly to: Target;
      readonly sources: readonly (string | undefined)[];
      readonly backends: readonly Pod[];
    }
  /** sessionAffinity timeoutSeconds: clients stick, and after the timeout some pick afresh. */
  | {
      readonly kind: 'affinity-expires';
      readonly to: Target;
      readonly seconds: number;
      readonly sources: readonly string[];
      /** How long after the timeout the mode forgets a client (IPVS: its connection entries too). */
      readonly modes?: Partial<Record<ModeName, { readonly extraWaitS: number; readonly why: string }>>;
    }
  /** What the mode wrote (a flag visible in the rules): a pattern per mode, and one that must be absent. */
  | {
      readonly kind: 'kernel';
      readonly family: IPFamily;
      readonly has: Readonly<Record<ModeName, RegExp>>;
      readonly lacks: Readonly<Record<ModeName, RegExp>>;
    };

export interface Topo {
  readonly node4: string;
  readonly node6: string;
  readonly outside4: string;
  readonly outside6: string;
  podIP(pod: string, family?: IPFamily): string;
}

export interface Scenario {
  readonly name: string;
  /** kube-proxy flags beyond the mode's and the defaults (--cluster-cidr=the pod networks). */
  readonly flags?: (t: Topo) => readonly string[];
  /** Run without --cluster-cidr (no local-traffic detector unless the flags set another). */
  readonly noClusterCIDR?: boolean;
  /** What the scenario adds to the node for its duration. */
  readonly topology?: {
    /** Extra addresses on the node's ext0 (`ip/len`). */
    readonly nodeAddresses?: readonly string[];
    /** A routed pod on its own veth (ROUTED_POD), a client named 'routed'. */
    readonly routedPod?: boolean;
    /** sysctls set in the node after the sync (not restored). */
    readonly sysctls?: Readonly<Record<string, string>>;
  };
  readonly checks: (t: Topo) => readonly Check[];
}

export interface ScenarioGroup {
  readonly name: string;
  readonly scenarios: readonly Scenario[];
}

// ---------------------------------------------------------------------------------------------
// The cluster: one set of objects for the whole table (each Service carries one concern)
// ---------------------------------------------------------------------------------------------

const web = [{ port: WEB }];
const http = [{ name: 'http', port: WEB }];

interface HintedPod {
  readonly pod: Pod;
  readonly nodeName?: string;
  readonly forNodes?: readonly string[];
  readonly forZones?: readonly string[];
}

/** An EndpointSlice whose endpoints carry topology hints, as the EndpointSlice controller writes them. */
function hintedSlice(sb: Sandbox, service: string, eps: readonly HintedPod[]): unknown {
  return sliceObject(
    service,
    'IPv4',
    http,
    eps.map(({ pod, ...rest }) => ({ ip: sb.podIP(pod), ...rest })),
  );
}

export const ZONE = 'zone-a';

/** Every object of the table, as a manifest or the API would hold them. */
export function clusterObjects(sb: Sandbox): unknown[] {
  const both = podEndpoints(sb, ['a', 'b']);
  const both6 = podEndpoints(sb, ['a', 'b'], 'IPv6');
  const npPorts = [
    { name: 'http', port: WEB },
    { name: 'dns', port: DNS, protocol: 'UDP' as const },
  ];
  const localAndRemote = (family: IPFamily) => [
    { ip: sb.podIP('a', family) },
    { ip: sb.podIP('b', family), nodeName: 'node-2' },
  ];
  return [
    nodeObject(sb, { 'topology.kubernetes.io/zone': ZONE }),
    // Several ports; `http` has a named target port whose number (8080) is not the Service port.
    serviceObject('web', {
      clusterIPs: ['10.96.0.10'],
      ports: [
        { name: 'http', port: 80, targetPort: 'web' },
        { name: 'metrics', port: 9090, targetPort: METRICS },
      ],
    }),
    sliceObject(
      'web',
      'IPv4',
      [
        { name: 'http', port: WEB },
        { name: 'metrics', port: METRICS },
      ],
      both,
    ),
    serviceObject('dns', {
      clusterIPs: ['10.96.0.53'],
      ports: [
        { name: 'dns', port: DNS, protocol: 'UDP' },
        { name: 'dns-tcp', port: DNS, protocol: 'TCP' },
      ],
    }),
    sliceObject(
      'dns',
      'IPv4',
      [
        { name: 'dns', port: DNS, protocol: 'UDP' },
        { name: 'dns-tcp', port: DNS, protocol: 'TCP' },
      ],
      both,
    ),
    serviceObject('dual', {
      clusterIPs: ['10.96.0.20', 'fd00:10:96::20'],
      ports: [{ port: 80, targetPort: WEB }],
    }),
    sliceObject('dual', 'IPv4', web, both),
    sliceObject('dual', 'IPv6', web, both6),
    // Dual-stack NodePort, TCP and UDP.
    serviceObject('np', {
      type: 'NodePort',
      clusterIPs: ['10.96.0.30', 'fd00:10:96::30'],
      ports: [
        { name: 'http', port: 80, targetPort: WEB, nodePort: 30080 },
        { name: 'dns', port: DNS, protocol: 'UDP', nodePort: 30053 },
      ],
    }),
    sliceObject('np', 'IPv4', npPorts, both),
    sliceObject('np', 'IPv6', npPorts, both6),
    serviceObject('ext', {
      clusterIPs: ['10.96.0.31', 'fd00:10:96::31'],
      externalIPs: ['203.0.113.10', EXTERNAL_IP_V6],
      ports: [{ port: 80, targetPort: WEB }],
    }),
    sliceObject('ext', 'IPv4', web, both),
    sliceObject('ext', 'IPv6', web, both6),
    serviceObject('lb', {
      type: 'LoadBalancer',
      clusterIPs: ['10.96.0.40', 'fd00:10:96::40'],
      ports: [{ port: 80, targetPort: WEB, nodePort: 30040 }],
      ingress: [{ ip: '198.51.100.10' }, { ip: LB_IP_V6 }, { ip: '198.51.100.11', ipMode: 'Proxy' }],
    }),
    sliceObject('lb', 'IPv4', web, both),
    sliceObject('lb', 'IPv6', web, both6),
    serviceObject('lbsr', {
      type: 'LoadBalancer',
      clusterIPs: ['10.96.0.41'],
      ports: [{ name: 'http', port: 80, targetPort: WEB, nodePort: 30041 }],
      ingress: [{ ip: '198.51.100.20', ipMode: 'VIP' }],
      loadBalancerSourceRanges: [`${sb.outsideIPv4}/32`],
    }),
    sliceObject('lbsr', 'IPv4', http, both),
    // No endpoints at all: every frontend rejects.
    serviceObject('empty', {
      type: 'NodePort',
      clusterIPs: ['10.96.0.50', 'fd00:10:96::50'],
      externalIPs: ['203.0.113.50'],
      ports: [
        { name: 'tcp', port: 80, nodePort: 30050 },
        { name: 'udp', port: DNS, protocol: 'UDP', nodePort: 30051 },
      ],
    }),
    // Only pod a: reaching it from a is a hairpin.
    serviceObject('hair', {
      clusterIPs: ['10.96.0.60', 'fd00:10:96::60'],
      ports: [{ port: 80, targetPort: WEB }],
    }),
    sliceObject('hair', 'IPv4', web, podEndpoints(sb, ['a'])),
    sliceObject('hair', 'IPv6', web, podEndpoints(sb, ['a'], 'IPv6')),
    serviceObject('sticky', {
      clusterIPs: ['10.96.0.70', 'fd00:10:96::70'],
      ports: [{ port: 80, targetPort: WEB }],
      sessionAffinity: { timeoutSeconds: 300 },
    }),
    sliceObject('sticky', 'IPv4', web, both),
    sliceObject('sticky', 'IPv6', web, both6),
    serviceObject('sticky-short', {
      clusterIPs: ['10.96.0.71'],
      ports: [{ name: 'dns', port: DNS, protocol: 'UDP' }],
      sessionAffinity: { timeoutSeconds: AFFINITY_EXPIRY_S },
    }),
    sliceObject('sticky-short', 'IPv4', [{ name: 'dns', port: DNS, protocol: 'UDP' }], both),
    // Node hints win over zone hints: b and c are hinted for this node's zone, but not for this node.
    serviceObject('nodehint', {
      clusterIPs: ['10.96.0.80'],
      ports: [{ name: 'http', port: 80, targetPort: WEB }],
    }),
    hintedSlice(sb, 'nodehint', [
      { pod: 'a', forNodes: [NODE_NAME], forZones: ['zone-b'] },
      { pod: 'b', nodeName: 'node-2', forNodes: ['node-2'], forZones: [ZONE] },
      { pod: 'c', nodeName: 'node-2', forNodes: ['node-2'], forZones: [ZONE] },
    ]),
    // Every endpoint has a node hint, none for this node (and no zone hints): no filtering.
    serviceObject('nodehint-other', {
      clusterIPs: ['10.96.0.81'],
      ports: [{ name: 'http', port: 80, targetPort: WEB }],
    }),
    hintedSlice(sb, 'nodehint-other', [
      { pod: 'a', forNodes: ['node-3'] },
      { pod: 'b', nodeName: 'node-2', forNodes: ['node-2'] },
      { pod: 'c', nodeName: 'node-2', forNodes: ['node-2'] },
    ]),
    // Zone hints: only a is hinted for this node's zone; then hints for other zones only.
    serviceObject('zonehint', {
      clusterIPs: ['10.96.0.82'],
      ports: [{ name: 'http', port: 80, targetPort: WEB }],
    }),
    hintedSlice(sb, 'zonehint', [
      { pod: 'a', forZones: [ZONE] },
      { pod: 'b', forZones: ['zone-b'] },
      { pod: 'c', forZones: ['zone-b'] },
    ]),
    serviceObject('zonehint-other', {
      clusterIPs: ['10.96.0.83'],
      ports: [{ name: 'http', port: 80, targetPort: WEB }],
    }),
    hintedSlice(sb, 'zonehint-other', [
      { pod: 'a', forZones: ['zone-b'] },
      { pod: 'b', forZones: ['zone-c'] },
      { pod: 'c', forZones: ['zone-b'] },
    ]),
    // eTP=Local with one local endpoint (a) and one elsewhere (b, on node-2).
    serviceObject('local', {
      type: 'NodePort',
      clusterIPs: ['10.96.0.90', 'fd00:10:96::90'],
      externalTrafficPolicy: 'Local',
      ports: [{ name: 'http', port: 80, targetPort: WEB, nodePort: 30090 }],
    }),
    sliceObject('local', 'IPv4', http, localAndRemote('IPv4')),
    sliceObject('local', 'IPv6', http, localAndRemote('IPv6')),
    // eTP=Local with no local endpoint: external traffic dropped, pods still served.
    serviceObject('remote', {
      type: 'NodePort',
      clusterIPs: ['10.96.0.91', 'fd00:10:96::91'],
      externalTrafficPolicy: 'Local',
      ports: [{ name: 'http', port: 80, targetPort: WEB, nodePort: 30091 }],
    }),
    sliceObject('remote', 'IPv4', http, [{ ip: sb.podIP('b'), nodeName: 'node-2' }]),
    sliceObject('remote', 'IPv6', http, [{ ip: sb.podIP('b', 'IPv6'), nodeName: 'node-2' }]),
    // eTP=Local, no ready local endpoint: the local serving+terminating one (a) serves.
    serviceObject('etp-term', {
      type: 'NodePort',
      clusterIPs: ['10.96.0.92'],
      externalTrafficPolicy: 'Local',
      ports: [{ name: 'http', port: 80, targetPort: WEB, nodePort: 30092 }],
    }),
    sliceObject('etp-term', 'IPv4', http, [
      { ip: sb.podIP('a'), ready: false, serving: true, terminating: true },
      { ip: sb.podIP('b'), nodeName: 'node-2' },
    ]),
    // The same with a local terminating endpoint that is not serving: no local endpoint at all.
    serviceObject('etp-term-none', {
      type: 'NodePort',
      clusterIPs: ['10.96.0.93'],
      externalTrafficPolicy: 'Local',
      ports: [{ name: 'http', port: 80, targetPort: WEB, nodePort: 30093 }],
    }),
    sliceObject('etp-term-none', 'IPv4', http, [
      { ip: sb.podIP('c'), ready: false, serving: false, terminating: true },
      { ip: sb.podIP('b'), nodeName: 'node-2' },
    ]),
    // eTP=Local LoadBalancer: its LB IP reaches the local endpoint only.
    serviceObject('local-lb', {
      type: 'LoadBalancer',
      clusterIPs: ['10.96.0.94'],
      externalTrafficPolicy: 'Local',
      ports: [{ name: 'http', port: 80, targetPort: WEB, nodePort: 30094 }],
      ingress: [{ ip: '198.51.100.30' }],
    }),
    sliceObject('local-lb', 'IPv4', http, localAndRemote('IPv4')),
    // iTP=Local: the local endpoint only; none local: dropped.
    serviceObject('itp', {
      clusterIPs: ['10.96.0.95', 'fd00:10:96::95'],
      internalTrafficPolicy: 'Local',
      ports: [{ name: 'http', port: 80, targetPort: WEB }],
    }),
    sliceObject('itp', 'IPv4', http, localAndRemote('IPv4')),
    sliceObject('itp', 'IPv6', http, localAndRemote('IPv6')),
    serviceObject('itp-none', {
      clusterIPs: ['10.96.0.96', 'fd00:10:96::96'],
      internalTrafficPolicy: 'Local',
      ports: [{ name: 'http', port: 80, targetPort: WEB }],
    }),
    sliceObject('itp-none', 'IPv4', http, [{ ip: sb.podIP('b'), nodeName: 'node-2' }]),
    sliceObject('itp-none', 'IPv6', http, [{ ip: sb.podIP('b', 'IPv6'), nodeName: 'node-2' }]),
    // No ready endpoint: the serving terminating one (b) takes the traffic, the not-serving one never.
    serviceObject('term', { clusterIPs: ['10.96.0.97'], ports: [{ port: 80, targetPort: WEB }] }),
    sliceObject('term', 'IPv4', web, [
      { ip: sb.podIP('a'), ready: false, serving: false, terminating: true },
      { ip: sb.podIP('b'), ready: false, serving: true, terminating: true },
    ]),
  ];
}

// ---------------------------------------------------------------------------------------------
// The scenarios
// ---------------------------------------------------------------------------------------------

const tcp = (ip: string, port: number, sourceIP?: string): Target => ({
  proto: 'tcp',
  ip,
  port,
  ...(sourceIP !== undefined ? { sourceIP } : {}),
});
const udp = (ip: string, port: number): Target => ({ proto: 'udp', ip, port });
const both: readonly Pod[] = ['a', 'b'];
const ask = (
  from: Client,
  to: Target,
  expect: Outcome,
  more: { trace?: boolean; modes?: Partial<Record<ModeName, ModeDifference>> } = {},
): Check => ({ kind: 'request', from, to, expect, ...more });
const masq = (pods: readonly Pod[] = both, port?: number): Outcome => ({
  answeredBy: pods,
  peer: 'masq',
  ...(port !== undefined ? { port } : {}),
});
const kept = (pods: readonly Pod[] = both, port?: number): Outcome => ({
  answeredBy: pods,
  peer: 'client',
  ...(port !== undefined ? { port } : {}),
});
const all = (modes: ModeName[], v: RegExp): Record<ModeName, RegExp> =>
  Object.fromEntries(modes.map((m) => [m, v])) as Record<ModeName, RegExp>;
const NEVER = /(?!)/;

/** Why IPVS sends pods and the node on an eTP=Local NodePort to local endpoints only. */
const IPVS_ONE_VS =
  'IPVS: one virtual server per NodePort address holds one endpoint set, so pods and the node get the local endpoints too (kube-proxy IPVS alike); iptables and nftables send them to every endpoint';

export const SCENARIO_TABLE: readonly ScenarioGroup[] = [
  {
    name: 'ClusterIP',
    scenarios: [
      {
        name: 'from a pod: both endpoints answer, DNATed to the endpoint port; the pod is the source',
        checks: () => [ask('client', tcp('10.96.0.10', 80), kept(both, WEB), { trace: true })],
      },
      {
        name: 'several ports per Service, each to its own (named) target port; a port the Service lacks is not steered',
        checks: () => [
          ask('client', tcp('10.96.0.10', 80), kept(both, WEB), { trace: true }),
          ask('client', tcp('10.96.0.10', 9090), kept(both, METRICS), { trace: true }),
          ask(
            'client',
            tcp('10.96.0.10', WEB),
            { unanswered: 'any' },
            {
              trace: true,
              modes: {
                nftables: {
                  expect: { refused: true },
                  why: "kube-proxy's nftables mode rejects ports a ClusterIP does not serve (cluster-ips-check)",
                },
                ipvs: {
                  expect: { refused: true },
                  why: 'IPVS binds the ClusterIP on kube-ipvs0; KUBE-IPVS-FILTER rejects its other ports',
                },
              },
            },
          ),
        ],
      },
      {
        name: 'from the node and from outside (routed via the node): both endpoints answer, masqueraded',
        checks: () => [
          ask('node', tcp('10.96.0.10', 80), masq(), { trace: true }),
          ask('outside', tcp('10.96.0.10', 80), masq(), { trace: true }),
          ask('outside', tcp('fd00:10:96::20', 80), masq()),
        ],
      },
      {
        name: 'UDP request/response and TCP on the same port number, both balanced; UDP from outside and over IPv6 too',
        checks: () => [
          ask('client', udp('10.96.0.53', DNS), kept(both, DNS)),
          ask('client', tcp('10.96.0.53', DNS), kept(both, DNS)),
          ask('outside', udp('10.96.0.53', DNS), masq(both, DNS)),
          ask('client', udp('fd00:10:96::30', DNS), kept(both, DNS)),
        ],
      },
      {
        name: 'IPv6: a dual-stack Service answers on both ClusterIPs from a pod, with endpoints of the family',
        checks: () => [
          ask('client', tcp('fd00:10:96::20', 80), kept(both, WEB), { trace: true }),
          ask('client', tcp('10.96.0.20', 80), kept(both, WEB)),
        ],
      },
    ],
  },
  {
    name: 'NodePort',
    scenarios: [
      {
        name: 'TCP (IPv4, IPv6) and UDP from outside, and from a pod: answered, masqueraded (eTP=Cluster)',
        checks: (t) => [
          ask('outside', tcp(t.node4, 30080), masq(), { trace: true }),
          ask('outside', tcp(t.node6, 30080), masq(), { trace: true }),
          ask('outside', udp(t.node4, 30053), masq(both, DNS), { trace: true }),
          ask('client', tcp(t.node4, 30080), masq(), { trace: true }),
        ],
      },
      {
        name: 'localhost NodePorts: 127.0.0.1:<nodePort> from the node (iptables mode only)',
        checks: (t) => [
          ask(
            'node',
            tcp('127.0.0.1', 30080),
            { answeredBy: both },
            {
              modes: {
                nftables: {
                  expect: { unanswered: 'any' },
                  why: "kube-proxy's nftables mode has no localhost NodePorts",
                },
                ipvs: {
                  expect: { unanswered: 'any' },
                  why: "kube-proxy's IPVS mode has no localhost NodePorts",
                },
              },
            },
          ),
          ask('node', tcp(t.node4, 30080), { answeredBy: both }),
        ],
      },
      {
        name: '--iptables-localhost-nodeports=false: 127.0.0.1 is no NodePort address (route_localnet on or not), the node IP is',
        flags: () => ['--iptables-localhost-nodeports=false'],
        topology: { sysctls: { 'net.ipv4.conf.all.route_localnet': '1' } },
        checks: (t) => [
          ask('node', tcp('127.0.0.1', 30080), { unanswered: 'any' }),
          ask('node', tcp(t.node4, 30080), { answeredBy: both }),
        ],
      },
      {
        name: 'every node address accepts NodePorts by default (a second address on ext0 too)',
        topology: { nodeAddresses: [`${NODE_SECOND_IP}/24`] },
        checks: (t) => [
          ask('outside', tcp(NODE_SECOND_IP, 30080), masq()),
          ask('outside', tcp(t.node4, 30080), masq()),
        ],
      },
      {
        name: '--nodeport-addresses: NodePorts answer on node IPs inside the CIDR only',
        flags: (t) => ['--nodeport-addresses', `${t.node4}/32`],
        topology: { nodeAddresses: [`${NODE_SECOND_IP}/24`] },
        checks: (t) => [
          ask('outside', tcp(t.node4, 30080), masq(), { trace: true }),
          // Not DNATed: the node itself has nothing on that port.
          ask('outside', tcp(NODE_SECOND_IP, 30080), { unanswered: 'refused' }, { trace: true }),
          ask('node', tcp('127.0.0.1', 30080), { unanswered: 'any' }),
        ],
      },
      {
        name: "--nodeport-addresses=primary without --bind-address: the Node object's InternalIP only",
        flags: () => ['--nodeport-addresses', 'primary'],
        topology: { nodeAddresses: [`${NODE_SECOND_IP}/24`] },
        checks: (t) => [
          ask('outside', tcp(t.node4, 30080), masq()),
          ask('outside', tcp(NODE_SECOND_IP, 30080), { unanswered: 'refused' }),
        ],
      },
      {
        name: "--bind-address is the node IP: with --nodeport-addresses=primary NodePorts answer there only (IPv6: the Node object's)",
        flags: () => ['--nodeport-addresses', 'primary', '--bind-address', NODE_SECOND_IP],
        topology: { nodeAddresses: [`${NODE_SECOND_IP}/24`] },
        checks: (t) => [
          ask('outside', tcp(NODE_SECOND_IP, 30080), masq(), { trace: true }),
          ask('outside', tcp(t.node4, 30080), { unanswered: 'refused' }, { trace: true }),
          // IPv6 has no --bind-address of its family: the Node object's IPv6 address serves.
          ask('outside', tcp(t.node6, 30080), masq()),
        ],
      },
    ],
  },
  {
    name: 'externalIPs and LoadBalancer IPs',
    scenarios: [
      {
        name: 'externalIP (IPv4, IPv6) from outside and from a pod: answered, masqueraded (eTP=Cluster)',
        checks: () => [
          ask('outside', tcp('203.0.113.10', 80), masq(), { trace: true }),
          ask('outside', tcp(EXTERNAL_IP_V6, 80), masq(), { trace: true }),
          ask('client', tcp('203.0.113.10', 80), masq()),
          ask(
            'outside',
            tcp('203.0.113.10', 22),
            { unanswered: 'any' },
            {
              modes: {
                ipvs: {
                  expect: { refused: true },
                  why: 'IPVS binds the externalIP on kube-ipvs0; KUBE-IPVS-FILTER rejects its other ports',
                },
              },
            },
          ),
        ],
      },
      {
        name: 'LoadBalancer IP (IPv4, IPv6) from outside and from a pod: answered, masqueraded; an ipMode Proxy ingress IP is not programmed',
        checks: () => [
          ask('outside', tcp('198.51.100.10', 80), masq(), { trace: true }),
          ask('outside', tcp(LB_IP_V6, 80), masq()),
          ask('client', tcp('198.51.100.10', 80), masq()),
          ask('outside', tcp('198.51.100.11', 80), { unanswered: 'any' }, { trace: true }),
          {
            kind: 'kernel',
            family: 'IPv4',
            has: all(['iptables', 'nftables', 'ipvs'], /198\.51\.100\.10\b/),
            lacks: all(['iptables', 'nftables', 'ipvs'], /198\.51\.100\.11\b/),
          },
        ],
      },
      {
        name: 'loadBalancerSourceRanges: the allowed source passes, others are dropped by the source-range rule (counted); its NodePort is not subject',
        checks: (t) => {
          const drop: Drop = { kind: 'source-range', service: 'lbsr', ip: '198.51.100.20' };
          return [
            ask('outside', tcp('198.51.100.20', 80), masq()),
            ask('outside', tcp('198.51.100.20', 80, OUTSIDE_OTHER_IP), { dropped: drop }, { trace: true }),
            ask('client', tcp('198.51.100.20', 80), { dropped: drop }),
            // The same source is fine on another Service's VIP and on this one's NodePort.
            ask('outside', tcp('198.51.100.10', 80, OUTSIDE_OTHER_IP), masq()),
            ask('outside', tcp(t.node4, 30041, OUTSIDE_OTHER_IP), masq()),
          ];
        },
      },
    ],
  },
  {
    name: 'no endpoints',
    scenarios: [
      {
        name: 'ClusterIP (TCP, UDP, IPv4, IPv6) from a pod, NodePort (TCP, UDP, IPv4, IPv6) and externalIP from outside: refused at once',
        checks: (t) => [
          ask('client', tcp('10.96.0.50', 80), { refused: true }, { trace: true }),
          ask('client', udp('10.96.0.50', DNS), { refused: true }),
          ask('client', tcp('fd00:10:96::50', 80), { refused: true }),
          ask('client', udp('fd00:10:96::50', DNS), { refused: true }),
          ask('outside', tcp(t.node4, 30050), { refused: true }),
          ask('outside', udp(t.node4, 30051), { refused: true }),
          ask('outside', tcp(t.node6, 30050), { refused: true }),
          ask('outside', tcp('203.0.113.50', 80), { refused: true }),
        ],
      },
    ],
  },
  {
    name: 'masquerade',
    scenarios: [
      {
        name: '--cluster-cidr: outside→ClusterIP and node→ClusterIP are masqueraded, pod→ClusterIP is not (IPv4, IPv6)',
        checks: () => [
          ask('outside', tcp('10.96.0.10', 80), masq()),
          ask('node', tcp('10.96.0.10', 80), masq()),
          ask('outside', tcp('fd00:10:96::20', 80), masq()),
          ask('client', tcp('10.96.0.10', 80), kept()),
          ask('client', tcp('fd00:10:96::20', 80), kept()),
        ],
      },
      {
        name: 'without a local-traffic detector, outside→ClusterIP keeps its source; NodePorts are masqueraded whatever the detector',
        noClusterCIDR: true,
        checks: (t) => [
          ask('outside', tcp('10.96.0.10', 80), kept()),
          ask('client', tcp('10.96.0.10', 80), kept()),
          ask('outside', tcp(t.node4, 30080), masq()),
          ask(
            'node',
            tcp('10.96.0.10', 80),
            { answeredBy: both },
            {
              modes: {
                ipvs: {
                  expect: masq(),
                  why: "IPVS: the node's connection has the ClusterIP (bound on kube-ipvs0) as its source; KUBE-CLUSTER-IP src,dst masquerades it",
                },
              },
            },
          ),
        ],
      },
      {
        name: '--masquerade-all: pod→ClusterIP is masqueraded too (IPv4, IPv6)',
        flags: () => ['--masquerade-all'],
        checks: () => [
          ask('client', tcp('10.96.0.10', 80), masq()),
          ask('client', tcp('fd00:10:96::20', 80), masq()),
        ],
      },
      {
        name: 'hairpin: a pod that reaches itself through its Service sees the node as source; another pod is not masqueraded',
        checks: () => [
          ask('a', tcp('10.96.0.60', 80), masq(['a'])),
          ask('a', tcp('fd00:10:96::60', 80), masq(['a'])),
          ask('b', tcp('10.96.0.60', 80), kept(['a'])),
        ],
      },
      {
        name: '--iptables-masquerade-bit=5: mark 0x20 in the rules, not the default; traffic is masqueraded where it was',
        flags: () => ['--iptables-masquerade-bit', '5'],
        checks: (t) => [
          ...(['IPv4', 'IPv6'] as const).map((family): Check => ({
            kind: 'kernel',
            family,
            // iptables-save shows --or-mark M as --set-xmark M/M; nft prints marks in 8 hex digits.
            has: {
              iptables: /--set-xmark 0x20\/0x20/,
              ipvs: /--set-xmark 0x20\/0x20/,
              nftables: /0x00000020/,
            },
            lacks: { iptables: /0x4000/, ipvs: /0x4000/, nftables: /0x00004000/ },
          })),
          ask('outside', tcp(t.node4, 30080), masq(), { trace: true }),
          ask('outside', tcp(t.node6, 30080), masq(), { trace: true }),
          ask('outside', tcp('10.96.0.10', 80), masq(), { trace: true }),
          ask('client', tcp('10.96.0.10', 80), kept(), { trace: true }),
        ],
      },
      {
        name: '--detect-local-mode=BridgeInterface: pods on cbr0 keep their source; outside and the node are masqueraded',
        noClusterCIDR: true,
        flags: () => ['--detect-local-mode', 'BridgeInterface', '--pod-bridge-interface', 'cbr0'],
        checks: () => [
          ...(['IPv4', 'IPv6'] as const).map((family): Check => ({
            kind: 'kernel',
            family,
            has: { iptables: /! -i cbr0 /, ipvs: /! -i cbr0 /, nftables: /iifname != "cbr0"/ },
            lacks: all(['iptables', 'nftables', 'ipvs'], NEVER),
          })),
          ask('client', tcp('10.96.0.10', 80), kept()),
          ask('client', tcp('fd00:10:96::20', 80), kept()),
          ask('outside', tcp('10.96.0.10', 80), masq()),
          ask('outside', tcp('fd00:10:96::20', 80), masq()),
          ask('node', tcp('10.96.0.10', 80), masq()),
        ],
      },
      {
        name: '--detect-local-mode=InterfaceNamePrefix: a routed pod on cali* keeps its source; bridged pods and outside are masqueraded',
        noClusterCIDR: true,
        flags: () => ['--detect-local-mode', 'InterfaceNamePrefix', '--pod-interface-name-prefix', 'cali'],
        topology: { routedPod: true },
        checks: () => [
          {
            kind: 'kernel',
            family: 'IPv4',
            has: { iptables: /! -i cali\+ /, ipvs: /! -i cali\+ /, nftables: /iifname != "cali\*"/ },
            lacks: all(['iptables', 'nftables', 'ipvs'], NEVER),
          },
          ask('routed', tcp('10.96.0.10', 80), kept()),
          ask('client', tcp('10.96.0.10', 80), masq()),
          ask('outside', tcp('10.96.0.10', 80), masq()),
        ],
      },
    ],
  },
  {
    name: 'sessionAffinity ClientIP',
    scenarios: [
      {
        name: 'one client sticks to one backend; different clients are balanced, each sticking to its own (IPv4, IPv6)',
        checks: () => [
          { kind: 'sticky', from: 'client', to: tcp('10.96.0.70', 80), sources: [undefined], backends: both },
          {
            kind: 'sticky',
            from: 'outside',
            to: tcp('10.96.0.70', 80),
            sources: STICKY_CLIENTS,
            backends: both,
          },
          {
            kind: 'sticky',
            from: 'client',
            to: tcp('fd00:10:96::70', 80),
            sources: [undefined],
            backends: both,
          },
          {
            kind: 'kernel',
            family: 'IPv4',
            has: {
              iptables: /-m recent --rcheck --seconds 300 --reap --name KUBE-SEP-/,
              nftables: /timeout 5m/,
              ipvs: /-A -t 10\.96\.0\.70:80 -s \S+ -p 300/,
            },
            lacks: all(['iptables', 'nftables', 'ipvs'], NEVER),
          },
        ],
      },
      {
        name: `timeoutSeconds=${AFFINITY_EXPIRY_S}: clients stick, and pick afresh once it expired (UDP)`,
        // IPVS keeps a persistence template while connection entries it controls live: UDP's expire
        // after --ipvs-udp-timeout (TCP's TIME_WAIT holds them 2 min). The flag means nothing to the others.
        flags: () => ['--ipvs-udp-timeout', '1s'],
        checks: () => [
          {
            kind: 'affinity-expires',
            to: udp('10.96.0.71', DNS),
            seconds: AFFINITY_EXPIRY_S,
            sources: EXPIRY_CLIENTS,
            modes: {
              ipvs: {
                extraWaitS: 1.5,
                why: 'IPVS forgets a client when its persistence template expires, which waits for the connection entries it controls (--ipvs-udp-timeout)',
              },
            },
          },
        ],
      },
    ],
  },
  {
    name: 'traffic policies and topology',
    scenarios: [
      {
        name: 'eTP=Local NodePort (IPv4, IPv6) and LB IP from outside: only the local endpoint, client IP preserved',
        checks: (t) => [
          ask('outside', tcp(t.node4, 30090), kept(['a']), { trace: true }),
          ask('outside', tcp(t.node6, 30090), kept(['a'])),
          ask('outside', tcp('198.51.100.30', 80), kept(['a'])),
        ],
      },
      {
        name: 'eTP=Local from a pod and from the node: every endpoint (short-circuit), pods not masqueraded',
        checks: (t) => [
          ask('client', tcp(t.node4, 30090), kept(both), {
            modes: { ipvs: { expect: kept(['a']), why: IPVS_ONE_VS } },
          }),
          ask('client', tcp('198.51.100.30', 80), kept(both), {
            modes: { ipvs: { expect: kept(['a']), why: IPVS_ONE_VS } },
          }),
          ask(
            'node',
            tcp(t.node4, 30090),
            { answeredBy: both },
            {
              modes: { ipvs: { expect: { answeredBy: ['a'] }, why: IPVS_ONE_VS } },
            },
          ),
        ],
      },
      {
        name: 'eTP=Local without a local endpoint: outside is dropped by the no-local-endpoints rule (counted); pods and the node reach the remote one',
        checks: (t) => {
          const drop: Drop = { kind: 'external-no-local', service: 'remote', port: 'http', nodePort: 30091 };
          return [
            ask('outside', tcp(t.node4, 30091), { dropped: drop }, { trace: true }),
            ask('outside', tcp(t.node6, 30091), { dropped: drop }),
            ask('client', tcp(t.node4, 30091), kept(['b']), {
              modes: { ipvs: { expect: { dropped: drop }, why: IPVS_ONE_VS } },
            }),
            ask('node', tcp(t.node4, 30091), masq(['b']), {
              modes: {
                ipvs: {
                  expect: { unanswered: 'refused' },
                  why: "IPVS: the node's own packet meets the virtual server (LOCAL_OUT) before any filter rule; one without real servers answers ICMP port unreachable",
                },
              },
            }),
            ask('client', tcp('10.96.0.91', 80), kept(['b'])),
          ];
        },
      },
      {
        name: 'eTP=Local, no ready local endpoint: a serving-terminating local one serves outside traffic; a not-serving one does not (dropped, counted)',
        checks: (t) => {
          const drop: Drop = {
            kind: 'external-no-local',
            service: 'etp-term-none',
            port: 'http',
            nodePort: 30093,
          };
          return [
            ask('outside', tcp(t.node4, 30092), kept(['a'])),
            // From a pod the short-circuit goes to the cluster endpoints: the ready remote one.
            ask('client', tcp(t.node4, 30092), kept(['b']), {
              modes: { ipvs: { expect: kept(['a']), why: IPVS_ONE_VS } },
            }),
            ask('outside', tcp(t.node4, 30093), { dropped: drop }),
            ask('client', tcp(t.node4, 30093), kept(['b']), {
              modes: { ipvs: { expect: { dropped: drop }, why: IPVS_ONE_VS } },
            }),
          ];
        },
      },
      {
        name: 'iTP=Local: the local endpoint only; none local: dropped by the no-local-endpoints rule (counted), not rejected (IPv4, IPv6)',
        checks: () => {
          const drop = (ip: string): Drop => ({
            kind: 'internal-no-local',
            service: 'itp-none',
            port: 'http',
            ip,
          });
          return [
            ask('client', tcp('10.96.0.95', 80), kept(['a'])),
            ask('client', tcp('fd00:10:96::95', 80), kept(['a'])),
            ask('client', tcp('10.96.0.96', 80), { dropped: drop('10.96.0.96') }),
            ask('client', tcp('fd00:10:96::96', 80), { dropped: drop('fd00:10:96::96') }),
          ];
        },
      },
      {
        name: 'no ready endpoint: the serving terminating one answers, the not-serving one never',
        checks: () => [ask('client', tcp('10.96.0.97', 80), kept(['b']))],
      },
      {
        name: "hints.forNodes naming this node restrict a Service to those endpoints (over zone hints); others' do not",
        checks: () => [
          ask('client', tcp('10.96.0.80', 80), kept(['a']), { trace: true }),
          ask('client', tcp('10.96.0.81', 80), kept(['a', 'b', 'c']), { trace: true }),
        ],
      },
      {
        name: "zone hints for this node's zone restrict the endpoints; hints for other zones only do not",
        checks: () => [
          ask('client', tcp('10.96.0.82', 80), kept(['a'])),
          ask('client', tcp('10.96.0.83', 80), kept(['a', 'b', 'c'])),
        ],
      },
    ],
  },
];
