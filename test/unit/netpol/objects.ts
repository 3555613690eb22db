import { buildClusterState } from '../../../src/model/build.js';
import type { ClusterState } from '../../../src/model/types.js';

/** Raw objects as a manifest or the API would carry them, for the policy engine's tests. */

export type Obj = Record<string, unknown>;

export const namespace = (name: string, labels: Record<string, string> = {}): Obj => ({
  apiVersion: 'v1',
  kind: 'Namespace',
  metadata: { name, labels },
});

export interface PodSpec {
  readonly labels?: Record<string, string>;
  readonly ips: string[];
  readonly node?: string;
  /** Named container ports: [name, port, protocol?]. */
  readonly ports?: [string, number, string?][];
  readonly hostNetwork?: boolean;
  readonly phase?: string;
}

export const pod = (ns: string, name: string, spec: PodSpec): Obj => ({
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { name, namespace: ns, labels: spec.labels ?? {} },
  spec: {
    nodeName: spec.node ?? 'n1',
    ...(spec.hostNetwork ? { hostNetwork: true } : {}),
    containers: [
      {
        name: 'c',
        ports: (spec.ports ?? []).map(([n, port, protocol]) => ({
          name: n,
          containerPort: port,
          protocol: protocol ?? 'TCP',
        })),
      },
    ],
  },
  status: { phase: spec.phase ?? 'Running', podIPs: spec.ips.map((ip) => ({ ip })) },
});

export const policy = (ns: string, name: string, spec: unknown): Obj => ({
  apiVersion: 'networking.k8s.io/v1',
  kind: 'NetworkPolicy',
  metadata: { name, namespace: ns },
  spec,
});

export function stateOf(objects: readonly unknown[], previous?: ClusterState): ClusterState {
  return buildClusterState(
    objects.map((obj) => ({ obj })),
    previous,
  );
}
