/**
 * HTTP/1.1 framing and smuggling over real TLS (threat model #59, #61–#63, #65, #70): every ambiguous
 * message is refused with 400 and a closed connection, and a request pipelined behind it never reaches
 * the upstream. Raw bytes only: no client library would send these.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startGateway, tlsListener, type TestGateway } from '../helpers/gateway.js';
import { startUpstream, type SeenRequest, type TestUpstream } from '../helpers/upstream.js';
import { connect as tlsConnect } from 'node:tls';
import { rawTls, tlsOptions } from '../helpers/clients.js';

/** A request that must never reach the upstream: it is pipelined behind the attack in the same write. */
const SMUGGLED_PATH = '/smuggled';

interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/** Parses the HTTP/1.1 responses in `text` (Content-Length or chunked bodies); stops at an incomplete one. */
function parseResponses(text: string): RawResponse[] {
  const out: RawResponse[] = [];
  let rest = text;
  for (;;) {
    const end = rest.indexOf('\r\n\r\n');
    if (end === -1) return out;
    const [statusLine, ...lines] = rest.slice(0, end).split('\r\n');
    const headers: Record<string, string> = {};
    for (const l of lines) {
      const i = l.indexOf(':');
      headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
    }
    const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(statusLine ?? '')?.[1] ?? 0);
    rest = rest.slice(end + 4);
    let body = '';
    if (headers['transfer-encoding'] === 'chunked') {
      for (;;) {
        const lineEnd = rest.indexOf('\r\n');
        if (lineEnd === -1) return out;
        const size = parseInt(rest.slice(0, lineEnd), 16);
        if (rest.length < lineEnd + 2 + size + 2) return out;
        body += rest.slice(lineEnd + 2, lineEnd + 2 + size);
        rest = rest.slice(lineEnd + 2 + size + 2);
        if (size === 0) break;
      }
    } else {
      const len = Number(headers['content-length'] ?? 0);
      if (rest.length < len) return out;
      body = rest.slice(0, len);
      rest = rest.slice(len);
    }
    out.push({ status, headers, body });
  }
}

/** Every value of `name` (case-insensitive) among the raw header lines the upstream received. */
function values(seen: SeenRequest, name: string): string[] {
  const out: string[] = [];
  for (let i = 0; i + 1 < seen.rawHeaders.length; i += 2) {
    if ((seen.rawHeaders[i] as string).toLowerCase() === name) out.push(seen.rawHeaders[i + 1] as string);
  }
  return out;
}

