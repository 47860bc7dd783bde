/**
 * Hostile case 105 (keep-alive abuse), the parts a gateway owns: an idle HTTP/1.1 keep-alive connection is
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

/** One TLS connection (ALPN http/1.1) that sends requests one after another and reads their answers. */
function keepAliveClient(): Promise<{
  socket: TLSSocket;
  get: (path: string) => Promise<string>;
  closed: Promise<void>;
}> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({
      ...tlsOptions(gw.pki, 'alice'),
      host: '127.0.0.1',
      port: gw.port(),
      ALPNProtocols: ['http/1.1'],
    });
    let buffer = '';
    let waiting: ((head: string) => void) | undefined;
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
      w(answer);
    });
    socket.on('error', () => undefined);
    const closed = new Promise<void>((res) => socket.once('close', () => res()));
    socket.once('secureConnect', () =>
      resolve({
        socket,
        closed,
        get: (path) =>
          new Promise<string>((res) => {
            waiting = res;
            socket.write(`GET ${path} HTTP/1.1\r\nHost: localhost:${gw.port()}\r\n\r\n`);
          }),
      }),
    );
    socket.once('error', reject);
  });
}

describe('keep-alive (hostile case 105)', () => {
  it(`an idle keep-alive connection is closed after keepAliveMs (${KEEP_ALIVE_MS} ms)`, async () => {
    const c = await keepAliveClient();
    expect(await c.get('/one')).toMatch(/^HTTP\/1\.1 200 /);
    const t0 = Date.now();
    await Promise.race([c.closed, new Promise((r) => setTimeout(r, 5_000))]);
    const took = Date.now() - t0;
    expect(c.socket.destroyed || c.socket.readableEnded).toBe(true);
    expect(took).toBeGreaterThanOrEqual(KEEP_ALIVE_MS - 100);
    expect(took).toBeLessThan(KEEP_ALIVE_MS + 1_500);
  });

  it('2,000 requests on one connection are each answered and forwarded; the gauge returns to 0', async () => {
    const seenBefore = up.seen.length;
    const c = await keepAliveClient();
    for (let i = 0; i < 2_000; i++) {
      const answer = await c.get(`/many/${i}`);
      if (!answer.startsWith('HTTP/1.1 200 ')) throw new Error(`request ${i}: ${answer.slice(0, 40)}`);
    }
    expect(up.seen.length - seenBefore).toBe(2_000);
    expect(up.seen.at(-1)?.url).toBe('/many/1999');
    c.socket.end();
    await c.closed;
    await expect.poll(() => gw.metric('portcullis_active_connections', { listener: 'main' })).toBe(0);
  }, 60_000);
});
