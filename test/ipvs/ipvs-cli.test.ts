import assert from 'node:assert/strict';
import { IpvsProxier } from '../../src/ipvs/proxier.js';
import { parseIpvsadmSave } from '../../src/ipvs/ipvsadm.js';
import { loadManifestObjects } from '../../src/kube/manifests.js';
import { buildClusterState } from '../../src/model/build.js';
import { randomSandboxId } from '../support/sandbox.js';
import { cmd, ipBatch, requireUml, tryCmd } from './helpers.js';

/**
 * The CLI end to end in a private namespace of the UML kernel: `svcplane sync --proxy-mode ipvs`
 * programs the example manifests with the --ipvs-… flags (sysctls, timeouts, scheduler and its flags,
 * excluded CIDRs, all read back from the kernel), and `svcplane cleanup` removes every trace
 * (virtual servers, kube-ipvs0, ipsets, chains). A fresh namespace starts with every sysctl at 0 and
 * the kernel's default IPVS timeouts, so each value asserted here was written by svcplane.
 */
describe('svcplane sync/cleanup --proxy-mode ipvs (CLI, UML)', function () {
  this.timeout(90_000);
  const ns = `svcp-${randomSandboxId()}-cli`;
  const inNs = (argv: string[]): string[] => ['ip', 'netns', 'exec', ns, ...argv];
  const svcplane = (args: string[]) => tryCmd(inNs([process.execPath, 'bin/svcplane.js', ...args]));
  const SYSCTLS = {
    'net.ipv4.vs.conntrack': '1',
    'net.ipv4.vs.expire_nodest_conn': '1',
    'net.ipv4.vs.expire_quiescent_template': '1',
    'net.ipv4.ip_forward': '1',
    'net.ipv4.conf.all.arp_ignore': '1',
    'net.ipv4.conf.all.arp_announce': '2',
  };
  /** Every key of SYSCTLS with its value, in one process (each one costs ~50 ms in UML). */
  const sysctls = async (): Promise<Record<string, string>> => {
    const out = (await cmd(inNs(['sysctl', ...Object.keys(SYSCTLS)]))).stdout;
    return Object.fromEntries(
      out
        .trim()
        .split('\n')
        .map((l) => l.split(' = ') as [string, string]),
    );
  };
  const ipvsadm = async (): Promise<string> => (await cmd(inNs(['ipvsadm', '-Sn']))).stdout;
  const COMMON = [
    'sync',
    '--proxy-mode',
    'ipvs',
    '--manifests',
    'examples',
    '--hostname-override',
    'node-1',
    '--cluster-cidr',
    '10.244.0.0/16',
    '--ip-families',
    'IPv4',
  ];

  before(async function () {
    requireUml(this);
    await cmd(['ip', 'netns', 'add', ns]);
    await ipBatch(
      ['link set lo up', 'link add eth0 type dummy', 'addr add 192.0.2.1/24 dev eth0', 'link set eth0 up'],
      ns,
    );
  });
  after(async () => {
    if (process.env.SVCPLANE_IN_UML === '1') await tryCmd(['ip', 'netns', 'del', ns]);
  });

  it('sync: scheduler, sysctls, --ipvs-strict-arp, ipvsadm --set timeouts, --ipvs-exclude-cidrs; cleanup removes it all', async () => {
    // Before: what a fresh namespace has (so the checks below see svcplane's writes).
    const zero = Object.fromEntries(Object.keys(SYSCTLS).map((k) => [k, '0']));
    assert.deepEqual(await sysctls(), zero, 'before');
    assert.match((await cmd(inNs(['ipvsadm', '-L', '--timeout']))).stdout, /: 900 120 300$/m);
    // Virtual servers svcplane did not create: one inside --ipvs-exclude-cidrs, one outside it, one of
    // the other family.
    await cmd(
      inNs(['ipvsadm', '-R']),
      '-A -t 198.18.0.10:80 -s rr\n-A -t 198.51.100.99:80 -s rr\n-A -t [2001:db8:99::1]:80 -s rr\n',
    );

    const sync = await svcplane([
      ...COMMON,
      '--ipvs-scheduler',
      'wrr',
      '--ipvs-strict-arp',
      '--ipvs-tcp-timeout',
      '901s',
      '--ipvs-tcpfin-timeout',
      '2m1s',
      '--ipvs-udp-timeout',
      '301s',
      '--ipvs-exclude-cidrs',
      '198.18.0.0/15',
    ]);
    assert.equal(sync.exitCode, 0, sync.stderr);
    assert.match(sync.stdout, /ipvs\/IPv4/, sync.stderr);
    const saved = await ipvsadm();
    assert.match(saved, /^-A -u 10\.96\.0\.53:53 -s wrr$/m);
    assert.match(saved, /^-A -t 192\.0\.2\.1:\d+ -s wrr$/m, 'a NodePort VS on the node address');
    assert.match(saved, /^-A -t 198\.18\.0\.10:80 -s rr$/m, 'excluded CIDR: kept');
    assert.doesNotMatch(saved, /198\.51\.100\.99/, 'not ours, not excluded: deleted (IPVS state is global)');
    assert.match(saved, /^-A -t \[2001:db8:99::1\]:80 -s rr$/m, 'the other family: not this proxier’s');
    assert.deepEqual(await sysctls(), SYSCTLS);
    assert.match((await cmd(inNs(['ipvsadm', '-L', '--timeout']))).stdout, /: 901 121 301$/m);
    assert.match(
      (await cmd(inNs(['ip', '-o', 'addr', 'show', 'dev', 'kube-ipvs0']))).stdout,
      /10\.96\.0\.53\/32/,
    );
    assert.match((await cmd(inNs(['ipset', 'list', '-n']))).stdout, /KUBE-CLUSTER-IP/);

    const clean = await svcplane(['cleanup']);
    assert.equal(clean.exitCode, 0, clean.stderr);
    assert.equal((await ipvsadm()).trim(), '');
    assert.doesNotMatch((await cmd(inNs(['ipset', 'list', '-n']))).stdout, /KUBE-/);
    assert.notEqual((await tryCmd(inNs(['ip', 'link', 'show', 'kube-ipvs0']))).exitCode, 0);
    assert.doesNotMatch((await cmd(inNs(['iptables-save']))).stdout, /KUBE-/);
  });

  it('--ipvs-scheduler mh with --ipvs-scheduler-flags: written and read back, so the next sync writes no IPVS line', async () => {
    const sync = await svcplane([
      ...COMMON,
      '--ipvs-scheduler',
      'mh',
      '--ipvs-scheduler-flags',
      'flag-1,flag-2',
    ]);
    assert.equal(sync.exitCode, 0, sync.stderr);
    const saved = await ipvsadm();
    assert.match(saved, /^-A -u 10\.96\.0\.53:53 -s mh -b mh-fallback,mh-port$/m);
    // ClientIP affinity (examples/sticky.yaml): ipvsadm prints the persistence before the flags.
    assert.match(saved, /^-A -t \S+ -s mh -p \d+ -b mh-fallback,mh-port$/m);
    const table = parseIpvsadmSave(saved);
    assert.ok(table.size > 5);
    for (const { vs } of table.values()) assert.deepEqual(vs.schedFlags, ['mh-fallback', 'mh-port']);

    // The next sync (the same flags, as svcplane run would do it) finds nothing to change.
    const { objects } = await loadManifestObjects('examples');
    const state = buildClusterState(objects);
    const config = {
      family: 'IPv4',
      nodeName: 'node-1',
      masqueradeBit: 14,
      masqueradeAll: false,
      clusterCIDRs: ['10.244.0.0/16'],
      nodePortAddresses: [],
      scheduler: 'mh',
      strictARP: false,
      excludeCIDRs: [],
      tcpTimeout: 0,
      tcpFinTimeout: 0,
      udpTimeout: 0,
      netns: ns,
    } as const;
    const proxier = new IpvsProxier({ ...config, schedulerFlags: ['mh-fallback', 'mh-port'] });
    // Without --ipvs-scheduler-flags: kube-proxy's mh-port only.
    const kubeProxyDefault = new IpvsProxier(config);
    try {
      const report = await proxier.sync(state);
      assert.equal(report.details?.ipvsLines, 0, 'no virtual server edited');
      assert.equal(report.details?.ipsetAdded, 0);
      assert.equal(report.details?.bound, 0);
      // A scheduler flag changed: every virtual server is edited in place (-E), none re-created.
      const edit = await kubeProxyDefault.sync(state);
      assert.equal(edit.details?.ipvsLines, table.size);
      assert.match(await ipvsadm(), /^-A -u 10\.96\.0\.53:53 -s mh -b mh-port$/m);
    } finally {
      proxier.stop();
      kubeProxyDefault.stop();
    }
    // What is left goes with the namespace (after hook).
  });
});
