import fs, { constants, type BigIntStats, type Dirent, type FSWatcher } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { extname } from 'node:path';

/**
 * The file system as the manifest source sees it: list a directory, stat a path, read a regular file
 * within a size bound. `ManifestFs` is the seam tests use to count what is read (nodeManifestFs is
 * the real one); everything above it works on names and stamps only.
 *
 * Calls go through fs callbacks on libuv's thread pool (a read that hangs never blocks the event
 * loop), not fs/promises' FileHandle, which costs the main thread three times as much per call
 * (10k files: ~0.35 s against ~0.8 s).
 */

/** `ino:size:mtimeNs:ctimeNs` of a file: what changes when it does (also when replaced by rename). */
export type Stamp = string;

export type FileKind =
  'file' | 'directory' | 'fifo' | 'character device' | 'block device' | 'socket' | 'other';

export interface FileStat {
  readonly kind: FileKind;
  readonly stamp: Stamp;
  readonly size: number;
  readonly mtimeMs: number;
}

export interface ListedFile {
  readonly name: string;
  /** A regular file when listed (not a symlink: those are followed by stat). */
  readonly regular: boolean;
  /** A symbolic link: its target can change without an event for its name. */
  readonly symlink: boolean;
}

export type ReadResult =
  | { readonly text: string; readonly stamp: Stamp }
  | { readonly error: string; readonly stamp?: Stamp }
  | { readonly directory: true }
  /** It changed while it was read (it is being written): read it again later. */
  | { readonly changed: true };

export interface ManifestFs {
  /** The manifest files of a directory (*.yaml, *.yml, *.json, not hidden, not directories). */
  list(dir: string): Promise<ListedFile[]>;
  /** stat(2), following symlinks. Rejects as fs does (ENOENT …). */
  stat(path: string): Promise<FileStat>;
  /**
   * The text of a regular file (a symlink is followed), at most `maxBytes`, with the stamp of what
   * was read. `listedRegular`: a listing just said it is one, so the stat before the open is left
   * out (the open is non-blocking and its fstat checks again).
   */
  read(path: string, maxBytes: number, listedRegular?: boolean): Promise<ReadResult>;
  /** Watches a directory, as watchDirectory (the default); tests make it fail. */
  watch?(dir: string, onEvent: (event: string, name: string | null) => void): FSWatcher;
}

export const MANIFEST_EXTENSIONS: ReadonlySet<string> = new Set(['.yaml', '.yml', '.json']);

/** Whether a directory entry's name is one the source reads. */
export function isManifestName(name: string): boolean {
  return !name.startsWith('.') && MANIFEST_EXTENSIONS.has(extname(name).toLowerCase());
}

function kindOf(st: BigIntStats): FileKind {
  if (st.isFile()) return 'file';
  if (st.isDirectory()) return 'directory';
  if (st.isFIFO()) return 'fifo';
  if (st.isCharacterDevice()) return 'character device';
  if (st.isBlockDevice()) return 'block device';
  if (st.isSocket()) return 'socket';
  return 'other';
}

const stampOf = (st: BigIntStats): Stamp => `${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;

export function fileStat(st: BigIntStats): FileStat {
  return { kind: kindOf(st), stamp: stampOf(st), size: Number(st.size), mtimeMs: Number(st.mtimeMs) };
}

/** Why a file of this kind is not read. */
export function notRegular(kind: FileKind): string {
  const what = kind === 'fifo' ? 'a FIFO' : kind === 'other' ? 'not a regular file' : `a ${kind}`;
  return `${what}: only regular files are read`;
}

const OPEN_FLAGS = constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY;

const call = <T>(f: (done: (err: NodeJS.ErrnoException | null, value: T) => void) => void): Promise<T> =>
  new Promise((resolve, reject) => f((err, value) => (err ? reject(err) : resolve(value))));

const statCall = (path: string): Promise<BigIntStats> =>
  call((done) => fs.stat(path, { bigint: true }, done));
const fstatCall = (fd: number): Promise<BigIntStats> => call((done) => fs.fstat(fd, { bigint: true }, done));

/**
 * Reads a regular file. Anything else (a FIFO would block the read forever, /dev/zero never ends,
 * opening a device can act on it) is refused before it is opened; the open is non-blocking and
 * re-checked, in case the file was swapped meanwhile. A file whose stamp after the read differs from
 * the one before, or that is longer than its stat said, is being written.
 */
async function readRegular(path: string, maxBytes: number, listedRegular: boolean): Promise<ReadResult> {
  if (!listedRegular) {
    const st = fileStat(await statCall(path));
    if (st.kind === 'directory') return { directory: true };
    if (st.kind !== 'file') return { error: notRegular(st.kind), stamp: st.stamp };
    if (st.size > maxBytes) return { error: `larger than ${maxBytes} bytes (${st.size})`, stamp: st.stamp };
  }
  const fd = await call<number>((done) => fs.open(path, OPEN_FLAGS, done));
  try {
    const opened = fileStat(await fstatCall(fd));
    if (opened.kind === 'directory') return { directory: true };
    if (opened.kind !== 'file') return { error: notRegular(opened.kind), stamp: opened.stamp };
    if (opened.size > maxBytes) {
      return { error: `larger than ${maxBytes} bytes (${opened.size})`, stamp: opened.stamp };
    }
    // One byte more than the stat said: a longer file is being written. Never past the bound.
    const buf = Buffer.allocUnsafe(opened.size + 1);
    let length = 0;
    for (;;) {
      const n = await call<number>((done) => fs.read(fd, buf, length, buf.length - length, null, done));
      if (n === 0) break;
      length += n;
      if (length === buf.length) {
        return length > maxBytes
          ? { error: `larger than ${maxBytes} bytes (grew while read)`, stamp: opened.stamp }
          : { changed: true };
      }
      // Everything the stat announced: the stamp after says whether the file moved meanwhile.
      if (length === opened.size) break;
    }
    if (stampOf(await fstatCall(fd)) !== opened.stamp) return { changed: true };
    return { text: buf.toString('utf8', 0, length), stamp: opened.stamp };
  } finally {
    await call<void>((done) => fs.close(fd, done));
  }
}

const listed = (e: Dirent): ListedFile => ({
  name: e.name,
  regular: e.isFile(),
  symlink: e.isSymbolicLink(),
});

export const nodeManifestFs: ManifestFs = {
  async list(dir) {
    const entries = await readdir(dir, { withFileTypes: true });
    return entries.filter((e) => !e.isDirectory() && isManifestName(e.name)).map(listed);
  },
  async stat(path) {
    return fileStat(await statCall(path));
  },
  read: (path, maxBytes, listedRegular = false) => readRegular(path, maxBytes, listedRegular),
};

/** Watches a directory (fs.watch, not keeping the process alive). Throws as fs.watch does. */
export function watchDirectory(
  dir: string,
  onEvent: (event: string, name: string | null) => void,
): FSWatcher {
  return fs.watch(dir, { persistent: false }, onEvent);
}

/**
 * The text of a regular file (a symlink is followed), at most `maxBytes`, or why it is not read;
 * directories (also through a symlink) are skipped like the ones a listing leaves out.
 */
export async function readRegularFile(
  file: string,
  maxBytes: number,
): Promise<{ text: string } | { error: string } | { directory: true }> {
  const r = await readRegular(file, maxBytes, false);
  if ('text' in r) return { text: r.text };
  if ('error' in r) return { error: r.error };
  if ('changed' in r) return { error: 'changed while it was read' };
  return r;
}
