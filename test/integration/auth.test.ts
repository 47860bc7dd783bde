/**
 * Bearer authentication end to end (issue 3, points 1–6): the real gateway on 127.0.0.1:0 with a PKI minted
 * per run, real TLS clients (HTTP/1.1, HTTP/2, raw bytes), a recording upstream, and the fake IdP of
 * test/helpers/idp.ts over HTTP (JWKS + RFC 7662 introspection) for `jwt` and `introspection` providers, plus
 * a `static` tokens file. Every denial asserts that the upstream saw nothing.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { connect as tlsConnect } from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tokenHash } from '../../src/authn/bearer.js';
import { PAUSE_INITIAL_MS } from '../../src/authn/introspection.js';
import { tokenCreate } from '../../src/commands/token.js';
import { adminGet } from '../helpers/admin.js';
import { createFakeIdp, type FakeIdp, type IdpFault } from '../helpers/idp.js';
import { startGateway, tlsListener, type TestGateway } from '../helpers/gateway.js';
import { startUpstream, type SeenRequest, type TestUpstream } from '../helpers/upstream.js';
import { h1, h2, h2session, rawTls, tlsOptions, type Reply } from '../helpers/clients.js';

const AUD = 'gw-api';
const WS_KEY = 'dGhlIHNhbXBsZSBub25jZQ==';

/** Every value of `name` among the raw header lines the upstream received. */
function values(seen: SeenRequest, name: string): string[] {
  const out: string[] = [];
  for (let i = 0; i + 1 < seen.rawHeaders.length; i += 2)
    if ((seen.rawHeaders[i] as string).toLowerCase() === name) out.push(seen.rawHeaders[i + 1] as string);
  return out;
}

/** POST to the admin listener with node:http (no Origin, like curl). */
function adminPost(
  port: number,
  path: string,
  body?: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; json: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, method: 'POST', headers }, (res) => {
      let text = '';
      res.on('data', (c: Buffer) => (text += c.toString()));
      res.on('end', () =>
        resolve({ status: res.statusCode ?? 0, json: JSON.parse(text || '{}') as Record<string, unknown> }),
      );
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** Status lines of every response in a raw HTTP/1.1 byte stream, in order (100 Continue included). */
function statuses(raw: string): number[] {
  return [...raw.matchAll(/^HTTP\/1\.1 (\d{3})/gm)].map((m) => Number(m[1]));
}

/**
 * Sends `head` over TLS; when the first answer is `100 Continue` and `body` is given, sends the body. Resolves
 * with everything read once the server closed (the requests say `Connection: close`) or after 3 s.
 */
function expectContinue(
  port: number,
  pki: TestGateway['pki'],
  head: string,
  body: string | undefined,
): Promise<string> {
  return new Promise((resolve) => {
    const socket = tlsConnect({
      ...tlsOptions(pki, 'alice'),
      host: '127.0.0.1',
      port,
      ALPNProtocols: ['http/1.1'],
    });
    let text = '';
    let sent = false;
    const timer = setTimeout(() => socket.destroy(), 3_000);
    socket.on('secureConnect', () => socket.write(head));
    socket.on('data', (c: Buffer) => {
      text += c.toString('latin1');
      if (!sent && body !== undefined && text.startsWith('HTTP/1.1 100')) {
        sent = true;
        socket.write(body);
      }
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(text);
    });
  });
}

/** HPACK literal fields without indexing, new names, no Huffman (RFC 7541 §6.2.2); values under 127 bytes
 * use a one-byte length, longer ones the integer continuation (§5.1). */
function hpack(fields: readonly [string, string][]): Buffer {
  const int = (v: number): number[] => {
    if (v < 127) return [v];
    const out = [127];
    let rest = v - 127;
    while (rest >= 128) {
      out.push((rest % 128) + 128);
      rest = Math.floor(rest / 128);
    }
    out.push(rest);
    return out;
  };
  const bytes: number[] = [];
  for (const [n, v] of fields) {
    const nb = Buffer.from(n, 'latin1');
    const vb = Buffer.from(v, 'latin1');
    bytes.push(0x00, ...int(nb.length), ...nb, ...int(vb.length), ...vb);
  }
  return Buffer.from(bytes);
}

function h2frame(type: number, flags: number, stream: number, payload: Buffer): Buffer {
  const head = Buffer.alloc(9);
  head.writeUIntBE(payload.length, 0, 3);
  head[3] = type;
  head[4] = flags;
  head.writeUInt32BE(stream, 5);
  return Buffer.concat([head, payload]);
}

/**
 * One HTTP/2 request on stream 1, written frame by frame (so it can carry what Node's client refuses to
 * send). Resolves with the response :status (200, 400, 401 from the HPACK static table or its literal
 * form; -2 for anything else), 0 when none came within 3 s.
 */
function rawH2Status(
  port: number,
  pki: TestGateway['pki'],
  fields: readonly [string, string][],
): Promise<number> {
  return new Promise((resolve) => {
    const socket = tlsConnect({
      ...tlsOptions(pki, 'alice'),
      host: '127.0.0.1',
      port,
      ALPNProtocols: ['h2'],
    });
    let buf = Buffer.alloc(0);
    let status = 0;
    const finish = (): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve(status);
    };
    const timer = setTimeout(finish, 3_000);
    socket.on('secureConnect', () =>
      socket.write(
        Buffer.concat([
          Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1'),
          h2frame(0x4, 0, 0, Buffer.alloc(0)),
          h2frame(0x1, 0x4 | 0x1, 1, hpack(fields)),
        ]),
      ),
    );
    socket.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      while (buf.length >= 9) {
        const len = buf.readUIntBE(0, 3);
        if (buf.length < 9 + len) break;
        const type = buf[3];
        const flags = buf[4] ?? 0;
        const stream = buf.readUInt32BE(5) & 0x7fffffff;
        const payload = buf.subarray(9, 9 + len);
        buf = buf.subarray(9 + len);
        if (type === 0x4 && (flags & 0x1) === 0) socket.write(h2frame(0x4, 0x1, 0, Buffer.alloc(0)));
        if (stream !== 1) continue;
        if (type === 0x1 && status === 0) {
          const first = payload[(flags & 0x8) !== 0 ? 1 + (payload[0] ?? 0) : 0];
          // nghttp2 sends 200 and 400 as indexed static-table fields (RFC 7541 Appendix A: 8, 12).
          status = first === 0x88 ? 200 : first === 0x8c ? 400 : -2;
          finish();
        } else if (type === 0x3) finish();
      }
    });
    socket.on('close', finish);
    socket.on('error', finish);
  });
}

