/**
 * WebSocket upgrades (HTTP/1.1) through the gateway, threat model #73, #86–#92: the upgrade walks the same
 * checks as a request, only a well-formed RFC 6455 handshake is tunnelled, the upstream's 101 is
 * verified, every error path answers and closes without crashing, and timers bound the handshake and
 * the tunnel's idleness. Every denial asserts that the upstream saw nothing.
 */
import { readFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import type { IncomingMessage } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket, type ClientOptions } from 'ws';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { issueServerCert } from '../../src/certs/pki.js';
import { h1, rawTls } from '../helpers/clients.js';
import { startGateway, tlsListener, type TestGateway } from '../helpers/gateway.js';
import { mintTestPki, writePki, type TestPkiPaths, type TestClientName } from '../helpers/pki.js';
import { startTlsUpstream, startUpstream, type TestUpstream } from '../helpers/upstream.js';

const KEY = 'dGhlIHNhbXBsZSBub25jZQ==';

/** A port on 127.0.0.1 with nothing listening (bound once, then closed). */
async function closedPort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const { port } = srv.address() as AddressInfo;
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return port;
}

/** A raw upgrade request with overridable headers (`null` removes one). */
function upgradeRequest(
  port: number,
  path: string,
  over: Record<string, string | null> = {},
  method = 'GET',
  body = '',
): string {
  const headers: Record<string, string | null> = {
    Host: `localhost:${port}`,
    Connection: 'Upgrade',
    Upgrade: 'websocket',
    'Sec-WebSocket-Version': '13',
    'Sec-WebSocket-Key': KEY,
    ...over,
  };
  const lines = Object.entries(headers)
    .filter((e): e is [string, string] => e[1] !== null)
    .map(([k, v]) => `${k}: ${v}\r\n`)
    .join('');
  return `${method} ${path} HTTP/1.1\r\n${lines}\r\n${body}`;
}

/** Opens a WebSocket through the gateway presenting `client`'s certificate. */
function openWs(port: number, pki: TestPkiPaths, path: string, client: TestClientName = 'alice'): WebSocket {
  // ws hands unknown options (servername) to tls.connect; its types do not list them.
  const options = {
    ca: readFileSync(pki.ca),
    cert: readFileSync(pki.clients[client].cert),
    key: readFileSync(pki.clients[client].key),
    servername: 'localhost',
    headers: { host: `localhost:${port}` },
    handshakeTimeout: 5_000,
  } as ClientOptions;
  const ws = new WebSocket(`wss://127.0.0.1:${port}${path}`, options);
  ws.on('error', () => undefined);
  return ws;
}

/** Resolves with the HTTP status of a refused handshake, or 101 once open. Bounded by 5 s. */
function handshakeStatus(ws: WebSocket): Promise<number> {
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve(-1), 5_000);
    ws.once('open', () => {
      clearTimeout(t);
      resolve(101);
    });
    ws.once('unexpected-response', (_req, res: IncomingMessage) => {
      clearTimeout(t);
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    ws.once('error', () => {
      clearTimeout(t);
      resolve(0);
    });
  });
}

function echo(ws: WebSocket, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('no echo within 3 s')), 3_000);
    ws.once('message', (data: Buffer) => {
      clearTimeout(t);
      resolve(data.toString('utf8'));
    });
    ws.send(text);
  });
}

function closedWithin(ws: WebSocket, ms: number): Promise<number | undefined> {
  const started = Date.now();
  return new Promise((resolve) => {
    if (ws.readyState === WebSocket.CLOSED) {
      resolve(0);
      return;
    }
    const t = setTimeout(() => resolve(undefined), ms);
    ws.once('close', () => {
      clearTimeout(t);
      resolve(Date.now() - started);
    });
  });
}

/** Polls `cond` every 20 ms for up to `ms`. */
async function eventually(cond: () => boolean | Promise<boolean>, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await cond()) return true;
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A raw TLS connection (ALPN http/1.1) for multi-step exchanges. */
interface RawConn {
  readonly socket: TLSSocket;
  text(): string;
  /** Resolves true when the server closed the connection within `ms`. */
  closed(ms: number): Promise<boolean>;
  waitFor(re: RegExp, ms: number): Promise<boolean>;
}

