/**
 * The `type: oidc` provider against a fake IdP in memory (injected fetch and clock): the hostile ID tokens a
 * real IdP will not mint (wrong nonce, aud, iss, key, algorithm, expiry), the callback's state checks, an IdP
 * that is down, `private_key_jwt`, session timeouts and store failures, and every check of a back-channel
 * logout token (signature, iss, aud, iat, events, nonce, sid or sub, jti replay).
 */
import { generateKeyPairSync } from 'node:crypto';
import { exportJWK, generateKeyPair, jwtVerify, createLocalJWKSet, SignJWT, type CryptoKey, type JWK } from 'jose';
import { beforeEach, describe, expect, it } from 'vitest';
import { createOidcProvider, type LoginProvider, type LoginSite } from '../../../src/authn/oidc.js';
import { oidcProviderSchema } from '../../../src/authn/provider-config.js';
import type { SessionCredential } from '../../../src/authn/credential.js';
import { tokenHash } from '../../../src/authn/bearer.js';
import { GatewayError } from '../../../src/errors.js';
import type { KeyValueStore } from '../../../src/store/store.js';

const ISSUER = 'https://idp.example';
const SITE: LoginSite = { listener: 'web', origin: 'https://gw.example' };

interface FakeIdp {
  key: CryptoKey;
  jwk: JWK;
  /** Claims of the next ID token (given the nonce of the login), or a whole id_token string. */
  idToken: (nonce: string) => Promise<string>;
  tokenStatus: number;
  down: boolean;
  tokenRequests: URLSearchParams[];
  nonce: string;
}

async function sign(key: CryptoKey, claims: Record<string, unknown>, alg = 'ES256', kid = 'k1'): Promise<string> {
  return new SignJWT(claims).setProtectedHeader({ alg, kid }).sign(key);
}

/** How far the test clock is ahead of the real one: the fake IdP mints its times on the same clock. */
let offset = 0;

function clock(): { now: () => number; hrtime: () => bigint; advance: (ms: number) => void } {
  offset = 0;
  return {
    now: () => Date.now() + offset,
    hrtime: () => process.hrtime.bigint() + BigInt(offset) * 1_000_000n,
    advance: (ms) => (offset += ms),
  };
}

async function fakeIdp(): Promise<FakeIdp & { fetch: (url: string, init: RequestInit) => Promise<Response> }> {
  const { privateKey, publicKey } = await generateKeyPair('ES256');
  const jwk = { ...(await exportJWK(publicKey)), kid: 'k1', alg: 'ES256', use: 'sig' };
  const idp: FakeIdp & { fetch: (url: string, init: RequestInit) => Promise<Response> } = {
    key: privateKey,
    jwk,
    nonce: '',
    idToken: (nonce) =>
      sign(privateKey, { iss: ISSUER, aud: 'gw', sub: 'alice', nonce, sid: 'sid-1', groups: ['a'], iat: now(), exp: now() + 300 }),
    tokenStatus: 200,
    down: false,
    tokenRequests: [],
    async fetch(url, init) {
      if (idp.down) throw new TypeError('fetch failed');
      const json = (status: number, body: unknown): Response =>
        new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json' } });
      if (url === `${ISSUER}/.well-known/openid-configuration`)
        return json(200, {
          issuer: ISSUER,
          authorization_endpoint: `${ISSUER}/auth`,
          token_endpoint: `${ISSUER}/token`,
          jwks_uri: `${ISSUER}/jwks`,
          end_session_endpoint: `${ISSUER}/logout`,
          code_challenge_methods_supported: ['S256'],
          id_token_signing_alg_values_supported: ['ES256', 'RS256'],
        });
      if (url === `${ISSUER}/jwks`) return json(200, { keys: [jwk] });
      if (url === `${ISSUER}/token`) {
        const body = new URLSearchParams(init.body as URLSearchParams);
        idp.tokenRequests.push(body);
        if (idp.tokenStatus !== 200) return json(idp.tokenStatus, { error: 'invalid_grant' });
        return json(200, {
          access_token: `at-${idp.tokenRequests.length}`,
          token_type: 'Bearer',
          expires_in: 600,
          refresh_token: `rt-${idp.tokenRequests.length}`,
          scope: 'openid groups',
          id_token: await idp.idToken(idp.nonce),
        });
      }
      return json(404, {});
    },
  };
  return idp;
}

