/**
 * Threat model #91: a WebSocket tunnel does not outlive the credentials it was opened with. The gateway
 * closes it (TCP close, both sides) when the Bearer token's `exp` passes, or the client certificate's
 * notAfter, whichever is first; the access log line says `credential_expired` and
 * `portcullis_websocket_tunnels_closed_total{reason="credential_expired"}` counts it. A tunnel whose
 * credentials are still valid keeps working.
 */
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { issueClientCert } from '../../src/certs/pki.js';
import type { Clock } from '../../src/clock.js';
import { startGateway, tlsListener, type TestGateway } from '../helpers/gateway.js';
import { createFakeIdp, type FakeIdp } from '../helpers/idp.js';
import { mintTestPki } from '../helpers/pki.js';
import { startUpstream, type TestUpstream } from '../helpers/upstream.js';

const AUD = 'ws-api';

let idp: FakeIdp;
let up: TestUpstream;
let gw: TestGateway;

beforeAll(async () => {
  idp = await createFakeIdp();
  await idp.listen();
  up = await startUpstream();
  gw = await startGateway((pki) => ({
    authProviders: {
      idp: { type: 'jwt', issuer: idp.issuer, audience: AUD, jwksUri: idp.jwksUri, algorithms: ['ES256'] },
    },
    listeners: [
      tlsListener(pki, {
        routes: [
          { id: 'authed', match: { pathPrefix: '/ws' }, upstream: up.url, auth: { providers: ['idp'] } },
          { id: 'open', match: { pathPrefix: '/' }, upstream: up.url },
        ],
      }),
    ],
  }));
});

afterAll(async () => {
  await gw?.close();
  await up?.close();
  await idp?.close();
});

interface Tunnel {
  readonly ws: WebSocket;
  /** Resolves with the ms since open when the socket closes. */
  readonly closed: Promise<number>;
  /** Sends `text` and resolves with the echo (rejects after 2 s). */
  echo(text: string): Promise<string>;
}

/** Opens a WebSocket through the gateway, presenting `cert`/`key` and, if given, a Bearer token. */
function open(path: string, client: { cert: string; key: string }, token?: string): Promise<Tunnel> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`wss://localhost:${gw.port()}${path}`, {
      ca: readFileSync(gw.pki.ca),
      cert: client.cert,
      key: client.key,
      ...(token !== undefined ? { headers: { authorization: `Bearer ${token}` } } : {}),
    });
    let openedAt = 0;
    const closed = new Promise<number>((res) => ws.once('close', () => res(Date.now() - openedAt)));
    ws.on('error', () => undefined);
    ws.once('unexpected-response', (_req, res) => reject(new Error(`upgrade refused: ${res.statusCode}`)));
    ws.once('open', () => {
      openedAt = Date.now();
      resolve({
        ws,
        closed,
        echo: (text) =>
          new Promise((res, rej) => {
            const t = setTimeout(() => rej(new Error('no echo')), 2_000);
            ws.once('message', (m: Buffer) => {
              clearTimeout(t);
              res(m.toString('utf8'));
            });
            ws.send(text);
          }),
      });
    });
  });
}

const expiredClosures = (): Promise<number> =>
  gw.metric('portcullis_websocket_tunnels_closed_total', { listener: 'main', reason: 'credential_expired' });

const pem = (name: 'alice'): { cert: string; key: string } => ({
  cert: readFileSync(gw.pki.clients[name].cert, 'utf8'),
  key: readFileSync(gw.pki.clients[name].key, 'utf8'),
});

