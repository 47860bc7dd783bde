/**
 * A reload whose CRL revokes a client closes that client's open connections (app.ts `closeNewlyRevoked`):
 * an HTTP/1.1 keep-alive connection, an HTTP/2 session and a piped TCP-listener connection, while another
 * client's open connections carry on. A TLS session is verified only at its handshake: without this, a
 * revoked client would keep what it had open for as long as it liked.
 */
import { type ConnectionOptions } from 'node:tls';
import { connect as h2connect, type ClientHttp2Session } from 'node:http2';
import { Agent, request as httpsRequest } from 'node:https';
import { createServer as createNetServer, type AddressInfo, type Server } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { join } from 'node:path';
import { writeFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { createCrl, issueClientCert } from '../../src/certs/pki.js';
import { tlsOptions } from '../helpers/clients.js';
import { reloadGateway, startGateway, tlsListener, type TestGateway } from '../helpers/gateway.js';
import { mintTestPki, type TestPkiPaths } from '../helpers/pki.js';
import { startUpstream, type TestUpstream } from '../helpers/upstream.js';

type Obj = Record<string, unknown>;

let up: TestUpstream;
let echo: Server;
let gw: TestGateway;

beforeAll(async () => {
  up = await startUpstream();
  echo = createNetServer((s) => {
    s.on('error', () => undefined);
    s.pipe(s);
  });
  await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
});
afterAll(async () => {
  await gw?.close();
  await up.close();
  await new Promise((r) => echo.close(r));
});

function config(pki: TestPkiPaths, crl: string): Obj {
  const tls = { crl };
  return {
    listeners: [
      tlsListener(pki, { tls, routes: [{ id: 'up', match: { pathPrefix: '/' }, upstream: up.url }] }),
      {
        name: 'comm',
        listen: '127.0.0.1:0',
        protocol: 'tcp',
        tls: {
          cert: pki.server.cert,
          key: pki.server.key,
          clientCertificate: 'require',
          clientCa: pki.ca,
          crl,
        },
        upstream: `tcp://127.0.0.1:${(echo.address() as AddressInfo).port}`,
      },
    ],
  };
}

/** One GET on `agent`'s kept-alive connection: the status and whether the connection was reused. */
function get(port: number, agent: Agent, path: string): Promise<{ status: number; reused: boolean }> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      { host: '127.0.0.1', port, path, agent, headers: { host: `localhost:${port}` } },
      (res) => {
        res.resume();
        res.on('end', () => resolve({ status: res.statusCode ?? 0, reused: req.reusedSocket }));
      },
    );
    req.on('error', reject);
    req.end();
  });
}

function h2get(session: ClientHttp2Session, path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = session.request({ ':path': path });
    s.on('response', (h) => {
      s.resume();
      s.on('end', () => resolve(Number(h[':status'])));
    });
    s.on('error', reject);
    s.end();
  });
}

/** A TCP-listener connection; `roundTrip` sends a line and resolves with what the echo upstream returned. */
function tcpClient(
  port: number,
  tls: ConnectionOptions,
): Promise<{ socket: TLSSocket; roundTrip(line: string): Promise<string> }> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ ...tls, host: '127.0.0.1', port }, () =>
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
    // After the connect, a reset (the gateway closing a revoked client) is expected, not an error.
    socket.on('error', () => undefined);
  });
}

const closed = (emitter: { once(e: 'close', f: () => void): unknown }): Promise<void> =>
  new Promise((r) => emitter.once('close', () => r()));

