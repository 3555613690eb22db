import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { serviceChainName } from '../../src/iptables/names.js';
import { IptablesProxier } from '../../src/iptables/proxier.js';
import { parseIptablesSave, serviceChainsOf } from '../../src/iptables/save-parse.js';
import { nodeManifestFs, type ManifestFs } from '../../src/kube/manifest-files.js';
import { ManifestSource } from '../../src/kube/manifests.js';
import { LoadPartFeed } from '../../src/model/load-parts.js';
import type { Sandbox } from '../../src/netns/sandbox.js';
import { runSvcplane } from '../support/daemon.js';
import { CLUSTER_CIDRS, NODE_NAME, sandboxProxierConfig } from '../support/iptables-harness.js';
import { useSandbox } from '../support/sandbox.js';

/**
 * The first full sync on a new node started while the manifests load (issue 14, the contract's
 * piece 11): the Services' own chains are streamed into the chunked restore as files are read, and
 * nothing reaches them before the complete state's sync adds KUBE-SERVICES and the jumps. Proven with
 * real traffic and the kernel's own listing: a load stalled half-way serves nothing (not even the
 * Services already streamed), the result equals the full sync without the overlap, a Service whose
 * later file invalidates it or whose slice comes in a later file ends up right, and an abandoned
 * sync leaves only unreachable chains that the next sync removes.
 */

const TARGET = 8080;

/** A ClusterIP Service (`http`, 80 → 8080) as YAML-compatible JSON, and its slice (when `ips`). */
function serviceDoc(name: string, ip: string, ips?: readonly string[]): string {
  const svc = {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace: 'default' },
    spec: { clusterIP: ip, ports: [{ name: 'http', protocol: 'TCP', port: 80, targetPort: TARGET }] },
  };
  return ips === undefined ? JSON.stringify(svc) : `${JSON.stringify(svc)}\n---\n${sliceDoc(name, ips)}`;
}

function sliceDoc(name: string, ips: readonly string[]): string {
  return JSON.stringify({
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: `${name}-x`, namespace: 'default', labels: { 'kubernetes.io/service-name': name } },
    addressType: 'IPv4',
    ports: [{ name: 'http', protocol: 'TCP', port: TARGET }],
    endpoints: ips.map((ip) => ({ addresses: [ip], conditions: { ready: true }, nodeName: NODE_NAME })),
  });
}

/**
 * Services whose endpoints are addresses nobody answers on, enough of them (more than kube-proxy's
 * large-cluster threshold of 1,000 endpoints) that the streamed render starts.
 */
async function writeBulk(dir: string, count: number, perService: number): Promise<void> {
  for (let i = 0; i < count; i++) {
    const ips = Array.from({ length: perService }, (_, e) => `10.77.${i % 250}.${e + 1}`);
    await writeFile(
      join(dir, `a-bulk-${String(i).padStart(3, '0')}.yaml`),
      serviceDoc(`bulk${i}`, `10.96.${60 + Math.floor(i / 250)}.${(i % 250) + 1}`, ips),
    );
  }
}

const svcChain = (name: string): string => serviceChainName(`default/${name}:http`, 'tcp');

async function saved(sb: Sandbox): Promise<string> {
  return (await sb.exec('node', ['iptables-save'])).stdout;
}

/** iptables-save without comments and counters, lines sorted: what two syncs wrote, comparable. */
function comparable(text: string): string[] {
  return text
    .split('\n')
    .filter((l) => l !== '' && !l.startsWith('#'))
    .map((l) => l.replace(/\[\d+:\d+\]/g, '[0:0]'))
    .sort();
}

async function answerer(sb: Sandbox, ip: string): Promise<string | undefined> {
  const r = await sb.request('client', { proto: 'tcp', ip, port: 80, timeoutMs: 800 });
  return r.ok ? r.reply.pod : undefined;
}

