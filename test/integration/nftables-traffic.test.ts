import assert from 'node:assert/strict';
import type { RequestSpec } from '../../src/netns/protocol.js';
import { portNames } from '../../src/nftables/names.js';
import { deleteKubeProxyTables } from '../../src/nftables/nft.js';
import { traceNftables, type NftTracePacket, type NftTraceResult } from '../../src/nftables/trace.js';
import { listAddresses } from '../../src/kernel/netif.js';
import type { Where } from '../../src/netns/sandbox.js';
import {
  answeredPeer,
  assertAnsweredBy,
  expectNoAnswer,
  IptablesHarness,
  podEndpoints,
  serviceObject,
  sliceObject,
  type ProxierOptions,
} from '../support/iptables-harness.js';
import { requireRoot, tcp, useSandbox } from '../support/sandbox.js';
import { clusterObjects, OUTSIDE_OTHER_IP, TOPOLOGY } from '../support/scenarios/table.js';
import { traceAgrees } from '../support/trace-check.js';

/**
 * nftables mode (kube-proxy's nftables proxier), what is its own, IPv4 and IPv6: trace (its nft
 * listing walked, and `svcplane trace`) against real traffic, partial syncs, drift repair, refused
 * transactions and cleanup. The traffic scenarios every mode shares are the scenario table's
 * (test/support/scenarios/, run by scenarios-nftables.test.ts); this suite uses its cluster and
 * sandbox: plain Service and EndpointSlice objects → buildClusterState → NftablesProxier (both
 * families, in-process, programming the sandbox node with `nft -f -`) → real requests.
 */

const BACKENDS = ['a', 'b'] as const;
const WEB = 8080;
const DNS = 53;
const MASQ_V4 = '10.244.0.1';
const MASQ_V6 = 'fd00:10:244::1';
/** A client address only the trace test uses (no affinity entry from another test). */
const TRACE_CLIENT_IP = '192.0.2.140';
const DROP_MS = 600;
const LONG_MS = 3000;

const udp = (ip: string, port: number, timeoutMs?: number): RequestSpec => ({
  proto: 'udp',
  ip,
  port,
  ...(timeoutMs !== undefined ? { timeoutMs } : {}),
});

