import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { cleanupLeftovers } from '../../src/iptables/cleanup.js';
import { Iptables, RestoreError } from '../../src/iptables/iptables.js';
import {
  getArg,
  parseIptablesSave,
  ruleComment,
  rulesOf,
  serviceChainsOf,
} from '../../src/iptables/save-parse.js';
import { CommandError, run } from '../../src/util/exec.js';
import { addressesInCIDRs, listAddresses, nodeIPsFromInterfaces } from '../../src/kernel/netif.js';
import { readSysctl, writeSysctl } from '../../src/util/sysctl.js';
import { requireRoot } from '../support/sandbox.js';

/**
 * Every command here runs inside a private network namespace created for this file and deleted in
 * `after`, even on failure. Nothing touches the machine's own rules.
 */

const NS = `svcp-t${randomBytes(4).toString('hex')}`;

async function nsSave(family: 'IPv4' | 'IPv6' = 'IPv4'): Promise<string> {
  const r = await run([family === 'IPv4' ? 'iptables-save' : 'ip6tables-save'], { netns: NS });
  return r.stdout;
}

// A kube-proxy-like rule set (one ClusterIP service with one endpoint, REJECT for another),
// written the way kube-proxy does: jumps prepended in built-in chains, one restore for the rest.
// Foreign rules and chains (FOREIGN-*, kubelet's KUBE-FIREWALL / KUBE-KUBELET-CANARY) must survive cleanup.
const KUBE_PROXY_RULES = String.raw`*filter
:KUBE-SERVICES - [0:0]
:KUBE-EXTERNAL-SERVICES - [0:0]
:KUBE-FORWARD - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
:KUBE-FIREWALL - [0:0]
:KUBE-KUBELET-CANARY - [0:0]
:FOREIGN-FILTER - [0:0]
-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL
-A INPUT -m comment --comment "kubernetes health check service ports" -j KUBE-NODEPORTS
-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES
-A INPUT -j KUBE-FIREWALL
-A INPUT -p tcp --dport 22 -m comment --comment "foreign \"ssh\" rule" -j FOREIGN-FILTER
-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL
-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES
-A OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL
-A OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -j KUBE-FIREWALL
-A KUBE-SERVICES -d 172.30.0.43/32 -p tcp -m comment --comment "ns3/svc3:p80 has no endpoints" -m tcp --dport 80 -j REJECT --reject-with icmp-port-unreachable
-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8 -m comment --comment "block incoming localnet connections" -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP
-A FOREIGN-FILTER -j ACCEPT
COMMIT
*nat
:KUBE-SERVICES - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-SVC-XPGD46QRK7WJZT7O - [0:0]
:KUBE-SEP-SXIVWICOYRO3J4NJ - [0:0]
:KUBE-EXT-XPGD46QRK7WJZT7O - [0:0]
:FOREIGN-NAT - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A POSTROUTING -s 10.244.0.0/16 ! -d 10.244.0.0/16 -j FOREIGN-NAT
-A FOREIGN-NAT -j MASQUERADE
-A KUBE-SERVICES -d 172.30.0.41/32 -p tcp -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp --dport 80 -j KUBE-SVC-XPGD46QRK7WJZT7O
-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
-A KUBE-NODEPORTS -p tcp -m comment --comment "ns1/svc1:p80" -m tcp --dport 30080 -j KUBE-EXT-XPGD46QRK7WJZT7O
-A KUBE-EXT-XPGD46QRK7WJZT7O -m comment --comment "masquerade traffic for ns1/svc1:p80 external destinations" -j KUBE-MARK-MASQ
-A KUBE-EXT-XPGD46QRK7WJZT7O -j KUBE-SVC-XPGD46QRK7WJZT7O
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully
-A KUBE-SVC-XPGD46QRK7WJZT7O ! -s 10.0.0.0/8 -d 172.30.0.41/32 -p tcp -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp --dport 80 -j KUBE-MARK-MASQ
-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.180.0.1:80" -j KUBE-SEP-SXIVWICOYRO3J4NJ
-A KUBE-SEP-SXIVWICOYRO3J4NJ -s 10.180.0.1/32 -m comment --comment "ns1/svc1:p80" -j KUBE-MARK-MASQ
-A KUBE-SEP-SXIVWICOYRO3J4NJ -p tcp -m comment --comment "ns1/svc1:p80" -m tcp -j DNAT --to-destination 10.180.0.1:80
COMMIT
*mangle
:KUBE-KUBELET-CANARY - [0:0]
COMMIT
`;

