import assert from 'node:assert/strict';
import { IpvsProxier } from '../../src/ipvs/proxier.js';
import { buildClusterState } from '../../src/model/build.js';
import type { ClusterState } from '../../src/model/types.js';
import type { Sandbox } from '../../src/netns/sandbox.js';
import type { OpenConnection } from '../../src/netns/sandbox.js';
import { IptablesHarness, podEndpoints, serviceObject, sliceObject } from '../support/iptables-harness.js';
import { expectReply, useSandbox } from '../support/sandbox.js';
import { requireUml } from './helpers.js';

/**
 * The IPVS schedulers besides rr, wrr and mh (ipvs-traffic.test.ts, ipvs-cli.test.ts), each with real
 * TCP connections through a virtual server svcplane programmed with `--ipvs-scheduler <name>`, and the
 * behaviour that tells the scheduler apart:
 * - lc, wlc, sed, nq: while a connection to one endpoint is held open, the next goes to the idle one;
 * - ovf (weight 1 each): one endpoint until its active connections exceed its weight, then the other;
 * - sh: a client address always lands on the same endpoint, different clients on both;
 * - dh, lblc, lblcr (one destination address): every client lands on the same endpoint;
 * - fo: every client on one endpoint, the other once that one is gone.
 * Each scheduler gets its own Service (a fresh virtual server, no connection counts of the others).
 */

const NODE = 'node-1';
const PORT = 8080;
/** Client addresses of the outside namespace (routed to ClusterIPs via the node). */
const CLIENTS = ['192.0.2.101', '192.0.2.102', '192.0.2.103', '192.0.2.104', '192.0.2.105', '192.0.2.106'];

function stateOf(sb: Sandbox, index: number, pods: readonly string[]): ClusterState {
  const name = `sched-${index}`;
  const s = buildClusterState(
    [
      serviceObject(name, {
        clusterIPs: [`10.96.90.${index}`],
        ports: [{ name: 'http', port: 80, targetPort: PORT }],
      }),
      sliceObject(name, 'IPv4', [{ name: 'http', port: PORT }], podEndpoints(sb, pods)),
    ].map((obj) => ({ obj })),
  );
  assert.deepEqual(s.problems, []);
  return s;
}

