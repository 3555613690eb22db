/** Hostile manifest texts shared by the unit and integration tests. */

/** 300 endpoints anchored once and aliased by 700 slices: ~100 KB that expand to 210k endpoints. */
export function aliasBomb(): string {
  const out = [
    'apiVersion: v1',
    'kind: List',
    'items:',
    '- apiVersion: discovery.k8s.io/v1',
    '  kind: EndpointSlice',
    '  metadata: {name: s0, labels: &l {kubernetes.io/service-name: web}}',
    '  addressType: IPv4',
    '  ports: &p [{name: p, port: 8080, protocol: TCP}]',
    '  endpoints: &e',
    ...Array.from({ length: 300 }, (_, i) => `  - {addresses: [10.244.${i >> 8}.${i & 255}]}`),
  ];
  for (let i = 1; i < 700; i++) {
    out.push(
      `- {apiVersion: discovery.k8s.io/v1, kind: EndpointSlice, metadata: {name: s${i}, labels: *l}, addressType: IPv4, ports: *p, endpoints: *e}`,
    );
  }
  return `${out.join('\n')}\n`;
}

/** `- - - … x`: ~30 KB that overflowed yaml's stack; the second parse aborted the process (exit 134). */
export const deepYaml = (tag: string): string => `${'- '.repeat(15_000)}${tag}\n`;
