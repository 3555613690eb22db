/**
 * The Kubernetes API as a StateSource: three reflectors (Services, EndpointSlices, this Node), and
 * with NetworkPolicy enforcement three more (NetworkPolicies, Pods, Namespaces: policy-resources.ts),
 * one validated ClusterState built from their stores.
 *
 * - `start()` resolves only once every initial list is complete (no sync from a partial view).
 * - Changes are batched (`debounceMs`) and a new state is emitted only when the set of
 *   (object, resourceVersion) pairs changed: a relist after a reconnect that finds the same objects
 *   emits nothing, so the dataplane sees no churn.
 * - During an API outage the last state stays current; `health()` turns unhealthy once a reflector
 *   has been disconnected for longer than `healthGraceMs`, and recovers by itself.
 */
import { KubeConfig } from '@kubernetes/client-node';
import { buildClusterState } from '../model/build.js';
import type { SourceObject } from '../model/build.js';
import type { ClusterState } from '../model/types.js';
import { SERVICE_PROXY_NAME_LABEL } from '../model/types.js';
import { log } from '../util/log.js';
import { kubeTransport, Reflector } from './informer.js';
import type { ApiErrorCategory, ApiTransport, ReflectorOptions, ResourceSpec } from './informer.js';
import { NETWORK_POLICY_RESOURCES } from './policy-resources.js';
import type { SourceHealth, SourceProblem, StateSource } from './source.js';

/** `buildClusterState`'s signature (API objects carry no `source`). */
export type BuildState = (objects: readonly SourceObject[], previous?: ClusterState) => ClusterState;

export interface ApiSourceOptions {
  /** This node's name (kube-proxy's hostname / --hostname-override): the Node informer's field selector. */
  readonly nodeName: string;
  /** Batch window for changes before a state is built. Default 10 ms. */
  readonly debounceMs?: number;
  /** Disconnected longer than this → unhealthy. Default 60 s. */
  readonly healthGraceMs?: number;
  readonly reflector?: Partial<ReflectorOptions>;
  /** Defaults to the model's `buildClusterState`. */
  readonly build?: BuildState;
  /** Also watch what NetworkPolicy enforcement reads (NetworkPolicies, Pods, Namespaces). Default off. */
  readonly networkPolicy?: boolean;
  readonly now?: () => number;
}

/** kube-proxy's informer selectors (pkg/proxy: headless and foreign-proxy objects are not watched). */
export function resourceSpecs(nodeName: string): {
  services: ResourceSpec;
  slices: ResourceSpec;
  node: ResourceSpec;
} {
  return {
    services: {
      name: 'services',
      path: '/api/v1/services',
      kind: 'Service',
      apiVersion: 'v1',
      labelSelector: `!${SERVICE_PROXY_NAME_LABEL}`,
    },
    slices: {
      name: 'endpointslices',
      path: '/apis/discovery.k8s.io/v1/endpointslices',
      kind: 'EndpointSlice',
      apiVersion: 'discovery.k8s.io/v1',
      labelSelector: `!service.kubernetes.io/headless,!${SERVICE_PROXY_NAME_LABEL}`,
    },
    node: {
      name: 'nodes',
      path: '/api/v1/nodes',
      kind: 'Node',
      apiVersion: 'v1',
      fieldSelector: `metadata.name=${nodeName}`,
    },
  };
}

/** The most telling category first: a credential problem explains an "unreachable" elsewhere. */
const PROBLEM_ORDER: readonly ApiErrorCategory[] = [
  'credentials',
  'unauthorized',
  'forbidden',
  'tls',
  'bad-response',
  'server-error',
  'unreachable',
];

/** The source problem of the reflectors' failure categories. Pure. */
export function apiProblem(categories: readonly (ApiErrorCategory | undefined)[]): SourceProblem {
  const worst = PROBLEM_ORDER.find((c) => categories.includes(c)) ?? 'unreachable';
  return `api-${worst}`;
}

/**
 * Identity of the stores' content: kind/key@resourceVersion, sorted. Two equal fingerprints mean
 * the same objects at the same versions, hence the same state. Pure.
 */
export function storeFingerprint(
  stores: readonly (readonly [string, ReadonlyMap<string, unknown>])[],
): string {
  const parts: string[] = [];
  for (const [kind, store] of stores) {
    for (const [key, obj] of store) {
      const md = (obj as { metadata?: { resourceVersion?: unknown } }).metadata;
      const rv = md?.resourceVersion;
      parts.push(`${kind}/${key}@${typeof rv === 'string' ? rv : ''}`);
    }
  }
  return parts.sort().join('\n');
}

