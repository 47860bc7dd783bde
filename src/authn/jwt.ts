/**
 * `type: jwt`: a JWT access token verified locally with jose against the IdP's JWKS (remote or file).
 *
 * Which tokens are "of its kind" (threat model #58, one documented rule): a compact JWS (three base64url
 * segments, the last may be empty) whose *unverified* payload has `iss` equal to the configured issuer. Any
 * other token is `'not_applicable'` and goes to the next provider (so several issuers, or a JWT provider in
 * front of an introspection provider, can share a route). Once a token is claimed, any failure is
 * `ERR_AUTHN_INVALID_TOKEN` and the chain stops: a token that failed the JWT path is never tried elsewhere.
 * The unverified `iss` only routes; identity comes from jose's verified payload alone.
 *
 * Every jose check is always on (threat model #27–#39): `algorithms` (asymmetric only, from
 * config), `issuer`, `audience`, `requiredClaims: ['exp', ...]`, `clockTolerance`, `maxTokenAge` when set,
 * `typ` when set. Added here: `exp` at most `maxExpiresInSeconds` ahead (jose accepts `exp: 1e308`, threat model #36),
 * `iat` not in the future beyond the tolerance (threat model #34, even without `maxTokenAge`), `sub`/`scope` types.
 *
 * Verified tokens are cached by SHA-256 (never the token) until min(exp, iat + maxTokenAge, now +
 * cacheMaxSeconds); every hit re-checks that bound. The cache holds at most `cacheMaxEntries`. An entry's
 * lifetime runs on the monotonic clock from the moment it was stored; the token's own times are compared with
 * the wall clock on every hit (issue 12 point 7): a hit is served only while `exp` (and iat + maxTokenAge) is
 * ahead and `nbf`/`iat` are not ahead beyond the tolerance — what a fresh verification would decide — so a
 * wall clock stepped back or forward neither extends nor cuts a cached decision.
 *
 * Token format (issue 12 point 8), checked on the protected header before verification: `b64` other than
 * `true` (RFC 7797 unencoded payload, with or without `crit`) and any `crit` at all (RFC 7515 §4.1.11: the
 * gateway implements no JWS extension) are refused, `ERR_AUTHN_INVALID_TOKEN` (401 invalid_token), whatever
 * the signature. See {@link unsupportedFormat}.
 */
import { decodeProtectedHeader, errors, jwtVerify, type JWTPayload } from 'jose';
import { LRUCache } from 'lru-cache';
import { monotonicMs } from '../clock.js';
import { ConfigError, GatewayError } from '../errors.js';
import { MAX_TOKEN_LENGTH } from './bearer.js';
import type { Credential } from './credential.js';
import { createLocalKeySource, createRemoteKeySource, KeySourceUnavailable, type KeySource } from './jwks.js';
import {
  logSafe,
  parseScope,
  resolveDeps,
  type AuthnDeps,
  type Authenticator,
  type AuthnResult,
  type Principal,
} from './principal.js';
import type { JwtProviderConfig } from './provider-config.js';

/** A compact JWS: three base64url segments, the signature possibly empty (so `alg: none` is claimed and refused). */
const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;

interface CacheEntry {
  readonly principal: Principal;
  /** Monotonic ms when the entry was stored. */
  readonly storedAtMs: number;
  /** Monotonic lifetime: min(notAfter − now, cacheMaxSeconds) when stored. */
  readonly ttlMs: number;
  /** Wall clock: usable while now < notAfterMs, min(exp, iat + maxTokenAge). */
  readonly notAfterMs: number;
  /** Wall clock: refused while now < notBeforeMs, max(nbf, iat) − clock tolerance. */
  readonly notBeforeMs: number;
}

/**
 * Creates a `type: jwt` provider. Reads `jwksFile` now (through `deps.readFile`); a remote JWKS is fetched on
 * {@link Authenticator.warmUp} or the first request.
 * @throws ConfigError naming `authProviders.<name>.jwksFile` / `.jwksUri` when the key source is unusable.
 */
