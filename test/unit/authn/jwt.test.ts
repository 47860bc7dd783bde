/**
 * `type: jwt` against an in-memory fake IdP (injected fetch). The fake wall clock is vitest's fake Date (only
 * Date is faked: timers, and so the fetch timeout, stay real), which the IdP's `iat`/`exp` defaults and any
 * library reading `Date.now()` also see; the provider's monotonic clock is a separate counter, so the
 * clock-step tests can move the wall clock alone (issue 12 point 7).
 */
import { createHmac, createPublicKey, randomBytes } from 'node:crypto';
import {
  compactVerify,
  exportJWK,
  generateKeyPair,
  importJWK,
  jwtVerify,
  SignJWT,
  type CryptoKey,
  type JWK,
} from 'jose';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { tokenHash } from '../../../src/authn/bearer.js';
import { createAuthChain } from '../../../src/authn/chain.js';
import { bearerCredential } from '../../../src/authn/credential.js';
import { createJwtProvider } from '../../../src/authn/jwt.js';
import { jwtProviderSchema } from '../../../src/authn/provider-config.js';
import type { Authenticator, AuthnLogger } from '../../../src/authn/principal.js';
import type { Clock } from '../../../src/clock.js';
import { ConfigError, GatewayError } from '../../../src/errors.js';
import { createFakeIdp, type FakeIdp } from '../../helpers/idp.js';

const T0 = Date.parse('2025-06-01T00:00:00Z');
const NOW = T0 / 1000;
/** Monotonic ms, from another origin than the wall clock: `advance` moves both, `stepWall` only the wall. */
const M0 = 7_000_000;
let mono = M0;
const clock: Clock = { now: () => Date.now(), hrtime: () => BigInt(mono) * 1_000_000n };
const advance = (ms: number): void => {
  vi.setSystemTime(Date.now() + ms);
  mono += ms;
};
/** The wall clock is stepped (NTP, a resumed VM); no time passes. */
const stepWall = (ms: number): void => {
  vi.setSystemTime(Date.now() + ms);
};
const HOUR = 3_600_000;
const nowS = (): number => Math.floor(Date.now() / 1000);

const b64 = (v: unknown): string =>
  Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');
const craft = (header: unknown, payload: unknown, sig = ''): string =>
  `${b64(header)}.${b64(payload)}.${sig}`;

let idp: FakeIdp;
let fetched: string[];
let logs: string[];
const logger: AuthnLogger = {
  warn: (o, m) => logs.push(`${m} ${JSON.stringify(o)}`),
  info: (o, m) => logs.push(`${m} ${JSON.stringify(o)}`),
};

function provider(over: Record<string, unknown> = {}): Authenticator {
  const config = jwtProviderSchema.parse({
    type: 'jwt',
    issuer: idp.issuer,
    audience: 'gw',
    jwksUri: idp.jwksUri,
    algorithms: ['ES256'],
    ...over,
  });
  return createJwtProvider('corp', config, {
    clock,
    logger,
    fetch: (url, init) => {
      fetched.push(url);
      return idp.fetch(url, init);
    },
  });
}

/** A token's outcome through a one-provider chain, as a route sees it. */
async function outcome(p: Authenticator, token: string): Promise<string> {
  try {
    const principal = await createAuthChain([p])(bearerCredential(token));
    return `ok:${principal.subject}`;
  } catch (err) {
    return err instanceof GatewayError ? err.code : `other: ${String(err)}`;
  }
}

const claims = (over: Record<string, unknown> = {}): Record<string, unknown> => ({
  iss: idp.issuer,
  aud: 'gw',
  sub: 'alice',
  scope: 'read write',
  iat: nowS(),
  exp: nowS() + 600,
  ...over,
});

beforeEach(async () => {
  vi.useFakeTimers({ toFake: ['Date'] });
  vi.setSystemTime(T0);
  mono = M0;
  idp = await createFakeIdp();
  fetched = [];
  logs = [];
});
afterEach(() => {
  vi.useRealTimers();
});

describe('jwt: a valid token', () => {
  it('→ the principal from the verified payload', async () => {
    const p = provider();
    const token = await idp.sign(claims({ client_id: 'app' }));
    const principal = await p.authenticate({ kind: 'bearer', token: token, hash: tokenHash(token) });
    expect(principal).toMatchObject({
      subject: 'alice',
      scopes: ['read', 'write'],
      provider: 'corp',
      clientId: 'app',
      expiresAtMs: (NOW + 600) * 1000,
    });
    expect(principal !== 'not_applicable' && principal.claims['aud']).toBe('gw');
  });

  it('a client-credentials token without sub is named by client_id', async () => {
    const token = await idp.sign(claims({ sub: undefined, client_id: 'svc-1' }));
    expect(await outcome(provider(), token)).toBe('ok:svc-1');
  });

  it('an audience list containing ours passes (threat model #37)', async () => {
    expect(await outcome(provider(), await idp.sign(claims({ aud: ['other', 'gw'] })))).toBe('ok:alice');
  });

  it('duplicate claim keys: identity is what jose returned, last wins (threat model #39)', async () => {
    const payload = `{"iss":"${idp.issuer}","aud":"gw","sub":"admin","sub":"alice","exp":${NOW + 600}}`;
    expect(await outcome(provider(), await idp.signRaw(payload))).toBe('ok:alice');
  });
});

