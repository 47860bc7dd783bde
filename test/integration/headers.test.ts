/**
 * Request header hygiene end to end (threat model #94–#99 and #71): what the recording upstream receives
 * on HTTP/1.1 and HTTP/2, read from its raw header lines, never from a reconstructed map.
 */
import { connect as tlsConnect } from 'node:tls';
import type { OutgoingHttpHeaders } from 'node:http2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startGateway, tlsListener, type TestGateway } from '../helpers/gateway.js';
import { startUpstream, type SeenRequest, type TestUpstream } from '../helpers/upstream.js';
import { h1, h2, h2session, tlsOptions, type Reply } from '../helpers/clients.js';

type Proto = 'h1' | 'h2';
const PROTOS: readonly Proto[] = ['h1', 'h2'];

/** The XFCC the gateway computes for the test client `alice`. */
const ALICE_XFCC =
  /^Hash=[0-9a-f]{64};Subject="OU=data-science,CN=alice";URI=spiffe:\/\/portcullis\.test\/client\/alice$/;

/** Every value of `name` (case-insensitive) among the raw header lines the upstream received. */
function values(seen: SeenRequest, name: string): string[] {
  const out: string[] = [];
  for (let i = 0; i + 1 < seen.rawHeaders.length; i += 2) {
    if ((seen.rawHeaders[i] as string).toLowerCase() === name) out.push(seen.rawHeaders[i + 1] as string);
  }
  return out;
}

/** Everything the upstream received in its header block, for "no spoofed value anywhere" checks. */
function headerBlock(seen: SeenRequest): string {
  return seen.rawHeaders.join('\n');
}

