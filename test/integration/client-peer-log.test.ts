/**
 * Every access-log line (HTTP request, piped TCP connection) and every refused-connection line carries the
 * client's address and port (`clientAddress`, `clientPort`): the port is what tells two connections of one
 * host or one NAT apart, and what matches a line with the client's own logs or a packet capture. Each case
 * reads the port the client really used (its socket's local port) and finds that number on the line.
 */
import { connect as netConnect, createServer as createNetServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { connect as tlsConnect, type ConnectionOptions, type TLSSocket } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { h2, h2session, tlsOptions } from '../helpers/clients.js';
import { startGateway, tlsListener, type TestGateway } from '../helpers/gateway.js';

let gw: TestGateway;
const echoRoute = (id: string): Record<string, unknown> => ({ id, match: { pathPrefix: '/' }, upstream: 'builtin:echo' });
let tcpUpstream: Server;

beforeAll(async () => {
  // The TCP listener's upstream: a byte echo on loopback.
  tcpUpstream = createNetServer((s) => {
    s.on('error', () => s.destroy());
    s.pipe(s);
  });
  await new Promise<void>((r) => tcpUpstream.listen(0, '127.0.0.1', r));
  const upstreamPort = (tcpUpstream.address() as AddressInfo).port;
  gw = await startGateway((pki) => ({
    admin: {
      listen: '127.0.0.1:0',
      tls: { cert: pki.server.cert, key: pki.server.key, clientCa: pki.ca, clientCertificate: 'require' },
    },
    listeners: [
      tlsListener(pki, {
        routes: [
          { id: 'bob-only', match: { pathPrefix: '/bob-only' }, upstream: 'builtin:echo', allowClients: ['CN=bob'] },
          { id: 'echo', match: { pathPrefix: '/' }, upstream: 'builtin:echo' },
        ],
      }),
      tlsListener(pki, { name: 'per-client', maxConnectionsPerClient: 1, routes: [echoRoute('per-client')] }),
      tlsListener(pki, { name: 'capped', maxConnections: 1, routes: [echoRoute('capped')] }),
      {
        name: 'tcp',
        listen: '127.0.0.1:0',
        protocol: 'tcp',
        tls: { cert: pki.server.cert, key: pki.server.key, clientCertificate: 'require', clientCa: pki.ca },
        allowClients: ['CN=bob'],
        upstream: `tcp://127.0.0.1:${upstreamPort}`,
      },
    ],
  }));
});

afterAll(async () => {
  await gw?.close();
  await new Promise<void>((r) => tcpUpstream?.close(() => r()));
});

type Line = Record<string, unknown>;

/** The first log line `pred` accepts, polling until it appears (lines are written asynchronously). */
async function lineWhere(pred: (l: Line) => boolean, what: string): Promise<Line> {
  const deadline = Date.now() + 5_000;
  for (;;) {
    const found = gw.logs().find(pred);
    if (found !== undefined) return found;
    if (Date.now() > deadline) throw new Error(`no log line: ${what}\n${JSON.stringify(gw.logs().slice(-10), null, 1)}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** A TLS connection to `port`: writes `data` after the handshake (if any), resolves at the close with the
 * local port it used and what it read. */
function tlsExchange(
  port: number,
  opts: ConnectionOptions & { data?: string; keepOpen?: boolean },
): Promise<{ localPort: number; text: string; socket: TLSSocket }> {
  return new Promise((resolve) => {
    const socket = tlsConnect({ host: '127.0.0.1', port, ALPNProtocols: ['http/1.1'], ...opts });
    let localPort = 0;
    let text = '';
    socket.once('connect', () => (localPort = socket.localPort ?? 0));
    socket.on('secureConnect', () => {
      if (opts.data !== undefined) socket.write(opts.data);
      if (opts.keepOpen) resolve({ localPort, text, socket });
    });
    socket.on('data', (c: Buffer) => (text += c.toString('latin1')));
    socket.on('error', () => undefined);
    socket.on('close', () => resolve({ localPort, text, socket }));
    setTimeout(() => socket.destroy(), 5_000).unref();
  });
}

/** A plain TCP connection that stays open until destroyed; resolves once connected, with its local port. */
function tcpOpen(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = netConnect({ host: '127.0.0.1', port }, () => resolve(s));
    s.on('error', reject);
  });
}

const isPeer = (l: Line, localPort: number): boolean => l.clientAddress === '127.0.0.1' && l.clientPort === localPort;

describe('access-log lines carry clientAddress and clientPort', () => {
  it('HTTP/1.1: a forwarded request and a denied one', async () => {
    const pki = gw.pki;
    const port = gw.port('main');
    const request = (path: string): string => `GET ${path} HTTP/1.1\r\nHost: localhost:${port}\r\nConnection: close\r\n\r\n`;
    const ok = await tlsExchange(port, { ...tlsOptions(pki, 'alice'), data: request('/peer-ok') });
    expect(ok.text).toMatch(/^HTTP\/1\.1 200/);
    const okLine = await lineWhere((l) => l.msg === 'request' && l.path === '/peer-ok', 'request /peer-ok');
    expect(okLine).toMatchObject({ outcome: 'forwarded', clientAddress: '127.0.0.1', clientPort: ok.localPort });

    const denied = await tlsExchange(port, { ...tlsOptions(pki, 'alice'), data: request('/bob-only/x') });
    expect(denied.text).toMatch(/^HTTP\/1\.1 403/);
    const deniedLine = await lineWhere((l) => l.msg === 'request' && l.path === '/bob-only/x', 'request /bob-only/x');
    expect(deniedLine).toMatchObject({ outcome: 'denied', clientAddress: '127.0.0.1', clientPort: denied.localPort });
  });

  it('HTTP/2: the session socket\'s port', async () => {
    const session = h2session(gw.port('main'), gw.pki, 'alice');
    try {
      const reply = await h2(session, { ':path': '/peer-h2' });
      expect(reply.status).toBe(200);
      const line = await lineWhere((l) => l.msg === 'request' && l.path === '/peer-h2', 'request /peer-h2');
      expect(line).toMatchObject({ clientAddress: '127.0.0.1', clientPort: session.socket.localPort });
    } finally {
      session.close();
    }
  });

  it('TCP listener: the "tcp connection" line', async () => {
    const bob = await tlsExchange(gw.port('tcp'), { ...tlsOptions(gw.pki, 'bob'), keepOpen: true });
    bob.socket.end('ping');
    await new Promise((r) => bob.socket.once('close', r));
    const line = await lineWhere(
      (l) => l.msg === 'tcp connection' && l.listener === 'tcp' && l.clientPort === bob.localPort,
      'tcp connection of bob',
    );
    expect(line).toMatchObject({ clientAddress: '127.0.0.1', clientSubject: expect.stringContaining('CN=bob') });
  });
});

describe('refused-connection lines carry clientAddress and clientPort', () => {
  it('a TLS handshake without the required client certificate', async () => {
    const r = await tlsExchange(gw.port('main'), tlsOptions(gw.pki, undefined));
    const line = await lineWhere((l) => l.msg === 'tls handshake refused' && l.clientPort === r.localPort, 'handshake refusal');
    expect(line).toMatchObject({ listener: 'main', reason: 'no_client_cert', clientAddress: '127.0.0.1' });
  });

  it('plaintext on the TLS port', async () => {
    const s = await tcpOpen(gw.port('main'));
    const localPort = s.localPort ?? 0;
    s.on('data', () => undefined);
    s.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
    await new Promise((r) => s.once('close', r));
    const line = await lineWhere((l) => l.msg === 'plaintext on a TLS port' && isPeer(l, localPort), 'plaintext refusal');
    expect(line).toMatchObject({ listener: 'main', reason: 'plaintext' });
  });

  it('a request the HTTP/1.1 parser refuses', async () => {
    const r = await tlsExchange(gw.port('main'), {
      ...tlsOptions(gw.pki, 'alice'),
      data: 'GET / HTTP/1.1\r\nHost: localhost\r\nBad Header: x\r\n\r\n',
    });
    expect(r.text).toMatch(/^HTTP\/1\.1 400/);
    const line = await lineWhere(
      (l) => l.msg === 'request refused by the HTTP/1.1 parser' && isPeer(l, r.localPort),
      'parser refusal',
    );
    expect(line).toMatchObject({ listener: 'main', status: 400 });
  });

  it('maxConnectionsPerClient and maxConnections: the refused connection\'s own port', async () => {
    for (const [listener, reason] of [
      ['per-client', 'client_connection_limit'],
      ['capped', 'connection_limit'],
    ] as const) {
      const held = await tcpOpen(gw.port(listener));
      try {
        // The held connection is admitted first: wait until the gateway counts it.
        await expect
          .poll(() => gw.metric('portcullis_active_connections', { listener }), { timeout: 5_000 })
          .toBeGreaterThanOrEqual(1);
        const second = await tcpOpen(gw.port(listener));
        const localPort = second.localPort ?? 0;
        second.on('error', () => undefined);
        await new Promise((r) => second.once('close', r));
        const line = await lineWhere(
          (l) => l.msg === 'connection refused' && l.listener === listener && isPeer(l, localPort),
          `${reason} refusal`,
        );
        expect(line.reason).toBe(reason);
      } finally {
        held.destroy();
      }
    }
  });

  it('a TCP-listener client its allowClients does not name', async () => {
    const r = await tlsExchange(gw.port('tcp'), tlsOptions(gw.pki, 'alice'));
    const line = await lineWhere(
      (l) => l.msg === 'connection refused' && l.listener === 'tcp' && isPeer(l, r.localPort),
      'acl refusal',
    );
    expect(line.reason).toBe('acl');
  });

  it('the admin listener over TLS, without a client certificate', async () => {
    const adminPort = gw.app.adminPort();
    expect(adminPort).toBeDefined();
    const r = await tlsExchange(adminPort ?? 0, tlsOptions(gw.pki, undefined));
    const line = await lineWhere(
      (l) => l.msg === 'admin connection refused' && isPeer(l, r.localPort),
      'admin refusal',
    );
    expect(line.reason).toBe('no_client_cert');
  });
});
