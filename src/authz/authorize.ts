/**
 * Authorization: may this caller use this route? One module, one decision, made from what the earlier
 * stages established — the verified client certificate (peer identity) and the authenticated principal —
 * and never from anything the request merely claims.
 *
 * - The route's client allow-list (`allowClients`): a route with one needs a verified certificate it allows.
 * - The route's methods (`methods`, methods.ts): TRACE, a method the gateway does not know, or one outside
 *   the route's list is a 405.
 * - The route's scopes and claims (`auth.scopes`, `auth.claims`, policy.ts), on every request, whether the
 *   principal came from a provider's cache or not: a cached authentication never carries a cached
 *   authorization (CVE-2021-32701).
 *
 * Authentication never calls this; the pipeline runs it after authentication. The certificate and method
 * parts also run before authentication ({@link authorizeClient}, {@link authorizeMethod}) so that a request
 * the route refuses by certificate or method costs no identity-provider call.
 */
import { GatewayError } from '../errors.js';
import type { Principal } from '../authn/principal.js';
import type { PeerIdentity } from '../identity/peer.js';
import type { ClientAcl } from '../identity/acl.js';
import type { RoutePolicy } from './policy.js';
import { checkRouteMethod, type MethodPolicy } from './methods.js';

/** What a route demands of its callers, compiled at load. */
export interface RouteRequirements {
  /** Route-level client allow-list; undefined: the listener's decision stands. */
  readonly acl: ClientAcl | undefined;
  /** Scopes and claims of the route's `auth` block; undefined on a route without `auth`. */
  readonly policy: RoutePolicy | undefined;
  /** The methods the route forwards (its `methods`, else the default set). */
  readonly methods: MethodPolicy;
}

/** The request facts an authorization may look at. */
export interface AuthorizationRequest {
  readonly method: string;
  /** The normalized path (never the raw target). */
  readonly path: string;
}

/**
 * The certificate part of {@link authorize}.
 * @throws GatewayError `ERR_IDENTITY_NO_CLIENT_CERT` (the route needs a certificate and none was verified),
 *   `ERR_AUTHZ_ROUTE_ACL` (the route's allow-list does not name it).
 */
export function authorizeClient(route: RouteRequirements, peer: PeerIdentity | undefined): void {
  if (route.acl === undefined) return;
  if (peer === undefined) throw new GatewayError('ERR_IDENTITY_NO_CLIENT_CERT', 'route needs a client certificate');
  if (!route.acl.allows(peer)) throw new GatewayError('ERR_AUTHZ_ROUTE_ACL');
}

/**
 * The method part of {@link authorize}.
 * @throws GatewayError 405 with `allow` set: `ERR_REQUEST_METHOD_REFUSED` (TRACE, a method the gateway does
 *   not know), `ERR_AUTHZ_METHOD_NOT_ALLOWED` (outside the route's `methods`).
 */
export function authorizeMethod(route: RouteRequirements, method: string): void {
  checkRouteMethod(method, route.methods);
}

/**
 * Passes silently, or throws. `principal` is undefined on a route without `auth` (then only the certificate
 * part applies); on a route with `auth` a missing principal is refused (fail closed).
 * @throws GatewayError `ERR_IDENTITY_NO_CLIENT_CERT`, `ERR_AUTHZ_ROUTE_ACL`, `ERR_REQUEST_METHOD_REFUSED`,
 *   `ERR_AUTHZ_METHOD_NOT_ALLOWED`, `ERR_AUTHN_MISSING`, `ERR_AUTHZ_INSUFFICIENT_SCOPE`.
 */
export function authorize(
  route: RouteRequirements,
  peer: PeerIdentity | undefined,
  principal: Principal | undefined,
  // What a route may demand of the request itself (its method, its path) is decided here too, not in authn.
  request: AuthorizationRequest,
): void {
  authorizeClient(route, peer);
  authorizeMethod(route, request.method);
  if (route.policy === undefined) return;
  if (principal === undefined) throw new GatewayError('ERR_AUTHN_MISSING');
  route.policy.check(principal);
}
