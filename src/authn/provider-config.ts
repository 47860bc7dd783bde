/**
 * The `authProviders` section as data: each provider type's schema (`type` is the discriminating literal),
 * which of its keys name files, and the map of named providers. The config schema and the loader compose it;
 * the providers themselves (authn/providers.ts) are built from the validated result.
 *
 * Pure: zod and constants only. The config loader imports this module, and through it nothing of a
 * provider's runtime (jose, caches, fetch, timers).
 */
import { z } from 'zod';
import { isLoopbackHost } from '../policy/loopback.js';

const nonEmpty = z.string().min(1);

/** A rule several providers share: exactly one of two keys (a key source, a client credential); the message
 * names both keys, as CONVENTIONS rule 2 asks of mutually exclusive options. */
/**
 * Adds an issue to `ctx` unless exactly one of `value[a]` and `value[b]` is set: at `b` when both are
 * (`both`), at `a` when neither is (`neither`).
 */
function exactlyOne<T extends Record<string, unknown>>(
  value: T,
  ctx: z.RefinementCtx,
  a: keyof T & string,
  b: keyof T & string,
  messages: { readonly both: string; readonly neither: string },
): void {
  const hasA = value[a] !== undefined;
  if (hasA !== (value[b] !== undefined)) return;
  ctx.addIssue({
    code: 'custom',
    path: [hasA ? b : a],
    input: hasA ? value[b] : value[a],
    message: hasA ? messages.both : messages.neither,
  });
}


/**
 * An IdP endpoint: `https://`, or `http://` to a loopback host only (the bytes never leave the machine).
 * No userinfo (credentials go in their own keys, read from files), no fragment.
 */
export const endpointUrlSchema = z.string().superRefine((value, ctx) => {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    ctx.addIssue({ code: 'custom', input: value, message: 'an absolute https:// URL' });
    return;
  }
  const secure = url.protocol === 'https:' || (url.protocol === 'http:' && isLoopbackHost(url.hostname));
  if (!secure) {
    ctx.addIssue({
      code: 'custom',
      input: value,
      message:
        'an https:// URL (http:// only to a loopback host such as 127.0.0.1: a token or key set must not cross a network in clear)',
    });
  } else if (url.username !== '' || url.password !== '' || url.hash !== '') {
    ctx.addIssue({ code: 'custom', input: value, message: 'a URL without user:password@ or #fragment' });
  }
});

/**
 * The JWS algorithms a gateway may accept: asymmetric only (RFC 8725 §3.1). `HS*` would make the public key
 * (or a shared secret) a signing key; `none` is no signature.
 */
export const ASYMMETRIC_ALGORITHMS = [
  'RS256',
  'RS384',
  'RS512',
  'PS256',
  'PS384',
  'PS512',
  'ES256',
  'ES384',
  'ES512',
  'EdDSA',
] as const;

const jwtSeconds = (what: string) =>
  z.number({ error: `a whole number of seconds (${what})` }).int(`a whole number of seconds (${what})`);
