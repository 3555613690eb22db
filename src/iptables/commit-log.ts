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

export class CommitLog {
  /** Set once a commit of our own was seen: the monitor listens since before it. */
  armed = false;
  /** Commits of our own seen (a probe's shows that everything before it was read). */
  ownCommits = 0;
  /** The PID the kernel reported for our latest commit (its initial PID namespace's). */
  lastOwnPid: number | undefined;
  private lastGeneration: number | undefined;
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
      // nft says "# ERROR: We lost some netlink events!" when its socket overflowed: whose, unknown.
      else this.unscoped ??= `nft monitor: ${text.slice(1).trim()}`;
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
  }

  /** Foreign changes since the last call, and forget them. */
  take(): ForeignChanges {
    const out: ForeignChanges = {
      chains: this.chains,
      ...(this.unscoped !== undefined ? { unscoped: this.unscoped } : {}),
      foreignCommits: this.foreignCommits,
    };
    this.chains = new Set();
    this.unscoped = undefined;
    this.foreignCommits = 0;
    return out;
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
    this.lastGeneration = generation;
    const own = this.ours(comm);
    if (gap !== undefined) this.unscoped ??= gap;
    if (own) {
      this.armed = true;
      this.ownCommits++;
      this.lastOwnPid = pid;
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
  }
}
