import { nodePortAddresses, primaryNodeIPs } from '../modes/node-ports.js';
import type { Backend, SyncReport } from '../modes/backend.js';
import { Iptables, type IptablesBinaries } from '../iptables/iptables.js';
import { canaryLines, mergeExtraLines, missingJumpLines } from '../iptables-rules/jump-plan.js';
import { parseIptablesSave, type SavedRuleset } from '../iptables/save-parse.js';
import { cidrContains, parseCIDR } from '../model/ip.js';
import { nodeContext } from '../model/selection.js';
import type { ClusterState, IPFamily, NodeInfo } from '../model/types.js';
import { CommandError, run, type RunResult } from '../util/exec.js';
import { log } from '../util/log.js';
import { AddressWatch } from '../kernel/address-watch.js';
import type { InterfaceAddress } from '../kernel/netif.js';
import { ensureSysctl } from '../util/sysctl.js';
import { diffIpvs } from './diff.js';
import { diffIpsets, parseIpsetSave } from './ipset.js';
import { parseIpvsadmConnections, parseIpvsadmSave } from './ipvsadm.js';
import { planIptablesModeLeftovers } from './leftovers.js';
import { planIpvs, type IpvsDesired, type IpvsPlanConfig } from './plan.js';
import {
  IPVS_FILTER_CHAINS,
  IPVS_JUMPS,
  IPVS_NAT_CHAINS,
  renderIpvsRules,
  type IpvsRulesConfig,
} from './rules.js';
import { serviceSpec, vsKey, type VirtualServer } from './types.js';

/**
 * The IPVS backend for one IP family (kube-proxy's ipvs Proxier): gathers node facts, plans (pure),
 * diffs against what the kernel holds and applies one `ipset restore`, one `ip -batch` bind, one
 * `ipvsadm -R`, one `iptables-restore --noflush` and one `ip -batch` unbind, in that order (sets
 * before the rules that name them, addresses before the virtual servers that use them, unbinding
 * last). Every sync is a full reconcile, as in kube-proxy.
 */

export const DUMMY_DEVICE = 'kube-ipvs0';

/**
 * Timeout of the proxier's child processes. Batches and listings grow with the cluster: at 10k
 * Services `ipvsadm -R` of a full sync is ~87k lines, one netlink socket per line, over a minute in
 * User-mode Linux; a timed-out batch would fail every full sync for good (as iptables' restore timeout).
 */
const KERNEL_TIMEOUT_MS = 600_000;
/** Up to this many virtual servers, connection counters are listed per virtual server (see readConnections). */
const CONNECTION_LISTINGS_MAX = 8;

export interface IpvsProxierConfig {
  readonly family: IPFamily;
  readonly nodeName: string;
  /** --bind-address: the node IP when set (and of this family), for --nodeport-addresses=primary. */
  readonly bindAddress?: string;
  readonly masqueradeBit: number;
  readonly masqueradeAll: boolean;
  /**
   * CIDRs of the detect-by-CIDR local-traffic detector (any family; the one of this family is used):
   * --cluster-cidr (ClusterCIDR), or the Node's pod CIDRs (NodeCIDR).
   */
  readonly clusterCIDRs: readonly string[];
  /**
   * Detect-by-interface instead (BridgeInterface: the bridge's name; InterfaceNamePrefix: the prefix
   * followed by `+`). Takes precedence over `clusterCIDRs`.
   */
  readonly localInterface?: string;
  /** --nodeport-addresses CIDRs (or `primary`); empty = every non-loopback local address. */
  readonly nodePortAddresses: readonly string[];
  readonly scheduler: string;
  /** Resolved scheduler flags (resolveSchedulerFlags); undefined = kube-proxy's default for the scheduler. */
  readonly schedulerFlags?: readonly string[];
  readonly strictARP: boolean;
  readonly excludeCIDRs: readonly string[];
  /** Seconds; 0 keeps the kernel's value. */
  readonly tcpTimeout: number;
  readonly tcpFinTimeout: number;
  readonly udpTimeout: number;
  readonly netns?: string;
  readonly iptablesBinaries?: IptablesBinaries;
  /** How often draining (weight 0) real servers are checked (kube-proxy: 1 min). */
  readonly gracefulCheckMs?: number;
}

export interface IpvsSyncReport extends SyncReport {
  readonly draining: number;
  /** Entries of the no-endpoints ipsets (named apart from SyncReport's per-policy counts). */
  readonly noEndpointsEntries: number;
  readonly noLocalEndpointsEntries: number;
}

