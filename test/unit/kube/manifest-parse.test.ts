import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import v8 from 'node:v8';
import { runInNewContext } from 'node:vm';
import fc from 'fast-check';
import { Document, isCollection, parseAllDocuments, visit } from 'yaml';
import { parseManifestText } from '../../../src/kube/manifest-parse.js';
import { withPropertySeed } from '../../support/property.js';

/**
 * The manifest parser (js-yaml since issue 14, the `yaml` package before): the same objects as the
 * `yaml` package for everything Kubernetes manifests use, a JSON fast path that gives what YAML
 * would, and clear refusals where the two parsers differ.
 */

const HERE = dirname(fileURLToPath(import.meta.url));
const CORPORA = ['../../fixtures/hostile', '../../fixtures/manifests', '../../../examples'].map((d) =>
  join(HERE, d),
);

/** What the `yaml` package (the parser before) reads: documents' values, or undefined on an error. */
function viaYamlPackage(text: string): unknown[] | undefined {
  const docs = parseAllDocuments(text);
  if (docs.some((d) => d.errors.length > 0)) return undefined;
  return docs
    .map((d) => d.toJS({ maxAliasCount: 1000 }) as unknown)
    .filter((v) => v !== null && v !== undefined);
}

function objects(text: string, json = false): unknown[] {
  const r = parseManifestText(text, 'f.yaml', json);
  assert.ok('objects' in r, JSON.stringify(r));
  return r.objects.map((o) => o.obj);
}

