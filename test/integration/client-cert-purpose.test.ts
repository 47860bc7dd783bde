/**
 * A certificate that chains to the client CA but is not a client's — a CA (basicConstraints CA:TRUE), a
 * CRL-signing key (keyUsage keyCertSign/cRLSign only), a certificate whose extendedKeyUsage lacks
 * clientAuth — is never a client identity (identity/purpose.ts): the real gateway on loopback refuses the
 * connection before any request is routed, on HTTP/1.1, HTTP/2 and WebSocket, on an `optional` listener,
 * on a TCP listener and on the admin listener, counts it as `bad_client_cert`, logs the rule, and the
 * upstream sees nothing. OpenSSL alone accepts the two CA:TRUE certificates (its `ssl_client` purpose lets
 * a CA with digitalSignature, or without keyUsage, through); the other three it refuses itself
 * (INVALID_PURPOSE), which these tests pin down too.
 */
import { readFileSync } from 'node:fs';
import { connect as h2connect } from 'node:http2';
import { createServer as createNetServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket, type ClientOptions } from 'ws';
import type { CertAndKey } from '../../src/certs/pki.js';
import { startGateway, tlsListener, type TestGateway } from '../helpers/gateway.js';
import { mintMisusedClients, mintTestPki, type MisusedClientName } from '../helpers/pki.js';
import { tlsAttempt } from '../helpers/tls-probe.js';
import { startUpstream, type TestUpstream } from '../helpers/upstream.js';

const REJECTED = 'portcullis_tls_rejected_connections_total';
/** The certificates, and the rule the log line names for each (when the gateway, not OpenSSL, refused it). */
const MISUSED: readonly [MisusedClientName, RegExp][] = [
  ['caTrue', /basicConstraints CA:TRUE/],
  ['caTrueBare', /basicConstraints CA:TRUE/],
  ['certSignOnly', /keyUsage permits neither|INVALID_PURPOSE/],
  ['serverAuthOnly', /extendedKeyUsage does not include clientAuth|INVALID_PURPOSE/],
  ['codeSigningOnly', /extendedKeyUsage does not include clientAuth|INVALID_PURPOSE/],
];

let up: TestUpstream;
let tcpUp: Server;
/** TCP connections the TCP listener's upstream accepted. */
let tcpAccepted = 0;
let gw: TestGateway;
let misused: Record<MisusedClientName, CertAndKey>;
let ca: Buffer;
let seq = 0;

beforeAll(async () => {
  misused = mintMisusedClients(mintTestPki().ca);
  up = await startUpstream();
  tcpUp = createNetServer((s: Socket) => {
    tcpAccepted += 1;
    s.on('error', () => undefined);
    s.pipe(s);
  });
  await new Promise<void>((r) => tcpUp.listen(0, '127.0.0.1', r));
  const tcpPort = (tcpUp.address() as AddressInfo).port;
  gw = await startGateway((pki) => {
    const requireTls = { cert: pki.server.cert, key: pki.server.key, clientCertificate: 'require', clientCa: pki.ca, crl: pki.crl };
    return {
      admin: { enabled: true, listen: '127.0.0.1:0', tls: requireTls },
      listeners: [
        tlsListener(pki, { name: 'req', routes: [{ id: 'req', match: { pathPrefix: '/' }, upstream: up.url }] }),
        tlsListener(pki, {
          name: 'opt',
          tls: { clientCertificate: 'optional' },
          routes: [{ id: 'opt', match: { pathPrefix: '/' }, upstream: up.url }],
        }),
        { name: 'comm', listen: '127.0.0.1:0', protocol: 'tcp', tls: requireTls, upstream: `tcp://127.0.0.1:${tcpPort}` },
      ],
    };
  });
  ca = readFileSync(gw.pki.ca);
}, 60_000);

afterAll(async () => {
  await gw?.close();
  await up?.close();
  await new Promise((r) => tcpUp.close(r));
});

const pemOf = (c: CertAndKey): { cert: string; key: string } => ({ cert: c.certPem, key: c.keyPem });
const alice = (): CertAndKey => mintTestPki().clients.alice;
const path = (): string => `/purpose/t${++seq}`;
const rejected = (listener: string): Promise<number> => gw.metric(REJECTED, { listener, reason: 'bad_client_cert' });

/** One HTTP/2 GET of `p` presenting `client`: the status, or how it failed. */
function h2Get(port: number, client: CertAndKey, p: string): Promise<{ status?: number; failed?: string }> {
  return new Promise((resolve) => {
    const session = h2connect(`https://localhost:${port}`, { ca, ...pemOf(client), host: '127.0.0.1', port, servername: 'localhost' });
    const done = (r: { status?: number; failed?: string }): void => {
      clearTimeout(timer);
      session.destroy();
      resolve(r);
    };
    const timer = setTimeout(() => done({ failed: 'timeout' }), 5_000);
    session.on('error', (e: NodeJS.ErrnoException) => done({ failed: e.code ?? e.message }));
    session.on('close', () => done({ failed: 'closed' }));
    const req = session.request({ ':path': p });
    req.on('response', (h) => done({ status: Number(h[':status']) }));
    req.on('error', (e: NodeJS.ErrnoException) => done({ failed: e.code ?? e.message }));
    req.end();
  });
}

