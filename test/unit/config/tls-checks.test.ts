/**
 * What the loader checks about a listener's TLS material beyond "it parses and is valid now":
 * - a server certificate whose extendedKeyUsage lacks serverAuth is a config error (TLS clients refuse it);
 * - `serverNames` (default: the listen host when it is a DNS name) that the certificate's SANs do not cover
 *   is a warning naming the listener and the names, and `serverNameMismatch` for the metric;
 * - a `tls.crl` file of several CRLs becomes one `crl` element per CRL, every CRL checked, all serials kept.
 * Files come from the per-run test PKI plus certificates and CRLs minted here.
 */
import { mkdtempSync } from 'node:fs';
import { rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCa, createCrl, issueClientCert, issueServerCert, type CertAndKey } from '../../../src/certs/pki.js';
import { loadConfigText } from '../../../src/load-config.js';
import type { ListenerTls, RuntimeConfig } from '../../../src/config/runtime.js';
import { mintTestPki, writePki, type TestPkiPaths } from '../../helpers/pki.js';
import { expectConfigError, refusal } from '../../helpers/config-errors.js';

const dir = mkdtempSync(join(tmpdir(), 'portcullis-tls-checks-'));
const f = {
  wildcard: { cert: join(dir, 'wildcard.pem'), key: join(dir, 'wildcard-key.pem') },
  cnOnly: { cert: join(dir, 'cn-only.pem'), key: join(dir, 'cn-only-key.pem') },
  twoCas: join(dir, 'two-cas.pem'),
  twoCrls: join(dir, 'two.crl'),
  brokenSecond: join(dir, 'broken-second.crl'),
  firstOnly: join(dir, 'first-only.crl'),
};
let pki: TestPkiPaths;
let second: CertAndKey;
let secondRevoked: string;

