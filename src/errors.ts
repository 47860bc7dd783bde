/**
 * The one error registry of Portcullis.
 *
 * Every failure that ends a request or a connection is a {@link GatewayError} carrying a code from
 * {@link ErrorCode}. One table ({@link ERRORS}) maps each code to the HTTP status the client sees, the
 * RFC 6750 `error` value where one applies, and the short public message. The peer only ever gets that
 * generic message; the reason (the code and an internal detail) goes to the log and the metrics.
 */

/** Static facts about one error code. */
export interface ErrorSpec {
  /** HTTP status returned to the client. */
  readonly status: number;
  /** Public, generic message: never names a secret, a path on disk, or why a signature failed. */
  readonly message: string;
  /** RFC 6750 §3.1 error code for the `WWW-Authenticate: Bearer` challenge, when one applies. */
  readonly bearerError?: 'invalid_request' | 'invalid_token' | 'insufficient_scope';
  /** Whether a `WWW-Authenticate: Bearer` challenge is sent (RFC 6750 §3). */
  readonly challenge?: boolean;
}

/** An answer that carries a `WWW-Authenticate: Bearer` challenge (RFC 6750 §3), with its §3.1 error if any. */
function bearer(status: number, message: string, bearerError?: ErrorSpec['bearerError']): ErrorSpec {
  return bearerError === undefined
    ? { status, message, challenge: true }
    : { status, message, challenge: true, bearerError };
}

/** The table code → answer. Codes are `ERR_<STAGE>_<REASON>` and are API: tests and log queries use them. */
export const ERRORS = {
  // connection policy (require-encryption)
  ERR_POLICY_PLAINTEXT: { status: 400, message: 'This port speaks TLS only; connect with https://.' },
  // request well-formedness (RFC 9110 / 9112 / 9113)
  ERR_REQUEST_BAD_PATH: { status: 400, message: 'Bad request: the request target is not acceptable.' },
  ERR_REQUEST_BAD_HOST: { status: 400, message: 'Bad request: the Host header is missing or malformed.' },
  ERR_REQUEST_BAD_HEADER: { status: 400, message: 'Bad request: a header name or value is not acceptable.' },
  ERR_REQUEST_BAD_METHOD: { status: 400, message: 'Bad request: the request method is malformed.' },
  // CONNECT, TRACE and methods the gateway does not know: never forwarded (authz/methods.ts)
  ERR_REQUEST_METHOD_REFUSED: { status: 405, message: 'Method not allowed.' },
  ERR_REQUEST_HEADERS_TOO_LARGE: { status: 431, message: 'Request header fields too large.' },
  ERR_REQUEST_UPGRADE_REFUSED: { status: 400, message: 'Bad request: this protocol upgrade is not supported.' },
  ERR_REQUEST_BAD_WEBSOCKET: { status: 400, message: 'Bad request: invalid WebSocket handshake.' },
  ERR_REQUEST_BODY_TIMEOUT: { status: 408, message: 'Request timeout: the request body did not arrive in time.' },
  ERR_REQUEST_MISDIRECTED: {
    status: 421,
    message: 'Misdirected request: the Host does not match the TLS server name of this connection.',
  },
  // routing
  ERR_ROUTE_NOT_FOUND: { status: 404, message: 'Not found: no route matches this request.' },
  // a WebSocket upgrade carrying the session cookie from a page of another origin (cross-site WebSocket hijacking)
  ERR_REQUEST_CROSS_ORIGIN: { status: 403, message: 'Forbidden: a request from another origin.' },
  // peer identity (client certificates)
  ERR_IDENTITY_NO_CLIENT_CERT: { status: 403, message: 'Forbidden: a client certificate is required.' },
  ERR_IDENTITY_BAD_CLIENT_CERT: { status: 403, message: 'Forbidden: the client certificate was not accepted.' },
  ERR_IDENTITY_LISTENER_ACL: { status: 403, message: 'Forbidden: this client is not allowed here.' },
  // a client certificate forwarded by the proxy in front of a decision listener that its CRL revokes
  ERR_IDENTITY_REVOKED_CLIENT_CERT: { status: 403, message: 'Forbidden: the client certificate was not accepted.' },
  // a proxy's auth subrequest that does not describe the original request exactly once (decision listener)
  ERR_DECISION_BAD_SUBREQUEST: { status: 400, message: 'Bad request: the original request is not described.' },
  // authentication (RFC 6750)
  ERR_AUTHN_MISSING: bearer(401, 'Unauthorized: a Bearer token is required.'),
  ERR_AUTHN_MALFORMED: bearer(400, 'Bad request: malformed Authorization header.', 'invalid_request'),
  ERR_AUTHN_INVALID_TOKEN: bearer(401, 'Unauthorized: the token is not valid.', 'invalid_token'),
  ERR_AUTHN_UNAVAILABLE: { status: 503, message: 'Service unavailable: the identity provider did not answer.' },
  // browser sessions (OIDC login): a session cookie that names no live session of this listener
  ERR_AUTHN_SESSION_ENDED: {
    status: 401,
    message: 'Unauthorized: the session has ended; log in again.',
    challenge: true,
  },
  // the shared store (Redis) could not be read or written: never a pass, and never "no session" unless configured
  ERR_STORE_UNAVAILABLE: { status: 503, message: 'Service unavailable: session storage did not answer.' },
  // the login callback: no pre-login record for this browser, or a state that is not its own
  ERR_LOGIN_BAD_STATE: { status: 400, message: 'Bad request: this login cannot be completed; start again.' },
  // the identity provider refused, or its answer (code exchange, ID token) did not verify
  ERR_LOGIN_REJECTED: { status: 401, message: 'Unauthorized: the login was not accepted.' },
  // a back-channel logout token that did not verify (OpenID Back-Channel Logout 1.0 §2.8)
  ERR_LOGOUT_BAD_TOKEN: { status: 400, message: 'Bad request: the logout token was not accepted.' },
  // authorization
  ERR_AUTHZ_ROUTE_ACL: { status: 403, message: 'Forbidden: this client is not allowed on this route.' },
  // a method outside the route's `methods:` list
  ERR_AUTHZ_METHOD_NOT_ALLOWED: { status: 405, message: 'Method not allowed on this route.' },
  ERR_AUTHZ_INSUFFICIENT_SCOPE: bearer(
    403,
    'Forbidden: the token lacks a required scope or claim.',
    'insufficient_scope',
  ),
  // upstream
  ERR_UPSTREAM_UNAVAILABLE: { status: 502, message: 'Bad gateway: the upstream could not be reached.' },
  ERR_UPSTREAM_TLS: { status: 502, message: 'Bad gateway: the upstream TLS handshake failed.' },
  ERR_UPSTREAM_BAD_RESPONSE: { status: 502, message: 'Bad gateway: the upstream sent an invalid response.' },
  ERR_UPSTREAM_TIMEOUT: { status: 504, message: 'Gateway timeout: the upstream did not answer in time.' },
  // anything unexpected: still a denial, never a pass
  ERR_INTERNAL: { status: 500, message: 'Internal error.' },
} as const satisfies Record<string, ErrorSpec>;

