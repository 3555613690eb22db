import assert from 'node:assert/strict';
import { propertySeed, withPropertySeed } from '../support/property.js';

/** Property tests explore new cases every run, print their seed, and replay one on request. */
describe('property test seeds', () => {
  it('vary from run to run, and SVCPLANE_PROPERTY_SEED replays one', () => {
    const seeds = new Set(Array.from({ length: 20 }, () => propertySeed({})));
    assert.ok(seeds.size > 15, `20 fresh seeds, ${seeds.size} distinct`);
    assert.equal(propertySeed({ SVCPLANE_PROPERTY_SEED: '4242' }), 4242);
    assert.throws(() => propertySeed({ SVCPLANE_PROPERTY_SEED: 'x' }), /not an integer/);
  });

  it('a failing property names its seed and how to replay it', () => {
    const saved = process.env.SVCPLANE_PROPERTY_SEED;
    process.env.SVCPLANE_PROPERTY_SEED = '77';
    try {
      assert.equal(
        withPropertySeed('t', (seed) => seed),
        77,
      );
      assert.throws(
        () =>
          withPropertySeed('t', () => {
            throw new Error('boom');
          }),
        /boom\n\(t: seed 77; replay with SVCPLANE_PROPERTY_SEED=77\)/,
      );
    } finally {
      if (saved === undefined) delete process.env.SVCPLANE_PROPERTY_SEED;
      else process.env.SVCPLANE_PROPERTY_SEED = saved;
    }
  });
});
