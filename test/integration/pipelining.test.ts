/**
 * HTTP/1.1 pipelining cannot turn one connection into many concurrent upstream requests: the gateway
 * runs pipelined requests one after the other and cuts a connection that queues too many (found in
 * review: Node emits every pipelined request of a read at once).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startGateway, tlsListener, type TestGateway } from '../helpers/gateway.js';
import { startUpstream, type TestUpstream } from '../helpers/upstream.js';
import { h1, rawTls } from '../helpers/clients.js';

describe('HTTP/1.1 pipelining', () => {
  let up: TestUpstream;
  let gw: TestGateway;
  beforeAll(async () => {
    up = await startUpstream();
    gw = await startGateway((pki) => ({
      listeners: [tlsListener(pki, { routes: [{ id: 'up', match: { pathPrefix: '/' }, upstream: up.url }] })],
    }));
  });
  afterAll(async () => {
    await gw.close();
    await up.close();
  });

  it('answers pipelined requests in order, one upstream request at a time', async () => {
    const before = up.seen.length;
    const base = up.inflight().max;
    expect(base).toBeLessThanOrEqual(1);
    const one = (i: number): string => `GET /slow?ms=50&i=${i} HTTP/1.1\r\nHost: localhost:${gw.port()}\r\n\r\n`;
    const last = `GET /slow?ms=50&i=9 HTTP/1.1\r\nHost: localhost:${gw.port()}\r\nConnection: close\r\n\r\n`;
    const payload = Array.from({ length: 9 }, (_, i) => one(i)).join('') + last;
    const r = await rawTls(gw.port(), gw.pki, payload, { timeoutMs: 10_000 });
    const statuses = r.text.match(/HTTP\/1\.1 \d{3}/g) ?? [];
    expect(statuses).toEqual(Array.from({ length: 10 }, () => 'HTTP/1.1 200'));
    const urls = up.seen.slice(before).map((s) => s.url);
    expect(urls).toEqual(Array.from({ length: 10 }, (_, i) => `/slow?ms=50&i=${i}`));
    expect(up.inflight().max).toBe(1);
  });

  it('cuts a connection that pipelines far more than any client does, without flooding the upstream', async () => {
    const before = up.seen.length;
    const payload = Array.from({ length: 300 }, (_, i) => `GET /slow?ms=200&f=${i} HTTP/1.1\r\nHost: localhost:${gw.port()}\r\n\r\n`).join('');
    const r = await rawTls(gw.port(), gw.pki, payload, { timeoutMs: 10_000 });
    expect(r.closed).toBe(true);
    // At most the first request plus the queue bound ever reach the upstream, one at a time.
    expect(up.seen.length - before).toBeLessThanOrEqual(65);
    expect(up.inflight().max).toBe(1);
    // The gateway is alive and serves a clean client.
    expect((await h1(gw.port(), gw.pki, { path: '/ok' })).status).toBe(200);
  });
});
