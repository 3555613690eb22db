import assert from 'node:assert/strict';
import { traceOnNode } from '../../src/cli/trace.js';
import type { TraceResult } from '../../src/debug/trace.js';
import { joinHostPort } from '../../src/model/ip.js';
import type { IPFamily } from '../../src/model/types.js';
import { peerIP, type RequestSpec } from '../../src/netns/protocol.js';
import type { Sandbox, Where } from '../../src/netns/sandbox.js';

/**
 * `svcplane trace` checked against real traffic: the trace of a packet (read from the node's kernel
 * rules, as the CLI reads them) must say what real requests then do. dnat: every answer comes from a
 * predicted endpoint, every predicted endpoint answers (within `max` requests), and the backend sees
 * the node's bridge address when masquerade is predicted, else the client; reject: refused; drop:
 * timed out; untouched: no pod answers.
 */

export interface TraceCheck {
  /** The client's source address (default: the address of `from` in the packet's family). */
  readonly sourceIP?: string;
  /** Requests at most, to see every predicted endpoint (default 30). */
  readonly max?: number;
  /** Request timeout when no answer is expected (default 800 ms). */
  readonly noAnswerMs?: number;
}

const familyOf = (ip: string): IPFamily => (ip.includes(':') ? 'IPv6' : 'IPv4');

function sourceOf(sb: Sandbox, from: Where, family: IPFamily, dst: string): string {
  if (from === 'node') {
    if (dst.startsWith('127.')) return '127.0.0.1';
    return family === 'IPv4' ? sb.nodeIPv4 : sb.nodeIPv6;
  }
  if (from === 'outside') return family === 'IPv4' ? sb.outsideIPv4 : sb.outsideIPv6;
  return sb.podIP(from, family);
}

/** Traces `req` from `from` on the sandbox node, checks real requests agree, returns the trace. */
export async function traceAgrees(
  sb: Sandbox,
  from: Where,
  req: RequestSpec,
  opts: TraceCheck = {},
): Promise<TraceResult> {
  const family = familyOf(req.ip);
  const src = opts.sourceIP ?? sourceOf(sb, from, family, req.ip);
  const { trace } = await traceOnNode(
    {
      src,
      dst: req.ip,
      dport: req.port,
      proto: req.proto,
      iptablesBinary: 'iptables',
      netns: sb.nodeNs,
      ...(from === 'node' ? { fromNode: true } : {}),
    },
    family,
  );
  assert.deepEqual(trace.unsupported, [], 'every match was evaluated');
  const what = `trace ${req.proto} ${src} → ${joinHostPort(req.ip, req.port)} (${trace.verdict})`;
  const send = (timeoutMs?: number) =>
    sb.request(from, {
      ...req,
      ...(opts.sourceIP ? { sourceIP: opts.sourceIP } : {}),
      ...(timeoutMs !== undefined ? { timeoutMs } : {}),
    });

  if (trace.verdict !== 'dnat') {
    const r = await send(opts.noAnswerMs ?? 800);
    if (trace.verdict === 'reject')
      assert.equal(r.ok ? `answered by ${r.reply.pod}` : r.error, 'refused', what);
    else if (trace.verdict === 'drop')
      assert.equal(r.ok ? `answered by ${r.reply.pod}` : r.error, 'timeout', what);
    else assert.equal(r.ok ? `answered by ${r.reply.pod}` : 'no pod answered', 'no pod answered', what);
    return trace;
  }
  const masq = family === 'IPv4' ? sb.gatewayIPv4 : sb.gatewayIPv6;
  const predicted = new Map(trace.endpoints.map((e) => [e.endpoint, e]));
  assert.ok(predicted.size > 0, `${what}: endpoints predicted`);
  const seen = new Set<string>();
  for (let i = 0; i < (opts.max ?? 30) && seen.size < predicted.size; i++) {
    const r = await send();
    if (!r.ok) assert.fail(`${what}: request ${i + 1} ${r.error} ${r.detail}`);
    const at = joinHostPort(r.reply.ip, r.reply.port);
    const e = predicted.get(at);
    assert.ok(e, `${what}: ${at} answered, predicted ${[...predicted.keys()].join(', ')}`);
    assert.equal(
      peerIP(r.reply.peer),
      e.masquerade ? masq : src,
      `${what}: masquerade ${e.masquerade} predicted for ${at}`,
    );
    seen.add(at);
  }
  assert.deepEqual(
    [...seen].sort(),
    [...predicted.keys()].sort(),
    `${what}: every predicted endpoint answers`,
  );
  return trace;
}
