import { AddressWatch } from '../kernel/address-watch.js';
import type { Backend, SyncReport } from '../modes/backend.js';
import { localTrafficDetector, type LocalDetectorInput } from '../modes/local-traffic.js';
import { gatherNodeFacts, type NodeFacts, type NodeFactsInput } from '../modes/node-facts.js';
import { parseCIDR } from '../model/ip.js';
import { changeSinceApplied, type StateChange } from '../model/state-change.js';
import type { ClusterState, IPFamily } from '../model/types.js';
import { log } from '../util/log.js';
import { isAffinitySetName, isServiceChainName, serviceOfName, ELEMENT_CONTAINERS } from './names.js';
import type { ListedTable } from './listing.js';
import { Nft } from './nft.js';
import { checkNftConfig, renderState, type NftRenderConfig, type ServiceRules } from './render.js';
import {
  deleteChainsTransaction,
  emptyModel,
  fullTransaction,
  partialTransaction,
  type WrittenModel,
} from './transaction.js';

/**
 * The nftables backend for one IP family: kube-proxy's nftables proxier. Full syncs (start, a
 * failed transaction, changed node facts, drift) write kube-proxy's whole layout in several bounded
 * `nft -f -` transactions in dependency order (transaction.ts); partial syncs write only the chains of changed Services and the map/set elements
 * that differ from what was written. Stale chains are flushed at once and deleted at least a second
 * later. Drift is checked on the controller's drift timer (one `nft -j list table` per sync period),
 * never on the partial-sync path.
 */

export interface NftablesProxierConfig
  extends LocalDetectorInput, Omit<NodeFactsInput, 'localhostNodePorts'> {
  readonly masqueradeBit: number;
  readonly masqueradeAll: boolean;
  /** The nft binary (default `nft`). */
  readonly nftBinary?: string;
  /** ServiceCIDRs (any family; filtered here): unallocated ClusterIPs in them are dropped. */
  readonly serviceCIDRs?: readonly string[];
  /** kube-proxy deletes stale chains ≥ 1 s after flushing them (kernels < 6.2 free map refs lazily). */
  readonly staleChainDelayMs?: number;
  /** About how many commands one transaction of a full sync's Services holds (FULL_SYNC_PART_LINES). */
  readonly fullSyncPartLines?: number;
  /** Run once after the first successful sync (the other modes' leftovers go once ours serve). */
  readonly afterFirstSync?: () => Promise<void>;
}

export interface NftablesSyncReport extends SyncReport {
  readonly noLocalEndpoints: { readonly internal: number; readonly external: number };
}

export class NftablesProxier implements Backend {
  readonly name: string;
  readonly nft: Nft;
  private needFullSync = true;
  private baseChainsRecreated = false;
  /** The rendered Services whose rules the kernel holds (undefined: unknown, next sync is full). */
  private applied: Map<string, ServiceRules> | undefined;
  /** The state those renders came from (where the next partial sync's change starts). */
  private appliedState: ClusterState | undefined;
  private written: WrittenModel = emptyModel();
  private lastFacts: NodeFacts | undefined;
  /** Service chains flushed and waiting for deletion, with the time they were flushed. */
  private readonly staleChains = new Map<string, number>();
  private lastReport: NftablesSyncReport | undefined;
  /** Whether the last attempted sync was full (metrics). */
  lastAttemptFull = true;
  /** Failed deletions of stale chains since the last report (kube-proxy's cleanup failures). */
  private cleanupFailures = 0;
  /** A sync succeeded once (afterFirstSync ran). */
  private served = false;
  /** Stale chains are deleted inside the sync's transaction until one such transaction is refused. */
  private inlineCleanup = true;
  /** The node's addresses, re-read only when `ip monitor` saw them change (once watchKernel ran). */
  readonly addresses: AddressWatch;

  constructor(private readonly config: NftablesProxierConfig) {
    this.name = `nftables/${config.family}`;
    this.nft = new Nft({ family: config.family, netns: config.netns, binary: config.nftBinary });
    this.addresses = new AddressWatch({ netns: config.netns });
  }

  get lastSync(): NftablesSyncReport | undefined {
    return this.lastReport;
  }

  /** The daemon's: the node's addresses are read again only when `ip monitor` saw them change. */
  watchKernel(): Promise<void> {
    this.addresses.watch();
    return Promise.resolve();
  }

  /** Stops the address monitor. */
  close(): Promise<void> {
    return this.addresses.close();
  }

