/**
 * `type: introspection` against the in-memory fake IdP (injected fetch) with a fake clock: threat model #49–#58.
 * The fake clock has a wall reading (`t`) and a monotonic one (`m`, from another origin): `advance` moves
 * both, `stepWall` only the wall clock, as NTP or a resumed VM does (issue 12 point 7).
 */
import { beforeEach, describe, expect, it } from 'vitest';
import { tokenHash } from '../../../src/authn/bearer.js';
import {
  createIntrospectionProvider,
  PAUSE_AFTER_FAILURES,
  PAUSE_INITIAL_MS,
  PAUSE_MAX_MS,
  processIntrospectionResponse,
} from '../../../src/authn/introspection.js';
import { introspectionProviderSchema } from '../../../src/authn/provider-config.js';
import type { Authenticator, AuthnLogger, FetchLike, Principal } from '../../../src/authn/principal.js';
import { compileRoutePolicy } from '../../../src/authz/policy.js';
import type { Clock } from '../../../src/clock.js';
import { ConfigError, GatewayError } from '../../../src/errors.js';
import { createFakeIdp, type FakeIdp } from '../../helpers/idp.js';

const T0 = Date.parse('2025-06-01T00:00:00Z');
const NOW = T0 / 1000;
const M0 = 7_000_000;
let t = T0;
let m = M0;
const clock: Clock = { now: () => t, hrtime: () => BigInt(m) * 1_000_000n };
const advance = (ms: number): void => {
  t += ms;
  m += ms;
};
/** The wall clock is stepped; no time passes. */
const stepWall = (ms: number): void => {
  t += ms;
};
const HOUR = 3_600_000;

let idp: FakeIdp;
let logs: string[];
const logger: AuthnLogger = {
  warn: (o, m) => logs.push(`${m} ${JSON.stringify(o)}`),
  info: (o, m) => logs.push(`${m} ${JSON.stringify(o)}`),
};

function provider(over: Record<string, unknown> = {}, fetchImpl?: FetchLike): Authenticator {
  const config = introspectionProviderSchema.parse({
    type: 'introspection',
    endpoint: idp.introspectionUri,
    clientId: idp.clientId,
    clientSecretFile: '/run/secrets/introspection',
    ...over,
  });
  return createIntrospectionProvider('opaque', config, {
    clock,
    logger,
    fetch: fetchImpl ?? idp.fetch,
    readFile: () => `${idp.clientSecret}\n`,
  });
}

async function outcome(
  p: Authenticator,
  token: string,
  opts?: { staleIfErrorSeconds?: number },
): Promise<string> {
  try {
    const r = await p.authenticate({ kind: 'bearer', token: token, hash: tokenHash(token) }, opts);
    return r === 'not_applicable' ? r : `ok:${r.subject}`;
  } catch (err) {
    return err instanceof GatewayError ? err.code : `other: ${String(err)}`;
  }
}

const active = (over: Record<string, unknown> = {}): Record<string, unknown> => ({
  active: true,
  sub: 'alice',
  scope: 'read',
  client_id: 'app',
  exp: Math.floor(t / 1000) + 3600,
  ...over,
});

beforeEach(async () => {
  t = T0;
  m = M0;
  idp = await createFakeIdp({ now: () => t });
  logs = [];
});

describe('introspection: the request (RFC 7662 §2.1)', () => {
  it('POSTs the token as a form with client_secret_basic, id and secret form-urlencoded (RFC 6749 §2.3.1)', async () => {
    const token = idp.issueOpaque();
    expect(await outcome(provider(), token)).toBe('ok:alice');
    const call = idp.introspections[0]!;
    expect(call.contentType).toBe('application/x-www-form-urlencoded');
    expect(call.params.get('token')).toBe(token);
    expect(call.params.get('token_type_hint')).toBe('access_token');
    expect(call.params.get('client_secret')).toBeNull();
    // "s3cr+t:with/odd chars!" → s3cr%2Bt%3Awith%2Fodd+chars%21
    const decoded = Buffer.from(call.authorization!.replace(/^Basic /, ''), 'base64').toString();
    expect(decoded).toBe('portcullis:s3cr%2Bt%3Awith%2Fodd+chars%21');
  });

  it('client_secret_post puts the credentials in the body and sends no Authorization', async () => {
    const token = idp.issueOpaque();
    expect(await outcome(provider({ authMethod: 'client_secret_post' }), token)).toBe('ok:alice');
    const call = idp.introspections[0]!;
    expect(call.authorization).toBeUndefined();
    expect(call.params.get('client_id')).toBe(idp.clientId);
    expect(call.params.get('client_secret')).toBe(idp.clientSecret);
  });

  it('sends redirect: manual, a timeout signal, and accepts JSON only', async () => {
    let seen: RequestInit | undefined;
    const p = provider({}, (url, init) => {
      seen = init;
      return idp.fetch(url, init);
    });
    await outcome(p, idp.issueOpaque());
    expect(seen?.method).toBe('POST');
    expect(seen?.redirect).toBe('manual');
    expect(seen?.signal).toBeInstanceOf(AbortSignal);
    expect(new Headers(seen?.headers).get('accept')).toBe('application/json');
  });

  it('builds the principal from the answer', async () => {
    const token = idp.issueOpaque(active({ scope: 'read  write read', aud: ['gw'], iss: 'https://idp' }));
    const p = (await provider().authenticate({ kind: 'bearer', token: token, hash: tokenHash(token) })) as Principal;
    expect(p).toMatchObject({
      subject: 'alice',
      scopes: ['read', 'write'],
      provider: 'opaque',
      clientId: 'app',
      expiresAtMs: (NOW + 3600) * 1000,
    });
    expect(p.claims['aud']).toEqual(['gw']);
    expect(Object.isFrozen(p) && Object.isFrozen(p.claims)).toBe(true);
  });

  it('53: a claim echoing the token is not kept in the principal (nor the cache)', async () => {
    const token = idp.issueOpaque();
    idp.setAnswer(token, active({ jti: token }));
    const p = (await provider().authenticate({ kind: 'bearer', token: token, hash: tokenHash(token) })) as Principal;
    expect(p.claims).not.toHaveProperty('jti');
    expect(JSON.stringify(p)).not.toContain(token);
  });

  it('a client-credentials answer without sub is named by client_id', async () => {
    expect(await outcome(provider(), idp.issueOpaque(active({ sub: undefined, client_id: 'svc' })))).toBe(
      'ok:svc',
    );
  });
});

