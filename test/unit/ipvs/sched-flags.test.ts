import assert from 'node:assert/strict';
import { resolveIpvsOptions } from '../../../src/ipvs/options.js';
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

  it('refuses flags a scheduler does not have, and flag-3', () => {
    assert.throws(() => resolveSchedulerFlags('rr', ['flag-1']), /scheduler rr takes no flags/);
    assert.throws(() => resolveSchedulerFlags('sh', ['mh-port']), /not a flag of sh/);
    assert.throws(() => resolveSchedulerFlags('mh', ['flag-3']), /not a flag of mh/);
    assert.throws(
      () => resolveIpvsOptions({ ipvsScheduler: 'wrr', ipvsSchedulerFlags: ['flag-2'] }),
      /--ipvs-scheduler-flags/,
    );
    assert.deepEqual(
      resolveIpvsOptions({ ipvsScheduler: 'sh', ipvsSchedulerFlags: ['flag-1'] }).schedulerFlags,
      ['flag-1'],
    );
  });
});