const now = (): number => Math.floor((Date.now() + offset) / 1000);

function provider(
  idp: Awaited<ReturnType<typeof fakeIdp>>,
  c: ReturnType<typeof clock>,
  extra: Record<string, unknown> = {},
  deps: { store?: KeyValueStore; readFile?: (p: string) => string } = {},
): LoginProvider {
  const config = oidcProviderSchema.parse({
    type: 'oidc',
    issuer: ISSUER,
    clientId: 'gw',
    clientSecretFile: '/secret',
    session: { idleTimeoutSeconds: 600, absoluteTimeoutSeconds: 3600 },
    ...extra,
  });
  return createOidcProvider('sso', config, {
    clock: c,
    fetch: idp.fetch,
    readFile: deps.readFile ?? (() => 'the-secret\n'),
    ...(deps.store !== undefined ? { store: deps.store } : {}),
  });
}

/** A login up to the callback: the pre-login cookie id and the state and nonce the IdP was given. */
async function begin(p: LoginProvider, idp: FakeIdp): Promise<{ cookie: string; state: string }> {
  const step = await p.beginLogin(SITE, '/app?x=1');
  const url = new URL(step.location);
  idp.nonce = url.searchParams.get('nonce') ?? '';
  const cookie = /^__Host-portcullis-login=([^;]+)/.exec(step.cookies[0] ?? '')?.[1] ?? '';
  return { cookie, state: url.searchParams.get('state') ?? '' };
}

function credential(sessionCookie: string, site = SITE): SessionCredential {
  const id = /^__Host-portcullis=([^;]+)/.exec(sessionCookie)?.[1] ?? '';
  return { kind: 'session', hash: tokenHash(id), id, ...site };
}

async function codeOf(err: Promise<unknown>): Promise<string> {
  try {
    await err;
  } catch (e) {
    return e instanceof GatewayError ? e.code : `not a GatewayError: ${String(e)}`;
  }
  return 'resolved';
}

