import type { SourceHealth, StateSource } from '../kube/source.js';
import type { ClusterState } from '../model/types.js';
import { log } from '../util/log.js';
import type { ProxyOptions } from '../config/options.js';

/**
 * --detect-local-mode=NodeCIDR as kube-proxy does it (cmd/kube-proxy server): at startup, wait for
 * this node's Node object to carry `spec.podCIDRs`, build the detector from them once, and restart
 * (exit) when they change later. The pod CIDRs travel in ProxyOptions.nodePodCIDRs to the proxiers.
 */

/** kube-proxy's timeoutForNodePodCIDR. */
export const NODE_POD_CIDR_TIMEOUT_MS = 5 * 60_000;

/** This node's pod CIDRs in `state`; undefined when the Node object is absent. */
export function nodePodCIDRsOf(
  state: ClusterState | undefined,
  nodeName: string,
): readonly string[] | undefined {
  return state?.nodes.get(nodeName)?.podCIDRs;
}

/** A source whose start() runs once: the CLI reads the Node before the controller starts the source. */
export class StartOnceSource implements StateSource {
  private started: Promise<void> | undefined;

  constructor(readonly inner: StateSource) {}

  start(): Promise<void> {
    this.started ??= this.inner.start();
    return this.started;
  }

  current(): ClusterState | undefined {
    return this.inner.current();
  }

  onChange(listener: (state: ClusterState) => void): () => void {
    return this.inner.onChange(listener);
  }

  health(): SourceHealth {
    return this.inner.health();
  }

  async stop(): Promise<void> {
    this.started = undefined;
    await this.inner.stop();
  }
}

/**
 * Options with `nodePodCIDRs` set from the Node object, for NodeCIDR mode (other modes: unchanged,
 * the source is not started). Starts `source` and waits up to `waitMs` for the Node to have pod
 * CIDRs (0: only the first state counts, as `svcplane sync` wants). Throws naming the node and
 * what is missing. A family without a pod CIDR gets no detector, with kube-proxy's warning.
 */
export async function resolveNodePodCIDRs(
  opts: ProxyOptions,
  source: StateSource,
  waitMs: number,
  /** Ends the wait early (svcplane stopping): then it throws like a timeout. */
  signal?: AbortSignal,
): Promise<ProxyOptions> {
  // Every mode's detector needs them (IPVS too: kube-proxy shares one LocalTrafficDetector).
  if (opts.detectLocalMode !== 'NodeCIDR') return opts;
  await source.start();
  const node = opts.hostnameOverride;
  const has = (s: ClusterState | undefined): readonly string[] | undefined => {
    const cidrs = nodePodCIDRsOf(s, node);
    return cidrs !== undefined && cidrs.length > 0 ? cidrs : undefined;
  };
  let podCIDRs = has(source.current());
  if (podCIDRs === undefined && waitMs > 0) {
    log.info('detect-local-mode NodeCIDR: waiting for the Node object to get spec.podCIDRs', { node });
    podCIDRs = await new Promise<readonly string[] | undefined>((resolve) => {
      const done = (found: readonly string[] | undefined): void => {
        clearTimeout(timer);
        unsubscribe();
        signal?.removeEventListener('abort', aborted);
        resolve(found);
      };
      const aborted = (): void => done(undefined);
      const timer = setTimeout(() => done(undefined), waitMs);
      signal?.addEventListener('abort', aborted, { once: true });
      if (signal?.aborted) aborted();
      const unsubscribe = source.onChange((s) => {
        const found = has(s);
        if (found !== undefined) done(found);
      });
      // A state that arrived between the first look and the subscription.
      const now = has(source.current());
      if (now !== undefined) done(now);
    });
  }
  if (podCIDRs === undefined) {
    const present = nodePodCIDRsOf(source.current(), node) !== undefined;
    throw new Error(
      `--detect-local-mode=NodeCIDR: ${present ? `Node "${node}" has no spec.podCIDRs` : `no Node object named "${node}"`}` +
        (waitMs > 0 ? ` after ${Math.round(waitMs / 1000)} s` : '') +
        ' (the detector needs the pod CIDR allocated to this node)',
    );
  }
  for (const family of opts.ipFamilies) {
    if (!podCIDRs.some((c) => (c.includes(':') ? 'IPv6' : 'IPv4') === family)) {
      log.warn(
        'detect-local-mode NodeCIDR: the Node has no pod CIDR of this family; no local-traffic detection',
        {
          node,
          family,
          podCIDRs: podCIDRs.join(','),
        },
      );
    }
  }
  log.info('detect-local-mode NodeCIDR', { node, podCIDRs: podCIDRs.join(',') });
  return { ...opts, nodePodCIDRs: podCIDRs };
}

/**
 * kube-proxy's NodePodCIDRHandler: calls `onChanged` once when this node's pod CIDRs differ from the
 * ones the detector was built with (kube-proxy exits then, to be restarted with the new ones). A
 * missing Node object is not a change. Returns an unsubscribe function.
 */
export function watchNodePodCIDRs(
  source: StateSource,
  nodeName: string,
  initial: readonly string[],
  onChanged: (now: readonly string[]) => void,
): () => void {
  let fired = false;
  const unsubscribe = source.onChange((s) => {
    const now = nodePodCIDRsOf(s, nodeName);
    if (fired || now === undefined) return;
    if (now.length === initial.length && now.every((c, i) => c === initial[i])) return;
    fired = true;
    onChanged(now);
  });
  return unsubscribe;
}
