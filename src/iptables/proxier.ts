import type { Backend, SyncReport } from '../controller/backend.js';
import { cidrContains, parseCIDR } from '../model/ip.js';
import { nodeContext, type NodeContext } from '../model/selection.js';
import type { ClusterState, IPFamily, NodeInfo, Service } from '../model/types.js';
import { log } from '../util/log.js';
import {
  addressesInCIDRs,
  listAddresses,
  nodeIPsFromInterfaces,
  type InterfaceAddress,
} from '../util/netif.js';
import { ensureSysctl, readSysctl } from '../util/sysctl.js';
import { Iptables } from './iptables.js';
import { canaryLines, mergeExtraLines, missingJumpLines } from './jump-plan.js';
import { jumpRules } from './jumps.js';
import { FILTER_CHAINS, KUBE_FIREWALL, NAT_CHAINS } from './render-fixed.js';
import {
  renderRestoreInput,
  type IptablesRenderConfig,
  type LocalDetector,
  type RenderResult,
} from './render.js';
import { parseIptablesSave, serviceChainsOf, type SavedRuleset } from './save-parse.js';

/**
 * The iptables backend for one IP family: kube-proxy's syncProxyRules split by concern. It decides
 * full vs partial sync (KEP-3453), gathers node facts, renders (pure) and applies one
 * `iptables-restore --noflush` transaction. A failed write leaves the kernel as it was and forces the
 * next sync to be full.
 */

export type DetectLocalMode = 'ClusterCIDR' | 'NodeCIDR' | 'BridgeInterface' | 'InterfaceNamePrefix' | '';

export interface IptablesProxierConfig {
  readonly family: IPFamily;
  readonly nodeName: string;
  /** --bind-address: the node IP when set (and of this family). */
  readonly bindAddress?: string;
  readonly masqueradeBit: number;
  readonly masqueradeAll: boolean;
  readonly detectLocalMode: DetectLocalMode;
  /** --cluster-cidr values (any family; filtered here). */
  readonly clusterCIDRs: readonly string[];
  readonly bridgeInterface?: string;
  readonly interfaceNamePrefix?: string;
  /** --nodeport-addresses: CIDRs, or the single value `primary`; empty = all local addresses. */
  readonly nodePortAddresses: readonly string[];
  readonly localhostNodePorts: boolean;
  /** Run every command inside this network namespace (tests, sandboxes). */
  readonly netns?: string;
  readonly binaries?: { readonly iptables?: string; readonly restore?: string; readonly save?: string };
  /** A partial sync becomes full when the last full sync is older than this (kube-proxy: 1 h). */
  readonly fullSyncPeriodMs?: number;
}

/** Facts about the node that the rules depend on; a change forces a full sync. */
interface NodeFacts {
  readonly node: NodeContext;
  readonly nodeIPs: readonly string[];
  readonly nodePortAddresses: IptablesRenderConfig['nodePortAddresses'];
  readonly localhostNodePorts: boolean;
}

export interface IptablesSyncReport extends SyncReport {
  readonly render: Pick<RenderResult, 'counts' | 'largeClusterMode' | 'noLocalEndpoints'>;
}

export class IptablesProxier implements Backend {
  readonly name: string;
  readonly ipt: Iptables;
  private needFullSync = true;
  private lastFullSync = Number.NEGATIVE_INFINITY;
  /** Last state whose rules reached the kernel. */
  private applied: ClusterState | undefined;
  /** Service chains the kernel holds after our last successful restore. */
  private kernelServiceChains: ReadonlySet<string> = new Set();
  private lastFacts: NodeFacts | undefined;
  private randomFully = false;
  private beLiberal = false;
  private lastReport: IptablesSyncReport | undefined;

  constructor(private readonly config: IptablesProxierConfig) {
    this.name = `iptables/${config.family}`;
    this.ipt = new Iptables({ family: config.family, netns: config.netns, binaries: config.binaries });
  }

  get lastSync(): IptablesSyncReport | undefined {
    return this.lastReport;
  }