describe('introspection: the answer, field by field → 401 (never cached)', () => {
  it.each([
    ['active "true" (a string)', { ...active(), active: 'true' }],
    ['active 1', { ...active(), active: 1 }],
    ['active missing', { sub: 'alice', exp: NOW + 60 }],
    ['active false', { active: false }],
    ['exp in the past', active({ exp: NOW - 1 })],
    ['exp == now', active({ exp: NOW })],
    ['exp a string', active({ exp: String(NOW + 60) })],
    ['nbf in the future', active({ nbf: NOW + 60 })],
    ['iat a string', active({ iat: 'yesterday' })],
    ['scope not a string', active({ scope: ['read'] })],
    ['client_id a number', active({ client_id: 7 })],
    ['sub a number', active({ sub: 7 })],
    ['iss an array', active({ iss: ['https://idp'] })],
    ['aud a number', active({ aud: 1 })],
    ['aud a list with a number', active({ aud: ['gw', 1] })],
    ['no sub and no client_id', active({ sub: undefined, client_id: undefined })],
    ['username an object', active({ username: {} })],
  ])('%s', async (_n, answer) => {
    const token = idp.issueOpaque(answer);
    const p = provider();
    expect(await outcome(p, token)).toBe('ERR_AUTHN_INVALID_TOKEN');
    if (answer['active'] !== false) {
      expect(await outcome(p, token)).toBe('ERR_AUTHN_INVALID_TOKEN');
      expect(idp.counts.introspection).toBe(2); // not cached: asked again
    }
  });

  it.each([
    ['aud mismatch', { audience: 'gw' }, active({ aud: 'other' }), 'ERR_AUTHN_INVALID_TOKEN'],
    ['aud missing', { audience: 'gw' }, active(), 'ERR_AUTHN_INVALID_TOKEN'],
    ['aud list containing ours', { audience: 'gw' }, active({ aud: ['other', 'gw'] }), 'ok:alice'],
    ['aud string equal', { audience: 'gw' }, active({ aud: 'gw' }), 'ok:alice'],
    ['iss mismatch', { issuer: 'https://idp' }, active({ iss: 'https://evil' }), 'ERR_AUTHN_INVALID_TOKEN'],
    ['iss missing', { issuer: 'https://idp' }, active(), 'ERR_AUTHN_INVALID_TOKEN'],
    ['iss equal', { issuer: 'https://idp' }, active({ iss: 'https://idp' }), 'ok:alice'],
  ])('configured %s → %s', async (_n, over, answer, want) => {
    expect(await outcome(provider(over), idp.issueOpaque(answer))).toBe(want);
  });
});

describe('introspection: an IdP that cannot answer → 503, never a pass, never cached', () => {
  it.each([
    ['500', '500' as const],
    ['a connection reset', 'reset' as const],
    ['HTML', 'non-json' as const],
    ['a redirect', 'redirect' as const],
    ['a 10 MB body', 'big' as const],
    ['JSON labelled text/plain', 'wrong-type' as const],
  ])('%s', async (_n, fault) => {
    const token = idp.issueOpaque();
    idp.setFault(fault, 'introspection');
    const p = provider();
    expect(await outcome(p, token)).toBe('ERR_AUTHN_UNAVAILABLE');
    expect(p.stats()).toMatchObject({ cacheEntries: 0, idpFailures: 1 });
    idp.setFault('ok', 'introspection');
    expect(await outcome(p, token)).toBe('ok:alice');
  });

  it('55: a slow IdP → 503 within the timeout, and no stale positive answer', async () => {
    const token = idp.issueOpaque();
    const p = provider({ timeoutMs: 100, cache: { maxTtlSeconds: 60 } });
    expect(await outcome(p, token)).toBe('ok:alice');
    advance(61_000);
    idp.setFault({ slowMs: 30_000 }, 'introspection');
    const started = performance.now();
    expect(await outcome(p, token)).toBe('ERR_AUTHN_UNAVAILABLE');
    expect(performance.now() - started).toBeLessThan(2_000);
  });

  it('wrong client credentials at the IdP (401) → 503, logged, not "invalid token"', async () => {
    const token = idp.issueOpaque();
    const config = introspectionProviderSchema.parse({
      type: 'introspection',
      endpoint: idp.introspectionUri,
      clientId: 'portcullis',
      clientSecretFile: '/s',
    });
    const p = createIntrospectionProvider('opaque', config, {
      clock,
      logger,
      fetch: idp.fetch,
      readFile: () => 'wrong',
    });
    expect(await outcome(p, token)).toBe('ERR_AUTHN_UNAVAILABLE');
    expect(logs.join('\n')).toMatch(/status 401/);
  });

  it('processIntrospectionResponse alone: status and content type are checked before the body', async () => {
    const expect_ = { provider: 'p', now: T0 };
    const cases: [Response, string][] = [
      [
        new Response('{"active":true,"sub":"a"}', {
          status: 201,
          headers: { 'content-type': 'application/json' },
        }),
        'ERR_AUTHN_UNAVAILABLE',
      ],
      [new Response('{"active":true,"sub":"a"}', { status: 200 }), 'ERR_AUTHN_UNAVAILABLE'],
      [
        new Response('{"error":"unsupported_token_type"}', {
          status: 400,
          headers: { 'content-type': 'application/json' },
        }),
        'ERR_AUTHN_INVALID_TOKEN',
      ],
      [
        new Response('{"error":"invalid_request"}', {
          status: 400,
          headers: { 'content-type': 'application/json' },
        }),
        'ERR_AUTHN_UNAVAILABLE',
      ],
      [
        new Response('{"error":"unsupported_token_type"}', {
          status: 400,
          headers: { 'content-type': 'text/plain' },
        }),
        'ERR_AUTHN_UNAVAILABLE',
      ],
      [
        new Response('{"error":"unsupported_token_type"}', {
          status: 500,
          headers: { 'content-type': 'application/json' },
        }),
        'ERR_AUTHN_UNAVAILABLE',
      ],
      [
        new Response('[true]', { status: 200, headers: { 'content-type': 'application/json' } }),
        'ERR_AUTHN_UNAVAILABLE',
      ],
      [
        new Response('null', { status: 200, headers: { 'content-type': 'application/json' } }),
        'ERR_AUTHN_UNAVAILABLE',
      ],
      [
        new Response('{"active":true,"sub":"a"}', {
          status: 200,
          headers: { 'content-type': 'Application/JSON; charset=UTF-8' },
        }),
        'active',
      ],
    ];
    for (const [response, want] of cases) {
      const got = await processIntrospectionResponse(response, expect_).then(
        (o) => (o.active ? 'active' : 'inactive'),
        (err: unknown) => (err as GatewayError).code,
      );
      expect(got).toBe(want);
    }
  });
});

