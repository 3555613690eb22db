import { cidrContains, joinHostPort, parseIP } from '../model/ip.js';
import type { IPFamily } from '../model/types.js';
import { exprText, type ListedRule, type ListedTable, type NftExpr } from './listing.js';
import { serviceOfName } from './names.js';

/**
 * `svcplane trace` for nftables mode (pure): one packet walked through the table as the kernel
 * lists it (`nft -j list table`), hook by hook in priority order: verdict maps (service-ips,
 * no-endpoint-*, firewall-ips), sets (cluster-ips, nodeport-ips), `fib … type local`, `numgen
 * random` (every branch is followed: the endpoints it can pick), affinity sets (a client already
 * in one sticks to its endpoint), marks (mark-for-masquerade / masquerading) and DNAT.
 */

export interface NftTracePacket {
  readonly family: IPFamily;
  readonly src: string;
  readonly dst: string;
  readonly proto: 'tcp' | 'udp' | 'sctp';
  readonly dport: number;
  /** Sent by the node itself (output hook) rather than arriving (prerouting). */
  readonly fromNode: boolean;
  readonly iifname?: string;
}

export interface NftTraceContext {
  /** The node's own addresses (`fib daddr type local`); loopback ones are always local. */
  readonly localAddresses: readonly string[];
}

export interface NftTraceEndpoint {
  readonly endpoint: string;
  readonly chain: string;
  /** Chosen by an affinity set the client is in, or one of the `numgen random` choices. */
  readonly via: 'affinity' | 'random' | 'only';
}

export interface NftTraceResult {
  readonly verdict: 'dnat' | 'drop' | 'reject' | 'untouched';
  readonly endpoints: readonly NftTraceEndpoint[];
  /** The packet leaves masqueraded (the mark was set, `masquerading` fires). */
  readonly masquerade: boolean;
  /** `namespace/name` of the Service whose chains handled it. */
  readonly service?: string;
  /** `chain: rule` lines of the first path, in order. */
  readonly steps: readonly string[];
}

interface PathState {
  dst: string;
  dport: number;
  mark: number;
  dnat?: { endpoint: string; chain: string };
  masqueraded: boolean;
  via: NftTraceEndpoint['via'];
  steps: string[];
  service?: string;
}

type Outcome = 'continue' | 'accept' | 'drop' | 'reject';

interface PathEnd {
  readonly state: PathState;
  readonly outcome: Outcome;
}

const MAX_DEPTH = 64;

export function traceNftables(
  table: ListedTable | undefined,
  pkt: NftTracePacket,
  ctx: NftTraceContext,
): NftTraceResult {
  const start: PathState = {
    dst: pkt.dst,
    dport: pkt.dport,
    mark: 0,
    masqueraded: false,
    via: 'only',
    steps: [],
  };
  if (table === undefined)
    return { verdict: 'untouched', endpoints: [], masquerade: false, steps: ['no kube-proxy table'] };
  const hooks = pkt.fromNode ? ['output'] : ['prerouting'];
  let paths: PathEnd[] = [{ state: start, outcome: 'continue' }];
  for (const hook of hooks) paths = runHook(table, hook, pkt, ctx, paths);
  // After routing: delivered locally (input) or forwarded (forward), then postrouting.
  paths = paths.flatMap((p) => {
    if (p.outcome !== 'continue') return [p];
    if (pkt.fromNode) return runHook(table, 'postrouting', pkt, ctx, [p]);
    const next = isLocal(p.state.dst, ctx) ? 'input' : 'forward';
    const after = runHook(table, next, pkt, ctx, [p]);
    return next === 'forward' ? runHook(table, 'postrouting', pkt, ctx, after) : after;
  });
  const first = paths[0]!;
  const dnats = paths.filter((p) => p.outcome === 'continue' && p.state.dnat !== undefined);
  const service = paths.map((p) => p.state.service).find((s) => s !== undefined);
  let verdict: NftTraceResult['verdict'] = 'untouched';
  if (dnats.length > 0) verdict = 'dnat';
  else if (first.outcome === 'drop' || first.outcome === 'reject') verdict = first.outcome;
  const seen = new Set<string>();
  const endpoints: NftTraceEndpoint[] = [];
  for (const p of dnats) {
    const d = p.state.dnat!;
    if (seen.has(d.endpoint)) continue;
    seen.add(d.endpoint);
    endpoints.push({ endpoint: d.endpoint, chain: d.chain, via: p.state.via });
  }
  return {
    verdict,
    endpoints,
    masquerade: (dnats[0] ?? first).state.masqueraded,
    ...(service !== undefined ? { service } : {}),
    steps: (dnats[0] ?? first).state.steps,
  };
}

