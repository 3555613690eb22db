import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

/** V8's gc() of `--expose-gc`, with the options of its GC extension. */
type GcFunction = (opts: { type: 'major'; execution: 'sync'; flavor: 'last-resort' }) => void;
let gc: GcFunction | undefined;

/**
 * Gives back the memory a burst of allocation left committed (issue 14: peak RSS at 10k Services).
 * A load of many manifests grows V8's young generation to its maximum and lets the old generation
 * grow to ~4 × its live size before the next mark-compact; V8 keeps those pages, and the first full
 * sync then allocates on top of them, so the load's garbage set the process's peak. A memory-reducing
 * full collection (V8's "last resort": mark-compacts until nothing more is freed, the young generation
 * shrunk, free pages released) right after the load starts the sync from the live heap only.
 * Measured at 10k Services: `svcplane sync` peak RSS ~280 → ~220 MB for ~0.1–0.3 s of CPU.
 * `--expose-gc` set at run time gives the next context a `gc` function (the main one is untouched).
 */
export function releaseMemory(): void {
  if (gc === undefined) {
    setFlagsFromString('--expose-gc');
    gc = runInNewContext('gc') as GcFunction;
  }
  gc({ type: 'major', execution: 'sync', flavor: 'last-resort' });
}

/**
 * The daemon's young generation: V8 flag and value (MB per semi-space; 4 → 8 MB of new space).
 * V8's default lets the young generation grow to 3 × 32 MB during a 10k load and again during the
 * first full sync: ~60 MB committed at the daemon's peak (issue 14: 297–306 MB against 250). Only
 * set when node starts (V8 sizes the young generation once: setting it at run time does nothing), so
 * bin/svcplane.js starts the daemon again with it (daemonNodeArgv).
 */
export const DAEMON_SEMI_SPACE_FLAG = '--max-semi-space-size';
export const DAEMON_SEMI_SPACE_MB = 4;

/**
 * The command line to start node again with for the daemon's young generation, or undefined when
 * it is in effect already or chosen by the user (on node's command line or in NODE_OPTIONS).
 */
export function daemonNodeArgv(
  execPath: string,
  execArgv: readonly string[],
  args: readonly string[],
  nodeOptions: string | undefined,
): string[] | undefined {
  const chosen = (a: string): boolean =>
    a === DAEMON_SEMI_SPACE_FLAG ||
    a.startsWith(`${DAEMON_SEMI_SPACE_FLAG}=`) ||
    a === '--max_semi_space_size' ||
    a.startsWith('--max_semi_space_size=');
  if (execArgv.some(chosen) || (nodeOptions ?? '').split(/\s+/).some(chosen)) return undefined;
  return [execPath, `${DAEMON_SEMI_SPACE_FLAG}=${DAEMON_SEMI_SPACE_MB}`, ...execArgv, ...args];
}

/**
 * During the daemon's first full sync V8's old generation grows to live × (1 + this / 100) before
 * its next mark-compact, instead of V8's own factor (1.1–4, from its collector's speed): the sync's
 * garbage, promoted from the smaller young generation, is collected on the way rather than held to
 * the peak. Read by V8 at each mark-compact, so it can be set at run time.
 */
const STARTUP_HEAP_GROWING_PERCENT = 30;

/** From the end of the load to the end of the first full sync (see above). */
export function startupHeapGrowth(): void {
  setFlagsFromString(`--heap-growing-percent=${STARTUP_HEAP_GROWING_PERCENT}`);
}

/**
 * After the first sync: V8's own growing factor again (0: computed from the collector's speed),
 * so that idle and partial syncs do not pay a mark-compact every 30% of garbage.
 */
export function defaultHeapGrowth(): void {
  setFlagsFromString('--heap-growing-percent=0');
}
