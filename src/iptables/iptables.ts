import { readFile } from 'node:fs/promises';
import type { IPFamily } from '../model/types.js';
import { CommandError, run, startProcess, type ChildHandle, type ChildInput } from '../util/exec.js';
import { createCommitName, namedArgv, removeCommitName, type CommitName } from './commit-name.js';

/**
 * Executor for iptables / ip6tables: runs the binaries (by plain name, so whatever backend the
 * node's alternatives select, or overridden) and reports what happened. It never decides policy:
 * which rules to write is the caller's business.
 */

export interface IptablesBinaries {
  readonly iptables?: string;
  readonly restore?: string;
  readonly save?: string;
}

export interface IptablesOptions {
  readonly family: IPFamily;
  /** Run every command inside this named network namespace. */
  readonly netns?: string;
  readonly binaries?: IptablesBinaries;
  /** Timeout per child process (default 60 s). */
  readonly timeoutMs?: number;
  /**
   * Timeout of iptables-restore (default 10 min): a whole-table full sync of 30k Services takes
   * over a minute on two cores, and a timed-out restore would fail every full sync for good.
   */
  readonly restoreTimeoutMs?: number;
}

export interface IptablesVersion {
  readonly major: number;
  readonly minor: number;
  readonly patch: number;
  /** `nf_tables`, `legacy`, or undefined for old binaries that do not say. */
  readonly backend?: string;
  /** The line the binary printed. */
  readonly text: string;
}

export interface RestoreOptions {
  /** `--noflush`: leave tables and chains not mentioned in the input alone. */
  readonly noflush: boolean;
  /** `--counters`: take `[pkts:bytes]` from the input. */
  readonly counters: boolean;
}

export interface RestoreResult {
  readonly durationMs: number;
  /** Size of the input in bytes (UTF-8). */
  readonly bytes: number;
  readonly lines: number;
}

/**
 * The nf_tables commits (each one a new generation) our iptables processes made so far: `exact` are
 * known to have made exactly one each (a transaction that adds a rule) or none (an empty one);
 * `uncertain` counts runs whose number is not known (a failed restore, a transaction that only
 * declares or deletes chains, a single write command). The kernel watch settles events it lost by
 * comparing generations with these counts (commit-log.ts): an uncertain one makes it fall back.
 */
export interface CommitCount {
  readonly exact: number;
  readonly uncertain: number;
}

/** A probe commit (probeCommit): its nonce, the PID it ran as here, and our commits once it was made. */
export interface ProbeCommit {
  readonly nonce: number;
  readonly pid: number | undefined;
  readonly made: CommitCount;
}

export type TableName = 'filter' | 'nat' | 'mangle' | 'raw' | 'security' | (string & {});
export type RulePosition = 'prepend' | 'append';

/** iptables-restore failed. Carries stderr and, when the tool named one, the offending input line. */
export class RestoreError extends CommandError {
  /** The chain iptables-restore said does not exist (a rule jumps to it, or it is flushed or deleted). */
  readonly missingChain: string | undefined;
  constructor(
    argv: readonly string[],
    exitCode: number | undefined,
    stderr: string,
    reason: CommandError['reason'],
    /** 1-based input line blamed for the failure (corrected from COMMIT to the rule, see below). */
    readonly line: number | undefined,
    /** Text of that input line. */
    readonly lineText: string | undefined,
    /** The line number iptables-restore itself reported. */
    readonly reportedLine: number | undefined,
  ) {
    super(argv, exitCode, stderr, reason);
    this.name = 'RestoreError';
    this.missingChain = parseMissingChain(stderr);
    if (line !== undefined) {
      this.message = `iptables-restore failed at input line ${line} (${JSON.stringify((lineText ?? '').slice(0, 500))}): ${firstMeaningfulLine(stderr)}`;
    }
  }
}

function firstMeaningfulLine(stderr: string): string {
  const lines = stderr
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('Try `') && !/^Error occurred at line/.test(l));
  return lines.join('; ') || stderr.trim();
}

