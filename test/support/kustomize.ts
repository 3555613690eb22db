import { existsSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseAllDocuments } from 'yaml';

/**
 * A small kustomize, for the tests of deploy/: neither kubectl nor kustomize installs on these
 * machines (no registry but npm's and Debian's; Debian's kubernetes-client is 1.20, whose kustomize
 * v2 predates `patches`). It renders what deploy/ uses, as kustomize v5 does, and refuses anything
 * else, so a kustomization cannot lean on a feature these tests would silently ignore:
 * - `resources`: files (multi-document YAML) and directories holding a kustomization.yaml, in order;
 * - `patches`: strategic-merge patches by `path` or inline `patch`, each applied to the object with
 *   the patch's apiVersion, kind, name and namespace (`target` is not used here and is refused);
 * - `namespace`: set on every namespaced object (and on ServiceAccount subjects of bindings, as
 *   kustomize does for subjects whose namespace was the old one or empty);
 * - `images`: `name` with `newName` and/or `newTag`, on containers and init containers.
 * Strategic merge: maps merge key by key (null deletes), lists of containers/initContainers/env/
 * volumes merge by `name`, volumeMounts by `mountPath`, ports by `containerPort`; other lists and
 * scalars are replaced (as in Kubernetes' patch strategy for these fields).
 */

export type KObject = Record<string, unknown>;

const KNOWN = new Set(['apiVersion', 'kind', 'resources', 'patches', 'namespace', 'images']);
const CLUSTER_SCOPED = new Set([
  'ClusterRole',
  'ClusterRoleBinding',
  'Namespace',
  'CustomResourceDefinition',
]);
const MERGE_KEYS: Readonly<Record<string, string>> = {
  containers: 'name',
  initContainers: 'name',
  env: 'name',
  volumes: 'name',
  volumeMounts: 'mountPath',
  ports: 'containerPort',
};

export class KustomizeError extends Error {
  constructor(
    readonly where: string,
    message: string,
  ) {
    super(`${where}: ${message}`);
    this.name = 'KustomizeError';
  }
}

const isMap = (v: unknown): v is KObject => typeof v === 'object' && v !== null && !Array.isArray(v);

function readDocuments(file: string): KObject[] {
  return parseAllDocuments(readFileSync(file, 'utf8')).flatMap((doc, i) => {
    if (doc.errors.length > 0) throw new KustomizeError(`${file} document ${i}`, doc.errors[0]!.message);
    const value = doc.toJS() as unknown;
    if (value === null || value === undefined) return [];
    if (!isMap(value)) throw new KustomizeError(`${file} document ${i}`, 'not a map');
    return [value];
  });
}

/** Strategic merge of `patch` into `base` (both left untouched). */
export function strategicMerge(base: unknown, patch: unknown, field = ''): unknown {
  if (isMap(base) && isMap(patch)) {
    const out: KObject = { ...base };
    for (const [k, v] of Object.entries(patch)) {
      if (v === null) delete out[k];
      else out[k] = k in base ? strategicMerge(base[k], v, k) : v;
    }
    return out;
  }
  const key = MERGE_KEYS[field];
  if (key !== undefined && Array.isArray(base) && Array.isArray(patch)) {
    const out = [...(base as unknown[])];
    for (const item of patch as unknown[]) {
      const at = isMap(item) ? out.findIndex((b) => isMap(b) && b[key] === item[key]) : -1;
      if (at >= 0) out[at] = strategicMerge(out[at], item);
      else out.push(item);
    }
    return out;
  }
  return patch;
}

/** apiVersion, kind, name and namespace: a patch names all four (kustomize finds no target otherwise). */
const identity = (o: KObject): string => {
  const meta = isMap(o.metadata) ? o.metadata : {};
  const ns = typeof meta.namespace === 'string' ? `${meta.namespace}/` : '';
  return `${String(o.apiVersion)} ${String(o.kind)} ${ns}${String(meta.name)}`;
};

