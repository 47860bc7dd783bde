/**
 * The decision listener (issue 16, points 1–3 and 5) with a raw HTTP client acting as the proxy: the real
 * gateway, a per-run PKI, the fake IdP for jwt and introspection providers. Each subrequest describes an
 * original request in the proxy's headers; the answers are 200 with identity headers, 401 with a challenge,
 * 403, a login pointer for a browser, or a 5xx while the IdP is down.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request as httpRequest, type OutgoingHttpHeaders } from 'node:http';
import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tokenHash } from '../../src/authn/bearer.js';
import { createFakeIdp, idpProviders, type FakeIdp } from '../helpers/idp.js';
import { nginxDecisionListener, startGateway, type TestGateway } from '../helpers/gateway.js';
import type { TestClientName } from '../helpers/pki.js';

const AUD = 'gw-api';
const WS_KEY = 'dGhlIHNhbXBsZSBub25jZQ==';
const DECISIONS = 'portcullis_decisions_total';

interface Answer {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
}

/** One subrequest to the decision listener on `port`, as a proxy sends it. */
function ask(port: number, headers: OutgoingHttpHeaders, path = '/decide'): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, method: 'GET', headers, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** nginx's description of `method uri` on host `host`. */
function nginx(uri: string, extra: OutgoingHttpHeaders = {}, method = 'GET', host = 'app.test'): OutgoingHttpHeaders {
  return { 'X-Original-Method': method, 'X-Original-URI': uri, 'X-Forwarded-Host': host, 'X-Forwarded-For': '203.0.113.7', ...extra };
}

/** caddy's (and traefik's) description. */
function caddy(uri: string, extra: OutgoingHttpHeaders = {}, method = 'GET'): OutgoingHttpHeaders {
  return { 'X-Forwarded-Method': method, 'X-Forwarded-Uri': uri, 'X-Forwarded-Host': 'app.test', 'X-Forwarded-For': '203.0.113.8', ...extra };
}

