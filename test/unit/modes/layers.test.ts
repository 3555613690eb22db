import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { pathToFileURL } from 'node:url';
import { ESLint, type Linter } from 'eslint';
import { minimatch } from 'minimatch';
import tseslint from 'typescript-eslint';
import { packageRoot } from '../../../src/util/paths.js';

/**
 * The layers (eslint.layers.js) as the linter enforces them: every source file is in exactly one
 * layer, and an upward import (static or dynamic), an import cycle and a mode importing another
 * mode's internals or entry in a scratch tree shaped like src/ are reported by the same rules
 * `npm run lint` runs.
 */

interface LayersModule {
  readonly LAYERS: readonly { readonly name: string; readonly files: readonly string[] }[];
  layerRules(this: void, basePath: string, resolver?: { project?: string }): Linter.Config;
}

const root = packageRoot();
const layers = async (): Promise<LayersModule> =>
  (await import(pathToFileURL(join(root, 'eslint.layers.js')).href)) as LayersModule;

async function sourceFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await sourceFiles(p)));
    else if (e.name.endsWith('.ts')) out.push(relative(root, p));
  }
  return out;
}

describe('layers (eslint.layers.js)', () => {
  it('every file under src/ belongs to exactly one layer', async () => {
    const { LAYERS } = await layers();
    const wrong: string[] = [];
    for (const file of await sourceFiles(join(root, 'src'))) {
      const hits = LAYERS.filter((l) => l.files.some((g) => minimatch(file, g))).map((l) => l.name);
      if (hits.length !== 1) wrong.push(`${file}: ${hits.length === 0 ? 'no layer' : hits.join(', ')}`);
    }
    assert.deepEqual(wrong, []);
  });

  describe('a violation is caught', function () {
    this.timeout(60_000);
    let dir = '';
    before(async () => {
      dir = await mkdtemp(join(tmpdir(), 'svcp-layers-'));
      const files: Record<string, string> = {
        'tsconfig.json': JSON.stringify({
          compilerOptions: { module: 'NodeNext', moduleResolution: 'NodeNext', strict: true },
          include: ['src/**/*.ts'],
        }),
        // util → controller: upward.
        'src/util/up.ts': "import { x } from '../controller/down.js';\nexport const y = x;\n",
        'src/controller/down.ts': 'export const x = 1;\n',
        // config → cli through a dynamic import: upward.
        'src/config/lazy.ts':
          "export async function f(): Promise<number> {\n  return (await import('../cli/main.js')).m;\n}\n",
        // cli → controller: downward, allowed.
        'src/cli/main.ts': "import { x } from '../controller/down.js';\nexport const m = x;\n",
        // model ↔ model: a cycle inside one layer.
        'src/model/a.ts': "import { b } from './b.js';\nexport const a = (): number => b() + 1;\n",
        'src/model/b.ts':
          "import { a } from './a.js';\nexport const b = (): number => 0;\nexport const c = (): number => a();\n",
        // an entry (mode.ts) imported by the mode's internals: upward.
        'src/iptables/mode.ts': "import { r } from './render.js';\nexport const mode = r;\n",
        'src/iptables/render.ts':
          "export const r = 1;\nexport const back = async () => (await import('./mode.js')).mode;\n",
        // Another mode's kernel tool wrapper (names.ts): allowed.
        'src/iptables/names.ts': "export const n = 'KUBE-SERVICES';\n",
        'src/ipvs/rules.ts': "import { n } from '../iptables/names.js';\nexport const s = n;\n",
        // Another mode's internals (render.ts) and its entry (mode.ts): not allowed, same layer or not.
        'src/ipvs/leftovers.ts': "import { r } from '../iptables/render.js';\nexport const l = r;\n",
        'src/nftables/mode.ts': "import { mode } from '../iptables/mode.js';\nexport const m = mode;\n",
      };
      for (const [name, text] of Object.entries(files)) {
        await mkdir(dirname(join(dir, name)), { recursive: true });
        await writeFile(join(dir, name), text);
      }
    });
    after(async () => {
      if (dir) await rm(dir, { recursive: true, force: true });
    });

    it("upward imports (static and dynamic), a cycle and a mode reaching into another mode are errors; a downward import and another mode's tool wrapper are not", async () => {
      const { layerRules } = await layers();
      const eslint = new ESLint({
        cwd: dir,
        overrideConfigFile: true,
        overrideConfig: [
          { files: ['**/*.ts'], languageOptions: { parser: tseslint.parser } },
          layerRules(dir, { project: join(dir, 'tsconfig.json') }),
        ],
      });
      const results = await eslint.lintFiles(['src/**/*.ts']);
      const found = results
        .flatMap((r) => r.messages.map((m) => `${relative(dir, r.filePath)}: ${m.ruleId ?? m.message}`))
        .sort();
      assert.deepEqual(found, [
        'src/config/lazy.ts: import-x/no-restricted-paths',
        'src/iptables/mode.ts: import-x/no-cycle',
        'src/iptables/render.ts: import-x/no-cycle',
        'src/iptables/render.ts: import-x/no-restricted-paths',
        'src/ipvs/leftovers.ts: import-x/no-restricted-paths',
        'src/model/a.ts: import-x/no-cycle',
        'src/model/b.ts: import-x/no-cycle',
        'src/nftables/mode.ts: import-x/no-restricted-paths',
        'src/util/up.ts: import-x/no-restricted-paths',
      ]);
    });
  });
});
