import { AddressWatch } from '../kernel/address-watch.js';
import { gatherNodeFacts, type NodeFacts } from '../modes/node-facts.js';
import { localTrafficDetector, type DetectLocalMode } from '../modes/local-traffic.js';
import { programmedServiceKeys } from './programmed.js';
import type { Backend, SyncReport } from '../modes/backend.js';
import { changeSinceApplied, type StateChange } from '../model/state-change.js';
import type { ClusterState, IPFamily } from '../model/types.js';
import { CommandError, type ChildHandle } from '../util/exec.js';
import { log } from '../util/log.js';
import { ensureSysctl, readSysctl } from '../util/sysctl.js';
import {
  Iptables,
  KUBE_PROXY_CANARY,
  RestoreError,
  type CommitCount,
  type NetlinkEventSocket,
  type ProbeCommit,
  type RestoreResult,
} from './iptables.js';
import { CommitLog, generationsAllOurs } from './commit-log.js';
import {
  chainsOfRestoreInput,
  diffRulesets,
  summaryLine,
  type FamilyDrift,
} from '../iptables-rules/compare.js';
import { canaryLines, mergeExtraLines, missingJumpLines } from '../iptables-rules/jump-plan.js';
import { jumpRules } from '../iptables-rules/jumps.js';
import { buildOwnerIndex } from '../iptables-rules/owners.js';
import { FILTER_CHAINS, NAT_CHAINS } from './render-fixed.js';
import {
  renderChunkedRestoreInput,
  renderRestoreInput,
  type IptablesRenderConfig,
  type LocalDetector,
  type RenderResult,
} from './render.js';
import { dropUnchangedFixedChains, fixedChainContents, type FixedChainContents } from './render-unchanged.js';
import {
  builtinChainRequests,
  declaredChains,
  foreignChainRequests,
  kernelAsSave,
  listingAsSave,
  listingInput,
  parseListing,
  type ChainRequest,
  parseNftChains,
  wholeTableCanaries,
  wholeTableChunks,
  withoutCounters,
  type KernelChain,
} from './render-whole-table.js';
import { isServiceChainName, KUBE_FIREWALL } from './names.js';
import { parseIptablesSave, serviceChainsOf, type SavedRuleset } from './save-parse.js';

/**
 * The iptables backend for one IP family: kube-proxy's syncProxyRules split by concern. It decides
 * full vs partial sync (KEP-3453), gathers node facts, renders (pure) and applies the rules with one
 * iptables-restore: a partial sync is one `--noflush` transaction; a full sync on nf_tables is the
 * same input in transactions of at most CHUNK_CHAINS chains (render-chunks.ts). A failed write
 * leaves the previous rules serving and forces the next sync to be full.
 */

export type { DetectLocalMode } from '../modes/local-traffic.js';

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
  /** The Node object's pod CIDRs (spec.podCIDRs, read once at startup) for NodeCIDR detection. */
  readonly podCIDRs?: readonly string[];
  /** --nodeport-addresses: CIDRs, or the single value `primary`; empty = all local addresses. */
  readonly nodePortAddresses: readonly string[];
  readonly localhostNodePorts: boolean;
  /** Run every command inside this network namespace (tests, sandboxes). */
  readonly netns?: string;
  readonly binaries?: { readonly iptables?: string; readonly restore?: string; readonly save?: string };
  /** A partial sync becomes full when the last full sync is older than this (kube-proxy: 1 h). */
  readonly fullSyncPeriodMs?: number;
  /**
   * How full syncs write (docs/performance.md): `chunked` is `--noflush` in transactions of at most
   * CHUNK_CHAINS chains (never touches foreign rules, near-linear on nf_tables); `noflush` is
   * kube-proxy's single transaction (quadratic on nf_tables); `whole-table` replaces nat and filter
   * carrying foreign rules over (fastest, but a foreign rule added while it writes is lost); `auto`
   * (default) is chunked on nf_tables and noflush on legacy.
   */
  readonly fullSyncMode?: FullSyncMode;
}

export type FullSyncMode = 'auto' | 'chunked' | 'whole-table' | 'noflush';

export function isFullSyncMode(v: string): v is FullSyncMode {
  return v === 'auto' || v === 'chunked' || v === 'whole-table' || v === 'noflush';
}

/**
 * Chains per transaction of a chunked full sync. Each transaction costs ~chains × commands in
 * iptables-nft's cache request and one validation of the whole table by the kernel at commit (the
 * walk from the built-in chains, ~0.1 s at 10k Services): at 10k, 250 chains per chunk took 45 s,
 * 500 took 27 s, 1000 took 21 s and 2000 took 28 s into a populated table (docs/performance.md).
 */
export const CHUNK_CHAINS = 1000;

/**
 * Rules per transaction of a long fixed chain that does not exist yet (KUBE-SERVICES and
 * KUBE-NODEPORTS on a new node, render-chunks.ts): in one transaction, each of KUBE-SERVICES' 20k
 * rules at 10k Services walks iptables-nft's sorted list of the transaction's chain names (one per
 * jump target), 3.5-4.3 s of CPU; in parts of 1,000 rules, 0.2-0.4 s (docs/performance.md).
 */
