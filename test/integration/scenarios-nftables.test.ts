import { nftablesProxierConfig } from '../../src/nftables/mode.js';
import { NftablesProxier } from '../../src/nftables/proxier.js';
import { runScenarioTable, startBackends, type ModeEntry } from '../support/scenarios/run.js';
import { expectNftDrop } from '../support/nft-trace-monitor.js';

/**
 * nftables mode runs the traffic scenario table (test/support/scenarios/), IPv4 and IPv6: its mode
 * entry starts one NftablesProxier per family in the sandbox node. kube-proxy's nftables rules carry
 * no counters, so a drop is proven by the kernel's own trace (`nft monitor trace`): the packet's
 * verdict `drop`, given by a rule of the kube-proxy table, in the chain that drops for that reason.
 */

const nftables: ModeEntry = {
  name: 'nftables',
  args: ['--proxy-mode', 'nftables'],
  traced: true,
  start: (opts, netns) =>
    startBackends(
      (['IPv4', 'IPv6'] as const).map(
        (family) => new NftablesProxier({ ...nftablesProxierConfig(opts, family), netns }),
      ),
    ),
  async proveDrop(sb, drop, family, traffic) {
    await expectNftDrop(sb, family, drop, traffic);
  },
  async kernelText(sb, family) {
    return (await sb.exec('node', ['nft', 'list', 'table', family === 'IPv4' ? 'ip' : 'ip6', 'kube-proxy']))
      .stdout;
  },
};

runScenarioTable(nftables);
