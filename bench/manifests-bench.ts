import {
  chmod,
  copyFile,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  realpath,
  rename,
  rm,
  symlink,
  writeFile,
} from 'node:fs/promises';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { ManifestSource } from '../src/kube/manifests.js';
import { packageRoot } from '../src/util/paths.js';
import { run, startProcess, type ChildHandle } from '../src/util/exec.js';
import { BENCH_LIMITS, BENCH_NODE } from './cluster.js';
import { printChildResult, runChild, writeResults } from './child.js';
import { LAYOUTS, writeManifestDir, type Layout, type ManifestDir } from './layouts.js';

/**
 * The embedded default at scale (issue 14): svcplane as users run it on a manifest directory, in both
 * layouts (bench/layouts.ts: 100 Services per JSON List file; one YAML file per Service), at 1k and
 * 10k Services × 5 endpoints. Every svcplane and iptables process runs in a private, empty network
 * namespace (`unshare -n`, gone with the process). Per layout and size:
 * - load: ManifestSource.start() in a fresh process (read, parse, validate), and its peak RSS;
 * - sync: `svcplane sync --manifests DIR` wall time and VmHWM, in the default full-sync mode and
 *   with --iptables-full-sync-mode=whole-table, each against its floor: a bare whole-table
 *   `iptables-restore --counters` of the very input svcplane renders (captured once through a
 *   wrapper), into an empty kernel; runs alternate, medians reported;
 * - daemon: `svcplane run --iptables-min-sync-period=0s`; CPU of the process over `--idle-ms` from
 *   10 s after convergence (default 90 s: three 30 s sync periods, so every window holds the same
 *   number of periodic syncs and drift checks; 31 s windows varied 1.7-3.3% with what they held),
 *   its main thread's share, and its children's, the running ones (`nft monitor`) included; then
 *   `--changes` one-endpoint changes, each an atomic rename of the Service's file (a hidden
 *   temporary file renamed over it). Event-to-rules: from just before that rename() to the moment
 *   this process reads the daemon's `synced` line, which the daemon logs once iptables-restore has
 *   exited (its commit is in the kernel): the watch event, the read and parse of the one file, the
 *   state build, the controller, the render, the spawn of iptables-restore from the daemon, its run,
 *   and the line through the pipe. The daemon runs the real iptables binary meanwhile (a copy of
 *   it, by its multi-call name; nothing of the bench's in front of it). Its floor: `--changes` more
 *   changes of the same kind (other Services), untimed, with a recorder in front of iptables-restore
 *   (a shell and `tee`) keeping each partial input; each is then replayed into the daemon's kernel
 *   as a bare `nsenter --net=… iptables-restore --noflush --counters` started from this (small)
 *   process, timed from its spawn to its exit; p50 / floor is the ratio of the medians. Then the
 *   daemon's VmHWM.
 *
 *   node dist/bench/manifests-bench.js [--sizes 1000,10000] [--layouts list-json,file-yaml]
 *     [--runs 3] [--changes 30] [--idle-ms 90000] [--out FILE]
 */

const ENDPOINTS = 5;

interface Args {
  sizes: number[];
  layouts: Layout[];
  runs: number;
  changes: number;
  idleMs: number;
  out?: string;
  load?: string;
}

function parseArgs(argv: string[]): Args {
  const a: Args = { sizes: [1000, 10000], layouts: [...LAYOUTS], runs: 3, changes: 30, idleMs: 90_000 };
  for (let i = 0; i < argv.length; i++) {
    const v = argv[i + 1];
    switch (argv[i]) {
      case '--sizes':
        a.sizes = (v ?? '').split(',').map((s) => Number(s.replace(/k$/i, '000')));
        i++;
        break;
      case '--layouts':
        a.layouts = (v ?? '').split(',') as Layout[];
        i++;
        break;
      case '--runs':
        a.runs = Number(v);
        i++;
        break;
      case '--changes':
        a.changes = Number(v);
        i++;
        break;
      case '--idle-ms':
        a.idleMs = Number(v);
        i++;
        break;
      case '--out':
        a.out = v;
        i++;
        break;
      case '--load':
        a.load = v;
        i++;
        break;
    }
  }
  if (a.sizes.some((n) => !Number.isInteger(n) || n < 1)) throw new Error(`bad --sizes`);
  if (a.layouts.some((l) => !LAYOUTS.includes(l))) throw new Error(`--layouts: ${LAYOUTS.join(', ')}`);
  return a;
}

