import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync, unlinkSync, mkdirSync, renameSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadManifestObjects, ManifestSource } from '../../../src/kube/manifests.js';
import type { ClusterState } from '../../../src/model/types.js';

const svcYaml = (name: string, ip: string, port = 80): string => `apiVersion: v1
kind: Service
metadata: { name: ${name}, namespace: default }
spec:
  clusterIP: ${ip}
  ports: [{ port: ${port} }]
`;

function waitFor(src: ManifestSource, pred: (s: ClusterState) => boolean, ms = 5000): Promise<ClusterState> {
  return new Promise((resolve, reject) => {
    const cur = src.current();
    if (cur && pred(cur)) return resolve(cur);
    const timer = setTimeout(() => {
      off();
      reject(
        new Error(`timed out; last state: ${JSON.stringify([...(src.current()?.services.keys() ?? [])])}`),
      );
    }, ms);
    const off = src.onChange((s) => {
      if (pred(s)) {
        clearTimeout(timer);
        off();
        resolve(s);
      }
    });
  });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('manifest source', () => {
  let dir: string;
  let source: ManifestSource | undefined;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'svcplane-manifests-'));
  });
  afterEach(async () => {
    await source?.stop();
    source = undefined;
    rmSync(dir, { recursive: true, force: true });
  });

  describe('loadManifestObjects', () => {
    it('reads *.yaml, *.yml and *.json in sorted order, multi-document, Lists flattened', async () => {
      writeFileSync(
        join(dir, 'b.yaml'),
        `${svcYaml('b1', '10.96.0.2')}---\n---\n${svcYaml('b2', '10.96.0.3')}`,
      );
      writeFileSync(
        join(dir, 'a.json'),
        JSON.stringify({
          apiVersion: 'v1',
          kind: 'List',
          items: [{ apiVersion: 'v1', kind: 'Service', metadata: { name: 'a' } }],
        }),
      );
      writeFileSync(join(dir, 'c.yml'), svcYaml('c', '10.96.0.4'));
      writeFileSync(join(dir, 'ignored.txt'), 'not: yaml: at: all');
      mkdirSync(join(dir, 'sub.yaml'));
      const { objects, problems } = await loadManifestObjects(dir);
      assert.deepEqual(problems, []);
      assert.deepEqual(
        objects.map((o) => o.source),
        ['a.json#0.items[0]', 'b.yaml#0', 'b.yaml#2', 'c.yml#0'],
      );
    });

    it('reports an unparsable file as a File problem and still reads the others', async () => {
      writeFileSync(join(dir, 'bad.yaml'), 'a: [\n');
      writeFileSync(join(dir, 'bad.json'), '{"a":');
      writeFileSync(join(dir, 'good.yaml'), svcYaml('good', '10.96.0.2'));
      const { objects, problems } = await loadManifestObjects(dir);
      assert.equal(objects.length, 1);
      assert.deepEqual(
        problems.map((p) => [p.object.kind, p.object.name]),
        [
          ['File', 'bad.json'],
          ['File', 'bad.yaml'],
        ],
      );
    });

    it('accepts an empty directory and a single file; rejects a missing path', async () => {
      assert.deepEqual(await loadManifestObjects(dir), { objects: [], problems: [] });
      writeFileSync(join(dir, 'one.yaml'), svcYaml('one', '10.96.0.2'));
      assert.equal((await loadManifestObjects(join(dir, 'one.yaml'))).objects.length, 1);
      await assert.rejects(loadManifestObjects(join(dir, 'nope')), /manifest path .*nope.*ENOENT/);
    });

    it('bounds YAML alias expansion', async () => {
      const lines = ['a: &a [x, x, x, x, x, x, x, x, x, x]'];
      for (let i = 0; i < 12; i++)
        lines.push(
          `${String.fromCharCode(98 + i)}: &${String.fromCharCode(98 + i)} [${Array(10)
            .fill(`*${String.fromCharCode(97 + i)}`)
            .join(', ')}]`,
        );
      writeFileSync(join(dir, 'bomb.yaml'), lines.join('\n'));
      const { problems } = await loadManifestObjects(dir);
      assert.equal(problems[0]?.object.kind, 'File');
    });
  });

  describe('ManifestSource', () => {
    it('starts with the current files and rejects a missing path', async () => {
      writeFileSync(join(dir, 'a.yaml'), svcYaml('a', '10.96.0.2'));
      source = new ManifestSource(dir, { debounceMs: 20, pollMs: 50 });
      await source.start();
      assert.deepEqual([...source.current()!.services.keys()], ['default/a']);
      assert.deepEqual(source.health(), { healthy: true });
      await assert.rejects(new ManifestSource(join(dir, 'missing')).start(), /ENOENT/);
    });

    it('follows create, modify and delete, emitting only on change', async () => {
      source = new ManifestSource(dir, { debounceMs: 20, pollMs: 50 });
      await source.start();
      assert.equal(source.current()!.services.size, 0);
      let emitted = 0;
      source.onChange(() => emitted++);

      writeFileSync(join(dir, 'a.yaml'), svcYaml('a', '10.96.0.2'));
      await waitFor(source, (s) => s.services.has('default/a'));
      const first = source.current()!;

      writeFileSync(join(dir, 'b.yaml'), svcYaml('b', '10.96.0.3'));
      const second = await waitFor(source, (s) => s.services.has('default/b'));
      assert.equal(
        second.services.get('default/a'),
        first.services.get('default/a'),
        'unchanged Service keeps identity',
      );

      writeFileSync(join(dir, 'a.yaml'), svcYaml('a', '10.96.0.2', 81));
      await waitFor(source, (s) => s.services.get('default/a')?.ports[0]?.port === 81);

      unlinkSync(join(dir, 'a.yaml'));
      await waitFor(source, (s) => !s.services.has('default/a') && s.services.has('default/b'));
      const before = emitted;
      // Rewriting identical content is not a change.
      writeFileSync(join(dir, 'b.yaml'), svcYaml('b', '10.96.0.3'));
      await sleep(300);
      assert.equal(emitted, before);
    });

    it('keeps the last good content of a broken file and reports it', async () => {
      writeFileSync(join(dir, 'a.yaml'), svcYaml('a', '10.96.0.2'));
      writeFileSync(join(dir, 'b.yaml'), svcYaml('b', '10.96.0.3'));
      source = new ManifestSource(dir, { debounceMs: 20, pollMs: 50 });
      await source.start();
      writeFileSync(join(dir, 'a.yaml'), 'apiVersion: v1\nkind: Service\nmetadata: { name: a\n');
      const s = await waitFor(source, (st) => st.problems.some((p) => p.object.kind === 'File'));
      assert.deepEqual([...s.services.keys()], ['default/a', 'default/b']);
      assert.match(s.problems[0]!.reason, /keeping its last good content/);
      writeFileSync(join(dir, 'a.yaml'), svcYaml('a', '10.96.0.9'));
      const fixed = await waitFor(source, (st) => st.problems.length === 0);
      assert.deepEqual(fixed.services.get('default/a')?.clusterIPs, ['10.96.0.9']);
    });

    it('keeps the last state and reports unhealthy when the directory disappears', async () => {
      const sub = join(dir, 'm');
      mkdirSync(sub);
      writeFileSync(join(sub, 'a.yaml'), svcYaml('a', '10.96.0.2'));
      source = new ManifestSource(sub, { debounceMs: 20, pollMs: 50 });
      await source.start();
      renameSync(sub, join(dir, 'moved'));
      for (let i = 0; i < 100 && source.health().healthy; i++) await sleep(20);
      assert.equal(source.health().healthy, false);
      assert.match(source.health().reason ?? '', /missing/);
      assert.ok(source.current()!.services.has('default/a'));
      // It comes back: healthy again, and changes are followed.
      renameSync(join(dir, 'moved'), sub);
      writeFileSync(join(sub, 'b.yaml'), svcYaml('b', '10.96.0.3'));
      await waitFor(source, (s) => s.services.has('default/b'));
      assert.equal(source.health().healthy, true);
    });

    it('watches a single file replaced by rename (as editors do)', async () => {
      const file = join(dir, 'one.yaml');
      writeFileSync(file, svcYaml('a', '10.96.0.2'));
      source = new ManifestSource(file, { debounceMs: 20, pollMs: 50 });
      await source.start();
      writeFileSync(join(dir, 'tmp'), svcYaml('z', '10.96.0.3'));
      renameSync(join(dir, 'tmp'), file);
      await waitFor(source, (s) => s.services.has('default/z') && !s.services.has('default/a'));
    });

    it('includes model problems after file problems', async () => {
      writeFileSync(join(dir, 'a.yaml'), svcYaml('a', '10.96.0.300'));
      writeFileSync(join(dir, 'z.yaml'), '{{{');
      source = new ManifestSource(dir, { debounceMs: 20, pollMs: 50 });
      await source.start();
      assert.deepEqual(
        source.current()!.problems.map((p) => `${p.object.kind}:${p.field}`),
        ['File:', 'Service:spec.clusterIP'],
      );
    });
  });
});
