import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { run } from '../src/util/exec.js';

/**
 * The benches' one way to measure in a child process and to write their results. A bench measures
 * each size in a process of its own (so peak RSS and heap are that size's own): the parent runs the
 * same file again (same node, same loader flags) with `--child …`; the child prints its result as
 * the last line of its stdout, JSON.
 */

/** The child's side: its result, as the last line of stdout. */
export function printChildResult(result: unknown): void {
  process.stdout.write(JSON.stringify(result) + '\n');
}

/** The JSON a child (or a bench run in User-mode Linux) printed last. */
export function lastJsonLine<T>(stdout: string): T {
  return JSON.parse(stdout.trim().split('\n').pop() ?? '') as T;
}

/** The parent's side: runs `self` again with `args` and returns the child's result; throws with its stderr. */
export async function runChild<T>(
  self: string,
  args: readonly string[],
  opts: { readonly what: string; readonly timeoutMs: number },
): Promise<T> {
  const res = await run([process.execPath, ...process.execArgv, self, ...args], {
    timeoutMs: opts.timeoutMs,
    allowFailure: true,
  });
  if (res.exitCode !== 0) throw new Error(`${opts.what} failed (${res.exitCode}): ${res.stderr}`);
  return lastJsonLine<T>(res.stdout);
}

/**
 * Writes a bench's results as JSON to `out`, by default bench/results/<prefix><date>.json under `root`
 * (scripts/bench.sh runs from the repository root), and says where on stdout.
 */
export async function writeResults(
  data: { readonly machine: { readonly date: string } } & Readonly<Record<string, unknown>>,
  opts: {
    readonly out: string | undefined;
    readonly prefix: string;
    readonly who: string;
    readonly root?: string;
  },
): Promise<string> {
  const stamp = data.machine.date.slice(0, 19).replace(/:/g, '-');
  const out = opts.out ?? join(opts.root ?? process.cwd(), 'bench', 'results', `${opts.prefix}${stamp}.json`);
  await mkdir(join(out, '..'), { recursive: true });
  await writeFile(out, JSON.stringify(data, null, 2) + '\n');
  process.stdout.write(`${opts.who}: results written to ${out}\n`);
  return out;
}
