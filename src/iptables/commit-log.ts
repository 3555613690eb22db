/**
 * What other agents changed in the kernel's iptables rules, read from `nft monitor` (pure: lines in,
 * a summary out). Every nf_tables commit ends with `# new generation N by process PID (COMM)`, after
 * one line per object it changed (`add rule ip nat KUBE-SEP-… …`, `delete chain ip filter …`). The
 * daemon's drift check needs a kernel read only when a commit by a process that is not one of its
 * own children (known by their process name, commit-name.ts) touched a chain it owns (a `KUBE-*`
 * chain) or a built-in chain its jumps live in, and then only of those chains; when it cannot tell (events lost, a table deleted, too many
 * chains), it compares everything. Commits to other families and tables (a CNI's own nft table,
 * Docker's chains) cost nothing. Only the iptables nf_tables backend is seen here: the legacy
 * backend does not go through nf_tables.
 */

import type { CommitCount } from './iptables.js';

/** The tables svcplane's iptables mode writes (mangle: its canary only). */
const OUR_TABLES = new Set(['nat', 'filter', 'mangle']);
const BUILTIN_CHAINS = new Set(['PREROUTING', 'INPUT', 'FORWARD', 'OUTPUT', 'POSTROUTING']);
/** Chains one commit may touch before it counts as "everything" (a flush of the whole table). */
export const MAX_SCOPED_CHAINS = 64;

/** Foreign changes since the last `take()`. */
export interface ForeignChanges {
  /** `table/chain` of our chains (and built-in chains) other agents changed. */
  readonly chains: ReadonlySet<string>;
  /** Set when the changes cannot be scoped to chains: the reason (events lost, table deleted …). */
  readonly unscoped?: string;
  /** Foreign commits seen, relevant or not (for logs and tests). */
  readonly foreignCommits: number;
}

const GENERATION = /^# new generation (\d+)(?: by process (\d+)(?: \(([^)]*)\))?)?\s*$/;
/** The probe commit's rule (iptables.ts probeCommit) carries its nonce as a mark. */
const PROBE_MARK = / meta mark 0x([0-9a-f]+) /;
const PROBE_CHAIN = 'KUBE-PROXY-CANARY';

export class CommitLog {
  /** Set once a commit of our own was seen: the monitor listens since before it. */
  armed = false;
  /** Commits of our own seen (a probe's shows that everything before it was read). */
  ownCommits = 0;
  /** The PID the kernel reported for our latest commit (its initial PID namespace's). */
  lastOwnPid: number | undefined;
  private lastGeneration: number | undefined;
  /** Events lost (nft's socket overflowed, generations never reported), not yet settled or taken. */
  private loss: { reason: string; lastSeen: number } | undefined;
  /** The generation each recent probe commit of ours made, by nonce. */
  private probes = new Map<number, number>();
  private pendingProbe: number | undefined;
  private pending = new Set<string>();
  private pendingUnscoped: string | undefined;
  private chains = new Set<string>();
  private unscoped: string | undefined;
  private foreignCommits = 0;

  /**
   * @param family nft's family of the rules we write (`ip` for IPv4, `ip6` for IPv6)
   * @param ours whether a commit by this process name (COMM) is one of svcplane's own
   */
  constructor(
    private readonly family: 'ip' | 'ip6',
    private readonly ours: (comm: string | undefined) => boolean,
  ) {}

  /** Digests one line of `nft monitor` output. */
  line(text: string): void {
    if (text === '') return;
    if (text.charCodeAt(0) === 35 /* # */) {
      const m = GENERATION.exec(text);
      if (m) this.commit(Number(m[1]), m[2] === undefined ? undefined : Number(m[2]), m[3]);
      // nft says "# ERROR: We lost some netlink events!" when its socket overflowed: whose, unknown
      // until a probe's generation settles it (settleLoss).
      else this.lose(`nft monitor: ${text.slice(1).trim()}`, this.lastGeneration ?? -1);
      return;
    }
    this.event(text);
  }

  /** The monitor stopped or restarted: whatever happened meanwhile is unknown. */
  lost(reason: string): void {
    this.unscoped ??= reason;
    this.armed = false;
    this.lastGeneration = undefined;
    this.pending.clear();
    this.pendingUnscoped = undefined;
    this.pendingProbe = undefined;
    this.probes.clear();
  }

  /** The generation our probe commit `nonce` made, once the monitor reported it. */
  probeGeneration(nonce: number): number | undefined {
    return this.probes.get(nonce);
  }

  /** Whether events were lost since the last take() and are not settled. */
  get lossPending(): boolean {
    return this.loss !== undefined;
  }

