import assert from 'node:assert/strict';
import {
  nodePodCIDRsOf,
  resolveNodePodCIDRs,
  StartOnceSource,
  watchNodePodCIDRs,
} from '../../../src/cli/node-cidr.js';
import { iptablesProxierConfig } from '../../../src/iptables/mode.js';
import { optionsFromArgs, type ProxyOptions } from '../../../src/config/options.js';
import { localDetectorFor } from '../../../src/iptables/proxier.js';
import { ipvsConfigFor } from '../../../src/ipvs/backend-factory.js';
import { ipvsRulesConfig } from '../../../src/ipvs/proxier.js';
import type { SourceHealth, StateSource } from '../../../src/kube/source.js';
import { buildClusterState } from '../../../src/model/build.js';
import type { ClusterState } from '../../../src/model/types.js';
import { log } from '../../../src/util/log.js';

/** --detect-local-mode=NodeCIDR: the Node's spec.podCIDRs, read at startup as kube-proxy does. */

function options(args: string[]): ProxyOptions {
  return optionsFromArgs(['--hostname-override=node-1', ...args]);
}

function stateWithNode(spec: Record<string, unknown> | undefined): ClusterState {
  return buildClusterState(
    spec === undefined
      ? []
      : [{ obj: { apiVersion: 'v1', kind: 'Node', metadata: { name: 'node-1' }, spec }, source: 'n#0' }],
  );
}

/** A source whose states the test hands in (start() counts its calls). */
class ScriptedSource implements StateSource {
  starts = 0;
  private state: ClusterState | undefined;
  private readonly listeners = new Set<(s: ClusterState) => void>();

  constructor(private readonly first: ClusterState) {}