describe('introspection: the cache — threat model #49–#57', () => {
  it('49: an entry never outlives exp (TTL = min(exp − now, maxTtl), exp re-checked)', async () => {
    const token = idp.issueOpaque(active({ exp: NOW + 2 }));
    const p = provider({ cache: { maxTtlSeconds: 60 } });
    expect(await outcome(p, token)).toBe('ok:alice');
    advance(1_999);
    expect(await outcome(p, token)).toBe('ok:alice');
    expect(idp.counts.introspection).toBe(1);
    advance(1_001);
    expect(await outcome(p, token)).toBe('ERR_AUTHN_INVALID_TOKEN');
    expect(idp.counts.introspection).toBe(2);
  });

  it('positive answers are served from cache for maxTtlSeconds, then asked again', async () => {
    const token = idp.issueOpaque();
    const p = provider({ cache: { maxTtlSeconds: 300 } });
    for (let i = 0; i < 10; i++) expect(await outcome(p, token)).toBe('ok:alice');
    advance(299_000);
    expect(await outcome(p, token)).toBe('ok:alice');
    expect(idp.counts.introspection).toBe(1);
    advance(1_000);
    expect(await outcome(p, token)).toBe('ok:alice');
    expect(idp.counts.introspection).toBe(2);
    expect(p.stats()).toMatchObject({ cacheHits: 10, cacheMisses: 2, cacheEntries: 1 });
  });

  it('50: a token revoked at the IdP stops working within maxTtl, or at once after purge(hash)', async () => {
    const a = idp.issueOpaque();
    const b = idp.issueOpaque(active({ sub: 'bob' }));
    const p = provider({ cache: { maxTtlSeconds: 30 } });
    expect(await outcome(p, a)).toBe('ok:alice');
    expect(await outcome(p, b)).toBe('ok:bob');
    idp.revoke(a);
    idp.revoke(b);
    const revokedAt = t;
    let latency = -1;
    for (let i = 0; i < 400; i++) {
      advance(100);
      if ((await outcome(p, a)) === 'ERR_AUTHN_INVALID_TOKEN') {
        latency = t - revokedAt;
        break;
      }
    }
    expect(latency).toBeGreaterThan(0);
    expect(latency).toBeLessThanOrEqual(30_000);
    // b is still cached (its TTL started at the same time); the operator purges it.
    const c = idp.issueOpaque(active({ sub: 'carol' }));
    expect(await outcome(p, c)).toBe('ok:carol');
    idp.revoke(c);
    expect(await outcome(p, c)).toBe('ok:carol');
    expect(p.purge?.(tokenHash(c))).toBe(1);
    expect(await outcome(p, c)).toBe('ERR_AUTHN_INVALID_TOKEN');
  });

  it('51: route scopes are checked on every request, cache hit or miss (Oathkeeper CVE-2021-32701)', async () => {
    const token = idp.issueOpaque(active({ scope: 'read' }));
    const p = provider();
    const readRoute = compileRoutePolicy({ scopes: ['read'] }, 'r');
    const writeRoute = compileRoutePolicy({ scopes: ['write'] }, 'w');
    const request = async (policy: typeof readRoute): Promise<string> => {
      try {
        const principal = await p.authenticate({ kind: 'bearer', token: token, hash: tokenHash(token) });
        if (principal === 'not_applicable') return principal;
        policy.check(principal);
        return 'pass';
      } catch (err) {
        return (err as GatewayError).code;
      }
    };
    expect(await request(readRoute)).toBe('pass'); // miss
    expect(await request(writeRoute)).toBe('ERR_AUTHZ_INSUFFICIENT_SCOPE'); // hit
    expect(await request(readRoute)).toBe('pass'); // hit
    expect(p.stats()).toMatchObject({ cacheHits: 2, cacheMisses: 1 });
  });

  it('53: the cache key is the hash; no token in logs, even on IdP errors', async () => {
    const tokens = [idp.issueOpaque(), idp.issueOpaque(), idp.issueOpaque()];
    const p = provider();
    await outcome(p, tokens[0]!);
    idp.setFault('500', 'introspection');
    await outcome(p, tokens[1]!);
    idp.setFault('reset', 'introspection');
    await outcome(p, tokens[2]!);
    expect(logs.length).toBeGreaterThanOrEqual(2);
    for (const token of tokens) for (const line of logs) expect(line).not.toContain(token);
    expect(p.purge?.(tokenHash(tokens[0]!))).toBe(1);
  });

  it('54: 1,000 concurrent requests with one new token make exactly one IdP call, all with the same answer', async () => {
    const token = idp.issueOpaque();
    idp.setFault({ slowMs: 100 }, 'introspection');
    const p = provider();
    const results = await Promise.all(Array.from({ length: 1000 }, () => outcome(p, token)));
    expect(idp.counts.introspection).toBe(1);
    expect(new Set(results)).toEqual(new Set(['ok:alice']));
  });

  it('54: the shared call failing fails all of them, once', async () => {
    const token = idp.issueOpaque();
    idp.setFault('500', 'introspection');
    const p = provider();
    const results = await Promise.all(Array.from({ length: 1000 }, () => outcome(p, token)));
    expect(idp.counts.introspection).toBe(1);
    expect(new Set(results)).toEqual(new Set(['ERR_AUTHN_UNAVAILABLE']));
    // The failure is not remembered: the next request asks again.
    idp.setFault('ok', 'introspection');
    expect(await outcome(p, token)).toBe('ok:alice');
    expect(idp.counts.introspection).toBe(2);
  });

  it('50: a purge during an IdP call is not undone by that call: its answer is not stored, later requests ask afresh', async () => {
    const token = idp.issueOpaque();
    // The IdP decides when the call arrives and answers 100 ms later (the answer was "active").
    const p = provider({}, (url, init) =>
      idp.fetch(url, init).then((r) => new Promise<Response>((res) => setTimeout(() => res(r), 100))),
    );
    // A call starts while the token is active...
    const first = outcome(p, token);
    await new Promise((r) => setTimeout(r, 20));
    // ...the token is revoked at the IdP and purged at the gateway while it is in flight.
    idp.revoke(token);
    p.purge?.(tokenHash(token));
    const second = outcome(p, token); // must not join the pre-purge call
    expect(await first).toBe('ok:alice'); // answers the request that was already waiting (the IdP said so)
    expect(await second).toBe('ERR_AUTHN_INVALID_TOKEN');
    expect(idp.counts.introspection).toBe(2);
    // Nothing from the pre-purge call was stored: the next request is refused.
    expect(await outcome(p, token)).toBe('ERR_AUTHN_INVALID_TOKEN');
  });

  it('a purge of everything also drops in-flight calls', async () => {
    const token = idp.issueOpaque();
    const p = provider({}, (url, init) =>
      idp.fetch(url, init).then((r) => new Promise<Response>((res) => setTimeout(() => res(r), 100))),
    );
    const first = outcome(p, token);
    await new Promise((r) => setTimeout(r, 20));
    idp.revoke(token);
    p.purge?.();
    expect(await outcome(p, token)).toBe('ERR_AUTHN_INVALID_TOKEN');
    expect(await first).toBe('ok:alice');
    expect(await outcome(p, token)).toBe('ERR_AUTHN_INVALID_TOKEN');
  });

  it('inactive answers are cached for negativeTtlSeconds only', async () => {
    const token = 'never-issued';
    const p = provider({ cache: { negativeTtlSeconds: 10 } });
    for (let i = 0; i < 5; i++) expect(await outcome(p, token)).toBe('ERR_AUTHN_INVALID_TOKEN');
    expect(idp.counts.introspection).toBe(1);
    advance(10_000);
    idp.setAnswer(token, active());
    expect(await outcome(p, token)).toBe('ok:alice');
    expect(idp.counts.introspection).toBe(2);
  });

  it('57: 100,000 distinct tokens keep the cache at maxEntries, and a hot token stays cached', async () => {
    const exp = NOW + 3600;
    let calls = 0;
    const fastIdp: FetchLike = (_url, init) => {
      calls++;
      const token = new URLSearchParams(init.body as string).get('token');
      return Promise.resolve(
        new Response(JSON.stringify({ active: true, sub: token === 'hot' ? 'hot' : 'flood', exp }), {
          status: 200,
          headers: { 'content-type': 'application/json' },
        }),
      );
    };
    // Batches of 500 at once: the call cap is raised above that here, so that every flood token reaches
    // the cache (shedding past the cap is tested on its own below).
    const p = provider({ cache: { maxEntries: 1_000 }, maxConcurrentCalls: 1_000 }, fastIdp);
    expect(await outcome(p, 'hot')).toBe('ok:hot');
    // The legitimate client uses its token once per 500 flood requests (LRU: it stays in the most-recent half).
    for (let batch = 0; batch < 200; batch++) {
      await Promise.all(Array.from({ length: 500 }, (_, i) => outcome(p, `flood-${batch}-${i}`)));
      expect(p.stats().cacheEntries).toBeLessThanOrEqual(1_000);
      expect(await outcome(p, 'hot')).toBe('ok:hot');
    }
    const stats = p.stats();
    expect(stats.cacheEntries).toBe(1_000);
    expect(stats.cacheEvictions).toBeGreaterThanOrEqual(99_000);
    expect(calls).toBe(100_001); // the hot token was asked once: every later request was a hit
  }, 60_000);

  it('maxTtlSeconds 0: no positive caching (single-flight still applies)', async () => {
    const token = idp.issueOpaque();
    const p = provider({ cache: { maxTtlSeconds: 0 } });
    await outcome(p, token);
    await outcome(p, token);
    expect(idp.counts.introspection).toBe(2);
    expect(p.stats().cacheEntries).toBe(0);
  });
});

