import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jumpRuleArgs, jumpRules } from '../../../src/iptables-rules/jumps.js';
import { endpointChainName } from '../../../src/iptables/names.js';
import { renderRestoreInput, type RenderResult } from '../../../src/iptables/render.js';
import type { Service } from '../../../src/model/types.js';
import { run } from '../../../src/util/exec.js';
import { requireRoot } from '../../support/sandbox.js';
import { config, config6, ep, NODE, render, service, state } from './fixtures.js';

/**
 * The rendered input must be accepted by the real kernel. Everything runs in a private, empty
 * network namespace (`unshare -n`), so the machine's own rules are never touched.
 */

/**
 * `--test` alone does not notice a jump to a chain that does not exist (nf_tables backend), so the
 * input is also really applied, in a throw-away namespace.
 */
async function restoreTest(binary: 'iptables-restore' | 'ip6tables-restore', input: string): Promise<void> {
  for (const mode of [['--test'], []]) {
    const res = await run(['unshare', '-n', binary, '--noflush', ...mode], { input, allowFailure: true });
    assert.equal(
      res.exitCode,
      0,
      `${binary} ${mode.join(' ')} failed: ${res.stderr}\n--- input head ---\n${input.slice(0, 3000)}`,
    );
  }
}

function richServices(): Service[] {
  const local = { nodeName: NODE };
  return [
    service('ns1/svc1', {
      clusterIP: '172.30.0.41',
      ports: [{ name: 'p80', port: 80, endpoints: [ep('10.180.0.1', 80)] }],
    }),
    service('ns2/svc2', {
      type: 'LoadBalancer',
      clusterIP: '172.30.0.42',
      externalIPs: ['192.168.99.22'],
      lbIPs: ['1.2.3.4'],
      eTP: 'Local',
      healthCheckNodePort: 30000,
      ports: [
        { name: 'p80', port: 80, nodePort: 3001, endpoints: [ep('10.180.0.2', 80, { nodeName: 'other' })] },
      ],
    }),
    service('ns3/svc3', {
      type: 'LoadBalancer',
      clusterIP: '172.30.0.43',
      lbIPs: ['5.6.7.8', '5.6.7.9'],
      sourceRanges: ['192.168.0.0/24', '203.0.113.0/25'],
      affinity: { type: 'ClientIP', timeoutSeconds: 10800 },
      eTP: 'Local',
      healthCheckNodePort: 30001,
      ports: [
        {
          name: 'http',
          port: 80,
          nodePort: 3003,
          endpoints: [ep('10.180.0.3', 80, local), ep('10.180.0.4', 80), ep('10.180.0.5', 80, local)],
        },
        { name: 'dns', protocol: 'UDP', port: 53, nodePort: 3053, endpoints: [ep('10.180.0.3', 53, local)] },
      ],
    }),
    service('ns4/svc4', {
      clusterIP: '172.30.0.44',
      iTP: 'Local',
      externalIPs: ['192.168.99.33'],
      ports: [{ name: 'p', port: 8080, endpoints: [ep('10.180.0.6', 8080, local), ep('10.180.0.7', 8080)] }],
    }),
    service('ns8/sctp', {
      clusterIP: '172.30.0.48',
      ports: [{ name: 's', protocol: 'SCTP', port: 9999, endpoints: [ep('10.180.0.10', 9999)] }],
    }),
    service('ns5/svc5', {
      clusterIP: '172.30.0.45',
      iTP: 'Local',
      ports: [{ port: 81, endpoints: [ep('10.180.0.8', 81)] }],
    }),
    service('ns6/svc6', {
      type: 'NodePort',
      clusterIP: '172.30.0.46',
      externalIPs: ['192.168.99.46'],
      ports: [{ name: 'p80', port: 80, nodePort: 3006 }],
    }),
    service('ns7/dual', {
      type: 'NodePort',
      clusterIPs: ['172.30.0.47', 'fd00:30::47'],
      externalIPs: ['2001:db8::47'],
      ports: [
        {
          name: 'p',
          port: 80,
          nodePort: 3007,
          endpoints: [ep('10.180.0.9', 80), ep('fd00:180::9', 80, local), ep('fd00:180::a', 80)],
        },
      ],
    }),
  ];
}