describe('a WebSocket tunnel closes when its credentials expire (threat model #91)', () => {
  it("closes at the token's exp, logs credential_expired, counts it, and frees the upstream socket", async () => {
    const before = await expiredClosures();
    const expSec = Math.floor(Date.now() / 1000) + 3;
    const token = await idp.sign({ sub: 'alice', aud: AUD, exp: expSec });
    const openBefore = up.connections().open;
    const t = await open('/ws', pem('alice'), token);
    expect(await t.echo('before exp')).toBe('before exp');
    const closedAfter = await Promise.race([
      t.closed,
      new Promise<number>((r) => setTimeout(() => r(-1), 8_000)),
    ]);
    const closedAt = Date.now();
    expect(closedAfter).toBeGreaterThan(0);
    // Not before exp, and promptly after it.
    expect(closedAt).toBeGreaterThanOrEqual(expSec * 1000 - 50);
    expect(closedAt).toBeLessThan(expSec * 1000 + 1_500);
    await expect.poll(expiredClosures).toBe(before + 1);
    await expect
      .poll(() =>
        gw
          .logs()
          .filter((l) => l.msg === 'request' && l.path === '/ws' && l.reason === 'credential_expired')
          .map((l) => [l.status, l.principal]),
      )
      .toEqual([[101, 'alice']]);
    await expect.poll(() => up.connections().open, { timeout: 3_000 }).toBeLessThanOrEqual(openBefore);
  });

  it('a tunnel whose token is valid for an hour keeps working past that point', async () => {
    const before = await expiredClosures();
    const token = await idp.sign({ sub: 'alice', aud: AUD, exp: Math.floor(Date.now() / 1000) + 3600 });
    const t = await open('/ws', pem('alice'), token);
    await new Promise((r) => setTimeout(r, 3_500));
    expect(await t.echo('still here')).toBe('still here');
    t.ws.close();
    await t.closed;
    expect(await expiredClosures()).toBe(before);
  });

  it("closes at the client certificate's notAfter on a route without auth", async () => {
    const before = await expiredClosures();
    // X.509 times have whole seconds: notAfter at least 3 s from now.
    const notAfter = new Date((Math.floor(Date.now() / 1000) + 4) * 1000);
    const short = issueClientCert(mintTestPki().ca, { commonName: 'short-lived', notAfter });
    const t = await open('/chat', { cert: short.certPem, key: short.keyPem });
    expect(await t.echo('hello')).toBe('hello');
    const closedAfter = await Promise.race([
      t.closed,
      new Promise<number>((r) => setTimeout(() => r(-1), 9_000)),
    ]);
    expect(closedAfter).toBeGreaterThan(0);
    expect(Date.now()).toBeGreaterThanOrEqual(notAfter.getTime() - 50);
    expect(Date.now()).toBeLessThan(notAfter.getTime() + 1_500);
    await expect.poll(expiredClosures).toBe(before + 1);
  });
});

describe('timeouts.tunnelMaxMs: a busy tunnel is closed once it is that old (threat model #90d)', () => {
  let gw2: TestGateway;
  beforeAll(async () => {
    gw2 = await startGateway((pki) => ({
      timeouts: { tunnelMaxMs: 1_200, idleMs: 20_000 },
      listeners: [
        tlsListener(pki, { routes: [{ id: 'open', match: { pathPrefix: '/' }, upstream: up.url }] }),
      ],
    }));
  });
  afterAll(async () => {
    await gw2?.close();
  });

  it('closes with reason max_lifetime however much traffic flows, and counts it', async () => {
    // The gateway's lifetime timer starts between `connectingAt` and `openedAt` (at the upstream's 101).
    const connectingAt = Date.now();
    const ws = new WebSocket(`wss://localhost:${gw2.port()}/ws`, {
      ca: readFileSync(gw2.pki.ca),
      cert: readFileSync(gw2.pki.clients.alice.cert),
      key: readFileSync(gw2.pki.clients.alice.key),
    });
    ws.on('error', () => undefined);
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('unexpected-response', () => reject(new Error('upgrade refused')));
    });
    const openedAt = Date.now();
    let echoes = 0;
    ws.on('message', () => echoes++);
    const ticker = setInterval(() => {
      if (ws.readyState === WebSocket.OPEN) ws.send('tick');
    }, 100);
    const closedAt = await new Promise<number>((resolve) => {
      const guard = setTimeout(() => resolve(-1), 6_000);
      ws.once('close', () => {
        clearTimeout(guard);
        resolve(Date.now());
      });
    });
    clearInterval(ticker);
    expect(closedAt).toBeGreaterThan(0);
    expect(closedAt - connectingAt).toBeGreaterThanOrEqual(1_100);
    expect(closedAt - openedAt).toBeLessThan(2_500);
    expect(echoes).toBeGreaterThan(5);
    await expect
      .poll(() =>
        gw2.metric('portcullis_websocket_tunnels_closed_total', { listener: 'main', reason: 'max_lifetime' }),
      )
      .toBe(1);
    await expect
      .poll(() =>
        gw2
          .logs()
          .filter((l) => l.msg === 'request' && l.path === '/ws')
          .map((l) => l.reason),
      )
      .toEqual(['max_lifetime']);
  });
});

