/**
 * The admin listener over TLS, end to end: the real gateway (config written as YAML, real loader, real app)
 * with `admin.tls` and `admin.allowClients`, real HTTPS clients with and without client certificates from
 * the per-run test PKI. A refused client never sees a metric, a readiness answer or a purge.
 */
import { readFileSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startGateway, tlsListener, type TestGateway } from '../helpers/gateway.js';
import type { TestClientName, TestPkiPaths } from '../helpers/pki.js';
import { clientPem, rawTcp, tlsAttempt, tlsRecordWithGarbage } from '../helpers/tls-probe.js';

interface AdminReply {
  readonly status: number;
  readonly type: string | undefined;
  readonly body: string;
}

/** One HTTPS request to the admin port, presenting `client`'s certificate (none when undefined). */
function adminRequest(
  port: number,
  pki: TestPkiPaths,
  client: TestClientName | undefined,
  opts: { path: string; method?: string; body?: string },
): Promise<AdminReply> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      {
        host: '127.0.0.1',
        port,
        path: opts.path,
        method: opts.method ?? 'GET',
        ca: readFileSync(pki.ca),
        servername: 'localhost',
        agent: false,
        ...(client
          ? { cert: readFileSync(pki.clients[client].cert), key: readFileSync(pki.clients[client].key) }
          : {}),
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            type: res.headers['content-type'],
            body: Buffer.concat(chunks).toString('utf8'),
          }),
        );
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(opts.body);
  });
}

/** The number of "token cache purged" log lines so far: what a purge that really ran leaves behind. */
function purges(gw: TestGateway): number {
  return gw.logs().filter((l) => l['msg'] === 'token cache purged').length;
}

/** Admin refusals counted under `reason`, and the matching `admin connection refused` log lines. */
async function refusals(gw: TestGateway, reason: string): Promise<{ counted: number; logged: number }> {
  return {
    counted: await gw.metric('portcullis_tls_rejected_connections_total', { listener: 'admin', reason }),
    logged: gw
      .logs()
      .filter(
        (l) => l['msg'] === 'admin connection refused' && l['listener'] === 'admin' && l['reason'] === reason,
      ).length,
  };
}

/** Polls until `reason` was counted and logged `n` more times than `before`. */
async function expectRefused(
  gw: TestGateway,
  reason: string,
  before: { counted: number; logged: number },
  n = 1,
): Promise<void> {
  await expect
    .poll(() => refusals(gw, reason))
    .toEqual({ counted: before.counted + n, logged: before.logged + n });
}

describe('admin over TLS, client certificates required, allowClients: [CN=alice]', () => {
  let gw: TestGateway;
  let port: number;

  beforeAll(async () => {
    gw = await startGateway((pki) => ({
      admin: {
        enabled: true,
        listen: '127.0.0.1:0',
        tls: { cert: pki.server.cert, key: pki.server.key, clientCa: pki.ca, crl: pki.crl },
        allowClients: ['CN=alice'],
      },
      listeners: [tlsListener(pki)],
    }));
    port = gw.app.adminPort() as number;
  });

  afterAll(async () => {
    await gw.close();
  });

  it("serves /metrics to an allowed client certificate, with the admin certificates' expiry gauges", async () => {
    const r = await adminRequest(port, gw.pki, 'alice', { path: '/metrics' });
    expect(r.status).toBe(200);
    expect(r.type).toMatch(/^text\/plain/);
    expect(r.body).toMatch(
      /^portcullis_certificate_expiry_timestamp_seconds\{listener="admin",kind="server",index="0"\} \d+/m,
    );
    expect(r.body).toMatch(/listener="admin",kind="ca",index="0"/);
    expect(r.body).toMatch(/portcullis_crl_next_update_timestamp_seconds\{listener="admin",index="0"\}/);
  });

  it('serves /healthz and /readyz over TLS', async () => {
    const health = await adminRequest(port, gw.pki, 'alice', { path: '/healthz' });
    expect(health.status).toBe(200);
    expect(JSON.parse(health.body)).toEqual({ status: 'ok' });
    const ready = await adminRequest(port, gw.pki, 'alice', { path: '/readyz' });
    expect(ready.status).toBe(200);
    expect(JSON.parse(ready.body)).toEqual({ ready: true, notReady: [] });
  });

  it('runs POST /cache/purge over TLS for an allowed client', async () => {
    const before = purges(gw);
    const r = await adminRequest(port, gw.pki, 'alice', { path: '/cache/purge', method: 'POST' });
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body)).toEqual({ purged: 0 });
    expect(purges(gw)).toBe(before + 1);
  });

  it.each(['/metrics', '/readyz', '/healthz'])(
    'answers 403 {"error":"client not allowed"} to a verified client the ACL does not name (%s)',
    async (path) => {
      const before = await refusals(gw, 'acl');
      const r = await adminRequest(port, gw.pki, 'bob', { path });
      expect(r.status).toBe(403);
      await expectRefused(gw, 'acl', before);
      expect(r.type).toBe('application/json');
      expect(JSON.parse(r.body)).toEqual({ error: 'client not allowed' });
      expect(r.body).not.toContain('portcullis_');
    },
  );

  it('an ACL miss never purges', async () => {
    const before = purges(gw);
    const r = await adminRequest(port, gw.pki, 'bob', { path: '/cache/purge', method: 'POST', body: '' });
    expect(r.status).toBe(403);
    expect(JSON.parse(r.body)).toEqual({ error: 'client not allowed' });
    expect(purges(gw)).toBe(before);
  });

  it('refuses the handshake of a client without a certificate', async () => {
    const before = await refusals(gw, 'no_client_cert');
    const r = await tlsAttempt(port, { ca: readFileSync(gw.pki.ca), path: '/metrics' });
    expect(r.status).toBe(0);
    expect(r.closed).toBe(true);
    expect(r.response).not.toContain('portcullis_');
    await expect(adminRequest(port, gw.pki, undefined, { path: '/metrics' })).rejects.toThrow();
    await expectRefused(gw, 'no_client_cert', before, 2);
  });

  it('refuses a certificate from another CA with the same CA name', async () => {
    const before = await refusals(gw, 'bad_client_cert');
    const r = await tlsAttempt(port, {
      ca: readFileSync(gw.pki.ca),
      client: clientPem(gw.pki, 'otherCaAlice'),
      path: '/metrics',
    });
    expect(r.status).toBe(0);
    expect(r.closed).toBe(true);
    expect(r.response).not.toContain('portcullis_');
    await expectRefused(gw, 'bad_client_cert', before);
  });

  it.each([
    ['revoked', 'revoked'],
    ['expired', 'bad_client_cert'],
  ] as const)('refuses a %s client certificate (counted and logged as %s)', async (client, reason) => {
    const before = await refusals(gw, reason);
    const r = await tlsAttempt(port, {
      ca: readFileSync(gw.pki.ca),
      client: clientPem(gw.pki, client),
      path: '/metrics',
    });
    expect(r.status).toBe(0);
    expect(r.response).not.toContain('portcullis_');
    await expectRefused(gw, reason, before);
  });

  it('refuses TLS 1.1 (Node client, SECLEVEL=0)', async () => {
    const before = await refusals(gw, 'protocol');
    const r = await tlsAttempt(port, {
      ca: readFileSync(gw.pki.ca),
      client: clientPem(gw.pki, 'alice'),
      minVersion: 'TLSv1',
      maxVersion: 'TLSv1.1',
      ciphers: 'DEFAULT@SECLEVEL=0',
      path: '/metrics',
    });
    expect(r.handshake).toBe(false);
    expect(r.status).toBe(0);
    expect(r.errorCode).toMatch(/PROTOCOL_VERSION|UNSUPPORTED_PROTOCOL|ECONNRESET/);
    await expectRefused(gw, 'protocol', before);
  });

  it('plain HTTP bytes on the TLS admin port get no metrics', async () => {
    const before = await refusals(gw, 'protocol');
    const r = await rawTcp(port, ['GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n']);
    expect(r.closed).toBe(true);
    expect(r.text).not.toContain('portcullis_');
    expect(r.text).not.toMatch(/^HTTP\/1\.1 200/);
    await expectRefused(gw, 'protocol', before);
  });

  it('survives a garbage TLS record, then still serves', async () => {
    const garbage = await rawTcp(port, [tlsRecordWithGarbage()]);
    expect(garbage.closed).toBe(true);
    expect(garbage.text).not.toContain('portcullis_');
    const r = await adminRequest(port, gw.pki, 'alice', { path: '/healthz' });
    expect(r.status).toBe(200);
  });
});

