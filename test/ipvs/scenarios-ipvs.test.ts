import { ipvsConfigFor } from '../../src/ipvs/backend-factory.js';
import { IpvsProxier } from '../../src/ipvs/proxier.js';
import { getArg, ruleComment } from '../../src/iptables/save-parse.js';
import type { IPFamily } from '../../src/model/types.js';
import { expectRuleCounted, type RuleRef } from '../support/rule-counters.js';
import { runScenarioTable, type ModeEntry } from '../support/scenarios/run.js';
import type { Drop } from '../support/scenarios/table.js';
import { requireUml } from './helpers.js';

/**
 * IPVS mode runs the traffic scenario table (test/support/scenarios/) inside User-mode Linux (real
 * IPVS), IPv4 and IPv6: its mode entry starts one IpvsProxier per family in the sandbox node and
 * proves drops by the counters of its iptables DROP rules. Where IPVS must differ (as kube-proxy's
 * IPVS mode does) the table records the IPVS outcome and why.
 */

/** IPVS mode's iptables rule that drops for each reason in the table. */
function dropRule(drop: Drop, family: IPFamily): RuleRef {
  if (drop.kind === 'source-range') {
    return {
      family,
      table: 'filter',
      chain: 'KUBE-SOURCE-RANGES-FIREWALL',
      match: (r) => ruleComment(r) === 'source not in loadBalancerSourceRanges' && getArg(r, '-j') === 'DROP',
      what: `${family} loadBalancerSourceRanges DROP`,
    };
  }
  // eTP=Local and iTP=Local frontends without a local endpoint: one set, one rule.
  return {
    family,
    table: 'filter',
    chain: 'KUBE-IPVS-FILTER',
    match: (r) =>
      getArg(r, '-j') === 'DROP' && (getArg(r, '--match-set') ?? '').endsWith('IPVS-NO-LOCAL-ENDPOINTS'),
    what: `${family} Local-policy frontends without local endpoints DROP (${drop.service})`,
  };
}

const ipvs: ModeEntry = {
  name: 'ipvs',
  args: ['--proxy-mode', 'ipvs'],
  traced: true,
  // Each sync and request costs more on the single User-mode Linux CPU.
  timeoutMs: 120_000,
  async start(opts, netns) {
    const proxiers = (['IPv4', 'IPv6'] as const).map(
      // The drain timer: often enough to matter, rarely enough not to load the single UML CPU.
      (family) => new IpvsProxier({ ...ipvsConfigFor(opts, family), netns, gracefulCheckMs: 1000 }),
    );
    for (const p of proxiers) await p.setup();
    return {
      async sync(state) {
        for (const p of proxiers) await p.sync(state);
      },
      async stop() {
        for (const p of proxiers) p.stop();
        await Promise.all(proxiers.map((p) => p.idle()));
      },
    };
  },
  async proveDrop(sb, drop, family, traffic) {
    await expectRuleCounted(sb, dropRule(drop, family), traffic);
  },
  async kernelText(sb, family) {
    const save = (await sb.exec('node', [family === 'IPv4' ? 'iptables-save' : 'ip6tables-save'])).stdout;
    const virtualServers = (await sb.exec('node', ['ipvsadm', '-Sn'])).stdout;
    return `${save}\n${virtualServers}`;
  },
};

describe('IPVS mode (User-mode Linux)', function () {
  before(function () {
    requireUml(this);
  });
  runScenarioTable(ipvs);
});