/** Parse `iptables --version` output ("iptables v1.8.9 (nf_tables)"). */
export function parseIptablesVersion(text: string): IptablesVersion | undefined {
  const m = /v(\d+)\.(\d+)(?:\.(\d+))?(?:\s*\(([^)]+)\))?/.exec(text);
  if (!m) return undefined;
  const backend = m[4]?.trim();
  return {
    major: Number(m[1]),
    minor: Number(m[2]),
    patch: Number(m[3] ?? 0),
    ...(backend ? { backend } : {}),
    text: text.trim().split('\n')[0] ?? '',
  };
}

export function versionAtLeast(v: Pick<IptablesVersion, 'major' | 'minor' | 'patch'>, min: string): boolean {
  const [a = 0, b = 0, c = 0] = min.split('.').map(Number);
  if (v.major !== a) return v.major > a;
  if (v.minor !== b) return v.minor > b;
  return v.patch >= c;
}

/**
 * The input line iptables-restore blames. Formats seen: "line N failed" (commit errors),
 * "Error occurred at line: N" (parse errors), "COMMIT expected at line N".
 */
export function parseRestoreErrorLine(stderr: string): number | undefined {
  const m =
    /line (\d+) failed/.exec(stderr) ??
    /Error occurred at line: (\d+)/.exec(stderr) ??
    /at line:? (\d+)/.exec(stderr);
  return m ? Number(m[1]) : undefined;
}

/** The chain of iptables-restore's "Chain 'X' does not exist", if it says so. */
export function parseMissingChain(stderr: string): string | undefined {
  return /Chain '([^']+)' does not exist/.exec(stderr)?.[1];
}

/**
 * Map a reported line to the input line to show. The nf_tables backend reports a jump to a missing
 * chain at the table's COMMIT line; point at the first rule of that table jumping there instead.
 */
export function blameRestoreLine(
  input: string,
  stderr: string,
  /** The number of `input`'s first line (a streamed input keeps only its last pieces). */
  firstLine = 1,
): { line: number | undefined; lineText: string | undefined; reportedLine: number | undefined } {
  const reportedLine = parseRestoreErrorLine(stderr);
  if (reportedLine === undefined) return { line: undefined, lineText: undefined, reportedLine };
  const lines = input.split('\n');
  const at = reportedLine - firstLine;
  const text = at >= 0 ? lines[at] : undefined;
  const missing = parseMissingChain(stderr);
  if (missing && text?.trim() === 'COMMIT') {
    let start = at;
    while (start > 0 && !(lines[start - 1] ?? '').startsWith('*')) start--;
    const re = new RegExp(
      `\\s(-j|--jump|-g|--goto)\\s+${missing.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}(\\s|$)`,
    );
    for (let i = start; i < at; i++) {
      if (re.test(` ${lines[i] ?? ''}`)) return { line: i + firstLine, lineText: lines[i], reportedLine };
    }
  }
  return { line: reportedLine, lineText: text, reportedLine };
}

// iptables allows up to 28 characters; be strict about the rest (no whitespace, no leading '-' or '!').
const CHAIN_NAME = /^[A-Za-z0-9_][A-Za-z0-9_.:+@-]{0,27}$/;
const TABLE_NAME = /^[a-z]{1,16}$/;

function checkName(kind: 'table' | 'chain', name: string): void {
  const ok = kind === 'table' ? TABLE_NAME.test(name) : CHAIN_NAME.test(name);
  if (!ok) throw new Error(`invalid iptables ${kind} name ${JSON.stringify(name)}`);
}

export const KUBE_PROXY_CANARY = 'KUBE-PROXY-CANARY';

export class Iptables {
  readonly family: IPFamily;
  readonly netns: string | undefined;
  readonly bin: { readonly iptables: string; readonly restore: string; readonly save: string };
  private readonly timeoutMs: number;
  private readonly restoreTimeoutMs: number;
  private versionPromise: Promise<IptablesVersion> | undefined;
  private restoreFlagsPromise: Promise<readonly string[]> | undefined;
  /** The process name our iptables and iptables-restore run under once nameCommits() set it. */
  private commitName: CommitName | undefined;
  /** Our commits so far (see CommitCount); writes run one at a time so that they stay in order. */
  private made = { exact: 0, uncertain: 0 };
  private writes: Promise<void> = Promise.resolve();
  private probes = 0;

