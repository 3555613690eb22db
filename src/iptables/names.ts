import { sha256Base32 } from '../util/base32.js';

/**
 * Chain names and probabilities exactly as kube-proxy's iptables proxier computes them
 * (`portProtoHash`, `servicePortEndpointChainName`, `computeProbability`), so an operator can
 * compare svcplane's rules with kube-proxy's and a node can switch between the two.
 */

/*
 * The fixed chains, by name, for every writer and reader of them: iptables mode (render-fixed.ts,
 * cleanup.ts), the rules iptables and IPVS mode share (src/iptables-rules: jumps, owned chains, the
 * comparison), IPVS mode's rules around its sets (src/ipvs/rules.ts), the leftovers each mode removes
 * of the other, and the debugging commands.
 */
/** Both modes: nat and filter entry chains, postrouting masquerade, the masquerade mark. */
export const KUBE_SERVICES = 'KUBE-SERVICES';
export const KUBE_POSTROUTING = 'KUBE-POSTROUTING';
export const KUBE_MARK_MASQ = 'KUBE-MARK-MASQ';
export const KUBE_FORWARD = 'KUBE-FORWARD';
export const KUBE_PROXY_FIREWALL = 'KUBE-PROXY-FIREWALL';
/** iptables mode. */
export const KUBE_EXTERNAL_SERVICES = 'KUBE-EXTERNAL-SERVICES';
export const KUBE_NODEPORTS = 'KUBE-NODEPORTS';
/** IPVS mode (kube-proxy's), and svcplane's IPVS filter chains (KUBE-IPVS-*). */
export const KUBE_NODE_PORT = 'KUBE-NODE-PORT';
export const KUBE_LOAD_BALANCER = 'KUBE-LOAD-BALANCER';
export const KUBE_SOURCE_RANGES_FIREWALL = 'KUBE-SOURCE-RANGES-FIREWALL';
export const KUBE_IPVS_FILTER = 'KUBE-IPVS-FILTER';
export const KUBE_IPVS_OUT_FILTER = 'KUBE-IPVS-OUT-FILTER';
/** kubelet's (shared: kube-proxy writes KUBE-FIREWALL's localhost rule too). */
export const KUBE_FIREWALL = 'KUBE-FIREWALL';
export const KUBE_KUBELET_CANARY = 'KUBE-KUBELET-CANARY';
export const KUBE_MARK_DROP = 'KUBE-MARK-DROP';

/** Every chain kube-proxy (and kubelet) names starts with it. */
export const KUBE_CHAIN_PREFIX = 'KUBE-';
export const SERVICE_CHAIN_PREFIX = 'KUBE-SVC-';
export const SERVICE_LOCAL_CHAIN_PREFIX = 'KUBE-SVL-';
export const EXTERNAL_CHAIN_PREFIX = 'KUBE-EXT-';
export const FIREWALL_CHAIN_PREFIX = 'KUBE-FW-';
export const ENDPOINT_CHAIN_PREFIX = 'KUBE-SEP-';

const SERVICE_CHAIN_PREFIXES = [
  SERVICE_CHAIN_PREFIX,
  SERVICE_LOCAL_CHAIN_PREFIX,
  ENDPOINT_CHAIN_PREFIX,
  FIREWALL_CHAIN_PREFIX,
  EXTERNAL_CHAIN_PREFIX,
] as const;

/** First 16 base32 characters of sha256(input): 80 bits. */
function hash16(input: string): string {
  return sha256Base32(input, 2);
}

/** The per-service-port chain names, built once and reused (flat strings with cached hashes). */
export interface PortChainNames {
  /** `portProtoHash`. */
  readonly hash: string;
  readonly svc: string;
  readonly svl: string;
  readonly ext: string;
  readonly fw: string;
  /** KUBE-SEP-… for one endpoint string of this service port (cached). */
  endpointChain(endpoint: string): string;
}

/*
 * Hashing is the hot spot of a large render (one sha256 per service port and per endpoint), and the
 * inputs barely change between syncs. Names are cached per service port, endpoint chains inside it
 * keyed by the short endpoint string. Two generations at each level keep the working set without
 * growing forever under churn: when the current map is full it becomes the previous one.
 */
class GenerationalCache<V> {
  private current = new Map<string, V>();
  private previous = new Map<string, V>();

  constructor(private readonly limit: number) {}

  get(key: string, make: (key: string) => V): V {
    let v = this.current.get(key);
    if (v !== undefined) return v;
    v = this.previous.get(key) ?? make(key);
    if (this.current.size >= this.limit) {
      this.previous = this.current;
      this.current = new Map();
    }
    this.current.set(key, v);
    return v;
  }
}

