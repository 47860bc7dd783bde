/**
 * A real OpenID provider for tests: `oidc-provider` 9 (npm), configured with a client_credentials client
 * (APP) and the gateway's own client (GATEWAY, for introspection). Access tokens come as a JWT for the
 * resource `urn:portcullis:jwt` and opaque otherwise. oidc-provider ships no types: it is imported through
 * a variable specifier and used through the small interface below; `loadOidcProvider` returns undefined
 * when the package is missing, so a suite can skip with a printed reason.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { exportJWK, generateKeyPair, type JWK } from 'jose';

export interface OidcProvider {
  callback(): (req: IncomingMessage, res: ServerResponse) => void;
}
export type OidcProviderClass = new (issuer: string, configuration: Record<string, unknown>) => OidcProvider;

export const APP = { id: 'app', secret: 'app-secret' };
/** The gateway's client at the IdP; the secret has characters that need form-urlencoding in Basic auth. */
export const GATEWAY = { id: 'portcullis', secret: 'gw-secret:+/ odd' };
export const AUDIENCE = 'https://gw.example/api';

/** The oidc-provider class, or undefined (with a warning naming `suite`) when it is not installed. */
export async function loadOidcProvider(suite: string): Promise<OidcProviderClass | undefined> {
  const spec: string = 'oidc-provider';
  const mod = (await import(spec).catch(() => undefined)) as { default: OidcProviderClass } | undefined;
  if (mod === undefined) console.warn(`${suite} skipped: npm package oidc-provider@9 is not installed`);
  return mod?.default;
}

/** A fresh ES256 signing key for the IdP's JWKS. */
export async function signingKey(kid: string): Promise<JWK> {
  const { privateKey } = await generateKeyPair('ES256', { extractable: true });
  return { ...(await exportJWK(privateKey)), kid, alg: 'ES256', use: 'sig' };
}

/** The provider configuration shared by the interop and integration suites. */
export function oidcConfiguration(keys: JWK[], cookieKey: string): Record<string, unknown> {
  const client = (id: string, secret: string, grants: string[]): Record<string, unknown> => ({
    client_id: id,
    client_secret: secret,
    grant_types: grants,
    redirect_uris: [],
    response_types: [],
    id_token_signed_response_alg: 'ES256',
  });
  return {
    clients: [client(APP.id, APP.secret, ['client_credentials']), client(GATEWAY.id, GATEWAY.secret, [])],
    jwks: { keys },
    cookies: { keys: [cookieKey] },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: { enabled: true },
      revocation: { enabled: true },
      resourceIndicators: {
        enabled: true,
        useGrantedResource: () => true,
        getResourceServerInfo: (_ctx: unknown, resource: string) => ({
          scope: 'read write',
          audience: AUDIENCE,
          accessTokenTTL: 600,
          ...(resource === 'urn:portcullis:jwt'
            ? { accessTokenFormat: 'jwt', jwt: { sign: { alg: 'ES256' } } }
            : { accessTokenFormat: 'opaque' }),
        }),
      },
    },
  };
}
