/**
 * Credentials: what a request presents to prove who is calling, before anyone has checked it.
 * Authentication turns a {@link Credential} into a principal (principal.ts); a provider that does not
 * handle a credential's kind answers `not_applicable` and the chain asks the next one.
 *
 * Read from requests today: the Bearer token (RFC 6750) and, on a route with a browser login, the session
 * cookie (when there is no Bearer token). The other kinds are the shapes the next features fill in: a
 * DPoP-bound token (RFC 9449) and a client certificate forwarded by a trusted proxy (the decision listener).
 * They are part of the union now so that every provider and the chain already handle "not my kind" for them.
 */
import { GatewayError } from '../errors.js';
import { extractBearer, removeQueryToken, tokenHash } from './bearer.js';
import { readCookie, SESSION_COOKIE } from './session-cookie.js';

/** `Authorization: Bearer <token>` (or the RFC 6750 §2.3 query parameter where a route allows it). */
export interface BearerCredential {
  readonly kind: 'bearer';
  readonly token: string;
  /** SHA-256 hex of the token: the only cache key and log handle a token ever has. */
  readonly hash: string;
}

/** A browser session: the opaque id from the gateway's own `__Host-` cookie (never a token). */
export interface SessionCredential {
  readonly kind: 'session';
  /** SHA-256 hex of the session id (sessions are stored under it). */
  readonly hash: string;
  /** The session id itself (logout needs it); never logged, never a key. */
  readonly id: string;
  /** Where it was presented: a session is only good on the listener and origin that made it. */
  readonly listener: string;
  readonly origin: string;
}

/** `Authorization: DPoP <token>` with its `DPoP` proof (RFC 9449): the token is bound to the proof's key. */
export interface DpopCredential {
  readonly kind: 'dpop';
  readonly token: string;
  readonly hash: string;
  /** The compact JWS of the `DPoP` header, unverified. */
  readonly proof: string;
}

/** A client certificate a trusted proxy verified and forwarded (URL-escaped PEM in a configured header). */
export interface ForwardedCertificateCredential {
  readonly kind: 'forwarded-certificate';
  /** The PEM, unescaped, not yet verified against the listener's CA and CRL. */
  readonly pem: string;
}

/** Everything a request can present. */
export type Credential =
  | BearerCredential
  | SessionCredential
  | DpopCredential
  | ForwardedCertificateCredential;

/** The kinds of {@link Credential}. */
export type CredentialKind = Credential['kind'];

/** Makes the Bearer credential of a token (hashes it once). */
export function bearerCredential(token: string): BearerCredential {
  return { kind: 'bearer', token, hash: tokenHash(token) };
}

/** The parts of a checked request target a credential needs (listener/request-form.ts ResolvedRequest). */
export interface TargetParts {
  /** Normalized path plus the raw query. */
  readonly path: string;
  /** The normalized path alone. */
  readonly pathname: string;
  /** The raw query with its leading `?`, or ''. */
  readonly query: string;
}

/** Where a route reads credentials from (its `auth` block). */
export interface CredentialSources {
  /** RFC 6750 §2.3 `?access_token=` accepted (and removed from the forwarded path). */
  readonly allowQueryToken: boolean;
  /** A route with a browser login (`auth.login`) also reads the session cookie, when there is no Bearer token. */
  readonly sessionCookie?: boolean;
}

/** Where a request arrived, for a session credential (the listener's name and the request's origin). */
export interface CredentialSite {
  readonly listener: string;
  readonly origin: string;
}

/**
 * The credential of a request on a route with `auth`, and the path to forward (without `access_token` when
 * the token came from the query: RFC 6750 §5.3, a query token goes no further than the gateway).
 * @throws GatewayError `ERR_AUTHN_MALFORMED` (two Authorization headers, a query token on a route that does not
 *   allow one, a token that is not token68) or `ERR_AUTHN_MISSING` (no credential at all).
 */
export function credentialOf(
  sources: CredentialSources,
  rawHeaders: readonly string[],
  target: TargetParts,
  site?: CredentialSite,
): { readonly credential: Credential; readonly path: string } {
  const found = extractBearer(rawHeaders, target.query, sources.allowQueryToken);
  if ('none' in found) {
    // A Bearer token wins over the cookie: API clients on a login route authenticate as before.
    const id = sources.sessionCookie === true ? readCookie(rawHeaders, SESSION_COOKIE) : undefined;
    if (id === undefined || site === undefined) throw new GatewayError('ERR_AUTHN_MISSING');
    return { credential: { kind: 'session', hash: tokenHash(id), id, ...site }, path: target.path };
  }
  const path =
    sources.allowQueryToken && target.query !== ''
      ? target.pathname + removeQueryToken(target.query)
      : target.path;
  return { credential: bearerCredential(found.token), path };
}