describe('admin over TLS, clientCertificate optional with allowClients', () => {
  let gw: TestGateway;
  let port: number;

  beforeAll(async () => {
    gw = await startGateway((pki) => ({
      admin: {
        enabled: true,
        listen: '127.0.0.1:0',
        tls: { cert: pki.server.cert, key: pki.server.key, clientCertificate: 'optional', clientCa: pki.ca },
        allowClients: ['OU=ops'],
      },
      listeners: [tlsListener(pki)],
    }));
    port = gw.app.adminPort() as number;
  });

  afterAll(async () => {
    await gw.close();
  });

  it('an anonymous client completes the handshake and gets 403, never metrics', async () => {
    const before = await refusals(gw, 'acl');
    const r = await adminRequest(port, gw.pki, undefined, { path: '/metrics' });
    expect(r.status).toBe(403);
    expect(JSON.parse(r.body)).toEqual({ error: 'client not allowed' });
    await expectRefused(gw, 'acl', before);
  });

  it('a client the ACL names gets /metrics', async () => {
    const r = await adminRequest(port, gw.pki, 'bob', { path: '/metrics' });
    expect(r.status).toBe(200);
    expect(r.body).toContain('portcullis_');
  });

  it('a certificate that fails verification is refused, not downgraded to anonymous', async () => {
    const before = await refusals(gw, 'bad_client_cert');
    const r = await tlsAttempt(port, {
      ca: readFileSync(gw.pki.ca),
      client: clientPem(gw.pki, 'otherCaAlice'),
      path: '/metrics',
    });
    expect(r.status).toBe(0);
    expect(r.response).not.toContain('client not allowed');
    expect(r.response).not.toContain('portcullis_');
    await expectRefused(gw, 'bad_client_cert', before);
  });
});

describe('admin over TLS without client certificates (loopback)', () => {
  let gw: TestGateway;

  beforeAll(async () => {
    gw = await startGateway((pki) => ({
      admin: {
        enabled: true,
        listen: '127.0.0.1:0',
        tls: { cert: pki.server.cert, key: pki.server.key, clientCertificate: 'none', minVersion: 'TLSv1.3' },
      },
      listeners: [tlsListener(pki)],
    }));
  });

  afterAll(async () => {
    await gw.close();
  });

  it('serves /readyz to a client without a certificate, over TLS 1.3 only', async () => {
    const port = gw.app.adminPort() as number;
    const r = await tlsAttempt(port, { ca: readFileSync(gw.pki.ca), path: '/readyz' });
    expect(r.protocol).toBe('TLSv1.3');
    expect(r.status).toBe(200);
    const old = await tlsAttempt(port, {
      ca: readFileSync(gw.pki.ca),
      maxVersion: 'TLSv1.2',
      path: '/readyz',
    });
    expect(old.handshake).toBe(false);
    expect(old.status).toBe(0);
  });
});
