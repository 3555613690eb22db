import type { ProxyOptions } from '../config/options.js';
import type { SavedRuleset } from '../iptables/save-parse.js';
import type { IpsetView } from '../ipvs/ipset.js';
import type { IpvsTable } from '../ipvs/ipvsadm.js';
import type { ListedTable } from '../nftables/listing.js';
import type { ClusterState, IPFamily } from '../model/types.js';
import type { Backend } from './backend.js';

/**
 * The contract every dataplane mode implements (iptables, IPVS; nftables next). A mode is a folder
 * (src/iptables, src/ipvs, …) whose `mode.ts` exports one `DataplaneMode`, listed once in
 * ./registry.ts. Everything outside the registry asks the registry for the mode and calls it:
 * `run`, `sync`, `cleanup` (src/cli/proxy.ts), `diff`, `explain` and `trace` never branch on a
 * mode's name.
 *
 * What a new mode implements, and where each piece lives in the existing modes:
 *
 * 1. Availability probe — `unavailable(opts)`: undefined when the mode can run on this node, else the
 *    reason (logged with the fallback). `fallback` names the mode to use instead (IPVS → iptables, as
 *    kube-proxy < 1.26 did); without one, an unavailable mode fails start-up with the reason.
 * 2. Configuration it needs — it reads the one resolved configuration type `ProxyOptions`
 *    (src/config/options.ts); it turns it into its own per-family settings (e.g.
 *    `iptablesProxierConfig`, `ipvsConfigFor`) and throws a clear error when a setting it needs is
 *    missing (e.g. --detect-local-mode=BridgeInterface without --pod-bridge-interface).
 *    Node facts resolved before any mode starts (the Node's pod CIDRs for --detect-local-mode=NodeCIDR,
 *    src/cli/node-cidr.ts) arrive in `ProxyOptions.nodePodCIDRs`, for every mode alike.
 * 3. Node facts it gathers itself at sync time (node addresses for NodePorts, kernel capabilities such
 *    as --random-fully): inside its backends, spawning only through src/util/exec.ts.
 * 4. Desired state from a cluster state — pure (render/plan functions: iptables/render.ts,
 *    ipvs/plan.ts + ipvs/rules.ts): no spawning, same input → same output.
 * 5. Kernel read — parsed (iptables-save → iptables/save-parse.ts, ipvsadm -Sn → ipvs/ipvsadm.ts,
 *    ipset save → ipvs/ipset.ts): text in, typed structure out.
 * 6. Compare desired with kernel — pure; `inspect()` returns it per family with the inputs. A mode
 *    has one comparison for both the drift `svcplane diff` prints and the drift its backend repairs.
 *    iptables: iptables-rules/compare.ts `diffRulesets`; the daemon runs it only on what moved (its kernel
 *    watch, iptables/commit-log.ts, names the chains other agents touched; everything when it
 *    cannot tell). IPVS: virtual and real servers are judged by compareIpvs (ipvs/diff.ts), which
 *    the daemon's repair batch and debug/ipvs-diff.ts both use. nftables: the listing compared with
 *    the written model.
 * 7. Apply, full and partial — `createBackends(opts)`: one `Backend` per usable IP family
 *    (./backend.ts); the controller owns timing and calls `sync(state, change)`, which converges the
 *    kernel (partial when only some Services changed, full on the first sync, on drift and
 *    periodically). `change` (src/model/state-change.ts) is computed once per sync; the metrics and
 *    the conntrack cleaner get the same one.
 * 8. Cleanup — `cleanup(opts)` removes this mode's own rules, sets, links (kube-proxy --cleanup runs
 *    every registered mode's); a mode's first full sync also removes the other modes' leftovers
 *    (e.g. ipvs/leftovers.ts removes iptables mode's chains in the same transaction; nftables mode
 *    calls the other modes' `cleanup` through `ModeStart.cleanupOtherModes`, never importing them).
 * 9. Debugging — `explain(key, …)` for `svcplane explain`, `traceKernel(…)` for `svcplane trace`
 *    (what of this mode's kernel objects the packet walk reads), `inspect()` for `svcplane diff`.
 * 10. Metrics — `metrics.iptablesSyncFamilies`: whether kube-proxy registers the iptables-mode-only
 *    metric families in this mode.
 */
