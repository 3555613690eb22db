import type { SourceObject } from '../../../src/model/build.js';

/** Raw Service and EndpointSlice objects in namespace `ns` for the debug tests (port `p`, 80 → 8080). */

export const svc = (
  name: string,
  spec: Record<string, unknown>,
  status?: Record<string, unknown>,
): SourceObject => ({
  obj: {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace: 'ns' },
    spec,
    ...(status ? { status } : {}),
  },
  source: name,
});

export const slice = (name: string, eps: readonly { ip: string; node: string }[]): SourceObject => ({
  obj: {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: `${name}-1`, namespace: 'ns', labels: { 'kubernetes.io/service-name': name } },
    addressType: 'IPv4',
    ports: [{ name: 'p', protocol: 'TCP', port: 8080 }],
    endpoints: eps.map((e) => ({ addresses: [e.ip], conditions: { ready: true }, nodeName: e.node })),
  },
  source: `${name}-slice`,
});

export const port = (extra: Record<string, unknown> = {}): Record<string, unknown>[] => [
  { name: 'p', protocol: 'TCP', port: 80, targetPort: 8080, ...extra },
];
