/**
 * Threat model #102 (slow body, R.U.D.Y.): a client that sends its headers, then trickles the body, must
 * not hold a request — and the upstream connection behind it — for longer than `timeouts.requestBodyMs`.
 * Past it the gateway answers 408 `ERR_REQUEST_BODY_TIMEOUT` (HTTP/1.1: and closes the connection; HTTP/2:
 * and resets the stream with NO_ERROR, the session lives on), aborts the upstream exchange so the
 * upstream's socket is released, and logs and counts the reason. A body that completes in time, or one
 * still streaming after the upstream has started answering, is not touched (Envoy's `request_timeout`).
 */
import { createServer, type Server } from 'node:http';
import { constants as h2constants } from 'node:http2';
import type { AddressInfo } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { h1, h2, h2session, tlsOptions } from '../helpers/clients.js';
import { startGateway, tlsListener, type TestGateway } from '../helpers/gateway.js';
import { startUpstream, type TestUpstream } from '../helpers/upstream.js';

const BODY_MS = 1_000;

let up: TestUpstream;
/** Answers the status line at once, then streams the request body back: a response that starts first. */
let early: Server;
let earlyPort = 0;
let gw: TestGateway;

beforeAll(async () => {
  up = await startUpstream();
  early = createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'application/octet-stream' });
    res.flushHeaders();
    req.pipe(res);
  });
  await new Promise<void>((resolve) => early.listen(0, '127.0.0.1', resolve));
  earlyPort = (early.address() as AddressInfo).port;
  gw = await startGateway((pki) => ({
    timeouts: { requestBodyMs: BODY_MS, idleMs: 20_000 },
    listeners: [
      tlsListener(pki, {
        routes: [
          { id: 'early', match: { pathPrefix: '/early' }, upstream: `http://127.0.0.1:${earlyPort}` },
          { id: 'echo', match: { pathPrefix: '/echo' }, upstream: 'builtin:echo' },
          { id: 'up', match: { pathPrefix: '/' }, upstream: up.url },
        ],
      }),
    ],
  }));
});

afterAll(async () => {
  await gw?.close();
  await up?.close();
  await new Promise<void>((resolve) => (early ? early.close(() => resolve()) : resolve()));
});

const denials = (): Promise<number> =>
  gw.metric('portcullis_http_denials_total', { listener: 'main', reason: 'ERR_REQUEST_BODY_TIMEOUT' });

/** Access-log lines of requests to `path`. */
const accessLines = (path: string): Record<string, unknown>[] =>
  gw.logs().filter((l) => l.msg === 'request' && l.path === path);

interface Dripped {
  /** Everything the gateway sent back, as text. */
  text: string;
  /** The gateway closed the connection (end or close) before the client's own deadline. */
  closed: boolean;
  /** ms from the end of the request headers to the first byte of the answer (−1: none). */
  answeredAfterMs: number;
  /** Body bytes the client wrote. */
  sent: number;
}

/**
 * HTTP/1.1 over TLS by hand: the head, then `chunk` body bytes every `everyMs` ms (chunked framing when
 * `chunked`), never finishing, until the gateway closes or `deadlineMs` passes.
 */
function drip(
  path: string,
  opts: { chunked: boolean; everyMs: number; chunk: number; deadlineMs: number },
): Promise<Dripped> {
  return new Promise((resolve) => {
    const socket: TLSSocket = tlsConnect({
      ...tlsOptions(gw.pki, 'alice'),
      host: '127.0.0.1',
      port: gw.port(),
      ALPNProtocols: ['http/1.1'],
    });
    const chunks: Buffer[] = [];
    let sent = 0;
    let headAt = 0;
    let answeredAfterMs = -1;
    let done = false;
    let ticker: NodeJS.Timeout | undefined;
    const finish = (closed: boolean): void => {
      if (done) return;
      done = true;
      clearInterval(ticker);
      clearTimeout(deadline);
      socket.destroy();
      resolve({ text: Buffer.concat(chunks).toString('latin1'), closed, answeredAfterMs, sent });
    };
    const deadline = setTimeout(() => finish(false), opts.deadlineMs);
    socket.on('secureConnect', () => {
      const framing = opts.chunked ? 'Transfer-Encoding: chunked' : 'Content-Length: 1000000';
      socket.write(`POST ${path} HTTP/1.1\r\nHost: localhost:${gw.port()}\r\n${framing}\r\n\r\n`);
      headAt = Date.now();
      ticker = setInterval(() => {
        if (socket.destroyed) return;
        const piece = 'x'.repeat(opts.chunk);
        socket.write(opts.chunked ? `${piece.length.toString(16)}\r\n${piece}\r\n` : piece);
        sent += opts.chunk;
      }, opts.everyMs);
    });
    socket.on('data', (c: Buffer) => {
      if (answeredAfterMs < 0) answeredAfterMs = Date.now() - headAt;
      chunks.push(c);
    });
    socket.on('end', () => finish(true));
    socket.on('close', () => finish(true));
    socket.on('error', () => finish(true));
  });
}

