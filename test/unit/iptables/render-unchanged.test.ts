import assert from 'node:assert/strict';
import { dropUnchangedFixedChains, fixedChainContents } from '../../../src/iptables/render-unchanged.js';

/** Partial syncs drop fixed chains whose rules did not change (render-unchanged.ts). */

const input = (servicesRule: string): string =>
  [
    '*filter',
    ':KUBE-FORWARD - [0:0]',
    '-A KUBE-FORWARD -j ACCEPT',
    'COMMIT',
    '*nat',
    ':KUBE-SERVICES - [0:0]',
    ':KUBE-SVC-AAAAAAAAAAAAAAAA - [0:0]',
    servicesRule,
    '-A KUBE-SVC-AAAAAAAAAAAAAAAA -j KUBE-SEP-BBBBBBBBBBBBBBBB',
    '-A KUBE-SERVICES -j KUBE-NODEPORTS',
    '-X KUBE-SEP-CCCCCCCCCCCCCCCC',
    'COMMIT',
    '',
  ].join('\n');

describe('dropUnchangedFixedChains', () => {
  const first = input('-A KUBE-SERVICES -d 10.96.0.1 -j KUBE-SVC-AAAAAAAAAAAAAAAA');

  it('remembers fixed chains only, rules in order', () => {
    assert.deepEqual(
      [...fixedChainContents(first)],
      [
        ['filter/KUBE-FORWARD', '-A KUBE-FORWARD -j ACCEPT'],
        [
          'nat/KUBE-SERVICES',
          '-A KUBE-SERVICES -d 10.96.0.1 -j KUBE-SVC-AAAAAAAAAAAAAAAA\n-A KUBE-SERVICES -j KUBE-NODEPORTS',
        ],
      ],
    );
  });

  it('drops unchanged fixed chains and keeps service chains and -X lines', () => {
    const r = dropUnchangedFixedChains(first, fixedChainContents(first));
    assert.deepEqual(r.dropped, ['filter/KUBE-FORWARD', 'nat/KUBE-SERVICES']);
    assert.equal(
      r.input,
      [
        '*filter',
        'COMMIT',
        '*nat',
        ':KUBE-SVC-AAAAAAAAAAAAAAAA - [0:0]',
        '-A KUBE-SVC-AAAAAAAAAAAAAAAA -j KUBE-SEP-BBBBBBBBBBBBBBBB',
        '-X KUBE-SEP-CCCCCCCCCCCCCCCC',
        'COMMIT',
        '',
      ].join('\n'),
    );
  });

  it('writes a fixed chain whose rules changed, and everything when nothing is remembered', () => {
    const next = input('-A KUBE-SERVICES -d 10.96.0.2 -j KUBE-SVC-AAAAAAAAAAAAAAAA');
    const r = dropUnchangedFixedChains(next, fixedChainContents(first));
    assert.deepEqual(r.dropped, ['filter/KUBE-FORWARD']);
    assert.match(r.input, /^:KUBE-SERVICES /m);
    assert.match(r.input, /^-A KUBE-SERVICES -d 10\.96\.0\.2 /m);
    assert.equal(dropUnchangedFixedChains(next, new Map()).input, next);
  });
});
