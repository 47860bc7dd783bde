/**
 * `listeners[].maxConnections`: a connection flood cannot exhaust memory or descriptors. Past the cap a new
 * connection is closed before its TLS handshake (no handshake CPU spent on it), counted
 * `portcullis_tls_rejected_connections_total{reason="connection_limit"}`, and never reaches the upstream;
 * connections already open keep working, and a freed slot is usable again.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer as createNetServer, type AddressInfo, type Server } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { startGateway, tlsListener, reloadGateway, type TestGateway } from '../helpers/gateway.js';
import { startUpstream, type TestUpstream } from '../helpers/upstream.js';
import { tlsOptions } from '../helpers/clients.js';
import type { TestPkiPaths } from '../helpers/pki.js';

/** A TLS connection that sends one keep-alive request and stays open; `reply` resolves with the status line. */
function heldConnection(port: number, pki: TestPkiPaths): { socket: TLSSocket; reply: Promise<string> } {
  const socket = tlsConnect({
    ...tlsOptions(pki, 'alice'),
    host: '127.0.0.1',
    port,
    ALPNProtocols: ['http/1.1'],
  });
  const reply = new Promise<string>((resolve, reject) => {
    let text = '';
    socket.on('secureConnect', () => socket.write(`GET /held HTTP/1.1\r\nHost: localhost:${port}\r\n\r\n`));
    socket.on('data', (c: Buffer) => {
      text += c.toString('latin1');
      if (text.includes('\r\n\r\n')) resolve(text.slice(0, text.indexOf('\r\n')));
    });
    socket.on('error', reject);
    socket.on('close', () => reject(new Error(`closed before an answer (read: ${JSON.stringify(text)})`)));
  });
  return { socket, reply };
}

/** Whether a new TLS connection completes its handshake (true) or is closed first (false). */
function handshakes(port: number, pki: TestPkiPaths): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = tlsConnect({ ...tlsOptions(pki, 'alice'), host: '127.0.0.1', port });
    const timer = setTimeout(() => {
      socket.destroy();
      resolve(false);
    }, 5_000);
    socket.once('secureConnect', () => {
      clearTimeout(timer);
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => {
      clearTimeout(timer);
      resolve(false);
    });
    socket.once('close', () => {
      clearTimeout(timer);
      resolve(false);
    });
  });
}

describe('listeners[].maxConnections', () => {
  let up: TestUpstream;
  let gw: TestGateway;
  const build = (max: number) => (pki: TestPkiPaths) => ({
    listeners: [
      tlsListener(pki, {
        maxConnections: max,
        routes: [{ id: 'up', match: { pathPrefix: '/' }, upstream: `http://127.0.0.1:${up.port}` }],
      }),
    ],
  });

  beforeAll(async () => {
    up = await startUpstream();
    gw = await startGateway(build(2));
  });
  afterAll(async () => {
    await gw.close();
    await up.close();
  });

  it('past the cap a new connection is closed before the handshake, counted, and reaches nothing', async () => {
    const a = heldConnection(gw.port(), gw.pki);
    const b = heldConnection(gw.port(), gw.pki);
    expect(await a.reply).toBe('HTTP/1.1 200 OK');
    expect(await b.reply).toBe('HTTP/1.1 200 OK');
    const seen = up.seen.length;
    expect(await handshakes(gw.port(), gw.pki)).toBe(false);
    expect(await gw.metric('portcullis_tls_rejected_connections_total', { reason: 'connection_limit' })).toBe(
      1,
    );
    expect(await gw.metric('portcullis_tls_handshakes_total')).toBe(2);
    expect(up.seen.length).toBe(seen);
    expect(gw.logs().some((l) => l.msg === 'connection refused' && l.reason === 'connection_limit')).toBe(
      true,
    );
    // The connections already open keep working.
    a.socket.write(`GET /again HTTP/1.1\r\nHost: localhost:${gw.port()}\r\n\r\n`);
    await expect.poll(() => up.seen.length).toBe(seen + 1);
    // A freed slot is usable again.
    b.socket.destroy();
    await expect.poll(() => gw.metric('portcullis_active_connections'), { timeout: 5_000 }).toBe(1);
    expect(await handshakes(gw.port(), gw.pki)).toBe(true);
    a.socket.destroy();
  });

  it('a reload changes the cap for new connections', async () => {
    await expect.poll(() => gw.metric('portcullis_active_connections'), { timeout: 5_000 }).toBe(0);
    await reloadGateway(gw, build(1));
    const a = heldConnection(gw.port(), gw.pki);
    expect(await a.reply).toBe('HTTP/1.1 200 OK');
    const before = await gw.metric('portcullis_tls_rejected_connections_total', {
      reason: 'connection_limit',
    });
    expect(await handshakes(gw.port(), gw.pki)).toBe(false);
    expect(await gw.metric('portcullis_tls_rejected_connections_total', { reason: 'connection_limit' })).toBe(
      before + 1,
    );
    a.socket.destroy();
  });
});