interface Facts {
  readonly addrs: readonly InterfaceAddress[];
  readonly dummyExists: boolean;
}

export class IpvsProxier implements Backend {
  readonly name: string;
  readonly ipt: Iptables;
  private lastDesired: IpvsDesired | undefined;
  private randomFully = false;
  private queue: Promise<unknown> = Promise.resolve();
  private reapTimer: NodeJS.Timeout | undefined;
  /** Set by stop(): no drain timer until the next sync. */
  private stopped = false;
  private lastReport: IpvsSyncReport | undefined;
  /** Read iptables-save for missing jumps/canaries: first sync, after a failure or detected drift. */
  private checkJumps = true;
  /** The rules of the last successful iptables write, and our chains as iptables-save showed them after it. */
  private writtenRules: string | undefined;
  private writtenChains: string | undefined;
  /**
   * The node's addresses and links, re-read only when `ip monitor` saw them change (once watchKernel
   * ran): at 10k Services kube-ipvs0 holds 11k addresses, a large listing to read and parse.
   */
  readonly addresses: AddressWatch;

  constructor(private readonly config: IpvsProxierConfig) {
    this.name = `ipvs/${config.family}`;
    this.ipt = new Iptables({
      family: config.family,
      netns: config.netns,
      binaries: config.iptablesBinaries,
    });
    this.addresses = new AddressWatch({ netns: config.netns, links: true });
  }

  /** The daemon's: the node's addresses and links are read again only when `ip monitor` saw a change. */
  watchKernel(): Promise<void> {
    this.addresses.watch();
    return Promise.resolve();
  }

  /** Stops the address monitor. */
  close(): Promise<void> {
    return this.addresses.close();
  }

  get lastSync(): IpvsSyncReport | undefined {
    return this.lastReport;
  }

  private exec(argv: readonly string[], input?: string): Promise<RunResult> {
    return run(argv, { input, netns: this.config.netns, timeoutMs: KERNEL_TIMEOUT_MS });
  }

