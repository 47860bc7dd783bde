/**
 * Debian's caddy in front, Portcullis deciding (issue 16, points 2–4): deploy/caddy/Caddyfile as shipped
 * (paths and ports replaced), `forward_auth` with `copy_headers`, before a recording upstream. Caddy checks
 * no CRL: the client certificate it forwards (base64 DER) is checked again, CRL included, by the decision.
 * Every refusal asserts that the upstream saw nothing.
 */
import { spawnSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createFakeIdp, idpProviders, type FakeIdp } from '../helpers/idp.js';
import { startGateway, type TestGateway } from '../helpers/gateway.js';
import { startUpstream, type SeenRequest, type TestUpstream } from '../helpers/upstream.js';
import { h1, type Reply } from '../helpers/clients.js';
import type { TestClientName } from '../helpers/pki.js';
import {
  CADDY,
  caddyEnv,
  missing,
  rawStatus,
  seenHeader,
  startCaddy,
  webSocketThrough,
  writeCaddy,
  type FrontProxy,
} from '../helpers/front-proxy.js';

const AUD = 'gw-api';
const skip = missing(CADDY);


describe.skipIf(skip !== undefined)('caddy forward_auth in front of a decision listener', () => {
  let idp: FakeIdp;
  let up: TestUpstream;
  let gw: TestGateway;
  let caddy: FrontProxy;
  let files: string;
  let token: string;

  beforeAll(async () => {
    idp = await createFakeIdp();
    await idp.listen();
    token = await idp.sign({ sub: 'alice', aud: AUD, scope: 'read' });
    up = await startUpstream();
    files = await mkdtemp(join(tmpdir(), 'portcullis-caddy-it-'));
    const secretFile = join(files, 'secret');
    await writeFile(secretFile, `${idp.clientSecret}\n`, { mode: 0o600 });
    gw = await startGateway((pki) => ({
      authProviders: {
        ...idpProviders(idp, AUD, secretFile),
        // Never reached: a decision sends a browser to the login path, it does not start the login itself.
        sso: { type: 'oidc', issuer: 'https://127.0.0.1:1/', clientId: 'portcullis', clientSecretFile: secretFile },
      },
      listeners: [
        {
          name: 'caddy-decisions',
          protocol: 'decision',
          listen: '127.0.0.1:0',
          from: 'caddy',
          clientCertificateHeader: 'X-SSL-Client-Cert',
          clientCa: pki.ca,
          crl: pki.crl,
          routes: [
            { id: 'api', match: { pathPrefix: '/api' }, auth: { providers: ['jwt'], scopes: ['read'] } },
            { id: 'admin', match: { pathPrefix: '/admin' }, auth: { providers: ['jwt'], scopes: ['admin'] } },
            { id: 'ws', match: { pathPrefix: '/ws' }, auth: { providers: ['jwt'] } },
            { id: 'mtls', match: { pathPrefix: '/mtls' }, allowClients: ['CN=alice'] },
            { id: 'app', match: { pathPrefix: '/app' }, auth: { login: 'sso' } },
            { id: 'public', match: { pathPrefix: '/public' } },
          ],
        },
      ],
    }));
    caddy = await startCaddy({ pki: gw.pki, decisionPort: gw.port('caddy-decisions'), upstreamPort: up.port });
  }, 60_000);

  afterAll(async () => {
    await caddy?.close();
    await gw?.close();
    await idp?.close();
    await up?.close();
    if (files) await rm(files, { recursive: true, force: true });
  });

  async function via(
    path: string,
    headers: Record<string, string> = {},
    client?: TestClientName,
  ): Promise<{ reply: Reply; seen: SeenRequest | undefined }> {
    const before = up.seen.length;
    const reply = await h1(caddy.port, gw.pki, { client, path, headers });
    return { reply, seen: up.seen.length > before ? up.seen.at(-1) : undefined };
  }

  it('the example adapts and validates with its paths replaced', async () => {
    const { dir, file } = await writeCaddy({ pki: gw.pki, decisionPort: 1, upstreamPort: 2 }, 3);
    try {
      const v = spawnSync(CADDY, ['validate', '--config', file, '--adapter', 'caddyfile'], { encoding: 'utf8', env: { ...process.env, ...caddyEnv(dir) } });
      expect(v.status, v.stderr).toBe(0);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('allowed: copy_headers hands the identity to the upstream; the token, the session cookie and the client’s copies do not', async () => {
    const { reply, seen } = await via('/api/items?x=1', {
      authorization: `Bearer ${token}`,
      'x-auth-subject': 'admin',
      'x-forwarded-uri': '/public',
      cookie: 'theme=dark; __Host-portcullis=stolen',
    });
    expect(reply.status, caddy.log().slice(-2000)).toBe(200);
    expect(seen?.url).toBe('/api/items?x=1');
    expect(seenHeader(seen, 'x-auth-subject')).toEqual(['alice']);
    expect(seenHeader(seen, 'x-auth-provider')).toEqual(['jwt']);
    // Caddy sets a header the decision sent empty to the empty value: nothing of the token.
    expect(seenHeader(seen, 'authorization').filter((v) => v !== '')).toEqual([]);
    expect(seenHeader(seen, 'cookie')).toEqual(['theme=dark']);
    expect(seenHeader(seen, 'x-portcullis-cookie')).toEqual([]);
  });

  it('a public route: the client’s X-Auth-* never reaches the upstream', async () => {
    const { reply, seen } = await via('/public/p', { 'x-auth-subject': 'admin', 'x-auth-scopes': 'admin' });
    expect(reply.status).toBe(200);
    expect(seenHeader(seen, 'x-auth-subject').filter((v) => v !== '')).toEqual([]);
    expect(seenHeader(seen, 'x-auth-scopes').filter((v) => v !== '')).toEqual([]);
  });

  it('no token: 401 with the challenge; a missing scope or an uncovered path: 403; the upstream saw nothing', async () => {
    const none = await via('/api/x');
    expect(none.reply.status).toBe(401);
    expect(String(none.reply.headers['www-authenticate'])).toMatch(/^Bearer/);
    expect(none.seen).toBeUndefined();
    for (const path of ['/admin/x', '/nowhere']) {
      const r = await via(path, { authorization: `Bearer ${token}` });
      expect(r.reply.status).toBe(403);
      expect(r.seen).toBeUndefined();
    }
  });

  it('a browser on a login route is sent to the login path by the decision’s 302, passed on by forward_auth', async () => {
    const { reply, seen } = await via('/app/page', { accept: 'text/html' });
    expect(reply.status).toBe(302);
    expect(reply.headers.location).toBe(`/_portcullis/login?rd=${encodeURIComponent('/app/page')}`);
    expect(seen).toBeUndefined();
  });

  it.each(['/public/../admin/x', '/public/%2e%2e/admin/x', '//admin/x', '/admin;x=1', '/public%2F..%2Fadmin/x'])(
    'the path caddy forwards is the path judged: %s without a token never reaches the upstream',
    async (uri) => {
      const before = up.seen.length;
      expect([400, 401, 403]).toContain(await rawStatus(caddy.port, gw.pki, uri));
      expect(up.seen.length).toBe(before);
    },
  );

  it('client certificates: alice allowed with her XFCC; bob 403; a revoked one, which caddy lets through, 403 by the CRL', async () => {
    const alice = await via('/mtls/a', {}, 'alice');
    expect(alice.reply.status).toBe(200);
    expect(seenHeader(alice.seen, 'x-forwarded-client-cert')[0]).toContain('CN=alice');
    expect(seenHeader(alice.seen, 'x-ssl-client-cert')).toEqual([]);
    for (const who of ['bob', 'revoked'] as const) {
      const r = await via(`/mtls/${who}`, {}, who);
      expect(r.reply.status).toBe(403);
      expect(r.seen).toBeUndefined();
    }
    await expect
      .poll(() => gw.logs().find((l) => l.path === '/mtls/revoked')?.reason)
      .toBe('ERR_IDENTITY_REVOKED_CLIENT_CERT');
  });

  it('a WebSocket upgrade authorized by a decision reaches the upstream and echoes; without a token it does not', async () => {
    const open = (headers: Record<string, string>): Promise<{ status?: number; echo?: string }> =>
      webSocketThrough(caddy.port, gw.pki, headers);
    const before = up.seen.length;
    expect(await open({})).toEqual({ status: 401 });
    expect(up.seen.length).toBe(before);
    expect(await open({ authorization: `Bearer ${token}` })).toEqual({ echo: 'ping' });
    expect(seenHeader(up.seen.at(-1), 'x-auth-subject')).toEqual(['alice']);
  });
});
