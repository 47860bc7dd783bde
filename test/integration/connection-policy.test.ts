/**
 * Connection policy end to end (threat model #1–#3, #5, #6, #11; and the renegotiation guard): what
 * the gateway does with bytes that are not a well-behaved TLS client — plaintext, garbage, silence, old
 * protocol versions, weak suites, renegotiation, odd ALPN — on the real app, on loopback, with a
 * recording upstream that must see nothing, and with the rejection counter as evidence.
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { connect as tlsConnect } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { h1, h2, h2session } from '../helpers/clients.js';
import { startGateway, type TestGateway } from '../helpers/gateway.js';
import { clientPem, partialClientHello, rawTcp, tlsAttempt, type TlsAttempt, type TlsAttemptOptions } from '../helpers/tls-probe.js';
import { startUpstream, type TestUpstream } from '../helpers/upstream.js';

const REJECTED = 'portcullis_tls_rejected_connections_total';
/** The gateway's configured TLS handshake (and first-byte) timeout for this file, ms: it applies to every
 * legitimate handshake here too, so long enough for a loaded CI machine (as in metrics.test.ts). */
const HANDSHAKE_MS = 1_500;
/** The gateway's configured HTTP/1.1 request-headers timeout for this file, ms. */
const HEADERS_MS = 800;

let up: TestUpstream;
let gw: TestGateway;

function rejected(listener: string, reason: string): Promise<number> {
  return gw.metric(REJECTED, { listener, reason });
}

/** One TLS attempt to `listener` as alice (unless `client: undefined` is passed). */
function attempt(listener: string, opts: Partial<TlsAttemptOptions> = {}): Promise<TlsAttempt> {
  return tlsAttempt(gw.port(listener), { ca: readFileSync(gw.pki.ca), client: clientPem(gw.pki, 'alice'), timeoutMs: 4_000, ...opts });
}

/** The control request: a clean mTLS request that must succeed after every attack. */
async function expectControlRequestWorks(listener = 'main'): Promise<void> {
  const before = up.seen.length;
  const r = await h1(gw.port(listener), gw.pki, { path: '/control' });
  expect(r.status).toBe(200);
  expect(up.seen).toHaveLength(before + 1);
}

/** Runs `openssl s_client` against the gateway with `args`; resolves with its combined output. */
function sClient(port: number, args: readonly string[]): Promise<string> {
  return new Promise((resolve) => {
    const child = execFile(
      '/usr/bin/openssl',
      ['s_client', '-connect', `127.0.0.1:${port}`, '-servername', 'localhost', ...args],
      { timeout: 5_000 },
      (_err, stdout, stderr) => resolve(`${stdout}\n${stderr}`),
    );
    child.stdin?.end();
  });
}

beforeAll(async () => {
  up = await startUpstream();
  gw = await startGateway((pki) => {
    const tls = { cert: pki.server.cert, key: pki.server.key, clientCertificate: 'require', clientCa: pki.ca, crl: pki.crl };
    const routes = (id: string): Record<string, unknown>[] => [{ id, match: { pathPrefix: '/' }, upstream: up.url }];
    return {
      timeouts: { tlsHandshakeMs: HANDSHAKE_MS, requestHeadersMs: HEADERS_MS, keepAliveMs: 1_000 },
      listeners: [
        { name: 'main', listen: '127.0.0.1:0', tls, routes: routes('main') },
        { name: 'tls13', listen: '127.0.0.1:0', tls: { ...tls, minVersion: 'TLSv1.3' }, routes: routes('tls13') },
      ],
    };
  });
});

afterAll(async () => {
  await gw?.close();
  await up?.close();
});