  async setup(): Promise<void> {
    this.randomFully = await this.ipt.supportsRandomFully();
    const liberal = await readSysctl('net.netfilter.nf_conntrack_tcp_be_liberal', {
      netns: this.config.netns,
    });
    this.beLiberal = liberal !== undefined && liberal.trim() !== '0';
    if (this.config.family === 'IPv4' && this.config.localhostNodePorts) {
      const facts = await this.gatherFacts(undefined);
      if (facts.localhostNodePorts) {
        await ensureSysctl('net.ipv4.conf.all.route_localnet', 1, { netns: this.config.netns });
      }
    }
  }

  forceFullSync(): void {
    this.needFullSync = true;
  }

  async detectDrift(): Promise<boolean> {
    for (const table of ['mangle', 'nat', 'filter'] as const) {
      if (!(await this.ipt.canaryExists(table))) {
        log.warn('iptables canary chain missing: another agent flushed our rules; full resync', {
          backend: this.name,
          table,
        });
        this.needFullSync = true;
        return true;
      }
    }
    return false;
  }

  async sync(state: ClusterState): Promise<IptablesSyncReport> {
    const started = performance.now();
    const facts = await this.gatherFacts(state);
    const factsChanged = this.lastFacts === undefined || !sameFacts(this.lastFacts, facts);
    const full =
      this.needFullSync ||
      factsChanged ||
      performance.now() - this.lastFullSync > (this.config.fullSyncPeriodMs ?? 3_600_000);

    try {
      let existing = this.kernelServiceChains;
      let saved: SavedRuleset | undefined;
      if (full) {
        // One iptables-save shows leftover service chains, missing jumps and canaries at once.
        saved = parseIptablesSave(await this.ipt.save());
        existing = serviceChainsOf(saved, 'nat');
      }
      const rendered = renderRestoreInput({
        state,
        config: this.renderConfig(facts),
        changedServices: full ? undefined : changedServices(this.applied, state),
        existingServiceChains: existing,
      });
      const input = saved
        ? mergeExtraLines(
            rendered.restoreInput,
            missingJumpLines(
              saved,
              jumpRules(this.config.family, facts),
              renderedFixedChains(this.config.family, facts),
            ),
            canaryLines(saved),
          )
        : rendered.restoreInput;
      const restore = await this.ipt.restore(input, { noflush: true, counters: true });

      this.applied = state;
      this.kernelServiceChains = rendered.activeServiceChains;
      this.lastFacts = facts;
      this.needFullSync = false;
      if (full) this.lastFullSync = performance.now();
      const report: IptablesSyncReport = {
        backend: this.name,
        full,
        durationMs: performance.now() - started,
        bytes: rendered.bytes,
        lines: rendered.lines,
        writtenServices: rendered.writtenServices.size,
        staleChains: rendered.staleChains.length,
        details: { restoreMs: Math.round(restore.durationMs) },
        render: {
          counts: rendered.counts,
          largeClusterMode: rendered.largeClusterMode,
          noLocalEndpoints: rendered.noLocalEndpoints,
        },
      };
      this.lastReport = report;
      return report;
    } catch (err) {
      // The restore is one transaction: the kernel still has the previous rules.
      this.needFullSync = true;
      throw err;
    }
  }

  private renderConfig(facts: NodeFacts): IptablesRenderConfig {
    return {
      family: this.config.family,
      node: facts.node,
      nodeIPs: facts.nodeIPs,
      masqueradeBit: this.config.masqueradeBit,
      masqueradeAll: this.config.masqueradeAll,
      localDetector: this.localDetector(),
      nodePortAddresses: facts.nodePortAddresses,
      localhostNodePorts: facts.localhostNodePorts,
      randomFully: this.randomFully,
      conntrackTCPBeLiberal: this.beLiberal,
    };
  }

