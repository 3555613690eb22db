import { cidrContains, joinHostPort, parseCIDR } from '../model/ip.js';
import type { IPFamily } from '../model/types.js';
import { ruleComment, type SavedRule, type SavedRuleset, type SavedTable } from '../iptables/save-parse.js';
import type { IpvsTable } from '../ipvs/ipvsadm.js';
import { splitIPPort } from '../ipvs/types.js';
import { serviceForDestination, type FrontendIndex } from './frontends.js';
import type { IpsetView } from '../ipvs/ipset.js';
import { matchSet, parseSetFlags } from './ipset-match.js';
import { traceIpvs, type IpvsTraceResult } from './ipvs-trace.js';
import { servicePortNameFromComment } from '../iptables-rules/owners.js';
import {
  normalizeAddress,
  optionOf,
  parseRuleSpec,
  quantizeProbability,
  type RuleSpec,
  type SpecOption,
} from '../iptables-rules/rule-spec.js';

/**
 * `svcplane trace`, the pure engine: walks one new connection's first packet through parsed
 * iptables-save output the way netfilter would (nat PREROUTING or OUTPUT, routing, filter INPUT /
 * FORWARD / OUTPUT, nat POSTROUTING), evaluating the matches kube-proxy and svcplane use. A
 * `statistic` match splits the walk into branches with their probabilities, so the result lists every
 * endpoint the packet may reach. A match it cannot evaluate is reported ("unsupported match X") and
 * treated as not matching, never guessed silently.
 *
 * IPVS mode: given the kernel's ipsets, `-m set` rules are evaluated like xt_set does; given the
 * IPVS table, a packet to a local address with a virtual server is scheduled where IPVS hooks in
 * (LOCAL_IN after filter INPUT for arriving packets, LOCAL_OUT after nat OUTPUT for the node's own),
 * then goes on through filter OUTPUT and nat POSTROUTING with the real server as its destination, so
 * the verdict and the masquerade decision come from the same walk as in iptables mode.
 */

export type TraceProtocol = 'tcp' | 'udp' | 'sctp';
export type TraceVerdict = 'dnat' | 'reject' | 'drop' | 'local' | 'untouched';

export interface TracePacket {
  readonly family: IPFamily;
  /** Canonical IPs. */
  readonly src: string;
  readonly dst: string;
  readonly proto: TraceProtocol;
  readonly dport: number;
  /** Source port; matters only to rules matching `--sport` (default: an ephemeral port). */
  readonly sport?: number;
  /** The interface the packet arrives on (PREROUTING); inferred from the node's subnets when absent. */
  readonly inInterface?: string;
  /** Sent by the node itself: starts in nat OUTPUT instead of nat PREROUTING. */
  readonly fromNode: boolean;
}

export interface NodeAddress {
  readonly ip: string;
  readonly prefixLen: number;
  readonly ifname: string;
}

/** What the trace needs to know about the node besides its rules. */
export interface NodeView {
  readonly addresses: readonly NodeAddress[];
  /** The interface of the default route of this family, if any. */
  readonly defaultInterface?: string;
  /** The node's bridges (`-m physdev --physdev-is-in`: arrived through a bridge port); unknown when absent. */
  readonly bridges?: readonly string[];
}

export interface TraceInput {
  readonly ruleset: SavedRuleset;
  readonly node: NodeView;
  readonly packet: TracePacket;
  /** xt_recent lists (`/proc/net/xt_recent/<name>`): list name → source IPs in it. */
  readonly recent?: ReadonlyMap<string, ReadonlySet<string>>;
  /** The kernel's ipsets (`ipset save`), for `-m set` matches. */
  readonly ipsets?: IpsetView;
  /** The kernel's IPVS table (`ipvsadm -Sn`): IPVS mode. */
  readonly ipvs?: IpvsTable;
  /** Service frontends from the cluster state, to name the Service when no rule comment does. */
  readonly frontends?: FrontendIndex;
}

export interface TraceStep {
  readonly table: string;
  readonly chain: string;
  /** 1-based position of the rule in its chain; absent for a policy or a note. */
  readonly rule?: number;
  /** The rule as iptables-save wrote it (or a description). */
  readonly text: string;
  /** What happened: `jump KUBE-SVC-…`, `DNAT to 10.244.0.3:9376`, `policy ACCEPT`, … */
  readonly action: string;
  /** The rule's `-m comment` text. */
  readonly comment?: string;
  /** Set on a `statistic` rule: the chance this branch took it. */
  readonly probability?: number;
  readonly packets?: number;
}

export interface AffinityInfo {
  /** xt_recent list (named after the endpoint's KUBE-SEP chain). */
  readonly list: string;
  readonly seconds?: number;
  /** The client has an entry in the list (only known when the lists were read). */
  readonly clientListed?: boolean;
}

export interface TraceBranch {
  readonly probability: number;
  readonly verdict: TraceVerdict;
  /** `ip:port` / `[ip]:port` after DNAT. */
  readonly endpoint?: string;
  readonly masquerade: boolean;
  readonly masqueradeReason: string;
  readonly steps: readonly TraceStep[];
}

