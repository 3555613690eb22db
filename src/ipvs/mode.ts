import { iptablesBinaries, type ProxyOptions } from '../config/options.js';
import { diffRulesets } from '../iptables-rules/compare.js';
import { explainService, formatExplainText } from '../debug/explain.js';
import {
  diffIpvsState,
  formatIpvsDriftText,
  type IpvsFamilyDrift,
  type IpvsKernelView,
} from '../debug/ipvs-diff.js';
import { explainIpvs, formatIpvsExplainLines } from '../debug/ipvs-explain.js';
import { alignWithKubeProxy, detectIpvsLayout } from '../debug/ipvs-kube-proxy.js';
import { buildOwnerIndex } from '../iptables-rules/owners.js';
import { readKernelRules, usableFamilies } from '../iptables-rules/families.js';
import { Iptables } from '../iptables/iptables.js';
import { parseIptablesSave, type SavedRuleset } from '../iptables/save-parse.js';
import type { DataplaneMode } from '../modes/contract.js';
import { removeNftablesModeLeftovers } from '../nftables/nft.js';
import { nodeContext } from '../model/selection.js';
import type { ClusterState, IPFamily } from '../model/types.js';
import { CommandError, run } from '../util/exec.js';
import { parseIpAddressJson } from '../kernel/netif.js';
import { createIpvsBackends, ipvsConfigFor, ipvsUnavailable } from './backend-factory.js';
import { cleanupIpvs } from './cleanup.js';
import { parseIpsetSave, parseIpsetSaveText } from './ipset.js';
import { parseIpvsadmSave } from './ipvsadm.js';
import { planIpvs, type IpvsDesired } from './plan.js';
import { DUMMY_DEVICE, ipvsPlanConfig, ipvsRulesConfig } from './proxier.js';
import { IPVS_JUMPS, renderIpvsRules } from './rules.js';

/** IPVS mode behind the mode contract (src/modes/contract.ts). */

/** What an IPVS node holds and wants for one family (the inputs of the pure IPVS diff). */
export interface IpvsNodeFamily {
  readonly family: IPFamily;
  readonly desired: IpvsDesired;
  readonly kernel: IpvsKernelView;
  readonly drift: IpvsFamilyDrift;
  /** `ipvsadm -Ln`, for connection counters. */
  readonly listing: string;
}

/** Reads the kernel once (ipvsadm, ipset, addresses) and compares every family with the plan. */
export async function readIpvsNode(
  opts: ProxyOptions,
  state: ClusterState,
  netns: string | undefined,
): Promise<{ families: IpvsNodeFamily[]; notes: string[] }> {
  const exec = (argv: string[]) => run(argv, { netns, timeoutMs: 30_000 });
  const [saved, listed, sets, addrs] = await Promise.all([
    exec(['ipvsadm', '-Sn']),
    exec(['ipvsadm', '-Ln']),
    exec(['ipset', 'save']),
    exec(['ip', '-j', 'address', 'show']),
  ]);
  const table = parseIpvsadmSave(saved.stdout);
  const ipsets = parseIpsetSave(sets.stdout);
  const addresses = parseIpAddressJson(addrs.stdout);
  const owners = buildOwnerIndex(state);
  const families: IpvsNodeFamily[] = [];
  const notes: string[] = [];
  for (const family of opts.ipFamilies) {
    const config = ipvsConfigFor(opts, family);
    const ipt = new Iptables({ family, netns, binaries: config.iptablesBinaries });
    const actual = await readKernelRules(opts, family, netns);
    if (actual === undefined) {
      notes.push(`${family}: ${iptablesBinaries(opts.iptablesBinary, family).save} not available; skipped`);
      continue;
    }
    const desired = planIpvs(state, ipvsPlanConfig(config, state, addresses), family);
    const rules = parseIptablesSave(
      renderIpvsRules(desired, ipvsRulesConfig(config, await ipt.supportsRandomFully())),
    );
    // kube-proxy's layout: compare like with like, set its differences apart (debug/ipvs-kube-proxy.ts).
    const layout = detectIpvsLayout(actual, ipsets, family);
    const aligned =
      layout === 'kube-proxy'
        ? alignWithKubeProxy({ family, desired: rules, actual, sets: desired.sets })
        : undefined;
    const iptables = diffRulesets({
      family,
      desired: aligned?.desired ?? rules,
      actual: aligned?.actual ?? actual,
      owners,
      jumps: IPVS_JUMPS,
    });
    const kernel: IpvsKernelView = {
      table,
      ipsets,
      boundAddresses: addresses
        .filter((a) => a.ifname === DUMMY_DEVICE && a.family === family)
        .map((a) => a.ip),
    };
    const drift = diffIpvsState({
      family,
      desired,
      kernel,
      excludeCIDRs: config.excludeCIDRs,
      iptables,
      layout,
      ...(aligned ? { takeover: aligned.changes } : {}),
    });
    families.push({ family, desired, kernel, drift, listing: listed.stdout });
  }
  if (families.length === 0) throw new Error('no usable iptables binary for any IP family');
  return { families, notes };
}

