/**
 * A refused request's body is not read (threat model #133). A client that is refused before forwarding
 * (401, 403, 404, 405, 421) and keeps sending its body must not make the gateway read it: HTTP/1.1 gets the
 * answer with `Connection: close` and then a lingering close bounded to 64 KiB / 1 s; HTTP/2 gets the answer
 * and a RST_STREAM(NO_ERROR), the session lives on. A refused WebSocket upgrade closes the same way.
 *
 * The clients are hostile on purpose: each keeps writing 64 KiB chunks (HTTP/1.1 over a raw TLS socket,
 * HTTP/2 through node:http2) until the gateway closes on it, or for at most 5 s / 1 GiB. What it managed to
 * write is what the gateway read plus what the kernel buffers of the loopback connection hold (a few MiB);
 * before the fix the gateway read 200 to 850 MiB in those 5 s on a shared 2-core machine.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tokenCreate } from '../../src/commands/token.js';
import { LINGER_MAX_MS } from '../../src/listener/refused-body.js';
import { h2, h2session, tlsOptions } from '../helpers/clients.js';
import { startGateway, tlsListener, type TestGateway } from '../helpers/gateway.js';
import { startUpstream, type TestUpstream } from '../helpers/upstream.js';

/** The hostile client's own bounds: it stops after this long or this many bytes, whichever first. */
const CLIENT_MAX_MS = 5_000;
const CLIENT_MAX_BYTES = 2 ** 30;
/**
 * What the client may have written when the gateway reads no more than the linger bound: 64 KiB read after
 * the answer, Node's 16 KiB request buffer and TLS record buffers, and the loopback socket buffers of both
 * ends (tcp_wmem max 4 MiB on the client; the gateway's receive buffer does not grow while it is not read).
 */
const WRITTEN_MAX = 16 * 2 ** 20;

const CHUNK = Buffer.alloc(64 * 1024, 0x61);
/** The same 64 KiB as one chunk of a chunked body (RFC 9112 §7.1). */
const CHUNK_FRAMED = Buffer.concat([Buffer.from('10000\r\n'), CHUNK, Buffer.from('\r\n')]);

let up: TestUpstream;
let gw: TestGateway;
let dir: string;

beforeAll(async () => {
  up = await startUpstream();
  dir = await mkdtemp(join(tmpdir(), 'portcullis-refused-body-'));
  const tokensFile = join(dir, 'tokens.json');
  await tokenCreate({ file: tokensFile, name: 'carol', expiresInSeconds: 3600, scopes: ['read'] });
  gw = await startGateway((pki) => ({
    timeouts: { idleMs: 30_000 },
    authProviders: { team: { type: 'static', tokensFile } },
    listeners: [
      tlsListener(pki, {
        routes: [
          { id: 'auth', match: { pathPrefix: '/auth' }, upstream: up.url, auth: { providers: ['team'] } },
          { id: 'acl', match: { pathPrefix: '/acl' }, upstream: up.url, allowClients: ['CN=bob'] },
          { id: 'ro', match: { pathPrefix: '/ro' }, upstream: up.url, methods: ['GET'] },
          { id: 'open', match: { pathPrefix: '/open' }, upstream: up.url },
        ],
      }),
    ],
  }));
});

