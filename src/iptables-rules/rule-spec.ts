import { parseCIDR, parseIP } from '../model/ip.js';
import { quoteArg } from '../iptables/save-parse.js';

/**
 * One iptables rule's arguments as a structure (generic matches, match modules with their options,
 * target), and a canonical text of it. Rules written by `iptables-restore` come back from
 * `iptables-save` reordered and with defaults spelled out (`-d 10.0.0.1` → `-d 10.0.0.1/32`,
 * `--or-mark 0x4000` → `--set-xmark 0x4000/0x4000`, `--reject-with icmp-port-unreachable`,
 * `--mask 255.255.255.255 --rsource`, probabilities quantized to 1/2^31): the canonical text is the
 * same for both spellings, so `svcplane diff` compares meaning and `svcplane trace` evaluates one form.
 * Pure.
 */

export interface SpecValue {
  readonly value: string;
  readonly negated: boolean;
}

export interface SpecOption {
  /** Long option name, aliases resolved (`--destination-port` → `--dport`). */
  readonly name: string;
  readonly values: readonly string[];
  readonly negated: boolean;
}

export interface SpecMatch {
  readonly module: string;
  readonly options: readonly SpecOption[];
}

export interface SpecTarget {
  readonly name: string;
  /** `-g` (goto) rather than `-j`. */
  readonly goto: boolean;
  readonly options: readonly SpecOption[];
}

export interface RuleSpec {
  /** `ip/len`, canonical when it parses. */
  readonly source?: SpecValue;
  readonly destination?: SpecValue;
  /** Lower-case protocol name (`tcp`, `udp`, `sctp`, …). */
  readonly protocol?: SpecValue;
  readonly inInterface?: SpecValue;
  readonly outInterface?: SpecValue;
  /** `-f` / `! -f`. */
  readonly fragment?: { readonly negated: boolean };
  readonly matches: readonly SpecMatch[];
  readonly target?: SpecTarget;
  /** Tokens that fit nowhere (kept so they still take part in comparisons). */
  readonly stray: readonly string[];
}

// Options whose single value is free text and may start with '-'.
const FREE_TEXT = new Set(['--comment', '--log-prefix', '--nflog-prefix', '--string', '--hex-string']);

const OPTION_ALIASES: Readonly<Record<string, string>> = {
  '--destination-port': '--dport',
  '--source-port': '--sport',
  '--destination-ports': '--dports',
  '--source-ports': '--sports',
};

// Options of the protocol modules: with no `-m tcp` they belong to the implicit protocol match.
const PROTOCOL_OPTIONS = new Set([
  '--dport',
  '--sport',
  '--tcp-flags',
  '--syn',
  '--tcp-option',
  '--chunk-types',
  '--icmp-type',
  '--icmpv6-type',
]);
const PROTOCOL_MODULES = new Set(['tcp', 'udp', 'sctp', 'icmp', 'icmp6', 'udplite', 'dccp']);

const PROTOCOL_NUMBERS: Readonly<Record<string, string>> = {
  '1': 'icmp',
  '6': 'tcp',
  '17': 'udp',
  '58': 'ipv6-icmp',
  '132': 'sctp',
};

const PROTOCOL_NUMBER_OF: Readonly<Record<string, string>> = Object.fromEntries(
  Object.entries(PROTOCOL_NUMBERS).map(([n, name]) => [name, n]),
);

interface MutableMatch {
  module: string;
  options: SpecOption[];
}

