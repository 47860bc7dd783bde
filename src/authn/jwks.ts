/**
 * Key sources for the JWT provider: a remote JWKS (jose's `createRemoteJWKSet`, guarded) or a local file.
 *
 * jose's remote set gives the key selection, the per-fetch timeout, `redirect: 'manual'`, "200 or error",
 * in-flight dedup and the unknown-kid cooldown (at most one refetch per cooldown after a *successful* fetch:
 * threat model #45). What it does not give, and this module adds in its `customFetch`:
 *
 * - a bounded backoff while the endpoint fails: jose refetches on every sequential request once its copy is
 *   older than `cacheMaxAge` or absent (50 requests → 50 IdP hits, threat model #46). Here, after a failure,
 *   no fetch leaves the process until `now ≥ retryAt`; the wait doubles per consecutive failure from
 *   {@link BACKOFF_INITIAL_MS} up to {@link BACKOFF_MAX_MS}, and resets on the first success. Meanwhile the
 *   resolver fails fast with {@link KeySourceUnavailable} (→ 503);
 * - a body size cap ({@link MAX_JWKS_BYTES}) and a shape check (`{ keys: [object, ...] }`) before jose parses it
 *   (threat model #47: a 10 MB answer);
 * - an injected fetch and clock (the clock governs the backoff; jose's cooldown and max age read `Date.now()`).
 *
 * Fail closed: a key set older than `maxAgeMs` is not used once its refresh fails (jose's behaviour); keys are
 * never taken from the token (`jwk`, `jku`, `x5u` are ignored: threat model #31).
 */
import { createLocalJWKSet, createRemoteJWKSet, customFetch, errors, type JWTVerifyGetKey } from 'jose';
import { describeFetchError, discardBody, readBodyCapped } from './http.js';
import type { ResolvedAuthnDeps } from './principal.js';

/** Largest JWKS body read: 256 KiB holds hundreds of RSA-4096 keys; a real set is a few KiB. */
export const MAX_JWKS_BYTES = 256 * 1024;
/** First wait after a failed JWKS fetch: 1 s (one retry per second at most while the IdP is down). */
export const BACKOFF_INITIAL_MS = 1_000;
/** Longest wait between JWKS fetch attempts while the endpoint fails: 30 s, so recovery takes ≤ 30 s. */
export const BACKOFF_MAX_MS = 30_000;

/** The key set could not be obtained (fetch failed, backing off, bad body). The JWT provider maps it to 503. */
export class KeySourceUnavailable extends Error {
  constructor(detail: string, options?: { cause?: unknown }) {
    super(detail, options);
    this.name = 'KeySourceUnavailable';
  }
}

/** Where the JWT provider gets its verification keys. */
export interface KeySource {
  /**
   * jose key resolver. Rejects with jose's `JWKSNoMatchingKey` / `JWKSMultipleMatchingKeys` when the set has no
   * (single) key for the header (the token is wrong), and with {@link KeySourceUnavailable} for anything else.
   */
  readonly getKey: JWTVerifyGetKey;
  /** Why the source cannot verify yet, or undefined. */
  readiness(): string | undefined;
  /** Fetches the set once if it has none (remote); never rejects. */
  warmUp(): Promise<void>;
  /** Fetch attempts that reached the network, failed attempts, successful fetches. */
  counters(): { readonly requests: number; readonly failures: number; readonly successes: number };
}

/** Options of {@link createRemoteKeySource}. */
export interface RemoteKeySourceOptions {
  readonly timeoutMs: number;
  /** jose `cooldownDuration`: minimum time between refetches triggered by an unknown kid. */
  readonly cooldownMs: number;
  /** jose `cacheMaxAge`: a set older than this is refreshed before use. */
  readonly maxAgeMs: number;
  readonly backoffInitialMs?: number;
  readonly backoffMaxMs?: number;
  readonly maxBytes?: number;
}

