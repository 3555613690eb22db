import assert from 'node:assert/strict';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RestoreError } from '../../src/iptables/iptables.js';
import { endpointChainName, serviceChainName } from '../../src/iptables/names.js';
import { IptablesProxier } from '../../src/iptables/proxier.js';
import { parseIptablesSave, ruleComment, rulesOf, serviceChainsOf } from '../../src/iptables/save-parse.js';
import { buildClusterState, type SourceObject } from '../../src/model/build.js';
import type { ClusterState, IPFamily } from '../../src/model/types.js';
import type { Sandbox } from '../../src/netns/sandbox.js';
import type { RunResult } from '../../src/util/exec.js';
import { runSvcplane } from '../support/daemon.js';
import { CLUSTER_CIDRS, NODE_NAME, sandboxProxierConfig } from '../support/iptables-harness.js';
import { recordRestoreInputs } from '../../bench/restore-inputs.js';
import { expectError, expectReply, useSandbox } from '../support/sandbox.js';

/**
 * How IptablesProxier keeps a sandbox node converged, proven with real traffic: partial syncs
 * (KEP-3453) rewrite only the changed Service's chains, a restore the kernel refuses leaves the
 * previous rules serving, drift (another agent flushing or deleting our chains) is detected and
 * repaired; then `svcplane sync` converges from whatever the proxier (or kube-proxy) left, and
 * `svcplane cleanup` removes it all. The tests of each describe run in order on one sandbox.
 */

const NODE = NODE_NAME;
const TARGET = 8080;

/** A single-port (`http`, 80 → 8080) single-family ClusterIP Service and its slice, as plain API objects. */
function service(
  sb: Sandbox,
  name: string,
  ip: string,
  pods: readonly string[],
  family: IPFamily = 'IPv4',
): SourceObject[] {
  return [
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
      addressType: family,
      ports: [{ name: 'http', protocol: 'TCP', port: TARGET }],
      endpoints: pods.map((p) => ({
        addresses: [sb.podIP(p, family)],
        conditions: { ready: true },
        nodeName: NODE,
      })),
    },
  ].map((obj, i) => ({ obj, source: `${name}#${i}` }));
}

const svcChain = (name: string): string => serviceChainName(`default/${name}:http`, 'tcp');
const sepChain = (sb: Sandbox, name: string, pod: string): string =>
  endpointChainName(`default/${name}:http`, 'tcp', `${sb.podIP(pod)}:${TARGET}`);

async function natChains(sb: Sandbox): Promise<Set<string>> {
  return serviceChainsOf(parseIptablesSave((await sb.exec('node', ['iptables-save', '-t', 'nat'])).stdout));
}

/** Which pod answers `ip:80` from the client pod (undefined when nothing does). */
async function answerer(sb: Sandbox, ip: string, timeoutMs = 800): Promise<string | undefined> {
  const r = await sb.request('client', { proto: 'tcp', ip, port: 80, timeoutMs });
  return r.ok ? r.reply.pod : undefined;
}

