import assert from 'node:assert/strict';
import { parseNftTable, exprText, ListingParseError } from '../../../src/nftables/listing.js';
import { inputPieces, versionProblem } from '../../../src/nftables/nft.js';
import { driftReason } from '../../../src/nftables/proxier.js';
import { emptyModel } from '../../../src/nftables/transaction.js';

/** An `nft -j list table ip kube-proxy` output as nft 1.0.6 prints it (trimmed). */
const LISTING = JSON.stringify({
  nftables: [
    { metainfo: { version: '1.0.6', release_name: 'Lester Gooch #5', json_schema_version: 1 } },
    { table: { family: 'ip', name: 'kube-proxy', handle: 7 } },
    { table: { family: 'ip', name: 'other', handle: 8 } },
    {
      set: {
        family: 'ip',
        name: 'cluster-ips',
        table: 'kube-proxy',
        type: 'ipv4_addr',
        handle: 3,
        elem: ['172.30.0.41'],
      },
    },
    {
      map: {
        family: 'ip',
        name: 'no-endpoint-services',
        table: 'kube-proxy',
        type: ['ipv4_addr', 'inet_proto', 'inet_service'],
        handle: 7,
        map: 'verdict',
        elem: [
          [{ elem: { val: { concat: ['10.0.0.2', 'udp', 53] }, comment: 'ns/svc:p' } }, { drop: null }],
          [{ concat: ['10.0.0.1', 'tcp', 80] }, { goto: { target: 'reject-chain' } }],
        ],
      },
    },
    {
      set: {
        family: 'ip',
        name: 'affinity-X',
        table: 'kube-proxy',
        type: 'ipv4_addr',
        handle: 9,
        flags: ['timeout'],
        timeout: 10800,
      },
    },
    {
      chain: {
        family: 'ip',
        table: 'kube-proxy',
        name: 'nat-output',
        handle: 2,
        type: 'nat',
        hook: 'output',
        prio: -100,
        policy: 'accept',
      },
    },
    { chain: { family: 'ip', table: 'other', name: 'x', handle: 1 } },
    {
      rule: {
        family: 'ip',
        table: 'kube-proxy',
        chain: 'nat-output',
        handle: 10,
        expr: [{ jump: { target: 'services' } }],
      },
    },
  ],
});

describe('nft -j listing parser', () => {
  it('reads chains, rules, sets and maps of our table only, elements in transaction form', () => {
    const t = parseNftTable(LISTING, 'ip', 'kube-proxy');
    assert.ok(t);
    assert.equal(t.handle, 7);
    assert.deepEqual([...t.chains.keys()], ['nat-output']);
    const chain = t.chains.get('nat-output')!;
    assert.deepEqual([chain.hook, chain.prio, chain.rules.length], ['output', -100, 1]);
    assert.deepEqual([...t.containers.get('cluster-ips')!.elements], [['172.30.0.41', '']]);
    const m = t.containers.get('no-endpoint-services')!;
    assert.equal(m.kind, 'map');
    assert.equal(m.type, 'ipv4_addr . inet_proto . inet_service : verdict');
    assert.deepEqual(
      [...m.elements],
      [
        ['10.0.0.2 . udp . 53', 'drop comment "ns/svc:p"'],
        ['10.0.0.1 . tcp . 80', 'goto reject-chain'],
      ],
    );
    assert.equal(t.containers.get('affinity-X')!.timeout, 10800);
  });

  it('a missing table is undefined; text that is not a listing is an error', () => {
    assert.equal(parseNftTable(LISTING, 'ip6', 'kube-proxy'), undefined);
    assert.throws(() => parseNftTable('Error: nope', 'ip', 'kube-proxy'), ListingParseError);
    assert.throws(() => parseNftTable('{}', 'ip', 'kube-proxy'), ListingParseError);
  });

  it('expression text: prefixes, ranges, verdicts', () => {
    assert.equal(exprText({ prefix: { addr: '10.0.0.0', len: 8 } }), '10.0.0.0/8');
    assert.equal(exprText({ range: [1, 2] }), '1-2');
    assert.equal(exprText({ jump: { target: 'x' } }), 'jump x');
  });
});

describe('drift against the written model', () => {
  it('names the first difference: missing chain, rule count, element value, extra element', () => {
    const t = parseNftTable(LISTING, 'ip', 'kube-proxy');
    const m = emptyModel();
    m.chains.set('nat-output', 1);
    m.elements.get('cluster-ips')!.set('172.30.0.41', '');
    m.elements.get('no-endpoint-services')!.set('10.0.0.2 . udp . 53', 'drop comment "ns/svc:p"');
    m.elements.get('no-endpoint-services')!.set('10.0.0.1 . tcp . 80', 'goto reject-chain');
    // The other containers are missing from this trimmed listing.
    assert.equal(driftReason(t, m), 'service-ips missing');
    assert.equal(driftReason(undefined, m), 'table missing');
    m.chains.set('nat-output', 2);
    assert.equal(driftReason(t, m), 'chain nat-output has 1 rules, we wrote 2');
    m.chains.set('gone', 0);
    m.chains.delete('nat-output');
    assert.equal(driftReason(t, m), 'chain gone missing');
  });
});

describe('nft and kernel version checks', () => {
  it('needs nft ≥ 1.0.1 and kernel ≥ 5.13 (the kernel check can be skipped as in kube-proxy)', () => {
    assert.equal(versionProblem('nftables v1.0.6 (Lester Gooch #5)', '6.1.0-18-amd64', false), undefined);
    assert.match(
      versionProblem('nftables v0.9.8 (E.D.S.)', '6.1.0', false)!,
      /nft 1\.0\.1 or later, found 0\.9\.8/,
    );
    assert.match(
      versionProblem('nftables v1.0.1', '5.10.0-28-amd64', false)!,
      /kernel 5\.13 or later, found 5\.10/,
    );
    assert.equal(versionProblem('nftables v1.0.1', '5.10.0', true), undefined);
    assert.match(versionProblem('garbage', '6.1', false)!, /cannot read the nft version/);
  });
});

describe('nft -f input pieces', () => {
  it('newline-terminated pieces of about 32 KiB whose concatenation is the input (no joined copy of it)', () => {
    const lines = Array.from(
      { length: 5000 },
      (_, i) => `add rule ip kube-proxy c${i} counter comment "${'x'.repeat(i % 90)}"`,
    );
    const pieces = inputPieces(lines);
    assert.equal(pieces.join(''), lines.join('\n') + '\n');
    assert.ok(pieces.length > 3, `${pieces.length} pieces`);
    for (const p of pieces) {
      assert.ok(p.endsWith('\n'));
      assert.ok(p.length < 32 * 1024 + 200, `${p.length} characters`);
    }
    assert.deepEqual(inputPieces([]), []);
    assert.deepEqual(inputPieces(['a']), ['a\n']);
  });
});
