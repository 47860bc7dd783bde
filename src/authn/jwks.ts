/**
 * Key sources for the JWT provider: a remote JWKS or a local file.
 *
 * The remote set keeps jose's rules (`createRemoteJWKSet`): key selection by jose's local set, a per-fetch
 * timeout, `redirect: 'manual'`, "200 or error", concurrent reloads shared, a set older than `maxAgeMs`
 * refreshed before use (and not used if the refresh fails: fail closed), and an unknown `kid` refetching at
 * most once per `cooldownMs` after a successful fetch (threat model #45). It is written here rather than taken
 * from jose because jose times the max age and the cooldown with `Date.now()`: a wall clock stepped back an
 * hour would keep a set "fresh" (a removed key still trusted) and new kids "cooling down" (a rotated key
 * refused) for an hour. Here every duration runs on the injected monotonic clock (issue 12 point 7). Added:
 *
 * - a bounded backoff while the endpoint fails: jose alone refetches on every sequential request once its copy
 *   is older than the max age or absent (50 requests → 50 IdP hits, threat model #46). After a failure, no
 *   fetch leaves the process until the wait has elapsed; it doubles per consecutive failure from
 *   {@link BACKOFF_INITIAL_MS} up to {@link BACKOFF_MAX_MS}, and resets on the first success. Meanwhile the
 *   resolver fails fast with {@link KeySourceUnavailable} (→ 503);
 * - a body size cap ({@link MAX_JWKS_BYTES}) and a shape check (`{ keys: [object, ...] }`) before jose parses it
 *   (threat model #47: a 10 MB answer);
 * - an injected fetch and clock.
 *
 * Keys are never taken from the token (`jwk`, `jku`, `x5u` are ignored: threat model #31).
 */
import { createLocalJWKSet, errors, type JSONWebKeySet, type JWTVerifyGetKey } from 'jose';
import { monotonicMs } from '../clock.js';
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
  /** Minimum time between refetches triggered by an unknown kid (jose `cooldownDuration`). */
  readonly cooldownMs: number;
  /** A set older than this is refreshed before use (jose `cacheMaxAge`). */
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
  const href = url.href;
  const backoffInitial = opts.backoffInitialMs ?? BACKOFF_INITIAL_MS;
  const backoffMax = opts.backoffMaxMs ?? BACKOFF_MAX_MS;
  const maxBytes = opts.maxBytes ?? MAX_JWKS_BYTES;
  const mono = (): number => monotonicMs(deps.clock);
  let consecutiveFailures = 0;
  /** Monotonic ms before which no fetch is attempted (backoff). */
  let retryAtMs = -Infinity;
  let lastError: string | undefined;
  let requests = 0;
  let failures = 0;
  let successes = 0;
  /** The current set, and when it was fetched (monotonic ms). */
  let local: ReturnType<typeof createLocalJWKSet> | undefined;
  let fetchedAtMs = -Infinity;
  /** The reload in flight: concurrent callers share it. */
  let pending: Promise<void> | undefined;

  const age = (): number => mono() - fetchedAtMs;

  const fail = (detail: string): never => {
    failures++;
    consecutiveFailures++;
    const wait = Math.min(backoffInitial * 2 ** Math.min(consecutiveFailures - 1, 30), backoffMax);
    retryAtMs = mono() + wait;
    lastError = detail;
    deps.logger.warn(
      { provider: providerName, jwksHost: url.host, reason: detail, retryInMs: wait },
      'jwks fetch failed; backing off',
    );
    throw new KeySourceUnavailable(`jwks fetch failed: ${detail}`);
  };

  /** One fetch; the one place bytes leave the process. Resolves with a checked JWK set. */
  const fetchSet = async (): Promise<JSONWebKeySet> => {
    const waitMs = retryAtMs - mono();
    if (waitMs > 0) {
      throw new KeySourceUnavailable(
        `jwks backing off for ${Math.ceil(waitMs)} ms after ${consecutiveFailures} failure(s)`,
      );
    }
    requests++;
    let response: Response;
    try {
      response = await deps.fetch(href, {
        method: 'GET',
        headers: { accept: 'application/json, application/jwk-set+json' },
        redirect: 'manual',
        signal: AbortSignal.timeout(opts.timeoutMs),
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
    return json;
  };

  const reload = (): Promise<void> => {
    pending ??= (async () => {
      try {
        const json = await fetchSet();
        let next: ReturnType<typeof createLocalJWKSet>;
        try {
          next = createLocalJWKSet(json);
        } catch (err) {
          return fail(describeFetchError(err));
        }
        local = next;
        fetchedAtMs = mono();
        consecutiveFailures = 0;
        retryAtMs = -Infinity;
        lastError = undefined;
        successes++;
      } finally {
        pending = undefined;
      }
    })();
    return pending;
  };

  const resolveKey: JWTVerifyGetKey = async (header, token) => {
    if (local === undefined || age() >= opts.maxAgeMs) await reload();
    const set = local;
    if (set === undefined) throw new KeySourceUnavailable('jwks not fetched yet');
    try {
      return await set(header, token);
    } catch (err) {
      // An unknown kid may be a rotated-in key: refetch, at most once per cooldown.
      if (err instanceof errors.JWKSNoMatchingKey && age() >= opts.cooldownMs) {
        await reload();
        return (local ?? set)(header, token);
      }
      throw err;
    }
  };

  return {
    getKey: async (header, token) => {
      try {
        return await resolveKey(header, token);
      } catch (err) {
        if (err instanceof errors.JWKSNoMatchingKey || err instanceof errors.JWKSMultipleMatchingKeys)
          throw err;
        if (err instanceof KeySourceUnavailable) throw err;
        throw new KeySourceUnavailable(`jwks: ${describeFetchError(err)}`, { cause: err });
      }
    },
    readiness() {
      if (local === undefined) {
        return lastError === undefined
          ? 'jwks not fetched yet'
          : `jwks not fetched yet (last attempt: ${lastError})`;
      }
      if (age() >= opts.maxAgeMs && lastError !== undefined)
        return `jwks older than its max age and refresh failing (${lastError})`;
      return undefined;
    },
    async warmUp() {
      if (local !== undefined && age() < opts.maxAgeMs) return;
      try {
        await reload();
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