  /** Runs kernel work one at a time (a sync and the drain timer never interleave). */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.queue.then(fn, fn);
    this.queue = next.catch(() => undefined);
    return next;
  }

  async setup(): Promise<void> {
    const ns = { netns: this.config.netns };
    this.randomFully = await this.ipt.supportsRandomFully();
    // kube-proxy's IPVS sysctls (conn_reuse_mode is only touched on kernels < 5.9; not supported here).
    await ensureSysctl('net.ipv4.vs.conntrack', 1, ns);
    await ensureSysctl('net.ipv4.vs.expire_nodest_conn', 1, ns);
    await ensureSysctl('net.ipv4.vs.expire_quiescent_template', 1, ns);
    await ensureSysctl('net.ipv4.ip_forward', 1, ns);
    if (this.config.strictARP) {
      await ensureSysctl('net.ipv4.conf.all.arp_ignore', 1, ns);
      await ensureSysctl('net.ipv4.conf.all.arp_announce', 2, ns);
    }
    const { tcpTimeout: t, tcpFinTimeout: f, udpTimeout: u } = this.config;
    if (t > 0 || f > 0 || u > 0) await this.exec(['ipvsadm', '--set', String(t), String(f), String(u)]);
  }

  forceFullSync(): void {
    // Every IPVS sync is a full reconcile; this also re-checks the jump rules.
    this.checkJumps = true;
  }

  async detectDrift(): Promise<boolean> {
    for (const table of ['nat', 'filter'] as const) {
      if (!(await this.ipt.canaryExists(table))) {
        log.warn('iptables canary chain missing: another agent flushed our rules; full resync', {
          backend: this.name,
          table,
        });
        this.checkJumps = true;
        return true;
      }
    }
    return false;
  }

  /** Stops the drain timer (tests, shutdown) until the next sync. Kernel state stays. */
  stop(): void {
    if (this.reapTimer) clearTimeout(this.reapTimer);
    this.reapTimer = undefined;
    this.stopped = true;
  }

  /** Resolves once kernel work in flight (a sync, a drain check) is done: await it after stop(). */
  idle(): Promise<void> {
    return this.queue.then(() => undefined);
  }

  sync(state: ClusterState): Promise<IpvsSyncReport> {
    this.stopped = false;
    return this.serial(async () => {
      try {
        return await this.syncNow(state);
      } catch (err) {
        // Each step is idempotent; the next sync re-reads everything (and re-checks jumps).
        this.checkJumps = true;
        throw err;
      }
    });
  }

  /** Deletes drained real servers now (the timer calls this); returns how many still drain. */
  reapDrained(): Promise<number> {
    return this.serial(async () => {
      if (!this.lastDesired) return 0;
      const change = await this.applyIpvs(this.lastDesired);
      return change.draining;
    });
  }

  /** The node's addresses and whether kube-ipvs0 exists (the watch's cache, when nothing changed). */
  private async gatherFacts(): Promise<Facts> {
    const show = await this.addresses.show();
    return { addrs: show.addresses, dummyExists: show.links.includes(DUMMY_DEVICE) };
  }

  private plan(state: ClusterState, facts: Facts): IpvsDesired {
    return planIpvs(state, ipvsPlanConfig(this.config, state, facts.addrs), this.config.family);
  }

  private async applyIpvs(desired: IpvsDesired): Promise<{ lines: number; draining: number }> {
    const current = parseIpvsadmSave((await this.exec(['ipvsadm', '-Sn'])).stdout);
    const opts = { family: this.config.family, excludeCIDRs: this.config.excludeCIDRs };
    // Connection counts only decide between deleting and draining a TCP real server that is no longer
    // wanted, and the diff asks for no other: without counts, every such server comes back draining.
    // Listing the kernel's counters is as costly as -Sn (one netlink round trip per virtual server),
    // so it is read only then, and only for those virtual servers when they are few.
    let change = diffIpvs(current, desired.services, { ...opts, connections: new Map() });
    if (change.draining.length > 0) {
      const connections = await this.readConnections(change.draining.map((d) => d.vs));
      change = diffIpvs(current, desired.services, { ...opts, connections });
    }
    if (change.lines.length > 0) await this.exec(['ipvsadm', '-R'], `${change.lines.join('\n')}\n`);
    this.scheduleReap(change.draining.length);
    return { lines: change.lines.length, draining: change.draining.length };
  }

  /**
   * Active + inactive connections (`ipvsadm -Ln`) of the given virtual servers: one listing each when
   * they are few, else one listing of the whole table. A server gone meanwhile has no entry (= busy).
   */
  private async readConnections(servers: readonly VirtualServer[]): Promise<Map<string, number>> {
    const specs = [...new Map(servers.map((vs) => [vsKey(vs), serviceSpec(vs)])).values()];
    if (specs.length > CONNECTION_LISTINGS_MAX) {
      return parseIpvsadmConnections((await this.exec(['ipvsadm', '-Ln'])).stdout);
    }
    const out = new Map<string, number>();
    for (const spec of specs) {
      const r = await run(['ipvsadm', '-Ln', ...spec], {
        netns: this.config.netns,
        timeoutMs: KERNEL_TIMEOUT_MS,
        allowFailure: true,
      });
      if (r.exitCode === 0) for (const [k, n] of parseIpvsadmConnections(r.stdout)) out.set(k, n);
    }
    return out;
  }

  /** Our chains as the kernel holds them; undefined when they cannot be read (the sync then writes). */
  private async readOwnChains(): Promise<string | undefined> {
    try {
      return ipvsChainsText(parseIptablesSave(await this.ipt.save()));
    } catch {
      return undefined;
    }
  }

  private scheduleReap(draining: number): void {
    if (draining === 0 || this.reapTimer || this.stopped) return;
    this.reapTimer = setTimeout(() => {
      this.reapTimer = undefined;
      this.reapDrained().catch((err: unknown) =>
        log.warn('IPVS graceful termination check failed', { backend: this.name, error: err }),
      );
    }, this.config.gracefulCheckMs ?? 60_000);
    this.reapTimer.unref();
  }

  private async syncNow(state: ClusterState): Promise<IpvsSyncReport> {
    const started = performance.now();
    const c = this.config;
    const phases: Record<string, number> = {};
    let mark = started;
    const phase = (name: string): void => {
      const now = performance.now();
      phases[name] = Math.round(now - mark);
      mark = now;
    };
    const facts = await this.gatherFacts();
    const desired = this.plan(state, facts);
    const plen = c.family === 'IPv6' ? 128 : 32;

    // 1. kube-ipvs0 and the sets (rules below name them).
    if (!facts.dummyExists) {
      this.addresses.invalidate();
      // The other family's proxier may create it at the same moment: EEXIST is fine.
      const r = await run(['ip', 'link', 'add', DUMMY_DEVICE, 'type', 'dummy'], {
        netns: c.netns,
        allowFailure: true,
      });
      if (r.exitCode !== 0 && r.failure !== 'exists') {
        throw new CommandError(r.argv, r.exitCode, r.stderr, 'exit');
      }
    }
    const ipsets = diffIpsets(
      parseIpsetSave((await this.exec(['ipset', 'save'])).stdout),
      desired.sets,
      c.family,
    );
    if (ipsets.input !== '') await this.exec(['ipset', 'restore', '-exist'], ipsets.input);

    phase('ipsetMs');
    // 2. Bind new addresses before virtual servers use them.
    const bound = new Set(
      facts.addrs.filter((a) => a.ifname === DUMMY_DEVICE && a.family === c.family).map((a) => a.ip),
    );
    const want = new Set(desired.bindAddresses);
    const toBind = desired.bindAddresses.filter((ip) => !bound.has(ip));
    const nodad = c.family === 'IPv6' ? ' nodad' : '';
    if (toBind.length > 0) {
      this.addresses.invalidate();
      await this.exec(
        ['ip', '-batch', '-'],
        toBind.map((ip) => `address add ${ip}/${plen} dev ${DUMMY_DEVICE}${nodad}`).join('\n') + '\n',
      );
    }

    phase('bindMs');
    // 3. Virtual and real servers.
    const ipvs = await this.applyIpvs(desired);
    phase('ipvsMs');

    // 4. iptables: chains rewritten, jumps and canaries added when missing.
    const rules = renderIpvsRules(desired, ipvsRulesConfig(c, this.randomFully));
    let input = rules;
    let leftovers: readonly string[] = [];
    if (this.checkJumps) {
      const saved = parseIptablesSave(await this.ipt.save());
      const declared = new Set([
        ...IPVS_NAT_CHAINS.map((x) => `nat/${x}`),
        ...IPVS_FILTER_CHAINS.map((x) => `filter/${x}`),
      ]);
      // A node switched from iptables mode: its chains go in the same transaction (see leftovers.ts).
      const old = planIptablesModeLeftovers(saved, declared, c.family);
      leftovers = old.removed;
      input = mergeExtraLines(
        rules,
        missingJumpLines(saved, IPVS_JUMPS, declared),
        canaryLines(saved),
        old.lines,
      );
    }
    // Rewriting our chains is skipped only when it would change nothing: the same rules as the last
    // write, and the kernel's copy of our chains as read back right after it (any other edit to them
    // is repaired by this sync, as before). iptables-restore resolves every `--vport` through
    // getaddrinfo(), which lists all the node's addresses: at 10k Services, ~500 KUBE-IPVS-OUT-FILTER
    // rules × 11k addresses on kube-ipvs0 took ~10 s in UML, a third of a one-endpoint sync.
    const unchanged =
      !this.checkJumps &&
      this.writtenRules === rules &&
      this.writtenChains !== undefined &&
      (await this.readOwnChains()) === this.writtenChains;
    if (!unchanged) {
      this.writtenRules = undefined;
      await this.ipt.restore(input, { noflush: true, counters: false });
      this.writtenChains = await this.readOwnChains();
      this.writtenRules = rules;
    }
    const written = unchanged ? '' : input;
    this.checkJumps = false;
    if (leftovers.length > 0) {
      log.info('removed iptables-mode leftovers', {
        backend: this.name,
        count: leftovers.length,
        removed: leftovers.slice(0, 20),
      });
    }

    phase('iptablesMs');
    // 5. Unbind what no frontend uses any more.
    const toUnbind = [...bound].filter((ip) => !want.has(ip));
    if (toUnbind.length > 0) {
      this.addresses.invalidate();
      await this.exec(
        ['ip', '-batch', '-'],
        toUnbind.map((ip) => `address del ${ip}/${plen} dev ${DUMMY_DEVICE}`).join('\n') + '\n',
      );
    }

    this.lastDesired = desired;
    const report: IpvsSyncReport = {
      backend: this.name,
      full: true,
      durationMs: performance.now() - started,
      bytes: Buffer.byteLength(written),
      lines: ipvs.lines + written.split('\n').length + ipsets.input.split('\n').length,
      writtenServices: desired.services.size,
      staleChains: 0,
      details: {
        ipvsLines: ipvs.lines,
        ipsetAdded: ipsets.added,
        ipsetDeleted: ipsets.deleted,
        bound: toBind.length,
        unbound: toUnbind.length,
        iptablesLeftoversRemoved: leftovers.length,
        iptablesUnchanged: unchanged,
        ...phases,
      },
      draining: ipvs.draining,
      noEndpointsEntries: desired.counts.noEndpoints,
      noLocalEndpointsEntries: desired.counts.noLocalEndpoints,
      noLocalEndpoints: desired.counts.noLocalServices,
    };
    this.lastReport = report;
    return report;
  }
}

