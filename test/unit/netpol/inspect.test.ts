import assert from 'node:assert/strict';
import {
  explainPod,
  formatPolicyDiff,
  formatTracedPolicies,
  tracePolicies,
} from '../../../src/netpol/inspect.js';
import { namespace, pod, policy, stateOf } from './objects.js';

/** What the operator tools say about policies (explain pod, trace, diff), from a state. */

const state = stateOf([
  namespace('default'),
  pod('default', 'db', { labels: { role: 'db' }, ips: ['10.244.1.10'], ports: [['redis', 6379]] }),
  pod('default', 'fe', { labels: { role: 'frontend' }, ips: ['10.244.1.11'] }),
  pod('default', 'web', { labels: { app: 'web' }, ips: ['10.244.1.12'] }),
  policy('default', 'db', {
    podSelector: { matchLabels: { role: 'db' } },
    ingress: [
      {
        from: [{ podSelector: { matchLabels: { role: 'frontend' } } }],
        ports: [{ port: 'redis' }, { port: 7000, endPort: 7010 }],
      },
    ],
  }),
  // Invalid: except outside its cidr.
  policy('default', 'web', {
    podSelector: { matchLabels: { app: 'web' } },
    ingress: [{ from: [{ ipBlock: { cidr: '10.0.0.0/8', except: ['11.0.0.0/8'] } }] }],
  }),
]);

describe('netpol operator tools (explain pod, trace, diff)', () => {
  it('explain pod: isolation, the selecting policies rule by rule, the kernel', () => {
    const r = explainPod(state, 'n1', 'default/db', { lines: [] });
    assert.equal(r.found, true);
    assert.match(r.text, /^Pod: +default\/db on this node, 10\.244\.1\.10$/m);
    assert.match(r.text, /^Ingress: +isolated by default\/db: only what their ingress rules allow$/m);
    assert.match(r.text, /^Egress: +not isolated: everything allowed$/m);
    assert.match(
      r.text,
      /^ {4}ingress\[0\]: from pods role=frontend of namespace default — ports TCP\/redis \(named: resolved on the destination pod\), TCP\/7000-7010$/m,
    );
    assert.match(r.text, /^Kernel: +table inet svcplane-netpol holds what these policies say$/m);
  });

  it('explain pod: an invalid policy is named as such, allowing nothing; a kernel difference is shown', () => {
    const r = explainPod(state, 'n1', 'default/web', { lines: ['set tgt4-x: missing'] });
    assert.match(
      r.text,
      /default\/web \(Ingress\) INVALID \(spec\.ingress\[0\]\.from\[0\]\.ipBlock\.except\[0\]\): allows nothing until fixed/,
    );
    assert.match(r.text, /^ {4}ingress: nothing allowed$/m);
    assert.match(r.text, /differs from the policies: set tgt4-x: missing/);
    assert.deepEqual(explainPod(state, 'n1', 'default/nobody', undefined).found, false);
  });

  it('trace: the verdict per backend after DNAT', () => {
    const traced = tracePolicies(state, undefined, { src: '10.244.1.11', protocol: 'TCP', fromNode: false }, [
      { ip: '10.244.1.10', port: 6379 },
      { ip: '10.244.1.10', port: 6380 },
    ]);
    assert.deepEqual(
      traced.map((t) => t.verdict.allowed),
      [true, false],
    );
    const text = formatTracedPolicies(traced);
    assert.match(text, /-> 10\.244\.1\.10:6379 +allowed: .*allowed by default\/db ingress\[0\]/);
    assert.match(text, /-> 10\.244\.1\.10:6380 +denied: .*DENIED, isolated by default\/db/);
  });

  it('diff: in sync, or one line per difference', () => {
    assert.equal(formatPolicyDiff({ lines: [] }), 'NetworkPolicy (table inet svcplane-netpol): in sync\n');
    assert.equal(
      formatPolicyDiff({ lines: ['chain forward: missing'] }),
      'NetworkPolicy (table inet svcplane-netpol): 1 difference(s)\n  chain forward: missing\n',
    );
  });
});