describe('oidc login: the callback', () => {
  let idp: Awaited<ReturnType<typeof fakeIdp>>;
  let c: ReturnType<typeof clock>;
  let p: LoginProvider;
  beforeEach(async () => {
    idp = await fakeIdp();
    c = clock();
    p = provider(idp, c);
  });

  it('exchanges the code with the PKCE verifier, verifies the ID token and makes a session of its claims', async () => {
    const { cookie, state } = await begin(p, idp);
    const step = await p.finishLogin(SITE, new URLSearchParams({ code: 'c1', state }), cookie);
    expect(step.location).toBe('/app?x=1');
    const req = idp.tokenRequests[0];
    expect(req?.get('grant_type')).toBe('authorization_code');
    expect(req?.get('code_verifier')).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(req?.get('redirect_uri')).toBe('https://gw.example/_portcullis/callback');
    const principal = await p.authenticate(credential(step.cookies[0] ?? ''));
    expect(principal).toMatchObject({ subject: 'alice', provider: 'sso', scopes: ['openid', 'groups'] });
    expect(principal !== 'not_applicable' && principal.claims.groups).toEqual(['a']);
    expect(await p.authenticate({ kind: 'bearer', token: 't', hash: tokenHash('t') })).toBe('not_applicable');
  });

  const claims = (over: Record<string, unknown>) => (nonce: string) =>
    sign(idp.key, { iss: ISSUER, aud: 'gw', sub: 'alice', nonce, iat: now(), exp: now() + 300, ...over });

  it.each<[string, () => (nonce: string) => Promise<string>]>([
    ['a wrong nonce', () => claims({ nonce: 'not-the-one' })],
    ['no nonce', () => claims({ nonce: undefined })],
    ['a wrong aud', () => claims({ aud: 'someone-else' })],
    ['a wrong iss', () => claims({ iss: 'https://evil.example' })],
    ['an expired ID token', () => claims({ iat: now() - 7200, exp: now() - 3600 })],
    [
      'a signature by another key',
      () => async (nonce) => {
        const other = (await generateKeyPair('ES256')).privateKey;
        return sign(other, { iss: ISSUER, aud: 'gw', sub: 'alice', nonce, iat: now(), exp: now() + 300 });
      },
    ],
    [
      'alg none',
      () => (nonce) => {
        const enc = (o: object): string => Buffer.from(JSON.stringify(o)).toString('base64url');
        return Promise.resolve(
          `${enc({ alg: 'none' })}.${enc({ iss: ISSUER, aud: 'gw', sub: 'alice', nonce, iat: now(), exp: now() + 300 })}.`,
        );
      },
    ],
  ])('refuses an ID token with %s (ERR_LOGIN_REJECTED, no session)', async (_name, make) => {
    idp.idToken = make();
    const { cookie, state } = await begin(p, idp);
    expect(await codeOf(p.finishLogin(SITE, new URLSearchParams({ code: 'c', state }), cookie))).toBe('ERR_LOGIN_REJECTED');
    expect(await p.activeSessions()).toBe(0);
  });

  it('refuses a missing cookie, a foreign state, a replay and another listener (ERR_LOGIN_BAD_STATE)', async () => {
    const a = await begin(p, idp);
    const b = await begin(p, idp);
    const q = (state: string): URLSearchParams => new URLSearchParams({ code: 'c', state });
    expect(await codeOf(p.finishLogin(SITE, q(a.state), undefined))).toBe('ERR_LOGIN_BAD_STATE');
    expect(await codeOf(p.finishLogin(SITE, q(b.state), a.cookie))).toBe('ERR_LOGIN_BAD_STATE');
    // a's record was used by that attempt: a replay of its own state finds nothing either.
    expect(await codeOf(p.finishLogin(SITE, q(a.state), a.cookie))).toBe('ERR_LOGIN_BAD_STATE');
    expect(await codeOf(p.finishLogin({ ...SITE, listener: 'other' }, q(b.state), b.cookie))).toBe('ERR_LOGIN_BAD_STATE');
    expect(idp.tokenRequests).toHaveLength(0);
  });

  it('answers an IdP error on the callback, a refused code and an IdP that is down', async () => {
    const x = await begin(p, idp);
    expect(await codeOf(p.finishLogin(SITE, new URLSearchParams({ error: 'access_denied', state: x.state }), x.cookie))).toBe(
      'ERR_LOGIN_REJECTED',
    );
    idp.tokenStatus = 400;
    const y = await begin(p, idp);
    expect(await codeOf(p.finishLogin(SITE, new URLSearchParams({ code: 'reused', state: y.state }), y.cookie))).toBe(
      'ERR_LOGIN_REJECTED',
    );
    idp.tokenStatus = 200;
    const z = await begin(p, idp);
    idp.down = true;
    expect(await codeOf(p.finishLogin(SITE, new URLSearchParams({ code: 'c', state: z.state }), z.cookie))).toBe(
      'ERR_AUTHN_UNAVAILABLE',
    );
    const fresh = provider(idp, c);
    expect(await codeOf(fresh.beginLogin(SITE, '/'))).toBe('ERR_AUTHN_UNAVAILABLE');
    expect(fresh.readiness()).toMatch(/discovery failed/);
  });

  it('authenticates to the token endpoint with private_key_jwt', async () => {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const pem = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    const pk = provider(idp, c, { clientSecretFile: undefined, privateKeyFile: '/key.pem', privateKeyId: 'gw-key' }, { readFile: () => pem });
    const { cookie, state } = await begin(pk, idp);
    await pk.finishLogin(SITE, new URLSearchParams({ code: 'c', state }), cookie);
    const req = idp.tokenRequests[0];
    expect(req?.get('client_assertion_type')).toBe('urn:ietf:params:oauth:client-assertion-type:jwt-bearer');
    const jwks = createLocalJWKSet({ keys: [{ ...publicKey.export({ format: 'jwk' }), kid: 'gw-key' }] });
    const { payload, protectedHeader } = await jwtVerify(req?.get('client_assertion') ?? '', jwks, { issuer: 'gw', subject: 'gw' });
    expect(protectedHeader).toMatchObject({ alg: 'ES256', kid: 'gw-key' });
    expect(payload.jti).toBeTypeOf('string');
    expect(req?.get('client_secret')).toBeNull();
  });
});

