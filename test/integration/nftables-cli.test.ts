import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Sandbox } from '../../src/netns/sandbox.js';
import { run } from '../../src/util/exec.js';
import { packageRoot } from '../../src/util/paths.js';
import { Daemon, runSvcplane } from '../support/daemon.js';
import {
  answeredPeer,
  expectNoAnswer,
  NODE_NAME,
  podEndpoints,
  serviceObject,
  sliceObject,
} from '../support/iptables-harness.js';
import { requireRoot, tcp, useSandbox } from '../support/sandbox.js';
import { httpGet, scrapeMetrics } from '../support/http.js';

/**
 * `--proxy-mode nftables` the way users run it: `svcplane sync` and `svcplane run` as real processes
 * inside a sandbox node, manifests as input, real traffic. Mode switching as kube-proxy: nftables
 * mode removes iptables mode's chains once its own rules serve; iptables mode removes the nftables
 * tables; `svcplane cleanup` removes them too. SIGTERM leaves the rules serving.
 */

const WEB = 8080;
const MASQ_V4 = '10.244.0.1';

function manifest(sb: Sandbox, pods: readonly string[]): unknown {
  const http = [{ name: 'http', port: WEB }];
  return {
    apiVersion: 'v1',
    kind: 'List',
    items: [
      {
        apiVersion: 'v1',
        kind: 'Node',
        metadata: { name: NODE_NAME },
        status: {
          addresses: [
            { type: 'InternalIP', address: sb.nodeIPv4 },
            { type: 'InternalIP', address: sb.nodeIPv6 },
          ],
        },
      },
      serviceObject('web', {
        type: 'NodePort',
        clusterIPs: ['10.96.70.10', 'fd00:10:96::7010'],
        ports: [{ name: 'http', port: 80, targetPort: WEB, nodePort: 30710 }],
      }),
      sliceObject('web', 'IPv4', http, podEndpoints(sb, pods)),
      sliceObject('web', 'IPv6', http, podEndpoints(sb, pods, 'IPv6')),
    ],
  };
}

