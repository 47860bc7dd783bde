/**
 * Client certificates end to end (threat model #13–#15, #17–#22, #25): the real gateway on loopback,
 * a PKI minted per run, real TLS clients presenting real certificates, and a recording upstream — every
 * denial asserts that the upstream saw nothing and that the refusal was counted with its reason.
 */
import { X509Certificate } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCrl, type CertAndKey } from '../../src/certs/pki.js';
import { h2, h2session } from '../helpers/clients.js';
import { startGateway, type TestGateway } from '../helpers/gateway.js';
import { mintTestPki, type TestClientName, type TestPkiPaths } from '../helpers/pki.js';
import { clientPem, mintClientCertificate, tlsAttempt, type TlsAttempt, type TlsAttemptOptions } from '../helpers/tls-probe.js';
import { startUpstream, type SeenRequest, type TestUpstream } from '../helpers/upstream.js';

const REJECTED = 'portcullis_tls_rejected_connections_total';
const DENIALS = 'portcullis_http_denials_total';

let up: TestUpstream;
let gw: TestGateway;
let seq = 0;
/** When the `stale` listener's CRL passes its nextUpdate (epoch ms, whole second). */
let staleAt = 0;

/**
 * Writes a CRL (listing nothing) whose nextUpdate is a few seconds away. The loader refuses a CRL that is
 * already stale at start; this one passes the load and goes stale while the gateway runs, which is the
 * outage the runtime must survive by refusing everyone (fail closed), not by letting everyone in.
 */
function writeSoonStaleCrl(pki: TestPkiPaths): string {
  const now = Date.now();
  staleAt = Math.ceil((now + 4_000) / 1000) * 1000;
  const file = join(pki.dir, 'ca-soon-stale.crl');
  writeFileSync(file, createCrl(mintTestPki().ca, { revoked: [], crlNumber: 9, thisUpdate: new Date(now - 60_000), nextUpdate: new Date(staleAt) }));
  return file;
}

/** A path no other request uses, so "the upstream saw nothing" is exact. */
function uniquePath(prefix = '/'): string {
  seq += 1;
  return `${prefix}${prefix.endsWith('/') ? '' : '/'}t${seq}`;
}

function seenAt(path: string): SeenRequest[] {
  return up.seen.filter((s) => s.url === path);
}

function rejected(listener: string, reason: string): Promise<number> {
  return gw.metric(REJECTED, { listener, reason });
}

/** One HTTP/1.1 request over a fresh TLS connection to `listener`, presenting `client` (a test-PKI name,
 * a PEM pair, or nobody). */
function attempt(listener: string, client: TestClientName | CertAndKey | undefined, opts: Partial<TlsAttemptOptions> = {}): Promise<TlsAttempt> {
  const pem =
    client === undefined ? undefined : typeof client === 'string' ? clientPem(gw.pki, client) : { cert: client.certPem, key: client.keyPem };
  return tlsAttempt(gw.port(listener), { ca: readFileSync(gw.pki.ca), client: pem, timeoutMs: 4_000, ...opts });
}

/** Expects the connection to have been refused at the TLS layer: no HTTP answer, closed by the server. */
function expectRefused(r: TlsAttempt): void {
  expect(r.status).toBe(0);
  expect(r.response).not.toMatch(/HTTP\/1/);
  expect(r.closed).toBe(true);
}

function fingerprintOf(pki: TestPkiPaths, name: TestClientName): string {
  return new X509Certificate(readFileSync(pki.clients[name].cert)).fingerprint256;
}

function listener(pki: TestPkiPaths, name: string, tls: Record<string, unknown>, rest: Record<string, unknown>): Record<string, unknown> {
  return {
    name,
    listen: '127.0.0.1:0',
    tls: { cert: pki.server.cert, key: pki.server.key, ...tls },
    ...rest,
  };
}

