import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { nodeObject, serviceName, serviceObjects } from './cluster.js';

/**
 * The bench's cluster (bench/cluster.ts) written as a manifest directory, in one of two layouts:
 * - `list-json`: 100 Services per JSON `List` file (svc-0000.json …), as the bench always did;
 * - `file-yaml`: one YAML file per Service, the Service and its EndpointSlice as two documents
 *   (svc-000000.yaml …), as a GitOps repository lays them out.
 * Both with the Node in 00-node.(json|yaml). `fileOf(i)` and `fileText` rewrite the file of Service i
 * with one endpoint changed (generation > 0), as the latency runs do.
 */

export type Layout = 'list-json' | 'file-yaml';
export const LAYOUTS: readonly Layout[] = ['list-json', 'file-yaml'];

const PER_LIST_FILE = 100;

export interface ManifestDir {
  readonly dir: string;
  readonly layout: Layout;
  readonly services: number;
  readonly files: number;
  readonly bytes: number;
  /** Path of the file holding Service i. */
  fileOf(i: number): string;
  /** That file's text, with Service `changed` at `generation` (the others at 0). */
  fileText(i: number, changed?: number, generation?: number): string;
}

export function manifestDir(dir: string, layout: Layout, services: number, endpoints: number): ManifestDir {
  if (layout === 'list-json') {
    return {
      dir,
      layout,
      services,
      files: Math.ceil(services / PER_LIST_FILE) + 1,
      bytes: 0,
      fileOf: (i) => join(dir, `svc-${String(Math.floor(i / PER_LIST_FILE)).padStart(4, '0')}.json`),
      fileText: (i, changed, generation = 0) => {
        const f = Math.floor(i / PER_LIST_FILE);
        const items: unknown[] = [];
        for (let s = f * PER_LIST_FILE; s < Math.min(services, (f + 1) * PER_LIST_FILE); s++) {
          items.push(...serviceObjects(s, endpoints, s === changed ? generation : 0));
        }
        return JSON.stringify({ apiVersion: 'v1', kind: 'List', items });
      },
    };
  }
  return {
    dir,
    layout,
    services,
    files: services + 1,
    bytes: 0,
    fileOf: (i) => join(dir, `${serviceName(i)}.yaml`),
    fileText: (i, changed, generation = 0) =>
      serviceObjects(i, endpoints, i === changed ? generation : 0)
        .map((o) => stringify(o))
        .join('---\n'),
  };
}

/** Writes the whole directory (created if needed); returns it with its size. */
export async function writeManifestDir(
  dir: string,
  layout: Layout,
  services: number,
  endpoints: number,
): Promise<ManifestDir> {
  await mkdir(dir, { recursive: true });
  const m = manifestDir(dir, layout, services, endpoints);
  const node = layout === 'list-json' ? JSON.stringify(nodeObject()) : stringify(nodeObject());
  let bytes = node.length;
  await writeFile(join(dir, layout === 'list-json' ? '00-node.json' : '00-node.yaml'), node);
  const step = layout === 'list-json' ? PER_LIST_FILE : 1;
  for (let i = 0; i < services; i += step) {
    const text = m.fileText(i);
    bytes += text.length;
    await writeFile(m.fileOf(i), text);
  }
  return { ...m, bytes };
}
