/**
 * `admin.tls` and `admin.allowClients` in the config: the admin listener's TLS section goes through the same
 * resolver as a listener's (errors named `admin.tls.cert`, `admin.tls.clientCa`, ...), a non-loopback admin
 * under requireEncryption needs that section and client certificates, and the allow-list needs client
 * certificates. Good configs resolve into the runtime shape `startAdminServer` takes.
 */
import { mkdtempSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfigText } from '../../../src/load-config.js';
import type { RuntimeConfig } from '../../../src/config/runtime.js';
import { writePki } from '../../helpers/pki.js';
import { expectConfigError, refusal } from '../../helpers/config-errors.js';

type Obj = Record<string, unknown>;

const dir = mkdtempSync(join(tmpdir(), 'portcullis-admin-config-'));
const pkiDir = join(dir, 'pki');
const f = {
  ca: join(pkiDir, 'ca.pem'),
  crl: join(pkiDir, 'ca.crl'),
  staleCrl: join(pkiDir, 'ca-stale.crl'),
  server: { cert: join(pkiDir, 'server.pem'), key: join(pkiDir, 'server-key.pem') },
  alice: { cert: join(pkiDir, 'client-alice.pem'), key: join(pkiDir, 'client-alice-key.pem') },
  expired: { cert: join(pkiDir, 'client-expired.pem'), key: join(pkiDir, 'client-expired-key.pem') },
} as const;