describe('TLS floor (threat model #2, #3)', () => {
  it.each([
    { name: 'TLS 1.1', minVersion: 'TLSv1', maxVersion: 'TLSv1.1' },
    { name: 'TLS 1.0', minVersion: 'TLSv1', maxVersion: 'TLSv1' },
  ] as const)('refuses a $name client (Node, SECLEVEL=0), reason protocol', async ({ minVersion, maxVersion }) => {
    const before = await rejected('main', 'protocol');
    const total = up.seen.length;
    const r = await attempt('main', { minVersion, maxVersion, ciphers: 'DEFAULT@SECLEVEL=0' });
    expect(r.handshake).toBe(false);
    expect(r.status).toBe(0);
    expect(r.errorCode).toMatch(/PROTOCOL_VERSION|UNSUPPORTED_PROTOCOL|ECONNRESET/);
    await expect.poll(() => rejected('main', 'protocol')).toBe(before + 1);
    expect(up.seen).toHaveLength(total);
  });

  it.each([['-tls1_1'], ['-tls1']])('refuses openssl s_client %s -cipher DEFAULT@SECLEVEL=0', async (flag) => {
    const before = await rejected('main', 'protocol');
    const total = up.seen.length;
    const out = await sClient(gw.port('main'), [flag, '-cipher', 'DEFAULT@SECLEVEL=0']);
    // s_client prints the version it tried even when refused; "Cipher is (NONE)" says no session.
    expect(out).toMatch(/alert protocol version|SSL alert number 70/i);
    expect(out).toMatch(/Cipher is \(NONE\)/);
    await expect.poll(() => rejected('main', 'protocol')).toBe(before + 1);
    expect(up.seen).toHaveLength(total);
  });

  it('minVersion TLSv1.3 refuses a TLS 1.2 client and accepts a TLS 1.3 one', async () => {
    const before = await rejected('tls13', 'protocol');
    const total = up.seen.length;
    const old = await attempt('tls13', { maxVersion: 'TLSv1.2' });
    expect(old.handshake).toBe(false);
    expect(old.status).toBe(0);
    await expect.poll(() => rejected('tls13', 'protocol')).toBe(before + 1);
    expect(up.seen).toHaveLength(total);
    const ok = await attempt('tls13', { path: '/tls13-ok' });
    expect(ok.protocol).toBe('TLSv1.3');
    expect(ok.status).toBe(200);
  });

  it.each([
    { ciphers: 'AES128-SHA256', why: 'RSA key exchange, CBC' },
    { ciphers: 'AES128-GCM-SHA256', why: 'RSA key exchange, AEAD' },
    { ciphers: 'AES256-GCM-SHA384', why: 'RSA key exchange, AEAD' },
    { ciphers: 'ECDHE-RSA-AES128-SHA256', why: 'ECDHE, but CBC' },
    { ciphers: 'ECDHE-RSA-AES256-SHA', why: 'ECDHE, but CBC with SHA-1' },
    { ciphers: 'DHE-RSA-AES128-GCM-SHA256', why: 'finite-field DHE' },
  ])('TLS 1.2 refuses a client restricted to $ciphers ($why)', async ({ ciphers }) => {
    const before = await rejected('main', 'protocol');
    const total = up.seen.length;
    const r = await attempt('main', { maxVersion: 'TLSv1.2', ciphers: `${ciphers}@SECLEVEL=0` });
    expect(r.handshake).toBe(false);
    expect(r.status).toBe(0);
    await expect.poll(() => rejected('main', 'protocol')).toBe(before + 1);
    expect(up.seen).toHaveLength(total);
  });

  it('TLS 1.2 negotiates an ECDHE + AEAD suite with a default client', async () => {
    const r = await attempt('main', { maxVersion: 'TLSv1.2', path: '/tls12-ok' });
    expect(r.protocol).toBe('TLSv1.2');
    expect(r.cipher).toMatch(/^ECDHE-(RSA|ECDSA)-(AES(128|256)-GCM-SHA(256|384)|CHACHA20-POLY1305)$/);
    expect(r.status).toBe(200);
  });
});

