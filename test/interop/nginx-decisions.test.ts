/**
 * Debian's nginx in front, Portcullis deciding (issue 16, points 2–5): deploy/nginx/portcullis.conf as shipped
 * (paths and ports replaced), `auth_request` + `auth_request_set`, with and without nginx caching decisions,
 * before a recording upstream. Every refusal asserts that the upstream saw nothing; a browser without a session
 * is sent to the IdP through nginx, logs in, and is refused again once logged out.
 */
import { readFile } from 'node:fs/promises';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createFakeIdp, idpProviders, type FakeIdp } from '../helpers/idp.js';
import { nginxDecisionListener, startGateway, type TestGateway } from '../helpers/gateway.js';
import { startUpstream, type SeenRequest, type TestUpstream } from '../helpers/upstream.js';
import { h1, rawTls, type Reply } from '../helpers/clients.js';
import {
  missing,
  NGINX,
  rawStatus,
  seenHeader,
  startNginx,
  webSocketThrough,
  writeNginx,
  type FrontProxy,
} from '../helpers/front-proxy.js';
import { loadOidcProvider } from '../helpers/oidc.js';
import { driveIdpLogin, ssoProvider, startLoginIdp, untilLoginRedirects, type LoginIdp } from '../helpers/idp-login.js';

const AUD = 'gw-api';
const HTML = 'text/html,application/xhtml+xml';
const skip = missing(NGINX);
const Provider = skip === undefined ? await loadOidcProvider('test/interop/nginx-decisions.test.ts') : undefined;


function cookieOf(r: Reply, name: string): string | undefined {
  const v = r.headers['set-cookie'];
  const lines = v === undefined ? [] : Array.isArray(v) ? v : [v];
  return lines.find((c) => c.startsWith(`${name}=`))?.split(';')[0];
}

