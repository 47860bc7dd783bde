/**
 * Browser single sign-on against a REAL OpenID provider (issue 15): `oidc-provider` 9 in process, its
 * development login form driven over HTTP (the Chromium suite drives it with a real browser). The gateway is
 * configured through YAML like any user's: a `type: oidc` provider and routes with `auth.login`.
 *
 * Login (code + PKCE S256, state, nonce, pre-login cookie), the session cookie's form, identity headers and
 * cookie stripping upstream, claims policy on a session principal, Bearer next to the login, refresh (single
 * flight, rotation, fail closed), logout (RP-initiated, back-channel from the IdP), and the hostile cases: a
 * replayed or foreign state, a reused code, a return to another origin, a cookie from another listener, a
 * tampered cookie, a session used after logout. Every denial asserts that the upstream saw nothing.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadOidcProvider } from '../helpers/oidc.js';
import { driveIdpLogin, endIdpSession, ssoProvider, startLoginIdp, untilLoginRedirects, WEB, type LoginIdp } from '../helpers/idp-login.js';
import { startGateway, type TestGateway } from '../helpers/gateway.js';
import { startUpstream, type SeenRequest, type TestUpstream } from '../helpers/upstream.js';
import { h1, type Reply } from '../helpers/clients.js';
import { tokenCreate } from '../../src/commands/token.js';
import { readFileSync } from 'node:fs';
import WebSocket from 'ws';

const Provider = await loadOidcProvider('test/integration/login.test.ts');

const HTML = 'text/html,application/xhtml+xml';

function header(seen: SeenRequest | undefined, name: string): string[] {
  const out: string[] = [];
  for (let i = 0; seen !== undefined && i + 1 < seen.rawHeaders.length; i += 2)
    if ((seen.rawHeaders[i] as string).toLowerCase() === name) out.push(seen.rawHeaders[i + 1] as string);
  return out;
}

function setCookies(r: Reply): string[] {
  const v = r.headers['set-cookie'];
  return v === undefined ? [] : Array.isArray(v) ? v : [v];
}

/** `name=value` of the Set-Cookie line for `name`. */
function cookieOf(r: Reply, name: string): string | undefined {
  const line = setCookies(r).find((c) => c.startsWith(`${name}=`));
  return line?.split(';')[0];
}