export function createJwtProvider(name: string, config: JwtProviderConfig, deps: AuthnDeps): Authenticator {
  const d = resolveDeps(deps);
  const keyPath = `authProviders.${name}`;
  let keys: KeySource;
  if (config.jwksFile !== undefined) {
    let text: string;
    try {
      text = d.readFile(config.jwksFile);
    } catch (err) {
      throw new ConfigError(`${keyPath}.jwksFile`, config.jwksFile, 'a readable JWKS file', { cause: err });
    }
    try {
      keys = createLocalKeySource(text);
    } catch (err) {
      const why = err instanceof Error ? err.message : 'unreadable';
      throw new ConfigError(`${keyPath}.jwksFile`, config.jwksFile, `a JWKS file: ${why}`, { cause: err });
    }
  } else if (config.jwksUri !== undefined) {
    keys = createRemoteKeySource(
      new URL(config.jwksUri),
      {
        timeoutMs: config.jwksTimeoutMs,
        cooldownMs: config.jwksCooldownSeconds * 1000,
        maxAgeMs: config.jwksMaxAgeSeconds * 1000,
      },
      d,
      name,
    );
  } else {
    throw new ConfigError(keyPath, config, 'exactly one of jwksUri or jwksFile');
  }

  const audience = typeof config.audience === 'string' ? config.audience : [...config.audience];
  const requiredClaims = [...new Set(['exp', ...(config.requiredClaims ?? [])])];
  const toleranceMs = config.clockToleranceSeconds * 1000;
  const maxExpiresInMs = config.maxExpiresInSeconds * 1000;
  const cacheMaxMs = config.cacheMaxSeconds * 1000;
  const cacheEnabled = cacheMaxMs > 0;

  let hits = 0;
  let misses = 0;
  let evictions = 0;
  const cache = new LRUCache<string, CacheEntry>({
    max: config.cacheMaxEntries,
    ttl: Math.max(cacheMaxMs, 1),
    ttlResolution: 0,
    perf: { now: () => monotonicMs(d.clock) },
    dispose: (_v, _k, reason) => {
      if (reason === 'evict') evictions++;
    },
  });

  const invalid = (detail: string): GatewayError =>
    new GatewayError('ERR_AUTHN_INVALID_TOKEN', `${name}: ${detail}`);

  async function verify(token: string, hash: string, now: number): Promise<Principal> {
    const format = unsupportedFormat(token);
    if (format !== undefined) throw invalid(format);
    let payload: JWTPayload;
    try {
      const result = await jwtVerify(token, keys.getKey, {
        algorithms: [...config.algorithms],
        issuer: config.issuer,
        audience,
        requiredClaims,
        clockTolerance: config.clockToleranceSeconds,
        currentDate: new Date(now),
        ...(config.maxTokenAgeSeconds !== undefined ? { maxTokenAge: config.maxTokenAgeSeconds } : {}),
        ...(config.typ !== undefined ? { typ: config.typ } : {}),
      });
      payload = result.payload;
    } catch (err) {
      if (err instanceof KeySourceUnavailable) {
        throw new GatewayError('ERR_AUTHN_UNAVAILABLE', `${name}: ${err.message}`, { cause: err });
      }
      throw invalid(describeJoseError(err, token));
    }

    // jose checked exp's type and that it is not past; bound how far ahead it may be.
    const expMs = (payload.exp as number) * 1000;
    if (!Number.isFinite(expMs) || expMs - now > maxExpiresInMs + toleranceMs) {
      throw invalid(`exp more than ${config.maxExpiresInSeconds} s ahead`);
    }
    let notAfterMs = expMs;
    // jose checked nbf (≤ now + tolerance); a hit must not be served while it is ahead either.
    let notBeforeMs = typeof payload.nbf === 'number' ? payload.nbf * 1000 : -Infinity;
    if (payload.iat !== undefined) {
      const iatMs = payload.iat * 1000;
      if (iatMs > now + toleranceMs) throw invalid('iat in the future');
      notBeforeMs = Math.max(notBeforeMs, iatMs);
      if (config.maxTokenAgeSeconds !== undefined) {
        notAfterMs = Math.min(notAfterMs, iatMs + config.maxTokenAgeSeconds * 1000 + toleranceMs);
      }
    }
    notBeforeMs -= toleranceMs;
    const principal = toPrincipal(payload, name, expMs);
    if (typeof principal === 'string') throw invalid(principal);

    // Filled last (rule 7): only a token that passed every check above is cached.
    const ttlMs = Math.floor(Math.min(notAfterMs - now, cacheMaxMs));
    if (cacheEnabled && ttlMs >= 1) {
      const entry: CacheEntry = {
        principal,
        storedAtMs: monotonicMs(d.clock),
        ttlMs,
        notAfterMs,
        notBeforeMs,
      };
      cache.set(hash, entry, { ttl: ttlMs });
    }
    return principal;
  }

  return {
    name,
    type: 'jwt',
    async authenticate(credential: Credential): Promise<AuthnResult> {
      if (credential.kind !== 'bearer') return 'not_applicable';
      const { token, hash } = credential;
      // Length first: nothing longer is scanned, decoded or verified (threat model #41).
      if (token.length > MAX_TOKEN_LENGTH) throw invalid('token too long');
      if (!COMPACT_JWS.test(token)) return 'not_applicable';
      const now = d.clock.now();
      if (cacheEnabled) {
        const hit = cache.get(hash);
        if (hit !== undefined) {
          // Re-checked on every hit: the lifetime on the monotonic clock, the token's times on the wall clock
          // (which may have been stepped since the entry was stored).
          if (now < hit.notBeforeMs) {
            hits++;
            cache.delete(hash);
            throw invalid('nbf or iat in the future (cached token; the wall clock went back)');
          }
          if (now < hit.notAfterMs && monotonicMs(d.clock) - hit.storedAtMs < hit.ttlMs) {
            hits++;
            return hit.principal;
          }
          cache.delete(hash);
        }
      }
      if (unverifiedIssuer(token) !== config.issuer) return 'not_applicable';
      misses++;
      return verify(token, hash, now);
    },
    readiness: () => keys.readiness(),
    warmUp: () => keys.warmUp(),
    stats() {
      const c = keys.counters();
      return {
        cacheEntries: cache.size,
        cacheHits: hits,
        cacheMisses: misses,
        cacheEvictions: evictions,
        idpRequests: c.requests,
        idpFailures: c.failures,
        staleServed: 0,
        reloads: c.successes,
      };
    },
    purge(hash?: string): number {
      if (hash === undefined) {
        const n = cache.size;
        cache.clear();
        return n;
      }
      return cache.delete(hash) ? 1 : 0;
    },
    close() {
      cache.clear();
    },
  };
}

