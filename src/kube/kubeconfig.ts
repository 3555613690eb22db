/**
 * Explicit cluster configuration: `--kubeconfig FILE`, else in-cluster (service account), else a
 * clear error. Never client-node's `loadFromDefault()`, which silently falls back to localhost:8080.
 */
import fs from 'node:fs';
import { dirname, isAbsolute, join } from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';
import { parse as parseYaml } from 'yaml';
import type { Cluster } from '@kubernetes/client-node';
import { redactUrlCredentials } from '../util/log.js';

export const SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

export interface LoadKubeConfigOptions {
  /** `--kubeconfig`: path to a kubeconfig file. */
  readonly kubeconfig?: string;
  /** `--master`: API server URL; overrides the kubeconfig's server (as in kube-proxy). */
  readonly master?: string;
  /** Environment (tests). Default `process.env`. */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** Prefix for the service-account paths (tests). Default ''. */
  readonly inClusterPathPrefix?: string;
}

export class KubeConfigError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'KubeConfigError';
  }
}

/**
 * Why a kubeconfig could not be loaded, without quoting the file: the YAML parser's message carries
 * an excerpt of the lines around the error, which can hold a token or a client key. Keeps the
 * parser's reason and the position; other errors (missing file, missing fields) by their first line.
 */
export function describeLoadError(err: unknown): string {
  const e = err as { reason?: unknown; mark?: { line?: unknown; column?: unknown } } | null;
  const mark = typeof e === 'object' && e !== null ? e.mark : undefined;
  if (
    typeof e?.reason === 'string' &&
    mark !== undefined &&
    typeof mark.line === 'number' &&
    typeof mark.column === 'number'
  ) {
    return `invalid YAML: ${e.reason} at line ${mark.line + 1}, column ${mark.column + 1}`;
  }
  const text = err instanceof Error ? err.message : String(err);
  return text.split('\n')[0]!.slice(0, 300);
}

export const NO_CLUSTER_CONFIG =
  'no cluster configuration: pass --kubeconfig, run in a pod, or use --manifests';

/** client-node refuses plain-HTTP servers unless skipTLSVerify is set (there is no TLS to verify). */
function withHttpFix(c: Cluster, server = c.server): Cluster {
  const plain = server.startsWith('http://');
  return { ...c, server, skipTLSVerify: plain ? true : c.skipTLSVerify };
}

function checkServerUrl(server: string, what: string): void {
  let u: URL;
  try {
    u = new URL(server);
  } catch {
    throw new KubeConfigError(`${what}: invalid API server URL "${redactUrlCredentials(server)}"`);
  }
  if (u.protocol !== 'https:' && u.protocol !== 'http:') {
    throw new KubeConfigError(
      `${what}: API server URL "${redactUrlCredentials(server)}" must be http:// or https://`,
    );
  }
}

/** Rewrites the current cluster (master override, plain-HTTP fix) in place. */
function fixCurrentCluster(kc: KubeConfig, what: string, master?: string): void {
  const current = kc.getCurrentCluster();
  if (!current) {
    throw new KubeConfigError(
      `${what}: no current cluster (current-context "${kc.getCurrentContext() ?? ''}" missing or without a cluster)`,
    );
  }
  const server = master ?? current.server;
  if (!server) throw new KubeConfigError(`${what}: cluster "${current.name}" has no server`);
  checkServerUrl(server, what);
  kc.clusters = kc.clusters.map((c) => (c.name === current.name ? withHttpFix(c, server) : c));
}

/**
 * Loads the cluster configuration the way kube-proxy chooses it:
 * 1. `kubeconfig` given → that file (with `master` overriding its server);
 * 2. in a pod (KUBERNETES_SERVICE_HOST/PORT and a service-account token) → in-cluster config
 *    (with `master` overriding the server);
 * 3. only `master` → that server, no credentials;
 * 4. otherwise → KubeConfigError (never a silent localhost default).
 */
