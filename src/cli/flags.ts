import { InvalidArgumentError, type Command } from 'commander';

/**
 * kube-proxy-style flag parsing: `--flag=value` and `--flag value`; booleans accept a bare `--flag`
 * and `--flag=true|false`; durations like `1s`, `500ms`, `1m30s`, `0s`; lists comma-separated.
 */

const DURATION_UNITS: Record<string, number> = {
  ns: 1e-6,
  us: 1e-3,
  µs: 1e-3,
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
};

/** Go's time.ParseDuration, in milliseconds. */
export function parseDuration(text: string): number {
  const t = text.trim();
  if (t === '0') return 0;
  const re = /(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)/y;
  let total = 0;
  let i = 0;
  let sign = 1;
  if (t.startsWith('-') || t.startsWith('+')) {
    sign = t.startsWith('-') ? -1 : 1;
    i = 1;
  }
  if (i >= t.length) throw new InvalidArgumentError(`invalid duration "${text}"`);
  while (i < t.length) {
    re.lastIndex = i;
    const m = re.exec(t);
    if (!m) throw new InvalidArgumentError(`invalid duration "${text}" (use e.g. 1s, 500ms, 1m30s)`);
    total += Number.parseFloat(m[1]!) * DURATION_UNITS[m[2]!]!;
    i = re.lastIndex;
  }
  if (sign < 0) throw new InvalidArgumentError(`invalid duration "${text}": must not be negative`);
  return total;
}

export function parseBool(text: string | boolean | undefined): boolean {
  if (text === undefined || text === true) return true;
  if (text === false) return false;
  const t = text.toLowerCase();
  if (['true', '1', 't'].includes(t)) return true;
  if (['false', '0', 'f'].includes(t)) return false;
  throw new InvalidArgumentError(`invalid boolean "${text}" (use true or false)`);
}

export function parseList(text: string, previous: string[] = []): string[] {
  return [
    ...previous,
    ...text
      .split(',')
      .map((s) => s.trim())
      .filter((s) => s !== ''),
  ];
}

export function parseIntInRange(min: number, max: number): (text: string) => number {
  return (text: string) => {
    if (!/^\d+$/.test(text.trim())) throw new InvalidArgumentError(`"${text}" is not an integer`);
    const n = Number.parseInt(text, 10);
    if (n < min || n > max) throw new InvalidArgumentError(`${n} is outside ${min}..${max}`);
    return n;
  };
}

/** A boolean flag in kube-proxy style: bare means true, `=false` means false. */
export function boolOption(cmd: Command, flag: string, description: string, dflt: boolean): Command {
  return cmd.option(`--${flag} [bool]`, `${description} (default ${String(dflt)})`, parseBool);
}
