import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as k8s from '@kubernetes/client-node';
import { parse } from 'yaml';
import { parseKubeProxyConfig } from '../../src/config/kube-proxy-config.js';
import { renderKustomization } from '../support/kustomize.js';

/**
 * Checks deploy/*.yaml offline. `kubectl apply --dry-run=client` cannot run here: even with
 * --validate=false kubectl needs the API server's discovery to map kinds to resources, and
 * validation downloads the server's OpenAPI schema. Instead every object is checked against the
 * Kubernetes API schema that @kubernetes/client-node is generated from: unknown fields and wrong
 * types (the models' attribute maps) and missing required fields (the OpenAPI `required` lists,
 * which the generated declarations keep as non-optional properties), recursively; then against
 * the API server's validation rules for the fields used here (names, selector, references) and
 * the facts a svcplane deployment depends on.
 */

const DEPLOY_DIR = new URL('../../deploy/', import.meta.url);

type Obj = Record<string, unknown>;

interface Attribute {
  readonly name: string;
  readonly baseName: string;
  readonly type: string;
}
type ModelClass = { getAttributeTypeMap(): Attribute[] };

function model(type: string): ModelClass | undefined {
  const candidate = (k8s as unknown as Record<string, unknown>)[type];
  return typeof candidate === 'function' && 'getAttributeTypeMap' in candidate
    ? (candidate as unknown as ModelClass)
    : undefined;
}

const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

/** The generated model declarations of the installed client-node (dist/gen/models/*.d.ts). */
const MODELS_DIR = new URL('./gen/models/', import.meta.resolve('@kubernetes/client-node'));

/**
 * Required fields of a model (by their JSON names): the generator writes the OpenAPI `required`
 * properties without `?` (`'name': string;`) and all others optional (`'image'?: string;`).
 */
function requiredFields(type: string): string[] {
  const file = new URL(`${type}.d.ts`, MODELS_DIR);
  assert.ok(existsSync(file), `no declaration for ${type}`);
  const baseName = new Map(
    model(type)!
      .getAttributeTypeMap()
      .map((a) => [a.name, a.baseName]),
  );
  return [...readFileSync(file, 'utf8').matchAll(/^\s+'([^']+)':/gm)].map(
    (m) => baseName.get(m[1]!) ?? m[1]!,
  );
}

/** Returns "path: problem" lines for `value` checked against the client-node model `type`. */
function schemaErrors(value: unknown, type: string, path: string): string[] {
  const array = /^Array<(.+)>$/.exec(type);
  if (array) {
    if (!Array.isArray(value)) return [`${path}: expected a list`];
    return value.flatMap((v, i) => schemaErrors(v, array[1]!, `${path}[${i}]`));
  }
  const map = /^\{ \[key: string\]: (.+); \}$/.exec(type);
  if (map) {
    if (!isObj(value)) return [`${path}: expected a map`];
    return Object.entries(value).flatMap(([k, v]) => schemaErrors(v, map[1]!, `${path}.${k}`));
  }
  switch (type) {
    case 'string':
    case 'Date':
      return typeof value === 'string' ? [] : [`${path}: expected a string, got ${JSON.stringify(value)}`];
    case 'number':
      return typeof value === 'number' ? [] : [`${path}: expected a number, got ${JSON.stringify(value)}`];
    case 'boolean':
      return typeof value === 'boolean' ? [] : [`${path}: expected true/false, got ${JSON.stringify(value)}`];
    case 'IntOrString':
      return typeof value === 'number' || typeof value === 'string'
        ? []
        : [`${path}: expected int or string`];
    case 'any':
      return [];
  }
  const cls = model(type);
  if (!cls) return [`${path}: no schema for type ${type}`];
  if (!isObj(value)) return [`${path}: expected an object (${type})`];
  const attrs = new Map(cls.getAttributeTypeMap().map((a) => [a.baseName, a.type]));
  const missing = requiredFields(type)
    .filter((f) => value[f] === undefined || value[f] === null)
    .map((f) => `${path}.${f}: required field missing in ${type}`);
  return missing.concat(
    Object.entries(value).flatMap(([k, v]) => {
      const t = attrs.get(k);
      return t === undefined
        ? [`${path}.${k}: unknown field in ${type}`]
        : schemaErrors(v, t, `${path}.${k}`);
    }),
  );
}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const IANA_SVC_NAME = /^(?=.{1,15}$)(?=.*[a-z])[a-z0-9]+(-[a-z0-9]+)*$/;
const ENV_NAME = /^[-._a-zA-Z][-._a-zA-Z0-9]*$/;

/**
 * The API server's validation of the DaemonSet fields used here (apps and core validation): what
 * the schema alone does not say. Returns "path: problem" lines.
 */
