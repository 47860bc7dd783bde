/**
 * `type: introspection`: an opaque token checked by the IdP (RFC 7662), with a cache in front.
 *
 * Split like oauth4webapi: {@link introspectionRequest} builds and sends the call (POST form, client
 * authentication, timeout, no redirects), {@link processIntrospectionResponse} checks the answer field by field.
 * Anything other than a well-formed 200 JSON answer is `ERR_AUTHN_UNAVAILABLE` (503, never a pass): network
 * error, timeout, any other status (including 3xx: `redirect: 'manual'`), another content type, a body over
 * {@link MAX_INTROSPECTION_BYTES}, invalid JSON. A JSON answer that is not `active: true` (boolean) with
 * well-typed fields is `ERR_AUTHN_INVALID_TOKEN`.
 *
 * This provider accepts any token (it has no way to tell "not mine"); put it last in a chain.
 *
 * Cache (CONVENTIONS rule 7; threat model #49–#57): key SHA-256(token); filled only after every check passed;
 * a positive answer is fresh for min(exp − now, maxTtlSeconds), and `exp` is re-checked on every hit; a clean
 * `active: false` is cached for negativeTtlSeconds. Lifetimes run on the monotonic clock from the moment the
 * answer was stored; `exp` and `nbf` are compared with the wall clock on every hit (issue 12 point 7): a wall
 * clock stepped back cannot keep an answer past its lifetime, one stepped forward past `exp` ends it, and an
 * answer whose `nbf` is ahead of the wall clock is refused even from the cache. At most maxEntries entries
 * (LRU, evictions counted);
 * concurrent misses for one hash share one IdP call (single-flight), and at most `maxConcurrentCalls` calls run
 * at once (past it a miss is refused with 503 at once: load shedding, not a queue). An IdP that keeps failing is
 * not asked by every request (threat model #125): after {@link PAUSE_AFTER_FAILURES} failed calls in a row, new
 * calls wait {@link PAUSE_INITIAL_MS}, doubling up to {@link PAUSE_MAX_MS}, and then one call at a time
 * probes (timed on the monotonic clock); meanwhile a miss is refused with 503 at once. The first answer from
 * the IdP ends the pause. No
 * stale answer is ever served unless the
 * caller passes `staleIfErrorSeconds` (a route option, off by default; capped at
 * {@link MAX_STALE_IF_ERROR_SECONDS}). Route policy is not cached here: it runs on every request, hit or miss.
 */
import { LRUCache } from 'lru-cache';
import { monotonicMs } from '../clock.js';
import { ConfigError, GatewayError } from '../errors.js';
import { MAX_TOKEN_LENGTH } from './bearer.js';
import type { Credential } from './credential.js';
import {
  describeFetchError,
  discardBody,
  isJsonContentType,
  readBodyCapped,
} from './http.js';
import {
  parseScope,
  resolveDeps,
  type AuthenticateOptions,
  type Authenticator,
  type AuthnDeps,
  type AuthnResult,
  type FetchLike,
  type IntrospectionCallResult,
  type Principal,
} from './principal.js';
import { MAX_STALE_IF_ERROR_SECONDS, type IntrospectionProviderConfig } from './provider-config.js';
import { createSharedAnswers } from './shared-answers.js';

/** Largest introspection answer read: 64 KiB (a real one is a few hundred bytes). */
export const MAX_INTROSPECTION_BYTES = 64 * 1024;

/** How to reach and authenticate to the introspection endpoint. */
export interface IntrospectionClient {
  readonly endpoint: string;
  readonly clientId: string;
  readonly clientSecret: string;
  readonly authMethod: 'client_secret_basic' | 'client_secret_post';
  readonly timeoutMs: number;
}

/** What the answer must match, and who is asking. */
export interface IntrospectionExpectations {
  readonly provider: string;
  /** Epoch ms of the check. */
  readonly now: number;
  /** The token asked about: a claim that echoes it is dropped, so no cache entry holds a raw token (threat model #53). */
  readonly token?: string;
  readonly audience?: string;
  readonly issuer?: string;
}

/** A checked answer. */
export type IntrospectionOutcome =
  { readonly active: false } | { readonly active: true; readonly principal: Principal };

/** RFC 6749 §2.3.1 / Appendix B: application/x-www-form-urlencoded encoding of one value. */
function formUrlEncode(value: string): string {
  return new URLSearchParams({ v: value }).toString().slice(2);
}

