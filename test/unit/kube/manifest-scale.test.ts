import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { nodeManifestFs, watchDirectory, type ManifestFs } from '../../../src/kube/manifest-files.js';
import { ManifestSource } from '../../../src/kube/manifests.js';
import type { ClusterState } from '../../../src/model/types.js';

/**
 * The manifest source at scale (issue 14): a change costs O(changed files). An injected file system
 * counts every read, stat and listing by file name, so each test says exactly what was touched.
 */

const FILES = 400;

const svc = (i: number, port = 80): string => `apiVersion: v1
kind: Service
metadata:
  name: s${i}
  namespace: default
spec:
  clusterIP: 10.96.${Math.floor(i / 200)}.${(i % 200) + 1}
  ports:
    - port: ${port}
`;

class CountingFs implements ManifestFs {
  reads = new Map<string, number>();
  stats = new Map<string, number>();
  lists = 0;
  /** The watch cannot be armed (as when inotify's limits are reached). */
  watchFails = false;
  /** The watch is armed but its events are lost (as when inotify's queue overflows). */
  dropEvents = false;
  reset(): void {
    this.reads.clear();
    this.stats.clear();
    this.lists = 0;
  }
  private static bump(m: Map<string, number>, path: string): void {
    m.set(basename(path), (m.get(basename(path)) ?? 0) + 1);
  }
  list: ManifestFs['list'] = (dir) => {
    this.lists++;
    return nodeManifestFs.list(dir);
  };
  stat: ManifestFs['stat'] = (path) => {
    CountingFs.bump(this.stats, path);
    return nodeManifestFs.stat(path);
  };
  /** Called once a read is done, before the reader sees its result. */
  afterRead: ((path: string) => void) | undefined;
  read: ManifestFs['read'] = async (path, max, listed) => {
    CountingFs.bump(this.reads, path);
    const r = await nodeManifestFs.read(path, max, listed);
    this.afterRead?.(path);
    return r;
  };
  watch: ManifestFs['watch'] = (dir, onEvent) => {
    if (this.watchFails) throw Object.assign(new Error('ENOSPC: inotify watches'), { code: 'ENOSPC' });
    return watchDirectory(dir, (event, name) => {
      if (!this.dropEvents) onEvent(event, name);
    });
  };
  /** Files (not the directory itself) stat'ed. */
  fileStats(dir: string): number {
    return [...this.stats].filter(([name]) => name !== basename(dir)).reduce((n, [, c]) => n + c, 0);
  }
}

