import { iptablesBinaries, type ProxyOptions } from '../config/options.js';
import type { IPFamily } from '../model/types.js';
import { StartupError } from '../util/errors.js';
import { CommandError } from '../util/exec.js';
import { log } from '../util/log.js';
import { Iptables } from '../iptables/iptables.js';
import { parseIptablesSave, type SavedRuleset } from '../iptables/save-parse.js';

/**
 * The iptables side every mode that writes iptables rules shares (iptables and IPVS mode): which
 * families have a working iptables here, and the kernel's rules read back, parsed.
 */

/** What an unusable iptables binary means for the operator, from the command's failure. */
function iptablesProblem(err: unknown): string {
  if (err instanceof CommandError) {
    const cmd = err.argv.find((a) => a.includes('iptables')) ?? err.argv[0] ?? 'iptables';
    if (err.reason === 'not-found') return `${cmd} not found (install iptables, or set --iptables-binary)`;
    const stderr = err.stderr.trim().split('\n')[0] ?? '';
    if (err.failure === 'permission') {
      return `${cmd}: ${stderr} (run svcplane as root, or with CAP_NET_ADMIN and CAP_NET_RAW)`;
    }
    return `${cmd}: ${stderr || `exit status ${String(err.exitCode)}`}`;
  }
  return err instanceof Error ? err.message : String(err);
}

/** The families whose iptables binaries work here; IPv6 is dropped with a warning when unavailable. */
export async function usableFamilies(opts: ProxyOptions): Promise<IPFamily[]> {
  const families: IPFamily[] = [];
  const problems: string[] = [];
  for (const family of opts.ipFamilies) {
    const ipt = new Iptables({ family, binaries: iptablesBinaries(opts.iptablesBinary, family) });
    try {
      await ipt.save('nat');
      families.push(family);
    } catch (err) {
      problems.push(`${family}: ${iptablesProblem(err)}`);
    }
  }
  if (families.length === 0) {
    throw new StartupError(`no usable iptables for any IP family: ${problems.join('; ')}`);
  }
  for (const p of problems)
    log.warn(`not programming ${p.split(':')[0] ?? ''}: iptables unavailable`, { reason: p });
  return families;
}

/** iptables-save of one family, parsed; undefined when that family's binary is missing. */
export async function readKernelRules(
  opts: Pick<ProxyOptions, 'iptablesBinary'>,
  family: IPFamily,
  netns: string | undefined,
  counters = false,
): Promise<SavedRuleset | undefined> {
  const ipt = new Iptables({ family, netns, binaries: iptablesBinaries(opts.iptablesBinary, family) });
  try {
    return parseIptablesSave(await ipt.save(undefined, { counters }));
  } catch (e) {
    if (e instanceof CommandError && e.reason === 'not-found') return undefined;
    throw e;
  }
}