function daemonSetErrors(ds: Obj, name: string): string[] {
  const errors: string[] = [];
  const add = (path: string, problem: string): void => void errors.push(`${name}.${path}: ${problem}`);
  const selector = get(ds, 'spec', 'selector') as Obj | undefined;
  const matchLabels = (get(selector, 'matchLabels') ?? {}) as Record<string, string>;
  const matchExpressions = (get(selector, 'matchExpressions') ?? []) as unknown[];
  if (Object.keys(matchLabels).length === 0 && matchExpressions.length === 0) {
    add('spec.selector', 'empty selector (would select every pod)');
  }
  const labels = (get(ds, 'spec', 'template', 'metadata', 'labels') ?? {}) as Record<string, string>;
  for (const [k, v] of Object.entries(matchLabels)) {
    if (labels[k] !== v)
      add('spec.template.metadata.labels', `selector ${k}=${v} does not match the template`);
  }
  const pod = (get(ds, 'spec', 'template', 'spec') ?? {}) as Obj;
  const restart = pod.restartPolicy;
  if (restart !== undefined && restart !== 'Always')
    add('spec.template.spec.restartPolicy', 'must be Always');
  const volumes = (pod.volumes ?? []) as Obj[];
  const volumeNames = new Set<string>();
  volumes.forEach((v, i) => {
    const n = String(v.name);
    if (!DNS_LABEL.test(n)) add(`spec.template.spec.volumes[${i}].name`, `"${n}" is not a DNS label`);
    if (volumeNames.has(n)) add(`spec.template.spec.volumes[${i}].name`, `duplicate "${n}"`);
    volumeNames.add(n);
  });
  const containers = (pod.containers ?? []) as Obj[];
  if (containers.length === 0) add('spec.template.spec.containers', 'at least one container is required');
  const containerNames = new Set<string>();
  containers.forEach((c, i) => {
    const at = `spec.template.spec.containers[${i}]`;
    const n = String(c.name);
    if (!DNS_LABEL.test(n) || n.length > 63) add(`${at}.name`, `"${n}" is not a DNS label`);
    if (containerNames.has(n)) add(`${at}.name`, `duplicate "${n}"`);
    containerNames.add(n);
    if (typeof c.image !== 'string' || c.image.trim() === '') add(`${at}.image`, 'required in a workload');
    const portNames = new Set<string>();
    ((c.ports ?? []) as Obj[]).forEach((p, j) => {
      const port = p.containerPort as number;
      if (!Number.isInteger(port) || port < 1 || port > 65535)
        add(`${at}.ports[${j}].containerPort`, 'not a port');
      if (p.name !== undefined) {
        const pn = typeof p.name === 'string' ? p.name : JSON.stringify(p.name);
        if (pn.length > 15 || !IANA_SVC_NAME.test(pn))
          add(`${at}.ports[${j}].name`, `"${pn}" is not an IANA service name`);
        portNames.add(pn);
      }
    });
    for (const probe of ['livenessProbe', 'readinessProbe', 'startupProbe']) {
      const port = get(c, probe, 'httpGet', 'port');
      if (typeof port === 'string' && !portNames.has(port))
        add(`${at}.${probe}.httpGet.port`, `no container port named "${port}"`);
      if (typeof port === 'number' && (port < 1 || port > 65535))
        add(`${at}.${probe}.httpGet.port`, 'not a port');
    }
    ((c.env ?? []) as Obj[]).forEach((e, j) => {
      if (!ENV_NAME.test(String(e.name)))
        add(`${at}.env[${j}].name`, `"${String(e.name)}" is not a valid variable name`);
    });
    const mountPaths = new Set<string>();
    ((c.volumeMounts ?? []) as Obj[]).forEach((m, j) => {
      if (!volumeNames.has(String(m.name)))
        add(`${at}.volumeMounts[${j}].name`, `no volume "${String(m.name)}"`);
      const mp = String(m.mountPath);
      if (!mp.startsWith('/')) add(`${at}.volumeMounts[${j}].mountPath`, 'must be absolute');
      if (mountPaths.has(mp)) add(`${at}.volumeMounts[${j}].mountPath`, `duplicate "${mp}"`);
      mountPaths.add(mp);
    });
  });
  return errors;
}

/** client-node model name for apiVersion + kind, e.g. apps/v1 DaemonSet -> V1DaemonSet. */
function modelName(apiVersion: string, kind: string): string {
  const version = apiVersion.split('/').pop()!;
  return version.charAt(0).toUpperCase() + version.slice(1) + kind;
}

/** An overlay of deploy/overlays rendered as kustomize renders it (test/support/kustomize.ts). */
function loadObjects(overlay: string): Obj[] {
  const objects = renderKustomization(fileURLToPath(new URL(`overlays/${overlay}`, DEPLOY_DIR)));
  assert.ok(objects.length > 0, `deploy/overlays/${overlay} renders nothing`);
  return objects;
}

