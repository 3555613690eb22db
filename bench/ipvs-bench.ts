import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { diffIpvs } from '../src/ipvs/diff.js';
import { diffIpsets, parseIpsetSave } from '../src/ipvs/ipset.js';
import { parseIpvsadmConnections, parseIpvsadmSave } from '../src/ipvs/ipvsadm.js';
import { planIpvs } from '../src/ipvs/plan.js';
import {
  DUMMY_DEVICE,
  IpvsProxier,
  ipvsPlanConfig,
  ipvsRulesConfig,
  type IpvsProxierConfig,
  type IpvsSyncReport,
} from '../src/ipvs/proxier.js';
import { renderIpvsRules } from '../src/ipvs/rules.js';
import { buildClusterState } from '../src/model/build.js';
import type { ClusterState } from '../src/model/types.js';
import { run } from '../src/util/exec.js';
import { parseIpAddressJson } from '../src/kernel/netif.js';
import { BENCH_LIMITS, BENCH_NODE, BENCH_NODE_IP, clusterObjects, serviceObjects } from './cluster.js';
import { lastJsonLine, printChildResult, writeResults } from './child.js';
import { MemoryPeak } from './memory.js';

/**
 * The IPVS part of `npm run bench`: svcplane's IPVS mode at 1k and 10k Services × 5 endpoints (the
 * clusters of bench/cluster.ts) on the IPVS kernel of User-mode Linux.
 *
 * On the host (`node dist/bench/ipvs-bench.js --sizes 1000,10000`) it boots one UML kernel per size
 * through scripts/uml-run.sh (a fresh kernel each: no state carried between sizes, memory figures the
 * size's own) and runs itself there with `--child N`; the child programs UML's own root network
 * namespace, which belongs to that kernel alone, and refuses to run anywhere else. The host side
 * records the host's load average around each size, prints a table and writes JSON.
 */

const ENDPOINTS = 5;
/** A dummy link carrying the node's address, so NodePort virtual servers have an address to listen on. */
const NODE_LINK = 'bench-eth0';
/** The floor's own network namespace inside UML (see measureChild). */
const FLOOR_NETNS = 'bench-floor';

interface Batch {
  lines: number;
  bytes: number;
}

interface SyncFigures {
  totalMs: number;
  /** The proxier's own phases (report details): ipsetMs includes node facts, plan, `ipset save`. */
  phases: Record<string, number>;
  /** What the sync wrote, by kind (computed from the same kernel state the sync met). */
  ipvsadm: Batch;
  ipset: Batch;
  iptables: Batch;
  bound: number;
  unbound: number;
}

interface ChildResult {
  services: number;
  endpointsPerService: number;
  umlLoad: number[];
  umlKernel: string;
  ipvsadmVersion: string;
  buildMs: number;
  planMs: number;
  renderMs: number;
  virtualServers: number;
  realServers: number;
  /** Full-sync batches into the empty kernel, as the pure code renders them. */
  full: { ipvsadm: Batch; ipset: Batch; iptables: Batch; bindAddresses: number; ipBatch: Batch };
  /** Kernel listings in the populated kernel (ms): what every sync reads before it writes. */
  reads: Record<string, number>;
  /**
   * The same full batches written by the bare tools into an empty kernel (a fresh netns: spawn, stdin
   * and `ip netns exec` included).
   */
  floor: { ipsetMs: number; ipBatchMs: number; ipvsadmMs: number; iptablesMs: number; totalMs: number };
  fullFirst: SyncFigures;
  fullRepeat: SyncFigures;
  partial: SyncFigures;
  /** What the kernel holds after the first full sync. */
  kernel: { virtualServers: number; realServers: number; addressesOnDummy: number; setMembers: number };
  peakRssMB: number;
  peakHeapMB: number;
  syncPeakRssMB: number;
}

interface SizeResult extends ChildResult {
  hostLoadBefore: number[];
  hostLoadAfter: number[];
  umlWallMs: number;
}

