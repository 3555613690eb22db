import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, symlinkSync, writeFileSync, mkdirSync, truncateSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { Document, isCollection, Parser, stringify, visit } from 'yaml';
import {
  jsonNestingDepth,
  MAX_MANIFEST_FILE_BYTES,
  MAX_NESTING_DEPTH,
  measureValue,
  yamlNestingDepth,
} from '../../../src/kube/manifest-limits.js';
import { loadManifestObjects, parseManifestText, readRegularFile } from '../../../src/kube/manifests.js';
import { run } from '../../../src/util/exec.js';
import { withPropertySeed } from '../../support/property.js';
import { aliasBomb } from '../../support/hostile-text.js';
import { skipBecause } from '../../support/skip.js';

/**
 * Limits on what one manifest file may cost, checked before the recursive or expanding parts of
 * parsing: nesting (on yaml's syntax tree, or the parsed value for JSON), alias expansion, size, and
 * the kind of file (regular files only, never opened otherwise).
 */

/** Collection nesting of a plain value (recursive reference, for small values). */
function depthOf(v: unknown): number {
  if (typeof v !== 'object' || v === null) return 0;
  const children = Array.isArray(v) ? (v as unknown[]) : Object.values(v);
  return 1 + children.reduce<number>((m, c) => Math.max(m, depthOf(c)), 0);
}

/** `levels` nested collections: maps (`{a: …}`) or sequences (`[…]`), alternating when `mixed`. */
function nested(levels: number, kind: 'map' | 'seq' | 'mixed'): unknown {
  let v: unknown = 'x';
  for (let i = 0; i < levels; i++) {
    const map = kind === 'map' || (kind === 'mixed' && i % 2 === 0);
    v = map ? { a: v } : [v];
  }
  return v;
}

const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;

describe('manifest limits: nesting', () => {
  it('yaml nesting (syntax tree) never below the real depth, JSON nesting (text) exact: random values, every style', () => {
    const value = fc.letrec((tie) => ({
      node: fc.oneof(
        { depthSize: 'small', withCrossShrink: true },
        fc.oneof(fc.string({ maxLength: 5 }), fc.integer(), fc.constant(null), fc.boolean()),
        fc.array(tie('node'), { maxLength: 3 }),
        fc.dictionary(fc.string({ minLength: 1, maxLength: 4 }), tie('node'), { maxKeys: 3 }),
      ),
    })).node;
    withPropertySeed('nesting bound', (seed) =>
      fc.assert(
        fc.property(value, fc.array(fc.boolean(), { minLength: 1, maxLength: 16 }), (v, flows) => {
          // Block, flow, or a mix: each collection flow or block as the booleans say.
          const doc = new Document(v);
          let i = 0;
          visit(doc, (_key, node) => {
            if (isCollection(node)) node.flow = flows[i++ % flows.length];
          });
          const text = doc.toString();
          const tokens = [...new Parser().parse(text)];
          assert.ok(yamlNestingDepth(tokens) >= depthOf(v), text);
          assert.equal(jsonNestingDepth(JSON.stringify(v)), depthOf(v), JSON.stringify(v));
          const shape = measureValue(v, Number.POSITIVE_INFINITY);
          assert.ok('values' in shape || depthOf(v) > MAX_NESTING_DEPTH);
        }),
        { numRuns: 300, seed },
      ),
    );
  });

  for (const kind of ['map', 'seq', 'mixed'] as const) {
    for (const style of ['block', 'flow', 'json'] as const) {
      it(`${kind} ${style}: ${MAX_NESTING_DEPTH} levels are read, one more is refused`, () => {
        const text = (levels: number): string =>
          style === 'json'
            ? JSON.stringify(nested(levels, kind))
            : stringify(nested(levels, kind), style === 'flow' ? { collectionStyle: 'flow' } : { indent: 1 });
        const ok = parseManifestText(text(MAX_NESTING_DEPTH), 'f', style === 'json');
        assert.ok('objects' in ok, JSON.stringify(ok));
        const bad = parseManifestText(text(MAX_NESTING_DEPTH + 1), 'f', style === 'json');
        assert.deepEqual(bad, { error: `nested deeper than ${MAX_NESTING_DEPTH} levels` });
      });
    }
  }

  it('the ~30 KB files that aborted the process (exit 134) are refused, again and again', () => {
    for (let round = 0; round < 5; round++) {
      for (const text of [
        `${'- '.repeat(15_000)}x\n`,
        `a: ${'['.repeat(15_000)}${']'.repeat(15_000)}\n`,
        `${'{a: '.repeat(8000)}1${'}'.repeat(8000)}\n`,
      ]) {
        assert.deepEqual(parseManifestText(text, 'deep.yaml', false), {
          error: `nested deeper than ${MAX_NESTING_DEPTH} levels`,
        });
      }
      assert.deepEqual(parseManifestText('['.repeat(200_000) + ']'.repeat(200_000), 'deep.json', true), {
        error: `nested deeper than ${MAX_NESTING_DEPTH} levels`,
      });
    }
  });

  it('aliases nesting an anchor in the next one (deep objects from flat text) are refused', () => {
    const lines = ['a0: &a0 [x]'];
    for (let i = 1; i < 150; i++) lines.push(`a${i}: &a${i} [*a${i - 1}]`);
    const r = parseManifestText(lines.join('\n'), 'f', false);
    assert.ok(
      'error' in r && /nested deeper|aliases expand|Excessive alias count/.test(r.error),
      JSON.stringify(r),
    );
  });
});