describe('plaintext and garbage on the TLS port (threat model #1, #6)', () => {
  it('plain HTTP gets exactly one 400 with a one-line body, then the server closes', async () => {
    const before = await rejected('main', 'plaintext');
    const total = up.seen.length;
    const r = await rawTcp(gw.port('main'), ['GET / HTTP/1.1\r\nHost: x\r\n\r\n'], { timeoutMs: 3_000 });
    expect(r.closed).toBe(true);
    expect(r.elapsedMs).toBeLessThan(2_000);
    expect(r.text.startsWith('HTTP/1.1 400 ')).toBe(true);
    expect(r.text.match(/HTTP\/1\.[01] \d{3}/g)).toHaveLength(1);
    const [head, body] = r.text.split('\r\n\r\n');
    expect(head).toMatch(/\r\nConnection: close(\r\n|$)/i);
    expect(body).toMatch(/^[^\n]+\n$/);
    expect(body).toBe('This port speaks TLS only; connect with https://.\n');
    expect(Number(/content-length: (\d+)/i.exec(head ?? '')?.[1])).toBe(Buffer.byteLength(body ?? ''));
    await expect.poll(() => rejected('main', 'plaintext')).toBe(before + 1);
    expect(up.seen).toHaveLength(total);
    await expectControlRequestWorks();
  });

  it('two pipelined plaintext requests still get one answer', async () => {
    const total = up.seen.length;
    const r = await rawTcp(gw.port('main'), ['GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n'], { timeoutMs: 3_000 });
    expect(r.closed).toBe(true);
    expect(r.text.match(/HTTP\/1\.[01] \d{3}/g)).toHaveLength(1);
    expect(up.seen).toHaveLength(total);
  });

  it.each([
    { name: '1 KiB of non-TLS garbage', bytes: () => Buffer.concat([Buffer.from([0x80]), Buffer.alloc(1023, 0xa5)]), reason: 'plaintext' },
    { name: 'a NUL byte', bytes: () => Buffer.from([0x00]), reason: 'plaintext' },
    {
      name: 'a TLS handshake record header followed by garbage',
      bytes: () => Buffer.concat([Buffer.from([0x16, 0x03, 0x01, 0x00, 0x40]), Buffer.alloc(64, 0xff)]),
      reason: 'protocol',
    },
    {
      name: 'a TLS record header announcing 16 KiB, then garbage and a close',
      bytes: () => Buffer.concat([Buffer.from([0x16, 0x03, 0x03, 0x40, 0x00]), Buffer.alloc(16_384, 0x41)]),
      reason: 'protocol',
    },
  ])('$name: closed, counted as $reason, no crash', async ({ bytes, reason }) => {
    const before = await rejected('main', reason);
    const total = up.seen.length;
    const r = await rawTcp(gw.port('main'), [bytes()], { timeoutMs: 3_000 });
    expect(r.closed).toBe(true);
    expect(r.text).not.toMatch(/HTTP\/1\.[01] 200/);
    await expect.poll(() => rejected('main', reason)).toBe(before + 1);
    expect(up.seen).toHaveLength(total);
    await expectControlRequestWorks();
  });
});

describe('a flood of refused connections (threat model #1: one rate-limited log line)', () => {
  it('60 plaintext connections: all counted, at most 20 log lines a second, then a line saying how many were suppressed', async () => {
    const N = 60;
    const PLAINTEXT_LINE = 'plaintext on a TLS port';
    const plaintextLines = (): Record<string, unknown>[] => gw.logs().filter((l) => l.msg === PLAINTEXT_LINE);
    const before = await rejected('main', 'plaintext');
    const linesBefore = plaintextLines().length;
    const total = up.seen.length;
    await new Promise((r) => setTimeout(r, 1_050)); // a fresh one-second window
    const results = await Promise.all(Array.from({ length: N }, () => rawTcp(gw.port('main'), ['GET / HTTP/1.1\r\nHost: x\r\n\r\n'], { timeoutMs: 3_000 })));
    expect(results.every((r) => r.closed && r.text.startsWith('HTTP/1.1 400 '))).toBe(true);
    await expect.poll(() => rejected('main', 'plaintext')).toBe(before + N);
    const written = plaintextLines().length - linesBefore;
    expect(written).toBeGreaterThanOrEqual(1);
    // 20 a second; a slow machine may spread the burst over two windows.
    expect(written).toBeLessThanOrEqual(40);
    await new Promise((r) => setTimeout(r, 1_050));
    await rawTcp(gw.port('main'), ['GET / HTTP/1.1\r\nHost: x\r\n\r\n'], { timeoutMs: 3_000 });
    // Each line written reports the lines dropped before it: when the burst spans two windows, the
    // second window's first line carries the first window's count and the trailing line the rest.
    await expect.poll(() => plaintextLines().length - linesBefore).toBe(written + 1);
    const lines = plaintextLines().slice(linesBefore);
    const suppressed = lines.reduce((sum, l) => sum + (typeof l.suppressed === 'number' ? l.suppressed : 0), 0);
    expect(written + suppressed).toBe(N);
    expect(up.seen).toHaveLength(total);
    await expectControlRequestWorks();
  });
});

