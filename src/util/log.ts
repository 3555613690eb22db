import winston from 'winston';

/**
 * Logs as kube-proxy writes them: `--logging-format=text` (the default; one klog-style line per
 * message, `I1206 09:35:51.123456   4242 svcplane] "message" key="value"`) or `json` (one object per
 * line: level, message, timestamp and the fields). `-v` means what it means for kube-proxy: 0 start-up,
 * changes and problems; 2 every sync (log.verbose); 4 details and error stack traces (log.debug).
 * Below -v=4 an error is its message only: an expected failure stays one line. Credentials are
 * redacted from both formats, by field name and by content.
 */

export type LogFormat = 'text' | 'json';

export interface LogSettings {
  readonly format: LogFormat;
  readonly verbosity: number;
  /** Info lines to stdout, warnings and errors to stderr (default: everything to stderr). */
  readonly splitStream: boolean;
}

let settings: LogSettings = { format: 'text', verbosity: 0, splitStream: false };

/** kube-proxy's verbosity where stack traces appear. */
export const STACK_VERBOSITY = 4;

/** An Error as a plain object: its message and context fields, the stack only at -v=4 and above. */
function errorFields(e: Error, depth = 0): Record<string, unknown> {
  const out: Record<string, unknown> = { ...e, name: e.name, message: e.message };
  if (settings.verbosity >= STACK_VERBOSITY && e.stack) out.stack = e.stack;
  if (e.cause instanceof Error && depth < 3) out.cause = errorFields(e.cause, depth + 1);
  return out;
}

const serializeErrors = winston.format((info) => {
  for (const [k, v] of Object.entries(info)) {
    if (v instanceof Error) (info as Record<string, unknown>)[k] = errorFields(v);
  }
  return info;
});

/** Field names whose values never reach a log line (credentials in a kubeconfig, headers …). */
const SECRET_KEY = /token|password|secret|authorization|bearer|credential|client-?key|private-?key/i;

/**
 * Credentials found by their shape, anywhere in a text. Every pattern is linear in the text's length:
 * a match can only start where a token starts (a lookbehind rules out the middle of a run), its
 * repetitions are bounded or end at a character they cannot contain, so no start re-scans a long run
 * (the former URL pattern took seconds on 80 KB of "a.a.a…": every character was a scheme start).
 */
