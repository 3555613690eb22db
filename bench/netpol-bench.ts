import { writeFile, mkdir } from 'node:fs/promises';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { buildClusterState, type SourceObject } from '../src/model/build.js';
import type { ClusterState } from '../src/model/types.js';
import { NetpolEnforcer, readKernelTable } from '../src/netpol/enforcer.js';
import { compareTable } from '../src/netpol/nft-read.js';
import { NETPOL_TABLE } from '../src/netpol/nft-render.js';
import { run } from '../src/util/exec.js';
import { MemoryPeak } from './memory.js';

/**
 * `npm run bench` (NetworkPolicy part): 1k policies × 10k pods in 100 namespaces, 1k of the pods on
 * this node, enforced by the real enforcer into the real kernel of a private network namespace
 * (scripts/bench.sh runs this under `unshare -n`). Measures:
 * - first program: objects → state → plan → one nft transaction (the whole table), and its size;
 * - one pod label change → enforced (state rebuilt from the objects as a source does, the plan, the
 *   diff, the element transaction, nft done): p50 and max over --changes changes, with each stage;
 * - the floor, in the same run: one `nft -f` element transaction into the same table;
 * - peak RSS.
 */

const NAMESPACES = 100;
const PODS_PER_NS = 100;
const LOCAL_PER_NS = 10;
const POLICIES_PER_NS = 10;
const NODE = 'bench-node';

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(name);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : fallback;
}

const podIP = (ns: number, i: number): string =>
  `10.${64 + Math.floor(ns / 2)}.${(ns % 2) * 128 + Math.floor(i / 2)}.${(i % 2) * 100 + 10}`;

/** The world: namespaces with a tier label, pods app=a<k> role=r<k%5>, policies of the common shapes. */
function world(labelOf: (ns: number, i: number) => Record<string, string>): SourceObject[] {
  const out: SourceObject[] = [];
  for (let ns = 0; ns < NAMESPACES; ns++) {
    const name = `ns-${ns}`;
    out.push({
      obj: { apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels: { tier: `t${ns % 10}` } } },
    });
    for (let i = 0; i < PODS_PER_NS; i++) {
      out.push({
        obj: {
          apiVersion: 'v1',
          kind: 'Pod',
          metadata: { name: `pod-${i}`, namespace: name, labels: labelOf(ns, i) },
          spec: {
            nodeName: i < LOCAL_PER_NS ? NODE : `node-${1 + (i % 99)}`,
            containers: [{ name: 'c', ports: [{ name: 'http', containerPort: 8080 + (i % 3) }] }],
          },
          status: { phase: 'Running', podIPs: [{ ip: podIP(ns, i) }] },
        },
      });
    }
    for (let p = 0; p < POLICIES_PER_NS; p++) {
      const from =
        p % 4 === 0
          ? [{ podSelector: { matchLabels: { role: `r${p % 5}` } } }]
          : p % 4 === 1
            ? [
                {
                  namespaceSelector: { matchLabels: { tier: `t${p}` } },
                  podSelector: { matchLabels: { app: `a${p}` } },
                },
              ]
            : p % 4 === 2
              ? [{ ipBlock: { cidr: `172.${16 + p}.0.0/16`, except: [`172.${16 + p}.1.0/24`] } }]
              : [
                  {
                    namespaceSelector: {
                      matchExpressions: [{ key: 'tier', operator: 'In', values: ['t1', 't2'] }],
                    },
                  },
                ];
      out.push({
        obj: {
          apiVersion: 'networking.k8s.io/v1',
          kind: 'NetworkPolicy',
          metadata: { name: `np-${p}`, namespace: name },
          spec: {
            podSelector: { matchLabels: { app: `a${p}` } },
            policyTypes: p % 3 === 0 ? ['Ingress', 'Egress'] : ['Ingress'],
            ingress: [
              {
                from,
                ports: p % 2 === 0 ? [{ port: 'http' }] : [{ protocol: 'TCP', port: 80, endPort: 90 }],
              },
            ],
            ...(p % 3 === 0
              ? { egress: [{ to: [{ podSelector: {} }], ports: [{ protocol: 'UDP', port: 53 }] }] }
              : {}),
          },
        },
      });
    }
  }
  return out;
}

const baseLabels = (ns: number, i: number): Record<string, string> => ({
  app: `a${i % 10}`,
  role: `r${i % 5}`,
});

function pct(xs: readonly number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}
const r1 = (x: number): number => Math.round(x * 10) / 10;