  constructor(opts: IptablesOptions) {
    this.family = opts.family;
    this.netns = opts.netns;
    this.timeoutMs = opts.timeoutMs ?? 60_000;
    this.restoreTimeoutMs = opts.restoreTimeoutMs ?? Math.max(this.timeoutMs, 600_000);
    const base = opts.family === 'IPv6' ? 'ip6tables' : 'iptables';
    this.bin = {
      iptables: opts.binaries?.iptables ?? base,
      restore: opts.binaries?.restore ?? `${base}-restore`,
      save: opts.binaries?.save ?? `${base}-save`,
    };
  }

  private async exec(
    argv: readonly string[],
    opts: {
      input?: ChildInput;
      allowFailure?: boolean;
      timeoutMs?: number;
      onSpawn?: (pid: number) => void;
    } = {},
  ) {
    return run(namedArgv(this.commitName, argv), {
      ...opts,
      netns: this.netns,
      timeoutMs: opts.timeoutMs ?? this.timeoutMs,
    });
  }

  /**
   * From now on, iptables and iptables-restore run under a process name of their own (commit-name.ts):
   * the name nft monitor reports for every commit they make. Unavailable (and nothing changes) when
   * the binaries are not iptables-nft's multi-call binary or do not answer under that name.
   */
  async nameCommits(): Promise<{ readonly name: string } | { readonly unavailable: string }> {
    if (this.commitName !== undefined) return { name: this.commitName.name };
    const cn = await createCommitName([this.bin.iptables, this.bin.restore]);
    if (typeof cn === 'string') return { unavailable: cn };
    for (const bin of [this.bin.iptables, this.bin.restore]) {
      const r = await run(namedArgv(cn, [bin, '--version']), { netns: this.netns, allowFailure: true });
      if (r.exitCode !== 0 || !/nf_tables/.test(r.stdout + r.stderr)) {
        await removeCommitName(cn);
        return {
          unavailable: `${bin} does not run under a name of our own: ${(r.stdout + r.stderr).trim()}`,
        };
      }
    }
    this.commitName = cn;
    return { name: cn.name };
  }

  /** Whether a commit nft monitor reports by process name `comm` is one of ours (nameCommits). */
  isOwnCommit(comm: string | undefined): boolean {
    return this.commitName !== undefined && comm === this.commitName.name;
  }

  /** The tools run under their own names again; the symlinks are removed (the daemon's stop). */
  async unnameCommits(): Promise<void> {
    const cn = this.commitName;
    this.commitName = undefined;
    if (cn !== undefined) await removeCommitName(cn);
  }

  /**
   * `nft monitor`: every commit to nf_tables in this network namespace, as it happens (read by
   * commit-log.ts). Idle costs nothing; the caller stops it by PID (`ChildHandle.stop`).
   */
  monitorCommits(nftBinary = 'nft'): ChildHandle {
    // stderr apart: nft's complaints ("XT target MASQUERADE not found") land inside stdout lines.
    return startProcess([nftBinary, 'monitor'], { netns: this.netns, stderr: 'apart', diesWithParent: true });
  }

  /**
   * A commit of our own that changes nothing (a rule added to the mangle canary and flushed in the
   * same transaction): the monitor has seen it once it reports our process name. Returns the PID
   * the child had here (the kernel's report differs in a PID namespace of our own).
   */
  async probeCommit(): Promise<ProbeCommit> {
    let pid: number | undefined;
    // The rule's mark is the probe's nonce: nft monitor prints it (`meta mark 0x…`), so the log
    // knows which generation this probe made (probeNonceOf in commit-log.ts).
    const nonce = (this.probes = (this.probes % 0x7fffffff) + 1);
    const flags = await this.restoreWaitFlags();
    return this.serialWrite(async () => {
      try {
        await this.exec([this.bin.restore, ...flags, '--noflush'], {
          input:
            `*mangle\n:${KUBE_PROXY_CANARY} - [0:0]\n` +
            `-A ${KUBE_PROXY_CANARY} -m mark --mark 0x${nonce.toString(16)} -j RETURN\n` +
            `:${KUBE_PROXY_CANARY} - [0:0]\nCOMMIT\n`,
          onSpawn: (p) => (pid = p),
        });
        this.made.exact++;
      } catch (err) {
        this.made.uncertain++;
        throw err;
      }
      return { nonce, pid, made: this.commitsMade };
    });
  }

