/**
 * The input checks of every rule renderer (iptables, nftables). The model validates everything
 * already; these cheap character scans (no regexes, they run per object in the hot loop) guarantee a
 * renderer can never emit a newline, a quote, a space or an option from object text whatever it is
 * handed.
 */

function isHexOrDigit(c: number): boolean {
  return (c >= 48 && c <= 57) || (c >= 97 && c <= 102) || (c >= 65 && c <= 70);
}

/** Canonical-looking IP text of the given family: digits/dots (IPv4) or hex/colons/dots (IPv6). */
export function isSafeIP(text: string, v6: boolean): boolean {
  const n = text.length;
  if (n < 2 || n > 45) return false;
  let colons = 0;
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i);
    if (c === 58) colons++;
    else if (c === 46) continue;
    else if (v6 ? !isHexOrDigit(c) : c < 48 || c > 57) return false;
  }
  return v6 ? colons >= 2 : colons === 0;
}

/** `ip/len` with a safe IP and a 1–3 digit prefix length. */
export function isSafeCIDR(text: string, v6: boolean): boolean {
  const slash = text.indexOf('/');
  if (slash <= 0) return false;
  const len = text.length - slash - 1;
  if (len < 1 || len > 3) return false;
  for (let i = slash + 1; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 48 || c > 57) return false;
  }
  const bits = Number(text.slice(slash + 1));
  return bits <= (v6 ? 128 : 32) && isSafeIP(text.slice(0, slash), v6);
}

/** ServicePortName text: DNS labels, `/` and `:` only (it appears unquoted in comments). */
export function isSafeServicePortName(text: string): boolean {
  const n = text.length;
  if (n < 3 || n > 512) return false;
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i);
    const ok =
      (c >= 97 && c <= 122) ||
      (c >= 65 && c <= 90) ||
      (c >= 48 && c <= 57) ||
      c === 45 || // -
      c === 46 || // .
      c === 95 || // _
      c === 47 || // /
      c === 58; // :
    if (!ok) return false;
  }
  return text.charCodeAt(0) !== 45;
}

/** Interface name or prefix (IFNAMSIZ 16 incl. NUL); no leading dash so it can't look like an option. */
export function isSafeInterfaceName(text: string): boolean {
  const n = text.length;
  if (n < 1 || n > 15 || text.charCodeAt(0) === 45) return false;
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i);
    const ok =
      (c >= 97 && c <= 122) ||
      (c >= 65 && c <= 90) ||
      (c >= 48 && c <= 57) ||
      c === 45 ||
      c === 46 ||
      c === 95;
    if (!ok) return false;
  }
  return true;
}

export function isPort(n: number): boolean {
  return Number.isInteger(n) && n >= 1 && n <= 65535;
}
