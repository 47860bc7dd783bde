/**
 * Config reload (DESIGN.md: "SIGHUP reloads certs and config without dropping open connections; an invalid
 * new config is refused and the old one keeps serving"), end to end: the real gateway in-process reloaded
 * the way SIGHUP does (app.ts `reloadFromFile` through test/helpers/gateway.ts `reloadGateway`), and the
 * built binary receiving real SIGHUPs. Real TLS with client certificates, real upstreams, keep-alive
 * connections and in-flight requests opened before each reload.
 */
import { X509Certificate } from 'node:crypto';
import { type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { Agent, request as httpsRequest } from 'node:https';
import { createServer as createNetServer, type AddressInfo, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect, type ConnectionOptions, type TLSSocket } from 'node:tls';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tokenCreate } from '../../src/commands/token.js';
import { createCrl, issueClientCert, issueServerCert } from '../../src/certs/pki.js';
import { sampleValue, scrapeText } from '../helpers/admin.js';
import { freePort, killAll, startBinary, type StartedBinary } from '../helpers/binary.js';
import { tlsOptions } from '../helpers/clients.js';
import { createFakeIdp } from '../helpers/idp.js';
import { reloadGateway, startGateway, tlsListener, type TestGateway } from '../helpers/gateway.js';
import { mintTestPki, writePki, type TestPkiPaths } from '../helpers/pki.js';
import { startUpstream, type TestUpstream } from '../helpers/upstream.js';

type Obj = Record<string, unknown>;

interface Answer {
  status: number;
  body: string;
  headers: Record<string, string | string[] | undefined>;
  /** The request went over a connection opened before it (keep-alive). */
  reused: boolean;
  /** SHA-256 fingerprint of the server certificate the connection was made with. */
  peerFingerprint: string;
}

/** One HTTPS request: a fresh connection unless `agent` (keep-alive) is given. */
function get(
  port: number,
  tls: ConnectionOptions,
  opts: { path?: string; agent?: Agent; headers?: Record<string, string> } = {},
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      {
        host: '127.0.0.1',
        port,
        path: opts.path ?? '/',
        headers: { host: `localhost:${port}`, ...opts.headers },
        ...(opts.agent ? { agent: opts.agent } : { ...tls, agent: false }),
      },
      (res) => {
        const peer = (res.socket as unknown as Pick<TLSSocket, 'getPeerCertificate'>).getPeerCertificate();
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            body: Buffer.concat(chunks).toString('utf8'),
            headers: res.headers,
            reused: req.reusedSocket,
            peerFingerprint: peer.fingerprint256,
          }),
        );
      },
    );
    req.on('error', reject);
    req.end();
  });
}

function keepAlive(tls: ConnectionOptions): Agent {
  return new Agent({ ...tls, keepAlive: true, maxSockets: 1 });
}

