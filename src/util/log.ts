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

/** `scheme://user:password@` anywhere in a text (a URL with credentials in it). */
const URL_USERINFO = /\b([a-z][a-z0-9+.-]*:\/\/)[^/?#\s@]*(?:@[^/?#\s@]*)*@/gi;

/** Removes the userinfo part of every URL in `text`. Pure. */
export function redactUrlCredentials(text: string): string {
  return text.replace(URL_USERINFO, '$1');
}

/**
 * Replaces secret-looking fields (at any depth, bounded) with "[redacted]" and strips credentials
 * from URLs in strings; pure, for the format and tests.
 */
export function redactSecrets(value: unknown, depth = 0): unknown {
  if (typeof value === 'string') return redactUrlCredentials(value);
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
