import assert from 'node:assert/strict';
import { loadConfiguration, RENDER_FLAGS } from '../../../src/cli/proxy-options.js';
import { resolveSchedulerFlags } from '../../../src/ipvs/types.js';

describe('IPVS scheduler flags', () => {
  it('defaults to kube-proxy’s: mh-port for mh, none otherwise', () => {
    assert.deepEqual(resolveSchedulerFlags('mh', undefined), ['mh-port']);
    assert.deepEqual(resolveSchedulerFlags('rr', undefined), []);
    assert.deepEqual(resolveSchedulerFlags('mh', []), []);
  });

  it('maps flag-1/flag-2 to the scheduler’s names, as ipvsadm -Sn prints them', () => {
    assert.deepEqual(resolveSchedulerFlags('mh', ['flag-2', 'flag-1']), ['mh-fallback', 'mh-port']);
    assert.deepEqual(resolveSchedulerFlags('sh', ['sh-port', 'flag-2']), ['sh-port']);
  });

  it('refuses flags a scheduler does not have, and flag-3', async () => {
    assert.throws(() => resolveSchedulerFlags('rr', ['flag-1']), /scheduler rr takes no flags/);
    assert.throws(() => resolveSchedulerFlags('sh', ['mh-port']), /not a flag of sh/);
    assert.throws(() => resolveSchedulerFlags('mh', ['flag-3']), /not a flag of mh/);
    await assert.rejects(
      loadConfiguration(['--ipvs-scheduler=wrr', '--ipvs-scheduler-flags=flag-2'], RENDER_FLAGS),
      /--ipvs-scheduler-flags/,
    );
    const sh = await loadConfiguration(
      ['--ipvs-scheduler=sh', '--ipvs-scheduler-flags=flag-1'],
      RENDER_FLAGS,
    );
    assert.deepEqual(sh.options.ipvs.schedulerFlags, ['flag-1']);
  });
});