function isLocal(ip: string, ctx: NftTraceContext): boolean {
  if (ip.startsWith('127.') || ip === '::1') return true;
  return ctx.localAddresses.includes(ip);
}

/** The base chains of a hook in priority order, each run on every path still going. */
function runHook(
  table: ListedTable,
  hook: string,
  pkt: NftTracePacket,
  ctx: NftTraceContext,
  paths: PathEnd[],
): PathEnd[] {
  const chains = [...table.chains.values()]
    .filter((c) => c.hook === hook)
    .sort((a, b) => (a.prio ?? 0) - (b.prio ?? 0));
  for (const chain of chains) {
    paths = paths.flatMap((p) => {
      if (p.outcome === 'drop' || p.outcome === 'reject') return [p];
      return runChain(table, chain.name, pkt, ctx, clone(p.state), 0).map((end) => ({
        state: end.state,
        // accept ends this base chain only: the next base chain still sees the packet.
        outcome: end.outcome === 'accept' ? 'continue' : end.outcome,
      }));
    });
  }
  return paths;
}

function clone(s: PathState): PathState {
  return { ...s, steps: [...s.steps] };
}

/** Runs a chain; `continue` = fell off its end or returned. Branches at `numgen` maps. */
function runChain(
  table: ListedTable,
  name: string,
  pkt: NftTracePacket,
  ctx: NftTraceContext,
  state: PathState,
  depth: number,
): PathEnd[] {
  const chain = table.chains.get(name);
  if (chain === undefined || depth > MAX_DEPTH) return [{ state, outcome: 'continue' }];
  state.service ??= serviceOfName(name);
  return runRules(table, chain.name, chain.rules, 0, pkt, ctx, state, depth);
}

function runRules(
  table: ListedTable,
  chainName: string,
  rules: readonly ListedRule[],
  from: number,
  pkt: NftTracePacket,
  ctx: NftTraceContext,
  state: PathState,
  depth: number,
): PathEnd[] {
  for (let i = from; i < rules.length; i++) {
    const rule = rules[i]!;
    const r = runRule(table, chainName, rule, pkt, ctx, state, depth);
    if (r.kind === 'next') continue;
    if (r.kind === 'end') return [{ state, outcome: r.outcome }];
    if (r.kind === 'return') return [{ state, outcome: 'continue' }];
    // Verdict to a chain, maybe one per numgen branch.
    const out: PathEnd[] = [];
    for (const branch of r.branches) {
      const s = r.branches.length > 1 ? clone(state) : state;
      if (r.branches.length > 1) s.via = 'random';
      else if (branch.affinity) s.via = 'affinity';
      s.steps.push(`${chainName}: ${ruleText(rule)}`);
      const ends = runChain(table, branch.target, pkt, ctx, s, depth + 1);
      for (const end of ends) {
        if (branch.kind === 'goto' || end.outcome !== 'continue') out.push(end);
        else out.push(...runRules(table, chainName, rules, i + 1, pkt, ctx, end.state, depth));
      }
    }
    return out;
  }
  return [{ state, outcome: 'continue' }];
}

type RuleResult =
  | { kind: 'next' }
  | { kind: 'end'; outcome: Outcome }
  | { kind: 'return' }
  | { kind: 'chain'; branches: { kind: 'jump' | 'goto'; target: string; affinity: boolean }[] };

