import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rm, symlink, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run, startProcess, type ChildHandle } from '../../src/util/exec.js';
import { packageRoot } from '../../src/util/paths.js';
import { Daemon, until } from '../support/daemon.js';
import { aliasBomb, deepYaml } from '../support/hostile-text.js';
import { expectReply, useSandbox } from '../support/sandbox.js';
import { seriesValue } from '../support/metrics-text.js';
import { httpGet, type HttpAnswer } from '../support/http.js';

/**
 * Hostile files in the manifest directory of the real daemon (`svcplane run --manifests` in a sandbox
 * node): a FIFO, a device file, symlinks to /dev/zero and /dev/urandom, an oversized file, deeply
 * nested YAML rewritten a few times, an alias bomb. None may freeze the source, bloat the process or
 * kill it: each is reported, later changes to other files still reach the kernel, SIGTERM stops it.
 * Then a read that hangs in the kernel (a FUSE file that never answers, as a dead NFS server): the
 * source is stuck, /healthz says so, and SIGTERM still stops svcplane.
 */

const NODE = 'node-1';
const SYNC_PERIOD_MS = 2000;

type Json = Record<string, unknown>;

function service(name: string, ip: string, pod: string): Json[] {
  return [
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name, namespace: 'files' },
      spec: { clusterIP: ip, ports: [{ name: 'p', port: 80, protocol: 'TCP', targetPort: 8080 }] },
    },
    {
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: { name: `${name}-x`, namespace: 'files', labels: { 'kubernetes.io/service-name': name } },
      addressType: 'IPv4',
      ports: [{ name: 'p', port: 8080, protocol: 'TCP' }],
      endpoints: [{ addresses: [pod], conditions: { ready: true }, nodeName: NODE }],
    },
  ];
}

