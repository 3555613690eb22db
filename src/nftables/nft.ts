import { release } from 'node:os';
import { CommandError, run } from '../util/exec.js';
import { log } from '../util/log.js';
import type { IPFamily } from '../model/types.js';
import {
  parseNftJson,
  parseNftTable,
  type ListedChain,
  type ListedContainer,
  type ListedTable,
} from './listing.js';
import { nftFamily, TABLE } from './names.js';

/**
 * The nft wrapper: the only place nftables mode spawns. One `nft -f -` per transaction (atomic:
 * the kernel takes all of it or nothing), JSON listings, the version checks kube-proxy makes.
 */

/**
 * An nft command failed: a CommandError (command, exit status, stderr, classified cause) saying
 * what nftables mode was doing, printed as every command failure is, after that.
 */
export class NftError extends CommandError {
  constructor(
    command: CommandError,
    /** What the command was for ("nftables full sync", "nft listing" …). */
    readonly what: string,
  ) {
    super(command.argv, command.exitCode, command.stderr, command.reason);
    this.name = 'NftError';
    this.message = `${what}: ${this.message}`;
  }
}

/** nft ≥ 1.0.1 (older ones parse the whole ruleset and can crash on other agents' rules). */
export const MIN_NFT_VERSION = [1, 0, 1] as const;
/** Kernel ≥ 5.13: kube-proxy's proxy for "the distro's nft is new enough" (issues.k8s.io/122743). */
export const MIN_KERNEL_VERSION = [5, 13] as const;
export const SKIP_KERNEL_CHECK_ENV = 'KUBE_PROXY_NFTABLES_SKIP_KERNEL_VERSION_CHECK';

function versionLess(have: readonly number[], want: readonly number[]): boolean {
  for (let i = 0; i < want.length; i++) {
    const h = have[i] ?? 0;
    if (h !== want[i]) return h < want[i]!;
  }
  return false;
}

/** Why nftables mode cannot run with this nft and kernel (undefined when it can). Pure. */
export function versionProblem(
  nftVersionOutput: string,
  kernelRelease: string,
  skipKernelCheck: boolean,
): string | undefined {
  const m = /v?(\d+)\.(\d+)(?:\.(\d+))?/.exec(nftVersionOutput);
  if (!m) return `cannot read the nft version from ${JSON.stringify(nftVersionOutput.trim())}`;
  const nft = [Number(m[1]), Number(m[2]), Number(m[3] ?? 0)];
  if (versionLess(nft, MIN_NFT_VERSION)) {
    return `nftables mode needs nft ${MIN_NFT_VERSION.join('.')} or later, found ${nft.join('.')}`;
  }
  if (!skipKernelCheck) {
    const k = /^(\d+)\.(\d+)/.exec(kernelRelease);
    if (!k) return `cannot read the kernel version from ${JSON.stringify(kernelRelease)}`;
    const kernel = [Number(k[1]), Number(k[2])];
    if (versionLess(kernel, MIN_KERNEL_VERSION)) {
      return `nftables mode needs kernel ${MIN_KERNEL_VERSION.join('.')} or later, found ${kernelRelease} (set ${SKIP_KERNEL_CHECK_ENV}=1 to skip this check)`;
    }
  }
  return undefined;
}

export interface NftOptions {
  readonly family: IPFamily;
  readonly netns?: string;
  /** The nft binary (default `nft`). */
  readonly binary?: string;
}

/**
 * How long one `nft` may run. When a full sync was one transaction, at 10k Services x 5 endpoints it
 * took 65-100 s of kernel time on a loaded 2-core machine and a repeated one longer: the former 120 s
 * killed it, and every retry was killed the same way. A full sync is in parts now (transaction.ts),
 * each a few seconds; the limit stays iptables-restore's (10 min) for a slow kernel or a large partial.
 */
export const NFT_TRANSACTION_TIMEOUT_MS = 600_000;
/** `nft -j list table` at 10k: ~21 s on that machine (60 MB of JSON). */
export const NFT_LISTING_TIMEOUT_MS = 300_000;

export interface NftRunResult {
  readonly bytes: number;
  readonly lines: number;
  readonly durationMs: number;
}

/** About how many characters one piece of an `nft -f` input holds (below V8's large-object size). */
const INPUT_PIECE_CHARS = 32 * 1024;

/** Commands as newline-terminated pieces of about INPUT_PIECE_CHARS (pure). */
export function inputPieces(lines: readonly string[]): string[] {
  const pieces: string[] = [];
  let from = 0;
  let chars = 0;
  for (let i = 0; i < lines.length; i++) {
    chars += lines[i]!.length + 1;
    if (chars >= INPUT_PIECE_CHARS || i === lines.length - 1) {
      pieces.push(lines.slice(from, i + 1).join('\n') + '\n');
      from = i + 1;
      chars = 0;
    }
  }
  return pieces;
}

export class Nft {
  readonly family: 'ip' | 'ip6';
  private readonly bin: string;

  constructor(private readonly opts: NftOptions) {
    this.family = nftFamily(opts.family);
    this.bin = opts.binary ?? 'nft';
  }

