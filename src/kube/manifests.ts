import { constants, watch, type FSWatcher, type Stats } from 'node:fs';
import { open, readdir, stat } from 'node:fs/promises';
import { basename, dirname, extname, join } from 'node:path';
import { Composer, LineCounter, Parser } from 'yaml';
import { buildClusterState, flattenLists, type SourceObject } from '../model/build.js';
import type { ServiceLimits } from '../model/limits.js';
import type { ClusterState, Problem } from '../model/types.js';
import { deepEqual } from '../model/validate.js';
import { log } from '../util/log.js';
import {
  jsonNestingDepth,
  MAX_MANIFEST_FILE_BYTES,
  MAX_NESTING_DEPTH,
  MIN_EXPANSION_BUDGET,
  measureValue,
  yamlNestingDepth,
} from './manifest-limits.js';
import type { SourceHealth, StateSource } from './source.js';

/**
 * Manifest files as a state source: a file or a directory of *.yaml, *.yml and *.json (not recursive),
 * multi-document YAML, JSON, Lists. A file that cannot be read or parsed is a problem (kind "File") and
 * its last good content stays in effect, so a half-written or broken file never shrinks the state.
 */

const EXTENSIONS = new Set(['.yaml', '.yml', '.json']);
/** Bounds alias expansion per anchor in the `yaml` package itself; valueShapeProblem bounds the total. */
const MAX_ALIAS_COUNT = 1000;

const fileProblem = (file: string, reason: string): Problem => ({
  object: { kind: 'File', name: basename(file), source: file },
  field: '',
  reason,
});

const errorText = (err: unknown): string =>
  err instanceof Error ? ((err as NodeJS.ErrnoException).code ?? err.message) : String(err);

/** One file's objects, or why it cannot be used. */
type FileContent = { objects: SourceObject[] } | { error: string };

/** Parses one file's text into source objects (`name.yaml#<document index>`), or a reason it cannot be used. */
export function parseManifestText(text: string, label: string, json: boolean): FileContent {
  const values = json ? parseJsonDocuments(text) : parseYamlDocuments(text);
  if ('error' in values) return values;
  const objects: SourceObject[] = [];
  values.docs.forEach((obj, i) => {
    // Empty documents (a trailing "---", comments only) are not objects.
    if (obj !== null && obj !== undefined) objects.push({ obj, source: `${label}#${i}` });
  });
  return { objects };
}

/** A JSON file: one value, or an array of them (as kubectl accepts). */
function parseJsonDocuments(text: string): { docs: unknown[] } | { error: string } {
  // JSON has no aliases: only the depth can be out of bounds (JSON.parse itself does not recurse,
  // but whatever walks the value later might).
  if (jsonNestingDepth(text) > MAX_NESTING_DEPTH)
    return { error: `nested deeper than ${MAX_NESTING_DEPTH} levels` };
  let value: unknown;
  try {
    value = JSON.parse(text) as unknown;
  } catch (err) {
    return { error: `invalid JSON: ${err instanceof Error ? err.message : String(err)}` };
  }
  return { docs: Array.isArray(value) ? (value as unknown[]) : [value] };
}

/**
 * Multi-document YAML. The concrete syntax tree is built (without recursion) and its nesting bounded
 * before it is composed into objects, which recurses.
 */
function parseYamlDocuments(text: string): { docs: unknown[] } | { error: string } {
  const lines = new LineCounter();
  const tokens = Array.from(new Parser(lines.addNewLine).parse(text));
  if (yamlNestingDepth(tokens) > MAX_NESTING_DEPTH) {
    return { error: `nested deeper than ${MAX_NESTING_DEPTH} levels` };
  }
  const docs: unknown[] = [];
  let budget = Math.max(MIN_EXPANSION_BUDGET, text.length);
  // Without a `*` there is no alias: the syntax tree's depth is the objects' depth.
  const aliases = text.includes('*');
  for (const [i, doc] of Array.from(new Composer().compose(tokens)).entries()) {
    const err = doc.errors[0];
    if (err) {
      const { line, col } = lines.linePos(err.pos[0]);
      const where = line > 0 ? ` at line ${line}, column ${col}` : '';
      return { error: `invalid YAML in document ${i}: ${err.message.split('\n')[0] ?? ''}${where}` };
    }
    let value: unknown;
    try {
      value = doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT }) as unknown;
    } catch (e) {
      return { error: `invalid YAML in document ${i}: ${e instanceof Error ? e.message : String(e)}` };
    }
    // Aliases share values, so the objects may be bigger and deeper than the text shows.
    if (aliases) {
      const shape = measureValue(value, budget);
      if ('problem' in shape) return { error: `document ${i}: ${shape.problem}` };
      budget -= shape.values;
    }
    docs.push(value);
  }
  return { docs };
}