describe('jwt: hostile tokens are refused (401) — threat model #27–#43', () => {
  const evil = async (): Promise<{ key: CryptoKey; jwk: JWK }> => {
    const { publicKey, privateKey } = await generateKeyPair('ES256', { extractable: true });
    return { key: privateKey, jwk: await exportJWK(publicKey) };
  };

  it.each([['none'], ['None'], ['NONE'], ['nOnE']])('27: alg %j with an empty signature', async (alg) => {
    const p = provider();
    await p.warmUp();
    expect(await outcome(p, craft({ alg, kid: idp.currentKid }, claims()))).toBe('ERR_AUTHN_INVALID_TOKEN');
    expect(await outcome(p, craft({ alg }, claims(), 'AAAA'))).toBe('ERR_AUTHN_INVALID_TOKEN');
  });

  it('28: HS256 signed with the public key (JWK JSON, PEM) — key confusion', async () => {
    const p = provider({ algorithms: ['ES256', 'RS256'] });
    const pub = idp.jwks().keys[0]!;
    const pem = createPublicKey({ key: pub, format: 'jwk' }).export({ type: 'spki', format: 'pem' });
    for (const secret of [JSON.stringify(pub), String(pem), pub.x!]) {
      const h = b64({ alg: 'HS256', kid: idp.currentKid });
      const body = b64(claims());
      const sig = createHmac('sha256', secret).update(`${h}.${body}`).digest('base64url');
      expect(await outcome(p, `${h}.${body}.${sig}`)).toBe('ERR_AUTHN_INVALID_TOKEN');
    }
  });

  it('29: a validly signed ES256 token when only RS256 is allowed', async () => {
    expect(await outcome(provider({ algorithms: ['RS256'] }), await idp.sign(claims()))).toBe(
      'ERR_AUTHN_INVALID_TOKEN',
    );
  });

  it.each([
    ['path traversal', '../../../../dev/null'],
    ['SQL', "' OR 1=1--"],
    ['2 KB string', 'k'.repeat(2048)],
    ['an object', { $ne: 1 }],
    ['a number', 1],
    ['CRLF', 'a\r\nX-Injected: 1'],
  ])('30: kid injection (%s): 401, no extra fetch, escaped and truncated in the log', async (_name, kid) => {
    const p = provider();
    await p.warmUp();
    const before = idp.counts.jwks;
    const { key } = await evil();
    const token = await new SignJWT(claims()).setProtectedHeader({ alg: 'ES256', kid } as never).sign(key);
    let detail = '';
    let code = 'pass';
    try {
      await createAuthChain([p])(bearerCredential(token));
    } catch (err) {
      detail = (err as GatewayError).detail ?? '';
      code = (err as GatewayError).code;
    }
    expect(code).toBe('ERR_AUTHN_INVALID_TOKEN');
    expect(idp.counts.jwks - before).toBeLessThanOrEqual(0);
    expect(detail.length).toBeLessThan(500);
    expect(detail).not.toMatch(/[\r\n]/);
  });

  it('31: embedded jwk, jku, x5u are ignored and never fetched', async () => {
    const p = provider();
    await p.warmUp();
    const { key, jwk } = await evil();
    for (const header of [
      { jwk },
      { jku: 'http://127.0.0.1:9/attacker/jwks' },
      { x5u: 'http://127.0.0.1:9/attacker/cert' },
      { jwk, kid: idp.currentKid },
    ]) {
      const token = await new SignJWT(claims()).setProtectedHeader({ alg: 'ES256', ...header }).sign(key);
      expect(await outcome(p, token)).toBe('ERR_AUTHN_INVALID_TOKEN');
    }
    expect(fetched.every((u) => u === idp.jwksUri)).toBe(true);
  });

  it('32: an unknown crit header', async () => {
    const token = await idp.sign(claims(), { crit: ['urn:x'], 'urn:x': 1 });
    expect(await outcome(provider(), token)).toBe('ERR_AUTHN_INVALID_TOKEN');
  });

  it.each([
    ['exp = now − 1', { exp: NOW - 1 }, 'ERR_AUTHN_INVALID_TOKEN'],
    ['exp = now', { exp: NOW }, 'ERR_AUTHN_INVALID_TOKEN'],
    ['exp = now + 1', { exp: NOW + 1 }, 'ok:alice'],
  ])('33: %s with no tolerance → %s', async (_n, over, want) => {
    expect(await outcome(provider({ clockToleranceSeconds: 0 }), await idp.sign(claims(over)))).toBe(want);
  });

  it.each([
    ['exp = now − 29 (inside 30 s)', { exp: NOW - 29 }, 'ok:alice'],
    ['exp = now − 31 (outside)', { exp: NOW - 31 }, 'ERR_AUTHN_INVALID_TOKEN'],
    ['nbf = now + 60', { nbf: NOW + 60 }, 'ERR_AUTHN_INVALID_TOKEN'],
    ['nbf = now + 20 (inside)', { nbf: NOW + 20 }, 'ok:alice'],
    ['iat = now + 3600, no maxTokenAge', { iat: NOW + 3600 }, 'ERR_AUTHN_INVALID_TOKEN'],
  ])('33/34: %s with the default 30 s tolerance → %s', async (_n, over, want) => {
    expect(await outcome(provider(), await idp.sign(claims(over)))).toBe(want);
  });

  it('34: iat in the future or too old with maxTokenAgeSeconds', async () => {
    const p = provider({ maxTokenAgeSeconds: 300 });
    expect(await outcome(p, await idp.sign(claims({ iat: NOW + 3600 })))).toBe('ERR_AUTHN_INVALID_TOKEN');
    expect(await outcome(p, await idp.sign(claims({ iat: NOW - 400 })))).toBe('ERR_AUTHN_INVALID_TOKEN');
    expect(await outcome(p, await idp.sign(claims({ iat: undefined })))).toBe('ERR_AUTHN_INVALID_TOKEN');
    expect(await outcome(p, await idp.sign(claims({ iat: NOW - 100 })))).toBe('ok:alice');
  });

  it.each([
    ['35: no exp', { exp: undefined }],
    ['35: exp as a string', { exp: String(NOW + 60) }],
    ['36: exp 1e308', { exp: 1e308 }],
    ['36: exp now + 10 years', { exp: NOW + 315_360_000 }],
    ['37: wrong aud', { aud: 'other' }],
    ['37: no aud', { aud: undefined }],
    ['37: another resource server on the same IdP', { aud: 'billing-api' }],
    ['sub not a string', { sub: 42 }],
    ['empty sub, no client_id', { sub: '' }],
    ['scope not a string', { scope: ['read'] }],
    ['no sub and no client_id', { sub: undefined }],
  ])('%s', async (_n, over) => {
    expect(await outcome(provider(), await idp.sign(claims(over)))).toBe('ERR_AUTHN_INVALID_TOKEN');
  });

  it.each([
    ['wrong iss', { iss: 'https://evil.example' }],
    ['iss as an array', { iss: ['https://idp.test'] }],
    ['no iss', { iss: undefined }],
  ])('37: %s is not this provider’s kind; alone in a chain → 401', async (_n, over) => {
    const p = provider();
    const token = await idp.sign(claims(over));
    await expect(p.authenticate({ kind: 'bearer', token: token, hash: tokenHash(token) })).resolves.toBe('not_applicable');
    expect(await outcome(p, token)).toBe('ERR_AUTHN_INVALID_TOKEN');
  });

  it('38: typ mismatch when typ is configured (an ID token where at+jwt is expected)', async () => {
    const p = provider({ typ: 'at+jwt' });
    expect(await outcome(p, await idp.sign(claims(), { typ: 'JWT' }))).toBe('ERR_AUTHN_INVALID_TOKEN');
    expect(await outcome(p, await idp.sign(claims()))).toBe('ERR_AUTHN_INVALID_TOKEN');
    expect(await outcome(p, await idp.sign(claims(), { typ: 'at+jwt' }))).toBe('ok:alice');
  });

  it('41: an oversized JWT-shaped token is refused before any decoding or fetch', async () => {
    const p = provider();
    const token = `${b64({ alg: 'ES256' })}.${'A'.repeat(1024 * 1024)}.AAAA`;
    expect(await outcome(p, token)).toBe('ERR_AUTHN_INVALID_TOKEN');
    expect(idp.counts.jwks).toBe(0);
  });

  it.each([
    ['a JWE (5 parts)', 'eyJhbGciOiJSU0EtT0FFUCJ9.a.b.c.d'],
    ['an opaque token', 'abcdef0123456789'],
    ['two dots in an opaque token (58)', 'abc.def.ghi'],
    ['an empty segment', 'a..b'],
  ])('42/58: %s is not_applicable (→ 401 alone in a chain)', async (_n, token) => {
    const p = provider();
    await expect(p.authenticate({ kind: 'bearer', token: token, hash: tokenHash(token) })).resolves.toBe('not_applicable');
    expect(await outcome(p, token)).toBe('ERR_AUTHN_INVALID_TOKEN');
  });

  it('42: a trailing segment, a tampered signature, a tampered payload', async () => {
    const p = provider();
    const token = await idp.sign(claims());
    const [h, body, sig] = token.split('.') as [string, string, string];
    const flipped = sig.startsWith('A') ? `B${sig.slice(1)}` : `A${sig.slice(1)}`;
    expect(await outcome(p, `${h}.${body}.${flipped}`)).toBe('ERR_AUTHN_INVALID_TOKEN');
    expect(await outcome(p, `${h}.${b64(claims({ sub: 'admin' }))}.${sig}`)).toBe('ERR_AUTHN_INVALID_TOKEN');
    expect(await outcome(p, `${token}.extra`)).toBe('ERR_AUTHN_INVALID_TOKEN');
  });

  it('58: a JWT from our issuer that fails verification never falls through to the next provider', async () => {
    const p = provider();
    let nextCalled = 0;
    const next: Authenticator = {
      ...p,
      name: 'opaque',
      authenticate: () => {
        nextCalled++;
        return Promise.resolve({
          subject: 'x',
          scopes: [],
          provider: 'opaque',
          claims: {},
          expiresAtMs: undefined,
        });
      },
    };
    const bad = await idp.sign(claims({ aud: 'other' }));
    await expect(createAuthChain([p, next])(bearerCredential(bad))).rejects.toMatchObject({
      code: 'ERR_AUTHN_INVALID_TOKEN',
    });
    expect(nextCalled).toBe(0);
    // A JWT of another issuer is the next provider's business.
    const foreign = await idp.sign(claims({ iss: 'https://other-idp.example' }));
    await expect(createAuthChain([p, next])(bearerCredential(foreign))).resolves.toMatchObject({
      provider: 'opaque',
    });
  });

  it('never puts the token in an error detail or a log line', async () => {
    const p = provider();
    const tokens = [
      await idp.sign(claims({ aud: 'x' })),
      craft({ alg: 'none' }, claims()),
      await idp.sign(claims({ exp: 1e308 })),
    ];
    const details: string[] = [];
    for (const t of tokens) {
      try {
        await p.authenticate({ kind: 'bearer', token: t, hash: tokenHash(t) });
      } catch (err) {
        details.push((err as GatewayError).message);
      }
    }
    idp.setFault('500');
    advance(700_000);
    const t = await idp.sign(claims());
    await p.authenticate({ kind: 'bearer', token: t, hash: tokenHash(t) }).catch((err: unknown) => details.push((err as Error).message));
    tokens.push(t);
    for (const token of tokens) {
      for (const line of [...details, ...logs]) {
        expect(line).not.toContain(token);
        const sig = token.split('.')[2]!;
        if (sig !== '') expect(line).not.toContain(sig);
      }
    }
    expect(details.length).toBe(4);
  });
});

