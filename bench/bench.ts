import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { IptablesProxier, renderConfigFor, readKernelFlags } from '../src/iptables/proxier.js';
import { gatherNodeFacts } from '../src/modes/node-facts.js';
import type { IptablesProxierConfig } from '../src/iptables/proxier.js';
import { renderRestoreInput } from '../src/iptables/render.js';
import { ManifestSource } from '../src/kube/manifests.js';
import { buildClusterState } from '../src/model/build.js';
import type { ClusterState } from '../src/model/types.js';
import { run } from '../src/util/exec.js';
import { BENCH_LIMITS, BENCH_NODE, clusterObjects, nodeObject, serviceObjects } from './cluster.js';
import { printChildResult, runChild, writeResults } from './child.js';
import { MemoryPeak } from './memory.js';
import { recordRestoreInputs } from './restore-inputs.js';

/**
 * `npm run bench`: svcplane's iptables mode at 1k–30k Services × 5 endpoints, on the real kernel of a
 * private network namespace (scripts/bench.sh runs this under `unshare -n`). Each size runs in its own
 * child process (`--child N`), so peak RSS and heap are that size's own. See docs/performance.md.
 */

const ENDPOINTS = 5;
const FOREIGN_SETUP: string[][] = [
  ['iptables', '-w', '-t', 'nat', '-N', 'BENCH-FOREIGN'],
  [
    'iptables',
    '-w',
    '-t',
    'nat',
    '-A',
    'BENCH-FOREIGN',
    '-d',
    '203.0.113.77/32',
    '-p',
    'tcp',
    '-j',
    'DNAT',
    '--to-destination',
    '10.244.0.9:80',
  ],
  ['iptables', '-w', '-t', 'nat', '-A', 'PREROUTING', '-j', 'BENCH-FOREIGN'],
  [
    'iptables',
    '-w',
    '-t',
    'filter',
    '-A',
    'INPUT',
    '-p',
    'tcp',
    '--dport',
    '9',
    '-m',
    'comment',
    '--comment',
    'bench foreign',
    '-j',
    'DROP',
  ],
];

interface SizeResult {
  services: number;
  endpointsPerService: number;
  load: number[];
  buildMs: number;
  renderMs: number;
  bytes: number;
  lines: number;
  /** The default full sync (chunked --noflush on nf_tables) into an empty kernel, and again into the populated one. */
  fullFirst: FullSync;
  fullRepeat: FullSync;
  /** The opt-in whole-table full sync into the populated kernel (faster; can lose a racing foreign rule). */
  wholeTableRepeat: FullSync;
  /** Bare `iptables-restore` (no --noflush) of the rendered input: into empty / populated state. */
  floorEmptyMs: number;
  floorPopulatedMs: number;
  ratioFirst: number;
  ratioRepeat: number;
  /** kube-proxy's way (`--noflush`) for comparison, only where it finishes in reasonable time. */
  noflushFullMs?: number;
  partial: PartialSync;
  latency?: Latency;
  foreignSurvived: boolean;
  /** Peak through the full syncs (before the latency run adds a ManifestSource copy of everything). */
  syncPeakRssMB: number;
  syncPeakHeapMB: number;
  peakRssMB: number;
  peakHeapMB: number;
  restorePeakRssMB: number;
}

interface FullSync {
  totalMs: number;
  restoreMs: number;
  listMs: number;
  mode: string;
}

interface PartialSync {
  bytes: number;
  lines: number;
  percentOfFull: number;
  /** Medians over `samples` one-endpoint changes. */
  ms: number;
  restoreMs: number;
  /** Bare `iptables-restore --noflush` of the same input into the same kernel state. */
  floorMs: number;
  samples: number;
}

const PARTIAL_SAMPLES = 20;

interface Latency {
  changes: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  syncP50Ms: number;
}

