/**
 * The TCP listener wired into the config and the app (issue 5): the real app, started from a YAML config
 * through the real loader, runs an http and a tcp listener in one process. Bytes pipe through the tcp
 * listener to a TCP echo upstream; an ACL miss never reaches the upstream; the tcp metrics move. And
 * config/examples/dask.yaml passes `portcullis check` with a PKI and JWKS placed where it points.
 */
import { copyFile, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { connect as netConnect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDevSigningKey } from '../../src/authn/jwks-dev.js';
import { runCli } from '../helpers/binary.js';
import { h1, tlsOptions } from '../helpers/clients.js';
import { startGateway, tlsListener, type TestGateway } from '../helpers/gateway.js';
import { writePki, type TestClientName, type TestPkiPaths } from '../helpers/pki.js';

/** A TCP echo server that counts the connections it accepted. */
interface EchoUpstream {
  readonly port: number;
  accepted(): number;
  close(): Promise<void>;
}

async function startEcho(): Promise<EchoUpstream> {
  let accepted = 0;
  const sockets = new Set<Socket>();
  const server: Server = createServer({ allowHalfOpen: true }, (socket) => {
    accepted++;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => socket.destroy());
    socket.pipe(socket);
  });
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
  return {
    port: (server.address() as AddressInfo).port,
    accepted: () => accepted,
    close: () =>
      new Promise<void>((done) => {
        for (const s of sockets) s.destroy();
        server.close(() => done());
      }),
  };
}

/**
 * Connects with `client`'s certificate, writes `data`, half-closes and collects everything until the
 * gateway closes. `secure` says whether the TLS handshake completed.
 */
function pipeThrough(
  port: number,
  pki: TestPkiPaths,
  client: TestClientName,
  data: Buffer,
): Promise<{ secure: boolean; received: Buffer }> {
  return new Promise((done) => {
    const chunks: Buffer[] = [];
    let secure = false;
    let finished = false;
    const finish = (): void => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      socket.destroy();
      done({ secure, received: Buffer.concat(chunks) });
    };
    const socket = tlsConnect({ ...tlsOptions(pki, client), host: '127.0.0.1', port });
    const timer = setTimeout(finish, 5_000);
    socket.on('secureConnect', () => {
      secure = true;
      socket.end(data);
    });
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('end', finish);
    socket.on('close', finish);
    socket.on('error', finish);
  });
}

describe('an http and a tcp listener in one app, from one YAML config', () => {
  let echo: EchoUpstream;
  let gw: TestGateway;

  beforeAll(async () => {
    echo = await startEcho();
    gw = await startGateway((pki) => ({
      listeners: [
        tlsListener(pki, { name: 'web' }),
        {
          name: 'comm',
          listen: '127.0.0.1:0',
          protocol: 'tcp',
          tls: {
            cert: pki.server.cert,
            key: pki.server.key,
            clientCertificate: 'require',
            clientCa: pki.ca,
            crl: pki.crl,
          },
          allowClients: ['CN=alice'],
          upstream: `tcp://127.0.0.1:${echo.port}`,
        },
      ],
    }));
  });

  afterAll(async () => {
    await gw?.close();
    await echo?.close();
  });

  it('both listeners are bound; the http one still answers', async () => {
    expect(gw.port('web')).toBeGreaterThan(0);
    expect(gw.port('comm')).toBeGreaterThan(0);
    expect(gw.port('comm')).not.toBe(gw.port('web'));
    const reply = await h1(gw.port('web'), gw.pki, { path: '/hello' });
    expect(reply.status).toBe(200);
  });

  it('alice pipes bytes through the tcp listener to the echo upstream; the tcp metrics move', async () => {
    const before = await gw.metric('portcullis_tcp_bytes_total', { listener: 'comm' });
    const payload = Buffer.from('dask comm frame '.repeat(1_000));
    const r = await pipeThrough(gw.port('comm'), gw.pki, 'alice', payload);
    expect(r.secure).toBe(true);
    expect(r.received.equals(payload)).toBe(true);
    expect(echo.accepted()).toBe(1);
    await expect
      .poll(() => gw.metric('portcullis_tcp_connections_total', { listener: 'comm', reason: 'closed' }))
      .toBe(1);
    expect(await gw.metric('portcullis_tcp_bytes_total', { listener: 'comm', direction: 'in' })).toBe(
      payload.length,
    );
    expect(await gw.metric('portcullis_tcp_bytes_total', { listener: 'comm', direction: 'out' })).toBe(
      payload.length,
    );
    expect((await gw.metric('portcullis_tcp_bytes_total', { listener: 'comm' })) - before).toBe(2 * payload.length);
    const line = gw.logs().find((l) => l['msg'] === 'tcp connection' && l['listener'] === 'comm');
    expect(line).toMatchObject({ reason: 'closed', bytesIn: payload.length, bytesOut: payload.length });
    expect(String(line?.['clientSubject'])).toContain('CN=alice');
  });

  it('bob is refused by allowClients before the upstream accepts anything', async () => {
    const accepted = echo.accepted();
    const r = await pipeThrough(gw.port('comm'), gw.pki, 'bob', Buffer.from('never delivered'));
    expect(r.received.length).toBe(0);
    await expect
      .poll(() => gw.metric('portcullis_tls_rejected_connections_total', { listener: 'comm', reason: 'acl' }))
      .toBe(1);
    expect(echo.accepted()).toBe(accepted);
  });

  it('plaintext on the tcp listener is closed without an HTTP 400', async () => {
    const answer = await new Promise<string>((done) => {
      const chunks: Buffer[] = [];
      const socket = netConnect(gw.port('comm'), '127.0.0.1');
      socket.on('connect', () => socket.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
      socket.on('data', (c: Buffer) => chunks.push(c));
      socket.on('close', () => done(Buffer.concat(chunks).toString('latin1')));
      socket.on('error', () => undefined);
    });
    expect(answer).toBe('');
    await expect
      .poll(() => gw.metric('portcullis_tls_rejected_connections_total', { listener: 'comm', reason: 'plaintext' }))
      .toBe(1);
  });
});

describe('config/examples/dask.yaml', () => {
  let dir: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'portcullis-dask-example-'));
  });

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('passes `portcullis check` with a PKI and a JWKS where it points', async () => {
    const certs = join(dir, 'certs');
    await mkdir(certs, { recursive: true });
    const pki = await writePki(certs);
    // The cluster CA and the gateway's own client certificate (any CA and client pair will do for a check).
    await copyFile(pki.ca, join(certs, 'cluster-ca.pem'));
    await copyFile(pki.clients.alice.cert, join(certs, 'gateway-client.pem'));
    await copyFile(pki.clients.alice.key, join(certs, 'gateway-client-key.pem'));
    await writeFile(join(certs, 'jwks.json'), JSON.stringify((await createDevSigningKey()).publicJwks));
    const file = join(dir, 'dask.yaml');
    await copyFile(resolve('config/examples/dask.yaml'), file);
    const r = await runCli(['check', '--config', file]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`config OK: ${file} (2 listener(s), 1 route(s))`);
  });
});
