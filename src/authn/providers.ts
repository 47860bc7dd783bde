/**
 * `authProviders`: the config schema of the whole map and the factory that builds every provider from it.
 * What the config loader and the composition root import; each provider's own module has the details.
 */
import { z } from 'zod';
import type { Authenticator, AuthnDeps } from './principal.js';
import {
  createIntrospectionProvider,
  introspectionProviderSchema,
  type IntrospectionProviderConfig,
} from './introspection.js';
import { createJwtProvider, jwtProviderSchema, type JwtProviderConfig } from './jwt.js';
import { createStaticProvider, staticProviderSchema, type StaticProviderConfig } from './static.js';

/** One provider, chosen by `type`. */
export const authProviderSchema = z.discriminatedUnion(
  'type',
  [jwtProviderSchema, introspectionProviderSchema, staticProviderSchema],
  {
    error: 'a provider with type: jwt, introspection or static',
  },
);

/** Provider names: what routes reference in `auth.providers`. */
export const PROVIDER_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** The `authProviders` map (name → provider). */
export const authProvidersSchema = z.record(
  z.string().regex(PROVIDER_NAME, 'a provider name of letters, digits, . _ - (max 64)'),
  authProviderSchema,
);

export type AuthProviderConfig = JwtProviderConfig | IntrospectionProviderConfig | StaticProviderConfig;

/**
 * Creates one provider from its validated config.
 * @throws ConfigError naming `authProviders.<name>.<key>` when a file it needs is unusable.
 */
export function createAuthenticator(
  name: string,
  config: AuthProviderConfig,
  deps: AuthnDeps,
): Authenticator {
  switch (config.type) {
    case 'jwt':
      return createJwtProvider(name, config, deps);
    case 'introspection':
      return createIntrospectionProvider(name, config, deps);
    case 'static':
      return createStaticProvider(name, config, deps);
  }
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