describe.skipIf(skip !== undefined)('nginx auth_request in front of a decision listener', () => {
  let idp: FakeIdp;
  let login: LoginIdp | undefined;
  let up: TestUpstream;
  let gw: TestGateway;
  let files: string;
  let token: string;
  let adminToken: string;
  const proxies: Record<'cached' | 'uncached', FrontProxy | undefined> = { cached: undefined, uncached: undefined };

  beforeAll(async () => {
    idp = await createFakeIdp();
    await idp.listen();
    token = await idp.sign({ sub: 'alice', aud: AUD, scope: 'read' });
    adminToken = await idp.sign({ sub: 'root', aud: AUD, scope: 'read admin' });
    up = await startUpstream();
    files = await mkdtemp(join(tmpdir(), 'portcullis-nginx-it-'));
    const secretFile = join(files, 'secret');
    await writeFile(secretFile, `${idp.clientSecret}\n`, { mode: 0o600 });
    if (Provider !== undefined) login = await startLoginIdp(Provider);
    gw = await startGateway((pki) => {
      login?.trust(pki.ca);
      return {
        admin: { enabled: true, listen: '127.0.0.1:0' },
        authProviders: {
          ...idpProviders(idp, AUD, secretFile),
          ...(login !== undefined ? { sso: ssoProvider(login) } : {}),
        },
        listeners: [
          nginxDecisionListener(pki, [
            { id: 'api', match: { pathPrefix: '/api' }, auth: { providers: ['jwt', 'opaque'], scopes: ['read'] } },
            { id: 'admin', match: { pathPrefix: '/admin' }, auth: { providers: ['jwt'], scopes: ['admin'] } },
            { id: 'fwd', match: { pathPrefix: '/fwd' }, auth: { providers: ['jwt'], forwardToken: true } },
            { id: 'ws', match: { pathPrefix: '/ws' }, auth: { providers: ['jwt'] } },
            { id: 'mtls', match: { pathPrefix: '/mtls' }, allowClients: ['CN=alice'] },
            ...(login !== undefined ? [{ id: 'app', match: { pathPrefix: '/app' }, auth: { login: 'sso' } }] : []),
            { id: 'public', match: { pathPrefix: '/public' } },
          ]),
        ],
      };
    });
    const o = { pki: gw.pki, decisionPort: gw.port('nginx-decisions'), upstreamPort: up.port };
    proxies.uncached = await startNginx({ ...o, cache: false });
    proxies.cached = await startNginx({ ...o, cache: true });
    if (login !== undefined) {
      await login.configure(
        [`https://localhost:${proxies.uncached.port}`, `https://localhost:${proxies.cached.port}`],
        3600,
      );
      // The gateway's discovery failed while the IdP had no provider yet; it retries after its backoff.
      const port = proxies.uncached.port;
      await untilLoginRedirects(
        async () => (await h1(port, gw.pki, { client: undefined, path: '/_portcullis/login?rd=/app', headers: { accept: HTML } })).status,
      );
    }
  }, 60_000);

  afterAll(async () => {
    await proxies.cached?.close();
    await proxies.uncached?.close();
    await gw?.close();
    await idp?.close();
    await login?.close();
    await up?.close();
    if (files) await rm(files, { recursive: true, force: true });
  });

  /** One request through nginx (`which`), with what the upstream saw of it. */
  async function via(
    which: 'cached' | 'uncached',
    path: string,
    headers: Record<string, string> = {},
    client?: 'alice' | 'bob' | 'revoked',
  ): Promise<{ reply: Reply; seen: SeenRequest | undefined }> {
    const proxy = proxies[which] as FrontProxy;
    const before = up.seen.length;
    const reply = await h1(proxy.port, gw.pki, { client, path, headers });
    return { reply, seen: up.seen.length > before ? up.seen.at(-1) : undefined };
  }

  it('the example passes nginx -t with its paths replaced', async () => {
    const { dir, conf } = await writeNginx(
      { pki: gw.pki, decisionPort: gw.port('nginx-decisions'), upstreamPort: up.port, cache: true },
      1,
    );
    try {
      const t = spawnSync(NGINX, ['-t', '-e', join(dir, 'error.log'), '-p', dir, '-c', conf], { encoding: 'utf8' });
      expect(t.status, t.stderr).toBe(0);
      expect(t.stderr).toMatch(/test is successful/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  describe.each(['uncached', 'cached'] as const)('nginx %s', (which) => {
    it('allowed: the upstream gets the identity from auth_request_set, not the token nor the client’s copies', async () => {
      const { reply, seen } = await via(which, '/api/items?x=1', {
        authorization: `Bearer ${token}`,
        'x-auth-subject': 'admin',
        'x-original-uri': '/public',
        cookie: 'theme=dark; __Host-portcullis=stolen',
      });
      expect(reply.status, proxies[which]?.log().slice(-3000)).toBe(200);
      expect(seen?.url).toBe('/api/items?x=1');
      expect(seenHeader(seen, 'x-auth-subject')).toEqual(['alice']);
      expect(seenHeader(seen, 'x-auth-scopes')).toEqual(['read']);
      expect(seenHeader(seen, 'x-auth-provider')).toEqual(['jwt']);
      expect(seenHeader(seen, 'authorization')).toEqual([]);
      expect(seenHeader(seen, 'cookie')).toEqual(['theme=dark']);
      expect(seenHeader(seen, 'x-original-uri')).toEqual([]);
    });

    it('forwardToken: true: the upstream gets the Authorization header', async () => {
      const { reply, seen } = await via(which, '/fwd/x', { authorization: `Bearer ${token}` });
      expect(reply.status).toBe(200);
      expect(seenHeader(seen, 'authorization')).toEqual([`Bearer ${token}`]);
    });

    it('a public route: the client’s X-Auth-* never reaches the upstream', async () => {
      const { reply, seen } = await via(which, '/public/p', { 'x-auth-subject': 'admin', 'x-auth-scopes': 'admin' });
      expect(reply.status).toBe(200);
      expect(seenHeader(seen, 'x-auth-subject')).toEqual([]);
      expect(seenHeader(seen, 'x-auth-scopes')).toEqual([]);
    });

    it('no token: 401 with the Bearer challenge; the upstream saw nothing', async () => {
      const { reply, seen } = await via(which, '/api/x');
      expect(reply.status).toBe(401);
      expect(String(reply.headers['www-authenticate'])).toMatch(/^Bearer/);
      expect(seen).toBeUndefined();
    });

    it('a missing scope: 403; a path no route covers: 403; the upstream saw nothing', async () => {
      const scope = await via(which, '/admin/x', { authorization: `Bearer ${token}` });
      expect(scope.reply.status).toBe(403);
      expect(scope.seen).toBeUndefined();
      const none = await via(which, '/nowhere', { authorization: `Bearer ${adminToken}` });
      expect(none.reply.status).toBe(403);
      expect(none.seen).toBeUndefined();
    });

    it('a client’s X-Original-URI cannot make a protected path look public', async () => {
      const { reply, seen } = await via(which, '/admin/x', { 'x-original-uri': '/public/x', 'x-original-method': 'GET' });
      expect(reply.status).toBe(401);
      expect(seen).toBeUndefined();
    });

    it.each([
      '/public/../admin/x',
      '/public/%2e%2e/admin/x',
      '/public//../admin/x',
      '//admin/x',
      '/admin;x=1',
      '/public/..;/admin/x',
      '/public%2F..%2Fadmin/x',
      '/public/%2F/../../admin/x',
    ])('the path nginx forwards is the path judged: %s without a token never reaches the upstream', async (uri) => {
      const proxy = proxies[which] as FrontProxy;
      const before = up.seen.length;
      expect([400, 401, 403]).toContain(await rawStatus(proxy.port, gw.pki, uri));
      expect(up.seen.length).toBe(before);
    });

    it('dot segments: /public/../admin with the admin token is judged as /admin and allowed', async () => {
      const proxy = proxies[which] as FrontProxy;
      const raw = await rawTls(
        proxy.port,
        gw.pki,
        `GET /public/../admin/y HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${adminToken}\r\nConnection: close\r\n\r\n`,
        { client: undefined, servername: 'localhost' },
      );
      expect(raw.text).toMatch(/^HTTP\/1\.1 200 /);
    });

    it('client certificates through ssl_verify_client: alice allowed with her XFCC, bob 403, none 403', async () => {
      const alice = await via(which, '/mtls/a', {}, 'alice');
      expect(alice.reply.status).toBe(200);
      expect(seenHeader(alice.seen, 'x-forwarded-client-cert')[0]).toContain('CN=alice');
      expect(seenHeader(alice.seen, 'x-ssl-client-cert')).toEqual([]);
      const bob = await via(which, '/mtls/b', {}, 'bob');
      expect(bob.reply.status).toBe(403);
      expect(bob.seen).toBeUndefined();
      const none = await via(which, '/mtls/c');
      expect(none.reply.status).toBe(403);
      expect(none.seen).toBeUndefined();
    });

    it('a revoked certificate is refused by nginx’s own CRL check before any decision', async () => {
      const { reply, seen } = await via(which, '/public/r', {}, 'revoked');
      expect(reply.status).toBe(400);
      expect(seen).toBeUndefined();
    });

    it('a WebSocket upgrade authorized by a decision reaches the upstream and echoes; without a token it does not', async () => {
      const proxy = proxies[which] as FrontProxy;
      const open = (headers: Record<string, string>): Promise<{ status?: number; echo?: string }> =>
        webSocketThrough(proxy.port, gw.pki, headers);
      const before = up.seen.length;
      expect(await open({})).toEqual({ status: 401 });
      expect(up.seen.length).toBe(before);
      expect(await open({ authorization: `Bearer ${token}` })).toEqual({ echo: 'ping' });
      expect(seenHeader(up.seen.at(-1), 'x-auth-subject')).toEqual(['alice']);
    });
  });

  it('an IdP outage is a 5xx through nginx, never a 200', async () => {
    const t = idp.issueOpaque();
    idp.setFault('reset', 'introspection');
    try {
      const { reply, seen } = await via('uncached', '/api/down', { authorization: `Bearer ${t}` });
      expect(reply.status).toBeGreaterThanOrEqual(500);
      expect(seen).toBeUndefined();
    } finally {
      idp.setFault('ok', 'introspection');
    }
  });

  it('revocation: uncached, POST /cache/purge takes effect at once; cached, within the 10 s decision TTL', async () => {
    const t = idp.issueOpaque({ active: true, sub: 'erin', scope: 'read', exp: Math.floor(Date.now() / 1000) + 3600 });
    const auth = { authorization: `Bearer ${t}` };
    expect((await via('uncached', '/api/rev', auth)).reply.status).toBe(200);
    expect((await via('cached', '/api/rev', auth)).reply.status).toBe(200);
    idp.revoke(t);
    const purge = await fetch(`http://127.0.0.1:${gw.app.adminPort()}/cache/purge`, { method: 'POST' });
    expect(purge.status).toBe(200);
    const uncached = await via('uncached', '/api/rev', auth);
    expect(uncached.reply.status).toBe(401);
    expect(uncached.seen).toBeUndefined();
    // nginx still holds the allowed decision for this credential and request line: the documented bound.
    expect((await via('cached', '/api/rev', auth)).reply.status).toBe(200);
    await new Promise((r) => setTimeout(r, 11_000));
    const later = await via('cached', '/api/rev', auth);
    expect(later.reply.status).toBe(401);
    expect(later.seen).toBeUndefined();
  }, 30_000);

  describe.skipIf(Provider === undefined)('browser login through nginx', () => {
    it('no session: nginx sends the browser to the login path, Portcullis to the IdP; logged in, the upstream gets the person; logged out, refused again', async () => {
      const proxy = proxies.uncached as FrontProxy;
      const origin = `https://localhost:${proxy.port}`;
      const first = await via('uncached', '/app/page?x=1', { accept: HTML });
      expect(first.reply.status).toBe(302);
      expect(first.seen).toBeUndefined();
      expect(first.reply.headers.location).toMatch(/\/_portcullis\/login\?rd=%2Fapp%2Fpage%3Fx%3D1$/);
      const loginPath = new URL(first.reply.headers.location as string, origin);
      const start = await via('uncached', loginPath.pathname + loginPath.search, { accept: HTML });
      expect(start.reply.status).toBe(302);
      const to = new URL(start.reply.headers.location as string);
      expect(to.origin).toBe(login?.issuer);
      expect(to.searchParams.get('redirect_uri')).toBe(`${origin}/_portcullis/callback`);
      const pre = cookieOf(start.reply, '__Host-portcullis-login');
      expect(pre).toBeDefined();
      const callback = new URL(await driveIdpLogin(to.href, 'alice'));
      const back = await via('uncached', callback.pathname + callback.search, { accept: HTML, cookie: pre ?? '' });
      expect(back.reply.status, back.reply.body).toBe(302);
      const session = cookieOf(back.reply, '__Host-portcullis');
      expect(session).toBeDefined();
      const page = await via('uncached', '/app/page?x=1', { accept: HTML, cookie: session ?? '' });
      expect(page.reply.status).toBe(200);
      expect(seenHeader(page.seen, 'x-auth-subject')).toEqual(['alice']);
      expect(seenHeader(page.seen, 'cookie')).toEqual([]);
      const out = await via('uncached', '/_portcullis/logout', { cookie: session ?? '' });
      expect(out.reply.status).toBe(302);
      const after = await via('uncached', '/app/page?x=1', { cookie: session ?? '' });
      expect(after.reply.status).toBe(401);
      expect(after.seen).toBeUndefined();
    }, 30_000);
  });

  it('the decision listener logs each decision with the original path and the client address nginx saw', async () => {
    await via('uncached', '/public/logged');
    await expect
      .poll(() => gw.logs().find((l) => l.path === '/public/logged'))
      .toMatchObject({ listener: 'nginx-decisions', route: 'public', clientAddress: '127.0.0.1', status: 200 });
    expect(await readFile(join((proxies.uncached as FrontProxy).dir, 'access.log'), 'utf8')).toContain('/public/logged');
  });
});