describe('introspection: staleIfErrorSeconds (a route option, off by default)', () => {
  const setup = async (): Promise<{ p: Authenticator; token: string }> => {
    const token = idp.issueOpaque(active({ exp: NOW + 3600 }));
    const p = provider({ cache: { maxTtlSeconds: 60 } });
    expect(await outcome(p, token)).toBe('ok:alice');
    idp.setFault('500', 'introspection');
    return { p, token };
  };

  it('off by default: once stale, an unavailable IdP is a 503', async () => {
    const { p, token } = await setup();
    advance(61_000);
    expect(await outcome(p, token)).toBe('ERR_AUTHN_UNAVAILABLE');
  });

  it('serves the cached answer at most staleIfErrorSeconds past its freshness, counted and logged', async () => {
    const { p, token } = await setup();
    advance(80_000); // 20 s past freshness
    expect(await outcome(p, token, { staleIfErrorSeconds: 30 })).toBe('ok:alice');
    expect(await outcome(p, token, { staleIfErrorSeconds: 10 })).toBe('ERR_AUTHN_UNAVAILABLE');
    advance(11_000); // 31 s past
    expect(await outcome(p, token, { staleIfErrorSeconds: 30 })).toBe('ERR_AUTHN_UNAVAILABLE');
    expect(p.stats().staleServed).toBe(1);
    expect(logs.join('\n')).toMatch(/stale/);
  });

  it('never for an inactive answer, never after a purge, never past exp', async () => {
    const { p, token } = await setup();
    advance(61_000);
    p.purge?.(tokenHash(token));
    expect(await outcome(p, token, { staleIfErrorSeconds: 300 })).toBe('ERR_AUTHN_UNAVAILABLE');

    idp.setFault('ok', 'introspection');
    const short = idp.issueOpaque(active({ exp: Math.floor(t / 1000) + 70 }));
    expect(await outcome(p, short)).toBe('ok:alice');
    idp.setFault('500', 'introspection');
    advance(71_000);
    expect(await outcome(p, short, { staleIfErrorSeconds: 300 })).toBe('ERR_AUTHN_UNAVAILABLE');
  });

  it('never when the IdP said the token is inactive (only "unavailable" allows stale)', async () => {
    const { p, token } = await setup();
    idp.setFault('ok', 'introspection');
    idp.revoke(token);
    advance(61_000);
    expect(await outcome(p, token, { staleIfErrorSeconds: 300 })).toBe('ERR_AUTHN_INVALID_TOKEN');
  });
});

