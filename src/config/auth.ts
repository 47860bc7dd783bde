/**
 * Authentication in the config: `authProviders` (file paths made absolute, every file read, each provider
 * built once and closed again through the injected check) and a route's `auth` block (provider names that exist, a policy that
 * compiles: authz/policy.ts).
 */
import { resolve } from 'node:path';
import { providerFiles, type AuthProviderConfig } from '../authn/provider-config.js';
import { compileRoutePolicy, type RoutePolicy } from '../authz/policy.js';
import { ConfigError } from '../errors.js';
import type { CompileContext, LoadDeps } from './context.js';
import { errnoText } from './files.js';
import type { RouteAuth } from './runtime.js';
import type { ConfigFile, RouteAuthFile } from './schema.js';

/**
 * `authProviders` with their file paths made absolute, each provider built once and closed again (by the
 * injected `deps.checkAuthProvider`: the providers are the authn stage's runtime) so that a file it cannot
 * use (an unreadable JWKS, a malformed tokens file, an empty secret) is a config error now, naming its key
 * path, and not a 401 storm later. Nothing is fetched here: a remote JWKS is the app's
 * business at start (warmUp), reported by readiness.
 */
export function resolveAuthProviders(
  map: ConfigFile['authProviders'],
  baseDir: string,
  deps: LoadDeps,
  errors: ConfigError[],
): Record<string, AuthProviderConfig> {
  const out = Object.create(null) as Record<string, AuthProviderConfig>;
  for (const [name, config] of Object.entries(map)) {
    const resolved: Record<string, unknown> = { ...config };
    let readable = true;
    // The provider table names each type's file keys: relative paths resolve against the config's folder.
    for (const [key, value] of providerFiles(config)) {
      const file = resolve(baseDir, value);
      resolved[key] = file;
      try {
        deps.readFile(file);
      } catch (err) {
        readable = false;
        errors.push(
          new ConfigError(`authProviders.${name}.${key}`, value, `a readable file (${errnoText(err)}: ${file})`),
        );
      }
    }
    const provider = resolved as AuthProviderConfig;
    out[name] = provider;
    if (!readable) continue;
    try {
      deps.checkAuthProvider(name, provider, deps);
    } catch (err) {
      if (err instanceof ConfigError) errors.push(err);
      else
        errors.push(
          new ConfigError(
            `authProviders.${name}`,
            provider.type,
            `a usable provider (${err instanceof Error ? err.message : 'it failed to start'})`,
          ),
        );
    }
  }
  return out;
}

/** A route's `auth` block: provider names that exist, a policy that compiles, options that fit the providers. */
export function resolveRouteAuth(ctx: CompileContext, auth: RouteAuthFile, keyPath: string, id: string): RouteAuth | undefined {
  const before = ctx.errors.length;
  const seen = new Set<string>();
  const providers = auth.providers ?? [];
  if (auth.login !== undefined) {
    const type = ctx.providerTypes.get(auth.login);
    if (type !== 'oidc')
      ctx.errors.push(
        new ConfigError(`${keyPath}.login`, auth.login, 'the name of a provider with type: oidc in authProviders'),
      );
    ctx.usedProviders.add(auth.login);
  }
  providers.forEach((name, k) => {
    const type = ctx.providerTypes.get(name);
    if (type === undefined) {
      const known = [...ctx.providerTypes.keys()];
      ctx.errors.push(
        new ConfigError(
          `${keyPath}.providers[${k}]`,
          name,
          known.length === 0
            ? 'the name of a provider in authProviders (none is configured)'
            : `the name of a provider in authProviders (${known.join(', ')})`,
        ),
      );
    } else if (seen.has(name)) {
      ctx.errors.push(new ConfigError(`${keyPath}.providers[${k}]`, name, 'each provider listed once'));
    } else if (type === 'oidc') {
      ctx.errors.push(
        new ConfigError(`${keyPath}.providers[${k}]`, name, 'a Bearer token provider (an oidc provider goes in login)'),
      );
    }
    seen.add(name);
    ctx.usedProviders.add(name);
  });
  if (
    auth.staleIfErrorSeconds > 0 &&
    !providers.some((name) => ctx.providerTypes.get(name) === 'introspection')
  ) {
    ctx.errors.push(
      new ConfigError(
        `${keyPath}.staleIfErrorSeconds`,
        auth.staleIfErrorSeconds,
        'staleIfErrorSeconds only on a route with an introspection provider (it applies to nothing else)',
      ),
    );
  }
  let policy: RoutePolicy | undefined;
  try {
    policy = compileRoutePolicy(
      {
        ...(auth.scopes !== undefined ? { scopes: auth.scopes } : {}),
        ...(auth.claims !== undefined ? { claims: auth.claims } : {}),
        ...(auth.emailDomains !== undefined ? { emailDomains: auth.emailDomains } : {}),
      },
      keyPath,
    );
  } catch (err) {
    if (err instanceof ConfigError) ctx.errors.push(err);
    else throw err;
  }
  if (auth.allowQueryToken) {
    ctx.warnings.push(
      `route "${id}" accepts a token in the query string (${keyPath}.allowQueryToken): URLs end up in logs, proxies and browser history (RFC 6750 §5.3)`,
    );
  }
  if (ctx.errors.length > before || policy === undefined) return undefined;
  return {
    keyPath,
    providers: [...providers],
    ...(auth.login !== undefined ? { login: auth.login } : {}),
    policy,
    allowQueryToken: auth.allowQueryToken,
    forwardToken: auth.forwardToken,
    staleIfErrorSeconds: auth.staleIfErrorSeconds,
  };
}
