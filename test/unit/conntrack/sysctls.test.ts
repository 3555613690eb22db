import assert from 'node:assert/strict';
import {
  CONNTRACK_MAX_LIMIT,
  conntrackMax,
  conntrackPlan,
  countCpuList,
  HASHSIZE_PATH,
} from '../../../src/conntrack/sysctls.js';
import type { ConntrackOptions } from '../../../src/config/options.js';

/** kube-proxy's conntrack settings as a plan (pkg/proxy/conntrack/sysctls.go): pure, per CPU count. */

const DEFAULTS: ConntrackOptions = {
  maxPerCore: 32768,
  min: 131072,
  tcpEstablishedTimeoutMs: 86_400_000,
  tcpCloseWaitTimeoutMs: 3_600_000,
  tcpBeLiberal: false,
  udpTimeoutMs: 0,
  udpStreamTimeoutMs: 0,
};

const KERNEL = {
  'net.netfilter.nf_conntrack_max': 65536,
  [HASHSIZE_PATH]: 16384,
  'net.netfilter.nf_conntrack_tcp_timeout_established': 432000,
  'net.netfilter.nf_conntrack_tcp_timeout_close_wait': 60,
  'net.netfilter.nf_conntrack_tcp_be_liberal': 0,
  'net.netfilter.nf_conntrack_udp_timeout': 30,
  'net.netfilter.nf_conntrack_udp_timeout_stream': 120,
};

describe('conntrack sysctls (kube-proxy semantics)', () => {
  it('nf_conntrack_max = maxPerCore × CPUs, at least min, at most 1048576; 0 leaves it', () => {
    assert.equal(conntrackMax(DEFAULTS, 2), 131072, 'min wins on a small node');
    assert.equal(conntrackMax(DEFAULTS, 8), 262144);
    assert.equal(conntrackMax(DEFAULTS, 64), CONNTRACK_MAX_LIMIT);
    assert.equal(conntrackMax({ maxPerCore: 0, min: 131072 }, 8), 0);
  });

  it("kubeadm's defaults on a 2-CPU node: raise max and hashsize, set the two TCP timeouts", () => {
    assert.deepEqual(conntrackPlan(DEFAULTS, 2, KERNEL), [
      { key: 'net.netfilter.nf_conntrack_max', value: 131072, scope: 'host' },
      { key: HASHSIZE_PATH, value: 32768, scope: 'host' },
      { key: 'net.netfilter.nf_conntrack_tcp_timeout_established', value: 86400, scope: 'netns' },
      { key: 'net.netfilter.nf_conntrack_tcp_timeout_close_wait', value: 3600, scope: 'netns' },
    ]);
  });

  it('never lowers nf_conntrack_max or hashsize; writes only what differs', () => {
    const big = { ...KERNEL, 'net.netfilter.nf_conntrack_max': 262144, [HASHSIZE_PATH]: 262144 };
    const done = {
      ...big,
      'net.netfilter.nf_conntrack_tcp_timeout_established': 86400,
      'net.netfilter.nf_conntrack_tcp_timeout_close_wait': 3600,
    };
    assert.deepEqual(conntrackPlan(DEFAULTS, 2, done), []);
  });

  it('be_liberal and the UDP timeouts when set; 0 leaves each as it is', () => {
    const plan = conntrackPlan(
      {
        ...DEFAULTS,
        maxPerCore: 0,
        tcpEstablishedTimeoutMs: 0,
        tcpCloseWaitTimeoutMs: 0,
        tcpBeLiberal: true,
        udpTimeoutMs: 15_000,
        udpStreamTimeoutMs: 90_500,
      },
      4,
      KERNEL,
    );
    assert.deepEqual(plan, [
      { key: 'net.netfilter.nf_conntrack_tcp_be_liberal', value: 1, scope: 'netns' },
      { key: 'net.netfilter.nf_conntrack_udp_timeout', value: 15, scope: 'netns' },
      { key: 'net.netfilter.nf_conntrack_udp_timeout_stream', value: 90, scope: 'netns' },
    ]);
  });

  it('counts the CPUs of /sys/devices/system/cpu/online', () => {
    assert.equal(countCpuList('0-3\n'), 4);
    assert.equal(countCpuList('0-1,4,6-7'), 5);
    assert.equal(countCpuList('0'), 1);
  });
});
