/**
 * Paths, hosts and routing end to end (threat model #66, #67, #69, #81, #8, #9): the decision the gateway
 * takes and the path the upstream sees must agree; malformed hosts are refused; a Host or :authority
 * other than the TLS server name is misdirected.
 */
import { request as httpsRequest } from 'node:https';
import { readFileSync } from 'node:fs';
import type { ClientHttp2Session, OutgoingHttpHeaders } from 'node:http2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startGateway, tlsListener, type TestGateway } from '../helpers/gateway.js';
import { startUpstream, type TestUpstream } from '../helpers/upstream.js';
import { h1, h2, h2session, rawTls, type Reply } from '../helpers/clients.js';

/** Status line code of the first response in a raw reply, or 0 when nothing came back. */
function firstStatus(text: string): number {
  return Number(/^HTTP\/1\.1 (\d{3}) /.exec(text)?.[1] ?? 0);
}

/** The JSON log lines written since `from`, for reason-code assertions. */
function logsSince(gw: TestGateway, from: number): Record<string, unknown>[] {
  return gw.logs().slice(from);
}

/** Polls until `check` passes (access-log lines of forwarded requests are written after the response ends). */
async function eventually(check: () => void, ms = 2_000): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      check();
      return;
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}

/** An HTTP/2 request whose stream may be reset: resolves with status -1 and the RST code instead of rejecting. */
async function h2OrReset(
  s: ClientHttp2Session,
  headers: OutgoingHttpHeaders,
): Promise<Reply & { rst?: number }> {
  try {
    return await h2(s, headers);
  } catch (err) {
    return { status: -1, headers: {}, body: String(err) };
  }
}

/** One HTTP/1.1 request over a TLS connection WITHOUT SNI (servername ''), as a client connecting by IP does. */
function h1NoSni(port: number, gw: TestGateway, path: string, host: string): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      {
        host: '127.0.0.1',
        port,
        path,
        method: 'GET',
        headers: { host },
        agent: false,
        servername: '',
        ca: readFileSync(gw.pki.ca),
        cert: readFileSync(gw.pki.clients.alice.cert),
        key: readFileSync(gw.pki.clients.alice.key),
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: Buffer.concat(chunks).toString('utf8'),
          }),
        );
      },
    );
    req.on('error', reject);
    req.end();
  });
}