function parseArgs(argv: string[]): {
  sizes: number[];
  child?: number;
  out?: string;
  mem: string;
  timeoutS?: number;
} {
  let sizes = [1000, 10000];
  let child: number | undefined;
  let out: string | undefined;
  let mem = '4G';
  let timeoutS: number | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const v = argv[i + 1];
    if (a === '--sizes' && v) {
      sizes = v.split(',').map((s) => Number(s.replace(/k$/i, '000')));
      i++;
    } else if (a === '--child' && v) {
      child = Number(v);
      i++;
    } else if (a === '--out' && v) {
      out = v;
      i++;
    } else if (a === '--mem' && v) {
      mem = v;
      i++;
    } else if (a === '--timeout' && v) {
      timeoutS = Number(v);
      i++;
    } else {
      throw new Error(`ipvs-bench: unknown argument ${a}`);
    }
  }
  if (sizes.some((n) => !Number.isInteger(n) || n < 1)) throw new Error(`bad --sizes ${sizes.join(',')}`);
  return { sizes, child, out, mem, timeoutS };
}

const r1 = (x: number): number => Math.round(x * 10) / 10;
const batchOf = (text: string): Batch => ({
  lines: text === '' ? 0 : text.split('\n').length - (text.endsWith('\n') ? 1 : 0),
  bytes: Buffer.byteLength(text),
});
const linesOf = (lines: readonly string[]): string => (lines.length > 0 ? `${lines.join('\n')}\n` : '');

function proxierConfig(): IpvsProxierConfig {
  return {
    family: 'IPv4',
    nodeName: BENCH_NODE,
    masqueradeBit: 14,
    masqueradeAll: false,
    clusterCIDRs: ['10.128.0.0/9'],
    nodePortAddresses: [],
    scheduler: 'rr',
    strictARP: false,
    excludeCIDRs: [],
    tcpTimeout: 0,
    tcpFinTimeout: 0,
    udpTimeout: 0,
  };
}

const sh = (argv: readonly string[], input?: string) => run(argv, { input, timeoutMs: 1_800_000 });

async function timed(argv: readonly string[], input: string, netns?: string): Promise<number> {
  const t = performance.now();
  await run(argv, { input, netns, timeoutMs: 1_800_000 });
  return performance.now() - t;
}

/** How long the kernel listings a sync reads take in the populated kernel (ms). */
async function timeReads(): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const argv of [
    ['ip', '-j', 'address', 'show'],
    ['ipset', 'save'],
    ['ipvsadm', '-Sn'],
    ['ipvsadm', '-Ln'],
    ['iptables-save'],
  ]) {
    out[argv.join(' ')] = Math.round(await timed(argv, ''));
  }
  return out;
}

/** UML boots empty; this only makes sure (nothing here has deleted real servers yet: see the floor). */
async function emptyKernel(): Promise<void> {
  await sh(['ipvsadm', '-C']);
  for (const t of ['nat', 'filter', 'mangle']) {
    await sh(['iptables', '-w', '-t', t, '-F']);
    await sh(['iptables', '-w', '-t', t, '-X']);
  }
  await sh(['ipset', 'destroy']);
  await run(['ip', 'link', 'del', DUMMY_DEVICE], { allowFailure: true });
}

/**
 * What the proxier's next sync of `state` will write, from the pure code and the kernel's current
 * contents: read before the (timed) sync, compared with the sync's report afterwards.
 */
async function expectedBatches(
  config: IpvsProxierConfig,
  state: ClusterState,
  randomFully: boolean,
): Promise<{ ipvsadm: Batch; ipset: Batch; iptables: Batch }> {
  const addrs = parseIpAddressJson((await sh(['ip', '-j', 'address', 'show'])).stdout);
  const desired = planIpvs(state, ipvsPlanConfig(config, state, addrs), config.family);
  const [saved, listed, sets] = await Promise.all([
    sh(['ipvsadm', '-Sn']),
    sh(['ipvsadm', '-Ln']),
    sh(['ipset', 'save']),
  ]);
  const ipvs = diffIpvs(parseIpvsadmSave(saved.stdout), desired.services, {
    family: config.family,
    excludeCIDRs: config.excludeCIDRs,
    connections: parseIpvsadmConnections(listed.stdout),
  });
  return {
    ipvsadm: batchOf(linesOf(ipvs.lines)),
    ipset: batchOf(diffIpsets(parseIpsetSave(sets.stdout), desired.sets, config.family).input),
    iptables: batchOf(renderIpvsRules(desired, ipvsRulesConfig(config, randomFully))),
  };
}

