import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { StartedTestContainer } from 'testcontainers';
import { run as runHost } from '../../src/util/exec.js';
import { DockerScope, dockerUnavailable, run, runOk, type NodeContainer } from '../support/docker.js';
import { skipBecause } from '../support/skip.js';

/**
 * The container image, started as the DaemonSet starts it: every capability dropped but NET_ADMIN
 * (`--cap-drop ALL --cap-add NET_ADMIN`), never privileged, the engine's default seccomp profile
 * (RuntimeDefault), a read-only root filesystem with a tmpfs on /tmp, the nft backend chosen by
 * SVCPLANE_IPTABLES_MODE. Every container gets its own network namespace, so the rules written here
 * never touch the host's. Run through scripts/test-docker.sh (sets up the engine, builds svcplane:test).
 */

const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
  version: string;
  engines: { node: string };
};

const CLUSTER_IP = '10.96.0.50';
const SERVICE_PORT = 80;
const BACKEND_PORT = 8080;

/** A TCP server that answers every connection with its own address and closes. */
const ECHO_SERVER = `require('net').createServer((s) => s.end(s.localAddress + '\\n')).listen(${BACKEND_PORT}, '0.0.0.0')`;

/** Opens N connections one after another to HOST:PORT and prints each answer on its own line. */
const CLIENT = `
const net = require('net');
const [host, port, n] = process.argv.slice(1);
(async () => {
  for (let i = 0; i < Number(n); i++) {
    const answer = await new Promise((resolve) => {
      const s = net.connect({ host, port: Number(port) });
      let data = '';
      s.setTimeout(3000, () => { s.destroy(); resolve('timeout'); });
      s.on('data', (d) => (data += d));
      s.on('end', () => resolve(data.trim()));
      s.on('error', (e) => resolve('error ' + e.code));
    });
    console.log(answer);
  }
})();
`;

function manifests(backendIps: readonly string[]): string {
  const endpoints = backendIps
    .map(
      (ip, i) =>
        `  - addresses: ["${ip}"]\n    conditions: {ready: true}\n    targetRef: {kind: Pod, name: echo-${i}, namespace: default}`,
    )
    .join('\n');
  return `apiVersion: v1
kind: Service
metadata:
  name: echo
  namespace: default
spec:
  type: ClusterIP
  clusterIP: ${CLUSTER_IP}
  clusterIPs: ["${CLUSTER_IP}"]
  ipFamilies: [IPv4]
  selector: {app: echo}
  ports:
  - name: tcp
    protocol: TCP
    port: ${SERVICE_PORT}
    targetPort: ${BACKEND_PORT}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: echo-abc12
  namespace: default
  labels:
    kubernetes.io/service-name: echo
    endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io
addressType: IPv4
ports:
- name: tcp
  protocol: TCP
  port: ${BACKEND_PORT}
endpoints:
${endpoints}
`;
}

/** Prints `<status> <body>` of the daemon's /healthz (kube-proxy's health port). */
const HEALTHZ_CLIENT = `
require('http')
  .get('http://127.0.0.1:10256/healthz', (r) => {
    let b = '';
    r.on('data', (d) => (b += d));
    r.on('end', () => console.log(r.statusCode + ' ' + b));
  })
  .on('error', (e) => console.log('error ' + e.code));
`;

/** Replaces a file atomically (write + rename), as editors and ConfigMap updates do. */
const WRITE_FILE = `
const fs = require('fs');
const [path, text] = process.argv.slice(1);
fs.writeFileSync(path + '.new', text);
fs.renameSync(path + '.new', path);
`;

