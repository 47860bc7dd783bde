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
import { createStaticProvider } from './static.js';
import type {
  AuthProviderConfig,
  IntrospectionProviderConfig,
  JwtProviderConfig,
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
