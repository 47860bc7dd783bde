/**
 * The access log: one JSON line per HTTP request (`msg: "request"`) and per piped TCP connection
 * (`msg: "tcp connection"`), the record an operator uses to prove who got in and who did not.
 *
 * What a line holds is fixed here, in one type, so that nothing else reaches it by accident: the path
 * without its query (a query may carry `access_token`), the client's address and port, the client
 * certificate's subject and SHA-256
 * fingerprint, the authenticated principal and its provider, the outcome and its reason code, and the
 * request id that also went upstream as `X-Request-Id`. Authorization, cookies, tokens and query strings
 * are never fields; a token is named only by the first 12 hex digits of its SHA-256 (`tokenHash`, what
 * `portcullis token list` shows).
 *
 * Lines go through the process logger, whose destination is asynchronous (observability/logger.ts):
 * writing one never blocks the request path. `log.access: false` silences the info lines; failures
 * (5xx, upstream errors) are still written at `warn`, since they are what an on-call engineer looks for.
 */
import type { Logger } from './logger.js';

/** How a request ended. */
export type AccessOutcome =
  /** Passed every check and the upstream's answer was relayed in full. */
  | 'forwarded'
  /** Refused by the gateway (form, route, client certificate, authentication, policy). */
  | 'denied'
  /** The upstream failed (502/504), before or during its answer. */
  | 'upstream_error'
  /** The client went away before the answer was complete. */
  | 'aborted'
  /** Answered by the gateway itself (a redirect, a page of its own), not forwarded. */
  | 'answered';

/** One access-log line of an HTTP request. Optional fields are left out of the line when absent. */
export interface AccessEntry {
  readonly listener: string;
  /** Route id; absent when the request was refused before a route was found. */
  readonly route?: string | undefined;
  readonly method: string | undefined;
  /** The normalized path (or, when the target was refused, its raw path part), never the query. */
  readonly path: string;
  /** The TCP peer's address and port (the connection's, as refusal lines carry them too). */
  readonly clientAddress: string;
  readonly clientPort: number | undefined;
  /** Status sent to the client; 0 when none was (the client left first). */
  readonly status: number;
  readonly durationMs: number;
  /** Request body bytes received from the client. */
  readonly bytesIn: number;
  /** Response body bytes sent to the client. */
  readonly bytesOut: number;
  /** Subject DN of the verified client certificate, when one was presented. */
  readonly clientSubject?: string | undefined;
  /** SHA-256 of the verified client certificate (lower-case hex). */
  readonly clientFingerprint?: string | undefined;
  /** Subject of the authenticated Bearer principal (routes with `auth`). */
  readonly principal?: string | undefined;
  /** The provider that vouched for the token (or refused it on policy). */
  readonly provider?: string | undefined;
  /** First 12 hex digits of SHA-256(token). */
  readonly tokenHash?: string | undefined;
  readonly outcome: AccessOutcome;
  /** The ERR_* code that ended the request, or `client_closed`; absent on a clean forward. */
  readonly reason?: string | undefined;
  /** Free-text detail of a refusal (never request data beyond its kind). */
  readonly detail?: string | undefined;
  /** X-Request-Id: the client's valid one, else generated. */
  readonly requestId: string;
  /** A WebSocket upgrade. */
  readonly upgrade?: true | undefined;
}

/** Writes access-log lines. */
export interface AccessLog {
  /** Whether a request that ended so gets a line: asked first, so that a line nobody writes is never built. */
  wants(status: number, outcome: AccessOutcome): boolean;
  /** Writes the line (at warn for failures, else at info). */
  write(entry: AccessEntry): void;
}

/** A failure: logged at warn, and even with the access log off (what an on-call engineer looks for). */
const isFailure = (status: number, outcome: AccessOutcome): boolean =>
  status >= 500 || outcome === 'upstream_error';

/** Creates the access log of an app: info lines when `enabled`, warn lines for failures always. */
export function createAccessLog(logger: Logger, enabled: boolean): AccessLog {
  return {
    wants: (status, outcome) => enabled || isFailure(status, outcome),
    write(entry) {
      if (isFailure(entry.status, entry.outcome)) logger.warn(entry, 'request');
      else if (enabled) logger.info(entry, 'request');
    },
  };
}

/** Longest path written to the log; a longer one is cut and marked with a trailing `…`. */
const MAX_LOGGED_PATH = 1024;

/**
 * The path to log for a request target: up to the first `?` or `#`, capped at {@link MAX_LOGGED_PATH}
 * characters. For targets that were refused before normalization; a routed request logs its normalized path.
 */
export function loggablePath(target: string | undefined): string {
  if (target === undefined) return '';
  let end = target.length;
  const q = target.indexOf('?');
  if (q !== -1) end = q;
  const h = target.indexOf('#');
  if (h !== -1 && h < end) end = h;
  return end > MAX_LOGGED_PATH ? `${target.slice(0, MAX_LOGGED_PATH)}…` : target.slice(0, end);
}