  /** Our commits so far (CommitCount). */
  get commitsMade(): CommitCount {
    return { exact: this.made.exact, uncertain: this.made.uncertain };
  }

  /** Runs one write after the previous ones finished: our commits' generations follow their order. */
  private async serialWrite<T>(fn: () => Promise<T>): Promise<T> {
    const before = this.writes;
    let done!: () => void;
    this.writes = new Promise((r) => (done = r));
    await before;
    try {
      return await fn();
    } finally {
      done();
    }
  }

  /**
   * The netlink event socket of process `pid` (our `nft monitor`) as /proc/PID/net/netlink shows it
   * (its network namespace's): bytes queued and events the kernel dropped so far (a socket that
   * overflowed); undefined when not found.
   */
  async monitorSocket(pid: number): Promise<NetlinkEventSocket | undefined> {
    const text = await readFile(`/proc/${pid}/net/netlink`, 'utf8').catch(() => undefined);
    return text === undefined ? undefined : netlinkEventSocket(text, pid);
  }

  /** Version of the iptables binary (cached). */
  version(): Promise<IptablesVersion> {
    this.versionPromise ??= this.exec([this.bin.iptables, '--version']).then((r) => {
      const v = parseIptablesVersion(r.stdout + r.stderr);
      if (!v)
        throw new Error(`cannot parse "${this.bin.iptables} --version" output: ${JSON.stringify(r.stdout)}`);
      return v;
    });
    this.versionPromise.catch(() => {
      this.versionPromise = undefined;
    });
    return this.versionPromise;
  }

  /**
   * Wait flags for single iptables commands (kube-proxy's getIPTablesWaitFlag): `-w 5 -W 100000`
   * from 1.6.1, `-w 5` from 1.4.22, `-w` from 1.4.20.
   */
  async waitFlags(): Promise<readonly string[]> {
    const v = await this.version();
    if (versionAtLeast(v, '1.6.1')) return ['-w', '5', '-W', '100000'];
    if (versionAtLeast(v, '1.4.22')) return ['-w', '5'];
    if (versionAtLeast(v, '1.4.20')) return ['-w'];
    return [];
  }

  /**
   * Wait flags for iptables-restore (kube-proxy's getIPTablesRestoreWaitFlag): `-w 5 -W 100000`
   * when iptables ≥ 1.6.2 (1.8.9 accepts them with both backends; nf_tables ignores -W), else `-w`
   * if iptables-restore understands `--version`, else none.
   */
  restoreWaitFlags(): Promise<readonly string[]> {
    this.restoreFlagsPromise ??= (async () => {
      const v = await this.version();
      if (versionAtLeast(v, '1.6.2')) return ['-w', '5', '-W', '100000'];
      const r = await this.exec([this.bin.restore, '--version'], { allowFailure: true });
      return r.exitCode === 0 && parseIptablesVersion(r.stdout) ? ['-w'] : [];
    })();
    this.restoreFlagsPromise.catch(() => {
      this.restoreFlagsPromise = undefined;
    });
    return this.restoreFlagsPromise;
  }

  /** kube-proxy uses MASQUERADE --random-fully when iptables ≥ 1.6.2. */
  async supportsRandomFully(): Promise<boolean> {
    return versionAtLeast(await this.version(), '1.6.2');
  }

  /**
   * One iptables-restore run with `input` on stdin: a string, or its pieces in order, which may be
   * produced while iptables-restore reads (a full sync's transactions as they are rendered: no
   * joined copy of a 21 MB input exists). Throws RestoreError (or the producer's own error).
   */
  async restore(input: ChildInput, opts: RestoreOptions): Promise<RestoreResult> {
    const argv = [
      this.bin.restore,
      ...(await this.restoreWaitFlags()),
      ...(opts.noflush ? ['--noflush'] : []),
      ...(opts.counters ? ['--counters'] : []),
    ];
    return this.serialWrite(() => this.restoreNow(argv, input));
  }

