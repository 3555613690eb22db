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

export function levelForVerbosity(v: number): string {
  if (v >= 5) return 'debug';
  if (v >= 2) return 'verbose';
  return 'info';
}

export const log = winston.createLogger({
  level: process.env.SVCPLANE_LOG_LEVEL ?? 'info',
  format: winston.format.combine(serializeErrors(), winston.format.timestamp(), winston.format.json()),
  transports: [
    new winston.transports.Console({ stderrLevels: ['error', 'warn', 'info', 'verbose', 'debug'] }),
  ],
});

export function setVerbosity(v: number): void {
  log.level = levelForVerbosity(v);
}