describe('iptables executor (private netns)', function () {
  this.timeout(60_000);
  const ipt = new Iptables({ family: 'IPv4', netns: NS });
  const ip6t = new Iptables({ family: 'IPv6', netns: NS });

  before(async function () {
    requireRoot(this);
    await run(['ip', 'netns', 'add', NS]);
    await run(['ip', 'link', 'set', 'lo', 'up'], { netns: NS });
  });

  after(async () => {
    await run(['ip', 'netns', 'del', NS], { allowFailure: true });
  });

  it('reads the version and picks the wait flags kube-proxy would', async () => {
    const v = await ipt.version();
    assert.ok(v.major >= 1);
    assert.match(v.text, /^iptables v\d+\.\d+/);
    if (v.major === 1 && v.minor === 8 && v.patch === 9) assert.equal(v.backend, 'nf_tables');
    assert.deepEqual(await ipt.restoreWaitFlags(), ['-w', '5', '-W', '100000']);
    assert.deepEqual(await ipt.waitFlags(), ['-w', '5', '-W', '100000']);
    assert.equal(await ipt.supportsRandomFully(), true);
    assert.match((await ip6t.version()).text, /^ip6tables v/);
    assert.equal(ip6t.bin.restore, 'ip6tables-restore');
  });

  it('restores with --noflush (other chains stay) and --counters (counters applied)', async () => {
    const input = '*nat\n:SVCP-A - [0:0]\n-A SVCP-A -j RETURN\nCOMMIT\n';
    const first = await ipt.restore(input, { noflush: true, counters: false });
    assert.equal(first.lines, 4);
    assert.equal(first.bytes, input.length);
    assert.ok(first.durationMs > 0);
    await ipt.restore('*nat\n:SVCP-B - [0:0]\n[7:700] -A SVCP-B -j RETURN\nCOMMIT\n', {
      noflush: true,
      counters: true,
    });
    const saved = parseIptablesSave(await ipt.save('nat', { counters: true }));
    assert.equal(rulesOf(saved, 'nat', 'SVCP-A').length, 1, 'SVCP-A survives a --noflush restore');
    const b = rulesOf(saved, 'nat', 'SVCP-B')[0]!;
    assert.deepEqual([b.packets, b.bytes], [7, 700]);
    // `:CHAIN` flushes it; -X deletes it.
    await ipt.restore('*nat\n:SVCP-A - [0:0]\n:SVCP-B - [0:0]\n-X SVCP-A\n-X SVCP-B\nCOMMIT\n', {
      noflush: true,
      counters: false,
    });
    assert.equal(await ipt.chainExists('nat', 'SVCP-A'), false);
    assert.equal(await ipt.chainExists('nat', 'SVCP-B'), false);
  });

  it('a bad restore input fails with RestoreError naming the input line, and changes nothing', async () => {
    await ipt.ensureChain('nat', 'SVCP-KEEP');
    const input = [
      '*nat',
      ':SVCP-KEEP - [0:0]',
      '-A SVCP-KEEP -j RETURN',
      '-A SVCP-KEEP -p tcp -m tcp --dport 99999 -j RETURN',
      'COMMIT',
      '',
    ].join('\n');
    await assert.rejects(ipt.restore(input, { noflush: true, counters: false }), (err: unknown) => {
      assert.ok(err instanceof RestoreError);
      assert.ok(err instanceof CommandError);
      assert.equal(err.line, 4);
      assert.equal(err.lineText, '-A SVCP-KEEP -p tcp -m tcp --dport 99999 -j RETURN');
      assert.match(err.stderr, /99999/);
      assert.match(err.message, /input line 4/);
      assert.equal(err.argv.includes('--noflush'), true);
      return true;
    });
    // A jump to a missing chain (nf_tables reports it at COMMIT): blamed on the rule.
    const missing = '*nat\n:SVCP-KEEP - [0:0]\n-A SVCP-KEEP -j RETURN\n-A SVCP-KEEP -j SVCP-NOSUCH\nCOMMIT\n';
    await assert.rejects(ipt.restore(missing, { noflush: true, counters: false }), (err: unknown) => {
      assert.ok(err instanceof RestoreError);
      assert.equal(err.line, 4);
      assert.equal(err.lineText, '-A SVCP-KEEP -j SVCP-NOSUCH');
      return true;
    });
    // The transaction was atomic: nothing was written.
    assert.equal(rulesOf(parseIptablesSave(await ipt.save('nat')), 'nat', 'SVCP-KEEP').length, 0);
    await ipt.deleteChain('nat', 'SVCP-KEEP');
  });

  it('save(table) returns only that table, save() all of them', async () => {
    await ipt.ensureChain('raw', 'SVCP-RAW');
    const nat = parseIptablesSave(await ipt.save('nat'));
    assert.deepEqual([...nat.tables.keys()], ['nat']);
    const all = parseIptablesSave(await ipt.save());
    assert.ok(all.tables.get('raw')?.chainsByName.has('SVCP-RAW'));
    await ipt.deleteChain('raw', 'SVCP-RAW');
    await assert.rejects(ipt.save('no table'), /invalid iptables table name/);
  });

  it('ensureChain, chainExists, flushChain and deleteChain', async () => {
    assert.equal(await ipt.chainExists('filter', 'SVCP-C'), false);
    assert.equal(await ipt.ensureChain('filter', 'SVCP-C'), false);
    assert.equal(await ipt.ensureChain('filter', 'SVCP-C'), true);
    assert.equal(await ipt.chainExists('filter', 'SVCP-C'), true);
    await ipt.ensureRule('append', 'filter', 'SVCP-C', ['-j', 'RETURN']);
    await assert.rejects(ipt.deleteChain('filter', 'SVCP-C'), CommandError, 'non-empty chain');
    await ipt.flushChain('filter', 'SVCP-C');
    assert.equal(rulesOf(parseIptablesSave(await ipt.save('filter')), 'filter', 'SVCP-C').length, 0);
    await ipt.deleteChain('filter', 'SVCP-C');
    assert.equal(await ipt.chainExists('filter', 'SVCP-C'), false);
    await assert.rejects(ipt.flushChain('filter', 'SVCP-C'), CommandError);
    await assert.rejects(ipt.ensureChain('filter', '-bad'), /invalid iptables chain name/);
  });

  it('ensureRule is idempotent and honours prepend/append; deleteRule reports what it did', async () => {
    await ipt.ensureChain('nat', 'SVCP-R');
    const a = ['-m', 'comment', '--comment', 'rule "a" with spaces', '-j', 'RETURN'];
    const b = ['-s', '10.0.0.1/32', '-j', 'RETURN'];
    const c = ['!', '-d', '10.0.0.0/8', '-p', 'tcp', '-m', 'tcp', '--dport', '80', '-j', 'RETURN'];
    assert.equal(await ipt.ensureRule('append', 'nat', 'SVCP-R', a), false);
    assert.equal(await ipt.ensureRule('append', 'nat', 'SVCP-R', a), true);
    assert.equal(await ipt.ensureRule('prepend', 'nat', 'SVCP-R', b), false);
    assert.equal(await ipt.ensureRule('append', 'nat', 'SVCP-R', c), false);
    assert.equal(await ipt.ensureRule('prepend', 'nat', 'SVCP-R', c), true);
    let rules = rulesOf(parseIptablesSave(await ipt.save('nat')), 'nat', 'SVCP-R');
    assert.deepEqual(
      rules.map((r) => r.args),
      [b, a, c],
    );
    assert.equal(ruleComment(rules[1]!), 'rule "a" with spaces');
    assert.equal(await ipt.deleteRule('nat', 'SVCP-R', a), true);
    assert.equal(await ipt.deleteRule('nat', 'SVCP-R', a), false);
    assert.equal(await ipt.deleteRule('nat', 'SVCP-NOCHAIN', a), false);
    rules = rulesOf(parseIptablesSave(await ipt.save('nat')), 'nat', 'SVCP-R');
    assert.equal(rules.length, 2);
    await assert.rejects(ipt.ensureRule('append', 'nat', 'SVCP-R', ['-j', 'SVCP-NOSUCH']), CommandError);
    await ipt.flushChain('nat', 'SVCP-R');
    await ipt.deleteChain('nat', 'SVCP-R');
  });

  it('canary: create, detect, and notice deletion', async () => {
    assert.equal(await ipt.canaryExists(), false);
    await ipt.ensureCanary();
    await ipt.ensureCanary(); // idempotent
    for (const t of ['mangle', 'nat', 'filter']) assert.equal(await ipt.canaryExists(t), true, t);
    await ipt.deleteChain('mangle', 'KUBE-PROXY-CANARY');
    assert.equal(await ipt.canaryExists(), false);
    assert.equal(await ipt.canaryExists('nat'), true);
    await ipt.ensureCanary(['mangle']);
    assert.equal(await ipt.canaryExists(), true);
    // A flush of the whole table (what an admin's `iptables -t mangle -F; -X` does) removes it too.
    await run(['iptables', '-t', 'mangle', '-X'], { netns: NS });
    assert.equal(await ipt.canaryExists(), false);
    await ipt.ensureCanary(['filter', 'nat'], 'KUBE-KUBELET-CANARY');
    assert.equal(await ipt.canaryExists('nat', 'KUBE-KUBELET-CANARY'), true);
  });

  it('cleanupLeftovers removes a kube-proxy rule set and nothing else, idempotently', async () => {
    await ipt.ensureCanary();
    await ipt.restore(KUBE_PROXY_RULES, { noflush: true, counters: false });
    const before = parseIptablesSave(await nsSave());
    assert.equal(serviceChainsOf(before, 'nat').size, 3);

    const res = await cleanupLeftovers(ipt);
    assert.deepEqual(res.kept, []);
    // 3 INPUT, 4 FORWARD and 2 OUTPUT jumps in filter; PREROUTING, OUTPUT, POSTROUTING in nat.
    const jumps = res.removed.filter((r) => / -D /.test(r));
    assert.equal(jumps.length, 12, jumps.join('\n'));
    const chains = res.removed.filter((r) => / -X /.test(r)).sort();
    assert.deepEqual(chains, [
      '-t filter -X KUBE-EXTERNAL-SERVICES',
      '-t filter -X KUBE-FORWARD',
      '-t filter -X KUBE-NODEPORTS',
      '-t filter -X KUBE-PROXY-CANARY',
      '-t filter -X KUBE-PROXY-FIREWALL',
      '-t filter -X KUBE-SERVICES',
      '-t mangle -X KUBE-PROXY-CANARY',
      '-t nat -X KUBE-EXT-XPGD46QRK7WJZT7O',
      '-t nat -X KUBE-MARK-MASQ',
      '-t nat -X KUBE-NODEPORTS',
      '-t nat -X KUBE-POSTROUTING',
      '-t nat -X KUBE-PROXY-CANARY',
      '-t nat -X KUBE-SEP-SXIVWICOYRO3J4NJ',
      '-t nat -X KUBE-SERVICES',
      '-t nat -X KUBE-SVC-XPGD46QRK7WJZT7O',
    ]);

    const after = parseIptablesSave(await nsSave());
    const filter = after.tables.get('filter')!;
    const nat = after.tables.get('nat')!;
    assert.deepEqual(
      filter.chains
        .filter((c) => !c.builtin)
        .map((c) => c.name)
        .sort(),
      ['FOREIGN-FILTER', 'KUBE-FIREWALL', 'KUBE-KUBELET-CANARY'],
    );
    assert.deepEqual(
      nat.chains
        .filter((c) => !c.builtin)
        .map((c) => c.name)
        .sort(),
      ['FOREIGN-NAT', 'KUBE-KUBELET-CANARY'],
    );
    assert.deepEqual(
      after.tables
        .get('mangle')!
        .chains.filter((c) => !c.builtin)
        .map((c) => c.name),
      ['KUBE-KUBELET-CANARY'],
    );
    assert.deepEqual(
      rulesOf(after, 'filter', 'INPUT').map((r) => getArg(r, '-j')),
      ['KUBE-FIREWALL', 'FOREIGN-FILTER'],
    );
    assert.equal(ruleComment(rulesOf(after, 'filter', 'INPUT')[1]!), 'foreign "ssh" rule');
    assert.deepEqual(
      rulesOf(after, 'filter', 'OUTPUT').map((r) => getArg(r, '-j')),
      ['KUBE-FIREWALL'],
    );
    assert.equal(rulesOf(after, 'filter', 'FORWARD').length, 0);
    assert.equal(rulesOf(after, 'filter', 'KUBE-FIREWALL').length, 1);
    assert.equal(rulesOf(after, 'nat', 'PREROUTING').length, 0);
    assert.deepEqual(
      rulesOf(after, 'nat', 'POSTROUTING').map((r) => getArg(r, '-j')),
      ['FOREIGN-NAT'],
    );
    assert.equal(rulesOf(after, 'nat', 'FOREIGN-NAT').length, 1);

    // Idempotent: nothing left to do, no restore run.
    assert.deepEqual(await cleanupLeftovers(ipt), { removed: [], kept: [] });
  });

  it('cleanupLeftovers keeps an owned chain a foreign rule still uses', async () => {
    await ipt.restore(
      '*nat\n:KUBE-MARK-MASQ - [0:0]\n:KUBE-SERVICES - [0:0]\n:FOREIGN-HOSTPORT - [0:0]\n' +
        '-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000\n-A FOREIGN-HOSTPORT -j KUBE-MARK-MASQ\n' +
        '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES\nCOMMIT\n',
      { noflush: true, counters: false },
    );
    const res = await cleanupLeftovers(ipt);
    assert.deepEqual(res.removed, [
      '-t nat -D OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
      '-t nat -X KUBE-SERVICES',
    ]);
    assert.equal(res.kept.length, 1);
    assert.equal(await ipt.chainExists('nat', 'KUBE-MARK-MASQ'), true);
    assert.equal(rulesOf(parseIptablesSave(await ipt.save('nat')), 'nat', 'KUBE-MARK-MASQ').length, 1);
    await ipt.restore(
      '*nat\n:FOREIGN-HOSTPORT - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n-X FOREIGN-HOSTPORT\n-X KUBE-MARK-MASQ\nCOMMIT\n',
      {
        noflush: true,
        counters: false,
      },
    );
  });

  it('works for IPv6 through ip6tables', async () => {
    await ip6t.ensureCanary();
    assert.equal(await ip6t.canaryExists(), true);
    await ip6t.restore(
      '*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-SVC-ABCDEFGHIJKLMNOP - [0:0]\n' +
        '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES\n' +
        '-A KUBE-SERVICES -d fd00:10:96::1/128 -p tcp -m comment --comment "default/kubernetes:https cluster IP" -m tcp --dport 443 -j KUBE-SVC-ABCDEFGHIJKLMNOP\n' +
        '-A KUBE-SVC-ABCDEFGHIJKLMNOP -p tcp -j DNAT --to-destination [fd00:10:244::5]:6443\nCOMMIT\n',
      { noflush: true, counters: false },
    );
    const saved = parseIptablesSave(await nsSave('IPv6'));
    assert.deepEqual([...serviceChainsOf(saved)], ['KUBE-SVC-ABCDEFGHIJKLMNOP']);
    assert.equal(
      getArg(rulesOf(saved, 'nat', 'KUBE-SVC-ABCDEFGHIJKLMNOP')[0]!, '--to-destination'),
      '[fd00:10:244::5]:6443',
    );
    assert.equal(
      await ip6t.ensureRule('append', 'filter', 'INPUT', ['!', '-s', '::1/128', '-j', 'ACCEPT']),
      false,
    );
    const res = await cleanupLeftovers(ip6t);
    // 3 canaries, KUBE-SERVICES, the SVC chain and the OUTPUT jump.
    assert.equal(res.removed.length, 6, res.removed.join('\n'));
    const after = parseIptablesSave(await nsSave('IPv6'));
    assert.equal(serviceChainsOf(after).size, 0);
    assert.equal(rulesOf(after, 'filter', 'INPUT').length, 1, 'foreign IPv6 rule stays');
    // The IPv4 side was not touched by the IPv6 cleanup.
    assert.equal(await ipt.canaryExists('nat', 'KUBE-KUBELET-CANARY'), true);
  });
});