describe('paths: the authorised path is the forwarded path (threat model #66, #67)', () => {
  let up: TestUpstream;
  let gw: TestGateway;
  let port: number;
  beforeAll(async () => {
    up = await startUpstream();
    gw = await startGateway((pki) => ({
      listeners: [
        tlsListener(pki, {
          routes: [
            { id: 'public', match: { pathPrefix: '/public' }, upstream: up.url },
            { id: 'admin', match: { pathPrefix: '/admin' }, upstream: up.url, allowClients: ['CN=nobody'] },
          ],
        }),
      ],
    }));
    port = gw.port();
  });
  afterAll(async () => {
    await gw.close();
    await up.close();
  });

  type Outcome = { status: 200; forwarded: string } | { status: 400 | 403 | 404; reason: string };
  const deny = (status: 400 | 403 | 404, reason: string): Outcome => ({ status, reason });
  const BAD_PATH = deny(400, 'ERR_REQUEST_BAD_PATH');
  const ADMIN = deny(403, 'ERR_AUTHZ_ROUTE_ACL');
  /** Refused by Node's HTTP parser (HPE_INVALID_URL) before the handler runs; the listener logs it. */
  const PARSER = deny(400, 'ERR_REQUEST_BAD_PATH');

  // [request line (method + target), expected outcome]
  const CASES: readonly [string, (port: number) => string, Outcome][] = [
    // threat model #67, every row
    ['/public/../admin', () => 'GET /public/../admin', ADMIN],
    ['/public/%2e%2e/admin', () => 'GET /public/%2e%2e/admin', ADMIN],
    ['/public/%2E%2E/admin', () => 'GET /public/%2E%2E/admin', ADMIN],
    ['/public/..%2fadmin', () => 'GET /public/..%2fadmin', BAD_PATH],
    [
      '/public/%252e%252e/admin',
      () => 'GET /public/%252e%252e/admin',
      { status: 200, forwarded: '/public/%252e%252e/admin' },
    ],
    ['/public\\..\\admin', () => 'GET /public\\..\\admin', BAD_PATH],
    ['//admin/x', () => 'GET //admin/x', ADMIN],
    ['/admin;x', () => 'GET /admin;x', BAD_PATH],
    ['/public;/../admin', () => 'GET /public;/../admin', BAD_PATH],
    ['/ADMIN', () => 'GET /ADMIN', deny(404, 'ERR_ROUTE_NOT_FOUND')],
    ['/admin/.', () => 'GET /admin/.', ADMIN],
    ['/%61dmin', () => 'GET /%61dmin', ADMIN],
    ['/admin%00', () => 'GET /admin%00', BAD_PATH],
    ['/admin#frag', () => 'GET /admin#frag', BAD_PATH],
    ['/public#/../admin', () => 'GET /public#/../admin', BAD_PATH],
    // more of the same family
    ['/public/./x', () => 'GET /public/./x', { status: 200, forwarded: '/public/x' }],
    ['/public//x?q=1', () => 'GET /public//x?q=1', { status: 200, forwarded: '/public/x?q=1' }],
    ['/public/%7euser', () => 'GET /public/%7euser', { status: 200, forwarded: '/public/~user' }],
    [
      '/public/x?next=/admin',
      () => 'GET /public/x?next=/admin',
      { status: 200, forwarded: '/public/x?next=/admin' },
    ],
    ['/public/%2e%2e/%2e%2e/admin', () => 'GET /public/%2e%2e/%2e%2e/admin', BAD_PATH],
    ['/public/..%5cadmin', () => 'GET /public/..%5cadmin', BAD_PATH],
    ['/adminx', () => 'GET /adminx', deny(404, 'ERR_ROUTE_NOT_FOUND')],
    // threat model #66: absolute-form
    ['absolute-form, same host, /admin/x', (p) => `GET http://localhost:${p}/admin/x`, ADMIN],
    [
      'absolute-form, same host, /public/x',
      (p) => `GET http://localhost:${p}/public/x?q=1`,
      { status: 200, forwarded: '/public/x?q=1' },
    ],
    [
      'absolute-form, same host, /public/../admin',
      (p) => `GET https://LOCALHOST:${p}/public/../admin`,
      ADMIN,
    ],
    ['absolute-form, another host', () => 'GET http://evil/admin', BAD_PATH],
    ['absolute-form, userinfo', (p) => `GET http://user@localhost:${p}/public/x`, BAD_PATH],
    ['absolute-form, fragment', (p) => `GET http://localhost:${p}/public#/../admin`, BAD_PATH],
    // other request-target forms (RFC 9112 §3.2)
    ['GET *', () => 'GET *', BAD_PATH],
    ['OPTIONS *', () => 'OPTIONS *', BAD_PATH],
    ['no leading slash', () => 'GET admin', PARSER],
  ];

  it.each(CASES)('%s', async (_label, line, expected) => {
    const seenBefore = up.seen.length;
    const logsBefore = gw.logs().length;
    const r = await rawTls(
      port,
      gw.pki,
      `${line(port)} HTTP/1.1\r\nHost: localhost:${port}\r\nConnection: close\r\n\r\n`,
    );
    const status = firstStatus(r.text);
    expect(status).toBe(expected.status);
    if (expected.status === 200) {
      // The decision matches what the upstream saw: the public route, and exactly the authorised path.
      expect(up.seen.length - seenBefore).toBe(1);
      expect(up.seen[seenBefore]!.url).toBe(expected.forwarded);
      expect(up.seen[seenBefore]!.url).not.toMatch(/^\/+admin/i);
      await eventually(() =>
        expect(logsSince(gw, logsBefore).some((l) => l.route === 'public' && l.status === 200)).toBe(true),
      );
    } else {
      expect(up.seen.length).toBe(seenBefore);
      expect(
        logsSince(gw, logsBefore).filter((l) => l.reason === expected.reason && l.status === expected.status),
      ).toHaveLength(1);
      if (expected.status === 400) expect(r.closed).toBe(true);
    }
  });

  it('CONNECT host:443 → refused (405), never forwarded', async () => {
    const seenBefore = up.seen.length;
    const logsBefore = gw.logs().length;
    const r = await rawTls(
      port,
      gw.pki,
      `CONNECT localhost:443 HTTP/1.1\r\nHost: localhost:443\r\n\r\nGET /public/tunnelled HTTP/1.1\r\nHost: localhost:${port}\r\n\r\n`,
    );
    expect(r.closed).toBe(true);
    expect(firstStatus(r.text)).toBe(405);
    // One status line only: the request tunnelled behind the CONNECT got no answer of its own (a bare `200`
    // would also match the random request id in the refusal's body).
    expect(r.text.match(/^HTTP\/1\.1 \d{3} /gm)).toHaveLength(1);
    expect(up.seen.length).toBe(seenBefore);
    expect(logsSince(gw, logsBefore).filter((l) => l.reason === 'ERR_REQUEST_METHOD_REFUSED')).toHaveLength(1);
  });

  describe('HTTP/2 :path', () => {
    let s: ClientHttp2Session;
    beforeAll(() => {
      s = h2session(port, gw.pki);
    });
    afterAll(() => {
      s.close();
    });

    it.each<[string, OutgoingHttpHeaders, Outcome | 'reset']>([
      ['/public/../admin', { ':path': '/public/../admin' }, ADMIN],
      ['/public/%2e%2e/admin', { ':path': '/public/%2e%2e/admin' }, ADMIN],
      ['//admin/x', { ':path': '//admin/x' }, ADMIN],
      ['/public\\..\\admin', { ':path': '/public\\..\\admin' }, BAD_PATH],
      ['/admin;x', { ':path': '/admin;x' }, BAD_PATH],
      ['/admin#frag', { ':path': '/admin#frag' }, BAD_PATH],
      [
        '/public/%252e%252e/admin',
        { ':path': '/public/%252e%252e/admin' },
        { status: 200, forwarded: '/public/%252e%252e/admin' },
      ],
      ['OPTIONS *', { ':method': 'OPTIONS', ':path': '*' }, BAD_PATH],
      // nghttp2 resets a non-slash :path (Node baseline, RFC 9113 §8.3.1)
      ['absolute URL in :path', { ':path': 'http://evil/admin' }, 'reset'],
      ['admin (no slash)', { ':path': 'admin' }, 'reset'],
    ])('%s', async (_label, headers, expected) => {
      const seenBefore = up.seen.length;
      const logsBefore = gw.logs().length;
      const r = await h2OrReset(s, headers);
      if (expected === 'reset') {
        expect(r.status).toBe(-1);
        expect(up.seen.length).toBe(seenBefore);
        return;
      }
      expect(r.status).toBe(expected.status);
      if (expected.status === 200) {
        expect(up.seen.length - seenBefore).toBe(1);
        expect(up.seen[seenBefore]!.url).toBe(expected.forwarded);
      } else {
        expect(up.seen.length).toBe(seenBefore);
        expect(
          logsSince(gw, logsBefore).filter(
            (l) => l.reason === expected.reason && l.status === expected.status,
          ),
        ).toHaveLength(1);
      }
    });

    it('CONNECT → 405 ERR_REQUEST_METHOD_REFUSED as an HTTP/2 answer, never a 200', async () => {
      const seenBefore = up.seen.length;
      const logsBefore = gw.logs().length;
      const r = await new Promise<{ status: number; body: string }>((resolve) => {
        const st = s.request({ ':method': 'CONNECT', ':authority': 'localhost:443' });
        let status = 0;
        const chunks: Buffer[] = [];
        st.on('response', (h) => (status = Number(h[':status'])));
        st.on('data', (c: Buffer) => chunks.push(c));
        st.on('error', () => undefined);
        st.on('close', () => resolve({ status, body: Buffer.concat(chunks).toString('utf8') }));
        st.end();
      });
      expect(r.status).toBe(405);
      expect(r.body).not.toContain('HTTP/1.1');
      expect(up.seen.length).toBe(seenBefore);
      expect(
        logsSince(gw, logsBefore).filter((l) => l.reason === 'ERR_REQUEST_METHOD_REFUSED' && l.status === 405),
      ).toHaveLength(1);
    });
  });
});

