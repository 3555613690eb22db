import { InvalidArgumentError, type Command } from 'commander';
import { parseCIDR } from '../model/ip.js';
import { boolOption, parseDuration, parseList } from '../cli/flags.js';
import { IPVS_SCHEDULERS, resolveSchedulerFlags } from './types.js';

/** kube-proxy's `--ipvs-…` flags and their resolved form (ProxyOptions.ipvs). */

export interface IpvsOptions {
  readonly scheduler: string;
  /**
   * --ipvs-scheduler-flags as given (validated against --ipvs-scheduler); undefined = kube-proxy's
   * default for the scheduler. Resolved with resolveSchedulerFlags once the scheduler is final.
   */
  readonly schedulerFlags?: readonly string[];
  readonly strictARP: boolean;
  readonly excludeCIDRs: readonly string[];
  /** undefined: the iptables periods apply. */
  readonly syncPeriodMs?: number;
  readonly minSyncPeriodMs?: number;
  /** Milliseconds; 0 keeps the kernel's value. */
  readonly tcpTimeoutMs: number;
  readonly tcpFinTimeoutMs: number;
  readonly udpTimeoutMs: number;
}

function parseScheduler(text: string): string {
  const s = text.trim();
  if (!IPVS_SCHEDULERS.includes(s)) {
    throw new InvalidArgumentError(`unknown IPVS scheduler "${s}" (one of ${IPVS_SCHEDULERS.join(', ')})`);
  }
  return s;
}

export function addIpvsOptions(cmd: Command): Command {
  cmd
    .option(
      '--ipvs-scheduler <name>',
      'IPVS scheduler: rr (default), wrr, lc, wlc, sh, dh, sed, nq, mh …',
      parseScheduler,
    )
    .option(
      '--ipvs-scheduler-flags <flags>',
      'svcplane: scheduler flags for sh/mh: flag-1 (= sh-/mh-fallback), flag-2 (= sh-/mh-port); default mh-port for mh, as kube-proxy',
      parseList,
    )
    .option('--ipvs-sync-period <d>', 'maximum interval between IPVS syncs (default 30s)', parseDuration)
    .option('--ipvs-min-sync-period <d>', 'minimum interval between IPVS syncs', parseDuration)
    .option('--ipvs-exclude-cidrs <cidrs>', 'virtual servers in these CIDRs are never deleted', parseList)
    .option('--ipvs-tcp-timeout <d>', 'IPVS TCP session timeout (0 = keep)', parseDuration)
    .option('--ipvs-tcpfin-timeout <d>', 'IPVS TCP FIN_WAIT timeout (0 = keep)', parseDuration)
    .option('--ipvs-udp-timeout <d>', 'IPVS UDP timeout (0 = keep)', parseDuration);
  boolOption(cmd, 'ipvs-strict-arp', 'set arp_ignore=1/arp_announce=2 for VIPs on kube-ipvs0', false);
  return cmd;
}

/** Raw commander values → IpvsOptions; throws naming the flag. */
export function resolveIpvsOptions(raw: Readonly<Record<string, unknown>>): IpvsOptions {
  const num = (k: string): number | undefined => (typeof raw[k] === 'number' ? raw[k] : undefined);
  const exclude = Array.isArray(raw.ipvsExcludeCidrs) ? (raw.ipvsExcludeCidrs as string[]) : [];
  for (const c of exclude) if (!parseCIDR(c)) throw new Error(`--ipvs-exclude-cidrs: invalid CIDR "${c}"`);
  const sync = num('ipvsSyncPeriod');
  const min = num('ipvsMinSyncPeriod');
  if (sync !== undefined && sync <= 0) throw new Error('--ipvs-sync-period: must be greater than 0');
  if (sync !== undefined && min !== undefined && min > sync) {
    throw new Error('--ipvs-sync-period: must be greater than or equal to --ipvs-min-sync-period');
  }
  const scheduler =
    typeof raw.ipvsScheduler === 'string' && raw.ipvsScheduler !== '' ? raw.ipvsScheduler : 'rr';
  if (!IPVS_SCHEDULERS.includes(scheduler))
    throw new Error(`--ipvs-scheduler: unknown scheduler "${scheduler}"`);
  const schedulerFlags = Array.isArray(raw.ipvsSchedulerFlags)
    ? (raw.ipvsSchedulerFlags as string[])
    : undefined;
  if (schedulerFlags !== undefined) resolveSchedulerFlags(scheduler, schedulerFlags);
  return {
    scheduler,
    ...(schedulerFlags !== undefined ? { schedulerFlags } : {}),
    strictARP: raw.ipvsStrictArp === true,
    excludeCIDRs: exclude,
    ...(sync !== undefined && sync > 0 ? { syncPeriodMs: sync } : {}),
    ...(min !== undefined && min > 0 ? { minSyncPeriodMs: min } : {}),
    tcpTimeoutMs: num('ipvsTcpTimeout') ?? 0,
    tcpFinTimeoutMs: num('ipvsTcpfinTimeout') ?? 0,
    udpTimeoutMs: num('ipvsUdpTimeout') ?? 0,
  };
}