/**
 * Builds and sends one introspection call (RFC 7662 §2.1): `POST` form `token=...&token_type_hint=access_token`,
 * client authentication by Basic header (id and secret form-urlencoded first, RFC 6749 §2.3.1) or in the body,
 * `redirect: 'manual'`, aborted after `timeoutMs`.
 * @throws GatewayError `ERR_AUTHN_UNAVAILABLE` on a network error or timeout.
 */
export async function introspectionRequest(
  client: IntrospectionClient,
  token: string,
  fetchImpl: FetchLike,
): Promise<Response> {
  const body = new URLSearchParams({ token, token_type_hint: 'access_token' });
  const headers: Record<string, string> = {
    accept: 'application/json',
    'content-type': 'application/x-www-form-urlencoded',
  };
  if (client.authMethod === 'client_secret_basic') {
    const credentials = `${formUrlEncode(client.clientId)}:${formUrlEncode(client.clientSecret)}`;
    headers['authorization'] = `Basic ${Buffer.from(credentials, 'utf8').toString('base64')}`;
  } else {
    body.set('client_id', client.clientId);
    body.set('client_secret', client.clientSecret);
  }
  try {
    return await fetchImpl(client.endpoint, {
      method: 'POST',
      headers,
      body: body.toString(),
      redirect: 'manual',
      signal: AbortSignal.timeout(client.timeoutMs),
    });
  } catch (err) {
    throw new GatewayError('ERR_AUTHN_UNAVAILABLE', `introspection call failed: ${describeFetchError(err)}`, {
      cause: err,
    });
  }
}

/**
 * Checks one introspection answer (RFC 7662 §2.2), field by field.
 *
 * - `ERR_AUTHN_INVALID_TOKEN` for a 400 whose OAuth error is `unsupported_token_type` (the IdP will never
 *   introspect this token, e.g. oidc-provider given a JWT access token).
 * - `ERR_AUTHN_UNAVAILABLE`: any other status ≠ 200, content type not `application/json`, body over the cap, not JSON,
 *   not a JSON object, or the body read timed out.
 * - `{ active: false }`: `active` is exactly `false`.
 * - `ERR_AUTHN_INVALID_TOKEN`: `active` missing or not a boolean (`"true"` is not true); `exp`/`nbf`/`iat` not
 *   finite numbers; `exp` ≤ now; `nbf` > now; `iss`, `scope`, `client_id`, `sub`, `username`, `token_type`,
 *   `jti` present but not strings; `aud` neither a string nor a list of strings; `issuer`/`audience` configured
 *   and not matched; neither `sub` nor `client_id` to name the caller.
 */
