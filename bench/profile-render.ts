import { buildClusterState } from '../src/model/build.js';
import { renderRestoreInput } from '../src/iptables/render.js';
import { nodeContext } from '../src/model/selection.js';
import { declaredChains } from '../src/iptables/render-whole-table.js';
import { trackWrittenChains } from '../src/iptables/proxier.js';
import { BENCH_NODE, clusterObjects } from './cluster.js';

/** `node --cpu-prof dist/bench/profile-render.js 10000`: the pure full-sync work, for profiling. */
const n = Number(process.argv[2] ?? 10000);
const state = buildClusterState(clusterObjects({ services: n, endpointsPerService: 5 }).map((obj) => ({ obj })));
for (let round = 0; round < 3; round++) {
  const t0 = performance.now();
  const r = renderRestoreInput({
    state,
    config: {
      family: 'IPv4',
      node: nodeContext(BENCH_NODE, {}),
      nodeIPs: ['192.0.2.1'],
      masqueradeBit: 14,
      masqueradeAll: false,
      localDetector: { mode: 'ClusterCIDR', cidr: '10.128.0.0/9' },
      nodePortAddresses: { matchAll: true },
      localhostNodePorts: true,
      randomFully: true,
      conntrackTCPBeLiberal: false,
    },
    existingServiceChains: new Set(),
  });
  const t1 = performance.now();
  declaredChains(r.restoreInput);
  const t2 = performance.now();
  trackWrittenChains(new Map(), r.restoreInput, true);
  const t3 = performance.now();
  console.log(`render ${(t1 - t0).toFixed(0)} ms, declaredChains ${(t2 - t1).toFixed(0)} ms, trackWritten ${(t3 - t2).toFixed(0)} ms, ${r.bytes} bytes`);
}
