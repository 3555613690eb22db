import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  hostVethName,
  nextFreeIndex,
  parsePortList,
  podIPv6,
  podNsName,
  renderPodSetup,
  validateId,
  validatePodName,
  planPod,
} from '../../src/netns/names.js';
import { peerIP } from '../../src/netns/protocol.js';
import { cleanupLeftovers, isLeftover, listSandboxes, Sandbox } from '../../src/netns/sandbox.js';
import { run, startProcess } from '../../src/util/exec.js';
import {
  expectError,
  expectReply,
  isRoot,
  randomSandboxId,
  requireRoot,
  useSandbox,
} from '../support/sandbox.js';

/** Real namespaces, veths, a bridge and real TCP/UDP traffic between them. Needs root. */

async function sandboxNamespaces(id: string): Promise<string[]> {
  const names = await readdir('/run/netns').catch(() => [] as string[]);
  return names.filter((n) => n.startsWith(`svcp-${id}-`));
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

interface IpLink {
  ifname: string;
  linkinfo?: { info_kind?: string; info_slave_kind?: string; info_slave_data?: { hairpin?: boolean } };
}
interface IpRoute {
  dst: string;
  dev?: string;
  gateway?: string;
}

describe('netns sandbox: names and addressing (pure)', () => {
  it('validates ids and pod names', () => {
    assert.equal(validateId('ab12'), 'ab12');
    assert.throws(() => validateId('toolong123'), /invalid/);
    assert.throws(() => validateId('Bad'), /invalid/);
    assert.throws(() => validatePodName('node'), /reserved/);
    assert.throws(() => validatePodName('-x'), /invalid/);
    assert.equal(podNsName('ab12', 'web-1'), 'svcp-ab12-web-1');
  });

  it('plans addresses like host-local IPAM, link names within 15 characters', () => {
    assert.equal(nextFreeIndex([]), 2);
    assert.equal(nextFreeIndex([2, 3, 5]), 4);
    assert.equal(podIPv6(10), 'fd00:10:244::a');
    assert.ok(hostVethName(254).length <= 15);
    const p = planPod('ab12', 'web', 7);
    assert.deepEqual([p.ipv4, p.ipv6, p.hostVeth], ['10.244.0.7', 'fd00:10:244::7', 'veth7']);
    assert.ok(renderPodSetup(p).some((l) => l.includes('nodad')));
    assert.deepEqual(parsePortList('80, 9376'), [80, 9376]);
    assert.throws(() => parsePortList('80,70000'), /invalid/);
  });
});

describe('netns sandbox: traffic', function () {
  this.timeout(30_000);
  const env = useSandbox({
    pods: [
      { name: 'a', tcpPorts: [80], udpPorts: [53] },
      { name: 'b', tcpPorts: [80, 9376], udpPorts: [53] },
    ],
  });

  before(async () => {
    await env.sb.serve('node', { tcpPorts: [10250], udpPorts: [10251] });
    await env.sb.serve('outside', { tcpPorts: [8080] });
  });

  for (const family of ['IPv4', 'IPv6'] as const) {
    for (const proto of ['tcp', 'udp'] as const) {
      it(`pod -> pod over ${proto} ${family}: the backend answers and sees the client's own address`, async () => {
        const { sb } = env;
        const port = proto === 'tcp' ? 80 : 53;
        const reply = expectReply(await sb.request('a', { proto, ip: sb.podIP('b', family), port }), 'b');
        assert.equal(reply.ip, sb.podIP('b', family));
        assert.equal(reply.port, port);
        assert.equal(reply.proto, proto);
        assert.equal(peerIP(reply.peer), sb.podIP('a', family));
      });
    }

    it(`pod <-> node over ${family} (tcp and udp)`, async () => {
      const { sb } = env;
      const gw = family === 'IPv4' ? sb.gatewayIPv4 : sb.gatewayIPv6;
      expectReply(await sb.request('a', { proto: 'tcp', ip: gw, port: 10250 }), 'node');
      const u = expectReply(await sb.request('a', { proto: 'udp', ip: gw, port: 10251 }), 'node');
      assert.equal(u.ip, gw);
      const r = expectReply(
        await sb.request('node', { proto: 'tcp', ip: sb.podIP('b', family), port: 9376 }),
        'b',
      );
      assert.equal(peerIP(r.peer), gw);
    });

    it(`outside <-> node, and outside -> pod routed via the node, over ${family}`, async () => {
      const { sb } = env;
      const nodeIP = family === 'IPv4' ? sb.nodeIPv4 : sb.nodeIPv6;
      const outsideIP = family === 'IPv4' ? sb.outsideIPv4 : sb.outsideIPv6;
      const t = expectReply(await sb.request('outside', { proto: 'tcp', ip: nodeIP, port: 10250 }), 'node');
      assert.equal(peerIP(t.peer), outsideIP);
      expectReply(await sb.request('outside', { proto: 'udp', ip: nodeIP, port: 10251 }), 'node');
      expectReply(await sb.request('node', { proto: 'tcp', ip: outsideIP, port: 8080 }), 'outside');
      const p = expectReply(
        await sb.request('outside', { proto: 'tcp', ip: sb.podIP('a', family), port: 80 }),
        'a',
      );
      assert.equal(peerIP(p.peer), outsideIP);
    });
  }

  it('a pod reaches itself through its own address', async () => {
    const { sb } = env;
    expectReply(await sb.request('a', { proto: 'tcp', ip: sb.podIP('a'), port: 80 }), 'a');
  });

  it('closed ports are "refused" for TCP and UDP (ICMP port unreachable), v4 and v6', async () => {
    const { sb } = env;
    expectError(await sb.request('a', { proto: 'tcp', ip: sb.podIP('b'), port: 81 }), 'refused');
    expectError(await sb.request('a', { proto: 'udp', ip: sb.podIP('b'), port: 54 }), 'refused');
    expectError(await sb.request('a', { proto: 'tcp', ip: sb.podIP('b', 'IPv6'), port: 81 }), 'refused');
    expectError(await sb.request('a', { proto: 'udp', ip: sb.podIP('b', 'IPv6'), port: 54 }), 'refused');
  });

  it('a DROP is a "timeout"; addPod/removePod reuse the index', async () => {
    const { sb } = env;
    const c = await sb.addPod({ name: 'c', tcpPorts: [80], udpPorts: [53] });
    assert.equal(c.index, 4);
    expectReply(await sb.request('a', { proto: 'tcp', ip: c.ipv4, port: 80 }), 'c');
    // A rule inside the pod's own namespace (never in the machine's).
    await sb.exec('c', ['iptables', '-w', '-A', 'INPUT', '-p', 'tcp', '--dport', '80', '-j', 'DROP']);
    await sb.exec('c', ['iptables', '-w', '-A', 'INPUT', '-p', 'udp', '--dport', '53', '-j', 'DROP']);
    expectError(await sb.request('a', { proto: 'tcp', ip: c.ipv4, port: 80, timeoutMs: 300 }), 'timeout');
    expectError(await sb.request('a', { proto: 'udp', ip: c.ipv4, port: 53, timeoutMs: 300 }), 'timeout');
    await sb.removePod('c');
    assert.deepEqual(await sandboxNamespaces(sb.id).then((n) => n.includes(c.ns)), false);
    const links = JSON.parse((await sb.exec('node', ['ip', '-j', 'link', 'show'])).stdout) as IpLink[];
    assert.ok(!links.some((l) => l.ifname === c.hostVeth), 'host veth removed with the pod');
    const d = await sb.addPod({ name: 'd' });
    assert.equal(d.index, 4);
    await sb.removePod('d');
  });

  it('a fixed source port is seen by the server and reusable at once', async () => {
    const { sb } = env;
    for (let i = 0; i < 2; i++) {
      const r = expectReply(
        await sb.request('a', { proto: 'tcp', ip: sb.podIP('b'), port: 80, sourcePort: 40123 }),
        'b',
      );
      assert.equal(r.peer, `${sb.podIP('a')}:40123`);
      const u = expectReply(
        await sb.request('a', { proto: 'udp', ip: sb.podIP('b'), port: 53, sourcePort: 40124 }),
      );
      assert.equal(u.peer, `${sb.podIP('a')}:40124`);
    }
  });

  it('keeps a TCP connection open and talks on it again', async () => {
    const { sb } = env;
    const conn = await sb.openConnection('outside', { ip: sb.podIP('b'), port: 9376 });
    try {
      const first = expectReply(conn.result, 'b');
      const again = expectReply(await conn.send(), 'b');
      assert.equal(again.peer, first.peer, 'same connection');
      expectReply(await conn.send(), 'b');
    } finally {
      await conn.close();
    }
  });

  it('hairpin mode is on for every pod port of cbr0', async () => {
    const { sb } = env;
    const links = JSON.parse(
      (await sb.exec('node', ['ip', '-d', '-j', 'link', 'show', 'master', 'cbr0'])).stdout,
    ) as IpLink[];
    const ports = links.map((l) => l.ifname).sort();
    assert.deepEqual(
      ports,
      sb
        .listPods()
        .map((p) => p.hostVeth)
        .sort(),
    );
    for (const l of links) assert.equal(l.linkinfo?.info_slave_data?.hairpin, true, `${l.ifname} hairpin`);
  });

  it('the node is sealed: only lo, cbr0, ext0 and pod veths; every route stays in the sandbox', async () => {
    const { sb } = env;
    const links = JSON.parse((await sb.exec('node', ['ip', '-j', 'link', 'show'])).stdout) as IpLink[];
    const names = links.map((l) => l.ifname).sort();
    assert.deepEqual(names, ['cbr0', 'ext0', 'lo', ...sb.listPods().map((p) => p.hostVeth)].sort());
    for (const fam of ['-4', '-6']) {
      const routes = JSON.parse(
        (await sb.exec('node', ['ip', fam, '-j', 'route', 'show', 'table', 'all'])).stdout,
      ) as IpRoute[];
      for (const r of routes) {
        if (r.dev === undefined) continue; // unreachable/blackhole/local-table entries without a device
        assert.ok(
          ['lo', 'cbr0', 'ext0'].includes(r.dev) || r.dev.startsWith('veth'),
          `route ${JSON.stringify(r)}`,
        );
      }
      const def = routes.find((r) => r.dst === 'default');
      assert.equal(def?.dev, 'ext0');
      assert.equal(def?.gateway, fam === '-4' ? sb.outsideIPv4 : sb.outsideIPv6);
    }
    const outside = JSON.parse((await sb.exec('outside', ['ip', '-j', 'link', 'show'])).stdout) as IpLink[];
    assert.deepEqual(outside.map((l) => l.ifname).sort(), ['eth0', 'lo']);
    const fwd = await sb.exec('node', [
      'sysctl',
      '-n',
      'net.ipv4.ip_forward',
      'net.ipv6.conf.all.forwarding',
    ]);
    assert.deepEqual(fwd.stdout.trim().split('\n'), ['1', '1']);
    // And nothing of ours in the machine's own namespace.
    const root = JSON.parse((await run(['ip', '-j', 'link', 'show'])).stdout) as IpLink[];
    for (const n of ['cbr0', 'ext0', ...sb.listPods().map((p) => p.hostVeth)]) {
      assert.ok(!root.some((l) => l.ifname === n), `${n} must not exist in the root namespace`);
    }
  });
});

describe('netns sandbox: lifecycle', function () {
  this.timeout(60_000);
  before(function () {
    requireRoot(this);
  });

  it('create is idempotent, destroy is idempotent, and nothing with the prefix remains', async () => {
    const id = randomSandboxId();
    const first = await Sandbox.create({ id, pods: [{ name: 'x', tcpPorts: [80] }] });
    const firstPids = await first.agentPids();
    const sb = await Sandbox.create({
      id,
      pods: [
        { name: 'x', tcpPorts: [80] },
        { name: 'y', udpPorts: [53] },
      ],
    });
    try {
      assert.ok(
        firstPids.every((p) => !pidAlive(p)),
        'agents of the replaced sandbox are gone',
      );
      assert.deepEqual((await sandboxNamespaces(id)).sort(), [
        `svcp-${id}-node`,
        `svcp-${id}-outside`,
        `svcp-${id}-x`,
        `svcp-${id}-y`,
      ]);
      expectReply(await sb.request('y', { proto: 'tcp', ip: sb.podIP('x'), port: 80 }), 'x');
    } finally {
      const pids = await sb.agentPids();
      assert.ok(pids.length >= 2);
      await sb.destroy();
      await sb.destroy();
      await first.destroy();
      assert.deepEqual(await sandboxNamespaces(id), []);
      assert.ok(!(await listSandboxes()).includes(id));
      assert.ok(
        pids.every((p) => !pidAlive(p)),
        'agents killed',
      );
    }
  });

  it('a crashed owner leaves a recognizable leftover that cleanupLeftovers removes', async () => {
    const id = randomSandboxId();
    const src = new URL('../../src/netns/sandbox.ts', import.meta.url).pathname;
    // A separate process creates a sandbox and exits without destroying it.
    const code = `const { Sandbox } = await import(${JSON.stringify(src)});
      const sb = await Sandbox.create({ id: ${JSON.stringify(id)}, pods: [{ name: 'p', tcpPorts: [80] }] });
      console.log(JSON.stringify(await sb.agentPids()));
      process.exit(0);`;
    try {
      const res = await run([
        process.execPath,
        `--import=${import.meta.resolve('tsx')}`,
        '--input-type=module',
        '-e',
        code,
      ]);
      const pids = JSON.parse(res.stdout.trim().split('\n').pop()!) as number[];
      assert.equal(pids.length, 1);
      assert.ok((await listSandboxes()).includes(id));
      assert.equal(await isLeftover(id), true);
      const deadline = Date.now() + 3000;
      while (pids.some(pidAlive) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      assert.ok(!pids.some(pidAlive), 'agents exit when their owner dies');
      // A concurrent run's cleanup may have been faster: what counts is that it is gone.
      await cleanupLeftovers();
      assert.deepEqual(await sandboxNamespaces(id), []);
      assert.ok(!(await listSandboxes()).includes(id));
    } finally {
      if (isRoot()) await cleanupLeftovers().catch(() => undefined);
    }
  });

  it('destroy ends what runs in its namespaces with SIGTERM first (a daemon cleans up), then SIGKILL', async () => {
    const id = randomSandboxId();
    const sb = await Sandbox.create({ id });
    const dir = await mkdtemp(join(tmpdir(), 'svcp-term-'));
    const mark = join(dir, 'terminated');
    try {
      const polite = startProcess(
        ['sh', '-c', `trap 'echo term > ${mark}; exit 0' TERM; while :; do sleep 0.05; done`],
        { netns: sb.nodeNs },
      );
      const stubborn = startProcess(['sh', '-c', "trap '' TERM; while :; do sleep 0.05; done"], {
        netns: sb.nodeNs,
      });
      await new Promise((r) => setTimeout(r, 200));
      await sb.destroy();
      assert.equal(await polite.exited, 0, 'exited by its own TERM handler');
      assert.equal(await stubborn.exited, null, 'killed by a signal');
      assert.equal((await readFile(mark, 'utf8')).trim(), 'term');
      assert.deepEqual(await sandboxNamespaces(id), []);
    } finally {
      await sb.destroy();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('a live sandbox of this process is not a leftover', async () => {
    const id = randomSandboxId();
    const sb = await Sandbox.create({ id });
    try {
      assert.equal(await isLeftover(id), false);
      assert.ok(!(await cleanupLeftovers()).includes(id));
      assert.equal((await sandboxNamespaces(id)).length, 2);
    } finally {
      await sb.destroy();
    }
  });
});
