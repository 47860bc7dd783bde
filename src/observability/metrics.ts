/**
 * Every Prometheus metric of Portcullis, defined once. Names follow `portcullis_<subsystem>_<name>_<unit>`,
 * `_total` only on counters; label values come from closed sets (listener names, route ids, reason
 * codes, method enum, status class) — never a raw path, host, token or subject.
 */
import { Counter, Gauge, Histogram, collectDefaultMetrics, type Registry } from 'prom-client';
import type { AuthnStats, AuthStatsSource } from './auth-stats.js';
import type { ErrorCode } from '../errors.js';
import { readBuildInfo, type BuildInfo } from './build-info.js';

/** Every `method` label value, in a fixed order: the seven common methods, then `OTHER` for the rest. */
export const METHOD_LABELS = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'OTHER'] as const;
const METHODS = new Set<string>(METHOD_LABELS.slice(0, -1));

/** Bounded method label: anything else is `OTHER`, so random methods cannot explode cardinality. */
export function methodLabel(method: string | undefined): string {
  return method !== undefined && METHODS.has(method) ? method : 'OTHER';
}

/** `2xx`, `4xx`, ... from a status code. */
export function statusClass(status: number): string {
  return status >= 100 && status < 600 ? `${Math.floor(status / 100)}xx` : 'other';
}

/** Reasons a connection is refused before any HTTP exchange. */
export type ConnectionRejectReason =
  | 'plaintext'
  | 'protocol'
  | 'no_client_cert'
  | 'bad_client_cert'
  | 'revoked'
  | 'acl'
  | 'handshake_timeout'
  | 'headers_timeout'
  | 'connection_limit'
  | 'client_connection_limit';

/** Every {@link ConnectionRejectReason}, for tests and dashboards that enumerate the closed set. */
export const CONNECTION_REJECT_REASONS: readonly ConnectionRejectReason[] = [
  'plaintext',
  'protocol',
  'no_client_cert',
  'bad_client_cert',
  'revoked',
  'acl',
  'handshake_timeout',
  'headers_timeout',
  'connection_limit',
  'client_connection_limit',
];

/** `result` of an authentication decision: `allow`, or the code that ended the request. */
export type AuthResult = 'allow' | ErrorCode;

export type { IntrospectionCallResult } from './auth-stats.js';

/** `result` of a decision (decision listener): the status class of what the proxy was told. */
export type DecisionResult = 'allow' | 'login' | 'unauthorized' | 'forbidden' | 'error';

/** `result` of a JWKS fetch: `success` (a JWK set was read), `failure` (network, status, body, shape). */
export type JwksRefreshResult = 'success' | 'failure';

/** `result` of a config reload: it replaced the running config, or it was refused and the old one kept. */
export type ConfigReloadResult = 'success' | 'failure';

export type { AuthStatsSource } from './auth-stats.js';

/** Latency buckets in seconds: 100 µs to 10 s. */
const LATENCY_BUCKETS = [
  0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
];

/**
 * prom-client's default metrics that are gauges although their names end in `_total` (the number of open
 * handles, requests and resources right now). `promtool check metrics` flags them ("non-counter metrics
 * should not have \"_total\" suffix") and `rate()` on them is meaningless, so Portcullis does not expose
 * them: the per-`type` gauges of the same families stay (`sum(portcullis_nodejs_active_handles)` is the
 * dropped total).
 */
export const DROPPED_DEFAULT_METRICS = [
  'portcullis_nodejs_active_handles_total',
  'portcullis_nodejs_active_requests_total',
  'portcullis_nodejs_active_resources_total',
] as const;

/**
 * Defines metrics in `registry`, each in one call: name, help, its closed label set (and buckets for a
 * histogram). Keeps every definition below to what differs between metrics.
 */
function definer(registry: Registry) {
  return {
    counter: <L extends string = never>(name: string, help: string, labelNames: readonly L[] = []) =>
      new Counter<L>({ name, help, labelNames, registers: [registry] }),
    gauge: <L extends string = never>(name: string, help: string, labelNames: readonly L[] = []) =>
      new Gauge<L>({ name, help, labelNames, registers: [registry] }),
    histogram: <L extends string>(name: string, help: string, labelNames: readonly L[], buckets: number[]) =>
      new Histogram<L>({ name, help, labelNames, buckets, registers: [registry] }),
  };
}