function runRule(
  table: ListedTable,
  chainName: string,
  rule: ListedRule,
  pkt: NftTracePacket,
  ctx: NftTraceContext,
  state: PathState,
  depth: number,
): RuleResult {
  let affinity = false;
  for (const e of rule.expr) {
    const match = e.match as { op?: string; left?: unknown; right?: unknown } | undefined;
    if (match !== undefined) {
      const ok = matches(table, match.op ?? '==', value(match.left, pkt, ctx, state), match.right);
      if (!ok) return { kind: 'next' };
      if (typeof match.right === 'string' && match.right.startsWith('@affinity-')) affinity = true;
      continue;
    }
    const verdict = verdictOf(e);
    if (verdict !== undefined) {
      if (verdict.kind === 'accept' || verdict.kind === 'drop' || verdict.kind === 'reject') {
        state.steps.push(`${chainName}: ${ruleText(rule)}`);
        return { kind: 'end', outcome: verdict.kind };
      }
      if (!('target' in verdict)) return { kind: 'return' };
      return { kind: 'chain', branches: [{ kind: verdict.kind, target: verdict.target, affinity }] };
    }
    const vmap = e.vmap as { key?: unknown; data?: unknown } | undefined;
    if (vmap !== undefined) {
      const key = vmap.key as NftExpr | undefined;
      if (key !== undefined && 'numgen' in key) {
        const entries = ((vmap.data as { set?: unknown[] } | undefined)?.set ?? []) as [unknown, unknown][];
        const branches = entries
          .map(([, v]) => verdictOf(v as NftExpr))
          .filter(
            (v): v is { kind: 'jump' | 'goto'; target: string } => v?.kind === 'jump' || v?.kind === 'goto',
          )
          .map((v) => ({ ...v, affinity: false }));
        return branches.length === 0 ? { kind: 'next' } : { kind: 'chain', branches };
      }
      const k = value(vmap.key, pkt, ctx, state);
      const found = lookupVerdict(table, vmap.data, k);
      if (found === undefined) return { kind: 'next' };
      state.steps.push(`${chainName}: ${ruleText(rule)} → ${found}`);
      const v = parseVerdict(found);
      if (v === undefined) return { kind: 'next' };
      if (v.kind === 'accept' || v.kind === 'drop' || v.kind === 'reject')
        return { kind: 'end', outcome: v.kind };
      if (!('target' in v)) return { kind: 'return' };
      // The step was recorded already; runRules records it again for chain verdicts: drop one.
      state.steps.pop();
      return { kind: 'chain', branches: [{ kind: v.kind, target: v.target, affinity: false }] };
    }
    const mangle = e.mangle as { key?: NftExpr; value?: Record<string, [unknown, number]> } | undefined;
    if (mangle !== undefined) {
      const op = Object.keys(mangle.value ?? {})[0];
      const operand = op !== undefined ? Number(mangle.value![op]![1]) : 0;
      if (op === '|') state.mark |= operand;
      else if (op === '^') state.mark ^= operand;
      else if (op === '&') state.mark &= operand;
      continue;
    }
    const dnat = e.dnat as { addr?: string; port?: number } | undefined;
    if (dnat !== undefined && typeof dnat.addr === 'string') {
      const port = typeof dnat.port === 'number' ? dnat.port : state.dport;
      state.dnat = { endpoint: joinHostPort(dnat.addr, port), chain: chainName };
      state.dst = dnat.addr;
      state.dport = port;
      state.steps.push(`${chainName}: ${ruleText(rule)}`);
      return { kind: 'end', outcome: 'accept' };
    }
    if ('masquerade' in e) {
      state.masqueraded = true;
      state.steps.push(`${chainName}: ${ruleText(rule)}`);
      return { kind: 'end', outcome: 'accept' };
    }
    // counter, set update (affinity recorded), log …: no effect on the walk.
  }
  if (depth > MAX_DEPTH) return { kind: 'next' };
  return { kind: 'next' };
}

function verdictOf(
  e: NftExpr,
): { kind: 'accept' | 'drop' | 'reject' | 'return' } | { kind: 'jump' | 'goto'; target: string } | undefined {
  for (const kind of ['jump', 'goto'] as const) {
    const t = (e[kind] as { target?: unknown } | undefined)?.target;
    if (typeof t === 'string') return { kind, target: t };
  }
  for (const kind of ['accept', 'drop', 'reject', 'return'] as const) if (kind in e) return { kind };
  return undefined;
}

function parseVerdict(text: string): ReturnType<typeof verdictOf> {
  const [kind, target] = text.split(' ');
  if ((kind === 'jump' || kind === 'goto') && target) return { kind, target };
  if (kind === 'accept' || kind === 'drop' || kind === 'reject' || kind === 'return') return { kind };
  return undefined;
}

function lookupVerdict(table: ListedTable, data: unknown, key: string | undefined): string | undefined {
  if (key === undefined) return undefined;
  if (typeof data === 'string' && data.startsWith('@')) {
    const v = table.containers.get(data.slice(1))?.elements.get(key);
    // Stored values carry ` comment "…"` when the element has one.
    return v?.replace(/ comment ".*"$/, '');
  }
  const set = (data as { set?: unknown[] } | undefined)?.set;
  if (Array.isArray(set)) {
    for (const entry of set as [unknown, unknown][])
      if (exprText(entry[0]) === key) return exprText(entry[1]);
  }
  return undefined;
}