function rawConnect(port: number, pki: TestPkiPaths): Promise<RawConn> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({
      host: '127.0.0.1',
      port,
      servername: 'localhost',
      ca: readFileSync(pki.ca),
      cert: readFileSync(pki.clients.alice.cert),
      key: readFileSync(pki.clients.alice.key),
      ALPNProtocols: ['http/1.1'],
    });
    let buf = '';
    let isClosed = false;
    socket.on('data', (c: Buffer) => (buf += c.toString('latin1')));
    socket.on('error', () => undefined);
    socket.on('close', () => (isClosed = true));
    socket.once('secureConnect', () =>
      resolve({
        socket,
        text: () => buf,
        closed: (ms) => eventually(() => isClosed, ms),
        waitFor: (re, ms) => eventually(() => re.test(buf), ms),
      }),
    );
    socket.once('error', reject);
  });
}

describe('WebSocket upgrades through the gateway', () => {
  let up: TestUpstream;
  let gw: TestGateway;
  let downPort: number;

  beforeAll(async () => {
    up = await startUpstream();
    downPort = await closedPort();
    gw = await startGateway((pki) => ({
      listeners: [
        tlsListener(pki, {
          routes: [
            { id: 'nobody', match: { pathPrefix: '/nobody' }, upstream: up.url, allowClients: ['CN=nobody'] },
            { id: 'down', match: { pathPrefix: '/down' }, upstream: `http://127.0.0.1:${downPort}` },
            { id: 'up', match: { pathPrefix: '/' }, upstream: up.url },
          ],
        }),
      ],
    }));
  });
  afterAll(async () => {
    await gw.close();
    await up.close();
  });

  it("tunnels an echo round trip with alice's certificate, identity headers on the upgrade", async () => {
    const ws = openWs(gw.port(), gw.pki, '/ws');
    try {
      expect(await handshakeStatus(ws)).toBe(101);
      expect(await echo(ws, 'hello')).toBe('hello');
      expect(await echo(ws, 'x'.repeat(100_000))).toBe('x'.repeat(100_000));
      const seen = up.seen.at(-1)!;
      expect(seen.url).toBe('/ws');
      expect(seen.headers.upgrade?.toLowerCase()).toBe('websocket');
      expect(seen.headers['x-forwarded-client-cert']).toMatch(/Subject="OU=data-science,CN=alice"/);
    } finally {
      ws.terminate();
    }
  });

  it('accepts Upgrade: WebSocket in any case (RFC 6455 §4.2.1: case-insensitive token)', async () => {
    const before = up.seen.length;
    const r = await rawTls(gw.port(), gw.pki, upgradeRequest(gw.port(), '/ws', { Upgrade: 'WebSocket' }), {
      timeoutMs: 1_000,
    });
    expect(r.text).toMatch(/^HTTP\/1\.1 101 /);
    expect(up.seen.length).toBe(before + 1);
  });

  it('refuses a certificate not on the route ACL with 403 before any upstream connection (86)', async () => {
    const accepted = up.connections().accepted;
    const seen = up.seen.length;
    const ws = openWs(gw.port(), gw.pki, '/nobody/ws');
    expect(await handshakeStatus(ws)).toBe(403);
    ws.terminate();
    const raw = await rawTls(gw.port(), gw.pki, upgradeRequest(gw.port(), '/nobody/ws'));
    expect(raw.text).toMatch(/^HTTP\/1\.1 403 /);
    expect(raw.closed).toBe(true);
    expect(up.connections().accepted).toBe(accepted);
    expect(up.seen.length).toBe(seen);
  });

  it.each([
    [
      'h2c (73)',
      '/',
      {
        Upgrade: 'h2c',
        Connection: 'Upgrade, HTTP2-Settings',
        'HTTP2-Settings': 'AAMAAABkAAQCAAAAAAIAAAAA',
        'Sec-WebSocket-Version': null,
        'Sec-WebSocket-Key': null,
      },
      'GET',
      '',
    ],
    ['Sec-WebSocket-Version: 1337 (87)', '/ws', { 'Sec-WebSocket-Version': '1337' }, 'GET', ''],
    ['no Sec-WebSocket-Version (87)', '/ws', { 'Sec-WebSocket-Version': null }, 'GET', ''],
    ['a malformed Sec-WebSocket-Key', '/ws', { 'Sec-WebSocket-Key': 'short' }, 'GET', ''],
    ['Upgrade: foo (89)', '/ws', { Upgrade: 'foo' }, 'GET', ''],
    ['Upgrade: websocket, h2c (89)', '/ws', { Upgrade: 'websocket, h2c' }, 'GET', ''],
    ['an upgrade on POST with a body (89)', '/ws', { 'Content-Length': '5' }, 'POST', 'hello'],
  ] as const)(
    'answers %s with 400 and a closed socket, never 101, upstream untouched',
    async (_name, path, over, method, body) => {
      const accepted = up.connections().accepted;
      const seen = up.seen.length;
      const started = Date.now();
      const r = await rawTls(gw.port(), gw.pki, upgradeRequest(gw.port(), path, over, method, body), {
        timeoutMs: 3_000,
      });
      expect(r.text).toMatch(/^HTTP\/1\.1 400 /);
      expect(r.text).not.toMatch(/ 101 /);
      expect(r.closed).toBe(true);
      expect(Date.now() - started).toBeLessThan(2_000);
      expect(up.connections().accepted).toBe(accepted);
      expect(up.seen.length).toBe(seen);
    },
  );

  it('leaves no socket open after refused upgrades (89)', async () => {
    const baseline = await gw.metric('portcullis_active_connections');
    await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        rawTls(
          gw.port(),
          gw.pki,
          upgradeRequest(gw.port(), '/ws', { Upgrade: i % 2 === 0 ? 'foo' : 'h2c' }),
          { timeoutMs: 3_000 },
        ),
      ),
    );
    expect(
      await eventually(async () => (await gw.metric('portcullis_active_connections')) <= baseline, 2_000),
    ).toBe(true);
  });

  it('never opens a tunnel on a fake 101 (wrong Sec-WebSocket-Accept) and smuggles nothing (88)', async () => {
    const conn = await rawConnect(gw.port(), gw.pki);
    try {
      conn.socket.write(upgradeRequest(gw.port(), '/fake101'));
      // The upstream did get the upgrade request: the check is on its answer.
      expect(await eventually(() => up.seen.some((s) => s.url === '/fake101'), 2_000)).toBe(true);
      expect(await conn.closed(2_000)).toBe(true);
      expect(conn.text()).not.toMatch(/ 101 /);
      expect(conn.text()).toMatch(/^HTTP\/1\.1 502 /);
      // Raw HTTP sent into the would-be tunnel never reaches the upstream.
      conn.socket.write('GET /internal HTTP/1.1\r\nHost: up\r\n\r\n');
    } finally {
      conn.socket.destroy();
    }
    await new Promise((r) => setTimeout(r, 200));
    expect(up.seen.some((s) => s.url === '/internal')).toBe(false);
    expect(up.fake101Bytes()).toBe(0);
    // The ws client sees a failed handshake, never 'open'.
    const ws = openWs(gw.port(), gw.pki, '/fake101');
    expect(await handshakeStatus(ws)).not.toBe(101);
    ws.terminate();
  });

  it("relays an upstream's refusal of the upgrade cleaned like any response: no hop-by-hop header, cookies kept", async () => {
    const seen = up.seen.length;
    const telemetryBefore = await gw.metric('portcullis_telemetry_headers_stripped_total', {
      direction: 'response',
    });
    const r = await rawTls(gw.port(), gw.pki, upgradeRequest(gw.port(), '/ws-refuse'), { timeoutMs: 3_000 });
    expect(up.seen.length).toBe(seen + 1);
    expect(r.closed).toBe(true);
    const [head = '', body] = r.text.split('\r\n\r\n', 2);
    const [statusLine = '', ...lines] = head.split('\r\n');
    expect(statusLine).toMatch(/^HTTP\/1\.1 403 /);
    const names = lines.map((l) => l.slice(0, l.indexOf(':')).toLowerCase());
    // Hop-by-hop headers, and the one the upstream's Connection named, never reach the client; the
    // gateway's own Connection: close ends the exchange.
    for (const hop of ['keep-alive', 'transfer-encoding', 'upgrade', 'proxy-connection', 'x-hop']) {
      expect(names).not.toContain(hop);
    }
    expect(lines.filter((l) => /^connection:/i.test(l))).toEqual(['connection: close']);
    expect(lines.filter((l) => /^set-cookie:/i.test(l))).toEqual([
      'set-cookie: a=1; Path=/',
      'set-cookie: b=2; Path=/',
    ]);
    expect(names).toContain('x-request-id');
    // Telemetry headers go under the default opt-out, as on any response, and are counted.
    expect(names).not.toContain('traceparent');
    expect(
      (await gw.metric('portcullis_telemetry_headers_stripped_total', { direction: 'response' })) -
        telemetryBefore,
    ).toBe(1);
    // The body arrives de-chunked, delimited by the close.
    expect(body).toBe('refused');
    await expect
      .poll(() =>
        gw
          .logs()
          .filter((l) => l.msg === 'request' && l.path === '/ws-refuse')
          .map((l) => [l.status, l.outcome]),
      )
      .toEqual([[403, 'forwarded']]);
    // A WebSocket client sees the 403.
    const ws = openWs(gw.port(), gw.pki, '/ws-refuse');
    expect(await handshakeStatus(ws)).toBe(403);
    ws.terminate();
  });

  it(
    'answers 502 when the upstream is down at upgrade time, 200 times, and keeps serving (92, 121)',
    { timeout: 60_000 },
    async () => {
      for (let i = 0; i < 200; i++) {
        const r = await rawTls(gw.port(), gw.pki, upgradeRequest(gw.port(), '/down/ws'), {
          timeoutMs: 3_000,
        });
        expect(r.text).toMatch(/^HTTP\/1\.1 502 /);
        expect(r.closed).toBe(true);
      }
      expect(await gw.metric('portcullis_http_requests_total', { route: 'down', status_class: '5xx' })).toBe(
        200,
      );
      const ws = openWs(gw.port(), gw.pki, '/ws');
      try {
        expect(await handshakeStatus(ws)).toBe(101);
        expect(await echo(ws, 'still alive')).toBe('still alive');
      } finally {
        ws.terminate();
      }
    },
  );

  it('counts upstream failures of upgrades in portcullis_upstream_errors_total, as for requests (121)', async () => {
    const labels = { route: 'down', reason: 'ERR_UPSTREAM_UNAVAILABLE' };
    const before = await gw.metric('portcullis_upstream_errors_total', labels);
    for (let i = 0; i < 3; i++) {
      const r = await rawTls(gw.port(), gw.pki, upgradeRequest(gw.port(), '/down/ws'), { timeoutMs: 3_000 });
      expect(r.text).toMatch(/^HTTP\/1\.1 502 /);
    }
    expect((await gw.metric('portcullis_upstream_errors_total', labels)) - before).toBe(3);
  });

  it('frees the upstream connection when the client goes away while waiting for the 101 (92, 108)', async () => {
    const baseline = up.connections().open;
    for (let i = 0; i < 10; i++) {
      const seen = up.seen.length;
      const conn = await rawConnect(gw.port(), gw.pki);
      conn.socket.write(upgradeRequest(gw.port(), '/ws-silent'));
      expect(await eventually(() => up.seen.length > seen, 2_000)).toBe(true);
      conn.socket.destroy();
      expect(await eventually(() => up.connections().open <= baseline, 1_000)).toBe(true);
    }
  });

  it('closes the client when the upstream closes an open tunnel (92)', async () => {
    const ws = openWs(gw.port(), gw.pki, '/ws');
    expect(await handshakeStatus(ws)).toBe(101);
    const closing = closedWithin(ws, 3_000);
    // Kill every upstream socket: the tunnel's upstream half goes away.
    await up.close();
    expect(await closing).toBeDefined();
    up = await startUpstream();
  });
});

