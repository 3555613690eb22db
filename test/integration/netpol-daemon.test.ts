import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { pathToFileURL } from 'node:url';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ProbeResult, RequestSpec } from '../../src/netns/protocol.js';
import { run } from '../../src/util/exec.js';
import { packageRoot } from '../../src/util/paths.js';
import { Daemon, until } from '../support/daemon.js';
import { NODE_NAME, nodeObject, serviceObject, sliceObject } from '../support/iptables-harness.js';
import { expectReply, useSandbox } from '../support/sandbox.js';

/**
 * `svcplane run --network-policy` as users run it (its own process, in the sandbox's node namespace,
 * from manifest files) with real packets between pods, the node and an outside client:
 * - the seeds' example policy (role=db pods of `default`: TCP 6379 from role=frontend pods, from
 *   namespaces project=myproject, from 172.17.0.0/16 except 172.17.1.0/24; egress only to
 *   10.0.0.0/24 TCP 5978), the node's own traffic (kubelet probes) allowed;
 * - policy and Services: a ClusterIP and a NodePort to the isolated pod, judged on the backend pod
 *   and port after DNAT, with the original client address (before the NodePort's masquerade);
 * - a label change while a connection is open: new connections follow the policy at once, the open
 *   one keeps working (conntrack: policies apply to new connections, as upstream documents);
 * - a policy change (an ipBlock added), an invalid policy (fails closed, then fixed);
 * - the table checked against the plan (drift repaired within the sync period) and removed by
 *   `svcplane cleanup`.
 */

const DB = 6379;
const WEB = 8080;
const CLUSTER_IP = '10.96.17.1';
const NODE_PORT = 30017;

const tcp = (ip: string, port: number): RequestSpec => ({ proto: 'tcp', ip, port, timeoutMs: 1500 });

function namespaceObject(name: string, labels: Record<string, string> = {}): Record<string, unknown> {
  return { apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels } };
}

function podObject(
  namespace: string,
  name: string,
  ip: string,
  labels: Record<string, string>,
  ports: readonly { name: string; containerPort: number }[] = [],
): Record<string, unknown> {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace, labels },
    spec: {
      nodeName: NODE_NAME,
      containers: [{ name: 'c', ports: ports.map((p) => ({ ...p, protocol: 'TCP' })) }],
    },
    status: { phase: 'Running', podIPs: [{ ip }] },
  };
}

const SEEDS_POLICY = {
  apiVersion: 'networking.k8s.io/v1',
  kind: 'NetworkPolicy',
  metadata: { name: 'test-network-policy', namespace: 'default' },
  spec: {
    podSelector: { matchLabels: { role: 'db' } },
    policyTypes: ['Ingress', 'Egress'],
    ingress: [
      {
        from: [
          { ipBlock: { cidr: '172.17.0.0/16', except: ['172.17.1.0/24'] } },
          { namespaceSelector: { matchLabels: { project: 'myproject' } } },
          { podSelector: { matchLabels: { role: 'frontend' } } },
        ],
        ports: [{ protocol: 'TCP', port: DB }],
      },
    ],
    egress: [{ to: [{ ipBlock: { cidr: '10.0.0.0/24' } }], ports: [{ protocol: 'TCP', port: 5978 }] }],
  },
};

const blocked = (r: ProbeResult): boolean => !r.ok;