describe('Bearer authentication end to end (fake IdP over HTTP)', () => {
  let idp: FakeIdp;
  let up: TestUpstream;
  let gw: TestGateway;
  let files: string;
  let tokensFile: string;
  let port: number;
  let adminPort: number;
  let staticToken: string;
  let expiredStatic: string;
  /** Every token a test used: none may appear in the log. */
  const used: string[] = [];

  const jwt = async (claims: Record<string, unknown> = {}): Promise<string> => {
    const t = await idp.sign({ sub: 'alice', aud: AUD, scope: 'read', ...claims });
    used.push(t);
    return t;
  };
  const opaque = (answer?: Record<string, unknown>): string => {
    const t = idp.issueOpaque(answer);
    used.push(t);
    return t;
  };
  const bearer = (t: string): Record<string, string> => ({ authorization: `Bearer ${t}` });

  type Proto = 'h1' | 'h2';
  /** One request (fresh connection); returns the reply and what reached the upstream (if anything). */
  async function send(
    proto: Proto,
    path: string,
    headers: Record<string, string | string[]> = {},
  ): Promise<{ reply: Reply; seen: SeenRequest | undefined }> {
    const before = up.seen.length;
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
    expect(up.seen.length - before).toBeLessThanOrEqual(1);
    return { reply, seen: up.seen.length > before ? up.seen.at(-1) : undefined };
  }

  beforeAll(async () => {
    idp = await createFakeIdp();
    await idp.listen();
    up = await startUpstream();
    files = await mkdtemp(join(tmpdir(), 'portcullis-auth-'));
    const secretFile = join(files, 'introspection-secret');
    await writeFile(secretFile, `${idp.clientSecret}\n`, { mode: 0o600 });
    tokensFile = join(files, 'tokens.json');
    staticToken = (
      await tokenCreate({ file: tokensFile, name: 'carol', expiresInSeconds: 3600, scopes: ['read'] })
    ).token;
    expiredStatic = (
      await tokenCreate({
        file: tokensFile,
        name: 'old',
        expiresInSeconds: 60,
        scopes: ['read'],
        now: Date.now() - 3_600_000,
      })
    ).token;
    used.push(staticToken, expiredStatic);
    const route = (
      id: string,
      auth: Record<string, unknown> | undefined,
      upstream = up.url,
    ): Record<string, unknown> => ({
      id,
      match: { pathPrefix: `/${id}` },
      upstream,
      ...(auth !== undefined ? { auth } : {}),
    });
    gw = await startGateway((pki) => ({
      admin: { enabled: true, listen: '127.0.0.1:0' },
      authProviders: {
        'idp-jwt': {
          type: 'jwt',
          issuer: idp.issuer,
          audience: AUD,
          jwksUri: idp.jwksUri,
          algorithms: ['ES256'],
          jwksCooldownSeconds: 1,
        },
        'idp-opaque': {
          type: 'introspection',
          endpoint: idp.introspectionUri,
          clientId: idp.clientId,
          clientSecretFile: secretFile,
          timeoutMs: 500,
          cache: { maxTtlSeconds: 2, negativeTtlSeconds: 1 },
        },
        team: { type: 'static', tokensFile },
      },
      listeners: [
        tlsListener(pki, {
          routes: [
            route('jwt', { providers: ['idp-jwt'], scopes: ['read'] }),
            route('write', { providers: ['idp-jwt', 'idp-opaque'], scopes: ['read', 'write'] }),
            route('claims', { providers: ['idp-jwt'], claims: { tenant: 'acme', groups: ['ops'] } }),
            route('opaque', { providers: ['idp-opaque'], scopes: ['read'] }),
            route('opaque-write', { providers: ['idp-opaque'], scopes: ['write'] }),
            route('chain', { providers: ['team', 'idp-jwt', 'idp-opaque'] }),
            route('static', { providers: ['team'], scopes: ['read'] }),
            route('query', { providers: ['idp-jwt'], allowQueryToken: true }),
            route('fwd', { providers: ['idp-jwt'], forwardToken: true }),
            route('ws', { providers: ['idp-jwt'] }),
            route('wsq', { providers: ['idp-jwt'], allowQueryToken: true }),
            route('echo', { providers: ['idp-jwt'] }, 'builtin:echo'),
            route('open', undefined),
          ],
        }),
      ],
    }));
    port = gw.port();
    adminPort = gw.app.adminPort()!;
  });

  afterAll(async () => {
    await gw.close();
    await up.close();
    await idp.close();
    await rm(files, { recursive: true, force: true });
  });

  describe('1. challenges: 401 without or with a bad token, 403 without the scope (RFC 6750 §3)', () => {
    it.each<Proto>(['h1', 'h2'])(
      '%s: no token → 401 Bearer realm, the upstream sees nothing',
      async (proto) => {
        const { reply, seen } = await send(proto, '/jwt/x');
        expect(reply.status).toBe(401);
        expect(reply.headers['www-authenticate']).toBe('Bearer realm="portcullis"');
        expect(reply.body).not.toMatch(/signature|jwks|kid/i);
        expect(seen).toBeUndefined();
      },
    );

    it('another scheme (Basic) is no Bearer credential → 401 with the plain challenge', async () => {
      const { reply, seen } = await send('h1', '/jwt/x', { authorization: 'Basic YWxpY2U6cHc=' });
      expect(reply.status).toBe(401);
      expect(reply.headers['www-authenticate']).toBe('Bearer realm="portcullis"');
      expect(seen).toBeUndefined();
    });

    it.each<[string, () => Promise<string>]>([
      ['a random JWT-shaped string', () => Promise.resolve('eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJ4In0.c2ln')],
      ['a wrong audience', () => jwt({ aud: 'other-api' })],
      ['an expired token', () => jwt({ exp: Math.floor(Date.now() / 1000) - 3600 })],
      ['no exp', () => jwt({ exp: undefined })],
      [
        'a tampered payload',
        async () => {
          const [h, , s] = (await jwt()).split('.') as [string, string, string];
          const forged = Buffer.from(
            JSON.stringify({ iss: idp.issuer, aud: AUD, sub: 'admin', scope: 'read', exp: 9e9 }),
          ).toString('base64url');
          return `${h}.${forged}.${s}`;
        },
      ],
      [
        'a JWT signed by a key the IdP does not publish',
        async () => {
          const other = await createFakeIdp();
          return other.sign({ iss: idp.issuer, sub: 'alice', aud: AUD, scope: 'read' });
        },
      ],
    ])('%s → 401 error="invalid_token", the upstream sees nothing', async (_label, make) => {
      const t = await make();
      used.push(t);
      for (const proto of ['h1', 'h2'] as const) {
        const { reply, seen } = await send(proto, '/jwt/x', bearer(t));
        expect(reply.status).toBe(401);
        expect(reply.headers['www-authenticate']).toBe('Bearer realm="portcullis", error="invalid_token"');
        expect(reply.body).not.toMatch(/signature|jwks|kid|exp/i);
        expect(seen).toBeUndefined();
      }
    });

    it.each<Proto>(['h1', 'h2'])(
      '%s: a valid token without the scope → 403 insufficient_scope naming the scope',
      async (proto) => {
        const { reply, seen } = await send(proto, '/write/x', bearer(await jwt({ scope: 'read' })));
        expect(reply.status).toBe(403);
        expect(reply.headers['www-authenticate']).toBe(
          'Bearer realm="portcullis", error="insufficient_scope", scope="read write"',
        );
        expect(seen).toBeUndefined();
      },
    );

    it('claims: a token without the required claim values → 403; with them → 200', async () => {
      const denied = await send('h1', '/claims/x', bearer(await jwt({ tenant: 'acme', groups: ['dev'] })));
      expect(denied.reply.status).toBe(403);
      expect(denied.reply.headers['www-authenticate']).toBe(
        'Bearer realm="portcullis", error="insufficient_scope"',
      );
      expect(denied.seen).toBeUndefined();
      const ok = await send('h1', '/claims/x', bearer(await jwt({ tenant: 'acme', groups: ['dev', 'ops'] })));
      expect(ok.reply.status).toBe(200);
    });

    it('the scheme is case-insensitive (RFC 9110 §11.1)', async () => {
      const t = await jwt();
      for (const scheme of ['bearer', 'BEARER', 'BeArEr']) {
        const { reply } = await send('h1', '/jwt/x', { authorization: `${scheme} ${t}` });
        expect(reply.status).toBe(200);
      }
    });

    it('HTTP/1.1: two Authorization headers (either order) → 400 invalid_request, the upstream sees nothing', async () => {
      const good = await jwt();
      for (const pair of [
        [`Bearer ${good}`, 'Bearer garbage'],
        ['Bearer garbage', `Bearer ${good}`],
      ]) {
        const { reply, seen } = await send('h1', '/jwt/x', { authorization: pair });
        expect(reply.status).toBe(400);
        expect(reply.headers['www-authenticate']).toBe('Bearer realm="portcullis", error="invalid_request"');
        expect(seen).toBeUndefined();
      }
    });

    it("HTTP/2 (raw frames: Node's client refuses to send it): two authorization fields → 400, nothing upstream", async () => {
      const good = await jwt();
      const before = up.seen.length;
      for (const pair of [
        [`Bearer ${good}`, 'Bearer garbage'],
        ['Bearer garbage', `Bearer ${good}`],
      ]) {
        const status = await rawH2Status(port, gw.pki, [
          [':method', 'GET'],
          [':scheme', 'https'],
          [':authority', `localhost:${port}`],
          [':path', '/jwt/x'],
          ['authorization', pair[0]!],
          ['authorization', pair[1]!],
        ]);
        expect(status).toBe(400);
      }
      // The same request with one field passes: the 400 above is the duplicate's doing.
      const one = await rawH2Status(port, gw.pki, [
        [':method', 'GET'],
        [':scheme', 'https'],
        [':authority', `localhost:${port}`],
        [':path', '/jwt/x'],
        ['authorization', `Bearer ${good}`],
      ]);
      expect(one).toBe(200);
      expect(up.seen.length - before).toBe(1);
    });

    it.each<[string, string]>([
      ['an empty token', 'Bearer '],
      ['two spaces', 'Bearer  abc'],
      ['a comma list', 'Bearer abc, Bearer def'],
      ['a token that is not token68', 'Bearer abc$def'],
      ['a 9 KB token', `Bearer ${'a'.repeat(9000)}`],
    ])('%s → 400 before any provider is asked', async (_label, value) => {
      const calls = idp.counts.introspection + idp.counts.jwks;
      const { reply, seen } = await send('h1', '/chain/x', { authorization: value });
      expect(reply.status).toBe(400);
      expect(seen).toBeUndefined();
      expect(idp.counts.introspection + idp.counts.jwks).toBe(calls);
    });

    it('a token in the query string is refused (400) unless the route opts in', async () => {
      const t = await jwt();
      const refused = await send('h1', `/jwt/x?a=1&access_token=${t}`);
      expect(refused.reply.status).toBe(400);
      expect(refused.seen).toBeUndefined();
      // On a route that opts in: accepted, and stripped from what is forwarded (RFC 6750 §5.3).
      const ok = await send('h1', `/query/x?a=1&access_token=${t}&b=2`);
      expect(ok.reply.status).toBe(200);
      expect(ok.seen!.url).toBe('/query/x?a=1&b=2');
      expect(ok.seen!.url).not.toContain(t);
      expect(values(ok.seen!, 'x-auth-subject')).toEqual(['alice']);
      const only = await send('h2', `/query/y?access_token=${t}`);
      expect(only.reply.status).toBe(200);
      expect(only.seen!.url).toBe('/query/y');
      // Both ways at once is ambiguous: refused.
      const both = await send('h1', `/query/x?access_token=${t}`, bearer(t));
      expect(both.reply.status).toBe(400);
      expect(both.seen).toBeUndefined();
    });

    it('a route without auth needs no token and passes Authorization through untouched', async () => {
      const { reply, seen } = await send('h1', '/open/x', {
        authorization: 'Bearer whatever',
        'x-auth-subject': 'spoof',
      });
      expect(reply.status).toBe(200);
      expect(values(seen!, 'authorization')).toEqual(['Bearer whatever']);
      expect(values(seen!, 'x-auth-subject')).toEqual([]);
    });
  });

  describe('chain order: not mine → next; valid → done; invalid → stop', () => {
    it('each kind of token is vouched for by its own provider, in the route order', async () => {
      const j = await jwt();
      const o = opaque();
      const cases: [string, string][] = [
        [staticToken, 'team'],
        [j, 'idp-jwt'],
        [o, 'idp-opaque'],
      ];
      for (const [t, provider] of cases) {
        const { reply, seen } = await send('h1', '/chain/x', bearer(t));
        expect(reply.status).toBe(200);
        expect(values(seen!, 'x-auth-provider')).toEqual([provider]);
      }
    });

    it('a JWT of the configured issuer that fails verification is never tried on introspection', async () => {
      const calls = idp.counts.introspection;
      const t = await jwt({ aud: 'other-api' });
      const { reply, seen } = await send('h1', '/chain/x', bearer(t));
      expect(reply.status).toBe(401);
      expect(seen).toBeUndefined();
      expect(idp.counts.introspection).toBe(calls);
    });

    it('a pcs_ token that is not in the file stops at the static provider', async () => {
      const calls = idp.counts.introspection;
      const t = `pcs_${'A'.repeat(43)}`;
      const { reply, seen } = await send('h1', '/chain/x', bearer(t));
      expect(reply.status).toBe(401);
      expect(seen).toBeUndefined();
      expect(idp.counts.introspection).toBe(calls);
    });

    it('static: an expired token is refused; a valid one carries its scopes', async () => {
      const expired = await send('h1', '/static/x', bearer(expiredStatic));
      expect(expired.reply.status).toBe(401);
      expect(expired.seen).toBeUndefined();
      const ok = await send('h2', '/static/x', bearer(staticToken));
      expect(ok.reply.status).toBe(200);
      expect(values(ok.seen!, 'x-auth-subject')).toEqual(['carol']);
      expect(values(ok.seen!, 'x-auth-scopes')).toEqual(['read']);
    });
  });

  describe('6. what the upstream sees', () => {
    it.each<Proto>(['h1', 'h2'])(
      '%s: X-Auth-* set by the gateway (client copies removed), Authorization removed',
      async (proto) => {
        const t = await jwt({ sub: 'alice', scope: 'read write' });
        const { reply, seen } = await send(proto, '/jwt/x', {
          ...bearer(t),
          'x-auth-subject': 'admin',
          'X-Auth-Scopes': 'admin',
          'x-auth-provider': 'spoof',
          'x-auth-extra': 'spoof',
        });
        expect(reply.status).toBe(200);
        expect(values(seen!, 'x-auth-subject')).toEqual(['alice']);
        expect(values(seen!, 'x-auth-scopes')).toEqual(['read write']);
        expect(values(seen!, 'x-auth-provider')).toEqual(['idp-jwt']);
        expect(values(seen!, 'x-auth-extra')).toEqual([]);
        expect(values(seen!, 'authorization')).toEqual([]);
        expect(seen!.rawHeaders.join('\n')).not.toContain(t);
      },
    );

    it('Authorization is forwarded as sent on a route with forwardToken: true', async () => {
      const t = await jwt();
      const { reply, seen } = await send('h1', '/fwd/x', bearer(t));
      expect(reply.status).toBe(200);
      expect(values(seen!, 'authorization')).toEqual([`Bearer ${t}`]);
      expect(values(seen!, 'x-auth-subject')).toEqual(['alice']);
    });

    it('a subject with CR/LF, spaces and non-ASCII is percent-encoded: no header injection', async () => {
      const t = await jwt({ sub: 'eve\r\nX-Injected: 1 é', scope: 'read a\u0000b' });
      const { reply, seen } = await send('h1', '/jwt/x', bearer(t));
      expect(reply.status).toBe(200);
      expect(values(seen!, 'x-auth-subject')).toEqual(['eve%0D%0AX-Injected:%201%20%C3%A9']);
      expect(values(seen!, 'x-auth-scopes')).toEqual(['read a%00b']);
      expect(values(seen!, 'x-injected')).toEqual([]);
    });

    it('the built-in echo shows the identity headers too', async () => {
      const { reply } = await send('h1', '/echo/x', bearer(await jwt()));
      expect(reply.status).toBe(200);
      expect(JSON.parse(reply.body)).toMatchObject({
        headers: { 'x-auth-subject': 'alice', 'x-auth-scopes': 'read', 'x-auth-provider': 'idp-jwt' },
      });
    });
  });

  describe('Expect: 100-continue answered only after authentication', () => {
    it('no token → 401 without a 100 first; the upstream sees nothing', async () => {
      const before = up.seen.length;
      const raw = await expectContinue(
        port,
        gw.pki,
        `POST /jwt/upload HTTP/1.1\r\nHost: localhost:${port}\r\nExpect: 100-continue\r\nContent-Length: 10485760\r\nConnection: close\r\n\r\n`,
        undefined,
      );
      expect(statuses(raw)).toEqual([401]);
      expect(raw).toMatch(/^www-authenticate: Bearer realm="portcullis"\r$/im);
      expect(up.seen.length).toBe(before);
    });

    it('a token without the scope → 403 without a 100 first', async () => {
      const before = up.seen.length;
      const raw = await expectContinue(
        port,
        gw.pki,
        `POST /write/upload HTTP/1.1\r\nHost: localhost:${port}\r\nAuthorization: Bearer ${await jwt()}\r\n` +
          'Expect: 100-continue\r\nContent-Length: 10485760\r\nConnection: close\r\n\r\n',
        undefined,
      );
      expect(statuses(raw)).toEqual([403]);
      expect(up.seen.length).toBe(before);
    });

    it('HTTP/2: no token → 401 without a 100 first; a valid token → 100, then 200', async () => {
      const before = up.seen.length;
      const exchange = (
        headers: Record<string, string>,
        body: string | undefined,
      ): Promise<{ status: number; continued: boolean }> => {
        const s = h2session(port, gw.pki);
        return new Promise<{ status: number; continued: boolean }>((resolve, reject) => {
          const st = s.request(
            {
              ':method': 'POST',
              ':path': '/jwt/upload',
              expect: '100-continue',
              'content-length': '11',
              ...headers,
            },
            { endStream: false },
          );
          let continued = false;
          let code = 0;
          st.on('continue', () => {
            continued = true;
            if (body !== undefined) st.end(body);
          });
          st.on('response', (h) => (code = Number(h[':status'])));
          st.on('error', reject);
          st.on('close', () => resolve({ status: code, continued }));
          st.resume();
        }).finally(() => s.close());
      };
      expect(await exchange({}, undefined)).toEqual({ status: 401, continued: false });
      expect(up.seen.length).toBe(before);
      expect(await exchange(bearer(await jwt()), 'hello world')).toEqual({ status: 200, continued: true });
      expect(up.seen.length - before).toBe(1);
      expect(up.seen.at(-1)!.bodyBytes).toBe(11);
    });

    it('a valid token → 100 Continue, then the body reaches the upstream', async () => {
      const before = up.seen.length;
      const raw = await expectContinue(
        port,
        gw.pki,
        `POST /jwt/upload HTTP/1.1\r\nHost: localhost:${port}\r\nAuthorization: Bearer ${await jwt()}\r\n` +
          'Expect: 100-continue\r\nContent-Length: 11\r\nConnection: close\r\n\r\n',
        'hello world',
      );
      expect(statuses(raw)).toEqual([100, 200]);
      expect(up.seen.length - before).toBe(1);
      expect(up.seen.at(-1)!.bodyBytes).toBe(11);
    });
  });

  describe('WebSocket upgrades', () => {
    const upgrade = (path: string, extra = ''): string =>
      `GET ${path} HTTP/1.1\r\nHost: localhost:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      `Sec-WebSocket-Key: ${WS_KEY}\r\nSec-WebSocket-Version: 13\r\n${extra}\r\n`;

    it('no token → 401 with the challenge, before any upstream connection', async () => {
      const accepted = up.connections().accepted;
      const before = up.seen.length;
      const r = await rawTls(port, gw.pki, upgrade('/ws/chat'));
      expect(r.text).toMatch(/^HTTP\/1\.1 401 /);
      expect(r.text).toMatch(/^WWW-Authenticate: Bearer realm="portcullis"\r$/m);
      expect(r.closed).toBe(true);
      expect(up.connections().accepted).toBe(accepted);
      expect(up.seen.length).toBe(before);
    });

    it('a bad token → 401 invalid_token, before any upstream connection', async () => {
      const accepted = up.connections().accepted;
      const r = await rawTls(
        port,
        gw.pki,
        upgrade('/ws/chat', `Authorization: Bearer ${await jwt({ aud: 'x' })}\r\n`),
      );
      expect(r.text).toMatch(/^HTTP\/1\.1 401 /);
      expect(r.text).toMatch(/error="invalid_token"/);
      expect(up.connections().accepted).toBe(accepted);
    });

    it('a valid token → 101; the upstream sees the principal and no Authorization', async () => {
      const t = await jwt();
      const r = await rawTls(port, gw.pki, upgrade('/ws/chat', `Authorization: Bearer ${t}\r\n`), {
        timeoutMs: 1_000,
      });
      expect(r.text).toMatch(/^HTTP\/1\.1 101 /);
      const seen = up.seen.at(-1)!;
      expect(seen.url).toBe('/ws/chat');
      expect(values(seen, 'x-auth-subject')).toEqual(['alice']);
      expect(values(seen, 'authorization')).toEqual([]);
    });

    it('a query token on a route that allows it → 101, stripped from the upstream URL', async () => {
      const t = await jwt();
      const r = await rawTls(port, gw.pki, upgrade(`/wsq/chat?room=1&access_token=${t}`), {
        timeoutMs: 1_000,
      });
      expect(r.text).toMatch(/^HTTP\/1\.1 101 /);
      expect(up.seen.at(-1)!.url).toBe('/wsq/chat?room=1');
    });

    it('a query token on a route that does not allow it → 400', async () => {
      const accepted = up.connections().accepted;
      const r = await rawTls(port, gw.pki, upgrade(`/ws/chat?access_token=${await jwt()}`));
      expect(r.text).toMatch(/^HTTP\/1\.1 400 /);
      expect(up.connections().accepted).toBe(accepted);
    });
  });

  describe('3. introspection: cache, single flight, scopes on every request, IdP down → 503', () => {
    it('a cache hit still checks the route scopes (CVE-2021-32701)', async () => {
      const t = opaque({ active: true, sub: 'bob', scope: 'read', exp: Math.floor(Date.now() / 1000) + 600 });
      expect((await send('h1', '/opaque/x', bearer(t))).reply.status).toBe(200);
      const calls = idp.counts.introspection;
      expect((await send('h1', '/opaque/x', bearer(t))).reply.status).toBe(200);
      const denied = await send('h1', '/opaque-write/x', bearer(t));
      expect(denied.reply.status).toBe(403);
      expect(denied.seen).toBeUndefined();
      expect(idp.counts.introspection).toBe(calls); // both answered from the cache
    });

    it('20 concurrent HTTP/2 requests with one new token make exactly one introspection call', async () => {
      const t = opaque();
      idp.setFault({ slowMs: 200 }, 'introspection');
      const calls = idp.counts.introspection;
      const s = h2session(port, gw.pki);
      try {
        const replies = await Promise.all(
          Array.from({ length: 20 }, () => h2(s, { ':path': '/opaque/x', authorization: `Bearer ${t}` })),
        );
        expect(replies.map((r) => r.status)).toEqual(Array<number>(20).fill(200));
      } finally {
        s.close();
        idp.setFault('ok');
      }
      expect(idp.counts.introspection - calls).toBe(1);
    });

    it('an inactive token → 401 invalid_token', async () => {
      const t = opaque({ active: false });
      const { reply, seen } = await send('h1', '/opaque/x', bearer(t));
      expect(reply.status).toBe(401);
      expect(reply.headers['www-authenticate']).toMatch(/error="invalid_token"/);
      expect(seen).toBeUndefined();
    });

    it.each<[string, IdpFault]>([
      ['answers 500', '500'],
      ['drops the connection', 'reset'],
      ['is slower than timeoutMs', { slowMs: 1_500 }],
      ['answers HTML', 'non-json'],
      ['redirects', 'redirect'],
      ['sends 10 MB', 'big'],
    ])('the IdP %s → 503, never a pass, the upstream sees nothing', async (_label, fault) => {
      const t = opaque();
      idp.setFault(fault, 'introspection');
      try {
        for (const proto of ['h1', 'h2'] as const) {
          const { reply, seen } = await send(proto, '/opaque/x', bearer(t));
          expect(reply.status).toBe(503);
          expect(reply.headers['www-authenticate']).toBeUndefined();
          expect(seen).toBeUndefined();
        }
      } finally {
        idp.setFault('ok');
      }
      // Once the IdP answers again, the same token works: the failure was not cached as "invalid". Two
      // failures in a row paused the provider's calls (PAUSE_INITIAL_MS, introspection.ts): until the pause
      // ends the answer is 503, never 401.
      const statuses: number[] = [];
      const end = Date.now() + PAUSE_INITIAL_MS + 3_000;
      while (statuses.at(-1) !== 200 && Date.now() < end) {
        statuses.push((await send('h1', '/opaque/x', bearer(t))).reply.status);
        if (statuses.at(-1) !== 200) await new Promise((r) => setTimeout(r, 50));
      }
      expect(statuses.at(-1)).toBe(200);
      expect(statuses.slice(0, -1).every((s) => s === 503)).toBe(true);
    });
  });

  describe('4. revocation: purge at once, or the positive TTL', () => {
    it('revoked at the IdP: served from the cache until POST /cache/purge?sha256=..., refused at once after', async () => {
      const t = opaque();
      expect((await send('h1', '/opaque/x', bearer(t))).reply.status).toBe(200);
      idp.revoke(t);
      expect((await send('h1', '/opaque/x', bearer(t))).reply.status).toBe(200); // the documented window
      const purge = await adminPost(adminPort, `/cache/purge?sha256=${tokenHash(t)}`);
      expect(purge).toEqual({ status: 200, json: { purged: 1 } });
      const { reply, seen } = await send('h1', '/opaque/x', bearer(t));
      expect(reply.status).toBe(401);
      expect(seen).toBeUndefined();
    });

    it('a JSON body {"sha256": ...} purges one token; an empty body purges all', async () => {
      const a = opaque();
      const b = opaque();
      for (const t of [a, b]) expect((await send('h1', '/opaque/x', bearer(t))).reply.status).toBe(200);
      idp.revoke(a);
      idp.revoke(b);
      const one = await adminPost(
        adminPort,
        '/cache/purge',
        JSON.stringify({ sha256: tokenHash(a).toUpperCase() }),
        {
          'content-type': 'application/json',
        },
      );
      expect(one).toEqual({ status: 200, json: { purged: 1 } });
      expect((await send('h1', '/opaque/x', bearer(a))).reply.status).toBe(401);
      expect((await send('h1', '/opaque/x', bearer(b))).reply.status).toBe(200);
      const all = await adminPost(adminPort, '/cache/purge');
      expect(all.status).toBe(200);
      expect(all.json.purged).toBeGreaterThanOrEqual(1);
      expect((await send('h1', '/opaque/x', bearer(b))).reply.status).toBe(401);
    });

    it.each<[string, string, string | undefined, Record<string, string>, number]>([
      ['a short hash', '/cache/purge?sha256=abc', undefined, {}, 400],
      ['an unknown parameter', '/cache/purge?token=abc', undefined, {}, 400],
      ['a body that is not JSON', '/cache/purge', 'sha256=abc', {}, 400],
      ['a JSON body with another key', '/cache/purge', '{"token":"x"}', {}, 400],
      [
        'hash in query and body',
        `/cache/purge?sha256=${'a'.repeat(64)}`,
        `{"sha256":"${'b'.repeat(64)}"}`,
        {},
        400,
      ],
      ['a body over 1 KiB', '/cache/purge', ' '.repeat(2048), {}, 413],
      ['a cross-site browser request', '/cache/purge', undefined, { origin: 'https://evil.example' }, 403],
    ])('refused: %s', async (_label, path, body, headers, status) => {
      const r = await adminPost(adminPort, path, body, headers);
      expect(r.status).toBe(status);
      expect(typeof r.json.error).toBe('string');
    });

    it('GET /cache/purge → 405', async () => {
      expect((await adminGet(adminPort, '/cache/purge')).status).toBe(405);
    });

    it('revoked at the IdP, no purge: refused once the positive TTL (2 s) has passed', async () => {
      const t = opaque();
      expect((await send('h1', '/opaque/x', bearer(t))).reply.status).toBe(200);
      idp.revoke(t);
      const revokedAt = Date.now();
      let status = 200;
      // Measured to the start of the first refused request: a slow (fresh mTLS) request is not latency.
      let refusedSentAt = revokedAt;
      while (status === 200 && Date.now() - revokedAt < 5_000) {
        await new Promise((r) => setTimeout(r, 100));
        refusedSentAt = Date.now();
        status = (await send('h1', '/opaque/x', bearer(t))).reply.status;
      }
      const latency = refusedSentAt - revokedAt;
      console.log(`revocation latency without purge: ${latency} ms (maxTtlSeconds: 2)`);
      expect(status).toBe(401);
      // About the 2 s TTL plus one polling step and request, well under the 5 s the loop allows.
      expect(latency).toBeLessThanOrEqual(3_500);
    });
  });

  describe('readiness and metrics', () => {
    it('/readyz is 200 once the JWKS was fetched at start', async () => {
      const r = await adminGet(adminPort, '/readyz');
      expect(r.status).toBe(200);
      expect(JSON.parse(r.body)).toEqual({ ready: true, notReady: [] });
    });

    it('decisions and provider counters are exported, labelled by route and provider only', async () => {
      expect(
        await gw.metric('portcullis_auth_decisions_total', { route: 'jwt', result: 'allow' }),
      ).toBeGreaterThan(0);
      expect(
        await gw.metric('portcullis_auth_decisions_total', {
          route: 'jwt',
          provider: 'none',
          result: 'ERR_AUTHN_MISSING',
        }),
      ).toBeGreaterThan(0);
      expect(
        await gw.metric('portcullis_auth_decisions_total', {
          route: 'write',
          provider: 'idp-jwt',
          result: 'ERR_AUTHZ_INSUFFICIENT_SCOPE',
        }),
      ).toBeGreaterThan(0);
      const text = await gw.app.registry.metrics();
      expect(text).toMatch(/^portcullis_auth_idp_requests_total\{provider="idp-opaque"\} [1-9]/m);
      expect(text).toMatch(/^portcullis_auth_cache_hits_total\{provider="idp-opaque"\} [1-9]/m);
      expect(text).toMatch(/^portcullis_auth_cache_entries\{provider="idp-jwt"\} \d+/m);
      for (const t of used) expect(text).not.toContain(t);
    });
  });

  it('the log never contains a token (53), and every auth denial carries its reason code and a hash prefix', () => {
    const logs = gw.logs();
    const text = JSON.stringify(logs);
    expect(used.length).toBeGreaterThan(20);
    for (const t of used) expect(text).not.toContain(t);
    const denials = logs.filter((l) => l.reason === 'ERR_AUTHN_INVALID_TOKEN');
    expect(denials.length).toBeGreaterThan(0);
    for (const l of denials) expect(l.tokenHash).toMatch(/^[0-9a-f]{12}$/);
  });
});

describe('a JWKS that is down at start', () => {
  let idp: FakeIdp;
  let up: TestUpstream;
  let gw: TestGateway;

  beforeAll(async () => {
    idp = await createFakeIdp();
    await idp.listen();
    idp.setFault('500', 'jwks');
    up = await startUpstream();
    gw = await startGateway((pki) => ({
      admin: { enabled: true, listen: '127.0.0.1:0' },
      authProviders: {
        corp: { type: 'jwt', issuer: idp.issuer, audience: AUD, jwksUri: idp.jwksUri, algorithms: ['ES256'] },
      },
      listeners: [
        tlsListener(pki, {
          routes: [
            { id: 'api', match: { pathPrefix: '/' }, upstream: up.url, auth: { providers: ['corp'] } },
          ],
        }),
      ],
    }));
  });

  afterAll(async () => {
    await gw.close();
    await up.close();
    await idp.close();
  });

  it('the gateway starts; /readyz is 503 naming the provider; requests get 503 with a bounded number of fetches; it recovers', async () => {
    const adminPort = gw.app.adminPort()!;
    const ready = await adminGet(adminPort, '/readyz');
    expect(ready.status).toBe(503);
    const body = JSON.parse(ready.body) as { ready: boolean; notReady: string[] };
    expect(body.ready).toBe(false);
    expect(body.notReady.join('\n')).toMatch(/^authProviders\.corp: jwks not fetched yet/);
    expect(gw.logs().some((l) => l.msg === 'not ready: requests on routes that need it get 503')).toBe(true);

    const t = await idp.sign({ sub: 'alice', aud: AUD });
    const before = idp.counts.jwks;
    for (let i = 0; i < 10; i++) {
      const r = await h1(gw.port(), gw.pki, { path: '/x', headers: { authorization: `Bearer ${t}` } });
      expect(r.status).toBe(503);
    }
    expect(up.seen).toHaveLength(0);
    // The backoff (1 s after the first failure) keeps an outage from being one fetch per request.
    expect(idp.counts.jwks - before).toBeLessThanOrEqual(1);

    idp.setFault('ok', 'jwks');
    await new Promise((r) => setTimeout(r, 2_100));
    const ok = await h1(gw.port(), gw.pki, { path: '/x', headers: { authorization: `Bearer ${t}` } });
    expect(ok.status).toBe(200);
    expect((await adminGet(adminPort, '/readyz')).status).toBe(200);
    expect(JSON.stringify(gw.logs())).not.toContain(t);
  });
});