describe('request header hygiene (threat model #94–#99, #71)', () => {
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
            { id: 'chunked', match: { pathPrefix: '/chunked' }, upstream: up.url },
            { id: 'denied', match: { pathPrefix: '/denied' }, upstream: up.url, allowClients: ['CN=nobody'] },
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

  /** One request over a fresh connection; returns the reply and what the upstream saw of it (if anything). */
  async function send(
    proto: Proto,
    path: string,
    headers: Record<string, string | string[]>,
    body?: string,
  ): Promise<{ reply: Reply; seen: SeenRequest | undefined }> {
    const before = up.seen.length;
    let reply: Reply;
    if (proto === 'h1') {
      reply = await h1(port, gw.pki, {
        path,
        method: body === undefined ? 'GET' : 'POST',
        headers,
        ...(body === undefined ? {} : { body }),
      });
    } else {
      const s = h2session(port, gw.pki);
      try {
        const h2headers: OutgoingHttpHeaders = {
          ':path': path,
          ':method': body === undefined ? 'GET' : 'POST',
        };
        for (const [k, v] of Object.entries(headers)) h2headers[k.toLowerCase()] = v;
        reply = await h2(s, h2headers, body);
      } finally {
        s.close();
      }
    }
    expect(up.seen.length - before).toBeLessThanOrEqual(1);
    return { reply, seen: up.seen[before] };
  }

  /** The gateway's own headers: present exactly once each, with the gateway's values. */
  function expectGatewayHeaders(seen: SeenRequest): void {
    expect(values(seen, 'x-forwarded-client-cert')).toHaveLength(1);
    expect(values(seen, 'x-forwarded-client-cert')[0]).toMatch(ALICE_XFCC);
    expect(values(seen, 'x-forwarded-for')).toEqual(['127.0.0.1']);
    expect(values(seen, 'x-forwarded-proto')).toEqual(['https']);
    expect(values(seen, 'x-forwarded-host')).toEqual([`localhost:${port}`]);
    expect(values(seen, 'host')).toEqual([`localhost:${port}`]);
  }

  /** A denial: status, exactly one log line with the reason code, nothing upstream. */
  async function expectDenied(run: () => Promise<Reply>, status: number, reason: string): Promise<Reply> {
    const seenBefore = up.seen.length;
    const logsBefore = gw.logs().length;
    const reply = await run();
    expect(reply.status).toBe(status);
    expect(
      gw
        .logs()
        .slice(logsBefore)
        .filter((l) => l.reason === reason && l.status === status),
    ).toHaveLength(1);
    expect(up.seen.length).toBe(seenBefore);
    return reply;
  }

  describe('spoofed identity and forwarding headers never reach the upstream (94–96)', () => {
    const SPOOFED: readonly [string, string | string[]][] = [
      ['X-Forwarded-Client-Cert', 'By=spiffe://x;URI=spiffe://example.org/admin;SPOOF'],
      ['x-forwarded-client-cert', 'SPOOF-lower'],
      ['X-FORWARDED-CLIENT-CERT', 'SPOOF-upper'],
      ['X-Forwarded-Client-Cert', ['SPOOF-dup-1', 'SPOOF-dup-2']],
      ['X-Forwarded-For', '6.6.6.6, SPOOF'],
      ['X-Forwarded-Proto', 'http-SPOOF'],
      ['X-Forwarded-Host', 'admin.internal.SPOOF'],
      ['X-Forwarded-Port', '1-SPOOF'],
      ['X-Forwarded-Prefix', '/admin-SPOOF'],
      ['X-Forwarded-Uri', '/public-SPOOF'],
      ['X-Forwarded-User', 'SPOOF'],
      ['X-Forwarded-Email', 'SPOOF@example.org'],
      ['Forwarded', 'for=127.0.0.1;proto=https;host=SPOOF'],
      ['X-Real-IP', '10.0.0.1-SPOOF'],
      ['X-Original-URL', '/admin-SPOOF'],
      ['X-Rewrite-URL', '/admin-SPOOF'],
      ['X-HTTP-Method-Override', 'DELETE-SPOOF'],
      ['X-Auth-Subject', 'SPOOF'],
      ['X-Auth-Scopes', 'admin SPOOF'],
      ['X-Auth-User', 'SPOOF'],
      ['X-Remote-User', 'SPOOF'],
      ['Remote-User', 'SPOOF'],
      ['X-Client-Cert-San', 'SPOOF'],
    ];
    const table = PROTOS.flatMap((proto) => SPOOFED.map(([name, value]) => [proto, name, value] as const));

    it.each(table)('%s: %s', async (proto, name, value) => {
      const { reply, seen } = await send(proto, '/public/spoof', { [name]: value, 'x-marker': 'kept' });
      expect(reply.status).toBe(200);
      expect(seen).toBeDefined();
      expect(headerBlock(seen!)).not.toMatch(/spoof/i);
      expectGatewayHeaders(seen!);
      expect(values(seen!, 'x-marker')).toEqual(['kept']);
    });

    it.each(PROTOS)('%s: all of them at once, the gateway headers still exactly once', async (proto) => {
      const all: Record<string, string | string[]> = {};
      for (const [name, value] of SPOOFED) all[name.toLowerCase()] = value;
      const { reply, seen } = await send(proto, '/public/all', all);
      expect(reply.status).toBe(200);
      expect(headerBlock(seen!)).not.toMatch(/spoof/i);
      expectGatewayHeaders(seen!);
    });

    const UNDERSCORE = PROTOS.flatMap((proto) =>
      ['X_Forwarded_Client_Cert', 'X_Auth_User', 'x_forwarded_for', 'X_Remote_User'].map(
        (name) => [proto, name] as const,
      ),
    );
    it.each(UNDERSCORE)('%s: underscore variant %s → 400 ERR_REQUEST_BAD_HEADER', async (proto, name) => {
      const reply = await expectDenied(
        async () => (await send(proto, '/public/underscore', { [name]: 'SPOOF' })).reply,
        400,
        'ERR_REQUEST_BAD_HEADER',
      );
      if (proto === 'h1') expect(reply.headers.connection).toBe('close');
    });
  });

  describe('Connection nomination and hop-by-hop headers (97)', () => {
    it.each<[string, Record<string, string>, string[]]>([
      ['close, X-Forwarded-Client-Cert', { 'X-Forwarded-Client-Cert': 'SPOOF' }, []],
      ['keep-alive, X-Custom', { 'X-Custom': 'SPOOF-custom', 'X-Other': 'kept' }, ['x-custom']],
      ['X-Forwarded-For', {}, []],
      ['close, X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host, Host', {}, []],
      ['keep-alive, X-Auth-User', { 'X-Auth-User': 'SPOOF' }, []],
    ])(
      'HTTP/1.1 Connection: %s → nominated client headers gone, gateway headers present',
      async (connection, extra, gone) => {
        const { reply, seen } = await send('h1', '/public/nominate', { Connection: connection, ...extra });
        expect(reply.status).toBe(200);
        expect(headerBlock(seen!)).not.toMatch(/spoof/i);
        for (const name of gone) expect(values(seen!, name)).toEqual([]);
        expect(values(seen!, 'connection')).not.toContainEqual(expect.stringMatching(/x-|host/i));
        expectGatewayHeaders(seen!);
        if ('X-Other' in extra) expect(values(seen!, 'x-other')).toEqual(['kept']);
      },
    );

    it('HTTP/1.1: Keep-Alive, TE, Proxy-Connection, Proxy-Authorization and a bare Upgrade are never forwarded', async () => {
      const { reply, seen } = await send('h1', '/public/hop', {
        'Keep-Alive': 'timeout=99',
        TE: 'trailers',
        'Proxy-Connection': 'keep-alive',
        'Proxy-Authorization': 'Basic c3Bvb2Y6c3Bvb2Y=',
        Upgrade: 'h2c',
        'HTTP2-Settings': 'AAMAAABkAARAAAAAAAIAAAAA',
      });
      expect(reply.status).toBe(200);
      for (const name of [
        'keep-alive',
        'te',
        'proxy-connection',
        'proxy-authorization',
        'upgrade',
        'http2-settings',
      ])
        expect(values(seen!, name)).toEqual([]);
      expectGatewayHeaders(seen!);
    });

    it('HTTP/2: TE and Proxy-Authorization are never forwarded (the connection-specific ones are refused by Node itself)', async () => {
      const { reply, seen } = await send('h2', '/public/hop', {
        te: 'trailers',
        'proxy-authorization': 'Basic c3Bvb2Y6c3Bvb2Y=',
      });
      expect(reply.status).toBe(200);
      expect(values(seen!, 'te')).toEqual([]);
      expect(values(seen!, 'proxy-authorization')).toEqual([]);
      expectGatewayHeaders(seen!);
    });
  });

  describe('credentials (99): Cookie is forwarded (the route decides), Proxy-Authorization is not', () => {
    it.each(PROTOS)('%s', async (proto) => {
      const { reply, seen } = await send(proto, '/public/creds', {
        Cookie: 'session=abc; theme=dark',
        'Proxy-Authorization': 'Basic c3Bvb2Y6c3Bvb2Y=',
      });
      expect(reply.status).toBe(200);
      expect(values(seen!, 'cookie').join('; ')).toBe('session=abc; theme=dark');
      expect(values(seen!, 'proxy-authorization')).toEqual([]);
    });
  });

  describe('Expect: 100-continue (71)', () => {
    it('HTTP/1.1: 100 only after the checks, the body reaches the upstream, only the gateway XFCC with it', async () => {
      const before = up.seen.length;
      const ex = await expectContinueExchange(
        port,
        gw.pki,
        `POST /public/upload HTTP/1.1\r\nHost: localhost:${port}\r\nExpect: 100-continue\r\nContent-Length: 11\r\n` +
          'X-Forwarded-Client-Cert: By=x;URI=spiffe://example.org/admin;SPOOF\r\nx-forwarded-client-cert: SPOOF2\r\n\r\n',
        'hello world',
      );
      expect(ex.responses.map((r) => r.status)).toEqual([100, 200]);
      expect(up.seen.length - before).toBe(1);
      const seen = up.seen[before]!;
      expect(seen.bodyBytes).toBe(11);
      expect(values(seen, 'expect')).toEqual([]);
      expect(headerBlock(seen)).not.toMatch(/spoof/i);
      expectGatewayHeaders(seen);
    });

    it('HTTP/2: the body reaches the upstream with only the gateway XFCC', async () => {
      const { reply, seen } = await send(
        'h2',
        '/public/upload',
        { expect: '100-continue', 'x-forwarded-client-cert': 'SPOOF' },
        'hello world',
      );
      expect(reply.status).toBe(200);
      expect(seen!.bodyBytes).toBe(11);
      expect(values(seen!, 'expect')).toEqual([]);
      expect(headerBlock(seen!)).not.toMatch(/spoof/i);
      expectGatewayHeaders(seen!);
    });

    it.each<[string, string, number, string]>([
      ['route ACL denies', '/denied/upload', 403, 'ERR_AUTHZ_ROUTE_ACL'],
      ['no route', '/nowhere/upload', 404, 'ERR_ROUTE_NOT_FOUND'],
      ['bad header', '/public/upload', 400, 'ERR_REQUEST_BAD_HEADER'],
    ])(
      'HTTP/1.1, %s: the final answer (%s) comes without a 100 Continue, the upstream sees nothing',
      async (_label, path, status, reason) => {
        const seenBefore = up.seen.length;
        const logsBefore = gw.logs().length;
        const extra = reason === 'ERR_REQUEST_BAD_HEADER' ? 'X_Auth_User: SPOOF\r\n' : '';
        // The body is never sent: a gateway that answered 100 first would be waiting for it.
        const ex = await expectContinueExchange(
          port,
          gw.pki,
          `POST ${path} HTTP/1.1\r\nHost: localhost:${port}\r\nExpect: 100-continue\r\nContent-Length: 10485760\r\nX-Forwarded-Client-Cert: SPOOF\r\n${extra}\r\n`,
          undefined,
        );
        expect(ex.responses.map((r) => r.status)).toEqual([status]);
        expect(ex.closed).toBe(true);
        expect(
          gw
            .logs()
            .slice(logsBefore)
            .filter((l) => l.reason === reason && l.status === status),
        ).toHaveLength(1);
        expect(up.seen.length).toBe(seenBefore);
      },
    );

    it.each<[string, string, number, string]>([
      ['route ACL denies', '/denied/upload', 403, 'ERR_AUTHZ_ROUTE_ACL'],
      ['no route', '/nowhere/upload', 404, 'ERR_ROUTE_NOT_FOUND'],
    ])(
      'HTTP/2, %s: %s without a 100 Continue first, the upstream sees nothing',
      async (_label, path, status, reason) => {
        const seenBefore = up.seen.length;
        const logsBefore = gw.logs().length;
        const s = h2session(port, gw.pki);
        try {
          const r = await new Promise<{ status: number; continued: boolean }>((resolve, reject) => {
            // Headers only: the body stays unsent, as a client honouring Expect would do.
            const st = s.request(
              { ':method': 'POST', ':path': path, expect: '100-continue', 'content-length': '11' },
              { endStream: false },
            );
            let continued = false;
            let code = 0;
            st.on('continue', () => (continued = true));
            st.on('response', (h) => (code = Number(h[':status'])));
            st.on('error', reject);
            st.on('close', () => resolve({ status: code, continued }));
            st.resume();
          });
          expect(r).toEqual({ status, continued: false });
        } finally {
          s.close();
        }
        expect(
          gw
            .logs()
            .slice(logsBefore)
            .filter((l) => l.reason === reason && l.status === status),
        ).toHaveLength(1);
        expect(up.seen.length).toBe(seenBefore);
      },
    );
  });

  describe('response side: hop-by-hop headers from the upstream are not passed on (83)', () => {
    it.each(PROTOS)('%s', async (proto) => {
      const { reply } = await send(proto, '/chunked', {});
      expect(reply.status).toBe(200);
      expect(reply.body).toBe('part1\npart2\n');
      expect(reply.headers['x-secret-hop']).toBeUndefined();
      expect(reply.headers['keep-alive']).toBeUndefined();
      expect(reply.headers['content-type']).toBe('text/plain');
    });
  });
});