  /** nft ≥ 1.0.1 and kernel ≥ 5.13, as kube-proxy checks them; throws with the reason. */
  async setup(): Promise<void> {
    await this.nft.checkVersions();
  }

  forceFullSync(): void {
    this.needFullSync = true;
  }

  /** Services with chains in our table now (whoever wrote them: kube-proxy names them the same). */
  async programmedServices(): Promise<ReadonlySet<string>> {
    const out = new Set<string>();
    for (const c of await this.nft.listChains()) {
      const key = serviceOfName(c.name);
      if (key !== undefined) out.add(key);
    }
    return out;
  }

  /** One listing of the table per sync period, compared with what we wrote. */
  async detectDrift(): Promise<boolean> {
    if (this.needFullSync || this.applied === undefined) return true;
    const reason = driftReason(await this.nft.listTable(), this.written);
    if (reason === undefined) return false;
    log.warn('nftables rules changed by another agent; full resync', { backend: this.name, reason });
    this.needFullSync = true;
    return true;
  }

  async sync(state: ClusterState, given?: StateChange): Promise<NftablesSyncReport> {
    const started = performance.now();
    const facts = await gatherNodeFacts({ ...this.config, localhostNodePorts: false }, state, this.addresses);
    const factsChanged =
      this.lastFacts === undefined || JSON.stringify(this.lastFacts) !== JSON.stringify(facts);
    const full = this.needFullSync || factsChanged || this.applied === undefined;
    this.lastAttemptFull = full;
    // Chains flushed ≥ 1 s ago are deleted in this sync's own transaction (one nft per sync); after
    // a refused transaction that carried some, in a transaction of their own from then on (another
    // agent may hold a reference: that must not block the Services' rules).
    const due = this.dueStaleChains(started);
    if (!this.inlineCleanup) await this.deleteStaleChains(due);
    const inline = this.inlineCleanup ? due : [];
    const config = this.renderConfig(facts);
    const checked = checkNftConfig(config);
    const services = renderState(state, config);
    try {
      let result: { bytes: number; lines: number; durationMs: number };
      let stale: readonly string[];
      let writtenServices: number;
      let listMs = 0;
      let parts = 1;
      if (full) {
        const listStarted = performance.now();
        const [chains, sets] = await Promise.all([this.nft.listChains(), this.nft.listSets()]);
        listMs = performance.now() - listStarted;
        const tx = fullTransaction({
          config,
          checked,
          services,
          existingServiceChains: chains.map((c) => c.name).filter(isServiceChainName),
          existingAffinitySets: new Map(
            sets.filter((s) => isAffinitySetName(s.name)).map((s) => [s.name, s.timeout ?? Number.NaN]),
          ),
          recreateBaseChains: !this.baseChainsRecreated,
          deleteChains: inline,
          ...(this.config.fullSyncPartLines !== undefined
            ? { partLines: this.config.fullSyncPartLines }
            : {}),
        });
        // Several bounded transactions in dependency order (transaction.ts): any one refused leaves
        // what served serving, and the catch below makes the next sync full.
        result = { bytes: 0, lines: 0, durationMs: 0 };
        parts = 0;
        for (const part of tx.parts) {
          parts++;
          const r = await this.nft.apply(part.lines, `nftables full sync (part ${parts}: ${part.kind})`);
          result = {
            bytes: result.bytes + r.bytes,
            lines: result.lines + r.lines,
            durationMs: result.durationMs + r.durationMs,
          };
        }
        this.written = tx.model;
        this.baseChainsRecreated = true;
        stale = tx.staleChains;
        writtenServices = tx.writtenServices;
      } else {
        const change = changeSinceApplied(given, this.appliedState, state);
        const tx = partialTransaction({
          family: this.config.family,
          checked,
          previous: this.applied!,
          next: services,
          changed: [...change.changed, ...change.removed],
          written: this.written,
          deleteChains: inline,
        });
        if (tx.lines.length === 0) parts = 0;
        result =
          tx.lines.length === 0
            ? { bytes: 0, lines: 0, durationMs: 0 }
            : await this.nft.apply(tx.lines, 'nftables partial sync');
        tx.apply(this.written);
        stale = tx.staleChains;
        writtenServices = tx.writtenServices;
      }
      const now = performance.now();
      for (const c of inline) this.staleChains.delete(c);
      for (const c of stale) this.staleChains.set(c, now);
      // A chain written again is no longer stale.
      for (const r of services.values()) for (const c of r.chains.keys()) this.staleChains.delete(c);
      this.applied = services;
      this.appliedState = state;
      this.lastFacts = facts;
      this.needFullSync = false;
      let internal = 0;
      let external = 0;
      for (const r of services.values()) {
        internal += r.noLocalInternal;
        external += r.noLocalExternal;
      }
      const report: NftablesSyncReport = {
        backend: this.name,
        full,
        durationMs: performance.now() - started,
        bytes: result.bytes,
        lines: result.lines,
        writtenServices,
        staleChains: stale.length,
        details: {
          nftMs: Math.round(result.durationMs),
          listMs: Math.round(listMs),
          transactions: parts,
          cleanupFailures: this.takeCleanupFailures(),
        },
        noLocalEndpoints: { internal, external },
      };
      this.lastReport = report;
      if (!this.served) {
        this.served = true;
        await this.config.afterFirstSync?.();
      }
      return report;
    } catch (err) {
      // The transaction was refused as a whole: the kernel keeps what served. What we know about
      // stale chains may be wrong now; the next sync is full and lists them again.
      this.needFullSync = true;
      // What we know about stale chains may be wrong now: the full sync lists and flushes them again.
      this.staleChains.clear();
      if (inline.length > 0) {
        this.inlineCleanup = false;
        log.warn(
          'an nftables transaction deleting stale chains was refused; stale chains are deleted on their own from now on',
          {
            backend: this.name,
          },
        );
      }
      throw err;
    }
  }