function pick(objects: Obj[], kind: string): Obj {
  const found = objects.filter((o) => o.kind === kind);
  assert.equal(found.length, 1, `expected one ${kind}, found ${found.length}`);
  return found[0]!;
}

// Small typed accessors for the fact checks below.
const get = (o: unknown, ...path: (string | number)[]): unknown =>
  path.reduce<unknown>((v, k) => (v as Record<string | number, unknown> | undefined)?.[k], o);

// kubeproxy.config.k8s.io/v1alpha1 KubeProxyConfiguration (Kubernetes 1.32).
const KUBE_PROXY_FIELDS = new Set([
  'apiVersion',
  'kind',
  'featureGates',
  'clientConnection',
  'logging',
  'hostnameOverride',
  'bindAddress',
  'healthzBindAddress',
  'metricsBindAddress',
  'bindAddressHardFail',
  'enableProfiling',
  'showHiddenMetricsForVersion',
  'mode',
  'iptables',
  'ipvs',
  'nftables',
  'winkernel',
  'detectLocalMode',
  'detectLocal',
  'clusterCIDR',
  'nodePortAddresses',
  'oomScoreAdj',
  'conntrack',
  'configSyncPeriod',
  'portRange',
  'windowsRunAsService',
]);
const IPTABLES_FIELDS = new Set([
  'masqueradeAll',
  'masqueradeBit',
  'localhostNodePorts',
  'syncPeriod',
  'minSyncPeriod',
]);

// kubeproxy.config.k8s.io/v1alpha1 KubeProxyNFTablesConfiguration.
const NFTABLES_FIELDS = new Set(['masqueradeAll', 'masqueradeBit', 'syncPeriod', 'minSyncPeriod']);
// kubeproxy.config.k8s.io/v1alpha1 KubeProxyIPVSConfiguration.
const IPVS_FIELDS = new Set([
  'syncPeriod',
  'minSyncPeriod',
  'scheduler',
  'excludeCIDRs',
  'strictARP',
  'tcpTimeout',
  'tcpFinTimeout',
  'udpTimeout',
]);

