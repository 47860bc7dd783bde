/**
 * Missing or unknown SNI (threat model #7) and TLS session resumption across a reload (threat model #10), end
 * to end: the real gateway on 127.0.0.1:0, real TLS clients (node:tls, one HTTP/1.1 request per connection
 * written by hand so the session, the resumption flag and the served certificate can all be read), and a
 * recording upstream, so every refusal also proves that nothing reached it.
 *
 * - Threat model #7: a client that sends no SNI, or a name the gateway has no certificate for, gets the listener's one
 *   certificate and the same client-certificate policy as everyone else; its Host picks a route exactly as
 *   the route table says, never a laxer route (SNI ≠ Host itself is paths-and-hosts.test.ts, threat model #8).
 * - Threat model #10: a session saved before a CRL reload that revokes the client is not resumed after it (a new
 *   secure context has new ticket keys, derived from the new material, and an empty session cache:
 *   listener/tls-material.ts `swapSecureContext`); a reload that leaves the TLS material alone keeps the
 *   context, so sessions resume there by design (and the new route table and listener ACL still apply to the resumed connection). With a cluster's shared ticket
 *   keys, a reload with new TLS material derives new keys: a revoked client's session is not resumed either.
 */
import { X509Certificate, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { connect as tlsConnect, type SecureVersion } from 'node:tls';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startApp, type App } from '../../src/app.js';
import { createCrl } from '../../src/certs/pki.js';
import { loadConfigFile } from '../../src/load-config.js';
import { createLogger } from '../../src/observability/logger.js';
import { reloadGateway, startGateway, tlsListener, type TestGateway } from '../helpers/gateway.js';
import { mintTestPki, writePki, type TestClientName, type TestPkiPaths } from '../helpers/pki.js';
import { startUpstream, type TestUpstream } from '../helpers/upstream.js';

type Obj = Record<string, unknown>;

/** What one connection with one request saw. */
interface Exchange {
  /** Status of the HTTP answer; 0 when none came back (the connection was refused). */
  readonly status: number;
  /** The client finished its side of the handshake (a TLS 1.3 client does so before the server has
   * checked its certificate, so a refused client can get here too). */
  readonly secure: boolean;
  /** `isSessionReused()` at the end of the handshake (false when it never ended). */
  readonly reused: boolean;
  readonly protocol: string | null;
  /** SHA-256 fingerprint of the certificate the server presented. */
  readonly peerFingerprint: string | undefined;
  /** The last session the server handed out on this connection (TLS 1.3 ticket or TLS 1.2 session). */
  readonly session: Buffer | undefined;
}

interface ExchangeOptions {
  readonly client?: TestClientName | undefined;
  /** SNI to send; '' sends none (as a client connecting by IP address does). */
  readonly servername: string;
  /** Host header of the request. */
  readonly host: string;
  readonly path: string;
  readonly maxVersion?: SecureVersion;
  readonly session?: Buffer | undefined;
}

/**
 * One TLS connection to the gateway with one `Connection: close` request. The chain is verified against the
 * test CA; the name check is off (an unknown SNI is not in the certificate): tests compare the fingerprint.
 */