async function until(cond: () => Promise<boolean>, ms: number, what: () => string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(what());
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** Keeps a container running so tests can exec into it. */
const idle = (c: NodeContainer): NodeContainer => c.withEntrypoint(['sleep', 'infinity']);

/**
 * The DaemonSet's pod (deploy/base/daemonset.yaml): drop ALL, add NET_ADMIN (+ NET_RAW for the legacy
 * backend), read-only root, /tmp in memory, SVCPLANE_IPTABLES_MODE as given (the DaemonSet's nft).
 */
const daemonSetPod = (c: NodeContainer, opts: { netRaw?: boolean; mode?: string } = {}): NodeContainer =>
  c
    .withDroppedCapabilities('ALL')
    .withAddedCapabilities(...(opts.netRaw ? ['NET_ADMIN', 'NET_RAW'] : ['NET_ADMIN']))
    .withReadOnlyRootFilesystem()
    .withTmpFs({ '/tmp': 'rw,size=16m' })
    .withEnvironment(opts.mode === undefined ? {} : { SVCPLANE_IPTABLES_MODE: opts.mode });

/** CAP_NET_ADMIN (12) and CAP_NET_RAW (13), as capability bit masks. */
const NET_ADMIN = 1n << 12n;
const NET_RAW = 1n << 13n;

/** A capability set line of /proc/PID/status (CapEff, CapBnd …) as a bit mask. */
async function capabilityMask(box: StartedTestContainer, field: string): Promise<bigint> {
  const status = await runOk(box, ['cat', '/proc/self/status']);
  const hex = new RegExp(`^${field}:\\s*([0-9a-f]+)$`, 'm').exec(status)?.[1];
  assert.ok(hex, `${field} in /proc/self/status`);
  return BigInt(`0x${hex}`);
}

describe('container image (docker)', function () {
  this.timeout(120_000);
  const scope = new DockerScope();

  before(async function () {
    const why = await dockerUnavailable();
    if (why) skipBecause(this, `docker tests: ${why}`);
  });

  after(async () => {
    await scope.close();
  });

  describe('contents', () => {
    let box: StartedTestContainer;
    let rawBox: StartedTestContainer;
    let manifestDir: string;
    before(async () => {
      // Manifests from a host directory: a read-only root takes no files copied in.
      manifestDir = await mkdtemp(join(tmpdir(), 'svcp-docker-'));
      await writeFile(join(manifestDir, 'echo.yaml'), manifests(['10.244.0.7', '10.244.0.8']));
      // The DaemonSet's hostPath /run/xtables.lock (iptables-legacy takes it; /run is read-only).
      await writeFile(join(manifestDir, 'xtables.lock'), '');
      const mount = (c: NodeContainer) =>
        c.withBindMounts([
          { source: manifestDir, target: '/manifests', mode: 'ro' },
          { source: join(manifestDir, 'xtables.lock'), target: '/run/xtables.lock', mode: 'rw' },
        ]);
      box = await scope.start('contents', (c) => mount(daemonSetPod(idle(c))));
      rawBox = await scope.start('contents-raw', (c) => mount(daemonSetPod(idle(c), { netRaw: true })));
    });
    after(async () => {
      await rm(manifestDir, { recursive: true, force: true });
    });

    it('runs with exactly the capabilities the DaemonSet grants (NET_ADMIN), under a seccomp filter', async () => {
      // Proves the engine applied --cap-drop ALL: the tests below run with nothing more.
      assert.equal(await capabilityMask(box, 'CapEff'), NET_ADMIN);
      assert.equal(await capabilityMask(box, 'CapBnd'), NET_ADMIN);
      assert.equal(await capabilityMask(rawBox, 'CapEff'), NET_ADMIN | NET_RAW);
      // The engine's default profile (what RuntimeDefault means): mode 2 = filter.
      assert.match(await runOk(box, ['cat', '/proc/self/status']), /^Seccomp:\s+2$/m);
    });

    it('runs svcplane --version through the entrypoint', async () => {
      const out = await runOk(box, ['svcplane', '--version']);
      assert.equal(out.trim(), pkg.version);
    });

    it("answers to kube-proxy's DaemonSet command: /usr/local/bin/kube-proxy is svcplane", async () => {
      const out = await runOk(box, ['/usr/local/bin/kube-proxy', '--version']);
      assert.equal(out.trim(), pkg.version);
      // kubeadm's flags, through the entrypoint (the backend chosen: nft, as the DaemonSet sets it).
      const bad = await run(
        box,
        ['/usr/local/bin/kube-proxy', '--config=/nonexistent.conf', '--hostname-override=n1'],
        {
          SVCPLANE_IPTABLES_MODE: 'nft',
        },
      );
      // It got as far as reading the file: svcplane's own error, with the path.
      assert.equal(bad.exitCode, 1, `${bad.stdout}${bad.stderr}`);
      assert.match(bad.stderr, /invalid configuration \/nonexistent\.conf: .*cannot read/);
    });

    it('runs on the Node.js the tests run (the current LTS, scripts/node-env.sh)', async () => {
      const want = /^SVCPLANE_NODE_VERSION=(\S+)$/m.exec(
        readFileSync(new URL('../../scripts/node-env.sh', import.meta.url), 'utf8'),
      )?.[1];
      assert.ok(want, 'SVCPLANE_NODE_VERSION in scripts/node-env.sh');
      const inImage = (await runOk(box, ['node', '--version'])).trim();
      assert.equal(
        inImage.replace(/^v/, '').split('.')[0],
        want.split('.')[0],
        `node ${inImage} in the image`,
      );
      assert.match(pkg.engines.node, new RegExp(`>=\\s*${want.split('.')[0]}`), 'engines names it');
    });

    it('holds iptables (nft and legacy), nft, ipset, ipvsadm, conntrack and iproute2', async () => {
      for (const tool of [
        'iptables',
        'iptables-nft',
        'iptables-legacy',
        'iptables-restore',
        'ip6tables',
        'nft',
        'ipset',
        'ipvsadm',
        'conntrack',
        'ip',
        'node',
      ]) {
        await runOk(box, ['sh', '-c', `command -v ${tool}`]);
      }
      assert.match(await runOk(box, ['conntrack', '--version']), /conntrack v\d/);
    });

    it('has a read-only root: the backend is chosen by --iptables-binary, /etc/alternatives untouched', async () => {
      const probe = await run(box, ['sh', '-c', 'touch /etc/svcplane-probe']);
      assert.notEqual(probe.exitCode, 0, 'the root filesystem is writable');
      const sync = ['svcplane', 'sync', '--manifests', '/manifests', '--hostname-override', 'node'];
      // nft (the DaemonSet's choice) with NET_ADMIN only.
      const nft = await run(box, sync, { SVCPLANE_IPTABLES_MODE: 'nft' });
      assert.equal(nft.exitCode, 0, `svcplane sync (nft) failed:\n${nft.stdout}${nft.stderr}`);
      assert.match(await runOk(box, ['iptables-nft-save', '-t', 'nat']), /^:KUBE-SERVICES/m);
      // legacy needs NET_RAW; its rules land in the legacy tables only.
      const legacy = await run(rawBox, sync, { SVCPLANE_IPTABLES_MODE: 'legacy' });
      assert.equal(legacy.exitCode, 0, `svcplane sync (legacy) failed:\n${legacy.stdout}${legacy.stderr}`);
      assert.match(await runOk(rawBox, ['iptables-legacy-save', '-t', 'nat']), /^:KUBE-SERVICES/m);
      assert.doesNotMatch(await runOk(rawBox, ['iptables-nft-save', '-t', 'nat']), /KUBE-SERVICES/);
      // auto reads both backends: legacy now holds more rules, so auto picks legacy again.
      const auto = await run(rawBox, sync);
      assert.equal(auto.exitCode, 0, auto.stderr);
      assert.doesNotMatch(await runOk(rawBox, ['iptables-nft-save', '-t', 'nat']), /KUBE-SERVICES/);
      // auto without NET_RAW cannot read legacy: refuses to guess.
      const blind = await run(box, sync);
      assert.equal(blind.exitCode, 2);
      assert.match(blind.stderr, /needs CAP_NET_RAW/);
      const bad = await run(box, sync, { SVCPLANE_IPTABLES_MODE: 'bogus' });
      assert.equal(bad.exitCode, 2);
      assert.match(bad.stderr, /SVCPLANE_IPTABLES_MODE/);
      for (const b of [box, rawBox]) {
        assert.equal(
          (await runOk(b, ['readlink', '-f', '/usr/sbin/iptables'])).trim(),
          '/usr/sbin/xtables-nft-multi',
        );
      }
    });

    it('can write nat rules with NET_ADMIN only (not privileged)', async () => {
      const rules = '*nat\n:SVCPLANE-PROBE - [0:0]\n-A SVCPLANE-PROBE -j RETURN\nCOMMIT\n';
      await runOk(box, ['sh', '-c', `printf '${rules}' | iptables-restore --noflush`]);
      assert.match(await runOk(box, ['iptables-save', '-t', 'nat']), /:SVCPLANE-PROBE/);
    });
  });

  describe('traffic through a ClusterIP', () => {
    let net: string;
    let backendIps: string[];

    /**
     * A "node" container on the test network with the manifests mounted and the DaemonSet's
     * capabilities (all dropped but NET_ADMIN and NET_RAW).
     */
    async function startClient(name: string, command?: string[]): Promise<StartedTestContainer> {
      // Manifests from a host directory (a read-only root takes no files copied in); the test edits
      // them there, as a ConfigMap update would.
      const dir = await mkdtemp(join(tmpdir(), `svcp-docker-${name}-`));
      manifestDirs.push(dir);
      await writeFile(join(dir, 'echo.yaml'), manifests(backendIps));
      const client = await scope.start(name, (c) =>
        daemonSetPod(command ? c.withCommand(command) : idle(c), { mode: 'nft' })
          .withNetworkMode(net)
          .withHostname(name)
          // /proc/sys is read-only in a container that is not privileged: the engine sets the
          // namespaced sysctls a node would have (kube-proxy's localhost NodePorts need this one).
          .withSysctls({ 'net.ipv4.conf.all.route_localnet': '1' })
          .withBindMounts([{ source: dir, target: '/manifests', mode: 'rw' }]),
      );
      // The network is --internal (no way out): route the Service range to the node's interface,
      // as a cluster node's routing does, so the packet exists for DNAT to rewrite.
      await runOk(client, ['ip', 'route', 'replace', '10.96.0.0/12', 'dev', 'eth0']);
      return client;
    }

    async function askService(client: StartedTestContainer, n: number): Promise<string[]> {
      const out = await runOk(client, ['node', '-e', CLIENT, CLUSTER_IP, String(SERVICE_PORT), String(n)]);
      return out.trim().split('\n');
    }

    function assertBothBackends(answers: string[], n: number): void {
      assert.equal(answers.length, n);
      for (const a of answers)
        assert.ok(backendIps.includes(a), `answer "${a}" is not from a backend ${backendIps.join(', ')}`);
      // n random picks between two backends: both answer (a miss has probability 2^-(n-1)).
      assert.deepEqual([...new Set(answers)].sort(), [...backendIps].sort());
    }

    const manifestDirs: string[] = [];
    after(async () => {
      for (const dir of manifestDirs.splice(0)) await rm(dir, { recursive: true, force: true });
    });

    before(async () => {
      net = await scope.network('svc');
      const backends = await Promise.all(
        ['echo-0', 'echo-1'].map((name) =>
          scope.start(name, (c) => c.withNetworkMode(net).withEntrypoint(['node', '-e', ECHO_SERVER])),
        ),
      );
      backendIps = backends.map((b) => b.getIpAddress(net));
    });

    it('harness check: hand-written kube-proxy rules carry traffic between containers', async () => {
      // Proves the network, the capabilities and the client/servers work without svcplane, so a
      // failure of the next test is svcplane's. Same chain layout as kube-proxy's iptables mode.
      const client = await startClient('manual');
      const direct = await runOk(client, ['node', '-e', CLIENT, backendIps[0]!, String(BACKEND_PORT), '1']);
      assert.equal(direct.trim(), backendIps[0]);
      const [a, b] = backendIps as [string, string];
      const rules = [
        '*nat',
        ':KUBE-SERVICES - [0:0]',
        ':KUBE-SVC-TEST - [0:0]',
        ':KUBE-SEP-A - [0:0]',
        ':KUBE-SEP-B - [0:0]',
        '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        `-A KUBE-SERVICES -d ${CLUSTER_IP}/32 -p tcp -m tcp --dport ${SERVICE_PORT} -j KUBE-SVC-TEST`,
        '-A KUBE-SVC-TEST -m statistic --mode random --probability 0.5 -j KUBE-SEP-A',
        '-A KUBE-SVC-TEST -j KUBE-SEP-B',
        `-A KUBE-SEP-A -p tcp -m tcp -j DNAT --to-destination ${a}:${BACKEND_PORT}`,
        `-A KUBE-SEP-B -p tcp -m tcp -j DNAT --to-destination ${b}:${BACKEND_PORT}`,
        'COMMIT',
        '',
      ].join('\n');
      await runOk(client, ['sh', '-c', `printf '%s' '${rules}' | iptables-restore --noflush`]);
      assertBothBackends(await askService(client, 40), 40);
    });

    it('svcplane sync programs the Service and a client reaches both backends through it', async () => {
      const client = await startClient('client');
      // Default flags: /proc/sys is read-only here, but route_localnet is already 1 (set by the
      // engine), and svcplane only writes a sysctl that differs (kube-proxy's EnsureSysctl).
      const sync = await run(client, [
        'svcplane',
        'sync',
        '--manifests',
        '/manifests',
        '--hostname-override',
        'client',
      ]);
      assert.equal(sync.exitCode, 0, `svcplane sync failed:\n${sync.stdout}${sync.stderr}`);

      const nat = await runOk(client, ['iptables-save', '-t', 'nat']);
      assert.match(nat, /^-A OUTPUT .*-j KUBE-SERVICES/m, nat);
      assert.match(
        nat,
        new RegExp(
          `^-A KUBE-SERVICES -d ${CLUSTER_IP.replaceAll('.', '\\.')}/32 .*--dport ${SERVICE_PORT} .*-j KUBE-SVC-`,
          'm',
        ),
        nat,
      );
      // Docker's embedded-DNS rules in the same table survive svcplane's restore (--noflush).
      assert.match(nat, /DOCKER_OUTPUT/);

      assertBothBackends(await askService(client, 40), 40);
    });

    it("nftables mode with the image's nft 1.1.3 (/opt/svcplane-nft): svcplane sync programs the Service, both backends answer", async () => {
      const client = await startClient('nft113');
      const nft = '/opt/svcplane-nft/bin/nft';
      assert.match(await runOk(client, [nft, '--version']), /v1\.1\.3/);
      const sync = await run(client, [
        'svcplane',
        'sync',
        '--proxy-mode=nftables',
        `--nft-binary=${nft}`,
        '--manifests',
        '/manifests',
        '--hostname-override',
        'nft113',
      ]);
      assert.equal(sync.exitCode, 0, `svcplane sync failed:\n${sync.stdout}${sync.stderr}`);
      const table = await runOk(client, [nft, 'list', 'map', 'ip', 'kube-proxy', 'service-ips']);
      assert.match(
        table,
        new RegExp(`${CLUSTER_IP.replaceAll('.', '\\.')} \\. tcp \\. ${SERVICE_PORT} : goto service-`),
      );
      assertBothBackends(await askService(client, 40), 40);
    });

    it('svcplane run as the daemon: /healthz answers, traffic flows, manifest edits apply', async () => {
      // The image's default command is `run`; this is how the DaemonSet starts it (flags aside).
      const daemon = await startClient('daemon', [
        'run',
        '--manifests=/manifests',
        '--hostname-override=daemon',
        '--iptables-min-sync-period=100ms',
        '--iptables-sync-period=2s',
        '-v=2',
      ]);
      let health = '';
      await until(
        async () => {
          const r = await run(daemon, ['node', '-e', HEALTHZ_CLIENT]);
          health = r.stdout.trim();
          return health.startsWith('200 ');
        },
        20_000,
        () => `/healthz never answered 200 (last: "${health}")`,
      );
      const body = JSON.parse(health.slice(4)) as { lastUpdated?: string };
      assert.ok(body.lastUpdated && Date.parse(body.lastUpdated) > 0, health);
      assertBothBackends(await askService(daemon, 40), 40);

      // No --pid=host: the container is a PID namespace of its own, as a pod without hostPID, and
      // the kernel reports the daemon's commits under host PIDs. The kernel watch still knows them
      // (by process name), so its drift checks read nothing.
      let logs = '';
      await until(
        async () => {
          const r = await runHost(['/usr/bin/docker', 'logs', daemon.getId()], { allowFailure: true });
          logs = r.stdout + r.stderr;
          return /"drift check" backend="iptables\/IPv4" check="quiet"/.test(logs);
        },
        15_000,
        () => `no quiet drift check:\n${logs.split('\n').slice(-30).join('\n')}`,
      );
      assert.match(logs, /"kernel watch armed" backend="iptables\/IPv4" [^\n]*pidNamespace=true/);
      assert.doesNotMatch(logs, /"drift check" backend="iptables\/IPv4" check="full"/);

      // The manifest source watches its files: one backend left → only that one answers.
      const [first] = backendIps as [string, string];
      await runOk(daemon, ['node', '-e', WRITE_FILE, '/manifests/echo.yaml', manifests([first])]);
      // Nothing but /tmp is writable: the daemon ran with a read-only root all along.
      assert.notEqual((await run(daemon, ['sh', '-c', 'touch /svcplane-probe'])).exitCode, 0);
      let answers: string[] = [];
      await until(
        async () => {
          answers = await askService(daemon, 10);
          return answers.every((a) => a === first);
        },
        15_000,
        () => `traffic still reaches ${answers.join(', ')}`,
      );
    });
  });
});