describe('jwt: the verified-token cache', () => {
  it('a hot token is verified once, then served by hash', async () => {
    const p = provider();
    const token = await idp.sign(claims());
    for (let i = 0; i < 5; i++) expect(await outcome(p, token)).toBe('ok:alice');
    expect(p.stats()).toMatchObject({ cacheMisses: 1, cacheHits: 4, cacheEntries: 1 });
  });

  it('never outlives exp: a hit is re-checked against exp (threat model #49 for JWTs)', async () => {
    const p = provider({ clockToleranceSeconds: 0 });
    const token = await idp.sign(claims({ exp: NOW + 10 }));
    expect(await outcome(p, token)).toBe('ok:alice');
    advance(9_999);
    expect(await outcome(p, token)).toBe('ok:alice');
    expect(p.stats().cacheHits).toBe(1);
    advance(1);
    expect(await outcome(p, token)).toBe('ERR_AUTHN_INVALID_TOKEN');
    expect(p.stats().cacheHits).toBe(1);
  });

  it('lives at most cacheMaxSeconds, then the token is verified again', async () => {
    const p = provider({ cacheMaxSeconds: 60 });
    const token = await idp.sign(claims());
    await outcome(p, token);
    advance(59_000);
    await outcome(p, token);
    advance(2_000);
    expect(await outcome(p, token)).toBe('ok:alice');
    expect(p.stats()).toMatchObject({ cacheHits: 1, cacheMisses: 2 });
  });

  it('respects iat + maxTokenAge on a hit', async () => {
    const p = provider({ maxTokenAgeSeconds: 120, clockToleranceSeconds: 0 });
    const token = await idp.sign(claims({ iat: NOW - 100 }));
    expect(await outcome(p, token)).toBe('ok:alice');
    advance(21_000);
    expect(await outcome(p, token)).toBe('ERR_AUTHN_INVALID_TOKEN');
  });

  it('never caches a refused token, and purge(hash) / purge() drop entries', async () => {
    const p = provider();
    const bad = await idp.sign(claims({ aud: 'x' }));
    await outcome(p, bad);
    expect(p.stats().cacheEntries).toBe(0);
    const a = await idp.sign(claims({ sub: 'a' }));
    const b = await idp.sign(claims({ sub: 'b' }));
    await outcome(p, a);
    await outcome(p, b);
    expect(p.purge?.(tokenHash(a))).toBe(1);
    expect(p.purge?.(tokenHash(a))).toBe(0);
    expect(p.stats().cacheEntries).toBe(1);
    expect(p.purge?.()).toBe(1);
    expect(p.stats().cacheEntries).toBe(0);
  });

  it('stays within cacheMaxEntries, counting evictions', async () => {
    const p = provider({ cacheMaxEntries: 50 });
    for (let i = 0; i < 200; i++)
      expect(await outcome(p, await idp.sign(claims({ sub: `u${i}` })))).toBe(`ok:u${i}`);
    expect(p.stats()).toMatchObject({ cacheEntries: 50, cacheEvictions: 150 });
  });

  it('cacheMaxSeconds 0 turns the cache off', async () => {
    const p = provider({ cacheMaxSeconds: 0 });
    const token = await idp.sign(claims());
    await outcome(p, token);
    await outcome(p, token);
    expect(p.stats()).toMatchObject({ cacheEntries: 0, cacheHits: 0 });
  });
});