function exchange(port: number, pki: TestPkiPaths, o: ExchangeOptions): Promise<Exchange> {
  return new Promise((resolve) => {
    const client = o.client;
    const socket = tlsConnect({
      host: '127.0.0.1',
      port,
      ca: readFileSync(pki.ca),
      ...(client
        ? { cert: readFileSync(pki.clients[client].cert), key: readFileSync(pki.clients[client].key) }
        : {}),
      servername: o.servername,
      checkServerIdentity: () => undefined,
      ALPNProtocols: ['http/1.1'],
      ...(o.maxVersion ? { maxVersion: o.maxVersion } : {}),
      ...(o.session ? { session: o.session } : {}),
    });
    const chunks: Buffer[] = [];
    let secure = false;
    let reused = false;
    let protocol: string | null = null;
    let peerFingerprint: string | undefined;
    let session: Buffer | undefined;
    let done = false;
    const finish = (): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      const text = Buffer.concat(chunks).toString('latin1');
      const status = Number(/^HTTP\/1\.1 (\d{3}) /.exec(text)?.[1] ?? 0);
      resolve({ status, secure, reused, protocol, peerFingerprint, session });
    };
    const timer = setTimeout(finish, 4_000);
    socket.on('session', (s: Buffer) => (session = s));
    socket.on('secureConnect', () => {
      secure = true;
      reused = socket.isSessionReused();
      protocol = socket.getProtocol();
      peerFingerprint = socket.getPeerX509Certificate()?.fingerprint256;
      socket.write(`GET ${o.path} HTTP/1.1\r\nHost: ${o.host}\r\nConnection: close\r\n\r\n`);
    });
    socket.on('data', (c: Buffer) => {
      chunks.push(c);
      // A resumed connection may get no new ticket: then the session it resumed is the one to keep. Read
      // while the connection is up (after 'close' there is no session left to read).
      session ??= socket.getSession();
    });
    socket.on('error', () => undefined); // a refused client sees a reset or an alert: the outcome is `status`
    socket.on('close', finish);
  });
}