describe('oidc sessions', () => {
  let idp: Awaited<ReturnType<typeof fakeIdp>>;
  let c: ReturnType<typeof clock>;
  let p: LoginProvider;
  let session: string;
  beforeEach(async () => {
    idp = await fakeIdp();
    c = clock();
    p = provider(idp, c);
    const { cookie, state } = await begin(p, idp);
    session = (await p.finishLogin(SITE, new URLSearchParams({ code: 'c', state }), cookie)).cookies[0] ?? '';
  });

  it('ends a session idle longer than its idle timeout', async () => {
    c.advance(599_000);
    expect(await p.authenticate(credential(session))).toMatchObject({ subject: 'alice' });
    c.advance(601_000);
    expect(await codeOf(p.authenticate(credential(session)))).toBe('ERR_AUTHN_SESSION_ENDED');
  });

  it('ends a session at its absolute timeout, however busy', async () => {
    for (let i = 0; i < 11; i++) {
      c.advance(300_000);
      // Refreshes keep the access token alive in between (its own expiry is 600 s).
      expect(await codeOf(p.authenticate(credential(session)))).toBe('resolved');
    }
    // 3300 s used so far; the absolute timeout is 3600 s.
    c.advance(400_000);
    expect(await codeOf(p.authenticate(credential(session)))).toBe('ERR_AUTHN_SESSION_ENDED');
  });

  it('is no session on another listener or origin', async () => {
    expect(await codeOf(p.authenticate(credential(session, { ...SITE, listener: 'other' })))).toBe('ERR_AUTHN_SESSION_ENDED');
    expect(await codeOf(p.authenticate(credential(session, { ...SITE, origin: 'https://gw.example:8443' })))).toBe(
      'ERR_AUTHN_SESSION_ENDED',
    );
  });

  it('keeps sessions when a flood of started logins fills the pending-login bound', async () => {
    const q = provider(idp, c, { session: { idleTimeoutSeconds: 600, absoluteTimeoutSeconds: 3600, maxSessions: 2, maxPendingLogins: 5 } });
    const { cookie, state } = await begin(q, idp);
    const mine = (await q.finishLogin(SITE, new URLSearchParams({ code: 'c', state }), cookie)).cookies[0] ?? '';
    const first = await begin(q, idp);
    for (let i = 0; i < 50; i++) await q.beginLogin(SITE, '/');
    expect(await codeOf(q.authenticate(credential(mine)))).toBe('resolved');
    // The oldest pending login was pushed out: its callback starts again.
    expect(await codeOf(q.finishLogin(SITE, new URLSearchParams({ code: 'c', state: first.state }), first.cookie))).toBe(
      'ERR_LOGIN_BAD_STATE',
    );
  });

  it('fails closed when the store cannot be read', async () => {
    const broken: KeyValueStore = {
      get: () => Promise.reject(new Error('store down')),
      getMany: () => Promise.reject(new Error('store down')),
      set: () => Promise.resolve(),
      add: () => Promise.resolve(true),
      delete: () => Promise.resolve(true),
      deleteIfEquals: () => Promise.resolve(true),
      addToSet: () => Promise.resolve(),
      members: () => Promise.resolve([]),
      count: () => Promise.resolve(0),
    };
    const q = provider(idp, c, {}, { store: broken });
    expect(await codeOf(q.authenticate(credential(session)))).toBe('ERR_AUTHN_SESSION_ENDED');
  });

  it('refreshes shortly before the access token expires, once for concurrent requests, keeping the rotated token', async () => {
    c.advance(550_000);
    const before = idp.tokenRequests.length;
    const all = await Promise.all(Array.from({ length: 20 }, () => p.authenticate(credential(session))));
    expect(all.every((r) => r !== 'not_applicable' && r.subject === 'alice')).toBe(true);
    expect(idp.tokenRequests.length - before).toBe(1);
    expect(idp.tokenRequests.at(-1)?.get('refresh_token')).toBe('rt-1');
    c.advance(550_000 - 1_000);
    await p.authenticate(credential(session));
    // The second refresh presents the rotated token of the first.
    expect(idp.tokenRequests.at(-1)?.get('refresh_token')).toBe('rt-2');
  });

  it('ends the session when the IdP refuses the refresh; keeps it while the IdP is down and the token lives', async () => {
    c.advance(550_000);
    idp.down = true;
    expect(await codeOf(p.authenticate(credential(session)))).toBe('resolved');
    c.advance(60_000);
    expect(await codeOf(p.authenticate(credential(session)))).toBe('ERR_AUTHN_UNAVAILABLE');
    idp.down = false;
    idp.tokenStatus = 400;
    expect(await codeOf(p.authenticate(credential(session)))).toBe('ERR_AUTHN_SESSION_ENDED');
    idp.tokenStatus = 200;
    expect(await codeOf(p.authenticate(credential(session)))).toBe('ERR_AUTHN_SESSION_ENDED');
  });
});

