import {
  KUBE_FORWARD,
  KUBE_IPVS_FILTER,
  KUBE_IPVS_OUT_FILTER,
  KUBE_LOAD_BALANCER,
  KUBE_MARK_MASQ,
  KUBE_NODE_PORT,
  KUBE_POSTROUTING,
  KUBE_PROXY_FIREWALL,
  KUBE_SERVICES,
  KUBE_SOURCE_RANGES_FIREWALL,
} from '../iptables/names.js';
import type { Iptables } from '../iptables/iptables.js';
import {
  formatArgs,
  parseIptablesSave,
  quoteArg,
  ruleTarget,
  type SavedRuleset,
} from '../iptables/save-parse.js';
import { CommandError, run } from '../util/exec.js';
import { SET_IDS, SETS, setName, parseIpsetSave } from './ipset.js';
import { DUMMY_DEVICE } from './proxier.js';

/**
 * `svcplane cleanup`'s IPVS part (kube-proxy's ipvs CleanupLeftovers): unlink and delete the IPVS-only
 * chains and flush the shared kube chains (so no rule names our sets), destroy the sets, delete
 * kube-ipvs0 and clear the IPVS table (all of it, as kube-proxy does: IPVS state has no owner tag).
 * Run it before the iptables cleanup, which then removes the shared chains.
 */

/** Chains only IPVS mode creates. */
export const IPVS_ONLY_CHAINS: Readonly<Record<'nat' | 'filter', readonly string[]>> = {
  nat: [KUBE_NODE_PORT, KUBE_LOAD_BALANCER],
  filter: [KUBE_NODE_PORT, KUBE_SOURCE_RANGES_FIREWALL, KUBE_IPVS_FILTER, KUBE_IPVS_OUT_FILTER],
};
/** Shared kube chains whose IPVS rules reference the sets; flushed (the iptables cleanup deletes them). */
const SHARED_CHAINS: Readonly<Record<'nat' | 'filter', readonly string[]>> = {
  nat: [KUBE_SERVICES, KUBE_POSTROUTING, KUBE_MARK_MASQ],
  filter: [KUBE_FORWARD, KUBE_PROXY_FIREWALL],
};
const BUILTIN = new Set(['PREROUTING', 'INPUT', 'FORWARD', 'OUTPUT', 'POSTROUTING']);

/** Pure: the iptables-restore --noflush input that removes IPVS mode's chains; '' when none exist. */
export function planIpvsIptablesCleanup(saved: SavedRuleset): { input: string; removed: string[] } {
  const out: string[] = [];
  const removed: string[] = [];
  for (const t of ['nat', 'filter'] as const) {
    const table = saved.tables.get(t);
    if (!table) continue;
    const own = IPVS_ONLY_CHAINS[t].filter((c) => table.chainsByName.has(c));
    const shared = SHARED_CHAINS[t].filter((c) => table.chainsByName.has(c));
    if (own.length === 0) continue;
    out.push(`*${t}`, ...[...own, ...shared].map((c) => `:${c} - [0:0]`));
    for (const r of table.rules) {
      const target = ruleTarget(r);
      if (BUILTIN.has(r.chain) && target !== undefined && own.includes(target)) {
        out.push(`-D ${quoteArg(r.chain)} ${formatArgs(r.args)}`);
        removed.push(`-t ${t} -D ${r.chain} ${formatArgs(r.args)}`);
      }
    }
    for (const c of own) {
      out.push(`-X ${c}`);
      removed.push(`-t ${t} -X ${c}`);
    }
    out.push('COMMIT');
  }
  return { input: out.length ? `${out.join('\n')}\n` : '', removed };
}

export interface IpvsCleanupResult {
  readonly removed: string[];
}

const missing = (err: unknown): boolean => err instanceof CommandError && err.reason === 'not-found';

/** Removes IPVS mode's state for both families. Idempotent; missing tools mean nothing to remove. */
export async function cleanupIpvs(
  iptables: readonly Iptables[],
  opts: { netns?: string } = {},
): Promise<IpvsCleanupResult> {
  const exec = (argv: string[], input?: string) =>
    run(argv, { input, netns: opts.netns, allowFailure: true, timeoutMs: 60_000 });
  const removed: string[] = [];
  for (const ipt of iptables) {
    try {
      const plan = planIpvsIptablesCleanup(parseIptablesSave(await ipt.save()));
      if (plan.input !== '') await ipt.restore(plan.input, { noflush: true, counters: false });
      removed.push(...plan.removed.map((r) => `${ipt.family}: ${r}`));
    } catch (err) {
      if (!missing(err)) throw err;
    }
  }
  try {
    const sets = parseIpsetSave((await exec(['ipset', 'save'])).stdout);
    const ours = new Set(
      SET_IDS.flatMap((id) => (['IPv4', 'IPv6'] as const).map((f) => setName(SETS[id].base, f))),
    );
    const doomed = [...sets.keys()].filter((n) => ours.has(n));
    if (doomed.length > 0) {
      const r = await exec(['ipset', 'restore'], doomed.map((n) => `destroy ${n}`).join('\n') + '\n');
      if (r.exitCode !== 0) throw new Error(`ipset destroy failed: ${r.stderr.trim()}`);
      removed.push(...doomed.map((n) => `ipset destroy ${n}`));
    }
  } catch (err) {
    if (!missing(err)) throw err;
  }
  const link = await exec(['ip', 'link', 'del', DUMMY_DEVICE]);
  if (link.exitCode === 0) removed.push(`ip link del ${DUMMY_DEVICE}`);
  try {
    const table = await exec(['ipvsadm', '-Sn']);
    if (table.exitCode === 0 && table.stdout.trim() !== '') {
      await exec(['ipvsadm', '-C']);
      removed.push('ipvsadm -C');
    }
  } catch (err) {
    if (!missing(err)) throw err;
  }
  return { removed };
}