describe(`a request body still arriving after requestBodyMs (${BODY_MS} ms) — threat model #102`, () => {
  it.each([
    { framing: 'Content-Length', chunked: false, path: '/rudy-length' },
    { framing: 'chunked', chunked: true, path: '/rudy-chunked' },
  ])(
    'HTTP/1.1, $framing: 408 ERR_REQUEST_BODY_TIMEOUT, connection closed, upstream request aborted',
    async ({ chunked, path }) => {
      const before = await denials();
      const seenBefore = up.seen.length;
      const r = await drip(path, { chunked, everyMs: 100, chunk: 10, deadlineMs: 8_000 });
      // The client kept sending all along: only the body deadline can have ended this.
      expect(r.sent).toBeGreaterThan(50);
      expect(r.closed).toBe(true);
      expect(r.text).toMatch(/^HTTP\/1\.1 408 /);
      expect(r.text).toMatch(/\r\nconnection: close\r\n/i);
      expect(r.text).toContain('the request body did not arrive in time');
      expect(r.answeredAfterMs).toBeGreaterThanOrEqual(BODY_MS - 50);
      expect(r.answeredAfterMs).toBeLessThan(BODY_MS + 2_000);
      // The request had reached the upstream (its headers were fine) but never completely.
      const seen = up.seen.slice(seenBefore).filter((s) => s.url === path);
      expect(seen).toHaveLength(1);
      // The upstream's side of the exchange is closed, not left waiting for the rest of the body.
      await expect.poll(() => up.inflight().now, { timeout: 3_000 }).toBe(0);
      await expect.poll(denials).toBe(before + 1);
      await expect
        .poll(() => accessLines(path).map((l) => [l.status, l.outcome, l.reason]))
        .toEqual([[408, 'denied', 'ERR_REQUEST_BODY_TIMEOUT']]);
      // Not an upstream failure.
      expect(await gw.metric('portcullis_upstream_errors_total', { route: 'up' })).toBe(0);
    },
  );

  it('HTTP/2: 408, the stream is reset with NO_ERROR and the same session still serves requests', async () => {
    const before = await denials();
    const session = h2session(gw.port(), gw.pki);
    try {
      const outcome = await new Promise<{
        status: number;
        body: string;
        rstCode: number | undefined;
        afterMs: number;
        closedAfterMs: number;
      }>((resolve) => {
        const stream = session.request({ ':method': 'POST', ':path': '/rudy-h2' }, { endStream: false });
        const started = Date.now();
        let status = 0;
        let afterMs = -1;
        let body = '';
        const ticker = setInterval(() => {
          if (!stream.destroyed && !stream.closed) stream.write('x'.repeat(10));
        }, 100);
        // Our own give-up uses CANCEL, so a NO_ERROR reset can only be the gateway's.
        const guard = setTimeout(() => stream.close(h2constants.NGHTTP2_CANCEL), 8_000);
        stream.on('response', (h) => {
          status = Number(h[':status']);
          afterMs = Date.now() - started;
        });
        stream.on('data', (c: Buffer) => (body += c.toString('utf8')));
        stream.on('error', () => undefined);
        stream.on('close', () => {
          clearInterval(ticker);
          clearTimeout(guard);
          resolve({ status, body, rstCode: stream.rstCode, afterMs, closedAfterMs: Date.now() - started });
        });
      });
      expect(outcome.status).toBe(408);
      expect(outcome.body).toContain('the request body did not arrive in time');
      expect(outcome.afterMs).toBeGreaterThanOrEqual(BODY_MS - 50);
      expect(outcome.afterMs).toBeLessThan(BODY_MS + 2_000);
      expect(outcome.rstCode).toBe(h2constants.NGHTTP2_NO_ERROR);
      expect(outcome.closedAfterMs).toBeLessThan(BODY_MS + 2_000);
      await expect.poll(() => up.inflight().now, { timeout: 3_000 }).toBe(0);
      await expect.poll(denials).toBe(before + 1);
      // The session was not torn down for it.
      const next = await h2(session, { ':path': '/after-rudy' });
      expect(next.status).toBe(200);
    } finally {
      session.close();
    }
  });

  it('the built-in echo upstream applies the same deadline', async () => {
    const before = await denials();
    const r = await drip('/echo/rudy', { chunked: false, everyMs: 100, chunk: 10, deadlineMs: 8_000 });
    expect(r.closed).toBe(true);
    expect(r.text).toMatch(/^HTTP\/1\.1 408 /);
    expect(r.text).not.toContain('builtin:echo');
    await expect.poll(denials).toBe(before + 1);
  });

  it('a control client is served while slow bodies are being cut', async () => {
    const slow = Array.from({ length: 5 }, (_, i) =>
      drip(`/rudy-many-${i}`, { chunked: false, everyMs: 200, chunk: 1, deadlineMs: 8_000 }),
    );
    const control = await h1(gw.port(), gw.pki, { path: '/control', method: 'POST', body: 'hello' });
    expect(control.status).toBe(200);
    const results = await Promise.all(slow);
    expect(results.every((r) => r.closed && /^HTTP\/1\.1 408 /.test(r.text))).toBe(true);
    await expect.poll(() => up.inflight().now, { timeout: 3_000 }).toBe(0);
  });
});