describe('IPVS schedulers other than rr/wrr/mh (real connections, UML)', function () {
  this.timeout(120_000);
  before(function () {
    requireUml(this);
  });
  const env = useSandbox({
    pods: [
      { name: 'a', index: 2, tcpPorts: [PORT] },
      { name: 'b', index: 3, tcpPorts: [PORT] },
      { name: 'client', index: 10 },
    ],
  });
  let proxier: IpvsProxier | undefined;
  let index = 0;

  before(async () => {
    await new IptablesHarness(env.sb).addAddresses(
      'outside',
      'eth0',
      CLIENTS.map((ip) => `${ip}/24`),
    );
  });
  afterEach(async () => {
    proxier?.stop();
    await proxier?.idle();
    proxier = undefined;
  });

  /** Programs a fresh Service with `scheduler`; returns its ClusterIP. */
  async function serviceWith(scheduler: string, pods: readonly string[] = ['a', 'b']): Promise<string> {
    index++;
    proxier = new IpvsProxier({
      family: 'IPv4',
      nodeName: NODE,
      masqueradeBit: 14,
      masqueradeAll: false,
      clusterCIDRs: ['10.244.0.0/16'],
      nodePortAddresses: [],
      scheduler,
      strictARP: true,
      excludeCIDRs: [],
      tcpTimeout: 0,
      tcpFinTimeout: 0,
      udpTimeout: 0,
      netns: env.sb.nodeNs,
      gracefulCheckMs: 60_000,
    });
    await proxier.setup();
    await proxier.sync(stateOf(env.sb, index, pods));
    const vip = `10.96.90.${index}`;
    const saved = (await env.sb.exec('node', ['ipvsadm', '-Sn'])).stdout;
    assert.match(saved, new RegExp(`^-A -t ${vip.replaceAll('.', '\\.')}:80 -s ${scheduler}$`, 'm'), saved);
    return vip;
  }

  /** Who answers a new connection from `sourceIP` (outside) to vip:80. */
  const from = async (vip: string, sourceIP: string): Promise<string> =>
    expectReply(await env.sb.request('outside', { proto: 'tcp', ip: vip, port: 80, sourceIP })).pod;

  for (const scheduler of ['lc', 'wlc', 'sed', 'nq']) {
    it(`${scheduler}: with a connection held open on one endpoint, the next goes to the other`, async () => {
      const vip = await serviceWith(scheduler);
      const held: OpenConnection[] = [];
      try {
        for (let round = 0; round < 2; round++) {
          const first = await env.sb.openConnection('client', { ip: vip, port: 80 });
          held.push(first);
          const second = await env.sb.openConnection('client', { ip: vip, port: 80 });
          held.push(second);
          const [x, y] = [expectReply(first.result).pod, expectReply(second.result).pod];
          assert.notEqual(y, x, `round ${round}: both connections on ${x}`);
          assert.deepEqual([x, y].sort(), ['a', 'b']);
          // Both still open and answering on their endpoints.
          expectReply(await first.send(), x);
          expectReply(await second.send(), y);
          for (const c of held.splice(0)) await c.close();
        }
      } finally {
        for (const c of held) await c.close();
      }
    });
  }

  it('ovf: held connections stay on one endpoint until they exceed its weight (1), then overflow to the other', async () => {
    const vip = await serviceWith('ovf');
    const held: OpenConnection[] = [];
    try {
      for (let i = 0; i < 3; i++) held.push(await env.sb.openConnection('client', { ip: vip, port: 80 }));
      const [x, y, z] = held.map((c) => expectReply(c.result).pod);
      // The kernel skips a destination once activeconns > weight: two on the first, the third overflows.
      assert.equal(y, x, 'the second connection (activeconns 1 = weight) stays');
      assert.notEqual(z, x, 'the third overflows');
    } finally {
      for (const c of held) await c.close();
    }
  });

  it('sh: each client address sticks to one endpoint; different clients reach both', async () => {
    const vip = await serviceWith('sh');
    const seen = new Set<string>();
    for (const ip of CLIENTS) {
      const first = await from(vip, ip);
      for (let i = 0; i < 3; i++) assert.equal(await from(vip, ip), first, `client ${ip}`);
      seen.add(first);
    }
    assert.deepEqual([...seen].sort(), ['a', 'b'], 'the clients are spread over both endpoints');
  });

  for (const scheduler of ['dh', 'lblc', 'lblcr']) {
    it(`${scheduler}: one destination address, so every client lands on the same endpoint`, async () => {
      const vip = await serviceWith(scheduler);
      const seen = new Set<string>();
      for (const ip of CLIENTS) for (let i = 0; i < 2; i++) seen.add(await from(vip, ip));
      for (let i = 0; i < 4; i++)
        seen.add(expectReply(await env.sb.request('client', { proto: 'tcp', ip: vip, port: 80 })).pod);
      assert.equal(seen.size, 1, `answered by ${[...seen].join(', ')}`);
    });
  }

  it('fo: every client on one endpoint; when it is removed, on the other', async () => {
    const vip = await serviceWith('fo');
    const seen = new Set<string>();
    for (const ip of CLIENTS) seen.add(await from(vip, ip));
    assert.equal(seen.size, 1, `answered by ${[...seen].join(', ')}`);
    const [active] = [...seen] as [string];
    const other = active === 'a' ? 'b' : 'a';
    await proxier!.sync(stateOf(env.sb, index, [other]));
    for (const ip of CLIENTS) assert.equal(await from(vip, ip), other);
  });
});
