import { hash } from 'node:crypto';

const BASE32_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

/**
 * The first `groups × 8` base32 characters (RFC 4648, standard alphabet, as Go's
 * base32.StdEncoding) of sha256(input): kube-proxy's chain-name hashes (iptables: 16 characters,
 * nftables: 8). Whole 5-byte groups only, so no padding is ever involved.
 */
export function sha256Base32(input: string, groups: 1 | 2): string {
  // One-shot crypto.hash: no Hash object per name (a 10k-Service render hashes 60k names).
  const d = hash('sha256', input, 'buffer');
  let out = '';
  // 5 bytes = 40 bits = 8 base32 digits; 40 bits fit a double exactly.
  for (let g = 0; g < groups * 5; g += 5) {
    let v = 0;
    for (let i = 0; i < 5; i++) v = v * 256 + (d[g + i] ?? 0);
    for (let shift = 35; shift >= 0; shift -= 5) {
      out += BASE32_ALPHABET[Math.floor(v / 2 ** shift) % 32];
    }
  }
  return out;
}