for (const mode of ['iptables', 'nftables'] as const) {
  describe(`svcplane run --network-policy --proxy-mode ${mode}: the seeds’ example, Services, changes while traffic flows (real packets)`, function () {
    this.timeout(90_000);
    const env = useSandbox({
      brNetfilter: true,
      pods: [
        { name: 'db', tcpPorts: [DB, 6380, WEB] },
        { name: 'frontend', tcpPorts: [WEB] },
        { name: 'other', tcpPorts: [WEB] },
        { name: 'myproj', tcpPorts: [WEB] },
        { name: 'web', tcpPorts: [WEB] },
      ],
    });
    let dir = '';
    let daemon: Daemon | undefined;
    const labels = { frontend: { role: 'frontend' } as Record<string, string> };
    let extraPolicies: unknown[] = [];
    let seeds: unknown = SEEDS_POLICY;

    const ip = (pod: string): string => env.sb.podIP(pod);
    const objects = (): unknown[] => [
      nodeObject(env.sb),
      namespaceObject('default'),
      namespaceObject('myproject', { project: 'myproject' }),
      podObject('default', 'db', ip('db'), { role: 'db' }, [{ name: 'redis', containerPort: DB }]),
      podObject('default', 'frontend', ip('frontend'), labels.frontend),
      podObject('default', 'other', ip('other'), { role: 'other' }),
      podObject('myproject', 'app', ip('myproj'), { role: 'anything' }),
      podObject('default', 'web', ip('web'), { app: 'web' }),
      serviceObject('db', {
        type: 'NodePort',
        clusterIPs: [CLUSTER_IP],
        ports: [{ port: 80, targetPort: DB, nodePort: NODE_PORT }],
      }),
      sliceObject('db', 'IPv4', [{ port: DB }], [{ ip: ip('db') }]),
      seeds,
      ...extraPolicies,
    ];
    /**
     * Writes the manifests; resolves once the
     * daemon wrote the change to the policy table (a sync of the netpol backend that wrote something:
     * a periodic sync in between writes nothing and does not count).
     */
    async function publish(): Promise<void> {
      const from = daemon?.lines.length ?? 0;
      await writeFile(join(dir, 'cluster.json'), JSON.stringify(objects()));
      if (daemon) {
        await daemon.waitFor(
          'the policy change in the kernel',
          from,

          (l) =>
            l.message === 'synced' &&
            l.backend === 'netpol' &&
            (l.full === true || Number(l.elementChanges) > 0),
        );
      }
    }
    const probe = (from: string, ipAddr: string, port: number): Promise<ProbeResult> =>
      env.sb.request(from, tcp(ipAddr, port));

    before(async function () {
      this.timeout(60_000);
      dir = await mkdtemp(join(tmpdir(), 'svcplane-netpol-'));
      await publish();
      daemon = Daemon.start(
        [
          'run',
          `--manifests=${dir}`,
          `--hostname-override=${NODE_NAME}`,
          '--network-policy',
          `--proxy-mode=${mode}`,
          '--cluster-cidr=10.244.0.0/16',
          '--ip-families=IPv4',
          '--iptables-min-sync-period=100ms',
          '--iptables-sync-period=2s',
        ],
        { netns: env.sb.nodeNs },
      );
      await daemon.waitFor(
        'the first policy sync',
        0,
        (l) => l.message === 'synced' && l.backend === 'netpol',
        30_000,
      );
    });

    after(async function () {
      this.timeout(30_000);
      await daemon?.stop(5000);
      await rm(dir, { recursive: true, force: true });
    });

    it('the seeds’ example: role=db accepts TCP 6379 from role=frontend and project=myproject only', async () => {
      expectReply(await probe('frontend', ip('db'), DB), 'db');
      expectReply(await probe('myproj', ip('db'), DB), 'db');
      assert.ok(blocked(await probe('other', ip('db'), DB)), 'other (role=other) -> db:6379');
      assert.ok(blocked(await probe('frontend', ip('db'), 6380)), 'frontend -> db:6380 (not in ports)');
      assert.ok(blocked(await probe('web', ip('db'), DB)), 'web -> db:6379');
      // Pods no policy selects stay open; the node reaches the isolated pod (kubelet probes).
      expectReply(await probe('other', ip('frontend'), WEB), 'frontend');
      expectReply(await probe('node', ip('db'), WEB), 'db');
    });

    it('egress of role=db: only 10.0.0.0/24 TCP 5978; replies of allowed connections still reach it', async () => {
      assert.ok(blocked(await probe('db', ip('frontend'), WEB)), 'db -> frontend:8080');
      assert.ok(blocked(await probe('db', env.sb.nodeIPv4, 22)), 'db -> the node (input) is egress too');
      // The allowed frontend -> db connection's replies are db's packets too: conntrack lets them out.
      const conn = await env.sb.openConnection('frontend', { ip: ip('db'), port: DB, timeoutMs: 1500 });
      try {
        expectReply(conn.result, 'db');
        expectReply(await conn.send(1500), 'db');
      } finally {
        await conn.close();
      }
    });

    it('Services: the ClusterIP and the NodePort are judged on the backend pod and port after DNAT', async () => {
      expectReply(await probe('frontend', CLUSTER_IP, 80), 'db');
      assert.ok(blocked(await probe('other', CLUSTER_IP, 80)), 'other -> ClusterIP -> db');
      // The outside client (192.0.2.2) is in no allowed block: the NodePort does not open the pod.
      assert.ok(blocked(await probe('outside', env.sb.nodeIPv4, NODE_PORT)), 'outside -> NodePort -> db');
    });

    it('a policy change applies to new connections: an ipBlock for the outside client opens the NodePort', async () => {
      seeds = structuredClone(SEEDS_POLICY);
      (seeds as typeof SEEDS_POLICY).spec.ingress[0]!.from.push({
        ipBlock: { cidr: '192.0.2.0/24', except: [] },
      });
      await publish();
      expectReply(await probe('outside', env.sb.nodeIPv4, NODE_PORT), 'db');
      assert.ok(blocked(await probe('other', CLUSTER_IP, 80)), 'still closed to role=other');
      seeds = SEEDS_POLICY;
      await publish();
      assert.ok(blocked(await probe('outside', env.sb.nodeIPv4, NODE_PORT)), 'closed again');
    });

    it('a label change while a connection is open: new connections denied at once, the open one continues', async () => {
      const conn = await env.sb.openConnection('frontend', { ip: ip('db'), port: DB, timeoutMs: 1500 });
      try {
        expectReply(conn.result, 'db');
        const from = daemon!.lines.length;
        labels.frontend = { role: 'gone' };
        await publish();
        const sync = daemon!.logged(from, (l) => l.message === 'synced' && l.backend === 'netpol').at(-1)!;
        assert.equal(sync.full, false, 'a label change writes set elements, not the table');
        assert.ok(blocked(await probe('frontend', ip('db'), DB)), 'a new connection after the change');
        expectReply(await conn.send(1500), 'db');
        labels.frontend = { role: 'frontend' };
        await publish();
        expectReply(await probe('frontend', ip('db'), DB), 'db');
      } finally {
        await conn.close();
      }
    });

    it('an invalid policy fails closed: the pod it selects is isolated and nothing it says is allowed, until fixed', async () => {
      expectReply(await probe('frontend', ip('web'), WEB), 'web');
      const policy = (cidr: string): unknown => ({
        apiVersion: 'networking.k8s.io/v1',
        kind: 'NetworkPolicy',
        metadata: { name: 'web-from-pods', namespace: 'default' },
        spec: {
          podSelector: { matchLabels: { app: 'web' } },
          ingress: [{ from: [{ ipBlock: { cidr, except: ['10.244.0.128/25'] } }] }],
        },
      });
      const from = daemon!.lines.length;
      extraPolicies = [policy('10.244.0.0/33')];
      await publish();
      await daemon!.waitFor(
        'the problem reported',
        from,
        (l) => l.message === 'skipped invalid input' && JSON.stringify(l.object).includes('web-from-pods'),
      );
      assert.ok(blocked(await probe('frontend', ip('web'), WEB)), 'isolated by the invalid policy');
      assert.ok(blocked(await probe('other', ip('web'), WEB)), 'nothing it would allow is allowed');
      expectReply(await probe('frontend', ip('db'), DB), 'db');
      extraPolicies = [policy('10.244.0.0/16')];
      await publish();
      expectReply(await probe('frontend', ip('web'), WEB), 'web');
      extraPolicies = [];
      await publish();
    });

    it('drift: a set flushed behind svcplane’s back is repaired within the sync period', async function () {
      this.timeout(60_000);
      await env.sb.exec('node', ['nft', 'flush', 'set', 'inet', 'svcplane-netpol', 'isolated-ingress-v4']);
      expectReply(await probe('other', ip('db'), DB), 'db'); // open: the set was emptied behind svcplane's back
      // The drift check runs every sync period: 2 s here in iptables mode (--iptables-sync-period);
      // nftables mode takes its period from the config file only (nftables.syncPeriod), 30 s.
      await until(
        'the policy table repaired',
        async () => (blocked(await probe('other', ip('db'), DB)) ? true : undefined),
        mode === 'nftables' ? 40_000 : 15_000,
      );
      expectReply(await probe('frontend', ip('db'), DB), 'db');
    });

    /** `svcplane ARGS` once, in the node's namespace: exit status and output. */
    async function cli(args: readonly string[]): Promise<{ code: number | null; out: string }> {
      const d = Daemon.start(args, { netns: env.sb.nodeNs });
      const code = await d.child.exited;
      return { code, out: d.raw.join('\n') };
    }
    it('operator tools: explain pod, trace with the policy verdict, diff covering the policy table', async () => {
      // The daemon's own flags (an operator passes its --config).
      const args = (): string[] => [
        `--manifests=${dir}`,
        `--hostname-override=${NODE_NAME}`,
        '--ip-families=IPv4',
        '--cluster-cidr=10.244.0.0/16',
        `--proxy-mode=${mode}`,
      ];
      const explain = await cli(['explain', 'pod', 'default/db', ...args()]);
      assert.equal(explain.code, 0, explain.out);
      assert.match(explain.out, /Ingress: +isolated by default\/test-network-policy/);
      assert.match(
        explain.out,
        /ingress\[0\]: from 172\.17\.0\.0\/16 except 172\.17\.1\.0\/24; every pod of namespaces project=myproject; pods role=frontend of namespace default — ports TCP\/6379/,
      );
      assert.match(explain.out, /egress\[0\]: to 10\.0\.0\.0\/24 — ports TCP\/5978/);
      assert.match(explain.out, /Kernel: +table inet svcplane-netpol holds what these policies say/);
      const open = await cli(['explain', 'pod', 'default/other', ...args()]);
      assert.match(open.out, /Ingress: +not isolated/);
      assert.equal((await cli(['explain', 'pod', 'default/nobody', ...args()])).code, 2);

      const trace = (src: string): Promise<{ code: number | null; out: string }> =>
        cli(['trace', '--src', ip(src), '--dst', CLUSTER_IP, '--dport', '80', `--manifests=${dir}`]);
      const allowed = await trace('frontend');
      assert.equal(allowed.code, 0, allowed.out);
      assert.match(
        allowed.out,
        new RegExp(
          `-> ${ip('db').replace(/\./g, '\\.')}:6379 +allowed: .*ingress of default/db: allowed by default/test-network-policy ingress\\[0\\]`,
        ),
      );
      const denied = await trace('other');
      assert.match(
        denied.out,
        /denied: .*ingress of default\/db: DENIED, isolated by default\/test-network-policy: no ingress rule/,
      );

      const diff = await cli(['diff', '--network-policy', ...args()]);
      assert.equal(diff.code, 0, diff.out);
      assert.match(diff.out, /NetworkPolicy \(table inet svcplane-netpol\): in sync/);
    });

    it('svcplane cleanup removes the policy table', async () => {
      await daemon!.stop(5000);
      daemon = undefined;
      const before = await env.sb.exec('node', ['nft', 'list', 'tables']);
      assert.match(before.stdout, /table inet svcplane-netpol/, 'the rules stay when svcplane stops');
      // With nobody to repair it, diff names the drift and exits 1.
      await env.sb.exec('node', ['nft', 'flush', 'set', 'inet', 'svcplane-netpol', 'isolated-ingress-v4']);
      const diff = await cli([
        'diff',
        '--network-policy',
        `--manifests=${dir}`,
        `--hostname-override=${NODE_NAME}`,
        '--ip-families=IPv4',
        '--cluster-cidr=10.244.0.0/16',
        `--proxy-mode=${mode}`,
      ]);
      assert.equal(diff.code, 1, diff.out);
      assert.doesNotMatch(diff.out, /DRIFT/, 'the proxy rules are fine: the policy table alone differs');
      assert.match(
        diff.out,
        new RegExp(
          `set isolated-ingress-v4: 1 element\\(s\\) missing \\(${ip('db').replace(/\./g, '\\.')}\\)`,
        ),
      );
      const cleanup = await cli(['cleanup']);
      assert.equal(cleanup.code, 0, cleanup.out);
      assert.match(cleanup.out, /netpol: removed table inet svcplane-netpol/);
      const after = await env.sb.exec('node', ['nft', 'list', 'tables']);
      assert.doesNotMatch(after.stdout, /svcplane-netpol/);
      expectReply(await probe('other', ip('db'), DB), 'db');
    });
  });
}