describe('jwt: the remote JWKS — threat model #45–#47', () => {
  const randomKidToken = (): string =>
    craft({ alg: 'ES256', kid: randomBytes(8).toString('hex') }, claims(), 'AAAA');

  it('45: an unknown-kid storm costs at most one refetch per cooldown', async () => {
    const p = provider();
    // 10,000 tokens with fresh random kids over 60 s (one every 6 ms).
    for (let i = 0; i < 10_000; i++) {
      expect(await outcome(p, randomKidToken())).toBe('ERR_AUTHN_INVALID_TOKEN');
      advance(6);
    }
    // ⌈60 s / 30 s⌉ + 1
    expect(idp.counts.jwks).toBeLessThanOrEqual(3);
    expect(idp.counts.jwks).toBeGreaterThanOrEqual(1);
  });

  it('46a: cold start with the JWKS answering 500 → 503, and an outage is not one fetch per request', async () => {
    idp.setFault('500', 'jwks');
    const p = provider();
    const token = await idp.sign(claims());
    expect(p.readiness()).toBe('jwks not fetched yet');
    // 50 sequential requests over 5 s.
    for (let i = 0; i < 50; i++) {
      expect(await outcome(p, token)).toBe('ERR_AUTHN_UNAVAILABLE');
      advance(100);
    }
    expect(idp.counts.jwks).toBeLessThanOrEqual(3);
    expect(p.readiness()).toMatch(/jwks not fetched yet \(last attempt: status 500\)/);
    // Recovery once the endpoint answers and the backoff has passed.
    idp.setFault('ok', 'jwks');
    advance(30_000);
    expect(await outcome(p, token)).toBe('ok:alice');
    expect(p.readiness()).toBeUndefined();
  });

  it('46b: warm, then the JWKS fails past its max age → fail closed (503) with bounded fetches, then recovers', async () => {
    const p = provider();
    await p.warmUp();
    expect(p.readiness()).toBeUndefined();
    expect(idp.counts.jwks).toBe(1);
    idp.setFault('500', 'jwks');
    advance(601_000);
    const token = await idp.sign(claims({ sub: 'fresh' }));
    for (let i = 0; i < 200; i++) {
      expect(await outcome(p, token)).toBe('ERR_AUTHN_UNAVAILABLE');
      advance(50); // 200 rps for 10 s
    }
    // Backoff 1, 2, 4, 8 s: fetches at 0, 1, 3, 7 s.
    expect(idp.counts.jwks - 1).toBeLessThanOrEqual(4);
    expect(p.readiness()).toMatch(/refresh failing/);
    idp.setFault('ok', 'jwks');
    advance(30_000);
    expect(await outcome(p, token)).toBe('ok:fresh');
  });

  it('46c: a JWKS slower than the timeout → 503 within the timeout', async () => {
    idp.setFault({ slowMs: 5_000 }, 'jwks');
    const p = provider({ jwksTimeoutMs: 150 });
    const started = performance.now();
    expect(await outcome(p, await idp.sign(claims()))).toBe('ERR_AUTHN_UNAVAILABLE');
    expect(performance.now() - started).toBeLessThan(2_000);
  });

  it.each([['reset' as const], ['redirect' as const], ['non-json' as const], ['big' as const]])(
    '47: a JWKS answering %s → 503',
    async (fault) => {
      idp.setFault(fault, 'jwks');
      expect(await outcome(provider(), await idp.sign(claims()))).toBe('ERR_AUTHN_UNAVAILABLE');
    },
  );

  it('47: a key set that is JSON but not a JWK set → 503', async () => {
    const p = createJwtProvider(
      'corp',
      jwtProviderSchema.parse({
        type: 'jwt',
        issuer: idp.issuer,
        audience: 'gw',
        jwksUri: idp.jwksUri,
        algorithms: ['ES256'],
      }),
      {
        clock,
        fetch: () =>
          Promise.resolve(
            new Response('{"keys": "nope"}', {
              status: 200,
              headers: { 'content-type': 'application/json' },
            }),
          ),
      },
    );
    expect(await outcome(p, await idp.sign(claims()))).toBe('ERR_AUTHN_UNAVAILABLE');
  });

  it('47: rotation — a new kid is accepted after one refetch once the cooldown has passed; a dropped key stops working after the max age', async () => {
    const p = provider();
    const old = await idp.sign(claims({ sub: 'old' }));
    expect(await outcome(p, old)).toBe('ok:old');
    expect(idp.counts.jwks).toBe(1);
    await idp.rotate({ dropOld: true });
    const fresh = await idp.sign(claims({ sub: 'new' }));
    advance(31_000);
    expect(await outcome(p, fresh)).toBe('ok:new');
    expect(idp.counts.jwks).toBe(2);
    // The old token is cached (by hash) for up to cacheMaxSeconds; purge it, then it is re-verified.
    p.purge?.();
    expect(await outcome(p, old)).toBe('ERR_AUTHN_INVALID_TOKEN');
  });

  it('47: a kid reused for a new key: tokens signed by the old key fail after the refresh', async () => {
    const p = provider({ cacheMaxSeconds: 0 });
    const kid = idp.currentKid;
    const old = await idp.sign(claims());
    expect(await outcome(p, old)).toBe('ok:alice');
    await idp.rotate({ dropOld: true, reuseKid: kid });
    advance(601_000);
    const renewed = await idp.sign(claims());
    expect(await outcome(p, renewed)).toBe('ok:alice');
    expect(await outcome(p, old)).toBe('ERR_AUTHN_INVALID_TOKEN');
  });

  it('warmUp never rejects and reports through readiness', async () => {
    idp.setFault('reset', 'jwks');
    const p = provider();
    await expect(p.warmUp()).resolves.toBeUndefined();
    expect(p.readiness()).toMatch(/jwks not fetched yet/);
    expect(p.stats()).toMatchObject({ idpRequests: 1, idpFailures: 1 });
  });
});

