/**
 * Go's `time.ParseDuration` (the syntax of every duration in KubeProxyConfiguration and kube-proxy's
 * flags), in milliseconds: `300ms`, `1.5h`, `1m30s`, `-2s`, `0`. Units: ns, us/µs/μs, ms, s, m, h.
 */

const UNIT_MS: Readonly<Record<string, number>> = {
  ns: 1e-6,
  us: 1e-3,
  µs: 1e-3,
  μs: 1e-3,
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
};

const PART = /^(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)/;

export function parseGoDuration(text: string): number {
  const invalid = (why: string): Error =>
    new Error(`invalid duration "${text}": ${why} (e.g. 1s, 500ms, 1m30s)`);
  let t = text;
  let sign = 1;
  if (t.startsWith('-') || t.startsWith('+')) {
    sign = t.startsWith('-') ? -1 : 1;
    t = t.slice(1);
  }
  if (t === '0') return 0;
  if (t === '') throw invalid('empty');
  let total = 0;
  while (t !== '') {
    const m = PART.exec(t);
    if (!m) {
      throw invalid(/^\d+\.?\d*$/.test(t) ? `missing unit after "${t}"` : `unexpected "${t}"`);
    }
    total += Number(m[1]) * UNIT_MS[m[2]!]!;
    t = t.slice(m[0].length);
  }
  return sign * total;
}

/** Formats milliseconds the way Go prints a Duration (`1m30s`, `500ms`, `0s`), for messages. */
export function formatGoDuration(ms: number): string {
  if (ms === 0) return '0s';
  const sign = ms < 0 ? '-' : '';
  let rest = Math.abs(ms);
  if (rest < 1000) return `${sign}${rest}ms`;
  const h = Math.floor(rest / 3_600_000);
  rest -= h * 3_600_000;
  const m = Math.floor(rest / 60_000);
  rest -= m * 60_000;
  const s = rest / 1000;
  return `${sign}${h > 0 ? `${h}h` : ''}${h > 0 || m > 0 ? `${m}m` : ''}${s}s`;
}