describe(`silent and stalled sockets, tlsHandshakeMs ${HANDSHAKE_MS} (threat model #5)`, () => {
  it.each([
    { name: 'send nothing', chunks: (): Buffer[] => [] },
    { name: 'send a partial ClientHello', chunks: (): Buffer[] => [partialClientHello()] },
    { name: 'send the first byte of a record only', chunks: (): Buffer[] => [Buffer.from([0x16])] },
  ])('20 sockets that $name are closed after ~tlsHandshakeMs (reason handshake_timeout)', async ({ chunks }) => {
    const N = 20;
    const before = await rejected('main', 'handshake_timeout');
    const total = up.seen.length;
    const started = Date.now();
    // The client gives up (closed: false) well after the bounds below: a socket left open fails them.
    const results = rawTcp(gw.port('main'), chunks(), { timeoutMs: HANDSHAKE_MS + 4_000 });
    const all = await Promise.all([results, ...Array.from({ length: N - 1 }, () => rawTcp(gw.port('main'), chunks(), { timeoutMs: HANDSHAKE_MS + 4_000 }))]);
    for (const r of all) {
      expect(r.closed).toBe(true);
      expect(r.text).toBe('');
      expect(r.elapsedMs).toBeGreaterThanOrEqual(HANDSHAKE_MS - 50);
      expect(r.elapsedMs).toBeLessThan(HANDSHAKE_MS + 2_500);
    }
    // Concurrently, not one after the other (that would take 20 × HANDSHAKE_MS).
    expect(Date.now() - started).toBeLessThan(HANDSHAKE_MS + 3_000);
    await expect.poll(() => rejected('main', 'handshake_timeout')).toBe(before + N);
    // Nothing is left behind: no client of this file holds a connection now, so the gauge drains to 0
    // (a plaintext socket from an earlier test may take up to 1 s to be reaped).
    await expect.poll(() => gw.metric('portcullis_active_connections', { listener: 'main' }), { timeout: 3_000 }).toBe(0);
    expect(up.seen).toHaveLength(total);
  });

  it('a ClientHello dripped one byte every 100 ms is cut off after ~tlsHandshakeMs, not kept alive by the drip', async () => {
    const before = await rejected('main', 'handshake_timeout');
    const total = up.seen.length;
    const hello = partialClientHello();
    // 6 s of drip (far less than the record's 512 bytes): a timer the drip re-armed would close well after the bound.
    const drip = [hello.subarray(0, 5), ...Array.from({ length: 60 }, (_, i) => Buffer.from([i & 0xff]))];
    const r = await rawTcp(gw.port('main'), drip, { timeoutMs: 9_000, gapMs: 100 });
    expect(r.closed).toBe(true);
    expect(r.elapsedMs).toBeLessThan(HANDSHAKE_MS + 2_500);
    await expect.poll(() => rejected('main', 'handshake_timeout')).toBe(before + 1);
    expect(up.seen).toHaveLength(total);
  });

  it('a legitimate client is served while silent sockets are open', async () => {
    const silent = Array.from({ length: 20 }, () => rawTcp(gw.port('main'), [], { timeoutMs: HANDSHAKE_MS + 4_000 }));
    await expectControlRequestWorks();
    const results = await Promise.all(silent);
    expect(results.every((r) => r.closed)).toBe(true);
  });
});

describe(`slow HTTP/1.1 after the handshake, requestHeadersMs ${HEADERS_MS} (threat model #101)`, () => {
  it.each([
    { name: 'sends no request at all', request: false as const, drip: false },
    { name: 'drips a request line one byte every 100 ms', request: false as const, drip: true },
  ])('a TLS client that $name is closed after ~requestHeadersMs (reason headers_timeout)', async ({ request, drip }) => {
    const before = await rejected('main', 'headers_timeout');
    const total = up.seen.length;
    let timer: NodeJS.Timeout | undefined;
    const r = await attempt('main', {
      request,
      timeoutMs: 4_000,
      onSecure: (socket) => {
        if (!drip) return;
        const line = 'GET /slowloris HTTP/1.1\r\nHost: localhost\r\nX-a: ';
        let i = 0;
        timer = setInterval(() => {
          if (socket.destroyed) return;
          socket.write(line.charAt(i % line.length));
          i += 1;
        }, 100);
      },
    });
    clearInterval(timer);
    expect(r.handshake).toBe(true);
    expect(r.closed).toBe(true);
    expect(r.elapsedMs).toBeGreaterThanOrEqual(HEADERS_MS - 100);
    // elapsedMs includes the TLS handshake; the client gives up at 4 s, so a socket left open fails this.
    expect(r.elapsedMs).toBeLessThan(HEADERS_MS + 2_500);
    expect(r.status).toBe(0);
    await expect.poll(() => rejected('main', 'headers_timeout')).toBe(before + 1);
    expect(up.seen).toHaveLength(total);
  });
});

