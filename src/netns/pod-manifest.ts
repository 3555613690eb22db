import { checkDNS1123Label, checkLabelKey, checkLabelValue } from '../model/validate.js';

/**
 * The sandbox's pods as Kubernetes objects (pure): each pod's namespace and labels
 * (`svcplane netns pod add NAME --namespace NS --labels k=v,...`), written next to the sandbox's
 * state as `pods.json` (a v1 List of Namespaces and Pods), so that `svcplane run --manifests` with
 * `--network-policy` knows who is who and NetworkPolicies can be tried by hand: put the policies
 * and a symbolic link to pods.json in one directory.
 */

/** spec.nodeName of the sandbox's pods: run svcplane with `--hostname-override node-1`. */
export const SANDBOX_NODE_NAME = 'node-1';
export const DEFAULT_POD_NAMESPACE = 'default';

export function validateNamespace(ns: string): string {
  const reason = checkDNS1123Label(ns);
  if (reason) throw new Error(`namespace ${JSON.stringify(ns)}: ${reason}`);
  return ns;
}

/** `k=v,k2=v2` → labels, each key and value checked as the API server does. */
export function parseLabels(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  if (text.trim() === '') return out;
  for (const part of text.split(',')) {
    const eq = part.indexOf('=');
    if (eq <= 0) throw new Error(`label ${JSON.stringify(part)}: expected key=value`);
    const key = part.slice(0, eq).trim();
    const value = part.slice(eq + 1).trim();
    const bad = checkLabelKey(key) ?? checkLabelValue(value);
    if (bad) throw new Error(`label ${JSON.stringify(part)}: ${bad}`);
    out[key] = value;
  }
  return out;
}

export interface ManifestPod {
  readonly name: string;
  readonly namespace: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly ipv4: string;
  readonly ipv6: string;
  readonly tcpPorts: readonly number[];
  readonly udpPorts: readonly number[];
}

/** The List written to pods.json: one Namespace per namespace used, one Pod per sandbox pod. */
export function renderPodManifest(pods: readonly ManifestPod[]): string {
  const namespaces = [...new Set(pods.map((p) => p.namespace))].sort();
  const items = [
    ...namespaces.map((name) => ({ apiVersion: 'v1', kind: 'Namespace', metadata: { name } })),
    ...pods.map((p) => ({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: p.name, namespace: p.namespace, labels: { ...p.labels } },
      spec: {
        nodeName: SANDBOX_NODE_NAME,
        containers: [
          {
            name: 'echo',
            ports: [
              ...p.tcpPorts.map((port) => ({ name: `tcp-${port}`, containerPort: port, protocol: 'TCP' })),
              ...p.udpPorts.map((port) => ({ name: `udp-${port}`, containerPort: port, protocol: 'UDP' })),
            ],
          },
        ],
      },
      status: { phase: 'Running', podIPs: [{ ip: p.ipv4 }, { ip: p.ipv6 }] },
    })),
  ];
  return `${JSON.stringify({ apiVersion: 'v1', kind: 'List', items }, null, 2)}\n`;
}
