import type { FSWatcher } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { ClusterStateBuilder, flattenLists, type SourceObject } from '../model/build.js';
import type { ServiceLimits } from '../model/limits.js';
import type { ClusterState, Problem } from '../model/types.js';
import { log } from '../util/log.js';
import { releaseMemory } from '../util/memory.js';
import {
  isManifestName,
  nodeManifestFs,
  notRegular,
  readRegularFile,
  type FileStat,
  type ListedFile,
  type ManifestFs,
  type Stamp,
  watchDirectory,
} from './manifest-files.js';
import { parseManifestText } from './manifest-parse.js';
import { readManifestFile, readManifestFiles, type FileRead, type ReadRequest } from './manifest-read.js';
import type { SourceHealth, StateSource } from './source.js';

/**
 * Manifest files as a state source: a file or a directory of *.yaml, *.yml and *.json (not recursive),
 * multi-document YAML, JSON, Lists. A file that cannot be read or parsed is a problem (kind "File") and
 * its last good content stays in effect, so a half-written or broken file never shrinks the state.
 *
 * Cost per change is O(changed files) (issue 14): the directory watch names the file, and only that
 * file is stat'ed and, if its stamp changed, read and parsed. Two timers decide when:
 * - a name that was only renamed (an atomic replacement, a new file moved in) is looked at after
 *   FAST_MS: its content is complete. Unless it is gone or empty then: a deletion or a file just
 *   created and not yet written waits like an in-place write. It is read and parsed at once, while
 *   FAST_MS runs (issue 14: event-to-rules); that read is used only if no write event came for
 *   the name meanwhile and the file's stamp after FAST_MS is the one read, so the content taken is
 *   the file's after FAST_MS, as without it;
 * - a name written in place ('change' events) waits until the directory was quiet for `debounceMs`,
 *   and a file modified less than `debounceMs` ago is left for the next round, so a file still being
 *   written is never read half-way; a burst of writes is one state.
 * Events for other names (an editor's temporary file, a ConfigMap volume's `..data` swap) only make
 * the known symbolic links be looked at, whose targets may have moved.
 * The poll (every `pollMs`) is the fallback for missed events: the directory's stamp (a new or removed
 * name changes it) and, round-robin, a slice of the files so that each is stat'ed once per sweep
 * (writes through a hard link or over NFS raise no event here). The sweep is what idle costs at scale
 * (issue 14: 10k stats a minute were ~0.75% of a core), so its period depends on the watch: with the
 * directory watched, every `sweepMs` (default 10 min: only writes that raise no event wait for it);
 * without (the watch cannot be armed, e.g. inotify's limits reached), every UNWATCHED_SWEEP_MS at most,
 * since in-place writes are then found by the sweep alone. Nothing else lists or stats every file
 * after the start, except refresh() and a re-created watcher (events may have been missed).
 */

export { parseManifestText, readRegularFile };

/**
 * A first load of at least this many objects is followed by a memory-reducing collection
 * (util/memory.ts): below it, the load's garbage is a few MB and the collection not worth its time.
 */
const RELEASE_AFTER_OBJECTS = 5000;
/** How long a renamed name waits for a following write event before it is read. */
const FAST_MS = 5;
/** Files read and parsed at once while scanning (fs calls run on libuv's thread pool). */
const READ_CONCURRENCY = 32;
/** Default sweep period while the directory is watched. */
const SWEEP_MS = 600_000;
/** The sweep period at most while the directory is not watched (every in-place write waits for it). */
const UNWATCHED_SWEEP_MS = 60_000;

const fileProblem = (file: string, reason: string): Problem => ({
  object: { kind: 'File', name: basename(file), source: file },
  field: '',
  reason,
});

const errorText = (err: unknown): string =>
  err instanceof Error ? ((err as NodeJS.ErrnoException).code ?? err.message) : String(err);

const isGone = (err: unknown): boolean => {
  const code = (err as NodeJS.ErrnoException).code;
  return code === 'ENOENT' || code === 'ENOTDIR';
};

