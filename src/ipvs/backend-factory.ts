import { iptablesBinaries, type ProxyOptions } from '../config/options.js';
import type { Backend } from '../modes/backend.js';
import { run } from '../util/exec.js';
import type { IPFamily } from '../model/types.js';
import { IpvsProxier, type IpvsProxierConfig } from './proxier.js';
import { resolveSchedulerFlags } from './types.js';
import { localTrafficDetector } from '../modes/local-traffic.js';

/**
 * `--proxy-mode ipvs`: one IpvsProxier per usable family, once ipvsUnavailable() found IPVS usable
 * (the caller falls back to iptables mode otherwise, as issue 3 asks; kube-proxy < 1.26 did this).
 */

/** kube-proxy's CanUseIPVSProxier probe: TEST-NET-2 virtual server with the configured scheduler. */
const PROBE_VS = '198.51.100.0:20000';

/** kube-proxy's MinIPSetCheckVersion: older ipset cannot restore the set types used here. */
export const MIN_IPSET_VERSION = '6.0';

/** Pure: why this `ipset --version` output is not good enough, or undefined (ipset >= 6.0). */
export function ipsetVersionProblem(versionOutput: string): string | undefined {
  const m = /\bv(\d+)\.(\d+)/.exec(versionOutput);
  if (!m) return `cannot read the ipset version from ${JSON.stringify(versionOutput.trim().slice(0, 100))}`;
  const [major, minor] = [Number(m[1]), Number(m[2])];
  const [minMajor, minMinor] = MIN_IPSET_VERSION.split('.').map(Number) as [number, number];
  if (major < minMajor || (major === minMajor && minor < minMinor)) {
    return `ipset ${major}.${minor} is too old (need >= ${MIN_IPSET_VERSION})`;
  }
  return undefined;
}

/** Why IPVS cannot be used here, or undefined when it can (creates and deletes a probe VS). */
export async function ipvsUnavailable(scheduler: string, netns?: string): Promise<string | undefined> {
  const exec = (argv: string[]) => run(argv, { netns, allowFailure: true, timeoutMs: 30_000 });
  try {
    const set = await exec(['ipset', '--version']);
    if (set.exitCode !== 0) return `ipset does not work: ${set.stderr.trim()}`;
    const old = ipsetVersionProblem(set.stdout + set.stderr);
    if (old !== undefined) return old;
    const list = await exec(['ipvsadm', '-Sn']);
    if (list.exitCode !== 0) return `ipvsadm -Sn failed: ${list.stderr.trim()}`;
    if (list.stdout.split('\n').some((l) => l.startsWith('-A ') && l.includes(` -s ${scheduler}`)))
      return undefined;
    const add = await exec(['ipvsadm', '-A', '-t', PROBE_VS, '-s', scheduler]);
    if (add.exitCode !== 0)
      return `cannot create a virtual server with scheduler ${scheduler}: ${add.stderr.trim()}`;
    const back = await exec(['ipvsadm', '-Sn']);
    await exec(['ipvsadm', '-D', '-t', PROBE_VS]);
    if (back.exitCode !== 0 || !back.stdout.includes(`-A -t ${PROBE_VS} `))
      return 'the probe virtual server did not read back';
    return undefined;
  } catch (err) {
    return err instanceof Error ? err.message : String(err);
  }
}

export function createIpvsBackends(opts: ProxyOptions, families: readonly IPFamily[]): Backend[] {
  return families.map((family) => new IpvsProxier(ipvsConfigFor(opts, family)));
}

/**
 * --detect-local-mode for IPVS mode: the shared LocalTrafficDetector (src/modes/local-traffic.ts, as
 * kube-proxy shares one between its proxiers), as the IPVS rules' `! -s CIDR` / `! -i IFACE` match.
 */
function ipvsLocalDetector(
  opts: ProxyOptions,
  family: IPFamily,
): Pick<IpvsProxierConfig, 'clusterCIDRs' | 'localInterface'> {
  const d = localTrafficDetector({
    family,
    detectLocalMode: opts.detectLocalMode,
    clusterCIDRs: opts.clusterCIDRs,
    ...(opts.nodePodCIDRs !== undefined ? { podCIDRs: opts.nodePodCIDRs } : {}),
    ...(opts.bridgeInterface !== undefined ? { bridgeInterface: opts.bridgeInterface } : {}),
    ...(opts.interfaceNamePrefix !== undefined ? { interfaceNamePrefix: opts.interfaceNamePrefix } : {}),
  });
  switch (d.mode) {
    case 'ClusterCIDR':
      return { clusterCIDRs: [d.cidr] };
    case 'BridgeInterface':
      return { clusterCIDRs: [], localInterface: d.name };
    case 'InterfaceNamePrefix':
      return { clusterCIDRs: [], localInterface: `${d.prefix}+` };
    default:
      return { clusterCIDRs: [] };
  }
}

/** The IpvsProxier configuration for one family (shared with `svcplane diff/explain`). */
export function ipvsConfigFor(opts: ProxyOptions, family: IPFamily): IpvsProxierConfig {
  return {
    family,
    nodeName: opts.hostnameOverride,
    ...(opts.bindAddress !== undefined ? { bindAddress: opts.bindAddress } : {}),
    masqueradeBit: opts.masqueradeBit,
    masqueradeAll: opts.masqueradeAll,
    ...ipvsLocalDetector(opts, family),
    nodePortAddresses: opts.nodePortAddresses,
    scheduler: opts.ipvs.scheduler,
    schedulerFlags: resolveSchedulerFlags(opts.ipvs.scheduler, opts.ipvs.schedulerFlags),
    strictARP: opts.ipvs.strictARP,
    excludeCIDRs: opts.ipvs.excludeCIDRs,
    tcpTimeout: Math.round(opts.ipvs.tcpTimeoutMs / 1000),
    tcpFinTimeout: Math.round(opts.ipvs.tcpFinTimeoutMs / 1000),
    udpTimeout: Math.round(opts.ipvs.udpTimeoutMs / 1000),
    iptablesBinaries: iptablesBinaries(opts.iptablesBinary, family),
  };
}