export interface DataplaneMode {
  /** The --proxy-mode value (and `/proxyMode`'s answer). */
  readonly name: ProxyOptions['proxyMode'];
  /** How logs name it ("IPVS proxy mode is unavailable …"). */
  readonly title: string;
  /** The mode to use when this one is unavailable; none: start-up fails with the reason. */
  readonly fallback?: ProxyOptions['proxyMode'];
  /** Why the mode cannot run here (binaries, kernel modules, versions), or undefined when it can. */
  unavailable(opts: ProxyOptions): Promise<string | undefined>;
  /** What the fallback warning logs besides the reason (e.g. the IPVS scheduler probed). */
  probeContext?(opts: ProxyOptions): Readonly<Record<string, string>>;
  /**
   * One backend per usable IP family; throws StartupError when no family is usable. `start` reaches
   * the other registered modes through the registry (a mode never imports another mode).
   */
  createBackends(opts: ProxyOptions, start: ModeStart): Promise<Backend[]>;
  /** The kernel of every family read back and compared with the desired state of `state`. */
  inspect(opts: ProxyOptions, state: ClusterState, netns: string | undefined): Promise<ModeInspection>;
  /** `svcplane explain NAMESPACE/NAME`: the Service in the state and in this mode's kernel objects. */
  explain(
    key: string,
    opts: ProxyOptions,
    state: ClusterState,
    netns: string | undefined,
  ): Promise<ModeExplanation>;
  /** Removes everything this mode programs (kube-proxy --cleanup); one outcome per part. */
  cleanup(opts: Pick<ProxyOptions, 'iptablesBinary' | 'nftBinary'>): Promise<CleanupOutcome[]>;
  /**
   * The kernel objects of this mode `svcplane trace` walks, read in `netns` (undefined: absent here).
   * `sofar` holds what the modes registered before this one read (e.g. the iptables ruleset).
   */
  traceKernel(request: TraceKernelRequest, sofar: TraceKernel): Promise<TraceKernel>;
  readonly metrics: { readonly iptablesSyncFamilies: boolean; readonly nftablesSyncFamilies?: boolean };
  /** Cleanup order: higher first (a mode whose rules hang off another mode's chains goes first). */
  readonly cleanupPriority: number;
}

/** What the registry hands a mode it starts: the other registered modes, through this contract. */
export interface ModeStart {
  /**
   * Every other registered mode's `cleanup` (highest cleanupPriority first), one outcome per part:
   * for a mode that removes the other modes' leftovers itself (nftables mode, after its first sync).
   */
  cleanupOtherModes(): Promise<CleanupOutcome[]>;
}

/** What `svcplane diff` reports: desired vs kernel for every family. */
export interface ModeInspection {
  readonly inSync: boolean;
  /** Per-family drift, as `--output json` prints it. */
  readonly families: readonly unknown[];
  /** Said on stderr (skipped families, invalid objects). */
  readonly notes: readonly string[];
  /** The text `svcplane diff` prints. */
  formatText(): string;
}

/** What `svcplane explain` reports for one Service. */
export interface ModeExplanation {
  /** The JSON report (`--output json`). */
  readonly report: unknown;
  /** The text report. */
  readonly text: string;
  /** False when neither the state nor the kernel knows the Service (exit 2). */
  readonly known: boolean;
}

export type CleanupOutcome =
  /** Printed as `PART: TEXT` (e.g. `ipvs: removed 12 chains/rules/sets/links`). */
  { readonly part: string; readonly text: string } | { readonly part: string; readonly error: unknown };

export interface TraceKernelRequest {
  readonly family: IPFamily;
  readonly netns: string | undefined;
  readonly iptablesBinary: string;
  readonly nftBinary: string;
}

/** The kernel state the packet walk (src/debug/trace.ts) reads. */
export interface TraceKernel {
  readonly ruleset?: SavedRuleset;
  readonly ipvs?: IpvsTable;
  readonly ipsets?: IpsetView;
  /** nftables mode: the `kube-proxy` table of the packet's family. */
  readonly nftables?: ListedTable;
}