/** Runs `fn` over `items`, at most `limit` at once; resolves when all did. */
async function eachLimited<T>(
  items: readonly T[],
  limit: number,
  fn: (item: T) => Promise<void>,
): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) await fn(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

/** The directory to list and, for a single-file path, the one name in it. */
async function listing(fs: ManifestFs, path: string): Promise<{ dir: string; files: ListedFile[] }> {
  const st = await fs.stat(path);
  if (st.kind === 'directory') return { dir: path, files: await fs.list(path) };
  return {
    dir: dirname(path),
    files: [{ name: basename(path), regular: st.kind === 'file', symlink: false }],
  };
}

/**
 * Reads every manifest under `path` once. Unreadable or unparsable files are problems; the path itself
 * missing is an error (an empty state would silently remove every Service).
 */
export async function loadManifestObjects(
  path: string,
  fs: ManifestFs = nodeManifestFs,
): Promise<{ objects: SourceObject[]; problems: Problem[] }> {
  let found: { dir: string; files: ListedFile[] };
  try {
    found = await listing(fs, path);
  } catch (err) {
    throw new Error(`manifest path ${path}: ${errorText(err)}`, { cause: err });
  }
  const files = [...found.files].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const requests = files.map((f) => ({ path: join(found.dir, f.name), listedRegular: f.regular }));
  const results = new Map<string, FileRead>();
  await readManifestFiles(requests, (req, read) => results.set(req.path, read), { fs });
  const objects: SourceObject[] = [];
  const problems: Problem[] = [];
  for (const { path: file } of requests) {
    const r = results.get(file)!;
    if ('directory' in r) continue;
    if ('changed' in r) problems.push(fileProblem(file, 'changed while it was read'));
    else if ('failed' in r) problems.push(fileProblem(file, `cannot read: ${r.failed}`));
    else if ('error' in r.content) problems.push(fileProblem(file, r.content.error));
    else objects.push(...r.content.objects);
  }
  const flat = flattenLists(objects);
  return { objects: flat.objects, problems: [...problems, ...flat.problems] };
}

/**
 * What is kept of a file: its stamp and how to look at it again. Its objects are in the builder, as
 * validated models only (its group): the raw objects are let go once validated (issue 14: memory).
 */
interface FileEntry {
  /** Stamp of the file as last read (or refused). */
  readonly stamp: Stamp;
  /** Listed as a symbolic link: its target may change without an event for its name. */
  readonly symlink: boolean;
}

/** When a name is looked at: after FAST_MS (renamed), or once the directory is quiet (written in place). */
type Urgency = 'fast' | 'quiet';

export interface ManifestSourceOptions {
  /** Quiet time after an in-place write before files are read (default 200 ms). */
  readonly debounceMs?: number;
  /** Period of the fallback for missed watch events: the directory's stamp, a slice of the files (default 1000 ms). */
  readonly pollMs?: number;
  /**
   * Every file is stat'ed once per sweep by the poll: the bound for a write that raises no watch
   * event (default 10 min; at most 60 s while the directory cannot be watched).
   */
  readonly sweepMs?: number;
  /**
   * A scan running longer than this (a read hanging on a network or FUSE filesystem) makes the
   * source unhealthy until it ends (default 60 s; the daemon uses twice the sync period).
   */
  readonly stuckAfterMs?: number;
  /** Node-port range, reserved ports and rule budget applied to the Services (model defaults). */
  readonly limits?: ServiceLimits;
  /** The file system (tests count what is read). */
  readonly fs?: ManifestFs;
  /**
   * Read the files once (`svcplane sync`, `diff`): no watch, no poll, and once the state is built
   * the files' objects are let go, and with them the model's caches keyed by them (issue 14: ~40 MB
   * of a 10k sync's peak).
   */
  readonly readOnce?: boolean;
}

/** How long stop() waits for a scan in progress before it gives up on it. */
const STOP_WAIT_MS = 2000;

export class ManifestSource implements StateSource {
  private readonly debounceMs: number;
  private readonly fastMs: number;
  private readonly pollMs: number;
  private readonly sweepMs: number;
  private readonly stuckAfterMs: number;
  private readonly limits: ServiceLimits | undefined;
  private readonly fs: ManifestFs;
  private readonly readOnce: boolean;
  /** Wall-clock start of the scan in progress (0 when none). */
  private scanStartedAt = 0;
  /** The directory read (the path, or a single file's directory) and that file's name. */
  private dir: string;
  private only: string | undefined;
  /** Known manifest files by name. */
  private readonly files = new Map<string, FileEntry>();
  /** The state of the files' objects, one group per file: a change rebuilds what its objects touch. */
  private builder: ClusterStateBuilder;
  /** Names to look at, and how soon. */
  private readonly dirty = new Map<string, Urgency>();
  /** The next scan lists the directory and stats every file (start, refresh, missed events). */
  private rescanAll = true;
  /** The next scan lists the directory for new and removed names (its stamp changed). */
  private relist = false;
  /** The quiet timer fired: the next scan also takes the names written in place. */
  private quietDue = false;
  /** The path's stamp when it was last listed. */
  private listedStamp: Stamp | undefined;
  private sweepQueue: string[] = [];
  private readonly listeners = new Set<(state: ClusterState) => void>();
  private state: ClusterState | undefined;
  private missingSince: Date | undefined;
  private listError: string | undefined;
  private watcher: FSWatcher | undefined;
  private watchedStamp: Stamp | undefined;
  /** Wall-clock time (ms) of the last watch event, or of the watch's start. */
  private lastEventAt = 0;
  /** The watched path's mtime seen newer than the last event by the previous poll. */
  private unseenMtime: number | undefined;
  /** Why the last attempt to watch failed (logged once per reason). */
  private watchError: string | undefined;
  private quietTimer: NodeJS.Timeout | undefined;
  private fastTimer: NodeJS.Timeout | undefined;
  /** Renamed names read while FAST_MS runs (dropped by a write event for the name). */
  private readonly early = new Map<string, Promise<FileRead | undefined>>();
  private pollTimer: NodeJS.Timeout | undefined;
  private scanning: Promise<void> | undefined;
  private rescanRequested = false;
  private stopped = false;
  private wakeStart: (() => void) | undefined;

  constructor(
    private readonly path: string,
    opts: ManifestSourceOptions = {},
  ) {
    this.debounceMs = opts.debounceMs ?? 200;
    this.fastMs = Math.min(FAST_MS, this.debounceMs);
    this.pollMs = opts.pollMs ?? 1000;
    this.sweepMs = opts.sweepMs ?? SWEEP_MS;
    this.stuckAfterMs = opts.stuckAfterMs ?? 60_000;
    this.limits = opts.limits;
    this.fs = opts.fs ?? nodeManifestFs;
    this.readOnce = opts.readOnce ?? false;
    this.dir = path;
    this.builder = new ClusterStateBuilder(this.limits);
  }

  async start(): Promise<void> {
    this.stopped = false;
    try {
      await this.fs.stat(this.path);
    } catch (err) {
      throw new Error(`manifest path ${this.path}: ${errorText(err)}`, { cause: err });
    }
    // Watching before the first scan: a change made while it reads is an event, not lost.
    if (!this.readOnce) await this.ensureWatcher();
    // stop() ends the wait for a first scan hanging in a read (SIGTERM at start-up).
    const stopped = new Promise<'stopped'>((resolve) => (this.wakeStart = () => resolve('stopped')));
    this.rescanAll = true;
    const first = await Promise.race([this.requestScan(false), stopped]);
    this.wakeStart = undefined;
    if (first === 'stopped' || this.stopped)
      throw new Error(`manifest source ${this.path}: stopped while starting`);
    const loaded = this.builder.objectCount;
    if (this.readOnce) {
      this.files.clear();
      this.builder = new ClusterStateBuilder(this.limits);
    }
    // The load's garbage is collected before the first sync allocates on top of it.
    if (loaded >= RELEASE_AFTER_OBJECTS) releaseMemory();
    if (this.readOnce) return;
    this.pollTimer = setInterval(() => void this.poll(), this.pollMs);
    this.pollTimer.unref();
  }

  current(): ClusterState | undefined {
    return this.state;
  }

  onChange(listener: (state: ClusterState) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  health(): SourceHealth {
    if (this.missingSince) {
      return {
        healthy: false,
        problem: 'manifests-missing',
        reason: `manifest path ${this.path} missing since ${this.missingSince.toISOString()}; keeping the last state`,
      };
    }
    if (this.listError) {
      return {
        healthy: false,
        problem: 'manifests-unreadable',
        reason: `manifest path ${this.path}: ${this.listError}`,
      };
    }
    const scanning = this.scanStartedAt === 0 ? 0 : Date.now() - this.scanStartedAt;
    if (scanning > this.stuckAfterMs) {
      return {
        healthy: false,
        problem: 'manifests-stuck',
        reason: `reading manifest path ${this.path} stuck since ${new Date(this.scanStartedAt).toISOString()}; keeping the last state`,
      };
    }
    return { healthy: true };
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.wakeStart?.();
    clearTimeout(this.quietTimer);
    clearTimeout(this.fastTimer);
    clearInterval(this.pollTimer);
    this.early.clear();
    this.closeWatcher();
    // A read hanging in the kernel cannot be cancelled: stopping does not wait for it forever.
    if (this.scanning) {
      let timer: NodeJS.Timeout | undefined;
      const gaveUp = await Promise.race([
        this.scanning.then(() => false),
        new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), STOP_WAIT_MS))),
      ]);
      clearTimeout(timer);
      if (gaveUp) log.warn('manifest scan still running at stop; not waiting for it', { path: this.path });
    }
  }

  /** Lists and stats every file now and reads the changed ones, without waiting (tests, reloads). */
  async refresh(): Promise<void> {
    this.rescanAll = true;
    await this.requestScan(false);
  }

  /**
   * A name to look at: renamed ones soon, ones written in place once the directory is quiet. Write
   * events restart the quiet time (`restart`); the poll does not (it would postpone it forever).
   */
  private markDirty(name: string, urgency: Urgency, restart: boolean): void {
    if (this.stopped) return;
    if (urgency === 'quiet' || this.dirty.get(name) === 'quiet') {
      this.early.delete(name);
      this.dirty.set(name, 'quiet');
      this.scheduleQuiet(restart);
    } else {
      this.dirty.set(name, 'fast');
      // Read now, checked after FAST_MS (check()); a later rename of the name reads it again. A
      // burst (a ConfigMap volume's swap makes every symlink dirty) waits and reads as before.
      if (this.early.size < READ_CONCURRENCY || this.early.has(name)) {
        this.early.set(name, this.readEarly(join(this.dir, name)));
      }
      this.fastTimer ??= setTimeout(() => {
        this.fastTimer = undefined;
        void this.requestScan(true);
      }, this.fastMs).unref();
    }
  }

  /** The quiet timer: restarted by writes (`restart`), else only started when not pending. */
  private scheduleQuiet(restart: boolean): void {
    if (this.stopped || (this.quietTimer && !restart)) return;
    clearTimeout(this.quietTimer);
    this.quietTimer = setTimeout(() => {
      this.quietTimer = undefined;
      this.quietDue = true;
      void this.requestScan(true);
    }, this.debounceMs).unref();
  }

  /** Serializes scans: a request during a scan runs one more scan after it. */
  private requestScan(settle: boolean): Promise<void> {
    if (this.scanning) {
      this.rescanRequested = true;
      return this.scanning;
    }
    this.scanning = (async () => {
      try {
        do {
          this.rescanRequested = false;
          await this.scan(settle);
        } while (this.rescanRequested && !this.stopped);
      } catch (err) {
        log.error('manifest scan failed', { path: this.path, err });
      } finally {
        this.scanning = undefined;
      }
    })();
    return this.scanning;
  }

  private onWatchEvent(event: string, name: string | null): void {
    this.lastEventAt = Date.now();
    if (name === null) {
      // The platform did not say which file: look at all of them.
      this.rescanAll = true;
      this.scheduleQuiet(true);
      return;
    }
    const urgency: Urgency = event === 'rename' ? 'fast' : 'quiet';
    const ours = this.only === undefined ? isManifestName(name) : name === this.only;
    if (ours) {
      this.markDirty(name, urgency, true);
      return;
    }
    // Another name (a temporary file, a ConfigMap volume's `..data` link swapped): our symbolic
    // links may point elsewhere now.
    for (const [known, entry] of this.files) if (entry.symlink) this.markDirty(known, urgency, true);
  }

  /**
   * The fallback for missed events, every pollMs: re-creates a lost watcher, relists the directory
   * when its stamp changed, looks at every file when events were lost, and stats the next slice of
   * the sweep.
   */
  private async poll(): Promise<void> {
    if (this.stopped || this.scanning) return;
    const st = await this.ensureWatcher();
    if (this.stopped || this.scanning) return;
    if (st?.stamp !== this.listedStamp) {
      this.relist = true;
      this.scheduleQuiet(false);
    }
    if (st && this.eventsLost(st)) {
      this.rescanAll = true;
      this.scheduleQuiet(false);
    }
    await this.sweep();
  }

  /**
   * Whether the watch lost events: the watched path was modified after the last event received, and
   * still no event came one poll later. A file renamed over another name changes the directory's
   * mtime, and its event comes after that; inotify drops events when its queue overflows (a burst such
   * as a `git checkout` of thousands of files) and libuv does not report it, while a relist only sees
   * new and removed names. Without this the sweep (every `sweepMs`) would be the only bound.
   */
  private eventsLost(st: FileStat): boolean {
    if (!this.watcher || st.mtimeMs <= this.lastEventAt) {
      this.unseenMtime = undefined;
      return false;
    }
    if (this.unseenMtime !== st.mtimeMs) {
      this.unseenMtime = st.mtimeMs; // its event may still be on its way
      return false;
    }
    log.warn('manifest directory changed without a watch event (events lost); looking at every file', {
      dir: this.dir,
    });
    this.unseenMtime = undefined;
    // Seen: a clock stepped back must not make every poll a full rescan.
    this.lastEventAt = Math.max(this.lastEventAt, st.mtimeMs);
    return true;
  }

  /**
   * Stats the next files of the round-robin sweep, files × pollMs / period of them (at least one);
   * a changed stamp marks the file.
   */
  private async sweep(): Promise<void> {
    if (this.sweepQueue.length === 0) this.sweepQueue = [...this.files.keys()];
    const period = this.watcher ? this.sweepMs : Math.min(this.sweepMs, UNWATCHED_SWEEP_MS);
    const n = Math.ceil((this.files.size * this.pollMs) / Math.max(period, this.pollMs));
    const slice = this.sweepQueue.splice(0, n);
    await eachLimited(slice, READ_CONCURRENCY, async (name) => {
      const entry = this.files.get(name);
      if (!entry) return;
      let stamp: Stamp | undefined;
      try {
        stamp = (await this.fs.stat(join(this.dir, name))).stamp;
      } catch {
        stamp = undefined;
      }
      if (stamp !== entry.stamp) this.markDirty(name, 'quiet', false);
    });
  }

  /** (Re-)creates the watcher when the path's inode changed; resolves with the path's stat. */
  private async ensureWatcher(): Promise<FileStat | undefined> {
    if (this.stopped) return undefined;
    let st;
    try {
      st = await this.fs.stat(this.path);
    } catch {
      this.closeWatcher();
      return undefined;
    }
    if (this.stopped) return st;
    // The watched inode changed (path deleted and re-created): the old watcher sees nothing any more.
    const inode = (s: Stamp | undefined): string | undefined => s?.split(':')[0];
    if (this.watcher && inode(this.watchedStamp) === inode(st.stamp)) return st;
    this.closeWatcher();
    // A single file is watched through its directory: editors replace files by rename.
    const isDir = st.kind === 'directory';
    const dir = isDir ? this.path : dirname(this.path);
    this.dir = dir;
    this.only = isDir ? undefined : basename(this.path);
    try {
      const onEvent = (event: string, name: string | null): void => this.onWatchEvent(event, name);
      const w = this.fs.watch ? this.fs.watch(dir, onEvent) : watchDirectory(dir, onEvent);
      w.on('error', () => this.closeWatcher());
      this.watcher = w;
      this.watchedStamp = st.stamp;
      this.lastEventAt = Date.now();
      // Events before this one were missed: look at everything once.
      if (this.state !== undefined) {
        this.rescanAll = true;
        this.scheduleQuiet(false);
      }
      this.watchError = undefined;
    } catch (err) {
      // Gone meanwhile, or inotify's limits reached: the next poll tries again.
      const reason = errorText(err);
      if (!isGone(err) && reason !== this.watchError) {
        log.warn('cannot watch the manifest directory; the poll stats every file at least once a minute', {
          dir,
          reason,
        });
      }
      this.watchError = reason;
    }
    return st;
  }

  private closeWatcher(): void {
    this.watcher?.close();
    this.watcher = undefined;
    this.watchedStamp = undefined;
  }

  /**
   * Looks at the dirty names (all of them after a quiet period, else the renamed ones), or lists
   * and stats everything after a rescan request, reads what changed and publishes a new state when
   * anything did. With `settle`, a file written in place less than `debounceMs` ago is left for the
   * next round, so a file still being written is not read half-way.
   */
  private async scan(settle: boolean): Promise<void> {
    this.scanStartedAt = Date.now();
    try {
      await this.scanFiles(settle);
    } finally {
      this.scanStartedAt = 0;
    }
  }

  private async scanFiles(settle: boolean): Promise<void> {
    let changed = false;
    const all = this.rescanAll;
    if (all || this.relist) {
      this.rescanAll = false;
      this.relist = false;
      const wasUnavailable = this.missingSince !== undefined || this.listError !== undefined;
      const listed = await this.list();
      if (listed === undefined) return;
      for (const name of [...this.files.keys()]) {
        if (!listed.has(name)) changed = this.forget(name) || changed;
      }
      // Back after it was missing: it may be another directory, with other files of the same names.
      const statAll = all || wasUnavailable;
      for (const [name, file] of listed) {
        const known = this.files.get(name);
        if (statAll || !known) this.dirty.set(name, 'quiet');
        if (known && known.symlink !== file.symlink)
          this.files.set(name, { ...known, symlink: file.symlink });
      }
      this.listedFiles = listed;
    }
    const takeQuiet = this.quietDue || !settle;
    this.quietDue = false;
    const names: [string, Urgency][] = [];
    for (const [name, urgency] of this.dirty)
      if (takeQuiet || urgency === 'fast') names.push([name, urgency]);
    for (const [name] of names) this.dirty.delete(name);
    const reads: ReadRequest[] = [];
    await eachLimited(names, READ_CONCURRENCY, async ([name, urgency]) => {
      const r = await this.check(name, urgency, settle);
      if (r === 'changed') changed = true;
      else if (r === 'same' || r === 'later') return;
      else if ('early' in r) {
        if (this.accept(name, r.early) === 'changed') changed = true;
      } else reads.push(r);
    });
    // What changed is read and parsed.
    await readManifestFiles(
      reads,
      (req, read) => {
        if (this.accept(basename(req.path), read) === 'changed') changed = true;
      },
      { fs: this.fs },
    );
    this.listedFiles = undefined;
    // Names left for later (being written, or waiting for quiet) are never forgotten.
    if (this.dirty.size > 0) this.scheduleQuiet(false);
    if (changed || this.state === undefined) this.publish();
  }

  /** The listing of the scan in progress (regular files need no stat before they are read). */
  private listedFiles: Map<string, ListedFile> | undefined;

  /** Lists the path; on failure records why (missing, unreadable) and keeps the last state. */
  private async list(): Promise<Map<string, ListedFile> | undefined> {
    try {
      const before = (await this.fs.stat(this.path)).stamp;
      const found = await listing(this.fs, this.path);
      this.dir = found.dir;
      this.only = found.dir === this.path ? undefined : basename(this.path);
      this.listedStamp = before;
      this.missingSince = undefined;
      this.listError = undefined;
      return new Map(found.files.map((f) => [f.name, f]));
    } catch (err) {
      if (isGone(err)) this.missingSince ??= new Date();
      else this.listError = errorText(err);
      this.listedStamp = undefined;
      log.warn('manifest path unavailable; keeping the last state', {
        path: this.path,
        reason: errorText(err),
      });
      return undefined;
    }
  }

  private forget(name: string): boolean {
    if (!this.files.delete(name)) return false;
    this.builder.delete(name);
    return true;
  }

  /** A file read: its objects are validated now, while other files are still being read, and let go. */
  private remember(name: string, entry: FileEntry, objects: readonly SourceObject[]): void {
    this.files.set(name, entry);
    this.builder.set(name, objects);
  }

  /**
   * Looks at one name: unchanged stamp, nothing; gone, forgotten; changed, a request to read it.
   * 'later': to be looked at again (being written, or a renamed name that turned out gone or empty).
   */
  private async check(
    name: string,
    urgency: Urgency,
    settle: boolean,
  ): Promise<'changed' | 'same' | 'later' | ReadRequest | { early: FileRead }> {
    const file = join(this.dir, name);
    const known = this.files.get(name);
    // A renamed name's read while FAST_MS ran: used below if it read what the file holds now.
    const early = urgency === 'fast' && settle ? this.early.get(name) : undefined;
    this.early.delete(name);
    const listed = this.listedFiles?.get(name);
    const later = (): 'later' => {
      this.dirty.set(name, 'quiet');
      return 'later';
    };
    // At the start (no settling), a file just listed as regular is read at once: one open, no stat.
    const readNow = !settle && listed?.regular === true && known === undefined;
    if (!readNow) {
      let st;
      try {
        st = await this.fs.stat(file);
      } catch (err) {
        if (!isGone(err)) {
          return this.refused(name, known, file, `cannot read: ${errorText(err)}`, '');
        }
        if (urgency === 'fast' && settle) return later(); // a deletion waits like a write
        return this.forget(name) ? 'changed' : 'same';
      }
      if (st.kind === 'directory') return this.forget(name) ? 'changed' : 'same';
      if (known?.stamp === st.stamp) return 'same';
      if (st.kind !== 'file') return this.refused(name, known, file, notRegular(st.kind), st.stamp);
      if (settle && urgency === 'fast' && st.size === 0) return later();
      if (settle && urgency === 'quiet') {
        const age = Date.now() - st.mtimeMs;
        if (age >= 0 && age < this.debounceMs) return later();
      }
      if (early !== undefined) {
        const r = await early;
        if (r !== undefined && 'content' in r && r.stamp === st.stamp) return { early: r };
      }
    }
    return { path: file, listedRegular: readNow };
  }

  /** A renamed name's early read: a regular, non-empty file's content (else none: gone, being created). */
  private async readEarly(file: string): Promise<FileRead | undefined> {
    try {
      const st = await this.fs.stat(file);
      if (st.kind !== 'file' || st.size === 0) return undefined;
    } catch {
      return undefined;
    }
    return readManifestFile(this.fs, { path: file, listedRegular: true });
  }

  /** What reading a name gave: its new content, a problem, or to be looked at again. */
  private accept(name: string, r: FileRead): 'changed' | 'same' | 'later' {
    const file = join(this.dir, name);
    const known = this.files.get(name);
    if ('changed' in r) {
      this.dirty.set(name, 'quiet');
      return 'later';
    }
    if ('directory' in r) return this.forget(name) ? 'changed' : 'same';
    if ('failed' in r) return this.refused(name, known, file, `cannot read: ${r.failed}`, '');
    if ('error' in r.content) return this.refused(name, known, file, r.content.error, r.stamp);
    const symlink = this.listedFiles?.get(name)?.symlink ?? known?.symlink ?? false;
    this.remember(name, { stamp: r.stamp, symlink }, r.content.objects);
    return 'changed';
  }

  /** A file that cannot be used: a problem, and its last good content stays. */
  private refused(
    name: string,
    known: FileEntry | undefined,
    file: string,
    reason: string,
    stamp: Stamp,
  ): 'changed' {
    log.warn('manifest file rejected', { file, reason });
    const problem = fileProblem(file, `${reason}; keeping its last good content`);
    this.files.set(name, {
      stamp,
      symlink: this.listedFiles?.get(name)?.symlink ?? known?.symlink ?? false,
    });
    // The builder keeps the file's last good objects (validated) and takes the problem beside them.
    this.builder.setProblems(name, [problem]);
    return 'changed';
  }

  private publish(): void {
    // The builder returns its last state when nothing changed (a file rewritten with the same content).
    const next = this.builder.build();
    if (next === this.state) return;
    this.state = next;
    for (const listener of this.listeners) {
      try {
        listener(next);
      } catch (err) {
        log.error('manifest state listener failed', { err });
      }
    }
  }
}
