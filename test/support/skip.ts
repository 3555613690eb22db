import type { Context, Runnable, Suite } from 'mocha';

/**
 * The one way a test skips: with a reason. test/support/reporter.cjs reads the reason, prints it in
 * the closing line and turns the skip into a failure unless SVCPLANE_SKIP names the test's suite
 * (unit, integration, ipvs, docker). A bare `this.skip()` is refused by ESLint outside this file.
 */

const REASONS = Symbol.for('svcplane.skipReasons');

function reasons(): WeakMap<object, string> {
  const g = globalThis as { [REASONS]?: WeakMap<object, string> };
  return (g[REASONS] ??= new WeakMap<object, string>());
}

/** Skips the current test (in `it` or `beforeEach`) or the whole suite (in `before`), saying why. */
export function skipBecause(ctx: Context, reason: string): never {
  const runnable: Runnable | undefined = ctx.test;
  // In a hook, the reason belongs to what the hook skips: the current test (beforeEach) or the suite.
  const isHook = (runnable as { type?: string } | undefined)?.type === 'hook';
  const target: Runnable | Suite | undefined = isHook ? (ctx.currentTest ?? runnable?.parent) : runnable;
  if (target) reasons().set(target, reason);
  console.log(`      (skipping: ${reason})`);
  ctx.skip();
}
