/**
 * Structured JSON logging (pino). The destination is asynchronous so that logging never blocks the
 * request path, and bounded so that a stalled reader of stdout (a full pipe, a stuck log shipper) costs
 * dropped lines, never unbounded memory. Credentials are redacted by key wherever they might appear.
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

/**
 * Most bytes of log lines held in memory while the destination does not take them (16 MiB: some 35,000
 * access lines, seconds of a burst). Past it, new lines are dropped and counted until the backlog is
 * written, then one `log lines dropped` warn line says how many went. Without a bound, SonicBoom's
 * asynchronous buffer grows for as long as stdout is stalled, until the process runs out of memory.
 */
export const LOG_BUFFER_MAX_BYTES = 16 * 1024 * 1024;

/** An asynchronous, bounded log destination. */
export interface LogDestination extends DestinationStream {
  /** Lines dropped since the destination was created because its buffer was full. */
  droppedLines(): number;
}

/**
 * An asynchronous destination on file descriptor `fd` (SonicBoom, pino.destination) holding at most
 * `maxBytes` of unwritten lines; the process logger's default is stdout with {@link LOG_BUFFER_MAX_BYTES}.
 * Writing never blocks the event loop: a full pipe leaves lines in the buffer (EAGAIN is retried every
 * 100 ms). A write error (EPIPE: the reader went away) is swallowed: an unhandled stream `error` would
 * become an uncaught exception whose own log line hits the same error, over and over.
 */
export function createLogDestination(fd = 1, maxBytes = LOG_BUFFER_MAX_BYTES): LogDestination {
  const dest = pino.destination({ dest: fd, sync: false, minLength: 0, maxLength: maxBytes });
  let dropped = 0;
  let pending = 0;
  dest.on('drop', () => {
    dropped++;
    pending++;
  });
  // 'drain': everything buffered was written. Say how many lines were lost, in the logger's own format
  // (written raw: the count must not itself depend on the logger's level).
  dest.on('drain', () => {
    if (pending === 0) return;
    const n = pending;
    pending = 0;
    dest.write(
      `${JSON.stringify({ level: 'warn', time: new Date().toISOString(), service: 'portcullis', dropped: n, msg: 'log lines dropped' })}\n`,
    );
  });
  dest.on('error', () => undefined);
  return Object.assign(dest, { droppedLines: () => dropped });
}

/** Creates the process logger. `destination` is injected in tests; the default is {@link createLogDestination}. */
export function createLogger(level: string, destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: 'portcullis' },
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    destination ?? createLogDestination(),
  );
}
