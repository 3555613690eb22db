import assert from 'node:assert/strict';
import type { AddressWatch } from '../../src/kernel/address-watch.js';
import type { Backend } from '../../src/modes/backend.js';
import {
  assertAnsweredBy,
  expectNoAnswer,
  IptablesHarness,
  nodeObject,
  podEndpoints,
  serviceObject,
  sliceObject,
  type HarnessMode,
  type ProxierOptions,
} from '../support/iptables-harness.js';
import { requireRoot, tcp, useSandbox } from '../support/sandbox.js';

/**
 * The daemon's proxiers read the node's addresses (NodePort addresses, node IPs) with `ip -j address`
 * only when `ip monitor address` reported a change (src/kernel/address-watch.ts), not once per sync.
 * Real kernel changes in the sandbox's node namespace, real NodePort traffic from outside: an address
 * added or removed changes the rules at the next sync; a killed monitor is started again, and while it
 * is down every sync reads.
 */

const WEB = 8080;
const NODE_PORT = 30377;
/** A second node address on ext0, inside --nodeport-addresses (the node's own 192.0.2.1 is not). */
const ADDED = '192.0.2.77';
const OPTIONS: ProxierOptions = { nodePortAddresses: ['192.0.2.64/26'] };

async function waitFor(what: string, cond: () => boolean, ms = 10_000): Promise<void> {
  const until = performance.now() + ms;
  while (!cond()) {
    if (performance.now() > until) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Reads until the watch holds a read it trusts (its monitor subscribed before the read began). */
async function cachedRead(w: AddressWatch): Promise<void> {
  const until = performance.now() + 10_000;
  while (!w.fresh) {
    if (performance.now() > until)
      assert.fail('timed out waiting for a subscribed monitor and a cached read');
    await w.addresses();
    await new Promise((r) => setTimeout(r, 10));
  }
}

for (const mode of ['iptables', 'nftables'] as const satisfies readonly HarnessMode[]) {
  describe(`${mode} mode: node addresses from a watch, not an ip fork per sync (real kernel, real traffic)`, function () {
    this.timeout(60_000);
    const env = useSandbox({ pods: [{ name: 'a', index: 2, tcpPorts: [WEB] }] });
    let h: IptablesHarness;
    let backend: Backend & { readonly addresses: AddressWatch };

    const objects = (): unknown[] => [
      nodeObject(env.sb),
      serviceObject('web', {
        type: 'NodePort',
        clusterIPs: ['10.96.30.10'],
        ports: [{ name: 'http', port: 80, targetPort: WEB, nodePort: NODE_PORT }],
      }),
      sliceObject('web', 'IPv4', [{ name: 'http', port: WEB }], podEndpoints(env.sb, ['a'])),
    ];
    const sync = async (): Promise<boolean> => {
      await h.sync(objects(), OPTIONS);
      return (mode === 'iptables' ? h.lastReports : h.lastNftReports)[0]!.full;
    };
    const nodePort = tcp(ADDED, NODE_PORT, 1500);

    before(async function () {
      requireRoot(this);
      h = new IptablesHarness(env.sb, ['IPv4'], mode);
      await sync();
      backend = mode === 'iptables' ? h.proxier('IPv4') : h.nftProxier('IPv4');
      // What the daemon does before its first sync.
      await backend.watchKernel!();
    });

    after(async () => {
      // The sandbox (and the addresses added to it) is gone by now: its after hook ran first.
      await backend?.close?.();
    });

    /** Outside sends ADDED to the node's ext0 whether or not the node holds it. */
    async function neighbourToNode(): Promise<void> {
      const link = JSON.parse((await env.sb.exec('node', ['ip', '-j', 'link', 'show', 'ext0'])).stdout) as {
        address: string;
      }[];
      const mac = link[0]!.address;
      await env.sb.exec('outside', [
        'ip',
        'neigh',
        'replace',
        ADDED,
        'lladdr',
        mac,
        'dev',
        'eth0',
        'nud',
        'permanent',
      ]);
    }

    it('syncs without an address change read no addresses; an added, then a removed address changes the NodePort rules at the next sync', async () => {
      const w = backend.addresses;
      await cachedRead(w);
      const reads = w.reads;
      assert.equal(await sync(), false);
      assert.equal(await sync(), false);
      assert.equal(w.reads, reads, 'two syncs, nothing changed: no `ip -j address`');

      await h.addAddresses('node', 'ext0', [`${ADDED}/24`]);
      // The address answers (the kernel's RST) but no rule sends its NodePort to the pod yet.
      await expectNoAnswer(env.sb, 'outside', nodePort, 'refused');
      await waitFor('the monitor to report the new address', () => !w.fresh);
      assert.equal(await sync(), true, 'the node facts changed: full sync');
      assert.ok(w.reads > reads, 'the sync read the addresses');
      const afterAdd = w.reads;
      assertAnsweredBy(await h.answers('outside', nodePort, { until: ['a'], max: 3 }), ['a']);

      // Gone from the node, the address is still sent to it (a static neighbour outside): the rule
      // written for it DNATs until the next sync drops it.
      await h.removeAddresses('node', 'ext0', [`${ADDED}/24`]);
      await neighbourToNode();
      assertAnsweredBy(await h.answers('outside', nodePort, { until: ['a'], max: 3 }), ['a']);
      await waitFor('the monitor to report the removal', () => !w.fresh);
      assert.equal(await sync(), true, 'the node facts changed again: full sync');
      await expectNoAnswer(env.sb, 'outside', nodePort);
      assert.ok(w.reads > afterAdd, 'the sync read the addresses');
      await env.sb.exec('outside', ['ip', 'neigh', 'del', ADDED, 'dev', 'eth0'], { allowFailure: true });
    });

    it('a killed monitor is started again; while it is down every sync reads the addresses', async () => {
      const w = backend.addresses;
      await h.removeAddresses('node', 'ext0', [`${ADDED}/24`]);
      const pid = w.monitorPid;
      assert.ok(pid !== undefined, 'the monitor runs');
      process.kill(pid, 'SIGKILL');
      await waitFor('the monitor to exit', () => w.monitorPid !== pid);
      // Changed while nobody watched: only the fallback read can see it.
      await h.addAddresses('node', 'ext0', [`${ADDED}/24`]);
      const reads = w.reads;
      assert.equal(await sync(), true, 'the fallback read saw the new address: full sync');
      assert.ok(w.reads > reads, 'the sync read the addresses');
      assertAnsweredBy(await h.answers('outside', nodePort, { until: ['a'], max: 3 }), ['a']);
      await cachedRead(w);
      assert.notEqual(w.monitorPid, pid);
      const again = w.reads;
      assert.equal(await sync(), false);
      assert.equal(w.reads, again, 'the new monitor is trusted: no read');
    });
  });
}