describe('hosts: Host and :authority validation, SNI binding (threat model #69, #81, #8, #9)', () => {
  let up: TestUpstream;
  let gw: TestGateway;
  let port: number;
  beforeAll(async () => {
    up = await startUpstream();
    gw = await startGateway((pki) => ({
      listeners: [tlsListener(pki, { routes: [{ id: 'up', match: { pathPrefix: '/' }, upstream: up.url }] })],
    }));
    port = gw.port();
  });
  afterAll(async () => {
    await gw.close();
    await up.close();
  });

  it.each<[string, (port: number) => string, string]>([
    ['no Host (HTTP/1.1)', () => 'GET /x HTTP/1.1\r\n', 'ERR_REQUEST_BAD_HOST'],
    ['no Host (HTTP/1.0)', () => 'GET /x HTTP/1.0\r\n', 'ERR_REQUEST_BAD_HOST'],
    ['empty Host', () => 'GET /x HTTP/1.1\r\nHost:\r\n', 'ERR_REQUEST_BAD_HOST'],
    [
      'two Host lines',
      (p) => `GET /x HTTP/1.1\r\nHost: localhost:${p}\r\nHost: evil.example\r\n`,
      'ERR_REQUEST_BAD_HOST',
    ],
    [
      'two Host lines, same value',
      (p) => `GET /x HTTP/1.1\r\nHost: localhost:${p}\r\nhost: localhost:${p}\r\n`,
      'ERR_REQUEST_BAD_HOST',
    ],
    [
      'Host: example.com/\\:552',
      () => 'GET /x HTTP/1.1\r\nHost: example.com/\\:552\r\n',
      'ERR_REQUEST_BAD_HOST',
    ],
    ['Host: user@evil', () => 'GET /x HTTP/1.1\r\nHost: user@evil\r\n', 'ERR_REQUEST_BAD_HOST'],
    [
      'Host: user@localhost',
      (p) => `GET /x HTTP/1.1\r\nHost: alice@localhost:${p}\r\n`,
      'ERR_REQUEST_BAD_HOST',
    ],
    ['Host: ..examp-LE.com', () => 'GET /x HTTP/1.1\r\nHost: ..examp-LE.com\r\n', 'ERR_REQUEST_BAD_HOST'],
    ['Host: -bad.example', () => 'GET /x HTTP/1.1\r\nHost: -bad.example\r\n', 'ERR_REQUEST_BAD_HOST'],
    ['Host with a space', () => 'GET /x HTTP/1.1\r\nHost: local host\r\n', 'ERR_REQUEST_BAD_HOST'],
    ['Host with a path', (p) => `GET /x HTTP/1.1\r\nHost: localhost:${p}/admin\r\n`, 'ERR_REQUEST_BAD_HOST'],
    ['Host: localhost:', () => 'GET /x HTTP/1.1\r\nHost: localhost:\r\n', 'ERR_REQUEST_BAD_HOST'],
    // refused by Node's HTTP parser (HPE_INVALID_HEADER_TOKEN); the listener logs the reason
    ['Host with a control byte', () => 'GET /x HTTP/1.1\r\nHost: a\x02\r\n', 'ERR_REQUEST_BAD_HEADER'],
    ['Host with a NUL', () => 'GET /x HTTP/1.1\r\nHost: localhost\x00.evil\r\n', 'ERR_REQUEST_BAD_HEADER'],
  ])('%s → 400', async (_label, head, reason) => {
    const seenBefore = up.seen.length;
    const logsBefore = gw.logs().length;
    const r = await rawTls(port, gw.pki, `${head(port)}Connection: close\r\n\r\n`);
    expect(firstStatus(r.text)).toBe(400);
    expect(r.closed).toBe(true);
    expect(up.seen.length).toBe(seenBefore);
    expect(logsSince(gw, logsBefore).filter((l) => l.reason === reason && l.status === 400)).toHaveLength(1);
  });

  it.each<[string, string]>([
    ['upper case and a trailing dot are normalised for routing and the SNI check', 'LOCALHOST.'],
    ['with the port', 'localhost:PORT'],
  ])('valid Host, %s → routed', async (_label, host) => {
    const seenBefore = up.seen.length;
    const r = await rawTls(
      port,
      gw.pki,
      `GET /ok HTTP/1.1\r\nHost: ${host.replace('PORT', String(port))}\r\nConnection: close\r\n\r\n`,
    );
    expect(firstStatus(r.text)).toBe(200);
    expect(up.seen.length - seenBefore).toBe(1);
  });

  describe('SNI ≠ Host → 421 ERR_REQUEST_MISDIRECTED (threat model #8)', () => {
    it.each<[string]>([['other.example'], ['127.0.0.1'], ['[::1]'], ['localhost.evil.example']])(
      'HTTP/1.1, SNI localhost, Host %s',
      async (host) => {
        const seenBefore = up.seen.length;
        const logsBefore = gw.logs().length;
        const r = await h1(port, gw.pki, { path: '/x', headers: { host } });
        expect(r.status).toBe(421);
        expect(up.seen.length).toBe(seenBefore);
        expect(
          logsSince(gw, logsBefore).filter((l) => l.reason === 'ERR_REQUEST_MISDIRECTED' && l.status === 421),
        ).toHaveLength(1);
      },
    );

    it('HTTP/1.1, SNI localhost, absolute-form naming another host with a matching Host header → refused', async () => {
      const seenBefore = up.seen.length;
      const r = await rawTls(
        port,
        gw.pki,
        'GET http://other.example/x HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n',
      );
      expect(firstStatus(r.text)).toBe(421);
      expect(up.seen.length).toBe(seenBefore);
    });
  });

  describe('HTTP/2 :authority (threat model #81, #9)', () => {
    let s: ClientHttp2Session;
    beforeAll(() => {
      s = h2session(port, gw.pki);
    });
    afterAll(() => {
      s.close();
    });

    it.each<[string, (port: number) => OutgoingHttpHeaders, number, string | null]>([
      [
        ':authority ≠ host',
        (p) => ({ ':authority': `localhost:${p}`, host: 'other.example' }),
        400,
        'ERR_REQUEST_BAD_HOST',
      ],
      [
        ':authority ≠ host (port only)',
        (p) => ({ ':authority': `localhost:${p}`, host: 'localhost:1' }),
        400,
        'ERR_REQUEST_BAD_HOST',
      ],
      // nghttp2 resets these streams itself (Node baseline): status -1 here. Userinfo in :authority
      // (RFC 9113 §8.3.1) is refused so since nghttp2 1.70 (Node 24); Node 20 passed it to the gateway,
      // which answered 400 ERR_REQUEST_BAD_HOST (as it still does for a Host with userinfo).
      [':authority with userinfo', (p) => ({ ':authority': `user:pw@localhost:${p}` }), -1, null],
      [':authority with a path', (p) => ({ ':authority': `localhost:${p}/admin` }), -1, null],
      ['host only, no :authority → accepted', (p) => ({ host: `localhost:${p}` }), 200, null],
      [
        ':authority = host (case differs) → accepted',
        (p) => ({ ':authority': `localhost:${p}`, host: `LOCALHOST:${p}` }),
        200,
        null,
      ],
      [
        'another :authority on the same connection → 421',
        () => ({ ':authority': 'other.example' }),
        421,
        'ERR_REQUEST_MISDIRECTED',
      ],
    ])('%s', async (_label, headers, status, reason) => {
      const seenBefore = up.seen.length;
      const logsBefore = gw.logs().length;
      const r = await h2OrReset(s, { ':path': '/x', ...headers(port) });
      expect(r.status).toBe(status);
      if (status === 200) {
        expect(up.seen.length - seenBefore).toBe(1);
        expect(up.seen[seenBefore]!.headers.host).toBe(`localhost:${port}`);
      } else {
        expect(up.seen.length).toBe(seenBefore);
        if (reason !== null)
          expect(
            logsSince(gw, logsBefore).filter((l) => l.reason === reason && l.status === status),
          ).toHaveLength(1);
      }
    });

    it('one session: stream 1 for localhost is served, stream 3 for another host gets 421, stream 5 is served again', async () => {
      const seenBefore = up.seen.length;
      const session = h2session(port, gw.pki);
      try {
        const first = await h2(session, { ':path': '/first' });
        const second = await h2(session, { ':path': '/second', ':authority': 'other.example' });
        const third = await h2(session, { ':path': '/third' });
        expect([first.status, second.status, third.status]).toEqual([200, 421, 200]);
        expect(up.seen.slice(seenBefore).map((x) => x.url)).toEqual(['/first', '/third']);
      } finally {
        session.close();
      }
    });
  });

  describe('no SNI (a client connecting by IP address)', () => {
    it.each<[string]>([['other.example'], ['localhost'], ['127.0.0.1:PORT']])(
      'Host %s → routed normally',
      async (host) => {
        const seenBefore = up.seen.length;
        const r = await h1NoSni(port, gw, '/nosni', host.replace('PORT', String(port)));
        expect(r.status).toBe(200);
        expect(up.seen.length - seenBefore).toBe(1);
        expect(up.seen[seenBefore]!.headers.host).toBe(host.replace('PORT', String(port)));
      },
    );

    it('a malformed Host is still refused', async () => {
      const seenBefore = up.seen.length;
      const r = await h1NoSni(port, gw, '/nosni', 'user@evil');
      expect(r.status).toBe(400);
      expect(up.seen.length).toBe(seenBefore);
    });
  });
});

