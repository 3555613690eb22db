import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { IPFamily } from '../../src/model/types.js';
import type { Sandbox } from '../../src/netns/sandbox.js';
import { run } from '../../src/util/exec.js';
import type { Drop } from './scenarios/table.js';

/**
 * A drop proven by the kernel in nftables mode. kube-proxy's nftables rules carry no counters, so the
 * node's packets are traced instead: a table of the test's own (`inet svcplane-test-trace`, hooked
 * before everything) sets `meta nftrace`, and `nft monitor trace` reports each rule a packet meets
 * with its verdict. The proof: a rule of the `kube-proxy` table of the family gave `verdict drop`
 * while the traffic ran.
 */

const TRACE_TABLE = 'svcplane-test-trace';

/** The kube-proxy chain whose rule drops for each reason (kube-proxy's nftables layout). */
function dropChain(drop: Drop): RegExp {
  switch (drop.kind) {
    case 'source-range':
      return new RegExp(`^firewall-.*/${drop.service}/`);
    case 'external-no-local':
      return /^nodeport-endpoints-check .*@no-endpoint-nodeports /;
    case 'internal-no-local':
      return /^service-endpoints-check .*@no-endpoint-services /;
  }
}

export async function expectNftDrop(
  sb: Sandbox,
  family: IPFamily,
  drop: Drop,
  traffic: () => Promise<void>,
): Promise<void> {
  const fam = family === 'IPv4' ? 'ip' : 'ip6';
  await sb.exec('node', ['nft', '-f', '-'], {
    input: [
      `table inet ${TRACE_TABLE} {`,
      '  chain pre { type filter hook prerouting priority -500; meta nftrace set 1; }',
      '  chain out { type filter hook output priority -500; meta nftrace set 1; }',
      '}',
      '',
    ].join('\n'),
  });
  const monitor = spawn('ip', ['netns', 'exec', sb.nodeNs, 'nft', 'monitor', 'trace'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  monitor.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  monitor.stderr.setEncoding('utf8').on('data', (d: string) => (out += d));
  const exited = new Promise<void>((resolve) => monitor.once('exit', () => resolve()));
  try {
    // Listening once a packet of the node's own shows up in the trace (a UDP probe to a closed port).
    const deadline = Date.now() + 10_000;
    while (!out.includes(`inet ${TRACE_TABLE} out`)) {
      if (Date.now() > deadline) assert.fail(`nft monitor trace did not start: ${out.slice(0, 500)}`);
      await sb.request('node', { proto: 'udp', ip: '127.0.0.1', port: 9, timeoutMs: 100 });
      await new Promise((r) => setTimeout(r, 50));
    }
    const before = out.length;
    await traffic();
    const drops = (): string[] =>
      out
        .slice(before)
        .split('\n')
        .filter((l) => l.includes(`${fam} kube-proxy `) && l.includes('(verdict drop)'));
    for (let i = 0; drops().length === 0 && i < 20; i++) await new Promise((r) => setTimeout(r, 50));
    const lines = drops();
    assert.ok(
      lines.length > 0,
      `${family}: no kube-proxy rule dropped the packets:\n${out.slice(before, before + 3000)}`,
    );
    const chain = dropChain(drop);
    assert.ok(
      lines.some((l) => chain.test(l.split(`${fam} kube-proxy `)[1] ?? '')),
      `${family} ${drop.kind}: dropped in another chain than ${chain}:\n${lines.join('\n')}`,
    );
  } finally {
    monitor.kill('SIGTERM');
    await exited;
    await run(['nft', 'delete', 'table', 'inet', TRACE_TABLE], { netns: sb.nodeNs, allowFailure: true });
  }
}