beforeAll(async () => {
  await writePki(pkiDir);
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A valid admin TLS section (client certificates required), with overrides; `undefined` drops a key. */
function adminTls(overrides: Obj = {}): Obj {
  const out: Obj = { cert: f.server.cert, key: f.server.key, clientCa: f.ca, crl: f.crl };
  for (const [k, v] of Object.entries(overrides)) {
    if (v === undefined) Reflect.deleteProperty(out, k);
    else out[k] = v;
  }
  return out;
}

function listener(overrides: Obj = {}): Obj {
  return {
    name: 'web',
    listen: '127.0.0.1:0',
    tls: { cert: f.server.cert, key: f.server.key, clientCertificate: 'require', clientCa: f.ca },
    routes: [{ id: 'echo', match: { pathPrefix: '/' }, upstream: 'builtin:echo' }],
    ...overrides,
  };
}

/** A config whose admin block is `admin` (enabled unless it says otherwise). */
function config(admin: Obj, top: Obj = {}, ...listeners: Obj[]): string {
  return stringify({
    admin: { enabled: true, ...admin },
    listeners: listeners.length > 0 ? listeners : [listener()],
    ...top,
  });
}

function load(text: string): RuntimeConfig {
  return loadConfigText(text, join(dir, 'portcullis.yaml'));
}

const OFF_LOOPBACK = 'the admin listener is not on loopback and requireEncryption is true';

describe('admin: every bad admin block is refused with key path, value and expectation', () => {
  // [case, config text, key path, the value as it appears in the message, what was expected]
  const cases: [string, () => string, string, string | RegExp, string | RegExp][] = [
    [
      'non-loopback IPv4 without tls under requireEncryption',
      () => config({ listen: '0.0.0.0:9090' }),
      'admin.listen',
      '"0.0.0.0:9090"',
      `a tls section at admin.tls (${OFF_LOOPBACK}`,
    ],
    [
      'non-loopback IPv6 without tls under requireEncryption',
      () => config({ listen: '[::]:9090' }),
      'admin.listen',
      '"[::]:9090"',
      `a tls section at admin.tls (${OFF_LOOPBACK}`,
    ],
    [
      'a *.localhost name without tls (not trusted as loopback)',
      () => config({ listen: 'metrics.localhost:9090' }),
      'admin.listen',
      '"metrics.localhost:9090"',
      'a loopback address, or a tls section',
    ],
    [
      'the error recommends client certificates',
      () => config({ listen: '10.0.0.5:9090' }),
      'admin.listen',
      '"10.0.0.5:9090"',
      /give it client certificates too: clientCertificate "require", and allowClients/,
    ],
    [
      'non-loopback tls with clientCertificate none under requireEncryption',
      () =>
        config({
          listen: '0.0.0.0:9090',
          tls: adminTls({ clientCertificate: 'none', clientCa: undefined, crl: undefined }),
        }),
      'admin.tls.clientCertificate',
      '"none"',
      `"require", or "optional" together with admin.allowClients (${OFF_LOOPBACK}`,
    ],
    [
      'non-loopback tls with clientCertificate optional and no allowClients',
      () => config({ listen: '0.0.0.0:9090', tls: adminTls({ clientCertificate: 'optional' }) }),
      'admin.tls.clientCertificate',
      '"optional"',
      'purges the token cache',
    ],
    [
      'allowClients without tls',
      () => config({ allowClients: ['CN=alice'] }),
      'admin.allowClients',
      '["CN=alice"]',
      'no allowClients without admin.tls',
    ],
    [
      'allowClients with clientCertificate none',
      () =>
        config({
          tls: adminTls({ clientCertificate: 'none', clientCa: undefined, crl: undefined }),
          allowClients: ['CN=alice'],
        }),
      'admin.allowClients',
      '["CN=alice"]',
      'no allowClients when admin.tls.clientCertificate is "none" (no client could match)',
    ],
    [
      'a malformed allowClients entry',
      () => config({ tls: adminTls(), allowClients: ['CN=alice', 'XX=bob'] }),
      'admin.allowClients[1]',
      '"XX=bob"',
      /CN=/,
    ],
    [
      'missing cert file',
      () => config({ tls: adminTls({ cert: join(pkiDir, 'nope.pem') }) }),
      'admin.tls.cert',
      /nope\.pem/,
      /a readable file \(ENOENT/,
    ],
    [
      'missing key file',
      () => config({ tls: adminTls({ key: join(pkiDir, 'nope-key.pem') }) }),
      'admin.tls.key',
      /nope-key\.pem/,
      /a readable file \(ENOENT/,
    ],
    [
      "a key that is not the certificate's",
      () => config({ tls: adminTls({ key: f.alice.key }) }),
      'admin.tls.key',
      /client-alice-key\.pem/,
      'the private key of the certificate in admin.tls.cert',
    ],
    [
      'an expired certificate',
      () => config({ tls: adminTls({ cert: f.expired.cert, key: f.expired.key }) }),
      'admin.tls.cert',
      /client-expired\.pem/,
      'a certificate valid now (it expired',
    ],
    [
      'clientCertificate require without clientCa',
      () => config({ tls: adminTls({ clientCa: undefined, crl: undefined }) }),
      'admin.tls.clientCa',
      'nothing',
      'a CA bundle file (clientCertificate is "require"',
    ],
    [
      'a clientCa that is not a CA',
      () => config({ tls: adminTls({ clientCa: f.server.cert, crl: undefined }) }),
      'admin.tls.clientCa',
      /server\.pem/,
      'CA certificates only',
    ],
    [
      'a CRL with clientCertificate none',
      () => config({ tls: adminTls({ clientCertificate: 'none', clientCa: undefined }) }),
      'admin.tls.crl',
      /ca\.crl/,
      'no crl when admin.tls.clientCertificate is "none"',
    ],
    [
      'a CRL past its nextUpdate',
      () => config({ tls: adminTls({ crl: f.staleCrl }) }),
      'admin.tls.crl',
      /ca-stale\.crl/,
      'a current CRL',
    ],
    [
      'TLS 1.1 as minVersion',
      () => config({ tls: adminTls({ minVersion: 'TLSv1.1' }) }),
      'admin.tls.minVersion',
      '"TLSv1.1"',
      'RFC 8996',
    ],
    [
      'an unknown key in admin.tls',
      () => config({ tls: adminTls({ crt: 'x.pem' }) }),
      'admin.tls.crt',
      '"x.pem"',
      /did you mean "cert"\?/,
    ],
    [
      'an unknown key in admin (lists the admin keys)',
      () => config({ allowClient: ['CN=alice'] }),
      'admin.allowClient',
      '["CN=alice"]',
      /did you mean "allowClients"\?.*keys here: listen, enabled, tls, serverNames, allowClients\)/,
    ],
    [
      'a data listener named "admin" while admin.tls is set (metric label clash)',
      () => config({ tls: adminTls() }, {}, listener({ name: 'admin' })),
      'listeners[0].name',
      '"admin"',
      'a name other than "admin" while admin.tls is set',
    ],
    [
      'a disabled admin block is still checked',
      () => config({ enabled: false, tls: adminTls({ cert: join(pkiDir, 'gone.pem') }) }),
      'admin.tls.cert',
      /gone\.pem/,
      /ENOENT/,
    ],
  ];

  it.each(cases)('%s', (_name, text, path, value, expected) => {
    expectConfigError(
      refusal(() => load(text())),
      path,
      value,
      expected,
    );
  });
});

describe('admin: what loads', () => {
  it('loopback without tls: plaintext, no ACL, no warning', () => {
    const cfg = load(config({ listen: '127.0.0.1:9090' }));
    expect(cfg.admin).toMatchObject({
      enabled: true,
      keyPath: 'admin',
      address: { host: '127.0.0.1', port: 9090 },
    });
    expect(cfg.admin.tls).toBeUndefined();
    expect(cfg.admin.acl).toBeUndefined();
    expect(cfg.warnings).toEqual([]);
  });

  it('the default admin block is loopback plaintext', () => {
    const cfg = load(stringify({ listeners: [listener()] }));
    expect(cfg.admin.address).toEqual({ host: '127.0.0.1', port: 9090 });
    expect(cfg.admin.tls).toBeUndefined();
  });

  it('non-loopback with tls: client certificates required by default, TLS 1.2 floor, certificates labelled', () => {
    const cfg = load(
      config({ listen: '0.0.0.0:9443', tls: adminTls(), allowClients: ['CN=alice', 'OU=ops'] }),
    );
    const t = cfg.admin.tls;
    expect(t?.clientCertificate).toBe('require');
    expect(t?.options).toMatchObject({ requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.2' });
    expect(t?.options.ca).toBeDefined();
    expect(t?.options.crl).toBeDefined();
    expect(t?.certificates.map((c) => [c.kind, c.keyPath])).toEqual([
      ['server', 'admin.tls.cert'],
      ['ca', 'admin.tls.clientCa'],
    ]);
    expect(t?.crls?.[0]?.nextUpdateMs).toBeGreaterThan(Date.now());
    expect(cfg.admin.acl?.entries).toEqual(['CN=alice', 'OU=ops']);
    expect(cfg.warnings).toEqual([]);
  });

  it('non-loopback with tls, optional certificates and allowClients', () => {
    const cfg = load(
      config({
        listen: '0.0.0.0:9443',
        tls: adminTls({ clientCertificate: 'optional' }),
        allowClients: ['CN=alice'],
      }),
    );
    expect(cfg.admin.tls?.options).toMatchObject({ requestCert: true, rejectUnauthorized: false });
  });

  it('loopback with tls and clientCertificate none: encrypted, anonymous, allowed', () => {
    const cfg = load(
      config({
        tls: adminTls({
          clientCertificate: 'none',
          clientCa: undefined,
          crl: undefined,
          minVersion: 'TLSv1.3',
        }),
      }),
    );
    expect(cfg.admin.tls?.options).toMatchObject({
      requestCert: false,
      rejectUnauthorized: false,
      minVersion: 'TLSv1.3',
    });
    expect(cfg.admin.tls?.options.ca).toBeUndefined();
  });

  it('requireEncryption false: non-loopback plaintext admin loads, with a loud warning', () => {
    const cfg = load(config({ listen: '0.0.0.0:9090' }, { requireEncryption: false }));
    expect(cfg.admin.tls).toBeUndefined();
    expect(cfg.warnings).toEqual([
      expect.stringMatching(/admin listener serves PLAINTEXT on 0\.0\.0\.0:9090 \(not loopback/),
    ]);
  });

  it('requireEncryption false: non-loopback anonymous TLS admin loads, with a warning', () => {
    const cfg = load(
      config(
        {
          listen: '0.0.0.0:9443',
          tls: adminTls({ clientCertificate: 'none', clientCa: undefined, crl: undefined }),
        },
        { requireEncryption: false },
      ),
    );
    expect(cfg.admin.tls?.clientCertificate).toBe('none');
    expect(cfg.warnings).toEqual([expect.stringMatching(/asks for no client certificate/)]);
  });

  it('a disabled non-loopback admin without tls loads (it never listens)', () => {
    const cfg = load(config({ enabled: false, listen: '0.0.0.0:9090' }));
    expect(cfg.admin.enabled).toBe(false);
  });

  it('an empty allowClients loads with a warning: it denies every client', () => {
    const cfg = load(config({ tls: adminTls(), allowClients: [] }));
    expect(cfg.admin.acl?.entries).toEqual([]);
    expect(cfg.warnings).toEqual(['admin.allowClients is empty: the admin listener denies every client']);
  });
});