describe('a tunnel under a stepped wall clock (issue 12 point 7)', () => {
  /** The gateway's wall clock is the real one plus `offset`; its monotonic clock is the real one. */
  let offset = 0;
  const clock: Clock = { now: () => Date.now() + offset, hrtime: () => process.hrtime.bigint() };
  let gw3: TestGateway;
  beforeAll(async () => {
    gw3 = await startGateway(
      (pki) => ({
        timeouts: { tunnelMaxMs: 2_500, idleMs: 20_000 },
        authProviders: {
          idp: {
            type: 'jwt',
            issuer: idp.issuer,
            audience: AUD,
            jwksUri: idp.jwksUri,
            algorithms: ['ES256'],
          },
        },
        listeners: [
          tlsListener(pki, {
            routes: [
              { id: 'authed', match: { pathPrefix: '/ws' }, upstream: up.url, auth: { providers: ['idp'] } },
              { id: 'open', match: { pathPrefix: '/' }, upstream: up.url },
            ],
          }),
        ],
      }),
      { clock },
    );
  });
  afterAll(async () => {
    offset = 0;
    await gw3?.close();
  });

  /** Opens a tunnel on gw3; resolves once open, with a promise of the close time (or -1 after `guardMs`). */
  async function tunnel(path: string, token?: string, guardMs = 6_000): Promise<{ closed: Promise<number> }> {
    const ws = new WebSocket(`wss://localhost:${gw3.port()}${path}`, {
      ca: readFileSync(gw3.pki.ca),
      cert: readFileSync(gw3.pki.clients.alice.cert),
      key: readFileSync(gw3.pki.clients.alice.key),
      ...(token !== undefined ? { headers: { authorization: `Bearer ${token}` } } : {}),
    });
    ws.on('error', () => undefined);
    const closed = new Promise<number>((resolve) => {
      const guard = setTimeout(() => {
        ws.terminate();
        resolve(-1);
      }, guardMs);
      ws.once('close', () => {
        clearTimeout(guard);
        resolve(Date.now());
      });
    });
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('unexpected-response', (_req, res) => reject(new Error(`upgrade refused: ${res.statusCode}`)));
    });
    return { closed };
  }

  const closures = (reason: string): Promise<number> =>
    gw3.metric('portcullis_websocket_tunnels_closed_total', { listener: 'main', reason });

  it("stepped forward past the token's exp: the tunnel closes within a second, as credential_expired", async () => {
    offset = 0;
    const before = await closures('credential_expired');
    const token = await idp.sign({ sub: 'alice', aud: AUD, exp: Math.floor(Date.now() / 1000) + 3600 });
    const { closed } = await tunnel('/ws', token);
    const steppedAt = Date.now();
    offset = 2 * 3_600_000;
    const closedAt = await closed;
    offset = 0;
    expect(closedAt).toBeGreaterThan(0);
    expect(closedAt - steppedAt).toBeLessThan(1_000 + 500);
    await expect.poll(() => closures('credential_expired')).toBe(before + 1);
  });

  it('stepped back an hour: tunnelMaxMs still closes the tunnel on time, as max_lifetime', async () => {
    offset = 0;
    const before = await closures('max_lifetime');
    const openedAfter = Date.now();
    const { closed } = await tunnel('/chat');
    offset = -3_600_000;
    const closedAt = await closed;
    offset = 0;
    expect(closedAt).toBeGreaterThan(0);
    expect(closedAt - openedAfter).toBeGreaterThanOrEqual(2_400);
    expect(closedAt - openedAfter).toBeLessThan(4_000);
    await expect.poll(() => closures('max_lifetime')).toBe(before + 1);
  });
});
