/**
 * The NetworkPolicy scenario table (test/fixtures/netpol/scenarios.yaml): loaded strictly (an unknown
 * key or a malformed matrix fails, so the table cannot rot silently), and the world it describes
 * (namespaces x, y, z × pods a, b, c) as raw Kubernetes objects, step by step. Used by the unit
 * test that runs it through evaluate() and the plans, and meant for the real-traffic suites of
 * every mode (the same steps, then probes through each pod's Service).
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';

export const SCENARIO_FILE = fileURLToPath(new URL('../fixtures/netpol/scenarios.yaml', import.meta.url));

export const NAMESPACES = ['x', 'y', 'z'] as const;
export const POD_NAMES = ['a', 'b', 'c'] as const;
/** Matrix columns and rows, in order. */
export const ALL_PODS: readonly string[] = NAMESPACES.flatMap((n) => POD_NAMES.map((p) => `${n}/${p}`));

export type ScenarioProtocol = 'TCP' | 'UDP' | 'SCTP';
/** A cell: connects, is blocked, or is a pod reaching itself (unchecked upstream; svcplane allows it). */
export type Cell = 'allow' | 'block' | 'self';

export type Action =
  | { readonly create: { readonly namespace: string; readonly name: string; readonly spec: unknown } }
  | { readonly update: { readonly namespace: string; readonly name: string; readonly spec: unknown } }
  | { readonly labelNamespace: { readonly namespace: string; readonly labels: Record<string, string> } }
  | {
      readonly labelPod: {
        readonly namespace: string;
        readonly pod: string;
        readonly labels: Record<string, string>;
      };
    }
  | { readonly deleteAllPolicies: true };

export interface Probe {
  readonly port: number;
  readonly protocol: ScenarioProtocol;
  /** expect.get(from).get(to). */
  readonly expect: ReadonlyMap<string, ReadonlyMap<string, Cell>>;
}

export interface Step {
  readonly do: readonly Action[];
  readonly probes: readonly Probe[];
}

export interface Scenario {
  readonly id: string;
  /** The upstream test's name (upstream scenarios) or the scenario's title (svcplane's own). */
  readonly title: string;
  readonly upstream: boolean;
  readonly servers: { readonly ports: readonly number[]; readonly protocols: readonly ScenarioProtocol[] };
  readonly steps: readonly Step[];
}

type Rec = Record<string, unknown>;

function fail(where: string, what: string): never {
  throw new Error(`${SCENARIO_FILE}: ${where}: ${what}`);
}

function record(v: unknown, where: string, keys: readonly string[]): Rec {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) fail(where, 'must be a mapping');
  for (const k of Object.keys(v)) if (!keys.includes(k)) fail(where, `unknown key ${JSON.stringify(k)}`);
  return v as Rec;
}

function list(v: unknown, where: string): unknown[] {
  if (!Array.isArray(v)) fail(where, 'must be a list');
  return v;
}

function protocol(v: unknown, where: string): ScenarioProtocol {
  if (v !== 'TCP' && v !== 'UDP' && v !== 'SCTP') fail(where, `unknown protocol ${JSON.stringify(v)}`);
  return v;
}

function matrix(v: unknown, where: string): Map<string, Map<string, Cell>> {
  const rows = record(v, where, ALL_PODS);
  const out = new Map<string, Map<string, Cell>>();
  for (const from of ALL_PODS) {
    const text = rows[from];
    if (typeof text !== 'string') fail(`${where}.${from}`, 'missing row');
    const cells = text.trim().split(/\s+/);
    if (cells.length !== ALL_PODS.length)
      fail(`${where}.${from}`, `${cells.length} cells, not ${ALL_PODS.length}`);
    const row = new Map<string, Cell>();
    cells.forEach((c, i) => {
      const to = ALL_PODS[i]!;
      const cell: Cell | undefined =
        c === '.' ? 'allow' : c === 'X' ? 'block' : c === '~' ? 'self' : undefined;
      if (!cell) fail(`${where}.${from}`, `unknown cell ${JSON.stringify(c)}`);
      if ((cell === 'self') !== (from === to))
        fail(`${where}.${from}`, `"~" belongs exactly on the diagonal`);
      row.set(to, cell);
    });
    out.set(from, row);
  }
  return out;
}

function action(v: unknown, where: string): Action {
  const a = record(v, where, ['create', 'update', 'labelNamespace', 'labelPod', 'deleteAllPolicies']);
  const [kind, ...more] = Object.keys(a);
  if (!kind || more.length > 0) fail(where, 'one action per list item');
  const body = a[kind];
  switch (kind) {
    case 'create':
    case 'update': {
      const b = record(body, `${where}.${kind}`, ['namespace', 'name', 'spec']);
      return { [kind]: { namespace: String(b.namespace), name: String(b.name), spec: b.spec } } as Action;
    }
    case 'labelNamespace': {
      const b = record(body, `${where}.${kind}`, ['namespace', 'labels']);
      return {
        labelNamespace: { namespace: String(b.namespace), labels: b.labels as Record<string, string> },
      };
    }
    case 'labelPod': {
      const b = record(body, `${where}.${kind}`, ['namespace', 'pod', 'labels']);
      return {
        labelPod: {
          namespace: String(b.namespace),
          pod: String(b.pod),
          labels: b.labels as Record<string, string>,
        },
      };
    }
    default:
      if (body !== true) fail(`${where}.${kind}`, 'must be true');
      return { deleteAllPolicies: true };
  }
}