  /**
   * Forgets the lost events reported before generation `upTo` was seen: the caller proved every
   * generation up to it since an earlier probe was a commit of our own (generationsAllOurs), so
   * nothing another agent did is among them. A loss reported after that stays. Returns the
   * settled loss's reason.
   */
  settleLoss(upTo: number): string | undefined {
    if (this.loss === undefined || this.loss.lastSeen >= upTo) return undefined;
    const { reason } = this.loss;
    this.loss = undefined;
    return reason;
  }

  /** Foreign changes since the last call, and forget them. */
  take(): ForeignChanges {
    const unscoped = this.unscoped ?? this.loss?.reason;
    const out: ForeignChanges = {
      chains: this.chains,
      ...(unscoped !== undefined ? { unscoped } : {}),
      foreignCommits: this.foreignCommits,
    };
    this.chains = new Set();
    this.unscoped = undefined;
    this.loss = undefined;
    this.foreignCommits = 0;
    return out;
  }

  /** A loss; `lastSeen`: the newest generation read when it was reported (before the losses). */
  private lose(reason: string, lastSeen: number): void {
    this.loss = {
      reason: this.loss?.reason ?? reason,
      lastSeen: Math.max(lastSeen, this.loss?.lastSeen ?? -1),
    };
  }

  private event(text: string): void {
    // `VERB OBJECT FAMILY TABLE NAME …`: add/create/delete/replace/destroy, table/chain/rule/set/….
    const t = text.split(' ', 5);
    if (t.length < 4 || t[2] !== this.family || !OUR_TABLES.has(t[3]!)) return;
    const [verb, object, , table, name] = t as [string, string, string, string, string | undefined];
    if (object === 'table') {
      if (verb === 'delete' || verb === 'destroy')
        this.pendingUnscoped ??= `table ${this.family} ${table} deleted`;
      return;
    }
    if (object !== 'chain' && object !== 'rule') return; // sets, maps, objects: not iptables rules
    if (verb === 'add' && object === 'rule' && table === 'mangle' && name === PROBE_CHAIN) {
      const mark = PROBE_MARK.exec(text);
      if (mark) this.pendingProbe = parseInt(mark[1]!, 16);
    }
    if (name === undefined) {
      this.pendingUnscoped ??= `unreadable event: ${text.slice(0, 200)}`;
      return;
    }
    if (!name.startsWith('KUBE-') && !BUILTIN_CHAINS.has(name)) return;
    if (this.pendingUnscoped !== undefined) return;
    this.pending.add(`${table}/${name}`);
    if (this.pending.size > MAX_SCOPED_CHAINS) {
      this.pendingUnscoped = `more than ${MAX_SCOPED_CHAINS} chains changed in one commit`;
      this.pending.clear();
    }
  }

  private commit(generation: number, pid: number | undefined, comm: string | undefined): void {
    const gap =
      this.lastGeneration !== undefined && generation !== this.lastGeneration + 1
        ? `nft monitor missed generations ${this.lastGeneration + 1}–${generation - 1}`
        : undefined;
    // The missing generations are before this one: a probe seen at or after it can settle them.
    if (gap !== undefined) this.lose(gap, generation - 1);
    this.lastGeneration = generation;
    const own = this.ours(comm);
    if (own) {
      this.armed = true;
      this.ownCommits++;
      this.lastOwnPid = pid;
      if (this.pendingProbe !== undefined) {
        this.probes.set(this.pendingProbe, generation);
        // A few are enough: a barrier waits for its own probe only.
        if (this.probes.size > 16) this.probes.delete(this.probes.keys().next().value!);
      }
    } else {
      this.foreignCommits++;
      if (this.pendingUnscoped !== undefined) {
        this.unscoped ??= `${this.pendingUnscoped} (process ${pid ?? '?'} ${comm ?? ''})`.trimEnd();
      } else {
        for (const c of this.pending) this.chains.add(c);
        if (this.chains.size > MAX_SCOPED_CHAINS)
          this.unscoped ??= `more than ${MAX_SCOPED_CHAINS} chains changed by other agents`;
      }
    }
    this.pending.clear();
    this.pendingUnscoped = undefined;
    this.pendingProbe = undefined;
  }
}

/**
 * Whether every nf_tables generation after the probe `from` up to the probe `to` was a commit of
 * ours: the kernel numbers every commit (every agent's, every table's and family's), so when the
 * generations between them are exactly as many as the commits we made between them, and each of
 * those is known to have made exactly one or none, no other agent committed in between, and
 * whatever events the monitor lost there were ours. An iptables-restore that replays a batch after
 * another agent's commit (-EAGAIN) makes the count differ, as does any foreign commit: then false.
 */
export function generationsAllOurs(
  from: { readonly generation: number; readonly made: CommitCount },
  to: { readonly generation: number; readonly made: CommitCount },
): boolean {
  return (
    to.made.uncertain === from.made.uncertain &&
    to.generation - from.generation === to.made.exact - from.made.exact
  );
}
