import assert from 'node:assert/strict';
import { diffRulesets } from '../../../src/iptables-rules/compare.js';
import { explainService, formatExplainText } from '../../../src/debug/explain.js';
import { buildOwnerIndex } from '../../../src/iptables-rules/owners.js';
import { jumpRules } from '../../../src/iptables-rules/jumps.js';
import { parseIptablesSave } from '../../../src/iptables/save-parse.js';
import type { ClusterState } from '../../../src/model/types.js';
import { ep, NODE, render, service, state } from '../iptables/fixtures.js';
import { KUBE_PROXY_SVC2, svc2 } from './kube-proxy-svc2.js';

const node = { name: NODE, zone: '' };

describe('svcplane explain (pure)', () => {
  it("ns2/svc2: endpoints by category, kube-proxy's chains and rules with counters, the eTP=Local warning", () => {
    const kernel = parseIptablesSave(
      KUBE_PROXY_SVC2.replace(
        /^-A KUBE-SVC-GNZBNJ2PO5MGZ6GT -m comment --comment "ns2\/svc2:p80 -> /m,
        '[7:420] $&',
      ),
    );
    const r = explainService({
      key: 'ns2/svc2',
      state: state(svc2),
      node,
      families: [{ family: 'IPv4', kernel }],
    });
    assert.equal(r.found, true);
    const p = r.ports[0]!;
    assert.deepEqual(p.endpoints, [
      {
        endpoint: '10.180.0.2:80',
        ready: true,
        serving: true,
        terminating: false,
        node: 'other-node',
        local: false,
        usedFor: ['cluster'],
      },
    ]);
    assert.deepEqual(
      p.chains.map((c) => c.chain),
      ['KUBE-EXT-GNZBNJ2PO5MGZ6GT', 'KUBE-SVC-GNZBNJ2PO5MGZ6GT', 'KUBE-SEP-RS4RBKLTHTF2IUXJ'],
    );
    const svcChain = p.chains.find((c) => c.chain.startsWith('KUBE-SVC-'));
    assert.equal(svcChain?.rules[1]?.packets, 7);
    // cluster IP, external IP, LB IP, 2 NodePort rules (nat); 3 DROPs and the health check (filter).
    assert.equal(p.dispatch.length, 9);
    assert.ok(
      r.warnings.some((w) => /externalTrafficPolicy=Local but no endpoint runs on node test-node/.test(w)),
    );
    const text = formatExplainText(r);
    assert.match(text, /10\.180\.0\.2:80 +ready +remote \(other-node\) +used for: cluster/);
    assert.match(text, /\[7 420\] +-A KUBE-SVC-GNZBNJ2PO5MGZ6GT/);
  });

  it('reports drift, no endpoints, terminating-only endpoints and model problems', () => {
    const empty = service('ns/empty', { clusterIP: '10.96.0.12', ports: [{ port: 80 }] });
    const term = service('ns/term', {
      clusterIP: '10.96.0.13',
      ports: [
        {
          port: 80,
          endpoints: [ep('10.0.0.5', 80, { ready: false, serving: true, terminating: true, nodeName: NODE })],
        },
      ],
    });
    const st: ClusterState = {
      ...state(empty, term),
      problems: [
        {
          object: { kind: 'EndpointSlice', namespace: 'ns', name: 'empty-abcde' },
          field: 'endpoints[0].addresses[0]',
          reason: 'not an IP',
        },
      ],
    };
    const rendered = render([empty, term]).restoreInput;
    const kernelText = rendered.replace(/^-A KUBE-SERVICES .*"ns\/empty has no endpoints".*\n/m, '');
    const kernel = parseIptablesSave(kernelText);
    const drift = diffRulesets({
      family: 'IPv4',
      desired: parseIptablesSave(rendered),
      actual: kernel,
      owners: buildOwnerIndex(st),
      jumps: jumpRules('IPv4', { localhostNodePorts: true }),
    });
    const r = explainService({
      key: 'ns/empty',
      state: st,
      node,
      families: [{ family: 'IPv4', kernel, drift }],
    });
    assert.ok(
      r.warnings.some((w) => /no usable endpoints/.test(w)),
      r.warnings.join('\n'),
    );
    assert.ok(
      r.warnings.some((w) => /kernel rules drifted \(1 missing, 0 extra/.test(w)),
      r.warnings.join('\n'),
    );
    assert.ok(
      r.warnings.some((w) => /EndpointSlice empty-abcde: endpoints\[0\]\.addresses\[0\]: not an IP/.test(w)),
    );
    assert.equal(r.problems.length, 1);

    const t = explainService({
      key: 'ns/term',
      state: st,
      node,
      families: [{ family: 'IPv4', kernel, drift }],
    });
    assert.ok(
      t.warnings.some((w) => /only terminating endpoints left/.test(w)),
      t.warnings.join('\n'),
    );
    assert.ok(!t.warnings.some((w) => /drifted/.test(w)));
  });

  it('a Service gone from the state but still in the kernel is reported as stale; an unknown one is not found', () => {
    const kernel = parseIptablesSave(KUBE_PROXY_SVC2);
    const gone = explainService({
      key: 'ns2/svc2',
      state: state(),
      node,
      families: [{ family: 'IPv4', kernel }],
    });
    assert.equal(gone.found, false);
    assert.match(gone.warnings[0] ?? '', /kernel still has 16 rule\(s\)/);
    const unknown = explainService({
      key: 'ns9/nope',
      state: state(),
      node,
      families: [{ family: 'IPv4', kernel }],
    });
    assert.deepEqual(unknown.warnings, []);
  });
});