/** `authProviders.<name>` with `type: jwt` (strict: an unknown key is an error). */
export const jwtProviderSchema = z
  .strictObject({
    type: z.literal('jwt'),
    /** Required: jose skips the `iss` check when it is not passed (threat model #37). */
    issuer: nonEmpty,
    /** Required: jose skips the `aud` check when it is not passed. A list means "any of these". */
    audience: z.union([nonEmpty, z.array(nonEmpty).min(1, 'at least one audience')], {
      error: 'an audience string or a non-empty list of them',
    }),
    jwksUri: endpointUrlSchema.optional(),
    jwksFile: nonEmpty.optional(),
    algorithms: z
      .array(
        z.enum(ASYMMETRIC_ALGORITHMS, {
          error: `an asymmetric JWS algorithm, one of ${ASYMMETRIC_ALGORITHMS.join(', ')} (HS* and "none" are refused: a shared secret or no signature cannot prove who issued a token)`,
        }),
      )
      .min(1, 'at least one algorithm (an empty list would let the token choose)'),
    /** Clock skew allowed on exp/nbf/iat: 30 s (jose's own default is 0; Envoy uses 60 s). */
    clockToleranceSeconds: jwtSeconds('clock tolerance').min(0).max(300).default(30),
    /** When set, `iat` is required and the token may be at most this old (jose `maxTokenAge`). */
    maxTokenAgeSeconds: jwtSeconds('max token age').positive().optional(),
    /** `exp` may be at most this far ahead: 24 h. Refuses `exp: 1e308` and ten-year tokens (threat model #36). */
    maxExpiresInSeconds: jwtSeconds('max lifetime ahead').positive().max(31_536_000).default(86_400),
    /** Longest a verified token is served from cache without re-verifying: 300 s (0 = no cache). */
    cacheMaxSeconds: jwtSeconds('cache lifetime').min(0).max(86_400).default(300),
    /** Cache bound: 100,000 entries (~50 MB worst case with large claim sets). */
    cacheMaxEntries: z.number().int().min(1).max(10_000_000).default(100_000),
    /** Claims that must be present besides `exp` (always required) and `iss`/`aud`. */
    requiredClaims: z.array(nonEmpty).optional(),
    /** Required `typ` header, e.g. `at+jwt` (RFC 9068 §4), to refuse ID tokens as access tokens (threat model #38). */
    typ: nonEmpty.optional(),
    /** JWKS fetch timeout: 2000 ms (a request waits at most this long for keys). */
    jwksTimeoutMs: z.number().int().min(100).max(60_000).default(2_000),
    /** Minimum time between refetches caused by an unknown `kid`: 30 s (jose default; threat model #45). */
    jwksCooldownSeconds: jwtSeconds('cooldown').min(1).max(3_600).default(30),
    /** A key set older than this is refreshed before use, and not used if the refresh fails: 600 s. */
    jwksMaxAgeSeconds: jwtSeconds('key set max age').min(30).max(86_400).default(600),
  })
  .superRefine((value, ctx) => {
    exactlyOne(value, ctx, 'jwksUri', 'jwksFile', {
      both: 'only one of jwksUri or jwksFile (both are set)',
      neither: 'exactly one of jwksUri (an https:// URL) or jwksFile (a JWKS file path)',
    });
  });

/** The validated `type: jwt` config (defaults applied). */
export type JwtProviderConfig = z.output<typeof jwtProviderSchema>;

/** Upper bound of a route's `staleIfErrorSeconds`: 300 s. Positive entries are kept this long past freshness. */
export const MAX_STALE_IF_ERROR_SECONDS = 300;

const wholeSeconds = z.number({ error: 'a whole number of seconds' }).int('a whole number of seconds');

const cacheSchema = z.strictObject({
  /** Bound on cached answers: 100,000 (a few hundred bytes each). */
  maxEntries: z.number().int().min(1).max(10_000_000).default(100_000),
  /** Longest a positive answer is trusted without asking again: 300 s; also the revocation delay without purge. 0 = no positive cache. */
  maxTtlSeconds: wholeSeconds.min(0).max(86_400).default(300),
  /** How long an `active: false` answer is remembered: 10 s (spares the IdP a retry storm; 0 = off). */
  negativeTtlSeconds: wholeSeconds.min(0).max(3_600).default(10),
});

/** `authProviders.<name>` with `type: introspection` (strict). */
export const introspectionProviderSchema = z.strictObject({
  type: z.literal('introspection'),
  endpoint: endpointUrlSchema,
  clientId: z.string().min(1),
  /** A file holding the client secret (trailing newline ignored). Read once at start; never logged. */
  clientSecretFile: z.string().min(1),
  /** RFC 6749 §2.3.1: HTTP Basic (default) or the form body. */
  authMethod: z.enum(['client_secret_basic', 'client_secret_post']).default('client_secret_basic'),
  /** When set, the answer's `aud` must contain it. */
  audience: z.string().min(1).optional(),
  /** When set, the answer's `iss` must equal it. */
  issuer: z.string().min(1).optional(),
  /** Per-call timeout, body included: 2000 ms. */
  timeoutMs: z.number().int().min(50).max(60_000).default(2_000),
  /**
   * IdP calls this provider has in flight at most: 256. A request that would start one more gets 503 at
   * once (`ERR_AUTHN_UNAVAILABLE`) instead of queueing, as Envoy's circuit breakers shed: a flood of random
   * tokens (every one a cache miss, threat model #57) against a slow IdP then holds at most this many
   * calls and sockets, not a growing heap of pending requests, while cached tokens are still served.
   * Joining a call already in flight for the same token (single-flight) does not count.
   */
  maxConcurrentCalls: z.number().int().min(1).max(10_000).default(256),
  cache: cacheSchema.default({ maxEntries: 100_000, maxTtlSeconds: 300, negativeTtlSeconds: 10 }),
});

