import assert from 'node:assert/strict';
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

  it('serves every example Service through the rules svcplane wrote, then tears down', async () => {
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
    assert.match(text, /default\/hello \(ClusterIP\).*pod-[ab] 10\.244\.0\.[23]:9376/);
    assert.match(text, /kube-system\/dns:dns \(UDP\).*dns 10\.244\.0\.6:53/);
    assert.match(text, /All frontends answered/);
    assert.match(text, /No rules for default\/headless-db and default\/search/);
    assert.ok(!(await listSandboxes()).includes(id), 'sandbox removed');
  });

  it('fails (exit 1) when a Service that must have no rules has some', async () => {
    const id = randomSandboxId();
    const lines: string[] = [];
    // default/hello does get rules: the check must catch that instead of printing an empty list.
    const code = await runDemo({
      manifests: join(packageRoot(), 'examples'),
      id,
      verbose: false,
      out: (l) => lines.push(l),
      noRuleServices: ['default/headless-db', 'default/hello'],
    });
    const text = lines.join('\n');
    assert.equal(code, 1, text);
    assert.match(text, /✗ default\/hello got rules, but must have none/);
    assert.ok(!(await listSandboxes()).includes(id), 'sandbox removed');
  });
});