function waitFor(
  src: ManifestSource,
  pred: (s: ClusterState) => boolean,
  ms = 10_000,
): Promise<ClusterState> {
  return new Promise((resolve, reject) => {
    const cur = src.current();
    if (cur && pred(cur)) return resolve(cur);
    const timer = setTimeout(() => {
      off();
      reject(new Error(`timed out; ${src.current()?.services.size} services`));
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
const portOf = (s: ClusterState, i: number): number | undefined =>
  s.services.get(`default/s${i}`)?.ports[0]?.port;

describe('manifest source at scale: O(changed files) per change', function () {
  this.timeout(30_000);
  let root: string;
  let dir: string;
  let fs: CountingFs;
  let source: ManifestSource | undefined;

  beforeEach(() => {
    root = mkdtempSync(join(tmpdir(), 'svcplane-scale-'));
    dir = join(root, 'manifests');
    mkdirSync(dir);
    for (let i = 0; i < FILES; i++) writeFileSync(join(dir, `s${i}.yaml`), svc(i));
    fs = new CountingFs();
  });
  afterEach(async () => {
    await source?.stop();
    source = undefined;
    rmSync(root, { recursive: true, force: true });
  });

  /** Long poll and sweep: only watch events can explain what is read. */
  async function start(opts: { pollMs?: number; sweepMs?: number; debounceMs?: number } = {}): Promise<void> {
    source = new ManifestSource(dir, {
      fs,
      debounceMs: opts.debounceMs ?? 50,
      pollMs: opts.pollMs ?? 60_000,
      sweepMs: opts.sweepMs ?? 600_000,
    });
    await source.start();
    assert.equal(source.current()!.services.size, FILES);
    assert.equal(fs.reads.size, FILES, 'the start reads every file once');
    assert.ok([...fs.reads.values()].every((n) => n === 1));
    fs.reset();
  }

  /** Writes `text` to a hidden temporary file and renames it over `name` (atomic, as GitOps tools do). */
  function replace(name: string, text: string): void {
    const tmp = join(dir, `.${name}.tmp`);
    writeFileSync(tmp, text);
    renameSync(tmp, join(dir, name));
  }

  it('a file replaced by rename is read, and no other', async () => {
    await start();
    replace('s7.yaml', svc(7, 81));
    await waitFor(source!, (s) => portOf(s, 7) === 81);
    assert.deepEqual([...fs.reads], [['s7.yaml', 1]]);
    assert.ok(fs.fileStats(dir) <= 2, `files stat'ed: ${JSON.stringify([...fs.stats])}`);
    assert.equal(fs.lists, 0);
  });

  it('a renamed file is read while the rename settles; written to right after, that read is not used', async () => {
    await start({ debounceMs: 300 });
    const states: number[] = [];
    source!.onChange((s) => states.push(portOf(s, 5) ?? 0));
    // Renamed over s5.yaml, then written in place right after the read made at the rename (which
    // thus holds the renamed content): that read must never be published; the write's settle decides.
    fs.afterRead = (path) => {
      fs.afterRead = undefined;
      writeFileSync(path, svc(5, 84));
    };
    const tmp = join(dir, '.s5.yaml.tmp');
    writeFileSync(tmp, svc(5, 83));
    renameSync(tmp, join(dir, 's5.yaml'));
    await waitFor(source!, (s) => portOf(s, 5) === 84);
    assert.deepEqual(states, [84], 'every state published');
    assert.equal(fs.reads.get('s5.yaml'), 2, 'read at the rename (not used), then once settled');
  });

  it('a file written in place is read once it settled, and no other', async () => {
    await start();
    writeFileSync(join(dir, 's9.yaml'), svc(9, 82));
    await waitFor(source!, (s) => portOf(s, 9) === 82);
    assert.deepEqual([...fs.reads], [['s9.yaml', 1]]);
    assert.deepEqual(
      [...fs.stats.keys()].filter((n) => n !== basename(dir)),
      ['s9.yaml'],
    );
  });

  it('new, deleted and renamed files in a large directory are picked up, reading only those', async () => {
    await start();
    writeFileSync(join(dir, 'new.yaml'), svc(FILES + 1));
    unlinkSync(join(dir, 's3.yaml'));
    renameSync(join(dir, 's4.yaml'), join(dir, 'moved-s4.yml'));
    const s = await waitFor(
      source!,
      (st) => st.services.has(`default/s${FILES + 1}`) && !st.services.has('default/s3'),
    );
    for (let i = 0; i < 100 && !fs.reads.has('moved-s4.yml'); i++) await sleep(20);
    // s4 moved to another name: still there, now from its new file.
    assert.ok(source!.current()!.services.has('default/s4'));
    assert.equal(s.services.size, FILES);
    assert.deepEqual([...fs.reads.keys()].sort(), ['moved-s4.yml', 'new.yaml']);
    assert.deepEqual([...fs.stats.keys()].filter((n) => n !== basename(dir)).sort(), [
      'moved-s4.yml',
      'new.yaml',
      's3.yaml',
      's4.yaml',
    ]);
  });

  /** Polls (stats of the directory itself) and file stats over `ms` of idle. */
  async function idleFor(ms: number): Promise<{ polls: number; perPoll: number }> {
    fs.reset();
    await sleep(ms);
    assert.equal(fs.reads.size, 0, 'nothing changed: nothing read');
    assert.equal(fs.lists, 0, 'the directory did not change: not listed');
    const polls = fs.stats.get(basename(dir)) ?? 0;
    return { polls, perPoll: fs.fileStats(dir) / polls };
  }

  it(`idle, watched, default sweep: each file is stat'ed once per 10 min, a few per poll, nothing read`, async () => {
    // The default sweep (no sweepMs): at 10k files and 1 s polls, 17 stats a second (was 167 with
    // a 60 s sweep, and at least 100 per poll whatever the size: 6,000 a minute at 101 files).
    source = new ManifestSource(dir, { fs, debounceMs: 50, pollMs: 300 });
    await source.start();
    const { polls, perPoll } = await idleFor(1600);
    assert.ok(polls >= 3 && polls <= 6, `${polls} polls`);
    // ceil(400 files × 300 ms / 600 s) = 1.
    assert.equal(perPoll, 1, `${perPoll} of ${FILES} files stat'ed per poll`);
  });

  it(`idle, the watch cannot be armed: each file is stat'ed once a minute, and a write in place is found`, async () => {
    fs.watchFails = true;
    source = new ManifestSource(dir, { fs, debounceMs: 50, pollMs: 300 });
    await source.start();
    const { polls, perPoll } = await idleFor(1600);
    assert.ok(polls >= 3 && polls <= 6, `${polls} polls`);
    // ceil(400 × 300 ms / 60 s) = 2: the 10 min default does not apply without a watch.
    assert.equal(perPoll, 2, `${perPoll} of ${FILES} files stat'ed per poll`);
    await source.stop();
    // A small directory, to see the sweep find the write quickly (5 files, 20 ms polls: 0.1 s).
    rmSync(dir, { recursive: true });
    mkdirSync(dir);
    for (let i = 0; i < 5; i++) writeFileSync(join(dir, `s${i}.yaml`), svc(i));
    source = new ManifestSource(dir, { fs, debounceMs: 50, pollMs: 20 });
    await source.start();
    fs.reset();
    writeFileSync(join(dir, 's2.yaml'), svc(2, 84));
    await waitFor(source, (s) => portOf(s, 2) === 84);
    assert.deepEqual([...fs.reads], [['s2.yaml', 1]]);
  });

  it('a write that raises no event (through a hard link elsewhere) is found by the sweep', async () => {
    const outside = join(root, 'outside.yaml');
    writeFileSync(outside, svc(11));
    unlinkSync(join(dir, 's11.yaml'));
    // A hard link: writes through the other name raise no event in the watched directory.
    await import('node:fs').then((f) => f.linkSync(outside, join(dir, 's11.yaml')));
    await start({ pollMs: 20, sweepMs: 200 });
    writeFileSync(outside, svc(11, 83));
    await waitFor(source!, (s) => portOf(s, 11) === 83);
    assert.deepEqual([...fs.reads], [['s11.yaml', 1]]);
  });

  it('events lost (inotify overflow): a file renamed over another is found by the directory mtime, not the 10 min sweep', async () => {
    fs.dropEvents = true;
    await start({ pollMs: 50 });
    replace('s7.yaml', svc(7, 85));
    // Two polls see the directory modified after the last event: every file is looked at once.
    await waitFor(source!, (s) => portOf(s, 7) === 85, 5000);
    assert.deepEqual([...fs.reads], [['s7.yaml', 1]]);
    // Then quiet again: no file stat'ed beyond the sweep's share (1 per poll at 400 files).
    fs.reset();
    await sleep(500);
    assert.ok(fs.fileStats(dir) <= 12, `files stat'ed while quiet: ${fs.fileStats(dir)}`);
  });

  it('a ConfigMap volume (symlinks into ..data, swapped by rename) is re-read through its links', async () => {
    // What kubelet writes: ..2026_1/<files>, ..data -> ..2026_1, <file> -> ..data/<file>.
    rmSync(dir, { recursive: true });
    mkdirSync(dir);
    mkdirSync(join(dir, '..v1'));
    for (let i = 0; i < 20; i++) {
      writeFileSync(join(dir, '..v1', `s${i}.yaml`), svc(i));
      symlinkSync(join('..data', `s${i}.yaml`), join(dir, `s${i}.yaml`));
    }
    symlinkSync('..v1', join(dir, '..data'));
    source = new ManifestSource(dir, { fs, debounceMs: 50, pollMs: 60_000, sweepMs: 600_000 });
    await source.start();
    assert.equal(source.current()!.services.size, 20);
    fs.reset();
    mkdirSync(join(dir, '..v2'));
    for (let i = 0; i < 20; i++) writeFileSync(join(dir, '..v2', `s${i}.yaml`), svc(i, i === 5 ? 90 : 80));
    symlinkSync('..v2', join(dir, '..data_tmp'));
    renameSync(join(dir, '..data_tmp'), join(dir, '..data'));
    await waitFor(source, (s) => portOf(s, 5) === 90);
    assert.equal(fs.reads.size, 20, 'every link re-read (its target changed)');
  });

  it('readOnce (svcplane sync): one read of each file, then nothing is watched or polled', async () => {
    source = new ManifestSource(dir, { fs, readOnce: true, debounceMs: 10, pollMs: 10 });
    await source.start();
    assert.equal(source.current()!.services.size, FILES);
    assert.equal(fs.reads.size, FILES);
    fs.reset();
    replace('s1.yaml', svc(1, 99));
    await sleep(200);
    assert.equal(fs.reads.size + fs.stats.size + fs.lists, 0, 'nothing looked at after the start');
    assert.equal(portOf(source.current()!, 1), 80, 'the state read at the start stays');
  });
});