/** Parse rule args (the tokens after `-A CHAIN`). Never throws: unknown tokens land in `stray`. */
export function parseRuleSpec(args: readonly string[]): RuleSpec {
  let source: SpecValue | undefined;
  let destination: SpecValue | undefined;
  let protocol: SpecValue | undefined;
  let inInterface: SpecValue | undefined;
  let outInterface: SpecValue | undefined;
  let fragment: { negated: boolean } | undefined;
  const matches: MutableMatch[] = [];
  let target: { name: string; goto: boolean; options: SpecOption[] } | undefined;
  const stray: string[] = [];
  let current: MutableMatch | 'target' | undefined;
  let negated = false;

  const n = args.length;
  let i = 0;
  // The value after an option (hoisted: this loop runs for every rule of a big save).
  function next(): string {
    return i + 1 < n ? (args[++i] as string) : '';
  }
  for (; i < n; i++) {
    const t = args[i] as string;
    if (t === '!') {
      negated = true;
      continue;
    }
    switch (t) {
      case '-s':
      case '--source':
      case '--src':
        source = { value: normalizeAddress(next()), negated };
        break;
      case '-d':
      case '--destination':
      case '--dst':
        destination = { value: normalizeAddress(next()), negated };
        break;
      case '-p':
      case '--protocol': {
        const p = next().toLowerCase();
        protocol = { value: PROTOCOL_NUMBERS[p] ?? p, negated };
        break;
      }
      case '-i':
      case '--in-interface':
        inInterface = { value: next(), negated };
        break;
      case '-o':
      case '--out-interface':
        outInterface = { value: next(), negated };
        break;
      case '-f':
      case '--fragment':
        fragment = { negated };
        break;
      case '-m':
      case '--match': {
        const m: MutableMatch = { module: next(), options: [] };
        matches.push(m);
        current = m;
        break;
      }
      case '-j':
      case '--jump':
      case '-g':
      case '--goto':
        target = { name: next(), goto: t === '-g' || t === '--goto', options: [] };
        current = 'target';
        break;
      case '-c':
      case '--set-counters':
        i += 2; // counters are not part of a rule's meaning
        break;
      default: {
        if (!t.startsWith('-')) {
          stray.push(t);
          break;
        }
        const name = OPTION_ALIASES[t] ?? t;
        const values: string[] = [];
        if (FREE_TEXT.has(name)) {
          values.push(next());
        } else {
          while (i + 1 < n && args[i + 1] !== '!' && !(args[i + 1] as string).startsWith('-')) {
            values.push(args[++i] as string);
          }
        }
        const opt: SpecOption = { name, values, negated };
        if (current === 'target' && target) {
          target.options.push(opt);
        } else if (
          current !== undefined &&
          current !== 'target' &&
          (!PROTOCOL_OPTIONS.has(name) || PROTOCOL_MODULES.has(current.module))
        ) {
          current.options.push(opt);
        } else {
          // `-p tcp --dport 80` without `-m tcp`: iptables loads the protocol match implicitly.
          const module = protocol?.value ?? 'unknown';
          let m = matches.find((x) => x.module === module);
          if (!m) {
            m = { module, options: [] };
            matches.push(m);
          }
          m.options.push(opt);
        }
      }
    }
    negated = false;
  }
  // Built in place (no spreads): this runs once per rule of a whole iptables-save.
  const spec: { -readonly [K in keyof RuleSpec]: RuleSpec[K] } = { matches, stray };
  if (source) spec.source = source;
  if (destination) spec.destination = destination;
  if (protocol) spec.protocol = protocol;
  if (inInterface) spec.inInterface = inInterface;
  if (outInterface) spec.outInterface = outInterface;
  if (fragment) spec.fragment = fragment;
  if (target) spec.target = target;
  return spec;
}

const addressCache = new Map<string, string>();

/** `10.0.0.1` → `10.0.0.1/32`, `10.1.2.3/8` → `10.0.0.0/8`; anything else unchanged. */
export function normalizeAddress(text: string): string {
  let out = addressCache.get(text);
  if (out === undefined) {
    const withLen = text.includes('/') ? text : `${text}/${text.includes(':') ? 128 : 32}`;
    out = parseCIDR(withLen)?.cidr ?? text;
    // Addresses repeat across rules (cluster IPs, pod CIDR); bound the cache all the same.
    if (addressCache.size > 100_000) addressCache.clear();
    addressCache.set(text, out);
  }
  return out;
}

/** An option with the given name, if present. */
export function optionOf(
  owner: Pick<SpecMatch, 'options'> | undefined,
  name: string,
): SpecOption | undefined {
  return owner?.options.find((o) => o.name === name);
}

// ---- canonical form ----