async function measuredSync(
  proxier: IpvsProxier,
  config: IpvsProxierConfig,
  state: ClusterState,
  randomFully: boolean,
): Promise<SyncFigures> {
  const want = await expectedBatches(config, state, randomFully);
  const report: IpvsSyncReport = await proxier.sync(state);
  const d = report.details ?? {};
  const num = (k: string): number => Number(d[k] ?? NaN);
  // The report counts what it wrote; a mismatch means the bench measured something else.
  if (num('ipvsLines') !== want.ipvsadm.lines) {
    throw new Error(`ipvsadm lines: report ${num('ipvsLines')}, expected ${want.ipvsadm.lines}`);
  }
  const ipsetChanges = num('ipsetAdded') + num('ipsetDeleted');
  if (ipsetChanges > want.ipset.lines) {
    throw new Error(`ipset members changed: report ${ipsetChanges}, expected at most ${want.ipset.lines}`);
  }
  const phases: Record<string, number> = {};
  for (const [k, v] of Object.entries(d)) if (k.endsWith('Ms')) phases[k] = Number(v);
  // The first sync's iptables input also carries the jumps and canaries (report.bytes is that input);
  // a sync whose rules and chains are unchanged writes none.
  const iptables =
    d.iptablesUnchanged === true
      ? { lines: 0, bytes: 0 }
      : { lines: want.iptables.lines, bytes: report.bytes };
  return {
    totalMs: Math.round(report.durationMs),
    phases,
    ipvsadm: want.ipvsadm,
    ipset: want.ipset,
    iptables,
    bound: num('bound'),
    unbound: num('unbound'),
  };
}

async function kernelCounts(): Promise<ChildResult['kernel']> {
  const saved = (await sh(['ipvsadm', '-Sn'])).stdout;
  const addrs = (await sh(['ip', '-o', 'address', 'show', 'dev', DUMMY_DEVICE])).stdout;
  const sets = (await sh(['ipset', 'save'])).stdout;
  const count = (text: string, re: RegExp): number => text.split('\n').filter((l) => re.test(l)).length;
  return {
    virtualServers: count(saved, /^-A /),
    realServers: count(saved, /^-a /),
    addressesOnDummy: count(addrs, / inet /),
    setMembers: count(sets, /^add /),
  };
}