export interface TraceResult {
  readonly verdict: TraceVerdict;
  readonly endpoints: readonly { endpoint: string; probability: number; masquerade: boolean }[];
  /** True when the packet is masqueraded on any branch (see each endpoint for the detail). */
  readonly masquerade: boolean;
  readonly masqueradeReason: string;
  /** ServicePortName from the rules' comments (`namespace/name` or `namespace/name:port`). */
  readonly service?: string;
  /** The steps every branch shares (up to the first random split). */
  readonly path: readonly TraceStep[];
  readonly branches: readonly TraceBranch[];
  readonly affinity: readonly AffinityInfo[];
  /** Matches/targets that could not be evaluated (treated as not matching / as no-ops). */
  readonly unsupported: readonly string[];
  readonly notes: readonly string[];
  /** The interface the packet arrives on (given or inferred); absent for traffic from the node. */
  readonly inInterface?: string;
  /** IPVS mode: the virtual server that took the packet (see ./ipvs-trace.ts). */
  readonly ipvs?: IpvsTraceResult;
}

/** The state of one branch of the walk. Immutable: every change makes a copy. */
interface Branch {
  readonly prob: number;
  readonly dst: string;
  readonly dport: number;
  readonly mark: number;
  readonly dnat: boolean;
  readonly masq?: string;
  readonly markedBy?: string;
  readonly steps: readonly TraceStep[];
  readonly unsupported: readonly string[];
  readonly affinity: readonly AffinityInfo[];
  /** Set once IPVS translated the packet (what `-m ipvs` matches on). */
  readonly ipvs?: { readonly vaddr: string; readonly vport: number };
}

type Exit = 'continue' | 'ACCEPT' | 'DROP' | 'REJECT';
interface Outcome {
  readonly b: Branch;
  readonly exit: Exit;
}

interface Final {
  readonly b: Branch;
  readonly verdict: TraceVerdict;
  readonly postrouted: boolean;
}

const isFinal = (o: Outcome): boolean => o.exit === 'DROP' || o.exit === 'REJECT';
const finalVerdict = (o: Outcome): TraceVerdict => (o.exit === 'DROP' ? 'drop' : 'reject');

interface Hook {
  readonly table: 'nat' | 'filter';
  readonly chain: string;
  readonly inInterface?: string;
  readonly outInterface?: string;
}

const EPHEMERAL_PORT = 40000;
const PROTOCOL_NAMES: Readonly<Record<string, string>> = { '6': 'tcp', '17': 'udp', '132': 'sctp' };
const MAX_DEPTH = 64;
const MAX_BRANCHES = 4096;
/** kube-proxy's dummy interface: its addresses are Service IPs, not node addresses (NodePorts). */
const IPVS_DEVICE = 'kube-ipvs0';
const NON_TERMINATING = new Set(['LOG', 'NFLOG', 'ULOG', 'TRACE', 'AUDIT', 'NOTRACK', 'CT']);

export function tracePacket(input: TraceInput): TraceResult {
  const t = new Tracer(input);
  return t.run();
}

class Tracer {
  private readonly specs = new WeakMap<SavedRule, RuleSpec>();
  private readonly pkt: TracePacket;
  private readonly inIf: string | undefined;
  private readonly notes: string[] = [];
  private branchCount = 0;
  /** The IPVS virtual server the packet met, if any. */
  private ipvsHit: IpvsTraceResult | undefined;

  constructor(private readonly input: TraceInput) {
    this.pkt = input.packet;
    this.inIf = this.pkt.fromNode ? undefined : (this.pkt.inInterface ?? this.interfaceFor(this.pkt.src));
    if (!this.pkt.fromNode && this.pkt.inInterface === undefined) {
      this.notes.push(
        this.inIf
          ? `in-interface ${this.inIf} inferred from the node's subnets`
          : 'in-interface unknown (no node subnet holds the source; pass --in-interface)',
      );
    }
  }

  run(): TraceResult {
    const start: Branch = {
      prob: 1,
      dst: this.pkt.dst,
      dport: this.pkt.dport,
      mark: 0,
      dnat: false,
      steps: [],
      unsupported: [],
      affinity: [],
    };
    const finals: Final[] = [];
    const first: Hook = this.pkt.fromNode
      ? { table: 'nat', chain: 'OUTPUT', outInterface: this.interfaceFor(this.pkt.dst) }
      : { table: 'nat', chain: 'PREROUTING', ...(this.inIf ? { inInterface: this.inIf } : {}) };
    for (const o of this.hook(first, start)) {
      if (o.exit === 'DROP' || o.exit === 'REJECT') {
        finals.push({ b: o.b, verdict: o.exit === 'DROP' ? 'drop' : 'reject', postrouted: false });
      } else if (this.pkt.fromNode) {
        this.fromNode(o.b, finals);
      } else {
        this.arriving(o.b, finals);
      }
    }
    return this.summarize(finals);
  }

  /** The node's own packet after nat OUTPUT: IPVS (LOCAL_OUT), filter OUTPUT, nat POSTROUTING, loopback. */
  private fromNode(b0: Branch, finals: Final[]): void {
    const scheduled = this.isLocal(b0.dst) ? this.ipvsStage(b0, 'LOCAL_OUT') : undefined;
    if (scheduled?.rejected) {
      finals.push({ b: scheduled.rejected, verdict: 'reject', postrouted: false });
      return;
    }
    for (const b of scheduled?.branches ?? [b0]) {
      const local = this.isLocal(b.dst);
      const outIf = local ? 'lo' : this.interfaceFor(b.dst);
      for (const f of this.hook(
        { table: 'filter', chain: 'OUTPUT', ...(outIf ? { outInterface: outIf } : {}) },
        b,
      )) {
        if (isFinal(f)) {
          finals.push({ b: f.b, verdict: finalVerdict(f), postrouted: false });
          continue;
        }
        for (const p of this.postrouting(f.b, outIf)) {
          if (isFinal(p)) {
            finals.push({ b: p.b, verdict: finalVerdict(p), postrouted: true });
          } else if (local) {
            // Locally generated traffic to a local address loops back through filter INPUT.
            const inp = this.hook({ table: 'filter', chain: 'INPUT', inInterface: 'lo' }, p.b);
            for (const q of inp) finals.push({ b: q.b, verdict: verdictOf(q, true), postrouted: true });
          } else {
            finals.push({ b: p.b, verdict: verdictOf(p, false), postrouted: true });
          }
        }
      }
    }
  }