export const CHUNK_RULES = 1000;

/** What one sync wrote. */
interface AppliedSync {
  readonly rendered: Pick<
    RenderResult,
    'counts' | 'noLocalEndpoints' | 'largeClusterMode' | 'writtenServices' | 'staleChains'
  >;
  readonly restore: RestoreResult;
  readonly mode: 'noflush' | 'chunked' | 'whole-table';
  readonly staleChains: number;
  /** Time spent listing the kernel's chains (whole-table mode). */
  readonly listMs?: number;
  /** A partial render totalled from the last render's totals and the changed Services alone. */
  readonly fromTotals?: boolean;
}

export interface IptablesSyncReport extends SyncReport {
  readonly ruleCounts: RenderResult['counts'];
  readonly noLocalEndpoints: RenderResult['noLocalEndpoints'];
  readonly largeClusterMode: boolean;
}

export class IptablesProxier implements Backend {
  readonly name: string;
  readonly ipt: Iptables;
  private needFullSync = true;
  private lastFullSync = Number.NEGATIVE_INFINITY;
  /** Last state whose rules reached the kernel. */
  private applied: ClusterState | undefined;
  private lastFacts: NodeFacts | undefined;
  private randomFully = false;
  private beLiberal = false;
  private lastReport: IptablesSyncReport | undefined;
  /** `nft monitor` and what it saw other agents commit (watchKernel), for cheap drift checks. */
  private watch: KernelWatch | undefined;
  private watching = false;
  /**
   * The kernel held our rules at a moment the monitor already listened (a full sync or a full
   * comparison that started while it did): from then on, only foreign commits can cause drift.
   */
  private baselineOk = false;
  /** How the last drift check decided (logs, tests). */
  lastDriftCheck: DriftCheck | undefined;
  /** Content of each fixed chain as the kernel holds it after our last restore (render-unchanged.ts). */
  private fixedContents: FixedChainContents = new Map();
  /** How full syncs write (resolved on first use; see fullSyncStrategy). */
  private strategy: Exclude<FullSyncMode, 'auto'> | undefined;
  /** Whether the last attempted sync was full (metrics count failed partial restores apart). */
  lastAttemptFull = true;
  /** Set when route_localnet cannot be enabled (read-only /proc/sys). */
  private localhostNodePortsUnavailable = false;
  /** The node's addresses, re-read only when `ip monitor` saw them change (once watchKernel ran). */
  readonly addresses: AddressWatch;

  constructor(private readonly config: IptablesProxierConfig) {
    this.name = `iptables/${config.family}`;
    this.ipt = new Iptables({ family: config.family, netns: config.netns, binaries: config.binaries });
    this.addresses = new AddressWatch({ netns: config.netns });
  }

  get lastSync(): IptablesSyncReport | undefined {
    return this.lastReport;
  }

  async setup(): Promise<void> {
    const flags = await readKernelFlags(this.ipt, this.config.netns);
    this.randomFully = flags.randomFully;
    this.beLiberal = flags.conntrackTCPBeLiberal;
    if (this.config.family === 'IPv4' && this.config.localhostNodePorts) {
      const facts = await this.gatherFacts(undefined);
      if (facts.localhostNodePorts) {
        try {
          await ensureSysctl('net.ipv4.conf.all.route_localnet', 1, { netns: this.config.netns });
        } catch (err) {
          // An unprivileged pod has a read-only /proc/sys: serve everything else rather than nothing.
          log.warn('cannot enable route_localnet; localhost NodePorts are off', {
            backend: this.name,
            error: err,
          });
          this.localhostNodePortsUnavailable = true;
        }
      }
    }
  }

  forceFullSync(): void {
    this.needFullSync = true;
  }

  /** Services with rules in the kernel now (any writer's): for the safety valve's first sync. */
  async programmedServices(): Promise<ReadonlySet<string>> {
    return programmedServiceKeys(parseIptablesSave(await this.ipt.save()));
  }

  /**
   * Watches the kernel for other agents' commits (`nft monitor`, iptables/commit-log.ts) so that a
   * drift check reads the kernel only when one touched our chains, and the node's addresses
   * (kernel/address-watch.ts) so that a sync reads them only when they changed. The daemon calls it once before
   * its first sync; without it (or on the legacy backend, or without `nft`) every drift check
   * compares everything.
   */
  async watchKernel(): Promise<void> {
    this.watching = true;
    this.addresses.watch();
    if ((await this.ipt.version()).backend !== 'nf_tables') {
      log.info('legacy iptables: drift checks read every rule (nft monitor cannot see them)', {
        backend: this.name,
      });
      return;
    }
    await this.startWatch();
  }

  /** PID of the running `nft monitor` (undefined without a kernel watch). */
  get kernelWatchPid(): number | undefined {
    return this.watch?.alive === true ? this.watch.handle.pid : undefined;
  }