/** The validated `type: introspection` config (defaults applied). */
export type IntrospectionProviderConfig = z.output<typeof introspectionProviderSchema>;

/** `authProviders.<name>` with `type: static` (strict). */
export const staticProviderSchema = z.strictObject({
  type: z.literal('static'),
  /** The JSON tokens file written by `portcullis token create`. */
  tokensFile: z.string().min(1),
});

/** The validated `type: static` config. */
export type StaticProviderConfig = z.output<typeof staticProviderSchema>;

/** RFC 6749 §3.3 scope-token. */
const SCOPE_TOKEN = /^[\x21\x23-\x5b\x5d-\x7e]+$/;
const oidcSeconds = z.number({ error: 'a whole number of seconds' }).int('a whole number of seconds');

/** Session timeouts and bound. */
const sessionSchema = z.strictObject({
  /** A session unused this long ends: 3600 s (oauth2-proxy and Pomerium use hours, not days). */
  idleTimeoutSeconds: oidcSeconds.min(60).max(604_800).default(3_600),
  /** A session ends this long after login whatever happens: 43200 s (12 h, a working day). */
  absoluteTimeoutSeconds: oidcSeconds.min(60).max(2_592_000).default(43_200),
  /** Sessions kept in memory at most: 100,000; past it the least recently used one ends. */
  maxSessions: z.number().int().min(1).max(10_000_000).default(100_000),
  /**
   * Logins started and not yet back from the IdP, kept at most: 10,000 (LRU). Apart from the sessions:
   * anyone can start logins, and a flood of them must push out other pending logins (which start again),
   * never a session.
   */
  maxPendingLogins: z.number().int().min(1).max(1_000_000).default(10_000),
});