describe('deploy/: a kustomize base and an overlay per mode', () => {
  it('has the base, an overlay per mode (iptables, ipvs, nftables) and network-policy', () => {
    assert.deepEqual(readdirSync(new URL('overlays/', DEPLOY_DIR)).sort(), [
      'iptables',
      'ipvs',
      'network-policy',
      'nftables',
    ]);
    assert.ok(existsSync(new URL('base/kustomization.yaml', DEPLOY_DIR)));
  });

  it('the overlays differ only in what the mode needs: the ConfigMap and the capabilities', () => {
    const [iptables, ipvs, nftables] = [
      loadObjects('iptables'),
      loadObjects('ipvs'),
      loadObjects('nftables'),
    ];
    const strip = (objects: Obj[]) =>
      objects.map((o) => {
        const c = structuredClone(o);
        if (c.kind === 'ConfigMap') delete c.data;
        if (c.kind === 'DaemonSet')
          delete (
            get(c, 'spec', 'template', 'spec', 'containers', 0, 'securityContext', 'capabilities') as Obj
          ).add;
        return c;
      });
    assert.deepEqual(strip(ipvs), strip(iptables));
    assert.deepEqual(strip(nftables), strip(iptables));
    assert.deepEqual(strip(loadObjects('network-policy')), strip(iptables));
  });

  it('network-policy: iptables mode with networkPolicy: true, and the base otherwise', () => {
    const config = (overlay: string): string =>
      String(get(pick(loadObjects(overlay), 'ConfigMap'), 'data', 'config.conf'));
    const on = config('network-policy');
    assert.match(on, /^networkPolicy: true$/m);
    // svcplane reads it as the switch on (the field is svcplane's own, validated like kube-proxy's).
    assert.equal(parseKubeProxyConfig(on).config.networkPolicy, true);
    assert.equal(parseKubeProxyConfig(on).config.mode, 'iptables');
    assert.equal(
      on.replace(/^#.*\n|^ *# svcplane's own field.*\n|^networkPolicy: true\n/gm, ''),
      config('iptables').replace(/^#.*\n/gm, ''),
    );
  });
});

for (const overlay of ['iptables', 'ipvs', 'nftables'])
  describe(`deploy/overlays/${overlay} (rendered)`, () => {
    const objects = loadObjects(overlay);
    const ds = pick(objects, 'DaemonSet');
    const pod = get(ds, 'spec', 'template', 'spec') as Obj;
    const container = get(pod, 'containers', 0) as Obj;

    it('every object matches the Kubernetes API schema (no unknown fields, right types)', () => {
      for (const o of objects) {
        const name = `${String(o.kind)}/${String(get(o, 'metadata', 'name'))}`;
        assert.equal(typeof o.apiVersion, 'string', `${name}: apiVersion`);
        assert.equal(typeof o.kind, 'string', `${name}: kind`);
        const type = modelName(o.apiVersion as string, o.kind as string);
        assert.ok(model(type), `${name}: unknown apiVersion/kind ${String(o.apiVersion)} ${String(o.kind)}`);
        assert.deepEqual(schemaErrors(o, type, name), []);
        assert.match(
          String(get(o, 'metadata', 'name')),
          /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/,
          `${name}: metadata.name`,
        );
      }
    });

    it('the schema check catches a misspelt field and a wrong type', () => {
      const bad = structuredClone(ds);
      (get(bad, 'spec', 'template', 'spec', 'containers', 0) as Obj).readinesProbe = {};
      (get(bad, 'spec', 'template', 'spec') as Obj).hostNetwork = 'yes';
      const errors = schemaErrors(bad, 'V1DaemonSet', 'ds');
      assert.equal(errors.length, 2, errors.join('\n'));
    });

    it('the schema check catches missing required fields (container name, selector, roleRef, verbs …)', () => {
      assert.deepEqual(requiredFields('V1Container'), ['name']);
      assert.deepEqual(requiredFields('V1DaemonSetSpec').sort(), ['selector', 'template']);
      const bad = structuredClone(ds);
      delete (get(bad, 'spec', 'template', 'spec', 'containers', 0) as Obj).name;
      delete (get(bad, 'spec') as Obj).selector;
      delete (get(bad, 'spec', 'template', 'spec', 'volumes', 0) as Obj).name;
      delete (get(bad, 'spec', 'template', 'spec', 'containers', 0, 'env', 0, 'valueFrom', 'fieldRef') as Obj)
        .fieldPath;
      assert.deepEqual(schemaErrors(bad, 'V1DaemonSet', 'ds').sort(), [
        'ds.spec.selector: required field missing in V1DaemonSetSpec',
        'ds.spec.template.spec.containers[0].env[0].valueFrom.fieldRef.fieldPath: required field missing in V1ObjectFieldSelector',
        'ds.spec.template.spec.containers[0].name: required field missing in V1Container',
        'ds.spec.template.spec.volumes[0].name: required field missing in V1Volume',
      ]);
      const role = structuredClone(pick(objects, 'ClusterRole'));
      delete (get(role, 'rules', 0) as Obj).verbs;
      assert.deepEqual(schemaErrors(role, 'V1ClusterRole', 'role'), [
        'role.rules[0].verbs: required field missing in V1PolicyRule',
      ]);
      const binding = structuredClone(pick(objects, 'ClusterRoleBinding'));
      delete (get(binding, 'roleRef') as Obj).kind;
      delete (get(binding, 'subjects', 0) as Obj).name;
      assert.deepEqual(schemaErrors(binding, 'V1ClusterRoleBinding', 'b').sort(), [
        'b.roleRef.kind: required field missing in V1RoleRef',
        'b.subjects[0].name: required field missing in RbacV1Subject',
      ]);
    });

    it("the DaemonSet passes the API server's validation of the fields it uses", () => {
      assert.deepEqual(daemonSetErrors(ds, 'ds'), []);
    });

    it('that validation catches a bad container name, an empty selector and dangling references', () => {
      const bad = structuredClone(ds);
      const spec = get(bad, 'spec') as Obj;
      const c = get(spec, 'template', 'spec', 'containers', 0) as Obj;
      c.name = 'Svc_plane';
      (spec.selector as Obj).matchLabels = {};
      (c.volumeMounts as Obj[])[0]!.name = 'nope';
      (get(c, 'readinessProbe', 'httpGet') as Obj).port = 'metrics';
      assert.deepEqual(daemonSetErrors(bad, 'ds'), [
        'ds.spec.selector: empty selector (would select every pod)',
        'ds.spec.template.spec.containers[0].name: "Svc_plane" is not a DNS label',
        'ds.spec.template.spec.containers[0].readinessProbe.httpGet.port: no container port named "metrics"',
        'ds.spec.template.spec.containers[0].volumeMounts[0].name: no volume "nope"',
      ]);
    });

    it('contains exactly the ServiceAccount, RBAC, ConfigMap and DaemonSet, namespaced in kube-system', () => {
      assert.deepEqual(objects.map((o) => o.kind).sort(), [
        'ClusterRole',
        'ClusterRoleBinding',
        'ConfigMap',
        'DaemonSet',
        'ServiceAccount',
      ]);
      for (const o of objects) {
        const ns = get(o, 'metadata', 'namespace');
        if (o.kind === 'ClusterRole' || o.kind === 'ClusterRoleBinding') assert.equal(ns, undefined);
        else assert.equal(ns, 'kube-system', `${String(o.kind)} namespace`);
      }
    });

    it('grants least privilege: list and watch on what svcplane reads (with NetworkPolicy enforcement), nothing else', () => {
      const rules = (get(pick(objects, 'ClusterRole'), 'rules') as Obj[]).flatMap((r) =>
        (r.apiGroups as string[]).flatMap((g) =>
          (r.resources as string[]).map(
            (res) => `${g}/${res}:${[...(r.verbs as string[])].sort().join(',')}`,
          ),
        ),
      );
      assert.deepEqual(rules.sort(), [
        '/namespaces:list,watch',
        '/nodes:list,watch',
        '/pods:list,watch',
        '/services:list,watch',
        'discovery.k8s.io/endpointslices:list,watch',
        'networking.k8s.io/networkpolicies:list,watch',
      ]);
      const binding = pick(objects, 'ClusterRoleBinding');
      const sa = pick(objects, 'ServiceAccount');
      assert.deepEqual(get(binding, 'roleRef'), {
        apiGroup: 'rbac.authorization.k8s.io',
        kind: 'ClusterRole',
        name: get(pick(objects, 'ClusterRole'), 'metadata', 'name'),
      });
      assert.deepEqual(get(binding, 'subjects'), [
        { kind: 'ServiceAccount', name: get(sa, 'metadata', 'name'), namespace: 'kube-system' },
      ]);
      assert.equal(pod.serviceAccountName, get(sa, 'metadata', 'name'));
    });

    it('runs the DaemonSet like kube-proxy: host network, node-critical, tolerates every taint', () => {
      const selector = get(ds, 'spec', 'selector', 'matchLabels') as Record<string, string>;
      const labels = get(ds, 'spec', 'template', 'metadata', 'labels') as Record<string, string>;
      for (const [k, v] of Object.entries(selector)) assert.equal(labels[k], v, `template label ${k}`);
      assert.equal(pod.hostNetwork, true);
      assert.equal(pod.priorityClassName, 'system-node-critical');
      assert.ok((pod.tolerations as Obj[]).some((t) => t.operator === 'Exists' && t.key === undefined));
      assert.equal(get(pod, 'containers', 'length'), 1);
      assert.equal(typeof container.image, 'string');
    });

    it('drops every capability but NET_ADMIN; NET_RAW only for the legacy backend, SYS_MODULE only for IPVS', () => {
      const sc = container.securityContext as Obj;
      assert.equal(sc.privileged, false);
      assert.equal(sc.allowPrivilegeEscalation, false);
      assert.deepEqual(get(sc, 'capabilities', 'drop'), ['ALL']);
      const add = [...(get(sc, 'capabilities', 'add') as string[])].sort();
      // The ConfigMap's mode and the iptables backend decide: iptables-legacy opens a raw socket even to
      // read (legacy, and auto which reads both backends); IPVS loads kernel modules (SYS_MODULE).
      const conf = parse(get(pick(objects, 'ConfigMap'), 'data', 'config.conf') as string) as Obj;
      const backend = (container.env as Obj[]).find((e) => e.name === 'SVCPLANE_IPTABLES_MODE')?.value;
      assert.ok(
        backend === 'nft' || backend === 'legacy' || backend === 'auto',
        `backend ${String(backend)}`,
      );
      const want = ['NET_ADMIN'];
      if (backend !== 'nft') want.push('NET_RAW');
      if (conf.mode === 'ipvs') want.push('SYS_MODULE');
      assert.deepEqual(add, want.sort());
      assert.notEqual(pod.hostPID, true);
      assert.notEqual(pod.hostIPC, true);
    });

    it('confines the pod: RuntimeDefault seccomp, read-only root with /tmp in memory', () => {
      const seccomp =
        get(container, 'securityContext', 'seccompProfile', 'type') ??
        get(pod, 'securityContext', 'seccompProfile', 'type');
      assert.equal(seccomp, 'RuntimeDefault');
      assert.equal(get(container, 'securityContext', 'readOnlyRootFilesystem'), true);
      // svcplane writes only under TMPDIR (conntrack -R batch files): /tmp must be a writable volume.
      const tmp = (container.volumeMounts as Obj[]).find((m) => m.mountPath === '/tmp');
      assert.ok(tmp, 'a /tmp mount');
      assert.notEqual(tmp.readOnly, true);
      const volume = (pod.volumes as Obj[]).find((v) => v.name === tmp.name);
      assert.equal(get(volume, 'emptyDir', 'medium'), 'Memory');
    });

    it('resolves names with the node resolv.conf (dnsPolicy Default), not through the Services it programs', () => {
      assert.equal(pod.hostNetwork, true);
      assert.equal(pod.dnsPolicy, 'Default');
    });

    it('limits memory above the measured peak at 10k Services (docs/performance.md) with headroom', () => {
      // The figures the limit is sized from: svcplane's own VmHWM (`svcplane sync` at 10k) and the peak
      // of its iptables-restore child at 10k; both live in the container's cgroup during a full sync.
      const perf = readFileSync(new URL('../../docs/performance.md', import.meta.url), 'utf8');
      const vmhwm = /node's \*\*VmHWM (\d+) MB\*\*/.exec(perf);
      assert.ok(vmhwm, 'docs/performance.md: no "node\'s **VmHWM N MB**" figure');
      const header = perf
        .split('\n')
        .find((l) => l.startsWith('| services |') && l.includes('restore RSS MB'));
      assert.ok(header, 'docs/performance.md: no iptables figures table with a "restore RSS MB" column');
      const column = header.split('|').findIndex((c) => c.trim() === 'restore RSS MB');
      const row = perf.split('\n').find((l) => l.startsWith('| 10k |'));
      assert.ok(row, 'docs/performance.md: no 10k row');
      const restoreMB = Number(row.split('|')[column]?.trim());
      assert.ok(restoreMB > 0, `restore RSS at 10k: ${row}`);
      const peakMB = Number(vmhwm[1]) + restoreMB;
      const limit = String(get(container, 'resources', 'limits', 'memory'));
      const m = /^(\d+)(Mi|Gi)$/.exec(limit);
      assert.ok(m, `memory limit "${limit}" in Mi or Gi`);
      const limitMB = (Number(m[1]) * (m[2] === 'Gi' ? 1024 : 1) * 1024 * 1024) / 1e6;
      assert.ok(limitMB >= 1.3 * peakMB, `limit ${limit} (${Math.round(limitMB)} MB) < 1.3 × ${peakMB} MB`);
      assert.ok(limitMB <= 4 * peakMB, `limit ${limit} is far above the measured peak (${peakMB} MB)`);
    });

    it('mounts /run/xtables.lock (FileOrCreate), /lib/modules read-only and the configuration', () => {
      const volumes = new Map((pod.volumes as Obj[]).map((v) => [v.name as string, v]));
      const mounts = new Map((container.volumeMounts as Obj[]).map((m) => [m.mountPath as string, m]));
      const lock = mounts.get('/run/xtables.lock');
      assert.ok(lock, 'xtables lock mount');
      assert.deepEqual(get(volumes.get(lock.name as string), 'hostPath'), {
        path: '/run/xtables.lock',
        type: 'FileOrCreate',
      });
      const modules = mounts.get('/lib/modules');
      assert.ok(modules, '/lib/modules mount');
      assert.equal(modules.readOnly, true);
      assert.equal(get(volumes.get(modules.name as string), 'hostPath', 'path'), '/lib/modules');
      for (const m of mounts.values()) assert.ok(volumes.has(m.name as string), `volume ${String(m.name)}`);

      // --config points into the ConfigMap's mount, at a key the ConfigMap has.
      const args = container.args as string[];
      const config = args.find((a) => a.startsWith('--config='))?.slice('--config='.length);
      assert.ok(config, '--config flag');
      const dir = config.slice(0, config.lastIndexOf('/'));
      const cmMount = mounts.get(dir);
      assert.ok(cmMount, `a mount at ${dir}`);
      const cmName = get(volumes.get(cmMount.name as string), 'configMap', 'name');
      const cm = pick(objects, 'ConfigMap');
      assert.equal(cmName, get(cm, 'metadata', 'name'));
      assert.equal(typeof get(cm, 'data', config.slice(dir.length + 1)), 'string');
    });

    it('passes the node name from the downward API to --hostname-override', () => {
      // kube-proxy's command line (kubeadm's DaemonSet): no subcommand, the image's entrypoint is svcplane.
      assert.equal(container.command, undefined);
      assert.deepEqual(container.args, [
        '--config=/var/lib/kube-proxy/config.conf',
        '--hostname-override=$(NODE_NAME)',
      ]);
      const env = (container.env as Obj[]).find((e) => e.name === 'NODE_NAME');
      assert.deepEqual(get(env, 'valueFrom', 'fieldRef', 'fieldPath'), 'spec.nodeName');
    });

    it("the image's default command is kube-proxy's form with the DaemonSet's --config", () => {
      const dockerfile = readFileSync(new URL('../../Dockerfile', import.meta.url), 'utf8');
      const cmd = JSON.parse(/^CMD (\[.*\])$/m.exec(dockerfile)?.[1] ?? 'null') as string[];
      assert.deepEqual(
        cmd,
        (container.args as string[]).filter((a) => a.startsWith('--config=')),
      );
      assert.match(dockerfile, /^ENTRYPOINT \["svcplane"\]$/m);
      assert.match(
        dockerfile,
        /^COPY deploy\/image\/svcplane-entrypoint\.sh \/usr\/local\/bin\/kube-proxy$/m,
      );
    });

    it('probes the health port: liveness /livez, readiness /healthz; requests resources', () => {
      assert.deepEqual(get(container, 'livenessProbe', 'httpGet'), { path: '/livez', port: 10256 });
      assert.deepEqual(get(container, 'readinessProbe', 'httpGet'), { path: '/healthz', port: 10256 });
      assert.ok(get(container, 'resources', 'requests', 'cpu'));
      assert.ok(get(container, 'resources', 'requests', 'memory'));
    });

    it('configures a KubeProxyConfiguration matching the probes', () => {
      const cm = pick(objects, 'ConfigMap');
      const conf = parse(get(cm, 'data', 'config.conf') as string) as Obj;
      assert.equal(conf.apiVersion, 'kubeproxy.config.k8s.io/v1alpha1');
      assert.equal(conf.kind, 'KubeProxyConfiguration');
      assert.equal(conf.mode, overlay);
      assert.match(String(conf.clusterCIDR), /^\d+\.\d+\.\d+\.\d+\/\d+$/);
      assert.equal(get(conf, 'iptables', 'minSyncPeriod'), '1s');
      assert.equal(get(conf, 'iptables', 'syncPeriod'), '30s');
      assert.equal(conf.metricsBindAddress, '127.0.0.1:10249');
      assert.equal(conf.healthzBindAddress, '0.0.0.0:10256');
      // Only KubeProxyConfiguration v1alpha1 fields (a typo would only be a warning at run time).
      for (const key of Object.keys(conf)) assert.ok(KUBE_PROXY_FIELDS.has(key), `unknown field ${key}`);
      for (const key of Object.keys(conf.iptables as Obj))
        assert.ok(IPTABLES_FIELDS.has(key), `unknown field iptables.${key}`);
      for (const key of Object.keys(conf.ipvs ?? {}))
        assert.ok(IPVS_FIELDS.has(key), `unknown field ipvs.${key}`);
      assert.equal(conf.ipvs !== undefined, overlay === 'ipvs', 'ipvs settings only in the ipvs overlay');
      for (const key of Object.keys(conf.nftables ?? {}))
        assert.ok(NFTABLES_FIELDS.has(key), `unknown field nftables.${key}`);
      assert.equal(
        conf.nftables !== undefined,
        overlay === 'nftables',
        'nftables settings only in its overlay',
      );
      assert.equal(
        Number(String(conf.healthzBindAddress).split(':')[1]),
        get(container, 'readinessProbe', 'httpGet', 'port'),
      );
    });
  });

describe('image entrypoint (deploy/image/svcplane-entrypoint.sh)', () => {
  const script = new URL('../../deploy/image/svcplane-entrypoint.sh', import.meta.url).pathname;
  let dir: string;

  /**
   * The script runs on this machine, so everything it could call to inspect or change the host's
   * iptables is a stub first on PATH: `iptables-{legacy,nft}-save` print what STUB_LEGACY / STUB_NFT
   * say (`denied` = no CAP_NET_RAW, `hint` = kube-proxy's hint chain, `rules` = three rules),
   * `update-alternatives` only records that it was called. The app prints the arguments it gets.
   */
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'svcp-entry-'));
    mkdirSync(join(dir, 'app', 'bin'), { recursive: true });
    mkdirSync(join(dir, 'stubs'));
    writeFileSync(
      join(dir, 'app', 'bin', 'svcplane.js'),
      'console.log(JSON.stringify(process.argv.slice(2)));\n',
    );
    const save = (variable: string) =>
      [
        '#!/bin/sh',
        `case "$${variable}" in`,
        '  denied) echo "iptables-save v1.8.9 (legacy): Cannot initialize: Permission denied (you must be root)" >&2; exit 1 ;;',
        "  hint) printf '*mangle\\n:KUBE-IPTABLES-HINT - [0:0]\\nCOMMIT\\n' ;;",
        "  rules) printf '*filter\\n-A INPUT -j ACCEPT\\n-A INPUT -j ACCEPT\\n-A INPUT -j ACCEPT\\nCOMMIT\\n' ;;",
        'esac',
        '',
      ].join('\n');
    const stubs: Record<string, string> = {
      'iptables-legacy-save': save('STUB_LEGACY'),
      'iptables-nft-save': save('STUB_NFT'),
      'ip6tables-legacy-save': '#!/bin/sh\n',
      'ip6tables-nft-save': '#!/bin/sh\n',
      'update-alternatives': `#!/bin/sh\necho "$@" >> '${join(dir, 'alternatives-called')}'\nexit 1\n`,
    };
    for (const [name, text] of Object.entries(stubs))
      writeFileSync(join(dir, 'stubs', name), text, { mode: 0o755 });
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  const entry = (args: string[], env: Record<string, string> = {}) => {
    const r = spawnSync('sh', [script, ...args], {
      env: {
        PATH: `${join(dir, 'stubs')}:${process.env.PATH ?? ''}`,
        SVCPLANE_APP_DIR: join(dir, 'app'),
        ...env,
      },
      encoding: 'utf8',
    });
    return {
      status: r.status,
      argv: r.status === 0 ? (JSON.parse(r.stdout) as string[]) : [],
      stderr: r.stderr,
    };
  };
  const backendOf = (env: Record<string, string>) => entry(['sync'], env).argv[1];

  it('hands the backend to svcplane as --iptables-binary for the commands that use iptables', () => {
    assert.deepEqual(entry(['sync', '--manifests', '/m'], { SVCPLANE_IPTABLES_MODE: 'nft' }).argv, [
      'sync',
      '--iptables-binary=iptables-nft',
      '--manifests',
      '/m',
    ]);
    assert.deepEqual(
      entry(['run', '--config=/etc/svcplane/config.conf'], { SVCPLANE_IPTABLES_MODE: 'legacy' }).argv,
      ['run', '--iptables-binary=iptables-legacy', '--config=/etc/svcplane/config.conf'],
    );
    for (const cmd of ['cleanup', 'diff', 'explain', 'trace'])
      assert.equal(
        entry([cmd], { SVCPLANE_IPTABLES_MODE: 'nft' }).argv[1],
        '--iptables-binary=iptables-nft',
        cmd,
      );
  });

  it("kube-proxy's form (no subcommand: the daemon, --cleanup, --init-only) gets the backend too", () => {
    const nft = { SVCPLANE_IPTABLES_MODE: 'nft' };
    assert.deepEqual(
      entry(['--config=/var/lib/kube-proxy/config.conf', '--hostname-override=n1'], nft).argv,
      [
        '--iptables-binary=iptables-nft',
        '--config=/var/lib/kube-proxy/config.conf',
        '--hostname-override=n1',
      ],
    );
    assert.deepEqual(entry([], nft).argv, ['--iptables-binary=iptables-nft']);
    assert.deepEqual(entry(['--cleanup'], { SVCPLANE_IPTABLES_MODE: 'legacy' }).argv, [
      '--iptables-binary=iptables-legacy',
      '--cleanup',
    ]);
    // Printing or writing the configuration needs no backend (and no CAP_NET_RAW for auto).
    const blind = { STUB_LEGACY: 'denied' };
    assert.deepEqual(entry(['--version'], blind).argv, ['--version']);
    assert.deepEqual(entry(['--config=c', '--write-config-to=/tmp/out'], blind).argv, [
      '--config=c',
      '--write-config-to=/tmp/out',
    ]);
    assert.deepEqual(entry(['-h'], blind).argv, ['-h']);
  });

  it('auto: the backend holding the hint chain, else the one with more rules, else nft', () => {
    assert.equal(backendOf({ STUB_LEGACY: 'hint', STUB_NFT: 'rules' }), '--iptables-binary=iptables-legacy');
    assert.equal(backendOf({ STUB_NFT: 'hint', STUB_LEGACY: 'rules' }), '--iptables-binary=iptables-nft');
    assert.equal(backendOf({ STUB_LEGACY: 'rules' }), '--iptables-binary=iptables-legacy');
    assert.equal(backendOf({}), '--iptables-binary=iptables-nft');
  });

  it('auto without CAP_NET_RAW (legacy unreadable) refuses to guess', () => {
    const r = entry(['run'], { STUB_LEGACY: 'denied', STUB_NFT: 'hint' });
    assert.equal(r.status, 2);
    assert.match(r.stderr, /cannot read the legacy iptables backend \(it needs CAP_NET_RAW\)/);
  });

  it('leaves other commands and an explicit --iptables-binary alone; refuses an unknown mode', () => {
    assert.deepEqual(entry(['--version'], { SVCPLANE_IPTABLES_MODE: 'legacy' }).argv, ['--version']);
    assert.deepEqual(entry(['demo'], { SVCPLANE_IPTABLES_MODE: 'legacy' }).argv, ['demo']);
    assert.deepEqual(
      entry(['sync', '--iptables-binary=iptables'], { SVCPLANE_IPTABLES_MODE: 'legacy' }).argv,
      ['sync', '--iptables-binary=iptables'],
    );
    const bad = entry(['sync'], { SVCPLANE_IPTABLES_MODE: 'bogus' });
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /SVCPLANE_IPTABLES_MODE must be nft, legacy or auto/);
  });

  it('writes nothing (read-only root): no alternatives switched, no redirection to a file', () => {
    assert.equal(existsSync(join(dir, 'alternatives-called')), false, 'update-alternatives was called');
    const text = readFileSync(script, 'utf8')
      .split('\n')
      .filter((l) => !l.trimStart().startsWith('#'))
      .join('\n');
    assert.doesNotMatch(text, /update-alternatives|\bln\b|\bcp\b|\bmv\b|\btee\b/);
    for (const m of text.matchAll(/\d?>+\s*(\S+)/g))
      assert.match(m[1]!, /^(\/dev\/null|&[12];?)$/, `redirection to ${m[1]!}`);
  });
});
