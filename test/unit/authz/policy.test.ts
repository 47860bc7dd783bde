import { describe, expect, it } from 'vitest';
import type { Principal } from '../../../src/authn/principal.js';
import { compileRoutePolicy, routeAuthSchema } from '../../../src/authz/policy.js';
import { ConfigError, GatewayError } from '../../../src/errors.js';

function principal(scopes: string[], claims: Record<string, unknown> = {}): Principal {
  return { subject: 'alice', scopes, provider: 'p', claims, expiresAtMs: undefined };
}

function outcome(fn: () => void): string {
  try {
    fn();
    return 'pass';
  } catch (err) {
    return err instanceof GatewayError ? err.code : 'other';
  }
}

describe('compileRoutePolicy: scopes', () => {
  const policy = compileRoutePolicy({ scopes: ['read', 'write'] }, 'routes[0].auth');
  it.each([
    [['read', 'write'], 'pass'],
    [['write', 'read', 'admin'], 'pass'],
    [['read'], 'ERR_AUTHZ_INSUFFICIENT_SCOPE'],
    [[], 'ERR_AUTHZ_INSUFFICIENT_SCOPE'],
    [['READ', 'WRITE'], 'ERR_AUTHZ_INSUFFICIENT_SCOPE'],
    [['read write'], 'ERR_AUTHZ_INSUFFICIENT_SCOPE'],
  ])('principal scopes %j → %s', (scopes, want) => {
    expect(outcome(() => policy.check(principal(scopes)))).toBe(want);
  });

  it('no requirement passes everyone, and exposes the required scopes', () => {
    expect(outcome(() => compileRoutePolicy({}, 'x').check(principal([])))).toBe('pass');
    expect(policy.requiredScopes).toEqual(['read', 'write']);
  });

  it('is checked per route, per call: a principal that passed one route fails another (threat model #51)', () => {
    const readRoute = compileRoutePolicy({ scopes: ['read'] }, 'r');
    const writeRoute = compileRoutePolicy({ scopes: ['write'] }, 'w');
    const p = principal(['read']);
    expect(outcome(() => readRoute.check(p))).toBe('pass');
    expect(outcome(() => writeRoute.check(p))).toBe('ERR_AUTHZ_INSUFFICIENT_SCOPE');
    expect(outcome(() => readRoute.check(p))).toBe('pass');
  });
});

describe('compileRoutePolicy: emailDomains', () => {
  const policy = compileRoutePolicy({ emailDomains: ['Example.com', 'lab.example'] }, 'routes[0].auth');
  it.each<[Record<string, unknown>, string]>([
    [{ email: 'alice@example.com' }, 'pass'],
    [{ email: 'Alice@EXAMPLE.COM', email_verified: true }, 'pass'],
    [{ email: 'bob@lab.example' }, 'pass'],
    [{ email: 'alice@example.com', email_verified: false }, 'ERR_AUTHZ_INSUFFICIENT_SCOPE'],
    [{ email: 'alice@sub.example.com' }, 'ERR_AUTHZ_INSUFFICIENT_SCOPE'],
    [{ email: 'alice@example.com.evil' }, 'ERR_AUTHZ_INSUFFICIENT_SCOPE'],
    [{ email: 'example.com' }, 'ERR_AUTHZ_INSUFFICIENT_SCOPE'],
    [{ email: '@example.com' }, 'ERR_AUTHZ_INSUFFICIENT_SCOPE'],
    [{ email: ['alice@example.com'] }, 'ERR_AUTHZ_INSUFFICIENT_SCOPE'],
    [{}, 'ERR_AUTHZ_INSUFFICIENT_SCOPE'],
  ])('claims %j → %s', (claims, want) => {
    expect(outcome(() => policy.check(principal([], claims)))).toBe(want);
  });

  it.each([[['@example.com']], [['*.example.com']], [[]]])('the schema refuses emailDomains %j', (emailDomains) => {
    expect(routeAuthSchema.safeParse({ providers: ['a'], emailDomains }).success).toBe(false);
  });
});

describe('compileRoutePolicy: claims', () => {
  it.each([
    [{ tenant: 'acme' }, { tenant: 'acme' }, 'pass'],
    [{ tenant: 'acme' }, { tenant: 'evil' }, 'fail'],
    [{ tenant: 'acme' }, {}, 'fail'],
    [{ tenant: 'acme' }, { tenant: ['evil', 'acme'] }, 'pass'],
    [{ tenant: 'acme' }, { tenant: null }, 'fail'],
    [{ level: 3 }, { level: 3 }, 'pass'],
    [{ level: 3 }, { level: '3' }, 'fail'],
    [{ admin: true }, { admin: true }, 'pass'],
    [{ admin: true }, { admin: 'true' }, 'fail'],
    [{ admin: true }, { admin: 1 }, 'fail'],
    [{ groups: ['a', 'b'] }, { groups: ['b', 'c', 'a'] }, 'pass'],
    [{ groups: ['a', 'b'] }, { groups: ['a'] }, 'fail'],
    [{ groups: ['a', 'b'] }, { groups: 'a' }, 'fail'],
    [{ groups: ['a'] }, { groups: 'a' }, 'pass'],
    [{ constructorish: 'x' }, Object.create({ constructorish: 'x' }) as Record<string, unknown>, 'fail'],
  ])('require %j, principal has %j → %s', (claims, have, want) => {
    const policy = compileRoutePolicy({ claims }, 'r');
    expect(outcome(() => policy.check(principal([], have)))).toBe(
      want === 'pass' ? 'pass' : 'ERR_AUTHZ_INSUFFICIENT_SCOPE',
    );
  });

  it('never says which value the principal had', () => {
    const policy = compileRoutePolicy({ claims: { tenant: 'acme' } }, 'r');
    try {
      policy.check(principal([], { tenant: 'secret-tenant-x' }));
    } catch (err) {
      expect((err as GatewayError).detail).not.toContain('secret-tenant-x');
    }
    expect.assertions(1);
  });
});

describe('compileRoutePolicy: config errors name the key path', () => {
  it.each([
    [{ scopes: ['a b'] }, 'routes[0].auth.scopes[0]'],
    [{ scopes: ['ok', 'bad"'] }, 'routes[0].auth.scopes[1]'],
    [{ claims: { __proto__x: 'y', constructor: 'x' } }, 'routes[0].auth.claims.constructor'],
    [{ claims: { groups: [] } }, 'routes[0].auth.claims.groups'],
    [{ claims: { n: Number.NaN } }, 'routes[0].auth.claims.n'],
  ])('%j → ConfigError at %s', (spec, path) => {
    let err: unknown;
    try {
      compileRoutePolicy(spec, 'routes[0].auth');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).path).toBe(path);
  });
});

describe('routeAuthSchema', () => {
  it('defaults: no query token, no forwarding, no stale answers', () => {
    expect(routeAuthSchema.parse({ providers: ['a'] })).toEqual({
      providers: ['a'],
      allowQueryToken: false,
      forwardToken: false,
      staleIfErrorSeconds: 0,
    });
  });
  it.each([
    [{ providers: [] }],
    [{}],
    [{ providers: ['a'], scope: ['typo'] }],
    [{ providers: ['a'], staleIfErrorSeconds: 301 }],
    [{ providers: ['a'], claims: { g: [] } }],
    [{ providers: ['a'], claims: { g: { nested: 1 } } }],
  ])('refuses %j', (value) => {
    expect(routeAuthSchema.safeParse(value).success).toBe(false);
  });
});
