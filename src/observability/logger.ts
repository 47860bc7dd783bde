/**
 * Structured JSON logging (pino). The destination is asynchronous so that logging never blocks the
 * request path. Credentials are redacted by key wherever they might appear.
 */
import pino, { type Logger, type DestinationStream } from 'pino';

export type { Logger } from 'pino';

/** Keys whose values are never written, wherever they appear in a log object. */
export const REDACT_PATHS = [
  'authorization',
  'cookie',
  'token',
  'headers.authorization',
  'headers.cookie',
  'headers["proxy-authorization"]',
  '*.authorization',
  '*.cookie',
  '*.token',
];

/** Creates the process logger. `destination` is injected in tests; the default is async stdout. */
export function createLogger(level: string, destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: 'portcullis' },
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    destination ?? pino.destination({ dest: 1, sync: false, minLength: 0 }),
  );
}
