import { describe, expect, it, vi } from 'vitest';
import { createAuthChain } from '../../../src/authn/chain.js';
import type { Authenticator, AuthnResult, Principal } from '../../../src/authn/principal.js';
import { GatewayError } from '../../../src/errors.js';

const STATS = {
  cacheEntries: 0,
  cacheHits: 0,
  cacheMisses: 0,
  cacheEvictions: 0,
  idpRequests: 0,
  idpFailures: 0,
  staleServed: 0,
  reloads: 0,
};

function provider(name: string, answer: () => Promise<AuthnResult>): Authenticator & { calls: number } {
  const p = {
    name,
    type: 'static' as const,
    calls: 0,
    authenticate: () => {
      p.calls++;
      return answer();
    },
    readiness: () => undefined,
    warmUp: () => Promise.resolve(),
    stats: () => STATS,
    close: () => undefined,
  };
  return p;
}

const alice = (provider: string): Principal => ({
  subject: 'alice',
  scopes: [],
  provider,
  claims: {},
  expiresAtMs: undefined,
});
const na = (): Promise<AuthnResult> => Promise.resolve('not_applicable');
const ok = (name: string) => (): Promise<AuthnResult> => Promise.resolve(alice(name));
const fail = (code: 'ERR_AUTHN_INVALID_TOKEN' | 'ERR_AUTHN_UNAVAILABLE') => (): Promise<AuthnResult> =>
  Promise.reject(new GatewayError(code));

describe('createAuthChain', () => {
  it('the first provider that is not "not_applicable" decides', async () => {
    const a = provider('a', na);
    const b = provider('b', ok('b'));
    const c = provider('c', ok('c'));
    const chain = createAuthChain([a, b, c]);
    await expect(chain({ kind: 'bearer', token: 't', hash: 'h' })).resolves.toMatchObject({ provider: 'b' });
    expect([a.calls, b.calls, c.calls]).toEqual([1, 1, 0]);
  });

  it.each([['ERR_AUTHN_INVALID_TOKEN' as const], ['ERR_AUTHN_UNAVAILABLE' as const]])(
    '%s stops the chain: never retried elsewhere (threat model #58)',
    async (c) => {
      const a = provider('a', fail(c));
      const b = provider('b', ok('b'));
      await expect(createAuthChain([a, b])({ kind: 'bearer', token: 't', hash: 'h' })).rejects.toMatchObject({ code: c });
      expect(b.calls).toBe(0);
    },
  );

  it('all not_applicable → invalid token', async () => {
    await expect(createAuthChain([provider('a', na), provider('b', na)])({ kind: 'bearer', token: 't', hash: 'h' })).rejects.toMatchObject({
      code: 'ERR_AUTHN_INVALID_TOKEN',
    });
  });

  it('a provider bug is a denial (ERR_INTERNAL), never a pass', async () => {
    const bad = provider('a', () => Promise.reject(new TypeError('boom')));
    await expect(createAuthChain([bad, provider('b', ok('b'))])({ kind: 'bearer', token: 't', hash: 'h' })).rejects.toMatchObject({
      code: 'ERR_INTERNAL',
    });
  });

  it('passes the per-route options down', async () => {
    const a = provider('a', ok('a'));
    const spy = vi.spyOn(a, 'authenticate');
    await createAuthChain([a])({ kind: 'bearer', token: 't', hash: 'h' }, { staleIfErrorSeconds: 5 });
    expect(spy).toHaveBeenCalledWith({ kind: 'bearer', token: 't', hash: 'h' }, { staleIfErrorSeconds: 5 });
  });

  it('refuses an empty chain', () => {
    expect(() => createAuthChain([])).toThrow(TypeError);
  });
});

describe('credential kinds', () => {
  it('a kind no provider reads is refused as invalid, never passed', async () => {
    // The real providers of today read Bearer tokens only: each says not_applicable to a session.
    const a = provider('a', na);
    await expect(createAuthChain([a])({ kind: 'session', hash: 'h', id: 'i', listener: 'l', origin: 'https://o' })).rejects.toMatchObject({
      code: 'ERR_AUTHN_INVALID_TOKEN',
    });
  });
});
