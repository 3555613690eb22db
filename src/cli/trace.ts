import { InvalidArgumentError, type Command } from 'commander';
import { formatTraceText, traceJson } from '../debug/trace-format.js';
import { tracePacket, type NodeView, type TracePacket, type TraceProtocol } from '../debug/trace.js';
import { isRecentListName, parseRecentList } from '../debug/recent.js';
import { traceIpvs, withIpvs } from '../debug/ipvs-trace.js';
import { parseIpvsadmSave, type IpvsTable } from '../ipvs/ipvsadm.js';
import { parseIP } from '../model/ip.js';
import type { IPFamily } from '../model/types.js';
import { run } from '../util/exec.js';
import { listAddresses } from '../util/netif.js';
import { describe, exitTwoOnUsageError, outputOption, readKernelRules, type OutputFormat } from './diff.js';

/**
 * `svcplane trace`: one packet through the kernel's current rules (iptables-save), no running
 * svcplane needed. Works on rules written by svcplane or by kube-proxy (same layout).
 */

function ipOption(v: string): string {
  const p = parseIP(v);
  if (!p) throw new InvalidArgumentError(`"${v}" is not an IP address`);
  return p.ip;
}

function portOption(v: string): number {
  const n = Number(v);
  if (!/^\d+$/.test(v) || n < 1 || n > 65535) throw new InvalidArgumentError('expected a port 1-65535');
  return n;
}

function protoOption(v: string): TraceProtocol {
  const p = v.toLowerCase();
  if (p !== 'tcp' && p !== 'udp' && p !== 'sctp') throw new InvalidArgumentError('expected tcp, udp or sctp');
  return p;
}

function ifOption(v: string): string {
  if (!/^[A-Za-z0-9_.-]{1,15}$/.test(v)) throw new InvalidArgumentError(`"${v}" is not an interface name`);
  return v;
}

interface TraceOptions {
  src: string;
  dst: string;
  dport: number;
  proto: TraceProtocol;
  sport?: number;
  inInterface?: string;
  fromNode?: boolean;
  output: OutputFormat;
  iptablesBinary: string;
  netns?: string;
}

export function registerTraceCommand(program: Command): void {
  const cmd = program
    .command('trace')
    .description("walk one packet through the kernel's current iptables rules (nat, filter, masquerade)")
    .requiredOption('--src <ip>', 'source address of the packet', ipOption)
    .requiredOption('--dst <ip>', 'destination address (a ClusterIP, node IP, external or LB IP)', ipOption)
    .requiredOption('--dport <port>', 'destination port', portOption)
    .option('--proto <proto>', 'tcp, udp or sctp', protoOption, 'tcp')
    .option('--sport <port>', 'source port (only matters to rules matching --sport)', portOption)
    .option(
      '--in-interface <if>',
      'interface the packet arrives on (default: from the node subnets)',
      ifOption,
    )
    .option('--from-node', 'the node itself sends the packet (nat OUTPUT); implied when --src is local')
    .option('--output <format>', 'text or json', outputOption, 'text')
    .option('--iptables-binary <name>', 'iptables command to use, e.g. iptables-legacy', 'iptables')
    .option('--netns <name>', 'inspect the rules of this named network namespace (e.g. a sandbox node)');
  exitTwoOnUsageError(cmd).action(async (o: TraceOptions) => {
    process.exitCode = await runTrace(o, process.stdout, process.stderr);
  });
}

interface Writer {
  write(text: string): unknown;
}

export async function runTrace(o: TraceOptions, out: Writer, err: Writer): Promise<number> {
  try {
    const family: IPFamily = o.dst.includes(':') ? 'IPv6' : 'IPv4';
    if (o.src.includes(':') !== (family === 'IPv6'))
      throw new Error('--src and --dst must be of the same family');
    const result = await traceOnNode(o, family);
    out.write(
      o.output === 'json'
        ? `${JSON.stringify(traceJson(result.packet, result.trace), null, 2)}\n`
        : formatTraceText(result.packet, result.trace),
    );
    return 0;
  } catch (e) {
    err.write(`svcplane trace: ${describe(e)}\n`);
    return 2;
  }
}

/** Reads the node (rules, addresses, default route, affinity lists) and runs the pure trace. */
export async function traceOnNode(
  o: Omit<TraceOptions, 'output'>,
  family: IPFamily,
): Promise<{ packet: TracePacket; trace: ReturnType<typeof tracePacket> }> {
  const ruleset = await readKernelRules({ iptablesBinary: o.iptablesBinary }, family, o.netns);
  if (!ruleset) throw new Error(`${family} iptables-save is not available`);
  const node = await nodeView(family, o.netns);
  const local = node.addresses.some((a) => a.ip === o.src);
  const packet: TracePacket = {
    family,
    src: o.src,
    dst: o.dst,
    proto: o.proto,
    dport: o.dport,
    ...(o.sport !== undefined ? { sport: o.sport } : {}),
    ...(o.inInterface !== undefined ? { inInterface: o.inInterface } : {}),
    fromNode: o.fromNode === true || (local && o.inInterface === undefined),
  };
  let trace = tracePacket({ ruleset, node, packet });
  // Session affinity: read the xt_recent lists the walk met and trace again knowing them.
  if (trace.affinity.length > 0) {
    const recent = new Map<string, ReadonlySet<string>>();
    for (const a of trace.affinity) {
      if (!isRecentListName(a.list)) continue;
      const r = await run(['cat', `/proc/net/xt_recent/${a.list}`], {
        netns: o.netns,
        allowFailure: true,
      });
      if (r.exitCode === 0) recent.set(a.list, parseRecentList(r.stdout));
    }
    if (recent.size > 0) trace = tracePacket({ ruleset, node, packet, recent });
  }
  // IPVS mode: Service IPs are local (kube-ipvs0) and IPVS picks the backend.
  if (trace.verdict === 'local' || trace.verdict === 'untouched') {
    const ipvs = await readIpvsTable(o.netns);
    const hit = ipvs ? traceIpvs(ipvs, packet) : undefined;
    if (hit) trace = withIpvs(trace, hit);
  }
  return { packet, trace };
}

/** `ipvsadm -Sn`, parsed; undefined when ipvsadm or IPVS is not available. */
async function readIpvsTable(netns: string | undefined): Promise<IpvsTable | undefined> {
  try {
    const r = await run(['ipvsadm', '-Sn'], { netns, allowFailure: true });
    return r.exitCode === 0 ? parseIpvsadmSave(r.stdout) : undefined;
  } catch {
    return undefined; // not installed
  }
}

/** The node's addresses of one family (plus loopback) and its default route's interface. */
export async function nodeView(family: IPFamily, netns: string | undefined): Promise<NodeView> {
  const addrs = await listAddresses({ netns });
  const r = await run(['ip', ...(family === 'IPv6' ? ['-6'] : ['-4']), '-j', 'route', 'show', 'default'], {
    netns,
    allowFailure: true,
  });
  let defaultInterface: string | undefined;
  try {
    const routes = JSON.parse(r.stdout || '[]') as { dev?: unknown }[];
    const dev = routes.find((x) => typeof x.dev === 'string')?.dev;
    if (typeof dev === 'string') defaultInterface = dev;
  } catch {
    defaultInterface = undefined;
  }
  return {
    addresses: addrs
      .filter((a) => a.family === family)
      .map((a) => ({ ip: a.ip, prefixLen: a.prefixLen, ifname: a.ifname })),
    ...(defaultInterface !== undefined ? { defaultInterface } : {}),
  };
}