  /** Stops the kernel watch (the daemon's stop). */
  async close(): Promise<void> {
    this.watching = false;
    const w = this.watch;
    this.watch = undefined;
    await w?.handle.stop(2000);
    await this.addresses.close();
    await this.ipt.unnameCommits();
  }

  private async startWatch(): Promise<void> {
    if (!this.watching) return; // closed meanwhile
    // Our commits are known by their process name, never by PID: in a pod without hostPID the
    // kernel reports PIDs of the initial PID namespace, which this process never sees.
    const named = await this.ipt.nameCommits();
    if ('unavailable' in named) {
      log.warn('cannot tell our own iptables commits from others: drift checks read every rule', {
        backend: this.name,
        reason: named.unavailable,
      });
      return;
    }
    if (!this.watching) return;
    const commits = new CommitLog(this.config.family === 'IPv6' ? 'ip6' : 'ip', (comm) =>
      this.ipt.isOwnCommit(comm),
    );
    let handle: ChildHandle;
    try {
      handle = this.ipt.monitorCommits();
    } catch (err) {
      log.warn('cannot start nft monitor: drift checks read every rule', { backend: this.name, error: err });
      return;
    }
    const watch: KernelWatch = { handle, commits, alive: true, barrier: undefined };
    this.watch = watch;
    this.baselineOk = false;
    handle.onLine((l) => commits.line(l));
    handle.onErrorLine((l) => log.debug('nft monitor', { backend: this.name, stderr: l }));
    void handle.exited.then((code) => {
      watch.alive = false;
      commits.lost(`nft monitor exited (${String(code)})`);
    });
    // Armed once it reports a commit of ours; until then every check compares everything. nft
    // subscribes a moment after it starts (longer under load): a probe it missed is sent again.
    const probePids = new Set<number>();
    const until = performance.now() + MONITOR_READY_MS;
    while (!commits.armed && watch.alive && performance.now() < until) {
      const probe = await this.ipt.probeCommit();
      if (probe.pid !== undefined) probePids.add(probe.pid);
      const retryAt = performance.now() + PROBE_RETRY_MS;
      while (!commits.armed && watch.alive && performance.now() < retryAt) {
        await new Promise((r) => setTimeout(r, 10));
      }
      const generation = commits.probeGeneration(probe.nonce);
      if (generation !== undefined) watch.barrier = { generation, made: probe.made };
    }
    if (!commits.armed) {
      log.warn('nft monitor did not report our probe commit; drift checks read every rule until it does', {
        backend: this.name,
      });
      return;
    }
    // The kernel's PID differs from the one we started the probe with in a PID namespace of our own.
    const kernelPid = commits.lastOwnPid;
    log.info('kernel watch armed', {
      backend: this.name,
      ownCommitsBy: 'process name',
      processName: named.name,
      pidNamespace: kernelPid === undefined || !probePids.has(kernelPid),
      ...(kernelPid !== undefined ? { kernelPid } : {}),
      childPids: [...probePids],
    });
  }

  /**
   * Whether another agent changed our rules, by the same comparison as `svcplane diff`
   * (compare.ts). Nothing is read when the kernel watch saw no foreign commit touch our chains
   * (the idle case); only the chains it names are read when it did; everything otherwise.
   */
  async detectDrift(): Promise<boolean> {
    if (this.needFullSync || this.lastFacts === undefined || this.applied === undefined) return true;
    if (this.watching && this.watch?.alive !== true && (await this.ipt.version()).backend === 'nf_tables') {
      await this.close();
      this.watching = true;
      await this.startWatch();
    }
    const started = performance.now();
    const w = this.watch;
    const armed = w !== undefined && w.alive && w.commits.armed;
    // A barrier: once the monitor reports a commit of ours made now, every earlier commit (another
    // agent's a moment ago included) has been read.
    const caughtUp = armed && this.baselineOk ? await this.caughtUp(w) : undefined;
    const changes = w?.commits.take();
    let check: Omit<DriftCheck, 'durationMs'>;
    if (caughtUp !== undefined && changes !== undefined && changes.unscoped === undefined) {
      const settled = caughtUp.settled !== undefined ? { settled: caughtUp.settled } : {};
      check =
        changes.chains.size === 0
          ? { kind: 'quiet', ...settled }
          : {
              kind: 'scoped',
              chains: [...changes.chains],
              reason: await this.compareChains(changes.chains),
              ...settled,
            };
    } else {
      const why = !armed
        ? 'no kernel watch'
        : !this.baselineOk
          ? 'no baseline yet'
          : caughtUp === undefined
            ? 'nft monitor lagging'
            : changes?.unscoped;
      check = { kind: 'full', why: why ?? 'unknown', reason: await this.compareAll() };
      if (check.reason === undefined && armed) this.baselineOk = true;
    }
    this.lastDriftCheck = { ...check, durationMs: Math.round(performance.now() - started) };
    log.verbose('drift check', {
      backend: this.name,
      check: check.kind,
      ...(check.chains !== undefined ? { chains: check.chains.length } : {}),
      ...(check.why !== undefined ? { why: check.why } : {}),
      ...(check.settled !== undefined ? { settled: check.settled } : {}),
      durationMs: this.lastDriftCheck.durationMs,
    });
    if (check.reason === undefined) return false;
    log.warn('iptables rules changed by another agent; full resync', {
      backend: this.name,
      reason: check.reason,
      check: check.kind,
    });
    this.needFullSync = true;
    return true;
  }