describe('introspection: at most maxConcurrentCalls IdP calls in flight (threat model #57, load shedding)', () => {
  /** An IdP whose answers wait until release(): every call it gets stays in flight until then. */
  function heldIdp(): { fetch: FetchLike; calls: () => number; release: () => void } {
    let calls = 0;
    const waiting: (() => void)[] = [];
    const fetch: FetchLike = (_url, init) => {
      calls++;
      const token = new URLSearchParams(init.body as string).get('token') ?? '';
      return new Promise((resolve) => {
        waiting.push(() =>
          resolve(
            new Response(JSON.stringify(active({ sub: token })), {
              status: 200,
              headers: { 'content-type': 'application/json' },
            }),
          ),
        );
      });
    };
    return { fetch, calls: () => calls, release: () => waiting.splice(0).forEach((f) => f()) };
  }

  it('past the cap a new token is refused 503 at once, without an IdP call; cached tokens still pass', async () => {
    const held = heldIdp();
    const p = provider({ maxConcurrentCalls: 3 }, held.fetch);
    // Warm one token into the cache first.
    const warm = outcome(p, 'cached-one');
    await new Promise((r) => setImmediate(r));
    held.release();
    expect(await warm).toBe('ok:cached-one');
    const first = ['a', 'b', 'c'].map((tok) => outcome(p, tok));
    await new Promise((r) => setImmediate(r));
    expect(held.calls()).toBe(4);
    // Three calls in flight: the next distinct tokens are shed, synchronously with no IdP call.
    expect(await outcome(p, 'd')).toBe('ERR_AUTHN_UNAVAILABLE');
    expect(await outcome(p, 'e')).toBe('ERR_AUTHN_UNAVAILABLE');
    expect(held.calls()).toBe(4);
    // Not a cache problem: the cached token and the tokens whose call is running are unaffected.
    expect(await outcome(p, 'cached-one')).toBe('ok:cached-one');
    const joined = outcome(p, 'b');
    held.release();
    expect(await Promise.all([...first, joined])).toEqual(['ok:a', 'ok:b', 'ok:c', 'ok:b']);
    expect(held.calls()).toBe(4);
    // The calls finished: room again.
    const again = outcome(p, 'd');
    await new Promise((r) => setImmediate(r));
    held.release();
    expect(await again).toBe('ok:d');
  });

  it('the refusal names the limit (for the access log) and never the token', async () => {
    const held = heldIdp();
    const p = provider({ maxConcurrentCalls: 1 }, held.fetch);
    const running = outcome(p, 'first-token');
    await new Promise((r) => setImmediate(r));
    const secret = 'shed-token-4f1c9e';
    let caught: unknown;
    try {
      await p.authenticate({ kind: 'bearer', token: secret, hash: tokenHash(secret) });
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(GatewayError);
    expect((caught as GatewayError).code).toBe('ERR_AUTHN_UNAVAILABLE');
    expect((caught as GatewayError).detail).toContain('maxConcurrentCalls');
    expect((caught as GatewayError).detail).not.toContain(secret);
    held.release();
    await running;
  });

  it('a failed or timed-out call frees its place too', async () => {
    let calls = 0;
    const failing: FetchLike = () => {
      calls++;
      return Promise.reject(new Error('connect ECONNREFUSED'));
    };
    const p = provider({ maxConcurrentCalls: 1 }, failing);
    for (let i = 0; i < 5; i++) {
      // Past the pause a failing IdP earns (tested below): each call here is allowed to start.
      advance(PAUSE_MAX_MS);
      expect(await outcome(p, `t${i}`)).toBe('ERR_AUTHN_UNAVAILABLE');
    }
    expect(calls).toBe(5);
  });

  it('a route with staleIfErrorSeconds gets its stale answer when the call is shed', async () => {
    const held = heldIdp();
    const p = provider({ maxConcurrentCalls: 1, cache: { maxTtlSeconds: 60 } }, held.fetch);
    const warm = outcome(p, 'stale-one');
    await new Promise((r) => setImmediate(r));
    held.release();
    expect(await warm).toBe('ok:stale-one');
    advance(61_000); // no longer fresh
    const busy = outcome(p, 'other');
    await new Promise((r) => setImmediate(r));
    expect(await outcome(p, 'stale-one')).toBe('ERR_AUTHN_UNAVAILABLE');
    expect(await outcome(p, 'stale-one', { staleIfErrorSeconds: 120 })).toBe('ok:stale-one');
    held.release();
    await busy;
  });
});

describe('introspection: an IdP that keeps failing is paused, not asked by every request (threat model #125)', () => {
  it('after two failures in a row a new token is refused at once; one probe per pause, doubling; an answer ends it', async () => {
    expect(PAUSE_AFTER_FAILURES).toBe(2);
    const good = idp.issueOpaque(active({ sub: 'bob' }));
    const p = provider();
    idp.setFault('500', 'introspection');
    expect(await outcome(p, 'n1')).toBe('ERR_AUTHN_UNAVAILABLE');
    // One failure may be a blip: the next token is still asked.
    expect(await outcome(p, 'n2')).toBe('ERR_AUTHN_UNAVAILABLE');
    expect(idp.counts.introspection).toBe(2);
    // Two in a row: paused for PAUSE_INITIAL_MS; nothing is asked meanwhile.
    expect(await outcome(p, 'n3')).toBe('ERR_AUTHN_UNAVAILABLE');
    advance(PAUSE_INITIAL_MS - 1);
    expect(await outcome(p, 'n4')).toBe('ERR_AUTHN_UNAVAILABLE');
    expect(idp.counts.introspection).toBe(2);
    expect(logs.some((l) => l.includes('the next call in'))).toBe(false); // refusals are not logged per request
    // The pause is over: one probe; it fails, so the next pause is twice as long.
    advance(1);
    expect(await outcome(p, 'n5')).toBe('ERR_AUTHN_UNAVAILABLE');
    expect(idp.counts.introspection).toBe(3);
    advance(2 * PAUSE_INITIAL_MS - 1);
    expect(await outcome(p, 'n6')).toBe('ERR_AUTHN_UNAVAILABLE');
    expect(idp.counts.introspection).toBe(3);
    // The IdP is back: the next probe gets an answer, and calls flow again at once.
    idp.setFault('ok', 'introspection');
    advance(1);
    expect(await outcome(p, good)).toBe('ok:bob');
    expect(await outcome(p, 'unknown-token')).toBe('ERR_AUTHN_INVALID_TOKEN');
    expect(await outcome(p, 'another-unknown')).toBe('ERR_AUTHN_INVALID_TOKEN');
    expect(idp.counts.introspection).toBe(6);
  });

  it('the refusal says why, without the token', async () => {
    const p = provider();
    idp.setFault('500', 'introspection');
    await outcome(p, 'a');
    await outcome(p, 'b');
    try {
      await p.authenticate({ kind: 'bearer', token: 'secret-token-value', hash: tokenHash('secret-token-value') });
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(GatewayError);
      const e = err as GatewayError;
      expect(e.code).toBe('ERR_AUTHN_UNAVAILABLE');
      expect(e.detail).toMatch(/failed 2 calls in a row; the next call in \d+ ms/);
      expect(e.detail).not.toContain('secret-token-value');
    }
  });

  it('calls cut by one outage count once: twenty failing at once do not pause the next call', async () => {
    let calls = 0;
    const cut: (() => void)[] = [];
    const outage: FetchLike = () => {
      calls++;
      return new Promise((_resolve, reject) => cut.push(() => reject(new Error('read ECONNRESET'))));
    };
    const p = provider({}, outage);
    const held = Array.from({ length: 20 }, (_, i) => outcome(p, `c${i}`));
    await new Promise((r) => setImmediate(r));
    expect(calls).toBe(20);
    cut.splice(0).forEach((f) => f());
    expect(new Set(await Promise.all(held))).toEqual(new Set(['ERR_AUTHN_UNAVAILABLE']));
    // One failure known, not twenty: the next token is still asked (and a second failure would pause).
    const next = outcome(p, 'after');
    await new Promise((r) => setImmediate(r));
    expect(calls).toBe(21);
    cut.splice(0).forEach((f) => f());
    expect(await next).toBe('ERR_AUTHN_UNAVAILABLE');
    expect(await outcome(p, 'paused-now')).toBe('ERR_AUTHN_UNAVAILABLE');
    expect(calls).toBe(21);
  });

  it('while a probe runs, other new tokens are refused; requests for the probed token join it', async () => {
    const token = idp.issueOpaque(active({ sub: 'dave' }));
    const p = provider();
    idp.setFault('500', 'introspection');
    await outcome(p, 'x1');
    await outcome(p, 'x2');
    advance(PAUSE_INITIAL_MS);
    idp.setFault({ slowMs: 30 }, 'introspection');
    const probe = outcome(p, token);
    const joined = outcome(p, token);
    expect(await outcome(p, 'someone-else')).toBe('ERR_AUTHN_UNAVAILABLE');
    expect(await Promise.all([probe, joined])).toEqual(['ok:dave', 'ok:dave']);
    expect(idp.counts.introspection).toBe(3);
  });

  it('cached tokens pass during the pause, and a route with staleIfErrorSeconds gets its stale answer', async () => {
    const fresh = idp.issueOpaque(active({ sub: 'erin' }));
    const old = idp.issueOpaque(active({ sub: 'frank', exp: NOW + 7200 }));
    const p = provider({ cache: { maxTtlSeconds: 60 } });
    expect(await outcome(p, old)).toBe('ok:frank');
    advance(59_000);
    expect(await outcome(p, fresh)).toBe('ok:erin');
    advance(2_000); // `old` is past its freshness, `fresh` is not
    idp.setFault('500', 'introspection');
    await outcome(p, 'y1');
    await outcome(p, 'y2');
    const calls = idp.counts.introspection;
    expect(await outcome(p, fresh)).toBe('ok:erin');
    expect(await outcome(p, old)).toBe('ERR_AUTHN_UNAVAILABLE');
    expect(await outcome(p, old, { staleIfErrorSeconds: 30 })).toBe('ok:frank');
    expect(idp.counts.introspection).toBe(calls);
  });

  it('a minute of outage with a new token every 10 ms asks the IdP about ten times, not six thousand', async () => {
    const p = provider();
    idp.setFault('500', 'introspection');
    let requests = 0;
    for (let ms = 0; ms < 60_000; ms += 10) {
      expect(await outcome(p, `flood-${ms}`)).toBe('ERR_AUTHN_UNAVAILABLE');
      requests++;
      advance(10);
    }
    // 2 failures, then probes after 0.5, 1, 2, 4, 8, 16 and 30 s pauses (the last is capped at PAUSE_MAX_MS).
    expect(requests).toBe(6_000);
    expect(idp.counts.introspection).toBeLessThanOrEqual(10);
    expect(idp.counts.introspection).toBeGreaterThanOrEqual(7);
  });
});

describe('introspection: config', () => {
  it('applies the documented defaults', () => {
    expect(
      introspectionProviderSchema.parse({
        type: 'introspection',
        endpoint: 'https://idp/introspect',
        clientId: 'c',
        clientSecretFile: '/s',
      }),
    ).toMatchObject({
      authMethod: 'client_secret_basic',
      timeoutMs: 2000,
      maxConcurrentCalls: 256,
      cache: { maxEntries: 100_000, maxTtlSeconds: 300, negativeTtlSeconds: 10 },
    });
  });

  it.each([
    [{ endpoint: 'http://idp.example.com/introspect' }, 'endpoint'],
    [{ endpoint: 'not a url' }, 'endpoint'],
    [{ clientId: '' }, 'clientId'],
    [{ clientSecretFile: undefined }, 'clientSecretFile'],
    [{ clientSecret: 'inline' }, ''],
    [{ authMethod: 'private_key_jwt' }, 'authMethod'],
    [{ maxConcurrentCalls: 0 }, 'maxConcurrentCalls'],
    [{ cache: { maxEntries: 0 } }, 'cache.maxEntries'],
    [{ cache: { ttl: 5 } }, 'cache'],
    [{ timeoutMs: 0 }, 'timeoutMs'],
  ])('refuses %j', (over, path) => {
    const r = introspectionProviderSchema.safeParse({
      type: 'introspection',
      endpoint: 'https://idp/i',
      clientId: 'c',
      clientSecretFile: '/s',
      ...over,
    });
    expect(r.success).toBe(false);
    expect(r.error?.issues.map((i) => i.path.join('.'))).toContain(path);
  });

  it.each([
    [
      'unreadable',
      () => {
        throw new Error('EACCES');
      },
    ],
    ['empty', () => '\n'],
  ])('an %s secret file is a ConfigError naming clientSecretFile', (_n, readFile) => {
    const config = introspectionProviderSchema.parse({
      type: 'introspection',
      endpoint: 'https://idp/i',
      clientId: 'c',
      clientSecretFile: '/s',
    });
    let err: unknown;
    try {
      createIntrospectionProvider('opaque', config, { clock, readFile });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).path).toBe('authProviders.opaque.clientSecretFile');
  });
});