async function measureChild(n: number): Promise<ChildResult> {
  if (process.env.SVCPLANE_IN_UML !== '1') {
    throw new Error('ipvs-bench --child programs the kernel: it runs only inside User-mode Linux');
  }
  const mem = new MemoryPeak();
  try {
    const umlLoad = loadavg().map(r1);
    await emptyKernel();
    await sh(
      ['ip', '-batch', '-'],
      `link add ${NODE_LINK} type dummy\naddress add ${BENCH_NODE_IP}/24 dev ${NODE_LINK}\nlink set ${NODE_LINK} up\n`,
    );

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

    const config = proxierConfig();
    const proxier = new IpvsProxier(config);
    await proxier.setup();
    const randomFully = await proxier.ipt.supportsRandomFully();

    // The pure parts alone, and the full batches they give for an empty kernel.
    const addrs = parseIpAddressJson((await sh(['ip', '-j', 'address', 'show'])).stdout);
    t = performance.now();
    const desired = planIpvs(state, ipvsPlanConfig(config, state, addrs), config.family);
    const planMs = performance.now() - t;
    t = performance.now();
    const rules = renderIpvsRules(desired, ipvsRulesConfig(config, randomFully));
    const ipvsInput = linesOf(
      diffIpvs(new Map(), desired.services, { family: 'IPv4', excludeCIDRs: [], connections: new Map() })
        .lines,
    );
    const ipsetInput = diffIpsets(new Map(), desired.sets, config.family).input;
    const renderMs = performance.now() - t;
    const bindInput = linesOf(desired.bindAddresses.map((ip) => `address add ${ip}/32 dev ${DUMMY_DEVICE}`));
    let realServers = 0;
    for (const s of desired.services.values()) realServers += s.reals.length;

    const fullFirst = await measuredSync(proxier, config, state, randomFully);
    const kernel = await kernelCounts();
    if (kernel.virtualServers !== desired.services.size || kernel.realServers !== realServers) {
      throw new Error(
        `kernel holds ${JSON.stringify(kernel)}, planned ${desired.services.size} / ${realServers}`,
      );
    }
    if (kernel.addressesOnDummy !== desired.bindAddresses.length) {
      throw new Error(
        `${kernel.addressesOnDummy} addresses on ${DUMMY_DEVICE}, planned ${desired.bindAddresses.length}`,
      );
    }
    proxier.forceFullSync();
    const fullRepeat = await measuredSync(proxier, config, state, randomFully);
    const syncPeak = mem.peak();

    // One endpoint of one Service moves (state rebuilt with structural sharing, as a source does).
    const i = Math.floor(n / 2);
    const changed = [...objects];
    const [svc, slice] = serviceObjects(i, ENDPOINTS, 1);
    changed[1 + 2 * i] = svc!;
    changed[2 + 2 * i] = slice!;
    const next = buildClusterState(
      changed.map((obj) => ({ obj })),
      state,
      BENCH_LIMITS,
    );
    const partial = await measuredSync(proxier, config, next, randomFully);
    proxier.stop();
    await proxier.idle();
    const reads = await timeReads();

    // Floor: the same full batches through the bare tools, in the proxier's order, into an empty
    // kernel. A fresh network namespace, not the emptied root one: IPVS keeps deleted real servers in
    // a per-namespace trash for a while and every real-server add walks that list (`ipvsadm -R` after
    // `ipvsadm -C` of the same table took 147 s instead of 30 s at 10k).
    await sh(['ip', 'netns', 'add', FLOOR_NETNS]);
    const inFloor = (argv: readonly string[], input: string): Promise<number> =>
      timed(argv, input, FLOOR_NETNS);
    await run(['ip', 'link', 'add', DUMMY_DEVICE, 'type', 'dummy'], { netns: FLOOR_NETNS });
    const ipsetMs = await inFloor(['ipset', 'restore', '-exist'], ipsetInput);
    const ipBatchMs = await inFloor(['ip', '-batch', '-'], bindInput);
    const ipvsadmMs = await inFloor(['ipvsadm', '-R'], ipvsInput);
    const iptablesMs = await inFloor(['iptables-restore', '-w', '5', '--noflush'], rules);
    const peak = mem.stop();
    return {
      services: n,
      endpointsPerService: ENDPOINTS,
      umlLoad,
      umlKernel: (await sh(['uname', '-r'])).stdout.trim(),
      ipvsadmVersion: (await sh(['ipvsadm', '--version'])).stdout.trim(),
      buildMs: Math.round(buildMs),
      planMs: Math.round(planMs),
      renderMs: Math.round(renderMs),
      virtualServers: desired.services.size,
      realServers,
      full: {
        ipvsadm: batchOf(ipvsInput),
        ipset: batchOf(ipsetInput),
        iptables: batchOf(rules),
        bindAddresses: desired.bindAddresses.length,
        ipBatch: batchOf(bindInput),
      },
      floor: {
        ipsetMs: Math.round(ipsetMs),
        ipBatchMs: Math.round(ipBatchMs),
        ipvsadmMs: Math.round(ipvsadmMs),
        iptablesMs: Math.round(iptablesMs),
        totalMs: Math.round(ipsetMs + ipBatchMs + ipvsadmMs + iptablesMs),
      },
      fullFirst,
      fullRepeat,
      partial,
      kernel,
      reads,
      peakRssMB: peak.rssMB,
      peakHeapMB: peak.heapMB,
      syncPeakRssMB: syncPeak.rssMB,
    };
  } finally {
    mem.stop();
  }
}

const kb = (b: number): string => (b >= 1048576 ? `${r1(b / 1048576)} MB` : `${r1(b / 1024)} KB`);

