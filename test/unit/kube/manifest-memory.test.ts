import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { getHeapSpaceStatistics } from 'node:v8';
import { nodeManifestFs, type ManifestFs } from '../../../src/kube/manifest-files.js';
import { ManifestSource } from '../../../src/kube/manifests.js';
import { liveHeapBytes } from '../../support/gc.js';

/**
 * Memory of the manifest source (issue 14): a file's raw objects are validated into the state as the
 * file is read and let go, so a load never holds every file's raw objects at once and a watching
 * source keeps only the validated models. Each file here carries an annotation of NOTE_BYTES that no
 * model keeps (FILES × NOTE_BYTES = 12 MB of raw objects); the live heap, after full collections,
 * is measured through the ManifestFs seam in the middle of the load and after it.
 */

const FILES = 200;
const NOTE_BYTES = 60_000;
/** The read at which the live heap is measured: at least MEASURE_AT - 32 (the reads in flight) files are in. */
const MEASURE_AT = 180;
/**
 * What the validated models may take, and the texts of the reads in flight (up to 32 × NOTE_BYTES).
 * Holding the raw objects is ≥ (MEASURE_AT - 32) × NOTE_BYTES = 8.9 MB in the load, 12 MB after it.
 */
const ALLOWED = 4 * 1024 * 1024;

/** A Service and its slice; `note`: the annotation no model keeps. */
const file = (i: number, name = `s${i}`, note = true, net = 0): string => `apiVersion: v1
kind: Service
metadata:
  name: ${name}
  namespace: default
${note ? `  annotations:\n    note: ${String(i).padStart(4, '0')}${'abcdefgh'.repeat(NOTE_BYTES / 8)}\n` : ''}spec:
  clusterIP: 10.96.${net}.${i + 1}
  ports:
    - name: http
      port: 80
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: ${name}-1
  namespace: default
  labels:
    kubernetes.io/service-name: ${name}
addressType: IPv4
ports:
  - name: http
    port: 8080
endpoints:
  - addresses: [10.244.${net}.${i + 1}]
`;

const mb = (bytes: number): string => `${(bytes / 1024 / 1024).toFixed(1)} MB`;

describe('manifest source memory: raw objects are let go file by file (issue 14)', function () {
  this.timeout(60_000);
  let root: string;
  let source: ManifestSource | undefined;

  beforeEach(() => {
    root = mkdtempSync(join(tmpdir(), 'svcplane-mem-'));
    for (let i = 0; i < FILES; i++) writeFileSync(join(root, `s${i}.yaml`), file(i));
  });
  afterEach(async () => {
    await source?.stop();
    source = undefined;
    rmSync(root, { recursive: true, force: true });
  });

  for (const readOnce of [false, true]) {
    it(`${readOnce ? 'readOnce (svcplane sync)' : 'a watching source (the daemon)'}: the live heap in the middle of the load and after it holds no file's raw objects`, async () => {
      // Everything the load compiles and caches once, before the baseline.
      const warm = new ManifestSource(join(root, 's0.yaml'), { readOnce: true });
      await warm.start();
      await warm.stop();
      const baseline = await liveHeapBytes();
      let reads = 0;
      let during: number | undefined;
      const fs: ManifestFs = {
        list: (dir) => nodeManifestFs.list(dir),
        stat: (path) => nodeManifestFs.stat(path),
        read: async (path, max, listed) => {
          if (++reads === MEASURE_AT) during = await liveHeapBytes();
          return nodeManifestFs.read(path, max, listed);
        },
      };
      source = new ManifestSource(root, { fs, readOnce, pollMs: 60_000 });
      await source.start();
      const state = source.current()!;
      assert.equal(state.services.size, FILES);
      assert.deepEqual(state.problems, []);
      assert.deepEqual(
        state.services.get('default/s7')?.ports[0]?.endpoints.map((e) => e.ip),
        ['10.244.0.8'],
      );
      const after = await liveHeapBytes();
      assert.ok(during !== undefined);
      const inLoad = during - baseline;
      const kept = after - baseline;
      assert.ok(
        inLoad < ALLOWED,
        `in the middle of the load: ${mb(inLoad)} more live heap (raw objects held)`,
      );
      assert.ok(kept < ALLOWED, `after the load: ${mb(kept)} more live heap (raw objects kept)`);
    });
  }

  it('a large first load is followed by a memory-reducing collection: the young generation is given back', async () => {
    // 3,000 Services and their slices, 20 objects per file.
    for (let f = 0; f < 300; f++) {
      const docs = Array.from({ length: 10 }, (_, j) =>
        file(j + 10 * (f % 25), `big${f * 10 + j}`, false, 100 + Math.floor(f / 25)),
      );
      writeFileSync(join(root, `big${f}.yaml`), docs.join('---\n'));
    }
    const newSpace = (): number =>
      getHeapSpaceStatistics().find((s) => s.space_name === 'new_space')!.space_size;
    source = new ManifestSource(root, { readOnce: true });
    await source.start();
    const committed = newSpace();
    assert.equal(source.current()!.services.size, FILES + 3000);
    assert.deepEqual(source.current()!.problems, []);
    assert.ok(committed <= 2 * 1024 * 1024, `young generation after the load: ${mb(committed)} committed`);
  });
});