describe('svcplane --proxy-mode nftables (real processes, real traffic)', function () {
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
  let daemon: Daemon | undefined;
  const args = (): string[] => [
    `--manifests=${dir}`,
    `--hostname-override=${NODE_NAME}`,
    '--cluster-cidr=10.244.0.0/16,fd00:10:244::/64',
  ];
  const nftTables = async (): Promise<string> =>
    (await env.sb.exec('node', ['nft', 'list', 'tables'])).stdout;
  const natChains = async (): Promise<string> =>
    (await env.sb.exec('node', ['iptables-save', '-t', 'nat'])).stdout;

  before(async function () {
    requireRoot(this);
    dir = await mkdtemp(join(tmpdir(), 'svcp-nftcli-'));
  });
  after(async function () {
    this.timeout(20_000);
    await daemon?.stop(5000);
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('sync: iptables mode first, then nftables mode takes over and removes the iptables chains', async () => {
    const sb = env.sb;
    await writeFile(join(dir, 'web.json'), JSON.stringify(manifest(sb, ['a', 'b'])));
    const ipt = await runSvcplane(sb.nodeNs, ['sync', ...args()]);
    assert.equal(ipt.exitCode, 0, ipt.stderr);
    assert.match(await natChains(), /KUBE-SERVICES/);
    const nft = await runSvcplane(sb.nodeNs, ['sync', '--proxy-mode=nftables', ...args()]);
    assert.equal(nft.exitCode, 0, nft.stderr);
    assert.match(nft.stdout, /nftables\/IPv4: full sync/);
    assert.match(await nftTables(), /table ip kube-proxy/);
    assert.match(await nftTables(), /table ip6 kube-proxy/);
    assert.doesNotMatch(await natChains(), /KUBE-SERVICES|KUBE-SVC-/, 'iptables mode leftovers removed');
    answeredPeer(await sb.request('client', tcp('10.96.70.10', 80)), ['a', 'b']);
    answeredPeer(await sb.request('client', tcp('fd00:10:96::7010', 80)), ['a', 'b']);
    assert.equal(answeredPeer(await sb.request('outside', tcp(sb.nodeIPv4, 30710))).peer, MASQ_V4);
    // svcplane trace walks the nftables table (the iptables rules hold no Service now).
    const trace = await runSvcplane(sb.nodeNs, [
      'trace',
      `--src=${sb.outsideIPv4}`,
      '--dst=10.96.70.10',
      '--dport=80',
      '--output=json',
    ]);
    assert.equal(trace.exitCode, 0, trace.stderr);
    const t = JSON.parse(trace.stdout) as {
      verdict: string;
      endpoints: { endpoint: string }[];
      masquerade: boolean;
    };
    assert.deepEqual(
      [t.verdict, t.endpoints.map((e) => e.endpoint).sort(), t.masquerade],
      ['dnat', [`${sb.podIP('a')}:${WEB}`, `${sb.podIP('b')}:${WEB}`], true],
    );
  });

  it('run: follows an endpoint change, counts in kube-proxy nftables metrics, SIGTERM leaves the rules', async () => {
    const sb = env.sb;
    await writeFile(join(dir, 'web.json'), JSON.stringify(manifest(sb, ['a', 'b'])));
    daemon = Daemon.start(
      [
        'run',
        '--proxy-mode=nftables',
        ...args(),
        '--healthz-bind-address=127.0.0.1:10456',
        '--metrics-bind-address=127.0.0.1:10449',
      ],
      { netns: sb.nodeNs },
    );
    // One 'synced' line per family and sync.
    await daemon.waitFor('the first sync', 0, (l) => l.message === 'synced', 30_000, 2);
    answeredPeer(await sb.request('client', tcp('10.96.70.10', 80)), ['a', 'b']);
    const from = daemon.lines.length;
    await writeFile(join(dir, 'web.json'), JSON.stringify(manifest(sb, ['b'])));
    await daemon.waitFor(
      'the change synced (a partial sync)',
      from,
      (l) => l.message === 'synced' && l.backend === 'nftables/IPv4' && l.full === false,
      15_000,
    );
    await sb.exec('node', ['conntrack', '-F'], { allowFailure: true });
    for (let i = 0; i < 6; i++) answeredPeer(await sb.request('client', tcp('10.96.70.10', 80)), 'b');
    const metrics = await scrapeMetrics(sb, '127.0.0.1:10449');
    assert.match(metrics, /kubeproxy_sync_proxy_rules_nftables_sync_failures_total/);
    assert.match(metrics, /kubeproxy_sync_proxy_rules_nftables_cleanup_failures_total/);
    assert.match(
      metrics,
      /kubeproxy_sync_partial_proxy_rules_duration_seconds_count\{ip_family="IPv4"\} [1-9]/,
    );
    assert.doesNotMatch(metrics, /kubeproxy_sync_proxy_rules_iptables_total/);
    assert.equal((await httpGet(sb, 'node', 'http://127.0.0.1:10456/healthz'))?.code, 200);
    assert.equal(await daemon.stop(5000), 0);
    daemon = undefined;
    answeredPeer(await sb.request('client', tcp('10.96.70.10', 80)), 'b');
  });

  it('back to iptables mode: the nftables tables go; cleanup removes every mode', async () => {
    const sb = env.sb;
    const ipt = await runSvcplane(sb.nodeNs, ['sync', ...args()]);
    assert.equal(ipt.exitCode, 0, ipt.stderr);
    assert.doesNotMatch(await nftTables(), /kube-proxy/);
    answeredPeer(await sb.request('client', tcp('10.96.70.10', 80)), 'b');
    const nft = await runSvcplane(sb.nodeNs, ['sync', '--proxy-mode=nftables', ...args()]);
    assert.equal(nft.exitCode, 0, nft.stderr);
    const clean = await runSvcplane(sb.nodeNs, ['cleanup']);
    assert.equal(clean.exitCode, 0, clean.stderr);
    assert.doesNotMatch(await nftTables(), /kube-proxy/);
    await expectNoAnswer(sb, 'client', tcp('10.96.70.10', 80, 600));
  });

  it('--nft-binary (nft 1.1.3 from scripts/nft-install.sh): sync, trace, mode switch and cleanup all use it', async () => {
    // Debian 12's nft 1.0.6 crashes (SIGSEGV) reading sets that nft 1.1 wrote, so one binary for
    // every nft the process runs: with the machine's nft, iptables mode could not remove this table.
    const sb = env.sb;
    const nftBin = join(packageRoot(), '.nft', 'bin', 'nft');
    const newNft = ['--nft-binary', nftBin];
    assert.match((await run([nftBin, '--version'])).stdout, /v1\.1\./, 'bash scripts/nft-install.sh');
    const tables = async (): Promise<string> =>
      (await env.sb.exec('node', [nftBin, 'list', 'tables'])).stdout;
    await writeFile(join(dir, 'web.json'), JSON.stringify(manifest(sb, ['a', 'b'])));
    const nft = await runSvcplane(sb.nodeNs, ['sync', '--proxy-mode=nftables', ...newNft, ...args()]);
    assert.equal(nft.exitCode, 0, nft.stderr);
    assert.match(await tables(), /table ip kube-proxy/);
    answeredPeer(await sb.request('client', tcp('10.96.70.10', 80)), ['a', 'b']);
    answeredPeer(await sb.request('client', tcp('fd00:10:96::7010', 80)), ['a', 'b']);
    const trace = await runSvcplane(sb.nodeNs, [
      'trace',
      ...newNft,
      `--src=${sb.outsideIPv4}`,
      '--dst=10.96.70.10',
      '--dport=80',
      '--output=json',
    ]);
    assert.equal(trace.exitCode, 0, trace.stderr);
    assert.equal((JSON.parse(trace.stdout) as { verdict: string }).verdict, 'dnat');
    const diff = await runSvcplane(sb.nodeNs, ['diff', '--proxy-mode=nftables', ...newNft, ...args()]);
    assert.equal(diff.exitCode, 0, diff.stdout + diff.stderr);
    // iptables mode removes nftables mode's tables with the same nft.
    const ipt = await runSvcplane(sb.nodeNs, ['sync', ...newNft, ...args()]);
    assert.equal(ipt.exitCode, 0, ipt.stderr);
    assert.doesNotMatch(await tables(), /kube-proxy/);
    answeredPeer(await sb.request('client', tcp('10.96.70.10', 80)), ['a', 'b']);
    const again = await runSvcplane(sb.nodeNs, ['sync', '--proxy-mode=nftables', ...newNft, ...args()]);
    assert.equal(again.exitCode, 0, again.stderr);
    const clean = await runSvcplane(sb.nodeNs, ['cleanup', ...newNft]);
    assert.equal(clean.exitCode, 0, clean.stderr);
    assert.doesNotMatch(await tables(), /kube-proxy/);
    await expectNoAnswer(sb, 'client', tcp('10.96.70.10', 80, 600));
  });
});