describe('nftables mode: trace, partial syncs, drift and cleanup (real traffic)', function () {
  this.timeout(30_000);
  const env = useSandbox(TOPOLOGY);
  let h: IptablesHarness;

  /** The scenario table's cluster (test/support/scenarios/table.ts), plus what a test adds. */
  const objects = (extra: unknown[] = []): unknown[] => [...clusterObjects(env.sb), ...extra];

  const scenario = (opts: ProxierOptions = {}, extra: unknown[] = []): Promise<unknown> =>
    h.sync(objects(extra), opts);

  before(async function () {
    requireRoot(this);
    this.timeout(60_000);
    h = new IptablesHarness(env.sb, ['IPv4', 'IPv6'], 'nftables');
    await h.addAddresses(
      'outside',
      'eth0',
      [OUTSIDE_OTHER_IP, TRACE_CLIENT_IP].map((ip) => `${ip}/24`),
    );
    await scenario();
  });

  describe('trace (nft -j list table) agrees with real traffic', () => {
    beforeEach(() => scenario());

    /** Traces `req` from `from` on the node's own listing; `fromNode` for requests the node sends. */
    async function trace(from: Where, req: RequestSpec & { sourceIP?: string }): Promise<NftTraceResult> {
      const sb = env.sb;
      const family = req.ip.includes(':') ? 'IPv6' : 'IPv4';
      const table = await h.nftProxier(family).nft.listTable();
      const local = (await listAddresses({ netns: sb.nodeNs })).map((a) => a.ip);
      const src =
        req.sourceIP ??
        (from === 'outside'
          ? family === 'IPv4'
            ? sb.outsideIPv4
            : sb.outsideIPv6
          : from === 'node'
            ? family === 'IPv4'
              ? sb.nodeIPv4
              : sb.nodeIPv6
            : sb.podIP(from, family));
      const pkt: NftTracePacket = {
        family,
        src,
        dst: req.ip,
        proto: req.proto === 'udp' ? 'udp' : 'tcp',
        dport: req.port,
        fromNode: from === 'node',
      };
      return traceNftables(table, pkt, { localAddresses: local });
    }

    it('ClusterIP, NodePort, externalIP: the endpoints that answer and the masquerade the backend sees', async () => {
      const sb = env.sb;
      for (const [from, req, masq] of [
        ['client', tcp('10.96.0.10', 80), false],
        ['outside', tcp('10.96.0.10', 80), true],
        ['client', tcp('fd00:10:96::20', 80), false],
        ['outside', tcp(sb.nodeIPv4, 30080), true],
        ['outside', udp(sb.nodeIPv4, 30053), true],
        ['outside', tcp(sb.nodeIPv6, 30080), true],
        ['outside', tcp('203.0.113.10', 80), true],
      ] as const) {
        const t = await trace(from, req);
        const v6 = req.ip.includes(':');
        const port = req.proto === 'udp' ? DNS : WEB;
        assert.equal(t.verdict, 'dnat', `${from} → ${req.ip}:${req.port}: ${t.steps.join(' | ')}`);
        const want = BACKENDS.map((p) =>
          v6 ? `[${sb.podIP(p, 'IPv6')}]:${port}` : `${sb.podIP(p)}:${port}`,
        );
        assert.deepEqual(t.endpoints.map((e) => e.endpoint).sort(), want.sort());
        assert.equal(t.masquerade, masq, `${from} → ${req.ip}:${req.port} masquerade`);
        // And the real packet: answered by one of them, with the source the trace predicts.
        const { peer } = answeredPeer(await sb.request(from, req), BACKENDS);
        const expectedPeer = masq ? (v6 ? MASQ_V6 : MASQ_V4) : sb.podIP(from, v6 ? 'IPv6' : 'IPv4');
        assert.equal(peer, expectedPeer);
      }
    });

    it('reject, drop, eTP=Local, affinity: the verdict and the endpoint the kernel picks', async () => {
      const sb = env.sb;
      // No endpoints: rejected, and the real request is refused.
      const empty = await trace('client', tcp('10.96.0.50', 80));
      assert.equal(empty.verdict, 'reject', empty.steps.join(' | '));
      await expectNoAnswer(sb, 'client', tcp('10.96.0.50', 80, LONG_MS), 'refused');
      // Source ranges: another source is dropped.
      const fw = await trace('outside', { ...tcp('198.51.100.20', 80), sourceIP: OUTSIDE_OTHER_IP });
      assert.equal(fw.verdict, 'drop', fw.steps.join(' | '));
      assert.equal((await trace('outside', tcp('198.51.100.20', 80))).verdict, 'dnat');
      // eTP=Local from outside: the local endpoint only, the source kept.
      const local = await trace('outside', tcp(sb.nodeIPv4, 30090));
      assert.deepEqual(
        [local.verdict, local.endpoints.map((e) => e.endpoint), local.masquerade],
        ['dnat', [`${sb.podIP('a')}:${WEB}`], false],
      );
      assert.equal(
        answeredPeer(await sb.request('outside', tcp(sb.nodeIPv4, 30090)), 'a').peer,
        sb.outsideIPv4,
      );
      // A port the ClusterIP does not serve: rejected.
      assert.equal((await trace('client', tcp('10.96.0.10', 81))).verdict, 'reject');
      // Affinity: after a real request, the client is in one endpoint's set and the trace names it.
      const req = { ...tcp('10.96.0.70', 80), sourceIP: TRACE_CLIENT_IP };
      const before = await trace('outside', req);
      assert.equal(before.endpoints.length, 2, 'before: either endpoint');
      const who = answeredPeer(await sb.request('outside', req)).reply.pod;
      const after = await trace('outside', req);
      assert.deepEqual(
        after.endpoints.map((e) => [e.endpoint, e.via]),
        [[`${sb.podIP(who)}:${WEB}`, 'affinity']],
      );
    });
  });

  describe('svcplane trace (as the CLI reads the node) agrees with real traffic', () => {
    beforeEach(() => scenario());

    it('frontends, both families: endpoints, masquerade, reject, drop', async () => {
      const sb = env.sb;
      for (const [from, req, verdict, endpoints, masq] of [
        ['client', tcp('10.96.0.10', 80), 'dnat', 2, false],
        ['outside', tcp('10.96.0.10', 80), 'dnat', 2, true],
        ['client', tcp('fd00:10:96::20', 80), 'dnat', 2, false],
        ['outside', tcp(sb.nodeIPv6, 30080), 'dnat', 2, true],
        ['outside', udp(sb.nodeIPv4, 30053), 'dnat', 2, true],
        ['node', tcp('10.96.0.10', 80), 'dnat', 2, true],
        ['outside', tcp('203.0.113.10', 80), 'dnat', 2, true],
        ['outside', tcp(sb.nodeIPv4, 30090), 'dnat', 1, false],
        ['client', tcp('10.96.0.50', 80), 'reject', 0, false],
        ['outside', tcp(sb.nodeIPv4, 30091), 'drop', 0, false],
      ] as const) {
        const t = await traceAgrees(sb, from, req);
        assert.deepEqual(
          [t.verdict, t.endpoints.length, t.masquerade],
          [verdict, endpoints, masq],
          `${from} → ${req.ip}:${req.port}`,
        );
      }
    });
  });

  describe('partial syncs, drift, cleanup', () => {
    it('one endpoint change is a partial sync of that Service only; traffic follows', async () => {
      const sb = env.sb;
      await scenario();
      const onlyA = sliceObject('extra', 'IPv4', [{ port: WEB }], podEndpoints(sb, ['a']));
      const svc = serviceObject('extra', {
        clusterIPs: ['10.96.0.99'],
        ports: [{ port: 80, targetPort: WEB }],
      });
      await scenario({}, [svc, onlyA]);
      assertAnsweredBy(await h.answers('client', tcp('10.96.0.99', 80), { max: 6 }), ['a']);
      await scenario({}, [svc, sliceObject('extra', 'IPv4', [{ port: WEB }], podEndpoints(sb, ['b']))]);
      const r = h.lastNftReports[0]!;
      assert.equal(r.full, false);
      assert.equal(r.writtenServices, 1);
      assert.equal(r.staleChains, 1, 'the endpoint chain of a is stale');
      assert.ok(r.lines < 20, `a small transaction (${r.lines} lines)`);
      await h.flushConntrack();
      assertAnsweredBy(await h.answers('client', tcp('10.96.0.99', 80), { max: 6 }), ['b']);
      // Removing the Service: its ClusterIP is rejected no more (no cluster-ips element), no answer.
      await scenario();
      await expectNoAnswer(sb, 'client', tcp('10.96.0.99', 80, DROP_MS));
      const aChain = portNames('default', 'extra', 'tcp', '').endpoint(sb.podIP('a'), WEB).chain;
      await new Promise((r) => setTimeout(r, 1100));
      await scenario();
      const chains = (await h.nftProxier('IPv4').nft.listChains()).map((c) => c.name);
      assert.ok(!chains.includes(aChain), 'stale endpoint chain deleted a second later');
      assert.ok(
        !chains.some((c) => c.includes('/extra/')),
        chains.filter((c) => c.includes('/extra/')).join(' '),
      );
    });

    it('drift: a deleted map element and a flushed chain are detected and repaired', async () => {
      const sb = env.sb;
      await scenario();
      const p = h.nftProxier('IPv4');
      assert.equal(await p.detectDrift(), false, 'no drift right after a sync');
      await sb.exec('node', [
        'nft',
        'delete',
        'element',
        'ip',
        'kube-proxy',
        'service-ips',
        '{ 10.96.0.10 . tcp . 80 }',
      ]);
      await expectNoAnswer(sb, 'client', tcp('10.96.0.10', 80, DROP_MS));
      assert.equal(await p.detectDrift(), true);
      await scenario();
      assert.equal(h.lastNftReports[0]!.full, true);
      answeredPeer(await sb.request('client', tcp('10.96.0.10', 80)), BACKENDS);
      const svcChain = portNames('default', 'web', 'tcp', 'http').cluster;
      await sb.exec('node', ['nft', 'flush', 'chain', 'ip', 'kube-proxy', svcChain]);
      assert.equal(await p.detectDrift(), true);
      await scenario();
      answeredPeer(await sb.request('client', tcp('10.96.0.10', 80)), BACKENDS);
    });

    it('a stale chain the kernel will not delete yet: counted as a cleanup failure, retried later', async () => {
      const sb = env.sb;
      await scenario();
      // Another agent's chain (in our table) jumps to web's service chain: the kernel refuses to
      // delete it (EBUSY) once web has no endpoints and the chain is stale.
      const svcChain = portNames('default', 'web', 'tcp', 'http').cluster;
      await sb.exec('node', ['nft', 'add', 'chain', 'ip', 'kube-proxy', 'foreign']);
      await sb.exec('node', ['nft', 'add', 'rule', 'ip', 'kube-proxy', 'foreign', 'jump', svcChain]);
      try {
        const without = objects().filter(
          (o) => (o as { metadata?: { name?: string } }).metadata?.name !== 'web-v4',
        );
        await h.sync(without);
        await new Promise((r) => setTimeout(r, 1100));
        // Its deletion rides in the next sync's transaction: refused as a whole (the rules stay)…
        await assert.rejects(h.sync(without), /Device or resource busy/);
        // …so stale chains are deleted on their own from then on: counted, the sync goes through.
        await new Promise((r) => setTimeout(r, 1100));
        await h.sync(without);
        await new Promise((r) => setTimeout(r, 1100));
        await h.sync(without);
        assert.equal(h.lastNftReports[0]!.details?.cleanupFailures, 1);
        await expectNoAnswer(sb, 'client', tcp('10.96.0.10', 80, LONG_MS), 'refused');
      } finally {
        await sb.exec('node', ['nft', 'delete', 'chain', 'ip', 'kube-proxy', 'foreign'], {
          allowFailure: true,
        });
      }
      await scenario();
      answeredPeer(await sb.request('client', tcp('10.96.0.10', 80)), BACKENDS);
      const chains = (await h.nftProxier('IPv4').nft.listChains()).map((c) => c.name);
      assert.ok(chains.includes(svcChain));
    });

    it('a transaction the kernel refuses changes nothing; the next sync is full and converges', async () => {
      const sb = env.sb;
      await scenario();
      // Another agent's rule uses sticky's affinity set for endpoint b: the partial sync that drops
      // b must delete that set, the kernel refuses (EBUSY), and the whole transaction with it,
      // including the new Service it also carries.
      const setB = portNames('default', 'sticky', 'tcp', '').endpoint(sb.podIP('b'), WEB).affinitySet;
      await sb.exec('node', ['nft', 'add', 'chain', 'ip', 'kube-proxy', 'foreign']);
      await sb.exec('node', [
        'nft',
        'add',
        'rule',
        'ip',
        'kube-proxy',
        'foreign',
        'ip',
        'saddr',
        `@${setB}`,
        'accept',
      ]);
      const extra = [
        serviceObject('extra', { clusterIPs: ['10.96.0.99'], ports: [{ port: 80, targetPort: WEB }] }),
        sliceObject('extra', 'IPv4', [{ port: WEB }], podEndpoints(sb, ['a'])),
      ];
      const changed = objects(extra).map((o) =>
        (o as { metadata?: { name?: string } }).metadata?.name === 'sticky-v4'
          ? sliceObject('sticky', 'IPv4', [{ port: WEB }], podEndpoints(sb, ['a']))
          : o,
      );
      const p = h.nftProxier('IPv4');
      try {
        await assert.rejects(h.sync(changed), /Device or resource busy|Resource busy/);
        assert.equal(p.lastAttemptFull, false, 'the refused one was a partial sync');
        // Nothing of it reached the kernel: the new Service is not there, sticky still has b.
        await expectNoAnswer(sb, 'client', tcp('10.96.0.99', 80, DROP_MS));
        assert.ok((await p.nft.listSets()).some((x) => x.name === setB));
      } finally {
        await sb.exec('node', ['nft', 'delete', 'chain', 'ip', 'kube-proxy', 'foreign'], {
          allowFailure: true,
        });
      }
      await h.sync(changed);
      assert.equal(h.lastNftReports[0]!.full, true, 'the sync after a failure is full');
      answeredPeer(await sb.request('client', tcp('10.96.0.99', 80)), 'a');
      assert.ok(!(await p.nft.listSets()).some((x) => x.name === setB), 'the stale affinity set is gone');
    });

    it('a full sync in parts refused part-way: the previous verdicts serve, new chains are unreachable; the next sync converges', async () => {
      const sb = env.sb;
      await scenario();
      // Another agent's base chain carries the name of parted's service chain: parted's Services part
      // goes through (a rule may be added to it), the elements part pointing service-ips at it is
      // refused (no goto to a base chain: EOPNOTSUPP).
      const partedChain = portNames('default', 'parted', 'tcp', '').cluster;
      const aChain = portNames('default', 'parted', 'tcp', '').endpoint(sb.podIP('a'), WEB).chain;
      await sb.exec('node', [
        'nft',
        'add chain ip kube-proxy',
        partedChain,
        '{ type nat hook output priority 200 ; }',
      ]);
      const parted = [
        serviceObject('parted', { clusterIPs: ['10.96.0.98'], ports: [{ port: 80, targetPort: WEB }] }),
        sliceObject('parted', 'IPv4', [{ port: WEB }], podEndpoints(sb, ['a'])),
      ];
      const small = { fullSyncPartLines: 1 }; // every Service in a transaction of its own
      try {
        await scenario(small);
        const p = h.nftProxier('IPv4');
        assert.ok(Number(h.lastNftReports[0]!.details?.transactions) > 4, 'setup, Services…, elements');
        p.forceFullSync();
        await assert.rejects(scenario(small, parted), /part \d+: elements.*Operation not supported/s);
        assert.equal(p.lastAttemptFull, true);
        // The Services parts before it were committed (parted's endpoint chain exists), but no element
        // points to them: the previous verdicts serve, 10.96.0.98 goes nowhere.
        assert.ok(
          (await p.nft.listChains()).some((c) => c.name === aChain),
          'new chain written',
        );
        await expectNoAnswer(sb, 'client', tcp('10.96.0.98', 80, DROP_MS));
        answeredPeer(await sb.request('client', tcp('10.96.0.10', 80)), BACKENDS);
      } finally {
        await sb.exec('node', ['nft', 'delete chain ip kube-proxy', partedChain], { allowFailure: true });
      }
      await scenario(small, parted);
      assert.equal(h.lastNftReports[0]!.full, true, 'the sync after a failure is full');
      answeredPeer(await sb.request('client', tcp('10.96.0.98', 80)), 'a');
      answeredPeer(await sb.request('client', tcp('10.96.0.10', 80)), BACKENDS);
    });

    it('cleanup removes both kube-proxy tables, and traffic is no longer steered', async () => {
      const sb = env.sb;
      await scenario();
      assert.deepEqual(await deleteKubeProxyTables({ netns: sb.nodeNs }), []);
      assert.equal(await h.nftProxier('IPv4').nft.listTable(), undefined);
      assert.equal(await h.nftProxier('IPv6').nft.listTable(), undefined);
      await expectNoAnswer(sb, 'client', tcp('10.96.0.10', 80, DROP_MS));
      assert.equal(await h.nftProxier('IPv4').detectDrift(), true);
      await scenario();
      answeredPeer(await sb.request('client', tcp('10.96.0.10', 80)), BACKENDS);
    });
  });
});
