import { parseGoDuration } from './duration.js';
import { attributeName, type FlagSpec } from './flags.js';

/**
 * A command line read the way kube-proxy's (pflag, through component-base) reads it: `--flag=value`,
 * `--flag value`, a bare boolean `--flag` or `--flag=false`, `-v=2` / `-v 2` / `-v2`, `_` and `-`
 * alike in names, `--` ending the flags, repeated list flags appending. Pure: text in, typed values
 * out, or a FlagError naming the flag and the reason.
 */

export class FlagError extends Error {
  constructor(
    /** `--name` as the user wrote it (or the spec's long form). */
    readonly flag: string,
    readonly reason: string,
  ) {
    super(`${flag}: ${reason}`);
    this.name = 'FlagError';
  }
}

export interface ParsedCommandLine {
  /** Typed values by attribute name (`iptablesSyncPeriod`); durations in ms, lists as arrays. */
  readonly values: Readonly<Record<string, unknown>>;
  /** Long names of the flags given on the command line, in order of first appearance. */
  readonly given: readonly string[];
  /** Arguments that are not flags. */
  readonly positionals: readonly string[];
}

const BOOL_TRUE = new Set(['1', 't', 'T', 'true', 'TRUE', 'True']);
const BOOL_FALSE = new Set(['0', 'f', 'F', 'false', 'FALSE', 'False']);

/** Go's strconv.ParseBool. */
export function parseGoBool(text: string): boolean | undefined {
  if (BOOL_TRUE.has(text)) return true;
  if (BOOL_FALSE.has(text)) return false;
  return undefined;
}

/** Go's strconv.ParseInt(text, 0, 32): decimal, 0x, 0o, 0b, leading sign, `_` separators. */
function parseGoInt(text: string): number | undefined {
  const m = /^([+-]?)(0[xX][0-9a-fA-F_]+|0[oO]?[0-7_]+|0[bB][01_]+|[1-9][0-9_]*|0)$/.exec(text);
  if (!m) return undefined;
  let body = (m[2] ?? '').replaceAll('_', '');
  if (/^0[0-7]/.test(body)) body = `0o${body.slice(1)}`;
  const n = Number(body);
  if (!Number.isSafeInteger(n)) return undefined;
  return m[1] === '-' ? -n : n;
}

/** Converts one flag's text to its typed value; throws FlagError. */
export function flagValue(spec: FlagSpec, text: string, flag = `--${spec.name}`): unknown {
  const bad = (why: string): never => {
    throw new FlagError(flag, `invalid value ${JSON.stringify(text)}: ${why}`);
  };
  switch (spec.kind) {
    case 'string':
      return text;
    case 'bool': {
      const b = parseGoBool(text);
      return b ?? bad('expected true or false');
    }
    case 'int': {
      const n = parseGoInt(text.trim());
      if (n === undefined) return bad('expected an integer');
      const min = spec.min ?? -2147483648;
      const max = spec.max ?? 2147483647;
      if (n < min || n > max) return bad(`must be within [${min}, ${max}]`);
      return n;
    }
    case 'float': {
      const t = text.trim();
      const n = Number(t);
      if (t === '' || !Number.isFinite(n)) return bad('expected a number');
      return n;
    }
    case 'duration': {
      let ms: number;
      try {
        ms = parseGoDuration(text.trim());
      } catch (err) {
        return bad((err as Error).message.replace(/^invalid duration "[^"]*": /, ''));
      }
      if (ms < 0) return bad('must not be negative');
      return ms;
    }
    case 'list':
      return text
        .split(',')
        .map((s) => s.trim())
        .filter((s) => s !== '');
    case 'map': {
      const out: Record<string, boolean> = {};
      for (const pair of text.split(',').map((s) => s.trim())) {
        if (pair === '') continue;
        const eq = pair.indexOf('=');
        if (eq <= 0) return bad(`"${pair}" is not key=true|false`);
        const v = parseGoBool(pair.slice(eq + 1).trim());
        if (v === undefined) return bad(`"${pair}": the value must be true or false`);
        out[pair.slice(0, eq).trim()] = v;
      }
      return out;
    }
  }
}

/** Parses `args` (without the program and subcommand names) against `specs`. Throws FlagError. */
export function parseCommandLine(args: readonly string[], specs: readonly FlagSpec[]): ParsedCommandLine {
  const byLong = new Map(specs.map((s) => [s.name, s]));
  const byShort = new Map(specs.filter((s) => s.short).map((s) => [s.short!, s]));
  const values: Record<string, unknown> = {};
  const given: string[] = [];
  const positionals: string[] = [];

  const set = (spec: FlagSpec, text: string, flag: string): void => {
    const key = attributeName(spec.name);
    const v = flagValue(spec, text, flag);
    const prev = values[key];
    if (spec.kind === 'list' && Array.isArray(prev))
      values[key] = [...(prev as unknown[]), ...(v as unknown[])];
    else if (spec.kind === 'map' && typeof prev === 'object' && prev !== null)
      values[key] = { ...prev, ...(v as object) };
    else values[key] = v;
    if (!given.includes(spec.name)) given.push(spec.name);
  };

  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === '--') {
      positionals.push(...args.slice(i + 1));
      break;
    }
    if (!arg.startsWith('-') || arg === '-') {
      positionals.push(arg);
      continue;
    }
    const long = arg.startsWith('--');
    const body = arg.slice(long ? 2 : 1);
    const eq = body.indexOf('=');
    let name = eq >= 0 ? body.slice(0, eq) : body;
    let inline = eq >= 0 ? body.slice(eq + 1) : undefined;
    let spec: FlagSpec | undefined;
    if (long) {
      name = name.replaceAll('_', '-');
      spec = byLong.get(name);
      if (!spec) throw new FlagError(`--${name}`, 'unknown flag');
    } else {
      // -v2 is -v with the value 2 (pflag shorthand).
      spec = byShort.get(name.charAt(0));
      if (!spec) throw new FlagError(`-${name.charAt(0)}`, 'unknown shorthand flag');
      if (inline === undefined && name.length > 1) inline = name.slice(1);
      name = spec.name;
    }
    const flag = long ? `--${name}` : `-${spec.short ?? ''}`;
    if (inline !== undefined) {
      set(spec, inline, flag);
    } else if (spec.kind === 'bool') {
      set(spec, 'true', flag);
    } else {
      const next = args[i + 1];
      if (next === undefined) throw new FlagError(flag, 'needs a value');
      set(spec, next, flag);
      i++;
    }
  }
  return { values, given, positionals };
}