const FULL_MASKS = new Set(['255.255.255.255', 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff']);

function parseNumber(text: string): number | undefined {
  const t = text.trim().toLowerCase();
  if (/^0x[0-9a-f]+$/.test(t)) return Number.parseInt(t.slice(2), 16);
  if (/^\d+$/.test(t)) return Number.parseInt(t, 10);
  return undefined;
}

const hex = (n: number): string => `0x${(n >>> 0).toString(16)}`;

/** `value[/mask]` of the mark match: numbers in iptables-save's hex, a full mask left out. */
function canonicalMarkMatch(text: string): string {
  const [v = '', m] = text.split('/');
  const value = parseNumber(v);
  const mask = m === undefined ? 0xffffffff : parseNumber(m);
  if (value === undefined || mask === undefined) return text;
  return mask >>> 0 === 0xffffffff ? hex(value) : `${hex(value)}/${hex(mask)}`;
}

/** The MARK target in its kernel form (`--set-xmark value/mask`), as iptables-save prints it. */
function canonicalMarkTarget(options: readonly SpecOption[]): SpecOption[] {
  const out: SpecOption[] = [];
  for (const o of options) {
    const [v = '', m] = (o.values[0] ?? '').split('/');
    const value = parseNumber(v);
    const maskArg = m === undefined ? undefined : parseNumber(m);
    let xmark: [number, number] | undefined;
    if (value !== undefined) {
      switch (o.name) {
        case '--set-xmark':
          xmark = [value, maskArg ?? 0xffffffff];
          break;
        case '--set-mark':
          xmark = [value, ((maskArg ?? 0xffffffff) | value) >>> 0];
          break;
        case '--or-mark':
          xmark = [value, value];
          break;
        case '--xor-mark':
          xmark = [value, 0];
          break;
        case '--and-mark':
          xmark = [0, ~value >>> 0];
          break;
      }
    }
    out.push(
      xmark ? { name: '--set-xmark', values: [`${hex(xmark[0])}/${hex(xmark[1])}`], negated: false } : o,
    );
  }
  return out;
}

const natAddressCache = new Map<string, string>();

/** `ip`, `ip:port`, `[ip]:port`, `ip-ip:port-port`: IPs re-serialized canonically (cached). */
function canonicalNatAddress(text: string): string {
  let out = natAddressCache.get(text);
  if (out === undefined) {
    out = canonicalNatAddressUncached(text);
    if (natAddressCache.size > 100_000) natAddressCache.clear();
    natAddressCache.set(text, out);
  }
  return out;
}

function canonicalNatAddressUncached(text: string): string {
  const canon = (ip: string): string => parseIP(ip)?.ip ?? ip;
  const bracket = /^\[([^\]]+)\](.*)$/.exec(text);
  if (bracket) return `[${canon(bracket[1] ?? '')}]${bracket[2] ?? ''}`;
  if (text.split(':').length > 2) return canon(text); // bare IPv6
  const [ip = '', port] = text.split(':');
  const ips = ip.split('-').map(canon).join('-');
  return port === undefined ? ips : `${ips}:${port}`;
}

/** Probability as the kernel stores it (a u32 fraction of 2^31), printed like iptables-save. */
export function quantizeProbability(text: string): number | undefined {
  const p = Number(text);
  if (!Number.isFinite(p)) return undefined;
  return Math.round(p * 0x80000000) / 0x80000000;
}

function canonicalMatch(m: SpecMatch): SpecMatch | undefined {
  let options = m.options;
  switch (m.module) {
    case 'statistic':
      options = options.map((o) => {
        if (o.name !== '--probability') return o;
        const q = quantizeProbability(o.values[0] ?? '');
        return q === undefined ? o : { ...o, values: [q.toFixed(11)] };
      });
      break;
    case 'mark':
    case 'connmark':
      options = options.map((o) =>
        o.name === '--mark' ? { ...o, values: o.values.map(canonicalMarkMatch) } : o,
      );
      break;
    case 'recent':
      // iptables-save spells out the defaults.
      options = options.filter(
        (o) =>
          o.name !== '--rsource' &&
          !(o.name === '--mask' && FULL_MASKS.has((o.values[0] ?? '').toLowerCase())),
      );
      break;
    case 'conntrack':
    case 'state':
      options = options.map((o) =>
        o.name === '--ctstate' || o.name === '--state'
          ? { ...o, values: o.values.map((v) => v.split(',').sort().join(',')) }
          : o,
      );
      break;
    case 'addrtype':
      options = options.map((o) => ({ ...o, values: o.values.map((v) => v.toUpperCase()) }));
      break;
    case 'ipvs':
      // iptables-save prints the protocol as a number and the address with its prefix.
      options = options.map((o) =>
        o.name === '--vproto'
          ? { ...o, values: o.values.map((v) => PROTOCOL_NUMBER_OF[v.toLowerCase()] ?? v) }
          : o.name === '--vaddr'
            ? { ...o, values: o.values.map(normalizeAddress) }
            : o,
      );
      break;
    case 'nfacct':
      return undefined; // a packet counter: no effect on the verdict ("ignoring counters")
  }
  if (options.length === 0 && PROTOCOL_MODULES.has(m.module)) return undefined;
  return { module: m.module, options: sortOptions(options) };
}

const DEFAULT_REJECT = new Set(['icmp-port-unreachable', 'icmp6-port-unreachable']);

function canonicalTarget(t: SpecTarget): SpecTarget {
  let options = t.options;
  switch (t.name) {
    case 'REJECT':
      // Each family's default; a rule can only carry its own family's ICMP type.
      options = options.filter((o) => !(o.name === '--reject-with' && DEFAULT_REJECT.has(o.values[0] ?? '')));
      break;
    case 'MARK':
      options = canonicalMarkTarget(options);
      break;
    case 'DNAT':
    case 'SNAT':
      options = options.map((o) =>
        o.name === '--to-destination' || o.name === '--to-source'
          ? { ...o, values: o.values.map(canonicalNatAddress) }
          : o,
      );
      break;
  }
  return { ...t, options: sortOptions(options) };
}

function sortOptions(options: readonly SpecOption[]): SpecOption[] {
  return [...options].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/** The structure with defaults and aliases resolved and modules/options in a fixed order. */
export function canonicalSpec(spec: RuleSpec): RuleSpec {
  const matches = spec.matches
    .map(canonicalMatch)
    .filter((m): m is SpecMatch => m !== undefined)
    .sort(
      (a, b) => moduleRank(a) - moduleRank(b) || (a.module < b.module ? -1 : a.module > b.module ? 1 : 0),
    );
  return {
    ...spec,
    matches,
    ...(spec.target ? { target: canonicalTarget(spec.target) } : {}),
  };
}

// The comment first: it is what a reader looks for.
const moduleRank = (m: SpecMatch): number => (m.module === 'comment' ? 0 : 1);

function optionText(o: SpecOption): string {
  return [...(o.negated ? ['!'] : []), o.name, ...o.values.map(quoteArg)].join(' ');
}

/** iptables-save-like text of a (canonical) spec, without the `-A CHAIN` head. */
export function specText(spec: RuleSpec): string {
  const parts: string[] = [];
  const generic = (flag: string, v: SpecValue | undefined): void => {
    if (v) parts.push(...(v.negated ? ['!'] : []), flag, quoteArg(v.value));
  };
  generic('-s', spec.source);
  generic('-d', spec.destination);
  generic('-i', spec.inInterface);
  generic('-o', spec.outInterface);
  generic('-p', spec.protocol);
  if (spec.fragment) parts.push(...(spec.fragment.negated ? ['!'] : []), '-f');
  for (const m of spec.matches) {
    parts.push('-m', m.module, ...m.options.map(optionText));
  }
  parts.push(...spec.stray.map(quoteArg));
  if (spec.target) {
    parts.push(spec.target.goto ? '-g' : '-j', spec.target.name, ...spec.target.options.map(optionText));
  }
  return parts.join(' ');
}

/** `-A CHAIN <canonical spec>`: equal for two spellings of the same rule. */
export function canonicalRuleText(chain: string, args: readonly string[]): string {
  const body = specText(canonicalSpec(parseRuleSpec(args)));
  return body === '' ? `-A ${chain}` : `-A ${chain} ${body}`;
}