describe('hardening: hostile files in the manifest directory (real daemon, sandbox)', function () {
  this.timeout(120_000);
  const env = useSandbox({
    pods: [
      { name: 'a', index: 2, tcpPorts: [8080] },
      { name: 'b', index: 3, tcpPorts: [8080] },
      { name: 'client', index: 10 },
    ],
  });
  let dir: string;
  let manifests: string;
  let daemon: Daemon | undefined;

  const args = (): string[] => [
    '--manifests',
    manifests,
    '--hostname-override',
    NODE,
    '--cluster-cidr',
    '10.244.0.0/16',
    '--ip-families',
    'IPv4',
    '--iptables-min-sync-period',
    '100ms',
    '--iptables-sync-period',
    `${SYNC_PERIOD_MS}ms`,
    '-v',
    '2',
  ];
  const healthz = (): Promise<HttpAnswer | undefined> =>
    httpGet(env.sb, 'node', 'http://127.0.0.1:10256/healthz');
  const metric = async (name: string): Promise<number> =>
    seriesValue((await httpGet(env.sb, 'node', 'http://127.0.0.1:10249/metrics'))?.body ?? '', name) ?? NaN;
  const served = (ip: string, pod: string) =>
    until(`${ip} served by ${pod}`, async () => {
      const r = await env.sb.request('client', { proto: 'tcp', ip, port: 80, timeoutMs: 500 });
      return r.ok && r.reply.pod === pod ? true : undefined;
    });
  const firstSync = async (d: Daemon): Promise<void> => {
    await d.waitFor('the first sync', 0, (l) => l.message === 'synced', 30_000);
  };
  /** Resolves with the exit status, or undefined if the process is still running after `ms`. */
  const exitWithin = (child: ChildHandle, ms: number): Promise<number | null | undefined> =>
    Promise.race([child.exited, new Promise<undefined>((r) => setTimeout(() => r(undefined), ms))]);

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'svcp-files-'));
    manifests = join(dir, 'manifests');
    await mkdir(manifests);
    await writeFile(
      join(manifests, 'web.json'),
      JSON.stringify(service('web', '10.96.7.80', env.sb.podIP('a'))),
    );
  });

  after(async function () {
    this.timeout(20_000);
    await daemon?.stop(5000);
    await rm(dir, { recursive: true, force: true });
  });

  describe('files that are not manifests', () => {
    before(async () => {
      daemon = Daemon.start(['run', ...args()], { netns: env.sb.nodeNs });
      await firstSync(daemon);
    });

    it('a FIFO, a device, /dev/zero and /dev/urandom, a 9 MB file, deep YAML, an alias bomb: each reported, nothing frozen', async () => {
      const d = daemon!;
      const from = d.lines.length;
      await run(['mkfifo', join(manifests, 'fifo.yaml')]);
      await run(['mknod', join(manifests, 'device.yaml'), 'c', '1', '5']); // the /dev/zero device
      await symlink('/dev/zero', join(manifests, 'zero.yaml'));
      await symlink('/dev/urandom', join(manifests, 'urandom.json'));
      await run(['truncate', '-s', '9M', join(manifests, 'big.yaml')]);
      await writeFile(join(manifests, 'bomb.yaml'), aliasBomb());
      await writeFile(join(manifests, 'deep.yaml'), deepYaml('x'));
      // The source still follows the directory: a new Service reaches the kernel.
      await writeFile(
        join(manifests, 'web2.json'),
        JSON.stringify(service('web2', '10.96.7.81', env.sb.podIP('b'))),
      );
      await served('10.96.7.81', 'b');
      // Rewritten a few times (each parse of the old code left V8 closer to its abort).
      for (const tag of ['y', 'z', 'w']) {
        const at = d.lines.length;
        await writeFile(join(manifests, 'deep.yaml'), deepYaml(tag));
        await d.waitFor(
          'the rewrite read again',
          at,
          (l) => l.message === 'manifest file rejected' && String(l.file).endsWith('deep.yaml'),
        );
      }
      const rejected = new Map(
        d.lines
          .slice(from)
          .filter((l) => l.message === 'manifest file rejected')
          .map((l) => [String(l.file).slice(manifests.length + 1), String(l.reason)]),
      );
      assert.deepEqual([...rejected.keys()].sort(), [
        'big.yaml',
        'bomb.yaml',
        'deep.yaml',
        'device.yaml',
        'fifo.yaml',
        'urandom.json',
        'zero.yaml',
      ]);
      assert.match(rejected.get('fifo.yaml')!, /a FIFO: only regular files are read/);
      assert.match(rejected.get('device.yaml')!, /a character device/);
      assert.match(rejected.get('zero.yaml')!, /a character device/);
      assert.match(rejected.get('urandom.json')!, /a character device/);
      assert.match(rejected.get('big.yaml')!, /larger than 8388608 bytes/);
      assert.match(rejected.get('deep.yaml')!, /nested deeper than 100 levels/);
      assert.match(rejected.get('bomb.yaml')!, /aliases expand it/);
      expectReply(await env.sb.request('client', { proto: 'tcp', ip: '10.96.7.80', port: 80 }), 'a');
      assert.equal((await healthz())?.code, 200, 'the source is not stuck');
      assert.equal(await metric('svcplane_source_healthy'), 1);
      const status = await readFile(`/proc/${d.child.pid}/status`, 'utf8');
      const hwmKiB = Number(/^VmHWM:\s+(\d+)/m.exec(status)?.[1]);
      assert.ok(hwmKiB < 400 * 1024, `peak RSS ${Math.round(hwmKiB / 1024)} MiB`);
    });

    it('SIGTERM stops it (exit 0) with the FIFO still there', async () => {
      assert.equal(await exitWithin(daemon!.child, 100), undefined, 'running before the signal');
      const stopped = daemon!.child.stop(15_000);
      assert.equal(await exitWithin(daemon!.child, 8000), 0);
      await stopped;
      daemon = undefined;
      for (const f of [
        'fifo.yaml',
        'device.yaml',
        'zero.yaml',
        'urandom.json',
        'big.yaml',
        'bomb.yaml',
        'deep.yaml',
      ])
        await unlink(join(manifests, f));
    });
  });

  describe('a read that hangs in the kernel (FUSE file that never answers)', () => {
    let mountpoint: string;
    let hung: ChildHandle | undefined;

    /** Mounts the hung filesystem in a private mount namespace (gone with it, whatever happens). */
    const startHung = async (): Promise<void> => {
      hung = startProcess([
        'unshare',
        '--mount',
        '--propagation',
        'private',
        'node',
        '--import=tsx',
        join(packageRoot(), 'test/support/hung-fs.ts'),
        mountpoint,
      ]);
      let mounted = false;
      const ready = new Promise<void>((resolve) => hung!.onLine((l) => l === 'ready' && resolve()));
      const died = hung.exited.then((c) => {
        if (!mounted) throw new Error(`hung-fs exited (${String(c)}) before mounting`);
      });
      await Promise.race([ready, died]);
      mounted = true;
    };
    /** The daemon joins that mount namespace, then the node's netns. */
    const nsenter = (): string[] => ['nsenter', `--mount=/proc/${hung!.pid}/ns/mnt`, `--wd=${packageRoot()}`];

    before(async () => {
      mountpoint = join(dir, 'fuse');
      await mkdir(mountpoint);
      await startHung();
      daemon = Daemon.start(['run', ...args()], { netns: env.sb.nodeNs, prefix: nsenter() });
      await firstSync(daemon);
    });

    after(async function () {
      this.timeout(20_000);
      await hung?.stop(2000);
      await daemon?.stop(5000);
      daemon = undefined;
    });

    it('the stuck source turns /healthz 503 after twice the sync period; the rules keep serving', async () => {
      assert.equal((await healthz())?.code, 200);
      await symlink(join(mountpoint, 'hung.yaml'), join(manifests, 'hung.yaml'));
      const since = Date.now();
      const r = await until(
        'healthz 503',
        async () => {
          const h = await healthz();
          return h?.code === 503 ? h : undefined;
        },
        4 * SYNC_PERIOD_MS + 5000,
      );
      assert.ok(Date.now() - since >= 2 * SYNC_PERIOD_MS - 500, 'not before twice the sync period');
      assert.match(r.body, /manifest read hanging/);
      assert.equal(await metric('svcplane_source_healthy'), 0);
      expectReply(await env.sb.request('client', { proto: 'tcp', ip: '10.96.7.80', port: 80 }), 'a');
    });

    it('SIGTERM still stops it: servers closed at once; exit 0 once the kernel lets the thread go', async () => {
      const d = daemon!;
      const from = d.lines.length;
      const stopping = d.child.stop(30_000);
      await d.waitFor(
        'the stop giving up on the scan',
        from,
        (l) => String(l.message).startsWith('manifest scan still running at stop'),
        8000,
      );
      await until('healthz closed', async () => ((await healthz()) === undefined ? true : undefined), 8000);
      // The read's thread sleeps in the kernel until the filesystem answers or goes away.
      await hung!.stop(2000);
      hung = undefined;
      assert.equal(await exitWithin(d.child, 8000), 0);
      await stopping;
      daemon = undefined;
    });

    it('SIGTERM while the very first scan hangs (never synced): it stops too', async () => {
      await startHung();
      const d = Daemon.start(['run', ...args()], { netns: env.sb.nodeNs, prefix: nsenter() });
      daemon = d;
      await d.waitFor('servers up', 0, (l) => l.message === 'servers listening', 30_000);
      const h = await until('healthz answering', healthz);
      assert.equal(h.code, 503, 'nothing synced yet');
      assert.deepEqual(
        d.logged(0, (l) => l.message === 'synced'),
        [],
      );
      const stopping = d.child.stop(30_000);
      await until('healthz closed', async () => ((await healthz()) === undefined ? true : undefined), 8000);
      await hung!.stop(2000);
      hung = undefined;
      assert.equal(await exitWithin(d.child, 8000), 0);
      await stopping;
      daemon = undefined;
      await unlink(join(manifests, 'hung.yaml'));
    });
  });
});
