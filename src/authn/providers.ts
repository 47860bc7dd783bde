/**
 * The provider table: how each `authProviders` type is built, in one place. What each type's config may say
 * (schema, file keys) is authn/provider-config.ts, which the config loader composes without loading this
 * module; the composition root and the metrics read this table. Adding a provider type is its own module, its
 * schema in provider-config.ts, and one line here.
 */
import type { CredentialKind } from './credential.js';
import type { Authenticator, AuthnDeps } from './principal.js';
import { createIntrospectionProvider } from './introspection.js';
import { createJwtProvider } from './jwt.js';
import { createOidcProvider } from './oidc.js';
import { createStaticProvider } from './static.js';
import type {
  AuthProviderConfig,
  IntrospectionProviderConfig,
  JwtProviderConfig,
  OidcProviderConfig,
  ProviderTypeName,
  StaticProviderConfig,
} from './provider-config.js';

/** One provider type: how it is built, and which credentials it reads. */
export interface ProviderType<C> {
  /**
   * Builds one provider from its validated config.
   * @throws ConfigError naming `authProviders.<name>.<key>` when a file it needs is unusable.
   */
  readonly create: (name: string, config: C, deps: AuthnDeps) => Authenticator;
  /** The credential kinds it reads; it answers `not_applicable` to every other kind. */
  readonly reads: readonly CredentialKind[];
}

/** The table. Keys are the `type` values of the config. */
export const PROVIDER_TYPES = {
  jwt: { create: createJwtProvider, reads: ['bearer'] } satisfies ProviderType<JwtProviderConfig>,
  introspection: {
    create: createIntrospectionProvider,
    reads: ['bearer'],
  } satisfies ProviderType<IntrospectionProviderConfig>,
  static: { create: createStaticProvider, reads: ['bearer'] } satisfies ProviderType<StaticProviderConfig>,
  oidc: { create: createOidcProvider, reads: ['session'] } satisfies ProviderType<OidcProviderConfig>,
} as const satisfies Record<ProviderTypeName, unknown>;

/**
 * Creates one provider from its validated config.
 * @throws ConfigError naming `authProviders.<name>.<key>` when a file it needs is unusable.
 */
export function createAuthenticator(name: string, config: AuthProviderConfig, deps: AuthnDeps): Authenticator {
  const type = PROVIDER_TYPES[config.type] as ProviderType<AuthProviderConfig>;
  return type.create(name, config, deps);
}

/**
 * Builds the provider once and closes it again: the config loader's check of each `authProviders` entry
 * (injected into config/load.ts by load-config.ts), so that a file the provider cannot use (an unreadable
 * JWKS, a malformed tokens file, an empty secret) is a config error at load, not a 401 storm later. Nothing is
 * fetched, and nothing is left running.
 * @throws ConfigError naming `authProviders.<name>.<key>` when a file it needs is unusable.
 */
export function checkAuthProvider(
  name: string,
  config: AuthProviderConfig,
  io: { readonly readFile: (path: string) => Buffer; readonly now: () => number },
): void {
  createAuthenticator(name, config, {
    // Providers read wall time only (expiry); nothing is measured here.
    clock: { now: io.now, hrtime: () => 0n },
    readFile: (path) => io.readFile(path).toString('utf8'),
    // The content is what is checked here; the static provider's change detection starts in the app.
    statFile: () => ({ mtimeMs: 0, size: 0 }),
  }).close();
}

/**
 * Creates every configured provider. On a failure, the ones already created are closed and the error rethrown.
 * @throws ConfigError
 */
export function createAuthenticators(
  configs: Readonly<Record<string, AuthProviderConfig>>,
  deps: AuthnDeps,
): ReadonlyMap<string, Authenticator> {
  const out = new Map<string, Authenticator>();
  try {
    for (const [name, config] of Object.entries(configs))
      out.set(name, createAuthenticator(name, config, deps));
  } catch (err) {
    for (const p of out.values()) p.close();
    throw err;
  }
  return out;
}