  private async exec(
    args: readonly string[],
    input: readonly string[] | undefined,
    what: string,
  ): Promise<{ stdout: string; durationMs: number }> {
    const argv = [this.bin, ...args];
    try {
      const r = await run(argv, {
        netns: this.opts.netns,
        ...(input !== undefined ? { input } : {}),
        timeoutMs: input !== undefined ? NFT_TRANSACTION_TIMEOUT_MS : NFT_LISTING_TIMEOUT_MS,
      });
      return { stdout: r.stdout, durationMs: r.durationMs };
    } catch (err) {
      if (err instanceof CommandError) throw new NftError(err, what);
      throw err;
    }
  }

  /** `nft --version` output. */
  async version(): Promise<string> {
    return (await this.exec(['--version'], undefined, 'nft version')).stdout;
  }

  /** Checks nft and the kernel as kube-proxy does; throws with a clear message. */
  async checkVersions(): Promise<void> {
    const problem = versionProblem(
      await this.version(),
      release(),
      Boolean(process.env[SKIP_KERNEL_CHECK_ENV]),
    );
    if (problem !== undefined) throw new Error(problem);
  }

  /** One atomic transaction, handed to nft's stdin in pieces (no joined copy of a large input). */
  async apply(lines: readonly string[], what = 'nftables transaction'): Promise<NftRunResult> {
    const input = inputPieces(lines);
    const r = await this.exec(['-f', '-'], input, what);
    let bytes = 0;
    for (const piece of input) bytes += Buffer.byteLength(piece);
    return { bytes, lines: lines.length, durationMs: r.durationMs };
  }

  /** `nft -j list table <family> kube-proxy`, parsed; undefined when the table does not exist. */
  async listTable(): Promise<ListedTable | undefined> {
    const text = await this.listText(['list', 'table', this.family, TABLE]);
    return text === undefined ? undefined : parseNftTable(text, this.family, TABLE);
  }

  /** The raw JSON listing of the table (for `svcplane diff/trace`), undefined when absent. */
  async listTableJson(): Promise<string | undefined> {
    return this.listText(['list', 'table', this.family, TABLE]);
  }

  /** Our table's chains without their rules (cheap: `nft -j list chains <family>`). */
  async listChains(): Promise<ListedChain[]> {
    const text = await this.listText(['list', 'chains', this.family]);
    if (text === undefined) return [];
    return [...(parseNftJson(text, { family: this.family, table: TABLE })[0]?.chains.values() ?? [])];
  }

  /**
   * Our table's sets (not maps), without elements. Terse (`-t`): nft then does not fetch the elements
   * of every set, one netlink dump per set, the ~11k anonymous ones included (10k Services: 8.8 s
   * without it, a full sync waited for it; docs/performance.md).
   */
  async listSets(): Promise<ListedContainer[]> {
    const text = await this.listText(['-t', 'list', 'sets', this.family]);
    if (text === undefined) return [];
    return [...(parseNftJson(text, { family: this.family, table: TABLE })[0]?.containers.values() ?? [])];
  }

  private async listText(args: readonly string[]): Promise<string | undefined> {
    try {
      return (await this.exec(['-j', ...args], undefined, 'nft listing')).stdout;
    } catch (err) {
      if (err instanceof NftError && err.failure === 'no-such-object') return undefined;
      throw err;
    }
  }
}

/**
 * Another mode starting: kube-proxy's nftables tables go (a node switched from nftables mode would
 * otherwise DNAT twice). Failures are logged, never fatal (no nf_tables here: nothing to remove).
 */
export async function removeNftablesModeLeftovers(binary: string): Promise<void> {
  const failed = await deleteKubeProxyTables({ binary });
  for (const f of failed) log.info('cannot remove nftables mode leftovers', { reason: f });
}

/**
 * Deletes the `kube-proxy` table of both families (kube-proxy's CleanupLeftovers): `add` then
 * `delete` in one transaction, so a missing table is no error. Returns the families it failed for.
 */
export async function deleteKubeProxyTables(
  opts: { netns?: string; binary?: string } = {},
): Promise<string[]> {
  const failed: string[] = [];
  for (const family of ['IPv4', 'IPv6'] as const) {
    const nft = new Nft({ family, ...opts });
    try {
      // No table, nothing to delete: a kernel without nf_tables (User-mode Linux) refuses even the
      // `add` below, which made `svcplane cleanup` fail there.
      if ((await nft.listTableJson()) === undefined) continue;
      await nft.apply(
        [`add table ${nft.family} ${TABLE}`, `delete table ${nft.family} ${TABLE}`],
        'nftables cleanup',
      );
    } catch (err) {
      // No nft binary, or a kernel without nf_tables (User-mode Linux's: "Operation not supported"):
      // nothing of ours can be there.
      if (err instanceof NftError && (err.reason === 'not-found' || err.failure === 'not-supported'))
        continue;
      failed.push(`${nft.family}: ${(err as Error).message}`);
    }
  }
  return failed;
}
