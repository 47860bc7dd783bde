/**
 * `type: static`: shared tokens from a file of SHA-256 hashes (`portcullis token create`), for teams without
 * an IdP.
 *
 * Which tokens are "of its kind": a token whose hash is in the file, or any token with the `pcs_` prefix
 * (`createToken`'s format). A known token that is revoked or expired, and an unknown `pcs_` token, are
 * `ERR_AUTHN_INVALID_TOKEN` (the chain stops); any other unknown token is `'not_applicable'` (next provider).
 *
 * Comparison: the presented token's SHA-256 is compared with every record's hash by `timingSafeEqual`, all of
 * them, without stopping at the first match, so the time taken does not depend on which record (or which
 * leading bytes) matched.
 *
 * Reload: at most once a second (by the injected monotonic clock), on a request, the file's mtime and size are checked;
 * when they changed, it is re-read. A file that does not parse (half-written) or has vanished keeps the last
 * good set, with a warning, and is retried a second later.
 */
import { timingSafeEqual } from 'node:crypto';
import { monotonicMs } from '../clock.js';
import { ConfigError, GatewayError } from '../errors.js';
import { tokenHash } from './bearer.js';
import type { Credential } from './credential.js';
import {
  resolveDeps,
  type Authenticator,
  type AuthnDeps,
  type AuthnResult,
  type FileStamp,
  type Principal,
} from './principal.js';
import type { StaticProviderConfig } from './provider-config.js';
import { parseTokenFile, STATIC_TOKEN_PREFIX, type TokenRecord } from './token-store.js';

/** How often, at most, the file's mtime is checked: 1 s (revocation takes effect within a second). */
export const STATIC_RELOAD_INTERVAL_MS = 1_000;

interface LoadedRecord {
  readonly record: TokenRecord;
  readonly hash: Buffer;
  readonly expiresAtMs: number | undefined;
  readonly principal: Principal;
}

const HEX64 = /^[0-9a-f]{64}$/;

/**
 * Creates a `type: static` provider. Reads the tokens file now.
 * @throws ConfigError naming `authProviders.<name>.tokensFile` when it is unreadable or invalid.
 */
export function createStaticProvider(
  name: string,
  config: StaticProviderConfig,
  deps: AuthnDeps,
): Authenticator {
  const d = resolveDeps(deps);
  const path = config.tokensFile;
  const load = (text: string): LoadedRecord[] =>
    parseTokenFile(text).tokens.map((record) => {
      const expiresAtMs = record.expiresAt === undefined ? undefined : Date.parse(record.expiresAt);
      return {
        record,
        hash: Buffer.from(record.sha256, 'hex'),
        expiresAtMs,
        principal: Object.freeze({
          subject: record.name,
          scopes: Object.freeze([...(record.scopes ?? [])]),
          provider: name,
          claims: Object.freeze({ name: record.name, createdAt: record.createdAt }),
          expiresAtMs,
        }),
      };
    });

  let records: LoadedRecord[];
  let stamp: FileStamp | undefined;
  try {
    stamp = d.statFile(path);
    records = load(d.readFile(path));
  } catch (err) {
    const why = err instanceof Error ? err.message : 'unreadable';
    throw new ConfigError(`authProviders.${name}.tokensFile`, path, `a readable tokens file (${why})`, {
      cause: err,
    });
  }
  /** Monotonic ms of the last mtime check. */
  let lastCheckMs = monotonicMs(d.clock);
  let reloads = 0;

  function maybeReload(): void {
    const mono = monotonicMs(d.clock);
    if (mono - lastCheckMs < STATIC_RELOAD_INTERVAL_MS) return;
    lastCheckMs = mono;
    let current: FileStamp;
    try {
      current = d.statFile(path);
    } catch {
      d.logger.warn({ provider: name, file: path }, 'static tokens file is gone; keeping the last good set');
      return;
    }
    if (stamp !== undefined && current.mtimeMs === stamp.mtimeMs && current.size === stamp.size) return;
    try {
      records = load(d.readFile(path));
      stamp = current;
      reloads++;
      d.logger.info({ provider: name, file: path, tokens: records.length }, 'static tokens file reloaded');
    } catch (err) {
      // stamp unchanged: the next check (a second later) tries again.
      d.logger.warn(
        { provider: name, file: path, reason: err instanceof Error ? err.message : 'unreadable' },
        'static tokens file unreadable; keeping the last good set',
      );
    }
  }

  return {
    name,
    type: 'static',
    authenticate(credential: Credential): Promise<AuthnResult> {
      if (credential.kind !== 'bearer') return Promise.resolve('not_applicable');
      const { token, hash } = credential;
      maybeReload();
      // expiresAt is a wall-clock instant.
      const now = d.clock.now();
      const presented = Buffer.from(HEX64.test(hash) ? hash : tokenHash(token), 'hex');
      let match: LoadedRecord | undefined;
      // Every record is compared; no early exit.
      for (const r of records) {
        const equal = timingSafeEqual(r.hash, presented);
        if (equal && match === undefined) match = r;
      }
      if (match === undefined) {
        if (token.startsWith(STATIC_TOKEN_PREFIX)) return Promise.reject(invalid('unknown token'));
        return Promise.resolve('not_applicable');
      }
      if (match.record.revoked === true)
        return Promise.reject(invalid(`token "${match.record.name}" is revoked`));
      if (match.expiresAtMs !== undefined && now >= match.expiresAtMs) {
        return Promise.reject(invalid(`token "${match.record.name}" expired`));
      }
      return Promise.resolve(match.principal);
    },
    readiness: () => undefined,
    warmUp: () => Promise.resolve(),
    stats: () => ({
      cacheEntries: 0,
      cacheHits: 0,
      cacheMisses: 0,
      cacheEvictions: 0,
      idpRequests: 0,
      idpFailures: 0,
      staleServed: 0,
      reloads,
    }),
    close() {
      records = [];
    },
  };

  function invalid(detail: string): GatewayError {
    return new GatewayError('ERR_AUTHN_INVALID_TOKEN', `${name}: ${detail}`);
  }
}