  /** An arriving packet after nat PREROUTING: routed to the node (filter INPUT, IPVS) or forwarded. */
  private arriving(b: Branch, finals: Final[]): void {
    const local = this.isLocal(b.dst);
    const inIf = this.inIf ? { inInterface: this.inIf } : {};
    if (local) {
      for (const f of this.hook({ table: 'filter', chain: 'INPUT', ...inIf }, b)) {
        if (isFinal(f)) {
          finals.push({ b: f.b, verdict: finalVerdict(f), postrouted: false });
          continue;
        }
        const scheduled = this.ipvsStage(f.b, 'LOCAL_IN');
        if (!scheduled) {
          // Packets delivered to the node itself never reach POSTROUTING.
          finals.push({ b: f.b, verdict: verdictOf(f, true), postrouted: false });
        } else if (scheduled.rejected) {
          finals.push({ b: scheduled.rejected, verdict: 'reject', postrouted: false });
        } else {
          for (const s of scheduled.branches) this.afterIpvs(s, finals);
        }
      }
      return;
    }
    const outIf = this.interfaceFor(b.dst);
    const fwd: Hook = {
      table: 'filter',
      chain: 'FORWARD',
      ...inIf,
      ...(outIf ? { outInterface: outIf } : {}),
    };
    for (const f of this.hook(fwd, b)) {
      if (isFinal(f)) {
        finals.push({ b: f.b, verdict: finalVerdict(f), postrouted: false });
        continue;
      }
      for (const p of this.postrouting(f.b, outIf)) {
        finals.push({
          b: p.b,
          verdict: isFinal(p) ? finalVerdict(p) : verdictOf(p, false),
          postrouted: true,
        });
      }
    }
  }

  /** IPVS sends the translated packet out through LOCAL_OUT (filter OUTPUT) and POSTROUTING. */
  private afterIpvs(b: Branch, finals: Final[]): void {
    if (this.isLocal(b.dst)) {
      // A real server on the node itself: delivered in LOCAL_IN, nothing more traversed.
      finals.push({ b, verdict: 'dnat', postrouted: false });
      return;
    }
    const outIf = this.interfaceFor(b.dst);
    for (const f of this.hook(
      { table: 'filter', chain: 'OUTPUT', ...(outIf ? { outInterface: outIf } : {}) },
      b,
    )) {
      if (isFinal(f)) {
        finals.push({ b: f.b, verdict: finalVerdict(f), postrouted: false });
        continue;
      }
      for (const p of this.postrouting(f.b, outIf)) {
        finals.push({ b: p.b, verdict: isFinal(p) ? finalVerdict(p) : 'dnat', postrouted: true });
      }
    }
  }

  private postrouting(b: Branch, outIf: string | undefined): Outcome[] {
    return this.hook(
      {
        table: 'nat',
        chain: 'POSTROUTING',
        ...(this.inIf ? { inInterface: this.inIf } : {}),
        ...(outIf ? { outInterface: outIf } : {}),
      },
      b,
    );
  }

  /**
   * IPVS: a virtual server for the packet's destination schedules it to a real server (a branch per
   * real server, by weight share); one without a usable real server makes IPVS answer ICMP port
   * unreachable. undefined: no virtual server (or no IPVS table), the packet goes on untranslated.
   */
  private ipvsStage(
    b: Branch,
    hookName: 'LOCAL_IN' | 'LOCAL_OUT',
  ): { branches: Branch[]; rejected?: undefined } | { rejected: Branch; branches?: undefined } | undefined {
    const table = this.input.ipvs;
    if (!table || b.ipvs) return undefined;
    const hit = traceIpvs(table, { proto: this.pkt.proto, dst: b.dst, dport: b.dport });
    if (!hit) return undefined;
    this.ipvsHit ??= hit;
    const text = `-A ${hit.virtualServer} -s ${hit.scheduler}${hit.persistenceSeconds !== undefined ? ` -p ${hit.persistenceSeconds}` : ''}`;
    const base = { table: 'ipvs', chain: hookName, text };
    const usable = hit.reals.filter((r) => r.share > 0);
    if (usable.length === 0) {
      return {
        rejected: this.step(b, {
          ...base,
          action: 'no usable real server: IPVS answers ICMP port unreachable',
        }),
      };
    }
    const branches: Branch[] = [];
    for (const r of usable) {
      const hp = splitIPPort(r.endpoint);
      if (!hp) continue;
      const nb: Branch = {
        ...scale(b, r.share),
        dst: hp.address,
        dport: hp.port,
        dnat: true,
        ipvs: { vaddr: b.dst, vport: b.dport },
      };
      branches.push(
        this.step(nb, {
          ...base,
          action: `IPVS ${hit.scheduler} → ${r.endpoint} (weight ${r.weight})`,
          ...(usable.length > 1 ? { probability: r.share } : {}),
        }),
      );
    }
    return { branches };
  }

  // ---- one hook: a built-in chain and its policy ----

