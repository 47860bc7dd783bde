/**
 * `protocol: decision` listeners in the config (issue 16): the loader refuses every bad one with the key path,
 * the value and what was expected, and resolves a good one into the runtime shape the decision handler takes.
 */
import { mkdtempSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfigText } from '../../../src/load-config.js';
import type { DecisionRuntimeListener, RuntimeConfig } from '../../../src/config/runtime.js';
import { certSerialHex } from '../../../src/certs/pki.js';
import { readFileSync } from 'node:fs';
import { writePki } from '../../helpers/pki.js';
import { expectConfigError, refusal } from '../../helpers/config-errors.js';

type Obj = Record<string, unknown>;

const dir = mkdtempSync(join(tmpdir(), 'portcullis-decision-config-'));
const pkiDir = join(dir, 'pki');
const ca = join(pkiDir, 'ca.pem');
const crl = join(pkiDir, 'ca.crl');

beforeAll(async () => {
  await writePki(pkiDir);
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A valid decision listener with overrides (an `undefined` value drops the key). */
function decisionListener(overrides: Obj = {}): Obj {
  const out: Obj = {
    name: 'decide',
    listen: '127.0.0.1:4180',
    protocol: 'decision',
    from: 'nginx',
    routes: [{ id: 'api', match: { pathPrefix: '/api' } }],
    ...overrides,
  };
  return Object.fromEntries(Object.entries(out).filter(([, v]) => v !== undefined));
}

function load(...listeners: Obj[]): RuntimeConfig {
  return loadConfigText(stringify({ admin: { enabled: false }, listeners }), join(dir, 'portcullis.yaml'));
}

describe('decision listeners: every bad one is refused with key path, value and expectation', () => {
  const cases: [string, Obj, string, string | RegExp, string | RegExp][] = [
    ['a non-loopback address', { listen: '0.0.0.0:4180' }, 'listeners[0].listen', '"0.0.0.0:4180"', 'a loopback address'],
    ['a relative Unix socket path', { listen: 'unix:run/decide.sock' }, 'listeners[0].listen', '"unix:run/decide.sock"', 'unix:/absolute/path.sock'],
    ['a Unix socket on an http listener is not a thing', { protocol: 'http', from: undefined, listen: 'unix:/run/x.sock', routes: [{ match: { pathPrefix: '/' }, upstream: 'builtin:echo' }], plaintext: true }, 'listeners[0].listen', '"unix:/run/x.sock"', 'host:port'],
    ['an unknown proxy', { from: 'haproxy' }, 'listeners[0].from', '"haproxy"', '"nginx", "ingress-nginx", "caddy" or "traefik"'],
    ['no from', { from: undefined }, 'listeners[0].from', 'nothing', '"nginx", "ingress-nginx", "caddy" or "traefik"'],
    ['an upstream on a route', { routes: [{ match: { pathPrefix: '/' }, upstream: 'http://127.0.0.1:1' }] }, 'listeners[0].routes[0].upstream', '"http://127.0.0.1:1"', /unknown key|keys here/],
    ['a certificate header without clientCa', { clientCertificateHeader: 'X-SSL-Client-Cert' }, 'listeners[0].clientCa', 'nothing', 'a CA bundle file'],
    ['clientCa without a certificate header', { clientCa: ca }, 'listeners[0].clientCa', ca, 'no clientCa without listeners[0].clientCertificateHeader'],
    ['allowClients without a certificate header', { allowClients: ['CN=alice'] }, 'listeners[0].allowClients', 'CN=alice', 'no allowClients when listeners[0].clientCertificateHeader is not set'],
    ['a route allowClients without a certificate header', { routes: [{ match: { pathPrefix: '/' }, allowClients: ['CN=a'] }] }, 'listeners[0].routes[0].allowClients', 'CN=a', 'no allowClients when'],
    ['a header name with an underscore', { clientCertificateHeader: 'X_SSL_Cert', clientCa: ca }, 'listeners[0].clientCertificateHeader', '"X_SSL_Cert"', 'a header name of letters, digits and -'],
    ['a CRL that is not one', { clientCertificateHeader: 'X-Cert', clientCa: ca, crl: ca }, 'listeners[0].crl', ca, /CRL/],
    ['an unknown protocol', { protocol: 'decide' }, 'listeners[0].protocol', '"decide"', 'one of "http", "tcp", "decision"'],
  ];
  it.each(cases)('%s', (_name, overrides, path, value, expected) => {
    expectConfigError(refusal(() => load(decisionListener(overrides))), path, value, expected);
  });
});

describe('a good decision listener', () => {
  it('resolves: loopback, plaintext with no warning, routes without upstream, the certificate trust', () => {
    const c = load(
      decisionListener({ clientCertificateHeader: 'X-SSL-Client-Cert', clientCa: ca, crl, allowClients: ['CN=alice'] }),
    );
    const l = c.listeners[0] as DecisionRuntimeListener;
    expect(l.protocol).toBe('decision');
    expect(l.from).toBe('nginx');
    expect(l.tls).toBeUndefined();
    expect(l.forwardedCertificate?.header).toBe('x-ssl-client-cert');
    expect(l.forwardedCertificate?.revokedSerials).toContain(certSerialHex(readFileSync(join(pkiDir, 'client-revoked.pem'), 'utf8')));
    expect(l.routes.lookup('any.test', '/api/x')?.upstream).toEqual({ kind: 'gateway', endpoint: 'decision' });
    expect(l.routes.lookup('any.test', '/other')).toBeUndefined();
    expect(c.warnings.join('\n')).not.toMatch(/PLAINTEXT/);
  });

  it('accepts the other loopback addresses, [::1] and localhost, and a Unix socket', () => {
    for (const listen of ['[::1]:4180', 'localhost:4180']) expect(load(decisionListener({ listen })).listeners).toHaveLength(1);
    expect(load(decisionListener({ listen: 'unix:/run/portcullis/decide.sock' })).listeners[0]?.address).toEqual({
      host: 'unix:/run/portcullis/decide.sock',
      port: 0,
    });
  });

  it('two listeners on one Unix socket are refused', () => {
    const listen = 'unix:/run/portcullis/decide.sock';
    expectConfigError(
      refusal(() => load(decisionListener({ listen }), decisionListener({ name: 'other', listen, routes: [{ id: 'b', match: { pathPrefix: '/' } }] }))),
      'listeners[1].listen',
      listen,
      'an address not already used by listeners[0]',
    );
  });
});