describe('bodies the deadline leaves alone', () => {
  it('a slow body that completes within requestBodyMs is forwarded whole', async () => {
    const seenBefore = up.seen.length;
    const body = await new Promise<{ status: number; text: string }>((resolve, reject) => {
      const session = h2session(gw.port(), gw.pki);
      const stream = session.request(
        { ':method': 'POST', ':path': '/slow-but-in-time' },
        { endStream: false },
      );
      let i = 0;
      // 5 writes 30 ms apart: well inside requestBodyMs even when a loaded machine stalls the timer.
      const ticker = setInterval(() => {
        stream.write('y'.repeat(100));
        if (++i === 5) {
          clearInterval(ticker);
          stream.end();
        }
      }, 30);
      let status = 0;
      let text = '';
      stream.on('response', (h) => (status = Number(h[':status'])));
      stream.on('data', (c: Buffer) => (text += c.toString('utf8')));
      stream.on('end', () => {
        session.close();
        resolve({ status, text });
      });
      stream.on('error', (err: Error) => {
        clearInterval(ticker);
        session.close();
        reject(err);
      });
    });
    expect(body.status).toBe(200);
    const seen = up.seen.slice(seenBefore).find((s) => s.url === '/slow-but-in-time');
    expect(seen?.bodyBytes).toBe(500);
  });

  it('a body still streaming after the upstream started answering runs past requestBodyMs (response started)', async () => {
    const before = await denials();
    const session = h2session(gw.port(), gw.pki);
    try {
      const result = await new Promise<{ status: number; received: number; elapsed: number }>(
        (resolve, reject) => {
          const stream = session.request(
            { ':method': 'POST', ':path': '/early/stream' },
            { endStream: false },
          );
          const started = Date.now();
          let status = 0;
          let received = 0;
          let i = 0;
          // 25 × 100 ms = 2.5 s of body: well past the 1 s deadline.
          const ticker = setInterval(() => {
            stream.write('z'.repeat(40));
            if (++i === 25) {
              clearInterval(ticker);
              stream.end();
            }
          }, 100);
          stream.on('response', (h) => (status = Number(h[':status'])));
          stream.on('data', (c: Buffer) => (received += c.length));
          stream.on('end', () => resolve({ status, received, elapsed: Date.now() - started }));
          stream.on('error', (err: Error) => {
            clearInterval(ticker);
            reject(err);
          });
        },
      );
      expect(result.status).toBe(200);
      expect(result.received).toBe(25 * 40);
      expect(result.elapsed).toBeGreaterThan(BODY_MS * 2);
      expect(await denials()).toBe(before);
    } finally {
      session.close();
    }
  });
});