describe('iptables proxier sync behaviour (real traffic)', function () {
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
  let proxier: IptablesProxier;
  /** Every restore input the proxier handed to the kernel (the restore itself still runs). */
  const inputs: string[] = [];

  const state = (...services: SourceObject[][]): ClusterState => {
    const s = buildClusterState(services.flat());
    assert.deepEqual(s.problems, []);
    return s;
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'svcp-sync-'));
    // iptables-restore, except when a marker file exists: then (once) a rule jumping to a chain that
    // does not exist is added to the table the marker names, so the kernel itself refuses the restore.
    const wrapper = join(dir, 'iptables-restore');
    await writeFile(
      wrapper,
      [
        '#!/bin/bash',
        'marker="$(dirname "$0")/fail-once"',
        'if [ -e "$marker" ]; then',
        '  table="$(cat "$marker")"',
        '  rm -f "$marker"',
        `  awk -v want="*$table" '/^\\*/ { t = $0 } $0 == "COMMIT" && t == want && !done { print "-A KUBE-SERVICES -j SVCP-NO-SUCH-CHAIN"; done = 1 } { print }' | iptables-restore "$@"`,
        '  exit $?',
        'fi',
        'exec iptables-restore "$@"',
        '',
      ].join('\n'),
    );
    await chmod(wrapper, 0o755);
    proxier = new IptablesProxier(sandboxProxierConfig(env.sb, { binaries: { restore: wrapper } }));
    recordRestoreInputs(proxier.ipt, inputs);
    await proxier.setup();
  });

  after(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('a partial sync rewrites only the changed Service, deletes its old SEP chain and moves traffic', async () => {
    const sb = env.sb;
    const full = await proxier.sync(
      state(service(sb, 'one', '10.96.30.1', ['a']), service(sb, 'two', '10.96.30.2', ['b'])),
    );
    assert.equal(full.full, true);
    assert.equal(await answerer(sb, '10.96.30.1'), 'a');
    assert.equal(await answerer(sb, '10.96.30.2'), 'b');

    inputs.length = 0;
    const partial = await proxier.sync(
      state(service(sb, 'one', '10.96.30.1', ['c']), service(sb, 'two', '10.96.30.2', ['b'])),
    );
    assert.equal(partial.full, false);
    assert.equal(partial.writtenServices, 1);
    assert.equal(partial.staleChains, 1);
    // Its rule totals came from the full sync's and the changed Service's, not from every Service.
    assert.equal(partial.details?.renderFromTotals, true);
    assert.equal(partial.ruleCounts.totalNatRules, full.ruleCounts.totalNatRules);
    assert.equal(inputs.length, 1, 'one restore');
    const input = inputs[0]!;
    // Only "one"'s chains are declared or filled; "two" appears only as a jump target in KUBE-SERVICES.
    assert.match(input, new RegExp(`^:${svcChain('one')} `, 'm'));
    assert.match(input, new RegExp(`^:${sepChain(sb, 'one', 'c')} `, 'm'));
    assert.match(input, new RegExp(`^-X ${sepChain(sb, 'one', 'a')}$`, 'm'));
    assert.doesNotMatch(input, new RegExp(`^(:|-A )${svcChain('two')}`, 'm'));
    assert.doesNotMatch(input, new RegExp(`^(:|-A )${sepChain(sb, 'two', 'b')}`, 'm'));
    // KUBE-SERVICES did not change (chain names hash the Service port, not endpoints): not rewritten.
    assert.doesNotMatch(input, /^(:|-A )KUBE-SERVICES /m);

    const chains = await natChains(sb);
    assert.ok(!chains.has(sepChain(sb, 'one', 'a')), 'old SEP chain deleted');
    assert.ok(chains.has(sepChain(sb, 'two', 'b')), 'unchanged Service keeps its chains');
    for (let i = 0; i < 4; i++) assert.equal(await answerer(sb, '10.96.30.1'), 'c');
    assert.equal(await answerer(sb, '10.96.30.2'), 'b');
    console.log(`      (restore input: full ${full.lines} lines, partial ${partial.lines} lines)`);
  });

  it("a deleted Service's chains are removed by a partial sync; the others keep serving", async () => {
    const sb = env.sb;
    const report = await proxier.sync(state(service(sb, 'one', '10.96.30.1', ['c'])));
    assert.equal(report.full, false);
    assert.equal(report.staleChains, 2, 'KUBE-SVC and KUBE-SEP of "two"');
    const chains = await natChains(sb);
    assert.ok(!chains.has(svcChain('two')) && !chains.has(sepChain(sb, 'two', 'b')));
    assert.equal(await answerer(sb, '10.96.30.2'), undefined);
    assert.equal(await answerer(sb, '10.96.30.1'), 'c');
  });

  it('a restore the kernel refuses leaves the previous rules serving, throws with context, forces a full sync', async () => {
    const sb = env.sb;
    const next = state(service(sb, 'one', '10.96.30.1', ['a']), service(sb, 'empty', '10.96.30.3', []));
    await writeFile(join(dir, 'fail-once'), 'filter');
    await assert.rejects(proxier.sync(next), (err: unknown) => {
      assert.ok(err instanceof RestoreError, String(err));
      assert.match(err.message, /SVCP-NO-SUCH-CHAIN/);
      assert.match(err.stderr, /does not exist/);
      return true;
    });
    // The previous rules: "one" still goes to c, and "empty" has no REJECT rule yet (nothing answers).
    for (let i = 0; i < 3; i++) assert.equal(await answerer(sb, '10.96.30.1'), 'c');
    expectError(
      await sb.request('client', { proto: 'tcp', ip: '10.96.30.3', port: 80, timeoutMs: 600 }),
      'timeout',
    );
    const filter = (await sb.exec('node', ['iptables-save', '-t', 'filter'])).stdout;
    assert.doesNotMatch(filter, /SVCP-NO-SUCH-CHAIN/);

    const retry = await proxier.sync(next);
    assert.equal(retry.full, true, 'the sync after a failure is full');
    for (let i = 0; i < 3; i++) assert.equal(await answerer(sb, '10.96.30.1'), 'a');
    expectError(await sb.request('client', { proto: 'tcp', ip: '10.96.30.3', port: 80 }), 'refused');
  });

  it('a refused nat table keeps the previous nat rules serving; the forced full sync converges', async () => {
    const sb = env.sb;
    const next = state(service(sb, 'one', '10.96.30.1', ['b']), service(sb, 'empty', '10.96.30.3', []));
    await writeFile(join(dir, 'fail-once'), 'nat');
    await assert.rejects(proxier.sync(next), RestoreError);
    // nf_tables commits per table: filter may already be new, nat is the previous one.
    for (let i = 0; i < 3; i++) assert.equal(await answerer(sb, '10.96.30.1'), 'a');
    const retry = await proxier.sync(next);
    assert.equal(retry.full, true);
    for (let i = 0; i < 3; i++) assert.equal(await answerer(sb, '10.96.30.1'), 'b');
    assert.equal(await proxier.detectDrift(), false);
    await proxier.sync(
      state(service(sb, 'one', '10.96.30.1', ['a']), service(sb, 'empty', '10.96.30.3', [])),
    );
  });

  it('IPv6: a partial sync moves traffic; a flushed ip6tables nat table is detected and repaired', async () => {
    const sb = env.sb;
    const p6 = new IptablesProxier(sandboxProxierConfig(sb, { family: 'IPv6' }));
    await p6.setup();
    const six = (pod: string): ClusterState => state(service(sb, 'six', 'fd00:96::30:1', [pod], 'IPv6'));
    assert.equal((await p6.sync(six('a'))).full, true);
    assert.equal(await answerer(sb, 'fd00:96::30:1'), 'a');
    const partial = await p6.sync(six('b'));
    assert.equal(partial.full, false);
    assert.equal(partial.staleChains, 1);
    for (let i = 0; i < 3; i++) assert.equal(await answerer(sb, 'fd00:96::30:1'), 'b');
    assert.equal(await p6.detectDrift(), false);
    await sb.exec('node', ['ip6tables', '-t', 'nat', '-F']);
    assert.equal(await answerer(sb, 'fd00:96::30:1', 500), undefined);
    assert.equal(await p6.detectDrift(), true);
    assert.equal((await p6.sync(six('b'))).full, true);
    assert.equal(await answerer(sb, 'fd00:96::30:1'), 'b');
  });

  describe('drift detection and repair', () => {
    const current = (): ClusterState =>
      state(
        service(env.sb, 'one', '10.96.30.1', ['a']),
        service(env.sb, 'empty', '10.96.30.3', []),
        service(env.sb, 'three', '10.96.30.4', ['b']),
      );

    /** Detects, re-syncs (must be full) and checks that both Services work again. */
    async function repair(): Promise<void> {
      assert.equal(await proxier.detectDrift(), true, 'drift detected');
      const report = await proxier.sync(current());
      assert.equal(report.full, true);
      assert.equal(await answerer(env.sb, '10.96.30.1'), 'a');
      assert.equal(await answerer(env.sb, '10.96.30.4'), 'b');
      expectError(await env.sb.request('client', { proto: 'tcp', ip: '10.96.30.3', port: 80 }), 'refused');
      assert.equal(await proxier.detectDrift(), false, 'converged again');
    }

    const ipt = (...args: string[]): Promise<RunResult> => env.sb.exec('node', ['iptables', ...args]);

    it('sees no drift after full and partial syncs of our own', async () => {
      await proxier.sync(current());
      assert.equal(await proxier.detectDrift(), false);
      const partial = await proxier.sync(current());
      assert.equal(partial.full, false);
      assert.equal(await proxier.detectDrift(), false);
      assert.equal(await answerer(env.sb, '10.96.30.4'), 'b');
    });

    it('`iptables -t nat -F` (canaries intact) is detected and repaired', async () => {
      await ipt('-t', 'nat', '-F');
      assert.equal(await answerer(env.sb, '10.96.30.1', 500), undefined, 'the flush broke the Service');
      await repair();
    });

    it('flushed mangle, nat and filter with our canaries deleted are detected and repaired', async () => {
      for (const table of ['mangle', 'nat', 'filter']) {
        await ipt('-t', table, '-F');
        await ipt('-t', table, '-X', 'KUBE-PROXY-CANARY');
      }
      // The REJECT rule for the Service without endpoints lived in filter: now nothing answers.
      expectError(
        await env.sb.request('client', { proto: 'tcp', ip: '10.96.30.3', port: 80, timeoutMs: 500 }),
        'timeout',
      );
      await repair();
    });

    it('a deleted KUBE-SVC chain (references flushed first) is detected and repaired', async () => {
      const chain = svcChain('three');
      await ipt('-t', 'nat', '-F', 'KUBE-SERVICES');
      await ipt('-t', 'nat', '-F', chain);
      await ipt('-t', 'nat', '-X', chain);
      assert.equal(await answerer(env.sb, '10.96.30.4', 500), undefined);
      await repair();
      assert.ok((await natChains(env.sb)).has(chain));
    });

    it('a single rule deleted from a SEP chain is detected (rule counts) and repaired', async () => {
      const sep = sepChain(env.sb, 'three', 'b');
      await ipt('-t', 'nat', '-D', sep, '2');
      assert.equal(await answerer(env.sb, '10.96.30.4', 500), undefined, 'no DNAT any more');
      await repair();
    });
  });
});

