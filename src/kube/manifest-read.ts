import { basename, extname } from 'node:path';
import {
  failureText,
  nodeManifestFs,
  type ManifestFs,
  type ReadOutcome,
  type ReadRequest,
  type Stamp,
} from './manifest-files.js';
import { MAX_MANIFEST_FILE_BYTES } from './manifest-limits.js';
import { parseManifestText, type FileContent } from './manifest-parse.js';

/**
 * Manifest files to their contents: read (manifest-files.ts) and parsed (manifest-parse.ts). Many
 * files at once (READ_THREAD_FROM or more: a start, a rescan) are read by a reader thread in batches
 * (ManifestFs.readMany), parsed here as each batch comes while the thread reads the next; fewer (a
 * change) one by one through libuv's pool, a bounded number at a time.
 *
 * Measured (10k one-Service YAML files, 12 MB, 2 shared cores): through the pool the reads cost
 * ~0.6 s of event-loop time (0.7 s CPU), on the reader thread 0.19 s CPU. Reader threads that also
 * parsed (the objects sent back by structured clone) were tried before: the command took as long
 * (2.0–3.0 s against 2.8–2.9 s; serializing the objects costs the time the threads save) and its
 * peak RSS grew by 55–110 MB, against a 250 MB target; texts cost a copy of the file's bytes.
 */

/** What reading one file gave: its objects or why not, with the stamp of what was read. */
export type FileRead =
  | { readonly content: FileContent; readonly stamp: Stamp }
  | { readonly directory: true }
  | { readonly changed: true }
  /** The read itself failed (ENOENT after the listing, EACCES, EIO …). */
  | { readonly failed: string };

export type { ReadRequest };

/**
 * From this many files on, a read goes through the reader thread (ManifestFs.readMany). The thread
 * saves a cost per file (the pool's calls and promises), not per byte, and costs memory while it
 * runs: 10k one-Service files gain (0.7 → 0.19 s CPU); 101 files of 100 Services (list-json at 10k)
 * do not (1.30 → 1.19–1.23 s CPU for the load, its peak RSS 190–203 → 215–217 MB, 00:56).
 */
export const READ_THREAD_FROM = 512;

function contentOf(path: string, r: ReadOutcome): FileRead {
  if ('directory' in r || 'changed' in r || 'failed' in r) return r;
  if ('error' in r) return { content: { error: r.error }, stamp: r.stamp ?? '' };
  const content = parseManifestText(r.text, basename(path), extname(path).toLowerCase() === '.json');
  return { content, stamp: r.stamp };
}

/** Reads and parses one file on this thread, asynchronously. */
export async function readManifestFile(fs: ManifestFs, req: ReadRequest): Promise<FileRead> {
  try {
    return contentOf(req.path, await fs.read(req.path, MAX_MANIFEST_FILE_BYTES, req.listedRegular));
  } catch (err) {
    return { failed: failureText(err) };
  }
}

/**
 * Reads and parses `requests`, calling `each` with every result as it comes (in no particular
 * order); resolves once all came. `threadFrom` or more requests go through `fs.readMany` when it has
 * one (what it could not read is read one by one after); otherwise at most `concurrency` at once.
 */
export async function readManifestFiles(
  requests: readonly ReadRequest[],
  each: (req: ReadRequest, read: FileRead) => void,
  opts: { readonly fs?: ManifestFs; readonly concurrency?: number; readonly threadFrom?: number } = {},
): Promise<void> {
  const fs = opts.fs ?? nodeManifestFs;
  let left = requests;
  if (fs.readMany && requests.length >= (opts.threadFrom ?? READ_THREAD_FROM)) {
    const done = new Uint8Array(requests.length);
    let failedEach: { err: unknown } | undefined;
    try {
      await fs.readMany(requests, MAX_MANIFEST_FILE_BYTES, (from, outcomes) => {
        outcomes.forEach((outcome, i) => {
          const req = requests[from + i]!;
          done[from + i] = 1;
          try {
            each(req, contentOf(req.path, outcome));
          } catch (err) {
            failedEach = { err };
            throw err;
          }
        });
      });
      return;
    } catch (err) {
      if (failedEach) throw err;
      // The thread could not start or died: the rest one by one.
      left = requests.filter((_, i) => done[i] === 0);
    }
  }
  let next = 0;
  const one = async (): Promise<void> => {
    while (next < left.length) {
      const req = left[next++]!;
      each(req, await readManifestFile(fs, req));
    }
  };
  await Promise.all(Array.from({ length: Math.min(opts.concurrency ?? 32, left.length) }, one));
}