describe('decision listener (raw client as the proxy)', () => {
  let idp: FakeIdp;
  let gw: TestGateway;
  let token: string;
  let adminToken: string;
  let nginxPort: number;
  let caddyPort: number;
  const bearer = (t: string): OutgoingHttpHeaders => ({ Authorization: `Bearer ${t}` });
  let escaped: (name: TestClientName) => Promise<string>;
  let files: string;

  beforeAll(async () => {
    idp = await createFakeIdp();
    await idp.listen();
    token = await idp.sign({ sub: 'alice', aud: AUD, scope: 'read' });
    adminToken = await idp.sign({ sub: 'root', aud: AUD, scope: 'read admin' });
    files = await mkdtemp(join(tmpdir(), 'portcullis-decision-'));
    const secretFile = join(files, 'secret');
    await writeFile(secretFile, `${idp.clientSecret}\n`, { mode: 0o600 });
    const routes = (prefix: string) => [
      { id: `${prefix}-api`, match: { pathPrefix: '/api' }, auth: { providers: ['jwt'], scopes: ['read'] } },
      { id: `${prefix}-admin`, match: { pathPrefix: '/admin' }, auth: { providers: ['jwt'], scopes: ['admin'] } },
      { id: `${prefix}-public`, match: { pathPrefix: '/public' } },
      { id: `${prefix}-opaque`, match: { pathPrefix: '/opaque' }, auth: { providers: ['opaque'] } },
      { id: `${prefix}-app`, match: { pathPrefix: '/app' }, auth: { login: 'sso', providers: ['jwt'] } },
      { id: `${prefix}-ro`, match: { pathPrefix: '/ro' }, methods: ['GET', 'HEAD'] },
    ];
    gw = await startGateway((pki) => ({
      admin: { enabled: true, listen: '127.0.0.1:0' },
      authProviders: {
        ...idpProviders(idp, AUD, secretFile),
        // Never reached: a decision points a browser at the login path, it does not start the login.
        sso: { type: 'oidc', issuer: 'https://127.0.0.1:1/', clientId: 'portcullis', clientSecretFile: secretFile },
      },
      listeners: [
        nginxDecisionListener(pki, [
          ...routes('n'),
          { id: 'n-mtls', match: { pathPrefix: '/mtls' }, allowClients: ['CN=alice'] },
        ]),
        { name: 'caddy-decisions', protocol: 'decision', listen: '127.0.0.1:0', from: 'caddy', routes: routes('c') },
        { name: 'ingress-decisions', protocol: 'decision', listen: '127.0.0.1:0', from: 'ingress-nginx', routes: routes('i') },
      ],
    }));
    nginxPort = gw.port('nginx-decisions');
    caddyPort = gw.port('caddy-decisions');
    escaped = async (name) => encodeURIComponent(await readFile(gw.pki.clients[name].cert, 'utf8'));
  });

  afterAll(async () => {
    await gw?.close();
    await idp?.close();
    await rm(files, { recursive: true, force: true });
  });

  describe('point 1: the original request comes from the proxy’s headers and walks the same pipeline', () => {
    it('nginx: a token with the scope is allowed; the 200 carries the identity headers', async () => {
      const a = await ask(nginxPort, nginx('/api/items?x=1', { ...bearer(token), Cookie: 'a=1; __Host-portcullis=s3ss10n' }));
      expect(a.status).toBe(200);
      // What the proxy passes on of the client's credentials: no session cookie, no token (no forwardToken).
      expect(a.headers['x-portcullis-cookie']).toBe('a=1');
      expect(a.headers['x-portcullis-authorization']).toBe('');
      expect(a.headers['x-auth-subject']).toBe('alice');
      expect(a.headers['x-auth-scopes']).toBe('read');
      expect(a.headers['x-auth-provider']).toBe('jwt');
      expect(a.headers['x-request-id']).toMatch(/\S/);
    });

    it('caddy: X-Forwarded-Method and -Uri describe it', async () => {
      const a = await ask(caddyPort, caddy('/api/items', bearer(token)));
      expect(a.status).toBe(200);
      expect(a.headers['x-auth-subject']).toBe('alice');
    });

    it('ingress-nginx: X-Original-Method and the absolute X-Original-URL (its authority is the host)', async () => {
      const port = gw.port('ingress-decisions');
      const ingress = (url: string, extra: OutgoingHttpHeaders = {}): OutgoingHttpHeaders => ({
        'X-Original-Method': 'GET',
        'X-Original-URL': url,
        'X-Forwarded-For': '192.0.2.1',
        ...extra,
      });
      const a = await ask(port, ingress('https://app.test/api/items?x=1', bearer(token)));
      expect(a.status).toBe(200);
      expect(a.headers['x-auth-subject']).toBe('alice');
      expect((await ask(port, ingress('https://app.test/api/items'))).status).toBe(401);
      expect((await ask(port, ingress('https://app.test/public/../admin'))).status).toBe(401);
      // A path alone names no host: refused, never judged against another host's routes.
      expect((await ask(port, ingress('/public/x'))).status).toBe(403);
      const browser = await ask(port, ingress('https://app.test/app/x', { Accept: 'text/html' }));
      expect(browser.status).toBe(401);
      expect(browser.headers['x-portcullis-login']).toBe('/_portcullis/login?rd=%2Fapp%2Fx');
    });

    it('a route without auth is allowed with no identity', async () => {
      const a = await ask(nginxPort, nginx('/public/x'));
      expect(a.status).toBe(200);
      // Present and empty: a proxy copying it replaces the client's copy with nothing.
      expect(a.headers['x-auth-subject']).toBe('');
    });

    it('the method is the original one: POST on a GET-only route is denied (403), GET allowed', async () => {
      expect((await ask(nginxPort, nginx('/ro/x', {}, 'POST'))).status).toBe(403);
      expect((await ask(nginxPort, nginx('/ro/x', {}, 'GET'))).status).toBe(200);
    });

    it('only the configured proxy’s family is read: X-Forwarded-Uri on an nginx decision is ignored', async () => {
      const a = await ask(nginxPort, nginx('/admin/x', { 'X-Forwarded-Uri': '/public/x', 'X-Forwarded-Method': 'GET' }));
      expect(a.status).toBe(401);
      const c = await ask(caddyPort, caddy('/admin/x', { 'X-Original-URI': '/public/x' }));
      expect(c.status).toBe(401);
    });

    it('a subrequest that does not describe the request exactly once is denied', async () => {
      const before = await gw.metric('portcullis_http_denials_total', { listener: 'nginx-decisions', reason: 'ERR_DECISION_BAD_SUBREQUEST' });
      const without = (name: string): OutgoingHttpHeaders =>
        Object.fromEntries(Object.entries(nginx('/public/x')).filter(([k]) => k !== name));
      expect((await ask(nginxPort, without('X-Original-URI'))).status).toBe(403);
      expect((await ask(nginxPort, without('X-Forwarded-Host'))).status).toBe(403);
      expect((await ask(nginxPort, { ...nginx('/public/x'), 'X-Original-URI': ['/public/x', '/admin'] })).status).toBe(403);
      expect(await gw.metric('portcullis_http_denials_total', { listener: 'nginx-decisions', reason: 'ERR_DECISION_BAD_SUBREQUEST' })).toBe(before + 3);
    });

    it('an underscore variant of a describing header is refused, never read', async () => {
      expect((await ask(nginxPort, nginx('/admin/x', { X_Original_URI: '/public/x' }))).status).toBe(401);
      const a = await ask(nginxPort, nginx('/admin/x', { X_Original_URI: '/public/x', ...bearer(adminToken) }));
      expect(a.status).toBe(403);
      await expect.poll(() => gw.logs().find((l) => l.path === '/admin/x' && l.reason === 'ERR_REQUEST_BAD_HEADER')).toBeDefined();
    });

    it('the client address is the last X-Forwarded-For entry (the one the proxy appended)', async () => {
      await ask(nginxPort, nginx('/public/addr', { 'X-Forwarded-For': '10.9.9.9, 198.51.100.4' }));
      await expect
        .poll(() => gw.logs().find((l) => l.path === '/public/addr'))
        .toMatchObject({ clientAddress: '198.51.100.4', listener: 'nginx-decisions', route: 'n-public', status: 200 });
    });

    describe('a client certificate forwarded as URL-escaped PEM', () => {
      it('alice (on the allow-list): 200 with her X-Forwarded-Client-Cert', async () => {
        const a = await ask(nginxPort, nginx('/mtls/x', { 'X-SSL-Client-Cert': await escaped('alice') }));
        expect(a.status).toBe(200);
        expect(String(a.headers['x-forwarded-client-cert'])).toContain('CN=alice');
      });

      it.each([
        ['bob (not on the allow-list)', 'bob', 'ERR_AUTHZ_ROUTE_ACL'],
        ['a revoked certificate', 'revoked', 'ERR_IDENTITY_REVOKED_CLIENT_CERT'],
        ['an expired certificate', 'expired', 'ERR_IDENTITY_BAD_CLIENT_CERT'],
        ['a certificate of another CA with the same name', 'otherCaAlice', 'ERR_IDENTITY_BAD_CLIENT_CERT'],
      ] as const)('%s: 403 with its reason', async (_what, who, reason) => {
        const a = await ask(nginxPort, nginx(`/mtls/${who}`, { 'X-SSL-Client-Cert': await escaped(who) }));
        expect(a.status).toBe(403);
        await expect.poll(() => gw.logs().find((l) => l.path === `/mtls/${who}`)?.reason).toBe(reason);
      });

      it('garbage, a chain of two, or no certificate: 403', async () => {
        const two = encodeURIComponent(
          (await readFile(gw.pki.clients.alice.cert, 'utf8')) + (await readFile(gw.pki.ca, 'utf8')),
        );
        for (const value of ['not-a-cert', two]) expect((await ask(nginxPort, nginx('/mtls/x', { 'X-SSL-Client-Cert': value }))).status).toBe(403);
        expect((await ask(nginxPort, nginx('/mtls/x'))).status).toBe(403);
      });
    });
  });

  describe('point 2: the answers', () => {
    it('no credential: 401 with WWW-Authenticate', async () => {
      const a = await ask(nginxPort, nginx('/api/x'));
      expect(a.status).toBe(401);
      expect(a.headers['www-authenticate']).toMatch(/^Bearer/);
    });

    it('a bad token: 401 invalid_token; a missing scope: 403', async () => {
      const bad = await ask(nginxPort, nginx('/api/x', bearer(`${token}x`)));
      expect(bad.status).toBe(401);
      expect(bad.headers['www-authenticate']).toContain('invalid_token');
      expect((await ask(nginxPort, nginx('/admin/x', bearer(token)))).status).toBe(403);
      expect((await ask(nginxPort, nginx('/admin/x', bearer(adminToken)))).status).toBe(200);
    });

    it('a path no route covers is denied (403), counted under route none', async () => {
      const before = await gw.metric(DECISIONS, { listener: 'nginx-decisions', route: 'none', result: 'forbidden' });
      expect((await ask(nginxPort, nginx('/elsewhere', bearer(adminToken)))).status).toBe(403);
      expect(await gw.metric(DECISIONS, { listener: 'nginx-decisions', route: 'none', result: 'forbidden' })).toBe(before + 1);
    });

    it('decisions are counted by listener, route and result', async () => {
      const before = await gw.metric(DECISIONS, { listener: 'nginx-decisions', route: 'n-api', result: 'allow' });
      await ask(nginxPort, nginx('/api/count', bearer(token)));
      expect(await gw.metric(DECISIONS, { listener: 'nginx-decisions', route: 'n-api', result: 'allow' })).toBe(before + 1);
    });

    it('a browser on a login route, through nginx: 401 with the login path in X-Portcullis-Login', async () => {
      const a = await ask(nginxPort, nginx('/app/page?tab=2', { Accept: 'text/html' }));
      expect(a.status).toBe(401);
      expect(a.headers['x-portcullis-login']).toBe(`/_portcullis/login?rd=${encodeURIComponent('/app/page?tab=2')}`);
      expect(a.headers['set-cookie']).toBeUndefined();
    });

    it('a browser on a login route, through caddy: a 302 to the login path (forward_auth passes it on)', async () => {
      const a = await ask(caddyPort, caddy('/app/page', { Accept: 'text/html' }));
      expect(a.status).toBe(302);
      expect(a.headers.location).toBe(`/_portcullis/login?rd=${encodeURIComponent('/app/page')}`);
    });

    it('an API client on a login route gets 401 without a login pointer', async () => {
      const a = await ask(nginxPort, nginx('/app/page'));
      expect(a.status).toBe(401);
      expect(a.headers['x-portcullis-login']).toBeUndefined();
    });

    it('a login path itself is answered, not decided: 403', async () => {
      expect((await ask(nginxPort, nginx('/_portcullis/login?rd=/app'))).status).toBe(403);
    });

    it('an IdP outage is a 5xx, never a 200', async () => {
      const t = idp.issueOpaque();
      idp.setFault('reset', 'introspection');
      try {
        const a = await ask(nginxPort, nginx('/opaque/x', bearer(t)));
        expect(a.status).toBeGreaterThanOrEqual(500);
      } finally {
        idp.setFault('ok', 'introspection');
      }
    });

    it('a WebSocket handshake is decided as an upgrade: a good one is allowed, a malformed one denied', async () => {
      const ws = { Upgrade: 'websocket', 'Sec-WebSocket-Version': '13', 'Sec-WebSocket-Key': WS_KEY };
      expect((await ask(nginxPort, nginx('/api/socket', { ...ws, ...bearer(token) }))).status).toBe(200);
      expect((await ask(nginxPort, nginx('/api/socket', { ...ws, 'Sec-WebSocket-Key': 'short', ...bearer(token) }))).status).toBe(403);
      expect((await ask(nginxPort, nginx('/api/socket', ws))).status).toBe(401);
    });

    it('a subrequest that itself asks to upgrade (caddy keeps Upgrade) gets the decision on the raw socket', async () => {
      const head =
        'GET /decide HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n' +
        `Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${WS_KEY}\r\nX-Forwarded-Method: GET\r\nX-Forwarded-Uri: /api/ws\r\n` +
        `X-Forwarded-Host: app.test\r\nAuthorization: Bearer ${token}\r\n\r\n`;
      const raw = await new Promise<string>((resolve, reject) => {
        const s = connect({ host: '127.0.0.1', port: caddyPort }, () => s.write(head));
        let text = '';
        s.on('data', (c: Buffer) => (text += c.toString()));
        s.on('close', () => resolve(text));
        s.on('error', reject);
      });
      expect(raw).toMatch(/^HTTP\/1\.1 200 /);
      expect(raw).toMatch(/X-Auth-Subject: alice/i);
    });
  });

  describe('point 3: the decision judges exactly the path the proxy forwards', () => {
    // nginx forwards `$request_uri` as it came; each of these reaches /admin (or is refused), never /public.
    it.each([
      '/public/../admin/x',
      '/public/./../admin',
      '/public/%2e%2e/admin',
      '/public/%2E%2E/admin',
      '//admin',
      '/admin;jsessionid=1',
      '/public/..;/admin',
      '/public%2F..%2Fadmin',
      '/public/%2F../admin',
      '/public\\..\\admin',
      '/admin#/public',
    ])('%s without a credential is never allowed', async (uri) => {
      const a = await ask(nginxPort, nginx(uri));
      expect([401, 403]).toContain(a.status);
    });

    it('dot segments are resolved: /public/../admin is judged as /admin (401), not refused blindly', async () => {
      expect((await ask(nginxPort, nginx('/public/../admin/x'))).status).toBe(401);
      expect((await ask(nginxPort, nginx('/public/../admin/x', bearer(adminToken)))).status).toBe(200);
    });

    it('an absolute-form URI for another host is refused', async () => {
      expect((await ask(nginxPort, nginx('http://evil.test/public'))).status).toBe(403);
    });
  });

  describe('point 5: revocation is bounded', () => {
    it('an introspected token revoked at the IdP is allowed from the cache until POST /cache/purge, denied at once after', async () => {
      const t = idp.issueOpaque({ active: true, sub: 'dave', scope: 'read', exp: Math.floor(Date.now() / 1000) + 3600 });
      expect((await ask(nginxPort, nginx('/opaque/x', bearer(t)))).status).toBe(200);
      idp.revoke(t);
      expect((await ask(nginxPort, nginx('/opaque/x', bearer(t)))).status).toBe(200);
      const purged = await new Promise<number>((resolve, reject) => {
        const req = httpRequest(
          { host: '127.0.0.1', port: gw.app.adminPort(), path: `/cache/purge?sha256=${tokenHash(t)}`, method: 'POST' },
          (res) => {
            res.resume();
            res.on('end', () => resolve(res.statusCode ?? 0));
          },
        );
        req.on('error', reject);
        req.end();
      });
      expect(purged).toBe(200);
      expect((await ask(nginxPort, nginx('/opaque/x', bearer(t)))).status).toBe(401);
    });
  });
});
