/**
 * Seeds for property tests: a fresh one every run (so runs explore different cases), printed, and
 * replayable with SVCPLANE_PROPERTY_SEED=<seed>. A failure carries its seed in the message.
 */

/** The seed to use: SVCPLANE_PROPERTY_SEED when set (replay), else a fresh random 31-bit one. */
export function propertySeed(env: NodeJS.ProcessEnv = process.env): number {
  const fixed = env.SVCPLANE_PROPERTY_SEED;
  if (fixed !== undefined && fixed !== '') {
    const n = Number(fixed);
    if (!Number.isSafeInteger(n)) throw new Error(`SVCPLANE_PROPERTY_SEED=${fixed}: not an integer`);
    return n;
  }
  return Math.floor(Math.random() * 0x7fffffff);
}

/** Runs `body` with this run's seed, printing it, and adds the seed (and how to replay it) to a failure. */
export function withPropertySeed<T>(what: string, body: (seed: number) => T): T {
  const seed = propertySeed();
  const replay = `replay with SVCPLANE_PROPERTY_SEED=${seed}`;
  console.log(`      (${what}: seed ${seed}; ${replay})`);
  try {
    return body(seed);
  } catch (err) {
    if (err instanceof Error) err.message += `\n(${what}: seed ${seed}; ${replay})`;
    throw err;
  }
}