/** `authProviders.<name>` with `type: oidc` (strict). */
export const oidcProviderSchema = z
  .strictObject({
    type: z.literal('oidc'),
    /** Discovery at `{issuer}/.well-known/openid-configuration`; its `issuer` must equal this. */
    issuer: endpointUrlSchema,
    clientId: nonEmpty,
    /** A file holding the client secret (trailing newline ignored). Or `privateKeyFile`. */
    clientSecretFile: nonEmpty.optional(),
    /** A PKCS#8 PEM private key (RSA, EC P-256/384/521 or Ed25519): `private_key_jwt` (RFC 7523). */
    privateKeyFile: nonEmpty.optional(),
    /** The `kid` of that key as registered at the IdP. */
    privateKeyId: nonEmpty.optional(),
    /** With a client secret: HTTP Basic (default) or the form body (RFC 6749 §2.3.1). */
    authMethod: z.enum(['client_secret_basic', 'client_secret_post']).default('client_secret_basic'),
    /** Requested scopes: `openid` is required; `offline_access` asks for a refresh token. */
    scopes: z
      .array(z.string().regex(SCOPE_TOKEN, 'a scope token: printable ASCII without spaces, " or \\'))
      .min(1)
      .default(['openid', 'profile', 'email'])
      .refine((s) => s.includes('openid'), 'a list that includes "openid" (this is an OpenID Connect login)'),
    /** ID token and logout token algorithms: asymmetric only (RFC 8725 §3.1). Default: all of them. */
    algorithms: z.array(z.enum(ASYMMETRIC_ALGORITHMS)).min(1).default([...ASYMMETRIC_ALGORITHMS]),
    session: sessionSchema.default({
      idleTimeoutSeconds: 3_600,
      absoluteTimeoutSeconds: 43_200,
      maxSessions: 100_000,
      maxPendingLogins: 10_000,
    }),
    /** The access token is refreshed this long before it expires: 60 s. */
    refreshBeforeSeconds: oidcSeconds.min(0).max(3_600).default(60),
    /** A login must come back from the IdP within this: 600 s (the pre-login cookie's life). */
    loginTimeoutSeconds: oidcSeconds.min(30).max(3_600).default(600),
    /** Every IdP call (discovery, token, JWKS) times out after this: 5000 ms. */
    timeoutMs: z.number().int().min(100).max(60_000).default(5_000),
    /** Clock skew allowed on ID and logout token times: 30 s. */
    clockToleranceSeconds: oidcSeconds.min(0).max(300).default(30),
  })
  .superRefine((value, ctx) => {
    exactlyOne(value, ctx, 'clientSecretFile', 'privateKeyFile', {
      both: 'only one of clientSecretFile or privateKeyFile (both are set)',
      neither: 'exactly one of clientSecretFile (client secret) or privateKeyFile (private_key_jwt)',
    });
    if (value.privateKeyId !== undefined && value.privateKeyFile === undefined) {
      ctx.addIssue({
        code: 'custom',
        path: ['privateKeyId'],
        input: value.privateKeyId,
        message: 'privateKeyId only with privateKeyFile',
      });
    }
    if (value.session.absoluteTimeoutSeconds < value.session.idleTimeoutSeconds) {
      ctx.addIssue({
        code: 'custom',
        path: ['session', 'absoluteTimeoutSeconds'],
        input: value.session.absoluteTimeoutSeconds,
        message: 'at least session.idleTimeoutSeconds',
      });
    }
  });

/** The validated `type: oidc` config (defaults applied). */
export type OidcProviderConfig = z.output<typeof oidcProviderSchema>;

/** Each provider type's schema and the keys of its config that name files, by `type`. */
export const PROVIDER_CONFIGS = {
  jwt: { schema: jwtProviderSchema, fileKeys: ['jwksFile'] },
  introspection: { schema: introspectionProviderSchema, fileKeys: ['clientSecretFile'] },
  static: { schema: staticProviderSchema, fileKeys: ['tokensFile'] },
  oidc: { schema: oidcProviderSchema, fileKeys: ['clientSecretFile', 'privateKeyFile'] },
} as const;

/** A provider type name (`authProviders.<name>.type`). */
export type ProviderTypeName = keyof typeof PROVIDER_CONFIGS;

/** The validated config of any provider. */
export type AuthProviderConfig = z.output<(typeof PROVIDER_CONFIGS)[ProviderTypeName]['schema']>;

const NAMES = Object.keys(PROVIDER_CONFIGS) as ProviderTypeName[];

/** One provider, chosen by `type`. */
export const authProviderSchema = z.discriminatedUnion(
  'type',
  [
    PROVIDER_CONFIGS.jwt.schema,
    PROVIDER_CONFIGS.introspection.schema,
    PROVIDER_CONFIGS.static.schema,
    PROVIDER_CONFIGS.oidc.schema,
  ],
  { error: `a provider with type: ${NAMES.slice(0, -1).join(', ')} or ${NAMES.at(-1) ?? ''}` },
);

/** Provider names: what routes reference in `auth.providers`. */
export const PROVIDER_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** The `authProviders` map (name → provider). */
export const authProvidersSchema = z.record(
  z.string().regex(PROVIDER_NAME, 'a provider name of letters, digits, . _ - (max 64)'),
  authProviderSchema,
);

/**
 * The file keys of a provider's config (its type's `fileKeys`), with their values where set: resolved against
 * the config file's folder, read at load, watched.
 */
export function providerFiles(config: AuthProviderConfig): [key: string, path: string][] {
  const out: [string, string][] = [];
  for (const key of PROVIDER_CONFIGS[config.type].fileKeys) {
    const value = (config as unknown as Record<string, unknown>)[key];
    if (typeof value === 'string') out.push([key, value]);
  }
  return out;
}
