import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isDeepStrictEqual } from 'node:util';
import fc from 'fast-check';
import { constructFromEvents, dump, parseEvents } from 'js-yaml';
import { Document, isCollection, visit } from 'yaml';
import { manifestDir } from '../../../bench/layouts.js';
import { MAX_NESTING_DEPTH } from '../../../src/kube/manifest-limits.js';
import { parseManifestText } from '../../../src/kube/manifest-parse.js';
import { parseBlockYaml } from '../../../src/kube/manifest-yaml-block.js';
import { withPropertySeed } from '../../support/property.js';

/**
 * The block YAML front (manifest-yaml-block.ts) against js-yaml, which it stands in front of: for
 * every text it reads, exactly js-yaml's documents (same values, types, key order); everything it
 * does not read is left to js-yaml (undefined), errors included.
 */

const HERE = dirname(fileURLToPath(import.meta.url));
const CORPORA = ['../../fixtures/hostile', '../../fixtures/manifests', '../../../examples'].map((d) =>
  join(HERE, d),
);

/** js-yaml's documents (as manifest-parse.ts calls it), or 'error'. */
function viaJsYaml(text: string): unknown[] | 'error' {
  try {
    return constructFromEvents(parseEvents(text, { maxDepth: MAX_NESTING_DEPTH + 3 }), { source: text });
  } catch {
    return 'error';
  }
}

/** Counts of texts the front read and left to js-yaml; fails on any difference where it read one. */
function compare(text: string, seen: { fast: number; slow: number }): void {
  const fast = parseBlockYaml(text);
  if (fast === undefined) {
    seen.slow++;
    return;
  }
  seen.fast++;
  const js = viaJsYaml(text);
  assert.notEqual(js, 'error', `js-yaml refuses what the front read:\n${text}`);
  assert.ok(
    isDeepStrictEqual(fast, js),
    `${text}\nfront: ${JSON.stringify(fast)}\njs-yaml: ${JSON.stringify(js)}`,
  );
  // Same key order (deepStrictEqual does not compare it).
  assert.equal(JSON.stringify(fast), JSON.stringify(js), text);
}

/** Scalars written to trip a YAML reader: implicit types of YAML 1.1 and 1.2, indicators, quotes. */
const trickyScalar = fc.oneof(
  fc.string({ maxLength: 12 }),
  fc.string({ unit: fc.constantFrom(...' :#-?\'"{}[],&*!|>%@`~0123456789.abxTFnN_+e/'), maxLength: 10 }),
  fc.integer(),
  fc.double(),
  fc.boolean(),
  fc.constantFrom(null, 0, -0, 1.5, -1),
  fc.constantFrom(
    '10.0.0.1',
    '80',
    '2024-01-01',
    '0x1F',
    '0o17',
    '017',
    '1e3',
    '.inf',
    '-.Inf',
    '.NaN',
    '~',
    'Null',
    'NULL',
    'True',
    'FALSE',
    'yes',
    'on',
    '12:30',
    '+12',
    '-0',
    '1_000',
    '0b11',
    '- x',
    ': x',
    '#x',
    'a #b',
    'a: b',
    'a:',
    "it's",
    '"q"',
    '---',
    '...',
    '<<',
    '__proto__',
    '',
    ' ',
  ),
);
const key = fc.oneof(
  fc.stringMatching(/^[a-z][a-zA-Z0-9./_-]{0,12}$/),
  fc.string({ maxLength: 6 }),
  trickyScalar.map(String),
);
const value = fc.letrec((tie) => ({
  node: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    trickyScalar,
    fc.array(tie('node'), { maxLength: 4 }),
    fc.dictionary(key, tie('node'), { maxKeys: 4 }),
  ),
})).node;

/** A value written by the `yaml` package (block, some collections flow, indents 1-4, sequences indented or not) or js-yaml. */
const written = fc
  .tuple(
    fc.array(value, { minLength: 1, maxLength: 3 }),
    fc.array(fc.boolean(), { minLength: 1, maxLength: 8 }),
    fc.integer({ min: 1, max: 4 }),
    fc.boolean(),
    fc.constantFrom('yaml', 'js-yaml'),
  )
  .map(([docs, flows, indent, indentSeq, writer]) =>
    docs
      .map((v) => {
        if (writer === 'js-yaml') return dump(v, { indent: Math.max(indent, 2), seqNoIndent: !indentSeq });
        const doc = new Document(v);
        let i = 0;
        visit(doc, (_k, node) => {
          if (isCollection(node)) node.flow = flows[i++ % flows.length]! && node.items.length === 0;
        });
        return doc.toString({ indent, indentSeq });
      })
      .join('---\n'),
  );

/** Edits that make text the front must either read as js-yaml does or leave to it. */
const edit = fc.tuple(
  fc.nat(),
  fc.constantFrom(
    ' ',
    '  ',
    '\n',
    '- ',
    ': ',
    ' #c',
    '#',
    '---\n',
    '\t',
    "'",
    '"',
    '{}',
    '[]',
    'x',
    '\\',
    '&a ',
    '*a',
    '!t ',
  ),
  fc.nat({ max: 3 }),
);
function applyEdit(text: string, [at, insert, remove]: [number, string, number]): string {
  const i = text.length === 0 ? 0 : at % text.length;
  return text.slice(0, i) + insert + text.slice(i + remove);
}

