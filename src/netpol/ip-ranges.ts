import ipaddr from 'ipaddr.js';
import { ipFamilyOf } from '../model/ip.js';
import type { IPBlock } from '../model/policy-types.js';
import type { IPFamily } from '../model/types.js';

/**
 * Address ranges of one family as [first, last] integers: the exact union of a rule's ipBlocks
 * minus their excepts, turned back into the fewest CIDRs. An except subtracts from its own block
 * only (union semantics: another peer of the same rule may allow what one block excepts), which an
 * ipset hash:net with `nomatch` entries cannot say in general; disjoint CIDRs can, in both an nft
 * interval set and an ipset hash:net.
 */

export interface AddressRange {
  readonly first: bigint;
  readonly last: bigint;
}

const BITS: Readonly<Record<IPFamily, number>> = { IPv4: 32, IPv6: 128 };

function toBigInt(ip: string): bigint {
  let n = 0n;
  for (const b of ipaddr.parse(ip).toByteArray()) n = (n << 8n) | BigInt(b);
  return n;
}

function fromBigInt(n: bigint, family: IPFamily): string {
  const bytes: number[] = [];
  for (let i = 0; i < BITS[family] / 8; i++) {
    bytes.unshift(Number(n & 0xffn));
    n >>= 8n;
  }
  const addr = ipaddr.fromByteArray(bytes);
  return addr.kind() === 'ipv6' ? (addr as ipaddr.IPv6).toRFC5952String() : addr.toString();
}

/** A canonical CIDR as a range. */
export function cidrRange(cidr: string, family: IPFamily): AddressRange {
  const [net, len] = cidr.split('/');
  const hostBits = BigInt(BITS[family] - Number(len));
  const first = toBigInt(net!);
  return { first, last: first + (1n << hostBits) - 1n };
}

/** Sorted, merged (touching ranges joined). */
export function mergeRanges(ranges: readonly AddressRange[]): AddressRange[] {
  const sorted = [...ranges].sort((a, b) => (a.first < b.first ? -1 : a.first > b.first ? 1 : 0));
  const out: AddressRange[] = [];
  for (const r of sorted) {
    const last = out[out.length - 1];
    if (last && r.first <= last.last + 1n) {
      if (r.last > last.last) out[out.length - 1] = { first: last.first, last: r.last };
    } else out.push(r);
  }
  return out;
}

/** `ranges` minus `holes` (both merged). */
export function subtractRanges(
  ranges: readonly AddressRange[],
  holes: readonly AddressRange[],
): AddressRange[] {
  let out = [...ranges];
  for (const h of holes) {
    const next: AddressRange[] = [];
    for (const r of out) {
      if (h.last < r.first || h.first > r.last) {
        next.push(r);
        continue;
      }
      if (h.first > r.first) next.push({ first: r.first, last: h.first - 1n });
      if (h.last < r.last) next.push({ first: h.last + 1n, last: r.last });
    }
    out = next;
  }
  return out;
}

/** The fewest CIDRs covering exactly the (merged) ranges, in address order. */
export function rangesToCidrs(ranges: readonly AddressRange[], family: IPFamily): string[] {
  const bits = BITS[family];
  const out: string[] = [];
  for (const { first, last } of ranges) {
    let cur = first;
    while (cur <= last) {
      // The largest aligned block starting at `cur` that fits.
      let size = 0;
      while (size < bits) {
        const next = size + 1;
        const mask = (1n << BigInt(next)) - 1n;
        if ((cur & mask) !== 0n || cur + mask > last) break;
        size = next;
      }
      out.push(`${fromBigInt(cur, family)}/${bits - size}`);
      cur += 1n << BigInt(size);
    }
  }
  return out;
}

/** The addresses a set of ipBlocks admits, per family: ∪ (cidr − ∪ except), as disjoint CIDRs. */
export function ipBlockCidrs(blocks: readonly IPBlock[]): Map<IPFamily, string[]> {
  const byFamily = new Map<IPFamily, AddressRange[]>();
  for (const b of blocks) {
    const holes = mergeRanges(b.except.map((e) => cidrRange(e, b.family)));
    const kept = subtractRanges([cidrRange(b.cidr, b.family)], holes);
    const list = byFamily.get(b.family) ?? [];
    list.push(...kept);
    byFamily.set(b.family, list);
  }
  const out = new Map<IPFamily, string[]>();
  for (const [family, ranges] of byFamily) out.set(family, rangesToCidrs(mergeRanges(ranges), family));
  return out;
}

/** Whether `ip` (canonical) is inside the canonical CIDR. */
export function cidrHas(cidr: string, family: IPFamily, ip: string): boolean {
  if (ipFamilyOf(ip) !== family) return false;
  const r = cidrRange(cidr, family);
  const n = toBigInt(ip);
  return n >= r.first && n <= r.last;
}
