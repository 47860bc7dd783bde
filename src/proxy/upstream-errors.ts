/**
 * Maps an upstream failure (undici, TLS, DNS, socket) to the gateway's error code. Anything unknown is
 * a 502: the client never sees a stack trace, and a failure is never a pass.
 */
import { GatewayError, type ErrorCode } from '../errors.js';

const TIMEOUT_CODES = new Set(['UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'ETIMEDOUT']);
const TLS_CODE_RE = /CERT|SELF_SIGNED|UNABLE_TO_(GET|VERIFY)|ERR_TLS|ERR_SSL|HOSTNAME|ALTNAME|DEPTH_ZERO/;

/** The reason code for an upstream error. */
export function upstreamErrorCode(err: unknown): ErrorCode {
  const code = err && typeof err === 'object' && 'code' in err && typeof err.code === 'string' ? err.code : '';
  if (TIMEOUT_CODES.has(code)) return 'ERR_UPSTREAM_TIMEOUT';
  if (TLS_CODE_RE.test(code)) return 'ERR_UPSTREAM_TLS';
  if (code === 'UND_ERR_INFO' || code === 'HPE_INVALID_CONSTANT' || code.startsWith('HPE_') || code === 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH') {
    return 'ERR_UPSTREAM_BAD_RESPONSE';
  }
  // undici's parser destroys the connection with these for a response it refuses: a `100 Continue` to a
  // request that did not ask for one, an upgrade nobody asked for.
  if (code === 'UND_ERR_SOCKET' && err instanceof Error && (err.message === 'bad response' || err.message === 'bad upgrade')) {
    return 'ERR_UPSTREAM_BAD_RESPONSE';
  }
  const cause = err && typeof err === 'object' && 'cause' in err ? err.cause : undefined;
  if (cause !== undefined && cause !== err) {
    const inner = upstreamErrorCode(cause);
    if (inner !== 'ERR_UPSTREAM_UNAVAILABLE') return inner;
  }
  return 'ERR_UPSTREAM_UNAVAILABLE';
}

/** Wraps an upstream failure as a GatewayError with a log-only detail. */
export function toUpstreamError(err: unknown): GatewayError {
  const code = err && typeof err === 'object' && 'code' in err && typeof err.code === 'string' ? err.code : 'unknown';
  return new GatewayError(upstreamErrorCode(err), `upstream: ${code}`, { cause: err });
}
