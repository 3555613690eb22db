import assert from 'node:assert/strict';
import {
  IptablesHarness,
  nodeObject,
  podEndpoints,
  serviceObject,
  sliceObject,
} from '../support/iptables-harness.js';
import { expectError, expectReply, requireRoot, useSandbox } from '../support/sandbox.js';

/**
 * Full syncs on the nf_tables backend, in both ways they can write: `--noflush` in chunks (the
 * default) and whole tables (`--iptables-full-sync-mode=whole-table`). Another agent's chains and
 * rules in nat and filter must survive verbatim and keep working, and our jumps must not pile up.
 * Whole tables: a foreign change that races the sync (seen by the listing guard) makes it write in
 * chunks instead. (Rules another agent adds during the write itself: iptables-concurrent.test.ts.)
 */

const TARGET = 8080;
const VIP = '10.96.40.1';
/** A foreign DNAT (another agent's rule) from the outside to pod b. */
const FOREIGN_VIP = '203.0.113.50';
const FOREIGN_PORT = 8081;
/** A foreign filter rule: the node rejects this port. */
const REJECTED_PORT = 4444;

for (const [mode, expected] of [
  [undefined, 'chunked'],
  ['whole-table', 'whole-table'],
] as const) {
  describe(`iptables full sync (${mode ?? 'default'}: ${expected}), foreign rules kept (real traffic)`, function () {
    this.timeout(60_000);
    const opts = mode === undefined ? {} : { fullSyncMode: mode };
    const env = useSandbox({
      pods: [
        { name: 'a', index: 2, tcpPorts: [TARGET] },
        { name: 'b', index: 3, tcpPorts: [TARGET] },
        { name: 'client', index: 10 },
      ],
    });
    let h: IptablesHarness;

    const objects = (pods: string[]): unknown[] => [
      nodeObject(env.sb),
      serviceObject('web', { clusterIPs: [VIP], ports: [{ port: 80, targetPort: TARGET }] }),
      sliceObject('web', 'IPv4', [{ port: TARGET }], podEndpoints(env.sb, pods)),
    ];

    const ipt = (...args: string[]) => env.sb.exec('node', ['iptables', '-w', ...args]);

    before(async function () {
      requireRoot(this);
      h = new IptablesHarness(env.sb, ['IPv4']);
      await ipt('-t', 'nat', '-N', 'FOREIGN-DNAT');
      await ipt(
        '-t',
        'nat',
        '-A',
        'FOREIGN-DNAT',
        '-d',
        `${FOREIGN_VIP}/32`,
        '-p',
        'tcp',
        '--dport',
        String(FOREIGN_PORT),
        '-m',
        'comment',
        '--comment',
        'another agent',
        '-j',
        'DNAT',
        '--to-destination',
        `${env.sb.podIP('b', 'IPv4')}:${TARGET}`,
      );
      await ipt('-t', 'nat', '-A', 'PREROUTING', '-j', 'FOREIGN-DNAT');
      await ipt('-t', 'filter', '-N', 'FOREIGN-FLT');
      await ipt(
        '-t',
        'filter',
        '-A',
        'FOREIGN-FLT',
        '-p',
        'tcp',
        '--dport',
        String(REJECTED_PORT),
        '-j',
        'REJECT',
      );
      await ipt('-t', 'filter', '-A', 'INPUT', '-j', 'FOREIGN-FLT');
    });

    const foreignIntact = (save: string): void => {
      assert.match(
        save,
        new RegExp(
          `^-A FOREIGN-DNAT -d ${FOREIGN_VIP.replace(/\./g, '\\.')}/32 -p tcp -m tcp --dport ${FOREIGN_PORT} -m comment --comment "another agent" -j DNAT --to-destination `,
          'm',
        ),
      );
      assert.equal(save.match(/^-A PREROUTING -j FOREIGN-DNAT$/gm)?.length, 1);
      assert.equal(save.match(/^-A FOREIGN-FLT -p tcp -m tcp --dport 4444 -j REJECT/gm)?.length, 1);
      assert.equal(save.match(/^-A INPUT -j FOREIGN-FLT$/gm)?.length, 1);
      // Our jumps exist once, however many full syncs ran.
      assert.equal(save.match(/^-A PREROUTING .*-j KUBE-SERVICES$/gm)?.length, 1);
      assert.equal(save.match(/^-A OUTPUT .*-j KUBE-SERVICES$/gm)?.length, 2, 'nat and filter OUTPUT');
    };

    it('a full sync keeps foreign chains and rules, and they keep working', async () => {
      await h.sync(objects(['a']), opts);
      const report = h.proxier().lastSync;
      assert.equal(report?.full, true);
      assert.equal(report?.details?.mode, expected);
      foreignIntact(await h.save());
      expectReply(await env.sb.request('client', { proto: 'tcp', ip: VIP, port: 80 }), 'a');
      expectReply(
        await env.sb.request('outside', { proto: 'tcp', ip: FOREIGN_VIP, port: FOREIGN_PORT }),
        'b',
      );
      expectError(
        await env.sb.request('outside', { proto: 'tcp', ip: env.sb.nodeIPv4, port: REJECTED_PORT }),
        'refused',
      );
    });

    it('repeated full syncs keep the foreign rules and do not duplicate our jumps', async () => {
      h.proxier().forceFullSync();
      await h.sync(objects(['b']), opts);
      h.proxier().forceFullSync();
      await h.sync(objects(['b']), opts);
      assert.equal(h.proxier().lastSync?.details?.mode, expected);
      foreignIntact(await h.save());
      await h.flushConntrack();
      expectReply(await env.sb.request('client', { proto: 'tcp', ip: VIP, port: 80 }), 'b');
      expectReply(
        await env.sb.request('outside', { proto: 'tcp', ip: FOREIGN_VIP, port: FOREIGN_PORT }),
        'b',
      );
    });

    it('a foreign rule added between the listings is not lost', async () => {
      const p = h.proxier();
      const list = p.ipt.listChainRules.bind(p.ipt);
      let calls = 0;
      p.ipt.listChainRules = async (input: string) => {
        const out = await list(input);
        // Right after the first listing, another agent adds a rule.
        if (calls++ === 0)
          await ipt('-t', 'nat', '-A', 'FOREIGN-DNAT', '-d', '203.0.113.51/32', '-j', 'RETURN');
        return out;
      };
      try {
        p.forceFullSync();
        await h.sync(objects(['a']), opts);
      } finally {
        p.ipt.listChainRules = list;
      }
      // Whole tables: the guard saw the change and the sync wrote in chunks instead.
      assert.equal(p.lastSync?.details?.mode, 'chunked');
      const save = await h.save();
      assert.match(save, /^-A FOREIGN-DNAT -d 203\.0\.113\.51\/32 -j RETURN$/m);
      foreignIntact(save);
      await h.flushConntrack();
      expectReply(await env.sb.request('client', { proto: 'tcp', ip: VIP, port: 80 }), 'a');
    });
  });
}
