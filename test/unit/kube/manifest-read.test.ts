import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { nodeManifestFs, type ManifestFs, type ReadRequest } from '../../../src/kube/manifest-files.js';
import { MAX_MANIFEST_FILE_BYTES } from '../../../src/kube/manifest-limits.js';
import { readManifestFiles, type FileRead } from '../../../src/kube/manifest-read.js';
import { run } from '../../../src/util/exec.js';
import { skipBecause } from '../../support/skip.js';

/**
 * Many files are read on a reader thread (ManifestFs.readMany, synchronous reads in batches), few
 * one by one through libuv's pool: both give the same outcome for every kind of file, and a thread
 * that fails leaves the rest to the pool.
 */

const isRoot = process.getuid?.() === 0;

/** Every request's outcome, by path; fails on a path reported twice. */
async function readAll(
  requests: readonly ReadRequest[],
  opts: { fs?: ManifestFs; threadFrom?: number },
): Promise<Map<string, FileRead>> {
  const got = new Map<string, FileRead>();
  await readManifestFiles(
    requests,
    (req, read) => {
      assert.ok(!got.has(req.path), `${req.path} reported twice`);
      got.set(req.path, read);
    },
    opts,
  );
  return got;
}

describe('manifest reads: reader thread and libuv pool', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'svcplane-read-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  /** Regular files (600 of them: more than two batches) and every kind the reads refuse or fail on. */
  async function hostileDir(): Promise<ReadRequest[]> {
    const requests: ReadRequest[] = [];
    for (let i = 0; i < 600; i++) {
      const name = `svc-${String(i).padStart(4, '0')}.yaml`;
      writeFileSync(join(dir, name), `kind: Service\nmetadata:\n  name: s${i}\n`);
      requests.push({ path: join(dir, name), listedRegular: i % 2 === 0 });
    }
    writeFileSync(join(dir, 'bad.yaml'), 'a: [\n');
    symlinkSync('/dev/zero', join(dir, 'zero.yaml'));
    mkdirSync(join(dir, 'sub'));
    symlinkSync(join(dir, 'sub'), join(dir, 'dir.yaml'));
    symlinkSync(join(dir, 'nowhere'), join(dir, 'dangling.yaml'));
    writeFileSync(join(dir, 'big.yaml'), '');
    truncateSync(join(dir, 'big.yaml'), MAX_MANIFEST_FILE_BYTES + 1);
    for (const name of ['bad.yaml', 'zero.yaml', 'dir.yaml', 'dangling.yaml', 'big.yaml'])
      requests.push({ path: join(dir, name), listedRegular: false });
    // Listed as regular, gone before the read.
    requests.push({ path: join(dir, 'gone.yaml'), listedRegular: true });
    if (isRoot) {
      await run(['mkfifo', join(dir, 'fifo.yaml')]);
      requests.push({ path: join(dir, 'fifo.yaml'), listedRegular: false });
    }
    return requests;
  }

  it('the same outcome for every file, whichever way it is read; the thread reads in batches', async () => {
    const requests = await hostileDir();
    const batches: number[] = [];
    const counted: ManifestFs = {
      ...nodeManifestFs,
      readMany: (reqs, max, each) =>
        nodeManifestFs.readMany!(reqs, max, (from, outcomes) => {
          batches.push(outcomes.length);
          each(from, outcomes);
        }),
    };
    const thread = await readAll(requests, { fs: counted, threadFrom: 1 });
    const pool = await readAll(requests, { threadFrom: Infinity });
    assert.equal(thread.size, requests.length);
    assert.deepEqual(thread, pool);
    assert.ok(batches.length >= 3 && batches.every((n) => n <= 256), `batches ${batches.join(',')}`);
    const at = (name: string): FileRead => thread.get(join(dir, name))!;
    const svc = at('svc-0001.yaml');
    assert.ok('content' in svc && 'objects' in svc.content);
    assert.deepEqual(at('zero.yaml'), {
      content: { error: 'a character device: only regular files are read' },
      stamp: (at('zero.yaml') as { stamp: string }).stamp,
    });
    assert.deepEqual(at('dir.yaml'), { directory: true });
    assert.deepEqual(at('dangling.yaml'), { failed: 'ENOENT' });
    assert.deepEqual(at('gone.yaml'), { failed: 'ENOENT' });
    const big = at('big.yaml');
    assert.ok('content' in big && 'error' in big.content && /^larger than/.test(big.content.error));
    const bad = at('bad.yaml');
    assert.ok('content' in bad && 'error' in bad.content && /^invalid YAML/.test(bad.content.error));
  });

  it('a FIFO is refused on the thread without being opened', async function () {
    if (!isRoot) skipBecause(this, 'mkfifo in a test directory is done as root here');
    await run(['mkfifo', join(dir, 'fifo.yaml')]);
    const got = await readAll([{ path: join(dir, 'fifo.yaml'), listedRegular: false }], { threadFrom: 1 });
    const fifo = got.get(join(dir, 'fifo.yaml'))!;
    assert.ok('content' in fifo && 'error' in fifo.content);
    assert.equal(fifo.content.error, 'a FIFO: only regular files are read');
  });

  it('a thread that fails after some batches: the rest is read one by one, each file once', async () => {
    const requests = await hostileDir();
    let perFile = 0;
    const failing: ManifestFs = {
      ...nodeManifestFs,
      read: (path, max, listed) => {
        perFile++;
        return nodeManifestFs.read(path, max, listed);
      },
      readMany: async (reqs, max, each) => {
        let batches = 0;
        await nodeManifestFs.readMany!(reqs, max, (from, outcomes) => {
          if (++batches > 1) throw new Error('thread died');
          each(from, outcomes);
        });
      },
    };
    const got = await readAll(requests, { fs: failing, threadFrom: 1 });
    assert.deepEqual(got, await readAll(requests, { threadFrom: Infinity }));
    assert.equal(perFile, requests.length - 256);
  });

  it('an error thrown by the caller for a result is its error, not a reason to read again', async () => {
    const requests = await hostileDir();
    await assert.rejects(
      readManifestFiles(
        requests,
        () => {
          throw new Error('caller failed');
        },
        { threadFrom: 1 },
      ),
      /caller failed/,
    );
  });
});
