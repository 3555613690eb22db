import assert from 'node:assert/strict';
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runDemo } from '../../src/cli/demo.js';
import { listSandboxes } from '../../src/netns/sandbox.js';
import { packageRoot } from '../../src/util/paths.js';
import { randomSandboxId, requireRoot } from '../support/sandbox.js';

// `npm start` end to end: svcplane (built, in dist/) runs as a daemon inside the sandbox node and
// every example frontend is answered by a real backend; nothing is left behind.
describe('demo (npm start)', function () {
  this.timeout(90_000);
  before(function () {
    requireRoot(this);
  });

  it('serves every example Service as kube-proxy would (checked, not only printed), then tears down', async () => {
    const id = randomSandboxId();
    const lines: string[] = [];
    const code = await runDemo({
      manifests: join(packageRoot(), 'examples'),
      id,
      verbose: false,
      out: (l) => lines.push(l),
    });
    const text = lines.join('\n');
    assert.equal(code, 0, text);
    assert.match(
      text,
      /default\/hello \(ClusterIP\).*pod-a 10\.244\.0\.2:9376.*pod-b 10\.244\.0\.3:9376|default\/hello \(ClusterIP\).*pod-b 10\.244\.0\.3:9376.*pod-a 10\.244\.0\.2:9376/,
    );
    assert.match(text, /kube-system\/dns:dns \(UDP\).*dns 10\.244\.0\.6:53/);
    assert.match(text, /default\/web-nodeport \(NodePort\).*10\.244\.0\.1 \(node: masqueraded\)/);
    assert.match(text, /default\/hello \(ClusterIP\).*10\.244\.0\.10 \(client\)/);
    // Every row of the table carries the check mark.
    const rows = lines
      .join('\n')
      .split('\n')
      .filter((l) => /^(default|kube-system)\//.test(l));
    assert.equal(rows.length, 10, text);
    for (const row of rows) assert.match(row, / {2}✓$/, row);
    assert.match(text, /All frontends answered as kube-proxy would/);
    assert.match(text, /No rules for default\/headless-db and default\/search/);
    // The seeds' NetworkPolicy: each connection checked against what the policy says.
    assert.match(text, /client +default, role=frontend +6379 +redis +allowed +answered .*✓/);
    assert.match(text, /pod-a +default, role=backend +6379 +redis +denied +refused .*✓/);
    assert.match(text, /redis +default, role=db +9376 +pod-a +denied +\S+ .*✓/);
    assert.match(text, /Every connection the policy allows was answered, every other one failed/);
    assert.ok(!(await listSandboxes()).includes(id), 'sandbox removed');
  });

  it('fails (exit 1) naming each deviation: a balanced Service with one backend, a NodePort not masqueraded, a Service with rules it must not have', async () => {
    const id = randomSandboxId();
    const dir = await mkdtemp(join(tmpdir(), 'svcp-demo-'));
    try {
      await cp(join(packageRoot(), 'examples'), dir, { recursive: true });
      // hello loses pod-b; web-nodeport keeps client addresses (eTP=Local: kube-proxy does not masquerade).
      const hello = await readFile(join(dir, 'hello.yaml'), 'utf8');
      await writeFile(join(dir, 'hello.yaml'), hello.replace(/ {2}- addresses: \[10\.244\.0\.3\][^]*$/, ''));
      const np = await readFile(join(dir, 'web-nodeport.yaml'), 'utf8');
      await writeFile(
        join(dir, 'web-nodeport.yaml'),
        np.replace('  type: NodePort\n', '  type: NodePort\n  externalTrafficPolicy: Local\n'),
      );
      const lines: string[] = [];
      const code = await runDemo({
        manifests: dir,
        id,
        verbose: false,
        out: (l) => lines.push(l),
        // default/hello does get rules: the check must catch that instead of printing an empty list.
        noRuleServices: ['default/headless-db', 'default/hello'],
      });
      const text = lines.join('\n');
      assert.equal(code, 1, text);
      assert.match(text, /✗ 2 frontend\(s\) not as kube-proxy would/);
      assert.match(
        text,
        /default\/hello \(ClusterIP\): expected answers from pod-a and pod-b, got pod-a only/,
      );
      assert.match(
        text,
        /default\/web-nodeport \(NodePort\): not masqueraded: the backend saw 192\.0\.2\.2, kube-proxy gives the node \(10\.244\.0\.1\)/,
      );
      assert.match(text, /✗ default\/hello got rules, but must have none/);
      assert.ok(!(await listSandboxes()).includes(id), 'sandbox removed');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
