import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import * as k8s from '@kubernetes/client-node';
import { parse, parseAllDocuments } from 'yaml';

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

function loadObjects(): Obj[] {
  const files = readdirSync(DEPLOY_DIR).filter((f) => /\.ya?ml$/.test(f));
  assert.ok(files.length > 0, 'deploy/ holds no YAML');
  return files.flatMap((f) =>
    parseAllDocuments(readFileSync(new URL(f, DEPLOY_DIR), 'utf8')).map((doc, i) => {
      assert.deepEqual(doc.errors, [], `${f} document ${i}: YAML errors`);
      const o = doc.toJS() as unknown;
      assert.ok(isObj(o), `${f} document ${i} is not an object`);
      return o;
    }),
  );
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

describe('deploy/ manifests', () => {
  const objects = loadObjects();
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

  it('grants least privilege: list and watch on services, nodes and endpointslices, nothing else', () => {
    const rules = (get(pick(objects, 'ClusterRole'), 'rules') as Obj[]).flatMap((r) =>
      (r.apiGroups as string[]).flatMap((g) =>
        (r.resources as string[]).map((res) => `${g}/${res}:${[...(r.verbs as string[])].sort().join(',')}`),
      ),
    );
    assert.deepEqual(rules.sort(), [
      '/nodes:list,watch',
      '/services:list,watch',
      'discovery.k8s.io/endpointslices:list,watch',
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

  it('drops every capability but NET_ADMIN and NET_RAW (SYS_MODULE only for IPVS), never privileged', () => {
    const sc = container.securityContext as Obj;
    assert.equal(sc.privileged, false);
    assert.equal(sc.allowPrivilegeEscalation, false);
    assert.deepEqual(get(sc, 'capabilities', 'drop'), ['ALL']);
    const add = [...(get(sc, 'capabilities', 'add') as string[])].sort();
    // The ConfigMap's mode decides: IPVS loads kernel modules (SYS_MODULE), iptables mode does not.
    const conf = parse(get(pick(objects, 'ConfigMap'), 'data', 'config.conf') as string) as Obj;
    assert.deepEqual(
      add,
      conf.mode === 'ipvs' ? ['NET_ADMIN', 'NET_RAW', 'SYS_MODULE'] : ['NET_ADMIN', 'NET_RAW'],
    );
    assert.notEqual(pod.hostPID, true);
    assert.notEqual(pod.hostIPC, true);
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
    assert.deepEqual(container.args, [
      'run',
      '--config=/etc/svcplane/config.conf',
      '--hostname-override=$(NODE_NAME)',
    ]);
    const env = (container.env as Obj[]).find((e) => e.name === 'NODE_NAME');
    assert.deepEqual(get(env, 'valueFrom', 'fieldRef', 'fieldPath'), 'spec.nodeName');
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
    assert.equal(conf.mode, 'iptables');
    assert.match(String(conf.clusterCIDR), /^\d+\.\d+\.\d+\.\d+\/\d+$/);
    assert.equal(get(conf, 'iptables', 'minSyncPeriod'), '1s');
    assert.equal(get(conf, 'iptables', 'syncPeriod'), '30s');
    assert.equal(conf.metricsBindAddress, '127.0.0.1:10249');
    assert.equal(conf.healthzBindAddress, '0.0.0.0:10256');
    // Only KubeProxyConfiguration v1alpha1 fields (a typo would only be a warning at run time).
    for (const key of Object.keys(conf)) assert.ok(KUBE_PROXY_FIELDS.has(key), `unknown field ${key}`);
    for (const key of Object.keys(conf.iptables as Obj))
      assert.ok(IPTABLES_FIELDS.has(key), `unknown field iptables.${key}`);
    assert.equal(
      Number(String(conf.healthzBindAddress).split(':')[1]),
      get(container, 'readinessProbe', 'httpGet', 'port'),
    );
  });
});