describe('routing (host precedence, longest prefix, segment boundary)', () => {
  let up: TestUpstream;
  let gw: TestGateway;
  let port: number;
  beforeAll(async () => {
    up = await startUpstream();
    gw = await startGateway((pki) => ({
      listeners: [
        tlsListener(pki, {
          routes: [
            { id: 'any-api', match: { pathPrefix: '/api' }, upstream: up.url },
            { id: 'wild', match: { host: '*.example.com', pathPrefix: '/' }, upstream: up.url },
            { id: 'exact', match: { host: 'api.example.com', pathPrefix: '/' }, upstream: up.url },
            { id: 'any-api-v1', match: { pathPrefix: '/api/v1' }, upstream: up.url },
          ],
        }),
      ],
    }));
    port = gw.port();
  });
  afterAll(async () => {
    await gw.close();
    await up.close();
  });

  it.each<[string, string, string | null]>([
    ['api.example.com', '/x', 'exact'],
    ['API.Example.COM.', '/api/v1/x', 'exact'],
    ['www.example.com', '/api/x', 'wild'],
    ['a.b.example.com', '/api/x', 'any-api'],
    ['other.test', '/api', 'any-api'],
    ['other.test', '/api/x', 'any-api'],
    ['other.test', '/api/v1/jobs', 'any-api-v1'],
    ['other.test', '/api/v10', 'any-api'],
    ['other.test', '/apix', null],
    ['other.test', '/', null],
    ['example.com', '/x', null],
  ])('Host %s, path %s → %s', async (host, path, routeId) => {
    const seenBefore = up.seen.length;
    const logsBefore = gw.logs().length;
    // No SNI, so the Host alone picks the route.
    const r = await h1NoSni(port, gw, path, host);
    if (routeId === null) {
      expect(r.status).toBe(404);
      expect(up.seen.length).toBe(seenBefore);
      expect(
        logsSince(gw, logsBefore).filter((l) => l.reason === 'ERR_ROUTE_NOT_FOUND' && l.status === 404),
      ).toHaveLength(1);
      return;
    }
    expect(r.status).toBe(200);
    expect(up.seen.length - seenBefore).toBe(1);
    expect(up.seen[seenBefore]!.url).toBe(path);
    await eventually(() =>
      expect(logsSince(gw, logsBefore).find((l) => l.msg === 'request')?.route).toBe(routeId),
    );
  });
});
