/**
 * What authentication produces, and the one shape every authentication provider has.
 *
 * A provider looks at a credential (credential.ts) and answers one of three things (the Oathkeeper contract):
 * `'not_applicable'` (not a credential of my kind: ask the next provider), a {@link Principal} (valid: done),
 * or it throws a `GatewayError`: `ERR_AUTHN_INVALID_TOKEN` for a credential of its kind that is wrong (the
 * chain stops), `ERR_AUTHN_UNAVAILABLE` when its identity provider or key set cannot answer (503, never a
 * pass). See `chain.ts`.
 */
import { readFileSync, statSync } from 'node:fs';
import type { Clock } from '../clock.js';
import type { Credential } from './credential.js';
import type { ProviderTypeName } from './provider-config.js';
import type { AuthnObserver, AuthnStats } from '../observability/auth-stats.js';
import type { InvalidationChannel, KeyValueStore } from '../store/store.js';

/** The authenticated caller. Immutable; route policy (`authz/policy.ts`) reads it on every request. */
export interface Principal {
  /** `sub`, or the `client_id` of a client-credentials token, or a static token's name. Never empty. */
  readonly subject: string;
  /** Granted scopes (RFC 6749 §3.3 `scope`, split on spaces). Empty when the token carries none. */
  readonly scopes: readonly string[];
  /** The configured name of the provider that vouched for the token (`authProviders.<name>`). */
  readonly provider: string;
  /** `client_id` (or `azp`) when the token names one. */
  readonly clientId?: string;
  /**
   * The verified claims, exactly as the provider returned them (jose's payload, the introspection answer).
   * Frozen. Never re-decode the raw token for identity (threat model #39: duplicate keys).
   */
  readonly claims: Readonly<Record<string, unknown>>;
  /** When the credential stops being valid (epoch ms); undefined when it does not say. */
  readonly expiresAtMs: number | undefined;
}

/** Per-request options a route passes down to the providers. */
export interface AuthenticateOptions {
  /**
   * Introspection only, off (0 / undefined) by default: when the IdP is unavailable, a cached positive answer
   * whose freshness ended at most this many seconds ago is used instead of a 503. Never past the token's own
   * `exp`, never after a purge.
   */
  readonly staleIfErrorSeconds?: number;
}

// What a provider reports for metrics is defined by the metrics (observability/auth-stats.ts): authn depends on
// observability, never the other way round.
export type { AuthnStats, AuthnObserver, IntrospectionCallResult } from '../observability/auth-stats.js';

/** The outcome of one provider: not its kind, or the principal. Invalid and unavailable are thrown. */
export type AuthnResult = Principal | 'not_applicable';

/** One configured authentication provider (`authProviders.<name>`). */
export interface Authenticator {
  /** The configured name (`authProviders.<name>`); also {@link Principal.provider}. */
  readonly name: string;
  readonly type: ProviderTypeName;
  /**
   * Authenticates one credential: `'not_applicable'` for a kind this provider does not read (every provider
   * of today reads Bearer tokens only), else the principal. A credential's `hash` is the SHA-256 of its
   * secret: the only cache key ever used.
   * @throws GatewayError `ERR_AUTHN_INVALID_TOKEN` (a credential of this kind that is wrong) or
   *   `ERR_AUTHN_UNAVAILABLE` (the IdP or key set cannot answer). Never anything else.
   */
  authenticate(credential: Credential, opts?: AuthenticateOptions): Promise<AuthnResult>;
  /** Why this provider cannot serve yet (e.g. "jwks not fetched yet"), or undefined when it can. */
  readiness(): string | undefined;
  /** Fetches what the provider needs before the first request (the remote JWKS). Never rejects. */
  warmUp(): Promise<void>;
  /** Counters for metrics. */
  stats(): AuthnStats;
  /**
   * Drops cached answers: one token by its SHA-256 hex, or all of them. Returns how many entries went.
   * Absent on providers without a cache.
   */
  purge?(hash?: string): number;
  /**
   * Makes every answer this provider shared with other replicas (store.type: redis) void: a purge must also
   * hold for the answers in the shared store. Rejects when the store cannot be written.
   */
  purgeShared?(): Promise<void>;
  /** Releases caches and watchers. The provider must not be used afterwards. */
  close(): void;
}