const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((x, y) => x - y);
  return s.length === 0
    ? NaN
    : s.length % 2
      ? s[(s.length - 1) / 2]!
      : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const percentile = (xs: readonly number[], p: number): number => {
  const s = [...xs].sort((x, y) => x - y);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))] ?? NaN;
};
const r0 = (x: number): number => Math.round(x);
const r2 = (x: number): number => Math.round(x * 100) / 100;

const SVCPLANE = (): string => join(packageRoot(), 'bin', 'svcplane.js');

function proxyArgs(dir: string): string[] {
  return [
    '--manifests',
    dir,
    '--hostname-override',
    BENCH_NODE,
    '--ip-families',
    'IPv4',
    '--cluster-cidr',
    '10.128.0.0/9',
    `--service-node-port-range=${BENCH_LIMITS.nodePortRange.first}-${BENCH_LIMITS.nodePortRange.last}`,
  ];
}

/**
 * iptables binaries for svcplane's `--iptables-binary` (`iptables`): a stand-in for iptables-nft's
 * multi-call binary that is either the real one (a copy) or a recorder that keeps a copy of every
 * restore input in `dir/inputs` (full-N.txt, partial-N.txt). `record(on)` swaps the two (an atomic
 * rename over the file the links point to; the daemon resolves it at every spawn).
 */
async function recordingBinaries(
  dir: string,
  opts: { record: boolean },
): Promise<{ iptables: string; record: (on: boolean) => Promise<void> }> {
  const bin = join(dir, 'bin');
  const named = join(dir, 'named');
  await mkdir(join(dir, 'inputs'), { recursive: true });
  await mkdir(bin);
  await mkdir(named);
  // By the multi-call binary's name, so the daemon names its commits through it
  // (src/iptables/commit-name.ts). Run under svcplane's process name (argv[0] that name, argv[1] the
  // tool), the recorder runs the real binary under the same name (a link of that name): the kernel
  // reports the commits as svcplane's own, and the daemon's kernel watch stays armed as without it.
  const real = await realpath((await run(['sh', '-c', 'command -v iptables-restore'])).stdout.trim());
  // Bash builtins only ($0's name, EPOCHREALTIME): a `basename` and a `date` fork per restore added
  // ~5-10 ms under load (tee is still one process, and bash's start: never in a timed path).
  const recorder = `#!/bin/bash
self=\${0##*/}
case $self in
  iptables | iptables-restore | iptables-save) tool=$self run=${real} ;;
  *) tool=$1 run=${named}/$self; shift; [[ -e $run ]] || ln -sf ${real} "$run" ;;
esac
if [[ $tool == *-restore ]]; then
  case " $* " in *" --noflush "*) kind=partial ;; *) kind=full ;; esac
  exec "$run" "$tool" "$@" < <(tee "${join(dir, 'inputs')}/$kind-\${EPOCHREALTIME/./}.txt")
fi
exec "$run" "$tool" "$@"
`;
  const multi = join(bin, 'xtables-nft-multi');
  const record = async (on: boolean): Promise<void> => {
    const next = join(bin, '.next');
    if (on) await writeFile(next, recorder);
    else await copyFile(real, next);
    await chmod(next, 0o755);
    await rename(next, multi);
  };
  await record(opts.record);
  for (const f of ['iptables-restore', 'iptables', 'iptables-save'])
    await symlink('xtables-nft-multi', join(bin, f));
  return { iptables: join(bin, 'iptables'), record };
}

