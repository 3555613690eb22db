import assert from 'node:assert/strict';
import { CommitLog, generationsAllOurs, MAX_SCOPED_CHAINS } from '../../../src/iptables/commit-log.js';
import { netlinkEventSocket, TransactionTally } from '../../../src/iptables/iptables.js';
import { chainsOfRestoreInput } from '../../../src/iptables-rules/compare.js';

/**
 * The kernel watch's reading of `nft monitor` (lines as nft 1.0.6 prints them, seen in a private
 * netns): which commits are ours, which touched our chains, and when it must give up on scoping.
 */

/** Our tools' process name (commit-name.ts); the PID the kernel reports says nothing. */
const OURS = 'svcp0123456789a';
const log = (): CommitLog => new CommitLog('ip', (comm) => comm === OURS);
const gen = (n: number, pid: number, comm = 'iptables'): string =>
  `# new generation ${n} by process ${pid} (${comm})`;
const own = (n: number, pid = 100): string => gen(n, pid, OURS);
const feed = (l: CommitLog, ...lines: string[]): void => lines.forEach((x) => l.line(x));

describe('iptables/commit-log: what nft monitor says other agents changed', () => {
  it('our own commits arm it and are never drift; a foreign rule in a KUBE chain is scoped to it', () => {
    const l = log();
    feed(l, 'add rule ip nat KUBE-SEP-A counter packets 0 bytes 0 accept', gen(5, 42));
    assert.equal(l.armed, false, 'a foreign commit does not prove the monitor saw ours');
    assert.deepEqual([...l.take().chains], ['nat/KUBE-SEP-A']);
    feed(l, 'create chain ip nat KUBE-SVC-B', 'add rule ip nat KUBE-SVC-B jump KUBE-SEP-A', own(6));
    assert.equal(l.armed, true);
    const t = l.take();
    assert.equal(t.chains.size, 0);
    assert.equal(t.unscoped, undefined);
    assert.equal(t.foreignCommits, 0);
  });

  it('ours by process name alone: any PID (a PID namespace of our own); the same tool by others is foreign', () => {
    const l = log();
    feed(l, 'add rule ip nat KUBE-SEP-A accept', own(3, 15277));
    assert.equal(l.armed, true);
    assert.equal(l.lastOwnPid, 15277, 'the PID the kernel reported, for the log');
    // Someone else's iptables-restore, even under the PID one of our children has here.
    feed(l, 'add rule ip nat KUBE-SEP-A drop', gen(4, 100, 'iptables-restor'));
    const t = l.take();
    assert.deepEqual([...t.chains], ['nat/KUBE-SEP-A']);
    assert.equal(t.foreignCommits, 1);
    assert.equal(l.ownCommits, 1);
  });

  it("other families, other tables and other agents' chains are not ours; built-in chains are", () => {
    const l = log();
    feed(
      l,
      'add rule ip6 nat KUBE-SEP-A accept',
      'add table inet cni',
      'add chain inet cni fwd { type filter hook forward priority filter; policy accept; }',
      'add rule ip nat CNI-HOSTPORT-DNAT tcp dport 80 return',
      'add set ip nat s { type ipv4_addr; }',
      gen(7, 43),
      'delete rule ip nat PREROUTING handle 4',
      gen(8, 43, 'nft'),
    );
    const t = l.take();
    assert.deepEqual([...t.chains], ['nat/PREROUTING']);
    assert.equal(t.foreignCommits, 2);
  });

  it('a deleted table, lost events, a generation gap or too many chains cannot be scoped', () => {
    const deleted = log();
    feed(deleted, 'delete chain ip nat KUBE-SEP-A', 'delete table ip nat', gen(3, 44, 'nft'));
    assert.match(deleted.take().unscoped ?? '', /table ip nat deleted.*44 nft/);

    const lost = log();
    feed(lost, own(3), '# ERROR: We lost some netlink events!', own(4));
    assert.match(lost.take().unscoped ?? '', /lost some netlink events/, 'even during our own write');

    const gap = log();
    feed(gap, own(3), own(6));
    assert.match(gap.take().unscoped ?? '', /missed generations 4–5/);

    const many = log();
    for (let i = 0; i <= MAX_SCOPED_CHAINS; i++) many.line(`delete rule ip nat KUBE-SEP-${i} handle ${i}`);
    many.line(gen(2, 45));
    assert.match(many.take().unscoped ?? '', /more than 64 chains/);

    const ourFlush = log();
    for (let i = 0; i <= MAX_SCOPED_CHAINS; i++)
      ourFlush.line(`delete rule ip nat KUBE-SEP-${i} handle ${i}`);
    ourFlush.line(own(2));
    assert.equal(ourFlush.take().unscoped, undefined, 'our own big writes are fine');
  });

  it("a probe's generation is known by its nonce (the mark of its rule)", () => {
    const l = log();
    const probe = (nonce: number): string[] => [
      `add rule ip mangle KUBE-PROXY-CANARY meta mark 0x${nonce.toString(16).padStart(8, '0')} counter packets 0 bytes 0 return`,
      'delete rule ip mangle KUBE-PROXY-CANARY handle 9',
    ];
    feed(l, ...probe(41), own(7), 'add rule ip nat KUBE-SEP-A accept', own(8), ...probe(42), own(9));
    assert.equal(l.probeGeneration(41), 7);
    assert.equal(l.probeGeneration(42), 9);
    assert.equal(l.probeGeneration(43), undefined);
    // Another agent's rule with that mark in that chain is no probe of ours.
    feed(l, ...probe(43), gen(10, 5));
    assert.equal(l.probeGeneration(43), undefined);
    assert.deepEqual([...l.take().chains], ['mangle/KUBE-PROXY-CANARY']);
  });

  it('lost events are settled only up to the probe that proved the generations ours', () => {
    const l = log();
    // Lost during our write: generations 4-9 never reported, the probe's 10 is.
    feed(l, own(3), '# ERROR: We lost some netlink events!', own(10));
    assert.equal(l.lossPending, true);
    assert.equal(l.settleLoss(3), undefined, 'a probe before the loss proves nothing');
    assert.match(l.settleLoss(10) ?? '', /lost some netlink events/);
    assert.equal(l.take().unscoped, undefined);
    // A loss reported after the probe's generation stays.
    feed(l, own(11), '# ERROR: We lost some netlink events!');
    assert.equal(l.settleLoss(11), undefined);
    assert.match(l.take().unscoped ?? '', /lost some netlink events/);
    // A gap counts as lost before the generation that shows it.
    feed(l, own(12), own(15));
    assert.equal(l.settleLoss(14), undefined);
    assert.match(l.settleLoss(15) ?? '', /missed generations 13–14/);
    assert.equal(l.take().unscoped, undefined);
  });

  it('generations are all ours when they are exactly as many as our exact commits', () => {
    const from = { generation: 10, made: { exact: 5, uncertain: 2 } };
    // A 72-transaction restore and the probe: generations 11-83.
    assert.equal(generationsAllOurs(from, { generation: 83, made: { exact: 78, uncertain: 2 } }), true);
    assert.equal(
      generationsAllOurs(from, { generation: 84, made: { exact: 78, uncertain: 2 } }),
      false,
      'one more generation: another agent committed in between',
    );
    assert.equal(
      generationsAllOurs(from, { generation: 83, made: { exact: 77, uncertain: 3 } }),
      false,
      'a commit of ours that may have made none: a foreign one could fill its place',
    );
  });

  it('counts the commits of a restore input by transaction, in pieces', () => {
    const count = (...pieces: string[]): unknown => {
      const t = new TransactionTally();
      for (const p of pieces) t.feed(p);
      return t.result();
    };
    const input =
      '*filter\n:KUBE-A - [0:0]\n-A KUBE-A -j RETURN\nCOMMIT\n' + // adds a rule: exactly one
      '*nat\nCOMMIT\n' + // empty: none
      '*nat\n-S KUBE-A\nCOMMIT\n' + // a listing: none
      '*nat\n:KUBE-B - [0:0]\n-X KUBE-C\nCOMMIT\n' + // chains only: one or none
      '# a comment\n*mangle\n-I KUBE-D 1 -j RETURN\nCOMMIT\n';
    assert.deepEqual(count(input), { exact: 2, uncertain: 1 });
    // Split anywhere, the same.
    for (const at of [1, 9, 30, 48, input.length - 3])
      assert.deepEqual(count(input.slice(0, at), input.slice(at)), { exact: 2, uncertain: 1 });
    assert.deepEqual(count('*nat\n-A KUBE-A -j RETURN\n'), { exact: 0, uncertain: 1 }, 'never committed');
    assert.deepEqual(count('*nat\n-A KUBE-A -j RETURN\nCOMMIT'), { exact: 0, uncertain: 1 }, 'no newline');
  });

  it("reads the monitor's queued bytes and drops from /proc/net/netlink", () => {
    const text = [
      'sk               Eth Pid        Groups   Rmem     Wmem     Dump  Locks    Drops    Inode',
      '00000000fe7d4652 12  0          00000000 0        0        0     2        0        47132',
      '0000000098657716 12  12926      00000140 33551232 0        0     2        2294     47138',
      '0000000098657799 0   12926      00000001 77       0        0     2        0        47139',
      '',
    ].join('\n');
    assert.deepEqual(netlinkEventSocket(text, 12926), { queued: 33551232, drops: 2294 });
    assert.equal(netlinkEventSocket(text, 999), undefined);
    assert.equal(netlinkEventSocket(text, 0), undefined, 'a socket without groups is no event socket');
  });

  it('take() forgets; a stopped monitor is unscoped and unarmed until our next commit', () => {
    const l = log();
    feed(l, own(1), 'delete rule ip filter KUBE-FORWARD handle 3', gen(2, 46));
    assert.equal(l.take().chains.size, 1);
    assert.equal(l.take().chains.size, 0);
    l.lost('nft monitor exited (null)');
    assert.equal(l.armed, false);
    assert.equal(l.take().unscoped, 'nft monitor exited (null)');
    feed(l, own(9));
    assert.equal(l.armed, true);
    assert.equal(l.take().unscoped, undefined, 'no gap counted across a restart');
  });
});

