import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseAllDocuments } from 'yaml';
import { parseKubeProxyConfig } from '../../src/config/kube-proxy-config.js';
import { run, startProcess, type RunResult } from '../../src/util/exec.js';
import { packageRoot } from '../../src/util/paths.js';
import { eventually } from '../support/daemon.js';
import { requireRoot } from '../support/sandbox.js';

/**
 * `svcplane [flags]` as kube-proxy's command line, each case a real process in a private network
 * namespace of its own: every kube-proxy flag in kube-proxy's form, the conntrack sysctls read back in
 * that namespace, what a container may not write, and the one-line failures an operator meets first.
 *
 * Which conntrack settings are per network namespace: the TCP established / close-wait timeouts, the
 * UDP timeouts and tcp_be_liberal are (read back here). nf_conntrack_max and the module's hashsize are
 * one value for the whole machine, read-only outside the host's namespace: here only the warning is
 * checked (and that the host's value did not move); they are written and read back in User-mode Linux,
 * whose kernel is private to the test (test/ipvs/conntrack-sysctls.test.ts).
 */

const MAIN = pathToFileURL(join(packageRoot(), 'src', 'cli', 'main.ts')).href;
const ENTRY = `import(${JSON.stringify(MAIN)}).then(async (m) => { process.exitCode = await m.cli(['node', 'svcplane', ...process.argv.slice(1)]); });`;

function kubeadmConfig(): string {
  const text = readFileSync(join(packageRoot(), 'test/fixtures/kubeadm/kube-proxy-configmap.yaml'), 'utf8');
  return (parseAllDocuments(text)[0]!.toJS() as { data: Record<string, string> }).data['config.conf']!;
}

const CT = '/proc/sys/net/netfilter';

