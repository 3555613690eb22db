// Proves the IPVS test kernel (User-mode Linux, scripts/test-ipvs.sh) has what svcplane's IPVS backend
// needs: IPVS, dummy links, ipvsadm save/restore, ipset + iptables-legacy `-m set`, and real TCP through
// an IPVS masquerade virtual server from the node and from another pod.
import { strict as assert } from 'node:assert';
import { Background, cmd, ipBatch, requireUml, tryCmd, waitFor } from './helpers.js';

describe('UML IPVS kernel (smoke)', function () {
  before(function () {
    requireUml(this);
  });

  it('has IPVS (ipvsadm -Ln)', async () => {
    const { stdout } = await cmd(['ipvsadm', '-Ln']);
    assert.match(stdout, /IP Virtual Server version/);
  });

  describe('dummy link', () => {
    after(() => tryCmd(['ip', 'link', 'del', 'smoke-dummy0']));

    it('can be created and carries /32 addresses', async () => {
      await ipBatch(['link add smoke-dummy0 type dummy', 'addr add 10.96.200.1/32 dev smoke-dummy0']);
      const { stdout } = await cmd(['ip', '-o', 'addr', 'show', 'dev', 'smoke-dummy0']);
      assert.match(stdout, /inet 10\.96\.200\.1\/32/);
      const link = await cmd(['ip', '-d', 'link', 'show', 'smoke-dummy0']);
      assert.match(link.stdout, /dummy/);
    });
  });

  describe('ipvsadm -R / -Sn', () => {
    after(() => tryCmd(['ipvsadm', '-C']));

    it('round-trips virtual and real servers', async () => {
      const rules = [
        '-A -t 10.96.200.10:80 -s rr',
        '-a -t 10.96.200.10:80 -r 10.244.200.2:8080 -m -w 1',
        '-a -t 10.96.200.10:80 -r 10.244.200.3:8080 -m -w 1',
        '-A -u 10.96.200.10:53 -s wrr -p 10800',
        '-a -u 10.96.200.10:53 -r 10.244.200.2:53 -m -w 2',
      ];
      await cmd(['ipvsadm', '-R'], rules.join('\n') + '\n');
      const { stdout } = await cmd(['ipvsadm', '-Sn']);
      const saved = stdout.trim().split('\n');
      for (const line of [
        '-A -t 10.96.200.10:80 -s rr',
        '-a -t 10.96.200.10:80 -r 10.244.200.2:8080 -m -w 1',
        '-a -t 10.96.200.10:80 -r 10.244.200.3:8080 -m -w 1',
        '-A -u 10.96.200.10:53 -s wrr -p 10800',
        '-a -u 10.96.200.10:53 -r 10.244.200.2:53 -m -w 2',
      ]) {
        assert.ok(saved.includes(line), `ipvsadm -Sn lacks "${line}":\n${stdout}`);
      }
      // Restoring the saved text again into an empty table gives the same text.
      await cmd(['ipvsadm', '-C']);
      await cmd(['ipvsadm', '-R'], stdout);
      assert.equal((await cmd(['ipvsadm', '-Sn'])).stdout, stdout);
    });
  });

  describe('ipset + iptables-legacy -m set', () => {
    after(async () => {
      await tryCmd(['iptables', '-t', 'nat', '-F', 'SMOKE-SERVICES']);
      await tryCmd(['iptables', '-t', 'nat', '-X', 'SMOKE-SERVICES']);
      await tryCmd(['ipset', 'destroy', 'SMOKE-CLUSTER-IP']);
    });

    it('restores a set and matches it from an iptables rule', async () => {
      const version = await cmd(['iptables', '--version']);
      assert.match(version.stdout, /legacy/, 'iptables inside UML must be the legacy backend');
      await cmd(
        ['ipset', 'restore'],
        [
          'create SMOKE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536',
          'add SMOKE-CLUSTER-IP 10.96.200.1,tcp:80',
          'add SMOKE-CLUSTER-IP 10.96.200.2,udp:53',
          '',
        ].join('\n'),
      );
      const saved = (await cmd(['ipset', 'save', 'SMOKE-CLUSTER-IP'])).stdout;
      assert.match(saved, /add SMOKE-CLUSTER-IP 10\.96\.200\.1,tcp:80/);
      assert.match(saved, /add SMOKE-CLUSTER-IP 10\.96\.200\.2,udp:53/);
      await cmd(
        ['iptables-restore', '--noflush'],
        [
          '*nat',
          ':SMOKE-SERVICES - [0:0]',
          '-A SMOKE-SERVICES -m comment --comment "smoke cluster IPs" -m set --match-set SMOKE-CLUSTER-IP dst,dst -j ACCEPT',
          'COMMIT',
          '',
        ].join('\n'),
      );
      const nat = (await cmd(['iptables-save', '-t', 'nat'])).stdout;
      assert.match(nat, /-A SMOKE-SERVICES .*--match-set SMOKE-CLUSTER-IP dst,dst -j ACCEPT/);
    });
  });

  describe('TCP to an IPVS virtual server reaches a pod', () => {
    // node (UML's root netns) -- br-smoke 10.244.9.1/24 -- veths -- pod1 10.244.9.2 (server), pod2 .3 (client)
    // VIP 10.96.0.1:80 on dummy smoke-ipvs0, rr, masquerade to 10.244.9.2:8080.
    let server: Background | undefined;

    before(async function () {
      this.timeout(60_000);
      await cmd(['sysctl', '-qw', 'net.ipv4.ip_forward=1', 'net.ipv4.vs.conntrack=1']);
      await ipBatch([
        'netns add smoke-pod1',
        'netns add smoke-pod2',
        'link add br-smoke type bridge',
        'addr add 10.244.9.1/24 dev br-smoke',
        'link set br-smoke up',
        'link add smoke-veth1 type veth peer name eth0 netns smoke-pod1',
        'link add smoke-veth2 type veth peer name eth0 netns smoke-pod2',
        'link set smoke-veth1 master br-smoke up',
        'link set smoke-veth2 master br-smoke up',
        'link add smoke-ipvs0 type dummy',
        'addr add 10.96.0.1/32 dev smoke-ipvs0',
      ]);
      for (const [ns, ip] of [
        ['smoke-pod1', '10.244.9.2'],
        ['smoke-pod2', '10.244.9.3'],
      ] as const) {
        await ipBatch(
          [
            'link set lo up',
            `addr add ${ip}/24 dev eth0`,
            'link set eth0 up',
            'route add default via 10.244.9.1',
          ],
          ns,
        );
      }
      await cmd(
        ['ipvsadm', '-R'],
        '-A -t 10.96.0.1:80 -s rr\n-a -t 10.96.0.1:80 -r 10.244.9.2:8080 -m -w 1\n',
      );
      // Pod -> VIP -> pod on the same bridge: the reply must come back through the node to be un-NATed,
      // so masquerade IPVS traffic (what kube-proxy's KUBE-MARK-MASQ does for such clients).
      await cmd(
        ['iptables-restore', '--noflush'],
        '*nat\n-A POSTROUTING -m ipvs --vaddr 10.96.0.1/32 --vport 80 -j MASQUERADE\nCOMMIT\n',
      );
      server = new Background([
        'ip',
        'netns',
        'exec',
        'smoke-pod1',
        'socat',
        'TCP-LISTEN:8080,reuseaddr,fork',
        'SYSTEM:echo hello-from-pod1',
      ]);
      await waitFor('the pod server to listen', async () => {
        const ss = await tryCmd(['ip', 'netns', 'exec', 'smoke-pod1', 'ss', '-Htln', 'sport', '= :8080']);
        return ss.stdout.includes('8080');
      });
    });

    after(async function () {
      this.timeout(30_000);
      await server?.stop();
      await tryCmd(['iptables', '-t', 'nat', '-F', 'POSTROUTING']);
      await tryCmd(['ipvsadm', '-C']);
      await tryCmd(['ip', 'netns', 'del', 'smoke-pod1']);
      await tryCmd(['ip', 'netns', 'del', 'smoke-pod2']);
      await tryCmd(['ip', 'link', 'del', 'br-smoke']);
      await tryCmd(['ip', 'link', 'del', 'smoke-ipvs0']);
    });

    it('from the node', async () => {
      const { stdout } = await cmd(['socat', '-T', '5', '-', 'TCP:10.96.0.1:80,connect-timeout=5']);
      assert.equal(stdout.trim(), 'hello-from-pod1');
      // The connection table (not --stats: those counters are summed by a 2 s estimator) shows IPVS did it.
      const conns = (await cmd(['ipvsadm', '-Lnc'])).stdout;
      assert.match(
        conns,
        /TCP .* 10\.96\.0\.1:80\s+10\.244\.9\.2:8080/,
        `no IPVS connection entry:\n${conns}`,
      );
    });

    it('from another pod', async () => {
      const { stdout } = await cmd([
        'ip',
        'netns',
        'exec',
        'smoke-pod2',
        'socat',
        '-T',
        '5',
        '-',
        'TCP:10.96.0.1:80,connect-timeout=5',
      ]);
      assert.equal(stdout.trim(), 'hello-from-pod1');
    });

    it('is not answered once the real server is gone', async () => {
      await cmd(['ipvsadm', '-d', '-t', '10.96.0.1:80', '-r', '10.244.9.2:8080']);
      const res = await tryCmd(['socat', '-T', '2', '-', 'TCP:10.96.0.1:80,connect-timeout=2']);
      assert.notEqual(res.exitCode, 0, `connection succeeded without a real server: ${res.stdout}`);
    });
  });
});