export class ApiSource implements StateSource {
  private readonly reflectors: readonly Reflector[];
  private readonly listeners = new Set<(state: ClusterState) => void>();
  private readonly debounceMs: number;
  private readonly healthGraceMs: number;
  private readonly build: BuildState;
  private readonly now: () => number;
  private state?: ClusterState;
  private fingerprint?: string;
  private timer?: NodeJS.Timeout;
  private started = false;
  private stopped = false;
  private unsubscribes: (() => void)[] = [];

  constructor(api: KubeConfig | ApiTransport, options: ApiSourceOptions) {
    if (options.nodeName === '') throw new Error('ApiSource: nodeName is required (the Node field selector)');
    const transport = api instanceof KubeConfig ? kubeTransport(api) : api;
    this.debounceMs = options.debounceMs ?? 10;
    this.healthGraceMs = options.healthGraceMs ?? 60_000;
    this.build = options.build ?? buildClusterState;
    this.now = options.now ?? Date.now;
    const specs = resourceSpecs(options.nodeName);
    const policy = options.networkPolicy ? NETWORK_POLICY_RESOURCES : [];
    this.reflectors = [specs.services, specs.slices, specs.node, ...policy].map(
      (s) => new Reflector(transport, s, options.reflector ?? {}, this.now),
    );
  }

  async start(): Promise<void> {
    if (this.started) throw new Error('ApiSource: already started');
    this.started = true;
    for (const r of this.reflectors) r.start();
    await Promise.all(this.reflectors.map((r) => r.waitForSync()));
    if (this.stopped) throw new Error('ApiSource: stopped before initial sync');
    this.rebuild(true);
    // Subscribe only now: changes during the initial lists are already in the first state.
    this.unsubscribes = this.reflectors.map((r) => r.onChange(() => this.schedule()));
    log.info('Kubernetes API source synced', {
      objects: this.reflectors.map((r) => `${r.spec.name}=${r.items().size}`).join(' '),
    });
  }

  current(): ClusterState | undefined {
    return this.state;
  }

  onChange(listener: (state: ClusterState) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  health(): SourceHealth {
    const now = this.now();
    const down: { name: string; secs: number; category: ApiErrorCategory | undefined }[] = [];
    for (const r of this.reflectors) {
      const st = r.status();
      if (st.disconnectedSince !== undefined && now - st.disconnectedSince > this.healthGraceMs) {
        down.push({
          name: r.spec.name,
          secs: Math.round((now - st.disconnectedSince) / 1000),
          category: st.lastErrorCategory,
        });
      }
    }
    if (down.length === 0) return { healthy: true };
    const problem = apiProblem(down.map((d) => d.category));
    return {
      healthy: false,
      problem,
      // Fixed words only: the failures' own text is in the reflectors' (redacted) warnings.
      reason: `${problem}: ${down.map((d) => `${d.name} for ${d.secs}s`).join(', ')}`,
    };
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    for (const u of this.unsubscribes) u();
    this.unsubscribes = [];
    await Promise.all(this.reflectors.map((r) => r.stop()));
  }

  private schedule(): void {
    if (this.timer || this.stopped) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.rebuild(false);
    }, this.debounceMs);
  }

  /** Builds and emits a new state if the objects (by resourceVersion) changed. */
  private rebuild(initial: boolean): void {
    const stores = this.reflectors.map((r) => [r.spec.name, r.items()] as const);
    const fp = storeFingerprint(stores);
    if (!initial && fp === this.fingerprint) {
      // A relist (410, reconnect) that found the same objects at the same versions: no new state,
      // nothing for the dataplane to do.
      log.verbose('objects unchanged; no new state', {
        objects: this.reflectors.map((r) => `${r.spec.name}=${r.items().size}`).join(' '),
      });
      return;
    }
    const objects: SourceObject[] = [];
    for (const r of this.reflectors) {
      for (const [, obj] of [...r.items()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
        objects.push({ obj });
    }
    let state: ClusterState;
    try {
      state = this.build(objects, this.state);
    } catch (err) {
      // Bad objects are reported as problems by the builder; an exception is a bug. Keep the last state.
      log.error('building the cluster state failed; keeping the previous state', {
        error: err instanceof Error ? err.message : String(err),
      });
      return;
    }
    this.fingerprint = fp;
    this.state = state;
    if (initial) return;
    for (const l of this.listeners) {
      try {
        l(state);
      } catch (err) {
        log.error('state listener failed', { error: err instanceof Error ? err.message : String(err) });
      }
    }
  }
}