/** Every error code Portcullis can answer with. */
export type ErrorCode = keyof typeof ERRORS;

/** The list of codes, for docs and metric label sets. */
export const ERROR_CODES = Object.keys(ERRORS) as readonly ErrorCode[];

/**
 * A request- or connection-ending failure. `detail` is for the log only and must never carry a secret
 * (no token, no key material); the client sees `ERRORS[code].message`.
 */
export class GatewayError extends Error {
  readonly code: ErrorCode;
  readonly detail: string | undefined;
  /** The `Allow` header of a 405 answer (RFC 9110 §15.5.6: a 405 MUST carry one). */
  readonly allow: string | undefined;

  constructor(code: ErrorCode, detail?: string, options?: { cause?: unknown; allow?: string }) {
    super(detail === undefined ? code : `${code}: ${detail}`, options);
    this.name = 'GatewayError';
    this.code = code;
    this.detail = detail;
    this.allow = options?.allow;
  }

  /** The HTTP status for this error. */
  get status(): number {
    return ERRORS[this.code].status;
  }
}

/** Wraps anything thrown into a GatewayError, failing closed to `ERR_INTERNAL`. */
export function toGatewayError(err: unknown): GatewayError {
  if (err instanceof GatewayError) return err;
  const detail = err instanceof Error ? `${err.name}: ${err.message}` : 'non-error thrown';
  return new GatewayError('ERR_INTERNAL', detail, { cause: err });
}

/** The realm of every challenge (RFC 6750 §3). */
export const BEARER_REALM = 'portcullis';

/**
 * The `WWW-Authenticate` value for an error code (RFC 6750 §3), or undefined when the code sends none.
 * `scope` (the route's required scopes, space-separated) is added to an `insufficient_scope` challenge
 * (RFC 6750 §3: "the scope necessary to access the protected resource"). Scope tokens never hold `"` or `\`
 * (RFC 6749 §3.3; the route schema refuses them), so the quoted-string needs no escaping.
 */
export function bearerChallenge(code: ErrorCode, scope?: string): string | undefined {
  const spec: ErrorSpec = ERRORS[code];
  if (spec.challenge !== true) return undefined;
  if (spec.bearerError === undefined) return `Bearer realm="${BEARER_REALM}"`;
  const scopePart =
    spec.bearerError === 'insufficient_scope' && scope !== undefined && scope !== ''
      ? `, scope="${scope}"`
      : '';
  return `Bearer realm="${BEARER_REALM}", error="${spec.bearerError}"${scopePart}`;
}

/**
 * A configuration error: names the key path, the value found and what was expected. The process exits
 * non-zero before it listens (at reload, the old config keeps serving).
 */
export class ConfigError extends Error {
  readonly path: string;
  readonly value: unknown;
  readonly expected: string;

  constructor(path: string, value: unknown, expected: string, options?: { cause?: unknown }) {
    super(`${path || '(root)'}: got ${describeValue(value)}; expected ${expected}`, options);
    this.name = 'ConfigError';
    this.path = path;
    this.value = value;
    this.expected = expected;
  }
}

/** A bounded, single-line rendering of a config value for an error message. */
export function describeValue(value: unknown): string {
  if (value === undefined) return 'nothing (the key is missing)';
  let text: string;
  try {
    text = JSON.stringify(value) ?? typeof value;
  } catch {
    text = `(unprintable ${typeof value})`;
  }
  return text.length > 120 ? `${text.slice(0, 117)}...` : text;
}