/**
 * Registers prom-client's default process and Node.js metrics in `registry`, prefixed `portcullis_`
 * (`portcullis_process_*`, `portcullis_nodejs_*`), less {@link DROPPED_DEFAULT_METRICS}. Used by every
 * process that serves or feeds `/metrics` (a single gateway, each cluster worker, the cluster primary), so
 * every exposition passes `promtool check metrics`.
 */
export function collectProcessMetrics(registry: Registry): void {
  collectDefaultMetrics({ register: registry, prefix: 'portcullis_' });
  for (const name of DROPPED_DEFAULT_METRICS) registry.removeSingleMetric(name);
}

/**
 * `portcullis_build_info{version,node}`, always 1: the version running and its Node.js release, for
 * dashboards (`group by (version, node)`) and for alerts joined on it. The cluster primary registers it
 * too; the aggregation takes one value, not the sum (cluster/metrics.ts AGGREGATOR_OVERRIDES).
 */
export function createBuildInfo(
  registry: Registry,
  info: BuildInfo = readBuildInfo(),
): Gauge<'version' | 'node'> {
  const g = definer(registry).gauge(
    'portcullis_build_info',
    'Always 1; labels: the Portcullis version and the Node.js release running it.',
    ['version', 'node'],
  );
  g.labels(info.version, info.node).set(1);
  return g;
}

/**
 * `portcullis_tls_rejected_connections_total`, on its own: the cluster primary, which serves the admin
 * listener for its workers, counts the admin listener's refusals in its own registry, summed with the
 * workers' at scrape time, under the same definition.
 */
export function createRejectedConnectionsCounter(registry: Registry): Counter<'listener' | 'reason'> {
  return definer(registry).counter(
    'portcullis_tls_rejected_connections_total',
    'Connections refused before any request, by listener and reason (the admin listener as "admin").',
    ['listener', 'reason'],
  );
}

/**
 * Creates (and registers in `registry`) every metric; one instance per process. The provider-fed auth
 * series read the providers given to `bindAuthProviders` when Prometheus scrapes (nothing on the request
 * path); until then they are empty. Process metrics ({@link collectProcessMetrics}) unless
 * `processMetrics: false`; `portcullis_build_info` always.
 */
