/**
 * A route's Bearer authentication, from its `auth` block: the credential of the request (RFC 6750: the
 * Authorization header, or the query where the route allows it), the provider chain, then the route policy
 * (scopes, claims) checked on every request, cache hit or not (CVE-2021-32701). Built once per listener;
 * `authenticate` never rejects, it returns the outcome for the handler to answer and log.
 */
import type { HttpRuntimeListener, RouteAuth } from '../config/load.js';
import type { RoutePolicy } from '../authz/policy.js';
import { GatewayError, toGatewayError } from '../errors.js';
import { extractBearer, removeQueryToken, tokenHash } from './bearer.js';
import { createAuthChain, type AuthChain } from './chain.js';
import type { AuthenticateOptions, Authenticator, Principal } from './principal.js';

/** The parts of a checked request target the credential needs (listener/request-form.ts ResolvedRequest). */
export interface TargetParts {
  /** Normalized path plus the raw query. */
  readonly path: string;
  /** The normalized path alone. */
  readonly pathname: string;
  /** The raw query with its leading `?`, or ''. */
  readonly query: string;
}

/** A route's authentication stage, built once per listener from its `auth` block and the app's providers. */
export interface AuthStage {
  readonly routeId: string;
  readonly chain: AuthChain;
  readonly policy: RoutePolicy;
  readonly allowQueryToken: boolean;
  readonly forwardToken: boolean;
  readonly options: AuthenticateOptions | undefined;
  /** The route's required scopes, space-separated, for the `scope` of a 403 challenge ('' when none). */
  readonly scope: string;
}

/** The outcome of authentication and the route policy for one request. */
export type AuthOutcome =
  | {
      readonly ok: true;
      readonly principal: Principal;
      /** First 12 hex digits of SHA-256(token): the log handle of a token (`portcullis token list` shows it). */
      readonly hashPrefix: string;
    }
  | {
      readonly ok: false;
      readonly error: GatewayError;
      readonly hashPrefix: string;
      /** The provider that vouched for the token when the route policy refused it. */
      readonly provider: string | undefined;
    };

export function buildAuthStages(
  listener: HttpRuntimeListener,
  authenticators: ReadonlyMap<string, Authenticator> | undefined,
): ReadonlyMap<string, AuthStage> {
  const stages = new Map<string, AuthStage>();
  for (const [routeId, auth] of Object.entries<RouteAuth>(listener.routeAuth)) {
    const providers = auth.providers.map((name) => {
      const p = authenticators?.get(name);
      // The loader checked every name; a miss here is a wiring bug, refused before the listener binds.
      if (p === undefined) throw new Error(`${auth.keyPath}: provider "${name}" was not created by the app`);
      return p;
    });
    stages.set(routeId, {
      routeId,
      chain: createAuthChain(providers),
      policy: auth.policy,
      allowQueryToken: auth.allowQueryToken,
      forwardToken: auth.forwardToken,
      options: auth.staleIfErrorSeconds > 0 ? { staleIfErrorSeconds: auth.staleIfErrorSeconds } : undefined,
      scope: auth.policy.requiredScopes.join(' '),
    });
  }
  return stages;
}

/**
 * The credential of a request on a route with `auth`: its token (RFC 6750 §2), and the path to forward
 * (without `access_token` when the token came from the query). Throws `ERR_AUTHN_MALFORMED` (two
 * Authorization headers, a query token on a route that does not allow one, a token that is not token68)
 * or `ERR_AUTHN_MISSING`.
 */
export function credentialOf(
  stage: AuthStage,
  rawHeaders: readonly string[],
  r: TargetParts,
): { token: string; path: string } {
  const cred = extractBearer(rawHeaders, r.query, stage.allowQueryToken);
  if ('none' in cred) throw new GatewayError('ERR_AUTHN_MISSING');
  // RFC 6750 §5.3: a token from the query goes no further than the gateway.
  const path = stage.allowQueryToken && r.query !== '' ? r.pathname + removeQueryToken(r.query) : r.path;
  return { token: cred.token, path };
}

/** Provider chain, then the route policy (on every request, cache hit or not). Never rejects. */
export async function authenticate(stage: AuthStage, token: string): Promise<AuthOutcome> {
  const hash = tokenHash(token);
  const hashPrefix = hash.slice(0, 12);
  let principal: Principal;
  try {
    principal = await stage.chain(token, hash, stage.options);
  } catch (err) {
    return { ok: false, error: toGatewayError(err), hashPrefix, provider: undefined };
  }
  try {
    stage.policy.check(principal);
  } catch (err) {
    return { ok: false, error: toGatewayError(err), hashPrefix, provider: principal.provider };
  }
  return { ok: true, principal, hashPrefix };
}
