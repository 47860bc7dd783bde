/**
 * The method policy: which request methods the gateway forwards at all, and which ones a route allows.
 *
 * - A method that is not an RFC 9110 §5.6.2 token is malformed: 400 `ERR_REQUEST_BAD_METHOD`. Node's
 *   HTTP/1.1 parser refuses those itself (and every method it does not know); over HTTP/2 any token reaches
 *   the gateway, and nghttp2 resets the stream of a `:method` with a byte outside tchar.
 * - `CONNECT` and `TRACE` are never forwarded: 405 `ERR_REQUEST_METHOD_REFUSED`. CONNECT asks for a tunnel
 *   to any host (RFC 9110 §9.3.6; the gateway is no forward proxy; it does not advertise HTTP/2 extended
 *   CONNECT, RFC 8441, so there is no WebSocket-over-h2 CONNECT either); TRACE reflects the request's
 *   headers, credentials included, back to the caller (RFC 9110 §9.3.8, "cross-site tracing").
 * - A well-formed method the gateway does not know (`FOO`, lowercase `get`: methods are case-sensitive,
 *   RFC 9110 §9.1) is 405 `ERR_REQUEST_METHOD_REFUSED` as well: nothing the gateway cannot name is forwarded.
 * - A method outside a route's `methods:` list is 405 `ERR_AUTHZ_METHOD_NOT_ALLOWED`.
 *
 * Every 405 carries `Allow` (RFC 9110 §15.5.6) with the route's methods (the default set for a CONNECT,
 * which names no path and so no route).
 */
import { ConfigError, GatewayError } from '../errors.js';

/** RFC 9110 §5.6.2 token: one or more tchar. */
const TOKEN_RE = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/**
 * The methods the gateway forwards on a route without `methods:`: every method Node's HTTP/1.1 parser
 * (llhttp) accepts, minus CONNECT and TRACE, so that HTTP/1.1 and HTTP/2 clients get the same answers.
 * Order: the common ones first, as they appear in `Allow`.
 */
export const FORWARDED_METHODS: readonly string[] = Object.freeze([
  'GET',
  'HEAD',
  'POST',
  'PUT',
  'DELETE',
  'PATCH',
  'OPTIONS',
  // WebDAV (RFC 4918, 3253, 3648, 4791, 5323, 5842) and the other methods llhttp knows.
  'ACL',
  'BIND',
  'CHECKOUT',
  'COPY',
  'LINK',
  'LOCK',
  'M-SEARCH',
  'MERGE',
  'MKACTIVITY',
  'MKCALENDAR',
  'MKCOL',
  'MOVE',
  'NOTIFY',
  'PROPFIND',
  'PROPPATCH',
  'PURGE',
  'QUERY',
  'REBIND',
  'REPORT',
  'SEARCH',
  'SOURCE',
  'SUBSCRIBE',
  'UNBIND',
  'UNLINK',
  'UNLOCK',
  'UNSUBSCRIBE',
]);

/** Methods no route may list and the gateway never forwards (see the module comment). */
export const REFUSED_METHODS: readonly string[] = Object.freeze(['CONNECT', 'TRACE']);

const FORWARDED = new Set(FORWARDED_METHODS);

/** The methods one route forwards, compiled once at load. */
export interface MethodPolicy {
  /** Whether the route forwards `method` (exact, case-sensitive). */
  allows(method: string): boolean;
  /** The `Allow` header value of this route's 405s. */
  readonly allow: string;
}

/** The policy of a route without `methods:`. */
export const DEFAULT_METHOD_POLICY: MethodPolicy = Object.freeze({
  allows: (method: string) => FORWARDED.has(method),
  allow: FORWARDED_METHODS.join(', '),
});

/**
 * Compiles a route's `methods:` list. `GET` brings `HEAD` along (RFC 9110 §9.3.2: HEAD is GET without the
 * body; nginx's `limit_except GET` does the same). Undefined: {@link DEFAULT_METHOD_POLICY}.
 * @param keyPath the list's config path (`listeners[0].routes[1].methods`), for error messages.
 * @throws ConfigError naming the first bad entry: an empty list, a non-token, a lowercase method, CONNECT
 *   or TRACE, a method the gateway does not forward, or a duplicate.
 */
export function compileMethodPolicy(list: readonly string[] | undefined, keyPath: string): MethodPolicy {
  if (list === undefined) return DEFAULT_METHOD_POLICY;
  if (list.length === 0)
    throw new ConfigError(keyPath, list, 'a non-empty list of methods (leave the key out to allow every method)');
  const allowed = new Set<string>();
  list.forEach((m, i) => {
    const at = `${keyPath}[${i}]`;
    if (typeof m !== 'string' || !TOKEN_RE.test(m))
      throw new ConfigError(at, m, 'an HTTP method token (RFC 9110 §5.6.2), e.g. "GET"');
    if (m !== m.toUpperCase())
      throw new ConfigError(at, m, `an uppercase method ("${m.toUpperCase()}"): methods are case-sensitive`);
    if (REFUSED_METHODS.includes(m))
      throw new ConfigError(at, m, `a method other than ${REFUSED_METHODS.join(' and ')} (never forwarded)`);
    if (!FORWARDED.has(m)) throw new ConfigError(at, m, `one of ${FORWARDED_METHODS.join(', ')}`);
    if (allowed.has(m)) throw new ConfigError(at, m, 'each method listed once');
    allowed.add(m);
  });
  if (allowed.has('GET')) allowed.add('HEAD');
  // Allow lists them in the order of FORWARDED_METHODS, whatever the order of the config.
  const allow = FORWARDED_METHODS.filter((m) => allowed.has(m)).join(', ');
  return Object.freeze({ allows: (method: string) => allowed.has(method), allow });
}

/**
 * The form check of a method, before routing: a malformed one (400) or CONNECT (405, `Allow` of the default
 * set: a CONNECT names an authority, not a path, so it has no route).
 * @throws GatewayError `ERR_REQUEST_BAD_METHOD` or `ERR_REQUEST_METHOD_REFUSED`.
 */
export function checkMethodForm(method: string | undefined): void {
  if (method === undefined || !TOKEN_RE.test(method))
    throw new GatewayError('ERR_REQUEST_BAD_METHOD', 'not a method token');
  if (method === 'CONNECT')
    throw new GatewayError('ERR_REQUEST_METHOD_REFUSED', 'CONNECT is never forwarded', {
      allow: DEFAULT_METHOD_POLICY.allow,
    });
}

/**
 * The route's check of a well-formed method, after routing and the client-certificate checks and before
 * any credential is looked at: a method that would never be forwarded costs no IdP call.
 * @throws GatewayError 405 with `allow` set: `ERR_REQUEST_METHOD_REFUSED` for TRACE or a method the gateway
 *   does not know, `ERR_AUTHZ_METHOD_NOT_ALLOWED` for a known method outside the route's list.
 */
export function checkRouteMethod(method: string, policy: MethodPolicy): void {
  if (policy.allows(method)) return;
  const allow = { allow: policy.allow };
  if (!FORWARDED.has(method)) {
    const detail = REFUSED_METHODS.includes(method)
      ? `${method} is never forwarded`
      : `unknown method ${JSON.stringify(method.slice(0, 32))}`;
    throw new GatewayError('ERR_REQUEST_METHOD_REFUSED', detail, allow);
  }
  throw new GatewayError('ERR_AUTHZ_METHOD_NOT_ALLOWED', `${method} is not in the route's methods`, allow);
}
