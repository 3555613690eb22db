import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../../src/util/paths.js';

/**
 * One Node.js line for development, CI and the image: scripts/node-env.sh names it (setup.sh installs
 * it when the machine's is older), package.json's engines and the Dockerfile's default bases follow.
 */
describe('runtime: one Node.js line everywhere', () => {
  const read = (f: string): string => readFileSync(join(packageRoot(), f), 'utf8');
  const major = /^SVCPLANE_NODE_VERSION=(\d+)\.\d+\.\d+$/m.exec(read('scripts/node-env.sh'))?.[1];

  it('scripts/node-env.sh names a version of the current LTS (26)', () => {
    assert.equal(major, '26');
  });

  it("package.json's engines and the Dockerfile's bases are that line", () => {
    const pkg = JSON.parse(read('package.json')) as { engines: { node: string } };
    assert.equal(pkg.engines.node, `>=${major}`);
    const bases = [...read('Dockerfile').matchAll(/^ARG (?:BUILD|RUNTIME)_BASE=(\S+)$/gm)].map((m) => m[1]);
    assert.deepEqual(bases, [`node:${major}-bookworm-slim`, `node:${major}-bookworm-slim`]);
  });

  it('every script that starts node, npm or npx puts that Node first on PATH (node-env.sh)', () => {
    const sources = /^\s*\. scripts\/node-env\.sh$/m;
    for (const script of [
      'test.sh',
      'test-ipvs.sh',
      'test-docker.sh',
      'docker-setup.sh',
      'bench.sh',
      'start.sh',
    ]) {
      assert.match(read(`scripts/${script}`), sources, `scripts/${script} sources scripts/node-env.sh`);
    }
    // setup.sh installs it, then sources it again before npm ci and the build.
    assert.equal(read('scripts/setup.sh').match(/^\s*\. scripts\/node-env\.sh$/gm)?.length, 2);
    // Inside User-mode Linux the caller's directory is carried in SVCPLANE_NODE_BIN.
    assert.match(read('scripts/uml-init.sh'), /export PATH=\$SVCPLANE_NODE_BIN:\$PATH/);
  });
});