const settle = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('HTTP/1.1 smuggling and framing (threat model #59, #61–#63, #65, #70)', () => {
  let up: TestUpstream;
  let gw: TestGateway;
  let port: number;
  /** `Host:` line for this gateway. */
  let H: string;
  /** The valid request pipelined behind every attack. */
  let SMUGGLED: string;

  beforeAll(async () => {
    up = await startUpstream();
    gw = await startGateway((pki) => ({
      listeners: [
        tlsListener(pki, {
          routes: [
            { id: 'up', match: { pathPrefix: '/' }, upstream: up.url },
            { id: 'admin', match: { pathPrefix: '/admin' }, upstream: up.url, allowClients: ['CN=nobody'] },
          ],
        }),
      ],
    }));
    port = gw.port();
    H = `Host: localhost:${port}\r\n`;
    SMUGGLED = `GET ${SMUGGLED_PATH} HTTP/1.1\r\n${H}X-Forwarded-Client-Cert: SPOOF\r\nConnection: close\r\n\r\n`;
  });
  afterAll(async () => {
    await gw.close();
    await up.close();
  });

  /**
   * Sends `attack` with a valid request pipelined behind it, in one write; waits a little after the close
   * so that anything the gateway might still forward has time to arrive upstream.
   */
  async function attack(bytes: string): Promise<{
    responses: RawResponse[];
    text: string;
    closed: boolean;
    seen: SeenRequest[];
    logs: Record<string, unknown>[];
    logsFrom: number;
  }> {
    const seenBefore = up.seen.length;
    const logsBefore = gw.logs().length;
    const r = await rawTls(port, gw.pki, bytes + SMUGGLED, { timeoutMs: 3_000 });
    await settle(150);
    return {
      responses: parseResponses(r.text),
      text: r.text,
      closed: r.closed,
      seen: up.seen.slice(seenBefore),
      logs: gw.logs().slice(logsBefore),
      logsFrom: logsBefore,
    };
  }

  describe('refused by the HTTP/1 parser: 400 + reason, closed, the upstream sees nothing [Node baseline]', () => {
    const BAD_HEADER = 'ERR_REQUEST_BAD_HEADER';
    const BAD_PATH = 'ERR_REQUEST_BAD_PATH';
    it.each<[string, () => string, string]>([
      // 59: CL.TE and TE.CL
      [
        'CL.TE',
        () => `POST /x HTTP/1.1\r\n${H}Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
        BAD_HEADER,
      ],
      [
        'TE.CL',
        () => `POST /x HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n`,
        BAD_HEADER,
      ],
      // 61: Content-Length games
      [
        'duplicate Content-Length, equal',
        () => `POST /x HTTP/1.1\r\n${H}Content-Length: 2\r\nContent-Length: 2\r\n\r\nab`,
        BAD_HEADER,
      ],
      [
        'duplicate Content-Length, unequal',
        () => `POST /x HTTP/1.1\r\n${H}Content-Length: 2\r\nContent-Length: 40\r\n\r\nab`,
        BAD_HEADER,
      ],
      [
        'Content-Length list "2, 2"',
        () => `POST /x HTTP/1.1\r\n${H}Content-Length: 2, 2\r\n\r\nab`,
        BAD_HEADER,
      ],
      ['Content-Length: +2', () => `POST /x HTTP/1.1\r\n${H}Content-Length: +2\r\n\r\nab`, BAD_HEADER],
      ['Content-Length: -1', () => `POST /x HTTP/1.1\r\n${H}Content-Length: -1\r\n\r\nab`, BAD_HEADER],
      ['Content-Length: 0x2', () => `POST /x HTTP/1.1\r\n${H}Content-Length: 0x2\r\n\r\nab`, BAD_HEADER],
      ['space before the colon', () => `POST /x HTTP/1.1\r\n${H}Content-Length : 2\r\n\r\nab`, BAD_HEADER],
      [
        'header line starting with a space (CVE-2024-27982)',
        () => `POST /x HTTP/1.1\r\n${H} Content-Length: 2\r\n\r\nab`,
        BAD_HEADER,
      ],
      // 62: line endings and control bytes
      ['bare LF line endings', () => `GET /x HTTP/1.1\n${H.replace('\r\n', '\n')}X-A: 1\n\n`, BAD_PATH],
      ['bare CR', () => `GET /x HTTP/1.1\r${H}\r\n`, BAD_HEADER],
      ['obs-fold continuation', () => `GET /x HTTP/1.1\r\n${H}X-A: a\r\n b\r\n\r\n`, BAD_HEADER],
      [
        'obs-fold hiding a header',
        () => `GET /x HTTP/1.1\r\n${H}X-A: a\r\n\tX-Forwarded-Client-Cert: SPOOF\r\n\r\n`,
        BAD_HEADER,
      ],
      ['NUL in a value', () => `GET /x HTTP/1.1\r\n${H}X-A: a\x00b\r\n\r\n`, BAD_HEADER],
      ['\\x01 in a value', () => `GET /x HTTP/1.1\r\n${H}X-A: a\x01b\r\n\r\n`, BAD_HEADER],
      [
        'CR inside a value',
        () => `GET /x HTTP/1.1\r\n${H}X-A: a\rX-Forwarded-Client-Cert: SPOOF\r\n\r\n`,
        BAD_HEADER,
      ],
      // Transfer-Encoding variants
      [
        'Transfer-Encoding: chunked, identity',
        () => `POST /x HTTP/1.1\r\n${H}Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n`,
        BAD_HEADER,
      ],
      [
        'two Transfer-Encoding lines',
        () =>
          `POST /x HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
        BAD_HEADER,
      ],
      // request line
      ['lower-case method', () => `get /x HTTP/1.1\r\n${H}\r\n`, 'ERR_REQUEST_BAD_METHOD'],
      ['HTTP/1.10', () => `GET /x HTTP/1.10\r\n${H}\r\n`, BAD_PATH],
      ['target without a leading slash', () => `GET x HTTP/1.1\r\n${H}\r\n`, BAD_PATH],
    ])('%s', async (_label, bytes, reason) => {
      const r = await attack(bytes());
      expect(r.responses.map((x) => x.status)).toEqual([400]);
      expect(r.closed).toBe(true);
      expect(r.seen).toEqual([]);
      expect(r.logs.filter((l) => l.reason === reason && l.status === 400)).toHaveLength(1);
    });
  });

  describe('refused by the gateway: 400 + reason, closed, the pipelined request is never processed', () => {
    it.each<[string, () => string, string]>([
      [
        'absolute-form for another host (66)',
        () => `GET http://evil/admin HTTP/1.1\r\n${H}\r\n`,
        'ERR_REQUEST_BAD_PATH',
      ],
      ['GET *', () => `GET * HTTP/1.1\r\n${H}\r\n`, 'ERR_REQUEST_BAD_PATH'],
      ['OPTIONS *', () => `OPTIONS * HTTP/1.1\r\n${H}\r\n`, 'ERR_REQUEST_BAD_PATH'],
      ['a fragment in the target', () => `GET /x#frag HTTP/1.1\r\n${H}\r\n`, 'ERR_REQUEST_BAD_PATH'],
      ['a backslash in the target', () => `GET /x\\..\\admin HTTP/1.1\r\n${H}\r\n`, 'ERR_REQUEST_BAD_PATH'],
      [
        'a CR/LF injected through a %-decoded segment',
        () => `GET /x%0d%0aX-Forwarded-Client-Cert:%20SPOOF HTTP/1.1\r\n${H}\r\n`,
        'ERR_REQUEST_BAD_PATH',
      ],
      ['two Host lines', () => `GET /x HTTP/1.1\r\n${H}Host: evil\r\n\r\n`, 'ERR_REQUEST_BAD_HOST'],
      ['no Host', () => 'GET /x HTTP/1.1\r\n\r\n', 'ERR_REQUEST_BAD_HOST'],
      [
        'underscore header name',
        () => `GET /x HTTP/1.1\r\n${H}X_Forwarded_Client_Cert: SPOOF\r\n\r\n`,
        'ERR_REQUEST_BAD_HEADER',
      ],
      [
        'a POST with a body refused for its Host',
        () => `POST /x HTTP/1.1\r\nHost: user@evil\r\nContent-Length: 5\r\n\r\nhello`,
        'ERR_REQUEST_BAD_HOST',
      ],
    ])('%s', async (_label, bytes, reason) => {
      const r = await attack(bytes());
      expect(r.responses.map((x) => x.status)).toEqual([400]);
      expect(r.responses[0]!.headers.connection).toBe('close');
      expect(r.closed).toBe(true);
      expect(r.seen).toEqual([]);
      expect(r.logs.filter((l) => l.reason === reason && l.status === 400)).toHaveLength(1);
    });

    it('CONNECT: refused (405), the bytes after it are not a request', async () => {
      const r = await attack(`CONNECT localhost:443 HTTP/1.1\r\nHost: localhost:443\r\n\r\n`);
      expect(r.responses.map((x) => x.status)).toEqual([405]);
      expect(r.responses[0]!.headers.allow).toMatch(/^GET, HEAD, POST/);
      expect(r.closed).toBe(true);
      expect(r.seen).toEqual([]);
      expect(r.logs.filter((l) => l.reason === 'ERR_REQUEST_METHOD_REFUSED')).toHaveLength(1);
    });
  });

  describe('body-level tricks (63): 400 and closed; the upstream never completes the request, never sees the pipelined one', () => {
    // The headers of these requests are valid, so the gateway has already started streaming the request
    // upstream when the body turns out malformed: the upstream may see the start of `POST /body`; the
    // gateway then aborts it (logged `client_closed`, never a 2xx, never an upstream error).
    it.each<[string, () => string]>([
      [
        'chunk size -1',
        () => `POST /body HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n-1\r\na\r\n0\r\n\r\n`,
      ],
      [
        'chunk size 0x1',
        () => `POST /body HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n0x1\r\na\r\n0\r\n\r\n`,
      ],
      [
        'chunk size of 17 hex digits',
        () =>
          `POST /body HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n10000000000000001\r\na\r\n0\r\n\r\n`,
      ],
      [
        'LF-only chunk framing',
        () => `POST /body HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n1\na\n0\n\n`,
      ],
      [
        '20 KB chunk extension (CVE-2024-22019)',
        () =>
          `POST /body HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n1;${'a'.repeat(20_000)}\r\nx\r\n0\r\n\r\n`,
      ],
      [
        'a trailer carrying Content-Length',
        () =>
          `POST /body HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\nContent-Length: 5\r\n\r\n`,
      ],
      // Headers llhttp accepts; it only finds out that the body length is unknowable once they are complete.
      [
        'Transfer-Encoding: xchunked',
        () => `POST /body HTTP/1.1\r\n${H}Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n`,
      ],
      [
        'a trailer carrying Transfer-Encoding',
        () =>
          `POST /body HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n`,
      ],
    ])('%s', async (_label, bytes) => {
      const r = await attack(bytes());
      expect(r.responses.map((x) => x.status)).toEqual([400]);
      expect(r.closed).toBe(true);
      expect(r.seen.map((s) => s.url)).not.toContain(SMUGGLED_PATH);
      for (const s of r.seen) expect(s.url).toBe('/body');
      expect(
        r.logs.filter((l) => l.status === 400 && String(l.reason).startsWith('ERR_REQUEST_')),
      ).toHaveLength(1);
      await settle(100);
      // If the request had started upstream, its access-log line says the client side ended it.
      const forwarded = (): Record<string, unknown>[] =>
        gw
          .logs()
          .slice(r.logsFrom)
          .filter((l) => l.route === 'up');
      if (r.seen.length > 0)
        await expect
          .poll(() => forwarded().map((l) => [l.status, l.reason]), { timeout: 3_000 })
          .toEqual([[0, 'client_closed']]);
      for (const l of forwarded()) expect(l.status).not.toBe(200);
      expect(await gw.metric('portcullis_upstream_errors_total')).toBe(0);
    });
  });

  describe('accepted by Node, safe through the gateway (documented behaviour)', () => {
    it('Content-Length with trailing whitespace (RFC 9110 OWS) is one request of 2 bytes; the next request is its own', async () => {
      const r = await attack(`POST /ows HTTP/1.1\r\n${H}Content-Length: 2 \r\n\r\nab`);
      expect(r.responses.map((x) => x.status)).toEqual([200, 200]);
      expect(r.seen.map((s) => [s.url, s.bodyBytes, values(s, 'content-length')[0]])).toEqual([
        ['/ows', 2, '2'],
        [SMUGGLED_PATH, 0, undefined],
      ]);
      // The pipelined request is a request of its own and is cleaned like any other.
      expect(values(r.seen[1]!, 'x-forwarded-client-cert')).toHaveLength(1);
      expect(values(r.seen[1]!, 'x-forwarded-client-cert')[0]).not.toContain('SPOOF');
    });

    it('Transfer-Encoding: identity, chunked is decoded as chunked and re-framed upstream without "identity"', async () => {
      const r = await attack(
        `POST /te HTTP/1.1\r\n${H}Transfer-Encoding: identity, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n`,
      );
      expect(r.responses.map((x) => x.status)).toEqual([200, 200]);
      expect(r.seen[0]!.url).toBe('/te');
      expect(r.seen[0]!.bodyBytes).toBe(3);
      // undici frames it itself: Content-Length when the whole body was already buffered, else chunked.
      const framing = [...values(r.seen[0]!, 'transfer-encoding'), ...values(r.seen[0]!, 'content-length')];
      expect(framing).toHaveLength(1);
      expect(['chunked', '3']).toContain(framing[0]);
    });

    it('Transfer-Encoding on an HTTP/1.0 request is decoded as chunked and re-framed upstream', async () => {
      const seenBefore = up.seen.length;
      const r = await rawTls(
        port,
        gw.pki,
        `POST /te10 HTTP/1.0\r\n${H}Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n`,
      );
      expect(parseResponses(r.text).map((x) => x.status)).toEqual([200]);
      const seen = up.seen.slice(seenBefore);
      expect(seen.map((x) => [x.url, x.bodyBytes])).toEqual([['/te10', 3]]);
      expect([...values(seen[0]!, 'transfer-encoding'), ...values(seen[0]!, 'content-length')]).toHaveLength(
        1,
      );
    });

    it('a trailer is never promoted to a header upstream (a spoofed XFCC in the trailer section)', async () => {
      const r = await attack(
        `POST /trailer HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nTrailer: X-Forwarded-Client-Cert\r\n\r\n1\r\na\r\n0\r\nX-Forwarded-Client-Cert: SPOOF\r\nX-Auth-User: SPOOF\r\n\r\n`,
      );
      expect(r.responses.map((x) => x.status)).toEqual([200, 200]);
      const seen = r.seen[0]!;
      expect(seen.url).toBe('/trailer');
      expect(seen.bodyBytes).toBe(1);
      expect(seen.rawHeaders.join('\n')).not.toContain('SPOOF');
      expect(values(seen, 'trailer')).toEqual([]);
      expect(values(seen, 'x-forwarded-client-cert')).toHaveLength(1);
    });

    it('a tab inside a value is legal and forwarded as is (62)', async () => {
      const r = await attack(`GET /tab HTTP/1.1\r\n${H}X-A: a\tb\r\n\r\n`);
      expect(r.responses.map((x) => x.status)).toEqual([200, 200]);
      expect(values(r.seen[0]!, 'x-a')).toEqual(['a\tb']);
    });
  });

  describe('pipelining (65)', () => {
    it('two valid requests in one write: answered in order, each with its own headers and the gateway identity', async () => {
      const seenBefore = up.seen.length;
      const r = await rawTls(
        port,
        gw.pki,
        `GET /slow?ms=300 HTTP/1.1\r\n${H}X-Req: one\r\nX-Forwarded-Client-Cert: SPOOF-1\r\n\r\n` +
          `GET /echo?n=2 HTTP/1.1\r\n${H}X-Req: two\r\nX-Auth-User: SPOOF-2\r\nConnection: close\r\n\r\n`,
      );
      const responses = parseResponses(r.text);
      expect(responses.map((x) => x.status)).toEqual([200, 200]);
      expect(responses[0]!.body).toBe('slow\n');
      const second = JSON.parse(responses[1]!.body) as { url: string; headers: Record<string, string> };
      expect(second.url).toBe('/echo?n=2');
      expect(second.headers['x-req']).toBe('two');
      const seen = up.seen.slice(seenBefore);
      expect(seen.map((s) => [s.url, values(s, 'x-req')])).toEqual([
        ['/slow?ms=300', ['one']],
        ['/echo?n=2', ['two']],
      ]);
      for (const s of seen) {
        expect(s.rawHeaders.join('\n')).not.toContain('SPOOF');
        expect(values(s, 'x-forwarded-client-cert')).toHaveLength(1);
        expect(values(s, 'x-forwarded-client-cert')[0]).toContain('CN=alice');
      }
    });

    it('a denied request between two allowed ones: 200, 403, 200 in order; only the allowed ones go upstream', async () => {
      const seenBefore = up.seen.length;
      const logsBefore = gw.logs().length;
      const r = await rawTls(
        port,
        gw.pki,
        `GET /slow?ms=200 HTTP/1.1\r\n${H}\r\nGET /admin/secret HTTP/1.1\r\n${H}\r\nGET /after HTTP/1.1\r\n${H}Connection: close\r\n\r\n`,
      );
      expect(parseResponses(r.text).map((x) => x.status)).toEqual([200, 403, 200]);
      expect(up.seen.slice(seenBefore).map((s) => s.url)).toEqual(['/slow?ms=200', '/after']);
      expect(
        gw
          .logs()
          .slice(logsBefore)
          .filter((l) => l.reason === 'ERR_AUTHZ_ROUTE_ACL' && l.status === 403),
      ).toHaveLength(1);
    });

    it('a refused request inside a pipeline: the earlier answer is still delivered, nothing after it is processed', async () => {
      const seenBefore = up.seen.length;
      const r = await rawTls(
        port,
        gw.pki,
        `GET /slow?ms=200 HTTP/1.1\r\n${H}\r\nGET /x#frag HTTP/1.1\r\n${H}\r\n` +
          `GET ${SMUGGLED_PATH} HTTP/1.1\r\n${H}\r\nGET /also-not HTTP/1.1\r\n${H}\r\n`,
      );
      await settle(150);
      expect(parseResponses(r.text).map((x) => x.status)).toEqual([200, 400]);
      expect(r.closed).toBe(true);
      expect(up.seen.slice(seenBefore).map((s) => s.url)).toEqual(['/slow?ms=200']);
    });
  });

  describe('header size and count (70)', () => {
    it('a 17 KB header → 431, closed, nothing upstream', async () => {
      const r = await attack(`GET /x HTTP/1.1\r\n${H}X-Big: ${'a'.repeat(17 * 1024)}\r\n\r\n`);
      expect(r.responses.map((x) => x.status)).toEqual([431]);
      expect(r.closed).toBe(true);
      expect(r.seen).toEqual([]);
    });

    it('2,001 headers → 431 ERR_REQUEST_HEADERS_TOO_LARGE: Node would keep ~1,023 in rawHeaders and 1,000 in req.headers', async () => {
      let many = '';
      for (let i = 0; i < 2_001; i++) many += `X-H${i}: v\r\n`;
      const r = await attack(`GET /many HTTP/1.1\r\n${H}${many}X-Forwarded-Client-Cert: SPOOF\r\n\r\n`);
      expect(r.responses.map((x) => x.status)).toEqual([431]);
      expect(r.closed).toBe(true);
      expect(r.seen).toEqual([]);
      expect(
        r.logs.filter((l) => l.reason === 'ERR_REQUEST_HEADERS_TOO_LARGE' && l.status === 431),
      ).toHaveLength(1);
    });

    it('1,000 headers (Host included) are accepted, and the gateway identity reaches the upstream', async () => {
      let many = '';
      for (let i = 0; i < 998; i++) many += `X-H${i}: v\r\n`;
      const r = await attack(`GET /many HTTP/1.1\r\n${H}${many}X-Forwarded-Client-Cert: SPOOF\r\n\r\n`);
      expect(r.responses.map((x) => x.status)).toEqual([200, 200]);
      const seen = r.seen[0]!;
      expect(values(seen, 'x-forwarded-client-cert')).toHaveLength(1);
      expect(values(seen, 'x-forwarded-client-cert')[0]).toContain('CN=alice');
      expect(values(seen, 'x-h997')).toEqual(['v']);
    });
  });

  describe('HTTP/2 to HTTP/1 downgrade (threat model #81, #82), raw frames', () => {
    /** Runs one raw HTTP/2 request and reports what the upstream saw of it. */
    async function h2attack(
      fields: [string, string][],
      data?: Buffer,
    ): Promise<{ outcome: RawH2Outcome; seen: SeenRequest[]; logs: Record<string, unknown>[] }> {
      const seenBefore = up.seen.length;
      const logsBefore = gw.logs().length;
      const outcome = await rawH2Request(port, gw.pki, fields, data);
      await settle(150);
      return { outcome, seen: up.seen.slice(seenBefore), logs: gw.logs().slice(logsBefore) };
    }
    const base = (): [string, string][] => [
      [':method', 'GET'],
      [':scheme', 'https'],
      [':path', '/h2raw'],
      [':authority', `localhost:${port}`],
    ];

    it('a well-formed raw request is served (the frame writer works)', async () => {
      const r = await h2attack(base());
      expect(r.outcome.status).toBe(200);
      expect(r.seen.map((x) => x.url)).toEqual(['/h2raw']);
    });

    it.each<[string, [string, string][]]>([
      ['CR LF in a value', [['x-a', 'a\r\nx-forwarded-client-cert: SPOOF']]],
      ['LF in a value', [['x-a', 'a\nx-auth-user: SPOOF']]],
      ['NUL in a value', [['x-a', 'a\u0000SPOOF']]],
      ['a space in a name', [['x-forwarded-client-cert spoof', 'SPOOF']]],
      ['a colon in a name', [['x-auth-user:', 'SPOOF']]],
    ])(
      '%s: the field is dropped by Node, the upstream gets no injected header [Node baseline]',
      async (_label, extra) => {
        const r = await h2attack([...base(), ...extra]);
        expect(r.outcome.status).toBe(200);
        expect(r.seen).toHaveLength(1);
        expect(r.seen[0]!.rawHeaders.join('\n')).not.toContain('SPOOF');
        expect(values(r.seen[0]!, 'x-forwarded-client-cert')).toHaveLength(1);
      },
    );

    it.each<[string, [string, string][]]>([
      ['transfer-encoding: chunked', [['transfer-encoding', 'chunked']]],
      ['connection: close', [['connection', 'close']]],
      ['keep-alive', [['keep-alive', 'timeout=5']]],
      ['upgrade: websocket', [['upgrade', 'websocket']]],
      ['proxy-connection', [['proxy-connection', 'keep-alive']]],
      ['te: gzip', [['te', 'gzip']]],
      ['an upper-case header name', [['X-Forwarded-Client-Cert', 'SPOOF']]],
    ])(
      'connection-specific or malformed field %s → stream reset, nothing upstream [Node baseline]',
      async (_label, extra) => {
        const r = await h2attack([...base(), ...extra]);
        expect(r.outcome.status).toBe(0);
        expect(r.outcome.rstCode ?? r.outcome.goaway).toBeDefined();
        expect(r.seen).toEqual([]);
      },
    );

    it('host ≠ :authority → 400 ERR_REQUEST_BAD_HOST, nothing upstream (RFC 9113 §8.3.1)', async () => {
      const r = await h2attack([...base(), ['host', 'evil.example']]);
      expect(r.outcome.status).toBe(400);
      expect(r.seen).toEqual([]);
      expect(r.logs.filter((l) => l.reason === 'ERR_REQUEST_BAD_HOST' && l.status === 400)).toHaveLength(1);
    });

    it.each<[string, (p: number) => [string, string][]]>([
      [
        'two host fields',
        (p) => [
          ['host', `localhost:${p}`],
          ['host', 'evil.example'],
        ],
      ],
      ['no :authority and no host', () => []],
      ['two :authority fields', () => [[':authority', 'evil.example']]],
    ])(
      '%s → stream reset by nghttp2 (PROTOCOL_ERROR), nothing upstream [Node baseline]',
      async (label, extra) => {
        const fields = label.startsWith('no :authority')
          ? base().filter(([n]) => n !== ':authority')
          : [...base(), ...extra(port)];
        const r = await h2attack(fields);
        expect(r.outcome).toEqual({ status: 0, rstCode: 1 });
        expect(r.seen).toEqual([]);
      },
    );

    it('content-length: 0 followed by 100 bytes of DATA (H2.CL): the stream is reset, no body reaches the upstream', async () => {
      const fields: [string, string][] = [
        ...base().map(([n, v]): [string, string] => [n, n === ':method' ? 'POST' : v]),
        ['content-length', '0'],
      ];
      const r = await h2attack(fields, Buffer.alloc(100, 0x61));
      // nghttp2 counts DATA against content-length (RFC 9113 §8.1.1): Node 20 (nghttp2 1.61) reset the
      // stream with PROTOCOL_ERROR, Node 24 (nghttp2 1.70) closes the session with a GOAWAY. Either way
      // no response and no body upstream.
      expect(r.outcome.status).toBe(0);
      expect(r.outcome.rstCode === 1 || r.outcome.goaway !== undefined).toBe(true);
      for (const seen of r.seen) expect(seen.bodyBytes).toBe(0);
      expect(r.logs.filter((l) => l.route === 'up' && l.status === 200)).toEqual([]);
    });
  });
});