describe('manifest parser', () => {
  it('reads every fixture and example as the yaml package did', () => {
    let files = 0;
    for (const dir of CORPORA) {
      for (const f of readdirSync(dir).filter((n) => /\.ya?ml$/.test(n))) {
        const text = readFileSync(join(dir, f), 'utf8');
        const before = viaYamlPackage(text);
        if (before === undefined) continue;
        assert.deepEqual(objects(text), before, f);
        files++;
      }
    }
    assert.ok(files >= 30, `${files} files compared`);
  });

  it('random values in block, flow and mixed style: the same objects as the yaml package', () => {
    const key = fc.oneof(fc.stringMatching(/^[a-z][a-zA-Z0-9./_-]{0,12}$/), fc.string({ maxLength: 6 }));
    const scalar = fc.oneof(
      fc.string({ maxLength: 12 }),
      fc.integer(),
      fc.double({ noNaN: true }),
      fc.boolean(),
      fc.constant(null),
      fc.constantFrom(
        'yes',
        'no',
        'on',
        '0o17',
        '017',
        '0x1F',
        '1e3',
        '.inf',
        '~',
        'Null',
        'True',
        '12:30',
        '- x',
        ': x',
        '#x',
        'a #b',
        "it's",
        '"q"',
      ),
    );
    const value = fc.letrec((tie) => ({
      node: fc.oneof(
        { depthSize: 'small', withCrossShrink: true },
        scalar,
        fc.array(tie('node'), { maxLength: 4 }),
        fc.dictionary(key, tie('node'), { maxKeys: 4 }),
      ),
    })).node;
    withPropertySeed('parser vs yaml', (seed) =>
      fc.assert(
        fc.property(
          fc.array(value, { minLength: 1, maxLength: 3 }),
          fc.array(fc.boolean(), { minLength: 1, maxLength: 8 }),
          (docs, flows) => {
            const text = docs
              .map((v) => {
                const doc = new Document(v);
                let i = 0;
                visit(doc, (_k, node) => {
                  if (isCollection(node)) node.flow = flows[i++ % flows.length];
                });
                return doc.toString();
              })
              .join('---\n');
            const before = viaYamlPackage(text);
            if (before === undefined) return;
            assert.deepEqual(objects(text), before, text);
          },
        ),
        { numRuns: 400, seed },
      ),
    );
  });

  it('YAML files whose text is JSON take the JSON path and read as YAML would', () => {
    const value = {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: 'a', labels: { x: 'y' } },
      spec: { ports: [{ port: 80 }] },
    };
    const text = `\n  ${JSON.stringify(value, null, 2)}\n`;
    assert.deepEqual(objects(text), [value]);
    assert.deepEqual(objects(text), viaYamlPackage(text));
    // A top-level array in a YAML file is one document (a .json file's array is several objects).
    assert.deepEqual(objects('[{"a": 1}, {"b": 2}]'), [[{ a: 1 }, { b: 2 }]]);
    assert.deepEqual(objects('[{"a": 1}, {"b": 2}]', true), [{ a: 1 }, { b: 2 }]);
    // Flow YAML that is not JSON falls back to YAML.
    assert.deepEqual(objects('{a: 1, b: [x, y]}'), [{ a: 1, b: ['x', 'y'] }]);
    // JSON nested too deep is refused on either path.
    const deep = `${'['.repeat(101)}${']'.repeat(101)}`;
    assert.deepEqual(parseManifestText(deep, 'd.yaml', false), { error: 'nested deeper than 100 levels' });
    assert.deepEqual(parseManifestText(deep, 'd.json', true), { error: 'nested deeper than 100 levels' });
  });

  it('refuses, with a one-line reason and position, what js-yaml does not read', () => {
    for (const [text, reason] of [
      ['a: !foo bar\n', /^invalid YAML: unknown scalar tag !<!foo> at line 1, column 4$/],
      ['a: 1\na: 2\n', /^invalid YAML: duplicated mapping key at line 2, column 1$/],
      ['? [a, b]\n: c\n', /^invalid YAML: .*complex keys/],
      ['a: [\n', /^invalid YAML: .* at line \d+, column \d+$/],
      [`a: !${'x'.repeat(5000)} b\n`, /^invalid YAML: unknown scalar tag .{250,320}… at line 1, column 4$/],
    ] as const) {
      const r = parseManifestText(text, 'f.yaml', false);
      assert.ok('error' in r, text);
      assert.match(r.error, reason);
      assert.ok(!r.error.includes('\n'));
    }
  });

  it('keys named __proto__ are plain data', () => {
    const [obj] = objects('__proto__: {polluted: 1}\nkind: x\n') as [Record<string, unknown>];
    assert.equal(Object.getPrototypeOf(obj), Object.prototype);
    assert.equal(({} as Record<string, unknown>).polluted, undefined);
    assert.deepEqual(Object.keys(obj), ['__proto__', 'kind']);
  });

  it('the objects do not keep the file text alive (no substrings of it are kept)', () => {
    v8.setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    // 100 files of ~200 KB each (a long comment), each with a 20-character value, half of them with an alias.
    const kept: unknown[] = [];
    const heapAfterGc = (): number => {
      gc();
      gc();
      return process.memoryUsage().heapUsed;
    };
    const before = heapAfterGc();
    for (let i = 0; i < 100; i++) {
      // Every other file without the alias: the block YAML front (manifest-yaml-block.ts) reads it.
      const [anchor, after] = i % 2 === 0 ? [' &m', 'copy: *m\n'] : ['', `ns: 'quoted-namespace-${i}'\n`];
      const text = `# ${'x'.repeat(200_000)}\nkind: Service\nmetadata:${anchor}\n  name: service-name-${String(i).padStart(6, '0')}\n${after}`;
      const parsed = parseManifestText(text, `f${i}.yaml`, false);
      assert.ok('objects' in parsed);
      kept.push(parsed.objects[0]!.obj);
    }
    const retained = heapAfterGc() - before;
    assert.equal((kept[7] as { metadata: { name: string } }).metadata.name, 'service-name-000007');
    // Views into the texts would keep 100 x 200 KB (20 MB).
    assert.ok(retained < 5_000_000, `${Math.round(retained / 1e6)} MB retained`);
  });
});
