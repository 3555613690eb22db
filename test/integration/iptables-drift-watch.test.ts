import assert from 'node:assert/strict';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { endpointChainName, serviceChainName } from '../../src/iptables/names.js';
import { IptablesProxier } from '../../src/iptables/proxier.js';
import { buildClusterState } from '../../src/model/build.js';
import type { ClusterState } from '../../src/model/types.js';
import type { RunResult } from '../../src/util/exec.js';
import { expectError, useSandbox } from '../support/sandbox.js';
import {
  podEndpoints,
  sandboxProxierConfig,
  serviceObject,
  sliceObject,
} from '../support/iptables-harness.js';

/**
 * The daemon's drift check with its kernel watch (`nft monitor`, iptables/commit-log.ts): after our
 * own syncs it reads nothing; when another agent touches our chains it compares just those chains
 * with the comparison `svcplane diff` uses (iptables-rules/compare.ts); when it cannot tell which (a
 * deleted table, a dead monitor) it compares everything. Every repair is proven with real traffic.
 * iptables-save is wrapped to count the whole-ruleset reads.
 */

const TARGET = 8080;

describe('iptables drift checks with the kernel watch (nft monitor, real traffic)', function () {
  this.timeout(60_000);
  const env = useSandbox({
    pods: [
      { name: 'a', index: 2, tcpPorts: [TARGET] },
      { name: 'b', index: 3, tcpPorts: [TARGET] },
      { name: 'client', index: 10 },
    ],
  });
  let dir = '';
  let proxier: IptablesProxier;
  const saves = async (): Promise<number> =>
    (await readFile(join(dir, 'saves'), 'utf8').catch(() => '')).split('\n').filter((l) => l !== '').length;

  const current = (): ClusterState => {
    const objects = [
      serviceObject('one', {
        clusterIPs: ['10.96.50.1'],
        ports: [{ name: 'http', port: 80, targetPort: TARGET }],
      }),
      sliceObject('one', 'IPv4', [{ name: 'http', port: TARGET }], podEndpoints(env.sb, ['a'])),
      serviceObject('two', {
        clusterIPs: ['10.96.50.2'],
        ports: [{ name: 'http', port: 80, targetPort: TARGET }],
      }),
      sliceObject('two', 'IPv4', [{ name: 'http', port: TARGET }], podEndpoints(env.sb, ['b'])),
      serviceObject('empty', {
        clusterIPs: ['10.96.50.3'],
        ports: [{ name: 'http', port: 80, targetPort: TARGET }],
      }),
      sliceObject('empty', 'IPv4', [{ name: 'http', port: TARGET }], []),
    ];
    const s = buildClusterState(objects.map((obj, i) => ({ obj, source: `watch#${i}` })));
    assert.deepEqual(s.problems, []);
    return s;
  };
  const sep = (name: string, pod: string): string =>
    endpointChainName(`default/${name}:http`, 'tcp', `${env.sb.podIP(pod)}:${TARGET}`);
  const ipt = (...args: string[]): Promise<RunResult> => env.sb.exec('node', ['iptables', ...args]);

  async function answerer(ip: string, timeoutMs = 800): Promise<string | undefined> {
    const r = await env.sb.request('client', { proto: 'tcp', ip, port: 80, timeoutMs });
    return r.ok ? r.reply.pod : undefined;
  }

  /** A drift check that finds drift, by a check of `kind`. */
  async function drifted(kind: 'scoped' | 'full'): Promise<void> {
    assert.equal(await proxier.detectDrift(), true, 'drift detected');
    assert.equal(proxier.lastDriftCheck?.kind, kind, JSON.stringify(proxier.lastDriftCheck));
  }

  /** Repaired by a full sync: traffic back, and the next check is quiet. */
  async function repaired(): Promise<void> {
    assert.equal((await proxier.sync(current())).full, true);
    assert.equal(await answerer('10.96.50.1'), 'a');
    assert.equal(await answerer('10.96.50.2'), 'b');
    expectError(await env.sb.request('client', { proto: 'tcp', ip: '10.96.50.3', port: 80 }), 'refused');
    await quiet();
  }

  /** A drift check that finds nothing and reads no rule. */
  async function quiet(): Promise<void> {
    const before = await saves();
    assert.equal(await proxier.detectDrift(), false);
    assert.equal(proxier.lastDriftCheck?.kind, 'quiet', JSON.stringify(proxier.lastDriftCheck));
    assert.equal(await saves(), before, 'no iptables-save');
  }

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'svcp-watch-'));
    const wrapper = join(dir, 'iptables-save');
    await writeFile(wrapper, `#!/bin/sh\necho x >> ${join(dir, 'saves')}\nexec iptables-save "$@"\n`);
    await chmod(wrapper, 0o755);
    proxier = new IptablesProxier(sandboxProxierConfig(env.sb, { binaries: { save: wrapper } }));
    await proxier.setup();
    await proxier.watchKernel();
    assert.ok(proxier.kernelWatchPid !== undefined, 'nft monitor runs');
  });
  after(async () => {
    await proxier?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('after our own full and partial syncs a drift check reads nothing', async () => {
    assert.equal((await proxier.sync(current())).full, true);
    assert.equal(await answerer('10.96.50.1'), 'a');
    await quiet();
    const partial = await proxier.sync(current());
    assert.equal(partial.full, false);
    await quiet();
  });

  it("another agent's own chains and rules (a CNI's, IPv6) are not drift and read nothing", async () => {
    await ipt('-t', 'nat', '-N', 'CNI-HOSTPORT-DNAT');
    await ipt('-t', 'nat', '-A', 'CNI-HOSTPORT-DNAT', '-p', 'tcp', '--dport', '9999', '-j', 'RETURN');
    await env.sb.exec('node', ['ip6tables', '-t', 'nat', '-N', 'KUBE-SOMEONE-ELSE']);
    await quiet();
  });

  it('a foreign jump added to PREROUTING: only PREROUTING is read, no drift', async () => {
    const before = await saves();
    await ipt('-t', 'nat', '-A', 'PREROUTING', '-j', 'CNI-HOSTPORT-DNAT');
    assert.equal(await proxier.detectDrift(), false);
    assert.deepEqual(proxier.lastDriftCheck?.chains, ['nat/PREROUTING']);
    assert.equal(proxier.lastDriftCheck?.kind, 'scoped');
    assert.equal(await saves(), before, 'no iptables-save');
    await quiet();
  });

  it('a rule deleted from a SEP chain: that chain alone is compared, then repaired', async () => {
    const before = await saves();
    await ipt('-t', 'nat', '-D', sep('two', 'b'), '2');
    assert.equal(await answerer('10.96.50.2', 500), undefined, 'no DNAT any more');
    await drifted('scoped');
    assert.deepEqual(proxier.lastDriftCheck?.chains, [`nat/${sep('two', 'b')}`]);
    assert.match(proxier.lastDriftCheck?.reason ?? '', /1 missing rule/);
    assert.equal(await saves(), before, 'no iptables-save');
    await repaired();
  });

  it('our jump deleted from OUTPUT and a KUBE-SVC chain deleted: those chains compared, repaired', async () => {
    const svc = serviceChainName('default/one:http', 'tcp');
    await ipt(
      '-t',
      'nat',
      '-D',
      'OUTPUT',
      '-m',
      'comment',
      '--comment',
      'kubernetes service portals',
      '-j',
      'KUBE-SERVICES',
    );
    await ipt('-t', 'nat', '-F', 'KUBE-SERVICES');
    await ipt('-t', 'nat', '-F', svc);
    await ipt('-t', 'nat', '-X', svc);
    await drifted('scoped');
    assert.deepEqual(
      [...(proxier.lastDriftCheck?.chains ?? [])].sort(),
      ['nat/KUBE-SERVICES', 'nat/OUTPUT', `nat/${svc}`].sort(),
    );
    assert.match(proxier.lastDriftCheck?.reason ?? '', /missing jump/);
    await repaired();
  });

  it('`nft delete table ip nat`: everything compared (one iptables-save), repaired', async () => {
    const before = await saves();
    await env.sb.exec('node', ['nft', 'delete', 'table', 'ip', 'nat']);
    await drifted('full');
    assert.match(proxier.lastDriftCheck?.why ?? '', /table ip nat deleted/);
    assert.equal(await saves(), before + 1);
    await repaired();
  });

  it('a killed nft monitor is restarted; that check compares everything, later ones read nothing', async () => {
    const pid = proxier.kernelWatchPid;
    assert.ok(pid !== undefined);
    process.kill(pid, 'SIGKILL');
    for (let i = 0; i < 100 && proxier.kernelWatchPid === pid; i++)
      await new Promise((r) => setTimeout(r, 20));
    assert.equal(proxier.kernelWatchPid, undefined, 'the proxier saw its monitor exit');
    await ipt('-t', 'nat', '-F', sep('one', 'a'));
    await drifted('full');
    assert.ok(proxier.kernelWatchPid !== undefined && proxier.kernelWatchPid !== pid, 'a new monitor');
    await repaired();
  });

  /**
   * One restore of ours whose events overflow nft's socket (~33 MB here): 60k rules with long
   * comments in a chain that is not ours to compare, written while the monitor is stopped (SIGSTOP),
   * so that the kernel drops events for sure, as the 10k full sync's restore makes it do under load.
   * `meanwhile` runs before the monitor reads again; the monitor then catches up.
   */
  async function overflow(meanwhile: () => Promise<unknown>, drain = true): Promise<void> {
    const pid = proxier.kernelWatchPid;
    assert.ok(pid !== undefined);
    const comment = 'x'.repeat(250);
    const rules: string[] = ['*filter', ':FLOOD - [0:0]'];
    for (let i = 0; i < 60_000; i++)
      rules.push(
        `-A FLOOD -s 10.${i >> 16}.${(i >> 8) & 255}.${i & 255}/32 -m comment --comment "${comment}" -j RETURN`,
      );
    rules.push('COMMIT', '');
    process.kill(pid, 'SIGSTOP');
    try {
      await proxier.ipt.restore(rules.join('\n'), { noflush: true, counters: false });
      await meanwhile();
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    // The daemon checks a sync period later, when nft has read the 33 MB of events (or at once,
    // after a sync longer than the period).
    for (let i = 0; drain && i < 600 && (await proxier.ipt.monitorSocket(pid))?.queued !== 0; i++)
      await new Promise((r) => setTimeout(r, 100));
  }

  it('events nft monitor lost during our own restore: the generations were all ours, the check reads nothing', async function () {
    this.timeout(180_000);
    await quiet();
    await overflow(async () => {});
    await quiet();
    assert.match(proxier.lastDriftCheck?.settled ?? '', /lost some netlink events/, 'events were lost');
    await quiet();
    // At once: the check's first probe is dropped with the rest while the socket is still full.
    await overflow(async () => {}, false);
    await quiet();
    assert.match(proxier.lastDriftCheck?.settled ?? '', /lost some netlink events/, 'events were lost');
    await quiet();
  });

  it('another agent deletes a rule while nft monitor loses events of ours: found by a full check, repaired', async function () {
    this.timeout(180_000);
    await quiet();
    const before = await saves();
    await overflow(() => ipt('-t', 'nat', '-D', sep('one', 'a'), '2'));
    await drifted('full');
    assert.match(proxier.lastDriftCheck?.why ?? '', /lost some netlink events|missed generations/);
    assert.match(proxier.lastDriftCheck?.reason ?? '', /1 missing rule/);
    assert.equal(await saves(), before + 1);
    await repaired();
  });
});
