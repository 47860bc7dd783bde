/**
 * Issue 4 point 2, end to end: every metric family moves when its path is driven. The real gateway on
 * loopback (an HTTP listener requiring client certificates with a CRL, an HTTP listener with an ACL, a TCP
 * listener), a real upstream, a fake IdP over HTTP (JWKS and RFC 7662 introspection), real HTTP/1.1, HTTP/2,
 * TLS and raw TCP clients. Each case scrapes the admin listener's `/metrics` before and after driving one
 * path and asserts that the named series moved by exactly the expected amount (polling briefly: a refusal is
 * counted by the server after the client has seen the close).
 */
import { createServer as createHttpServer, type Server } from 'node:http';
import { constants as h2constants } from 'node:http2';
import { createServer as createNetServer, type AddressInfo, type Server as NetServer } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { h1, h2, h2session, tlsOptions } from '../helpers/clients.js';
import { parseSamples, scrapeText, type Sample } from '../helpers/admin.js';
import { startGateway, type TestGateway } from '../helpers/gateway.js';
import { createFakeIdp, type FakeIdp } from '../helpers/idp.js';
import type { TestClientName } from '../helpers/pki.js';
import {
  clientPem,
  partialClientHello,
  rawTcp,
  tlsAttempt,
  tlsRecordWithGarbage,
} from '../helpers/tls-probe.js';
import { startUpstream, type TestUpstream } from '../helpers/upstream.js';

// ---------------------------------------------------------------------------------------------------------
// Scraping

function sum(samples: readonly Sample[], name: string, labels: Record<string, string> = {}): number {
  let total = 0;
  for (const s of samples)
    if (s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)) total += s.value;
  return total;
}

