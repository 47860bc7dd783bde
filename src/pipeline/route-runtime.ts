/**
 * What a request needs from its route, resolved once per listener when its handler is built: the terminal
 * (forwarder or gateway endpoint), the authentication of its `auth` block, the authorization requirements,
 * the telemetry policy and the metric children. The hot path makes one map lookup (by the Route object the
 * router returned) and no lookup by a config string.
 */
import type { RouteAuth, RoutedListener } from '../config/runtime.js';
import type { Route } from '../authz/routes.js';
import type { RouteRequirements } from '../authz/authorize.js';
import type { AuthenticateOptions, Authenticator } from '../authn/principal.js';
import { createAuthChain, type AuthChain } from '../authn/chain.js';
import { isLoginProvider, type LoginProvider } from '../authn/oidc.js';
import type { TelemetryMatcher, TelemetryPolicy } from '../mutate/telemetry.js';
import type { Metrics } from '../observability/metrics.js';
import { createRequestCounter, type RequestCounter } from '../observability/request-counter.js';
import { GatewayError } from '../errors.js';
import type { ClientRequest, ClientResponse, ForwardOutcome, ForwardRequest } from '../proxy/types.js';

/** Answers a request that passed every stage: forwards it upstream, or a gateway endpoint answers it. */
export type RouteTerminal = (
  fr: ForwardRequest,
  req: ClientRequest,
  res: ClientResponse,
) => Promise<ForwardOutcome>;

/** The authentication of a route with `auth`. */
export interface RouteAuthRuntime {
  readonly chain: AuthChain;
  readonly allowQueryToken: boolean;
  readonly forwardToken: boolean;
  readonly options: AuthenticateOptions | undefined;
  /** The route's required scopes, space-separated, for the `scope` of a 403 challenge ('' when none). */
  readonly scope: string;
  /** `auth.login`: browsers without a session log in with this provider; its session cookie is read. */
  readonly login: LoginProvider | undefined;
  readonly sessionCookie: boolean;
}

export interface RouteRuntime {
  readonly id: string;
  readonly route: Route;
  readonly terminal: RouteTerminal | undefined;
  /** undefined: no credential is needed on this route. */
  readonly auth: RouteAuthRuntime | undefined;
  readonly requirements: RouteRequirements;
  readonly telemetry: TelemetryPolicy | undefined;
  readonly requests: RequestCounter;
  readonly duration: ReturnType<Metrics['requestDuration']['labels']>;
  readonly upstream: ReturnType<Metrics['upstreamDuration']['labels']>;
}

/** What building the runtimes needs from the app. */
export interface RouteRuntimeDeps {
  readonly metrics: Metrics;
  /** The terminal of each route id. */
  readonly terminals: ReadonlyMap<string, RouteTerminal>;
  /** The app's providers by name; every name a route lists must be here. */
  readonly authenticators?: ReadonlyMap<string, Authenticator> | undefined;
  readonly telemetry?:
    | { readonly optOut: boolean; readonly honorClientSignals: boolean; readonly matcher: TelemetryMatcher }
    | undefined;
}

function authRuntime(
  auth: RouteAuth,
  authenticators: ReadonlyMap<string, Authenticator> | undefined,
): RouteAuthRuntime {
  const providers = auth.providers.map((name) => {
    const p = authenticators?.get(name);
    // The loader checked every name; a miss here is a wiring bug, refused before the listener binds.
    if (p === undefined) throw new Error(`${auth.keyPath}: provider "${name}" was not created by the app`);
    return p;
  });
  let login: LoginProvider | undefined;
  if (auth.login !== undefined) {
    const p = authenticators?.get(auth.login);
    if (!isLoginProvider(p)) throw new Error(`${auth.keyPath}.login: provider "${auth.login}" is not an oidc provider`);
    login = p;
  }
  return {
    login,
    sessionCookie: login !== undefined,
    // The login provider reads session cookies only; the Bearer providers answer `not_applicable` to them.
    chain: createAuthChain(login === undefined ? providers : [login, ...providers]),
    allowQueryToken: auth.allowQueryToken,
    forwardToken: auth.forwardToken,
    options: auth.staleIfErrorSeconds > 0 ? { staleIfErrorSeconds: auth.staleIfErrorSeconds } : undefined,
    scope: auth.policy.requiredScopes.join(' '),
  };
}

/** Resolves every route of `listener`. Throws (before the listener serves) on a wiring bug. */
export function buildRouteRuntimes(
  listener: RoutedListener,
  deps: RouteRuntimeDeps,
): { readonly runtimeOf: (route: Route) => RouteRuntime } {
  const { metrics } = deps;
  const runtimes = new Map<Route, RouteRuntime>();
  for (const r of listener.routes.routes) {
    let telemetry: TelemetryPolicy | undefined;
    if (deps.telemetry !== undefined) {
      const t = deps.telemetry;
      const strip = listener.routeTelemetryOptOut?.[r.id] ?? t.optOut;
      // Nothing to do on a route that never strips: skip the per-header lookups entirely.
      if (strip || t.honorClientSignals)
        telemetry = { matcher: t.matcher, strip, honorClientSignals: t.honorClientSignals };
    }
    const auth = listener.routeAuth[r.id];
    runtimes.set(r, {
      id: r.id,
      route: r,
      terminal: deps.terminals.get(r.id),
      auth: auth === undefined ? undefined : authRuntime(auth, deps.authenticators),
      requirements: { acl: r.acl, policy: auth?.policy, methods: r.methods },
      telemetry,
      requests: createRequestCounter(metrics, listener.name, r.id),
      duration: metrics.requestDuration.labels(listener.name, r.id),
      upstream: metrics.upstreamDuration.labels(r.id),
    });
  }
  return {
    runtimeOf(route: Route): RouteRuntime {
      const rt = runtimes.get(route);
      // Every route the router returns was listed at start; a miss is a wiring bug, refused (fail closed).
      if (rt === undefined) throw new GatewayError('ERR_INTERNAL', `route ${route.id} has no runtime`);
      return rt;
    },
  };
}