describe('svcplane [flags]: kube-proxy’s command line (real processes, private netns)', function () {
  this.timeout(90_000);
  const NS = `svcp-k${randomBytes(4).toString('hex')}`;
  let nsCreated = false;
  let dir = '';

  before(async function () {
    requireRoot(this);
    await run(['ip', 'netns', 'add', NS]);
    nsCreated = true;
    await run(['ip', 'link', 'set', 'lo', 'up'], { netns: NS });
    // conntrack's per-namespace sysctls appear once the module is in use: a nat table does that.
    await run(['iptables', '-t', 'nat', '-S'], { netns: NS });
    dir = mkdtempSync(join(tmpdir(), 'svcplane-kp-cli-'));
  });

  after(async () => {
    if (nsCreated) await run(['ip', 'netns', 'del', NS], { allowFailure: true });
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** `svcplane ARGS` in the namespace (optionally through a wrapper, e.g. setpriv). */
  function svcplane(args: readonly string[], wrapper: readonly string[] = []): Promise<RunResult> {
    return run([...wrapper, process.execPath, '--import=tsx', '-e', ENTRY, '--', ...args], {
      netns: NS,
      allowFailure: true,
      timeoutMs: 60_000,
    });
  }

  const sysctl = async (name: string): Promise<number> =>
    Number((await run(['cat', `${CT}/${name}`], { netns: NS })).stdout.trim());

  it('takes every kube-proxy flag in its form; warns once for what it does not implement', async () => {
    const out = join(dir, 'written.yaml');
    const res = await svcplane([
      `--write-config-to=${out}`,
      '--feature-gates=Foo=true',
      '--kubeconfig=/etc/kubernetes/proxy.conf',
      '--master=https://10.0.0.1:6443',
      '--kube-api-content-type=application/json',
      '--kube-api-burst=20',
      '--kube-api-qps=7.5',
      '--hostname-override=Node-1',
      '--bind-address=192.0.2.1',
      '--healthz-bind-address=0.0.0.0:10256',
      '--metrics-bind-address=',
      '--bind-address-hard-fail',
      '--profiling',
      '--show-hidden-metrics-for-version=1.34',
      '--proxy-mode=ipvs',
      '--iptables-masquerade-bit=13',
      '--masquerade-all',
      '--iptables-localhost-nodeports=false',
      '--iptables-sync-period=20s',
      '--iptables-min-sync-period=2s',
      '--ipvs-sync-period=25s',
      '--ipvs-min-sync-period=1s',
      '--ipvs-scheduler=wrr',
      '--ipvs-exclude-cidrs=10.9.0.0/16',
      '--ipvs-strict-arp',
      '--ipvs-tcp-timeout=15m',
      '--ipvs-tcpfin-timeout=30s',
      '--ipvs-udp-timeout=10s',
      '--detect-local-mode=ClusterCIDR',
      '--pod-bridge-interface=cbr0',
      '--pod-interface-name-prefix=veth',
      '--cluster-cidr=10.244.0.0/16',
      '--nodeport-addresses=192.0.2.0/24',
      '--oom-score-adj=-998',
      '--conntrack-max-per-core=0',
      '--conntrack-min=100000',
      '--conntrack-tcp-timeout-established=12h',
      '--conntrack-tcp-timeout-close-wait=30m',
      '--conntrack-tcp-be-liberal',
      '--conntrack-udp-timeout=30s',
      '--conntrack-udp-timeout-stream=2m',
      '--config-sync-period=10m',
      '--healthz-port=10256',
      '--metrics-port=10249',
      '--logging-format=text',
      '--log-flush-frequency=5s',
      '-v=2',
      '--vmodule=proxier=4',
      '--log-text-split-stream=false',
      '--log-text-info-buffer-size=0',
      '--log-json-split-stream=false',
      '--log-json-info-buffer-size=0',
    ]);
    assert.equal(res.exitCode, 0, res.stderr);
    const warnings = res.stderr.split('\n').filter((l) => l.startsWith('W'));
    assert.equal(warnings.length, 5, res.stderr);
    for (const w of [
      '--healthz-port=10256: deprecated',
      '--metrics-port=10249: deprecated',
      'Foo=true',
      '--profiling',
      '--vmodule',
    ]) {
      assert.ok(
        warnings.some((l) => l.includes(w)),
        `${w} in\n${res.stderr}`,
      );
    }
    const text = readFileSync(out, 'utf8');
    // Written as kube-proxy writes it: "" (which a file reads back as the default, as in kube-proxy).
    assert.match(text, /^metricsBindAddress: ""$/m, '--metrics-bind-address= turns the server off');
    const written = parseKubeProxyConfig(text);
    assert.deepEqual(written.warnings, []);
    const c = written.config;
    assert.equal(c.mode, 'ipvs');
    assert.equal(c.hostnameOverride, 'node-1');
    assert.equal(c.ipvs.scheduler, 'wrr');
    assert.equal(c.iptables.masqueradeBit, 13);
    assert.equal(c.conntrack.tcpBeLiberal, true);
    assert.equal(c.conntrack.tcpEstablishedTimeoutMs, 12 * 3_600_000);
    assert.equal(c.oomScoreAdj, -998);
    assert.equal(c.configSyncPeriodMs, 600_000);
    assert.deepEqual(c.featureGates, { Foo: true });
  });

  it('an invalid value fails at once with the flag and the reason, one line', async () => {
    for (const [flag, reason] of [
      ['--iptables-sync-period=30', /--iptables-sync-period: invalid value "30": missing unit/],
      ['--oom-score-adj=-2000', /--oom-score-adj: invalid value "-2000": must be within \[-1000, 1000\]/],
      ['--proxy-mode=userspace', /--proxy-mode: "userspace" is not supported by svcplane/],
      ['--no-such-flag', /--no-such-flag: unknown flag/],
    ] as const) {
      const res = await svcplane(['--write-config-to=/dev/null', flag]);
      assert.equal(res.exitCode, 1, flag);
      assert.match(res.stderr, reason);
      assert.equal(res.stderr.trim().split('\n').length, 1, res.stderr);
    }
  });

  it("kubeadm's config.conf: no warning, and its conntrack settings read back in the namespace", async () => {
    const conf = join(dir, 'config.conf');
    writeFileSync(conf, kubeadmConfig());
    await run(
      [
        'sh',
        '-c',
        `echo 432000 > ${CT}/nf_conntrack_tcp_timeout_established; echo 60 > ${CT}/nf_conntrack_tcp_timeout_close_wait`,
      ],
      { netns: NS },
    );
    const hostMax = Number(readFileSync(`${CT}/nf_conntrack_max`, 'utf8'));
    const res = await svcplane([`--config=${conf}`, '--hostname-override=node-1', '--init-only']);
    assert.equal(res.exitCode, 0, res.stderr);
    const warnings = res.stderr.split('\n').filter((l) => l.startsWith('W') || l.startsWith('E'));
    // nf_conntrack_max (max(32768 × CPUs, 131072)) may exceed this machine's value: then the one
    // warning says the host's namespace must set it. Nothing else is said.
    const expectedMax = Math.max(32768 * (await cpus()), 131072);
    assert.deepEqual(
      warnings.map((w) => /cannot set (\S+)=/.exec(w)?.[1]),
      expectedMax > hostMax ? ['net.netfilter.nf_conntrack_max'] : [],
      res.stderr,
    );
    assert.equal(await sysctl('nf_conntrack_tcp_timeout_established'), 86400);
    assert.equal(await sysctl('nf_conntrack_tcp_timeout_close_wait'), 3600);
    assert.equal(
      Number(readFileSync(`${CT}/nf_conntrack_max`, 'utf8')),
      hostMax,
      "the host's value did not move",
    );
  });

  it('flags: be_liberal, UDP timeouts; nf_conntrack_max above the host’s is one warning naming it', async () => {
    const hostMax = Number(readFileSync(`${CT}/nf_conntrack_max`, 'utf8'));
    const res = await svcplane([
      '--hostname-override=node-1',
      '--init-only',
      '--conntrack-tcp-be-liberal',
      '--conntrack-udp-timeout=17s',
      '--conntrack-udp-timeout-stream=97s',
      '--conntrack-tcp-timeout-established=7h',
      `--conntrack-min=${hostMax + 1024}`,
      '--conntrack-max-per-core=1',
    ]);
    assert.equal(res.exitCode, 0, res.stderr);
    assert.equal(await sysctl('nf_conntrack_tcp_be_liberal'), 1);
    assert.equal(await sysctl('nf_conntrack_udp_timeout'), 17);
    assert.equal(await sysctl('nf_conntrack_udp_timeout_stream'), 97);
    assert.equal(await sysctl('nf_conntrack_tcp_timeout_established'), 7 * 3600);
    const warnings = res.stderr.split('\n').filter((l) => l.startsWith('W'));
    assert.equal(warnings.length, 1, res.stderr);
    assert.match(
      warnings[0]!,
      new RegExp(
        `cannot set net\\.netfilter\\.nf_conntrack_max=${hostMax + 1024} \\(now ${hostMax}\\): permission denied; only a privileged process in the host's network namespace`,
      ),
    );
    assert.equal(Number(readFileSync(`${CT}/nf_conntrack_max`, 'utf8')), hostMax);
  });

  it('a read-only /proc/sys (a container without privileges): one warning per setting, start-up goes on', async () => {
    await run(['sh', '-c', `echo 0 > ${CT}/nf_conntrack_tcp_be_liberal`], { netns: NS });
    const res = await svcplane(
      [
        '--hostname-override=node-1',
        '--init-only',
        '--conntrack-tcp-be-liberal',
        '--conntrack-max-per-core=0',
        '--conntrack-tcp-timeout-close-wait=0',
        '--conntrack-tcp-timeout-established=0',
      ],
      [
        'unshare',
        '-m',
        'sh',
        '-c',
        'mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys && exec "$@"',
        'ro',
      ],
    );
    assert.equal(res.exitCode, 0, res.stderr);
    const warnings = res.stderr.split('\n').filter((l) => l.startsWith('W'));
    assert.equal(warnings.length, 1, res.stderr);
    assert.match(
      warnings[0]!,
      /cannot set net\.netfilter\.nf_conntrack_tcp_be_liberal=1 \(now 0\): read-only file system; the container sees \/proc\/sys read-only/,
    );
    assert.equal(await sysctl('nf_conntrack_tcp_be_liberal'), 0);
  });

  it('not root: one line with the cause and what to do, no stack trace (below -v=4)', async () => {
    const manifests = join(packageRoot(), 'examples');
    const asNobody = ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', '--inh-caps=-all'];
    const res = await svcplane(
      [
        `--manifests=${manifests}`,
        '--hostname-override=node-1',
        '--metrics-bind-address=',
        '--healthz-bind-address=',
      ],
      asNobody,
    );
    assert.equal(res.exitCode, 1, res.stderr);
    const lines = res.stderr
      .trim()
      .split('\n')
      .filter((l) => !l.startsWith('I'));
    assert.equal(lines.length, 1, res.stderr);
    assert.match(
      lines[0]!,
      /^E\d{4} [\d:.]+ +\d+ svcplane\] "svcplane cannot start: no usable iptables for any IP family: IPv4: iptables-save.*Permission denied.*run svcplane as root/,
    );
    assert.doesNotMatch(res.stderr, /\n\s+at /, 'no stack trace');
    const verbose = await svcplane(
      [
        `--manifests=${manifests}`,
        '--hostname-override=node-1',
        '--metrics-bind-address=',
        '--healthz-bind-address=',
        '-v=4',
      ],
      asNobody,
    );
    assert.equal(verbose.exitCode, 1);
    assert.match(verbose.stderr, /StartupError: no usable iptables.*\\n +at /, 'the stack at -v=4');
  });

  it('no iptables: one line naming the missing command', async () => {
    const res = await svcplane([
      `--manifests=${join(packageRoot(), 'examples')}`,
      '--hostname-override=node-1',
      '--iptables-binary=iptables-absent',
      '--metrics-bind-address=',
    ]);
    assert.equal(res.exitCode, 1, res.stderr);
    const lines = res.stderr
      .trim()
      .split('\n')
      .filter((l) => !l.startsWith('I'));
    assert.deepEqual(lines.length, 1, res.stderr);
    assert.match(
      lines[0]!,
      /no usable iptables for any IP family: IPv4: iptables-absent-save not found \(install iptables, or set --iptables-binary\); IPv6: ip6tables-absent-save not found/,
    );
  });

  it('both servers off (--healthz-bind-address= --metrics-bind-address=): the daemon runs until SIGTERM', async () => {
    const child = startProcess(
      [
        process.execPath,
        '--import=tsx',
        '-e',
        ENTRY,
        '--',
        `--manifests=${join(packageRoot(), 'examples')}`,
        '--hostname-override=node-1',
        '--healthz-bind-address=',
        '--metrics-bind-address=',
      ],
      { netns: NS },
    );
    const lines: string[] = [];
    child.onLine((l) => lines.push(l));
    let exitedEarly: number | null | undefined;
    void child.exited.then((code) => (exitedEarly = code));
    try {
      await eventually('the running line', 30_000, () =>
        Promise.resolve(lines.some((l) => l.includes('svcplane running')) ? true : undefined),
      );
      // Before the fix node exited here (status 13, "unsettled top-level await"): nothing kept it alive.
      await new Promise((r) => setTimeout(r, 2_000));
      assert.equal(
        exitedEarly,
        undefined,
        `exited on its own (${String(exitedEarly)}):\n${lines.join('\n')}`,
      );
    } finally {
      const code = await child.stop(10_000);
      if (exitedEarly === undefined) assert.equal(code, 0, lines.join('\n'));
    }
  });
});

async function cpus(): Promise<number> {
  const { onlineCpus } = await import('../../src/conntrack/sysctls.js');
  return onlineCpus();
}
