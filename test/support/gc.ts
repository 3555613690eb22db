import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

/**
 * A full, non-incremental garbage collection on demand, for tests that check what is retained
 * (issue 14: memory). `--expose-gc` set at run time gives the next context a `gc` function.
 */
setFlagsFromString('--expose-gc');
const collect = runInNewContext('gc') as () => void;

/** Collects garbage once the current job is over (WeakRef targets are kept alive until it ends). */
export async function fullGc(): Promise<void> {
  await new Promise<void>((resolve) => setImmediate(resolve));
  collect();
}

/** Bytes of the JavaScript heap in use after a full collection. */
export async function liveHeapBytes(): Promise<number> {
  await fullGc();
  return process.memoryUsage().heapUsed;
}
