/**
 * Threat model #131, graceful shutdown with work in flight (what SIGTERM runs: `app.close(shutdownGraceMs)`):
 * the listener stops accepting at once, requests already running (HTTP/1.1 and HTTP/2) finish with their
 * full answers, and whatever is still open when the grace period ends is closed, so the stop is bounded.
 */
import { connect as netConnect } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { adminGet } from '../helpers/admin.js';
import { h1, h2, h2session } from '../helpers/clients.js';
import { startGateway, tlsListener, type TestGateway } from '../helpers/gateway.js';
import { startUpstream, type TestUpstream } from '../helpers/upstream.js';

const opened: { gw: TestGateway; up: TestUpstream }[] = [];

async function start(opts: { admin?: boolean } = {}): Promise<{ gw: TestGateway; up: TestUpstream }> {
  const up = await startUpstream();
  const gw = await startGateway((pki) => ({
    ...(opts.admin === true ? { admin: { enabled: true, listen: '127.0.0.1:0' } } : {}),
    listeners: [tlsListener(pki, { routes: [{ id: 'up', match: { pathPrefix: '/' }, upstream: up.url }] })],
  }));
  const pair = { gw, up };
  opened.push(pair);
  return pair;
}

afterEach(async () => {
  for (const { gw, up } of opened.splice(0)) {
    await gw.close().catch(() => undefined);
    await up.close();
  }
});

/** Resolves with the connect error code, or 'connected' (then closes the socket). */
function tcpConnect(port: number): Promise<string> {
  return new Promise((resolve) => {
    const s = netConnect({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      resolve('connected');
    });
    s.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
  });
}

describe('graceful shutdown with requests in flight (threat model #131)', () => {
  it('stops accepting at once, lets running HTTP/1.1 and HTTP/2 requests finish, then resolves', async () => {
    const { gw, up } = await start();
    const port = gw.port();
    const session = h2session(port, gw.pki);
    try {
      const slowH1 = h1(port, gw.pki, { path: '/slow?ms=1200' });
      const slowH2 = h2(session, { ':path': '/slow?ms=1200' });
      await expect.poll(() => up.inflight().now, { timeout: 5_000 }).toBe(2);
      const t0 = Date.now();
      const closing = gw.app.close(5_000);
      // New connections are refused while the old ones drain.
      await expect.poll(() => tcpConnect(port)).toBe('ECONNREFUSED');
      const [a, b] = await Promise.all([slowH1, slowH2]);
      expect(a.status).toBe(200);
      expect(b.status).toBe(200);
      await closing;
      const took = Date.now() - t0;
      console.log(`drain with two requests in flight took ${took} ms`);
      // It waited for the work (about 1.2 s from its start) and not for the grace period.
      expect(took).toBeGreaterThanOrEqual(900);
      expect(took).toBeLessThan(4_000);
    } finally {
      session.close();
    }
  });

  it('/readyz answers 503 "draining" for the whole drain, so a load balancer stops sending new work', async () => {
    const { gw, up } = await start({ admin: true });
    const adminPort = gw.app.adminPort() as number;
    expect((await adminGet(adminPort, '/readyz')).status).toBe(200);
    const slow = h1(gw.port(), gw.pki, { path: '/slow?ms=1500' });
    await expect.poll(() => up.inflight().now, { timeout: 5_000 }).toBe(1);
    const closing = gw.app.close(5_000);
    const during = await adminGet(adminPort, '/readyz');
    expect(during.status).toBe(503);
    expect(JSON.parse(during.body)).toEqual({ ready: false, notReady: ['draining: the gateway is shutting down'] });
    // The request in flight still gets its whole answer.
    expect((await slow).status).toBe(200);
    await closing;
  });

  it('closes what is still open when the grace period ends: the stop is bounded', async () => {
    const { gw, up } = await start();
    const port = gw.port();
    // /hold answers its headers and never finishes.
    const held = h1(port, gw.pki, { path: '/hold' }).then(
      (r) => `answered ${r.status}`,
      (err: unknown) => `failed ${(err as NodeJS.ErrnoException).code ?? String(err)}`,
    );
    await expect.poll(() => up.inflight().now, { timeout: 5_000 }).toBe(1);
    const t0 = Date.now();
    await gw.app.close(800);
    const took = Date.now() - t0;
    expect(took).toBeGreaterThanOrEqual(700);
    expect(took).toBeLessThan(3_000);
    // The client's response was cut, not completed.
    expect(await held).toMatch(/^failed /);
    await expect.poll(() => up.inflight().now, { timeout: 3_000 }).toBe(0);
  });
});