/** The packet's value for a match's left side, as text (undefined: not applicable). */
function value(
  left: unknown,
  pkt: NftTracePacket,
  ctx: NftTraceContext,
  state: PathState,
): string | undefined {
  const o = left as Record<string, unknown> | undefined;
  if (o === undefined || typeof o !== 'object') return undefined;
  if (Array.isArray(o.concat)) {
    const parts = o.concat.map((x) => value(x, pkt, ctx, state));
    return parts.some((p) => p === undefined) ? undefined : parts.join(' . ');
  }
  const payload = o.payload as { protocol?: string; field?: string } | undefined;
  if (payload !== undefined) {
    if (payload.field === 'saddr') return pkt.src;
    if (payload.field === 'daddr') return state.dst;
    if (payload.field === 'dport') {
      if (payload.protocol !== 'th' && payload.protocol !== pkt.proto) return undefined;
      return String(state.dport);
    }
    return undefined;
  }
  const meta = o.meta as { key?: string } | undefined;
  if (meta !== undefined) {
    if (meta.key === 'l4proto') return pkt.proto;
    if (meta.key === 'iifname') return pkt.fromNode ? '' : (pkt.iifname ?? '');
    if (meta.key === 'mark') return String(state.mark);
    return undefined;
  }
  const and = o['&'] as [unknown, unknown] | undefined;
  if (Array.isArray(and)) return String(Number(value(and[0], pkt, ctx, state) ?? 0) & Number(and[1]));
  const fib = o.fib as { result?: string; flags?: string[] } | undefined;
  if (fib !== undefined && fib.result === 'type') {
    const addr = fib.flags?.includes('saddr') ? pkt.src : state.dst;
    return isLocal(addr, ctx) ? 'local' : 'unicast';
  }
  const ct = o.ct as { key?: string } | undefined;
  if (ct?.key === 'state') return 'new';
  return undefined;
}

function matches(table: ListedTable, op: string, have: string | undefined, right: unknown): boolean {
  if (have === undefined) return false;
  const hit = (r: unknown): boolean => {
    if (typeof r === 'string' && r.startsWith('@'))
      return table.containers.get(r.slice(1))?.elements.has(have) ?? false;
    if (Array.isArray(r)) return r.some(hit);
    const o = r as Record<string, unknown> | null;
    if (o !== null && typeof o === 'object') {
      if (Array.isArray(o.set)) return o.set.some(hit);
      const prefix = o.prefix as { addr?: string; len?: number } | undefined;
      if (prefix !== undefined)
        return parseIP(have) !== undefined && cidrContains(`${prefix.addr}/${prefix.len}`, have);
      if (Array.isArray(o.range)) {
        const [lo, hi] = o.range as [unknown, unknown];
        return Number(have) >= Number(lo) && Number(have) <= Number(hi);
      }
    }
    const text = exprText(r);
    if (text.endsWith('*')) return have.startsWith(text.slice(0, -1));
    return text === have;
  };
  const result = hit(right);
  return op === '!=' ? !result : result;
}

/** A compact text of a rule for the trace's steps. */
function ruleText(rule: ListedRule): string {
  const parts = rule.expr.map((e) => {
    const m = e.match as { op?: string; left?: unknown; right?: unknown } | undefined;
    if (m !== undefined)
      return `${leftText(m.left)} ${m.op === '==' ? '' : `${m.op} `}${exprText(m.right)}`.replace(
        / {2}/g,
        ' ',
      );
    const v = e.vmap as { key?: unknown; data?: unknown } | undefined;
    if (v !== undefined) return `${leftText(v.key)} vmap ${typeof v.data === 'string' ? v.data : '{ … }'}`;
    if (e.dnat !== undefined) {
      const d = e.dnat as { addr?: string; port?: number };
      return `dnat to ${joinHostPort(d.addr ?? '?', d.port ?? 0)}`;
    }
    if (e.mangle !== undefined) return 'mark set …';
    return exprText(e);
  });
  return parts.join(' ') + (rule.comment ? ` comment "${rule.comment}"` : '');
}

function leftText(left: unknown): string {
  const o = left as Record<string, unknown> | undefined;
  if (o === undefined || typeof o !== 'object') return String(left);
  if (Array.isArray(o.concat)) return o.concat.map(leftText).join(' . ');
  const p = o.payload as { protocol?: string; field?: string } | undefined;
  if (p) return `${p.protocol} ${p.field}`;
  const m = o.meta as { key?: string } | undefined;
  if (m) return `meta ${m.key}`;
  const f = o.fib as { flags?: string[] } | undefined;
  if (f) return `fib ${(f.flags ?? []).join(' ')} type`;
  if (o.ct) return 'ct state';
  if (o.numgen) return 'numgen random';
  if (Array.isArray(o['&']))
    return `${leftText((o['&'] as unknown[])[0])} and ${String((o['&'] as unknown[])[1])}`;
  return JSON.stringify(left);
}
