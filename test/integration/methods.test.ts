/**
 * Methods (threat model #132). TRACE and CONNECT are answered 405 with `Allow` and never forwarded; a
 * route's `methods:` list is enforced (405 with the route's `Allow`, GET bringing HEAD); a well-formed
 * method the gateway does not know is 405 (it reaches the gateway over HTTP/2 only: Node's HTTP/1.1 parser
 * refuses it with 400 first); a malformed one is 400 (HTTP/1.1) or a stream reset (HTTP/2, nghttp2). The
 * gateway does not advertise HTTP/2 extended CONNECT (RFC 8441). Every refusal is counted and logged with
 * its reason, and the upstream sees nothing.
 */
import { readFileSync } from 'node:fs';
import { connect as tlsConnect } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FORWARDED_METHODS } from '../../src/authz/methods.js';
import { h1, h2, h2session, rawTls } from '../helpers/clients.js';
import { FLAG, FRAME, PREFACE, frame, frameReader, literal, literalNew, type Frame } from '../helpers/h2-frames.js';
import { startGateway, tlsListener, type TestGateway } from '../helpers/gateway.js';
import { startUpstream, type TestUpstream } from '../helpers/upstream.js';

const DEFAULT_ALLOW = FORWARDED_METHODS.join(', ');

let up: TestUpstream;
let gw: TestGateway;
let port: number;

beforeAll(async () => {
  up = await startUpstream();
  gw = await startGateway((pki) => ({
    listeners: [
      tlsListener(pki, {
        routes: [
          { id: 'ro', match: { pathPrefix: '/ro' }, upstream: up.url, methods: ['POST', 'GET'] },
          { id: 'post', match: { pathPrefix: '/post' }, upstream: up.url, methods: ['POST'] },
          { id: 'open', match: { pathPrefix: '/' }, upstream: up.url },
        ],
      }),
    ],
  }));
  port = gw.port();
});

afterAll(async () => {
  await gw?.close();
  await up?.close();
});

const denials = (reason: string): Promise<number> =>
  gw.metric('portcullis_http_denials_total', { listener: 'main', reason });

/** The access-log lines written since `from` for `reason`. */
const logged = (from: number, reason: string): Record<string, unknown>[] =>
  gw.logs().slice(from).filter((l) => l.reason === reason);

interface Case {
  method: string;
  path: string;
  status: number;
  reason?: string;
  allow?: string;
}

const REFUSED = 'ERR_REQUEST_METHOD_REFUSED';
const NOT_ALLOWED = 'ERR_AUTHZ_METHOD_NOT_ALLOWED';

