import type { ProxyOptions } from '../config/options.js';
import type { DataplaneMode, ModeInspection, ModeStart } from '../modes/contract.js';
import { localTrafficDetector } from '../modes/local-traffic.js';
import { gatherNodeFacts } from '../modes/node-facts.js';
import { parseCIDR } from '../model/ip.js';
import type { ClusterState, IPFamily } from '../model/types.js';
import { log } from '../util/log.js';
import { diffNftables, formatNftDriftText, type NftFamilyDrift } from './diff.js';
import { deleteKubeProxyTables, Nft } from './nft.js';
import { NftablesProxier, type NftablesProxierConfig } from './proxier.js';
import { checkNftConfig, renderState, type NftRenderConfig } from './render.js';
import { fullTransaction, fullTransactionLines } from './transaction.js';

/** nftables mode (kube-proxy's nftables proxier) behind the mode contract (src/modes/contract.ts). */

export function nftablesProxierConfig(opts: ProxyOptions, family: IPFamily): NftablesProxierConfig {
  return {
    family,
    nodeName: opts.hostnameOverride,
    ...(opts.bindAddress !== undefined ? { bindAddress: opts.bindAddress } : {}),
    masqueradeBit: opts.masqueradeBit,
    masqueradeAll: opts.masqueradeAll,
    detectLocalMode: opts.detectLocalMode,
    clusterCIDRs: opts.clusterCIDRs,
    ...(opts.bridgeInterface !== undefined ? { bridgeInterface: opts.bridgeInterface } : {}),
    ...(opts.interfaceNamePrefix !== undefined ? { interfaceNamePrefix: opts.interfaceNamePrefix } : {}),
    ...(opts.nodePodCIDRs !== undefined ? { podCIDRs: opts.nodePodCIDRs } : {}),
    nodePortAddresses: opts.nodePortAddresses,
    nftBinary: opts.nftBinary,
  };
}

/**
 * The other modes' leftovers (iptables chains, IPVS services, sets and link), removed once, after
 * the first nftables sync that served: a node switched from another mode never has a gap. The
 * registry runs the other modes' cleanup (IPVS before iptables, by cleanupPriority).
 */
function otherModesCleanup(start: ModeStart): () => Promise<void> {
  let done: Promise<void> | undefined;
  return () =>
    (done ??= (async () => {
      for (const outcome of await start.cleanupOtherModes()) {
        if ('error' in outcome) {
          log.warn("cannot remove another proxy mode's leftovers", {
            part: outcome.part,
            error: outcome.error,
          });
        } else log.info("removed another proxy mode's leftovers", { part: outcome.part, what: outcome.text });
      }
    })());
}

/** What a full sync would leave in the table of one family, from `state` (as the daemon renders it). */
async function desiredFamily(
  opts: ProxyOptions,
  family: IPFamily,
  state: ClusterState,
  netns: string | undefined,
): Promise<{ model: ReturnType<typeof fullTransaction>['model']; services: ReturnType<typeof renderState> }> {
  const pc = { ...nftablesProxierConfig(opts, family), ...(netns ? { netns } : {}) };
  const facts = await gatherNodeFacts({ ...pc, localhostNodePorts: false }, state);
  const config: NftRenderConfig = {
    family,
    node: facts.node,
    nodeIPs: facts.nodeIPs,
    masqueradeBit: pc.masqueradeBit,
    masqueradeAll: pc.masqueradeAll,
    localDetector: localTrafficDetector(pc),
    nodePortAddresses: facts.nodePortAddresses,
    serviceCIDRs: (pc.serviceCIDRs ?? [])
      .map((c) => parseCIDR(c))
      .filter((p) => p?.family === family)
      .map((p) => p!.cidr),
  };
  const services = renderState(state, config);
  const tx = fullTransaction({
    config,
    checked: checkNftConfig(config),
    services,
    existingServiceChains: [],
    existingAffinitySets: new Map(),
    recreateBaseChains: false,
  });
  fullTransactionLines(tx); // the model is complete once every part was generated
  return { model: tx.model, services };
}