/** svcplane's IPVS-mode chains (declarations and rules) as an iptables-save shows them, for comparison. */
export function ipvsChainsText(saved: SavedRuleset): string {
  const out: string[] = [];
  for (const [table, chains] of [
    ['nat', IPVS_NAT_CHAINS],
    ['filter', IPVS_FILTER_CHAINS],
  ] as const) {
    const t = saved.tables.get(table);
    for (const chain of chains) {
      out.push(`${table} ${chain} ${t?.chainsByName.has(chain) === true ? 'declared' : 'missing'}`);
      for (const rule of t?.rulesByChain.get(chain) ?? []) out.push(rule.text);
    }
  }
  return out.join('\n');
}

/**
 * NodePort addresses of this family (--nodeport-addresses, else every non-loopback local address;
 * `primary`: the node IP, from --bind-address or the Node object `node`, as in every mode).
 */
export function ipvsNodePortIPs(
  c: Pick<IpvsProxierConfig, 'family' | 'nodePortAddresses' | 'bindAddress'>,
  addrs: readonly InterfaceAddress[],
  node?: NodeInfo,
): string[] {
  const loopback = (a: InterfaceAddress): boolean =>
    a.ifname === 'lo' || (a.family === 'IPv4' ? cidrContains('127.0.0.0/8', a.ip) : a.ip === '::1');
  const candidates = addrs.filter(
    (a) =>
      a.family === c.family &&
      a.ifname !== DUMMY_DEVICE &&
      !loopback(a) &&
      !(a.family === 'IPv6' && a.scope === 'link'),
  );
  const wanted = nodePortAddresses(c.nodePortAddresses, c.family);
  let picked = candidates;
  if (wanted.kind === 'primary') return primaryNodeIPs(c, node, candidates).slice(0, 1);
  else if (wanted.kind === 'cidrs') {
    picked = candidates.filter((a) => wanted.cidrs.some((x) => cidrContains(x, a.ip)));
  }
  return [...new Set(picked.map((a) => a.ip))];
}