  /** Stale chains flushed at least `staleChainDelayMs` ago. */
  private dueStaleChains(now: number): string[] {
    const delay = this.config.staleChainDelayMs ?? 1000;
    return [...this.staleChains].filter(([, at]) => now - at >= delay).map(([c]) => c);
  }

  /** Deletes `due` stale chains in a transaction of their own (a failure is counted, retried later). */
  private async deleteStaleChains(due: readonly string[]): Promise<void> {
    if (due.length === 0) return;
    const now = performance.now();
    for (const c of due) this.staleChains.delete(c);
    try {
      await this.nft.apply(deleteChainsTransaction(this.config.family, due), 'nftables stale chain cleanup');
      for (const c of due) this.written.chains.delete(c);
    } catch (err) {
      // Still flushed and unused by us: retried on a later sync (kube-proxy re-lists them).
      for (const c of due) this.staleChains.set(c, now);
      this.cleanupFailures++;
      log.warn('cannot delete stale nftables chains; will retry later', {
        backend: this.name,
        error: err,
      });
    }
  }

  private takeCleanupFailures(): number {
    const n = this.cleanupFailures;
    this.cleanupFailures = 0;
    return n;
  }

  private renderConfig(facts: NodeFacts): NftRenderConfig {
    const family: IPFamily = this.config.family;
    const serviceCIDRs = (this.config.serviceCIDRs ?? [])
      .map((c) => parseCIDR(c))
      .filter((p) => p !== undefined && p.family === family)
      .map((p) => p!.cidr);
    return {
      family,
      node: facts.node,
      nodeIPs: facts.nodeIPs,
      masqueradeBit: this.config.masqueradeBit,
      masqueradeAll: this.config.masqueradeAll,
      localDetector: localTrafficDetector(this.config),
      nodePortAddresses: facts.nodePortAddresses,
      serviceCIDRs,
    };
  }
}

/**
 * Why the table no longer holds what we wrote (pure), or undefined when it does: a missing table,
 * chain, affinity set or element, a chain with another rule count, an element with another value.
 * Elements another agent added to our maps count too (they would steer traffic).
 */
export function driftReason(table: ListedTable | undefined, written: WrittenModel): string | undefined {
  if (table === undefined) return 'table missing';
  for (const [name, count] of written.chains) {
    const chain = table.chains.get(name);
    if (chain === undefined) return `chain ${name} missing`;
    if (chain.rules.length !== count)
      return `chain ${name} has ${chain.rules.length} rules, we wrote ${count}`;
  }
  for (const name of written.affinitySets.keys()) {
    if (!table.containers.has(name)) return `set ${name} missing`;
  }
  for (const container of ELEMENT_CONTAINERS) {
    const have = table.containers.get(container);
    if (have === undefined) return `${container} missing`;
    const want = written.elements.get(container)!;
    if (have.elements.size !== want.size) {
      return `${container} has ${have.elements.size} elements, we wrote ${want.size}`;
    }
    for (const [key, value] of want) {
      const v = have.elements.get(key);
      if (v === undefined) return `${container} element ${key} missing`;
      if (v !== value)
        return `${container} element ${key} is ${JSON.stringify(v)}, we wrote ${JSON.stringify(value)}`;
    }
  }
  return undefined;
}
