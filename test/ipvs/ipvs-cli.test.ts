import assert from 'node:assert/strict';
import { randomSandboxId } from '../support/sandbox.js';
import { cmd, ipBatch, requireUml, tryCmd } from './helpers.js';

/**
 * The CLI end to end in a private namespace of the UML kernel: `svcplane sync --proxy-mode ipvs`
 * programs the example manifests with the --ipvs-… flags, and `svcplane cleanup` removes every trace
 * (virtual servers, kube-ipvs0, ipsets, chains).
 */
describe('svcplane sync/cleanup --proxy-mode ipvs (CLI, UML)', function () {
  this.timeout(90_000);
  const ns = `svcp-${randomSandboxId()}-cli`;
  const inNs = (argv: string[]): string[] => ['ip', 'netns', 'exec', ns, ...argv];
  const svcplane = (args: string[]) => tryCmd(inNs([process.execPath, 'bin/svcplane.js', ...args]));

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

  it('sync programs VSs with the chosen scheduler, kube-ipvs0 and the sets; cleanup removes them', async () => {
    const sync = await svcplane([
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
      '--ipvs-scheduler',
      'wrr',
      '--ipvs-strict-arp',
    ]);
    assert.equal(sync.exitCode, 0, sync.stderr);
    assert.match(sync.stdout, /ipvs\/IPv4/, sync.stderr);
    const saved = (await cmd(inNs(['ipvsadm', '-Sn']))).stdout;
    assert.match(saved, /^-A -u 10\.96\.0\.53:53 -s wrr$/m);
    assert.match(saved, /^-A -t 192\.0\.2\.1:\d+ -s wrr$/m, 'a NodePort VS on the node address');
    assert.equal((await cmd(inNs(['sysctl', '-n', 'net.ipv4.vs.conntrack']))).stdout.trim(), '1');
    assert.equal((await cmd(inNs(['sysctl', '-n', 'net.ipv4.conf.all.arp_ignore']))).stdout.trim(), '1');
    assert.match(
      (await cmd(inNs(['ip', '-o', 'addr', 'show', 'dev', 'kube-ipvs0']))).stdout,
      /10\.96\.0\.53\/32/,
    );
    assert.match((await cmd(inNs(['ipset', 'list', '-n']))).stdout, /KUBE-CLUSTER-IP/);

    const clean = await svcplane(['cleanup']);
    assert.equal(clean.exitCode, 0, clean.stderr);
    assert.equal((await cmd(inNs(['ipvsadm', '-Sn']))).stdout.trim(), '');
    assert.doesNotMatch((await cmd(inNs(['ipset', 'list', '-n']))).stdout, /KUBE-/);
    assert.notEqual((await tryCmd(inNs(['ip', 'link', 'show', 'kube-ipvs0']))).exitCode, 0);
    assert.doesNotMatch((await cmd(inNs(['iptables-save']))).stdout, /KUBE-/);
  });
});