describe('iptables renderer against the real kernel (unshare -n)', function () {
  before(function () {
    requireRoot(this);
  });

  it('iptables-restore --test accepts and applies a rich IPv4 render (all detector variants)', async () => {
    const variants = [
      {},
      { randomFully: true, masqueradeAll: true },
      { localDetector: { mode: 'BridgeInterface', name: 'cbr0' } as const, localhostNodePorts: false },
      {
        localDetector: { mode: 'InterfaceNamePrefix', prefix: 'veth' } as const,
        conntrackTCPBeLiberal: true,
      },
      {
        localDetector: { mode: 'None' } as const,
        nodePortAddresses: { matchAll: false, addresses: ['127.0.0.1', '192.168.0.2'] } as const,
      },
    ];
    for (const v of variants) await restoreTest('iptables-restore', render(richServices(), v).restoreInput);
  });

  it('ip6tables-restore accepts and applies the IPv6 render', async () => {
    const res = renderRestoreInput({
      state: state(...richServices()),
      config: config6(),
      existingServiceChains: new Set(),
    });
    assert.ok(res.restoreInput.includes('[fd00:180::9]:80'));
    await restoreTest('ip6tables-restore', res.restoreInput);
  });

  it('iptables-restore accepts and applies large-cluster mode', async () => {
    const eps = Array.from({ length: 1200 }, (_, i) => ep(`10.200.${i >> 8}.${i & 255}`, 80));
    const res = render([
      service('ns/big', {
        clusterIP: '172.30.1.1',
        affinity: { type: 'ClientIP', timeoutSeconds: 60 },
        ports: [{ port: 80, endpoints: eps }],
      }),
    ]);
    assert.equal(res.largeClusterMode, true);
    await restoreTest('iptables-restore', res.restoreInput);
  });

  it('full sync, then a partial sync that deletes a stale chain, then the jump rules: the kernel agrees', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'svcplane-render-'));
    try {
      const services = richServices();
      const full: RenderResult = render(services);
      // ns1/svc1's endpoint moves: a new SEP chain, the old one is stale.
      const moved = services.map((s) =>
        s.name === 'svc1'
          ? service('ns1/svc1', {
              clusterIP: '172.30.0.41',
              ports: [{ name: 'p80', port: 80, endpoints: [ep('10.180.0.100', 80)] }],
            })
          : s,
      );
      const partial = renderRestoreInput({
        state: state(...moved),
        config: config(),
        changedServices: new Set(['ns1/svc1']),
        existingServiceChains: full.activeServiceChains,
      });
      const oldSep = endpointChainName('ns1/svc1:p80', 'tcp', '10.180.0.1:80');
      const newSep = endpointChainName('ns1/svc1:p80', 'tcp', '10.180.0.100:80');
      assert.deepEqual(partial.staleChains, [oldSep]);

      const quote = (a: string): string => (a.includes(' ') ? `"${a}"` : a);
      const jumps = jumpRules('IPv4', { localhostNodePorts: true });
      const jumpInput = (['filter', 'nat'] as const)
        .map((t) =>
          [
            `*${t}`,
            ...jumps
              .filter((j) => j.table === t)
              .map((j) => `-I ${j.chain} 1 ${jumpRuleArgs(j).map(quote).join(' ')}`),
            'COMMIT',
          ].join('\n'),
        )
        .join('\n');
      writeFileSync(join(dir, 'full'), full.restoreInput);
      writeFileSync(join(dir, 'partial'), partial.restoreInput);
      writeFileSync(join(dir, 'jumps'), jumpInput + '\n');
      const script =
        'iptables-restore --noflush "$1" && iptables-restore --noflush "$2" && iptables-restore --noflush "$3" && iptables-save';
      const res = await run(
        [
          'unshare',
          '-n',
          'bash',
          '-c',
          script,
          'restore',
          ...['full', 'partial', 'jumps'].map((f) => join(dir, f)),
        ],
        {
          allowFailure: true,
        },
      );
      assert.equal(res.exitCode, 0, res.stderr);
      const saved = res.stdout;
      assert.ok(!saved.includes(oldSep), 'stale SEP chain deleted');
      assert.ok(saved.includes(`:${newSep} `), 'new SEP chain present');
      // Unchanged Services' chains survived the partial restore.
      for (const c of full.activeServiceChains) if (c !== oldSep) assert.ok(saved.includes(`:${c} `), c);
      const inputJumps = saved
        .split('\n')
        .filter((l) => l.startsWith('-A INPUT '))
        .map((l) => l.slice(l.lastIndexOf('-j ') + 3));
      assert.deepEqual(inputJumps, [
        'KUBE-FIREWALL',
        'KUBE-PROXY-FIREWALL',
        'KUBE-NODEPORTS',
        'KUBE-EXTERNAL-SERVICES',
      ]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