describe('WebSocket timers (90b, 90c)', () => {
  let up: TestUpstream;
  let gw: TestGateway;

  beforeAll(async () => {
    up = await startUpstream();
    gw = await startGateway((pki) => ({
      timeouts: { idleMs: 500, upstreamResponseMs: 500 },
      listeners: [tlsListener(pki, { routes: [{ id: 'up', match: { pathPrefix: '/' }, upstream: up.url }] })],
    }));
  });
  afterAll(async () => {
    await gw.close();
    await up.close();
  });

  it('keeps an active tunnel open past idleMs, then closes it once idle (90c)', async () => {
    // Its own gateway, with an idleMs long enough that a stall of about a second on a loaded machine
    // between two pings cannot pass for idleness.
    const idleMs = 1_500;
    const idleGw = await startGateway((pki) => ({
      timeouts: { idleMs, upstreamResponseMs: 500 },
      listeners: [tlsListener(pki, { routes: [{ id: 'up', match: { pathPrefix: '/' }, upstream: up.url }] })],
    }));
    const ws = openWs(idleGw.port(), idleGw.pki, '/ws');
    try {
      expect(await handshakeStatus(ws)).toBe(101);
      // Traffic every 300 ms for 3.3 s: more than twice idleMs, never idle for idleMs.
      for (let i = 0; i < 12; i++) {
        if (i > 0) await new Promise((r) => setTimeout(r, 300));
        expect(await echo(ws, `ping ${i}`)).toBe(`ping ${i}`);
      }
      // The gateway's idle timer restarted with the last echo: measure from it.
      const lastActivity = Date.now();
      expect(ws.readyState).toBe(WebSocket.OPEN);
      const closed = await closedWithin(ws, idleMs + 3_000);
      expect(closed).toBeDefined();
      const took = Date.now() - lastActivity;
      expect(took).toBeGreaterThanOrEqual(idleMs - 50);
      expect(took).toBeLessThan(idleMs + 2_000);
      // Counted and logged as the gateway's idle close.
      await expect
        .poll(() =>
          idleGw.metric('portcullis_websocket_tunnels_closed_total', { listener: 'main', reason: 'idle' }),
        )
        .toBe(1);
      await expect
        .poll(() =>
          idleGw
            .logs()
            .filter((l) => l.msg === 'request' && l.path === '/ws')
            .map((l) => l.reason),
        )
        .toEqual(['idle']);
    } finally {
      ws.terminate();
      await idleGw.close();
    }
  });

  it('answers 504 and frees the upstream connection when the upstream never answers the upgrade (90b)', async () => {
    const baseline = up.connections().open;
    const started = Date.now();
    const r = await rawTls(gw.port(), gw.pki, upgradeRequest(gw.port(), '/ws-silent'), { timeoutMs: 5_000 });
    const took = Date.now() - started;
    expect(r.text).toMatch(/^HTTP\/1\.1 504 /);
    expect(r.closed).toBe(true);
    expect(took).toBeGreaterThanOrEqual(400);
    expect(took).toBeLessThan(3_000);
    expect(await eventually(() => up.connections().open <= baseline, 1_000)).toBe(true);
  });
});