describe('manifest limits: alias expansion', () => {
  it('a ~100 KB file aliasing 300 endpoints into 700 slices (210k endpoints) is refused', () => {
    const text = aliasBomb();
    assert.ok(text.length > 80_000 && text.length < 120_000, `${text.length} bytes`);
    const r = parseManifestText(text, 'bomb.yaml', false);
    assert.ok('error' in r, 'refused');
    assert.match(r.error, /document 0: aliases expand it beyond one value per byte of the file/);
  });

  it('ordinary anchors (shared labels and ports) are fine', () => {
    const text = [
      'apiVersion: v1',
      'kind: List',
      'items:',
      ...Array.from({ length: 20 }, (_, i) =>
        [
          '- apiVersion: v1',
          '  kind: Service',
          `  metadata: {name: s${i}, labels: ${i === 0 ? '&l ' : '*l'}${i === 0 ? '{app: web, tier: front}' : ''}}`,
          `  spec: {clusterIP: 10.96.0.${i + 1}, ports: ${i === 0 ? '&p [{name: http, port: 80}, {name: https, port: 443}]' : '*p'}}`,
        ].join('\n'),
      ),
    ].join('\n');
    const r = parseManifestText(text, 'ok.yaml', false);
    assert.ok('objects' in r, JSON.stringify(r));
  });

  it('measureValue counts shared values each time and stops at the budget', () => {
    const shared = [1, 2, 3];
    assert.deepEqual(measureValue({ a: shared, b: shared }, 100), { values: 9 });
    assert.ok('problem' in measureValue({ a: shared, b: shared }, 8));
  });
});

describe('manifest limits: files', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'svcplane-limits-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('reads regular files (and symlinks to them) only, up to the bound', async () => {
    writeFileSync(join(dir, 'a.yaml'), 'x: 1\n');
    symlinkSync(join(dir, 'a.yaml'), join(dir, 'link.yaml'));
    symlinkSync('/dev/zero', join(dir, 'zero.yaml'));
    mkdirSync(join(dir, 'sub'));
    symlinkSync(join(dir, 'sub'), join(dir, 'dir.yaml'));
    writeFileSync(join(dir, 'big.yaml'), '');
    truncateSync(join(dir, 'big.yaml'), MAX_MANIFEST_FILE_BYTES + 1);
    assert.deepEqual(await readRegularFile(join(dir, 'a.yaml'), 100), { text: 'x: 1\n' });
    assert.deepEqual(await readRegularFile(join(dir, 'link.yaml'), 100), { text: 'x: 1\n' });
    assert.deepEqual(await readRegularFile(join(dir, 'a.yaml'), 4), { error: 'larger than 4 bytes (5)' });
    assert.deepEqual(await readRegularFile(join(dir, 'zero.yaml'), 100), {
      error: 'a character device: only regular files are read',
    });
    assert.deepEqual(await readRegularFile(join(dir, 'dir.yaml'), 100), { directory: true });
    const { objects, problems } = await loadManifestObjects(dir);
    assert.equal(objects.length, 2, 'a.yaml and link.yaml');
    assert.deepEqual(
      problems.map((p) => `${p.object.name}: ${p.reason}`),
      [
        `big.yaml: larger than ${MAX_MANIFEST_FILE_BYTES} bytes (${MAX_MANIFEST_FILE_BYTES + 1})`,
        'zero.yaml: a character device: only regular files are read',
      ],
    );
  });

  it('a FIFO is refused without being opened (an open would block until a writer comes)', async function () {
    if (!isRoot) skipBecause(this, 'mknod needs root');
    await run(['mkfifo', join(dir, 'fifo.yaml')]);
    await run(['mknod', join(dir, 'dev.yaml'), 'c', '1', '3']);
    const started = performance.now();
    const { problems } = await loadManifestObjects(dir);
    assert.ok(performance.now() - started < 2000);
    assert.deepEqual(
      problems.map((p) => `${p.object.name}: ${p.reason}`),
      [
        'dev.yaml: a character device: only regular files are read',
        'fifo.yaml: a FIFO: only regular files are read',
      ],
    );
  });
});
