import assert from 'node:assert/strict';
import { statSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DAEMON_SEMI_SPACE_FLAG, DAEMON_SEMI_SPACE_MB } from '../../src/util/memory.js';
import { run } from '../../src/util/exec.js';
import { packageRoot } from '../../src/util/paths.js';
import { Daemon, newestMtime } from '../support/daemon.js';

/**
 * The daemon's memory at scale (issue 14: peak RSS ≤ 250 MB at 10k Services), as users start it:
 * bin/svcplane.js (the build), in its own network namespace, on 2,000 Services × 5 endpoints. V8
 * would grow the young generation to tens of MB during the load and the first full sync; the daemon
 * runs with it capped (src/util/memory.ts), read back from its own metrics after the first sync.
 */

const SERVICES = 2000;
const PER_FILE = 100;
const NODE = 'node-1';

function servicesFile(first: number): string {
  const items: unknown[] = [];
  for (let i = first; i < first + PER_FILE; i++) {
    const name = `svc-${i}`;
    items.push(
      {
        apiVersion: 'v1',
        kind: 'Service',
        metadata: { name, namespace: 'default' },
        spec: {
          clusterIP: `10.96.${i >> 8}.${i & 255}`,
          ports: [{ name: 'http', protocol: 'TCP', port: 80, targetPort: 8080 }],
        },
      },
      {
        apiVersion: 'discovery.k8s.io/v1',
        kind: 'EndpointSlice',
        metadata: { name: `${name}-x`, namespace: 'default', labels: { 'kubernetes.io/service-name': name } },
        addressType: 'IPv4',
        ports: [{ name: 'http', protocol: 'TCP', port: 8080 }],
        endpoints: [0, 1, 2, 3, 4].map((e) => ({
          addresses: [`10.${128 + e}.${i >> 8}.${i & 255}`],
          conditions: { ready: true },
          nodeName: NODE,
        })),
      },
    );
  }
  return JSON.stringify({ apiVersion: 'v1', kind: 'List', items });
}

/** A metric's value from the daemon's /metrics, read inside its network namespace. */
async function metric(pid: number, name: string): Promise<number> {
  const r = await run([
    'nsenter',
    `--net=/proc/${pid}/ns/net`,
    process.execPath,
    '-e',
    'fetch("http://127.0.0.1:10249/metrics").then((r) => r.text()).then((t) => process.stdout.write(t))',
  ]);
  const line = r.stdout.split('\n').find((l) => l.startsWith(`${name} `));
  assert.ok(line, `${name} not in /metrics`);
  return Number(line.slice(name.length + 1));
}

describe('svcplane run: memory at 2,000 Services (built daemon, own network namespace)', function () {
  this.timeout(180_000);
  let dir = '';
  let daemon: Daemon | undefined;

  before(async function () {
    const built = join(packageRoot(), 'dist', '.built');
    if (
      newestMtime(join(packageRoot(), 'src')) > (statSync(built, { throwIfNoEntry: false })?.mtimeMs ?? 0)
    ) {
      throw new Error('dist/ is older than src/: run `bash scripts/setup.sh` (or npm run build) first');
    }
    dir = await mkdtemp(join(tmpdir(), 'svcplane-memory-'));
    await writeFile(
      join(dir, '00-node.json'),
      JSON.stringify({ apiVersion: 'v1', kind: 'Node', metadata: { name: NODE } }),
    );
    for (let i = 0; i < SERVICES; i += PER_FILE) {
      await writeFile(join(dir, `svc-${String(i).padStart(5, '0')}.json`), servicesFile(i));
    }
    daemon = Daemon.start(
      [
        'run',
        `--manifests=${dir}`,
        `--hostname-override=${NODE}`,
        '--cluster-cidr=10.128.0.0/9',
        '--metrics-bind-address=127.0.0.1:10249',
        '--healthz-bind-address=127.0.0.1:10256',
      ],
      // Loopback up for the metrics server; `exec`: the PID is svcplane's.
      { fromBuild: true, prefix: ['unshare', '-n', 'sh', '-c', 'ip link set lo up && exec "$0" "$@"'] },
    );
    await daemon.waitFor('the first full sync', 0, (l) => l.message === 'synced' && l.full === true, 150_000);
  });

  after(async () => {
    await daemon?.stop();
    if (dir !== '') await rm(dir, { recursive: true, force: true });
  });

  it('starts node again with the young generation capped (bin/svcplane.js), same process', async () => {
    const cmdline = (await readFile(`/proc/${daemon!.child.pid}/cmdline`, 'utf8')).split('\0');
    assert.ok(
      cmdline.includes(`${DAEMON_SEMI_SPACE_FLAG}=${DAEMON_SEMI_SPACE_MB}`),
      `node's command line: ${cmdline.join(' ')}`,
    );
    assert.equal(cmdline.filter((a) => a.startsWith(DAEMON_SEMI_SPACE_FLAG)).length, 1);
  });

  it('the young generation stays at the cap through the load and the first full sync', async () => {
    const bytes = await metric(daemon!.child.pid, 'nodejs_heap_space_size_total_bytes{space="new"}');
    // Two semi-spaces of DAEMON_SEMI_SPACE_MB; V8's default grows it to 16-64 MB at this size.
    assert.ok(bytes > 0 && bytes <= 2 * DAEMON_SEMI_SPACE_MB * 2 ** 20, `new space ${bytes} bytes`);
  });
});