// A kube-proxy-like leftover: ClusterIP 10.96.99.1:80 → pod c (DNAT), a REJECT for 10.96.99.2, jumps
// from the built-in chains, plus a foreign chain and rule that must survive sync and cleanup.
const LEFTOVER = (podIP: string): string =>
  [
    '*filter',
    ':KUBE-SERVICES - [0:0]',
    ':FOREIGN-FILTER - [0:0]',
    '-A OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    '-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    '-A KUBE-SERVICES -d 10.96.99.2/32 -p tcp -m comment --comment "old/gone:http has no endpoints" -m tcp --dport 80 -j REJECT --reject-with icmp-port-unreachable',
    '-A INPUT -p tcp --dport 2222 -m comment --comment "foreign rule" -j FOREIGN-FILTER',
    '-A FOREIGN-FILTER -j ACCEPT',
    'COMMIT',
    '*nat',
    ':KUBE-SERVICES - [0:0]',
    ':KUBE-MARK-MASQ - [0:0]',
    ':KUBE-SVC-OLDOLDOLDOLDOLD01 - [0:0]',
    ':KUBE-SEP-OLDOLDOLDOLDOLD01 - [0:0]',
    '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    '-A KUBE-SERVICES -d 10.96.99.1/32 -p tcp -m comment --comment "old/svc:http cluster IP" -m tcp --dport 80 -j KUBE-SVC-OLDOLDOLDOLDOLD01',
    '-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000',
    '-A KUBE-SVC-OLDOLDOLDOLDOLD01 -m comment --comment "old/svc:http -> endpoint" -j KUBE-SEP-OLDOLDOLDOLDOLD01',
    `-A KUBE-SEP-OLDOLDOLDOLDOLD01 -p tcp -m comment --comment "old/svc:http" -m tcp -j DNAT --to-destination ${podIP}:${TARGET}`,
    'COMMIT',
    '',
  ].join('\n');