// ---------------------------------------------------------------------------------------------------------

interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/**
 * Parses the HTTP/1.1 responses in `text` (Content-Length or chunked bodies, 1xx without a body).
 * Stops at the first incomplete one.
 */
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
    if (status >= 200) {
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
    }
    out.push({ status, headers, body });
  }
}

/**
 * Sends `head` (request line and headers, Expect: 100-continue) over TLS, reads what comes back; if the
 * first answer is `100 Continue` and `body` is given, sends the body. Resolves once a final response was
 * read and the server closed, or after a short quiet period.
 */
function expectContinueExchange(
  port: number,
  pki: TestGateway['pki'],
  head: string,
  body: string | undefined,
): Promise<{ responses: RawResponse[]; closed: boolean }> {
  return new Promise((resolve) => {
    const socket = tlsConnect({
      ...tlsOptions(pki, 'alice'),
      host: '127.0.0.1',
      port,
      ALPNProtocols: ['http/1.1'],
    });
    let text = '';
    let sentBody = false;
    let done = false;
    const finish = (closed: boolean): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      resolve({ responses: parseResponses(text), closed });
    };
    const timer = setTimeout(() => finish(false), 3_000);
    socket.on('secureConnect', () => socket.write(head));
    socket.on('data', (chunk: Buffer) => {
      text += chunk.toString('latin1');
      const responses = parseResponses(text);
      if (!sentBody && body !== undefined && responses[0]?.status === 100) {
        sentBody = true;
        socket.write(body);
      }
      // A final answer with nothing more to send: wait briefly for the close, then settle.
      if (responses.some((r) => r.status >= 200) && (body === undefined || sentBody)) {
        setTimeout(() => finish(socket.destroyed || socket.readableEnded), 300);
      }
    });
    socket.on('end', () => finish(true));
    socket.on('close', () => finish(true));
    socket.on('error', () => finish(true));
  });
}