export function createMetrics(
  registry: Registry,
  opts: { processMetrics?: boolean; build?: BuildInfo } = {},
) {
  if (opts.processMetrics !== false) collectProcessMetrics(registry);
  const buildInfo = createBuildInfo(registry, opts.build);
  let authProviders: ReadonlyMap<string, AuthStatsSource> = new Map();
  let storeProblem: () => string | undefined = () => undefined;
  const { counter, gauge, histogram } = definer(registry);
  /** A counter that mirrors one monotonic `stats()` field of every provider (of `type`, if given) at scrape. */
  const statCounter = (name: string, help: string, field: keyof AuthnStats): Counter<'provider'> =>
    new Counter({
      name,
      help,
      labelNames: ['provider'] as const,
      registers: [registry],
      collect() {
        // The providers own the running totals; the series is set to them on each scrape.
        this.reset();
        for (const [pname, p] of authProviders) this.labels(pname).inc(p.stats()[field]);
      },
    });
  const configReloads = counter(
    'portcullis_config_reloads_total',
    'Config reloads, by result (success: the new config serves; failure: refused, the old one kept).',
    ['result'],
  );
  // Both series exist from the start: an alert on failure > 0 needs a 0 to compare to.
  for (const r of ['success', 'failure'] as const) configReloads.inc({ result: r }, 0);
  return {
    buildInfo,
    /** Points the provider-fed auth series at this set of providers (replacing any earlier set). */
    /** The store whose health `portcullis_store_up` reports (the memory store is always up). */
    bindStore(problem: () => string | undefined): void {
      storeProblem = problem;
    },
    bindAuthProviders(providers: ReadonlyMap<string, AuthStatsSource>): void {
      authProviders = providers;
    },
    authDecisions: counter(
      'portcullis_auth_decisions_total',
      'Bearer authentication decisions on routes with auth, by route id, provider (none when no provider vouched for the token) and result (allow, or the ERR_* code that ended the request).',
      ['route', 'provider', 'result'],
    ),
    authCacheEntries: new Gauge({
      name: 'portcullis_auth_cache_entries',
      help: 'Entries in the verified-token cache of each provider (JWT and introspection; bounded by its maxEntries).',
      labelNames: ['provider'] as const,
      registers: [registry],
      collect() {
        this.reset();
        for (const [pname, p] of authProviders) this.labels(pname).set(p.stats().cacheEntries);
      },
    }),
    authCacheHits: statCounter(
      'portcullis_auth_cache_hits_total',
      'Tokens answered from a provider cache (route policy is still checked on every request).',
      'cacheHits',
    ),
    authCacheMisses: statCounter(
      'portcullis_auth_cache_misses_total',
      'Tokens a provider had to verify or introspect.',
      'cacheMisses',
    ),
    authCacheEvictions: statCounter(
      'portcullis_auth_cache_evictions_total',
      'Cache entries pushed out because a provider cache was full.',
      'cacheEvictions',
    ),
    authIdpRequests: statCounter(
      'portcullis_auth_idp_requests_total',
      'Requests sent to the identity provider (introspection calls, JWKS fetches).',
      'idpRequests',
    ),
    authIdpFailures: statCounter(
      'portcullis_auth_idp_failures_total',
      'Identity-provider requests that failed (network, timeout, status, body): each one a 503, never a pass.',
      'idpFailures',
    ),
    authStaleServed: statCounter(
      'portcullis_auth_stale_served_total',
      'Introspection answers served stale while the IdP was down (a route with staleIfErrorSeconds).',
      'staleServed',
    ),
    authReloads: statCounter(
      'portcullis_auth_reloads_total',
      'Successful key-set fetches (JWKS) and static tokens file reloads.',
      'reloads',
    ),
    jwksRefreshes: new Counter({
      name: 'portcullis_auth_jwks_refreshes_total',
      help: 'JWKS fetches of each jwt provider with a jwksUri, by result (success: a JWK set was read; failure: network, timeout, status, body or shape — the provider then backs off).',
      labelNames: ['provider', 'result'] as const,
      registers: [registry],
      collect() {
        this.reset();
        for (const [pname, p] of authProviders) {
          if (p.type !== 'jwt') continue;
          const s = p.stats();
          // A jwt provider's reloads are its successful JWKS fetches, its IdP failures its failed ones.
          this.labels(pname, 'success').inc(s.reloads);
          this.labels(pname, 'failure').inc(s.idpFailures);
        }
      },
    }),
    introspectionCalls: counter(
      'portcullis_auth_introspection_calls_total',
      'Introspection calls (RFC 7662) sent to the IdP, by provider and result (active, inactive, invalid: an answer the checks refused, error: no usable answer).',
      ['provider', 'result'],
    ),
    introspectionDuration: histogram(
      'portcullis_auth_introspection_duration_seconds',
      'Time of one introspection call, request sent to answer checked, by provider and result.',
      ['provider', 'result'],
      LATENCY_BUCKETS,
    ),
    configReloads,
    configLastReloadSuccess: gauge(
      'portcullis_config_last_reload_success_timestamp_seconds',
      'When the running config was last loaded successfully (Unix seconds): the start time until a reload succeeds.',
    ),
    activeStreams: gauge(
      'portcullis_active_streams',
      'Open HTTP/2 streams (requests in flight on HTTP/2 connections), by listener.',
      ['listener'],
    ),
    requests: counter(
      'portcullis_http_requests_total',
      'HTTP requests answered, by listener, route id, method and status class.',
      ['listener', 'route', 'method', 'status_class'],
    ),
    requestDuration: histogram(
      'portcullis_http_request_duration_seconds',
      'Time from request headers to the end of the response, by listener and route id.',
      ['listener', 'route'],
      LATENCY_BUCKETS,
    ),
    upstreamDuration: histogram(
      'portcullis_upstream_response_duration_seconds',
      'Time from sending a request upstream to its response headers, by route id.',
      ['route'],
      LATENCY_BUCKETS,
    ),
    denials: counter(
      'portcullis_http_denials_total',
      'Requests ended by the gateway itself, by listener and reason code (ERR_*).',
      ['listener', 'reason'],
    ),
    decisions: counter(
      'portcullis_decisions_total',
      'Auth subrequests a decision listener answered, by listener, route id (none: no route) and result (allow, login, unauthorized, forbidden, error).',
      ['listener', 'route', 'result'],
    ),
    upstreamErrors: counter(
      'portcullis_upstream_errors_total',
      'Upstream exchanges that failed, by route id and reason code.',
      ['route', 'reason'],
    ),
    rejectedConnections: createRejectedConnectionsCounter(registry),
    tunnelsClosed: counter(
      'portcullis_websocket_tunnels_closed_total',
      'Open WebSocket tunnels the gateway closed, by listener and reason (idle; credential_expired: the token exp or client certificate notAfter passed; max_lifetime: timeouts.tunnelMaxMs).',
      ['listener', 'reason'],
    ),
    handshakes: counter(
      'portcullis_tls_handshakes_total',
      'Completed TLS handshakes, by listener and negotiated protocol (h2, http/1.1).',
      ['listener', 'alpn'],
    ),
    activeConnections: gauge('portcullis_active_connections', 'Open client connections, by listener.', [
      'listener',
    ]),
    tcpBytes: counter(
      'portcullis_tcp_bytes_total',
      'Bytes piped by TCP listeners, by listener and direction (in: client to upstream, out: upstream to client).',
      ['listener', 'direction'],
    ),
    tcpConnections: counter(
      'portcullis_tcp_connections_total',
      'Piped TCP connections that ended, by listener and close reason (upstream failures included).',
      ['listener', 'reason'],
    ),
    tcpConnectionDuration: histogram(
      'portcullis_tcp_connection_duration_seconds',
      'Lifetime of piped TCP connections, from the end of the client handshake to the close, by listener.',
      ['listener'],
      // Dask comms live for minutes to days: 10 ms to one day.
      [0.01, 0.1, 1, 10, 60, 300, 1_800, 3_600, 14_400, 86_400],
    ),
    telemetryStripped: counter(
      'portcullis_telemetry_headers_stripped_total',
      'Telemetry headers removed by the telemetry opt-out, by direction (request: client to upstream, response: upstream to client).',
      ['direction'],
    ),
    certificateExpiry: gauge(
      'portcullis_certificate_expiry_timestamp_seconds',
      'notAfter of each configured certificate (Unix seconds), by listener, kind (server, ca, upstream_ca, upstream_client) and position in its PEM bundle. Never the subject.',
      ['listener', 'kind', 'index'],
    ),
    crlNextUpdate: gauge(
      'portcullis_crl_next_update_timestamp_seconds',
      "nextUpdate of each CRL of a listener's tls.crl (Unix seconds), by listener and position of the CRL in the file: past it OpenSSL refuses every client certificate of that CRL's CA. Never the issuer.",
      ['listener', 'index'],
    ),
    sessionLogins: counter(
      'portcullis_sessions_logins_total',
      'Browser login callbacks of each oidc provider, by result (success: a session was made; bad_state: no pre-login record, a replayed or foreign state; rejected: the IdP refused or its answer did not verify; unavailable).',
      ['provider', 'result'],
    ),
    sessionRefreshes: counter(
      'portcullis_sessions_refreshes_total',
      'Access-token refreshes of browser sessions, by provider and result (failure ends the session; unavailable keeps it while its token lives).',
      ['provider', 'result'],
    ),
    sessionLogouts: counter(
      'portcullis_sessions_logouts_total',
      'Browser sessions ended, by provider and kind (user: the logout path; backchannel: the IdP; refresh_failed; timeout: idle or absolute).',
      ['provider', 'kind'],
    ),
    sessionsActive: new Gauge({
      name: 'portcullis_sessions_active',
      help: 'Live browser sessions of each oidc provider in this process’s store.',
      labelNames: ['provider'] as const,
      registers: [registry],
      async collect() {
        this.reset();
        for (const [pname, p] of authProviders) {
          if (p.activeSessions === undefined) continue;
          this.labels(pname).set(await p.activeSessions().catch(() => 0));
        }
      },
    }),
    storeUp: new Gauge({
      name: 'portcullis_store_up',
      help: '1 when the store (store.type: memory, or Redis) answers, else 0 (sessions cannot be read: no session or 503).',
      registers: [registry],
      collect() {
        this.set(storeProblem() === undefined ? 1 : 0);
      },
    }),
    storeFailures: counter(
      'portcullis_store_failures_total',
      'Store commands that failed, by reason (timeout: Redis did not answer within store.commandTimeoutMs; unavailable: not connected; error: Redis refused the command). Each is a refusal, never a pass.',
      ['reason'],
    ),
    certificateNameMismatch: gauge(
      'portcullis_tls_certificate_name_mismatch',
      "1 when a listener's server certificate covers none of its serverNames (clients that check the host name refuse it), else 0; by listener. Set at start and at each reload.",
      ['listener'],
    ),
  };
}

export type Metrics = ReturnType<typeof createMetrics>;
