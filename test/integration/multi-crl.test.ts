/**
 * A client CA bundle of two CAs and a `tls.crl` file holding one CRL of each, concatenated (the way
 * operators keep them): the real gateway on loopback passes each CRL to OpenSSL on its own
 * (certs/crl.ts). Before, Node read only the first CRL of the file: every client of the second CA was
 * refused (UNABLE_TO_GET_CRL), and a revocation in the second CRL never closed an open connection. Here a
 * client of the second CA is accepted, a revoked client of either CA is refused before the upstream, each
 * CRL has its own nextUpdate gauge, and a reload whose second CRL revokes a connected client closes that
 * client's open connections (HTTP/1.1 keep-alive and TCP) while the others carry on.
 */
import { Agent, request as httpsRequest } from 'node:https';
import { createServer as createNetServer, type AddressInfo, type Server } from 'node:net';
import { join } from 'node:path';
import { connect as tlsConnect, type ConnectionOptions, type TLSSocket } from 'node:tls';
import { readFileSync, writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCa, createCrl, issueClientCert, type CertAndKey } from '../../src/certs/pki.js';
import { reloadGateway, startGateway, type TestGateway } from '../helpers/gateway.js';
import { mintTestPki, type TestPkiPaths } from '../helpers/pki.js';
import { tlsAttempt } from '../helpers/tls-probe.js';
import { startUpstream, type TestUpstream } from '../helpers/upstream.js';

const DAY_MS = 24 * 60 * 60 * 1000;
const REJECTED = 'portcullis_tls_rejected_connections_total';
const CRL_GAUGE = 'portcullis_crl_next_update_timestamp_seconds';

let up: TestUpstream;
let echo: Server;
let echoAccepted = 0;
let gw: TestGateway;
/** The second client CA (another name, another key) and its clients. */
let second: CertAndKey;
let carol: CertAndKey;
let dave: CertAndKey;
let erin: CertAndKey;
/** nextUpdate of the second CA's CRL (ms, whole second), distinct from the first CRL's. */
let secondNextUpdate = 0;
let seq = 0;

/** The second CA's CRL, listing `revoked`. */
function secondCrl(revoked: CertAndKey[], crlNumber: number): string {
  const at = new Date(Date.now() - 60_000);
  return createCrl(second, {
    revoked: revoked.map((c) => ({ serialHex: c.serialHex, revokedAt: at })),
    crlNumber,
    nextUpdate: new Date(secondNextUpdate),
  });
}

/** Writes the two-CA bundle and a CRL file `name` (the test PKI's CRL, then `secondPem`); returns their paths. */
function writeTrust(pki: TestPkiPaths, secondPem: string, name: string): { ca: string; crl: string } {
  const ca = join(pki.dir, 'two-cas.pem');
  const crl = join(pki.dir, name);
  writeFileSync(ca, mintTestPki().ca.certPem + second.certPem);
  writeFileSync(crl, mintTestPki().crlPem + secondPem);
  return { ca, crl };
}

function config(pki: TestPkiPaths, trust: { ca: string; crl: string }): Record<string, unknown> {
  const tls = { cert: pki.server.cert, key: pki.server.key, clientCertificate: 'require', clientCa: trust.ca, crl: trust.crl };
  return {
    listeners: [
      { name: 'main', listen: '127.0.0.1:0', tls, routes: [{ id: 'up', match: { pathPrefix: '/' }, upstream: up.url }] },
      {
        name: 'comm',
        listen: '127.0.0.1:0',
        protocol: 'tcp',
        tls,
        upstream: `tcp://127.0.0.1:${(echo.address() as AddressInfo).port}`,
      },
    ],
  };
}

beforeAll(async () => {
  second = createCa({ commonName: 'Portcullis Second Test CA', days: 365 });
  carol = issueClientCert(second, { commonName: 'carol', days: 30 });
  dave = issueClientCert(second, { commonName: 'dave', days: 30 });
  erin = issueClientCert(second, { commonName: 'erin', days: 30 });
  secondNextUpdate = Math.floor((Date.now() + 9 * DAY_MS) / 1000) * 1000;
  up = await startUpstream();
  echo = createNetServer((s) => {
    echoAccepted += 1;
    s.on('error', () => undefined);
    s.pipe(s);
  });
  await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
  // The second CRL revokes dave from the start.
  gw = await startGateway((pki) => config(pki, writeTrust(pki, secondCrl([dave], 1), 'two.crl')));
}, 60_000);

afterAll(async () => {
  await gw?.close();
  await up?.close();
  await new Promise((r) => echo.close(r));
});

const pemOf = (c: CertAndKey): { cert: string; key: string } => ({ cert: c.certPem, key: c.keyPem });
const path = (): string => `/multi-crl/t${++seq}`;
const rejected = (listener: string, reason: string): Promise<number> => gw.metric(REJECTED, { listener, reason });
const ca = (): Buffer => readFileSync(gw.pki.ca);
const clientTls = (c: CertAndKey): ConnectionOptions => ({ ca: ca(), ...pemOf(c), servername: 'localhost' });