describe('jwt: jwksFile', () => {
  it('verifies against a local key set read at creation', async () => {
    const text = JSON.stringify(idp.jwks());
    const config = jwtProviderSchema.parse({
      type: 'jwt',
      issuer: idp.issuer,
      audience: 'gw',
      jwksFile: '/keys.json',
      algorithms: ['ES256'],
    });
    const p = createJwtProvider('dev', config, {
      clock,
      readFile: () => text,
      fetch: () => Promise.reject(new Error('no network')),
    });
    expect(p.readiness()).toBeUndefined();
    expect(await outcome(p, await idp.sign(claims()))).toBe('ok:alice');
    expect(await outcome(p, craft({ alg: 'ES256', kid: 'nope' }, claims(), 'AAAA'))).toBe(
      'ERR_AUTHN_INVALID_TOKEN',
    );
  });

  it.each([
    [
      'unreadable',
      () => {
        throw new Error('ENOENT');
      },
    ],
    ['not JSON', () => 'nope'],
    ['not a key set', () => '{"keys": 1}'],
  ])('a %s file is a ConfigError naming jwksFile', (_n, readFile) => {
    const config = jwtProviderSchema.parse({
      type: 'jwt',
      issuer: 'i',
      audience: 'a',
      jwksFile: '/k.json',
      algorithms: ['ES256'],
    });
    let err: unknown;
    try {
      createJwtProvider('dev', config, { clock, readFile });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).path).toBe('authProviders.dev.jwksFile');
  });
});