async function inputs(dir: string, kind: 'full' | 'partial'): Promise<string[]> {
  const names = (await readdir(join(dir, 'inputs'))).filter((n) => n.startsWith(`${kind}-`)).sort();
  return names.map((n) => join(dir, 'inputs', n));
}

/**
 * Wall ms of a command; `input` is piped from here. With `rssFile`, the command is svcplane started
 * with the rss-at-exit preload, and rssMB is its own peak (not iptables-restore's).
 */
async function timed(
  argv: string[],
  input?: string,
  rssFile?: string,
): Promise<{ ms: number; rssMB: number; stdout: string }> {
  const started = performance.now();
  const r = await run(argv, {
    timeoutMs: 1_800_000,
    ...(input !== undefined ? { input } : {}),
    ...(rssFile !== undefined ? { env: { SVCP_BENCH_RSS_FILE: rssFile } } : {}),
  });
  const ms = performance.now() - started;
  const rssKB = rssFile !== undefined ? Number(await readFile(rssFile, 'utf8')) : NaN;
  return { ms, rssMB: r0(rssKB / 1024), stdout: r.stdout };
}

const RSS_PRELOAD = (): string => join(packageRoot(), 'dist', 'bench', 'rss-at-exit.js');

interface SyncFigures {
  /** Medians over the runs. */
  ms: number;
  proxierMs: number;
  rssMB: number;
  runs: number[];
}

interface LayoutResult {
  layout: Layout;
  services: number;
  files: number;
  mb: number;
  load: number[];
  loadMs: number;
  loadRssMB: number;
  floorMs: number;
  floors: number[];
  sync: SyncFigures;
  syncWholeTable: SyncFigures;
  ratio: number;
  ratioWholeTable: number;
  daemon: {
    startMs: number;
    idleCpuPercent: number;
    /** Of which node's main thread (the rest: V8's workers, libuv's pool). */
    idleMainCpuPercent: number;
    idleChildCpuPercent: number;
    changes: number;
    p50Ms: number;
    maxMs: number;
    syncP50Ms: number;
    floorP50Ms: number;
    ratioP50: number;
    hwmMB: number;
  };
}

const proxierMsOf = (stdout: string): number => Number(/, (\d+) ms$/m.exec(stdout)?.[1] ?? NaN);

async function syncRuns(m: ManifestDir, runs: number, floorInput: string, work: string) {
  const base = [
    'unshare',
    '-n',
    process.execPath,
    `--import=${RSS_PRELOAD()}`,
    SVCPLANE(),
    'sync',
    ...proxyArgs(m.dir),
  ];
  const rssFile = join(work, 'rss');
  const dflt: number[] = [];
  const dfltProxier: number[] = [];
  const dfltRss: number[] = [];
  const whole: number[] = [];
  const wholeProxier: number[] = [];
  const wholeRss: number[] = [];
  const floors: number[] = [];
  for (let r = 0; r < runs; r++) {
    const a = await timed(base, undefined, rssFile);
    dflt.push(a.ms);
    dfltProxier.push(proxierMsOf(a.stdout));
    dfltRss.push(a.rssMB);
    const b = await timed([...base, '--iptables-full-sync-mode', 'whole-table'], undefined, rssFile);
    whole.push(b.ms);
    wholeProxier.push(proxierMsOf(b.stdout));
    wholeRss.push(b.rssMB);
    const f = await timed(['unshare', '-n', 'iptables-restore', '--counters'], floorInput);
    floors.push(f.ms);
  }
  const figures = (ms: number[], proxier: number[], rss: number[]): SyncFigures => ({
    ms: r0(median(ms)),
    proxierMs: r0(median(proxier)),
    rssMB: r0(median(rss)),
    runs: ms.map(r0),
  });
  return {
    floors: floors.map(r0),
    floorMs: r0(median(floors)),
    sync: figures(dflt, dfltProxier, dfltRss),
    syncWholeTable: figures(whole, wholeProxier, wholeRss),
  };
}