  private hook(h: Hook, b: Branch): Outcome[] {
    const table = this.input.ruleset.tables.get(h.table);
    if (!table) return [{ b, exit: 'ACCEPT' }];
    const outcomes = this.chain(table, h, h.chain, b, 0, undefined);
    const policy = (table.chainsByName.get(h.chain)?.policy ?? 'ACCEPT') as Exit;
    return outcomes.map((o) =>
      o.exit !== 'continue'
        ? o
        : {
            b: this.step(o.b, {
              table: h.table,
              chain: h.chain,
              text: `end of ${h.chain}`,
              action: `policy ${policy}`,
            }),
            exit: policy === 'DROP' ? 'DROP' : 'ACCEPT',
          },
    );
  }

  private chain(
    table: SavedTable,
    h: Hook,
    chain: string,
    b0: Branch,
    depth: number,
    caller: string | undefined,
  ): Outcome[] {
    if (depth > MAX_DEPTH) {
      return [
        { b: this.unsupported(b0, `jump depth over ${MAX_DEPTH} at ${chain} (a loop?)`), exit: 'DROP' },
      ];
    }
    const rules = table.rulesByChain.get(chain) ?? [];
    const walk = (from: number, b: Branch): Outcome[] => {
      for (let i = from; i < rules.length; i++) {
        const rule = rules[i] as SavedRule;
        const spec = this.spec(rule);
        const m = this.match(spec, b, h);
        b = m.b;
        if (m.p <= 0) continue;
        if (m.p < 1 && this.branchCount < MAX_BRANCHES) {
          this.branchCount++;
          const taken = this.apply(table, h, chain, i, rule, spec, scale(b, m.p), m.p, depth, caller, walk);
          const passed = walk(i + 1, scale(b, 1 - m.p));
          return [...taken, ...passed];
        }
        return this.apply(table, h, chain, i, rule, spec, b, undefined, depth, caller, walk);
      }
      return [{ b, exit: 'continue' }];
    };
    return walk(0, b0);
  }

  private apply(
    table: SavedTable,
    h: Hook,
    chain: string,
    i: number,
    rule: SavedRule,
    spec: RuleSpec,
    b: Branch,
    probability: number | undefined,
    depth: number,
    caller: string | undefined,
    walk: (from: number, b: Branch) => Outcome[],
  ): Outcome[] {
    const target = spec.target;
    const comment = ruleComment(rule);
    const base = {
      table: h.table,
      chain,
      rule: i + 1,
      text: rule.text,
      ...(comment !== undefined ? { comment } : {}),
      ...(probability !== undefined ? { probability } : {}),
      ...(rule.packets !== undefined ? { packets: rule.packets } : {}),
    };
    if (!target) return walk(i + 1, this.step(b, { ...base, action: 'match (no target), continue' }));
    const name = target.name;
    const opt = (n: string): SpecOption | undefined => target.options.find((o) => o.name === n);
    switch (name) {
      case 'ACCEPT':
      case 'DROP':
      case 'REJECT':
        return [{ b: this.step(b, { ...base, action: name }), exit: name }];
      case 'RETURN':
        return [{ b: this.step(b, { ...base, action: 'RETURN' }), exit: 'continue' }];
      case 'DNAT': {
        const to = opt('--to-destination')?.values[0];
        const parsed = to === undefined ? undefined : parseNatDestination(to);
        if (!parsed) {
          const nb = this.unsupported(b, `DNAT target ${to ?? '(no --to-destination)'}`);
          return [{ b: this.step(nb, { ...base, action: 'DNAT (unsupported form)' }), exit: 'ACCEPT' }];
        }
        const nb: Branch = { ...b, dst: parsed.ip, dport: parsed.port ?? b.dport, dnat: true };
        const ep = joinHostPort(nb.dst, nb.dport);
        return [{ b: this.step(nb, { ...base, action: `DNAT to ${ep}` }), exit: 'ACCEPT' }];
      }
      case 'MASQUERADE':
      case 'SNAT': {
        const nb: Branch = { ...b, masq: `${h.table} ${chain} rule ${i + 1}: ${rule.text}` };
        return [{ b: this.step(nb, { ...base, action: name }), exit: 'ACCEPT' }];
      }
      case 'MARK': {
        const mark = applyMark(b.mark, target.options);
        if (mark === undefined) {
          return walk(
            i + 1,
            this.unsupported(this.step(b, { ...base, action: 'MARK' }), 'MARK target options'),
          );
        }
        // KUBE-MARK-MASQ is reached by a jump: the jumping rule is the reason, not this one.
        const by = caller ?? `${h.table} ${chain} rule ${i + 1}: ${rule.text}`;
        const nb: Branch = {
          ...b,
          mark,
          ...((mark & ~b.mark) !== 0 ? { markedBy: by } : {}),
        };
        return walk(i + 1, this.step(nb, { ...base, action: `MARK → 0x${mark.toString(16)}` }));
      }
    }
    if (table.chainsByName.has(name) && !table.chainsByName.get(name)?.builtin) {
      const nb = this.step(b, { ...base, action: `${target.goto ? 'goto' : 'jump'} ${name}` });
      const sub = this.chain(
        table,
        h,
        name,
        nb,
        depth + 1,
        `${h.table} ${chain} rule ${i + 1}: ${rule.text}`,
      );
      return sub.flatMap((o) => {
        if (o.exit !== 'continue') return [o];
        // Say so when nothing in the chain matched (the common case for the filter chains).
        const ob =
          o.b.steps.length === nb.steps.length
            ? {
                ...o.b,
                steps: [
                  ...o.b.steps.slice(0, -1),
                  {
                    ...o.b.steps[o.b.steps.length - 1]!,
                    action: `${target.goto ? 'goto' : 'jump'} ${name}: nothing matched, back`,
                  },
                ],
              }
            : o.b;
        // A goto'd chain that falls through returns to this chain's caller.
        return target.goto ? [{ b: ob, exit: o.exit }] : walk(i + 1, ob);
      });
    }
    if (NON_TERMINATING.has(name)) return walk(i + 1, this.step(b, { ...base, action: `${name}, continue` }));
    return walk(
      i + 1,
      this.unsupported(
        this.step(b, { ...base, action: `${name} (not evaluated), continue` }),
        `target ${name}`,
      ),
    );
  }

