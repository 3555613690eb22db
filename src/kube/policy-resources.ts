import type { KubeObject, ObjectMeta, ResourceSpec } from './informer.js';

/**
 * What NetworkPolicy enforcement watches, only when it is switched on: NetworkPolicies, Pods and
 * Namespaces of every namespace (a policy's peers can be anywhere, and a named port of an egress
 * destination is resolved on that remote pod), with list and watch only (deploy/'s RBAC).
 *
 * Pods are filtered by the server on `status.phase!=Succeeded,status.phase!=Failed`: a finished pod
 * takes no part in policy (its address may already be another pod's), Job pods linger finished by
 * the thousand, and when a pod finishes the watch says DELETED. That field selector is as old as
 * the pods API. Host-network pods are left out by the model, not the server: `spec.hostNetwork` is
 * a selectable field of newer API servers only, and such pods are few (a DaemonSet's per node).
 * Labels are not filtered: any label may be selected by some policy. Each object is cut down to
 * what the model reads (ResourceSpec.transform), so status churn of pods does not rebuild the state.
 */

const isRecord = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

function pick(obj: Record<string, unknown>, keys: readonly string[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const k of keys) if (obj[k] !== undefined) out[k] = obj[k];
  return out;
}

/** name, namespace, resourceVersion, labels: what the model and the reflector use. */
function slimMeta(md: ObjectMeta | undefined): ObjectMeta | undefined {
  return isRecord(md) ? pick(md, ['name', 'namespace', 'resourceVersion', 'labels']) : md;
}

/** An unexpected shape is kept as it is, for the model to report. */
function slimContainer(c: unknown): unknown {
  if (!isRecord(c) || !Array.isArray(c.ports)) return c;
  return {
    ports: (c.ports as unknown[]).map((p) =>
      isRecord(p) ? pick(p, ['name', 'containerPort', 'protocol']) : p,
    ),
  };
}

/** A Pod as src/model/pod.ts reads it. */
export function slimPod(o: KubeObject): KubeObject {
  const spec = isRecord(o.spec) ? o.spec : undefined;
  const status = isRecord(o.status) ? o.status : undefined;
  return {
    kind: o.kind,
    apiVersion: o.apiVersion,
    metadata: slimMeta(o.metadata),
    ...(spec
      ? {
          spec: {
            ...pick(spec, ['nodeName', 'hostNetwork']),
            ...(spec.containers !== undefined
              ? {
                  containers: Array.isArray(spec.containers)
                    ? spec.containers.map(slimContainer)
                    : spec.containers,
                }
              : {}),
          },
        }
      : o.spec !== undefined
        ? { spec: o.spec }
        : {}),
    ...(status
      ? { status: pick(status, ['phase', 'podIP', 'podIPs']) }
      : o.status !== undefined
        ? { status: o.status }
        : {}),
  };
}

function slimMetaOnly(o: KubeObject): KubeObject {
  const { metadata, ...rest } = o;
  return { ...rest, metadata: slimMeta(metadata) };
}

export const NETWORK_POLICY_RESOURCES: readonly ResourceSpec[] = [
  {
    name: 'networkpolicies',
    path: '/apis/networking.k8s.io/v1/networkpolicies',
    kind: 'NetworkPolicy',
    apiVersion: 'networking.k8s.io/v1',
    // The spec is read whole; annotations (a last-applied copy of it) and managedFields are not.
    transform: slimMetaOnly,
  },
  {
    name: 'pods',
    path: '/api/v1/pods',
    kind: 'Pod',
    apiVersion: 'v1',
    fieldSelector: 'status.phase!=Succeeded,status.phase!=Failed',
    transform: slimPod,
  },
  {
    name: 'namespaces',
    path: '/api/v1/namespaces',
    kind: 'Namespace',
    apiVersion: 'v1',
    transform: (o) => ({ kind: o.kind, apiVersion: o.apiVersion, metadata: slimMeta(o.metadata) }),
  },
];
