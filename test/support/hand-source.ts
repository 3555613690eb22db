import type { SourceHealth, StateSource } from '../../src/kube/source.js';
import type { ClusterState } from '../../src/model/types.js';

/**
 * A StateSource the test drives by hand, in place of the manifest or API source: `set(state)` hands a
 * new state to the listeners (as a reflector's event would), `change()` a new state object with the
 * same content, and `healthValue` is what `health()` reports.
 */
export class HandSource implements StateSource {
  private readonly listeners = new Set<(s: ClusterState) => void>();
  healthValue: SourceHealth = { healthy: true };

  constructor(private s: ClusterState = { services: new Map(), nodes: new Map(), problems: [] }) {}

  start(): Promise<void> {
    return Promise.resolve();
  }
  current(): ClusterState {
    return this.s;
  }
  onChange(fn: (s: ClusterState) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }
  health(): SourceHealth {
    return this.healthValue;
  }
  stop(): Promise<void> {
    return Promise.resolve();
  }
  set(s: ClusterState): void {
    this.s = s;
    for (const l of this.listeners) l(s);
  }
  change(): void {
    this.set({ ...this.s });
  }
}
