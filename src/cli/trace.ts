import { KUBE_SERVICES } from '../iptables/names.js';
import { InvalidArgumentError, type Command } from 'commander';
import { buildFrontendIndex } from '../debug/frontends.js';
import { formatTraceText, traceJson } from '../debug/trace-format.js';
import { tracePacket, type NodeView, type TracePacket, type TraceProtocol } from '../debug/trace.js';
import { isRecentListName, parseRecentList } from '../debug/recent.js';
import { parseIP } from '../model/ip.js';
import type { ClusterState, IPFamily } from '../model/types.js';
import { run } from '../util/exec.js';
import { listAddresses } from '../kernel/netif.js';
import { loadState } from '../kube/open-source.js';
import { readTraceKernel } from '../modes/registry.js';
import { traceNftablesPacket } from '../debug/nft-trace.js';
import { exitTwoOnUsageError, outputOption, type OutputFormat } from './diff.js';
import { describeFailure } from './proxy.js';
import { resolveProxyOptions } from '../config/options.js';
import { formatTracedPolicies, tracePolicies, type TracedPolicy } from '../netpol/inspect.js';

/**
 * `svcplane trace`: one packet through the kernel's current rules (iptables-save; in IPVS mode also
 * `ipset save` and `ipvsadm -Sn`), no running svcplane needed. Works on rules written by svcplane or
 * by kube-proxy (same layout). With --manifests or --kubeconfig it also names the Service where the
 * kernel does not (IPVS mode).
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
  /** Default `nft`. */
  nftBinary?: string;
  netns?: string;
  manifests?: string;
  kubeconfig?: string;
  master?: string;
}

export function registerTraceCommand(program: Command): void {
  const cmd = program
    .command('trace')
    .description(
      "walk one packet through the kernel's current rules (iptables, IPVS or nftables mode's table)",
    )
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
    .option('--nft-binary <path>', 'nft command to use, e.g. .nft/bin/nft', 'nft')
    .option('--netns <name>', 'inspect the rules of this named network namespace (e.g. a sandbox node)')
    .option('--manifests <path>', 'name the Service from these manifests (IPVS rules carry no names)')
    .option('--kubeconfig <file>', 'name the Service from this cluster (IPVS rules carry no names)')
    .option('--master <url>', 'API server address (overrides the kubeconfig)');
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
    const wantsState = o.manifests !== undefined || o.kubeconfig !== undefined || o.master !== undefined;
    const state = wantsState
      ? await loadState(
          resolveProxyOptions({
            manifests: o.manifests,
            kubeconfig: o.kubeconfig,
            master: o.master,
            // Pods, namespaces and policies too: the policy verdict of the packet (src/netpol).
            networkPolicy: true,
          }),
        )
      : undefined;
    const result = await traceOnNode(o, family, state);
    const policy = state ? policyVerdicts(state, result) : [];
    out.write(
      o.output === 'json'
        ? `${JSON.stringify({ ...traceJson(result.packet, result.trace), ...(state ? { policy } : {}) }, null, 2)}\n`
        : formatTraceText(result.packet, result.trace) + formatTracedPolicies(policy),
    );
    return 0;
  } catch (e) {
    err.write(`svcplane trace: ${describeFailure(e)}\n`);
    return 2;
  }
}

/**
 * Reads the node (rules, addresses, default route, ipsets, IPVS table, affinity lists) and runs the
 * pure trace; `state` (optional) names the Service where no rule comment does.
 */
export async function traceOnNode(
  o: Omit<TraceOptions, 'output'>,
  family: IPFamily,
  state?: ClusterState,
): Promise<{ packet: TracePacket; trace: ReturnType<typeof tracePacket> }> {
  // Each mode adds what it reads of the kernel (src/modes/contract.ts traceKernel).
  const kernel = await readTraceKernel({
    family,
    netns: o.netns,
    iptablesBinary: o.iptablesBinary,
    nftBinary: o.nftBinary ?? 'nft',
  });
  const { ruleset } = kernel;
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
  const input = {
    ruleset,
    node,
    packet,
    ...(kernel.ipvs !== undefined ? { ipvs: kernel.ipvs } : {}),
    ...(kernel.ipsets !== undefined ? { ipsets: kernel.ipsets } : {}),
    ...(state !== undefined ? { frontends: buildFrontendIndex(state) } : {}),
  };
  // A node in nftables mode: the packet walks kube-proxy's nftables table (the iptables rules
  // carry none of the Services then).
  if (kernel.nftables !== undefined && !ruleset.tables.get('nat')?.chainsByName.has(KUBE_SERVICES)) {
    return { packet, trace: traceNftablesPacket(kernel.nftables, packet, node) };
  }
  let trace = tracePacket(input);
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
    if (recent.size > 0) trace = tracePacket({ ...input, recent });
  }
  return { packet, trace };
}

/** NetworkPolicy's verdict at each backend the trace ends at (or the destination itself without DNAT). */
function policyVerdicts(
  state: ClusterState,
  result: { packet: TracePacket; trace: ReturnType<typeof tracePacket> },
): TracedPolicy[] {
  if ((state.networkPolicies?.size ?? 0) === 0 && (state.pods?.size ?? 0) === 0) return [];
  const { packet, trace } = result;
  const destinations = trace.endpoints.flatMap((e) => {
    const m = /^\[?([^\]]+?)\]?:(\d+)$/.exec(e.endpoint);
    return m ? [{ ip: m[1]!, port: Number(m[2]) }] : [];
  });
  if (destinations.length === 0) destinations.push({ ip: packet.dst, port: packet.dport });
  const protocol = packet.proto === 'udp' ? 'UDP' : packet.proto === 'sctp' ? 'SCTP' : 'TCP';
  return tracePolicies(
    state,
    undefined,
    { src: packet.src, protocol, fromNode: packet.fromNode },
    destinations,
  );
}

/** The node's addresses of one family (plus loopback), its default route's interface and its bridges. */
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
  const links = await run(['ip', '-j', 'link', 'show', 'type', 'bridge'], { netns, allowFailure: true });
  let bridges: string[] | undefined;
  try {
    const list = JSON.parse(links.exitCode === 0 ? links.stdout || '[]' : 'null') as
      { ifname?: unknown }[] | null;
    bridges = list?.flatMap((l) => (typeof l.ifname === 'string' ? [l.ifname] : []));
  } catch {
    bridges = undefined;
  }
  return {
    addresses: addrs
      .filter((a) => a.family === family)
      .map((a) => ({ ip: a.ip, prefixLen: a.prefixLen, ifname: a.ifname })),
    ...(defaultInterface !== undefined ? { defaultInterface } : {}),
    ...(bridges !== undefined ? { bridges } : {}),
  };
}