/** utime + stime and cutime + cstime of a process, in ms. */
async function cpuMs(pid: number): Promise<{ self: number; children: number }> {
  const t = await cpuTicks(pid);
  // Children still running (the daemon's `nft monitor`) are not in the reaped children's times.
  let live = 0;
  const kids = await readFile(`/proc/${pid}/task/${pid}/children`, 'utf8').catch(() => '');
  for (const k of kids.split(' ').filter((x) => x !== '')) {
    const c = await cpuTicks(Number(k)).catch(() => ({ self: 0, children: 0 }));
    live += c.self + c.children;
  }
  return { self: t.self, children: t.children + live };
}

async function cpuTicks(pid: number, tid?: number): Promise<{ self: number; children: number }> {
  const stat = await readFile(
    tid === undefined ? `/proc/${pid}/stat` : `/proc/${pid}/task/${tid}/stat`,
    'utf8',
  );
  const f = stat
    .slice(stat.lastIndexOf(')') + 2)
    .split(' ')
    .map(Number);
  // Fields 14-17 of stat(5), counted from the state (field 3) at index 0; 100 ticks a second.
  return { self: (f[11]! + f[12]!) * 10, children: (f[13]! + f[14]!) * 10 };
}

async function hwmMB(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  return r0(Number(/^VmHWM:\s+(\d+)/m.exec(status)?.[1]) / 1024);
}

interface SyncedLine {
  at: number;
  full: boolean;
  durationMs: number;
}