describe('iptables executor with the legacy backend (private netns)', function () {
  // UML test nodes only have the legacy backend: the binaries are configurable for that.
  this.timeout(60_000);
  const NS3 = `svcp-t${randomBytes(4).toString('hex')}`;
  const ipt = new Iptables({
    family: 'IPv4',
    netns: NS3,
    binaries: {
      iptables: 'iptables-legacy',
      restore: 'iptables-legacy-restore',
      save: 'iptables-legacy-save',
    },
  });

  before(async function () {
    requireRoot(this);
    // Debian's iptables package ships the legacy backend (scripts/setup.sh installs it): missing is a failure.
    await run(['iptables-legacy', '--version']);
    await run(['ip', 'netns', 'add', NS3]);
  });

  after(async () => {
    await run(['ip', 'netns', 'del', NS3], { allowFailure: true });
  });

  it('restores, reports failures with the line, cleans up', async () => {
    assert.equal((await ipt.version()).backend, 'legacy');
    await ipt.ensureCanary();
    await ipt.restore(KUBE_PROXY_RULES, { noflush: true, counters: false });
    await assert.rejects(
      ipt.restore('*nat\n:SVCP-L - [0:0]\n-A SVCP-L -j RETURN\n-A SVCP-L -j SVCP-NOSUCH\nCOMMIT\n', {
        noflush: true,
        counters: false,
      }),
      (err: unknown) =>
        err instanceof RestoreError && err.line === 4 && err.lineText === '-A SVCP-L -j SVCP-NOSUCH',
    );
    assert.equal(await ipt.ensureRule('prepend', 'nat', 'KUBE-SERVICES', ['-j', 'RETURN']), false);
    assert.equal(await ipt.ensureRule('prepend', 'nat', 'KUBE-SERVICES', ['-j', 'RETURN']), true);
    const res = await cleanupLeftovers(ipt);
    assert.equal(res.removed.filter((r) => / -X /.test(r)).length, 15);
    const after = parseIptablesSave(await ipt.save());
    assert.equal(serviceChainsOf(after).size, 0);
    assert.equal(await ipt.canaryExists(), false);
    assert.equal(await ipt.chainExists('filter', 'KUBE-FIREWALL'), true);
    assert.equal(await ipt.chainExists('nat', 'FOREIGN-NAT'), true);
    assert.deepEqual(await cleanupLeftovers(ipt), { removed: [], kept: [] });
  });
});