function parseArgs(argv: string[]): {
  sizes: number[];
  child?: number;
  latencyChanges: number;
  latencyAt: number;
  out?: string;
} {
  let sizes = [1000, 5000, 10000];
  let latencyAt = 10000;
  let child: number | undefined;
  let latencyChanges = 100;
  let out: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const v = argv[i + 1];
    if (a === '--sizes' && v) {
      sizes = v.split(',').map((s) => Number(s.replace(/k$/i, '000')));
      i++;
    } else if (a === '--child' && v) {
      child = Number(v);
      i++;
    } else if (a === '--changes' && v) {
      latencyChanges = Number(v);
      i++;
    } else if (a === '--latency-at' && v) {
      latencyAt = Number(v);
      i++;
    } else if (a === '--out' && v) {
      out = v;
      i++;
    }
  }
  if (sizes.some((n) => !Number.isInteger(n) || n < 1)) throw new Error(`bad --sizes ${sizes.join(',')}`);
  return { sizes, child, latencyChanges, latencyAt, out };
}

const r1 = (x: number): number => Math.round(x * 10) / 10;

function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))] ?? NaN;
}

async function flushKernel(): Promise<void> {
  for (const t of ['nat', 'filter', 'mangle']) {
    await run(['iptables', '-w', '-t', t, '-F']);
    await run(['iptables', '-w', '-t', t, '-X']);
  }
}

async function timedRestore(input: string, args: string[]): Promise<number> {
  const started = performance.now();
  await run(['iptables-restore', '-w', '5', ...args], { input, timeoutMs: 1_800_000 });
  return performance.now() - started;
}

async function foreignPresent(): Promise<boolean> {
  const save = (await run(['iptables-save'])).stdout;
  return (
    /^-A BENCH-FOREIGN -d 203\.0\.113\.77\/32 -p tcp -j DNAT --to-destination 10\.244\.0\.9:80$/m.test(
      save,
    ) &&
    /^-A PREROUTING -j BENCH-FOREIGN$/m.test(save) &&
    /^-A INPUT -p tcp -m tcp --dport 9 -m comment --comment "bench foreign" -j DROP$/m.test(save)
  );
}

function proxierConfig(
  restoreWrapper: string,
  mode: IptablesProxierConfig['fullSyncMode'],
): IptablesProxierConfig {
  return {
    family: 'IPv4',
    nodeName: BENCH_NODE,
    masqueradeBit: 14,
    masqueradeAll: false,
    detectLocalMode: 'ClusterCIDR',
    clusterCIDRs: ['10.128.0.0/9'],
    nodePortAddresses: [],
    localhostNodePorts: true,
    binaries: { restore: restoreWrapper },
    fullSyncMode: mode,
  };
}

/** An iptables-restore wrapper that records the tool's own peak RSS (KB) per run. */
async function restoreWrapper(dir: string): Promise<{ path: string; log: string }> {
  const path = join(dir, 'iptables-restore');
  const log = join(dir, 'restore-rss.log');
  await writeFile(path, `#!/bin/sh\nexec /usr/bin/time -a -o ${log} -f %M iptables-restore "$@"\n`);
  await chmod(path, 0o755);
  return { path, log };
}

async function readPeakKB(log: string): Promise<number> {
  const { readFile } = await import('node:fs/promises');
  const text = await readFile(log, 'utf8').catch(() => '');
  return Math.max(
    0,
    ...text
      .split('\n')
      .map(Number)
      .filter((n) => Number.isFinite(n)),
  );
}