async function daemonRun(m: ManifestDir, work: string, changes: number, idleMs: number) {
  // The real binary while the daemon is timed (idle, event-to-rules); the recorder only afterwards.
  const { iptables, record } = await recordingBinaries(work, { record: false });
  const started = performance.now();
  const synced: SyncedLine[] = [];
  let waiter: (() => void) | undefined;
  // Loopback up for the metrics server; `exec`: the PID is svcplane's. The `synced` lines are read
  // as JSON: kube-proxy's default is text, and -v=2 is where each sync is logged.
  const daemonArgv = [
    SVCPLANE(),
    'run',
    ...proxyArgs(m.dir),
    '--iptables-min-sync-period=0s',
    '--logging-format=json',
    '-v=2',
  ];
  const child: ChildHandle = startProcess([
    'unshare',
    '-n',
    'sh',
    '-c',
    `ip link set lo up && exec "$0" "$@"`,
    process.execPath,
    ...daemonArgv,
    '--iptables-binary',
    iptables,
  ]);
  let armed = false;
  child.onLine((line) => {
    if (line.includes('"message":"kernel watch armed"')) armed = true;
    if (!line.includes('"message":"synced"')) return;
    const rec = JSON.parse(line) as { full?: boolean; durationMs?: number };
    synced.push({ at: performance.now(), full: rec.full === true, durationMs: Number(rec.durationMs) });
    waiter?.();
  });
  const nextSynced = (after: number, timeoutMs: number): Promise<SyncedLine> =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no sync within ${timeoutMs} ms`)), timeoutMs);
      // A sync that started before `after` cannot hold what changed at `after`.
      const check = (): void => {
        const s = synced.find((x) => x.at - x.durationMs > after);
        if (s) {
          clearTimeout(timer);
          waiter = undefined;
          resolve(s);
        }
      };
      waiter = check;
      check();
    });
  try {
    await nextSynced(0, 600_000);
    const startMs = performance.now() - started;
    // Without it every drift check reads every rule: not the daemon users run.
    if (!armed) throw new Error('the daemon did not arm its kernel watch (no "kernel watch armed" line)');
    // Settle (the first sync's tail: conntrack, metrics, the start-up's garbage), then idle.
    await new Promise((r) => setTimeout(r, 10_000));
    const c0 = await cpuMs(child.pid);
    const m0 = await cpuTicks(child.pid, child.pid);
    const t0 = performance.now();
    await new Promise((r) => setTimeout(r, idleMs));
    const c1 = await cpuMs(child.pid);
    const m1 = await cpuTicks(child.pid, child.pid);
    const idleWall = performance.now() - t0;
    /** One-endpoint change k (an atomic rename of its Service's file): its `synced` line. */
    const change = async (k: number): Promise<{ ms: number; sync: SyncedLine }> => {
      const i = (k * 97 + 13) % m.services;
      const file = m.fileOf(i);
      const tmp = join(m.dir, `.bench-${k}.tmp`);
      await writeFile(tmp, m.fileText(i, i, k + 1));
      const t = performance.now();
      await rename(tmp, file);
      const s = await nextSynced(t, 60_000);
      if (s.full) throw new Error('expected a partial sync for a one-endpoint change');
      // One change at a time: the next once the daemon has been quiet for 300 ms.
      for (let quiet = 0; quiet < 40; quiet++) {
        const last = synced.at(-1)?.at ?? 0;
        if (performance.now() - last >= 300) break;
        await new Promise((r) => setTimeout(r, 50));
      }
      return { ms: s.at - t, sync: s };
    };
    const latencies: number[] = [];
    const syncs: number[] = [];
    for (let k = 0; k < changes; k++) {
      const { ms, sync } = await change(k);
      latencies.push(ms);
      syncs.push(sync.durationMs);
    }
    // The floor's inputs: as many changes of the same kind (other Services), untimed, through the
    // recorder, whose shell and tee are thus never in a timed restore.
    await record(true);
    for (const f of await inputs(work, 'partial')) await rm(f);
    for (let k = changes; k < 2 * changes; k++) await change(k);
    await record(false);
    // Floors: each partial input replayed into the daemon's kernel, as it is now.
    const floors: number[] = [];
    for (const f of await inputs(work, 'partial')) {
      const t = await timed(
        ['nsenter', `--net=/proc/${child.pid}/ns/net`, 'iptables-restore', '--noflush', '--counters'],
        await readFile(f, 'utf8'),
      );
      floors.push(t.ms);
    }
    const hwm = await hwmMB(child.pid);
    const p50 = percentile(latencies, 50);
    const floorP50 = percentile(floors, 50);
    return {
      startMs: r0(startMs),
      idleCpuPercent: r2(((c1.self - c0.self) / idleWall) * 100),
      idleMainCpuPercent: r2(((m1.self - m0.self) / idleWall) * 100),
      idleChildCpuPercent: r2(((c1.children - c0.children) / idleWall) * 100),
      changes,
      p50Ms: r0(p50),
      maxMs: r0(Math.max(...latencies)),
      syncP50Ms: r0(percentile(syncs, 50)),
      floorP50Ms: r0(floorP50),
      ratioP50: r2(p50 / floorP50),
      hwmMB: hwm,
    };
  } finally {
    await child.stop(15_000);
  }
}

/** Child mode: ManifestSource.start() on `dir`, printed as JSON. */
async function loadChild(dir: string): Promise<void> {
  const started = performance.now();
  const source = new ManifestSource(dir, { limits: BENCH_LIMITS });
  await source.start();
  const ms = performance.now() - started;
  const services = source.current()?.services.size ?? 0;
  await source.stop();
  const rssMB = r0(process.resourceUsage().maxRSS / 1024);
  printChildResult({ ms: r0(ms), services, rssMB });
}

async function measure(layout: Layout, n: number, args: Args): Promise<LayoutResult> {
  const work = await mkdtemp(join(tmpdir(), 'svcp-mbench-'));
  try {
    const load = loadavg().map(r2);
    const m = await writeManifestDir(join(work, 'manifests'), layout, n, ENDPOINTS);
    process.stderr.write(`bench: ${layout} ${n}: ${m.files} files, ${r2(m.bytes / 1048576)} MB\n`);
    const self = fileURLToPath(import.meta.url);
    const loads: { ms: number; rssMB: number; services: number }[] = [];
    for (let r = 0; r < args.runs; r++) {
      loads.push(
        await runChild<(typeof loads)[number]>(self, ['--load', m.dir], {
          what: `bench load of ${layout} ${n}`,
          timeoutMs: 600_000,
        }),
      );
    }
    if (loads.some((l) => l.services !== n)) throw new Error(`load: ${JSON.stringify(loads)}`);
    // The floor's input: what a whole-table sync renders, captured once.
    const capture = join(work, 'capture');
    const { iptables } = await recordingBinaries(capture, { record: true });
    await run(
      ['unshare', '-n', process.execPath, SVCPLANE(), 'sync', ...proxyArgs(m.dir)].concat([
        '--iptables-full-sync-mode',
        'whole-table',
        '--iptables-binary',
        iptables,
      ]),
      { timeoutMs: 1_800_000 },
    );
    const [captured] = await inputs(capture, 'full');
    if (!captured) throw new Error('no whole-table input captured');
    const floorInput = await readFile(captured, 'utf8');
    const syncs = await syncRuns(m, args.runs, floorInput, work);
    const daemon = await daemonRun(m, join(work, 'daemon'), args.changes, args.idleMs);
    return {
      layout,
      services: n,
      files: m.files,
      mb: r2(m.bytes / 1048576),
      load,
      loadMs: r0(median(loads.map((l) => l.ms))),
      loadRssMB: r0(median(loads.map((l) => l.rssMB))),
      ...syncs,
      ratio: r2(syncs.sync.ms / syncs.floorMs),
      ratioWholeTable: r2(syncs.syncWholeTable.ms / syncs.floorMs),
      daemon,
    };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

function table(results: readonly LayoutResult[]): string {
  const head = [
    'layout',
    'services',
    'files',
    'MB',
    'load ms',
    'load RSS',
    'floor ms',
    'sync ms (proxier)',
    'ratio',
    'whole-table sync ms (proxier)',
    'ratio',
    'sync RSS dflt/wt',
    'idle CPU % (main thread, +children)',
    'event p50/max ms',
    'partial floor p50',
    'p50/floor',
    'daemon HWM',
    'loadavg',
  ];
  const rows = results.map((r) => [
    r.layout,
    r.services,
    r.files,
    r.mb,
    r.loadMs,
    r.loadRssMB,
    r.floorMs,
    `${r.sync.ms} (${r.sync.proxierMs})`,
    r.ratio,
    `${r.syncWholeTable.ms} (${r.syncWholeTable.proxierMs})`,
    r.ratioWholeTable,
    `${r.sync.rssMB}/${r.syncWholeTable.rssMB}`,
    `${r.daemon.idleCpuPercent} (${r.daemon.idleMainCpuPercent}, +${r.daemon.idleChildCpuPercent})`,
    `${r.daemon.p50Ms}/${r.daemon.maxMs}`,
    r.daemon.floorP50Ms,
    r.daemon.ratioP50,
    r.daemon.hwmMB,
    r.load.join('/'),
  ]);
  const all = [head, ...rows].map((row) => row.map(String));
  const widths = head.map((_, c) => Math.max(...all.map((row) => row[c]!.length)));
  return all.map((row) => row.map((cell, c) => cell.padStart(widths[c]!)).join('  ')).join('\n');
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  if (args.load !== undefined) return loadChild(args.load);
  const results: LayoutResult[] = [];
  for (const n of args.sizes) {
    for (const layout of args.layouts) {
      const r = await measure(layout, n, args);
      results.push(r);
      process.stderr.write(`${table([r]).split('\n')[1]}\n`);
    }
  }
  const machine = {
    date: new Date().toISOString(),
    node: process.version,
    cpus: cpus().length,
    iptables: (await run(['iptables', '--version'])).stdout.trim(),
    kernel: (await run(['uname', '-r'])).stdout.trim(),
  };
  process.stdout.write(`\n${table(results)}\n`);
  await writeResults({ machine, args, results }, { out: args.out, prefix: 'manifests-', who: 'bench' });
}

main().catch((err: unknown) => {
  process.stderr.write(`bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exitCode = 1;
});