describe('HTTP/1.1', () => {
  it.each<[string, Case]>([
    ['TRACE on a route without methods', { method: 'TRACE', path: '/x', status: 405, reason: REFUSED, allow: DEFAULT_ALLOW }],
    ['TRACE on a GET/POST route', { method: 'TRACE', path: '/ro/x', status: 405, reason: REFUSED, allow: 'GET, HEAD, POST' }],
    ['PUT outside the route list', { method: 'PUT', path: '/ro/x', status: 405, reason: NOT_ALLOWED, allow: 'GET, HEAD, POST' }],
    ['DELETE outside the route list', { method: 'DELETE', path: '/ro/x', status: 405, reason: NOT_ALLOWED, allow: 'GET, HEAD, POST' }],
    ['PROPFIND outside the route list', { method: 'PROPFIND', path: '/ro/x', status: 405, reason: NOT_ALLOWED, allow: 'GET, HEAD, POST' }],
    ['GET on a POST-only route', { method: 'GET', path: '/post/x', status: 405, reason: NOT_ALLOWED, allow: 'POST' }],
    ['GET in the list', { method: 'GET', path: '/ro/x', status: 200 }],
    ['HEAD comes with GET', { method: 'HEAD', path: '/ro/x', status: 200 }],
    ['POST in the list', { method: 'POST', path: '/ro/x', status: 200 }],
    ['PROPFIND on a route without methods', { method: 'PROPFIND', path: '/x', status: 200 }],
  ])('%s', async (_label, c) => {
    const seenBefore = up.seen.length;
    const logsBefore = gw.logs().length;
    const countBefore = c.reason === undefined ? 0 : await denials(c.reason);
    const r = await h1(port, gw.pki, { method: c.method, path: c.path });
    expect(r.status).toBe(c.status);
    if (c.reason === undefined) {
      expect(up.seen.slice(seenBefore).map((s) => [s.method, s.url])).toEqual([[c.method, c.path]]);
      return;
    }
    expect(r.headers.allow).toBe(c.allow);
    expect(up.seen.length).toBe(seenBefore);
    expect(logged(logsBefore, c.reason).map((l) => [l.status, l.method])).toEqual([[405, c.method]]);
    expect((await denials(c.reason)) - countBefore).toBe(1);
  });

  it.each([
    ['unknown to the parser', 'FOO'],
    ['lower case', 'get'],
    ['not a token', 'G(T'],
    ['TRACK (TRACE by another name)', 'TRACK'],
  ])('%s (%s): 400 ERR_REQUEST_BAD_METHOD from the parser, closed', async (_label, method) => {
    const seenBefore = up.seen.length;
    const logsBefore = gw.logs().length;
    const r = await rawTls(port, gw.pki, `${method} /x HTTP/1.1\r\nHost: localhost:${port}\r\n\r\n`);
    expect(r.text.split('\r\n')[0]).toBe('HTTP/1.1 400 Bad Request');
    expect(r.closed).toBe(true);
    expect(up.seen.length).toBe(seenBefore);
    expect(logged(logsBefore, 'ERR_REQUEST_BAD_METHOD')).toHaveLength(1);
  });

  it('a TRACE closes the connection: the request pipelined behind it is never processed', async () => {
    const seenBefore = up.seen.length;
    const r = await rawTls(
      port,
      gw.pki,
      `TRACE /x HTTP/1.1\r\nHost: localhost:${port}\r\n\r\nGET /after-trace HTTP/1.1\r\nHost: localhost:${port}\r\n\r\n`,
    );
    expect(r.text.split('\r\n')[0]).toBe('HTTP/1.1 405 Method Not Allowed');
    expect(r.text).toContain(`allow: ${DEFAULT_ALLOW}`);
    expect(r.text).not.toContain('HTTP/1.1 200');
    expect(r.closed).toBe(true);
    expect(up.seen.length).toBe(seenBefore);
  });

  it('a WebSocket upgrade on a POST-only route: 405 with Allow before any upstream connection', async () => {
    const seenBefore = up.seen.length;
    const logsBefore = gw.logs().length;
    const r = await rawTls(
      port,
      gw.pki,
      `GET /post/ws HTTP/1.1\r\nHost: localhost:${port}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
        `Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`,
    );
    expect(r.text.split('\r\n')[0]).toBe('HTTP/1.1 405 Method Not Allowed');
    expect(r.text).toContain('Allow: POST\r\n');
    expect(r.closed).toBe(true);
    expect(up.seen.length).toBe(seenBefore);
    expect(logged(logsBefore, NOT_ALLOWED)).toHaveLength(1);
  });
});

describe('HTTP/2', () => {
  let s: ReturnType<typeof h2session>;
  beforeAll(() => {
    s = h2session(port, gw.pki);
  });
  afterAll(() => {
    s.close();
  });

  it.each<[string, Case]>([
    ['TRACE', { method: 'TRACE', path: '/x', status: 405, reason: REFUSED, allow: DEFAULT_ALLOW }],
    ['TRACE on a GET/POST route', { method: 'TRACE', path: '/ro/x', status: 405, reason: REFUSED, allow: 'GET, HEAD, POST' }],
    // HTTP/2 carries any token as :method: the gateway's own list decides.
    ['an unknown token', { method: 'FOO', path: '/x', status: 405, reason: REFUSED, allow: DEFAULT_ALLOW }],
    ['a lower-case method (case-sensitive)', { method: 'get', path: '/x', status: 405, reason: REFUSED, allow: DEFAULT_ALLOW }],
    ['TRACK', { method: 'TRACK', path: '/ro/x', status: 405, reason: REFUSED, allow: 'GET, HEAD, POST' }],
    ['PUT outside the route list', { method: 'PUT', path: '/ro/x', status: 405, reason: NOT_ALLOWED, allow: 'GET, HEAD, POST' }],
    ['HEAD comes with GET', { method: 'HEAD', path: '/ro/x', status: 200 }],
    ['GET in the list', { method: 'GET', path: '/ro/x', status: 200 }],
  ])('%s', async (_label, c) => {
    const seenBefore = up.seen.length;
    const logsBefore = gw.logs().length;
    const r = await h2(s, { ':method': c.method, ':path': c.path });
    expect(r.status).toBe(c.status);
    if (c.reason === undefined) {
      expect(up.seen.slice(seenBefore).map((x) => [x.method, x.url])).toEqual([[c.method, c.path]]);
      return;
    }
    expect(r.headers.allow).toBe(c.allow);
    expect(up.seen.length).toBe(seenBefore);
    expect(logged(logsBefore, c.reason).map((l) => l.status)).toEqual([405]);
  });

  it('CONNECT: 405 with the default Allow (it names no path, so no route)', async () => {
    const seenBefore = up.seen.length;
    const r = await new Promise<{ status: number; allow: unknown }>((resolve) => {
      const st = s.request({ ':method': 'CONNECT', ':authority': 'localhost:443' });
      let status = 0;
      let allow: unknown;
      st.on('response', (h) => {
        status = Number(h[':status']);
        allow = h.allow;
      });
      st.resume();
      st.on('error', () => undefined);
      st.on('close', () => resolve({ status, allow }));
      st.end();
    });
    expect(r).toEqual({ status: 405, allow: DEFAULT_ALLOW });
    expect(up.seen.length).toBe(seenBefore);
  });
});

/** Raw HTTP/2 (hand-made frames): what nghttp2 and the gateway do with what no client library sends. */
describe('HTTP/2 raw frames', () => {
  interface Raw {
    frames: Frame[];
    send(b: Buffer): void;
    close(): void;
  }
  async function openRaw(): Promise<Raw> {
    const frames: Frame[] = [];
    const socket = tlsConnect({
      host: '127.0.0.1',
      port,
      servername: 'localhost',
      ca: readFileSync(gw.pki.ca),
      cert: readFileSync(gw.pki.clients.alice.cert),
      key: readFileSync(gw.pki.clients.alice.key),
      ALPNProtocols: ['h2'],
    });
    socket.on('error', () => undefined);
    socket.on(
      'data',
      frameReader((f) => {
        frames.push(f);
        if (f.type === FRAME.SETTINGS && (f.flags & FLAG.ACK) === 0) socket.write(frame(FRAME.SETTINGS, FLAG.ACK, 0));
      }),
    );
    await new Promise<void>((resolve) => socket.once('secureConnect', () => resolve()));
    socket.write(Buffer.concat([PREFACE, frame(FRAME.SETTINGS, 0, 0)]));
    return { frames, send: (b) => socket.write(b), close: () => socket.destroy() };
  }
  async function until(cond: () => boolean): Promise<void> {
    const end = Date.now() + 2_000;
    while (!cond() && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
  }
  /** HEADERS (END_STREAM, END_HEADERS) on stream 1 with `:method` (static index 2) = `method`. */
  const headersWith = (method: string, path: string, extra: Buffer[] = []): Buffer =>
    frame(
      FRAME.HEADERS,
      FLAG.END_STREAM | FLAG.END_HEADERS,
      1,
      Buffer.concat([literal(2, method), Buffer.from([0x87]), literal(4, path), literal(1, `localhost:${port}`), ...extra]),
    );

  it('the server does not advertise extended CONNECT (SETTINGS_ENABLE_CONNECT_PROTOCOL, RFC 8441)', async () => {
    const raw = await openRaw();
    try {
      await until(() => raw.frames.some((f) => f.type === FRAME.SETTINGS && (f.flags & FLAG.ACK) === 0));
      const settings = raw.frames.find((f) => f.type === FRAME.SETTINGS && (f.flags & FLAG.ACK) === 0);
      expect(settings).toBeDefined();
      const ids: number[] = [];
      for (let i = 0; i + 6 <= settings!.payload.length; i += 6) {
        if (settings!.payload.readUInt32BE(i + 2) !== 0) ids.push(settings!.payload.readUInt16BE(i));
      }
      expect(ids).not.toContain(0x8);
    } finally {
      raw.close();
    }
  });

  it.each([
    ['a :method that is not a token', headersWith('G T', '/x')],
    ['an extended CONNECT for a WebSocket', headersWith('CONNECT', '/ws', [literalNew(':protocol', 'websocket')])],
  ])('%s: the stream is reset by nghttp2, nothing is forwarded', async (_label, headers) => {
    const seenBefore = up.seen.length;
    const raw = await openRaw();
    try {
      raw.send(headers);
      await until(() => raw.frames.some((f) => f.stream === 1 && (f.type === FRAME.RST_STREAM || f.type === FRAME.HEADERS)));
      const onStream = raw.frames.filter((f) => f.stream === 1);
      expect(onStream.map((f) => f.type)).toEqual([FRAME.RST_STREAM]);
      expect(up.seen.length).toBe(seenBefore);
    } finally {
      raw.close();
    }
  });
});