function setImages(o: KObject, images: readonly KObject[], where: string): KObject {
  const spec = o.spec as KObject | undefined;
  const pod = ((spec?.template as KObject | undefined)?.spec ?? (o.kind === 'Pod' ? spec : undefined)) as
    KObject | undefined;
  if (!pod) return o;
  for (const field of ['containers', 'initContainers']) {
    for (const c of (pod[field] as KObject[] | undefined) ?? []) {
      const image = String(c.image);
      const m = /^([^@]+?)(?::([^:/@]+))?(@.+)?$/.exec(image)!;
      const rule = images.find((i) => i.name === m[1]);
      if (!rule) continue;
      for (const k of Object.keys(rule))
        if (!['name', 'newName', 'newTag'].includes(k))
          throw new KustomizeError(where, `images: ${k} unsupported`);
      const name = (rule.newName as string | undefined) ?? m[1]!;
      const tag = (rule.newTag as string | undefined) ?? m[2];
      c.image = `${name}${tag === undefined ? '' : `:${tag}`}${rule.newTag === undefined ? (m[3] ?? '') : ''}`;
    }
  }
  return o;
}

/** Renders the kustomization in `dir` (a directory holding kustomization.yaml) into its objects. */
export function renderKustomization(dir: string): KObject[] {
  const file = join(dir, 'kustomization.yaml');
  if (!existsSync(file)) throw new KustomizeError(dir, 'no kustomization.yaml');
  const [k] = readDocuments(file);
  if (!k) throw new KustomizeError(file, 'empty');
  for (const key of Object.keys(k)) if (!KNOWN.has(key)) throw new KustomizeError(file, `${key} unsupported`);
  if (k.kind !== 'Kustomization' || k.apiVersion !== 'kustomize.config.k8s.io/v1beta1') {
    throw new KustomizeError(file, 'not a kustomize.config.k8s.io/v1beta1 Kustomization');
  }

  let objects: KObject[] = ((k.resources as string[] | undefined) ?? []).flatMap((r) => {
    const path = resolve(dir, r);
    if (!existsSync(path)) throw new KustomizeError(file, `resource ${r} does not exist`);
    return statSync(path).isDirectory() ? renderKustomization(path) : readDocuments(path);
  });
  const seen = new Set<string>();
  for (const o of objects) {
    if (seen.has(identity(o))) throw new KustomizeError(file, `${identity(o)} twice`);
    seen.add(identity(o));
  }

  for (const [i, p] of ((k.patches as KObject[] | undefined) ?? []).entries()) {
    const where = `${file} patches[${i}]`;
    for (const key of Object.keys(p))
      if (key !== 'path' && key !== 'patch') throw new KustomizeError(where, `${key} unsupported`);
    const docs =
      typeof p.path === 'string'
        ? readDocuments(resolve(dir, p.path))
        : parseAllDocuments(String(p.patch)).map((d) => d.toJS() as KObject);
    if (docs.length !== 1) throw new KustomizeError(where, 'one strategic-merge patch per entry');
    const patch = docs[0]!;
    const at = objects.findIndex((o) => identity(o) === identity(patch));
    if (at < 0) throw new KustomizeError(where, `no ${identity(patch)} to patch`);
    objects = objects.map((o, j) => (j === at ? (strategicMerge(o, patch) as KObject) : o));
  }

  if (typeof k.namespace === 'string') {
    const ns = k.namespace;
    objects = objects.map((o) => {
      const out = structuredClone(o);
      if (!CLUSTER_SCOPED.has(String(o.kind))) (out.metadata as KObject).namespace = ns;
      if (Array.isArray(out.subjects)) {
        for (const s of out.subjects as KObject[])
          if (s.kind === 'ServiceAccount' && (s.namespace === undefined || s.namespace === ''))
            s.namespace = ns;
      }
      return out;
    });
  }
  const images = (k.images as KObject[] | undefined) ?? [];
  return images.length === 0 ? objects : objects.map((o) => setImages(structuredClone(o), images, file));
}