  private async restoreNow(argv: readonly string[], input: ChildInput): Promise<RestoreResult> {
    const started = performance.now();
    const tally = new InputTally();
    let res;
    try {
      res = await this.exec(argv, {
        input: typeof input === 'string' ? input : tally.pass(input),
        allowFailure: true,
        timeoutMs: this.restoreTimeoutMs,
      });
    } catch (err) {
      this.made.uncertain++;
      if (err instanceof CommandError) {
        throw new RestoreError(
          err.argv,
          err.exitCode,
          err.stderr,
          err.reason,
          undefined,
          undefined,
          undefined,
        );
      }
      throw err;
    }
    if (typeof input === 'string') tally.count(input);
    if (res.exitCode !== 0) {
      this.made.uncertain++;
      const blame = typeof input === 'string' ? blameRestoreLine(input, res.stderr) : tally.blame(res.stderr);
      throw new RestoreError(
        res.argv,
        res.exitCode,
        res.stderr,
        'exit',
        blame.line,
        blame.lineText,
        blame.reportedLine,
      );
    }
    const commits = tally.commits.result();
    this.made.exact += commits.exact;
    this.made.uncertain += commits.uncertain;
    return {
      durationMs: performance.now() - started,
      bytes: tally.bytes,
      lines: tally.lines,
    };
  }

  /**
   * `nft list chains ip|ip6`: every chain name of the family's tables without their rules (70 ms for
   * 14k chains, where iptables-save takes seconds). Only meaningful with the nf_tables backend.
   */
  async listNftChains(nftBinary = 'nft'): Promise<string> {
    return (await this.exec([nftBinary, 'list', 'chains', this.family === 'IPv6' ? 'ip6' : 'ip'])).stdout;
  }

  /**
   * Runs a listing-only restore input (`-S CHAIN` lines, see render-whole-table.ts) in one process
   * and returns what it printed. The batch holds no change, so nothing is written.
   */
  async listChainRules(input: string): Promise<string> {
    if (input === '') return '';
    const argv = [this.bin.restore, ...(await this.restoreWaitFlags()), '--noflush'];
    const res = await this.exec(argv, { input, allowFailure: true });
    if (res.exitCode !== 0) throw new CommandError(res.argv, res.exitCode, res.stderr, 'exit');
    return res.stdout;
  }

  /** iptables-save output, of one table or all. */
  async save(table?: string, opts: { counters?: boolean } = {}): Promise<string> {
    if (table !== undefined) checkName('table', table);
    const argv = [this.bin.save, ...(table ? ['-t', table] : []), ...(opts.counters ? ['-c'] : [])];
    return (await this.exec(argv)).stdout;
  }

  private async cmd(table: string, args: readonly string[], allowFailure = false) {
    checkName('table', table);
    const argv = [this.bin.iptables, ...(await this.waitFlags()), '-t', table, ...args];
    if (!args.some((a) => WRITE_COMMANDS.has(a))) return this.exec(argv, { allowFailure });
    // A write may commit once or not at all (a chain that exists, an empty chain flushed).
    return this.serialWrite(async () => {
      this.made.uncertain++;
      return this.exec(argv, { allowFailure });
    });
  }

  /** Whether a chain exists (`-S CHAIN 1`: exit 1 means no such chain). */
  async chainExists(table: TableName, chain: string): Promise<boolean> {
    checkName('chain', chain);
    const r = await this.cmd(table, ['-S', chain, '1'], true);
    if (r.exitCode === 0) return true;
    if (r.exitCode === 1) return false;
    throw new CommandError(r.argv, r.exitCode, r.stderr, 'exit');
  }

  /** Create a chain unless it exists. Returns whether it existed. */
  async ensureChain(table: TableName, chain: string): Promise<boolean> {
    checkName('chain', chain);
    const r = await this.cmd(table, ['-N', chain], true);
    if (r.exitCode === 0) return false;
    if (await this.chainExists(table, chain)) return true;
    throw new CommandError(r.argv, r.exitCode, r.stderr, 'exit');
  }