export async function processIntrospectionResponse(
  response: Response,
  expect: IntrospectionExpectations,
): Promise<IntrospectionOutcome> {
  const unavailable = (detail: string, cause?: unknown): GatewayError =>
    new GatewayError(
      'ERR_AUTHN_UNAVAILABLE',
      `${expect.provider}: ${detail}`,
      cause === undefined ? undefined : { cause },
    );
  if (response.status !== 200) {
    // A definitive answer about the token, not an outage: oidc-provider refuses to introspect JWTs this way.
    if (response.status === 400 && (await oauthError(response)) === 'unsupported_token_type') {
      throw new GatewayError(
        'ERR_AUTHN_INVALID_TOKEN',
        `${expect.provider}: introspection: unsupported_token_type`,
      );
    }
    await discardBody(response);
    throw unavailable(`introspection answered status ${response.status}`);
  }
  if (!isJsonContentType(response.headers.get('content-type'))) {
    await discardBody(response);
    throw unavailable('introspection answer is not application/json');
  }
  let text: string;
  try {
    text = await readBodyCapped(response, MAX_INTROSPECTION_BYTES);
  } catch (err) {
    throw unavailable(`introspection answer unreadable: ${describeFetchError(err)}`, err);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw unavailable('introspection answer is not JSON');
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json))
    throw unavailable('introspection answer is not a JSON object');
  const a = json as Record<string, unknown>;

  const invalid = (detail: string): GatewayError =>
    new GatewayError('ERR_AUTHN_INVALID_TOKEN', `${expect.provider}: ${detail}`);
  if (a['active'] === false) return { active: false };
  if (a['active'] !== true) throw invalid('introspection "active" is not the boolean true');

  const numeric = (key: string): number | undefined => {
    const v = a[key];
    if (v === undefined) return undefined;
    if (typeof v !== 'number' || !Number.isFinite(v)) throw invalid(`introspection "${key}" is not a number`);
    return v;
  };
  const text_ = (key: string): string | undefined => {
    const v = a[key];
    if (v === undefined) return undefined;
    if (typeof v !== 'string') throw invalid(`introspection "${key}" is not a string`);
    return v;
  };
  const exp = numeric('exp');
  const nbf = numeric('nbf');
  numeric('iat');
  if (exp !== undefined && exp * 1000 <= expect.now) throw invalid('introspection "exp" is in the past');
  if (nbf !== undefined && nbf * 1000 > expect.now) throw invalid('introspection "nbf" is in the future');
  const iss = text_('iss');
  const scope = text_('scope');
  const clientId = text_('client_id');
  const sub = text_('sub');
  text_('username');
  text_('token_type');
  text_('jti');
  const aud = a['aud'];
  if (
    aud !== undefined &&
    typeof aud !== 'string' &&
    !(Array.isArray(aud) && aud.every((x) => typeof x === 'string'))
  ) {
    throw invalid('introspection "aud" is neither a string nor a list of strings');
  }
  if (expect.issuer !== undefined && iss !== expect.issuer)
    throw invalid('introspection "iss" does not match');
  if (expect.audience !== undefined) {
    const ok =
      typeof aud === 'string' ? aud === expect.audience : Array.isArray(aud) && aud.includes(expect.audience);
    if (!ok) throw invalid('introspection "aud" does not contain the configured audience');
  }
  const subject = sub !== undefined && sub !== '' ? sub : clientId;
  if (subject === undefined || subject === '')
    throw invalid('introspection answer names no sub or client_id');
  const principal: Principal = Object.freeze({
    subject,
    scopes: parseScope(scope ?? '') ?? [],
    provider: expect.provider,
    ...(clientId !== undefined ? { clientId } : {}),
    claims: Object.freeze(expect.token === undefined ? { ...a } : withoutEcho(a, expect.token)),
    expiresAtMs: exp === undefined ? undefined : exp * 1000,
  });
  return { active: true, principal };
}

/** The answer's members, without any whose value is the token itself (some IdPs echo it as `jti`). */
function withoutEcho(answer: Record<string, unknown>, token: string): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(answer)) if (v !== token) out[k] = v;
  return out;
}

/** The `error` of an OAuth error body (RFC 6749 §5.2), read under the size cap; undefined when there is none. */
async function oauthError(response: Response): Promise<string | undefined> {
  if (!isJsonContentType(response.headers.get('content-type'))) return undefined;
  try {
    const body: unknown = JSON.parse(await readBodyCapped(response, MAX_INTROSPECTION_BYTES));
    const error = body !== null && typeof body === 'object' ? (body as { error?: unknown }).error : undefined;
    return typeof error === 'string' ? error : undefined;
  } catch {
    return undefined;
  }
}

/**
 * One cached answer. `storedAtMs` and `freshForMs` are monotonic (the answer is trusted without asking while
 * less than `freshForMs` has elapsed since it was stored); `expMs` and `nbfMs` are the token's own wall-clock
 * bounds, checked on every hit.
 */
type Entry =
  | {
      readonly active: true;
      readonly principal: Principal;
      readonly storedAtMs: number;
      /** min(exp − now, maxTtl) at the time it was stored. */
      readonly freshForMs: number;
      readonly expMs: number | undefined;
      readonly nbfMs: number | undefined;
    }
  | { readonly active: false; readonly storedAtMs: number; readonly freshForMs: number };

/** Whether `entry` is still within its lifetime at monotonic time `mono`. */
const isFresh = (entry: Entry, mono: number): boolean => mono - entry.storedAtMs < entry.freshForMs;

/**
 * Creates a `type: introspection` provider. Reads `clientSecretFile` now (through `deps.readFile`).
 * @throws ConfigError naming `authProviders.<name>.clientSecretFile` when it is unreadable or empty.
 */
/** Failed IdP calls in a row (each started after the previous failure was known) before calls pause. */
export const PAUSE_AFTER_FAILURES = 2;
/** The first pause after {@link PAUSE_AFTER_FAILURES} failures; it doubles with each further failed probe. */
export const PAUSE_INITIAL_MS = 500;
/** The longest pause between two probes of a failing IdP. */
export const PAUSE_MAX_MS = 30_000;

