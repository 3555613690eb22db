import { InvalidArgumentError, type Command } from 'commander';
import { parseGoDuration } from '../config/duration.js';

/**
 * kube-proxy-style flag parsing: `--flag=value` and `--flag value`; booleans accept a bare `--flag`
 * and `--flag=true|false`; durations like `1s`, `500ms`, `1m30s`, `0s`; lists comma-separated.
 */

/**
 * A duration flag (Go's time.ParseDuration syntax, shared with the configuration file), in
 * milliseconds; negative values are rejected.
 */
export function parseDuration(text: string): number {
  let ms: number;
  try {
    ms = parseGoDuration(text.trim());
  } catch (err) {
    throw new InvalidArgumentError(err instanceof Error ? err.message : String(err));
  }
  if (ms < 0) throw new InvalidArgumentError(`invalid duration "${text}": must not be negative`);
  return ms;
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