  /**
   * A probe commit of ours, and whether the monitor reported it in time. Events the monitor lost
   * since the last probe are settled here when every generation between the two probes was a
   * commit of ours (generationsAllOurs: the 10k full sync's restore overflows nft's socket).
   */
  private async caughtUp(w: KernelWatch): Promise<{ settled?: string } | undefined> {
    const started = performance.now();
    // Reading the events of a write that overflowed nft's socket takes nft seconds under load:
    // waiting is cheaper than the full comparison that giving up means.
    const patience = (): number => (w.commits.lossPending ? MONITOR_DRAIN_MS : MONITOR_READY_MS);
    for (;;) {
      // The kernel counts the events it drops on nft's socket (a silent drop too: it reports an
      // overflow once until the queue drains). No drop between just before our probe and once the
      // monitor reported it means that every event lost was of a commit before the probe.
      const before = await this.ipt.monitorSocket(w.handle.pid);
      const probe = await this.ipt.probeCommit();
      let generation: number | undefined;
      let emptySince: number | undefined;
      while ((generation = w.commits.probeGeneration(probe.nonce)) === undefined && w.alive) {
        const now = performance.now();
        if (now - started >= patience()) return undefined;
        if (w.commits.lossPending) {
          // A probe made while the socket was still full was dropped with the rest: once nft has
          // read everything (and we its lines) without it, probe again.
          const socket = await this.ipt.monitorSocket(w.handle.pid);
          emptySince = socket?.queued === 0 ? (emptySince ?? now) : undefined;
          if (emptySince !== undefined && now - emptySince >= REPROBE_AFTER_EMPTY_MS) break;
        }
        await new Promise((r) => setTimeout(r, w.commits.lossPending ? 20 : 5));
      }
      if (!w.alive) return undefined;
      if (generation === undefined) continue;
      return this.settle(w, generation, probe, before);
    }
  }

  /** After the barrier's probe made `generation`: settles lost events when the numbers allow it. */
  private async settle(
    w: KernelWatch,
    generation: number,
    probe: ProbeCommit,
    before: NetlinkEventSocket | undefined,
  ): Promise<{ settled?: string }> {
    const to = { generation, made: probe.made };
    const from = w.barrier;
    w.barrier = to;
    if (!w.commits.lossPending) return {};
    const after = await this.ipt.monitorSocket(w.handle.pid);
    const noDrops = before !== undefined && after !== undefined && after.drops === before.drops;
    const allOurs = from !== undefined && generationsAllOurs(from, to);
    const settled = noDrops && allOurs ? w.commits.settleLoss(generation) : undefined;
    if (settled === undefined) {
      log.verbose('nft monitor lost events that may be another agent’s: this check compares everything', {
        backend: this.name,
        dropsMeanwhile: before !== undefined && after !== undefined ? after.drops - before.drops : 'unknown',
        ...(from !== undefined
          ? {
              generations: generation - from.generation,
              ourCommits: probe.made.exact - from.made.exact,
              uncertainCommits: probe.made.uncertain - from.made.uncertain,
            }
          : {}),
      });
      return {};
    }
    log.verbose('nft monitor lost events of our own commits only; the kernel watch stays trusted', {
      backend: this.name,
      generations: `${from!.generation + 1}–${generation}`,
      lost: settled,
    });
    return { settled };
  }

  /** Everything compared: iptables-save against the full render of what we last applied. */
  private async compareAll(): Promise<string | undefined> {
    const saved = parseIptablesSave(await this.ipt.save());
    for (const t of ['mangle', 'nat', 'filter']) {
      if (!saved.tables.get(t)?.chainsByName.has(KUBE_PROXY_CANARY)) return `canary chain missing in ${t}`;
    }
    const desired = parseIptablesSave(this.renderApplied());
    return this.compare(desired, saved, undefined);
  }

  /** Only the named chains compared (what the kernel watch saw other agents touch). */
  private async compareChains(chains: ReadonlySet<string>): Promise<string | undefined> {
    const wanted = new Map<string, Set<string>>();
    const requests: ChainRequest[] = [];
    for (const key of chains) {
      const slash = key.indexOf('/');
      const table = key.slice(0, slash);
      const chain = key.slice(slash + 1);
      if (chain === KUBE_PROXY_CANARY) {
        if (!(await this.ipt.chainExists(table, chain))) return `canary chain missing in ${table}`;
        continue;
      }
      if (table !== 'nat' && table !== 'filter') continue;
      const set = wanted.get(table) ?? new Set<string>();
      wanted.set(table, set);
      set.add(chain);
      requests.push({ table, chain, builtin: BUILTIN_CHAINS.has(chain) });
    }
    if (requests.length === 0) return undefined;
    const actual = parseIptablesSave(await this.listExistingChains(requests));
    const desired = parseIptablesSave(chainsOfRestoreInput(this.renderApplied(), wanted));
    return this.compare(desired, actual, (table, chain) => wanted.get(table)?.has(chain) === true);
  }