beforeAll(async () => {
  up = await startUpstream();
  gw = await startGateway((pki) => {
    const requireTls = { clientCertificate: 'require', clientCa: pki.ca, crl: pki.crl };
    const to = (id: string, pathPrefix = '/', allowClients?: string[]): Record<string, unknown> => ({
      id,
      match: { pathPrefix },
      upstream: up.url,
      ...(allowClients ? { allowClients } : {}),
    });
    return {
      timeouts: { tlsHandshakeMs: 2_000, requestHeadersMs: 2_000, keepAliveMs: 1_000 },
      listeners: [
        listener(pki, 'req', requireTls, { routes: [to('req')] }),
        listener(pki, 'stale', { ...requireTls, crl: writeSoonStaleCrl(pki) }, { routes: [to('stale')] }),
        listener(pki, 'lacl', requireTls, { allowClients: ['CN=alice'], routes: [to('lacl')] }),
        listener(pki, 'lempty', requireTls, { allowClients: [], routes: [to('lempty')] }),
        listener(pki, 'racl', requireTls, {
          routes: [
            to('racl-cn', '/cn', ['CN=alice']),
            to('racl-uri', '/uri', ['URI=spiffe://portcullis.test/client/*']),
            to('racl-ou', '/ou', ['OU=ops']),
            to('racl-sha', '/sha', [`SHA256=${fingerprintOf(pki, 'alice')}`]),
            to('racl-empty', '/empty', []),
            to('racl-admin', '/admin', ['URI=spiffe://portcullis.test/client/admin']),
            to('racl-evil', '/evil', ['CN=evil']),
            to('racl-open', '/'),
          ],
        }),
        listener(pki, 'opt', { clientCertificate: 'optional', clientCa: pki.ca, crl: pki.crl }, {
          routes: [to('opt-acl', '/acl', ['CN=alice']), to('opt-open', '/')],
        }),
        listener(pki, 'none', { clientCertificate: 'none' }, { routes: [to('none')] }),
      ],
    };
  });
});

afterAll(async () => {
  await gw?.close();
  await up?.close();
});

describe('clientCertificate: require (threat model #13–#15, #17)', () => {
  it('lets alice through, with her identity in X-Forwarded-Client-Cert', async () => {
    const path = uniquePath();
    const r = await attempt('req', 'alice', { path });
    expect(r.handshake).toBe(true);
    expect(r.status).toBe(200);
    const seen = seenAt(path);
    expect(seen).toHaveLength(1);
    expect(seen[0]!.headers['x-forwarded-client-cert']).toMatch(/^Hash=[0-9a-f]{64};Subject="OU=data-science,CN=alice";URI=spiffe:\/\/portcullis\.test\/client\/alice$/);
  });

  it.each([
    { version: 'TLSv1.3', alert: /CERTIFICATE_REQUIRED/ },
    { version: 'TLSv1.2', alert: /HANDSHAKE_FAILURE|ECONNRESET/ },
  ] as const)('refuses a $version client without a certificate (reason no_client_cert)', async ({ version, alert }) => {
    const before = await rejected('req', 'no_client_cert');
    const total = up.seen.length;
    const path = uniquePath();
    const r = await attempt('req', undefined, { path, minVersion: version, maxVersion: version });
    expectRefused(r);
    expect(r.errorCode).toMatch(alert);
    if (version === 'TLSv1.2') expect(r.handshake).toBe(false);
    await expect.poll(() => rejected('req', 'no_client_cert')).toBe(before + 1);
    expect(seenAt(path)).toHaveLength(0);
    expect(up.seen).toHaveLength(total);
  });

  it.each([
    { client: 'otherCaAlice', reason: 'bad_client_cert', why: 'same subject and CA name, another CA key (threat model #14)' },
    { client: 'expired', reason: 'bad_client_cert', why: 'notAfter in the past (threat model #15)' },
    { client: 'notYetValid', reason: 'bad_client_cert', why: 'notBefore in the future' },
    { client: 'revoked', reason: 'revoked', why: 'listed in the CRL (threat model #17)' },
  ] as const)('refuses $client: $why — reason $reason', async ({ client, reason }) => {
    for (const version of ['TLSv1.3', 'TLSv1.2'] as const) {
      const before = await rejected('req', reason);
      const total = up.seen.length;
      const path = uniquePath();
      const r = await attempt('req', client, { path, minVersion: version, maxVersion: version });
      expectRefused(r);
      await expect.poll(() => rejected('req', reason)).toBe(before + 1);
      expect(seenAt(path)).toHaveLength(0);
      expect(up.seen).toHaveLength(total);
    }
  });

  it('stays up: alice still passes after the refusals', async () => {
    const r = await attempt('req', 'alice', { path: uniquePath() });
    expect(r.status).toBe(200);
  });
});