export function loadKubeConfig(options: LoadKubeConfigOptions = {}): KubeConfig {
  const env = options.env ?? process.env;
  const master = options.master === '' ? undefined : options.master;
  if (master !== undefined) checkServerUrl(master, '--master');
  const kc = new KubeConfig();

  if (options.kubeconfig) {
    const file = options.kubeconfig;
    try {
      kc.loadFromFile(file);
    } catch (err) {
      // No `cause`: the original error's message quotes the file.
      throw new KubeConfigError(`cannot load kubeconfig ${file}: ${describeLoadError(err)}`);
    }
    fixCurrentCluster(kc, `kubeconfig ${file}`, master);
    useTokenFiles(kc, file);
    return kc;
  }

  const prefix = options.inClusterPathPrefix ?? '';
  const host = env.KUBERNETES_SERVICE_HOST;
  const port = env.KUBERNETES_SERVICE_PORT;
  if (host && port) {
    const tokenFile = `${prefix}${SERVICE_ACCOUNT_DIR}/token`;
    if (!fs.existsSync(tokenFile)) {
      throw new KubeConfigError(
        `in-cluster configuration: KUBERNETES_SERVICE_HOST is set but the service-account token ${tokenFile} ` +
          'is missing (automountServiceAccountToken: false?)',
      );
    }
    // client-node reads the env itself; keep it in step with `env` for tests.
    const saved = { host: process.env.KUBERNETES_SERVICE_HOST, port: process.env.KUBERNETES_SERVICE_PORT };
    process.env.KUBERNETES_SERVICE_HOST = host;
    process.env.KUBERNETES_SERVICE_PORT = port;
    try {
      kc.loadFromCluster(prefix);
    } finally {
      restoreEnv('KUBERNETES_SERVICE_HOST', saved.host);
      restoreEnv('KUBERNETES_SERVICE_PORT', saved.port);
    }
    fixCurrentCluster(kc, 'in-cluster configuration', master);
    return kc;
  }

  if (master !== undefined) {
    kc.loadFromClusterAndUser(withHttpFix({ name: 'master', server: master, skipTLSVerify: false }), {
      name: 'anonymous',
    });
    return kc;
  }

  throw new KubeConfigError(NO_CLUSTER_CONFIG);
}

/**
 * The kinds of credentials the current user has that will NOT be sent because the server is plain
 * `http://` (client-go reads a user's auth only for a TLS transport, and so does svcplane's
 * transport); empty when none or when the server is https. Pure.
 */
export function credentialsWithheldOverHttp(kc: KubeConfig): string[] {
  const server = kc.getCurrentCluster()?.server ?? '';
  const user = kc.getCurrentUser();
  if (!server.startsWith('http://') || !user) return [];
  const kinds: string[] = [];
  if (user.token) kinds.push('token');
  if (user.username || user.password) kinds.push('basic auth');
  if (user.exec) kinds.push('exec plugin');
  if (user.authProvider) kinds.push('auth provider');
  if (user.certData || user.certFile || user.keyData || user.keyFile) kinds.push('client certificate');
  return kinds;
}

/**
 * client-go's `tokenFile` user field (kubeadm's kube-proxy kubeconfig.conf authenticates with the
 * pod's service-account token that way), which client-node does not read: without this, the requests
 * go out anonymous and the API server answers 401. Becomes client-node's token-file provider, which
 * re-reads the file every minute (projected tokens rotate), as client-go does. A relative path is
 * relative to the kubeconfig's directory, as in client-go.
 */
function useTokenFiles(kc: KubeConfig, file: string): void {
  let doc: unknown;
  try {
    doc = parseYaml(fs.readFileSync(file, 'utf8'));
  } catch {
    return; // client-node read it already; nothing more to learn here
  }
  const users = (doc as { users?: unknown } | null)?.users;
  if (!Array.isArray(users)) return;
  const tokenFiles = new Map<string, string>();
  for (const u of users as { name?: unknown; user?: { tokenFile?: unknown } }[]) {
    const tf = u?.user?.tokenFile;
    if (typeof u?.name === 'string' && typeof tf === 'string' && tf !== '') {
      tokenFiles.set(u.name, isAbsolute(tf) ? tf : join(dirname(file), tf));
    }
  }
  if (tokenFiles.size === 0) return;
  kc.users = kc.users.map((user) => {
    const tokenFile = tokenFiles.get(user.name);
    if (tokenFile === undefined || user.token || user.authProvider || user.exec) return user;
    return { ...user, authProvider: { name: 'tokenFile', config: { tokenFile } } };
  });
}

function restoreEnv(name: string, value: string | undefined): void {
  if (value === undefined) delete process.env[name];
  else process.env[name] = value;
}