describe('WebSocket to https:// upstreams: CA, client certificate and server name honoured, never unverified (130)', () => {
  let mtlsUp: TestUpstream;
  let sniUp: TestUpstream;
  /** Certificate for localhost only, reached at 127.0.0.1. */
  let nameOnlyUp: TestUpstream;
  let gw: TestGateway;
  let scratch: string;

  beforeAll(async () => {
    scratch = await mkdtemp(join(tmpdir(), 'portcullis-wss-'));
    const pki = await writePki(scratch);
    // An upstream that requires a client certificate from the test CA.
    mtlsUp = await startTlsUpstream(pki, { requireClientCert: true });
    // An upstream whose certificate names only upstream.test: reachable at 127.0.0.1 only with servername.
    sniUp = await startTlsUpstream(pki, {
      server: issueServerCert(mintTestPki().ca, { hosts: ['upstream.test'], days: 2 }),
    });
    nameOnlyUp = await startTlsUpstream(pki, {
      server: issueServerCert(mintTestPki().ca, { hosts: ['localhost'], days: 2 }),
    });
    gw = await startGateway((p) => ({
      listeners: [
        tlsListener(p, {
          routes: [
            {
              id: 'mtls',
              match: { pathPrefix: '/mtls' },
              upstream: {
                url: `https://localhost:${mtlsUp.port}`,
                ca: p.ca,
                cert: p.clients.bob.cert,
                key: p.clients.bob.key,
              },
            },
            {
              id: 'sni',
              match: { pathPrefix: '/sni' },
              upstream: { url: `https://127.0.0.1:${sniUp.port}`, ca: p.ca, servername: 'upstream.test' },
            },
            {
              id: 'wrongca',
              match: { pathPrefix: '/wrongca' },
              upstream: { url: `https://localhost:${sniUp.port}`, ca: p.otherCa },
            },
            {
              id: 'nameonly',
              match: { pathPrefix: '/nameonly' },
              upstream: { url: `https://127.0.0.1:${nameOnlyUp.port}`, ca: p.ca },
            },
          ],
        }),
      ],
    }));
  });
  afterAll(async () => {
    await gw.close();
    await mtlsUp.close();
    await sniUp.close();
    await nameOnlyUp.close();
    await rm(scratch, { recursive: true, force: true });
  });

  it('presents the configured client certificate to an mTLS upstream, for requests and for upgrades', async () => {
    expect((await h1(gw.port(), gw.pki, { path: '/mtls/x' })).status).toBe(200);
    expect(mtlsUp.seen.at(-1)?.clientCertCn).toBe('bob');
    const ws = openWs(gw.port(), gw.pki, '/mtls/ws');
    try {
      expect(await handshakeStatus(ws)).toBe(101);
      expect(await echo(ws, 'over mtls')).toBe('over mtls');
      expect(mtlsUp.seen.at(-1)?.url).toBe('/mtls/ws');
      expect(mtlsUp.seen.at(-1)?.clientCertCn).toBe('bob');
    } finally {
      ws.terminate();
    }
  });

  it('checks the upstream certificate against the configured servername, for requests and for upgrades', async () => {
    expect((await h1(gw.port(), gw.pki, { path: '/sni/x' })).status).toBe(200);
    const ws = openWs(gw.port(), gw.pki, '/sni/ws');
    try {
      expect(await handshakeStatus(ws)).toBe(101);
      expect(await echo(ws, 'over sni')).toBe('over sni');
    } finally {
      ws.terminate();
    }
  });

  it('answers 502 to an upgrade when the upstream certificate is not from the configured CA; nothing reaches it', async () => {
    const seen = sniUp.seen.length;
    const r = await rawTls(gw.port(), gw.pki, upgradeRequest(gw.port(), '/wrongca/ws'), { timeoutMs: 3_000 });
    expect(r.text).toMatch(/^HTTP\/1\.1 502 /);
    expect(r.closed).toBe(true);
    expect(sniUp.seen.length).toBe(seen);
    expect(gw.logs().some((l) => l.upgrade === true && l.reason === 'ERR_UPSTREAM_TLS')).toBe(true);
  });

  it("checks the upstream certificate against the upstream address, not against the client's Host (upgrade)", async () => {
    // The client's Host is localhost; the upstream at 127.0.0.1 presents a certificate for localhost only.
    const seen = nameOnlyUp.seen.length;
    const r = await rawTls(gw.port(), gw.pki, upgradeRequest(gw.port(), '/nameonly/ws'), {
      timeoutMs: 3_000,
    });
    expect(r.text).toMatch(/^HTTP\/1\.1 502 /);
    expect(nameOnlyUp.seen.length).toBe(seen);
  });
});