describe('renegotiation', () => {
  it.each([{ alpn: 'http/1.1' }, { alpn: 'h2' }])('a TLS 1.2 client ($alpn) calling renegotiate() gets an error or a closed connection; the gateway stays up', async ({ alpn }) => {
    const total = up.seen.length;
    const pem = clientPem(gw.pki, 'alice');
    const outcome = await new Promise<{ renegotiated: boolean; error: string | undefined; closed: boolean; response: string }>((resolve) => {
      const socket = tlsConnect({
        host: '127.0.0.1',
        port: gw.port('main'),
        ca: readFileSync(gw.pki.ca),
        servername: 'localhost',
        cert: pem.cert,
        key: pem.key,
        maxVersion: 'TLSv1.2',
        ALPNProtocols: [alpn],
      });
      let renegotiated = false;
      let error: string | undefined;
      let response = '';
      const timer = setTimeout(() => finish(false), 3_000);
      const finish = (closed: boolean): void => {
        clearTimeout(timer);
        socket.destroy();
        resolve({ renegotiated, error, closed, response });
      };
      socket.on('secureConnect', () => {
        const started = socket.renegotiate({ rejectUnauthorized: true }, (err) => {
          if (err) error ??= (err as NodeJS.ErrnoException).code ?? err.message;
          else {
            renegotiated = true;
            // Renegotiated: try to use the connection, which must not work either.
            socket.write(`GET /after-renegotiation HTTP/1.1\r\nHost: localhost:${gw.port('main')}\r\nConnection: close\r\n\r\n`);
          }
        });
        if (!started) error ??= 'renegotiate() refused locally';
      });
      socket.on('data', (c: Buffer) => (response += c.toString('latin1')));
      socket.on('error', (err: NodeJS.ErrnoException) => {
        error ??= err.code ?? err.message;
        finish(true);
      });
      socket.on('close', () => finish(true));
    });
    expect(outcome.renegotiated).toBe(false);
    expect(outcome.closed || outcome.error !== undefined).toBe(true);
    // No HTTP answer at all: a refused renegotiation is not a malformed request.
    expect(outcome.response).not.toMatch(/HTTP\/1\.1/);
    expect(up.seen.filter((s) => s.url === '/after-renegotiation')).toHaveLength(0);
    expect(up.seen).toHaveLength(total);
    await expectControlRequestWorks();
  });
});

describe('ALPN (threat model #11)', () => {
  it('a client offering only http/1.1 is served over HTTP/1.1', async () => {
    const before = await gw.metric('portcullis_tls_handshakes_total', { listener: 'main', alpn: 'http/1.1' });
    const r = await attempt('main', { ALPNProtocols: ['http/1.1'], path: '/alpn-h1' });
    expect(r.alpn).toBe('http/1.1');
    expect(r.status).toBe(200);
    expect(await gw.metric('portcullis_tls_handshakes_total', { listener: 'main', alpn: 'http/1.1' })).toBe(before + 1);
  });

  it('a client offering only h2 is served over HTTP/2', async () => {
    const before = await gw.metric('portcullis_tls_handshakes_total', { listener: 'main', alpn: 'h2' });
    const s = h2session(gw.port('main'), gw.pki);
    try {
      const r = await h2(s, { ':path': '/alpn-h2', ':authority': `localhost:${gw.port('main')}` });
      expect(r.status).toBe(200);
      expect(s.alpnProtocol).toBe('h2');
      expect(up.seen.filter((x) => x.url === '/alpn-h2')).toHaveLength(1);
    } finally {
      s.close();
    }
    expect(await gw.metric('portcullis_tls_handshakes_total', { listener: 'main', alpn: 'h2' })).toBe(before + 1);
  });

  it('a client offering no ALPN at all falls back to HTTP/1.1', async () => {
    const r = await attempt('main', { ALPNProtocols: [], path: '/alpn-none' });
    expect(r.alpn).toBe(false);
    expect(r.status).toBe(200);
  });

  it.each([{ alpn: ['foo'] }, { alpn: ['h2c'] }, { alpn: ['foo', 'bar', 'spdy/3'] }])(
    'a client offering only $alpn does not hang: closed or negotiated within 2 s',
    async ({ alpn }) => {
      const started = Date.now();
      const r = await attempt('main', { ALPNProtocols: alpn, path: `/alpn-${alpn.join('-')}`, timeoutMs: 2_000 });
      expect(r.closed || r.status > 0).toBe(true);
      expect(Date.now() - started).toBeLessThan(2_000);
      if (r.handshake) expect(r.alpn === false || r.alpn === 'http/1.1').toBe(true);
      await expectControlRequestWorks();
    },
  );
});