async function until(check: () => boolean | Promise<boolean>, what: string, ms = 5_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Every config of this file: a short shutdown grace, so retired pools are closed while requests still run. */
const TIMEOUTS = { shutdownGraceMs: 200 };

function config(pki: TestPkiPaths, listener: Obj = {}, extra: Obj = {}): Obj {
  return { timeouts: TIMEOUTS, listeners: [tlsListener(pki, listener)], ...extra };
}

const route = (id: string, pathPrefix: string, upstream: string, more: Obj = {}): Obj => ({
  id,
  match: { pathPrefix },
  upstream,
  ...more,
});

let upA: TestUpstream;
let upB: TestUpstream;
const gateways: TestGateway[] = [];

beforeAll(async () => {
  upA = await startUpstream();
  upB = await startUpstream();
});

afterAll(async () => {
  await Promise.allSettled(gateways.map((g) => g.close()));
  await upA.close();
  await upB.close();
});

async function gateway(build: (pki: TestPkiPaths) => Obj): Promise<TestGateway> {
  const gw = await startGateway(build);
  gateways.push(gw);
  return gw;
}

const reloads = async (gw: TestGateway): Promise<{ success: number; failure: number }> => ({
  success: await gw.metric('portcullis_config_reloads_total', { result: 'success' }),
  failure: await gw.metric('portcullis_config_reloads_total', { result: 'failure' }),
});

describe('an invalid new config is refused and the old one keeps serving', () => {
  it.each([
    ['garbage', (): string => 'listeners: [\n  - {{{ this is not yaml\n', ''],
    [
      'an unknown key',
      (pki: TestPkiPaths): string =>
        stringify({ ...config(pki, { routes: [route('b', '/', upB.url)] }), bogus: 1 }),
      'bogus',
    ],
    [
      'a missing certificate',
      (pki: TestPkiPaths): string =>
        stringify(
          config(pki, {
            tls: { cert: join(pki.dir, 'no-such-cert.pem') },
            routes: [route('b', '/', upB.url)],
          }),
        ),
      'listeners[0].tls.cert',
    ],
  ])(
    '%s: failure counted, open connection and in-flight request unaffected',
    async (_name, text, keyPath) => {
      const gw = await gateway((pki) => config(pki, { routes: [route('a', '/', upA.url)] }));
      const port = gw.port();
      const tls = tlsOptions(gw.pki, 'alice');
      const agent = keepAlive(tls);
      try {
        expect((await get(port, tls, { agent })).status).toBe(200);
        const seenB = upB.seen.length;
        const slow = get(port, tls, { path: '/slow?ms=800' });
        await until(() => upA.seen.some((s) => s.url === '/slow?ms=800'), 'the slow request upstream');

        const result = await reloadGateway(gw, text(gw.pki));

        expect(result.ok).toBe(false);
        if (!result.ok && keyPath !== '') expect(result.errors.map((e) => e.keyPath)).toContain(keyPath);
        expect(await reloads(gw)).toEqual({ success: 0, failure: 1 });
        const refusals = gw
          .logs()
          .filter((l) => l.level === 'error' && String(l.msg).includes('config reload refused'));
        expect(refusals.length).toBeGreaterThan(0);
        expect(await slow).toMatchObject({ status: 200, body: 'slow\n' });
        const again = await get(port, tls, { agent, path: '/after' });
        expect(again).toMatchObject({ status: 200, reused: true });
        expect((await get(port, tls, { path: '/fresh' })).status).toBe(200);
        // The old route still serves: nothing went to the upstream of the refused config.
        expect(upB.seen.length).toBe(seenB);
        expect(upA.seen.some((s) => s.url === '/fresh')).toBe(true);
      } finally {
        agent.destroy();
      }
    },
  );
});

describe('a valid reload applies to new requests and drops nothing', () => {
  it('a route change: new requests follow it, the in-flight request and the keep-alive connection live on', async () => {
    const gw = await gateway((pki) => config(pki, { routes: [route('a', '/', upA.url)] }));
    const port = gw.port();
    const tls = tlsOptions(gw.pki, 'alice');
    const agent = keepAlive(tls);
    try {
      expect((await get(port, tls, { agent, path: '/before' })).status).toBe(200);
      const stamp = await gw.metric('portcullis_config_last_reload_success_timestamp_seconds');
      const slow = get(port, tls, { path: '/slow?ms=1000' });
      await until(() => upA.seen.some((s) => s.url === '/slow?ms=1000'), 'the slow request upstream');
      await new Promise((r) => setTimeout(r, 5));

      // Upstream A leaves the config entirely: its pool is retired (closed after the 200 ms grace period,
      // while the slow request still has 800 ms to go).
      const result = await reloadGateway(gw, (pki) =>
        config(pki, { routes: [route('v2', '/v2/', upB.url), route('a', '/', upB.url)] }),
      );

      expect(result).toEqual({ ok: true });
      expect(await reloads(gw)).toEqual({ success: 1, failure: 0 });
      expect(await gw.metric('portcullis_config_last_reload_success_timestamp_seconds')).toBeGreaterThan(
        stamp,
      );
      expect(gw.logs().some((l) => l.msg === 'config reloaded')).toBe(true);
      const seenA = upA.seen.length;
      const onV2 = await get(port, tls, { agent, path: '/v2/x' });
      expect(onV2).toMatchObject({ status: 200, reused: true });
      expect(upB.seen.some((s) => s.url === '/v2/x')).toBe(true);
      expect((await get(port, tls, { path: '/other' })).status).toBe(200);
      expect(upB.seen.some((s) => s.url === '/other')).toBe(true);
      expect(upA.seen.length).toBe(seenA);
      expect(await slow).toMatchObject({ status: 200, body: 'slow\n' });
      expect(
        gw.app.config.listeners[0]?.protocol === 'http' && gw.app.config.listeners[0].routes.routes.length,
      ).toBe(2);
    } finally {
      agent.destroy();
    }
  });

  it('a rotated server certificate: new connections get it, an open one keeps working', async () => {
    const gw = await gateway((pki) => config(pki, { routes: [route('a', '/', upA.url)] }));
    const port = gw.port();
    const tls = tlsOptions(gw.pki, 'alice');
    const agent = keepAlive(tls);
    try {
      const first = await get(port, tls, { agent });
      const oldPem = await readFile(gw.pki.server.cert, 'utf8');
      expect(first.peerFingerprint).toBe(new X509Certificate(oldPem).fingerprint256);
      const oldExpiry = await gw.metric('portcullis_certificate_expiry_timestamp_seconds', {
        listener: 'main',
        kind: 'server',
      });

      // Rotated in place, as an operator (or cert-manager) does: same paths, new files, then SIGHUP.
      const rotated = issueServerCert(mintTestPki().ca, {
        hosts: ['localhost', '127.0.0.1', '::1'],
        days: 60,
      });
      await writeFile(gw.pki.server.cert, rotated.certPem);
      await writeFile(gw.pki.server.key, rotated.keyPem, { mode: 0o600 });
      const result = await reloadGateway(gw, (pki) => config(pki, { routes: [route('a', '/', upA.url)] }));
      expect(result).toEqual({ ok: true });

      const fresh = await get(port, tls, { path: '/fresh' });
      expect(fresh.status).toBe(200);
      expect(fresh.peerFingerprint).toBe(new X509Certificate(rotated.certPem).fingerprint256);
      const open = await get(port, tls, { agent, path: '/open' });
      expect(open).toMatchObject({ status: 200, reused: true, peerFingerprint: first.peerFingerprint });
      const newExpiry = await gw.metric('portcullis_certificate_expiry_timestamp_seconds', {
        listener: 'main',
        kind: 'server',
      });
      expect(newExpiry).toBe(
        Math.floor(new Date(new X509Certificate(rotated.certPem).validTo).getTime() / 1000),
      );
      expect(newExpiry).toBeGreaterThan(oldExpiry);
    } finally {
      agent.destroy();
    }
  });

  it('a client revoked in a new CRL: its new connections are refused, the upstream sees nothing', async () => {
    const test = mintTestPki();
    const carol = issueClientCert(test.ca, { commonName: 'carol', organizationalUnit: 'ops', days: 30 });
    const gw = await gateway((pki) => config(pki, { routes: [route('a', '/', upA.url)] }));
    const port = gw.port();
    const carolTls: ConnectionOptions = {
      ...tlsOptions(gw.pki, undefined),
      cert: carol.certPem,
      key: carol.keyPem,
    };
    expect((await get(port, carolTls, { path: '/carol-before' })).status).toBe(200);

    const crl = join(gw.dir, 'rotated.crl');
    const now = new Date();
    await writeFile(
      crl,
      createCrl(test.ca, {
        revoked: [
          { serialHex: carol.serialHex, revokedAt: new Date(now.getTime() - 60_000) },
          { serialHex: test.clients.revoked.serialHex, revokedAt: new Date(now.getTime() - 60_000) },
        ],
        crlNumber: 3,
        thisUpdate: now,
        days: 30,
      }),
    );
    const revokedBefore = await gw.metric('portcullis_tls_rejected_connections_total', { reason: 'revoked' });
    const result = await reloadGateway(gw, (pki) =>
      config(pki, { tls: { crl }, routes: [route('a', '/', upA.url)] }),
    );
    expect(result).toEqual({ ok: true });

    const seen = upA.seen.length;
    await expect(get(port, carolTls, { path: '/carol-after' })).rejects.toThrow();
    await until(
      async () =>
        (await gw.metric('portcullis_tls_rejected_connections_total', { reason: 'revoked' })) ===
        revokedBefore + 1,
      'the revoked refusal to be counted',
    );
    expect(upA.seen.length).toBe(seen);
    expect((await get(port, tlsOptions(gw.pki, 'alice'), { path: '/alice-after' })).status).toBe(200);
  });

  it('a route that gains auth: new requests without a token get 401', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'portcullis-reload-tokens-'));
    try {
      const tokensFile = join(dir, 'tokens.json');
      const { token } = await tokenCreate({
        file: tokensFile,
        name: 'dave',
        expiresInSeconds: 3600,
        scopes: [],
      });
      const providers = { authProviders: { team: { type: 'static', tokensFile } } };
      const gw = await gateway((pki) => config(pki, { routes: [route('a', '/', upA.url)] }, providers));
      const port = gw.port();
      const tls = tlsOptions(gw.pki, 'alice');
      expect((await get(port, tls, { path: '/open-before' })).status).toBe(200);

      const result = await reloadGateway(gw, (pki) =>
        config(pki, { routes: [route('a', '/', upA.url, { auth: { providers: ['team'] } })] }, providers),
      );
      expect(result).toEqual({ ok: true });

      const denied = await get(port, tls, { path: '/no-token' });
      expect(denied.status).toBe(401);
      expect(denied.headers['www-authenticate']).toMatch(/^Bearer realm="portcullis"/);
      expect(upA.seen.some((s) => s.url === '/no-token')).toBe(false);
      const allowed = await get(port, tls, {
        path: '/with-token',
        headers: { authorization: `Bearer ${token}` },
      });
      expect(allowed.status).toBe(200);
      expect(upA.seen.some((s) => s.url === '/with-token')).toBe(true);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('a tcp listener on reload', () => {
  /** A TCP upstream that greets each connection with `tag` and then echoes. */
  async function tagged(tag: string): Promise<{ port: number; close: () => Promise<void> }> {
    const sockets = new Set<Socket>();
    const server = createNetServer((s) => {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => undefined);
      s.write(tag);
      s.pipe(s);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    return {
      port: (server.address() as AddressInfo).port,
      close: () =>
        new Promise<void>((r) => {
          for (const s of sockets) s.destroy();
          server.close(() => r());
        }),
    };
  }

  /** Connects with `client`'s certificate; resolves with the first bytes read, or null when closed first. */
  function connect(
    port: number,
    pki: TestPkiPaths,
    client: 'alice' | 'bob',
  ): Promise<{ socket: TLSSocket; first: string | null }> {
    return new Promise((resolve) => {
      const socket = tlsConnect({ ...tlsOptions(pki, client), host: '127.0.0.1', port });
      socket.on('error', () => undefined);
      socket.once('data', (c: Buffer) => resolve({ socket, first: c.toString() }));
      socket.once('close', () => resolve({ socket, first: null }));
    });
  }

  it('new connections go to the new upstream under the new ACL; a piped one stays up', async () => {
    const a = await tagged('A');
    const b = await tagged('B');
    const comm = (pki: TestPkiPaths, upstream: number, allow: string): Obj => ({
      name: 'comm',
      listen: '127.0.0.1:0',
      protocol: 'tcp',
      tls: { cert: pki.server.cert, key: pki.server.key, clientCertificate: 'require', clientCa: pki.ca },
      allowClients: [allow],
      upstream: `tcp://127.0.0.1:${upstream}`,
    });
    const gw = await gateway((pki) => ({ timeouts: TIMEOUTS, listeners: [comm(pki, a.port, 'CN=alice')] }));
    const port = gw.port('comm');
    try {
      const old = await connect(port, gw.pki, 'alice');
      expect(old.first).toBe('A');
      expect((await connect(port, gw.pki, 'bob')).first).toBeNull();

      const result = await reloadGateway(gw, (pki) => ({
        timeouts: TIMEOUTS,
        listeners: [comm(pki, b.port, 'CN=bob')],
      }));
      expect(result).toEqual({ ok: true });

      const bob = await connect(port, gw.pki, 'bob');
      expect(bob.first).toBe('B');
      bob.socket.destroy();
      expect((await connect(port, gw.pki, 'alice')).first).toBeNull();
      // The connection piped before the reload still reaches its upstream (A echoes).
      const echoed = new Promise<string>((r) => old.socket.once('data', (c: Buffer) => r(c.toString())));
      old.socket.write('still here');
      expect(await echoed).toBe('still here');
      old.socket.destroy();
    } finally {
      await a.close();
      await b.close();
    }
  });
});

describe('a certificate rotated badly is refused and the old pair keeps serving (threat model #127 b, c)', () => {
  it('the certificate file emptied: refused at listeners[0].tls.cert, counted and logged; new handshakes get the old certificate', async () => {
    const gw = await gateway((pki) => config(pki, { routes: [route('a', '/', upA.url)] }));
    const port = gw.port();
    const tls = tlsOptions(gw.pki, 'alice');
    const oldFp = new X509Certificate(await readFile(gw.pki.server.cert, 'utf8')).fingerprint256;
    expect((await get(port, tls)).peerFingerprint).toBe(oldFp);

    await writeFile(gw.pki.server.cert, '');
    const result = await reloadGateway(gw, (pki) => config(pki, { routes: [route('a', '/', upA.url)] }));

    expect(result.ok).toBe(false);
    if (!result.ok) expect(result.errors.map((e) => e.keyPath)).toContain('listeners[0].tls.cert');
    expect(await reloads(gw)).toEqual({ success: 0, failure: 1 });
    expect(
      gw.logs().some((l) => l.level === 'error' && String(l.msg).includes('config reload refused')),
    ).toBe(true);
    const after = await get(port, tls, { path: '/after-empty' });
    expect(after).toMatchObject({ status: 200, peerFingerprint: oldFp });
    expect(upA.seen.some((s) => s.url === '/after-empty')).toBe(true);
  });

  it('the key written before the certificate: refused while they do not match, then the new pair serves', async () => {
    const gw = await gateway((pki) => config(pki, { routes: [route('a', '/', upA.url)] }));
    const port = gw.port();
    const tls = tlsOptions(gw.pki, 'alice');
    const oldFp = new X509Certificate(await readFile(gw.pki.server.cert, 'utf8')).fingerprint256;
    const rotated = issueServerCert(mintTestPki().ca, { hosts: ['localhost', '127.0.0.1', '::1'], days: 60 });
    const build = (pki: TestPkiPaths): Obj => config(pki, { routes: [route('a', '/', upA.url)] });

    // A non-atomic rotation: the new key lands first and a reload runs before the certificate follows.
    await writeFile(gw.pki.server.key, rotated.keyPem, { mode: 0o600 });
    const half = await reloadGateway(gw, build);
    expect(half.ok).toBe(false);
    if (!half.ok) {
      const keyPaths = half.errors.map((e) => e.keyPath);
      expect(keyPaths.some((k) => k === 'listeners[0].tls.key' || k === 'listeners[0].tls.cert')).toBe(true);
      // The refusal names the files, never the key material.
      expect(JSON.stringify(half.errors)).not.toContain('PRIVATE KEY');
    }
    expect(await reloads(gw)).toEqual({ success: 0, failure: 1 });
    expect((await get(port, tls, { path: '/half' })).peerFingerprint).toBe(oldFp);

    await writeFile(gw.pki.server.cert, rotated.certPem);
    expect(await reloadGateway(gw, build)).toEqual({ ok: true });
    expect(await reloads(gw)).toEqual({ success: 1, failure: 1 });
    const whole = await get(port, tls, { path: '/whole' });
    expect(whole).toMatchObject({
      status: 200,
      peerFingerprint: new X509Certificate(rotated.certPem).fingerprint256,
    });
  });
});

describe('a change only a restart can apply is refused', () => {
  it.each([
    [
      'listeners[0].listen',
      (pki: TestPkiPaths): Obj => config(pki, { listen: '127.0.0.1:1', routes: [route('a', '/', upB.url)] }),
    ],
    [
      'timeouts.idleMs',
      (pki: TestPkiPaths): Obj => ({
        ...config(pki, { routes: [route('a', '/', upB.url)] }),
        timeouts: { ...TIMEOUTS, idleMs: 1234 },
      }),
    ],
    [
      'workers',
      (pki: TestPkiPaths): Obj => ({ ...config(pki, { routes: [route('a', '/', upB.url)] }), workers: 2 }),
    ],
    [
      'reload.checkFilesSeconds',
      (pki: TestPkiPaths): Obj => ({
        ...config(pki, { routes: [route('a', '/', upB.url)] }),
        reload: { checkFilesSeconds: 5 },
      }),
    ],
    [
      'listeners',
      (pki: TestPkiPaths): Obj => ({
        ...config(pki, { routes: [route('a', '/', upB.url)] }),
        listeners: [
          tlsListener(pki, { routes: [route('a', '/', upB.url)] }),
          tlsListener(pki, { name: 'second' }),
        ],
      }),
    ],
    [
      'listeners[0].tls.clientCertificate',
      (pki: TestPkiPaths): Obj =>
        config(pki, { tls: { clientCertificate: 'optional' }, routes: [route('a', '/', upB.url)] }),
    ],
  ])('%s: refused with "a restart is needed", the old config keeps serving', async (keyPath, build) => {
    const gw = await gateway((pki) => config(pki, { routes: [route('a', '/', upA.url)] }));
    const port = gw.port();
    const tls = tlsOptions(gw.pki, 'alice');
    const result = await reloadGateway(gw, build);
    expect(result.ok).toBe(false);
    if (result.ok) return;
    const error = result.errors.find((e) => e.keyPath === keyPath);
    expect(error?.message).toMatch(/a restart is needed/);
    expect(await reloads(gw)).toEqual({ success: 0, failure: 1 });
    const logged = gw.logs().find((l) => l.level === 'error' && l.keyPath === keyPath);
    expect(logged?.reason).toMatch(/restart/);
    const seenB = upB.seen.length;
    expect((await get(port, tls, { path: '/still-a' })).status).toBe(200);
    expect(upA.seen.some((s) => s.url === '/still-a')).toBe(true);
    expect(upB.seen.length).toBe(seenB);
    expect(gw.app.port('main')).toBe(port);
  });
});

describe('auth providers across a reload', () => {
  it('an unchanged provider is kept with its cache (no IdP call); a changed setting or secret file makes a new one', async () => {
    const idp = await createFakeIdp();
    await idp.listen();
    const dir = await mkdtemp(join(tmpdir(), 'portcullis-reload-idp-'));
    try {
      const secretFile = join(dir, 'secret');
      await writeFile(secretFile, `${idp.clientSecret}\n`, { mode: 0o600 });
      const providers = (timeoutMs: number): Obj => ({
        authProviders: {
          opaque: {
            type: 'introspection',
            endpoint: idp.introspectionUri,
            clientId: idp.clientId,
            clientSecretFile: secretFile,
            timeoutMs,
            cache: { maxTtlSeconds: 300 },
          },
        },
      });
      const build =
        (timeoutMs: number, upstream: string) =>
        (pki: TestPkiPaths): Obj =>
          config(
            pki,
            { routes: [route('a', '/', upstream, { auth: { providers: ['opaque'] } })] },
            providers(timeoutMs),
          );
      const gw = await gateway(build(1_000, upA.url));
      const port = gw.port();
      const tls = tlsOptions(gw.pki, 'alice');
      const token = idp.issueOpaque();
      const ask = async (path: string): Promise<number> =>
        (await get(port, tls, { path, headers: { authorization: `Bearer ${token}` } })).status;
      expect(await ask('/warm')).toBe(200);
      expect(idp.counts.introspection).toBe(1);
      const first = gw.app.authenticators.get('opaque');

      // A route change: the provider is the same object, its cached answer serves without an IdP call.
      expect(await reloadGateway(gw, build(1_000, upB.url))).toEqual({ ok: true });
      expect(gw.app.authenticators.get('opaque')).toBe(first);
      expect(await ask('/after-route-change')).toBe(200);
      expect(upB.seen.some((s) => s.url === '/after-route-change')).toBe(true);
      expect(idp.counts.introspection).toBe(1);

      // A setting of the provider changed: a new provider, an empty cache, one IdP call.
      expect(await reloadGateway(gw, build(1_500, upB.url))).toEqual({ ok: true });
      const second = gw.app.authenticators.get('opaque');
      expect(second).not.toBe(first);
      expect(await ask('/after-setting-change')).toBe(200);
      expect(idp.counts.introspection).toBe(2);

      // The secret file's content changed (same path): a new provider again.
      await writeFile(secretFile, idp.clientSecret, { mode: 0o600 }); // same secret, other bytes
      expect(await reloadGateway(gw, build(1_500, upB.url))).toEqual({ ok: true });
      expect(gw.app.authenticators.get('opaque')).not.toBe(second);
    } finally {
      await idp.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('the reload metrics on /metrics', () => {
  const value = (text: string, series: string): number => {
    const v = sampleValue(text, series);
    if (v === undefined) throw new Error(`no series ${series}`);
    return v;
  };
  const SUCCESS = 'portcullis_config_reloads_total{result="success"}';
  const FAILURE = 'portcullis_config_reloads_total{result="failure"}';
  const STAMP = 'portcullis_config_last_reload_success_timestamp_seconds';

  it('count successes and failures and move the timestamp on success only', async () => {
    const admin = { admin: { enabled: true, listen: '127.0.0.1:0' } };
    const gw = await gateway((pki) => config(pki, { routes: [route('a', '/', upA.url)] }, admin));
    const adminPort = gw.app.adminPort();
    if (adminPort === undefined) throw new Error('admin listener not started');
    const start = await scrapeText(adminPort);
    expect([value(start, SUCCESS), value(start, FAILURE)]).toEqual([0, 0]);
    const started = value(start, STAMP);
    expect(started).toBeGreaterThan(0);
    await new Promise((r) => setTimeout(r, 20));

    expect(
      (await reloadGateway(gw, (pki) => config(pki, { routes: [route('b', '/', upB.url)] }, admin))).ok,
    ).toBe(true);
    const afterSuccess = await scrapeText(adminPort);
    expect([value(afterSuccess, SUCCESS), value(afterSuccess, FAILURE)]).toEqual([1, 0]);
    const reloaded = value(afterSuccess, STAMP);
    expect(reloaded).toBeGreaterThan(started);

    expect((await reloadGateway(gw, 'admin: [unclosed\n')).ok).toBe(false);
    expect(
      (
        await reloadGateway(gw, (pki) =>
          config(
            pki,
            { routes: [route('b', '/', upB.url)] },
            { admin: { enabled: true, listen: '127.0.0.1:1' } },
          ),
        )
      ).ok,
    ).toBe(false);
    const afterFailures = await scrapeText(adminPort);
    expect([value(afterFailures, SUCCESS), value(afterFailures, FAILURE)]).toEqual([1, 2]);
    expect(value(afterFailures, STAMP)).toBe(reloaded);
  });
});

describe('the built binary on SIGHUP', () => {
  let dir: string;
  let pki: TestPkiPaths;
  const children = new Set<ChildProcess>();

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'portcullis-reload-bin-'));
    pki = await writePki(join(dir, 'pki'));
  });
  afterAll(async () => {
    killAll(children);
    await rm(dir, { recursive: true, force: true });
  });

  /** Starts `portcullis start --config file` and waits for its first `listening` line. */
  async function start(file: string): Promise<StartedBinary & { port: number }> {
    const run = startBinary(file);
    children.add(run.child);
    const listening = await run.waitFor((l) => l.msg === 'listening', 'a listening line', 60_000);
    return { ...run, port: listening.port as number };
  }

  const count = (lines: readonly Obj[], pred: (l: Obj) => boolean): number => lines.filter(pred).length;

  it('with workers: 2, each worker reloads itself and /metrics on the primary sums them', async () => {
    const adminPort = await freePort();
    const file = join(dir, 'cluster.yaml');
    const write = (upstream: string): Promise<void> =>
      writeFile(
        file,
        stringify({
          workers: 2,
          admin: { listen: `127.0.0.1:${adminPort}` },
          ...config(pki, { routes: [route('a', '/', upstream)] }),
        }),
      );
    await write(upA.url);
    const gw = await start(file);
    const tls = tlsOptions(pki, 'alice');
    await until(() => count(gw.lines, (l) => l.msg === 'admin listening') === 1, 'the admin listener');
    await write(upB.url);
    gw.child.kill('SIGHUP');
    await until(
      () => new Set(gw.lines.filter((l) => l.msg === 'config reloaded').map((l) => l.worker)).size === 2,
      'both workers to reload',
    );
    const metrics = await new Promise<string>((resolve, reject) => {
      httpRequest({ host: '127.0.0.1', port: adminPort, path: '/metrics' }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (text += c));
        res.on('end', () => resolve(text));
      })
        .on('error', reject)
        .end();
    });
    expect(metrics).toMatch(/^portcullis_config_reloads_total\{result="success"\} 2$/m);
    expect(metrics).toMatch(/^portcullis_config_reloads_total\{result="failure"\} 0$/m);
    for (let i = 0; i < 4; i++) {
      expect((await get(gw.port, tls, { path: `/cluster-${i}` })).status).toBe(200);
      expect(upB.seen.some((s) => s.url === `/cluster-${i}`)).toBe(true);
    }
    gw.child.kill('SIGTERM');
    expect((await gw.exited).code).toBe(0);
  });

  it('SIGHUP during a SIGTERM drain is skipped: the in-flight request finishes, new connections are refused, exit 0 (threat model #131)', async () => {
    const file = join(dir, 'drain.yaml');
    const write = (upstream: string): Promise<void> =>
      writeFile(
        file,
        stringify({
          admin: { enabled: false, listen: '127.0.0.1:0' },
          ...config(pki, { routes: [route('a', '/', upstream)] }, { timeouts: { shutdownGraceMs: 10_000 } }),
        }),
      );
    await write(upA.url);
    const gw = await start(file);
    const tls = tlsOptions(pki, 'alice');
    const seenB = upB.seen.length;

    const slow = get(gw.port, tls, { path: '/slow?ms=1500&drain=1' });
    await until(() => upA.seen.some((s) => s.url === '/slow?ms=1500&drain=1'), 'the slow request upstream');
    gw.child.kill('SIGTERM');
    await gw.waitFor((l) => l.msg === 'draining', "'draining'");
    await write(upB.url);
    gw.child.kill('SIGHUP');
    await gw.waitFor((l) => String(l.msg).startsWith('reload skipped'), 'the skipped reload');

    // New connections are refused while the request drains.
    const refused = await new Promise<string>((resolve) => {
      const s = tlsConnect({ ...tls, host: '127.0.0.1', port: gw.port });
      s.once('secureConnect', () => {
        s.destroy();
        resolve('connected');
      });
      s.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'));
    });
    expect(refused).toBe('ECONNREFUSED');

    expect(await slow).toMatchObject({ status: 200, body: 'slow\n' });
    expect(await gw.exited).toEqual({ code: 0, signal: null });
    expect(count(gw.lines, (l) => l.msg === 'config reloaded' || l.msg === 'reloading config')).toBe(0);
    expect(upB.seen.length).toBe(seenB);
    expect(count(gw.lines, (l) => l.msg === 'stopped')).toBe(1);
  });

  it('reloads a valid change, refuses an invalid file and keeps serving, survives two SIGHUPs in a row', async () => {
    const file = join(dir, 'portcullis.yaml');
    const write = (upstream: string): Promise<void> =>
      writeFile(
        file,
        stringify({
          admin: { enabled: false, listen: '127.0.0.1:0' },
          ...config(pki, { routes: [route('a', '/', upstream)] }),
        }),
      );
    await write(upA.url);
    const gw = await start(file);
    const tls = tlsOptions(pki, 'alice');
    const agent = keepAlive(tls);
    try {
      expect((await get(gw.port, tls, { agent, path: '/bin-1' })).status).toBe(200);
      expect(upA.seen.some((s) => s.url === '/bin-1')).toBe(true);

      await write(upB.url);
      gw.child.kill('SIGHUP');
      await until(() => count(gw.lines, (l) => l.msg === 'config reloaded') === 1, "'config reloaded'");
      expect(await get(gw.port, tls, { agent, path: '/bin-2' })).toMatchObject({ status: 200, reused: true });
      expect(upB.seen.some((s) => s.url === '/bin-2')).toBe(true);

      await writeFile(file, 'listeners: [\n  - {{{ not yaml\n');
      gw.child.kill('SIGHUP');
      await until(
        () =>
          count(gw.lines, (l) => l.level === 'error' && String(l.msg).includes('config reload refused')) > 0,
        'the refusal to be logged',
      );
      expect((await get(gw.port, tls, { path: '/bin-3' })).status).toBe(200);
      expect(upB.seen.some((s) => s.url === '/bin-3')).toBe(true);

      await write(upA.url);
      gw.child.kill('SIGHUP');
      gw.child.kill('SIGHUP');
      await until(() => count(gw.lines, (l) => l.msg === 'config reloaded') >= 2, 'the second reload');
      await new Promise((r) => setTimeout(r, 300));
      expect(gw.child.exitCode).toBeNull();
      expect(gw.child.signalCode).toBeNull();
      expect((await get(gw.port, tls, { path: '/bin-4' })).status).toBe(200);
      expect(upA.seen.some((s) => s.url === '/bin-4')).toBe(true);
      expect(count(gw.lines, (l) => l.level === 'fatal')).toBe(0);
    } finally {
      agent.destroy();
    }
    gw.child.kill('SIGTERM');
    expect((await gw.exited).code).toBe(0);
  });
});