  // ---- matches ----

  /** Probability that the rule matches (1, 0, or in between for `statistic`), with notes. */
  private match(spec: RuleSpec, b: Branch, h: Hook): { p: number; b: Branch } {
    const pkt = this.pkt;
    const no = { p: 0, b };
    for (const a of [spec.source, spec.destination]) {
      // A host name or range that did not normalize to a CIDR cannot be evaluated.
      if (a && !a.value.includes('/')) return { p: 0, b: this.unsupported(b, `address ${a.value}`) };
    }
    if (spec.source && !addrMatches(spec.source.value, pkt.src, spec.source.negated)) return no;
    if (spec.destination && !addrMatches(spec.destination.value, b.dst, spec.destination.negated)) return no;
    if (spec.protocol) {
      const is = spec.protocol.value === pkt.proto || spec.protocol.value === 'all';
      if (is === spec.protocol.negated) return no;
    }
    if (spec.inInterface && !ifaceMatches(spec.inInterface.value, h.inInterface, spec.inInterface.negated))
      return no;
    if (
      spec.outInterface &&
      !ifaceMatches(spec.outInterface.value, h.outInterface, spec.outInterface.negated)
    )
      return no;
    if (spec.fragment && !spec.fragment.negated) return no; // a first packet is never a later fragment
    if (spec.stray.length > 0) return { p: 0, b: this.unsupported(b, `arguments ${spec.stray.join(' ')}`) };
    let p = 1;
    for (const m of spec.matches) {
      const r = this.module(m.module, m.options, b, h);
      b = r.b;
      if (r.p <= 0) return { p: 0, b };
      p *= r.p;
    }
    return { p, b };
  }

  private module(
    module: string,
    options: readonly SpecOption[],
    b: Branch,
    h: Hook,
  ): { p: number; b: Branch } {
    const pkt = this.pkt;
    const yes = { p: 1, b };
    const no = { p: 0, b };
    const all = (f: (o: SpecOption) => boolean | undefined): { p: number; b: Branch } => {
      for (const o of options) {
        const r = f(o);
        if (r === undefined) return { p: 0, b: this.unsupported(b, `match ${module} ${o.name}`) };
        if (r === o.negated) return no;
      }
      return yes;
    };
    switch (module) {
      case 'comment':
      case 'nfacct':
        return yes;
      case 'tcp':
      case 'udp':
      case 'sctp':
        if (module !== pkt.proto) return no;
        return all((o) => {
          if (o.name === '--dport') return portIn(o.values[0], b.dport);
          if (o.name === '--sport') return portIn(o.values[0], pkt.sport ?? EPHEMERAL_PORT);
          if (o.name === '--syn') return true; // the first packet of a TCP connection
          if (o.name === '--tcp-flags') return tcpFlagsMatch(o.values[0], o.values[1]);
          return undefined;
        });
      case 'multiport':
        return all((o) => {
          const list = (o.values[0] ?? '').split(',');
          const sport = pkt.sport ?? EPHEMERAL_PORT;
          if (o.name === '--dports') return list.some((x) => portIn(x, b.dport));
          if (o.name === '--sports') return list.some((x) => portIn(x, sport));
          if (o.name === '--ports') return list.some((x) => portIn(x, b.dport) || portIn(x, sport));
          return undefined;
        });
      case 'addrtype':
        return all((o) => {
          const types = (o.values[0] ?? '').toUpperCase().split(',');
          if (types.some((t) => t !== 'LOCAL')) return undefined;
          if (o.name === '--dst-type') return this.isLocal(b.dst);
          if (o.name === '--src-type') return this.isLocal(pkt.src);
          return undefined;
        });
      case 'conntrack':
      case 'state':
        return all((o) => {
          if (o.name !== '--ctstate' && o.name !== '--state') return undefined;
          const states = (o.values[0] ?? '').toUpperCase().split(',');
          // A new connection; DNAT once a nat rule rewrote the destination.
          return states.includes('NEW') || (b.dnat && states.includes('DNAT'));
        });
      case 'mark':
        return all((o) => {
          if (o.name !== '--mark') return undefined;
          const mv = parseMarkValue(o.values[0] ?? '');
          return mv === undefined ? undefined : (b.mark & mv.mask) >>> 0 === mv.value;
        });
      case 'statistic': {
        const mode = optionOf({ options }, '--mode')?.values[0];
        const prob = optionOf({ options }, '--probability');
        if (mode !== 'random' || !prob)
          return { p: 0, b: this.unsupported(b, `match statistic --mode ${mode ?? '?'}`) };
        const q = quantizeProbability(prob.values[0] ?? '');
        if (q === undefined) return { p: 0, b: this.unsupported(b, 'match statistic --probability') };
        return { p: prob.negated ? 1 - q : q, b };
      }
      case 'recent':
        return this.recent(options, b);
      case 'set':
        return this.set(options, b);
      case 'physdev':
        return all((o) => {
          // A routed packet (what a trace follows) is never being bridged; a bridge port is known
          // only on the way in (br_netfilter, as kube-proxy requires).
          if (o.name === '--physdev-is-bridged') return false;
          if (o.name !== '--physdev-is-in' || !this.input.node.bridges) return undefined;
          return h.inInterface !== undefined && this.input.node.bridges.includes(h.inInterface);
        });
      case 'ipvs':
        return this.ipvsMatch(options, b);
      default:
        return { p: 0, b: this.unsupported(b, `match ${module}`) };
    }
  }