/** Whether any rule uses `-m set` (IPVS mode): only then is `ipset save` worth reading. */
function usesIpsets(ruleset: SavedRuleset | undefined): boolean {
  for (const table of ruleset?.tables.values() ?? []) {
    if (table.rules.some((r) => r.text.includes('--match-set'))) return true;
  }
  return false;
}

/** Runs a listing command; undefined when the tool is missing or fails here. */
async function listing(argv: string[], netns: string | undefined): Promise<string | undefined> {
  try {
    const r = await run(argv, { netns, allowFailure: true, timeoutMs: 30_000 });
    return r.exitCode === 0 ? r.stdout : undefined;
  } catch (e) {
    if (e instanceof CommandError && e.reason === 'not-found') return undefined;
    throw e;
  }
}

export const ipvsMode: DataplaneMode = {
  name: 'ipvs',
  title: 'IPVS',
  // Issue 3 asked for kube-proxy < 1.26's fallback (newer kube-proxy exits here).
  fallback: 'iptables',
  // Its chains hang off the shared kube chains and reference its sets: removed before iptables mode's.
  cleanupPriority: 10,
  // kube-proxy's IPVS mode does not register the iptables mode's sync metrics.
  metrics: { iptablesSyncFamilies: false },

  unavailable: (opts) => ipvsUnavailable(opts.ipvs.scheduler),
  probeContext: (opts) => ({ scheduler: opts.ipvs.scheduler }),

  async createBackends(opts) {
    await removeNftablesModeLeftovers(opts.nftBinary);
    return createIpvsBackends(opts, await usableFamilies(opts));
  },

  async inspect(opts, state, netns) {
    const { families, notes } = await readIpvsNode(opts, state, netns);
    const drifts = families.map((f) => f.drift);
    return {
      inSync: drifts.every((f) => f.inSync),
      families: drifts,
      notes,
      formatText: () => formatIpvsDriftText(drifts),
    };
  },

  async explain(key, opts, state, netns) {
    const { families } = await readIpvsNode(opts, state, netns);
    const node = nodeContext(opts.hostnameOverride, state.nodes.get(opts.hostnameOverride)?.labels ?? {});
    // The iptables chains of iptables mode do not exist here: explain the state only, then IPVS.
    const explained = explainService({
      key,
      state,
      node,
      families: opts.ipFamilies.map((family) => ({ family, noServiceChains: true })),
    });
    const base = explained;
    const ipvs = explainIpvs({ key, families });
    const report = {
      ...base,
      mode: 'ipvs',
      ipvs: ipvs.families,
      warnings: [...base.warnings, ...ipvs.warnings],
    };
    return {
      report,
      text: formatExplainText(report, { rules: false, extra: formatIpvsExplainLines(ipvs) }),
      known: base.found || ipvs.families.some((f) => f.virtualServers.length > 0),
    };
  },

  async cleanup(opts) {
    try {
      const ipts = (['IPv4', 'IPv6'] as const).map(
        (f) => new Iptables({ family: f, binaries: iptablesBinaries(opts.iptablesBinary, f) }),
      );
      const { removed } = await cleanupIpvs(ipts);
      return [{ part: 'ipvs', text: `removed ${removed.length} chains/rules/sets/links` }];
    } catch (error) {
      return [{ part: 'ipvs', error }];
    }
  },

  async traceKernel(request, sofar) {
    const saved = await listing(['ipvsadm', '-Sn'], request.netns);
    const ipvs = saved === undefined ? undefined : parseIpvsadmSave(saved);
    const sets = usesIpsets(sofar.ruleset) ? await listing(['ipset', 'save'], request.netns) : undefined;
    return {
      ...sofar,
      ...(ipvs !== undefined && ipvs.size > 0 ? { ipvs } : {}),
      ...(sets !== undefined ? { ipsets: parseIpsetSaveText(sets) } : {}),
    };
  },
};
