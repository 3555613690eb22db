import { iptablesBinaries, type ProxyOptions } from '../config/options.js';
import { formatDriftText } from '../debug/diff.js';
import { explainService, formatExplainText, type ExplainFamilyInput } from '../debug/explain.js';
import type { CleanupOutcome, DataplaneMode, ModeInspection } from '../modes/contract.js';
import { removeNftablesModeLeftovers } from '../nftables/nft.js';
import { nodeContext } from '../model/selection.js';
import type { ClusterState, IPFamily } from '../model/types.js';
import { CommandError } from '../util/exec.js';
import { cleanupLeftovers } from './cleanup.js';
import { diffRulesets, type FamilyDrift } from '../iptables-rules/compare.js';
import { readKernelRules, usableFamilies } from '../iptables-rules/families.js';
import { Iptables } from './iptables.js';
import { jumpRules } from '../iptables-rules/jumps.js';
import { buildOwnerIndex } from '../iptables-rules/owners.js';
import { gatherNodeFacts } from '../modes/node-facts.js';
import { IptablesProxier, readKernelFlags, renderConfigFor, type IptablesProxierConfig } from './proxier.js';
import { renderRestoreInput } from './render.js';
import { parseIptablesSave, type SavedRuleset } from './save-parse.js';

/** iptables mode behind the mode contract (src/modes/contract.ts). */

/** The proxier configuration for one family (the daemon's, and what `svcplane diff` renders). */
export function iptablesProxierConfig(opts: ProxyOptions, family: IPFamily): IptablesProxierConfig {
  return {
    family,
    nodeName: opts.hostnameOverride,
    bindAddress: opts.bindAddress,
    masqueradeBit: opts.masqueradeBit,
    masqueradeAll: opts.masqueradeAll,
    detectLocalMode: opts.detectLocalMode,
    clusterCIDRs: opts.clusterCIDRs,
    bridgeInterface: opts.bridgeInterface,
    interfaceNamePrefix: opts.interfaceNamePrefix,
    ...(opts.nodePodCIDRs !== undefined ? { podCIDRs: opts.nodePodCIDRs } : {}),
    nodePortAddresses: opts.nodePortAddresses,
    localhostNodePorts: opts.localhostNodePorts,
    binaries: iptablesBinaries(opts.iptablesBinary, family),
    fullSyncMode: opts.iptablesFullSyncMode,
  };
}

/** The restore input the proxier would write for `state`, parsed (no stale-chain deletions). */
export async function desiredRules(
  opts: ProxyOptions,
  family: IPFamily,
  state: ClusterState,
  netns: string | undefined,
): Promise<SavedRuleset> {
  const pc = {
    ...iptablesProxierConfig(withStatePodCIDRs(opts, state), family),
    ...(netns ? { netns } : {}),
  };
  const ipt = new Iptables({ family, netns, binaries: pc.binaries });
  const facts = await gatherNodeFacts(pc, state);
  const flags = await readKernelFlags(ipt, netns);
  const rendered = renderRestoreInput({
    state,
    config: renderConfigFor(pc, facts, flags),
    existingServiceChains: new Set(),
  });
  return parseIptablesSave(rendered.restoreInput);
}

/** NodeCIDR detection outside the daemon: the pod CIDRs of the Node object in this state. */
export function withStatePodCIDRs(opts: ProxyOptions, state: ClusterState): ProxyOptions {
  return opts.detectLocalMode === 'NodeCIDR' && opts.nodePodCIDRs === undefined
    ? { ...opts, nodePodCIDRs: state.nodes.get(opts.hostnameOverride)?.podCIDRs ?? [] }
    : opts;
}

/** Desired vs kernel of one family; undefined when that family's iptables-save is missing. */
async function compareFamily(
  opts: ProxyOptions,
  family: IPFamily,
  state: ClusterState,
  netns: string | undefined,
  counters: boolean,
): Promise<{ kernel: SavedRuleset; drift: FamilyDrift } | undefined> {
  const kernel = await readKernelRules(opts, family, netns, counters);
  if (kernel === undefined) return undefined;
  const desired = await desiredRules(opts, family, state, netns);
  const drift = diffRulesets({
    family,
    desired,
    actual: kernel,
    owners: buildOwnerIndex(state),
    jumps: jumpRules(family, { localhostNodePorts: opts.localhostNodePorts }),
  });
  return { kernel, drift };
}

export const iptablesMode: DataplaneMode = {
  name: 'iptables',
  title: 'iptables',
  cleanupPriority: 0,
  metrics: { iptablesSyncFamilies: true },

  // No fallback to probe for: usableFamilies() (in createBackends) reports a missing iptables.
  unavailable: () => Promise.resolve(undefined),

  async createBackends(opts) {
    await removeNftablesModeLeftovers(opts.nftBinary);
    const families = await usableFamilies(opts);
    return families.map((family) => new IptablesProxier(iptablesProxierConfig(opts, family)));
  },

  async inspect(opts, state, netns): Promise<ModeInspection> {
    const families: FamilyDrift[] = [];
    const notes: string[] = [];
    for (const family of opts.ipFamilies) {
      const compared = await compareFamily(opts, family, state, netns, false);
      if (compared === undefined) {
        notes.push(`${family}: ${iptablesBinaries(opts.iptablesBinary, family).save} not available; skipped`);
        continue;
      }
      families.push(compared.drift);
    }
    if (families.length === 0) throw new Error('no usable iptables binary for any IP family');
    return {
      inSync: families.every((f) => f.inSync),
      families,
      notes,
      formatText: () => formatDriftText(families),
    };
  },

  async explain(key, opts, state, netns) {
    const families: ExplainFamilyInput[] = [];
    for (const family of opts.ipFamilies) {
      const compared = await compareFamily(opts, family, state, netns, true);
      families.push(compared === undefined ? { family } : { family, ...compared });
    }
    const node = nodeContext(opts.hostnameOverride, state.nodes.get(opts.hostnameOverride)?.labels ?? {});
    const report = explainService({ key, state, node, families });
    return { report, text: formatExplainText(report), known: report.found || report.warnings.length > 0 };
  },

  async cleanup(opts) {
    const outcomes: CleanupOutcome[] = [];
    for (const family of ['IPv4', 'IPv6'] as const) {
      const ipt = new Iptables({ family, binaries: iptablesBinaries(opts.iptablesBinary, family) });
      try {
        const { removed } = await cleanupLeftovers(ipt);
        outcomes.push({ part: family, text: `removed ${removed.length} chains/rules` });
      } catch (err) {
        if (err instanceof CommandError && err.reason === 'not-found') continue;
        outcomes.push({ part: family, error: err });
      }
    }
    return outcomes;
  },

  async traceKernel(request, sofar) {
    if (sofar.ruleset !== undefined) return sofar;
    const ruleset = await readKernelRules(request, request.family, request.netns);
    return ruleset === undefined ? sofar : { ...sofar, ruleset };
  },
};