describe('introspection: a wall clock stepped back or forward an hour (issue 12 point 7)', () => {
  it('(a) stepped back: an answer cached for 60 s expires after 60 s of monotonic time, not an hour later', async () => {
    const token = idp.issueOpaque(active({ exp: NOW + 3 * 3600 }));
    const p = provider({ cache: { maxTtlSeconds: 60 } });
    expect(await outcome(p, token)).toBe('ok:alice');
    stepWall(-HOUR);
    advance(59_000);
    expect(await outcome(p, token)).toBe('ok:alice');
    expect(idp.counts.introspection).toBe(1);
    advance(2_000);
    expect(await outcome(p, token)).toBe('ok:alice');
    expect(idp.counts.introspection).toBe(2);
    expect(p.stats()).toMatchObject({ cacheHits: 1, cacheMisses: 2 });
  });

  it('(a) stepped back: a cached "inactive" lasts negativeTtlSeconds of monotonic time', async () => {
    const token = idp.issueOpaque(active({ exp: NOW + 3 * 3600 }));
    idp.revoke(token);
    const p = provider({ cache: { negativeTtlSeconds: 10 } });
    expect(await outcome(p, token)).toBe('ERR_AUTHN_INVALID_TOKEN');
    idp.setAnswer(token, active({ exp: NOW + 3 * 3600 }));
    stepWall(-HOUR);
    advance(11_000);
    expect(await outcome(p, token)).toBe('ok:alice');
    expect(idp.counts.introspection).toBe(2);
  });

  it('(b) stepped forward past exp: the cached answer is not served, and not as a stale one either', async () => {
    const token = idp.issueOpaque(active({ exp: NOW + 1800 }));
    const p = provider({ cache: { maxTtlSeconds: 300 } });
    expect(await outcome(p, token)).toBe('ok:alice');
    stepWall(HOUR);
    advance(1_000);
    // The IdP is asked again, and its answer (exp now past) is refused.
    expect(await outcome(p, token)).toBe('ERR_AUTHN_INVALID_TOKEN');
    expect(idp.counts.introspection).toBe(2);
    expect(p.stats().cacheHits).toBe(0);
    // With the IdP down and staleIfError allowed: still not served.
    const other = idp.issueOpaque(active({ sub: 'bob', exp: Math.floor(t / 1000) + 1800 }));
    expect(await outcome(p, other)).toBe('ok:bob');
    idp.setFault('500', 'introspection');
    stepWall(HOUR);
    advance(1_000);
    expect(await outcome(p, other, { staleIfErrorSeconds: 300 })).toBe('ERR_AUTHN_UNAVAILABLE');
    expect(p.stats().staleServed).toBe(0);
  });

  it('(c) nbf ahead of the wall clock: refused on a cache hit, without serving or asking', async () => {
    const token = idp.issueOpaque(active({ nbf: NOW - 10, exp: NOW + 3 * 3600 }));
    const p = provider({ cache: { maxTtlSeconds: 300 } });
    expect(await outcome(p, token)).toBe('ok:alice');
    stepWall(-HOUR);
    advance(1_000);
    expect(await outcome(p, token)).toBe('ERR_AUTHN_INVALID_TOKEN');
    expect(idp.counts.introspection).toBe(1);
    expect(p.stats().cacheEntries).toBe(0);
    // Asked afresh, the IdP's answer (nbf ahead) is refused too, and nothing is cached.
    expect(await outcome(p, token)).toBe('ERR_AUTHN_INVALID_TOKEN');
    expect(idp.counts.introspection).toBe(2);
    expect(p.stats().cacheEntries).toBe(0);
  });

  it('(c) nbf ahead of the wall clock: never served as a stale answer while the IdP is down', async () => {
    const token = idp.issueOpaque(active({ nbf: NOW - 10, exp: NOW + 3 * 3600 }));
    const p = provider({ cache: { maxTtlSeconds: 60 } });
    expect(await outcome(p, token)).toBe('ok:alice');
    idp.setFault('500', 'introspection');
    stepWall(-HOUR);
    advance(61_000);
    expect(await outcome(p, token, { staleIfErrorSeconds: 300 })).toBe('ERR_AUTHN_UNAVAILABLE');
    expect(p.stats().staleServed).toBe(0);
  });

  it('(d) stepped forward, still within the lifetime and before exp: served from the cache', async () => {
    const token = idp.issueOpaque(active({ exp: NOW + 3 * 3600 }));
    const p = provider({ cache: { maxTtlSeconds: 300 } });
    expect(await outcome(p, token)).toBe('ok:alice');
    stepWall(HOUR);
    advance(10_000);
    expect(await outcome(p, token)).toBe('ok:alice');
    expect(idp.counts.introspection).toBe(1);
    expect(p.stats()).toMatchObject({ cacheHits: 1, cacheMisses: 1 });
  });

  it('staleIfError counts its window on the monotonic clock (a step forward does not cut it)', async () => {
    const token = idp.issueOpaque(active({ exp: NOW + 3 * 3600 }));
    const p = provider({ cache: { maxTtlSeconds: 60 } });
    expect(await outcome(p, token)).toBe('ok:alice');
    idp.setFault('500', 'introspection');
    stepWall(HOUR);
    advance(80_000); // 20 s past freshness
    expect(await outcome(p, token, { staleIfErrorSeconds: 30 })).toBe('ok:alice');
    expect(p.stats().staleServed).toBe(1);
  });

  it('the pause of a failing IdP lasts its monotonic duration: a step back does not stretch it to an hour', async () => {
    const good = idp.issueOpaque(active({ exp: NOW + 3 * 3600 }));
    const p = provider();
    idp.setFault('500', 'introspection');
    expect(await outcome(p, 'n1')).toBe('ERR_AUTHN_UNAVAILABLE');
    expect(await outcome(p, 'n2')).toBe('ERR_AUTHN_UNAVAILABLE');
    idp.setFault('ok', 'introspection');
    stepWall(-HOUR);
    advance(PAUSE_INITIAL_MS);
    expect(await outcome(p, good)).toBe('ok:alice');
    expect(idp.counts.introspection).toBe(3);
  });
});
