/**
 * The real gateway against a REAL OpenID provider (issue 3 point 8, end to end): `oidc-provider` 9 from npm,
 * in process on 127.0.0.1:0, with a client_credentials client (set up as in test/interop/oidc-provider.test.ts).
 * The gateway is configured through its YAML config like any user's: a `jwt` provider on the IdP's JWKS and an
 * `introspection` provider on its RFC 7662 endpoint. Real TLS clients, a recording upstream; every denial
 * asserts that the upstream saw nothing.
 *
 * - a JWT access token (resource indicator → `accessTokenFormat: 'jwt'`, `typ: at+jwt`) through the real JWKS;
 * - an opaque token through the real introspection endpoint;
 * - a token revoked at the IdP refused after `POST /cache/purge`, and without it after the positive TTL;
 * - key rotation at the IdP picked up (a token signed by the new key is accepted after the cooldown).
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodeProtectedHeader, type JWK } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  APP,
  AUDIENCE,
  GATEWAY,
  loadOidcProvider,
  oidcConfiguration,
  signingKey,
  type OidcProvider,
} from '../helpers/oidc.js';
import { tokenHash } from '../../src/authn/bearer.js';
import { startGateway, tlsListener, type TestGateway } from '../helpers/gateway.js';
import { startUpstream, type SeenRequest, type TestUpstream } from '../helpers/upstream.js';
import { h1, h2, h2session, type Reply } from '../helpers/clients.js';
import { adminPost } from '../helpers/admin.js';

const Provider = await loadOidcProvider('test/integration/auth-oidc.test.ts');

function values(seen: SeenRequest, name: string): string[] {
  const out: string[] = [];
  for (let i = 0; i + 1 < seen.rawHeaders.length; i += 2)
    if ((seen.rawHeaders[i] as string).toLowerCase() === name) out.push(seen.rawHeaders[i + 1] as string);
  return out;
}

describe.skipIf(Provider === undefined)('the gateway against a real oidc-provider 9', () => {
  let idpServer: Server;
  let issuer: string;
  let current: OidcProvider;
  let k1: JWK;
  let jwksFetches = 0;
  let introspections = 0;
  let up: TestUpstream;
  let gw: TestGateway;
  let files: string;
  let port: number;
  const used: string[] = [];

  const makeProvider = (keys: JWK[]): OidcProvider =>
    new Provider!(issuer, oidcConfiguration(keys, 'integration-test-cookie-key'));

  const basic = `Basic ${Buffer.from(`${APP.id}:${APP.secret}`).toString('base64')}`;

  async function token(resource: string, scope: string): Promise<string> {
    const res = await fetch(`${issuer}/token`, {
      method: 'POST',
      headers: { authorization: basic, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'client_credentials', scope, resource }).toString(),
    });
    const body = (await res.json()) as { access_token?: string };
    if (body.access_token === undefined)
      throw new Error(`token endpoint: ${res.status} ${JSON.stringify(body)}`);
    used.push(body.access_token);
    return body.access_token;
  }

  async function revoke(t: string): Promise<void> {
    const res = await fetch(`${issuer}/token/revocation`, {
      method: 'POST',
      headers: { authorization: basic, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token: t }).toString(),
    });
    expect(res.status).toBe(200);
  }

  async function get(
    path: string,
    t: string | undefined,
    proto: 'h1' | 'h2' = 'h1',
  ): Promise<{ reply: Reply; seen: SeenRequest | undefined }> {
    const before = up.seen.length;
    const headers = t === undefined ? {} : { authorization: `Bearer ${t}` };
    let reply: Reply;
    if (proto === 'h1') reply = await h1(port, gw.pki, { path, headers });
    else {
      const s = h2session(port, gw.pki);
      try {
        reply = await h2(s, { ':path': path, ...headers });
      } finally {
        s.close();
      }
    }
    return { reply, seen: up.seen.length > before ? up.seen.at(-1) : undefined };
  }

  beforeAll(async () => {
    idpServer = createServer((req, res) => {
      if (req.url === '/jwks') jwksFetches++;
      if (req.url === '/token/introspection') introspections++;
      current.callback()(req, res);
    });
    await new Promise<void>((resolve) => idpServer.listen(0, '127.0.0.1', resolve));
    issuer = `http://127.0.0.1:${(idpServer.address() as AddressInfo).port}`;
    k1 = await signingKey('k1');
    current = makeProvider([k1]);
    up = await startUpstream();
    files = await mkdtemp(join(tmpdir(), 'portcullis-oidc-'));
    const secretFile = join(files, 'introspection-secret');
    await writeFile(secretFile, `${GATEWAY.secret}\n`, { mode: 0o600 });
    const route = (id: string, providers: string[], scopes?: string[]): Record<string, unknown> => ({
      id,
      match: { pathPrefix: `/${id}` },
      upstream: up.url,
      auth: { providers, ...(scopes ? { scopes } : {}) },
    });
    gw = await startGateway((pki) => ({
      admin: { enabled: true, listen: '127.0.0.1:0' },
      authProviders: {
        'oidc-jwt': {
          type: 'jwt',
          issuer,
          audience: AUDIENCE,
          jwksUri: `${issuer}/jwks`,
          algorithms: ['ES256'],
          typ: 'at+jwt',
          jwksCooldownSeconds: 1,
        },
        'oidc-opaque': {
          type: 'introspection',
          endpoint: `${issuer}/token/introspection`,
          clientId: GATEWAY.id,
          clientSecretFile: secretFile,
          audience: AUDIENCE,
          issuer,
          cache: { maxTtlSeconds: 2 },
        },
      },
      listeners: [
        tlsListener(pki, {
          routes: [
            route('jwt', ['oidc-jwt'], ['read']),
            route('opaque', ['oidc-opaque'], ['read']),
            route('any', ['oidc-jwt', 'oidc-opaque'], ['read']),
            route('admin', ['oidc-jwt', 'oidc-opaque'], ['admin']),
          ],
        }),
      ],
    }));
    port = gw.port();
  });

  afterAll(async () => {
    await gw?.close();
    await up?.close();
    idpServer.closeAllConnections();
    await new Promise<void>((resolve) => idpServer.close(() => resolve()));
    await rm(files, { recursive: true, force: true });
  });

  it('fetched the real JWKS once at start and is ready', () => {
    expect(jwksFetches).toBe(1);
    expect(gw.app.notReady()).toEqual([]);
  });

  it.each(['h1', 'h2'] as const)(
    '%s: a JWT access token verifies through the real JWKS; the upstream sees the principal',
    async (proto) => {
      const t = await token('urn:portcullis:jwt', 'read');
      expect(decodeProtectedHeader(t)).toMatchObject({ alg: 'ES256', kid: 'k1', typ: 'at+jwt' });
      const { reply, seen } = await get('/jwt/x', t, proto);
      expect(reply.status).toBe(200);
      expect(values(seen!, 'x-auth-subject')).toEqual([APP.id]);
      expect(values(seen!, 'x-auth-scopes')).toEqual(['read']);
      expect(values(seen!, 'x-auth-provider')).toEqual(['oidc-jwt']);
      expect(values(seen!, 'authorization')).toEqual([]);
    },
  );

  it('an opaque token verifies through the real introspection endpoint (client_secret_basic)', async () => {
    const t = await token('urn:portcullis:opaque', 'read write');
    expect(t.split('.')).toHaveLength(1);
    const { reply, seen } = await get('/opaque/x', t);
    expect(reply.status).toBe(200);
    expect(values(seen!, 'x-auth-subject')).toEqual([APP.id]);
    expect(values(seen!, 'x-auth-scopes')).toEqual(['read write']);
    expect(values(seen!, 'x-auth-provider')).toEqual(['oidc-opaque']);
  });

  it('a chain [jwt, introspection]: each token goes to its own provider; a missing scope is 403', async () => {
    const j = await token('urn:portcullis:jwt', 'read');
    const o = await token('urn:portcullis:opaque', 'read');
    const calls = introspections;
    expect(values((await get('/any/x', j)).seen!, 'x-auth-provider')).toEqual(['oidc-jwt']);
    expect(introspections).toBe(calls); // a JWT never goes to introspection
    expect(values((await get('/any/x', o)).seen!, 'x-auth-provider')).toEqual(['oidc-opaque']);
    for (const t of [j, o]) {
      const { reply, seen } = await get('/admin/x', t);
      expect(reply.status).toBe(403);
      expect(reply.headers['www-authenticate']).toBe(
        'Bearer realm="portcullis", error="insufficient_scope", scope="admin"',
      );
      expect(seen).toBeUndefined();
    }
  });

  it('no token → 401; a tampered JWT → 401 invalid_token; the upstream sees nothing', async () => {
    const none = await get('/jwt/x', undefined);
    expect(none.reply.status).toBe(401);
    expect(none.seen).toBeUndefined();
    const [h, , s] = (await token('urn:portcullis:jwt', 'read')).split('.') as [string, string, string];
    const forged = Buffer.from(
      JSON.stringify({
        iss: issuer,
        aud: AUDIENCE,
        sub: 'admin',
        client_id: 'admin',
        exp: Math.floor(Date.now() / 1000) + 60,
        scope: 'admin',
      }),
    ).toString('base64url');
    const bad = await get('/admin/x', `${h}.${forged}.${s}`);
    expect(bad.reply.status).toBe(401);
    expect(bad.reply.headers['www-authenticate']).toBe('Bearer realm="portcullis", error="invalid_token"');
    expect(bad.seen).toBeUndefined();
  });

  it('revoked at the IdP: the cached answer serves until POST /cache/purge, then 401 at once', async () => {
    const t = await token('urn:portcullis:opaque', 'read');
    expect((await get('/opaque/x', t)).reply.status).toBe(200);
    await revoke(t);
    expect((await get('/opaque/x', t)).reply.status).toBe(200); // the documented window (≤ maxTtlSeconds)
    const purge = await adminPost(gw.app.adminPort()!, `/cache/purge?sha256=${tokenHash(t)}`);
    expect(purge).toEqual({ status: 200, body: '{"purged":1}\n' });
    const { reply, seen } = await get('/opaque/x', t);
    expect(reply.status).toBe(401);
    expect(seen).toBeUndefined();
  });

  it('revoked at the IdP, no purge: 401 once the positive TTL (2 s) has passed', async () => {
    const t = await token('urn:portcullis:opaque', 'read');
    expect((await get('/opaque/x', t)).reply.status).toBe(200);
    await revoke(t);
    const revokedAt = Date.now();
    let status = 200;
    // Measured to the start of the first refused request: a slow (fresh mTLS) request is not latency.
    let refusedSentAt = revokedAt;
    while (status === 200 && Date.now() - revokedAt < 5_000) {
      await new Promise((r) => setTimeout(r, 100));
      refusedSentAt = Date.now();
      status = (await get('/opaque/x', t)).reply.status;
    }
    const latency = refusedSentAt - revokedAt;
    console.log(`oidc-provider revocation latency without purge: ${latency} ms (maxTtlSeconds: 2)`);
    expect(status).toBe(401);
    // About the 2 s TTL plus one polling step and request, well under the 5 s the loop allows.
    expect(latency).toBeLessThanOrEqual(3_500);
  });

  it('key rotation at the IdP is picked up: a token signed by the new key is accepted after the cooldown', async () => {
    const old = await token('urn:portcullis:jwt', 'read');
    expect((await get('/jwt/x', old)).reply.status).toBe(200);
    const k2 = await signingKey('k2');
    current = makeProvider([k2, k1]);
    const fresh = await token('urn:portcullis:jwt', 'read');
    expect(decodeProtectedHeader(fresh).kid).toBe('k2');
    const before = jwksFetches;
    await new Promise((r) => setTimeout(r, 1_100)); // jwksCooldownSeconds: 1
    const { reply, seen } = await get('/jwt/x', fresh);
    expect(reply.status).toBe(200);
    expect(values(seen!, 'x-auth-subject')).toEqual([APP.id]);
    expect(jwksFetches - before).toBe(1);
    // The old key is still published: its tokens still verify (after a purge, without a cache).
    await adminPost(gw.app.adminPort()!, '/cache/purge');
    expect((await get('/jwt/x', old)).reply.status).toBe(200);
    expect(jwksFetches - before).toBe(1);
  });

  it('no token appears in the log', () => {
    const text = JSON.stringify(gw.logs());
    expect(used.length).toBeGreaterThan(8);
    for (const t of used) expect(text).not.toContain(t);
  });
});
