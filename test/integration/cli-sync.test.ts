import assert from 'node:assert/strict';
import { chmod, mkdtemp, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { serviceChainName } from '../../src/iptables/names.js';
import {
  getArg,
  parseIptablesSave,
  ruleComment,
  rulesOf,
  serviceChainsOf,
} from '../../src/iptables/save-parse.js';
import type { IPFamily } from '../../src/model/types.js';
import type { Sandbox } from '../../src/netns/sandbox.js';
import { run, startProcess, type ChildHandle } from '../../src/util/exec.js';
import {
  answeredPeer,
  expectNoAnswer,
  NODE_NAME,
  podEndpoints,
  serviceObject,
  sliceObject,
} from '../support/iptables-harness.js';
import { runSvcplane, svcplaneArgv, until as waitUntil } from '../support/daemon.js';
import { tcp, useSandbox } from '../support/sandbox.js';

/**
 * The CLI end to end, built from the current source, inside a sandbox node: `svcplane sync` and
 * `svcplane run` with --detect-local-mode=NodeCIDR (the Node object's spec.podCIDRs, read at startup
 * as kube-proxy does), zero objects (every manifest deleted: every Service rule goes), and `sync`
 * failing with a non-zero status and a clear message while the kernel keeps its rules.
 */

const WEB = 8080;
const MASQ_V4 = '10.244.0.1';
const MASQ_V6 = 'fd00:10:244::1';
const POD_CIDRS = ['10.244.0.0/24', 'fd00:10:244::/64'];
/** A --cluster-cidr that contains no pod: NodeCIDR must not use it. */
const DECOY_CLUSTER_CIDR = '10.99.0.0/16';

function nodeManifest(sb: Sandbox, podCIDRs: readonly string[] | undefined): unknown {
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name: NODE_NAME },
    ...(podCIDRs ? { spec: { podCIDR: podCIDRs[0], podCIDRs } } : {}),
    status: {
      addresses: [
        { type: 'InternalIP', address: sb.nodeIPv4 },
        { type: 'InternalIP', address: sb.nodeIPv6 },
      ],
    },
  };
}

/** A dual-stack NodePort Service `name` (80 → 8080, nodePort) on pods a and b. */
function webManifest(sb: Sandbox, name: string, v4: string, v6: string, nodePort: number): unknown {
  const http = [{ name: 'http', port: WEB }];
  return {
    apiVersion: 'v1',
    kind: 'List',
    items: [
      serviceObject(name, {
        type: 'NodePort',
        clusterIPs: [v4, v6],
        ports: [{ name: 'http', port: 80, targetPort: WEB, nodePort }],
      }),
      sliceObject(name, 'IPv4', http, podEndpoints(sb, ['a', 'b'])),
      sliceObject(name, 'IPv6', http, podEndpoints(sb, ['a', 'b'], 'IPv6')),
    ],
  };
}