// ---------------------------------------------------------------------------------------------------------

interface RawH2Outcome {
  /** :status of the response on stream 1 (200, 400 or 404 decoded from the HPACK static table; -2 for any
   * other status), or 0 when none came. */
  status: number;
  /** RST_STREAM error code on stream 1, if it was reset. */
  rstCode?: number;
  /** GOAWAY error code, if the server sent one. */
  goaway?: number;
}

/** HPACK integer with an `n`-bit prefix (RFC 7541 §5.1). */
function hpackInt(value: number, n: number, flags = 0): number[] {
  const max = (1 << n) - 1;
  if (value < max) return [flags | value];
  const out = [flags | max];
  let v = value - max;
  while (v >= 128) {
    out.push((v % 128) + 128);
    v = Math.floor(v / 128);
  }
  out.push(v);
  return out;
}

/** Header block of literal fields without indexing, new names, no Huffman (RFC 7541 §6.2.2): the bytes go
 * out exactly as given, which is the point (a client library would refuse CR, LF or NUL). */
function hpackLiterals(fields: readonly [string, string][]): Buffer {
  const bytes: number[] = [];
  for (const [name, value] of fields) {
    const n = Buffer.from(name, 'latin1');
    const v = Buffer.from(value, 'latin1');
    bytes.push(0x00, ...hpackInt(n.length, 7), ...n, ...hpackInt(v.length, 7), ...v);
  }
  return Buffer.from(bytes);
}