async function main(): Promise<void> {
  const changes = Number(arg('--changes', '30'));
  const out = arg(
    '--out',
    join(
      fileURLToPath(new URL('.', import.meta.url)),
      'results',
      `netpol-${new Date().toISOString().slice(0, 10)}.json`,
    ),
  );
  const memory = new MemoryPeak();
  await run(['ip', 'link', 'set', 'lo', 'up']);
  const enforcer = new NetpolEnforcer({ nodeName: NODE, families: ['IPv4'] });
  await enforcer.setup();

  let t = performance.now();
  const objects = world(baseLabels);
  let state: ClusterState = buildClusterState(objects);
  const buildMs = performance.now() - t;
  t = performance.now();
  const plan = enforcer.plan(state);
  const planMs = performance.now() - t;
  t = performance.now();
  const first = await enforcer.sync(state);
  const firstSyncMs = performance.now() - t;
  const check = compareTable(plan, await readKernelTable({}));
  if (check.lines.length > 0) throw new Error(`the kernel does not hold the plan: ${check.lines.join('; ')}`);
  const elements = [...plan.sets.values()].reduce((n, s) => n + s.elements.length, 0);
  const firstProgramMs = buildMs + firstSyncMs;
  console.log(
    `netpol: ${NAMESPACES * POLICIES_PER_NS} policies x ${NAMESPACES * PODS_PER_NS} pods (${NAMESPACES * LOCAL_PER_NS} on this node): ` +
      `first program ${Math.round(firstProgramMs)} ms (state ${Math.round(buildMs)}, plan ${Math.round(planMs)}, plan+nft ${Math.round(firstSyncMs)}); ` +
      `${plan.rules.length} rules, ${plan.sets.size} sets, ${elements} elements, ${first.bytes} bytes`,
  );

  // One pod label change at a time, as an informer delivers it: the changed Pod is a new object,
  // every other object keeps its identity (the model's per-object caches hold).
  const totals: number[] = [];
  const stages = {
    state: [] as number[],
    sync: [] as number[],
    plan: [] as number[],
    diff: [] as number[],
    nft: [] as number[],
  };
  const current = [...objects];
  const podIndex = new Map<string, number>();
  current.forEach((o, idx) => {
    const obj = o.obj as { kind: string; metadata: { name: string; namespace: string } };
    if (obj.kind === 'Pod') podIndex.set(`${obj.metadata.namespace}/${obj.metadata.name}`, idx);
  });
  for (let k = 0; k < changes; k++) {
    const ns = (k * 7) % NAMESPACES;
    // Even changes: a pod of this node; odd: a peer on another node.
    const i = k % 2 === 0 ? k % LOCAL_PER_NS : LOCAL_PER_NS + ((k * 13) % (PODS_PER_NS - LOCAL_PER_NS));
    const idx = podIndex.get(`ns-${ns}/pod-${i}`)!;
    const old = current[idx]!.obj as { metadata: { labels: Record<string, string> } };
    const flipped = old.metadata.labels.app === baseLabels(ns, i).app;
    const labels = flipped ? { app: `a${(i + 1) % 10}`, role: `r${(i + 2) % 5}` } : baseLabels(ns, i);
    const start = performance.now();
    current[idx] = { obj: { ...old, metadata: { ...old.metadata, labels } } };
    const next = buildClusterState(current, state);
    const built = performance.now();
    const report = await enforcer.sync(next);
    const done = performance.now();
    if (report.full) throw new Error('a label change rewrote the whole table');
    state = next;
    stages.state.push(built - start);
    stages.sync.push(done - built);
    stages.plan.push(Number(report.details?.planMs));
    stages.diff.push(Number(report.details?.renderMs));
    stages.nft.push(Number(report.details?.nftMs));
    totals.push(done - start);
  }
  // The floor: one element transaction into the same table, by nft alone.
  const floor: number[] = [];
  for (let k = 0; k < 10; k++) {
    const s = performance.now();
    await run(['nft', '-f', '-'], {
      input: `add element inet ${NETPOL_TABLE} local-v4 { 192.0.2.${k + 1} }\ndelete element inet ${NETPOL_TABLE} local-v4 { 192.0.2.${k + 1} }\n`,
    });
    floor.push(performance.now() - s);
  }
  const peak = memory.stop();
  const result = {
    date: new Date().toISOString(),
    load: loadavg().map(r1),
    policies: NAMESPACES * POLICIES_PER_NS,
    pods: NAMESPACES * PODS_PER_NS,
    localPods: NAMESPACES * LOCAL_PER_NS,
    rules: plan.rules.length,
    sets: plan.sets.size,
    elements,
    firstProgramMs: Math.round(firstProgramMs),
    firstProgram: {
      stateMs: Math.round(buildMs),
      planMs: Math.round(planMs),
      planAndNftMs: Math.round(firstSyncMs),
      bytes: first.bytes,
    },
    labelChange: {
      changes,
      p50Ms: r1(pct(totals, 50)),
      maxMs: r1(Math.max(...totals)),
      stateP50Ms: r1(pct(stages.state, 50)),
      syncP50Ms: r1(pct(stages.sync, 50)),
      syncMaxMs: r1(Math.max(...stages.sync)),
      planP50Ms: r1(pct(stages.plan, 50)),
      diffAndRenderP50Ms: r1(pct(stages.diff, 50)),
      nftP50Ms: r1(pct(stages.nft, 50)),
    },
    floorNftElementP50Ms: r1(pct(floor, 50)),
    peakRssMB: peak.rssMB,
  };
  console.log(
    `netpol: one label change -> enforced: p50 ${result.labelChange.p50Ms} ms, max ${result.labelChange.maxMs} ms ` +
      `(state rebuild p50 ${result.labelChange.stateP50Ms}, plan ${result.labelChange.planP50Ms}, diff+render ${result.labelChange.diffAndRenderP50Ms}, nft ${result.labelChange.nftP50Ms}); ` +
      `floor (nft element transaction) p50 ${result.floorNftElementP50Ms} ms; peak RSS ${result.peakRssMB} MB; load ${result.load.join(' ')}`,
  );
  await mkdir(join(out, '..'), { recursive: true });
  await writeFile(out, `${JSON.stringify(result, null, 2)}\n`);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