/** A remote JWKS with backoff, size cap and injected fetch/clock. See the module comment. */
export function createRemoteKeySource(
  url: URL,
  opts: RemoteKeySourceOptions,
  deps: Pick<ResolvedAuthnDeps, 'clock' | 'fetch' | 'logger'>,
  providerName: string,
): KeySource {
  const backoffInitial = opts.backoffInitialMs ?? BACKOFF_INITIAL_MS;
  const backoffMax = opts.backoffMaxMs ?? BACKOFF_MAX_MS;
  const maxBytes = opts.maxBytes ?? MAX_JWKS_BYTES;
  let consecutiveFailures = 0;
  let retryAtMs = 0;
  let lastError: string | undefined;
  let requests = 0;
  let failures = 0;
  let successes = 0;

  const fail = (detail: string): never => {
    failures++;
    consecutiveFailures++;
    const wait = Math.min(backoffInitial * 2 ** Math.min(consecutiveFailures - 1, 30), backoffMax);
    retryAtMs = deps.clock.now() + wait;
    lastError = detail;
    deps.logger.warn(
      { provider: providerName, jwksHost: url.host, reason: detail, retryInMs: wait },
      'jwks fetch failed; backing off',
    );
    throw new KeySourceUnavailable(`jwks fetch failed: ${detail}`);
  };

  // jose calls this for every (deduplicated) reload; it is the one place bytes leave the process.
  const guardedFetch = async (
    href: string,
    init: { headers: Headers; signal: AbortSignal },
  ): Promise<Response> => {
    const now = deps.clock.now();
    if (now < retryAtMs) {
      throw new KeySourceUnavailable(
        `jwks backing off for ${retryAtMs - now} ms after ${consecutiveFailures} failure(s)`,
      );
    }
    requests++;
    let response: Response;
    try {
      response = await deps.fetch(href, {
        method: 'GET',
        headers: init.headers,
        redirect: 'manual',
        signal: init.signal,
      });
    } catch (err) {
      return fail(describeFetchError(err));
    }
    if (response.status !== 200) {
      await discardBody(response);
      return fail(`status ${response.status}`);
    }
    let text: string;
    try {
      text = await readBodyCapped(response, maxBytes);
    } catch (err) {
      return fail(describeFetchError(err));
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      return fail('body is not JSON');
    }
    if (!isJwkSet(json)) return fail('body is not a JWK set ({"keys":[{...}]})');
    consecutiveFailures = 0;
    retryAtMs = 0;
    lastError = undefined;
    successes++;
    return new Response(text, { status: 200, headers: { 'content-type': 'application/json' } });
  };

  const remote = createRemoteJWKSet(url, {
    timeoutDuration: opts.timeoutMs,
    cooldownDuration: opts.cooldownMs,
    cacheMaxAge: opts.maxAgeMs,
    [customFetch]: guardedFetch,
  });

  return {
    getKey: async (header, token) => {
      try {
        return await remote(header, token);
      } catch (err) {
        if (err instanceof errors.JWKSNoMatchingKey || err instanceof errors.JWKSMultipleMatchingKeys)
          throw err;
        if (err instanceof KeySourceUnavailable) throw err;
        if (err instanceof errors.JWKSTimeout)
          throw new KeySourceUnavailable('jwks fetch timed out', { cause: err });
        throw new KeySourceUnavailable(`jwks: ${describeFetchError(err)}`, { cause: err });
      }
    },
    readiness() {
      if (remote.jwks() === undefined) {
        return lastError === undefined
          ? 'jwks not fetched yet'
          : `jwks not fetched yet (last attempt: ${lastError})`;
      }
      if (!remote.fresh && lastError !== undefined)
        return `jwks older than its max age and refresh failing (${lastError})`;
      return undefined;
    },
    async warmUp() {
      if (remote.jwks() !== undefined && remote.fresh) return;
      try {
        await remote.reload();
      } catch {
        // Logged by fail(); readiness() reports it.
      }
    },
    counters: () => ({ requests, failures, successes }),
  };
}

/**
 * A key set from a local JWKS file's content (`jwksFile`), parsed once.
 * @throws Error with a reason when the text is not a JWK set.
 */
export function createLocalKeySource(text: string): KeySource {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new Error('the file is not JSON');
  }
  if (!isJwkSet(json)) throw new Error('the file is not a JWK set ({"keys":[{...}]})');
  const local = createLocalJWKSet(json);
  return {
    getKey: async (header, token) => {
      try {
        return await local(header, token);
      } catch (err) {
        if (err instanceof errors.JWKSNoMatchingKey || err instanceof errors.JWKSMultipleMatchingKeys)
          throw err;
        throw new KeySourceUnavailable(`jwks file: ${describeFetchError(err)}`, { cause: err });
      }
    },
    readiness: () => undefined,
    warmUp: () => Promise.resolve(),
    counters: () => ({ requests: 0, failures: 0, successes: 0 }),
  };
}

function isJwkSet(value: unknown): value is { keys: object[] } {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return false;
  const keys = (value as { keys?: unknown }).keys;
  return Array.isArray(keys) && keys.every((k) => k !== null && typeof k === 'object' && !Array.isArray(k));
}
