/**
 * The Kubernetes API as a StateSource: three reflectors (Services, EndpointSlices, this Node), and
 * with NetworkPolicy enforcement three more (NetworkPolicies, Pods, Namespaces: policy-resources.ts),
 * one validated ClusterState built from their stores.
 *
 * - `start()` resolves only once every initial list is complete (no sync from a partial view).
 * - Changes are batched (`debounceMs`); the objects that changed (another object, at another
 *   resourceVersion, or gone) are handed to the incremental state builder, one group per object, so a
 *   change costs what it touches (issue 14). A new state is emitted only when something changed: a
 *   relist after a reconnect that finds the same objects emits nothing, so the dataplane sees no churn.
 * - During an API outage the last state stays current; `health()` turns unhealthy once a reflector
 *   has been disconnected for longer than `healthGraceMs`, and recovers by itself.
 */
import { KubeConfig } from '@kubernetes/client-node';
import { ClusterStateBuilder } from '../model/build.js';
import type { ClusterState } from '../model/types.js';
import { SERVICE_PROXY_NAME_LABEL } from '../model/types.js';
import { log } from '../util/log.js';
import { kubeTransport, Reflector } from './informer.js';
import type { ApiErrorCategory, ApiTransport, ReflectorOptions, ResourceSpec } from './informer.js';
import { NETWORK_POLICY_RESOURCES } from './policy-resources.js';
import type { SourceHealth, SourceProblem, StateSource } from './source.js';

export interface ApiSourceOptions {
  /** This node's name (kube-proxy's hostname / --hostname-override): the Node informer's field selector. */
  readonly nodeName: string;
  /** Batch window for changes before a state is built. Default 10 ms. */
  readonly debounceMs?: number;
  /** Disconnected longer than this → unhealthy. Default 60 s. */
  readonly healthGraceMs?: number;
  readonly reflector?: Partial<ReflectorOptions>;
  /** Builds the state (with the Service limits); tests pass one that records what it is handed. */
  readonly builder?: ClusterStateBuilder;
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

/** Same object at the same version: a relist hands over new objects for unchanged ones. */
function sameVersion(a: unknown, b: unknown): boolean {
  const rv = (o: unknown): unknown =>
    (o as { metadata?: { resourceVersion?: unknown } }).metadata?.resourceVersion;
  const v = rv(a);
  return typeof v === 'string' && v !== '' && v === rv(b);
}

export class ApiSource implements StateSource {
  private readonly reflectors: readonly Reflector[];
  private readonly listeners = new Set<(state: ClusterState) => void>();
  private readonly debounceMs: number;
  private readonly healthGraceMs: number;
  private readonly builder: ClusterStateBuilder;
  /** Per reflector, the objects handed to the builder, by key. */
  private readonly handed: Map<string, unknown>[];
  private readonly now: () => number;
  private state?: ClusterState;
  private timer?: NodeJS.Timeout;
  private started = false;
  private stopped = false;
  private unsubscribes: (() => void)[] = [];

  constructor(api: KubeConfig | ApiTransport, options: ApiSourceOptions) {
    if (options.nodeName === '') throw new Error('ApiSource: nodeName is required (the Node field selector)');
    const transport = api instanceof KubeConfig ? kubeTransport(api) : api;
    this.debounceMs = options.debounceMs ?? 10;
    this.healthGraceMs = options.healthGraceMs ?? 60_000;
    this.builder = options.builder ?? new ClusterStateBuilder();
    this.now = options.now ?? Date.now;
    const specs = resourceSpecs(options.nodeName);
    const policy = options.networkPolicy ? NETWORK_POLICY_RESOURCES : [];
    this.reflectors = [specs.services, specs.slices, specs.node, ...policy].map(
      (s) => new Reflector(transport, s, options.reflector ?? {}, this.now),
    );
    this.handed = this.reflectors.map(() => new Map<string, unknown>());
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

  /** Hands the changed objects to the builder; emits the new state if anything changed. */
  private rebuild(initial: boolean): void {
    let state: ClusterState;
    let changed = false;
    try {
      this.reflectors.forEach((r, i) => {
        const handed = this.handed[i]!;
        const items = r.items();
        // One group per object, named so that the builder reads them reflector by reflector, by key.
        const group = (key: string): string => `${i}\u0000${key}`;
        for (const [key, obj] of items) {
          const before = handed.get(key);
          if (before === obj) continue;
          handed.set(key, obj);
          if (before !== undefined && sameVersion(before, obj)) continue;
          this.builder.set(group(key), [{ obj }]);
          changed = true;
        }
        for (const key of handed.keys()) {
          if (items.has(key)) continue;
          handed.delete(key);
          this.builder.delete(group(key));
          changed = true;
        }
      });
      state = this.builder.build();
    } catch (err) {
      // Bad objects are reported as problems by the builder; an exception is a bug. Keep the last state.
      log.error('building the cluster state failed; keeping the previous state', {
        error: err instanceof Error ? err.message : String(err),
      });
      return;
    }
    if (!initial && (!changed || state === this.state)) {
      // A relist (410, reconnect) that found the same objects at the same versions: no new state,
      // nothing for the dataplane to do.
      log.verbose('objects unchanged; no new state', {
        objects: this.reflectors.map((r) => `${r.spec.name}=${r.items().size}`).join(' '),
      });
      return;
    }
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