describe('listeners[].maxConnectionsPerClient', () => {
  let up: TestUpstream;
  let echo: Server;
  let gw: TestGateway;
  const build = (perClient: number) => (pki: TestPkiPaths) => ({
    listeners: [
      tlsListener(pki, {
        maxConnectionsPerClient: perClient,
        routes: [{ id: 'up', match: { pathPrefix: '/' }, upstream: `http://127.0.0.1:${up.port}` }],
      }),
      {
        name: 'comm',
        listen: '127.0.0.1:0',
        protocol: 'tcp',
        maxConnectionsPerClient: perClient,
        tls: { cert: pki.server.cert, key: pki.server.key, clientCertificate: 'require', clientCa: pki.ca },
        upstream: `tcp://127.0.0.1:${(echo.address() as AddressInfo).port}`,
      },
    ],
  });
  const refused = (listener: string): Promise<number> =>
    gw.metric('portcullis_tls_rejected_connections_total', { listener, reason: 'client_connection_limit' });

  beforeAll(async () => {
    up = await startUpstream();
    echo = createNetServer((s) => {
      s.on('error', () => undefined);
      s.pipe(s);
    });
    await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
    gw = await startGateway(build(2));
  });
  afterAll(async () => {
    await gw.close();
    await up.close();
    await new Promise((r) => echo.close(r));
  });

  it('a third connection from the same address is closed before the handshake, counted and logged; the listener cap is not touched', async () => {
    const a = heldConnection(gw.port(), gw.pki);
    const b = heldConnection(gw.port(), gw.pki);
    expect(await a.reply).toBe('HTTP/1.1 200 OK');
    expect(await b.reply).toBe('HTTP/1.1 200 OK');
    const seen = up.seen.length;
    expect(await handshakes(gw.port(), gw.pki)).toBe(false);
    expect(await refused('main')).toBe(1);
    expect(await gw.metric('portcullis_tls_rejected_connections_total', { reason: 'connection_limit' })).toBe(
      0,
    );
    expect(up.seen.length).toBe(seen);
    const line = gw
      .logs()
      .find((l) => l.msg === 'connection refused' && l.reason === 'client_connection_limit');
    expect(line).toMatchObject({ listener: 'main', clientAddress: '127.0.0.1', maxConnectionsPerClient: 2 });
    // A closed connection gives its slot back.
    b.socket.destroy();
    await expect
      .poll(() => gw.metric('portcullis_active_connections', { listener: 'main' }), { timeout: 5_000 })
      .toBe(1);
    expect(await handshakes(gw.port(), gw.pki)).toBe(true);
    a.socket.destroy();
  });

  it('the TCP listener counts its own connections the same way', async () => {
    const held: TLSSocket[] = [];
    for (let i = 0; i < 2; i++) {
      const s = tlsConnect({ ...tlsOptions(gw.pki, 'alice'), host: '127.0.0.1', port: gw.port('comm') });
      s.on('error', () => undefined);
      await new Promise((r) => s.once('secureConnect', r));
      held.push(s);
    }
    expect(await handshakes(gw.port('comm'), gw.pki)).toBe(false);
    expect(await refused('comm')).toBe(1);
    for (const s of held) s.destroy();
    await expect
      .poll(() => gw.metric('portcullis_active_connections', { listener: 'comm' }), { timeout: 5_000 })
      .toBe(0);
    expect(await handshakes(gw.port('comm'), gw.pki)).toBe(true);
  });

  it('a reload changes the per-client cap for new connections', async () => {
    await expect
      .poll(() => gw.metric('portcullis_active_connections', { listener: 'main' }), { timeout: 5_000 })
      .toBe(0);
    expect(await reloadGateway(gw, build(1))).toEqual({ ok: true });
    const a = heldConnection(gw.port(), gw.pki);
    expect(await a.reply).toBe('HTTP/1.1 200 OK');
    const before = await refused('main');
    expect(await handshakes(gw.port(), gw.pki)).toBe(false);
    expect(await refused('main')).toBe(before + 1);
    a.socket.destroy();
  });
});