async function inspectFamilies(
  opts: ProxyOptions,
  state: ClusterState,
  netns: string | undefined,
): Promise<NftFamilyDrift[]> {
  const out: NftFamilyDrift[] = [];
  for (const family of opts.ipFamilies) {
    const { model, services } = await desiredFamily(opts, family, state, netns);
    const table = await new Nft({ family, binary: opts.nftBinary, ...(netns ? { netns } : {}) }).listTable();
    out.push(diffNftables(family, model, services, table));
  }
  return out;
}

export const nftablesMode: DataplaneMode = {
  name: 'nftables',
  title: 'nftables',
  // kube-proxy's nftables mode exits when nft or the kernel is too old: no fallback.
  cleanupPriority: 5,
  metrics: { iptablesSyncFamilies: false, nftablesSyncFamilies: true },

  async unavailable(opts) {
    try {
      await new Nft({ family: 'IPv4', binary: opts.nftBinary }).checkVersions();
      return undefined;
    } catch (err) {
      return err instanceof Error ? err.message : String(err);
    }
  },

  createBackends(opts, start) {
    const cleanup = otherModesCleanup(start);
    return Promise.resolve(
      opts.ipFamilies.map(
        (family) => new NftablesProxier({ ...nftablesProxierConfig(opts, family), afterFirstSync: cleanup }),
      ),
    );
  },

  async inspect(opts, state, netns): Promise<ModeInspection> {
    const families = await inspectFamilies(opts, state, netns);
    return {
      inSync: families.every((f) => f.inSync),
      families,
      notes: [],
      formatText: () => formatNftDriftText(families),
    };
  },

  async explain(key, opts, state, netns) {
    const families = await inspectFamilies(opts, state, netns);
    const lines: string[] = [];
    const report: { key: string; found: boolean; families: unknown[] } = { key, found: false, families: [] };
    for (const family of opts.ipFamilies) {
      const { services } = await desiredFamily(opts, family, state, netns);
      const r = services.get(key);
      const drift =
        families.find((f) => f.family === family)?.differences.filter((d) => d.service === key) ?? [];
      if (r !== undefined) report.found = true;
      report.families.push({
        family,
        chains: r ? [...r.chains.keys()] : [],
        elements: r ? r.elements.map((e) => `${e.container} ${e.key}${e.value ? ` : ${e.value}` : ''}`) : [],
        affinitySets: r ? [...r.affinitySets.keys()] : [],
        drift,
      });
      lines.push(`${family}:`);
      if (r === undefined) {
        lines.push('  not programmed in this family');
        continue;
      }
      for (const e of r.elements) lines.push(`  ${e.container} ${e.key}${e.value ? ` : ${e.value}` : ''}`);
      for (const [chain, rules] of r.chains) {
        lines.push(`  chain ${chain}`);
        for (const rule of rules) lines.push(`    ${rule}`);
      }
      for (const s of r.skipped) lines.push(`  skipped: ${s}`);
      lines.push(drift.length === 0 ? '  kernel: as desired' : `  kernel: ${drift.length} difference(s)`);
      for (const d of drift)
        lines.push(`    ${d.kind} ${d.what}${d.detail !== undefined ? `: ${d.detail}` : ''}`);
    }
    return {
      report,
      text: `${key} (nftables mode)\n${lines.join('\n')}\n`,
      known: report.found || families.some((f) => f.differences.some((d) => d.service === key)),
    };
  },

  async cleanup(opts) {
    const failed = await deleteKubeProxyTables({ binary: opts.nftBinary });
    return failed.length === 0
      ? [{ part: 'nftables', text: 'removed tables ip kube-proxy and ip6 kube-proxy (if present)' }]
      : failed.map((f) => ({ part: 'nftables', error: new Error(f) }));
  },

  async traceKernel(request, sofar) {
    const nft = new Nft({
      family: request.family,
      binary: request.nftBinary,
      ...(request.netns ? { netns: request.netns } : {}),
    });
    try {
      const table = await nft.listTable();
      return table === undefined ? sofar : { ...sofar, nftables: table };
    } catch {
      // No nft (or no nf_tables) here: no nftables mode table to walk.
      return sofar;
    }
  },
};
