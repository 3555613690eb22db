import { iptablesProxierConfig } from '../../src/iptables/mode.js';
import { IptablesProxier } from '../../src/iptables/proxier.js';
import { getArg, ruleComment } from '../../src/iptables/save-parse.js';
import type { IPFamily } from '../../src/model/types.js';
import { expectRuleCounted, type RuleRef } from '../support/rule-counters.js';
import { runScenarioTable, startBackends, type ModeEntry } from '../support/scenarios/run.js';
import type { Drop } from '../support/scenarios/table.js';

/**
 * iptables mode runs the traffic scenario table (test/support/scenarios/): its mode entry starts one
 * IptablesProxier per family in the sandbox node and proves drops by the DROP rule's packet counter.
 */

/** The iptables rule that drops for each reason in the table. */
function dropRule(drop: Drop, family: IPFamily): RuleRef {
  const dropping = (r: Parameters<RuleRef['match']>[0]): boolean => getArg(r, '-j') === 'DROP';
  switch (drop.kind) {
    case 'source-range':
      return {
        family,
        table: 'filter',
        chain: 'KUBE-PROXY-FIREWALL',
        match: (r) =>
          dropping(r) &&
          (ruleComment(r) ?? '').startsWith(`default/${drop.service}:`) &&
          (ruleComment(r) ?? '').includes(' traffic not accepted by KUBE-FW-') &&
          getArg(r, '-d')?.split('/')[0] === drop.ip,
        what: `${family} loadBalancerSourceRanges DROP of ${drop.ip}`,
      };
    case 'external-no-local':
      return {
        family,
        table: 'filter',
        chain: 'KUBE-EXTERNAL-SERVICES',
        match: (r) =>
          dropping(r) &&
          ruleComment(r) === `default/${drop.service}:${drop.port} has no local endpoints` &&
          getArg(r, '--dport') === String(drop.nodePort),
        what: `${family} eTP=Local "has no local endpoints" DROP of ${drop.nodePort}`,
      };
    case 'internal-no-local':
      return {
        family,
        table: 'filter',
        chain: 'KUBE-SERVICES',
        match: (r) =>
          dropping(r) &&
          ruleComment(r) === `default/${drop.service}:${drop.port} has no local endpoints` &&
          getArg(r, '-d')?.split('/')[0] === drop.ip,
        what: `${family} iTP=Local "has no local endpoints" DROP of ${drop.ip}`,
      };
  }
}

const iptables: ModeEntry = {
  name: 'iptables',
  args: ['--proxy-mode', 'iptables'],
  traced: true,
  start: (opts, netns) =>
    startBackends(
      (['IPv4', 'IPv6'] as const).map(
        (family) => new IptablesProxier({ ...iptablesProxierConfig(opts, family), netns }),
      ),
    ),
  async proveDrop(sb, drop, family, traffic) {
    await expectRuleCounted(sb, dropRule(drop, family), traffic);
  },
  async kernelText(sb, family) {
    return (await sb.exec('node', [family === 'IPv4' ? 'iptables-save' : 'ip6tables-save'])).stdout;
  },
};

runScenarioTable(iptables);