describe('jwt: config schema', () => {
  const base = {
    type: 'jwt',
    issuer: 'https://idp',
    audience: 'gw',
    jwksUri: 'https://idp/jwks',
    algorithms: ['ES256'],
  };
  it('applies the documented defaults', () => {
    expect(jwtProviderSchema.parse(base)).toMatchObject({
      clockToleranceSeconds: 30,
      maxExpiresInSeconds: 86_400,
      cacheMaxSeconds: 300,
      cacheMaxEntries: 100_000,
      jwksTimeoutMs: 2_000,
      jwksCooldownSeconds: 30,
      jwksMaxAgeSeconds: 600,
    });
  });

  it.each([
    ['no algorithms', { algorithms: undefined }, 'algorithms'],
    ['an empty algorithm list (29)', { algorithms: [] }, 'algorithms'],
    ['HS256', { algorithms: ['HS256'] }, 'algorithms.0'],
    ['none', { algorithms: ['ES256', 'none'] }, 'algorithms.1'],
    ['no issuer (37)', { issuer: undefined }, 'issuer'],
    ['no audience (37)', { audience: undefined }, 'audience'],
    ['an empty audience list', { audience: [] }, 'audience'],
    ['both jwksUri and jwksFile', { jwksFile: '/k.json' }, 'jwksFile'],
    ['neither jwksUri nor jwksFile', { jwksUri: undefined }, 'jwksUri'],
    ['a plaintext jwksUri to a remote host', { jwksUri: 'http://idp.example.com/jwks' }, 'jwksUri'],
    ['a jwksUri with credentials', { jwksUri: 'https://u:p@idp/jwks' }, 'jwksUri'],
    ['an unknown key', { jwks_uri: 'https://x' }, ''],
    ['a negative tolerance', { clockToleranceSeconds: -1 }, 'clockToleranceSeconds'],
  ])('refuses %s', (_n, over, path) => {
    const r = jwtProviderSchema.safeParse({ ...base, ...over });
    expect(r.success).toBe(false);
    expect(r.error?.issues.map((i) => i.path.join('.'))).toContain(path);
  });

  it('names both keys when jwksUri and jwksFile are exclusive', () => {
    const r = jwtProviderSchema.safeParse({ ...base, jwksFile: '/k.json' });
    expect(r.error?.issues[0]?.message).toMatch(/jwksUri.*jwksFile/);
    const n = jwtProviderSchema.safeParse({ ...base, jwksUri: undefined });
    expect(n.error?.issues[0]?.message).toMatch(/jwksUri.*jwksFile/);
  });

  it('says why HS* is refused', () => {
    const r = jwtProviderSchema.safeParse({ ...base, algorithms: ['HS256'] });
    expect(r.error?.issues[0]?.message).toMatch(/asymmetric/);
  });

  it('accepts http:// to loopback', () => {
    expect(jwtProviderSchema.safeParse({ ...base, jwksUri: 'http://127.0.0.1:8080/jwks' }).success).toBe(
      true,
    );
    expect(jwtProviderSchema.safeParse({ ...base, jwksUri: 'http://[::1]:8080/jwks' }).success).toBe(true);
    expect(jwtProviderSchema.safeParse({ ...base, jwksUri: 'http://localhost/jwks' }).success).toBe(true);
  });
});

