/**
 * The wiring of the Bearer-authentication metrics, whose definitions live with every other metric in
 * `metrics.ts` (names `portcullis_auth_*`). Two feeds, both cheap on the request path:
 *
 * - provider counters (cache, IdP requests, JWKS refreshes) are read from each provider's `stats()` when
 *   Prometheus scrapes: {@link createAuthMetrics} binds the providers to those series;
 * - per-event series (decisions, introspection calls and their latency) are incremented through labelled
 *   children created once per label set: {@link AuthMetrics} and {@link createAuthnObserver}.
 *
 * Label values come from closed sets: provider names and route ids from the config, `result` from the
 * error-code registry or a fixed list — never a token, a hash or a subject.
 */
import type { AuthnObserver, AuthStatsSource } from './auth-stats.js';
import type { AuthResult, IntrospectionCallResult, Metrics } from './metrics.js';

export type { AuthResult } from './metrics.js';

/** What the request path records. */
export interface AuthMetrics {
  /** One decision on a route with `auth`. `provider` is the principal's, or `none` when no provider vouched. */
  decision(route: string, provider: string, result: AuthResult): void;
}

/**
 * Binds `providers` to the scrape-time auth series of `metrics` and returns the decision recorder. Calling it
 * again (a new provider set) rebinds: nothing is registered twice.
 */
export function createAuthMetrics(
  metrics: Metrics,
  providers: ReadonlyMap<string, AuthStatsSource>,
): AuthMetrics {
  metrics.bindAuthProviders(providers);
  const decisions = metrics.authDecisions;
  const children = new Map<string, ReturnType<typeof decisions.labels>>();
  return {
    decision(route, provider, result) {
      const key = `${route}\u0000${provider}\u0000${result}`;
      let c = children.get(key);
      if (c === undefined) {
        c = decisions.labels(route, provider, result);
        children.set(key, c);
      }
      c.inc();
    },
  };
}

/**
 * The observer the providers report remote calls to (`AuthnDeps.observer`): introspection calls counted and
 * timed by provider and result. Children are created on first use and kept (at most providers × 4).
 */
export function createAuthnObserver(
  metrics: Pick<
    Metrics,
    'introspectionCalls' | 'introspectionDuration' | 'sessionLogins' | 'sessionRefreshes' | 'sessionLogouts'
  >,
): AuthnObserver {
  const calls = new Map<string, { count: { inc(): void }; time: { observe(v: number): void } }>();
  return {
    introspection(provider: string, result: IntrospectionCallResult, seconds: number): void {
      const key = `${provider}\u0000${result}`;
      let c = calls.get(key);
      if (c === undefined) {
        c = {
          count: metrics.introspectionCalls.labels(provider, result),
          time: metrics.introspectionDuration.labels(provider, result),
        };
        calls.set(key, c);
      }
      c.count.inc();
      c.time.observe(seconds);
    },
    login: (provider, result) => metrics.sessionLogins.labels(provider, result).inc(),
    refresh: (provider, result) => metrics.sessionRefreshes.labels(provider, result).inc(),
    logout: (provider, kind, sessions) => metrics.sessionLogouts.labels(provider, kind).inc(sessions),
  };
}
