import assert from 'node:assert/strict';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { serviceChainName } from '../../src/iptables/names.js';
import { parseIptablesSave, ruleComment, rulesOf, serviceChainsOf } from '../../src/iptables/save-parse.js';
import type { Sandbox } from '../../src/netns/sandbox.js';
import { startProcess, type ChildHandle } from '../../src/util/exec.js';
import { packageRoot } from '../../src/util/paths.js';
import { expectError, expectReply, useSandbox } from '../support/sandbox.js';

/**
 * `svcplane run` (the daemon, built from the current source) inside a sandbox node, with a 2 s sync
 * period: it converges, follows manifest edits, repairs what another agent flushed or deleted, and
 * can be stopped and restarted under an established connection. Tests run in order on one daemon.
 */

const NODE = 'node-1';
const TARGET = 8080;
const SYNC_PERIOD_MS = 2000;
/**
 * Repairs come within one sync period (the drift check has its own timer) plus one sync; probing a
 * broken Service costs up to a 500 ms timeout per attempt on top.
 */
const REPAIR_WITHIN_MS = SYNC_PERIOD_MS + 1500;

function serviceObjects(sb: Sandbox, name: string, ip: string, pods: readonly string[]): unknown {
  return {
    apiVersion: 'v1',
    kind: 'List',
    items: [
      {
        apiVersion: 'v1',
        kind: 'Service',
        metadata: { name, namespace: 'default' },
        spec: { clusterIP: ip, ports: [{ name: 'http', protocol: 'TCP', port: 80, targetPort: TARGET }] },
      },
      {
        apiVersion: 'discovery.k8s.io/v1',
        kind: 'EndpointSlice',
        metadata: { name: `${name}-x`, namespace: 'default', labels: { 'kubernetes.io/service-name': name } },
        addressType: 'IPv4',
        ports: [{ name: 'http', protocol: 'TCP', port: TARGET }],
        endpoints: pods.map((p) => ({
          addresses: [sb.podIP(p)],
          conditions: { ready: true },
          nodeName: NODE,
        })),
      },
    ],
  };
}