export function createIntrospectionProvider(
  name: string,
  config: IntrospectionProviderConfig,
  deps: AuthnDeps,
): Authenticator {
  const d = resolveDeps(deps);
  const keyPath = `authProviders.${name}`;
  let secret: string;
  try {
    secret = d.readFile(config.clientSecretFile).replace(/\r?\n$/, '');
  } catch (err) {
    throw new ConfigError(
      `${keyPath}.clientSecretFile`,
      config.clientSecretFile,
      'a readable file holding the client secret',
      { cause: err },
    );
  }
  if (secret === '')
    throw new ConfigError(
      `${keyPath}.clientSecretFile`,
      config.clientSecretFile,
      'a file holding a non-empty client secret',
    );
  const client: IntrospectionClient = {
    endpoint: config.endpoint,
    clientId: config.clientId,
    clientSecret: secret,
    authMethod: config.authMethod,
    timeoutMs: config.timeoutMs,
  };
  const maxTtlMs = config.cache.maxTtlSeconds * 1000;
  const negativeTtlMs = config.cache.negativeTtlSeconds * 1000;
  const staleKeepMs = MAX_STALE_IF_ERROR_SECONDS * 1000;

  let hits = 0;
  let misses = 0;
  let evictions = 0;
  /** IdP calls running now (not the requests waiting on them): bounded by `maxConcurrentCalls`. */
  let callsInFlight = 0;
  let idpRequests = 0;
  let idpFailures = 0;
  let staleServed = 0;
  // The LRU bounds memory (max) and frees entries after their retention (ttl, monotonic); freshness and the
  // token's own exp/nbf are checked here.
  const cache = new LRUCache<string, Entry>({
    max: config.cache.maxEntries,
    ttl: Math.max(maxTtlMs + staleKeepMs, 1),
    ttlResolution: 0,
    perf: { now: () => monotonicMs(d.clock) },
    dispose: (_v, _k, reason) => {
      if (reason === 'evict') evictions++;
    },
  });
  const inflight = new Map<string, Promise<Entry>>();
  // The replicas' shared answers (store.type: redis), behind the LRU above; none with the memory store.
  const shared = deps.shared !== undefined ? createSharedAnswers(name, deps.shared.kv, d.clock) : undefined;
  /**
   * Raised by every purge. An IdP call that started before a purge may carry the answer from before a
   * revocation: it still answers the requests that were waiting for it, but is not stored.
   */
  let generation = 0;
  /**
   * Failed calls in a row. A call that was already running when a failure was known does not add to it (a
   * hundred calls cut by one outage are one failure, not a hundred), so the pause grows one step per probe.
   */
  let failures = 0;
  /** Counted failures since the start: a call that began under an older value was running when one was known. */
  let failureSeq = 0;
  /** When the last counted failure was known (monotonic ms). */
  let lastFailureMs = -Infinity;
  /** A probe call is running while the IdP is paused: no other new call starts. */
  let probing = false;

  /** The pause in force after `failures` failures (0: none). */
  const pauseMs = (): number =>
    failures < PAUSE_AFTER_FAILURES
      ? 0
      : Math.min(PAUSE_INITIAL_MS * 2 ** (failures - PAUSE_AFTER_FAILURES), PAUSE_MAX_MS);

  /** The shared answer of another replica (store.type: redis), when there is a fresh one; else asks the IdP. */
  async function lookup(token: string, hash: string): Promise<Entry> {
    if (shared === undefined) return introspect(token, hash, undefined);
    const startedIn = generation;
    const found = await shared.lookup(hash);
    const a = found.answer;
    if (a === undefined) return introspect(token, hash, found.generation);
    const storedAtMs = monotonicMs(d.clock);
    const entry: Entry = a.active
      ? { active: true, principal: a.principal, storedAtMs, freshForMs: a.freshForMs, expMs: a.expMs, nbfMs: a.nbfMs }
      : { active: false, storedAtMs, freshForMs: a.freshForMs };
    // Not past its shared freshness, and not at all when a purge came while it was read.
    if (startedIn === generation && a.freshForMs >= 1) cache.set(hash, entry, { ttl: Math.floor(a.freshForMs) });
    return entry;
  }

  /**
   * One IdP call; stores the answer after every check passed (locally, and shared under `sharedGeneration` when
   * given); resolves with it.
   */
  async function introspect(token: string, hash: string, sharedGeneration: string | undefined): Promise<Entry> {
    const startedIn = generation;
    const seqAtStart = failureSeq;
    idpRequests++;
    const started = d.clock.hrtime();
    const observe = (result: IntrospectionCallResult): void =>
      d.observer.introspection(name, result, Number(d.clock.hrtime() - started) / 1e9);
    let outcome: IntrospectionOutcome;
    try {
      const response = await introspectionRequest(client, token, d.fetch);
      outcome = await processIntrospectionResponse(response, {
        provider: name,
        now: d.clock.now(),
        token,
        ...(config.audience !== undefined ? { audience: config.audience } : {}),
        ...(config.issuer !== undefined ? { issuer: config.issuer } : {}),
      });
    } catch (err) {
      if (err instanceof GatewayError && err.code === 'ERR_AUTHN_UNAVAILABLE') {
        idpFailures++;
        if (seqAtStart === failureSeq) {
          failures++;
          failureSeq++;
          lastFailureMs = monotonicMs(d.clock);
        }
        observe('error');
        d.logger.warn(
          { provider: name, reason: err.detail, tokenHash: hash.slice(0, 12) },
          'introspection unavailable',
        );
      } else {
        // ERR_AUTHN_INVALID_TOKEN: the IdP answered, and the answer was refused field by field.
        if (err instanceof GatewayError && err.code === 'ERR_AUTHN_INVALID_TOKEN') failures = 0;
        observe(err instanceof GatewayError && err.code === 'ERR_AUTHN_INVALID_TOKEN' ? 'invalid' : 'error');
      }
      throw err;
    }
    observe(outcome.active ? 'active' : 'inactive');
    failures = 0;
    const now = d.clock.now();
    const storedAtMs = monotonicMs(d.clock);
    const storable = startedIn === generation;
    if (!outcome.active) {
      const entry: Entry = { active: false, storedAtMs, freshForMs: negativeTtlMs };
      if (storable && negativeTtlMs > 0) {
        cache.set(hash, entry, { ttl: negativeTtlMs });
        if (sharedGeneration !== undefined) shared?.share(hash, sharedGeneration, { active: false, freshForMs: negativeTtlMs });
      }
      return entry;
    }
    const expMs = outcome.principal.expiresAtMs;
    // processIntrospectionResponse checked that nbf, when present, is a finite number not in the future.
    const nbf = outcome.principal.claims['nbf'];
    const nbfMs = typeof nbf === 'number' ? nbf * 1000 : undefined;
    const freshForMs = Math.min((expMs ?? Infinity) - now, maxTtlMs);
    const entry: Entry = { active: true, principal: outcome.principal, storedAtMs, freshForMs, expMs, nbfMs };
    // Kept past freshness only for staleIfError, and never past exp.
    const retainMs = Math.floor(Math.min((expMs ?? Infinity) - now, maxTtlMs + staleKeepMs));
    if (storable && maxTtlMs > 0 && freshForMs > 0 && retainMs >= 1) {
      cache.set(hash, entry, { ttl: retainMs });
      if (sharedGeneration !== undefined)
        shared?.share(hash, sharedGeneration, { active: true, principal: outcome.principal, freshForMs, expMs, nbfMs });
    }
    return entry;
  }

  return {
    name,
    type: 'introspection',
    async authenticate(credential: Credential, opts?: AuthenticateOptions): Promise<AuthnResult> {
      if (credential.kind !== 'bearer') return 'not_applicable';
      const { token, hash } = credential;
      if (token.length > MAX_TOKEN_LENGTH)
        throw new GatewayError('ERR_AUTHN_INVALID_TOKEN', `${name}: token too long`);
      const now = d.clock.now();
      const mono = monotonicMs(d.clock);
      const cached = cache.get(hash);
      if (cached !== undefined && isFresh(cached, mono)) {
        if (!cached.active) {
          hits++;
          throw new GatewayError('ERR_AUTHN_INVALID_TOKEN', `${name}: token inactive (cached answer)`);
        }
        // The answer was checked against the wall clock when it came; a clock stepped back since then puts
        // nbf ahead again, and the token is no more valid now than it would be on a fresh call.
        if (cached.nbfMs !== undefined && now < cached.nbfMs) {
          hits++;
          cache.delete(hash);
          throw new GatewayError(
            'ERR_AUTHN_INVALID_TOKEN',
            `${name}: introspection "nbf" is in the future (cached answer; the wall clock went back)`,
          );
        }
        // exp re-checked on every hit against the wall clock (threat model #49): the monotonic lifetime
        // cannot see a wall clock stepped forward past exp.
        if (cached.expMs === undefined || now < cached.expMs) {
          hits++;
          return cached.principal;
        }
      }
      misses++;
      let call = inflight.get(hash);
      if (call === undefined && callsInFlight >= config.maxConcurrentCalls) {
        // Shed, do not queue (threat model #57). A route's staleIfErrorSeconds still applies: an IdP that
        // cannot be asked now is an IdP that did not answer.
        const shed = new GatewayError(
          'ERR_AUTHN_UNAVAILABLE',
          `${name}: ${config.maxConcurrentCalls} introspection calls already in flight (maxConcurrentCalls)`,
        );
        const stale = staleAnswer(shed, hash, cached, opts);
        if (stale !== undefined) return stale;
        throw shed;
      }
      const paused = pauseMs();
      if (call === undefined && paused > 0) {
        // The IdP keeps failing: no new call before the pause ends, then one probe at a time.
        const waitMs = lastFailureMs + paused - mono;
        if (waitMs > 0 || probing) {
          const refused = new GatewayError(
            'ERR_AUTHN_UNAVAILABLE',
            `${name}: the introspection endpoint failed ${failures} calls in a row; ` +
              (probing ? 'a probe call is running' : `the next call in ${Math.ceil(waitMs)} ms`),
          );
          const stale = staleAnswer(refused, hash, cached, opts);
          if (stale !== undefined) return stale;
          throw refused;
        }
      }
      if (call === undefined) {
        const probe = paused > 0;
        if (probe) probing = true;
        callsInFlight++;
        const started = lookup(token, hash).finally(() => {
          if (probe) probing = false;
          callsInFlight--;
          // A purge may have dropped this call and a newer one may have taken its place.
          if (inflight.get(hash) === started) inflight.delete(hash);
        });
        call = started;
        inflight.set(hash, call);
      }
      let entry: Entry;
      try {
        entry = await call;
      } catch (err) {
        const stale = staleAnswer(err, hash, cached, opts);
        if (stale !== undefined) return stale;
        throw err;
      }
      if (!entry.active) throw new GatewayError('ERR_AUTHN_INVALID_TOKEN', `${name}: token inactive`);
      return entry.principal;
    },
    readiness: () => undefined,
    warmUp: () => Promise.resolve(),
    stats: () => ({
      cacheEntries: cache.size,
      cacheHits: hits,
      cacheMisses: misses,
      cacheEvictions: evictions,
      idpRequests,
      idpFailures,
      staleServed,
      reloads: 0,
    }),
    purge(hash?: string): number {
      // Requests after the purge ask the IdP afresh instead of joining a call that began before it.
      generation++;
      if (hash === undefined) {
        const n = cache.size;
        cache.clear();
        inflight.clear();
        return n;
      }
      inflight.delete(hash);
      return cache.delete(hash) ? 1 : 0;
    },
    purgeShared: () => shared?.invalidate() ?? Promise.resolve(),
    close() {
      cache.clear();
      inflight.clear();
    },
  };

  /**
   * The stale positive answer to serve when the IdP is unavailable and the route allows it: still the entry in
   * the cache (not purged, not replaced), fresh until at most `staleIfErrorSeconds` ago (monotonic), and
   * within its `nbf`..`exp` by the wall clock.
   */
  function staleAnswer(
    err: unknown,
    hash: string,
    cached: Entry | undefined,
    opts: AuthenticateOptions | undefined,
  ): Principal | undefined {
    const window = Math.min(opts?.staleIfErrorSeconds ?? 0, MAX_STALE_IF_ERROR_SECONDS) * 1000;
    if (window <= 0 || cached === undefined || !cached.active) return undefined;
    if (!(err instanceof GatewayError) || err.code !== 'ERR_AUTHN_UNAVAILABLE') return undefined;
    if (cache.peek(hash, { allowStale: true }) !== cached) return undefined;
    if (monotonicMs(d.clock) - (cached.storedAtMs + cached.freshForMs) > window) return undefined;
    const now = d.clock.now();
    if (cached.expMs !== undefined && now >= cached.expMs) return undefined;
    if (cached.nbfMs !== undefined && now < cached.nbfMs) return undefined;
    staleServed++;
    d.logger.warn(
      { provider: name, tokenHash: hash.slice(0, 12) },
      'introspection unavailable; served a stale answer (staleIfErrorSeconds)',
    );
    return cached.principal;
  }
}
