import type { NodeInfo, Service } from './types.js';

/**
 * The first state in parts while a source still loads it (issue 14: a 10k-file manifest load takes
 * seconds, and a new node's first full sync can start writing the Services loaded so far). Parts
 * are hints: the complete state the source publishes at the end is what a sync converges to.
 */
export interface LoadPart {
  /**
   * The Services, validated and joined with the EndpointSlices read so far, that came or changed
   * since the previous part; undefined: gone again (a later file redefined or invalidated it).
   */
  readonly services: ReadonlyMap<string, Service | undefined>;
  /** The Nodes read so far (all of them: the node facts come from this node's). */
  readonly nodes: ReadonlyMap<string, NodeInfo>;
}

/**
 * One producer's parts to any number of consumers (one backend per IP family), each with its own
 * queue. `end()` when the load completed, `fail()` when it did not: a consumer's iteration then
 * ends, or throws the error. Parts only hold references to Services the state holds anyway.
 */
export class LoadPartFeed {
  private readonly queues: Queue[] = [];
  private done: { error?: unknown } | undefined;

  push(part: LoadPart): void {
    if (this.done !== undefined || part.services.size === 0) return;
    for (const q of this.queues) q.push(part);
  }

  end(): void {
    this.finish({});
  }

  fail(error: unknown): void {
    this.finish({ error });
  }

  /** The parts pushed from now on (a consumer that subscribes late misses earlier ones). */
  subscribe(): AsyncIterable<LoadPart> {
    const q = new Queue();
    if (this.done !== undefined) q.finish(this.done);
    else this.queues.push(q);
    return q;
  }

  private finish(done: { error?: unknown }): void {
    if (this.done !== undefined) return;
    this.done = done;
    for (const q of this.queues) q.finish(done);
    this.queues.length = 0;
  }
}

class Queue implements AsyncIterable<LoadPart> {
  private readonly parts: LoadPart[] = [];
  private done: { error?: unknown } | undefined;
  private wake: (() => void) | undefined;

  push(part: LoadPart): void {
    this.parts.push(part);
    this.wake?.();
  }

  finish(done: { error?: unknown }): void {
    this.done = done;
    this.wake?.();
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<LoadPart, void, undefined> {
    for (;;) {
      const part = this.parts.shift();
      if (part !== undefined) {
        yield part;
        continue;
      }
      if (this.done !== undefined) {
        if ('error' in this.done) throw this.done.error;
        return;
      }
      await new Promise<void>((resolve) => (this.wake = resolve));
      this.wake = undefined;
    }
  }
}
