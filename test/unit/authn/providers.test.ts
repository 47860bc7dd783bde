import { describe, expect, it } from 'vitest';
import { authProvidersSchema } from '../../../src/authn/provider-config.js';
import { createAuthenticators } from '../../../src/authn/providers.js';
import { ConfigError } from '../../../src/errors.js';

const clock = { now: () => 0, hrtime: () => 0n };

describe('authProviders', () => {
  const map = {
    'corp-jwt': {
      type: 'jwt',
      issuer: 'https://idp/',
      audience: 'api',
      jwksUri: 'https://idp/jwks',
      algorithms: ['ES256', 'RS256'],
    },
    'corp-opaque': {
      type: 'introspection',
      endpoint: 'https://idp/introspect',
      clientId: 'gw',
      clientSecretFile: '/s',
    },
    teammates: { type: 'static', tokensFile: '/t.json' },
  };

  it('parses the DESIGN.md example and builds every provider', () => {
    const parsed = authProvidersSchema.parse(map);
    const providers = createAuthenticators(parsed, {
      clock,
      readFile: (p) => (p === '/s' ? 'secret' : '{"tokens":[]}'),
      statFile: () => ({ mtimeMs: 1, size: 1 }),
    });
    expect([...providers.entries()].map(([n, p]) => [n, p.type])).toEqual([
      ['corp-jwt', 'jwt'],
      ['corp-opaque', 'introspection'],
      ['teammates', 'static'],
    ]);
    expect(providers.get('corp-jwt')?.readiness()).toBe('jwks not fetched yet');
  });

  it.each([
    [{ x: { type: 'saml' } }, 'x.type'],
    [{ 'bad name': map.teammates }, 'bad name'],
    [{ x: { ...map.teammates, extra: 1 } }, 'x'],
  ])('refuses %j', (value, path) => {
    const r = authProvidersSchema.safeParse(value);
    expect(r.success).toBe(false);
    expect(r.error?.issues.map((i) => i.path.join('.'))).toContain(path);
  });

  it('a provider that cannot start is a ConfigError naming it; the others are closed', () => {
    const parsed = authProvidersSchema.parse(map);
    expect(() =>
      createAuthenticators(parsed, {
        clock,
        readFile: () => {
          throw new Error('EACCES');
        },
        statFile: () => ({ mtimeMs: 1, size: 1 }),
      }),
    ).toThrow(ConfigError);
  });
});