  /** xt_recent: `--set` always matches (and records); `--rcheck` matches only a listed client. */
  private recent(options: readonly SpecOption[], b: Branch): { p: number; b: Branch } {
    const name = optionOf({ options }, '--name')?.values[0] ?? 'DEFAULT';
    const secondsText = optionOf({ options }, '--seconds')?.values[0];
    const seconds = secondsText === undefined ? undefined : Number(secondsText);
    const known = this.input.recent;
    const listed = known?.get(name)?.has(this.pkt.src);
    const info: AffinityInfo = {
      list: name,
      ...(seconds !== undefined ? { seconds } : {}),
      ...(listed !== undefined ? { clientListed: listed } : {}),
    };
    const nb: Branch = b.affinity.some((a) => a.list === name)
      ? b
      : { ...b, affinity: [...b.affinity, info] };
    if (optionOf({ options }, '--set')) return { p: 1, b: nb };
    if (optionOf({ options }, '--rcheck') || optionOf({ options }, '--update')) {
      // Without the kernel's lists, assume a first-time client (no entry): the random split decides.
      const neg = (optionOf({ options }, '--rcheck') ?? optionOf({ options }, '--update'))?.negated ?? false;
      return { p: (listed === true) !== neg ? 1 : 0, b: nb };
    }
    return { p: 0, b: this.unsupported(nb, 'match recent (mode)') };
  }

  /** xt_set: every `--match-set NAME FLAGS` against the kernel's ipsets (see ./ipset-match.ts). */
  private set(options: readonly SpecOption[], b: Branch): { p: number; b: Branch } {
    const pkt = this.pkt;
    for (const o of options) {
      if (o.name === '--update-counters' || o.name === '--update-subcounters') continue;
      if (o.name !== '--match-set') return { p: 0, b: this.unsupported(b, `match set ${o.name}`) };
      const name = o.values[0] ?? '';
      const flags = parseSetFlags(o.values[1]);
      if (!flags)
        return { p: 0, b: this.unsupported(b, `match set --match-set ${name} ${o.values[1] ?? ''}`) };
      const sets = this.input.ipsets;
      if (!sets) return { p: 0, b: this.unsupported(b, 'match set (the ipsets were not read)') };
      const set = sets.get(name);
      if (!set) return { p: 0, b: this.unsupported(b, `match set: ipset ${name} does not exist`) };
      const r = matchSet(set, flags, {
        family: pkt.family,
        proto: pkt.proto,
        src: pkt.src,
        dst: b.dst,
        sport: pkt.sport ?? EPHEMERAL_PORT,
        dport: b.dport,
      });
      if (r.matched === undefined) return { p: 0, b: this.unsupported(b, `match set ${name}: ${r.why}`) };
      if (r.matched === o.negated) return { p: 0, b };
    }
    return { p: 1, b };
  }

  /** xt_ipvs: only packets IPVS translated have the property; then vaddr/vport/vproto of their VS. */
  private ipvsMatch(options: readonly SpecOption[], b: Branch): { p: number; b: Branch } {
    const v = b.ipvs;
    const property = optionOf({ options }, '--ipvs');
    if (!v) return { p: property?.negated === true ? 1 : 0, b };
    for (const o of options) {
      const value = o.values[0] ?? '';
      let is: boolean;
      switch (o.name) {
        case '--ipvs':
          is = true;
          break;
        case '--vaddr':
          is = addrMatches(normalizeAddress(value), v.vaddr, false);
          break;
        case '--vport': {
          const r = portIn(value, v.vport);
          if (r === undefined) return { p: 0, b: this.unsupported(b, `match ipvs --vport ${value}`) };
          is = r;
          break;
        }
        case '--vproto':
          is = (PROTOCOL_NAMES[value] ?? value.toLowerCase()) === this.pkt.proto;
          break;
        case '--vdir':
          is = value.toUpperCase() === 'ORIGINAL';
          break;
        case '--vmethod':
          is = value.toUpperCase() === 'MASQ';
          break;
        default:
          return { p: 0, b: this.unsupported(b, `match ipvs ${o.name}`) };
      }
      if (is === o.negated) return { p: 0, b };
    }
    return { p: 1, b };
  }

  // ---- helpers ----

  private spec(rule: SavedRule): RuleSpec {
    let s = this.specs.get(rule);
    if (!s) {
      s = parseRuleSpec(rule.args);
      this.specs.set(rule, s);
    }
    return s;
  }

  private step(b: Branch, s: TraceStep): Branch {
    return { ...b, steps: [...b.steps, s] };
  }

  private unsupported(b: Branch, what: string): Branch {
    const text = `unsupported ${what}`;
    if (b.unsupported.includes(text)) return b;
    return { ...b, unsupported: [...b.unsupported, text] };
  }

  /** addrtype LOCAL: one of the node's addresses, or inside a loopback prefix (127.0.0.0/8). */
  private isLocal(ip: string): boolean {
    for (const a of this.input.node.addresses) {
      if (a.ip === ip) return true;
      if (a.ifname === 'lo' && cidrContains(`${networkOf(a)}`, ip)) return true;
    }
    return false;
  }