describe('allowClients (threat model #18, #19)', () => {
  it('listener ACL CN=alice: alice passes', async () => {
    const path = uniquePath();
    const r = await attempt('lacl', 'alice', { path });
    expect(r.status).toBe(200);
    expect(seenAt(path)).toHaveLength(1);
  });

  it('listener ACL CN=alice: bob gets 403 ERR_IDENTITY_LISTENER_ACL, a one-line body, a logged reason', async () => {
    const before = await gw.metric(DENIALS, { listener: 'lacl', reason: 'ERR_IDENTITY_LISTENER_ACL' });
    const total = up.seen.length;
    const path = uniquePath();
    const r = await attempt('lacl', 'bob', { path });
    expect(r.status).toBe(403);
    const body = r.response.split('\r\n\r\n')[1] ?? '';
    expect(body).toBe('Forbidden: this client is not allowed here.\n');
    expect(body).not.toMatch(/at .+\(.*:\d+:\d+\)|Error:/);
    expect(await gw.metric(DENIALS, { listener: 'lacl', reason: 'ERR_IDENTITY_LISTENER_ACL' })).toBe(before + 1);
    await expect
      .poll(() => gw.logs().some((l) => l.listener === 'lacl' && l.status === 403 && l.reason === 'ERR_IDENTITY_LISTENER_ACL'))
      .toBe(true);
    expect(seenAt(path)).toHaveLength(0);
    expect(up.seen).toHaveLength(total);
  });

  it('listener ACL []: denies everyone, alice included', async () => {
    const total = up.seen.length;
    for (const client of ['alice', 'bob'] as const) {
      const r = await attempt('lempty', client, { path: uniquePath() });
      expect(r.status).toBe(403);
      expect(r.response).toContain('Forbidden: this client is not allowed here.');
    }
    expect(up.seen).toHaveLength(total);
  });

  it.each([
    { path: '/cn', client: 'alice', acl: 'CN=alice' },
    { path: '/uri', client: 'alice', acl: 'URI=spiffe://portcullis.test/client/*' },
    { path: '/uri', client: 'bob', acl: 'URI=spiffe://portcullis.test/client/*' },
    { path: '/ou', client: 'bob', acl: 'OU=ops' },
    { path: '/sha', client: 'alice', acl: 'SHA256=<alice>' },
    { path: '/anything', client: 'bob', acl: '(none on the route)' },
  ] as const)('route ACL $acl allows $client on $path', async ({ path, client }) => {
    const p = uniquePath(path);
    const r = await attempt('racl', client, { path: p });
    expect(r.status).toBe(200);
    expect(seenAt(p)).toHaveLength(1);
  });

  it.each([
    { path: '/cn', client: 'bob', acl: 'CN=alice' },
    { path: '/ou', client: 'alice', acl: 'OU=ops' },
    { path: '/sha', client: 'bob', acl: 'SHA256=<alice>' },
    { path: '/empty', client: 'alice', acl: '[]' },
    { path: '/empty', client: 'bob', acl: '[]' },
    { path: '/admin', client: 'alice', acl: 'URI=spiffe://portcullis.test/client/admin' },
  ] as const)('route ACL $acl denies $client on $path with 403 ERR_AUTHZ_ROUTE_ACL', async ({ path, client }) => {
    const before = await gw.metric(DENIALS, { listener: 'racl', reason: 'ERR_AUTHZ_ROUTE_ACL' });
    const total = up.seen.length;
    const p = uniquePath(path);
    const r = await attempt('racl', client, { path: p });
    expect(r.status).toBe(403);
    expect(r.response).toContain('Forbidden: this client is not allowed on this route.');
    expect(await gw.metric(DENIALS, { listener: 'racl', reason: 'ERR_AUTHZ_ROUTE_ACL' })).toBe(before + 1);
    expect(seenAt(p)).toHaveLength(0);
    expect(up.seen).toHaveLength(total);
  });
});

describe('allowClients over HTTP/2: every stream of a connection is checked', () => {
  it('alice on one h2 connection: /cn (CN=alice) 200, /ou (OU=ops) 403, /empty ([]) 403', async () => {
    const total = up.seen.length;
    const s = h2session(gw.port('racl'), gw.pki, 'alice');
    try {
      const ok = await h2(s, { ':path': '/cn/h2' });
      expect(ok.status).toBe(200);
      for (const path of ['/ou/h2', '/empty/h2']) {
        const r = await h2(s, { ':path': path });
        expect(r.status).toBe(403);
        expect(r.body).toBe('Forbidden: this client is not allowed on this route.\n');
      }
    } finally {
      s.close();
    }
    expect(up.seen.map((x) => x.url).slice(total)).toEqual(['/cn/h2']);
  });

  it('bob over h2 on the CN=alice listener: 403 ERR_IDENTITY_LISTENER_ACL', async () => {
    const total = up.seen.length;
    const s = h2session(gw.port('lacl'), gw.pki, 'bob');
    try {
      const r = await h2(s, { ':path': '/h2-bob' });
      expect(r.status).toBe(403);
      expect(r.body).toBe('Forbidden: this client is not allowed here.\n');
    } finally {
      s.close();
    }
    expect(up.seen).toHaveLength(total);
  });
});