  private localDetector(): LocalDetector {
    const c = this.config;
    switch (c.detectLocalMode) {
      case 'ClusterCIDR': {
        const cidr = c.clusterCIDRs
          .map((t) => parseCIDR(t))
          .find((p) => p !== undefined && p.family === c.family);
        return cidr ? { mode: 'ClusterCIDR', cidr: cidr.cidr } : { mode: 'None' };
      }
      case 'BridgeInterface':
        return c.bridgeInterface ? { mode: 'BridgeInterface', name: c.bridgeInterface } : { mode: 'None' };
      case 'InterfaceNamePrefix':
        return c.interfaceNamePrefix
          ? { mode: 'InterfaceNamePrefix', prefix: c.interfaceNamePrefix }
          : { mode: 'None' };
      default:
        return { mode: 'None' };
    }
  }

  /** Node name/zone, node IPs and NodePort addresses, re-read every sync as kube-proxy does. */
  private async gatherFacts(state: ClusterState | undefined): Promise<NodeFacts> {
    const c = this.config;
    const nodeObj: NodeInfo | undefined = state?.nodes.get(c.nodeName);
    const addrs: InterfaceAddress[] = await listAddresses({ netns: c.netns });
    const nodeIPs = nodeIPsFor(c, nodeObj, addrs);
    const cidrs = c.nodePortAddresses
      .map((t) => parseCIDR(t))
      .filter((p) => p !== undefined && p.family === c.family)
      .map((p) => p!.cidr);
    const matchAll =
      c.nodePortAddresses.length === 0 ||
      cidrs.some((x) => x === '0.0.0.0/0' || x === '::/0') ||
      (cidrs.length === 0 && !c.nodePortAddresses.includes('primary'));
    let nodePortAddresses: IptablesRenderConfig['nodePortAddresses'];
    let localhostNodePorts = c.family === 'IPv4' && c.localhostNodePorts;
    if (matchAll) {
      nodePortAddresses = { matchAll: true };
    } else if (c.nodePortAddresses.includes('primary')) {
      nodePortAddresses = { matchAll: false, addresses: nodeIPs };
      localhostNodePorts = false;
    } else {
      localhostNodePorts = localhostNodePorts && cidrs.some((x) => cidrContains(x, '127.0.0.1'));
      nodePortAddresses = {
        matchAll: false,
        addresses: addressesInCIDRs(addrs, cidrs, { includeLoopback: localhostNodePorts })
          .filter((a) => a.family === c.family)
          .map((a) => a.ip),
      };
    }
    return {
      node: nodeContext(c.nodeName, nodeObj?.labels ?? {}),
      nodeIPs,
      nodePortAddresses,
      localhostNodePorts,
    };
  }
}

function nodeIPsFor(
  c: IptablesProxierConfig,
  node: NodeInfo | undefined,
  addrs: InterfaceAddress[],
): string[] {
  const fam = (ip: string): boolean => (ip.includes(':') ? 'IPv6' : 'IPv4') === c.family;
  if (c.bindAddress && fam(c.bindAddress) && c.bindAddress !== '0.0.0.0' && c.bindAddress !== '::') {
    return [c.bindAddress];
  }
  const fromNode = node?.addresses.filter(fam) ?? [];
  if (fromNode.length > 0) return [fromNode[0]!];
  return nodeIPsFromInterfaces(addrs, c.family);
}

function sameFacts(a: NodeFacts, b: NodeFacts): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/** Services whose chains must be rewritten: new or changed since the last applied state. */
export function changedServices(prev: ClusterState | undefined, next: ClusterState): Set<string> | undefined {
  if (prev === undefined) return undefined;
  const changed = new Set<string>();
  for (const [key, svc] of next.services) {
    const old = prev.services.get(key);
    if (old === undefined || !sameService(old, svc)) changed.add(key);
  }
  return changed;
}

function sameService(a: Service, b: Service): boolean {
  return a === b || JSON.stringify(a) === JSON.stringify(b);
}

/** `table/chain` of the fixed chains the renderer declares (jump targets that need no declaring). */
function renderedFixedChains(family: IPFamily, facts: { localhostNodePorts: boolean }): Set<string> {
  const out = new Set<string>([
    ...FILTER_CHAINS.map((c) => `filter/${c}`),
    ...NAT_CHAINS.map((c) => `nat/${c}`),
  ]);
  if (family === 'IPv4' && facts.localhostNodePorts) out.add(`filter/${KUBE_FIREWALL}`);
  return out;
}
