/**
 * The masquerade mark of --masquerade-bit as kube-proxy's iptables and IPVS modes write it (Go's
 * `fmt.Sprintf("%#08x", 1<<bit)`: Go zero-pads the digits to 8 and then adds `0x`).
 */
export function masqueradeMark(bit: number): string {
  return '0x' + (2 ** bit).toString(16).padStart(8, '0');
}