async function until<T>(what: string, probe: () => Promise<T | undefined>, ms = 20_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('iptables: the first full sync streamed while the manifests load (real traffic)', function () {
  this.timeout(180_000);
  const env = useSandbox({
    pods: [
      { name: 'a', index: 2, tcpPorts: [TARGET] },
      { name: 'b', index: 3, tcpPorts: [TARGET] },
      { name: 'c', index: 4, tcpPorts: [TARGET] },
      { name: 'client', index: 10 },
    ],
  });
  let dir = '';

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'svcp-early-'));
    const sb = env.sb;
    await writeBulk(dir, 60, 20);
    // web: streamed before the stall. dup: streamed, then redefined invalid by a later file.
    // late: its Service before the stall, its slice in a later file.
    await writeFile(join(dir, 'b-web.yaml'), serviceDoc('web', '10.96.50.1', [sb.podIP('a')]));
    await writeFile(join(dir, 'b-dup.yaml'), serviceDoc('dup', '10.96.50.2', [sb.podIP('b')]));
    await writeFile(join(dir, 'b-late.yaml'), serviceDoc('late', '10.96.50.3'));
    await writeFile(join(dir, 'm-stall.yaml'), serviceDoc('stall', '10.96.50.4', [sb.podIP('c')]));
    await writeFile(
      join(dir, 'z-dup.yaml'),
      JSON.stringify({
        apiVersion: 'v1',
        kind: 'Service',
        metadata: { name: 'dup', namespace: 'default' },
        spec: { clusterIP: 'not-an-ip', ports: [{ name: 'http', protocol: 'TCP', port: 80 }] },
      }),
    );
    await writeFile(join(dir, 'z-late-slice.yaml'), sliceDoc('late', [sb.podIP('c')]));
  });

  after(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  /** The complete state, read at once. */
  const loadAll = async (): Promise<ManifestSource> => {
    const source = new ManifestSource(dir, { readOnce: true });
    await source.start();
    return source;
  };

  it('serves nothing while the load is stalled, then converges to what the full sync without overlap writes', async () => {
    const sb = env.sb;
    // The reference: the chunked full sync of the complete state, into a new node.
    const reference = new IptablesProxier(sandboxProxierConfig(sb));
    await reference.setup();
    const complete = await loadAll();
    await reference.sync(complete.current()!);
    const expected = comparable(await saved(sb));
    assert.equal(await answerer(sb, '10.96.50.1'), 'a');
    await reference.close();
    const cleaned = await runSvcplane(sb.nodeNs, ['cleanup']);
    assert.equal(cleaned.exitCode, 0, cleaned.stderr);
    assert.equal(await answerer(sb, '10.96.50.1'), undefined);

    // The same with the overlap, the reads from m-stall.yaml on held until the streamed chains are in.
    let release: () => void = () => undefined;
    const gate = new Promise<void>((r) => (release = r));
    let stalled = false;
    // Without readMany: every file through `read` (the reader thread would bypass the stall).
    const fs: ManifestFs = {
      list: (d) => nodeManifestFs.list(d),
      stat: (p) => nodeManifestFs.stat(p),
      read: async (path, maxBytes, listedRegular) => {
        // m-stall.yaml and every file after it wait: web, dup and late are streamed first.
        if (basename(path) >= 'm') {
          stalled = true;
          await gate;
        }
        return nodeManifestFs.read(path, maxBytes, listedRegular);
      },
    };
    const feed = new LoadPartFeed();
    const source = new ManifestSource(dir, {
      readOnce: true,
      fs,
      loadPartFiles: 1,
      onLoadPart: (p) => feed.push(p),
    });
    const proxier = new IptablesProxier(sandboxProxierConfig(sb));
    try {
      const started = proxier.startFullSyncEarly(feed.subscribe());
      const loading = source.start().then(
        () => feed.end(),
        (err: unknown) => feed.fail(err),
      );
      assert.equal(await started, true, 'the early full sync starts on a new node');
      await until('the stall', () => Promise.resolve(stalled ? true : undefined));
      // web's and dup's chains reach the kernel while the load waits...
      const streamed = await until('the streamed chains of web and dup', async () => {
        const chains = serviceChainsOf(parseIptablesSave(await saved(sb)), 'nat');
        return chains.has(svcChain('web')) && chains.has(svcChain('dup')) ? chains : undefined;
      });
      assert.ok(streamed.has(svcChain('bulk0')));
      // ...and nothing reaches them: no KUBE-SERVICES, no jump, no answer.
      const now = parseIptablesSave(await saved(sb));
      assert.equal(now.tables.get('nat')?.chainsByName.has('KUBE-SERVICES'), false);
      assert.equal(await answerer(sb, '10.96.50.1'), undefined);
      assert.equal(await answerer(sb, '10.96.50.2'), undefined);

      release();
      await loading;
      const report = await proxier.sync(source.current()!);
      assert.equal(report.full, true);
      assert.equal(report.details?.mode, 'chunked');
      assert.deepEqual(comparable(await saved(sb)), expected);
      assert.equal(await answerer(sb, '10.96.50.1'), 'a');
      assert.equal(await answerer(sb, '10.96.50.2'), undefined, 'dup was redefined invalid');
      assert.equal(await answerer(sb, '10.96.50.3'), 'c', "late's slice came in a later file");
      assert.equal(await answerer(sb, '10.96.50.4'), 'c');
      const chains = serviceChainsOf(parseIptablesSave(await saved(sb)), 'nat');
      assert.equal(chains.has(svcChain('dup')), false, 'the streamed chains of dup are deleted');
    } finally {
      release();
      await proxier.close();
      await complete.stop();
    }
  });

  it('an abandoned early sync (a refused load) leaves only unreachable chains; the next sync removes them', async () => {
    const sb = env.sb;
    const cleaned = await runSvcplane(sb.nodeNs, ['cleanup']);
    assert.equal(cleaned.exitCode, 0, cleaned.stderr);
    // Enough files for a part (250) of `svcplane sync`, then a broken one read last.
    const big = await mkdtemp(join(tmpdir(), 'svcp-early-cli-'));
    try {
      await writeBulk(big, 300, 5);
      await writeFile(join(big, 'b-web.yaml'), serviceDoc('web', '10.96.50.1', [sb.podIP('a')]));
      await writeFile(join(big, 'zz-broken.yaml'), 'kind: Service\nmetadata: [unclosed\n');
      const flags = [
        `--manifests=${big}`,
        `--hostname-override=${NODE_NAME}`,
        `--cluster-cidr=${CLUSTER_CIDRS.join(',')}`,
        '--ip-families=IPv4',
      ];
      const refused = await runSvcplane(sb.nodeNs, ['sync', ...flags]);
      assert.equal(refused.exitCode, 1, refused.stdout);
      assert.match(refused.stderr, /cannot use 1 manifest file/);
      const left = parseIptablesSave(await saved(sb));
      const leftChains = serviceChainsOf(left, 'nat');
      // The stream wrote chains (the early sync ran), none reachable.
      assert.ok(leftChains.has(svcChain('bulk0')), [...leftChains].slice(0, 5).join(' '));
      assert.equal(left.tables.get('nat')?.chainsByName.has('KUBE-SERVICES'), false);
      assert.equal(await answerer(sb, '10.96.50.1'), undefined);

      // Without the broken file and without bulk0: the next sync converges and removes the rest.
      await rm(join(big, 'zz-broken.yaml'));
      await rm(join(big, 'a-bulk-000.yaml'));
      const ok = await runSvcplane(sb.nodeNs, ['sync', ...flags]);
      assert.equal(ok.exitCode, 0, ok.stderr);
      assert.equal(await answerer(sb, '10.96.50.1'), 'a');
      const after = serviceChainsOf(parseIptablesSave(await saved(sb)), 'nat');
      assert.equal(after.has(svcChain('bulk0')), false, 'the leftover chain of bulk0 is removed');
      assert.ok(after.has(svcChain('bulk1')));
    } finally {
      await rm(big, { recursive: true, force: true });
    }
  });
});