/** Opens a WebSocket to the upstream's /ws echo through the gateway: 'open', or 'refused'. */
function wsOpen(port: number, client: CertAndKey): Promise<'open' | 'refused'> {
  return new Promise((resolve) => {
    // ws hands unknown options (servername) to tls.connect; its types do not list them.
    const options = {
      ca,
      ...pemOf(client),
      servername: 'localhost',
      headers: { host: `localhost:${port}` },
      handshakeTimeout: 5_000,
    } as ClientOptions;
    const ws = new WebSocket(`wss://127.0.0.1:${port}/ws`, options);
    ws.on('error', () => resolve('refused'));
    ws.on('close', () => resolve('refused'));
    ws.on('open', () => {
      resolve('open');
      ws.close();
    });
  });
}

/** A TCP-listener connection: what the echo upstream sent back for one line before the close. */
function tcpEcho(port: number, client: CertAndKey): Promise<string> {
  return new Promise((resolve) => {
    let got = '';
    const socket = tlsConnect({ host: '127.0.0.1', port, ca, ...pemOf(client), servername: 'localhost' }, () => socket.write('ping'));
    const timer = setTimeout(() => socket.destroy(), 5_000);
    socket.on('data', (d: Buffer) => {
      got += d.toString();
      if (got === 'ping') socket.end();
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(got);
    });
  });
}

/** A refusal line of `listener` with reason bad_client_cert whose detail matches `why`. */
function logged(listener: string, why: RegExp): boolean {
  return gw
    .logs()
    .some(
      (l) =>
        l.listener === listener &&
        l.reason === 'bad_client_cert' &&
        typeof l.detail === 'string' &&
        why.test(l.detail),
    );
}

describe('the test setup: alice, a real client, passes everywhere', () => {
  it('HTTP/1.1, HTTP/2, WebSocket, optional listener, TCP listener, admin', async () => {
    const p = path();
    expect((await tlsAttempt(gw.port('req'), { ca, client: pemOf(alice()), path: p })).status).toBe(200);
    expect((await h2Get(gw.port('req'), alice(), `${p}-h2`)).status).toBe(200);
    expect(await wsOpen(gw.port('req'), alice())).toBe('open');
    expect((await tlsAttempt(gw.port('opt'), { ca, client: pemOf(alice()), path: `${p}-opt` })).status).toBe(200);
    expect(await tcpEcho(gw.port('comm'), alice())).toBe('ping');
    expect((await tlsAttempt(gw.app.adminPort() as number, { ca, client: pemOf(alice()), path: '/healthz' })).status).toBe(200);
    expect(up.seen.filter((s) => s.url.startsWith(p)).map((s) => s.url)).toEqual([p, `${p}-h2`, `${p}-opt`]);
  });
});

describe.each(MISUSED)('%s is not a client', (name, why) => {
  const cert = (): CertAndKey => misused[name];

  it('HTTP/1.1: the connection is refused before routing, counted, logged; the upstream sees nothing', async () => {
    const before = await rejected('req');
    const total = up.seen.length;
    for (const version of ['TLSv1.3', 'TLSv1.2'] as const) {
      const r = await tlsAttempt(gw.port('req'), { ca, client: pemOf(cert()), path: path(), minVersion: version, maxVersion: version });
      expect(r.status).toBe(0);
      expect(r.response).not.toMatch(/HTTP\/1/);
      expect(r.closed).toBe(true);
    }
    await expect.poll(() => rejected('req')).toBe(before + 2);
    await expect.poll(() => logged('req', why)).toBe(true);
    expect(up.seen).toHaveLength(total);
  });

  it('HTTP/2: no stream is answered; the upstream sees nothing', async () => {
    const before = await rejected('req');
    const total = up.seen.length;
    const r = await h2Get(gw.port('req'), cert(), path());
    expect(r.status).toBeUndefined();
    await expect.poll(() => rejected('req')).toBe(before + 1);
    expect(up.seen).toHaveLength(total);
  });

  it('WebSocket: the tunnel never opens; the upstream sees no upgrade', async () => {
    const before = await rejected('req');
    const total = up.seen.length;
    expect(await wsOpen(gw.port('req'), cert())).toBe('refused');
    await expect.poll(() => rejected('req')).toBe(before + 1);
    expect(up.seen).toHaveLength(total);
  });

  it('an optional listener refuses it too (never "anonymous")', async () => {
    const before = await rejected('opt');
    const total = up.seen.length;
    const r = await tlsAttempt(gw.port('opt'), { ca, client: pemOf(cert()), path: path() });
    expect(r.status).toBe(0);
    expect(r.closed).toBe(true);
    await expect.poll(() => rejected('opt')).toBe(before + 1);
    await expect.poll(() => logged('opt', why)).toBe(true);
    expect(up.seen).toHaveLength(total);
  });

  it('TCP listener: closed before the upstream is dialled', async () => {
    const before = await rejected('comm');
    const accepted = tcpAccepted;
    expect(await tcpEcho(gw.port('comm'), cert())).toBe('');
    await expect.poll(() => rejected('comm')).toBe(before + 1);
    await expect.poll(() => logged('comm', why)).toBe(true);
    expect(tcpAccepted).toBe(accepted);
  });

  it('admin listener (client certificates required): refused, no /metrics', async () => {
    const before = await rejected('admin');
    const r = await tlsAttempt(gw.app.adminPort() as number, { ca, client: pemOf(cert()), path: '/metrics' });
    expect(r.status).toBe(0);
    expect(r.response).not.toContain('portcullis_');
    await expect.poll(() => rejected('admin')).toBe(before + 1);
    await expect.poll(() => logged('admin', why)).toBe(true);
  });
});
