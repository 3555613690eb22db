import { renderRestoreInput, type IptablesRenderConfig } from '../src/iptables/render.js';
import { dropUnchangedFixedChains, fixedChainContents } from '../src/iptables/render-unchanged.js';
import { buildClusterState } from '../src/model/build.js';
import { nodeContext } from '../src/model/selection.js';
import { BENCH_LIMITS, BENCH_NODE, clusterObjects, serviceObjects } from './cluster.js';

/**
 * The pure work of a full and a one-endpoint partial sync at one size, for `node --cpu-prof`:
 *   node --cpu-prof dist/bench/profile-render.js 10000
 */
const n = Number(process.argv[2] ?? 10000);
const config: IptablesRenderConfig = {
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
};
const objects = clusterObjects({ services: n, endpointsPerService: 5 });
let t = performance.now();
const state = buildClusterState(
  objects.map((obj) => ({ obj })),
  undefined,
  BENCH_LIMITS,
);
console.log(`build ${(performance.now() - t).toFixed(0)} ms`);
for (let round = 0; round < 3; round++) {
  t = performance.now();
  const full = renderRestoreInput({ state, config, existingServiceChains: new Set() });
  const contents = fixedChainContents(full.restoreInput);
  const tFull = performance.now() - t;
  const i = Math.floor(n / 2) + round;
  const changed = [...objects];
  const [svc, slice] = serviceObjects(i, 5, round + 1);
  changed[1 + 2 * i] = svc!;
  changed[2 + 2 * i] = slice!;
  t = performance.now();
  const next = buildClusterState(
    changed.map((obj) => ({ obj })),
    state,
    BENCH_LIMITS,
  );
  const tBuild = performance.now() - t;
  t = performance.now();
  const key = `${next.services.get([...next.services.keys()][0]!)!.namespace}/x`;
  const partial = renderRestoreInput({
    state: next,
    config,
    changedServices: new Set([key]),
    existingServiceChains: full.activeServiceChains,
  });
  const trimmed = dropUnchangedFixedChains(partial.restoreInput, contents);
  const tPartial = performance.now() - t;
  console.log(
    `full render ${tFull.toFixed(0)} ms (${full.bytes} B); rebuild ${tBuild.toFixed(0)} ms; partial render+trim ${tPartial.toFixed(0)} ms (${trimmed.input.length} B)`,
  );
}