/** The planner's configuration from the node's addresses (`ip -j address show`), as a sync uses it. */
export function ipvsPlanConfig(
  c: Pick<
    IpvsProxierConfig,
    'family' | 'nodePortAddresses' | 'bindAddress' | 'nodeName' | 'scheduler' | 'schedulerFlags'
  >,
  state: ClusterState,
  addrs: readonly InterfaceAddress[],
): IpvsPlanConfig {
  const node = state.nodes.get(c.nodeName);
  return {
    node: nodeContext(c.nodeName, node?.labels ?? {}),
    nodePortIPs: ipvsNodePortIPs(c, addrs, node),
    otherLocalIPs: addrs.filter((a) => a.ifname !== DUMMY_DEVICE).map((a) => a.ip),
    scheduler: c.scheduler,
    ...(c.schedulerFlags !== undefined ? { schedulerFlags: c.schedulerFlags } : {}),
  };
}

/** The iptables renderer's configuration, as a sync uses it. */
export function ipvsRulesConfig(
  c: Pick<
    IpvsProxierConfig,
    'family' | 'masqueradeBit' | 'masqueradeAll' | 'clusterCIDRs' | 'localInterface'
  >,
  randomFully: boolean,
): IpvsRulesConfig {
  const cidr = c.clusterCIDRs
    .map((t) => parseCIDR(t))
    .find((p) => p !== undefined && p.family === c.family)?.cidr;
  return {
    family: c.family,
    masqueradeBit: c.masqueradeBit,
    masqueradeAll: c.masqueradeAll,
    ...(c.localInterface !== undefined
      ? { notLocal: ['!', '-i', c.localInterface] }
      : cidr !== undefined
        ? { notLocal: ['!', '-s', cidr] }
        : {}),
    randomFully,
  };
}