describe('a reload whose CRL revokes a client closes its open connections', () => {
  it('HTTP/1.1 keep-alive, HTTP/2, WebSocket and TCP connections of carol close; alice carries on; logged per connection', async () => {
    const test = mintTestPki();
    const carol = issueClientCert(test.ca, { commonName: 'carol', organizationalUnit: 'ops', days: 30 });
    gw = await startGateway((pki) => config(pki, pki.crl));
    const web = gw.port('main');
    const comm = gw.port('comm');
    const carolTls: ConnectionOptions = {
      ...tlsOptions(gw.pki, undefined),
      cert: carol.certPem,
      key: carol.keyPem,
    };
    const aliceTls = tlsOptions(gw.pki, 'alice');

    const carolAgent = new Agent({ ...carolTls, keepAlive: true, maxSockets: 1 });
    const aliceAgent = new Agent({ ...aliceTls, keepAlive: true, maxSockets: 1 });
    const carolH2 = h2connect(`https://localhost:${web}`, { ...carolTls, host: '127.0.0.1', port: web });
    carolH2.on('error', () => undefined);
    try {
      expect(await get(web, carolAgent, '/carol-h1')).toMatchObject({ status: 200 });
      expect(await get(web, aliceAgent, '/alice-h1')).toMatchObject({ status: 200 });
      expect(await h2get(carolH2, '/carol-h2')).toBe(200);
      const carolTcp = await tcpClient(comm, carolTls);
      const aliceTcp = await tcpClient(comm, aliceTls);
      expect(await carolTcp.roundTrip('carol-1')).toBe('carol-1');
      expect(await aliceTcp.roundTrip('alice-1')).toBe('alice-1');
      const carolH1Socket = [...Object.values(carolAgent.freeSockets).flat()][0];
      expect(carolH1Socket).toBeDefined();
      // A WebSocket tunnel of carol's, open and echoing through the gateway.
      const carolWs = new WebSocket(`wss://127.0.0.1:${web}/ws`, {
        ...carolTls,
        headers: { host: `localhost:${web}` },
        handshakeTimeout: 5_000,
      });
      carolWs.on('error', () => undefined);
      await new Promise<void>((resolve, reject) => {
        carolWs.once('open', () => resolve());
        carolWs.once('close', () => reject(new Error('the tunnel did not open')));
      });
      const echoed = new Promise<string>((r) => carolWs.once('message', (d: Buffer) => r(d.toString())));
      carolWs.send('carol-ws');
      expect(await echoed).toBe('carol-ws');

      // The new CRL lists carol (and the test PKI's revoked client, as before).
      const crl = join(gw.dir, 'carol-revoked.crl');
      const now = new Date();
      await writeFile(
        crl,
        createCrl(test.ca, {
          revoked: [
            { serialHex: test.clients.revoked.serialHex, revokedAt: new Date(now.getTime() - 60_000) },
            { serialHex: carol.serialHex, revokedAt: new Date(now.getTime() - 60_000) },
          ],
          crlNumber: 9,
          thisUpdate: now,
          days: 30,
        }),
      );
      const gone = Promise.all([
        closed(carolH1Socket!),
        closed(carolH2),
        closed(carolTcp.socket),
        closed(carolWs),
      ]);
      expect(await reloadGateway(gw, (pki) => config(pki, crl))).toEqual({ ok: true });
      await gone;

      const seen = up.seen.length;
      // alice's open connections carry on (reused), and so does her piped one.
      expect(await get(web, aliceAgent, '/alice-after')).toEqual({ status: 200, reused: true });
      expect(await aliceTcp.roundTrip('alice-2')).toBe('alice-2');
      expect(up.seen.slice(seen).map((s) => s.url)).toEqual(['/alice-after']);
      // carol cannot come back either.
      await expect(get(web, carolAgent, '/carol-again')).rejects.toThrow();
      expect(up.seen.some((s) => s.url === '/carol-again')).toBe(false);

      const lines = gw
        .logs()
        .filter((l) => l.msg === 'connection closed: the new CRL revokes its client certificate');
      expect(lines.map((l) => l.listener).sort()).toEqual(['comm', 'main', 'main', 'main']);
      for (const l of lines) {
        expect(String(l.clientSubject)).toContain('CN=carol');
        expect(l.level).toBe('warn');
      }
      const summary = gw.logs().filter((l) => l.msg === 'new CRL applied to open connections');
      expect(summary.map((l) => [l.listener, l.newlyRevoked, l.closed])).toEqual([
        ['main', 1, 3],
        ['comm', 1, 1],
      ]);

      // A later reload with the same CRL closes nothing more.
      expect(await reloadGateway(gw, (pki) => config(pki, crl))).toEqual({ ok: true });
      expect(gw.logs().filter((l) => l.msg === 'new CRL applied to open connections')).toHaveLength(2);
      expect(await aliceTcp.roundTrip('alice-3')).toBe('alice-3');
      aliceTcp.socket.destroy();
    } finally {
      carolAgent.destroy();
      aliceAgent.destroy();
      carolH2.destroy();
    }
  }, 30_000);
});