function has(samples: readonly Sample[], name: string, labels: Record<string, string> = {}): boolean {
  return samples.some((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
}

/** One expected move: series `name` (summed over the samples matching `labels`) grows by `by`. */
type Move = readonly [name: string, labels: Record<string, string>, by: number];

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------------------------
// Fixtures

/** A plain-HTTP upstream that answers with a telemetry header of its own (the response direction). */
async function startTelemetryUpstream(): Promise<{ server: Server; url: string }> {
  const server = createHttpServer((req, res) => {
    req.resume();
    req.on('end', () => {
      res.writeHead(200, {
        'content-type': 'text/plain',
        traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
      });
      res.end('ok');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

/** A raw TCP echo server (the TCP listener's upstream). */
async function startTcpEcho(): Promise<NetServer> {
  const server = createNetServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => undefined);
    s.pipe(s);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return server;
}

/** Sends `payload` through the TCP listener as `client`, half-closes, and resolves with what came back. */
function pipeThrough(
  port: number,
  gw: TestGateway,
  client: TestClientName,
  payload: Buffer,
): Promise<{ bytes: number; error?: string }> {
  return new Promise((resolve) => {
    const s = tlsConnect({ ...tlsOptions(gw.pki, client), host: '127.0.0.1', port });
    let bytes = 0;
    let error: string | undefined;
    s.on('secureConnect', () => s.end(payload));
    s.on('data', (c: Buffer) => (bytes += c.length));
    s.on('error', (e: NodeJS.ErrnoException) => (error ??= e.code ?? e.message));
    s.on('close', () => resolve(error === undefined ? { bytes } : { bytes, error }));
  });
}

// Short enough for a quick test, long enough for a real handshake on a loaded CI machine.
const HANDSHAKE_MS = 1_500;
const BROKEN_ISSUER = 'https://broken-idp.test';

describe('metrics: every path moves its series (issue 4 point 2)', () => {
  let idp: FakeIdp;
  let up: TestUpstream;
  let tele: { server: Server; url: string };
  let echo: NetServer;
  let gw: TestGateway;
  let files: string;
  let port: number;
  let adminPort: number;
  let startedAt: number;
  let readyAt: number;
  let ca: Buffer;

  const scrape = async (): Promise<Sample[]> => parseSamples(await scrapeText(adminPort));

  /**
   * Scrapes, runs `action`, then scrapes until every move happened (at most 3 s), and asserts each series
   * moved by exactly its amount. Returns the action's result.
   */
  async function expectMoves<T>(moves: readonly Move[], action: () => Promise<T>): Promise<T> {
    const before = await scrape();
    const result = await action();
    const deadline = Date.now() + 3_000;
    let after = await scrape();
    const done = (s: Sample[]): boolean =>
      moves.every(([n, l, by]) => sum(s, n, l) - sum(before, n, l) >= by);
    while (!done(after) && Date.now() < deadline) {
      await sleep(25);
      after = await scrape();
    }
    const got = moves.map(([n, l]) => [n, l, sum(after, n, l) - sum(before, n, l)]);
    expect(got).toEqual(moves.map(([n, l, by]) => [n, l, by]));
    return result;
  }

  async function until(what: string, check: (s: Sample[]) => boolean, ms = 3_000): Promise<Sample[]> {
    const deadline = Date.now() + ms;
    for (;;) {
      const s = await scrape();
      if (check(s)) return s;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await sleep(25);
    }
  }

  const bearer = (t: string): Record<string, string> => ({ authorization: `Bearer ${t}` });
  const get = (path: string, headers: Record<string, string> = {}) => h1(port, gw.pki, { path, headers });

  beforeAll(async () => {
    idp = await createFakeIdp();
    await idp.listen();
    up = await startUpstream();
    tele = await startTelemetryUpstream();
    echo = await startTcpEcho();
    files = await mkdtemp(join(tmpdir(), 'portcullis-metrics-'));
    const secretFile = join(files, 'secret');
    await writeFile(secretFile, `${idp.clientSecret}\n`, { mode: 0o600 });
    const route = (
      id: string,
      upstream: string,
      auth?: Record<string, unknown>,
    ): Record<string, unknown> => ({
      id,
      match: { pathPrefix: `/${id}` },
      upstream,
      ...(auth ? { auth } : {}),
    });
    startedAt = Date.now();
    gw = await startGateway((pki) => {
      const tls = {
        cert: pki.server.cert,
        key: pki.server.key,
        clientCertificate: 'require',
        clientCa: pki.ca,
        crl: pki.crl,
      };
      return {
        admin: { enabled: true, listen: '127.0.0.1:0' },
        timeouts: { tlsHandshakeMs: HANDSHAKE_MS },
        authProviders: {
          'idp-jwt': {
            type: 'jwt',
            issuer: idp.issuer,
            audience: 'api',
            jwksUri: idp.jwksUri,
            algorithms: ['ES256'],
            jwksCooldownSeconds: 1,
          },
          // Nothing listens on port 1: every JWKS fetch fails.
          'broken-jwt': {
            type: 'jwt',
            issuer: BROKEN_ISSUER,
            audience: 'api',
            jwksUri: 'http://127.0.0.1:1/jwks',
            algorithms: ['ES256'],
          },
          'idp-opaque': {
            type: 'introspection',
            endpoint: idp.introspectionUri,
            clientId: idp.clientId,
            clientSecretFile: secretFile,
            timeoutMs: 1_000,
            cache: { maxEntries: 1, maxTtlSeconds: 60, negativeTtlSeconds: 0 },
          },
        },
        listeners: [
          {
            name: 'main',
            listen: '127.0.0.1:0',
            tls,
            routes: [
              route('up', up.url),
              route('hold', up.url),
              route('reset', up.url),
              route('down', 'http://127.0.0.1:1'),
              route('tele', tele.url),
              route('jwt', 'builtin:echo', { providers: ['idp-jwt'], scopes: ['read'] }),
              route('broken', 'builtin:echo', { providers: ['broken-jwt'] }),
              route('opaque', 'builtin:echo', { providers: ['idp-opaque'], scopes: ['read'] }),
            ],
          },
          {
            name: 'gated',
            listen: '127.0.0.1:0',
            tls,
            allowClients: ['CN=bob'],
            routes: [route('gated', 'builtin:echo')],
          },
          {
            name: 'comm',
            listen: '127.0.0.1:0',
            protocol: 'tcp',
            tls,
            allowClients: ['CN=alice'],
            upstream: `tcp://127.0.0.1:${(echo.address() as AddressInfo).port}`,
          },
        ],
      };
    });
    readyAt = Date.now();
    port = gw.port('main');
    adminPort = gw.app.adminPort() as number;
    ca = readFileSync(gw.pki.ca);
  });

  afterAll(async () => {
    await gw?.close();
    await up?.close();
    await idp?.close();
    await new Promise<void>((r) => (tele ? tele.server.close(() => r()) : r()));
    await new Promise<void>((r) => (echo ? echo.close(() => r()) : r()));
    if (files) await rm(files, { recursive: true, force: true });
  });

  describe('HTTP requests', () => {
    it('a good HTTP/1.1 request: request counter, both latency histograms, an http/1.1 handshake', async () => {
      const reply = await expectMoves(
        [
          [
            'portcullis_http_requests_total',
            { listener: 'main', route: 'up', method: 'GET', status_class: '2xx' },
            1,
          ],
          ['portcullis_http_request_duration_seconds_count', { listener: 'main', route: 'up' }, 1],
          ['portcullis_http_request_duration_seconds_bucket', { listener: 'main', route: 'up', le: '10' }, 1],
          ['portcullis_upstream_response_duration_seconds_count', { route: 'up' }, 1],
          ['portcullis_tls_handshakes_total', { listener: 'main', alpn: 'http/1.1' }, 1],
        ],
        // tlsAttempt offers ALPN http/1.1 (node:https offers none, which counts as alpn "none").
        () => tlsAttempt(port, { ca, client: clientPem(gw.pki, 'alice'), path: '/up/x' }),
      );
      expect(reply.status).toBe(200);
    });

    it('a good HTTP/2 request: the same series, an h2 handshake, and no stream left open', async () => {
      const reply = await expectMoves(
        [
          [
            'portcullis_http_requests_total',
            { listener: 'main', route: 'up', method: 'POST', status_class: '2xx' },
            1,
          ],
          ['portcullis_http_request_duration_seconds_count', { listener: 'main', route: 'up' }, 1],
          ['portcullis_upstream_response_duration_seconds_count', { route: 'up' }, 1],
          ['portcullis_tls_handshakes_total', { listener: 'main', alpn: 'h2' }, 1],
        ],
        async () => {
          const s = h2session(port, gw.pki);
          try {
            return await h2(s, { ':path': '/up/h2', ':method': 'POST' }, 'body');
          } finally {
            s.close();
          }
        },
      );
      expect(reply.status).toBe(200);
      await until(
        'streams back to 0',
        (s) => sum(s, 'portcullis_active_streams', { listener: 'main' }) === 0,
      );
    });

    it('no route: 404 under route "none", denial ERR_ROUTE_NOT_FOUND', async () => {
      const reply = await expectMoves(
        [
          [
            'portcullis_http_requests_total',
            { listener: 'main', route: 'none', method: 'GET', status_class: '4xx' },
            1,
          ],
          ['portcullis_http_denials_total', { listener: 'main', reason: 'ERR_ROUTE_NOT_FOUND' }, 1],
        ],
        () => get('/nowhere'),
      );
      expect(reply.status).toBe(404);
    });

    it('upstream down: 502, upstream error ERR_UPSTREAM_UNAVAILABLE under the route id', async () => {
      const reply = await expectMoves(
        [
          [
            'portcullis_http_requests_total',
            { listener: 'main', route: 'down', method: 'GET', status_class: '5xx' },
            1,
          ],
          ['portcullis_upstream_errors_total', { route: 'down', reason: 'ERR_UPSTREAM_UNAVAILABLE' }, 1],
        ],
        () => get('/down/x'),
      );
      expect(reply.status).toBe(502);
    });

    it('telemetry headers stripped: one request header, one response header', async () => {
      const reply = await expectMoves(
        [
          ['portcullis_telemetry_headers_stripped_total', { direction: 'request' }, 1],
          ['portcullis_telemetry_headers_stripped_total', { direction: 'response' }, 1],
        ],
        () => get('/tele/x', { traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' }),
      );
      expect(reply.status).toBe(200);
      expect(reply.headers['traceparent']).toBeUndefined();
    });
  });

  describe('HTTP/2 streams gauge', () => {
    /** Opens a /hold stream (headers answered, body never ends) and waits until the gauge shows it. */
    async function openHold(session: ReturnType<typeof h2session>) {
      const before = sum(await scrape(), 'portcullis_active_streams', { listener: 'main' });
      const stream = session.request({ ':path': '/hold' });
      stream.on('error', () => undefined);
      await new Promise<void>((resolve, reject) => {
        stream.once('response', () => resolve());
        stream.once('error', reject);
      });
      await until(
        'one more open stream',
        (s) => sum(s, 'portcullis_active_streams', { listener: 'main' }) === before + 1,
      );
      return { stream, before };
    }

    it('goes up while a /hold request is open, back down when the client resets the stream', async () => {
      const session = h2session(port, gw.pki);
      try {
        const { stream, before } = await openHold(session);
        expect(before).toBe(0);
        stream.close(h2constants.NGHTTP2_CANCEL);
        await until('stream closed', (s) => sum(s, 'portcullis_active_streams', { listener: 'main' }) === 0);
      } finally {
        session.destroy();
      }
    });

    it('back down when the whole session goes away mid-stream', async () => {
      const session = h2session(port, gw.pki);
      const { before } = await openHold(session);
      expect(before).toBe(0);
      session.destroy();
      await until('session gone', (s) => sum(s, 'portcullis_active_streams', { listener: 'main' }) === 0);
    });

    it('back down when the upstream dies mid-response (the gateway resets the stream)', async () => {
      const session = h2session(port, gw.pki);
      try {
        await h2(session, { ':path': '/reset?bytes=1024' }).catch(() => undefined);
        await until('stream errored', (s) => sum(s, 'portcullis_active_streams', { listener: 'main' }) === 0);
      } finally {
        session.destroy();
      }
      await until(
        'connections back',
        (s) => sum(s, 'portcullis_active_connections', { listener: 'main' }) === 0,
      );
    });
  });

  describe('authentication', () => {
    it('allow / missing token / bad token / insufficient scope are decisions by route, provider and result', async () => {
      const good = await idp.sign({ sub: 'alice', aud: 'api', scope: 'read' });
      const narrow = await idp.sign({ sub: 'alice', aud: 'api', scope: 'other' });
      const bad = `${good.slice(0, -6)}AAAAAA`;
      const replies = await expectMoves(
        [
          ['portcullis_auth_decisions_total', { route: 'jwt', provider: 'idp-jwt', result: 'allow' }, 1],
          ['portcullis_auth_decisions_total', { route: 'jwt', result: 'ERR_AUTHN_MISSING' }, 1],
          ['portcullis_auth_decisions_total', { route: 'jwt', result: 'ERR_AUTHN_INVALID_TOKEN' }, 1],
          [
            'portcullis_auth_decisions_total',
            { route: 'jwt', provider: 'idp-jwt', result: 'ERR_AUTHZ_INSUFFICIENT_SCOPE' },
            1,
          ],
          ['portcullis_http_denials_total', { listener: 'main', reason: 'ERR_AUTHN_MISSING' }, 1],
          ['portcullis_auth_cache_misses_total', { provider: 'idp-jwt' }, 3],
        ],
        async () => [
          await get('/jwt/a', bearer(good)),
          await get('/jwt/b'),
          await get('/jwt/c', bearer(bad)),
          await get('/jwt/d', bearer(narrow)),
        ],
      );
      expect(replies.map((r) => r.status)).toEqual([200, 401, 401, 403]);
    });

    it('JWKS: fetched at start (success) and failing at start (failure); a refresh moves each by one', async () => {
      await until(
        'the start-up fetches',
        (s) =>
          sum(s, 'portcullis_auth_jwks_refreshes_total', { provider: 'idp-jwt', result: 'success' }) >= 1 &&
          sum(s, 'portcullis_auth_jwks_refreshes_total', { provider: 'broken-jwt', result: 'failure' }) >= 1,
      );
      // Past the 1 s cooldown (idp-jwt) and the first 1 s backoff (broken-jwt).
      await sleep(Math.max(0, readyAt + 1_300 - Date.now()));
      await idp.rotate();
      const rotated = await idp.sign({ sub: 'alice', aud: 'api', scope: 'read' });
      const broken = await idp.sign({ iss: BROKEN_ISSUER, sub: 'alice', aud: 'api' });
      const replies = await expectMoves(
        [
          ['portcullis_auth_jwks_refreshes_total', { provider: 'idp-jwt', result: 'success' }, 1],
          ['portcullis_auth_jwks_refreshes_total', { provider: 'idp-jwt', result: 'failure' }, 0],
          ['portcullis_auth_jwks_refreshes_total', { provider: 'broken-jwt', result: 'failure' }, 1],
          ['portcullis_auth_jwks_refreshes_total', { provider: 'broken-jwt', result: 'success' }, 0],
          ['portcullis_auth_idp_failures_total', { provider: 'broken-jwt' }, 1],
          ['portcullis_auth_decisions_total', { route: 'broken', result: 'ERR_AUTHN_UNAVAILABLE' }, 1],
        ],
        async () => [await get('/jwt/rotated', bearer(rotated)), await get('/broken/x', bearer(broken))],
      );
      expect(replies.map((r) => r.status)).toEqual([200, 503]);
    });

    it('introspection active: one call, timed; the same token again is a cache hit; another token evicts it (maxEntries 1)', async () => {
      const t1 = idp.issueOpaque();
      const t2 = idp.issueOpaque();
      const first = await expectMoves(
        [
          ['portcullis_auth_introspection_calls_total', { provider: 'idp-opaque', result: 'active' }, 1],
          [
            'portcullis_auth_introspection_duration_seconds_count',
            { provider: 'idp-opaque', result: 'active' },
            1,
          ],
          [
            'portcullis_auth_introspection_duration_seconds_bucket',
            { provider: 'idp-opaque', result: 'active', le: '10' },
            1,
          ],
          ['portcullis_auth_cache_misses_total', { provider: 'idp-opaque' }, 1],
          ['portcullis_auth_cache_hits_total', { provider: 'idp-opaque' }, 0],
          ['portcullis_auth_idp_requests_total', { provider: 'idp-opaque' }, 1],
          [
            'portcullis_auth_decisions_total',
            { route: 'opaque', provider: 'idp-opaque', result: 'allow' },
            1,
          ],
        ],
        () => get('/opaque/1', bearer(t1)),
      );
      expect(first.status).toBe(200);
      expect(sum(await scrape(), 'portcullis_auth_cache_entries', { provider: 'idp-opaque' })).toBe(1);
      const again = await expectMoves(
        [
          ['portcullis_auth_cache_hits_total', { provider: 'idp-opaque' }, 1],
          ['portcullis_auth_cache_misses_total', { provider: 'idp-opaque' }, 0],
          ['portcullis_auth_introspection_calls_total', { provider: 'idp-opaque' }, 0],
        ],
        () => get('/opaque/2', bearer(t1)),
      );
      expect(again.status).toBe(200);
      const other = await expectMoves(
        [
          ['portcullis_auth_cache_evictions_total', { provider: 'idp-opaque' }, 1],
          ['portcullis_auth_cache_misses_total', { provider: 'idp-opaque' }, 1],
          ['portcullis_auth_introspection_calls_total', { provider: 'idp-opaque', result: 'active' }, 1],
        ],
        () => get('/opaque/3', bearer(t2)),
      );
      expect(other.status).toBe(200);
      expect(sum(await scrape(), 'portcullis_auth_cache_entries', { provider: 'idp-opaque' })).toBe(1);
    });

    it('introspection inactive: one call counted inactive, 401', async () => {
      const t = idp.issueOpaque({ active: false });
      const reply = await expectMoves(
        [
          ['portcullis_auth_introspection_calls_total', { provider: 'idp-opaque', result: 'inactive' }, 1],
          [
            'portcullis_auth_introspection_duration_seconds_count',
            { provider: 'idp-opaque', result: 'inactive' },
            1,
          ],
          ['portcullis_auth_decisions_total', { route: 'opaque', result: 'ERR_AUTHN_INVALID_TOKEN' }, 1],
        ],
        () => get('/opaque/x', bearer(t)),
      );
      expect(reply.status).toBe(401);
    });

    it('introspection IdP error (500): one call counted error, an IdP failure, 503', async () => {
      const t = idp.issueOpaque();
      idp.setFault('500', 'introspection');
      try {
        const reply = await expectMoves(
          [
            ['portcullis_auth_introspection_calls_total', { provider: 'idp-opaque', result: 'error' }, 1],
            [
              'portcullis_auth_introspection_duration_seconds_count',
              { provider: 'idp-opaque', result: 'error' },
              1,
            ],
            ['portcullis_auth_idp_failures_total', { provider: 'idp-opaque' }, 1],
            ['portcullis_auth_decisions_total', { route: 'opaque', result: 'ERR_AUTHN_UNAVAILABLE' }, 1],
          ],
          () => get('/opaque/x', bearer(t)),
        );
        expect(reply.status).toBe(503);
      } finally {
        idp.setFault('ok', 'introspection');
      }
    });
  });

  describe('refused connections, by reason', () => {
    const rejected = (listener: string, reason: string): Move => [
      'portcullis_tls_rejected_connections_total',
      { listener, reason },
      1,
    ];

    it('plaintext on the TLS port', async () => {
      const r = await expectMoves([rejected('main', 'plaintext')], () =>
        rawTcp(port, ['GET / HTTP/1.1\r\nHost: x\r\n\r\n']),
      );
      expect(r.closed).toBe(true);
    });

    it('no client certificate', async () => {
      const r = await expectMoves([rejected('main', 'no_client_cert')], () => tlsAttempt(port, { ca }));
      expect(r.status).toBe(0);
    });

    it('a client certificate from another CA', async () => {
      const r = await expectMoves([rejected('main', 'bad_client_cert')], () =>
        tlsAttempt(port, { ca, client: clientPem(gw.pki, 'otherCaAlice') }),
      );
      expect(r.status).toBe(0);
    });

    it('a revoked client certificate (CRL)', async () => {
      const r = await expectMoves([rejected('main', 'revoked')], () =>
        tlsAttempt(port, { ca, client: clientPem(gw.pki, 'revoked') }),
      );
      expect(r.status).toBe(0);
    });

    it('a TLS record of garbage: protocol', async () => {
      const r = await expectMoves([rejected('main', 'protocol')], () =>
        rawTcp(port, [tlsRecordWithGarbage()]),
      );
      expect(r.closed).toBe(true);
    });

    it(`a silent socket, and a ClientHello that never completes: handshake_timeout (${HANDSHAKE_MS} ms)`, async () => {
      const [silent, partial] = await expectMoves(
        [['portcullis_tls_rejected_connections_total', { listener: 'main', reason: 'handshake_timeout' }, 2]],
        () =>
          Promise.all([
            rawTcp(port, [], { timeoutMs: 5_000 }),
            rawTcp(port, [partialClientHello()], { timeoutMs: 5_000 }),
          ]),
      );
      expect(silent.closed).toBe(true);
      expect(partial.closed).toBe(true);
    });

    it('ACL miss on the TCP listener: refused connection "acl", nothing piped', async () => {
      const r = await expectMoves(
        [rejected('comm', 'acl'), ['portcullis_tcp_bytes_total', { listener: 'comm' }, 0]],
        () => pipeThrough(gw.port('comm'), gw, 'bob', Buffer.from('hello')),
      );
      expect(r.bytes).toBe(0);
    });

    it('ACL miss on an HTTP listener: a 403 denial ERR_IDENTITY_LISTENER_ACL (the connection itself is kept)', async () => {
      const reply = await expectMoves(
        [
          ['portcullis_http_denials_total', { listener: 'gated', reason: 'ERR_IDENTITY_LISTENER_ACL' }, 1],
          ['portcullis_http_requests_total', { listener: 'gated', route: 'gated', status_class: '4xx' }, 1],
        ],
        () => h1(gw.port('gated'), gw.pki, { path: '/gated' }),
      );
      expect(reply.status).toBe(403);
    });
  });

  it('TCP listener: bytes in and out, one connection, back to no active connection', async () => {
    const payload = Buffer.alloc(10_000, 0x61);
    const r = await expectMoves(
      [
        ['portcullis_tcp_bytes_total', { listener: 'comm', direction: 'in' }, payload.length],
        ['portcullis_tcp_bytes_total', { listener: 'comm', direction: 'out' }, payload.length],
        ['portcullis_tcp_connections_total', { listener: 'comm' }, 1],
        ['portcullis_tcp_connection_duration_seconds_count', { listener: 'comm' }, 1],
        ['portcullis_tls_handshakes_total', { listener: 'comm' }, 1],
      ],
      () => pipeThrough(gw.port('comm'), gw, 'alice', payload),
    );
    expect(r).toEqual({ bytes: payload.length });
    await until('no connection', (s) => sum(s, 'portcullis_active_connections', { listener: 'comm' }) === 0);
  });

  it('certificate and CRL expiry gauges, reload series, process and Node metrics are exposed', async () => {
    const s = await scrape();
    const nowS = Date.now() / 1000;
    for (const listener of ['main', 'gated', 'comm']) {
      expect(
        sum(s, 'portcullis_certificate_expiry_timestamp_seconds', { listener, kind: 'server' }),
      ).toBeGreaterThan(nowS);
      expect(
        sum(s, 'portcullis_certificate_expiry_timestamp_seconds', { listener, kind: 'ca' }),
      ).toBeGreaterThan(nowS);
      expect(sum(s, 'portcullis_crl_next_update_timestamp_seconds', { listener })).toBeGreaterThan(nowS);
    }
    const lastLoad = sum(s, 'portcullis_config_last_reload_success_timestamp_seconds');
    expect(lastLoad).toBeGreaterThanOrEqual(Math.floor(startedAt / 1000));
    expect(lastLoad).toBeLessThanOrEqual(nowS);
    expect(has(s, 'portcullis_config_reloads_total', { result: 'success' })).toBe(true);
    expect(has(s, 'portcullis_config_reloads_total', { result: 'failure' })).toBe(true);
    expect(sum(s, 'portcullis_config_reloads_total')).toBe(0);
    // Close-reason series exist from the start (a dashboard shows 0, not "no data").
    expect(
      has(s, 'portcullis_tcp_connections_total', { listener: 'comm', reason: 'upstream_unavailable' }),
    ).toBe(true);
    for (const name of [
      'portcullis_process_cpu_user_seconds_total',
      'portcullis_process_start_time_seconds',
      'portcullis_process_open_fds',
      'portcullis_nodejs_heap_size_used_bytes',
      'portcullis_nodejs_eventloop_lag_seconds',
      'portcullis_nodejs_version_info',
    ]) {
      expect(has(s, name), name).toBe(true);
    }
    expect(sum(s, 'portcullis_process_start_time_seconds')).toBeLessThanOrEqual(nowS);
  });
});