const CONTENT_RULES: readonly (readonly [RegExp, string])[] = [
  // A PEM private key, to its END line (or the end of the text).
  [
    /-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY-----(?:(?!-----END)[\s\S])*(?:-----END [A-Z0-9 ]{0,40}PRIVATE KEY-----)?/g,
    '[redacted private key]',
  ],
  // `scheme://user:password@host`: the userinfo goes.
  [/(?<![a-z0-9+.-])([a-z][a-z0-9+.-]{0,31}:\/\/)[^\s/?#]*@/gi, '$1'],
  // `Bearer <token>`, `Basic <base64>` (Authorization headers, error messages quoting them).
  [/\b(Bearer|Basic)\s{1,8}(?!\[redacted)[A-Za-z0-9._~+/=-]{4,}/gi, '$1 [redacted]'],
  // JWTs (service-account and OIDC tokens): header.payload.signature, base64url.
  [/(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*/g, '[redacted jwt]'],
  // kubeadm bootstrap tokens: [a-z0-9]{6}.[a-z0-9]{16}.
  [/(?<![A-Za-z0-9.])[a-z0-9]{6}\.[a-z0-9]{16}(?![A-Za-z0-9.])/g, '[redacted]'],
  // key=value, key: value, "key":"value" for secret-looking keys (refresh_token=, client_secret=,
  // password=, api_key=, Authorization: …).
  [
    /(?<![A-Za-z0-9])((?:[A-Za-z0-9]{1,32}[_-])?(?:token|password|passwd|pwd|secret|apikey|api[_-]key|private[_-]key|credentials?|authorization|cookie))(["']?\s{0,4}[:=]\s{0,4}["']?)(?!\[redacted)[^\s"'&,;)}\]]+/gi,
    '$1$2[redacted]',
  ],
];

/** Removes the userinfo part of every URL in `text`. Pure. */
export function redactUrlCredentials(text: string): string {
  return text.replace(CONTENT_RULES[1]![0], '$1');
}

/** Replaces credentials found by their shape (see CONTENT_RULES) in `text`. Pure, linear time. */
export function redactText(text: string): string {
  let out = text;
  for (const [re, replacement] of CONTENT_RULES) out = out.replace(re, replacement);
  return out;
}

/**
 * Replaces secret-looking fields (at any depth, bounded) with "[redacted]" and credentials found by
 * their shape in strings; pure, for the format and tests.
 */
export function redactSecrets(value: unknown, depth = 0): unknown {
  if (typeof value === 'string') return redactText(value);
  if (depth > 6 || value === null || typeof value !== 'object') return value;
  if (Array.isArray(value)) return value.map((v) => redactSecrets(v, depth + 1));
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) {
    out[k] = SECRET_KEY.test(k) ? '[redacted]' : redactSecrets(v, depth + 1);
  }
  return out;
}

const redact = winston.format((info) => {
  const rec = info as Record<string, unknown>;
  for (const [k, v] of Object.entries(rec)) {
    if (SECRET_KEY.test(k)) rec[k] = '[redacted]';
    else if (typeof v === 'string' || (v !== null && typeof v === 'object')) rec[k] = redactSecrets(v);
  }
  return info;
});

/** winston's level for a kube-proxy verbosity: info (0-1), verbose (2-3), debug (4+). */
export function levelForVerbosity(v: number): string {
  if (v >= STACK_VERBOSITY) return 'debug';
  if (v >= 2) return 'verbose';
  return 'info';
}

const SEVERITY: Readonly<Record<string, string>> = { error: 'E', warn: 'W' };

function two(n: number): string {
  return String(n).padStart(2, '0');
}

/** Now, in microseconds since the epoch (klog's timestamps have microseconds). */
function nowMicros(): number {
  return Math.round((performance.timeOrigin + performance.now()) * 1000);
}

/** klog's header: Lmmdd hh:mm:ss.uuuuuu threadid file] (local time, as klog). */
function klogHeader(level: string, micros: number): string {
  const at = new Date(Math.floor(micros / 1000));
  const frac = String(micros % 1_000_000).padStart(6, '0');
  const date = `${two(at.getMonth() + 1)}${two(at.getDate())}`;
  const time = `${two(at.getHours())}:${two(at.getMinutes())}:${two(at.getSeconds())}.${frac}`;
  return `${SEVERITY[level] ?? 'I'}${date} ${time} ${String(process.pid).padStart(7)} svcplane]`;
}

/** A value as klog's text format writes it: strings quoted, numbers and booleans bare, objects as JSON. */
function klogValue(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'number' || typeof v === 'boolean' || v === null || v === undefined) return String(v);
  if (
    typeof v === 'object' &&
    'message' in v &&
    typeof v.message === 'string' &&
    Object.keys(v).length <= 3
  ) {
    // An error without context fields reads as its message, as klog's err="…".
    const e = v as { message: string; stack?: string };
    return JSON.stringify(e.stack ?? e.message);
  }
  return JSON.stringify(v);
}

/** One klog-style line (pure given `micros`, the time in microseconds since the epoch). */
export function formatTextLine(info: Readonly<Record<string, unknown>>, micros = nowMicros()): string {
  const { level, message, timestamp: _t, ...fields } = info;
  const parts = [klogHeader(String(level), micros), JSON.stringify(String(message))];
  for (const [k, v] of Object.entries(fields)) {
    if (v === undefined || typeof k === 'symbol') continue;
    parts.push(`${k}=${klogValue(v)}`);
  }
  return parts.join(' ');
}

const text = winston.format((info) => {
  const rec = info as Record<string | symbol, unknown>;
  const plain: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(info)) plain[k] = v;
  rec[Symbol.for('message')] = formatTextLine(plain);
  return info;
});

function formatFor(format: LogFormat): winston.Logform.Format {
  return winston.format.combine(
    serializeErrors(),
    redact(),
    ...(format === 'json' ? [winston.format.timestamp(), winston.format.json()] : [text()]),
  );
}

function transportFor(split: boolean): winston.transport {
  return new winston.transports.Console({
    stderrLevels: split ? ['error', 'warn'] : ['error', 'warn', 'info', 'verbose', 'debug'],
  });
}

export const log = winston.createLogger({
  level: process.env.SVCPLANE_LOG_LEVEL ?? 'info',
  format: formatFor(settings.format),
  transports: [transportFor(false)],
});

/** Applies --logging-format, -v and --log-*-split-stream (SVCPLANE_LOG_LEVEL, when set, wins over -v). */
export function configureLogging(next: Partial<LogSettings>): void {
  const before = settings;
  settings = { ...settings, ...next };
  if (settings.format !== before.format) log.format = formatFor(settings.format);
  if (settings.splitStream !== before.splitStream) {
    log.clear();
    log.add(transportFor(settings.splitStream));
  }
  log.level = process.env.SVCPLANE_LOG_LEVEL ?? levelForVerbosity(settings.verbosity);
}

export function setVerbosity(v: number): void {
  configureLogging({ verbosity: v });
}

/** The verbosity in effect (-v). */
export function logVerbosity(): number {
  return settings.verbosity;
}