function frame(type: number, flags: number, stream: number, payload: Buffer): Buffer {
  const head = Buffer.alloc(9);
  head.writeUIntBE(payload.length, 0, 3);
  head[3] = type;
  head[4] = flags;
  head.writeUInt32BE(stream, 5);
  return Buffer.concat([head, payload]);
}

/**
 * One HTTP/2 request on stream 1 of a fresh TLS connection (ALPN h2, client certificate `alice`), written
 * frame by frame. Resolves when stream 1 ends or is reset, the connection closes, or after 3 s.
 */
function rawH2Request(
  port: number,
  pki: TestGateway['pki'],
  fields: readonly [string, string][],
  data?: Buffer,
): Promise<RawH2Outcome> {
  const HEADERS = 0x1;
  const DATA = 0x0;
  const RST = 0x3;
  const SETTINGS = 0x4;
  const GOAWAY = 0x7;
  const END_STREAM = 0x1;
  const END_HEADERS = 0x4;
  return new Promise((resolve) => {
    const outcome: RawH2Outcome = { status: 0 };
    const socket = tlsConnect({
      ...tlsOptions(pki, 'alice'),
      host: '127.0.0.1',
      port,
      ALPNProtocols: ['h2'],
    });
    let buf = Buffer.alloc(0);
    let done = false;
    const finish = (): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(outcome);
    };
    const timer = setTimeout(finish, 3_000);
    socket.on('secureConnect', () => {
      const out = [
        Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1'),
        frame(SETTINGS, 0, 0, Buffer.alloc(0)),
      ];
      out.push(frame(HEADERS, END_HEADERS | (data === undefined ? END_STREAM : 0), 1, hpackLiterals(fields)));
      if (data !== undefined) out.push(frame(DATA, END_STREAM, 1, data));
      socket.write(Buffer.concat(out));
    });
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
        if (type === SETTINGS && (flags & 0x1) === 0) socket.write(frame(SETTINGS, 0x1, 0, Buffer.alloc(0)));
        if (type === GOAWAY) {
          outcome.goaway = payload.readUInt32BE(4);
          finish();
        }
        if (stream !== 1) continue;
        if (type === RST) {
          outcome.rstCode = payload.readUInt32BE(0);
          finish();
        } else if (type === HEADERS && outcome.status === 0) {
          // nghttp2 encodes these statuses as indexed static-table fields (RFC 7541 Appendix A).
          const first = payload[(flags & 0x8) !== 0 ? 1 + (payload[0] ?? 0) : 0];
          outcome.status = first === 0x88 ? 200 : first === 0x8c ? 400 : first === 0x8d ? 404 : -2;
        }
        if ((type === HEADERS || type === DATA) && (flags & END_STREAM) !== 0) finish();
      }
    });
    socket.on('close', finish);
    socket.on('error', finish);
  });
}