  /** The `-S` listing of the requested chains as iptables-save text; chains that are gone left out. */
  private async listExistingChains(requests: readonly ChainRequest[]): Promise<string> {
    try {
      return listingAsSave(
        parseListing(requests, await this.ipt.listChainRules(listingInput(requests, false))),
      );
    } catch (err) {
      if (!(err instanceof CommandError)) throw err;
    }
    // One of them is gone (the batch fails as a whole): list them one by one.
    const found: ChainRequest[] = [];
    const texts: string[] = [];
    for (const r of requests) {
      try {
        texts.push(await this.ipt.listChainRules(listingInput([r], false)));
        found.push(r);
      } catch (err) {
        if (!(err instanceof CommandError)) throw err;
      }
    }
    return found.length === 0 ? '' : listingAsSave(parseListing(found, texts.join('')));
  }

  /** The full restore input of the state whose rules we last wrote (the render memo makes it cheap). */
  private renderApplied(): string {
    return renderRestoreInput({
      state: this.applied!,
      config: this.renderConfig(this.lastFacts!),
      existingServiceChains: new Set(),
    }).restoreInput;
  }

  /** compare.ts's verdict (the one `svcplane diff` prints): undefined when in sync, else its summary. */
  private compare(
    desired: SavedRuleset,
    actual: SavedRuleset,
    inScope: ((table: string, chain: string) => boolean) | undefined,
  ): string | undefined {
    const jumps = jumpRules(this.config.family, this.lastFacts!);
    const drift: FamilyDrift = diffRulesets({
      family: this.config.family,
      desired,
      actual,
      owners: buildOwnerIndex(this.applied!),
      jumps: inScope ? jumps.filter((j) => inScope(j.table, j.chain)) : jumps,
    });
    return drift.inSync ? undefined : summaryLine(drift);
  }

  async sync(state: ClusterState, given?: StateChange): Promise<IptablesSyncReport> {
    const started = performance.now();
    const change = changeSinceApplied(given, this.applied, state);
    const factsRead = this.gatherFacts(state);
    // While `ip` lists the addresses, a partial sync's input is rendered with the last sync's facts:
    // a partial sync needs them unchanged (changed facts force a full sync, which renders anew).
    const early = this.renderPartialEarly(state, change);
    const facts = await factsRead;
    const factsChanged = this.lastFacts === undefined || !sameFacts(this.lastFacts, facts);
    const full = fullSyncDue({
      forced: this.needFullSync || factsChanged,
      sinceLastFullMs: performance.now() - this.lastFullSync,
      periodMs: this.config.fullSyncPeriodMs ?? 3_600_000,
      largeClusterMode: this.lastReport?.largeClusterMode === true,
    });
    this.lastAttemptFull = full;
    // A full sync rewrites every chain of ours from a fresh listing: what others changed before it
    // starts is repaired by it.
    const armedAtStart = this.watch?.alive === true && this.watch.commits.armed;
    if (full) this.watch?.commits.take();

    try {
      const strategy = full ? await this.fullSyncStrategy() : 'noflush';
      const applied =
        strategy === 'whole-table'
          ? await this.wholeTableSync(state, facts)
          : strategy === 'chunked'
            ? await this.chunkedSync(state, facts)
            : await this.noflushSync(state, facts, full, change, full ? undefined : early);
      const { rendered, restore } = applied;
      this.applied = state;
      this.lastFacts = facts;
      this.needFullSync = false;
      if (full) {
        this.lastFullSync = performance.now();
        this.baselineOk = armedAtStart;
      }
      const report: IptablesSyncReport = {
        backend: this.name,
        full,
        durationMs: performance.now() - started,
        bytes: restore.bytes,
        lines: restore.lines,
        writtenServices: rendered.writtenServices.size,
        staleChains: applied.staleChains,
        details: {
          restoreMs: Math.round(restore.durationMs),
          mode: applied.mode,
          ...(applied.listMs !== undefined ? { listMs: Math.round(applied.listMs) } : {}),
          ...(applied.fromTotals === true ? { renderFromTotals: true } : {}),
        },
        ruleCounts: rendered.counts,
        noLocalEndpoints: rendered.noLocalEndpoints,
        largeClusterMode: rendered.largeClusterMode,
      };
      this.lastReport = report;
      return report;
    } catch (err) {
      // iptables-restore commits table by table (nf_tables too, measured): a refused table and the
      // ones after it keep their previous rules, an earlier table may already be new. The forced full
      // sync rewrites every table.
      this.needFullSync = true;
      throw err;
    }
  }