export function loadScenarios(file = SCENARIO_FILE): Scenario[] {
  const doc = record(YAML.parse(readFileSync(file, 'utf8')), 'top', ['scenarios']);
  const ids = new Set<string>();
  return list(doc.scenarios, 'scenarios').map((raw, i) => {
    const s = record(raw, `scenarios[${i}]`, ['id', 'upstream', 'origin', 'title', 'servers', 'steps']);
    const id = String(s.id);
    if (ids.has(id)) fail(id, 'duplicate id');
    ids.add(id);
    const servers = record(s.servers, `${id}.servers`, ['ports', 'protocols']);
    const upstream = typeof s.upstream === 'string';
    if (upstream === (typeof s.title === 'string')) fail(id, 'either upstream (a test name) or title');
    return {
      id,
      title: String(upstream ? s.upstream : s.title),
      upstream,
      servers: {
        ports: list(servers.ports, `${id}.servers.ports`).map(Number),
        protocols: list(servers.protocols, `${id}.servers.protocols`).map((p) =>
          protocol(p, `${id}.servers`),
        ),
      },
      steps: list(s.steps, `${id}.steps`).map((st, j) => {
        const step = record(st, `${id}.steps[${j}]`, ['do', 'probes']);
        return {
          do: list(step.do, `${id}.steps[${j}].do`).map((a, k) => action(a, `${id}.steps[${j}].do[${k}]`)),
          probes: list(step.probes, `${id}.steps[${j}].probes`).map((p, k) => {
            const where = `${id}.steps[${j}].probes[${k}]`;
            const probe = record(p, where, ['port', 'protocol', 'expect']);
            return {
              port: Number(probe.port),
              protocol: protocol(probe.protocol, where),
              expect: matrix(probe.expect, `${where}.expect`),
            };
          }),
        };
      }),
    };
  });
}

/** Where each pod is and what it is called, as the harness running the scenario decided. */
export interface Placement {
  /** `ns/pod` → its IP address. */
  readonly ips: ReadonlyMap<string, string>;
  /** `ns/pod` → its node. */
  readonly nodes: ReadonlyMap<string, string>;
}

/** Replaces {{ip ns/pod}} and {{host ns/pod}} in every string of a spec. */
export function resolveAddresses(spec: unknown, placement: Placement): unknown {
  if (typeof spec === 'string') {
    return spec.replace(/\{\{(ip|host) ([a-z]\/[a-z])\}\}/g, (_, kind: string, pod: string) => {
      const ip = placement.ips.get(pod);
      if (!ip) fail('placeholder', `no address for ${pod}`);
      return kind === 'ip' ? ip : `${ip}/${ip.includes(':') ? 128 : 32}`;
    });
  }
  if (Array.isArray(spec)) return spec.map((v) => resolveAddresses(v, placement));
  if (typeof spec === 'object' && spec !== null) {
    return Object.fromEntries(Object.entries(spec).map(([k, v]) => [k, resolveAddresses(v, placement)]));
  }
  return spec;
}

/** The cluster of a scenario as it evolves: apply steps' actions, read the objects. */
export class ScenarioWorld {
  private readonly nsLabels = new Map<string, Record<string, string>>(NAMESPACES.map((n) => [n, {}]));
  private readonly podLabels = new Map<string, Record<string, string>>(
    ALL_PODS.map((p) => [p, { pod: p.split('/')[1]! }]),
  );
  private readonly policies = new Map<string, { namespace: string; name: string; spec: unknown }>();

  constructor(
    readonly scenario: Scenario,
    readonly placement: Placement,
  ) {}

  apply(a: Action): void {
    if ('create' in a || 'update' in a) {
      const p = 'create' in a ? a.create : a.update;
      const key = `${p.namespace}/${p.name}`;
      if ('create' in a && this.policies.has(key)) fail(this.scenario.id, `create: ${key} exists`);
      if ('update' in a && !this.policies.has(key)) fail(this.scenario.id, `update: no ${key}`);
      this.policies.set(key, { ...p, spec: resolveAddresses(p.spec, this.placement) });
    } else if ('labelNamespace' in a) {
      const l = this.nsLabels.get(a.labelNamespace.namespace)!;
      Object.assign(l, a.labelNamespace.labels);
    } else if ('labelPod' in a) {
      const l = this.podLabels.get(`${a.labelPod.namespace}/${a.labelPod.pod}`)!;
      Object.assign(l, a.labelPod.labels);
    } else this.policies.clear();
  }

  /** The container ports every pod serves: serve-<port>-<protocol>. */
  containerPorts(): { name: string; containerPort: number; protocol: ScenarioProtocol }[] {
    return this.scenario.servers.ports.flatMap((port) =>
      this.scenario.servers.protocols.map((protocol) => ({
        name: `serve-${port}-${protocol.toLowerCase()}`,
        containerPort: port,
        protocol,
      })),
    );
  }

  namespaceObjects(): Record<string, unknown>[] {
    return NAMESPACES.map((name) => ({
      apiVersion: 'v1',
      kind: 'Namespace',
      metadata: { name, labels: { ...this.nsLabels.get(name) } },
    }));
  }

  podObjects(): Record<string, unknown>[] {
    return ALL_PODS.map((key) => {
      const [namespace, name] = key.split('/');
      return {
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name, namespace, labels: { ...this.podLabels.get(key) } },
        spec: {
          nodeName: this.placement.nodes.get(key),
          containers: [{ name: 'server', ports: this.containerPorts() }],
        },
        status: { phase: 'Running', podIPs: [{ ip: this.placement.ips.get(key) }] },
      };
    });
  }

  policyObjects(): Record<string, unknown>[] {
    return [...this.policies.values()].map((p) => ({
      apiVersion: 'networking.k8s.io/v1',
      kind: 'NetworkPolicy',
      metadata: { name: p.name, namespace: p.namespace },
      spec: p.spec,
    }));
  }

  objects(): Record<string, unknown>[] {
    return [...this.namespaceObjects(), ...this.podObjects(), ...this.policyObjects()];
  }
}