describe('iptables-rules/compare: chainsOfRestoreInput', () => {
  it('keeps the declarations and rules of the named chains, per table', () => {
    const input = [
      '*filter',
      ':KUBE-SERVICES - [0:0]',
      ':KUBE-FORWARD - [0:0]',
      '-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP',
      '-A KUBE-SERVICES -d 10.0.0.1/32 -j REJECT',
      'COMMIT',
      '*nat',
      ':KUBE-SERVICES - [0:0]',
      ':KUBE-SEP-A - [0:0]',
      '-A KUBE-SERVICES -d 10.0.0.2/32 -j KUBE-SVC-B',
      '-A KUBE-SEP-A -p tcp -j DNAT --to-destination 10.1.0.1:80',
      'COMMIT',
      '',
    ].join('\n');
    const out = chainsOfRestoreInput(
      input,
      new Map([
        ['nat', new Set(['KUBE-SEP-A', 'KUBE-MISSING'])],
        ['filter', new Set(['KUBE-SERVICES'])],
      ]),
    );
    assert.equal(
      out,
      [
        '*filter',
        ':KUBE-SERVICES - [0:0]',
        '-A KUBE-SERVICES -d 10.0.0.1/32 -j REJECT',
        'COMMIT',
        '*nat',
        ':KUBE-SEP-A - [0:0]',
        '-A KUBE-SEP-A -p tcp -j DNAT --to-destination 10.1.0.1:80',
        'COMMIT',
        '',
      ].join('\n'),
    );
    assert.equal(chainsOfRestoreInput(input, new Map()), '');
  });
});