class CachedPortChainNames implements PortChainNames {
  readonly svc: string;
  readonly svl: string;
  readonly ext: string;
  readonly fw: string;
  private readonly endpoints = new GenerationalCache<string>(1 << 13);

  constructor(
    private readonly spnProto: string,
    readonly hash: string,
  ) {
    this.svc = SERVICE_CHAIN_PREFIX + hash;
    this.svl = SERVICE_LOCAL_CHAIN_PREFIX + hash;
    this.ext = EXTERNAL_CHAIN_PREFIX + hash;
    this.fw = FIREWALL_CHAIN_PREFIX + hash;
  }

  endpointChain(endpoint: string): string {
    return this.endpoints.get(endpoint, (e) => ENDPOINT_CHAIN_PREFIX + hash16(this.spnProto + e));
  }
}

const portCache = new GenerationalCache<CachedPortChainNames>(1 << 16);

/** All chain names of one service port (`spn`, lower-case protocol), cached. */
export function portChainNames(spn: string, protocolLower: string): PortChainNames {
  return portCache.get(spn + protocolLower, (key) => new CachedPortChainNames(key, hash16(key)));
}

/** kube-proxy's `portProtoHash`: `base32(sha256(spn + protocol))[0:16]`; protocol is lower-case. */
export function portProtoHash(spn: string, protocolLower: string): string {
  return portChainNames(spn, protocolLower).hash;
}

/** KUBE-SVC-…: endpoints for Cluster traffic policy. */
export function serviceChainName(spn: string, protocolLower: string): string {
  return portChainNames(spn, protocolLower).svc;
}

/** KUBE-SVL-…: endpoints for Local traffic policy. */
export function serviceLocalChainName(spn: string, protocolLower: string): string {
  return portChainNames(spn, protocolLower).svl;
}

/** KUBE-EXT-…: external (NodePort, LB, externalIP) traffic handling. */
export function externalChainName(spn: string, protocolLower: string): string {
  return portChainNames(spn, protocolLower).ext;
}

/** KUBE-FW-…: loadBalancerSourceRanges allow-list. */
export function firewallChainName(spn: string, protocolLower: string): string {
  return portChainNames(spn, protocolLower).fw;
}

/** KUBE-SEP-…: `base32(sha256(spn + protocol + endpoint))[0:16]`, endpoint = `ip:port` / `[ip]:port`. */
export function endpointChainName(spn: string, protocolLower: string, endpoint: string): string {
  return portChainNames(spn, protocolLower).endpointChain(endpoint);
}

/** Chains kube-proxy owns in nat and deletes when no longer generated (`isServiceChainName`). */
export function isServiceChainName(name: string): boolean {
  for (const p of SERVICE_CHAIN_PREFIXES) if (name.startsWith(p)) return true;
  return false;
}

/**
 * Go's `fmt.Sprintf("%0.10f", 1.0/float64(n))`. Go rounds the exact binary value half-to-even
 * (JavaScript's toFixed rounds exact ties up: 1/2048 would differ), so do it exactly with BigInt.
 */
function formatInverse(n: number): string {
  const x = 1 / n;
  const view = new DataView(new ArrayBuffer(8));
  view.setFloat64(0, x);
  const hi = view.getUint32(0);
  const lo = view.getUint32(4);
  const biasedExp = (hi >>> 20) & 0x7ff;
  let mantissa = (BigInt(hi & 0xfffff) << 32n) | BigInt(lo);
  let exp: number;
  if (biasedExp === 0) {
    exp = -1074;
  } else {
    mantissa |= 1n << 52n;
    exp = biasedExp - 1075;
  }
  // x = mantissa * 2^exp; scaled = x * 10^10 = q + r / 2^-exp.
  const scaledNum = mantissa * 10n ** 10n;
  let q: bigint;
  if (exp >= 0) {
    q = scaledNum << BigInt(exp);
  } else {
    const den = 1n << BigInt(-exp);
    q = scaledNum / den;
    const twiceRem = (scaledNum % den) * 2n;
    if (twiceRem > den || (twiceRem === den && q % 2n === 1n)) q += 1n;
  }
  const digits = q.toString().padStart(11, '0');
  return `${digits.slice(0, -10)}.${digits.slice(-10)}`;
}

const PROBABILITY_CACHE_SIZE = 1000;
const probabilityCache: (string | undefined)[] = [];

/** kube-proxy's `computeProbability`/`probability`: 1/n as Go `%0.10f`, cached for n ≤ 1000. */
export function computeProbability(n: number): string {
  if (n <= PROBABILITY_CACHE_SIZE) {
    const cached = probabilityCache[n];
    if (cached !== undefined) return cached;
    const s = formatInverse(n);
    probabilityCache[n] = s;
    return s;
  }
  return formatInverse(n);
}
