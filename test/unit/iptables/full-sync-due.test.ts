import assert from 'node:assert/strict';
import { fullSyncDue } from '../../../src/iptables/proxier.js';

describe('fullSyncDue (kube-proxy doFullSync)', () => {
  const hour = 3_600_000;
  it('is forced whatever the clock says', () => {
    assert.equal(
      fullSyncDue({ forced: true, sinceLastFullMs: 0, periodMs: hour, largeClusterMode: true }),
      true,
    );
  });
  it('comes back every period', () => {
    assert.equal(
      fullSyncDue({ forced: false, sinceLastFullMs: hour - 1, periodMs: hour, largeClusterMode: false }),
      false,
    );
    assert.equal(
      fullSyncDue({ forced: false, sinceLastFullMs: hour + 1, periodMs: hour, largeClusterMode: false }),
      true,
    );
  });
  it('never comes back by the clock in large-cluster mode (PR #138571)', () => {
    assert.equal(
      fullSyncDue({ forced: false, sinceLastFullMs: 10 * hour, periodMs: hour, largeClusterMode: true }),
      false,
    );
  });
});