beforeAll(async () => {
  pki = await writePki(join(dir, 'pki'));
  const test = mintTestPki();
  const wildcard = issueServerCert(test.ca, { hosts: ['*.example.com', '10.1.2.3'], days: 5 });
  // A certificate whose CN names the host but whose SANs do not: clients go by the SANs (RFC 6125 §6.4.4).
  const cnOnly = issueServerCert(test.ca, { commonName: 'gw.example.net', hosts: ['other.example.net'], days: 5 });
  second = createCa({ commonName: 'Second CA', days: 30 });
  secondRevoked = issueClientCert(second, { commonName: 'mallory', days: 5 }).serialHex;
  const secondCrl = createCrl(second, {
    revoked: [{ serialHex: secondRevoked, revokedAt: new Date(Date.now() - 60_000) }],
    crlNumber: 1,
    days: 9,
  });
  const files: [string, string][] = [
    [f.wildcard.cert, wildcard.certPem],
    [f.wildcard.key, wildcard.keyPem],
    [f.cnOnly.cert, cnOnly.certPem],
    [f.cnOnly.key, cnOnly.keyPem],
    [f.twoCas, test.ca.certPem + second.certPem],
    [f.twoCrls, test.crlPem + secondCrl],
    [f.brokenSecond, `${test.crlPem}-----BEGIN X509 CRL-----\nZ2FyYmFnZQ==\n-----END X509 CRL-----\n`],
    [f.firstOnly, test.crlPem],
  ];
  for (const [path, data] of files) await writeFile(path, data, { mode: 0o600 });
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

type Obj = Record<string, unknown>;

function listener(overrides: Obj = {}): Obj {
  const { tls, ...rest } = overrides as { tls?: Obj };
  return {
    name: 'main',
    listen: '127.0.0.1:0',
    tls: { cert: pki.server.cert, key: pki.server.key, clientCertificate: 'require', clientCa: pki.ca, crl: pki.crl, ...tls },
    routes: [{ id: 'echo', match: { pathPrefix: '/' }, upstream: 'builtin:echo' }],
    ...rest,
  };
}

function load(top: Obj, ...listeners: Obj[]): RuntimeConfig {
  const text = stringify({ admin: { enabled: false }, listeners: listeners.length > 0 ? listeners : [listener()], ...top });
  return loadConfigText(text, join(dir, 'portcullis.yaml'));
}

const tlsOf = (c: RuntimeConfig, i = 0): ListenerTls | undefined => c.listeners[i]?.tls;

describe('a server certificate must be one (extendedKeyUsage serverAuth)', () => {
  it('a client certificate as a listener certificate: error at listeners[0].tls.cert naming the file', () => {
    const alice = pki.clients.alice;
    const err = refusal(() => load({}, listener({ tls: { cert: alice.cert, key: alice.key } })));
    expectConfigError(err, 'listeners[0].tls.cert', alice.cert, /a TLS server certificate \(its extendedKeyUsage lacks serverAuth .*it lists 1\.3\.6\.1\.5\.5\.7\.3\.2\): TLS clients would refuse it: .*client-alice\.pem\)/);
  });

  it('the same at admin.tls.cert', () => {
    const alice = pki.clients.alice;
    const err = refusal(() =>
      load({ admin: { enabled: true, listen: '127.0.0.1:0', tls: { cert: alice.cert, key: alice.key, clientCertificate: 'none' } } }),
    );
    expectConfigError(err, 'admin.tls.cert', alice.cert, /extendedKeyUsage lacks serverAuth/);
  });

  it('the test server certificate (EKU serverAuth) loads', () => {
    expect(tlsOf(load({}))).toBeDefined();
  });
});

describe('serverNames: the certificate should cover the names clients use', () => {
  it.each<[string, Obj, readonly string[], boolean]>([
    ['the listen host localhost, covered', { listen: 'localhost:0' }, ['localhost'], false],
    ['an IP listen host: nothing to check', { listen: '127.0.0.1:0' }, [], false],
    ['a wildcard listen address: nothing to check', { listen: '0.0.0.0:0' }, [], false],
    ['an IPv6 wildcard: nothing to check', { listen: '[::]:0' }, [], false],
    ['serverNames covered (one of two is enough)', { serverNames: ['gw.example.org', 'LOCALHOST'] }, ['gw.example.org', 'localhost'], false],
    ['serverNames covered by an IP SAN', { serverNames: ['127.0.0.1'] }, ['127.0.0.1'], false],
    ['serverNames covered by none', { serverNames: ['gw.example.org', '10.9.9.9'] }, ['gw.example.org', '10.9.9.9'], true],
    ['a wildcard SAN covers one label', { serverNames: ['api.example.com'], tls: { cert: f.wildcard.cert, key: f.wildcard.key } }, ['api.example.com'], false],
    ['a wildcard SAN does not cover the bare domain', { serverNames: ['example.com'], tls: { cert: f.wildcard.cert, key: f.wildcard.key } }, ['example.com'], true],
    ['a wildcard SAN does not cover two labels', { serverNames: ['a.b.example.com'], tls: { cert: f.wildcard.cert, key: f.wildcard.key } }, ['a.b.example.com'], true],
    ['the CN is never a name', { serverNames: ['gw.example.net'], tls: { cert: f.cnOnly.cert, key: f.cnOnly.key } }, ['gw.example.net'], true],
  ])('%s', (_name, overrides, names, mismatch) => {
    const c = load({}, listener(overrides));
    expect(tlsOf(c)?.serverNames).toEqual(names);
    expect(tlsOf(c)?.serverNameMismatch).toBe(mismatch);
    const warnings = c.warnings.filter((w) => w.includes('covers none of the names'));
    expect(warnings).toHaveLength(mismatch ? 1 : 0);
  });

  it('the warning names the listener, the names, where they come from and the SANs', () => {
    const c = load({}, listener({ serverNames: ['gw.example.org'] }));
    expect(c.warnings).toEqual([
      'listener "main": the server certificate (listeners[0].tls.cert) covers none of the names clients use, gw.example.org ' +
        '(listeners[0].serverNames); its subjectAltNames: DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1. ' +
        'Clients that check the host name will refuse the handshake',
    ]);
  });

  it('a listen host that is a name the certificate does not cover: the warning says to set serverNames', () => {
    const c = load({}, listener({ listen: 'gw.invalid:0', tls: { cert: f.wildcard.cert, key: f.wildcard.key } }));
    expect(c.warnings.join('\n')).toMatch(/covers none of the names clients use, gw\.invalid \(the listen host; set listeners\[0\]\.serverNames/);
  });

  it('tcp and admin listeners are checked too', () => {
    const c = load(
      {
        admin: {
          enabled: true,
          listen: '127.0.0.1:0',
          serverNames: ['admin.example.org'],
          tls: { cert: pki.server.cert, key: pki.server.key, clientCertificate: 'none' },
        },
      },
      listener(),
      {
        name: 'comm',
        listen: '127.0.0.1:0',
        protocol: 'tcp',
        serverNames: ['dask.example.org'],
        tls: { cert: pki.server.cert, key: pki.server.key, clientCertificate: 'require', clientCa: pki.ca },
        upstream: 'tcp://127.0.0.1:8786',
      },
    );
    expect(tlsOf(c, 1)?.serverNameMismatch).toBe(true);
    expect(c.admin.tls?.serverNameMismatch).toBe(true);
    expect(c.warnings.filter((w) => w.startsWith('listener "comm"') && w.includes('dask.example.org'))).toHaveLength(1);
    expect(c.warnings.filter((w) => w.startsWith('the admin listener') && w.includes('admin.serverNames'))).toHaveLength(1);
  });

  it.each<[string, unknown, string, string | RegExp]>([
    ['a wildcard', ['*.example.com'], 'listeners[0].serverNames[0]', 'a DNS name or an IP address'],
    ['a port', ['gw.example.com:443'], 'listeners[0].serverNames[0]', 'no wildcard, port or scheme'],
    ['a URL', ['localhost', 'https://gw.example.com'], 'listeners[0].serverNames[1]', 'a DNS name or an IP address'],
    ['an empty list', [], 'listeners[0].serverNames', 'at least one name'],
    ['an empty name', [''], 'listeners[0].serverNames[0]', /at least 1|non-empty|>=\s?1/],
  ])('refuses %s', (_name, serverNames, path, expected) => {
    const err = refusal(() => load({}, listener({ serverNames })));
    expectConfigError(err, path, /.*/, expected);
  });

  it('refuses serverNames on a plaintext listener (nothing to check them against)', () => {
    const err = refusal(() =>
      load({ requireEncryption: false }, { ...listener({ serverNames: ['localhost'] }), tls: undefined, plaintext: true }),
    );
    expectConfigError(err, 'listeners[0].serverNames', 'localhost', 'no serverNames without listeners[0].tls');
  });
});

describe('tls.crl holding one CRL per client CA', () => {
  it('each CRL is its own element of the secure-context crl option; all serials kept; one nextUpdate each', () => {
    const c = load({}, listener({ tls: { clientCa: f.twoCas, crl: f.twoCrls } }));
    const tls = tlsOf(c);
    const crl = tls?.options.crl;
    expect(Array.isArray(crl)).toBe(true);
    expect((crl as Buffer[]).map((b) => b.toString('latin1').match(/BEGIN X509 CRL/g)?.length)).toEqual([1, 1]);
    expect(tls?.crls?.map((x) => x.index)).toEqual([0, 1]);
    expect(tls?.crls?.[1]?.nextUpdateMs).toBeLessThan(Date.now() + 10 * 86_400_000);
    expect(tls?.crls?.[0]?.nextUpdateMs).toBeGreaterThan(Date.now() + 20 * 86_400_000);
    expect([...(tls?.revokedSerials ?? [])].sort()).toEqual([mintTestPki().clients.revoked.serialHex, secondRevoked].sort());
  });

  it('a second CRL that does not parse: error at listeners[0].tls.crl naming the file and the CRL (never silently empty)', () => {
    const err = refusal(() => load({}, listener({ tls: { clientCa: f.twoCas, crl: f.brokenSecond } })));
    expectConfigError(err, 'listeners[0].tls.crl', f.brokenSecond, /^a PEM X\.509 CRL \(CRL #2 of 2 in .*broken-second\.crl does not parse\)$/);
  });

  it('a CA of the bundle without a CRL: error naming that CA', () => {
    const err = refusal(() => load({}, listener({ tls: { clientCa: f.twoCas, crl: f.firstOnly } })));
    expectConfigError(err, 'listeners[0].tls.crl', f.firstOnly, /client CA #2 "CN=Second CA" has none in .*first-only\.crl/);
  });

  it('a CRL of a CA outside the bundle: error', () => {
    const err = refusal(() => load({}, listener({ tls: { crl: f.twoCrls } })));
    expectConfigError(err, 'listeners[0].tls.crl', f.twoCrls, /is issued by "CN=Second CA", which is none of them/);
  });
});
