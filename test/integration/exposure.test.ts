/**
 * Threat model #107 (metrics exposure): `/metrics` is served only by the admin listener; on a data listener
 * it is an ordinary path, routed like any other (to the upstream, or 404 when no route matches).
 * Threat model #109 (log injection): CR, LF, ANSI escapes and forged JSON in the request line or headers
 * never forge a log line: every line the gateway writes is one JSON object, and control bytes are escaped.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { h1, rawTls } from '../helpers/clients.js';
import { startGateway, tlsListener, type TestGateway } from '../helpers/gateway.js';
import { startUpstream, type TestUpstream } from '../helpers/upstream.js';
import { adminGet } from '../helpers/admin.js';

let up: TestUpstream;
let gw: TestGateway;

beforeAll(async () => {
  up = await startUpstream();
  gw = await startGateway((pki) => ({
    admin: { enabled: true, listen: '127.0.0.1:0' },
    listeners: [
      tlsListener(pki, {
        routes: [
          { id: 'api', match: { pathPrefix: '/api' }, upstream: up.url },
          { id: 'echo', match: { pathPrefix: '/echo' }, upstream: 'builtin:echo' },
        ],
      }),
    ],
  }));
});

afterAll(async () => {
  await gw?.close();
  await up?.close();
});

describe('/metrics is not served on a data listener (threat model #107)', () => {
  it('no route for /metrics: 404 ERR_ROUTE_NOT_FOUND, no exposition, nothing upstream', async () => {
    const before = up.seen.length;
    const r = await h1(gw.port(), gw.pki, { path: '/metrics' });
    expect(r.status).toBe(404);
    expect(r.body).not.toContain('portcullis_');
    expect(r.body).not.toContain('# HELP');
    expect(up.seen.length).toBe(before);
  });

  it('under a routed prefix, /api/metrics goes to the upstream like any path', async () => {
    const r = await h1(gw.port(), gw.pki, { path: '/api/metrics' });
    expect(r.status).toBe(200);
    expect(r.body).not.toContain('# HELP portcullis_');
    expect(up.seen.at(-1)?.url).toBe('/api/metrics');
  });

  it('the admin listener, on loopback, is where the exposition is', async () => {
    const m = await adminGet(gw.app.adminPort() as number, '/metrics');
    expect(m.status).toBe(200);
    expect(m.body).toContain('# HELP portcullis_http_requests_total');
  });
});

describe('log injection (threat model #109)', () => {
  it('CR/LF, ANSI escapes and forged JSON in the target and headers never make a second log line', async () => {
    const port = gw.port();
    const forged = '{"level":30,"msg":"forged","listener":"main"}';
    const attempts = [
      // Percent-encoded CR LF + a forged JSON line in the path (the query never reaches the log).
      `GET /echo/a%0d%0a${encodeURIComponent(forged)}%1b%5b31m?x=%0a${encodeURIComponent(forged)} HTTP/1.1\r\nHost: localhost:${port}\r\nConnection: close\r\n\r\n`,
      // A raw ESC byte and an ANSI sequence in User-Agent and X-Request-Id.
      `GET /echo/ua HTTP/1.1\r\nHost: localhost:${port}\r\nUser-Agent: \x1b[31mred\x1b[0m ${forged}\r\nX-Request-Id: \x1b[2J\r\nConnection: close\r\n\r\n`,
      // Raw control bytes in the target: refused by the parser or the path rules.
      `GET /echo/\x1b[31m HTTP/1.1\r\nHost: localhost:${port}\r\nConnection: close\r\n\r\n`,
    ];
    const linesBefore = gw.logs().length;
    for (const a of attempts) {
      const r = await rawTls(port, gw.pki, a, { timeoutMs: 2_000 });
      expect(r.closed).toBe(true);
    }
    // Every line still parses as one JSON object (logs() throws on a broken line), none is the forgery,
    // and no raw control byte made it into any field.
    const entries = gw.logs().slice(linesBefore);
    expect(entries.length).toBeGreaterThanOrEqual(attempts.length);
    expect(entries.filter((e) => e.msg === 'forged')).toEqual([]);
    for (const e of entries) {
      for (const [k, v] of Object.entries(e)) {
        if (typeof v === 'string') {
          const clean = !v.includes('\r') && !v.includes('\n') && !v.includes(String.fromCharCode(0x1b));
          expect(clean, `${k}=${JSON.stringify(v)}`).toBe(true);
        }
      }
    }
    // What became of each: the encoded control bytes are refused by the path rules, the raw ones by
    // Node's HTTP parser; each is one 400 line with its reason.
    expect(entries.map((e) => [e.status, e.reason])).toEqual([
      [400, 'ERR_REQUEST_BAD_PATH'],
      [400, 'ERR_REQUEST_BAD_HEADER'],
      [400, 'ERR_REQUEST_BAD_PATH'],
    ]);
  });
});