describe('oidc back-channel logout', () => {
  let idp: Awaited<ReturnType<typeof fakeIdp>>;
  let p: LoginProvider;
  let sessions: string[];
  const EVENT = { 'http://schemas.openid.net/event/backchannel-logout': {} };
  beforeEach(async () => {
    idp = await fakeIdp();
    p = provider(idp, clock());
    sessions = [];
    for (let i = 0; i < 2; i++) {
      const { cookie, state } = await begin(p, idp);
      sessions.push((await p.finishLogin(SITE, new URLSearchParams({ code: 'c', state }), cookie)).cookies[0] ?? '');
    }
  });

  const logoutToken = (over: Record<string, unknown> = {}, key?: CryptoKey): Promise<string> =>
    sign(key ?? idp.key, { iss: ISSUER, aud: 'gw', iat: now(), jti: `j-${Math.random()}`, events: EVENT, sid: 'sid-1', ...over });

  it('ends every session of the sid, and of the sub', async () => {
    expect(await p.backchannelLogout(await logoutToken())).toBe(2);
    for (const s of sessions) expect(await codeOf(p.authenticate(credential(s)))).toBe('ERR_AUTHN_SESSION_ENDED');
    const { cookie, state } = await begin(p, idp);
    const third = (await p.finishLogin(SITE, new URLSearchParams({ code: 'c', state }), cookie)).cookies[0] ?? '';
    expect(await p.backchannelLogout(await logoutToken({ sid: undefined, sub: 'alice' }))).toBe(1);
    expect(await codeOf(p.authenticate(credential(third)))).toBe('ERR_AUTHN_SESSION_ENDED');
  });

  it.each<[string, () => Promise<string>]>([
    ['another key', async () => logoutToken({}, (await generateKeyPair('ES256')).privateKey)],
    ['a wrong iss', () => logoutToken({ iss: 'https://evil.example' })],
    ['a wrong aud', () => logoutToken({ aud: 'someone-else' })],
    ['no iat', () => logoutToken({ iat: undefined })],
    ['an old iat', () => logoutToken({ iat: now() - 3600 })],
    ['no events', () => logoutToken({ events: undefined })],
    ['another event', () => logoutToken({ events: { 'urn:other': {} } })],
    ['a nonce (an ID token)', () => logoutToken({ nonce: 'n' })],
    ['neither sid nor sub', () => logoutToken({ sid: undefined })],
    ['no jti', () => logoutToken({ jti: undefined })],
    ['garbage', () => Promise.resolve('not.a.jwt')],
  ])('refuses a logout token with %s and ends nothing', async (_name, make) => {
    expect(await codeOf(p.backchannelLogout(await make()))).toBe('ERR_LOGOUT_BAD_TOKEN');
    for (const s of sessions) expect(await codeOf(p.authenticate(credential(s)))).toBe('resolved');
  });

  it('refuses a replayed jti', async () => {
    const token = await logoutToken({ sid: 'other-sid' });
    expect(await p.backchannelLogout(token)).toBe(0);
    expect(await codeOf(p.backchannelLogout(token))).toBe('ERR_LOGOUT_BAD_TOKEN');
  });
});
