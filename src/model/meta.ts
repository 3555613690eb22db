import type { ObjectRef } from './types.js';
import {
  checkDNS1123Label,
  displayName,
  isRecord,
  type Issues,
  type JsonRecord,
  readRecord,
  readString,
  readStringMap,
} from './validate.js';

/** Object metadata as the dataplane needs it, validated. */
export interface Meta {
  readonly namespace: string;
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
}

export const DEFAULT_NAMESPACE = 'default';

/** The reference used in problems, built from raw (unvalidated, display-safe) metadata. */
export function rawRef(kind: string, obj: JsonRecord, namespaced: boolean, source?: string): ObjectRef {
  const md = isRecord(obj.metadata) ? obj.metadata : {};
  const ns =
    md.namespace === undefined || md.namespace === null || md.namespace === ''
      ? DEFAULT_NAMESPACE
      : md.namespace;
  return {
    kind,
    ...(namespaced ? { namespace: displayName(ns) } : {}),
    name: displayName(md.name),
    ...(source !== undefined ? { source } : {}),
  };
}

export type NameCheck = (s: string) => string | undefined;

/**
 * Reads metadata.name (checked by `nameCheck`), metadata.namespace (a DNS-1123 label, default
 * "default", as kubectl does for manifests) and metadata.labels.
 */
export function readMeta(
  iss: Issues,
  obj: JsonRecord,
  namespaced: boolean,
  nameCheck: NameCheck,
): Meta | undefined {
  const before = iss.count;
  const md = readRecord(iss, obj, 'metadata', 'metadata');
  if (!md) {
    if (iss.count === before) iss.add('metadata', 'is required');
    return undefined;
  }
  const name = readString(iss, md, 'name', 'metadata.name');
  if (name === undefined || name === '') {
    if (iss.count === before) iss.add('metadata.name', 'is required');
  } else {
    const r = nameCheck(name);
    if (r) iss.add('metadata.name', r);
  }
  let namespace = DEFAULT_NAMESPACE;
  if (namespaced) {
    const ns = readString(iss, md, 'namespace', 'metadata.namespace');
    if (ns !== undefined && ns !== '') {
      const r = checkDNS1123Label(ns);
      if (r) iss.add('metadata.namespace', r);
      namespace = ns;
    }
  }
  const labels = readStringMap(iss, md, 'labels', 'metadata.labels') ?? {};
  if (iss.count > before || name === undefined) return undefined;
  return { namespace, name, labels };
}