/** The manifest files under `path` (a file, or a directory's *.yaml/*.yml/*.json, sorted). */
async function listFiles(path: string): Promise<string[]> {
  const st = await stat(path);
  if (!st.isDirectory()) return [path];
  const entries = await readdir(path, { withFileTypes: true });
  return entries
    .filter(
      (e) => !e.isDirectory() && !e.name.startsWith('.') && EXTENSIONS.has(extname(e.name).toLowerCase()),
    )
    .map((e) => e.name)
    .sort()
    .map((name) => join(path, name));
}

/** A change detector for one file: inode, size and nanosecond times. */
async function fingerprint(file: string): Promise<string | undefined> {
  try {
    const st = await stat(file, { bigint: true });
    return `${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
  } catch {
    return undefined;
  }
}

function fileType(st: Stats): string {
  if (st.isFIFO()) return 'a FIFO';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  if (st.isSocket()) return 'a socket';
  return 'not a regular file';
}

/**
 * The text of a regular file (a symlink is followed), at most `maxBytes`. Anything else (a FIFO
 * would block the read forever, /dev/zero never ends, opening a device can act on it) is refused
 * before it is opened; the open is non-blocking and re-checked, in case the file was swapped
 * meanwhile. Directories (also through a symlink) are skipped like the ones listFiles leaves out.
 */
export async function readRegularFile(
  file: string,
  maxBytes: number,
): Promise<{ text: string } | { error: string } | { directory: true }> {
  const st = await stat(file);
  if (st.isDirectory()) return { directory: true };
  if (!st.isFile()) return { error: `${fileType(st)}: only regular files are read` };
  if (st.size > maxBytes) return { error: `larger than ${maxBytes} bytes (${st.size})` };
  const handle = await open(file, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY);
  try {
    const opened = await handle.stat();
    if (!opened.isFile()) return { error: `${fileType(opened)}: only regular files are read` };
    // Read to the end, but never past the bound: the file may have grown since the stat.
    const buf = Buffer.allocUnsafe(Math.min(opened.size, maxBytes) + 1);
    let length = 0;
    for (;;) {
      if (length === buf.length) {
        return { error: `larger than ${maxBytes} bytes (grew while read)` };
      }
      const { bytesRead } = await handle.read(buf, length, buf.length - length, null);
      if (bytesRead === 0) break;
      length += bytesRead;
    }
    return { text: buf.toString('utf8', 0, length) };
  } finally {
    await handle.close();
  }
}

async function readManifestFile(file: string): Promise<FileContent> {
  try {
    const r = await readRegularFile(file, MAX_MANIFEST_FILE_BYTES);
    if ('directory' in r) return { objects: [] };
    if ('error' in r) return r;
    return parseManifestText(r.text, basename(file), extname(file).toLowerCase() === '.json');
  } catch (err) {
    return { error: `cannot read: ${errorText(err)}` };
  }
}

/**
 * Reads every manifest under `path` once. Unreadable or unparsable files are problems; the path itself
 * missing is an error (an empty state would silently remove every Service).
 */
export async function loadManifestObjects(
  path: string,
): Promise<{ objects: SourceObject[]; problems: Problem[] }> {
  let files: string[];
  try {
    files = await listFiles(path);
  } catch (err) {
    throw new Error(`manifest path ${path}: ${errorText(err)}`, { cause: err });
  }
  const objects: SourceObject[] = [];
  const problems: Problem[] = [];
  for (const file of files) {
    const r = await readManifestFile(file);
    if ('error' in r) problems.push(fileProblem(file, r.error));
    else objects.push(...r.objects);
  }
  const flat = flattenLists(objects);
  return { objects: flat.objects, problems: [...problems, ...flat.problems] };
}

interface FileEntry {
  readonly fingerprint: string;
  /** Last good content (kept while the file is broken). */
  readonly objects: readonly SourceObject[];
  readonly problem?: Problem;
}

export interface ManifestSourceOptions {
  /** Quiet time after a change before files are read (default 200 ms). */
  readonly debounceMs?: number;
  /** Period of the stat fallback for missed watch events (default 1000 ms). */
  readonly pollMs?: number;
  /**
   * A scan running longer than this (a read hanging on a network or FUSE filesystem) makes the
   * source unhealthy until it ends (default 60 s; the daemon uses twice the sync period).
   */
  readonly stuckAfterMs?: number;
  /** Node-port range, reserved ports and rule budget applied to the Services (model defaults). */
  readonly limits?: ServiceLimits;
}

/** How long stop() waits for a scan in progress before it gives up on it. */
const STOP_WAIT_MS = 2000;

function sameState(a: ClusterState | undefined, b: ClusterState): boolean {
  if (!a || a.services.size !== b.services.size || a.nodes.size !== b.nodes.size) return false;
  for (const [k, v] of b.services) if (a.services.get(k) !== v) return false;
  for (const [k, v] of b.nodes) if (a.nodes.get(k) !== v) return false;
  return deepEqual(a.problems, b.problems);
}

export class ManifestSource implements StateSource {
  private readonly debounceMs: number;
  private readonly pollMs: number;
  private readonly stuckAfterMs: number;
  private readonly limits: ServiceLimits | undefined;
  /** Wall-clock start of the scan in progress (0 when none). */
  private scanStartedAt = 0;
  private readonly files = new Map<string, FileEntry>();
  private readonly listeners = new Set<(state: ClusterState) => void>();
  private state: ClusterState | undefined;
  private missingSince: Date | undefined;
  private listError: string | undefined;
  private watcher: FSWatcher | undefined;
  private watchedFingerprint: string | undefined;
  private debounceTimer: NodeJS.Timeout | undefined;
  private pollTimer: NodeJS.Timeout | undefined;
  private lastSeen = '';
  private scanning: Promise<void> | undefined;
  private rescanRequested = false;
  private stopped = false;
  private wakeStart: (() => void) | undefined;

  constructor(
    private readonly path: string,
    opts: ManifestSourceOptions = {},
  ) {
    this.debounceMs = opts.debounceMs ?? 200;
    this.pollMs = opts.pollMs ?? 1000;
    this.stuckAfterMs = opts.stuckAfterMs ?? 60_000;
    this.limits = opts.limits;
  }

  async start(): Promise<void> {
    this.stopped = false;
    try {
      await stat(this.path);
    } catch (err) {
      throw new Error(`manifest path ${this.path}: ${errorText(err)}`, { cause: err });
    }
    // stop() ends the wait for a first scan hanging in a read (SIGTERM at start-up).
    const stopped = new Promise<'stopped'>((resolve) => (this.wakeStart = () => resolve('stopped')));
    const first = await Promise.race([this.requestScan(false), stopped]);
    this.wakeStart = undefined;
    if (first === 'stopped' || this.stopped)
      throw new Error(`manifest source ${this.path}: stopped while starting`);
    // Watching before start() resolves: a change made right after it is seen at once, not by the poll.
    await this.ensureWatcher();
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
    clearTimeout(this.debounceTimer);
    clearInterval(this.pollTimer);
    this.watcher?.close();
    this.watcher = undefined;
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

  /** Reads changed files now, without waiting for the debounce (for tests and SIGHUP-style reloads). */
  async refresh(): Promise<void> {
    await this.requestScan(false);
  }

  private schedule(): void {
    if (this.stopped) return;
    clearTimeout(this.debounceTimer);
    this.debounceTimer = setTimeout(() => {
      this.debounceTimer = undefined;
      void this.requestScan(true);
    }, this.debounceMs);
    this.debounceTimer.unref();
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

  /** Cheap change check (stats only) for missed watch events; also re-creates a lost watcher. */
  private async poll(): Promise<void> {
    if (this.stopped || this.scanning) return;
    void this.ensureWatcher();
    // A pending debounce is not restarted: a poll faster than the debounce would postpone it forever.
    if ((await this.snapshot()) !== this.lastSeen && !this.debounceTimer) this.schedule();
  }

  private async snapshot(): Promise<string> {
    try {
      const files = await listFiles(this.path);
      const fps = await Promise.all(files.map(async (f) => `${f}=${(await fingerprint(f)) ?? '-'}`));
      return fps.join('\n');
    } catch (err) {
      return `error:${errorText(err)}`;
    }
  }

  /** (Re-)creates the watcher when the path's inode changed; resolves once it is in place. */
  private async ensureWatcher(): Promise<void> {
    if (this.stopped) return;
    const fp = await fingerprint(this.path);
    if (this.stopped) return;
    if (fp === undefined) {
      this.closeWatcher();
      return;
    }
    // The watched inode changed (path deleted and re-created): the old watcher sees nothing any more.
    if (this.watcher && this.watchedFingerprint?.split(':')[0] === fp.split(':')[0]) return;
    this.closeWatcher();
    try {
      const st = await stat(this.path);
      if (this.stopped || this.watcher) return;
      // A single file is watched through its directory: editors replace files by rename.
      const dir = st.isDirectory() ? this.path : dirname(this.path);
      const only = st.isDirectory() ? undefined : basename(this.path);
      const w = watch(dir, { persistent: false }, (_event, name) => {
        if (only === undefined || name === null || name === only) this.schedule();
      });
      w.on('error', () => this.closeWatcher());
      this.watcher = w;
      this.watchedFingerprint = fp;
    } catch {
      // Gone meanwhile: the next poll tries again.
    }
  }

  private closeWatcher(): void {
    this.watcher?.close();
    this.watcher = undefined;
    this.watchedFingerprint = undefined;
  }

  /**
   * Re-reads changed files and publishes a new state when anything changed. With `settle`, a file
   * modified less than `debounceMs` ago (or modified while being read) is left for the next round,
   * so a file still being written is not read half-way.
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
    this.lastSeen = await this.snapshot();
    let files: string[];
    try {
      files = await listFiles(this.path);
      this.missingSince = undefined;
      this.listError = undefined;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') this.missingSince ??= new Date();
      else this.listError = errorText(err);
      log.warn('manifest path unavailable; keeping the last state', {
        path: this.path,
        reason: errorText(err),
      });
      return;
    }
    let retry = false;
    const seen = new Set(files);
    for (const file of [...this.files.keys()]) if (!seen.has(file)) this.files.delete(file);
    for (const file of files) {
      const fp = await fingerprint(file);
      const cached = this.files.get(file);
      if (fp === undefined) {
        this.files.delete(file); // deleted between listing and stat
        continue;
      }
      if (cached?.fingerprint === fp) continue;
      if (settle && (await this.recentlyModified(file))) {
        retry = true;
        continue;
      }
      const r = await readManifestFile(file);
      if ((await fingerprint(file)) !== fp) {
        retry = true; // changed while we read it
        continue;
      }
      if ('error' in r) {
        const problem = fileProblem(file, `${r.error}; keeping its last good content`);
        log.warn('manifest file rejected', { file, reason: r.error });
        this.files.set(file, { fingerprint: fp, objects: cached?.objects ?? [], problem });
      } else {
        this.files.set(file, { fingerprint: fp, objects: r.objects });
      }
    }
    if (retry) this.schedule();
    this.publish(files);
  }

  private async recentlyModified(file: string): Promise<boolean> {
    try {
      const age = Date.now() - (await stat(file)).mtimeMs;
      return age >= 0 && age < this.debounceMs;
    } catch {
      return false;
    }
  }

  private publish(files: readonly string[]): void {
    const objects: SourceObject[] = [];
    const fileProblems: Problem[] = [];
    for (const file of files) {
      const entry = this.files.get(file);
      if (!entry) continue;
      objects.push(...entry.objects);
      if (entry.problem) fileProblems.push(entry.problem);
    }
    const built = buildClusterState(objects, this.state, this.limits);
    const next: ClusterState = { ...built, problems: [...fileProblems, ...built.problems] };
    if (sameState(this.state, next)) return;
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