describe('jwt: a wall clock stepped back or forward an hour (issue 12 point 7)', () => {
  // iat two hours back, so that a step back of one hour leaves it in the past.
  const longLived = (over: Record<string, unknown> = {}): Record<string, unknown> =>
    claims({ iat: NOW - 7200, exp: NOW + 3 * 3600, ...over });

  it('(a) stepped back: a token cached for 60 s is re-verified after 60 s of monotonic time', async () => {
    const p = provider({ cacheMaxSeconds: 60 });
    const token = await idp.sign(longLived());
    expect(await outcome(p, token)).toBe('ok:alice');
    stepWall(-HOUR);
    advance(59_000);
    expect(await outcome(p, token)).toBe('ok:alice');
    expect(p.stats()).toMatchObject({ cacheHits: 1, cacheMisses: 1 });
    advance(2_000);
    expect(await outcome(p, token)).toBe('ok:alice');
    expect(p.stats()).toMatchObject({ cacheHits: 1, cacheMisses: 2 });
  });

  it('(b) stepped forward past exp: the cached token is not served', async () => {
    const p = provider();
    const token = await idp.sign(longLived({ exp: NOW + 1800 }));
    expect(await outcome(p, token)).toBe('ok:alice');
    stepWall(HOUR);
    advance(1_000);
    expect(await outcome(p, token)).toBe('ERR_AUTHN_INVALID_TOKEN');
    expect(p.stats().cacheHits).toBe(0);
  });

  it.each([
    ['nbf', { nbf: NOW - 10 }],
    ['iat', { iat: NOW - 10 }],
  ])('(c) %s ahead of the wall clock (beyond the tolerance): refused on a cache hit', async (_n, over) => {
    const p = provider();
    const token = await idp.sign(longLived(over));
    expect(await outcome(p, token)).toBe('ok:alice');
    stepWall(-HOUR);
    advance(1_000);
    await expect(p.authenticate(bearerCredential(token))).rejects.toMatchObject({
      code: 'ERR_AUTHN_INVALID_TOKEN',
      detail: expect.stringMatching(/cached token/) as unknown,
    });
    expect(p.stats()).toMatchObject({ cacheMisses: 1, cacheEntries: 0 });
    // Verified afresh it is refused too (jose's nbf check, or ours on iat).
    expect(await outcome(p, token)).toBe('ERR_AUTHN_INVALID_TOKEN');
    expect(p.stats()).toMatchObject({ cacheMisses: 2, cacheEntries: 0 });
  });

  it('(c) within the tolerance (30 s) a step back changes nothing', async () => {
    const p = provider();
    const token = await idp.sign(longLived({ nbf: NOW - 10 }));
    expect(await outcome(p, token)).toBe('ok:alice');
    stepWall(-35_000);
    expect(await outcome(p, token)).toBe('ok:alice');
    expect(p.stats().cacheHits).toBe(1);
  });

  it('(d) stepped forward, still within the lifetime and before exp: served from the cache', async () => {
    const p = provider({ cacheMaxSeconds: 300 });
    const token = await idp.sign(longLived());
    expect(await outcome(p, token)).toBe('ok:alice');
    stepWall(HOUR);
    advance(10_000);
    expect(await outcome(p, token)).toBe('ok:alice');
    expect(p.stats()).toMatchObject({ cacheHits: 1, cacheMisses: 1 });
  });

  it('stepped back: the key set is refreshed after its max age of monotonic time', async () => {
    const p = provider({ jwksMaxAgeSeconds: 600, cacheMaxSeconds: 0 });
    await p.warmUp();
    expect(idp.counts.jwks).toBe(1);
    stepWall(-HOUR);
    advance(601_000);
    expect(await outcome(p, await idp.sign(longLived()))).toBe('ok:alice');
    expect(idp.counts.jwks).toBe(2);
  });

  it('stepped back: a rotated-in kid is fetched once the cooldown has elapsed, not an hour later', async () => {
    const p = provider({ jwksCooldownSeconds: 30 });
    await p.warmUp();
    await idp.rotate();
    stepWall(-HOUR);
    advance(31_000);
    expect(await outcome(p, await idp.sign(longLived()))).toBe('ok:alice');
    expect(idp.counts.jwks).toBe(2);
  });

  it('stepped back: a failing JWKS is retried after its backoff, not an hour later', async () => {
    idp.setFault('500', 'jwks');
    const p = provider();
    const token = await idp.sign(longLived());
    expect(await outcome(p, token)).toBe('ERR_AUTHN_UNAVAILABLE');
    expect(idp.counts.jwks).toBe(1);
    idp.setFault('ok', 'jwks');
    stepWall(-HOUR);
    advance(1_000);
    expect(await outcome(p, token)).toBe('ok:alice');
    expect(idp.counts.jwks).toBe(2);
  });
});