/** A TCP-listener connection; `roundTrip` sends a line and resolves with what the echo upstream returned. */
function tcpClient(c: CertAndKey): Promise<{ socket: TLSSocket; roundTrip(line: string): Promise<string> }> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ ...clientTls(c), host: '127.0.0.1', port: gw.port('comm') }, () =>
      resolve({
        socket,
        roundTrip: (line) =>
          new Promise((res, rej) => {
            socket.once('data', (d: Buffer) => res(d.toString()));
            socket.once('close', () => rej(new Error('closed')));
            socket.write(line);
          }),
      }),
    );
    socket.once('error', reject);
    socket.on('error', () => undefined);
  });
}

/** One GET on `agent`'s kept-alive connection: the status and whether the connection was reused. */
function get(agent: Agent, p: string): Promise<{ status: number; reused: boolean }> {
  const port = gw.port('main');
  return new Promise((resolve, reject) => {
    const req = httpsRequest({ host: '127.0.0.1', port, path: p, agent, headers: { host: `localhost:${port}` } }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, reused: req.reusedSocket }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('two client CAs, one CRL each in one file', () => {
  it('a client of the second CA is accepted (HTTP and TCP), as is one of the first', async () => {
    for (const c of [carol, mintTestPki().clients.alice]) {
      const p = path();
      const r = await tlsAttempt(gw.port('main'), { ca: ca(), client: pemOf(c), path: p });
      expect(r.status).toBe(200);
      expect(up.seen.filter((s) => s.url === p)).toHaveLength(1);
      const tcp = await tcpClient(c);
      expect(await tcp.roundTrip('hello')).toBe('hello');
      tcp.socket.destroy();
    }
  });

  it.each([
    ['revoked, of the first CA (first CRL)', () => mintTestPki().clients.revoked],
    ['dave, of the second CA (second CRL)', () => dave],
  ])('%s: refused as revoked on HTTP and TCP; the upstreams see nothing', async (_name, client) => {
    const total = up.seen.length;
    const accepted = echoAccepted;
    for (const listener of ['main', 'comm']) {
      const before = await rejected(listener, 'revoked');
      const r = await tlsAttempt(gw.port(listener), { ca: ca(), client: pemOf(client()), path: path() });
      expect(r.status).toBe(0);
      expect(r.closed).toBe(true);
      await expect.poll(() => rejected(listener, 'revoked')).toBe(before + 1);
    }
    expect(up.seen).toHaveLength(total);
    expect(echoAccepted).toBe(accepted);
  });

  it('one nextUpdate gauge per CRL, labelled by its position in the file', async () => {
    for (const listener of ['main', 'comm']) {
      expect(await gw.metric(CRL_GAUGE, { listener, index: '1' })).toBe(secondNextUpdate / 1000);
      const firstNext = await gw.metric(CRL_GAUGE, { listener, index: '0' });
      expect(firstNext).toBeGreaterThan(Date.now() / 1000 + 20 * 86_400); // the test PKI's CRL: 30 days
      expect(firstNext).not.toBe(secondNextUpdate / 1000);
    }
  });

  it('a reload whose second CRL revokes erin closes her open connections; carol carries on', async () => {
    const erinAgent = new Agent({ ...clientTls(erin), keepAlive: true, maxSockets: 1 });
    const carolAgent = new Agent({ ...clientTls(carol), keepAlive: true, maxSockets: 1 });
    try {
      expect(await get(erinAgent, path())).toMatchObject({ status: 200 });
      expect(await get(carolAgent, path())).toMatchObject({ status: 200 });
      const erinTcp = await tcpClient(erin);
      const carolTcp = await tcpClient(carol);
      expect(await erinTcp.roundTrip('erin-1')).toBe('erin-1');
      expect(await carolTcp.roundTrip('carol-1')).toBe('carol-1');
      const erinH1 = Object.values(erinAgent.freeSockets).flat()[0];
      expect(erinH1).toBeDefined();
      const closed = (s: { once(e: 'close', f: () => void): unknown }): Promise<void> =>
        new Promise((r) => s.once('close', () => r()));
      const gone = Promise.all([closed(erinH1!), closed(erinTcp.socket)]);

      const result = await reloadGateway(gw, (pki) => config(pki, writeTrust(pki, secondCrl([dave, erin], 2), 'two-next.crl')));
      expect(result).toEqual({ ok: true });
      await gone;

      const seen = up.seen.length;
      const p = path();
      expect(await get(carolAgent, p)).toEqual({ status: 200, reused: true });
      expect(await carolTcp.roundTrip('carol-2')).toBe('carol-2');
      expect(up.seen.slice(seen).map((s) => s.url)).toEqual([p]);
      // erin cannot come back, on either listener.
      await expect(get(erinAgent, path())).rejects.toThrow();
      const again = await tlsAttempt(gw.port('comm'), { ca: ca(), client: pemOf(erin), request: 'x' });
      expect(again.response).toBe('');
      expect(up.seen.slice(seen).map((s) => s.url)).toEqual([p]);

      const lines = gw.logs().filter((l) => l.msg === 'connection closed: the new CRL revokes its client certificate');
      expect(lines.map((l) => l.listener).sort()).toEqual(['comm', 'main']);
      for (const l of lines) expect(String(l.clientSubject)).toBe('CN=erin');
      carolTcp.socket.destroy();
    } finally {
      erinAgent.destroy();
      carolAgent.destroy();
    }
  }, 30_000);
});
