import assert from 'node:assert/strict';
import {
  declaredChains,
  foreignChainRequests,
  listingInput,
  parseListing,
  parseNftChains,
  wholeTableCanaries,
  wholeTableInput,
  withoutCounters,
} from '../../../src/iptables/render-whole-table.js';
import { run } from '../../../src/util/exec.js';
import { requireRoot } from '../../support/sandbox.js';

/** The whole-table full sync's pure parts, and one real restore in a private netns (`unshare -n`). */

const NFT = `table ip nat {
\tchain KUBE-SERVICES {
\t}
\tchain KUBE-SVC-OLD {
\t}
\tchain FOREIGN {
\t}
\tchain PREROUTING {
\t\ttype nat hook prerouting priority dstnat; policy accept;
\t}
\tchain KUBE-PROXY-CANARY {
\t}
}
table ip filter {
\tchain INPUT {
\t\ttype filter hook input priority filter; policy drop;
\t}
\tchain KUBE-FIREWALL {
\t}
}
table ip6 nat {
\tchain V6ONLY {
\t}
}
`;

const RENDERED = `*filter
:KUBE-SERVICES - [0:0]
-A KUBE-SERVICES -j RETURN
COMMIT
*nat
:KUBE-SERVICES - [0:0]
:KUBE-MARK-MASQ - [0:0]
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
COMMIT
`;

describe('whole-table full sync (pure)', () => {
  it('parses `nft list chains` per family, marking base chains', () => {
    const v4 = parseNftChains(NFT, 'ip');
    assert.deepEqual(
      v4.get('nat')?.map((c) => `${c.name}${c.builtin ? '*' : ''}`),
      ['KUBE-SERVICES', 'KUBE-SVC-OLD', 'FOREIGN', 'PREROUTING*', 'KUBE-PROXY-CANARY'],
    );
    assert.deepEqual(
      v4.get('filter')?.map((c) => c.name),
      ['INPUT', 'KUBE-FIREWALL'],
    );
    assert.deepEqual(
      parseNftChains(NFT, 'ip6')
        .get('nat')
        ?.map((c) => c.name),
      ['V6ONLY'],
    );
  });

  it('carries over built-ins and foreign chains, never ours, stale service chains or canaries', () => {
    const reqs = foreignChainRequests(parseNftChains(NFT, 'ip'), declaredChains(RENDERED));
    assert.deepEqual(
      reqs.map((r) => `${r.table}/${r.chain}`),
      ['filter/INPUT', 'filter/KUBE-FIREWALL', 'nat/FOREIGN', 'nat/PREROUTING'],
    );
    assert.equal(
      listingInput(reqs, true),
      '*filter\n-v -S INPUT\n-v -S KUBE-FIREWALL\nCOMMIT\n*nat\n-v -S FOREIGN\n-v -S PREROUTING\nCOMMIT\n',
    );
  });

  it('reads the listing back per table and builds declarations before rules', () => {
    const reqs = foreignChainRequests(parseNftChains(NFT, 'ip'), declaredChains(RENDERED));
    const listing = [
      '-P INPUT DROP -c 5 6',
      '-A INPUT -s 10.0.0.0/8 -c 1 2 -j ACCEPT',
      '-N KUBE-FIREWALL',
      '-N FOREIGN',
      '-A FOREIGN -d 1.2.3.4/32 -m comment --comment "a b" -c 0 0 -j ACCEPT',
      '-P PREROUTING ACCEPT -c 0 0',
      '-A PREROUTING -c 3 4 -j FOREIGN',
      '',
    ].join('\n');
    const foreign = parseListing(reqs, listing);
    assert.deepEqual(foreign.get('filter'), {
      declarations: [':INPUT DROP [5:6]', ':KUBE-FIREWALL - [0:0]'],
      rules: ['-A INPUT -s 10.0.0.0/8 -c 1 2 -j ACCEPT'],
    });
    assert.equal(withoutCounters('-A PREROUTING -c 3 4 -j FOREIGN'), '-A PREROUTING -j FOREIGN');
    const input = wholeTableInput(
      RENDERED,
      foreign,
      new Map([['nat', ['-I PREROUTING 1 -j KUBE-SERVICES']]]),
      wholeTableCanaries(),
    );
    assert.equal(
      input,
      [
        '*filter',
        ':INPUT DROP [5:6]',
        ':KUBE-FIREWALL - [0:0]',
        ':KUBE-SERVICES - [0:0]',
        ':KUBE-PROXY-CANARY - [0:0]',
        '-A INPUT -s 10.0.0.0/8 -c 1 2 -j ACCEPT',
        '-A KUBE-SERVICES -j RETURN',
        'COMMIT',
        '*nat',
        ':PREROUTING ACCEPT [0:0]',
        ':FOREIGN - [0:0]',
        ':KUBE-SERVICES - [0:0]',
        ':KUBE-MARK-MASQ - [0:0]',
        ':KUBE-PROXY-CANARY - [0:0]',
        '-A FOREIGN -d 1.2.3.4/32 -m comment --comment "a b" -c 0 0 -j ACCEPT',
        '-A PREROUTING -c 3 4 -j FOREIGN',
        '-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000',
        '-I PREROUTING 1 -j KUBE-SERVICES',
        'COMMIT',
        '',
      ].join('\n'),
    );
  });

  it('refuses a listing that does not match the requests', () => {
    const reqs = [{ table: 'nat', chain: 'FOREIGN', builtin: false }];
    assert.throws(() => parseListing(reqs, '-N OTHER\n'), /expected "-N FOREIGN"/);
    assert.throws(() => parseListing(reqs, '-N FOREIGN\n-A OTHER -j ACCEPT\n'), /unexpected line/);
  });
});