describe('block YAML front (manifest-yaml-block.ts)', () => {
  it("random documents as the yaml package and js-yaml write them: js-yaml's values wherever it reads one", () => {
    const seen = { fast: 0, slow: 0 };
    withPropertySeed('block front vs js-yaml', (seed) =>
      fc.assert(
        fc.property(written, (text) => compare(text, seen)),
        { numRuns: 1500, seed },
      ),
    );
    // Many generated texts are block YAML the front reads; a test it could pass by refusing all is no test.
    assert.ok(seen.fast > 300, JSON.stringify(seen));
  });

  it('the same texts with random edits (indentation, comments, indicators, quotes, tabs): never a different value', () => {
    const seen = { fast: 0, slow: 0 };
    withPropertySeed('edited block front vs js-yaml', (seed) =>
      fc.assert(
        fc.property(written, fc.array(edit, { minLength: 1, maxLength: 4 }), (text, edits) =>
          compare(edits.reduce(applyEdit, text), seen),
        ),
        { numRuns: 3000, seed },
      ),
    );
    assert.ok(seen.fast > 120, JSON.stringify(seen));
  });

  it('hand-picked cases: documents, implicit types of keys and values, compact and same-indent sequences', () => {
    const seen = { fast: 0, slow: 0 };
    const cases = [
      '',
      '\n',
      '---\n',
      '# only a comment\n',
      'a: 1\n---\n',
      '---\na: 1',
      'a: 1\n---\n---\nb: 2\n',
      'a: 1\n# c\n---\n# d\n',
      'a:\n',
      'a:\n- 1\n- 2\nb: 3\n',
      'a: {}\nb: []\n',
      'a: 10.0.0.1\nb: 80\nc: true\nd: null\ne: 2024-01-01\nf: 0x1F\ng: .inf\nh: -.inf\ni: .nan\nj: 1e3\n',
      'a: 0o17\nb: 017\nc: +12\nd: -0\ne: 1_000\nf: 0b11\ng: 12:30\nh: ~\ni: Null\nj: TRUE\nk: yes\n',
      '0x1F: a\n~: b\n.nan: c\ntrue: d\n1.0: e\n-1: f\n',
      'a: x # comment\nb: \'y\' # c\nc: "z"   #c\n',
      "a: 'it''s'\nb: 'say \"hi\"'\nc: \"it's\"\nd: ''\ne: \"\"\n",
      '- a\n-\n- b: 1\n  c: 2\n- - 3\n  - 4\n',
      '- a:\n  - 1\n  b: 2\n- a:\n- 1\n',
      '-   a: 1\n    b: 2\n',
      'a:\n  b:\n    c: 1\n  d: 2\ne: 3\n',
      'a: http://x:80/y\nb: x#y\nc: b :c\nd: -b\ne: ?b\nf: :b\ng: ---\n',
      '-a: 1\na b: c d\n\'q k\': 1\n"d k": 2\n<<: m\n',
      'a: 1\n  # indented comment\nb: 2\n',
      // Left to js-yaml: errors, and what the front does not read.
      'a: 1\na: 2\n',
      '1: a\n01: b\n',
      'a: b\n  c\n',
      'a: -\n',
      'a: [1]\n',
      'a: &x 1\nb: *x\n',
      'a: !!str 1\n',
      'a: |\n  x\n',
      'a: "x\\ty"\n',
      '__proto__: 1\n',
      '  a: 1\n',
      'a: 1\n...\n',
      '%YAML 1.2\n---\na: 1\n',
      'a:\tb\n',
      'a: é\n',
      'a: 1\r\nb: 2\r\n',
    ];
    for (const text of cases) compare(text, seen);
    assert.equal(seen.fast, 23, JSON.stringify(seen));
  });

  it("reads the bench's one-Service files, the repository's YAML it can, and gives js-yaml's values for them", () => {
    const seen = { fast: 0, slow: 0 };
    const m = manifestDir('/nonexistent', 'file-yaml', 200, 5);
    for (let i = 0; i < 200; i++) compare(m.fileText(i, i % 7 === 0 ? i : undefined, 3), seen);
    assert.deepEqual(seen, { fast: 200, slow: 0 });
    for (const dir of CORPORA)
      for (const f of readdirSync(dir).filter((n) => /\.ya?ml$/.test(n)))
        compare(readFileSync(join(dir, f), 'utf8'), seen);
  });

  it('nesting: the front reads 100 levels of block collections and leaves 101 to js-yaml, which refuses them', () => {
    for (const nest of [
      (n: number) => `${Array.from({ length: n }, (_, i) => `${' '.repeat(i)}k:`).join('\n')} 1\n`,
      (n: number) => `${'- '.repeat(n)}x\n`,
      (n: number) => `${Array.from({ length: n - 1 }, (_, i) => `${' '.repeat(i)}k:`).join('\n')} {}\n`,
    ]) {
      const ok = nest(MAX_NESTING_DEPTH);
      assert.ok(parseBlockYaml(ok) !== undefined, ok);
      assert.equal(JSON.stringify(parseBlockYaml(ok)), JSON.stringify(viaJsYaml(ok)));
      const deep = nest(MAX_NESTING_DEPTH + 1);
      assert.equal(parseBlockYaml(deep), undefined);
      assert.deepEqual(parseManifestText(deep, 'deep.yaml', false), {
        error: `nested deeper than ${MAX_NESTING_DEPTH} levels`,
      });
    }
  });
});
