import { basename, extname } from 'node:path';
import { nodeManifestFs, type ManifestFs, type ReadResult, type Stamp } from './manifest-files.js';
import { MAX_MANIFEST_FILE_BYTES } from './manifest-limits.js';
import { parseManifestText, type FileContent } from './manifest-parse.js';

/**
 * Manifest files to their contents: read (manifest-files.ts) and parsed (manifest-parse.ts), a
 * bounded number at a time.
 *
 * On the main thread, measured (10k one-Service YAML files, 12 MB, 2 shared cores): reading costs
 * ~0.6 s of event-loop time and js-yaml ~1.75 s. Reader threads (synchronous reads and parsing, the
 * objects sent back by structured clone) were tried: with one or two of them the command took as
 * long (2.0–3.0 s against 2.8–2.9 s; the cores were busy anyway, and serializing the objects costs
 * the time the threads save) and its peak RSS grew by 55–110 MB, against a 250 MB target.
 */

/** What reading one file gave: its objects or why not, with the stamp of what was read. */
export type FileRead =
  | { readonly content: FileContent; readonly stamp: Stamp }
  | { readonly directory: true }
  | { readonly changed: true }
  /** The read itself failed (ENOENT after the listing, EACCES, EIO …). */
  | { readonly failed: string };

export interface ReadRequest {
  readonly path: string;
  /** A listing just said it is a regular file (no stat before the open). */
  readonly listedRegular: boolean;
}

const errorText = (err: unknown): string =>
  err instanceof Error ? ((err as NodeJS.ErrnoException).code ?? err.message) : String(err);

function contentOf(path: string, r: ReadResult): FileRead {
  if ('directory' in r || 'changed' in r) return r;
  if ('error' in r) return { content: { error: r.error }, stamp: r.stamp ?? '' };
  const content = parseManifestText(r.text, basename(path), extname(path).toLowerCase() === '.json');
  return { content, stamp: r.stamp };
}

/** Reads and parses one file on this thread, asynchronously. */
export async function readManifestFile(fs: ManifestFs, req: ReadRequest): Promise<FileRead> {
  try {
    return contentOf(req.path, await fs.read(req.path, MAX_MANIFEST_FILE_BYTES, req.listedRegular));
  } catch (err) {
    return { failed: errorText(err) };
  }
}

/**
 * Reads and parses `requests`, at most `concurrency` at once, calling `each` with every result as it
 * comes (in no particular order); resolves once all came.
 */
export async function readManifestFiles(
  requests: readonly ReadRequest[],
  each: (req: ReadRequest, read: FileRead) => void,
  opts: { readonly fs?: ManifestFs; readonly concurrency?: number } = {},
): Promise<void> {
  const fs = opts.fs ?? nodeManifestFs;
  let next = 0;
  const one = async (): Promise<void> => {
    while (next < requests.length) {
      const req = requests[next++]!;
      each(req, await readManifestFile(fs, req));
    }
  };
  await Promise.all(Array.from({ length: Math.min(opts.concurrency ?? 32, requests.length) }, one));
}