/** A fetch as the providers use it: the global fetch's shape, injectable in tests. */
export type FetchLike = (url: string, init: RequestInit) => Promise<Response>;

/** The subset of a pino logger the providers use. Never give it a token or a secret. */
export interface AuthnLogger {
  warn(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
}

/** A file's change marker, for the static tokens file reload. */
export interface FileStamp {
  readonly mtimeMs: number;
  readonly size: number;
}

/** Side effects of the providers (CONVENTIONS rule 5): all injectable, all defaulted but the clock. */
export interface AuthnDeps {
  readonly clock: Clock;
  /** Outbound HTTP (introspection, JWKS). Default: the global fetch. */
  readonly fetch?: FetchLike;
  /** Reads a file as UTF-8 (secrets, JWKS file, tokens file). Default: `readFileSync`. Throws when unreadable. */
  readonly readFile?: (path: string) => string;
  /** The file's change marker. Default: `statSync`. Throws when the file is gone. */
  readonly statFile?: (path: string) => FileStamp;
  readonly logger?: AuthnLogger;
  /** Receives each remote call's result and duration (metrics). Default: none. */
  readonly observer?: AuthnObserver;
  /**
   * The store shared by every replica (`store.type: redis`). Absent: each provider keeps its sessions and
   * caches in this process's memory, as with one replica.
   */
  readonly shared?: SharedStoreDeps;
}

/** What a provider needs of a shared store. */
export interface SharedStoreDeps {
  readonly kv: KeyValueStore;
  readonly channel: InvalidationChannel;
  /** A session that cannot be read: 503 (`service-unavailable`) or no session (`no-session`). */
  readonly whenUnavailable: 'service-unavailable' | 'no-session';
}

/** The deps with their defaults filled in. */
export interface ResolvedAuthnDeps {
  readonly clock: Clock;
  readonly fetch: FetchLike;
  readonly readFile: (path: string) => string;
  readonly statFile: (path: string) => FileStamp;
  readonly logger: AuthnLogger;
  readonly observer: AuthnObserver;
}

const SILENT: AuthnLogger = { warn: () => undefined, info: () => undefined };
const UNOBSERVED: AuthnObserver = { introspection: () => undefined };

/** Fills in the default side effects. */
export function resolveDeps(deps: AuthnDeps): ResolvedAuthnDeps {
  return {
    clock: deps.clock,
    fetch: deps.fetch ?? ((url, init) => fetch(url, init)),
    readFile: deps.readFile ?? ((path) => readFileSync(path, 'utf8')),
    statFile:
      deps.statFile ??
      ((path) => {
        const st = statSync(path);
        return { mtimeMs: st.mtimeMs, size: st.size };
      }),
    logger: deps.logger ?? SILENT,
    observer: deps.observer ?? UNOBSERVED,
  };
}

/**
 * Splits an RFC 6749 §3.3 `scope` value: space-separated, case-sensitive tokens. Extra spaces are tolerated
 * (empty tokens dropped); duplicates are kept once. Returns undefined for a value that is not a string.
 */
export function parseScope(value: unknown): readonly string[] | undefined {
  if (typeof value !== 'string') return undefined;
  const out: string[] = [];
  for (const s of value.split(' ')) if (s !== '' && !out.includes(s)) out.push(s);
  return Object.freeze(out);
}

/** A bounded, escaped rendering of an attacker-chosen value for a log line (threat model #30: kid injection). */
export function logSafe(value: unknown, max = 64): string {
  let text: string;
  try {
    text = JSON.stringify(value) ?? typeof value;
  } catch {
    text = `(${typeof value})`;
  }
  return text.length > max ? `${text.slice(0, max)}...(${text.length} chars)` : text;
}
