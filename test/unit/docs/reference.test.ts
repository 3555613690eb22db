import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { PROXY_FLAGS } from '../../../src/config/flags.js';
import { defaultProxyConfig, formatKubeProxyConfig } from '../../../src/config/kube-proxy-config.js';
import { configLeaves, FIELDS_WITHOUT_FLAGS, referenceDocs } from '../../../src/config/reference.js';
import { packageRoot } from '../../../src/util/paths.js';

/** The flag and configuration references in docs/ are generated from the code and cannot drift. */
describe('docs: flag and configuration reference', () => {
  for (const [path, text] of Object.entries(referenceDocs())) {
    it(`${path} is what \`npm run docs:reference\` writes`, () => {
      const onDisk = readFileSync(join(packageRoot(), path), 'utf8');
      assert.ok(onDisk === text, `${path} is out of date: run \`npm run docs:reference\``);
    });
  }

  it('every configuration field has a flag or a note saying what svcplane does with it', () => {
    const defaults = parseYaml(formatKubeProxyConfig(defaultProxyConfig())) as Record<string, unknown>;
    for (const [path] of configLeaves(defaults)) {
      if (path === 'apiVersion' || path === 'kind') continue;
      assert.ok(
        PROXY_FLAGS.some((f) => f.field === path) || FIELDS_WITHOUT_FLAGS[path],
        `${path}: neither a flag nor a note in src/config/reference.ts`,
      );
    }
  });
});