describe('svcplane sync / cleanup (CLI, real traffic)', function () {
  this.timeout(90_000);
  const env = useSandbox({
    pods: [
      { name: 'a', index: 2, tcpPorts: [TARGET] },
      { name: 'b', index: 3, tcpPorts: [TARGET] },
      { name: 'c', index: 4, tcpPorts: [TARGET] },
      { name: 'client', index: 10 },
    ],
  });
  let dir = '';
  const flags = (): string[] => [
    `--manifests=${dir}`,
    `--hostname-override=${NODE}`,
    `--cluster-cidr=${CLUSTER_CIDRS.join(',')}`,
  ];
  const manifest = async (file: string, objects: SourceObject[]): Promise<void> =>
    writeFile(
      join(dir, file),
      JSON.stringify({ apiVersion: 'v1', kind: 'List', items: objects.map((o) => o.obj) }),
    );

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'svcp-cli-'));
  });
  after(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('converges from rules an earlier manifest set left (stale chains removed)', async () => {
    const sb = env.sb;
    await manifest('old.json', [
      ...service(sb, 'old1', '10.96.40.1', ['a']),
      ...service(sb, 'old2', '10.96.40.2', ['b']),
      ...service(sb, 'old6', 'fd00:96::40:1', ['a'], 'IPv6'),
    ]);
    const first = await runSvcplane(sb.nodeNs, ['sync', ...flags()]);
    assert.equal(first.exitCode, 0, first.stderr);
    assert.equal(await answerer(sb, '10.96.40.1'), 'a');
    assert.equal(await answerer(sb, 'fd00:96::40:1'), 'a');
    await rm(join(dir, 'old.json'));
    await manifest('new.json', [
      ...service(sb, 'new1', '10.96.40.3', ['c']),
      ...service(sb, 'new6', 'fd00:96::40:2', ['c'], 'IPv6'),
    ]);

    const second = await runSvcplane(sb.nodeNs, ['sync', ...flags()]);
    assert.equal(second.exitCode, 0, second.stderr);
    assert.match(second.stdout, /iptables\/IPv4: full sync/);
    const chains = await natChains(sb);
    assert.ok(!chains.has(svcChain('old1')) && !chains.has(sepChain(sb, 'old2', 'b')), [...chains].join(' '));
    assert.ok(chains.has(svcChain('new1')));
    assert.equal(await answerer(sb, '10.96.40.3'), 'c');
    assert.equal(await answerer(sb, '10.96.40.1'), undefined);
    assert.match(second.stdout, /iptables\/IPv6: full sync/);
    const chains6 = serviceChainsOf(
      parseIptablesSave((await sb.exec('node', ['ip6tables-save', '-t', 'nat'])).stdout),
    );
    assert.ok(!chains6.has(svcChain('old6')) && chains6.has(svcChain('new6')), [...chains6].join(' '));
    assert.equal(await answerer(sb, 'fd00:96::40:2'), 'c');
    assert.equal(await answerer(sb, 'fd00:96::40:1'), undefined);
  });

  it('converges from kube-proxy-like leftovers: their Services stop, a foreign rule stays', async () => {
    const sb = env.sb;
    await sb.exec('node', ['iptables-restore', '--noflush'], { input: LEFTOVER(sb.podIP('c')) });
    // The leftovers work before svcplane runs.
    assert.equal(await answerer(sb, '10.96.99.1'), 'c');
    expectError(await sb.request('client', { proto: 'tcp', ip: '10.96.99.2', port: 80 }), 'refused');

    const res = await runSvcplane(sb.nodeNs, ['sync', ...flags()]);
    assert.equal(res.exitCode, 0, res.stderr);
    const saved = parseIptablesSave((await sb.exec('node', ['iptables-save'])).stdout);
    assert.ok(!serviceChainsOf(saved).has('KUBE-SVC-OLDOLDOLDOLDOLD01'));
    assert.ok(!serviceChainsOf(saved).has('KUBE-SEP-OLDOLDOLDOLDOLD01'));
    assert.ok(rulesOf(saved, 'filter', 'INPUT').some((r) => ruleComment(r) === 'foreign rule'));
    assert.equal(await answerer(sb, '10.96.99.1', 500), undefined, 'the leftover DNAT is gone');
    expectError(
      await sb.request('client', { proto: 'tcp', ip: '10.96.99.2', port: 80, timeoutMs: 500 }),
      'timeout',
    );
    expectReply(await sb.request('client', { proto: 'tcp', ip: '10.96.40.3', port: 80 }), 'c');
  });

  it('`svcplane cleanup` removes every KUBE chain of both families; the foreign rule stays', async () => {
    const sb = env.sb;
    const res = await runSvcplane(sb.nodeNs, ['cleanup']);
    assert.equal(res.exitCode, 0, res.stderr);
    for (const save of ['iptables-save', 'ip6tables-save']) {
      const text = (await sb.exec('node', [save])).stdout;
      assert.doesNotMatch(text, /KUBE-(SVC|SEP|SERVICES|NODEPORTS|POSTROUTING|EXT|FW)/, `${save}:\n${text}`);
    }
    const saved = parseIptablesSave((await sb.exec('node', ['iptables-save'])).stdout);
    assert.ok(rulesOf(saved, 'filter', 'INPUT').some((r) => ruleComment(r) === 'foreign rule'));
    assert.equal(await answerer(sb, '10.96.40.3', 500), undefined, 'no Service is served any more');
  });
});