describe('jwt: JWS forms the gateway does not accept → 401, never accepted (issue 12 point 8)', () => {
  /** The token's signature checks out against the IdP's published key (jose's plain JWS verify, b64 honoured). */
  const signatureValid = async (token: string): Promise<boolean> => {
    const key = await importJWK(idp.jwks().keys[0]!, 'ES256');
    try {
      await compactVerify(token, key, { crit: { b64: true } });
      return true;
    } catch {
      return false;
    }
  };

  it('b64:false with crit ["b64"] (RFC 7797), signed with the right key: refused and not cached', async () => {
    // The unencoded payload is the base64url text of the claims: a compact JWS the provider claims (iss matches).
    const token = await idp.signUnchecked({ b64: false, crit: ['b64'] }, b64(claims()));
    expect(await signatureValid(token)).toBe(true);
    const p = provider();
    await expect(p.authenticate(bearerCredential(token))).rejects.toMatchObject({
      code: 'ERR_AUTHN_INVALID_TOKEN',
      detail: expect.stringMatching(/b64/) as unknown,
    });
    expect(await outcome(p, token)).toBe('ERR_AUTHN_INVALID_TOKEN');
    expect(p.stats().cacheEntries).toBe(0);
  });

  it.each<[string, Record<string, unknown>, RegExp]>([
    ['b64:false without crit (jose would ignore b64 and decode the payload)', { b64: false }, /b64/],
    ['b64 "false" (a string)', { b64: 'false' }, /b64/],
    ['b64 0', { b64: 0 }, /b64/],
    [
      'b64:true and crit ["b64"] (an extension jose knows; the gateway supports none)',
      { b64: true, crit: ['b64'] },
      /crit/,
    ],
    ['an unknown crit parameter', { crit: ['urn:x'], 'urn:x': 1 }, /crit/],
    ['crit naming a claim', { crit: ['exp'], exp: 1 }, /crit/],
    ['crit naming a parameter that is absent', { crit: ['b64'] }, /crit/],
    ['an empty crit', { crit: [] }, /crit/],
    ['crit as a string', { crit: 'b64', b64: true }, /crit/],
    ['crit with a duplicate (jose does not check that)', { crit: ['b64', 'b64'], b64: true }, /crit/],
  ])('%s, signature valid → 401', async (_n, header, why) => {
    const token = await idp.signUnchecked(header, b64(claims()));
    const p = provider();
    await expect(p.authenticate(bearerCredential(token))).rejects.toMatchObject({
      code: 'ERR_AUTHN_INVALID_TOKEN',
      detail: expect.stringMatching(why) as unknown,
    });
    expect(await outcome(p, token)).toBe('ERR_AUTHN_INVALID_TOKEN');
    expect(p.stats().cacheEntries).toBe(0);
  });

  it('the control: the same signing path with an ordinary header (or b64:true alone, RFC 7797 §3) is accepted', async () => {
    const p = provider();
    expect(await outcome(p, await idp.signUnchecked({}, b64(claims())))).toBe('ok:alice');
    expect(await outcome(p, await idp.signUnchecked({ b64: true }, b64(claims({ sub: 'bob' }))))).toBe(
      'ok:bob',
    );
  });

  it('jose alone would accept b64:false without crit and crit ["b64"] with b64:true (why the gateway checks first)', async () => {
    const key = await importJWK(idp.jwks().keys[0]!, 'ES256');
    for (const header of [
      { b64: false },
      { b64: true, crit: ['b64'] },
      { b64: true, crit: ['b64', 'b64'] },
    ]) {
      const token = await idp.signUnchecked(header, b64(claims()));
      await expect(jwtVerify(token, key, { algorithms: ['ES256'] })).resolves.toMatchObject({
        payload: { sub: 'alice' },
      });
    }
  });
});