describe('clientCertificate: optional and none (threat model #25)', () => {
  it('no certificate reaches a route without allowClients, with no XFCC upstream', async () => {
    const path = uniquePath();
    const r = await attempt('opt', undefined, { path, headerLines: ['X-Forwarded-Client-Cert: Hash=spoof;Subject="CN=admin"'] });
    expect(r.status).toBe(200);
    const seen = seenAt(path);
    expect(seen).toHaveLength(1);
    expect(seen[0]!.headers['x-forwarded-client-cert']).toBeUndefined();
  });

  it('no certificate on a route with allowClients: 403 ERR_IDENTITY_NO_CLIENT_CERT', async () => {
    const before = await gw.metric(DENIALS, { listener: 'opt', reason: 'ERR_IDENTITY_NO_CLIENT_CERT' });
    const total = up.seen.length;
    const path = uniquePath('/acl');
    const r = await attempt('opt', undefined, { path });
    expect(r.status).toBe(403);
    expect(r.response).toContain('Forbidden: a client certificate is required.');
    expect(await gw.metric(DENIALS, { listener: 'opt', reason: 'ERR_IDENTITY_NO_CLIENT_CERT' })).toBe(before + 1);
    expect(up.seen).toHaveLength(total);
  });

  it('alice with her certificate passes the route ACL on the optional listener', async () => {
    const path = uniquePath('/acl');
    const r = await attempt('opt', 'alice', { path });
    expect(r.status).toBe(200);
    expect(seenAt(path)[0]!.headers['x-forwarded-client-cert']).toContain('CN=alice');
  });

  it.each([
    { client: 'otherCaAlice', reason: 'bad_client_cert', route: '/' },
    { client: 'otherCaAlice', reason: 'bad_client_cert', route: '/acl' },
    { client: 'expired', reason: 'bad_client_cert', route: '/' },
    { client: 'notYetValid', reason: 'bad_client_cert', route: '/' },
    { client: 'revoked', reason: 'revoked', route: '/' },
  ] as const)('a presented but invalid certificate ($client) closes the connection, never anonymous (route $route)', async ({ client, reason, route }) => {
    const before = await rejected('opt', reason);
    const total = up.seen.length;
    const path = uniquePath(route);
    const r = await attempt('opt', client, { path });
    expectRefused(r);
    await expect.poll(() => rejected('opt', reason)).toBe(before + 1);
    expect(up.seen).toHaveLength(total);
  });

  it('an invalid certificate over HTTP/2 (ALPN h2) is refused too and the gateway stays up', async () => {
    const before = await rejected('opt', 'bad_client_cert');
    const total = up.seen.length;
    const r = await attempt('opt', 'expired', { ALPNProtocols: ['h2'], request: 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n' });
    expect(r.response).toBe('');
    expect(r.closed).toBe(true);
    await expect.poll(() => rejected('opt', 'bad_client_cert')).toBe(before + 1);
    expect(up.seen).toHaveLength(total);
    expect((await attempt('opt', 'alice', { path: uniquePath() })).status).toBe(200);
  });

  it('clientCertificate: none needs no certificate and sends no XFCC (a client copy is stripped)', async () => {
    const path = uniquePath();
    const r = await attempt('none', undefined, { path, headerLines: ['X-Forwarded-Client-Cert: Hash=spoof;Subject="CN=admin"'] });
    expect(r.status).toBe(200);
    const seen = seenAt(path);
    expect(seen).toHaveLength(1);
    expect(seen[0]!.rawHeaders.filter((_, i) => i % 2 === 0).map((n) => n.toLowerCase())).not.toContain('x-forwarded-client-cert');
  });

  it('clientCertificate: none ignores a certificate the client offers anyway (it is never requested)', async () => {
    const path = uniquePath();
    const r = await attempt('none', 'alice', { path });
    expect(r.status).toBe(200);
    expect(seenAt(path)[0]!.headers['x-forwarded-client-cert']).toBeUndefined();
  });
});

describe('hostile certificate fields (threat model #20–#22)', () => {
  const ADMIN = 'spiffe://portcullis.test/client/admin';
  let commaSan: CertAndKey;
  let rdnInjection: CertAndKey;
  let ouInjection: CertAndKey;
  let newline: CertAndKey;

  beforeAll(() => {
    const ca = mintTestPki().ca;
    commaSan = mintClientCertificate(ca, { subject: [{ shortName: 'CN', value: 'mallory' }], uris: [`spiffe://evil.example/x, URI:${ADMIN}`] });
    rdnInjection = mintClientCertificate(ca, { subject: [{ shortName: 'CN', value: 'evil, O=admin' }] });
    ouInjection = mintClientCertificate(ca, { subject: [{ shortName: 'CN', value: 'evil, OU=ops' }] });
    newline = mintClientCertificate(ca, { subject: [{ shortName: 'CN', value: 'line1\nX-Injected: yes' }] });
  });

  /** Names of the header lines the upstream received, lower case. */
  const names = (s: SeenRequest): string[] => s.rawHeaders.filter((_, i) => i % 2 === 0).map((n) => n.toLowerCase());
  const xfccOf = (s: SeenRequest): string[] => s.rawHeaders.filter((_, i) => i % 2 === 1 && s.rawHeaders[i - 1]!.toLowerCase() === 'x-forwarded-client-cert');

  it.each([
    { name: 'URI SAN with ", URI:" inside (threat model #20)', cert: () => commaSan, xfcc: /;URI="spiffe:\/\/evil\.example\/x, URI:spiffe:\/\/portcullis\.test\/client\/admin"$/ },
    { name: 'CN "evil, O=admin" (threat model #21)', cert: () => rdnInjection, xfcc: /;Subject="CN=evil\\\\, O=admin"$/ },
    { name: 'CN with a newline (threat model #22)', cert: () => newline, xfcc: /;Subject="CN=line1\\\\0AX-Injected: yes"$/ },
  ])('$name: forwarded with one single-line XFCC, no injected header, no crash', async ({ cert, xfcc }) => {
    const path = uniquePath();
    const r = await attempt('req', cert(), { path });
    expect(r.status).toBe(200);
    const seen = seenAt(path);
    expect(seen).toHaveLength(1);
    const s = seen[0]!;
    expect(names(s)).not.toContain('x-injected');
    const values = xfccOf(s);
    expect(values).toHaveLength(1);
    // eslint-disable-next-line no-control-regex -- control characters are what must not be there
    expect(values[0]).not.toMatch(/[\x00-\x1f\x7f]/);
    expect(values[0]).toMatch(xfcc);
    expect(s.rawHeaders.some((v) => /X-Injected/i.test(v) && !v.startsWith('Hash='))).toBe(false);
  });

  it.each([
    { name: 'comma-SAN certificate vs URI=…/admin', cert: () => commaSan, path: '/admin' },
    { name: 'comma-SAN certificate vs URI=…/client/*', cert: () => commaSan, path: '/uri' },
    { name: 'CN "evil, OU=ops" vs OU=ops', cert: () => ouInjection, path: '/ou' },
    { name: 'CN "evil, O=admin" vs CN=evil', cert: () => rdnInjection, path: '/evil' },
    { name: 'CN with a newline vs CN=evil', cert: () => newline, path: '/evil' },
  ])('$name: 403, the upstream sees nothing', async ({ cert, path }) => {
    const total = up.seen.length;
    const p = uniquePath(path);
    const r = await attempt('racl', cert(), { path: p });
    expect(r.status).toBe(403);
    expect(up.seen).toHaveLength(total);
  });

  it('the gateway is still up and serving after the hostile certificates', async () => {
    expect((await attempt('req', 'alice', { path: uniquePath() })).status).toBe(200);
  });
});

describe('a CRL that goes stale while the gateway runs (threat model #17)', () => {
  it('refuses every client once nextUpdate has passed, alice included: fail closed, reason in the log', async () => {
    const wait = staleAt + 1_100 - Date.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    const total = up.seen.length;
    for (const client of ['alice', 'bob'] as const) {
      const before = await rejected('stale', 'bad_client_cert');
      const r = await attempt('stale', client, { path: uniquePath() });
      expectRefused(r);
      await expect.poll(() => rejected('stale', 'bad_client_cert')).toBe(before + 1);
    }
    expect(up.seen).toHaveLength(total);
    // The verify result is what the operator needs to read to know the CRL must be re-signed.
    await expect.poll(() => gw.logs().some((l) => l.listener === 'stale' && l.detail === 'CRL_HAS_EXPIRED')).toBe(true);
    // The other listeners, with a current CRL, are unaffected.
    expect((await attempt('req', 'alice', { path: uniquePath() })).status).toBe(200);
  });
});