  /** The interface whose connected subnet holds `ip` (longest prefix), else the default route's. */
  private interfaceFor(ip: string): string | undefined {
    if (this.isLocal(ip)) return 'lo';
    let best: NodeAddress | undefined;
    for (const a of this.input.node.addresses) {
      if (a.ifname === 'lo') continue;
      if (cidrContains(networkOf(a), ip) && (!best || a.prefixLen > best.prefixLen)) best = a;
    }
    return best?.ifname ?? this.input.node.defaultInterface;
  }

  // ---- result ----

  private summarize(
    finals: readonly { b: Branch; verdict: TraceVerdict; postrouted: boolean }[],
  ): TraceResult {
    const branches: TraceBranch[] = finals.map(({ b, verdict, postrouted }) => ({
      probability: round(b.prob),
      verdict,
      ...(verdict === 'dnat' ? { endpoint: joinHostPort(b.dst, b.dport) } : {}),
      masquerade: b.masq !== undefined,
      masqueradeReason: masqueradeReason(b, verdict, postrouted),
      steps: b.steps,
    }));
    const byVerdict = new Map<TraceVerdict, number>();
    for (const br of branches) byVerdict.set(br.verdict, (byVerdict.get(br.verdict) ?? 0) + br.probability);
    let verdict: TraceVerdict = 'untouched';
    let best = -1;
    for (const [v, p] of byVerdict) {
      if (p > best) {
        best = p;
        verdict = v;
      }
    }
    const eps = new Map<string, { endpoint: string; probability: number; masquerade: boolean }>();
    for (const br of branches) {
      if (br.endpoint === undefined) continue;
      const e = eps.get(br.endpoint);
      if (e) {
        e.probability = round(e.probability + br.probability);
        e.masquerade ||= br.masquerade;
      } else {
        eps.set(br.endpoint, {
          endpoint: br.endpoint,
          probability: br.probability,
          masquerade: br.masquerade,
        });
      }
    }
    const masquerade = branches.some((x) => x.masquerade);
    const reasons = [...new Set(branches.map((x) => x.masqueradeReason))];
    const path = commonPrefix(branches.map((x) => x.steps));
    const unsupported = [...new Set(finals.flatMap((f) => f.b.unsupported))];
    const affinity = dedupeAffinity(finals.flatMap((f) => f.b.affinity));
    const service = serviceOf(branches) ?? this.serviceFromState();
    const pkt = this.pkt;
    const onDummy = this.input.node.addresses.some((a) => a.ifname === IPVS_DEVICE && a.ip === pkt.dst);
    if (pkt.fromNode && onDummy && pkt.src !== pkt.dst) {
      // The local route of a kube-ipvs0 address has that address as its preferred source.
      this.notes.push(
        `the node's own connections to ${pkt.dst} (on ${IPVS_DEVICE}) usually leave with ${pkt.dst} as source unless bound: trace --src ${pkt.dst} for those`,
      );
    }
    if (this.ipvsHit) {
      this.notes.push(`IPVS virtual server ${this.ipvsHit.virtualServer}: ${this.ipvsHit.note}`);
      if (this.ipvsHit.persistenceSeconds !== undefined) {
        this.notes.push(
          `IPVS persistence ${this.ipvsHit.persistenceSeconds} s (ClientIP affinity): a client with a live template (ipvsadm -Lnc) goes back to its real server`,
        );
      }
    }
    if (service === undefined && this.input.ipvs && !this.input.frontends && this.ipvsHit) {
      this.notes.push('IPVS rules name no Service: pass --manifests or --kubeconfig to name it');
    }
    return {
      verdict,
      endpoints: [...eps.values()].sort((a, b) =>
        a.endpoint < b.endpoint ? -1 : a.endpoint > b.endpoint ? 1 : 0,
      ),
      masquerade,
      masqueradeReason: reasons.length === 1 ? (reasons[0] as string) : reasons.join('; '),
      ...(service !== undefined ? { service } : {}),
      path,
      branches,
      affinity,
      unsupported,
      notes: this.notes,
      ...(this.inIf !== undefined ? { inInterface: this.inIf } : {}),
      ...(this.ipvsHit ? { ipvs: this.ipvsHit } : {}),
    };
  }

  /** The Service port the packet is addressed to, by frontend or node port (no comment named one). */
  private serviceFromState(): string | undefined {
    const idx = this.input.frontends;
    if (!idx) return undefined;
    const dst = this.pkt.dst;
    const onNode = this.input.node.addresses.some(
      (a) =>
        a.ifname !== IPVS_DEVICE && (a.ip === dst || (a.ifname === 'lo' && cidrContains(networkOf(a), dst))),
    );
    return serviceForDestination(idx, this.pkt, onNode);
  }
}

function verdictOf(o: Outcome, local: boolean): TraceVerdict {
  if (o.exit === 'DROP') return 'drop';
  if (o.exit === 'REJECT') return 'reject';
  if (o.b.dnat) return 'dnat';
  return local ? 'local' : 'untouched';
}

function masqueradeReason(b: Branch, verdict: TraceVerdict, postrouted: boolean): string {
  if (verdict === 'drop' || verdict === 'reject')
    return `no: the packet is ${verdict === 'drop' ? 'dropped' : 'rejected'}`;
  if (b.masq !== undefined) {
    return b.markedBy !== undefined
      ? `yes: marked by ${b.markedBy}; masqueraded by ${b.masq}`
      : `yes: masqueraded by ${b.masq}`;
  }
  if (!postrouted) return 'no: delivered to the node itself (POSTROUTING is not traversed)';
  if (b.markedBy !== undefined) return `no: marked by ${b.markedBy}, but no POSTROUTING rule masqueraded it`;
  return 'no: no rule marked the packet for masquerade';
}