  start(): Promise<void> {
    this.starts++;
    this.state = this.first;
    return Promise.resolve();
  }
  current(): ClusterState | undefined {
    return this.state;
  }
  onChange(listener: (state: ClusterState) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
  health(): SourceHealth {
    return { healthy: true };
  }
  stop(): Promise<void> {
    return Promise.resolve();
  }
  emit(state: ClusterState): void {
    this.state = state;
    for (const l of [...this.listeners]) l(state);
  }
  get listenerCount(): number {
    return this.listeners.size;
  }
}

async function quietly<T>(fn: () => Promise<T>): Promise<T> {
  log.silent = true;
  try {
    return await fn();
  } finally {
    log.silent = false;
  }
}

describe('--detect-local-mode=NodeCIDR', () => {
  it('the detector is -s <the Node pod CIDR of the family>; a family without one gets none', () => {
    const opts = { ...options(['--detect-local-mode=NodeCIDR']), nodePodCIDRs: ['10.244.7.0/24'] };
    assert.deepEqual(localDetectorFor(iptablesProxierConfig(opts, 'IPv4')), {
      mode: 'ClusterCIDR',
      cidr: '10.244.7.0/24',
    });
    assert.deepEqual(localDetectorFor(iptablesProxierConfig(opts, 'IPv6')), { mode: 'None' });
    const dual = { ...opts, nodePodCIDRs: ['10.244.7.0/24', 'fd00:10:244:7::/64'] };
    assert.deepEqual(localDetectorFor(iptablesProxierConfig(dual, 'IPv6')), {
      mode: 'ClusterCIDR',
      cidr: 'fd00:10:244:7::/64',
    });
  });

  it('--cluster-cidr does not stand in for the Node pod CIDR; unresolved pod CIDRs are an error', () => {
    const opts = options(['--detect-local-mode=NodeCIDR', '--cluster-cidr=10.244.0.0/16']);
    assert.throws(
      () => localDetectorFor(iptablesProxierConfig(opts, 'IPv4')),
      /NodeCIDR: the Node's pod CIDRs were not resolved/,
    );
    const resolved = { ...opts, nodePodCIDRs: ['10.244.9.0/24'] };
    assert.deepEqual(localDetectorFor(iptablesProxierConfig(resolved, 'IPv4')), {
      mode: 'ClusterCIDR',
      cidr: '10.244.9.0/24',
    });
  });

  it('BridgeInterface / InterfaceNamePrefix without their interface are errors in the proxier too', () => {
    const base = iptablesProxierConfig(options([]), 'IPv4');
    assert.throws(
      () => localDetectorFor({ ...base, detectLocalMode: 'BridgeInterface' }),
      /needs --pod-bridge-interface/,
    );
    assert.throws(
      () => localDetectorFor({ ...base, detectLocalMode: 'InterfaceNamePrefix' }),
      /needs --pod-interface-name-prefix/,
    );
    assert.deepEqual(
      localDetectorFor({ ...base, detectLocalMode: 'BridgeInterface', bridgeInterface: 'cbr0' }),
      {
        mode: 'BridgeInterface',
        name: 'cbr0',
      },
    );
  });

  it('resolves the pod CIDRs from the first state; other modes leave the source alone', async () => {
    const source = new ScriptedSource(stateWithNode({ podCIDRs: ['10.244.3.0/24', 'fd00:10:244:3::/64'] }));
    const other = await resolveNodePodCIDRs(options(['--cluster-cidr=10.244.0.0/16']), source, 0);
    assert.equal(other.nodePodCIDRs, undefined);
    assert.equal(source.starts, 0, 'not started for ClusterCIDR');
    const once = new StartOnceSource(source);
    const got = await quietly(() => resolveNodePodCIDRs(options(['--detect-local-mode=NodeCIDR']), once, 0));
    assert.deepEqual(got.nodePodCIDRs, ['10.244.3.0/24', 'fd00:10:244:3::/64']);
    await once.start();
    assert.equal(source.starts, 1, 'the controller starting it again does not restart the source');
  });

  it('IPVS mode resolves them too (main failed: "the Node\'s pod CIDRs were not resolved")', async () => {
    const source = new ScriptedSource(stateWithNode({ podCIDRs: ['10.244.5.0/24'] }));
    const opts = options(['--proxy-mode=ipvs', '--detect-local-mode=NodeCIDR']);
    const got = await quietly(() => resolveNodePodCIDRs(opts, source, 0));
    assert.deepEqual(got.nodePodCIDRs, ['10.244.5.0/24']);
    assert.deepEqual(ipvsRulesConfig(ipvsConfigFor(got, 'IPv4'), true).notLocal, [
      '!',
      '-s',
      '10.244.5.0/24',
    ]);
  });

  it('fails clearly when the Node is missing or has no pod CIDR (sync: no waiting)', async () => {
    const opts = options(['--detect-local-mode=NodeCIDR']);
    await assert.rejects(
      resolveNodePodCIDRs(opts, new ScriptedSource(stateWithNode(undefined)), 0),
      /--detect-local-mode=NodeCIDR: no Node object named "node-1"/,
    );
    await assert.rejects(
      resolveNodePodCIDRs(opts, new ScriptedSource(stateWithNode({})), 0),
      /--detect-local-mode=NodeCIDR: Node "node-1" has no spec.podCIDRs/,
    );
  });

  it('run: waits for the pod CIDR to be allocated, and gives up after the timeout', async () => {
    const opts = options(['--detect-local-mode=NodeCIDR']);
    const source = new ScriptedSource(stateWithNode({}));
    const pending = quietly(() => resolveNodePodCIDRs(opts, source, 5_000));
    await new Promise((r) => setTimeout(r, 10));
    source.emit(stateWithNode({ podCIDR: '10.244.5.0/24' }));
    assert.deepEqual((await pending).nodePodCIDRs, ['10.244.5.0/24']);
    assert.equal(source.listenerCount, 0, 'unsubscribed');
    await assert.rejects(
      quietly(() => resolveNodePodCIDRs(opts, new ScriptedSource(stateWithNode({})), 20)),
      /has no spec.podCIDRs after 0 s/,
    );
  });

  it('a later change of the pod CIDRs is reported once (kube-proxy restarts); a missing Node is not', () => {
    const source = new ScriptedSource(stateWithNode({ podCIDRs: ['10.244.3.0/24'] }));
    const seen: string[][] = [];
    const stop = watchNodePodCIDRs(source, 'node-1', ['10.244.3.0/24'], (now) => seen.push([...now]));
    source.emit(stateWithNode({ podCIDRs: ['10.244.3.0/24'] }));
    source.emit(stateWithNode(undefined));
    assert.deepEqual(seen, []);
    source.emit(stateWithNode({ podCIDRs: ['10.244.4.0/24'] }));
    source.emit(stateWithNode({ podCIDRs: ['10.244.5.0/24'] }));
    assert.deepEqual(seen, [['10.244.4.0/24']]);
    stop();
    assert.equal(source.listenerCount, 0);
    assert.deepEqual(nodePodCIDRsOf(stateWithNode({ podCIDRs: ['10.244.3.0/24'] }), 'node-1'), [
      '10.244.3.0/24',
    ]);
  });
});
