/**
 * What an authentication provider reports to the metrics: its counters (read at scrape time) and its remote
 * calls (reported as they end). Defined here, with the metrics, so that observability depends on no stage.
 */

/** Monotonic counters and gauges a provider exposes for metrics (read by a prom-client `collect()`). */
export interface AuthnStats {
  /** Entries in the verified-token cache now. */
  readonly cacheEntries: number;
  readonly cacheHits: number;
  readonly cacheMisses: number;
  /** Entries pushed out because the cache was full (its bound held). */
  readonly cacheEvictions: number;
  /** Requests sent to the IdP (introspection calls, JWKS fetches); 0 for static tokens. */
  readonly idpRequests: number;
  /** Of those, the ones that failed (network, timeout, status, body). */
  readonly idpFailures: number;
  /** Answers served stale because the IdP was unavailable (introspection `staleIfErrorSeconds`). */
  readonly staleServed: number;
  /** Successful reloads of a local file (static tokens file, or the JWKS after a successful fetch). */
  readonly reloads: number;
}

/**
 * `result` of one introspection call (RFC 7662): `active` / `inactive` (a well-formed answer, `active` true or
 * false), `invalid` (an answer the checks refused: bad field types, expired, wrong issuer or audience,
 * `unsupported_token_type`), `error` (no usable answer: network, timeout, status, content type, body).
 */
export type IntrospectionCallResult = 'active' | 'inactive' | 'invalid' | 'error';

/**
 * Where providers report their remote calls, for metrics (`observability/auth-metrics.ts`). Called once per
 * call, after it ended; must not throw. Never given a token, a hash or a subject.
 */
export interface AuthnObserver {
  /** One introspection call of `provider`, its result and its duration in seconds (from the injected clock). */
  introspection(provider: string, result: IntrospectionCallResult, seconds: number): void;
  /** One browser login's callback of `provider` (type oidc), and how it ended. */
  login?(provider: string, result: LoginResult): void;
  /** One access-token refresh of a session. */
  refresh?(provider: string, result: RefreshResult): void;
  /** `sessions` sessions ended, and how. */
  logout?(provider: string, kind: LogoutKind, sessions: number): void;
}

/**
 * `result` of a login callback: `success` (a session was made), `bad_state` (no pre-login record, a replayed or
 * foreign state), `rejected` (the IdP refused, or its code exchange or ID token did not verify), `unavailable`.
 */
export type LoginResult = 'success' | 'bad_state' | 'rejected' | 'unavailable';
/** `result` of a refresh: `failure` ends the session; `unavailable` (IdP down) keeps it while its token lives. */
export type RefreshResult = 'success' | 'failure' | 'unavailable';
/** How sessions end: the person logged out, the IdP said so (back-channel), a refresh was refused, a timeout. */
export type LogoutKind = 'user' | 'backchannel' | 'refresh_failed' | 'timeout';

/** A provider as the metrics see it: its type (a closed set) and its counters. */
export interface AuthStatsSource {
  readonly type: string;
  stats(): AuthnStats;
  /** Live browser sessions (oidc providers only). */
  activeSessions?(): Promise<number>;
}