describe('svcplane CLI end to end: NodeCIDR, zero objects, failing syncs (real traffic)', function () {
  this.timeout(90_000);
  const env = useSandbox({
    brNetfilter: true,
    pods: [
      { name: 'a', index: 2, tcpPorts: [WEB] },
      { name: 'b', index: 3, tcpPorts: [WEB] },
      { name: 'client', index: 10 },
    ],
  });
  let dir = '';
  let daemon: ChildHandle | undefined;

  const write = (file: string, content: unknown): Promise<void> =>
    writeFile(join(dir, file), typeof content === 'string' ? content : JSON.stringify(content));
  const clear = async (): Promise<void> => {
    for (const f of await readdir(dir)) await rm(join(dir, f), { recursive: true, force: true });
  };
  const save = async (family: IPFamily, table: 'nat' | 'filter') =>
    parseIptablesSave(
      (await env.sb.exec('node', [family === 'IPv4' ? 'iptables-save' : 'ip6tables-save', '-t', table]))
        .stdout,
    );
  const base = (): string[] => [`--manifests=${dir}`, `--hostname-override=${NODE_NAME}`];

  /** Starts `svcplane run`; resolves once it logged `until` (default: "svcplane running"). */
  async function startDaemon(
    args: readonly string[],
    until = '"svcplane running"',
  ): Promise<{ child: ChildHandle; logs: string[] }> {
    const logs: string[] = [];
    const child = startProcess(
      svcplaneArgv([
        'run',
        ...base(),
        '--iptables-min-sync-period=100ms',
        '--healthz-bind-address=127.0.0.1:10356',
        '--metrics-bind-address=127.0.0.1:10349',
        ...args,
      ]),
      { netns: env.sb.nodeNs },
    );
    daemon = child;
    child.onLine((l) => logs.push(l));
    let exited = false;
    void child.exited.then(() => (exited = true));
    await waitUntil(
      `daemon logs ${until}`,
      () => {
        if (exited) assert.fail(`daemon exited early:\n${logs.join('\n')}`);
        return logs.some((l) => l.includes(until));
      },
      30_000,
    );
    return { child, logs };
  }

  async function stopDaemon(): Promise<number | null | undefined> {
    const code = await daemon?.stop(5000);
    daemon = undefined;
    return code;
  }

  /** Pod traffic keeps its source, outside traffic is masqueraded (ClusterIP, both families). */
  async function expectNodeCIDRMasquerade(v4: string, v6: string): Promise<void> {
    const sb = env.sb;
    assert.equal(answeredPeer(await sb.request('client', tcp(v4, 80)), ['a', 'b']).peer, sb.podIP('client'));
    assert.equal(
      answeredPeer(await sb.request('client', tcp(v6, 80)), ['a', 'b']).peer,
      sb.podIP('client', 'IPv6'),
    );
    assert.equal(answeredPeer(await sb.request('outside', tcp(v4, 80))).peer, MASQ_V4);
    assert.equal(answeredPeer(await sb.request('outside', tcp(v6, 80))).peer, MASQ_V6);
  }

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'svcp-clisync-'));
  });
  afterEach(async function () {
    this.timeout(20_000);
    await stopDaemon();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  describe('--detect-local-mode=NodeCIDR', () => {
    it('sync: the detector is the Node pod CIDR of each family (not --cluster-cidr)', async () => {
      const sb = env.sb;
      await write('node.json', nodeManifest(sb, POD_CIDRS));
      await write('web.json', webManifest(sb, 'web', '10.96.60.10', 'fd00:10:96::6010', 30610));
      const res = await runSvcplane(sb.nodeNs, [
        'sync',
        ...base(),
        '--detect-local-mode=NodeCIDR',
        `--cluster-cidr=${DECOY_CLUSTER_CIDR}`,
      ]);
      assert.equal(res.exitCode, 0, res.stderr);
      const chain = serviceChainName('default/web:http', 'tcp');
      for (const [family, cidr] of [
        ['IPv4', POD_CIDRS[0]],
        ['IPv6', POD_CIDRS[1]],
      ] as const) {
        const masq = rulesOf(await save(family, 'nat'), 'nat', chain).filter(
          (r) => getArg(r, '-j') === 'KUBE-MARK-MASQ',
        );
        assert.equal(masq.length, 1, `${family}: one masquerade rule in ${chain}`);
        assert.match(masq[0]!.text, new RegExp(`! -s ${cidr!.replace(/[.]/g, '\\.')} `), masq[0]!.text);
      }
      await expectNodeCIDRMasquerade('10.96.60.10', 'fd00:10:96::6010');
    });

    it('sync: a Node without spec.podCIDRs is a clear error and the kernel is left as it was', async () => {
      const sb = env.sb;
      await write('node.json', nodeManifest(sb, undefined));
      await write('web.json', webManifest(sb, 'other', '10.96.60.11', 'fd00:10:96::6011', 30611));
      const before = (await sb.exec('node', ['iptables-save', '-t', 'nat'])).stdout;
      const res = await runSvcplane(sb.nodeNs, ['sync', ...base(), '--detect-local-mode=NodeCIDR']);
      assert.equal(res.exitCode, 1, res.stdout + res.stderr);
      assert.match(
        res.stderr,
        /svcplane sync failed: --detect-local-mode=NodeCIDR: Node "node-1" has no spec\.podCIDRs/,
      );
      const after = (await sb.exec('node', ['iptables-save', '-t', 'nat'])).stdout;
      assert.ok(!after.includes('default/other'), 'nothing of the new manifests was written');
      assert.equal(
        serviceChainsOf(parseIptablesSave(after)).size,
        serviceChainsOf(parseIptablesSave(before)).size,
      );
    });

    it('run: waits for the pod CIDR to be allocated, programs it, and exits (to restart) when it changes', async () => {
      const sb = env.sb;
      await write('node.json', nodeManifest(sb, undefined));
      await write('web.json', webManifest(sb, 'web', '10.96.60.10', 'fd00:10:96::6010', 30610));
      const { child, logs } = await startDaemon(
        ['--detect-local-mode=NodeCIDR'],
        'waiting for the Node object',
      );
      await write('node.json', nodeManifest(sb, POD_CIDRS));
      await waitUntil('daemon running', () => logs.some((l) => l.includes('"svcplane running"')), 20_000);
      await expectNodeCIDRMasquerade('10.96.60.10', 'fd00:10:96::6010');

      await write('node.json', nodeManifest(sb, ['10.244.9.0/24']));
      const code = await Promise.race([
        child.exited,
        new Promise((r) => setTimeout(() => r('running'), 15_000)),
      ]);
      assert.equal(code, 1, `the daemon exits 1 when the pod CIDRs change:\n${logs.slice(-10).join('\n')}`);
      assert.ok(
        logs.some((l) => l.includes('pod CIDRs changed')),
        logs.slice(-10).join('\n'),
      );
      daemon = undefined;
      // Rules stay in place on exit (as kube-proxy's restart leaves them).
      assert.equal(answeredPeer(await sb.request('client', tcp('10.96.60.10', 80))).peer, sb.podIP('client'));
    });
  });

  describe('zero objects', () => {
    /** No Service rule of ours is left in either family; the fixed chains stay. */
    async function expectNoServiceRules(): Promise<void> {
      for (const family of ['IPv4', 'IPv6'] as const) {
        const nat = await save(family, 'nat');
        assert.deepEqual([...serviceChainsOf(nat)], [], `${family}: no KUBE-SVC/SEP/EXT/FW chains`);
        const svcRules = rulesOf(nat, 'nat', 'KUBE-SERVICES').map((r) => ruleComment(r));
        assert.deepEqual(svcRules, [
          'kubernetes service nodeports; NOTE: this must be the last rule in this chain',
        ]);
        assert.deepEqual(rulesOf(nat, 'nat', 'KUBE-NODEPORTS'), []);
        const filter = await save(family, 'filter');
        for (const chain of ['KUBE-SERVICES', 'KUBE-EXTERNAL-SERVICES', 'KUBE-PROXY-FIREWALL']) {
          assert.deepEqual(rulesOf(filter, 'filter', chain), [], `${family} filter ${chain} is empty`);
        }
      }
    }

    async function expectUntouchedTraffic(): Promise<void> {
      const sb = env.sb;
      // A ClusterIP is just an unrouted address again (the node's default route is a dead end)...
      await expectNoAnswer(sb, 'client', tcp('10.96.60.20', 80, 600), 'timeout');
      // ...and a NodePort reaches the node itself, where nothing listens.
      await expectNoAnswer(sb, 'outside', tcp(sb.nodeIPv4, 30620, 600), 'refused');
      await expectNoAnswer(sb, 'outside', tcp(sb.nodeIPv6, 30620, 600), 'refused');
    }

    it('run: deleting every manifest removes every Service rule; the daemon stays up', async () => {
      const sb = env.sb;
      await write('web.json', webManifest(sb, 'zero', '10.96.60.20', 'fd00:10:96::6020', 30620));
      await write('empty.json', {
        apiVersion: 'v1',
        kind: 'Service',
        metadata: { name: 'noeps', namespace: 'default' },
        spec: { clusterIP: '10.96.60.21', ports: [{ name: 'http', port: 80 }] },
      });
      const { child, logs } = await startDaemon([`--cluster-cidr=${POD_CIDRS.join(',')}`]);
      answeredPeer(await sb.request('outside', tcp(sb.nodeIPv4, 30620)), ['a', 'b']);
      await expectNoAnswer(sb, 'client', tcp('10.96.60.21', 80, 600), 'refused');

      await clear();
      await waitUntil(
        'every Service rule removed',
        async () => {
          const nat = await save('IPv4', 'nat');
          return serviceChainsOf(nat).size === 0 && rulesOf(nat, 'nat', 'KUBE-NODEPORTS').length === 0;
        },
        15_000,
      );
      await waitUntil('IPv6 too', async () => serviceChainsOf(await save('IPv6', 'nat')).size === 0, 5_000);
      await expectNoServiceRules();
      await expectUntouchedTraffic();
      await expectNoAnswer(sb, 'client', tcp('10.96.60.21', 80, 600), 'timeout');
      let exited = false;
      void child.exited.then(() => (exited = true));
      assert.equal(exited, false, `the daemon keeps running:\n${logs.slice(-5).join('\n')}`);
    });

    it('sync: an empty manifest directory converges to no Service rules', async () => {
      const sb = env.sb;
      await write('web.json', webManifest(sb, 'zero', '10.96.60.20', 'fd00:10:96::6020', 30620));
      const first = await runSvcplane(sb.nodeNs, ['sync', ...base()]);
      assert.equal(first.exitCode, 0, first.stderr);
      answeredPeer(await sb.request('outside', tcp(sb.nodeIPv4, 30620)), ['a', 'b']);
      await clear();
      const res = await runSvcplane(sb.nodeNs, ['sync', ...base()]);
      assert.equal(res.exitCode, 0, res.stderr);
      assert.match(
        res.stdout,
        /iptables\/IPv4: full sync, .* 0 services written, [1-9]\d* stale chains removed/,
      );
      await expectNoServiceRules();
      await expectUntouchedTraffic();
    });
  });

  describe('sync failures: non-zero exit, a clear message, the previous rules serve', () => {
    /** Converges the node to one Service (`keep`, 10.96.60.30) the failures below must not disturb. */
    async function converged(): Promise<void> {
      const sb = env.sb;
      await write('keep.json', webManifest(sb, 'keep', '10.96.60.30', 'fd00:10:96::6030', 30630));
      const res = await runSvcplane(sb.nodeNs, ['sync', ...base()]);
      assert.equal(res.exitCode, 0, res.stderr);
      answeredPeer(await sb.request('client', tcp('10.96.60.30', 80)), ['a', 'b']);
    }

    it('a manifest that cannot be parsed: exit 1 naming the file; nothing is written', async () => {
      const sb = env.sb;
      await converged();
      await rm(join(dir, 'keep.json'));
      await write('broken.yaml', 'kind: Service\nmetadata: [unclosed\n');
      await write('new.json', webManifest(sb, 'new', '10.96.60.31', 'fd00:10:96::6031', 30631));
      const res = await runSvcplane(sb.nodeNs, ['sync', ...base()]);
      assert.equal(res.exitCode, 1, res.stdout + res.stderr);
      assert.match(
        res.stderr,
        /svcplane sync failed: cannot use 1 manifest file\(s\), rules left unchanged: .*broken\.yaml: invalid YAML/,
      );
      // The one-shot sync has no last good content for broken.yaml: it refused rather than delete "keep".
      answeredPeer(await sb.request('client', tcp('10.96.60.30', 80)), ['a', 'b']);
      await expectNoAnswer(sb, 'client', tcp('10.96.60.31', 80, 600), 'timeout');
    });

    it('a missing manifest path: exit 1 with the path and the reason', async () => {
      const res = await runSvcplane(env.sb.nodeNs, [
        'sync',
        `--manifests=${join(dir, 'nope')}`,
        `--hostname-override=${NODE_NAME}`,
      ]);
      assert.equal(res.exitCode, 1, res.stdout + res.stderr);
      assert.match(res.stderr, /svcplane sync failed: manifest path .*nope: ENOENT/);
    });

    it('an iptables-restore the kernel refuses (--iptables-binary): exit 1 with its error; the previous rules serve', async () => {
      const sb = env.sb;
      await converged();
      await write('keep.json', webManifest(sb, 'keep', '10.96.60.30', 'fd00:10:96::6030', 30630));
      await write('new.json', webManifest(sb, 'new', '10.96.60.31', 'fd00:10:96::6031', 30631));
      // A binary directory as --iptables-binary names it: the real tools, except an iptables-restore
      // that appends a jump to a chain that does not exist, so the kernel itself refuses the input.
      const bin = join(dir, 'bin');
      await run(['mkdir', bin]);
      for (const tool of ['iptables', 'iptables-save', 'ip6tables', 'ip6tables-save', 'ip6tables-restore']) {
        const real = (await run(['sh', '-c', `command -v ${tool}`])).stdout.trim();
        await symlink(real, join(bin, tool));
      }
      await writeFile(
        join(bin, 'iptables-restore'),
        [
          '#!/bin/bash',
          'if [ "$1" = --version ] || [ "$1" = -V ]; then exec iptables-restore "$@"; fi',
          `awk '$0 == "COMMIT" && !done { print "-A KUBE-SERVICES -j SVCP-NO-SUCH-CHAIN"; done = 1 } { print }' | iptables-restore "$@"`,
          '',
        ].join('\n'),
      );
      await chmod(join(bin, 'iptables-restore'), 0o755);
      const res = await runSvcplane(sb.nodeNs, [
        'sync',
        ...base(),
        `--iptables-binary=${join(bin, 'iptables')}`,
      ]);
      assert.equal(res.exitCode, 1, res.stdout + res.stderr);
      assert.match(res.stderr, /svcplane sync failed: .*iptables\/IPv4.*SVCP-NO-SUCH-CHAIN/s);
      answeredPeer(await sb.request('client', tcp('10.96.60.30', 80)), ['a', 'b']);
      await expectNoAnswer(sb, 'client', tcp('10.96.60.31', 80, 600), 'timeout');
      assert.doesNotMatch((await sb.exec('node', ['iptables-save'])).stdout, /SVCP-NO-SUCH-CHAIN/);
    });
  });
});