describe('whole-table full sync (kernel, private netns)', function () {
  this.timeout(30_000);
  before(function () {
    requireRoot(this);
  });

  it('a whole-table restore built from the listing keeps foreign chains, rules, policies and counters', async () => {
    // One shell in one private netns: foreign rules, the listing, the whole-table restore, the save.
    const script = `
set -e
iptables -t nat -N FOREIGN
iptables -t nat -A FOREIGN -d 1.2.3.4/32 -p tcp -m comment --comment "keep me" -j DNAT --to-destination 10.0.0.9:80
iptables -t nat -A PREROUTING -j FOREIGN
iptables -t filter -P FORWARD DROP
iptables -t filter -A INPUT -p udp --dport 53 -j ACCEPT
iptables -t nat -N KUBE-SVC-STALESTALESTALE1
nft list chains ip > "$D/nft"
cat "$D/listing-input" | iptables-restore --noflush > "$D/listing" || true
echo ready > "$D/ready"
while [ ! -e "$D/input" ]; do sleep 0.05; done
iptables-restore --counters < "$D/input"
iptables-save > "$D/save"
`;
    const dir = (await run(['mktemp', '-d'])).stdout.trim();
    try {
      // The listing input depends on the nft output, so the test drives the netns through files.
      const { writeFile, readFile } = await import('node:fs/promises');
      const { existsSync } = await import('node:fs');
      // Every chain a listing might need (the kernel state is known); parseListing checks it.
      const reqs = [
        { table: 'filter', chain: 'INPUT', builtin: true },
        { table: 'filter', chain: 'FORWARD', builtin: true },
        { table: 'nat', chain: 'FOREIGN', builtin: false },
        { table: 'nat', chain: 'PREROUTING', builtin: true },
      ];
      await writeFile(`${dir}/listing-input`, listingInput(reqs, true));
      const shell = run(['unshare', '-n', 'bash', '-c', script], { env: { D: dir }, allowFailure: true });
      while (!existsSync(`${dir}/ready`)) await new Promise((r) => setTimeout(r, 50));
      const kernel = parseNftChains(await readFile(`${dir}/nft`, 'utf8'), 'ip');
      const computed = foreignChainRequests(kernel, declaredChains(RENDERED));
      assert.deepEqual(
        computed.map((r) => r.chain).sort(),
        reqs.map((r) => r.chain).sort(),
        'the stale KUBE-SVC chain is ours, everything else is carried over',
      );
      const foreign = parseListing(reqs, await readFile(`${dir}/listing`, 'utf8'));
      await writeFile(`${dir}/input`, wholeTableInput(RENDERED, foreign, wholeTableCanaries()));
      const res = await shell;
      assert.equal(res.exitCode, 0, res.stderr);
      const save = await readFile(`${dir}/save`, 'utf8');
      assert.match(
        save,
        /^-A FOREIGN -d 1\.2\.3\.4\/32 -p tcp -m comment --comment "keep me" -j DNAT --to-destination 10\.0\.0\.9:80$/m,
      );
      assert.match(save, /^-A PREROUTING -j FOREIGN$/m);
      assert.match(save, /^:FORWARD DROP /m);
      assert.match(save, /^-A INPUT -p udp -m udp --dport 53 -j ACCEPT$/m);
      assert.match(save, /^-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000\/0x4000$/m);
      assert.doesNotMatch(save, /KUBE-SVC-STALE/, 'stale service chain gone with the table');
      assert.equal(save.match(/^:KUBE-PROXY-CANARY /gm)?.length, 2);
    } finally {
      await run(['rm', '-rf', dir]);
    }
  });
});