  /**
   * Partial syncs, and full syncs on the legacy backend: one `iptables-restore --noflush` of the
   * changed chains (full: after one iptables-save for leftovers, missing jumps and canaries).
   */
  private async noflushSync(
    state: ClusterState,
    facts: NodeFacts,
    full: boolean,
    change?: StateChange,
    early?: RenderResult,
  ): Promise<AppliedSync> {
    // A partial sync writes the change from the state whose rules the kernel holds (a failed write
    // forces the next sync to be full, so `applied`, where the change starts, is what the kernel has).
    const partial = !full && change?.previous !== undefined ? change : undefined;
    let saved: SavedRuleset | undefined;
    if (partial === undefined) {
      // One iptables-save shows leftover service chains, missing jumps and canaries at once.
      saved = parseIptablesSave(await this.ipt.save());
    }
    const rendered =
      (partial !== undefined ? early : undefined) ??
      renderRestoreInput({
        state,
        config: this.renderConfig(facts),
        ...(partial === undefined
          ? { existingServiceChains: serviceChainsOf(saved!, 'nat') }
          : {
              changedServices: partial.changed,
              previous: partial.previous,
              removedServices: partial.removed,
            }),
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
    // Partial syncs leave fixed chains (KUBE-SERVICES …) alone when their content did not change:
    // the renderer knows when none did; otherwise the rendered ones are compared with the kernel's.
    const trimmed = full
      ? { input, contents: fixedChainContents(input) }
      : rendered.fixedChainsOmitted
        ? { input, contents: this.fixedContents }
        : dropUnchangedFixedChains(input, this.fixedContents);
    const restore = await this.ipt.restore(trimmed.input, { noflush: true, counters: true });
    this.fixedContents = trimmed.contents;
    return {
      rendered,
      restore,
      mode: 'noflush',
      staleChains: rendered.staleChains.length,
      fromTotals: rendered.fromTotals,
    };
  }

  /**
   * Whole-table full sync (opt-in, nf_tables backend, see render-whole-table.ts): nat and filter are
   * replaced in one transaction whose input carries every foreign chain and rule over verbatim.
   * The foreign chains are listed after rendering and listed again right before the restore; if
   * they changed in between, or the restore names a chain that vanished, this sync is written in
   * chunks instead. A foreign rule added while iptables-restore runs is still lost.
   */
  private async wholeTableSync(state: ClusterState, facts: NodeFacts): Promise<AppliedSync> {
    const rendered = renderRestoreInput({
      state,
      config: this.renderConfig(facts),
      changedServices: undefined,
      // Stale service chains vanish with the table: no `-X` lines needed.
      existingServiceChains: new Set(),
    });
    const listStarted = performance.now();
    let kernel: Map<string, KernelChain[]>;
    try {
      kernel = parseNftChains(await this.ipt.listNftChains(), this.config.family === 'IPv6' ? 'ip6' : 'ip');
    } catch (err) {
      if (!nftMissing(err)) throw err;
      log.warn('nft not found: full syncs use iptables-restore --noflush', { backend: this.name });
      this.strategy = 'noflush';
      return this.noflushSync(state, facts, true);
    }
    if (!(kernel.get('mangle') ?? []).some((c) => c.name === KUBE_PROXY_CANARY)) {
      // The mangle canary lives outside the replaced tables: a tiny --noflush write (first sync only).
      await this.ipt.restore(`*mangle\n:${KUBE_PROXY_CANARY} - [0:0]\nCOMMIT\n`, {
        noflush: true,
        counters: false,
      });
    }
    const ours = declaredChains(rendered.restoreInput);
    const requests = foreignChainRequests(kernel, ours);
    const listing = await this.ipt.listChainRules(listingInput(requests, true));
    const foreign = parseListing(requests, listing);
    const input = wholeTableChunks(
      rendered.restoreInput,
      foreign,
      missingJumpLines(
        parseIptablesSave(listingAsSave(foreign)),
        jumpRules(this.config.family, facts),
        renderedFixedChains(this.config.family, facts),
      ),
      wholeTableCanaries(),
    );
    // Race guard: another agent's change since the listing would be lost by a whole-table write.
    // Re-listing the same chains (one process, no counters) catches changed rules and policies
    // until here. It cannot cover the restore itself: a rule another agent adds while
    // iptables-restore reads and commits the input (seconds at 10k Services) is lost; that is why
    // this mode is not the default (docs/performance.md, "Foreign rules and full syncs").
    const listingAgain = await this.ipt.listChainRules(listingInput(requests, false));
    const listMs = performance.now() - listStarted;
    if (withoutCounters(listing) !== listingAgain) {
      log.warn('foreign iptables rules changed during the full sync: writing in --noflush chunks instead', {
        backend: this.name,
      });
      return this.chunkedSync(state, facts);
    }
    let restore: RestoreResult;
    try {
      restore = await this.ipt.restore(input, { noflush: false, counters: true });
    } catch (err) {
      // A foreign rule listed after its chain was created, or a chain deleted between the two
      // listings: the transaction was refused as a whole, nothing changed. Write the safe way.
      if (!(err instanceof RestoreError) || err.missingChain === undefined) throw err;
      log.warn('foreign iptables chains changed during the full sync: writing in --noflush chunks instead', {
        backend: this.name,
        error: err.message,
      });
      return this.chunkedSync(state, facts);
    }
    this.fixedContents = fixedChainContents(rendered.restoreInput);
    const active = rendered.activeServiceChains;
    const stale = (kernel.get('nat') ?? []).filter((c) => isServiceChainName(c.name) && !active.has(c.name));
    return {
      rendered,
      restore,
      mode: 'whole-table',
      staleChains: stale.length,
      listMs,
    };
  }

  /**
   * Chunked full syncs on the nf_tables backend by default (a single `--noflush` transaction is
   * quadratic there); legacy restores are linear, so kube-proxy's way stays.
   */
  private async fullSyncStrategy(): Promise<Exclude<FullSyncMode, 'auto'>> {
    if (this.strategy === undefined) {
      const mode = this.config.fullSyncMode ?? 'auto';
      this.strategy =
        mode !== 'auto' ? mode : (await this.ipt.version()).backend === 'nf_tables' ? 'chunked' : 'noflush';
    }
    return this.strategy;
  }

  /**
   * Chunked full sync (render.ts, renderChunkedRestoreInput): kube-proxy's `--noflush` input in
   * transactions of at most CHUNK_CHAINS chains, rendered one by one while one iptables-restore
   * commits the previous ones (no joined input). Foreign chains and rules are never part of
   * the input, so nothing another agent writes meanwhile can be lost. Instead of an iptables-save of
   * the whole ruleset (seconds at 10k, and refetched by iptables-nft whenever another agent commits),
   * it reads the chain names (`nft list chains`) and the rules of the built-in chains only.
   */
  private async chunkedSync(state: ClusterState, facts: NodeFacts): Promise<AppliedSync> {
    const listStarted = performance.now();
    let kernel: Map<string, KernelChain[]>;
    try {
      kernel = parseNftChains(await this.ipt.listNftChains(), this.config.family === 'IPv6' ? 'ip6' : 'ip');
    } catch (err) {
      // Without nft, one --noflush transaction (an iptables-save first). Any other failure (a
      // timeout: see "Foreign rules and full syncs" in docs/performance.md) fails this sync; the
      // previous rules keep serving and the next attempt retries.
      if (!nftMissing(err)) throw err;
      log.warn('nft not found: full syncs use one iptables-restore --noflush', { backend: this.name });
      this.strategy = 'noflush';
      return this.noflushSync(state, facts, true);
    }
    const requests = builtinChainRequests(kernel);
    const listed = parseListing(requests, await this.ipt.listChainRules(listingInput(requests, false)));
    const saved = parseIptablesSave(kernelAsSave(kernel, listed));
    const listMs = performance.now() - listStarted;
    const extras = [
      missingJumpLines(
        saved,
        jumpRules(this.config.family, facts),
        renderedFixedChains(this.config.family, facts),
      ),
      canaryLines(saved),
    ];
    // Rendered while iptables-restore reads: each transaction is produced when the previous ones
    // were taken, so rendering overlaps the kernel's work and no joined input exists.
    const existing = new Map(
      [...kernel].map(([table, chains]) => [table, new Set(chains.map((c) => c.name))]),
    );
    const render = renderChunkedRestoreInput(
      {
        state,
        config: this.renderConfig(facts),
        existingServiceChains: new Set(
          (kernel.get('nat') ?? []).filter((c) => isServiceChainName(c.name)).map((c) => c.name),
        ),
      },
      {
        maxChains: CHUNK_CHAINS,
        maxRules: CHUNK_RULES,
        // A chain the listing did not show cannot be reached before this sync's last transaction.
        exists: (table, chain) => existing.get(table)?.has(chain) === true,
      },
      ...extras,
    );
    const restore = await this.ipt.restore(render.pieces, { noflush: true, counters: true });
    const rendered = render.result();
    // What the drift model and the partial syncs compare with: our chains (the jumps and canaries
    // are checked by existence), as the whole-table path keeps them.
    this.fixedContents = fixedChainContents(rendered.fixedChains);
    return {
      rendered,
      restore,
      mode: 'chunked',
      staleChains: rendered.staleChains.length,
      listMs,
    };
  }

  /**
   * The partial sync's render with the last sync's facts, when this sync can be partial; used only
   * if the facts read meanwhile are the same (else the sync is full). A render that fails here is
   * done again, and fails, inside the sync, which then handles it.
   */
  private renderPartialEarly(state: ClusterState, change: StateChange): RenderResult | undefined {
    if (this.lastFacts === undefined || this.needFullSync || change.previous === undefined) return undefined;
    try {
      return renderRestoreInput({
        state,
        config: this.renderConfig(this.lastFacts),
        changedServices: change.changed,
        removedServices: change.removed,
        previous: change.previous,
      });
    } catch {
      return undefined;
    }
  }

  private renderConfig(facts: NodeFacts): IptablesRenderConfig {
    return renderConfigFor(this.config, facts, {
      randomFully: this.randomFully,
      conntrackTCPBeLiberal: this.beLiberal,
    });
  }

  /** Node name/zone, node IPs and NodePort addresses, every sync (the addresses from the watch's cache). */
  private gatherFacts(state: ClusterState | undefined): Promise<NodeFacts> {
    const config = this.localhostNodePortsUnavailable
      ? { ...this.config, localhostNodePorts: false }
      : this.config;
    return gatherNodeFacts(config, state, this.addresses);
  }
}

/** `nft` is not installed (as opposed to failing or timing out). */
function nftMissing(err: unknown): boolean {
  return err instanceof CommandError && err.reason === 'not-found';
}

/** The iptables binary and kernel facts the renderer needs (read once at setup). */
export interface KernelRenderFlags {
  readonly randomFully: boolean;
  readonly conntrackTCPBeLiberal: boolean;
}

export async function readKernelFlags(ipt: Iptables, netns: string | undefined): Promise<KernelRenderFlags> {
  const randomFully = await ipt.supportsRandomFully();
  const liberal = await readSysctl('net.netfilter.nf_conntrack_tcp_be_liberal', { netns });
  return { randomFully, conntrackTCPBeLiberal: liberal !== undefined && liberal.trim() !== '0' };
}

/** The render config of one proxier for the given node facts and kernel flags. */
export function renderConfigFor(
  c: IptablesProxierConfig,
  facts: NodeFacts,
  flags: KernelRenderFlags,
): IptablesRenderConfig {
  return {
    family: c.family,
    node: facts.node,
    nodeIPs: facts.nodeIPs,
    masqueradeBit: c.masqueradeBit,
    masqueradeAll: c.masqueradeAll,
    localDetector: localDetectorFor(c),
    nodePortAddresses: facts.nodePortAddresses,
    localhostNodePorts: facts.localhostNodePorts,
    randomFully: flags.randomFully,
    conntrackTCPBeLiberal: flags.conntrackTCPBeLiberal,
  };
}

/**
 * kube-proxy's --detect-local-mode resolved for the proxier's family. NodeCIDR is kube-proxy's
 * detect-by-CIDR with the Node object's pod CIDR of this family (`podCIDRs`: spec.podCIDRs, which
 * the CLI reads once at startup, as kube-proxy does); a family without one gets no detector
 * (kube-proxy's NoOp, warned about at startup). A mode whose input is missing is a configuration
 * error, never a silent None.
 */
export function localDetectorFor(c: IptablesProxierConfig): LocalDetector {
  return localTrafficDetector(c);
}

/**
 * kube-proxy's doFullSync: forced (startup, a failed write, changed node facts) or the hourly one,
 * which large-cluster mode skips (PR #138571: at that size a full sync is the very cost partial
 * syncs exist to avoid).
 */
export function fullSyncDue(s: {
  readonly forced: boolean;
  readonly sinceLastFullMs: number;
  readonly periodMs: number;
  readonly largeClusterMode: boolean;
}): boolean {
  return s.forced || (!s.largeClusterMode && s.sinceLastFullMs > s.periodMs);
}

function sameFacts(a: NodeFacts, b: NodeFacts): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
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

/** How long watchKernel waits for the monitor to report its probe commit; the first sync waits as long. */
const MONITOR_READY_MS = 5_000;
/**
 * How long a drift check waits for its probe when nft lost events (the events of a write that
 * overflowed its socket are still being read: a check right after a 10k full sync that took longer
 * than the sync period, under load): ~33 MB of events take nft about a second of CPU; the full
 * comparison the wait avoids takes 5-10 s.
 */
const MONITOR_DRAIN_MS = 30_000;
/** How long nft's socket stays empty without our probe's line before the probe is sent again. */
const REPROBE_AFTER_EMPTY_MS = 200;
/** How long to wait for the monitor to report one probe commit before sending another. */
const PROBE_RETRY_MS = 250;
const BUILTIN_CHAINS = new Set(['PREROUTING', 'INPUT', 'FORWARD', 'OUTPUT', 'POSTROUTING']);

interface KernelWatch {
  readonly handle: ChildHandle;
  readonly commits: CommitLog;
  alive: boolean;
  /** The last probe the monitor reported: its generation and our commits once it was made. */
  barrier: { readonly generation: number; readonly made: CommitCount } | undefined;
}

/**
 * One drift check: `quiet` read nothing (no foreign commit touched our chains), `scoped` compared
 * the chains other agents touched, `full` compared everything (`why`). `reason`: the drift found.
 */
export interface DriftCheck {
  readonly kind: 'quiet' | 'scoped' | 'full';
  readonly chains?: readonly string[];
  readonly why?: string;
  readonly reason?: string;
  /** Events nft monitor lost that the generations showed were all of our own commits. */
  readonly settled?: string;
  readonly durationMs: number;
}
