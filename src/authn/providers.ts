/**
 * The provider table: every `authProviders` type, each as `{ schema, create, fileKeys }` in one place.
 * The config schema, the loader (file keys resolve against the config's folder and are watched), the
 * composition root and the metrics all read this table; adding a provider type is its own module plus one
 * line here.
 */
import { z } from 'zod';
import type { CredentialKind } from './credential.js';
import type { Authenticator, AuthnDeps } from './principal.js';
import {
  createIntrospectionProvider,
  introspectionProviderSchema,
  type IntrospectionProviderConfig,
} from './introspection.js';
import { createJwtProvider, jwtProviderSchema, type JwtProviderConfig } from './jwt.js';
import { createStaticProvider, staticProviderSchema, type StaticProviderConfig } from './static.js';

/** One provider type: how it is configured, built, and which of its keys name files. */
export interface ProviderType<C> {
  /** Its `authProviders.<name>` block, with `type` as the discriminating literal. */
  readonly schema: z.ZodType<C>;
  /**
   * Builds one provider from its validated config.
   * @throws ConfigError naming `authProviders.<name>.<key>` when a file it needs is unusable.
   */
  readonly create: (name: string, config: C, deps: AuthnDeps) => Authenticator;
  /** Keys whose values are file paths: resolved against the config file's folder, read at load, watched. */
  readonly fileKeys: readonly string[];
  /** The credential kinds it reads; it answers `not_applicable` to every other kind. */
  readonly reads: readonly CredentialKind[];
}

/** The table. Keys are the `type` values of the config. */
export const PROVIDER_TYPES = {
  jwt: {
    schema: jwtProviderSchema,
    create: createJwtProvider,
    fileKeys: ['jwksFile'],
    reads: ['bearer'],
  } satisfies ProviderType<JwtProviderConfig>,
  introspection: {
    schema: introspectionProviderSchema,
    create: createIntrospectionProvider,
    fileKeys: ['clientSecretFile'],
    reads: ['bearer'],
  } satisfies ProviderType<IntrospectionProviderConfig>,
  static: {
    schema: staticProviderSchema,
    create: createStaticProvider,
    fileKeys: ['tokensFile'],
    reads: ['bearer'],
  } satisfies ProviderType<StaticProviderConfig>,
} as const;

/** A provider type name (`authProviders.<name>.type`). */
export type ProviderTypeName = keyof typeof PROVIDER_TYPES;

/** The validated config of any provider. */
export type AuthProviderConfig = z.output<(typeof PROVIDER_TYPES)[ProviderTypeName]['schema']>;

const NAMES = Object.keys(PROVIDER_TYPES) as ProviderTypeName[];

/** One provider, chosen by `type`. */
export const authProviderSchema = z.discriminatedUnion(
  'type',
  [PROVIDER_TYPES.jwt.schema, PROVIDER_TYPES.introspection.schema, PROVIDER_TYPES.static.schema],
  { error: `a provider with type: ${NAMES.slice(0, -1).join(', ')} or ${NAMES.at(-1) ?? ''}` },
);

/** Provider names: what routes reference in `auth.providers`. */
export const PROVIDER_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** The `authProviders` map (name → provider). */
export const authProvidersSchema = z.record(
  z.string().regex(PROVIDER_NAME, 'a provider name of letters, digits, . _ - (max 64)'),
  authProviderSchema,
);

/** The file keys of a provider's config (its type's `fileKeys`), with their values where set. */
export function providerFiles(config: AuthProviderConfig): [key: string, path: string][] {
  const out: [string, string][] = [];
  for (const key of PROVIDER_TYPES[config.type].fileKeys) {
    const value = (config as unknown as Record<string, unknown>)[key];
    if (typeof value === 'string') out.push([key, value]);
  }
  return out;
}

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
