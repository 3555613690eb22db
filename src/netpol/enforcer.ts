import type { Backend, SyncReport } from '../modes/backend.js';
import type { ClusterState, IPFamily } from '../model/types.js';
import { log } from '../util/log.js';
import { CommandError, run } from '../util/exec.js';
import { compareTable, parseKernelTable, type TableDifference } from './nft-read.js';
import {
  NETPOL_FAMILY,
  NETPOL_TABLE,
  renderCleanup,
  renderElementChanges,
  renderTable,
} from './nft-render.js';
import { diffPlans } from './plan-diff.js';
import { computePolicyPlan, type PolicyPlan } from './plan.js';

/**
 * NetworkPolicy enforcement for the pods of this node: the policy plan (plan.ts) written to the
 * kernel as one nftables table of svcplane's own (nft-render.ts), beside whichever proxy mode runs.
 * The shell: it decides nothing the plan and the renderer do not say, and writes only through
 * src/util/exec (`nft -f -`, one transaction per sync).
 *
 * - First sync, after a failure, a drift or a policy change (rules or sets created/removed): the
 *   whole table replaced in one transaction.
 * - A pod or namespace change (labels, a pod coming or going): set elements added and deleted in
 *   one transaction; no rule is touched.
 * - Drift (a set flushed, a rule deleted, the table gone) is found by reading the table back every
 *   sync period and repaired by the next full sync.
 */

export interface NetpolEnforcerConfig {
  /** This node's name (`--hostname-override`): the pods with this spec.nodeName are enforced. */
  readonly nodeName: string;
  readonly families: readonly IPFamily[];
  /** Run nft inside this named network namespace (tests). */
  readonly netns?: string;
  /** The nft binary; default `nft`. */
  readonly nftBinary?: string;
}

export class NetpolEnforcer implements Backend {
  readonly name = 'netpol';
  private needFull = true;
  /** The plan the kernel holds after our last successful write. */
  private applied: PolicyPlan | undefined;
  private lastState: ClusterState | undefined;

  constructor(private readonly config: NetpolEnforcerConfig) {}

  /** The plan the kernel was last given (for diff and explain in-process). */
  get appliedPlan(): PolicyPlan | undefined {
    return this.applied;
  }

  private nft(args: readonly string[], input?: string): ReturnType<typeof run> {
    return run([this.config.nftBinary ?? 'nft', ...args], {
      ...(input !== undefined ? { input } : {}),
      ...(this.config.netns ? { netns: this.config.netns } : {}),
      timeoutMs: 60_000,
    });
  }

  /** nft must work here (and nf_tables with it): said at start-up rather than at the first policy. */
  async setup(): Promise<void> {
    await this.nft(['list', 'tables']);
  }

  forceFullSync(): void {
    this.needFull = true;
  }

  plan(state: ClusterState): PolicyPlan {
    return computePolicyPlan(state, this.config.nodeName, this.config.families);
  }

  async sync(state: ClusterState): Promise<SyncReport> {
    const started = performance.now();
    const plan = state === this.lastState && this.applied ? this.applied : this.plan(state);
    const planned = performance.now();
    let text: string;
    let full = this.needFull || this.applied === undefined;
    let elementChanges = 0;
    if (!full && this.applied) {
      const diff = diffPlans(this.applied, plan);
      if (diff.structural) full = true;
      else {
        const changes = renderElementChanges(plan, diff.elements);
        text = changes.text;
        elementChanges = diff.elementChanges;
      }
    }
    if (full) text = renderTable(plan);
    const input = text!;
    const rendered = performance.now();
    try {
      if (input.length > 0) await this.nft(['-f', '-'], input);
    } catch (err) {
      // The transaction is all or nothing: the previous rules stay; rewrite them all next time.
      this.needFull = true;
      throw err;
    }
    this.applied = plan;
    this.lastState = state;
    this.needFull = false;
    const isolated = plan.pods.filter((p) => p.ingress.isolated || p.egress.isolated).length;
    return {
      backend: this.name,
      full,
      durationMs: performance.now() - started,
      bytes: input.length,
      lines: input.length === 0 ? 0 : input.split('\n').length - 1,
      writtenServices: 0,
      staleChains: 0,
      details: {
        policyRules: plan.rules.length,
        policySets: plan.sets.size,
        localPods: plan.pods.length,
        isolatedPods: isolated,
        elementChanges,
        planMs: Math.round(planned - started),
        renderMs: Math.round(rendered - planned),
        nftMs: Math.round(performance.now() - rendered),
      },
    };
  }

  /** The table as the kernel holds it, against the plan last written. */
  async compare(plan: PolicyPlan | undefined = this.applied): Promise<TableDifference> {
    if (!plan) return { lines: ['nothing written yet'] };
    return compareTable(plan, await readKernelTable(this.config));
  }

  async detectDrift(): Promise<boolean> {
    if (this.needFull || !this.applied) return true;
    const diff = await this.compare();
    if (diff.lines.length === 0) return false;
    log.warn('NetworkPolicy rules changed outside svcplane; rewriting them', {
      backend: this.name,
      differences: diff.lines.slice(0, 5).join('; '),
    });
    this.needFull = true;
    return true;
  }
}

/** The policy table as the kernel holds it; undefined when there is none. */
export async function readKernelTable(opts: {
  readonly netns?: string;
  readonly nftBinary?: string;
}): Promise<ReturnType<typeof parseKernelTable> | undefined> {
  const res = await run([opts.nftBinary ?? 'nft', '-j', 'list', 'table', NETPOL_FAMILY, NETPOL_TABLE], {
    ...(opts.netns ? { netns: opts.netns } : {}),
    allowFailure: true,
  });
  if (res.exitCode !== 0) {
    if (res.failure === 'no-such-object') return undefined;
    throw new CommandError(res.argv, res.exitCode, res.stderr, 'exit');
  }
  return parseKernelTable(res.stdout);
}

/** `svcplane cleanup`: removes the policy table. Whether it was there. */
export async function cleanupNetpol(
  opts: { readonly netns?: string; readonly nftBinary?: string } = {},
): Promise<boolean> {
  const present = (await readKernelTable(opts)) !== undefined;
  // No table, nothing to remove: and a kernel without nf_tables (User-mode Linux) refuses the
  // add-then-delete idiom below, which made `svcplane cleanup` fail there.
  if (!present) return false;
  await run([opts.nftBinary ?? 'nft', '-f', '-'], {
    input: renderCleanup(),
    ...(opts.netns ? { netns: opts.netns } : {}),
  });
  return present;
}
