/**
 * The gateway's own cookies (browser login): the session cookie and the short-lived pre-login cookie.
 *
 * Both are `__Host-` prefixed, `Secure`, `HttpOnly`, `SameSite=Lax`, `Path=/` and hold only an opaque random
 * id (43 characters; never a token): the record it names lives in the store under the id's SHA-256, so a
 * cookie value is never a store key, a log field or a metric label. `SameSite=Lax` and not `Strict`: the
 * IdP's redirect back to the callback is a cross-site top-level navigation, which must carry the pre-login
 * cookie. Every cookie whose name starts with {@link GATEWAY_COOKIE_PREFIX} is the gateway's and is removed
 * from the `Cookie` header before a request goes upstream.
 */
import { randomBytes } from 'node:crypto';

/** The session cookie's name. `__Host-`: Secure, no Domain, Path=/ (RFC 6265bis §4.1.3.2). */
export const SESSION_COOKIE = '__Host-portcullis';
/** The pre-login cookie's name (state, nonce and PKCE verifier are in the record it names). */
export const LOGIN_COOKIE = '__Host-portcullis-login';
/** Every cookie of the gateway's starts with this. */
export const GATEWAY_COOKIE_PREFIX = '__Host-portcullis';

/** An opaque cookie id: 32 random bytes, base64url (256 bits). */
export function newCookieId(): string {
  return randomBytes(32).toString('base64url');
}

/** What a cookie id looks like: anything else is not ours (a tampered cookie is no cookie). */
const ID_RE = /^[A-Za-z0-9_-]{43}$/;

/**
 * The value of cookie `name` in a request's `Cookie` headers (several on HTTP/2, RFC 9113 §8.2.3), or undefined
 * when absent or not a well-formed id. The first occurrence wins: a `__Host-` cookie cannot be set twice for one
 * host and path, so a second one was not set by a browser for this site.
 */
export function readCookie(rawHeaders: readonly string[], name: string): string | undefined {
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const h = rawHeaders[i] as string;
    if (h.length !== 6 || h.toLowerCase() !== 'cookie') continue;
    for (const pair of (rawHeaders[i + 1] as string).split(';')) {
      const eq = pair.indexOf('=');
      if (eq === -1 || pair.slice(0, eq).trim() !== name) continue;
      const value = pair.slice(eq + 1).trim();
      return ID_RE.test(value) ? value : undefined;
    }
  }
  return undefined;
}

const ATTRIBUTES = 'Path=/; Secure; HttpOnly; SameSite=Lax';

/** `Set-Cookie` for cookie `name` holding `id` for `maxAgeSeconds`. */
export function setCookie(name: string, id: string, maxAgeSeconds: number): string {
  return `${name}=${id}; ${ATTRIBUTES}; Max-Age=${Math.max(0, Math.floor(maxAgeSeconds))}`;
}

/** `Set-Cookie` that removes cookie `name`. */
export function clearCookie(name: string): string {
  return `${name}=; ${ATTRIBUTES}; Max-Age=0`;
}

/**
 * A `Cookie` header value without the gateway's cookies (`''` when nothing else is left). Values without one
 * come back unchanged (same string), so the common case costs one substring search.
 */
export function withoutGatewayCookies(value: string): string {
  if (!value.includes(GATEWAY_COOKIE_PREFIX)) return value;
  return value
    .split(';')
    .filter((pair) => !pair.trim().startsWith(GATEWAY_COOKIE_PREFIX))
    .map((pair) => pair.trim())
    .filter((pair) => pair !== '')
    .join('; ');
}
