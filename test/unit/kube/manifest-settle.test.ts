import assert from 'node:assert/strict';
import { linkSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ManifestSource } from '../../../src/kube/manifests.js';
import type { ClusterState } from '../../../src/model/types.js';

/**
 * Files being written never produce a half state, and a burst of changes is one state (debounce).
 * Every state the source publishes is recorded (onChange), so "never" is checked on all of them.
 *
 * The writer rewrites a multi-document file of eight Services (port 80 → 81) in pieces with short
 * pauses: at document boundaries (every piece leaves a valid but truncated file) and in small byte
 * chunks (mostly invalid YAML in between). Seen through the directory watch, the debounce keeps the
 * source from reading until the writer is quiet; seen only by the stat poll (writes through another
 * path to the same file: no watch event for the directory, as for writes on NFS), the settle check
 * (a file modified less than the debounce ago is left for the next round) does.
 */

const NAMES = ['s1', 's2', 's3', 's4', 's5', 's6', 's7', 's8'];
const doc = (name: string, i: number, port: number): string =>
  `apiVersion: v1\nkind: Service\nmetadata: { name: ${name}, namespace: default }\nspec:\n  clusterIP: 10.96.7.${i + 1}\n  ports: [{ port: ${port} }]\n`;
const docs = (port: number): string[] => NAMES.map((n, i) => (i ? '---\n' : '') + doc(n, i, port));

/** "8×80", "8×81", "2×81" …: the Services of a state and their ports. */
function shape(s: ClusterState): string {
  const ports = [...s.services.values()].map((svc) => svc.ports[0]?.port ?? 0);
  const same = ports.every((p) => p === ports[0]);
  return same ? `${ports.length}×${ports[0] ?? '-'}` : ports.join(',');
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Truncates `path` (same inode) and writes `pieces` one by one, `pauseMs` apart. */
async function slowWrite(path: string, pieces: readonly string[], pauseMs: number): Promise<void> {
  const fh = await open(path, 'w');
  try {
    for (const [i, piece] of pieces.entries()) {
      if (i) await sleep(pauseMs);
      await fh.write(piece);
    }
  } finally {
    await fh.close();
  }
}

function chunks(text: string, size: number): string[] {
  const out: string[] = [];
  for (let i = 0; i < text.length; i += size) out.push(text.slice(i, i + size));
  return out;
}

describe('manifest source: no half state from files being written; bursts coalesce', function () {
  this.timeout(20_000);
  let root: string;
  let dir: string;
  let source: ManifestSource | undefined;
  let states: string[];

  beforeEach(() => {
    root = mkdtempSync(join(tmpdir(), 'svcplane-settle-'));
    dir = join(root, 'manifests');
    mkdirSync(dir);
    states = [];
  });
  afterEach(async () => {
    await source?.stop();
    source = undefined;
    rmSync(root, { recursive: true, force: true });
  });

  /** Every file is stat'ed at every poll (sweepMs = pollMs): the stat poll tests rely on it. */
  async function start(debounceMs: number, pollMs: number): Promise<void> {
    source = new ManifestSource(dir, { debounceMs, pollMs, sweepMs: pollMs });
    await source.start();
    source.onChange((s) => states.push(shape(s)));
  }

  /** Resolves once the source published a state of `want` shape. */
  function reaches(want: string, ms = 10_000): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`never reached ${want}; states: ${states.join(' ')}`)),
        ms,
      );
      const off = source!.onChange((s) => {
        if (shape(s) === want) {
          clearTimeout(timer);
          off();
          resolve();
        }
      });
    });
  }

  for (const [how, pieces] of [
    ['at document boundaries (valid, truncated)', docs(81)],
    ['in 40-byte chunks (mostly invalid)', chunks(docs(81).join(''), 40)],
  ] as const) {
    it(`watched directory: a file rewritten ${how} with pauses under the debounce is read once, whole`, async () => {
      const file = join(dir, 'all.yaml');
      writeFileSync(file, docs(80).join(''));
      // Pauses of 40 ms against a 400 ms debounce: a tenfold margin for a loaded machine.
      await start(400, 5000);
      assert.equal(shape(source!.current()!), '8×80');
      const done = reaches('8×81');
      await slowWrite(file, pieces, 40);
      await done;
      assert.deepEqual(states, ['8×81'], 'every state the source published');
    });

    it(`stat poll only (no watch event): a file rewritten ${how} is not read until it settled`, async () => {
      // The manifest is a hard link to a file outside the watched directory; writes through the other
      // name change the inode (size, mtime) but raise no event on the directory. The poll sees them.
      const side = join(root, 'writer');
      mkdirSync(side);
      writeFileSync(join(side, 'all.yaml'), docs(80).join(''));
      linkSync(join(side, 'all.yaml'), join(dir, 'all.yaml'));
      await start(600, 100);
      assert.equal(shape(source!.current()!), '8×80');
      const done = reaches('8×81');
      // ~1 s of writing: the poll notices the change several times while the file is still moving.
      await slowWrite(join(side, 'all.yaml'), pieces, how.startsWith('at') ? 150 : 60);
      await done;
      assert.deepEqual(states, ['8×81'], 'every state the source published');
    });
  }

  it('a burst of five new files, 30 ms apart, is one published state (debounced), with all five', async () => {
    await start(500, 5000);
    const done = reaches('5×80');
    for (let i = 0; i < 5; i++) {
      if (i) await sleep(30);
      writeFileSync(join(dir, `s${i}.yaml`), doc(`b${i}`, 10 + i, 80));
    }
    await done;
    assert.deepEqual(states, ['5×80']);
  });
});