/**
 * Why the token's protected header asks for a JWS form this gateway does not accept, or undefined. Checked
 * before verification (issue 12 point 8):
 *
 * - `b64` present and not `true`: an RFC 7797 unencoded payload. jose refuses `b64: false` in a JWT when
 *   `crit` lists it, but ignores `b64` when `crit` does not (RFC 7797 §6 requires it there) and would then
 *   base64url-decode a payload its signer may have signed as raw bytes. Refused either way.
 * - `crit` present, whatever it lists: the gateway implements no JWS extension, and RFC 7515 §4.1.11 makes
 *   a JWS whose critical extensions the recipient does not support invalid. jose would accept `crit: ["b64"]`
 *   (an extension it knows) and, unchecked, duplicate names; the one rule here is simpler to state.
 *
 * A header that does not decode is left to jose, which refuses it.
 */
function unsupportedFormat(token: string): string | undefined {
  let header: Record<string, unknown>;
  try {
    header = decodeProtectedHeader(token);
  } catch {
    return undefined;
  }
  if (header['b64'] !== undefined && header['b64'] !== true)
    return `b64 header ${logSafe(header['b64'], 16)}: unencoded payloads (RFC 7797) are not accepted`;
  if (header['crit'] !== undefined)
    return `crit header ${logSafe(header['crit'])}: no JWS extension is supported (RFC 7515 §4.1.11)`;
  return undefined;
}

/**
 * The `iss` of the unverified payload, only to decide whether this provider should look at the token.
 * undefined when the payload does not decode or has no string `iss`.
 */
function unverifiedIssuer(token: string): string | undefined {
  const first = token.indexOf('.');
  const second = token.indexOf('.', first + 1);
  try {
    const payload: unknown = JSON.parse(
      Buffer.from(token.slice(first + 1, second), 'base64url').toString('utf8'),
    );
    if (payload === null || typeof payload !== 'object') return undefined;
    const iss = (payload as { iss?: unknown }).iss;
    return typeof iss === 'string' ? iss : undefined;
  } catch {
    return undefined;
  }
}

/** The principal of a verified payload, or the reason it cannot be one. */
function toPrincipal(payload: JWTPayload, provider: string, expMs: number): Principal | string {
  const sub = payload.sub;
  const clientIdClaim = payload['client_id'] ?? payload['azp'];
  if (sub !== undefined && (typeof sub !== 'string' || sub === '')) return 'sub is not a non-empty string';
  if (clientIdClaim !== undefined && typeof clientIdClaim !== 'string')
    return 'client_id/azp is not a string';
  const subject = sub ?? clientIdClaim;
  if (subject === undefined || subject === '') return 'no sub (nor client_id) to identify the caller';
  let scopes: readonly string[] = [];
  if (payload['scope'] !== undefined) {
    const parsed = parseScope(payload['scope']);
    if (parsed === undefined) return 'scope is not a string';
    scopes = parsed;
  } else if (payload['scp'] !== undefined) {
    // Some IdPs (Azure AD, Okta) send a list in `scp`.
    const scp = payload['scp'];
    if (!Array.isArray(scp) || !scp.every((s): s is string => typeof s === 'string'))
      return 'scp is not a list of strings';
    scopes = Object.freeze([...new Set(scp)]);
  }
  return Object.freeze({
    subject,
    scopes,
    provider,
    ...(clientIdClaim !== undefined ? { clientId: clientIdClaim } : {}),
    claims: Object.freeze({ ...payload }),
    expiresAtMs: expMs,
  });
}

/** A log-safe reason for a jose failure: its code, message, and an escaped, truncated kid/alg. */
function describeJoseError(err: unknown, token: string): string {
  let header = '';
  try {
    const h = decodeProtectedHeader(token);
    header = ` (alg ${logSafe(h.alg, 16)}, kid ${logSafe(h.kid)})`;
  } catch {
    // The header itself is the problem; the jose message says so.
  }
  if (err instanceof errors.JOSEError) return `${err.code}: ${err.message.slice(0, 200)}${header}`;
  if (err instanceof Error) return `${err.name}: ${err.message.slice(0, 200)}${header}`;
  return `verification failed${header}`;
}
