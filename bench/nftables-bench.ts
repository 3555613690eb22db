import { appendFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { buildClusterState } from '../src/model/build.js';
import type { ClusterState } from '../src/model/types.js';
import { Nft } from '../src/nftables/nft.js';
import { NftablesProxier } from '../src/nftables/proxier.js';
import { run } from '../src/util/exec.js';
import { BENCH_LIMITS, BENCH_NODE, clusterObjects, serviceObjects } from './cluster.js';
import { printChildResult, runChild, writeResults } from './child.js';
import { MemoryPeak } from './memory.js';

/**
 * `npm run bench` (nftables part): svcplane's nftables mode at 1k–30k Services × 5 endpoints on the
 * real kernel of a private network namespace (scripts/bench.sh runs this under `unshare -n`), each
 * size in a child process of its own (its peak RSS is its own). Per size: a full sync into an empty
 * kernel and into the populated one, each against its floor (a bare `nft -f` of the very same
 * transaction into the same kernel state); at --latency-at (10k): one-endpoint changes, change to
 * rules (the state rebuilt with structural sharing, then the partial sync), p50 and max, each against
 * its floor (the same partial input replayed bare), and the bytes written per change. Every size runs
 * once per nft of --nft-binaries (the floor uses the same nft). See docs/performance.md.
 */

const ENDPOINTS = 5;

interface Args {
  sizes: number[];
  /** nft commands to measure, each at every size (the floor uses the same one). */
  binaries: string[];
  child?: number;
  changes: number;
  latencyAt: number;
  /** Sizes above this one skip the repeated full sync and its floor (30k: minutes each). */
  repeatUpTo: number;
  /** The proxier's fullSyncPartLines (undefined: its default). */
  partLines?: number;
  out?: string;
}

function parseArgs(argv: string[]): Args {
  const args: Args = {
    sizes: [1000, 10000],
    binaries: ['nft'],
    changes: 50,
    latencyAt: 10000,
    repeatUpTo: Infinity,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const v = argv[i + 1];
    const num = (s: string): number => Number(s.replace(/k$/i, '000'));
    if (a === '--sizes' && v) args.sizes = v.split(',').map(num);
    else if (a === '--child' && v) args.child = num(v);
    else if ((a === '--nft-binaries' || a === '--nft') && v) args.binaries = v.split(',');
    else if (a === '--changes' && v) args.changes = num(v);
    else if (a === '--latency-at' && v) args.latencyAt = num(v);
    else if (a === '--repeat-up-to' && v) args.repeatUpTo = num(v);
    else if (a === '--part-lines' && v) args.partLines = num(v);
    else if (a === '--out' && v) args.out = v;
    else continue;
    i++;
  }
  return args;
}

interface SizeResult {
  services: number;
  nft: string;
  endpointsPerService: number;
  load: number[];
  buildMs: number;
  bytes: number;
  lines: number;
  /** nft transactions of one full sync. */
  transactions: number;
  fullFirstMs: number;
  fullFirstNftMs: number;
  floorFirstMs: number;
  fullRepeatMs: number;
  fullRepeatNftMs: number;
  floorRepeatMs: number;
  /** nft's own peak RSS (the largest of one full sync's transactions, replayed as the floor#1). */
  nftPeakRssMB: number;
  change?: {
    samples: number;
    p50Ms: number;
    maxMs: number;
    syncP50Ms: number;
    nftP50Ms: number;
    /** The same partial input replayed by a bare `nft -f` right after each change (p50, max). */
    floorP50Ms: number;
    floorMaxMs: number;
    bytes: number;
    percentOfFull: number;
    lines: number;
  };
  peakRssMB: number;
  peakHeapMB: number;
}

const percentile = (xs: number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? NaN;
};

/** A size's phases as they finish, to BENCH_PROGRESS (a size at 30k runs for many minutes). */
function progress(line: string): void {
  const file = process.env.BENCH_PROGRESS;
  if (file) appendFileSync(file, `${new Date().toISOString()} ${line}\n`);
}

async function timedNft(binary: string, input: string): Promise<number> {
  const started = performance.now();
  await run([binary, '-f', '-'], { input, timeoutMs: 1_800_000 });
  return performance.now() - started;
}

/**
 * The floor of one sync: a bare `nft -f FILE` of each of its transactions, in order (as the proxier
 * committed them). Also nft's own peak RSS (GNU time's %M, KB) over them.
 */
async function timedNftFiles(
  binary: string,
  files: readonly string[],
): Promise<{ ms: number; rssMB: number }> {
  let ms = 0;
  let rssKB = 0;
  for (const file of files) {
    const started = performance.now();
    const r = await run(['/usr/bin/time', '-f', 'maxrss %M', binary, '-f', file], { timeoutMs: 1_800_000 });
    ms += performance.now() - started;
    rssKB = Math.max(rssKB, Number(/maxrss (\d+)/.exec(r.stderr)?.[1] ?? NaN));
  }
  return { ms, rssMB: Math.round(rssKB / 1024) };
}

async function measureSize(
  n: number,
  binary: string,
  changes: number,
  latencyAt: number,
  repeatUpTo: number,
  partLines: number | undefined,
): Promise<SizeResult> {
  const mem = new MemoryPeak();
  const objects = clusterObjects({ services: n, endpointsPerService: ENDPOINTS });
  let t = performance.now();
  let state: ClusterState = buildClusterState(
    objects.map((obj) => ({ obj })),
    undefined,
    BENCH_LIMITS,
  );
  const buildMs = Math.round(performance.now() - t);
  const proxier = new NftablesProxier({
    family: 'IPv4',
    nodeName: BENCH_NODE,
    masqueradeBit: 14,
    masqueradeAll: false,
    detectLocalMode: 'ClusterCIDR',
    clusterCIDRs: ['10.128.0.0/9'],
    nodePortAddresses: [],
    nftBinary: binary,
    ...(partLines !== undefined ? { fullSyncPartLines: partLines } : {}),
  });
  await proxier.setup();
  // Capture what the proxier hands to nft, to replay it bare as the floor: a full sync's
  // transactions to files (not held here: the child's RSS stays the proxier's), a partial's text.
  const dir = mkdtempSync(join(tmpdir(), 'svcplane-nft-bench-'));
  let inputs: string[] = [];
  let written = 0;
  const realApply = proxier.nft.apply.bind(proxier.nft);
  let partialInput = '';
  proxier.nft.apply = (lines, what) => {
    if (what === 'nftables partial sync') partialInput = lines.join('\n') + '\n';
    else {
      const file = join(dir, `tx-${written++}.nft`);
      writeFileSync(file, lines.join('\n') + '\n');
      inputs.push(file);
    }
    return realApply(lines, what);
  };
  const clean = new Nft({ family: 'IPv4', binary });
  const dropTable = (): Promise<unknown> =>
    clean.apply(['add table ip kube-proxy', 'delete table ip kube-proxy'], 'bench cleanup');

  await dropTable();
  const first = await proxier.sync(state);
  const transactions = Number(first.details?.transactions ?? NaN);
  progress(`${n} ${binary}: full#1 ${Math.round(first.durationMs)} ms (${transactions} transactions)`);
  const fullInput = inputs;
  inputs = [];
  await dropTable();
  const floorFirst = await timedNftFiles(binary, fullInput);
  const floorFirstMs = Math.round(floorFirst.ms);
  progress(`${n} ${binary}: floor#1 ${floorFirstMs} ms, nft peak RSS ${floorFirst.rssMB} MB`);
  // Populated: the proxier's own full sync again (its input recreates nothing now), then the floor.
  let repeat: { durationMs: number; details?: Record<string, unknown> } = { durationMs: NaN };
  let floorRepeatMs = NaN;
  if (n <= repeatUpTo) {
    proxier.forceFullSync();
    repeat = await proxier.sync(state);
    floorRepeatMs = Math.round((await timedNftFiles(binary, inputs)).ms);
    inputs = [];
    progress(`${n} ${binary}: full#2 ${Math.round(repeat.durationMs)} ms, floor#2 ${floorRepeatMs} ms`);
  }

  let change: SizeResult['change'];
  if (n === latencyAt && changes > 0) {
    const changed = [...objects];
    const total: number[] = [];
    const syncs: number[] = [];
    const nfts: number[] = [];
    const floors: number[] = [];
    let firstChange: { bytes: number; lines: number } | undefined;
    // A partial sync first (the floor replays left the kernel as the proxier wrote it).
    proxier.forceFullSync();
    await proxier.sync(state);
    for (let k = 0; k < changes; k++) {
      const i = (Math.floor(n / 2) + k * 97) % n;
      const [svc, slice] = serviceObjects(i, ENDPOINTS, k + 1);
      changed[1 + 2 * i] = svc!;
      changed[2 + 2 * i] = slice!;
      t = performance.now();
      state = buildClusterState(
        changed.map((obj) => ({ obj })),
        state,
        BENCH_LIMITS,
      );
      const report = await proxier.sync(state);
      total.push(performance.now() - t);
      if (report.full) throw new Error('expected a partial sync');
      firstChange ??= { bytes: report.bytes, lines: report.lines };
      syncs.push(report.durationMs);
      nfts.push(Number(report.details?.nftMs ?? NaN));
      // Its floor: the very input it wrote, replayed bare (chains re-added and flushed, rules and
      // elements added again: the same work). Skipped when it deletes something (not replayable).
      if (!/^delete /m.test(partialInput)) floors.push(await timedNft(binary, partialInput));
    }
    change = {
      samples: changes,
      p50Ms: Math.round(percentile(total, 50)),
      maxMs: Math.round(Math.max(...total)),
      syncP50Ms: Math.round(percentile(syncs, 50)),
      nftP50Ms: Math.round(percentile(nfts, 50)),
      floorP50Ms: Math.round(percentile(floors, 50)),
      floorMaxMs: Math.round(Math.max(...floors)),
      bytes: firstChange!.bytes,
      lines: firstChange!.lines,
      percentOfFull: Math.round((firstChange!.bytes / first.bytes) * 10000) / 100,
    };
  }
  const peak = mem.stop();
  await dropTable();
  rmSync(dir, { recursive: true, force: true });
  return {
    services: n,
    nft: (await run([binary, '--version'])).stdout.trim(),
    endpointsPerService: ENDPOINTS,
    load: loadavg().map((x) => Math.round(x * 100) / 100),
    buildMs,
    bytes: first.bytes,
    lines: first.lines,
    transactions,
    fullFirstMs: Math.round(first.durationMs),
    fullFirstNftMs: Number(first.details?.nftMs ?? NaN),
    floorFirstMs,
    fullRepeatMs: Math.round(repeat.durationMs),
    fullRepeatNftMs: Number(repeat.details?.nftMs ?? NaN),
    floorRepeatMs,
    nftPeakRssMB: floorFirst.rssMB,
    ...(change ? { change } : {}),
    peakRssMB: peak.rssMB,
    peakHeapMB: peak.heapMB,
  };
}

function table(results: SizeResult[]): string {
  const head = [
    'nft',
    'services',
    'build ms',
    'MB',
    'lines',
    'tx',
    'full#1 ms',
    '(nft)',
    'floor#1',
    'full#2 ms',
    '(nft)',
    'floor#2',
    'RSS MB',
    'heap MB',
    'nft RSS',
    'load',
  ];
  const rows = results.map((r) => [
    /v[\d.]+/.exec(r.nft)?.[0] ?? r.nft,
    r.services,
    r.buildMs,
    Math.round((r.bytes / 1048576) * 10) / 10,
    r.lines,
    r.transactions,
    r.fullFirstMs,
    r.fullFirstNftMs,
    r.floorFirstMs,
    r.fullRepeatMs,
    r.fullRepeatNftMs,
    r.floorRepeatMs,
    r.peakRssMB,
    r.peakHeapMB,
    r.nftPeakRssMB,
    r.load.join('/'),
  ]);
  const all = [head, ...rows].map((row) => row.map(String));
  const widths = head.map((_, c) => Math.max(...all.map((row) => row[c]!.length)));
  const lines = all.map((row) => row.map((cell, c) => cell.padStart(widths[c]!)).join('  '));
  for (const r of results) {
    if (r.change) {
      const c = r.change;
      lines.push(
        `${r.nft}, ${r.services}: one-endpoint change over ${c.samples} changes: change-to-rules p50 ${c.p50Ms} ms, max ${c.maxMs} ms (sync p50 ${c.syncP50Ms} ms, nft ${c.nftP50Ms} ms; floor p50 ${c.floorP50Ms} ms, max ${c.floorMaxMs} ms); ${c.bytes} bytes, ${c.lines} lines (${c.percentOfFull}% of a full sync)`,
      );
    }
  }
  return lines.join('\n');
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  if (args.child !== undefined) {
    printChildResult(
      await measureSize(
        args.child,
        args.binaries[0]!,
        args.changes,
        args.latencyAt,
        args.repeatUpTo,
        args.partLines,
      ),
    );
    return;
  }
  const self = fileURLToPath(import.meta.url);
  const results: SizeResult[] = [];
  for (const n of args.sizes) {
    for (const binary of args.binaries) {
      process.stderr.write(`bench (nftables): ${n} Services × ${ENDPOINTS} endpoints, ${binary} …\n`);
      const r = await runChild<SizeResult>(
        self,
        [
          '--child',
          String(n),
          '--nft',
          binary,
          '--changes',
          String(args.changes),
          '--latency-at',
          String(args.latencyAt),
          '--repeat-up-to',
          String(args.repeatUpTo),
          ...(args.partLines !== undefined ? ['--part-lines', String(args.partLines)] : []),
        ],
        { what: `bench child for ${n}`, timeoutMs: 3 * 3_600_000 },
      );
      results.push(r);
      process.stderr.write(table([r]).split('\n').slice(1).join('\n') + '\n');
    }
  }
  const machine = {
    date: new Date().toISOString(),
    node: process.version,
    cpus: (await import('node:os')).cpus().length,
    nft: await Promise.all(
      args.binaries.map(async (b) => `${b}: ${(await run([b, '--version'])).stdout.trim()}`),
    ),
    kernel: (await run(['uname', '-r'])).stdout.trim(),
  };
  process.stdout.write(`\nnftables mode:\n${table(results)}\n`);
  await writeResults({ machine, results }, { out: args.out, prefix: 'nftables-', who: 'bench' });
}

main().catch((err: unknown) => {
  process.stderr.write(`bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  // Exit now: a child's memory sampler (an interval) would otherwise keep it alive, and the parent
  // waiting on it, forever.
  process.exit(1);
});