async function until(check: () => Promise<boolean>, what: string, ms = 3_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const rejected = (gw: TestGateway, reason: string): Promise<number> =>
  gw.metric('portcullis_tls_rejected_connections_total', { reason });

let up: TestUpstream;
const gateways: TestGateway[] = [];

beforeAll(async () => {
  up = await startUpstream();
});

afterAll(async () => {
  await Promise.allSettled(gateways.map((g) => g.close()));
  await up.close();
});

async function gateway(build: (pki: TestPkiPaths) => Obj): Promise<TestGateway> {
  const gw = await startGateway(build);
  gateways.push(gw);
  return gw;
}

/** Fingerprint of the listener's configured server certificate. */
const serverFingerprint = (pki: TestPkiPaths): string =>
  new X509Certificate(readFileSync(pki.server.cert)).fingerprint256;

describe('missing or unknown SNI: the one certificate, the same client policy, no laxer route (threat model #7)', () => {
  let gw: TestGateway;
  let port: number;
  beforeAll(async () => {
    // Two host routes; `strict` lets only bob in, `lax` anyone with a verified certificate. No any-host
    // route: a Host that names neither is a 404, never a fall-through.
    gw = await gateway((pki) => ({
      listeners: [
        tlsListener(pki, {
          routes: [
            {
              id: 'strict',
              match: { host: 'strict.example', pathPrefix: '/' },
              upstream: up.url,
              allowClients: ['CN=bob'],
            },
            { id: 'lax', match: { host: 'lax.example', pathPrefix: '/' }, upstream: up.url },
          ],
        }),
      ],
    }));
    port = gw.port();
  });

  const snis: [string, string][] = [
    ['no SNI', ''],
    ['an unknown SNI', 'unknown.example'],
    ['a known SNI (control)', 'localhost'],
  ];

  it.each(snis)(
    '%s without a client certificate: handshake refused, counted, upstream saw nothing',
    async (_n, sni) => {
      const seen = up.seen.length;
      const before = await rejected(gw, 'no_client_cert');
      const r = await exchange(port, gw.pki, {
        client: undefined,
        servername: sni,
        host: 'lax.example',
        path: '/no-cert',
      });
      expect(r.status).toBe(0);
      await until(
        async () => (await rejected(gw, 'no_client_cert')) === before + 1,
        'the no_client_cert refusal',
      );
      expect(up.seen.length).toBe(seen);
    },
    10_000,
  );

  it.each<[string, string, number]>([
    // No SNI: the Host alone picks the route, and none has this host.
    ['no SNI', '', 404],
    // With SNI, a Host other than it is misdirected before any route is looked up.
    ['an unknown SNI', 'unknown.example', 421],
    ['a known SNI (control)', 'localhost', 421],
  ])(
    '%s with alice: the listener certificate is served, Host nowhere.example → %i',
    async (_n, sni, want) => {
      const seen = up.seen.length;
      const r = await exchange(port, gw.pki, {
        client: 'alice',
        servername: sni,
        host: 'nowhere.example',
        path: '/',
      });
      expect(r.secure).toBe(true);
      expect(r.peerFingerprint).toBe(serverFingerprint(gw.pki));
      expect(r.status).toBe(want);
      expect(up.seen.length).toBe(seen);
    },
    10_000,
  );

  it.each<[TestClientName, string, number]>([
    ['alice', 'strict.example', 403],
    ['bob', 'strict.example', 200],
    ['alice', 'lax.example', 200],
    ['alice', 'unknown.example', 404],
  ])(
    'no SNI, %s, Host %s → %i: the Host picks the route and its rules apply',
    async (client, host, want) => {
      const seen = up.seen.length;
      const logsBefore = gw.logs().length;
      const path = `/nosni-${client}-${host}`;
      const r = await exchange(port, gw.pki, { client, servername: '', host, path });
      expect(r.peerFingerprint).toBe(serverFingerprint(gw.pki));
      expect(r.status).toBe(want);
      if (want === 200) {
        expect(up.seen.slice(seen).map((s) => s.url)).toEqual([path]);
        expect(up.seen[seen]?.headers.host).toBe(host);
      } else {
        expect(up.seen.length).toBe(seen);
        const reason = want === 403 ? 'ERR_AUTHZ_ROUTE_ACL' : 'ERR_ROUTE_NOT_FOUND';
        expect(
          gw
            .logs()
            .slice(logsBefore)
            .some((l) => l.reason === reason),
        ).toBe(true);
      }
    },
    10_000,
  );

  it.each<[string, string, number, string]>([
    // The strict route's Host under a name the gateway does not serve: misdirected, not the lax route.
    ['strict.example', '/u-strict', 421, 'ERR_REQUEST_MISDIRECTED'],
    ['lax.example', '/u-lax', 421, 'ERR_REQUEST_MISDIRECTED'],
    // Host equal to the unknown SNI: no route has it, and there is no default to fall to.
    ['unknown.example', '/u-unknown', 404, 'ERR_ROUTE_NOT_FOUND'],
  ])(
    'unknown SNI, alice, Host %s (%s) → %i, the upstream sees nothing',
    async (host, path, want, reason) => {
      const seen = up.seen.length;
      const logsBefore = gw.logs().length;
      const r = await exchange(port, gw.pki, { client: 'alice', servername: 'unknown.example', host, path });
      expect(r.status).toBe(want);
      expect(up.seen.length).toBe(seen);
      expect(
        gw
          .logs()
          .slice(logsBefore)
          .some((l) => l.reason === reason),
      ).toBe(true);
    },
    10_000,
  );

  it('SNI = the strict Host: alice is refused by its ACL, bob is served', async () => {
    const seen = up.seen.length;
    const a = await exchange(port, gw.pki, {
      client: 'alice',
      servername: 'strict.example',
      host: 'strict.example',
      path: '/s-alice',
    });
    const b = await exchange(port, gw.pki, {
      client: 'bob',
      servername: 'strict.example',
      host: 'strict.example',
      path: '/s-bob',
    });
    expect([a.status, b.status]).toEqual([403, 200]);
    expect(a.peerFingerprint).toBe(serverFingerprint(gw.pki));
    expect(up.seen.slice(seen).map((s) => s.url)).toEqual(['/s-bob']);
  }, 10_000);
});

const VERSIONS: [SecureVersion][] = [['TLSv1.3'], ['TLSv1.2']];

/** The config of the resumption gateways: one route to the recording upstream, optionally more. */
function resumeConfig(pki: TestPkiPaths, listener: Obj = {}): Obj {
  return {
    listeners: [
      tlsListener(pki, { routes: [{ id: 'a', match: { pathPrefix: '/' }, upstream: up.url }], ...listener }),
    ],
  };
}

/** Writes a CRL (next to the gateway's config) that lists alice's serial and returns its path. */
async function crlRevokingAlice(gw: TestGateway): Promise<string> {
  const test = mintTestPki();
  const now = new Date();
  const revokedAt = new Date(now.getTime() - 60_000);
  const crl = join(gw.dir, 'alice-revoked.crl');
  await writeFile(
    crl,
    createCrl(test.ca, {
      revoked: [
        { serialHex: test.clients.alice.serialHex, revokedAt },
        { serialHex: test.clients.revoked.serialHex, revokedAt },
      ],
      crlNumber: 3,
      thisUpdate: now,
      days: 30,
    }),
  );
  return crl;
}

/**
 * Threat model #10 on `gw`: alice saves a session, resumes it once (control), is revoked by a CRL reload, and
 * then presents both saved sessions: neither resumes, both connections are refused as revoked, the upstream
 * sees nothing; bob is still served.
 */
async function revokedSessionsAreNotResumed(gw: TestGateway, version: SecureVersion): Promise<void> {
  const port = gw.port();
  const req = (path: string, session?: Buffer, client: TestClientName = 'alice'): Promise<Exchange> =>
    exchange(port, gw.pki, {
      client,
      servername: 'localhost',
      host: 'localhost',
      path,
      maxVersion: version,
      session,
    });

  const first = await req('/first');
  expect(first).toMatchObject({ status: 200, reused: false, protocol: version });
  expect(first.session).toBeDefined();
  // Control: before any reload, the saved session resumes (so the test can tell the difference).
  const control = await req('/control', first.session);
  expect(control).toMatchObject({ status: 200, reused: true, protocol: version });
  expect(control.session).toBeDefined();

  const crl = await crlRevokingAlice(gw);
  expect(await reloadGateway(gw, (pki) => resumeConfig(pki, { tls: { crl } }))).toEqual({ ok: true });

  const seen = up.seen.length;
  // Both the session of the first connection and the one in use on the resumed connection.
  for (const [i, session] of [first.session, control.session].entries()) {
    const revokedBefore = await rejected(gw, 'revoked');
    const after = await req(`/after-${String(i)}`, session);
    expect({ reused: after.reused, status: after.status }).toEqual({ reused: false, status: 0 });
    await until(async () => (await rejected(gw, 'revoked')) === revokedBefore + 1, 'the revoked refusal');
  }
  expect(up.seen.length).toBe(seen);
  // The gateway still serves a client that is not revoked.
  expect((await req('/bob-after', undefined, 'bob')).status).toBe(200);
}

describe('session resumption across a reload (threat model #10)', () => {
  it.each(VERSIONS)(
    '%s: a session saved before a CRL that revokes alice is not resumed after the reload, and alice is refused',
    async (version) => {
      await revokedSessionsAreNotResumed(await gateway((pki) => resumeConfig(pki)), version);
    },
    15_000,
  );

  it.each(VERSIONS)(
    '%s: a reload that leaves the TLS material alone keeps the context: the session resumes, the new config applies',
    async (version) => {
      const gw = await gateway((pki) => resumeConfig(pki));
      const port = gw.port();
      const req = (path: string, session?: Buffer): Promise<Exchange> =>
        exchange(port, gw.pki, {
          client: 'alice',
          servername: 'localhost',
          host: 'localhost',
          path,
          maxVersion: version,
          session,
        });

      const first = await req('/first');
      expect(first).toMatchObject({ status: 200, reused: false, protocol: version });

      // A route change only (http-listener.ts: `keep` — "sessions and tickets stay valid").
      const routes = [
        { id: 'v2', match: { pathPrefix: '/v2' }, upstream: up.url, allowClients: ['CN=bob'] },
        { id: 'a', match: { pathPrefix: '/' }, upstream: up.url },
      ];
      expect(await reloadGateway(gw, (pki) => resumeConfig(pki, { routes }))).toEqual({ ok: true });
      const seen = up.seen.length;
      const routed = await req('/after-route-change', first.session);
      expect(routed).toMatchObject({ status: 200, reused: true });
      // The resumed connection runs on the new route table: the new bob-only route refuses alice.
      const onV2 = await req('/v2/x', routed.session);
      expect(onV2).toMatchObject({ status: 403, reused: true });
      expect(up.seen.slice(seen).map((s) => s.url)).toEqual(['/after-route-change']);

      // A listener ACL added without new TLS material: the session may resume, the ACL still applies to it
      // (it is checked on every handshake, resumed or not, against the certificate in the session).
      expect(
        await reloadGateway(gw, (pki) => resumeConfig(pki, { routes, allowClients: ['CN=bob'] })),
      ).toEqual({ ok: true });
      const logsBefore = gw.logs().length;
      const acl = await req('/after-acl', onV2.session);
      expect(acl).toMatchObject({ status: 403, reused: true });
      expect(
        gw
          .logs()
          .slice(logsBefore)
          .some((l) => l.reason === 'ERR_IDENTITY_LISTENER_ACL'),
      ).toBe(true);
      expect(up.seen.slice(seen).map((s) => s.url)).toEqual(['/after-route-change']);
    },
    15_000,
  );
});

/**
 * Starts the app as a cluster worker does (cluster/worker.ts): with the cluster's TLS ticket keys in its
 * deps, which test/helpers/gateway.ts `startGateway` does not pass. Same temp-folder layout, so
 * `reloadGateway` works on it. Logs are dropped (no test here reads them).
 */
async function gatewayWithTicketKeys(
  build: (pki: TestPkiPaths) => Obj,
  ticketKeys: Buffer,
): Promise<TestGateway> {
  const dir = await mkdtemp(join(tmpdir(), 'portcullis-it-'));
  const pki = await writePki(join(dir, 'pki'));
  const file = join(dir, 'portcullis.yaml');
  await writeFile(file, stringify({ admin: { enabled: false, listen: '127.0.0.1:0' }, ...build(pki) }));
  const sink = new Writable({ write: (_c, _e, cb) => cb() });
  let app: App;
  try {
    app = await startApp(loadConfigFile(file), { logger: createLogger('error', sink), ticketKeys });
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
  const gw: TestGateway = {
    app,
    pki,
    dir,
    port: (name?: string) => app.port(name ?? (app.config.listeners[0]?.name as string)),
    logs: () => [],
    async metric(name, labels = {}) {
      const m = app.registry.getSingleMetric(name);
      if (!m) return 0;
      let total = 0;
      for (const v of (await m.get()).values) {
        const ls = v.labels as Record<string, string | number>;
        if (Object.entries(labels).every(([k, want]) => String(ls[k]) === want)) total += v.value;
      }
      return total;
    },
    async close() {
      await app.close(0);
      await rm(dir, { recursive: true, force: true });
    },
  };
  gateways.push(gw);
  return gw;
}

describe('session resumption with shared ticket keys (a cluster: keys derived anew at a TLS reload)', () => {
  it.each(VERSIONS)(
    '%s: another worker with the same keys resumes the session (control); after a CRL reload revoking alice, none does',
    async (version) => {
      const keys = randomBytes(48);
      const worker1 = await gatewayWithTicketKeys((pki) => resumeConfig(pki), keys);
      const worker2 = await gatewayWithTicketKeys((pki) => resumeConfig(pki), keys);
      const first = await exchange(worker1.port(), worker1.pki, {
        client: 'alice',
        servername: 'localhost',
        host: 'localhost',
        path: '/w1',
        maxVersion: version,
      });
      expect(first).toMatchObject({ status: 200, reused: false });
      // The shared keys are in effect: a ticket from worker 1 resumes on worker 2.
      const across = await exchange(worker2.port(), worker2.pki, {
        client: 'alice',
        servername: 'localhost',
        host: 'localhost',
        path: '/w2',
        maxVersion: version,
        session: first.session,
      });
      expect(across).toMatchObject({ status: 200, reused: true });

      await revokedSessionsAreNotResumed(worker1, version);
    },
    15_000,
  );
});