describe.skipIf(Provider === undefined)('browser login against a real oidc-provider 9', () => {
  let idp: LoginIdp;
  let up: TestUpstream;
  let gw: TestGateway;
  let files: string;
  let apiToken: string;
  let origin: string;

  const get = async (
    path: string,
    headers: Record<string, string> = {},
    listener = 'main',
    method = 'GET',
  ): Promise<{ reply: Reply; seen: SeenRequest | undefined }> => {
    const before = up.seen.length;
    const reply = await h1(gw.port(listener), gw.pki, { client: undefined, path, method, headers });
    return { reply, seen: up.seen.length > before ? up.seen.at(-1) : undefined };
  };

  /** A full login as `user` from `path`: returns the session cookie (`name=value`) and the final redirect. */
  async function login(user: string, path = '/app/page?x=1', listener = 'main'): Promise<{ cookie: string; location: string }> {
    const start = await get(path, { accept: HTML }, listener);
    expect(start.reply.status).toBe(302);
    const pre = cookieOf(start.reply, '__Host-portcullis-login');
    const callback = await driveIdpLogin(start.reply.headers.location as string, user);
    const back = await get(new URL(callback).pathname + new URL(callback).search, { accept: HTML, cookie: pre ?? '' }, listener);
    expect(back.reply.status, back.reply.body).toBe(302);
    const cookie = cookieOf(back.reply, '__Host-portcullis');
    if (cookie === undefined) throw new Error('no session cookie');
    return { cookie, location: back.reply.headers.location as string };
  }

  beforeAll(async () => {
    up = await startUpstream();
    files = await mkdtemp(join(tmpdir(), 'portcullis-login-'));
    const tokensFile = join(files, 'tokens.json');
    apiToken = (await tokenCreate({ file: tokensFile, name: 'ci', expiresInSeconds: 3600 })).token;
    // The IdP listens first (the gateway needs its issuer); its provider is made once the gateway's
    // origins (its redirect URIs) are known.
    idp = await startLoginIdp(Provider!);
    const routes = (suffix: string): Record<string, unknown>[] => [
      {
        id: `app${suffix}`,
        match: { pathPrefix: '/app' },
        upstream: up.url,
        auth: { login: 'sso', claims: { groups: ['data-science'] } },
      },
      { id: `api${suffix}`, match: { pathPrefix: '/api' }, upstream: up.url, auth: { login: 'sso', providers: ['ci-tokens'] } },
      { id: `mail${suffix}`, match: { pathPrefix: '/mail' }, upstream: up.url, auth: { login: 'sso', scopes: ['groups'], emailDomains: ['example.com'] } },
      { id: `corp${suffix}`, match: { pathPrefix: '/corp' }, upstream: up.url, auth: { login: 'sso', emailDomains: ['corp.example'] } },
      { id: `acl${suffix}`, match: { pathPrefix: '/acl' }, upstream: up.url, allowClients: ['CN=alice'], auth: { login: 'sso' } },
      { id: `open${suffix}`, match: { pathPrefix: '/' }, upstream: up.url },
    ];
    gw = await startGateway((pki) => {
      idp.trust(pki.ca);
      // Client certificates are optional: browsers have none, the ACL route asks for one.
      const tls = { cert: pki.server.cert, key: pki.server.key, clientCertificate: 'optional', clientCa: pki.ca };
      return {
        authProviders: {
          sso: ssoProvider(idp),
          'ci-tokens': { type: 'static', tokensFile },
        },
        listeners: [
          { name: 'main', listen: '127.0.0.1:0', tls, routes: routes('') },
          { name: 'other', listen: '127.0.0.1:0', tls, routes: routes('-other') },
        ],
      };
    });
    origin = `https://localhost:${gw.port('main')}`;
    await idp.configure([origin, `https://localhost:${gw.port('other')}`], 62);
    await untilLoginRedirects(async () => (await get('/app/', { accept: HTML })).reply.status);
  });

  afterAll(async () => {
    await gw?.close();
    await idp?.close();
    await up?.close();
    if (files) await rm(files, { recursive: true, force: true });
  });

  it('sends a browser without a session to the IdP: code flow, PKCE S256, state, nonce, a pre-login cookie', async () => {
    const { reply, seen } = await get('/app/page?x=1', { accept: HTML });
    expect(reply.status).toBe(302);
    expect(seen).toBeUndefined();
    const to = new URL(reply.headers.location as string);
    expect(to.origin).toBe(idp.issuer);
    expect(to.searchParams.get('response_type')).toBe('code');
    expect(to.searchParams.get('code_challenge_method')).toBe('S256');
    expect(to.searchParams.get('code_challenge')).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(to.searchParams.get('state')).toMatch(/^[A-Za-z0-9_-]{20,}$/);
    expect(to.searchParams.get('nonce')).toMatch(/^[A-Za-z0-9_-]{20,}$/);
    expect(to.searchParams.get('redirect_uri')).toBe(`${origin}/_portcullis/callback`);
    const pre = setCookies(reply).find((c) => c.startsWith('__Host-portcullis-login='));
    expect(pre).toMatch(/^__Host-portcullis-login=[A-Za-z0-9_-]{43}; Path=\/; Secure; HttpOnly; SameSite=Lax; Max-Age=600$/);
  });

  it('answers a request that is not a browser navigation with 401, never a redirect', async () => {
    for (const headers of [{}, { accept: 'application/json' }]) {
      const { reply, seen } = await get('/app/page', headers);
      expect(reply.status).toBe(401);
      expect(reply.headers.location).toBeUndefined();
      expect(seen).toBeUndefined();
    }
    const post = await get('/app/page', { accept: HTML }, 'main', 'POST');
    expect(post.reply.status).toBe(401);
  });

  it('logs in, returns to the original URL, and forwards with identity headers and without its cookies', async () => {
    const { cookie, location } = await login('alice');
    expect(location).toBe(`${origin}/app/page?x=1`);
    expect(cookie.length).toBeLessThan(1024);
    expect(cookie).toMatch(/^__Host-portcullis=[A-Za-z0-9_-]{43}$/);
    const { reply, seen } = await get('/app/page?x=1', { accept: HTML, cookie: `theme=dark; ${cookie}; lang=en` });
    expect(reply.status).toBe(200);
    expect(header(seen, 'x-auth-subject')).toEqual(['alice']);
    expect(header(seen, 'x-auth-provider')).toEqual(['sso']);
    expect(header(seen, 'cookie')).toEqual(['theme=dark; lang=en']);
    // On a route without auth too: the cookie goes to every path of the host, the upstream never gets it.
    const open = await get('/public', { cookie: `${cookie}; __Host-portcullis-login=${'x'.repeat(43)}; a=1` });
    expect(open.reply.status).toBe(200);
    expect(header(open.seen, 'cookie')).toEqual(['a=1']);
    const only = await get('/public', { cookie });
    expect(header(only.seen, 'cookie')).toEqual([]);
    // The access log carries a hash prefix of the session, never the cookie.
    const line = gw.logs().findLast((l) => l.route === 'app' && l.status === 200);
    expect(line?.tokenHash).toMatch(/^[0-9a-f]{12}$/);
    expect(JSON.stringify(gw.logs())).not.toContain(cookie.split('=')[1]);
  });

  it('applies the route claims to a session principal (403 for a person outside the group)', async () => {
    const { cookie } = await login('mallory');
    const { reply, seen } = await get('/app/page', { cookie });
    expect(reply.status).toBe(403);
    expect(seen).toBeUndefined();
  });

  it('applies scopes, email domains and client-certificate ACLs to session principals', async () => {
    const { cookie } = await login('alice');
    expect((await get('/mail/inbox', { cookie })).reply.status).toBe(200);
    const corp = await get('/corp/x', { cookie });
    expect(corp.reply.status).toBe(403);
    expect(corp.seen).toBeUndefined();
    // The route's ACL: no certificate, or another person's, is refused whatever the session says.
    expect((await get('/acl/x', { cookie })).reply.status).toBe(403);
    const asBob = await h1(gw.port(), gw.pki, { client: 'bob', path: '/acl/x', headers: { cookie } });
    expect(asBob.status).toBe(403);
    const asAlice = await h1(gw.port(), gw.pki, { client: 'alice', path: '/acl/x', headers: { cookie } });
    expect(asAlice.status).toBe(200);
  });

  it('keeps Bearer tokens working on the login route for API clients', async () => {
    const ok = await get('/api/v1', { authorization: `Bearer ${apiToken}` });
    expect(ok.reply.status).toBe(200);
    expect(header(ok.seen, 'x-auth-subject')).toEqual(['ci']);
    // A Bearer token that fails is a 401, even for a browser: a token is never swapped for a login.
    const bad = await get('/api/v1', { authorization: 'Bearer pcs_nope', accept: HTML });
    expect(bad.reply.status).toBe(401);
    // The session works on the same route.
    const { cookie } = await login('alice', '/api/v1');
    expect((await get('/api/v1', { cookie })).reply.status).toBe(200);
    // A route with a login and no Bearer providers recognises no token.
    expect((await get('/app/page', { authorization: `Bearer ${apiToken}` })).reply.status).toBe(401);
  });

  it('refuses a replayed callback, a foreign state and a reused code', async () => {
    const start = await get('/app/x', { accept: HTML });
    const pre = cookieOf(start.reply, '__Host-portcullis-login') ?? '';
    const callback = new URL(await driveIdpLogin(start.reply.headers.location as string, 'alice'));
    const path = callback.pathname + callback.search;
    const first = await get(path, { cookie: pre, accept: HTML });
    expect(first.reply.status).toBe(302);
    // Replay: the pre-login record was used once.
    const replay = await get(path, { cookie: pre, accept: HTML });
    expect(replay.reply.status).toBe(400);
    expect(cookieOf(replay.reply, '__Host-portcullis')).toBeUndefined();
    // Foreign state: another browser's pre-login cookie with this browser's callback.
    const other = await get('/app/y', { accept: HTML });
    const otherPre = cookieOf(other.reply, '__Host-portcullis-login') ?? '';
    const foreign = await get(path, { cookie: otherPre, accept: HTML });
    expect(foreign.reply.status).toBe(400);
    // The code again, with a state that is this (new) browser's own: the IdP refuses the code.
    const third = await get('/app/z', { accept: HTML });
    const thirdPre = cookieOf(third.reply, '__Host-portcullis-login') ?? '';
    const state = new URL(third.reply.headers.location as string).searchParams.get('state') ?? '';
    const reused = await get(`/_portcullis/callback?code=${callback.searchParams.get('code') ?? ''}&state=${state}&iss=${encodeURIComponent(idp.issuer)}`, {
      cookie: thirdPre,
      accept: HTML,
    });
    expect(reused.reply.status).toBe(401);
    expect(cookieOf(reused.reply, '__Host-portcullis')).toBeUndefined();
    expect(await gw.metric('portcullis_sessions_logins_total', { result: 'bad_state' })).toBeGreaterThanOrEqual(2);
  });

  it('never returns to another origin', async () => {
    for (const rd of ['https://evil.example/steal', '//evil.example/', '/\\evil.example', '/%09/evil.example']) {
      const start = await get(`/_portcullis/login?rd=${encodeURIComponent(rd)}`, { accept: HTML });
      expect(start.reply.status).toBe(302);
      const pre = cookieOf(start.reply, '__Host-portcullis-login') ?? '';
      const callback = new URL(await driveIdpLogin(start.reply.headers.location as string, 'alice'));
      const back = await get(callback.pathname + callback.search, { cookie: pre });
      expect(back.reply.status).toBe(302);
      expect(new URL(back.reply.headers.location as string).origin).toBe(origin);
    }
  });

  it('refuses a cookie from another listener and a tampered cookie', async () => {
    const { cookie } = await login('alice');
    const other = await get('/app/page', { cookie, accept: HTML }, 'other');
    expect(other.reply.status).toBe(302);
    expect(other.seen).toBeUndefined();
    const api = await get('/app/page', { cookie }, 'other');
    expect(api.reply.status).toBe(401);
    const value = cookie.split('=')[1] ?? '';
    const tampered = `__Host-portcullis=${value.slice(0, -1)}${value.endsWith('A') ? 'B' : 'A'}`;
    const t = await get('/app/page', { cookie: tampered });
    expect(t.reply.status).toBe(401);
    expect(t.seen).toBeUndefined();
  });

  it('refreshes once for 20 parallel requests at expiry, honours rotation, and keeps the session', async () => {
    const { cookie } = await login('alice');
    for (let round = 0; round < 2; round++) {
      // The access token lives 62 s and is refreshed 60 s before: due after 2 s.
      await new Promise((r) => setTimeout(r, 2_300));
      const before = idp.grants.get('refresh_token') ?? 0;
      const replies = await Promise.all(Array.from({ length: 20 }, () => get('/app/page', { cookie })));
      expect(replies.map((r) => r.reply.status)).toEqual(Array(20).fill(200));
      expect((idp.grants.get('refresh_token') ?? 0) - before).toBe(1);
    }
    expect(await gw.metric('portcullis_sessions_refreshes_total', { result: 'success' })).toBeGreaterThanOrEqual(2);
  });

  it('ends the session when a refresh is refused: the browser logs in again, an API request gets 401', async () => {
    const { cookie } = await login('alice');
    await new Promise((r) => setTimeout(r, 2_300));
    idp.refuseRefresh = true;
    try {
      const browser = await get('/app/page', { cookie, accept: HTML });
      expect(browser.reply.status).toBe(302);
      expect(new URL(browser.reply.headers.location as string).origin).toBe(idp.issuer);
      expect(browser.seen).toBeUndefined();
      const api = await get('/app/page', { cookie });
      expect(api.reply.status).toBe(401);
    } finally {
      idp.refuseRefresh = false;
    }
  });

  it('logs out (RP-initiated at the IdP), and the session is dead afterwards', async () => {
    const { cookie } = await login('alice');
    const active = await gw.metric('portcullis_sessions_active', { provider: 'sso' });
    expect(active).toBeGreaterThanOrEqual(1);
    const userLogouts = await gw.metric('portcullis_sessions_logouts_total', { provider: 'sso', kind: 'user' });
    const out = await get('/_portcullis/logout', { cookie, accept: HTML });
    expect(out.reply.status).toBe(302);
    const to = new URL(out.reply.headers.location as string);
    expect(to.origin).toBe(idp.issuer);
    expect(to.searchParams.get('post_logout_redirect_uri')).toBe(`${origin}/_portcullis/logged-out`);
    expect(to.searchParams.get('id_token_hint')).toMatch(/^ey/);
    expect(setCookies(out.reply)).toContain('__Host-portcullis=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0');
    const after = await get('/app/page', { cookie });
    expect(after.reply.status).toBe(401);
    expect(after.seen).toBeUndefined();
    expect(await gw.metric('portcullis_sessions_active', { provider: 'sso' })).toBe(active - 1);
    expect(await gw.metric('portcullis_sessions_logouts_total', { provider: 'sso', kind: 'user' })).toBe(userLogouts + 1);
    expect(await gw.metric('portcullis_sessions_logins_total', { provider: 'sso', result: 'success' })).toBeGreaterThanOrEqual(1);
    // No secret in any log line so far: no client secret, no JWT (ID tokens), no session id.
    const logs = JSON.stringify(gw.logs());
    expect(logs).not.toContain(WEB.secret);
    expect(logs).not.toMatch(/eyJ[A-Za-z0-9_-]{10,}\.eyJ/);
    expect(logs).not.toContain(cookie.split('=')[1]);
    const page = await get('/_portcullis/logged-out', { accept: HTML });
    expect(page.reply.status).toBe(200);
    expect(page.reply.headers['content-security-policy']).toContain("default-src 'none'");
  });

  it('ends every session of a person when the IdP sends a back-channel logout', async () => {
    const jar = new (await import('../helpers/idp-login.js')).Jar();
    // Two sessions of one IdP session (one browser, two logins), then the IdP ends its session.
    const start = await get('/app/a', { accept: HTML });
    const pre = cookieOf(start.reply, '__Host-portcullis-login') ?? '';
    const cb = new URL(await driveIdpLogin(start.reply.headers.location as string, 'bob', jar));
    const s1 = cookieOf((await get(cb.pathname + cb.search, { cookie: pre })).reply, '__Host-portcullis') ?? '';
    const start2 = await get('/app/b', { accept: HTML });
    const pre2 = cookieOf(start2.reply, '__Host-portcullis-login') ?? '';
    const cb2 = new URL(await driveIdpLogin(start2.reply.headers.location as string, 'bob', jar));
    const s2 = cookieOf((await get(cb2.pathname + cb2.search, { cookie: pre2 })).reply, '__Host-portcullis') ?? '';
    expect((await get('/app/page', { cookie: s1 })).reply.status).toBe(200);
    expect((await get('/app/page', { cookie: s2 })).reply.status).toBe(200);
    // Log out at the IdP (its end-session confirmation form): it POSTs a logout token to the gateway.
    expect([302, 303]).toContain(await endIdpSession(idp.issuer, jar));
    const deadline = Date.now() + 5_000;
    while (Date.now() < deadline && (await get('/app/page', { cookie: s1 })).reply.status === 200)
      await new Promise((r) => setTimeout(r, 100));
    expect((await get('/app/page', { cookie: s1 })).reply.status).toBe(401);
    expect((await get('/app/page', { cookie: s2 })).reply.status).toBe(401);
    expect(await gw.metric('portcullis_sessions_logouts_total', { kind: 'backchannel' })).toBeGreaterThanOrEqual(2);
  });

  /** Opens a WebSocket through the gateway with `headers`; resolves with the echo of one message or the refusal status. */
  function openSocket(headers: Record<string, string>): Promise<{ status: number; echo?: string }> {
    return new Promise((resolve) => {
      const ws = new WebSocket(`wss://localhost:${gw.port('main')}/app/ws`, {
        ca: readFileSync(gw.pki.ca),
        headers,
        // The Origin header is the one the test gives (or none): ws would otherwise send none either.
      });
      ws.on('open', () => ws.send('ping'));
      ws.on('message', (data: Buffer) => {
        resolve({ status: 101, echo: data.toString() });
        ws.close();
      });
      ws.on('unexpected-response', (_req, res) => {
        resolve({ status: res.statusCode ?? 0 });
        res.resume();
      });
      ws.on('error', () => resolve({ status: 0 }));
    });
  }

  it('opens a WebSocket with the session cookie from its own origin, and refuses another origin (403)', async () => {
    const { cookie } = await login('alice');
    expect(await openSocket({ cookie, origin })).toEqual({ status: 101, echo: 'ping' });
    const before = up.seen.length;
    expect((await openSocket({ cookie, origin: 'https://evil.example' })).status).toBe(403);
    expect((await openSocket({ cookie, origin: `https://localhost:${gw.port('other')}` })).status).toBe(403);
    expect((await openSocket({ cookie })).status).toBe(403);
    expect((await openSocket({ origin })).status).toBe(401);
    expect(up.seen.length).toBe(before);
  });

  it('answers a browser’s refusal with a short HTML page: login link, request id, CSP, nosniff, no details', async () => {
    const { cookie } = await login('mallory');
    const { reply } = await get('/app/page?q=1', { cookie, accept: HTML, 'x-request-id': 'req-12345' });
    expect(reply.status).toBe(403);
    expect(reply.headers['content-type']).toBe('text/html; charset=utf-8');
    expect(reply.headers['content-security-policy']).toContain("default-src 'none'");
    expect(reply.headers['x-content-type-options']).toBe('nosniff');
    expect(reply.body).toContain('href="/_portcullis/login?rd=%2Fapp%2Fpage%3Fq%3D1"');
    expect(reply.body).toContain('req-12345');
    // The registry's generic sentence only: not the claim that failed, the person, or the cookie.
    expect(reply.body).not.toMatch(/groups|data-science|mallory|signature/i);
    expect(reply.body).not.toContain(cookie.split('=')[1]);
    const replay = await get('/_portcullis/callback?code=x&state=y', { accept: HTML });
    expect(replay.reply.status).toBe(400);
    expect(replay.reply.body).toContain('Log in');
    // An API client keeps the plain text answer.
    expect((await get('/app/page', { cookie })).reply.headers['content-type']).toBe('text/plain; charset=utf-8');
  });
});