describe('sysctl and interface addresses (private netns)', function () {
  this.timeout(60_000);
  const NS2 = `svcp-t${randomBytes(4).toString('hex')}`;

  before(async function () {
    requireRoot(this);
    await run(['ip', 'netns', 'add', NS2]);
  });

  after(async () => {
    await run(['ip', 'netns', 'del', NS2], { allowFailure: true });
  });

  it('reads and writes per-netns sysctls; a missing key reads as undefined', async () => {
    assert.equal(await readSysctl('net.ipv4.ip_forward', { netns: NS2 }), '0');
    await writeSysctl('net.ipv4.ip_forward', 1, { netns: NS2 });
    assert.equal(await readSysctl('net.ipv4.ip_forward', { netns: NS2 }), '1');
    await writeSysctl('net.ipv4.conf.all.route_localnet', '1', { netns: NS2 });
    assert.equal(await readSysctl('net.ipv4.conf.all.route_localnet', { netns: NS2 }), '1');
    assert.equal(await readSysctl('net.ipv4.no_such_key', { netns: NS2 }), undefined);
    await assert.rejects(writeSysctl('net.ipv4.no_such_key', '1', { netns: NS2 }), /no_such_key/);
    // nf_conntrack_tcp_be_liberal exists once conntrack is loaded (it is on these hosts); it is a
    // string of digits either way.
    const liberal = await readSysctl('net.netfilter.nf_conntrack_tcp_be_liberal', { netns: NS2 });
    if (liberal !== undefined) assert.match(liberal, /^\d+$/);
    // Our own namespace was not changed by the writes above (read-only check).
    const own = await readSysctl('net.ipv4.conf.all.route_localnet');
    assert.ok(own === '0' || own === '1');
  });

  it('lists interface addresses and resolves node IPs / NodePort addresses', async () => {
    await run(['ip', 'link', 'set', 'lo', 'up'], { netns: NS2 });
    await run(['ip', 'link', 'add', 'svcp0', 'type', 'veth', 'peer', 'name', 'svcp1'], { netns: NS2 });
    await run(['ip', 'address', 'add', '10.9.0.1/24', 'dev', 'svcp0'], { netns: NS2 });
    await run(['ip', 'address', 'add', 'fd00:9::0001/64', 'dev', 'svcp0', 'nodad'], { netns: NS2 });
    await run(['ip', 'link', 'set', 'svcp0', 'up'], { netns: NS2 });
    const addrs = await listAddresses({ netns: NS2 });
    const v0 = addrs.filter((a) => a.ifname === 'svcp0' && a.scope === 'global');
    assert.deepEqual(
      v0.map((a) => [a.ip, a.family, a.prefixLen]),
      [
        ['10.9.0.1', 'IPv4', 24],
        ['fd00:9::1', 'IPv6', 64],
      ],
    );
    assert.deepEqual(nodeIPsFromInterfaces(addrs, 'IPv4'), ['10.9.0.1']);
    assert.deepEqual(nodeIPsFromInterfaces(addrs, 'IPv6'), ['fd00:9::1']);
    assert.deepEqual(
      addressesInCIDRs(addrs, ['127.0.0.0/8', '10.0.0.0/8'], { includeLoopback: true }).map((a) => a.ip),
      ['127.0.0.1', '10.9.0.1'],
    );
    assert.deepEqual(
      addressesInCIDRs(addrs, ['127.0.0.0/8', '10.0.0.0/8']).map((a) => a.ip),
      ['10.9.0.1'],
    );
  });
});
