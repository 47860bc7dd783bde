/**
 * Threat model #105 (keep-alive abuse), the parts a gateway owns: an idle HTTP/1.1 keep-alive connection is
 * closed after `timeouts.keepAliveMs`, not kept for Node's defaults; and one connection may carry thousands
 * of requests, each checked and forwarded alone, with the gateway's active-connection gauge back to zero
 * once it ends.
 */
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tlsOptions } from '../helpers/clients.js';
import { startGateway, tlsListener, type TestGateway } from '../helpers/gateway.js';
import { startUpstream, type TestUpstream } from '../helpers/upstream.js';

const KEEP_ALIVE_MS = 700;

let up: TestUpstream;
let gw: TestGateway;

beforeAll(async () => {
  up = await startUpstream();
  gw = await startGateway((pki) => ({
    timeouts: { keepAliveMs: KEEP_ALIVE_MS, idleMs: 20_000 },
    listeners: [tlsListener(pki, { routes: [{ id: 'up', match: { pathPrefix: '/' }, upstream: up.url }] })],
  }));
});

afterAll(async () => {
  await gw?.close();
  await up?.close();
});

/** One TLS connection (ALPN http/1.1) that sends requests one after another and reads their answers; an
 * answer the connection closes before rejects. */
function keepAliveClient(g: TestGateway = gw): Promise<{
  socket: TLSSocket;
  get: (path: string) => Promise<string>;
  closed: Promise<void>;
}> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({
      ...tlsOptions(g.pki, 'alice'),
      host: '127.0.0.1',
      port: g.port(),
      ALPNProtocols: ['http/1.1'],
    });
    let buffer = '';
    let waiting: ((head: string) => void) | undefined;
    let failing: ((err: Error) => void) | undefined;
    socket.on('data', (c: Buffer) => {
      buffer += c.toString('latin1');
      // The upstream answers JSON with a Content-Length: one answer is complete when its body is in.
      const end = buffer.indexOf('\r\n\r\n');
      if (end < 0 || waiting === undefined) return;
      const m = /\r\ncontent-length: (\d+)\r\n/i.exec(buffer.slice(0, end + 2));
      const total = end + 4 + Number(m?.[1] ?? 0);
      if (buffer.length < total) return;
      const answer = buffer.slice(0, total);
      buffer = buffer.slice(total);
      const w = waiting;
      waiting = undefined;
      failing = undefined;
      w(answer);
    });
    socket.on('error', () => undefined);
    const closed = new Promise<void>((res) =>
      socket.once('close', () => {
        waiting = undefined;
        failing?.(new Error(`connection closed before the answer: ${JSON.stringify(buffer.slice(0, 60))}`));
        failing = undefined;
        res();
      }),
    );
    socket.once('secureConnect', () =>
      resolve({
        socket,
        closed,
        get: (path) =>
          new Promise<string>((res, rej) => {
            if (socket.destroyed) {
              rej(new Error('connection already closed'));
              return;
            }
            waiting = res;
            failing = rej;
            socket.write(`GET ${path} HTTP/1.1\r\nHost: localhost:${g.port()}\r\n\r\n`);
          }),
      }),
    );
    socket.once('error', reject);
  });
}

describe('keep-alive (threat model #105)', () => {
  it(`an idle keep-alive connection is closed after keepAliveMs (${KEEP_ALIVE_MS} ms)`, async () => {
    const c = await keepAliveClient();
    // The gateway's timer starts when it has sent the answer: after `sent`, before `answered`.
    const sent = Date.now();
    expect(await c.get('/one')).toMatch(/^HTTP\/1\.1 200 /);
    const answered = Date.now();
    await Promise.race([c.closed, new Promise((r) => setTimeout(r, 5_000))]);
    const closedAt = Date.now();
    expect(c.socket.destroyed || c.socket.readableEnded).toBe(true);
    expect(closedAt - sent).toBeGreaterThanOrEqual(KEEP_ALIVE_MS - 100);
    expect(closedAt - answered).toBeLessThan(KEEP_ALIVE_MS + 1_500);
  });

  it('2,000 requests on one connection are each answered and forwarded; the gauge returns to 0', async () => {
    // Its own gateway with a long keepAliveMs: a stall between two requests on a loaded machine must not
    // pass for idleness (and a connection closed under a request fails it at once, see keepAliveClient).
    const longGw = await startGateway((pki) => ({
      timeouts: { keepAliveMs: 5_000, idleMs: 20_000 },
      listeners: [tlsListener(pki, { routes: [{ id: 'up', match: { pathPrefix: '/' }, upstream: up.url }] })],
    }));
    try {
      const seenBefore = up.seen.length;
      const c = await keepAliveClient(longGw);
      for (let i = 0; i < 2_000; i++) {
        const answer = await c.get(`/many/${i}`);
        if (!answer.startsWith('HTTP/1.1 200 ')) throw new Error(`request ${i}: ${answer.slice(0, 40)}`);
      }
      expect(up.seen.length - seenBefore).toBe(2_000);
      expect(up.seen.at(-1)?.url).toBe('/many/1999');
      c.socket.end();
      await c.closed;
      await expect.poll(() => longGw.metric('portcullis_active_connections', { listener: 'main' })).toBe(0);
    } finally {
      await longGw.close();
    }
  }, 60_000);
});