function scale(b: Branch, p: number): Branch {
  return { ...b, prob: b.prob * p };
}

function round(p: number): number {
  return Math.round(p * 1e6) / 1e6;
}

function networkOf(a: NodeAddress): string {
  return parseCIDR(`${a.ip}/${a.prefixLen}`)?.cidr ?? `${a.ip}/${a.ip.includes(':') ? 128 : 32}`;
}

function addrMatches(cidr: string, ip: string, negated: boolean): boolean {
  const inside = cidr.includes(':') === ip.includes(':') && safeContains(cidr, ip);
  return inside !== negated;
}

function safeContains(cidr: string, ip: string): boolean {
  try {
    return cidrContains(cidr, ip);
  } catch {
    return false;
  }
}

/** `-i eth0`, `-i veth+` (prefix); no interface (e.g. in OUTPUT) matches only negated rules. */
function ifaceMatches(pattern: string, actual: string | undefined, negated: boolean): boolean {
  const is =
    actual !== undefined &&
    (pattern.endsWith('+') ? actual.startsWith(pattern.slice(0, -1)) : actual === pattern);
  return is !== negated;
}

function portIn(spec: string | undefined, port: number): boolean | undefined {
  if (spec === undefined) return undefined;
  const [lo, hi] = spec.split(':');
  const a = lo === '' || lo === undefined ? 0 : Number(lo);
  const z = hi === undefined ? a : hi === '' ? 65535 : Number(hi);
  if (!Number.isInteger(a) || !Number.isInteger(z)) return undefined;
  return port >= a && port <= z;
}

/** The first TCP packet carries SYN only. */
function tcpFlagsMatch(mask: string | undefined, comp: string | undefined): boolean | undefined {
  if (mask === undefined || comp === undefined) return undefined;
  const set = (s: string): Set<string> =>
    new Set(
      s.toUpperCase() === 'ALL' ? ['SYN', 'ACK', 'FIN', 'RST', 'URG', 'PSH'] : s.toUpperCase().split(','),
    );
  const m = set(mask);
  const c = set(comp);
  for (const f of m) if ((f === 'SYN') !== c.has(f)) return false;
  return true;
}

function parseMarkValue(text: string): { value: number; mask: number } | undefined {
  const [v = '', m] = text.split('/');
  const num = (s: string): number | undefined =>
    /^0x[0-9a-f]+$/i.test(s) ? Number.parseInt(s.slice(2), 16) : /^\d+$/.test(s) ? Number(s) : undefined;
  const value = num(v);
  const mask = m === undefined ? 0xffffffff : num(m);
  if (value === undefined || mask === undefined) return undefined;
  return { value: value >>> 0, mask: mask >>> 0 };
}

/** The MARK target's effect on a mark, or undefined when its options are not understood. */
function applyMark(mark: number, options: readonly SpecOption[]): number | undefined {
  let out = mark;
  for (const o of options) {
    const mv = parseMarkValue(o.values[0] ?? '');
    if (!mv) return undefined;
    const v = mv.value;
    switch (o.name) {
      case '--set-xmark':
        out = ((out & ~mv.mask) ^ v) >>> 0;
        break;
      case '--set-mark':
        out = ((out & ~mv.mask) | v) >>> 0;
        break;
      case '--or-mark':
        out = (out | v) >>> 0;
        break;
      case '--xor-mark':
        out = (out ^ v) >>> 0;
        break;
      case '--and-mark':
        out = (out & v) >>> 0;
        break;
      default:
        return undefined;
    }
  }
  return out;
}

/** `10.0.0.1`, `10.0.0.1:80`, `[fd00::1]:80`, `fd00::1`; ranges are not supported. */
export function parseNatDestination(text: string): { ip: string; port?: number } | undefined {
  const b = /^\[([0-9a-fA-F:.]+)\](?::(\d+))?$/.exec(text);
  if (b) return { ip: b[1] as string, ...(b[2] !== undefined ? { port: Number(b[2]) } : {}) };
  if (text.split(':').length > 2) return /^[0-9a-fA-F:.]+$/.test(text) ? { ip: text } : undefined;
  const m = /^(\d+\.\d+\.\d+\.\d+)(?::(\d+))?$/.exec(text);
  if (!m) return undefined;
  return { ip: m[1] as string, ...(m[2] !== undefined ? { port: Number(m[2]) } : {}) };
}

function commonPrefix(lists: readonly (readonly TraceStep[])[]): TraceStep[] {
  const first = lists[0];
  if (!first) return [];
  let n = first.length;
  for (const l of lists.slice(1)) {
    let i = 0;
    while (i < n && i < l.length && l[i] === first[i]) i++;
    n = i;
  }
  return first.slice(0, n);
}

function dedupeAffinity(list: readonly AffinityInfo[]): AffinityInfo[] {
  const seen = new Map<string, AffinityInfo>();
  for (const a of list) if (!seen.has(a.list)) seen.set(a.list, a);
  return [...seen.values()];
}

/** The ServicePortName of the first rule on the most likely branch whose comment names one. */
function serviceOf(branches: readonly TraceBranch[]): string | undefined {
  const ordered = [...branches].sort((a, b) => b.probability - a.probability);
  for (const br of ordered) {
    for (const s of br.steps) {
      const spn = servicePortNameFromComment(s.comment);
      if (spn !== undefined) return spn;
    }
  }
  return undefined;
}
