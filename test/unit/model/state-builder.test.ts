import assert from 'node:assert/strict';
import { buildClusterState, ClusterStateBuilder, type SourceObject } from '../../../src/model/build.js';
import type { ServiceLimits } from '../../../src/model/limits.js';
import { stateChange, type StateChange } from '../../../src/model/state-change.js';
import type { ClusterState, Problem } from '../../../src/model/types.js';
import { deepEqual } from '../../../src/model/validate.js';
import { fullGc } from '../../support/gc.js';
import { namespace, pod, policy, type Obj } from '../netpol/objects.js';

/**
 * The incremental cluster state (ClusterStateBuilder, issue 14): what it builds after any sequence of
 * group sets and deletions is what a full build of every group's objects gives, and the change
 * tracker's O(changed) path (the builder's records) says what its full comparison says.
 */

/** Small limits, so node-port conflicts, out-of-range ports and the rule budget all come up. */
const LIMITS: ServiceLimits = {
  nodePortRange: { first: 30000, last: 30004 },
  reservedPorts: new Map([[30004, 'a reserved port']]),
  maxRuleCost: 12,
};

/** mulberry32: a small deterministic generator. */
function generator(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const svc = (ns: string, name: string, spec: Obj): Obj => ({
  apiVersion: 'v1',
  kind: 'Service',
  metadata: { name, namespace: ns },
  spec,
});

/** Random raw objects over small pools of names, addresses and ports: duplicates, conflicts and broken objects are common. */
function objects(rand: () => number): unknown[] {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
  const ns = (): string => pick(['a', 'b']);
  const name = (): string => pick(['web', 'db', 'dns', 'api']);
  const ip = (): string => `10.244.0.${1 + Math.floor(rand() * 6)}`;
  const one = (): unknown => {
    switch (Math.floor(rand() * 12)) {
      case 0:
      case 1:
      case 2: {
        const type = pick(['ClusterIP', 'ClusterIP', 'NodePort', 'LoadBalancer']);
        const nodePort = type === 'ClusterIP' ? {} : { nodePort: pick([30001, 30002, 30003, 30004, 30999]) };
        const ports = [{ name: 'http', port: 80, targetPort: 8080, ...nodePort }];
        if (rand() < 0.3) ports.push({ name: pick(['dns', 'BAD']), port: 53, targetPort: 53 });
        return svc(ns(), name(), {
          type,
          clusterIP: rand() < 0.1 ? 'None' : `10.96.0.${1 + Math.floor(rand() * 4)}`,
          ...(rand() < 0.7 ? { selector: { app: 'x' } } : {}),
          ports: ports.map((p) => (p.name === 'dns' ? { ...p, protocol: 'UDP' } : p)),
          ...(type === 'LoadBalancer' && rand() < 0.5
            ? { externalTrafficPolicy: 'Local', healthCheckNodePort: pick([30001, 30002, 30003]) }
            : {}),
        });
      }
      case 3:
      case 4:
      case 5: {
        const n = Math.floor(rand() * 4);
        return {
          apiVersion: 'discovery.k8s.io/v1',
          kind: 'EndpointSlice',
          metadata: {
            name: `s${Math.floor(rand() * 3)}`,
            namespace: ns(),
            labels: { 'kubernetes.io/service-name': name() },
            ...(rand() < 0.3
              ? {
                  annotations: {
                    'endpoints.kubernetes.io/last-change-trigger-time': `2026-01-0${1 + Math.floor(rand() * 9)}T00:00:00Z`,
                  },
                }
              : {}),
          },
          addressType: 'IPv4',
          ports: [{ name: pick(['http', 'dns']), port: 8080, protocol: 'TCP' }],
          endpoints: Array.from({ length: n }, () => ({
            addresses: [ip()],
            conditions: { ready: rand() < 0.8, terminating: rand() < 0.2 },
          })),
        };
      }
      case 6:
        return {
          apiVersion: 'v1',
          kind: 'Endpoints',
          metadata: { name: name(), namespace: ns() },
          subsets: [{ addresses: [{ ip: ip() }], ports: [{ name: 'http', port: 8080 }] }],
        };
      case 7:
        return {
          apiVersion: 'v1',
          kind: 'Node',
          metadata: { name: pick(['node-1', 'node-2']), labels: { zone: pick(['z1', 'z2']) } },
          status: { addresses: [{ type: 'InternalIP', address: `192.0.2.${1 + Math.floor(rand() * 2)}` }] },
        };
      case 8:
        return pod(ns(), pick(['p1', 'p2', 'p3']), { ips: [ip()], labels: { app: pick(['x', 'y']) } });
      case 9:
        return rand() < 0.5
          ? namespace(ns(), { team: pick(['t1', 't2']) })
          : policy(ns(), 'deny', { podSelector: {}, policyTypes: [pick(['Ingress', 'Egress'])] });
      case 10:
        return { apiVersion: 'v1', kind: 'List', items: [one(), one()] };
      default:
        return pick<unknown>([
          42,
          { kind: 'Deployment', metadata: { name: 'd' } },
          { apiVersion: 'v1', kind: 'Service' },
        ]);
    }
  };
  return Array.from({ length: Math.floor(rand() * 4) }, one);
}

const fileProblem = (group: string): Problem => ({
  object: { kind: 'File', name: group, source: group },
  field: '',
  reason: 'cannot read: EIO; keeping its last good content',
});

/** Everything a state holds, in its order (maps as entry lists: the order is part of the contract). */
const view = (s: ClusterState): unknown => ({
  services: [...s.services],
  nodes: [...s.nodes],
  namespaces: [...(s.namespaces ?? [])],
  pods: [...(s.pods ?? [])],
  policies: [...(s.networkPolicies ?? [])],
  triggers: s.endpointsTriggerTimes && [...s.endpointsTriggerTimes],
  problems: s.problems,
});

/** A change's sets as lists, in their order. */
const changeView = (c: StateChange): unknown => ({
  changed: [...c.changed],
  removed: [...c.removed],
  services: [...c.services],
  endpoints: [...c.endpoints],
  endpointPorts: [...c.endpointPorts],
  udpEndpoints: [...c.udpEndpoints],
});

/** The full comparison: the same states, but `next`'s services in a map the builder never recorded. */
const fullChange = (previous: ClusterState | undefined, next: ClusterState): StateChange =>
  stateChange(previous, { ...next, services: new Map(next.services) });

const SEEDS =
  process.env.SVCPLANE_PROPERTY_SEED !== undefined && process.env.SVCPLANE_PROPERTY_SEED !== ''
    ? [Number(process.env.SVCPLANE_PROPERTY_SEED)]
    : Array.from({ length: 40 }, (_, i) => i + 1);

describe('ClusterStateBuilder: the incremental cluster state', () => {
  it('equals a full build after every step of random set/delete sequences (fixed seeds; SVCPLANE_PROPERTY_SEED replays one)', () => {
    for (const seed of SEEDS) {
      const rand = generator(seed);
      const builder = new ClusterStateBuilder(LIMITS);
      const groups = new Map<string, { objects: SourceObject[]; problems: Problem[] }>();
      const history: ClusterState[] = [];
      for (let step = 0; step < 60; step++) {
        const group = `g${Math.floor(rand() * 8)}.yaml`;
        const what = rand();
        if (what < 0.2) {
          builder.delete(group);
          groups.delete(group);
        } else if (what < 0.3 && groups.has(group)) {
          // The same objects again (a file rewritten with its content), perhaps now unreadable.
          const g = groups.get(group)!;
          const problems = rand() < 0.5 ? [fileProblem(group)] : [];
          builder.set(group, g.objects, problems);
          groups.set(group, { objects: g.objects, problems });
        } else if (what < 0.36) {
          // The file cannot be read now (or can again): its last objects stay, with the problem.
          const problems = rand() < 0.7 ? [fileProblem(group)] : [];
          builder.setProblems(group, problems);
          groups.set(group, { objects: groups.get(group)?.objects ?? [], problems });
        } else {
          const objs = objects(rand).map((obj, i): SourceObject => ({ obj, source: `${group}#${i}` }));
          const problems = rand() < 0.1 ? [fileProblem(group)] : [];
          builder.set(group, objs, problems);
          groups.set(group, { objects: objs, problems });
        }
        const prev = history.at(-1);
        const next = builder.build();
        const names = [...groups.keys()].sort();
        const full = buildClusterState(
          names.flatMap((n) => groups.get(n)!.objects),
          undefined,
          LIMITS,
        );
        const expected = {
          ...full,
          problems: [...names.flatMap((n) => groups.get(n)!.problems), ...full.problems],
        };
        const where = `seed ${seed}, step ${step}`;
        assert.deepEqual(view(next), view(expected), where);
        if (prev !== undefined) {
          // Equal values are the very same objects: consumers detect changes with !==.
          for (const [key, value] of next.services) {
            const old = prev.services.get(key);
            if (old !== undefined && deepEqual(old, value)) assert.equal(value, old, `${where}: ${key}`);
          }
          for (const [key, value] of next.nodes) {
            const old = prev.nodes.get(key);
            if (old !== undefined && deepEqual(old, value)) assert.equal(value, old, `${where}: node ${key}`);
          }
          if (deepEqual(view(prev), view(next))) assert.equal(next, prev, `${where}: nothing changed`);
        }
        // The tracker from the builder's records, one and several builds back, and the full comparison.
        for (const back of [prev, history.at(-4), undefined]) {
          assert.deepEqual(changeView(stateChange(back, next)), changeView(fullChange(back, next)), where);
        }
        history.push(next);
      }
    }
  });

  it('a build looks only at the changed group: other groups’ objects are not read again', () => {
    const reads = { count: 0 };
    const counted = (o: Obj): Obj =>
      new Proxy(o, {
        get: (target, prop, receiver) => {
          reads.count++;
          return Reflect.get(target, prop, receiver) as unknown;
        },
      });
    const builder = new ClusterStateBuilder();
    for (let i = 0; i < 50; i++) {
      builder.set(`f${i}.yaml`, [
        {
          obj: counted(svc('a', `s${i}`, { clusterIP: `10.96.1.${i}`, ports: [{ port: 80 }] })),
          source: `f${i}.yaml#0`,
        },
      ]);
    }
    const first = builder.build();
    assert.equal(first.services.size, 50);
    reads.count = 0;
    builder.set('f7.yaml', [
      { obj: svc('a', 's7', { clusterIP: '10.96.2.7', ports: [{ port: 80 }] }), source: 'f7.yaml#0' },
    ]);
    const next = builder.build();
    assert.equal(reads.count, 0, 'objects of unchanged files were read');
    assert.deepEqual(next.services.get('a/s7')?.clusterIPs, ['10.96.2.7']);
    assert.equal(next.services.get('a/s8'), first.services.get('a/s8'));
    assert.deepEqual([...stateChange(first, next).changed], ['a/s7']);
  });

  it('keeps no raw object: once a group is set its objects can be collected (issue 14: memory)', async () => {
    const builder = new ClusterStateBuilder(LIMITS);
    const refs: WeakRef<object>[] = [];
    const weakly = (o: Obj): Obj => {
      refs.push(new WeakRef(o));
      return o;
    };
    const setFile = (i: number, ip: string): void => {
      const name = `s${i}`;
      builder.set(`f${i}.yaml`, [
        {
          obj: weakly(svc('a', name, { clusterIP: `10.96.1.${i + 1}`, ports: [{ name: 'http', port: 80 }] })),
          source: `f${i}.yaml#0`,
        },
        {
          obj: weakly({
            apiVersion: 'discovery.k8s.io/v1',
            kind: 'EndpointSlice',
            metadata: { name: `${name}-x`, namespace: 'a', labels: { 'kubernetes.io/service-name': name } },
            addressType: 'IPv4',
            ports: [{ name: 'http', port: 8080 }],
            endpoints: [{ addresses: [ip] }],
          }),
          source: `f${i}.yaml#1`,
        },
        // Broken and duplicated objects too: their problems keep references, not the objects.
        { obj: weakly({ apiVersion: 'v1', kind: 'Service', metadata: { name } }), source: `f${i}.yaml#2` },
        { obj: weakly({ kind: 'Servise', metadata: { name } }), source: `f${i}.yaml#3` },
      ]);
    };
    for (let i = 0; i < 20; i++) setFile(i, `10.244.0.${i + 1}`);
    builder.build();
    setFile(3, '10.244.1.1');
    builder.setProblems('f4.yaml', [fileProblem('f4.yaml')]);
    const state = builder.build();
    assert.deepEqual(
      state.services.get('a/s3')?.ports[0]?.endpoints.map((e) => e.ip),
      ['10.244.1.1'],
    );
    assert.ok(state.services.has('a/s4'), 'an unreadable file keeps its objects');
    assert.ok(state.problems.some((p) => p.object.kind === 'File'));
    await fullGc();
    const kept = refs.filter((r) => r.deref() !== undefined).length;
    assert.equal(kept, 0, `${kept} of ${refs.length} raw objects are still reachable`);
  });

  it('never keeps a stale object: a Service whose own file did not change is rebuilt when what it depends on did', () => {
    const builder = new ClusterStateBuilder(LIMITS);
    const slice = (ip: string): Obj => ({
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: { name: 'web-1', namespace: 'a', labels: { 'kubernetes.io/service-name': 'web' } },
      addressType: 'IPv4',
      ports: [{ name: 'http', port: 8080 }],
      endpoints: [{ addresses: [ip] }],
    });
    const web = svc('a', 'web', {
      clusterIP: '10.96.0.1',
      ports: [{ name: 'http', port: 80, targetPort: 8080 }],
    });
    const nodePort = (name: string, clusterIP: string): Obj =>
      svc('a', name, { type: 'NodePort', clusterIP, ports: [{ port: 80, nodePort: 30001 }] });
    builder.set('web.yaml', [{ obj: web, source: 'web.yaml#0' }]);
    builder.set('web-slice.yaml', [{ obj: slice('10.244.0.1'), source: 'web-slice.yaml#0' }]);
    // Two Services want node port 30001: the first in key order ("a/first") keeps it.
    builder.set('first.yaml', [{ obj: nodePort('first', '10.96.0.2'), source: 'first.yaml#0' }]);
    builder.set('second.yaml', [{ obj: nodePort('second', '10.96.0.3'), source: 'second.yaml#0' }]);
    const s1 = builder.build();
    assert.deepEqual(
      s1.services.get('a/web')?.ports[0]?.endpoints.map((e) => e.ip),
      ['10.244.0.1'],
    );
    assert.ok(s1.services.has('a/first'));
    assert.ok(!s1.services.has('a/second'));
    assert.match(s1.problems.map((p) => p.reason).join('\n'), /30001 is already used by a\/first/);

    // The slice's file changes: the Service (its file untouched) gets the new endpoint.
    builder.set('web-slice.yaml', [{ obj: slice('10.244.0.9'), source: 'web-slice.yaml#0' }]);
    // The port's holder goes: the other Service (its file untouched) gets the port now.
    builder.delete('first.yaml');
    const s2 = builder.build();
    assert.deepEqual(
      s2.services.get('a/web')?.ports[0]?.endpoints.map((e) => e.ip),
      ['10.244.0.9'],
    );
    assert.ok(!s2.services.has('a/first'));
    assert.equal(s2.services.get('a/second')?.ports[0]?.nodePort, 30001);
    assert.deepEqual(s2.problems, []);
    assert.deepEqual([...stateChange(s1, s2).changed], ['a/second', 'a/web']);
    assert.deepEqual([...stateChange(s1, s2).removed], ['a/first']);
  });
});