  /** Whether the rule exists (`-C`). */
  async ruleExists(table: TableName, chain: string, args: readonly string[]): Promise<boolean> {
    checkName('chain', chain);
    const r = await this.cmd(table, ['-C', chain, ...args], true);
    if (r.exitCode === 0) return true;
    if (r.exitCode === 1) return false;
    throw new CommandError(r.argv, r.exitCode, r.stderr, 'exit');
  }

  /**
   * kube-proxy's EnsureRule: `-C` check, then `-I CHAIN 1` (prepend) or `-A` (append).
   * Returns whether the rule already existed.
   */
  async ensureRule(
    position: RulePosition,
    table: TableName,
    chain: string,
    args: readonly string[],
  ): Promise<boolean> {
    if (await this.ruleExists(table, chain, args)) return true;
    await this.cmd(table, position === 'prepend' ? ['-I', chain, '1', ...args] : ['-A', chain, ...args]);
    return false;
  }

  /** Delete one occurrence of a rule if present. Returns whether it existed. */
  async deleteRule(table: TableName, chain: string, args: readonly string[]): Promise<boolean> {
    if (!(await this.ruleExists(table, chain, args))) return false;
    await this.cmd(table, ['-D', chain, ...args]);
    return true;
  }

  /** `-F CHAIN`; throws if the chain does not exist. */
  async flushChain(table: TableName, chain: string): Promise<void> {
    checkName('chain', chain);
    await this.cmd(table, ['-F', chain]);
  }

  /** `-X CHAIN`; throws if it does not exist, is not empty or is still referenced. */
  async deleteChain(table: TableName, chain: string): Promise<void> {
    checkName('chain', chain);
    await this.cmd(table, ['-X', chain]);
  }

  /** Ensure the empty canary chain in each table (kube-proxy's Monitor). */
  async ensureCanary(
    tables: readonly TableName[] = ['mangle', 'nat', 'filter'],
    name = KUBE_PROXY_CANARY,
  ): Promise<void> {
    for (const t of tables) await this.ensureChain(t, name);
  }

  /** Whether the canary still exists; kube-proxy watches the mangle one. */
  canaryExists(table: TableName = 'mangle', name = KUBE_PROXY_CANARY): Promise<boolean> {
    return this.chainExists(table, name);
  }
}

/**
 * Bytes and lines of a restore input as its pieces go by, and the last few pieces (at least two and
 * 1 MB: those of the last two transactions, or about 4 MB) with the number of their first line, to show
 * the line iptables-restore blames: it stops at the transaction it could not commit, which a
 * streamed input has just written.
 */
class InputTally {
  bytes = 0;
  readonly commits = new TransactionTally();
  /** Newlines so far. */
  private newlines = 0;
  private endsWithNewline = true;
  private readonly recent: { text: string; firstLine: number }[] = [];
  private recentBytes = 0;

  get lines(): number {
    return this.endsWithNewline ? this.newlines : this.newlines + 1;
  }

  count(text: string): void {
    if (text === '') return;
    this.commits.feed(text);
    this.bytes += Buffer.byteLength(text, 'utf8');
    for (let i = text.indexOf('\n'); i !== -1; i = text.indexOf('\n', i + 1)) this.newlines++;
    this.endsWithNewline = text.endsWith('\n');
  }

  async *pass(pieces: Iterable<string> | AsyncIterable<string>): AsyncGenerator<string> {
    for await (const text of pieces) {
      const firstLine = this.newlines + 1;
      this.count(text);
      this.recent.push({ text, firstLine });
      this.recentBytes += text.length;
      // iptables-restore may be a pipe buffer (64 KiB) and a transaction behind: keep 1 MB at least.
      while (this.recent.length > 2) {
        const rest = this.recentBytes - this.recent[0]!.text.length;
        if (rest < 1 << 20 || (rest < 4 << 20 && this.startsAfterFirst() < 2)) break;
        this.recentBytes -= this.recent.shift()!.text.length;
      }
      yield text;
    }
  }