describe('svcplane run --network-policy where nftables is not usable', function () {
  this.timeout(60_000);
  const env = useSandbox({ pods: [] });
  let bin = '';
  after(async () => {
    if (bin) await rm(bin, { recursive: true, force: true });
  });

  it('refuses at start-up, naming the flag and the reason (rather than leaving every policy unenforced)', async () => {
    // Every command of the system's PATH but nft (a node without the nftables package).
    bin = await mkdtemp(join(tmpdir(), 'svcplane-no-nft-'));
    for (const d of ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin']) {
      for (const name of await readdir(d).catch(() => [] as string[])) {
        if (name === 'nft') continue;
        await symlink(join(d, name), join(bin, name)).catch(() => undefined);
      }
    }
    const dir = await mkdtemp(join(tmpdir(), 'svcplane-netpol-'));
    try {
      await writeFile(join(dir, 'cluster.json'), JSON.stringify([nodeObject(env.sb)]));
      const res = await run(
        [
          'ip',
          'netns',
          'exec',
          env.sb.nodeNs,
          'env',
          `PATH=${bin}`,
          process.execPath,
          '--import=tsx',
          '-e',
          `import(${JSON.stringify(pathToFileURL(join(packageRoot(), 'src', 'cli', 'main.ts')).href)}).then(async (m) => { process.exitCode = await m.main(['node', 'svcplane', ...process.argv.slice(1)]); });`,
          'run',
          `--manifests=${dir}`,
          `--hostname-override=${NODE_NAME}`,
          '--network-policy',
        ],
        { allowFailure: true, timeoutMs: 30_000 },
      );
      assert.equal(res.exitCode, 1, `${res.stdout}\n${res.stderr}`);
      assert.match(
        res.stderr,
        /--network-policy: nftables is not usable here \(.*nft.*\); NetworkPolicy cannot be enforced on this node: refusing/,
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