function table(results: SizeResult[]): string {
  const head = [
    'services',
    'VS',
    'reals',
    'ipvsadm -R',
    'ipset',
    'iptables',
    'addrs',
    'full#1 ms',
    'floor ms',
    'ratio',
    'full#2 ms',
    '1-change ms',
    '1-change lines (ipvsadm/ipset/ipt)',
    'RSS MB',
    'heap MB',
    'host load',
  ];
  const rows = results.map((r) => [
    r.services,
    r.virtualServers,
    r.realServers,
    `${r.full.ipvsadm.lines} l / ${kb(r.full.ipvsadm.bytes)}`,
    `${r.full.ipset.lines} l / ${kb(r.full.ipset.bytes)}`,
    `${r.full.iptables.lines} l`,
    r.full.bindAddresses,
    r.fullFirst.totalMs,
    r.floor.totalMs,
    r.floor.totalMs > 0 ? Math.round((r.fullFirst.totalMs / r.floor.totalMs) * 100) / 100 : '-',
    r.fullRepeat.totalMs,
    r.partial.totalMs,
    `${r.partial.ipvsadm.lines}/${r.partial.ipset.lines}/${r.partial.iptables.lines}`,
    r.peakRssMB,
    r.peakHeapMB,
    r.hostLoadBefore.join('/'),
  ]);
  const all = [head, ...rows].map((row) => row.map(String));
  const widths = head.map((_, c) => Math.max(...all.map((row) => row[c]!.length)));
  const lines = all.map((row) => row.map((cell, c) => cell.padStart(widths[c]!)).join('  '));
  const phases = (f: SyncFigures): string =>
    Object.entries(f.phases)
      .map(([k, v]) => `${k.replace(/Ms$/, '')} ${v}`)
      .join(', ');
  const extra = results.flatMap((r) => [
    `${r.services}: build ${r.buildMs} ms, plan ${r.planMs} ms, render ${r.renderMs} ms; floor: ipset ${r.floor.ipsetMs}, ip -batch ${r.floor.ipBatchMs}, ipvsadm -R ${r.floor.ipvsadmMs}, iptables-restore ${r.floor.iptablesMs} ms`,
    `${r.services}: full#1 phases: ${phases(r.fullFirst)}; full#2: ${phases(r.fullRepeat)} (wrote ${r.fullRepeat.ipvsadm.lines} ipvsadm, ${r.fullRepeat.ipset.lines} ipset lines, bound ${r.fullRepeat.bound})`,
    `${r.services}: reads in the populated kernel: ${Object.entries(r.reads)
      .map(([k, v]) => `${k} ${v}`)
      .join(', ')} ms`,
    `${r.services}: one-endpoint change: ipvsadm ${r.partial.ipvsadm.lines} lines / ${r.partial.ipvsadm.bytes} B, ipset ${r.partial.ipset.lines}, iptables ${r.partial.iptables.lines} lines / ${r.partial.iptables.bytes} B, bound ${r.partial.bound}; ${phases(r.partial)}`,
  ]);
  return [lines.join('\n'), ...extra].join('\n');
}

/** Host side: one UML boot per size. */
async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  if (args.child !== undefined) {
    printChildResult(await measureChild(args.child));
    return;
  }
  const self = fileURLToPath(import.meta.url);
  const root = join(self, '..', '..', '..');
  const results: SizeResult[] = [];
  for (const n of args.sizes) {
    // UML has one CPU and slow process start-up; a 10k-Service run takes minutes.
    const timeoutS = args.timeoutS ?? Math.max(600, Math.ceil(n * 0.15));
    process.stderr.write(
      `ipvs-bench: ${n} Services × ${ENDPOINTS} endpoints in User-mode Linux (--mem ${args.mem}) …\n`,
    );
    const hostLoadBefore = loadavg().map(r1);
    const started = performance.now();
    const res = await run(
      [
        'bash',
        join(root, 'scripts', 'uml-run.sh'),
        '--mem',
        args.mem,
        '--timeout',
        String(timeoutS),
        '--cwd',
        root,
        '--',
        'node',
        join('dist', 'bench', 'ipvs-bench.js'),
        '--child',
        String(n),
      ],
      { timeoutMs: (timeoutS + 180) * 1000, allowFailure: true },
    );
    const umlWallMs = Math.round(performance.now() - started);
    if (res.exitCode !== 0) {
      throw new Error(
        `IPVS bench for ${n} failed in UML (exit ${res.exitCode}):\n${res.stdout}\n${res.stderr}`,
      );
    }
    const r: SizeResult = {
      ...lastJsonLine<ChildResult>(res.stdout),
      hostLoadBefore,
      hostLoadAfter: loadavg().map(r1),
      umlWallMs,
    };
    results.push(r);
    process.stderr.write(table([r]).split('\n').slice(1).join('\n') + '\n');
  }
  const machine = {
    date: new Date().toISOString(),
    node: process.version,
    cpus: cpus().length,
    hostKernel: (await run(['uname', '-r'])).stdout.trim(),
    umlKernel: results[0]?.umlKernel,
    ipvsadm: results[0]?.ipvsadmVersion,
    umlMem: args.mem,
  };
  process.stdout.write(`\nIPVS (User-mode Linux)\n${table(results)}\n`);
  await writeResults({ machine, results }, { out: args.out, prefix: 'ipvs-', who: 'ipvs-bench', root });
}

main().catch((err: unknown) => {
  process.stderr.write(
    `ipvs-bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
  );
  process.exitCode = 1;
});