/** Polls `check` until it returns true; returns the elapsed ms or fails after `timeoutMs`. */
async function eventually(what: string, timeoutMs: number, check: () => Promise<boolean>): Promise<number> {
  const started = Date.now();
  for (;;) {
    if (await check()) return Date.now() - started;
    if (Date.now() - started > timeoutMs) assert.fail(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('svcplane run (daemon in the node namespace)', function () {
  this.timeout(60_000);
  const env = useSandbox({
    pods: [
      { name: 'a', index: 2, tcpPorts: [TARGET] },
      { name: 'b', index: 3, tcpPorts: [TARGET] },
      { name: 'c', index: 4, tcpPorts: [TARGET] },
      { name: 'client', index: 10 },
    ],
  });
  let dir = '';
  let daemon: ChildHandle | undefined;
  let logs: string[] = [];

  const answerer = async (ip: string, timeoutMs = 500): Promise<string | undefined> => {
    const r = await env.sb.request('client', { proto: 'tcp', ip, port: 80, timeoutMs });
    return r.ok ? r.reply.pod : r.error;
  };
  const manifest = (file: string, content: unknown): Promise<void> =>
    writeFile(join(dir, file), typeof content === 'string' ? content : JSON.stringify(content));
  const saved = async (table: string) =>
    parseIptablesSave((await env.sb.exec('node', ['iptables-save', '-t', table])).stdout);
  const ipt = (...args: string[]) => env.sb.exec('node', ['iptables', ...args]);

  /** Starts the daemon and waits for its "svcplane running" line (first sync done). */
  async function startDaemon(): Promise<void> {
    const main = pathToFileURL(join(packageRoot(), 'src', 'cli', 'main.ts')).href;
    const entry = `import(${JSON.stringify(main)}).then(async (m) => { process.exitCode = await m.main(['node', 'svcplane', ...process.argv.slice(1)]); }, (e) => { console.error(e); process.exitCode = 2; });`;
    logs = [];
    const child = startProcess(
      [
        process.execPath,
        '--import=tsx',
        '-e',
        entry,
        'run',
        `--manifests=${dir}`,
        `--hostname-override=${NODE}`,
        '--cluster-cidr=10.244.0.0/16,fd00:10:244::/64',
        `--iptables-sync-period=${SYNC_PERIOD_MS / 1000}s`,
        '--iptables-min-sync-period=100ms',
        '--healthz-bind-address=127.0.0.1:10256',
        '--metrics-bind-address=127.0.0.1:10249',
      ],
      { netns: env.sb.nodeNs },
    );
    daemon = child;
    child.onLine((l) => logs.push(l));
    let exited = false;
    void child.exited.then(() => (exited = true));
    await eventually('daemon reports "svcplane running"', 30_000, async () => {
      if (exited) assert.fail(`daemon exited early:\n${logs.join('\n')}`);
      return Promise.resolve(logs.some((l) => l.includes('"svcplane running"')));
    });
  }

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'svcp-daemon-'));
    await manifest('web.json', serviceObjects(env.sb, 'web', '10.96.50.1', ['a']));
    await manifest('empty.json', serviceObjects(env.sb, 'empty', '10.96.50.2', []));
  });

  after(async function () {
    this.timeout(20_000);
    await daemon?.stop(5000);
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('converges the node from the manifests (ClusterIP served, no endpoints → REJECT)', async () => {
    await startDaemon();
    assert.equal(await answerer('10.96.50.1'), 'a');
    assert.equal(await answerer('10.96.50.2'), 'refused');
  });

  it('idle, the main thread sleeps: a few wake-ups a second, not a timer every 10 ms', async () => {
    // prom-client's event-loop lag histogram sampled every 10 ms by default: ~100 wake-ups a second
    // of the main thread with nothing to do (issue 14: most of the idle daemon's CPU at 10k).
    const wakeups = async (): Promise<number> => {
      const status = await readFile(`/proc/${daemon!.pid}/task/${daemon!.pid}/status`, 'utf8');
      return Number(/^voluntary_ctxt_switches:\s+(\d+)/m.exec(status)?.[1]);
    };
    const windowMs = 4000;
    const before = await wakeups();
    await new Promise((r) => setTimeout(r, windowMs));
    const perSecond = ((await wakeups()) - before) / (windowMs / 1000);
    // Polls, the lag sample, the periodic syncs (every 2 s here): ~20 a second (with 10 ms: ~340).
    assert.ok(perSecond < 40, `${perSecond} wake-ups a second`);
  });

  it('follows manifest changes: a new file, edited endpoints, a deleted file', async () => {
    await manifest('more.json', serviceObjects(env.sb, 'more', '10.96.50.3', ['b']));
    const added = await eventually(
      'new Service reachable',
      10_000,
      async () => (await answerer('10.96.50.3')) === 'b',
    );
    await manifest('web.json', serviceObjects(env.sb, 'web', '10.96.50.1', ['c']));
    await eventually('traffic moved to c', 10_000, async () => (await answerer('10.96.50.1')) === 'c');
    for (let i = 0; i < 3; i++) assert.equal(await answerer('10.96.50.1'), 'c');

    await rm(join(dir, 'empty.json'));
    await eventually('REJECT removed', 10_000, async () => (await answerer('10.96.50.2')) === 'timeout');
    const filter = await saved('filter');
    assert.ok(
      !rulesOf(filter, 'filter', 'KUBE-SERVICES').some((r) => ruleComment(r)?.startsWith('default/empty')),
    );
    assert.ok(!serviceChainsOf(await saved('nat')).has(serviceChainName('default/empty:http', 'tcp')));
    console.log(`      (new Service reachable ${added} ms after the file was written)`);
  });

  it('an invalid file is logged and does not disturb the other Services', async () => {
    await manifest('broken.yaml', 'kind: Service\nmetadata: [unclosed\n');
    await manifest('bad-ip.json', serviceObjects(env.sb, 'bad', 'not-an-ip', ['a']));
    await manifest('later.json', serviceObjects(env.sb, 'later', '10.96.50.4', ['a']));
    await eventually(
      'good file next to bad ones applied',
      10_000,
      async () => (await answerer('10.96.50.4')) === 'a',
    );
    assert.equal(await answerer('10.96.50.1'), 'c');
    assert.equal(await answerer('10.96.50.3'), 'b');
    const problems = logs.filter((l) => l.includes('skipped invalid input'));
    assert.ok(
      problems.some((l) => l.includes('broken.yaml')),
      problems.join('\n') || logs.slice(-20).join('\n'),
    );
    assert.ok(
      problems.some((l) => l.includes('"bad"') && l.includes('clusterIP')),
      problems.join('\n'),
    );
  });

  it('repairs `iptables -t nat -F` plus a deleted mangle canary within one sync period', async () => {
    await ipt('-t', 'nat', '-F');
    await ipt('-t', 'mangle', '-X', 'KUBE-PROXY-CANARY');
    // (That the flush breaks the Service is shown in iptables-sync.test.ts; probing here would race the daemon.)
    const ms = await eventually(
      'repaired',
      REPAIR_WITHIN_MS,
      async () => (await answerer('10.96.50.1')) === 'c',
    );
    console.log(`      (repaired ${ms} ms after the flush; sync period ${SYNC_PERIOD_MS} ms)`);
  });

  it('repairs flushed filter, nat and mangle tables (canaries intact) within one sync period', async () => {
    for (const t of ['filter', 'nat', 'mangle']) await ipt('-t', t, '-F');
    await ipt(
      '-t',
      'filter',
      '-A',
      'INPUT',
      '-p',
      'tcp',
      '--dport',
      '2222',
      '-m',
      'comment',
      '--comment',
      'foreign',
      '-j',
      'ACCEPT',
    );
    const ms = await eventually(
      'repaired',
      REPAIR_WITHIN_MS,
      async () => (await answerer('10.96.50.1')) === 'c',
    );
    expectReply(await env.sb.request('client', { proto: 'tcp', ip: '10.96.50.3', port: 80 }), 'b');
    console.log(`      (repaired ${ms} ms after the flush)`);
    const filter = await saved('filter');
    assert.ok(
      rulesOf(filter, 'filter', 'INPUT').some((r) => ruleComment(r) === 'foreign'),
      'foreign rule kept',
    );
  });

  it('repairs a deleted KUBE-SVC chain within one sync period', async () => {
    const chain = serviceChainName('default/more:http', 'tcp');
    await ipt('-t', 'nat', '-F', 'KUBE-SERVICES');
    await ipt('-t', 'nat', '-F', chain);
    await ipt('-t', 'nat', '-X', chain);
    const ms = await eventually(
      'repaired',
      REPAIR_WITHIN_MS,
      async () => (await answerer('10.96.50.3')) === 'b',
    );
    assert.ok(serviceChainsOf(await saved('nat')).has(chain));
    console.log(`      (repaired ${ms} ms after the deletion)`);
  });

  it('SIGTERM exits 0 leaving the rules; an established connection survives stop and restart', async function () {
    this.timeout(60_000);
    const conn = await env.sb.openConnection('client', { ip: '10.96.50.1', port: 80, timeoutMs: 1000 });
    const first = expectReply(conn.result, 'c');
    try {
      assert.equal(await daemon!.stop(5000), 0, 'exit status 0 on SIGTERM');
      daemon = undefined;
      assert.ok(serviceChainsOf(await saved('nat')).has(serviceChainName('default/web:http', 'tcp')));
      expectReply(await conn.send(1000), 'c');
      assert.equal(await answerer('10.96.50.1'), 'c', 'new connections still served without the daemon');

      await startDaemon();
      const again = expectReply(await conn.send(1000), 'c');
      assert.equal(again.peer, first.peer, 'the same connection');
      // Changes are followed again by the new process.
      await manifest('web.json', serviceObjects(env.sb, 'web', '10.96.50.1', ['b']));
      await eventually(
        'new process follows changes',
        10_000,
        async () => (await answerer('10.96.50.1')) === 'b',
      );
      expectReply(await conn.send(1000), 'c');
    } finally {
      await conn.close();
    }
    expectError(
      await env.sb.request('client', { proto: 'tcp', ip: '10.96.50.2', port: 80, timeoutMs: 500 }),
      'timeout',
    );
  });

  it('SIGKILLed, it leaves no child behind: its nft monitor and ip monitor die with it', async function () {
    this.timeout(30_000);
    const pid = daemon!.pid;
    // The kernel watch's `nft monitor` and the address watch's `ip monitor` (after setpriv's exec).
    let kids: ProcStat[] = [];
    await eventually('the daemon runs nft monitor and ip monitor', 10_000, async () => {
      kids = (await childrenOf(pid)).filter((k) => k.comm === 'nft' || k.comm === 'ip');
      return new Set(kids.map((k) => k.comm)).size === 2;
    });
    process.kill(pid, 'SIGKILL');
    await daemon!.exited;
    daemon = undefined;
    try {
      // Nothing commits in this namespace now: without a parent-death signal they would wait for an
      // event to fail writing it.
      await eventually('the monitors to exit with the daemon', 3_000, async () => {
        const alive = await Promise.all(kids.map(async (k) => (await procStat(k.pid))?.start === k.start));
        return !alive.includes(true);
      });
    } finally {
      for (const k of kids) if ((await procStat(k.pid))?.start === k.start) process.kill(k.pid, 'SIGKILL');
    }
  });
});

interface ProcStat {
  pid: number;
  comm: string;
  ppid: number;
  /** Start time in clock ticks: tells a reused PID apart. */
  start: string;
}

async function procStat(pid: number): Promise<ProcStat | undefined> {
  let text: string;
  try {
    text = await readFile(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  const close = text.lastIndexOf(')');
  const rest = text.slice(close + 2).split(' ');
  if (rest[0] === 'Z') return undefined;
  return {
    pid,
    comm: text.slice(text.indexOf('(') + 1, close),
    ppid: Number(rest[1]),
    start: rest[19] ?? '',
  };
}

async function childrenOf(parent: number): Promise<ProcStat[]> {
  const pids = (await readdir('/proc')).filter((n) => /^\d+$/.test(n)).map(Number);
  const stats = await Promise.all(pids.map((p) => procStat(p)));
  return stats.filter((s): s is ProcStat => s !== undefined && s.ppid === parent);
}