async function measureSize(n: number, latencyChanges: number, latencyAt: number): Promise<SizeResult> {
  const mem = new MemoryPeak();
  const dir = await mkdtemp(join(tmpdir(), 'svcp-bench-'));
  try {
    await flushKernel();
    const wrap = await restoreWrapper(dir);
    const load = loadavg().map(r1);

    let t = performance.now();
    const objects = clusterObjects({ services: n, endpointsPerService: ENDPOINTS });
    const state = buildClusterState(
      objects.map((obj) => ({ obj })),
      undefined,
      BENCH_LIMITS,
    );
    const buildMs = performance.now() - t;
    if (state.problems.length > 0)
      throw new Error(`synthetic cluster invalid: ${JSON.stringify(state.problems[0])}`);

    const config = proxierConfig(wrap.path, 'auto');
    const proxier = new IptablesProxier(config);
    await proxier.setup();

    // Render alone (the proxier renders the same input inside its sync).
    const facts = await gatherNodeFacts(config, state);
    const flags = await readKernelFlags(proxier.ipt, undefined);
    t = performance.now();
    const rendered = renderRestoreInput({
      state,
      config: renderConfigFor(config, facts, flags),
      existingServiceChains: new Set(),
    });
    const renderMs = performance.now() - t;

    // Floor into the empty kernel: a bare whole-table restore of the same input.
    const floorEmptyMs = await timedRestore(rendered.restoreInput, ['--counters']);
    await flushKernel();
    for (const argv of FOREIGN_SETUP) await run(argv);

    const fullFirst = await fullSync(proxier, state);
    proxier.forceFullSync();
    const fullRepeat = await fullSync(proxier, state);
    const foreignSurvived = await foreignPresent();
    // Floor into the populated kernel (same state the repeated full sync met).
    const floorPopulatedMs = await timedRestore(rendered.restoreInput, ['--counters']);
    // Put the proxier's own full state back (the floor dropped the foreign rules and canaries).
    for (const argv of FOREIGN_SETUP.slice(0, 3)) await run(argv, { allowFailure: true });
    proxier.forceFullSync();
    await proxier.sync(state);

    let noflushFullMs: number | undefined;
    if (n <= 1000) {
      const legacyWay = new IptablesProxier(proxierConfig(wrap.path, 'noflush'));
      await legacyWay.setup();
      t = performance.now();
      await legacyWay.sync(state);
      noflushFullMs = performance.now() - t;
      proxier.forceFullSync();
      await proxier.sync(state);
    }

    let latency: Latency | undefined;
    // What a running svcplane holds: the state, one render and the restore input.
    const syncPeak = mem.peak();
    // The opt-in whole-table way, same state: writes the same rules (the proxier's bookkeeping stays
    // true). After the sync peak was taken: this second proxier's memos are the bench's, not svcplane's.
    const wholeTable = new IptablesProxier(proxierConfig(wrap.path, 'whole-table'));
    await wholeTable.setup();
    // Its first sync is full, into the populated kernel: what full#2 met.
    const wholeTableRepeat = await fullSync(wholeTable, state);
    const partial = await partialSync(proxier, objects, state, rendered.bytes);
    if (n === latencyAt && latencyChanges > 0) latency = await eventLatency(dir, n, proxier, latencyChanges);

    const peak = mem.stop();
    return {
      services: n,
      endpointsPerService: ENDPOINTS,
      load,
      buildMs: Math.round(buildMs),
      renderMs: Math.round(renderMs),
      bytes: rendered.bytes,
      lines: rendered.lines,
      fullFirst,
      fullRepeat,
      wholeTableRepeat,
      floorEmptyMs: Math.round(floorEmptyMs),
      floorPopulatedMs: Math.round(floorPopulatedMs),
      ratioFirst: Math.round((fullFirst.totalMs / floorEmptyMs) * 100) / 100,
      ratioRepeat: Math.round((fullRepeat.totalMs / floorPopulatedMs) * 100) / 100,
      ...(noflushFullMs !== undefined ? { noflushFullMs: Math.round(noflushFullMs) } : {}),
      partial,
      ...(latency ? { latency } : {}),
      foreignSurvived,
      syncPeakRssMB: syncPeak.rssMB,
      syncPeakHeapMB: syncPeak.heapMB,
      peakRssMB: peak.rssMB,
      peakHeapMB: peak.heapMB,
      restorePeakRssMB: Math.round((await readPeakKB(wrap.log)) / 1024),
    };
  } finally {
    mem.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

async function fullSync(proxier: IptablesProxier, state: ClusterState): Promise<FullSync> {
  const report = await proxier.sync(state);
  if (!report.full) throw new Error('expected a full sync');
  const d = report.details ?? {};
  return {
    totalMs: Math.round(report.durationMs),
    restoreMs: Number(d.restoreMs ?? NaN),
    listMs: Number(d.listMs ?? 0),
    mode: String(d.mode ?? '?'),
  };
}

/**
 * One endpoint of one Service changes, PARTIAL_SAMPLES times (a different Service each time; the state
 * is rebuilt with structural sharing). Each partial sync is followed by its floor: a bare
 * `iptables-restore --noflush` of the very input the sync wrote, into the same kernel state (it
 * re-flushes and rewrites the same chains). Medians, and the first sync's input size.
 */
async function partialSync(
  proxier: IptablesProxier,
  objects: Record<string, unknown>[],
  state: ClusterState,
  fullBytes: number,
): Promise<PartialSync> {
  const n = (objects.length - 1) / 2;
  const inputs: string[] = [];
  const unrecord = recordRestoreInputs(proxier.ipt, inputs);
  const ms: number[] = [];
  const restore: number[] = [];
  const floor: number[] = [];
  let first: { bytes: number; lines: number } | undefined;
  let current = state;
  const changed = [...objects];
  try {
    for (let k = 0; k < PARTIAL_SAMPLES; k++) {
      const i = (Math.floor(n / 2) + k * 31) % n;
      const [svc, slice] = serviceObjects(i, ENDPOINTS, k + 1);
      changed[1 + 2 * i] = svc!;
      changed[2 + 2 * i] = slice!;
      current = buildClusterState(
        changed.map((obj) => ({ obj })),
        current,
        BENCH_LIMITS,
      );
      inputs.length = 0;
      const report = await proxier.sync(current);
      if (report.full) throw new Error('expected a partial sync');
      first ??= { bytes: report.bytes, lines: report.lines };
      ms.push(report.durationMs);
      restore.push(Number(report.details?.restoreMs ?? NaN));
      floor.push(await timedRestore(inputs.at(-1)!, ['--noflush', '--counters']));
    }
  } finally {
    unrecord();
  }
  // And back, so later measurements start from the original state.
  await proxier.sync(
    buildClusterState(
      objects.map((obj) => ({ obj })),
      current,
      BENCH_LIMITS,
    ),
  );
  return {
    bytes: first!.bytes,
    lines: first!.lines,
    percentOfFull: Math.round((first!.bytes / fullBytes) * 10000) / 100,
    ms: Math.round(percentile(ms, 50)),
    restoreMs: Math.round(percentile(restore, 50)),
    floorMs: Math.round(percentile(floor, 50)),
    samples: PARTIAL_SAMPLES,
  };
}

/**
 * Event-to-rules latency: a manifest file is rewritten (one endpoint of one Service changes), the
 * ManifestSource sees it (fs.watch, 10 ms debounce), rebuilds the state, and the proxier's partial
 * sync returns once iptables-restore has.
 */
async function eventLatency(
  dir: string,
  n: number,
  proxier: IptablesProxier,
  changes: number,
): Promise<Latency> {
  const mdir = join(dir, 'manifests');
  await mkdir(mdir);
  const perFile = 100;
  const fileOf = (i: number): string =>
    join(mdir, `svc-${String(Math.floor(i / perFile)).padStart(4, '0')}.json`);
  const fileText = (f: number, changedIndex?: number, generation = 0): string => {
    const items: unknown[] = [];
    for (let i = f * perFile; i < Math.min(n, (f + 1) * perFile); i++) {
      items.push(...serviceObjects(i, ENDPOINTS, i === changedIndex ? generation : 0));
    }
    return JSON.stringify({ apiVersion: 'v1', kind: 'List', items });
  };
  await writeFile(join(mdir, '00-node.json'), JSON.stringify(nodeObject()));
  for (let f = 0; f * perFile < n; f++) await writeFile(fileOf(f * perFile), fileText(f));
  const source = new ManifestSource(mdir, { debounceMs: 10, pollMs: 60_000, limits: BENCH_LIMITS });
  await source.start();
  const initial = source.current();
  if (!initial) throw new Error('manifest source has no state');
  proxier.forceFullSync();
  await proxier.sync(initial);

  const latencies: number[] = [];
  const syncs: number[] = [];
  let waiting: ((s: ClusterState) => void) | undefined;
  const off = source.onChange((s) => waiting?.(s));
  try {
    for (let k = 0; k < changes; k++) {
      const i = (k * 97) % n;
      const got = new Promise<ClusterState>((resolve) => (waiting = resolve));
      const started = performance.now();
      await writeFile(fileOf(i), fileText(Math.floor(i / perFile), i, k + 1));
      const s = await got;
      if (process.env.SVCP_BENCH_DEBUG)
        process.stderr.write(`change ${k}: state after ${Math.round(performance.now() - started)} ms\n`);
      const report = await proxier.sync(s);
      const done = performance.now();
      if (report.full) throw new Error('expected partial syncs during the latency run');
      latencies.push(done - started);
      syncs.push(report.durationMs);
    }
  } finally {
    off();
    await source.stop();
  }
  return {
    changes,
    p50Ms: Math.round(percentile(latencies, 50)),
    p99Ms: Math.round(percentile(latencies, 99)),
    maxMs: Math.round(Math.max(...latencies)),
    syncP50Ms: Math.round(percentile(syncs, 50)),
  };
}

function table(results: SizeResult[]): string {
  const head = [
    'services',
    'build ms',
    'render ms',
    'MB',
    'lines',
    'full#1 ms',
    'floor#1',
    'ratio#1',
    'full#2 ms',
    '(restore)',
    'floor#2',
    'ratio#2',
    'whole-table#2 ms',
    'noflush ms',
    'RSS MB sync/all',
    'heap MB sync/all',
    'restore RSS MB',
    'foreign ok',
    'load',
  ];
  const rows = results.map((r) => [
    r.services,
    r.buildMs,
    r.renderMs,
    r1(r.bytes / 1048576),
    r.lines,
    r.fullFirst.totalMs,
    r.floorEmptyMs,
    r.ratioFirst,
    r.fullRepeat.totalMs,
    r.fullRepeat.restoreMs,
    r.floorPopulatedMs,
    r.ratioRepeat,
    r.wholeTableRepeat.totalMs,
    r.noflushFullMs ?? '-',
    `${r.syncPeakRssMB}/${r.peakRssMB}`,
    `${r.syncPeakHeapMB}/${r.peakHeapMB}`,
    r.restorePeakRssMB,
    r.foreignSurvived ? 'yes' : 'NO',
    r.load.join('/'),
  ]);
  const all = [head, ...rows].map((row) => row.map(String));
  const widths = head.map((_, c) => Math.max(...all.map((row) => row[c]!.length)));
  const lines = all.map((row) => row.map((cell, c) => cell.padStart(widths[c]!)).join('  '));
  const extra: string[] = [];
  for (const r of results) {
    if (r.partial) {
      extra.push(
        `${r.services}: one-endpoint change: ${r.partial.bytes} bytes (${r.partial.percentOfFull}% of full), ${r.partial.lines} lines; median of ${r.partial.samples}: ${r.partial.ms} ms (restore ${r.partial.restoreMs} ms; floor, a bare restore of the same input: ${r.partial.floorMs} ms)`,
      );
    }
    if (r.latency) {
      extra.push(
        `${r.services}: event-to-rules over ${r.latency.changes} manifest changes: p50 ${r.latency.p50Ms} ms, p99 ${r.latency.p99Ms} ms, max ${r.latency.maxMs} ms (sync p50 ${r.latency.syncP50Ms} ms)`,
      );
    }
  }
  return [lines.join('\n'), ...extra].join('\n');
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  if (args.child !== undefined) {
    printChildResult(await measureSize(args.child, args.latencyChanges, args.latencyAt));
    return;
  }
  const self = fileURLToPath(import.meta.url);
  const results: SizeResult[] = [];
  for (const n of args.sizes) {
    process.stderr.write(`bench: ${n} Services × ${ENDPOINTS} endpoints …\n`);
    const r = await runChild<SizeResult>(
      self,
      ['--child', String(n), '--changes', String(args.latencyChanges)],
      { what: `bench child for ${n}`, timeoutMs: 3_600_000 },
    );
    results.push(r);
    process.stderr.write(table([r]).split('\n').slice(1).join('\n') + '\n');
  }
  const machine = {
    date: new Date().toISOString(),
    node: process.version,
    cpus: (await import('node:os')).cpus().length,
    iptables: (await run(['iptables', '--version'])).stdout.trim(),
    kernel: (await run(['uname', '-r'])).stdout.trim(),
  };
  process.stdout.write(`\n${table(results)}\n`);
  await writeResults({ machine, results }, { out: args.out, prefix: '', who: 'bench' });
}

main().catch((err: unknown) => {
  process.stderr.write(`bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exitCode = 1;
});
