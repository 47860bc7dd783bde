/**
 * Authorization: may this caller use this route? One module, one decision, made from what the earlier
 * stages established — the verified client certificate (peer identity) and the authenticated principal —
 * and never from anything the request merely claims.
 *
 * - The route's client allow-list (`allowClients`): a route with one needs a verified certificate it allows.
 * - The route's scopes and claims (`auth.scopes`, `auth.claims`, policy.ts), on every request, whether the
 *   principal came from a provider's cache or not: a cached authentication never carries a cached
 *   authorization (CVE-2021-32701).
 *
 * Authentication never calls this; the pipeline runs it after authentication. The certificate part also runs
 * before authentication ({@link authorizeClient}) so that a caller the route refuses by certificate costs no
 * identity-provider call.
 */
import { GatewayError } from '../errors.js';
import type { Principal } from '../authn/principal.js';
import type { PeerIdentity } from '../identity/peer.js';
import type { ClientAcl } from '../identity/acl.js';
import type { RoutePolicy } from './policy.js';

/** What a route demands of its callers, compiled at load. */
export interface RouteRequirements {
  /** Route-level client allow-list; undefined: the listener's decision stands. */
  readonly acl: ClientAcl | undefined;
  /** Scopes and claims of the route's `auth` block; undefined on a route without `auth`. */
  readonly policy: RoutePolicy | undefined;
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
 * Passes silently, or throws. `principal` is undefined on a route without `auth` (then only the certificate
 * part applies); on a route with `auth` a missing principal is refused (fail closed).
 * @throws GatewayError `ERR_IDENTITY_NO_CLIENT_CERT`, `ERR_AUTHZ_ROUTE_ACL`, `ERR_AUTHN_MISSING`,
 *   `ERR_AUTHZ_INSUFFICIENT_SCOPE`.
 */
export function authorize(
  route: RouteRequirements,
  peer: PeerIdentity | undefined,
  principal: Principal | undefined,
  // What a route may demand of the request itself (its method, its path) is decided here too, not in authn.
  // eslint-disable-next-line @typescript-eslint/no-unused-vars -- part of the contract; no rule reads it yet
  _request: AuthorizationRequest,
): void {
  authorizeClient(route, peer);
  if (route.policy === undefined) return;
  if (principal === undefined) throw new GatewayError('ERR_AUTHN_MISSING');
  route.policy.check(principal);
}