afterAll(async () => {
  await gw?.close();
  await up?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

interface Flood {
  /** The answer's head (status line and headers) as text. */
  head: string;
  /** Body bytes the client managed to write (write callbacks without error). */
  written: number;
  /** The gateway closed the connection (or reset the stream) before the client's own bounds. */
  closed: boolean;
  /** ms from the request head to the close. */
  closedAfterMs: number;
}

/**
 * HTTP/1.1 over TLS by hand: `head` (which must declare a large body), then 64 KiB chunks as fast as the
 * socket takes them, never finishing, until the gateway closes or the client's bounds pass.
 */
function floodH1(head: string): Promise<Flood> {
  const piece = /transfer-encoding: chunked/i.test(head) ? CHUNK_FRAMED : CHUNK;
  return new Promise((resolve) => {
    const socket = tlsConnect({
      ...tlsOptions(gw.pki, 'alice'),
      host: '127.0.0.1',
      port: gw.port(),
      ALPNProtocols: ['http/1.1'],
    });
    const t0 = Date.now();
    let written = 0;
    let text = '';
    let done = false;
    const finish = (closed: boolean): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      const end = text.indexOf('\r\n\r\n');
      resolve({ head: end === -1 ? text : text.slice(0, end), written, closed, closedAfterMs: Date.now() - t0 });
    };
    const timer = setTimeout(() => finish(false), CLIENT_MAX_MS);
    const pump = (): void => {
      while (!done && written < CLIENT_MAX_BYTES) {
        const ok = socket.write(piece, (err) => {
          if (!err) written += CHUNK.length;
        });
        if (!ok) {
          socket.once('drain', pump);
          return;
        }
      }
    };
    socket.on('secureConnect', () => {
      socket.write(head);
      pump();
    });
    socket.on('data', (c: Buffer) => (text += c.toString('latin1')));
    // The gateway's FIN ends the answer; its close (or a RST) ends the flood.
    socket.on('close', () => finish(true));
    socket.on('error', () => finish(true));
  });
}

const H = (): string => `Host: localhost:${gw.port()}\r\n`;
/** A body far larger than anything the client will manage to send. */
const BIG = `Content-Length: ${2 ** 40}\r\n`;

describe('HTTP/1.1: refused with the body still coming → answer, Connection: close, bounded linger', () => {
  it.each<[string, () => string, number, string]>([
    ['401 no token', () => `POST /auth/x HTTP/1.1\r\n${H()}${BIG}\r\n`, 401, 'ERR_AUTHN_MISSING'],
    ['401 chunked', () => `POST /auth/x HTTP/1.1\r\n${H()}Transfer-Encoding: chunked\r\n\r\n`, 401, 'ERR_AUTHN_MISSING'],
    ['403 route ACL', () => `PUT /acl/x HTTP/1.1\r\n${H()}${BIG}\r\n`, 403, 'ERR_AUTHZ_ROUTE_ACL'],
    ['404 no route', () => `POST /nowhere HTTP/1.1\r\n${H()}${BIG}\r\n`, 404, 'ERR_ROUTE_NOT_FOUND'],
    ['405 method', () => `POST /ro/x HTTP/1.1\r\n${H()}${BIG}\r\n`, 405, 'ERR_AUTHZ_METHOD_NOT_ALLOWED'],
    ['421 misdirected', () => `POST /open/x HTTP/1.1\r\nHost: other.example\r\n${BIG}\r\n`, 421, 'ERR_REQUEST_MISDIRECTED'],
    [
      '401 refused WebSocket upgrade',
      () =>
        `GET /auth/ws HTTP/1.1\r\n${H()}Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n` +
        `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`,
      401,
      'ERR_AUTHN_MISSING',
    ],
  ])('%s', async (_label, head, status, reason) => {
    const seenBefore = up.seen.length;
    const logsBefore = gw.logs().length;
    const r = await floodH1(head());
    expect(r.head.split('\r\n')[0]).toMatch(new RegExp(`^HTTP/1\\.1 ${status} `));
    expect(r.head.toLowerCase()).toContain('connection: close');
    expect(r.closed).toBe(true);
    // Closed by the linger bound (1 s, or 64 KiB read), not by the client's own 5 s.
    expect(r.closedAfterMs).toBeLessThan(LINGER_MAX_MS + 1_500);
    expect(r.written).toBeLessThan(WRITTEN_MAX);
    expect(up.seen.length).toBe(seenBefore);
    const logs = gw.logs().slice(logsBefore);
    expect(logs.filter((l) => l.reason === reason && l.status === status)).toHaveLength(1);
    // The dropped rest of the body is not a second request for the parser to refuse.
    expect(logs.filter((l) => l.msg === 'request refused by the HTTP/1.1 parser')).toEqual([]);
  }, 20_000);
});

describe('HTTP/2: refused with the body still coming → answer, then RST_STREAM(NO_ERROR); the session lives on', () => {
  it.each<[string, Record<string, string>, number, string]>([
    ['401 no token', { ':method': 'POST', ':path': '/auth/x' }, 401, 'ERR_AUTHN_MISSING'],
    ['403 route ACL', { ':method': 'PUT', ':path': '/acl/x' }, 403, 'ERR_AUTHZ_ROUTE_ACL'],
    ['404 no route', { ':method': 'POST', ':path': '/nowhere' }, 404, 'ERR_ROUTE_NOT_FOUND'],
    ['405 method', { ':method': 'POST', ':path': '/ro/x' }, 405, 'ERR_AUTHZ_METHOD_NOT_ALLOWED'],
    ['421 misdirected', { ':method': 'POST', ':path': '/open/x', ':authority': 'other.example' }, 421, 'ERR_REQUEST_MISDIRECTED'],
  ])('%s', async (_label, headers, status, reason) => {
    const seenBefore = up.seen.length;
    const logsBefore = gw.logs().length;
    const session = h2session(gw.port(), gw.pki);
    try {
      const r = await new Promise<{ status: number; written: number; rst: number | undefined; closedAfterMs: number }>(
        (resolve) => {
          const t0 = Date.now();
          let written = 0;
          let got = 0;
          let done = false;
          const st = session.request(headers, { endStream: false });
          const finish = (): void => {
            if (done) return;
            done = true;
            clearTimeout(timer);
            resolve({ status: got, written, rst: st.rstCode, closedAfterMs: Date.now() - t0 });
            st.destroy();
          };
          const timer = setTimeout(finish, CLIENT_MAX_MS);
          st.on('response', (h) => (got = Number(h[':status'])));
          st.resume();
          st.on('error', finish);
          st.on('close', finish);
          const pump = (): void => {
            while (!done && written < CLIENT_MAX_BYTES) {
              const ok = st.write(CHUNK, (err) => {
                if (!err) written += CHUNK.length;
              });
              if (!ok) {
                st.once('drain', pump);
                return;
              }
            }
          };
          pump();
        },
      );
      expect(r.status).toBe(status);
      // The client never ended its side: the stream can only have closed through the gateway's reset.
      expect(r.rst).toBe(0);
      expect(r.closedAfterMs).toBeLessThan(CLIENT_MAX_MS);
      // The stream's flow-control window (64 KiB) is all a client can send before the reset arrives.
      expect(r.written).toBeLessThan(WRITTEN_MAX);
      // The session survives: the next stream on it is served.
      const ok = await h2(session, { ':path': '/open/after' });
      expect(ok.status).toBe(200);
      expect(up.seen.length).toBe(seenBefore + 1);
      expect(gw.logs().slice(logsBefore).filter((l) => l.reason === reason && l.status === status)).toHaveLength(1);
    } finally {
      session.close();
    }
  }, 20_000);
});