describe('browser login while the IdP cannot be reached', () => {
  let gw: TestGateway;
  let files: string;

  beforeAll(async () => {
    files = await mkdtemp(join(tmpdir(), 'portcullis-login-down-'));
    const secretFile = join(files, 'client-secret');
    await writeFile(secretFile, 'secret\n', { mode: 0o600 });
    gw = await startGateway((pki) => ({
      authProviders: {
        // Port 9 (discard) on loopback: nothing listens, every discovery fails at once.
        sso: { type: 'oidc', issuer: 'http://127.0.0.1:9', clientId: 'gw', clientSecretFile: secretFile },
      },
      listeners: [
        {
          name: 'main',
          listen: '127.0.0.1:0',
          tls: { cert: pki.server.cert, key: pki.server.key, clientCertificate: 'none' },
          routes: [{ id: 'app', match: { pathPrefix: '/' }, upstream: 'builtin:echo', auth: { login: 'sso' } }],
        },
      ],
    }));
  });

  afterAll(async () => {
    await gw?.close();
    if (files) await rm(files, { recursive: true, force: true });
  });

  it('answers a browser with a 503 page (no redirect, no detail), an API client with 401, and is not ready', async () => {
    const page = await h1(gw.port(), gw.pki, { client: undefined, path: '/status', headers: { accept: HTML } });
    expect(page.status).toBe(503);
    expect(page.headers.location).toBeUndefined();
    expect(page.headers['content-type']).toBe('text/html; charset=utf-8');
    expect(page.headers['content-security-policy']).toContain("default-src 'none'");
    expect(page.headers['x-content-type-options']).toBe('nosniff');
    expect(page.body).toContain('Log in');
    expect(page.body).not.toMatch(/127\.0\.0\.1|discovery|ECONNREFUSED/);
    const api = await h1(gw.port(), gw.pki, { client: undefined, path: '/status' });
    expect(api.status).toBe(401);
    expect(gw.app.notReady().join('\n')).toMatch(/authProviders\.sso: discovery failed/);
  });
});