  /**
   * Transactions that start in the kept pieces after the first one. iptables-restore fails in the
   * transaction it commits, at most the one before the transaction being written: the pieces from
   * the start of that one on are enough.
   */
  private startsAfterFirst(): number {
    let n = 0;
    for (let i = 1; i < this.recent.length; i++) if (this.recent[i]!.text.startsWith('*')) n++;
    return n;
  }

  blame(stderr: string): ReturnType<typeof blameRestoreLine> {
    const first = this.recent[0];
    return first === undefined
      ? blameRestoreLine('', stderr, 1)
      : blameRestoreLine(this.recent.map((p) => p.text).join(''), stderr, first.firstLine);
  }
}

/** iptables commands that write (the others list or check). */
const WRITE_COMMANDS = new Set(['-A', '-I', '-R', '-D', '-N', '-X', '-F', '-P', '-E', '-Z']);

/**
 * The commits an iptables-restore input makes once it succeeded, transaction by transaction: one
 * that adds a rule (`-A`, `-I`) makes exactly one (the kernel's transaction is not empty); one with
 * nothing between `*table` and `COMMIT` (or only `-S` listings) makes none (nf_tables ignores an
 * empty transaction, checked on 6.18); any other (chains declared, flushed or deleted only) may
 * make one or none: uncertain. Fed the input in pieces as it is written.
 */
export class TransactionTally {
  private exact = 0;
  private uncertain = 0;
  private inTransaction = false;
  private adds = false;
  private other = false;
  /** The start of a line split between two pieces. */
  private carry = '';

  feed(text: string): void {
    let start = 0;
    for (let nl = text.indexOf('\n'); nl !== -1; nl = text.indexOf('\n', start)) {
      if (this.carry !== '') {
        this.line(this.carry + text.slice(0, nl));
        this.carry = '';
      } else {
        this.line(text, start, nl);
      }
      start = nl + 1;
    }
    if (start < text.length) this.carry += text.slice(start);
  }

  result(): CommitCount {
    const exact = this.exact;
    let uncertain = this.uncertain;
    // A last line without a newline, or a transaction never committed: iptables-restore decides.
    if (this.carry !== '' || this.inTransaction) uncertain++;
    return { exact, uncertain };
  }

  private line(text: string, from = 0, to = text.length): void {
    if (to === from) return;
    const c = text.charCodeAt(from);
    if (c === 42 /* * */) {
      this.inTransaction = true;
      this.adds = false;
      this.other = false;
    } else if (c === 45 /* - */) {
      const flag = text.charCodeAt(from + 1);
      const spaced = text.charCodeAt(from + 2) === 32;
      if (spaced && (flag === 65 /* A */ || flag === 73) /* I */) this.adds = true;
      else if (!(spaced && flag === 83 /* S */)) this.other = true;
    } else if (c === 35 /* # */) {
      // a comment
    } else if (to - from === 6 && text.startsWith('COMMIT', from)) {
      if (this.adds) this.exact++;
      else if (this.other) this.uncertain++;
      this.inTransaction = false;
    } else {
      this.other = true;
    }
  }
}

/** A netlink socket's receive queue: bytes queued now, messages dropped since it was opened. */
export interface NetlinkEventSocket {
  readonly queued: number;
  readonly drops: number;
}

/**
 * From /proc/net/netlink: the NETLINK_NETFILTER socket of port `portid` that subscribes to multicast
 * groups (nft monitor's event socket; nft binds it to its PID). Undefined when there is none.
 */
export function netlinkEventSocket(text: string, portid: number): NetlinkEventSocket | undefined {
  // sk Eth Pid Groups Rmem Wmem Dump Locks Drops Inode
  for (const line of text.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f.length < 9 || f[1] !== '12' || f[2] !== String(portid) || /^0+$/.test(f[3]!)) continue;
    const queued = Number(f[4]);
    const drops = Number(f[8]);
    if (Number.isFinite(queued) && Number.isFinite(drops)) return { queued, drops };
  }
  return undefined;
}
