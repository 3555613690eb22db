import winston from 'winston';

/**
 * Structured JSON logs. Errors are serialized with message, stack and any context fields
 * (winston would print `{}` for them otherwise). Verbosity follows kube-proxy's `-v`:
 * 0–1 info, 2–4 verbose, 5+ debug.
 */

const serializeErrors = winston.format((info) => {
  for (const [k, v] of Object.entries(info)) {
    if (v instanceof Error) {
      (info as Record<string, unknown>)[k] = { ...v, name: v.name, message: v.message, stack: v.stack };
    }
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

export function levelForVerbosity(v: number): string {
  if (v >= 5) return 'debug';
  if (v >= 2) return 'verbose';
  return 'info';
}

export const log = winston.createLogger({
  level: process.env.SVCPLANE_LOG_LEVEL ?? 'info',
  format: winston.format.combine(
    serializeErrors(),
    redact(),
    winston.format.timestamp(),
    winston.format.json(),
  ),
  transports: [
    new winston.transports.Console({ stderrLevels: ['error', 'warn', 'info', 'verbose', 'debug'] }),
  ],
});

export function setVerbosity(v: number): void {
  log.level = levelForVerbosity(v);
}
