/**
 * The metrics of Bearer authentication (DESIGN "auth decisions by provider/result/reason; introspection
 * calls, cache hits/misses/entries; JWKS refreshes"), defined once. Names follow
 * `portcullis_auth_<name>_<unit>`, `_total` only on counters. Label values come from closed sets: provider
 * names and route ids from the config, `result` from the error-code registry — never a token, a hash or a
 * subject.
 *
 * The provider counters are read from each provider's `stats()` when Prometheus scrapes (a `collect()`
 * hook), so the request path pays nothing for them.
 */
import { Counter, Gauge, type Registry } from 'prom-client';
import type { Authenticator, AuthnStats } from '../authn/principal.js';
import type { ErrorCode } from '../errors.js';

/** `result` of an authentication decision: `allow`, or the code that ended the request. */
export type AuthResult = 'allow' | ErrorCode;

/** What the request path records. */
export interface AuthMetrics {
  /** One decision on a route with `auth`. `provider` is the principal's, or `none` when no provider vouched. */
  decision(route: string, provider: string, result: AuthResult): void;
}

/** A counter that mirrors one monotonic `stats()` field of every provider at scrape time. */
function statCounter(
  registry: Registry,
  providers: ReadonlyMap<string, Authenticator>,
  name: string,
  help: string,
  field: keyof AuthnStats,
): void {
  new Counter({
    name,
    help,
    labelNames: ['provider'] as const,
    registers: [registry],
    collect() {
      // The providers own the running totals; the series is set to them on each scrape.
      this.reset();
      for (const [pname, p] of providers) this.labels(pname).inc(p.stats()[field]);
    },
  });
}

/** Registers the auth metrics in `registry` for these providers. One call per app. */
export function createAuthMetrics(
  registry: Registry,
  providers: ReadonlyMap<string, Authenticator>,
): AuthMetrics {
  const decisions = new Counter({
    name: 'portcullis_auth_decisions_total',
    help: 'Bearer authentication decisions on routes with auth, by route id, provider (none when no provider vouched for the token) and result (allow, or the ERR_* code that ended the request).',
    labelNames: ['route', 'provider', 'result'] as const,
    registers: [registry],
  });
  new Gauge({
    name: 'portcullis_auth_cache_entries',
    help: 'Entries in the verified-token cache of each provider (JWT and introspection; bounded by its maxEntries).',
    labelNames: ['provider'] as const,
    registers: [registry],
    collect() {
      for (const [pname, p] of providers) this.labels(pname).set(p.stats().cacheEntries);
    },
  });
  statCounter(
    registry,
    providers,
    'portcullis_auth_cache_hits_total',
    'Tokens answered from a provider cache (route policy is still checked on every request).',
    'cacheHits',
  );
  statCounter(
    registry,
    providers,
    'portcullis_auth_cache_misses_total',
    'Tokens a provider had to verify or introspect.',
    'cacheMisses',
  );
  statCounter(
    registry,
    providers,
    'portcullis_auth_cache_evictions_total',
    'Cache entries pushed out because a provider cache was full.',
    'cacheEvictions',
  );
  statCounter(
    registry,
    providers,
    'portcullis_auth_idp_requests_total',
    'Requests sent to the identity provider (introspection calls, JWKS fetches).',
    'idpRequests',
  );
  statCounter(
    registry,
    providers,
    'portcullis_auth_idp_failures_total',
    'Identity-provider requests that failed (network, timeout, status, body): each one a 503, never a pass.',
    'idpFailures',
  );
  statCounter(
    registry,
    providers,
    'portcullis_auth_stale_served_total',
    'Introspection answers served stale while the IdP was down (a route with staleIfErrorSeconds).',
    'staleServed',
  );
  statCounter(
    registry,
    providers,
    'portcullis_auth_reloads_total',
    'Successful key-set fetches (JWKS) and static tokens file reloads.',
    'reloads',
  );

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
