import type { NetworkPolicy, PolicyPeer, PolicyPort, PolicyRule } from '../model/policy-types.js';
import { formatSelector } from '../model/selector.js';
import type { ClusterState, Protocol } from '../model/types.js';
import { PolicyEvaluator, type PolicyVerdict } from './evaluate.js';
import type { TableDifference } from './nft-read.js';
import { appliesIn, type Direction, DIRECTIONS, nameOfPolicy, policySelects } from './pod-index.js';

/**
 * What the operator tools print about NetworkPolicy (pure): `svcplane explain pod NS/NAME`, the
 * policy lines of `svcplane trace`, the policy part of `svcplane diff`. The CLI reads the state and
 * the kernel, these functions say what they mean.
 */

function peerText(np: NetworkPolicy, peer: PolicyPeer): string {
  if (peer.kind === 'ipBlock') {
    const b = peer.ipBlock;
    return b.except.length > 0 ? `${b.cidr} except ${b.except.join(', ')}` : b.cidr;
  }
  const pods = peer.podSelector ? formatSelector(peer.podSelector) : undefined;
  if (!peer.namespaceSelector) return `pods ${pods ?? '{}'} of namespace ${np.namespace}`;
  const nss = formatSelector(peer.namespaceSelector);
  return pods === undefined ? `every pod of namespaces ${nss}` : `pods ${pods} of namespaces ${nss}`;
}

function portText(p: PolicyPort): string {
  if (p.port === undefined) return `${p.protocol}/any`;
  if (typeof p.port === 'string') return `${p.protocol}/${p.port} (named: resolved on the destination pod)`;
  return `${p.protocol}/${p.endPort !== undefined ? `${p.port}-${p.endPort}` : p.port}`;
}

/** One rule in one line: "from A; B — ports TCP/80, UDP/53". */
export function ruleText(np: NetworkPolicy, rule: PolicyRule, direction: Direction): string {
  const word = direction === 'ingress' ? 'from' : 'to';
  const peers =
    rule.peers.length === 0
      ? `${word} anywhere`
      : `${word} ${rule.peers.map((p) => peerText(np, p)).join('; ')}`;
  const ports =
    rule.ports.length === 0 ? 'every port and protocol' : `ports ${rule.ports.map(portText).join(', ')}`;
  return `${peers} — ${ports}`;
}

export interface PodExplanation {
  readonly found: boolean;
  readonly text: string;
}

/** `svcplane explain pod NS/NAME`: the policies selecting the pod and what they allow, and whether the kernel agrees. */
export function explainPod(
  state: ClusterState,
  nodeName: string,
  key: string,
  kernel: TableDifference | undefined,
): PodExplanation {
  const pod = state.pods?.get(key);
  if (!pod) {
    return { found: false, text: `Pod ${key}: not in the state (no Pod object of that name)\n` };
  }
  const lines: string[] = [];
  const where = pod.nodeName === nodeName ? 'this node' : `node ${pod.nodeName || '(unscheduled)'}`;
  lines.push(`Pod:        ${key} on ${where}, ${pod.ips.join(', ') || 'no address yet'}`);
  lines.push(
    `Labels:     ${
      Object.entries(pod.labels)
        .map(([k, v]) => `${k}=${v}`)
        .join(', ') || '(none)'
    }`,
  );
  if (pod.namedPorts.length > 0) {
    lines.push(`Ports:      ${pod.namedPorts.map((p) => `${p.name}=${p.protocol}/${p.port}`).join(', ')}`);
  }
  if (pod.hostNetwork) lines.push('Note:       host-network pod: policies neither select nor isolate it');
  if (pod.invalid)
    lines.push(
      `Note:       could not be read (${pod.invalid.join(', ')}): isolated wherever a policy of its namespace applies`,
    );
  const policies = [...(state.networkPolicies?.values() ?? [])].filter(
    (np) => np.namespace === pod.namespace && (pod.invalid ? true : policySelects(np, pod)),
  );
  for (const d of DIRECTIONS) {
    const by = policies.filter((np) => appliesIn(np, d)).map(nameOfPolicy);
    lines.push(
      `${d === 'ingress' ? 'Ingress:   ' : 'Egress:    '} ${by.length > 0 ? `isolated by ${by.join(', ')}: only what their ${d} rules allow` : 'not isolated: everything allowed'}`,
    );
  }
  if (policies.length > 0) lines.push('Policies:');
  for (const np of policies) {
    lines.push(
      `  ${nameOfPolicy(np)} (${np.policyTypes.join(', ')})${np.invalid ? ` INVALID (${np.invalid.join(', ')}): allows nothing until fixed` : ''}`,
    );
    for (const d of DIRECTIONS) {
      if (!appliesIn(np, d)) continue;
      if (np[d].length === 0) lines.push(`    ${d}: nothing allowed`);
      np[d].forEach((rule, i) => lines.push(`    ${d}[${i}]: ${ruleText(np, rule, d)}`));
    }
  }
  lines.push(
    'Always:     replies of allowed connections; the pod reaching itself; its own node reaching it (kubelet probes)',
  );
  if (pod.nodeName !== nodeName) {
    lines.push(`Kernel:     enforced on ${pod.nodeName || 'its node once scheduled'}, not here`);
  } else if (kernel) {
    lines.push(
      kernel.lines.length === 0
        ? 'Kernel:     table inet svcplane-netpol holds what these policies say'
        : `Kernel:     table inet svcplane-netpol differs from the policies: ${kernel.lines.join('; ')}`,
    );
  }
  return { found: true, text: `${lines.join('\n')}\n` };
}

export interface TracedPolicy {
  /** The packet policy judges (after DNAT: a backend's address and port). */
  readonly packet: { readonly src: string; readonly dst: string; readonly port: number };
  readonly verdict: PolicyVerdict;
}

/**
 * The policy verdict for each destination a trace ends at. Without `nodeName`, both ends are judged
 * as the cluster's nodes together would (each enforcing its own pods); with it, this node's pods only.
 */
export function tracePolicies(
  state: ClusterState,
  nodeName: string | undefined,
  packet: { readonly src: string; readonly protocol: Protocol; readonly fromNode: boolean },
  destinations: readonly { readonly ip: string; readonly port: number }[],
): TracedPolicy[] {
  const evaluator = new PolicyEvaluator(state, nodeName !== undefined ? { node: nodeName } : {});
  return destinations.map((d) => ({
    packet: { src: packet.src, dst: d.ip, port: d.port },
    verdict: evaluator.evaluate({
      src: packet.src,
      dst: d.ip,
      protocol: packet.protocol,
      port: d.port,
      ...(packet.fromNode ? { fromNode: true } : {}),
    }),
  }));
}

export function formatTracedPolicies(traced: readonly TracedPolicy[]): string {
  if (traced.length === 0) return '';
  const lines = ['Policy:     (NetworkPolicy, judged after DNAT)'];
  for (const t of traced) lines.push(`  -> ${t.packet.dst}:${t.packet.port}  ${t.verdict.reason}`);
  return `${lines.join('\n')}\n`;
}

/** The policy part of `svcplane diff`. */
export function formatPolicyDiff(diff: TableDifference): string {
  if (diff.lines.length === 0) return 'NetworkPolicy (table inet svcplane-netpol): in sync\n';
  return `NetworkPolicy (table inet svcplane-netpol): ${diff.lines.length} difference(s)\n${diff.lines.map((l) => `  ${l}\n`).join('')}`;
}
