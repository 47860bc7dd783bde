/**
 * `protocol: tcp` listeners in the config: the loader refuses every bad tcp listener with the key path, the
 * value and what was expected (the style of load.test.ts), resolves the good ones into the runtime shape
 * `createTcpListener` takes, and keeps the cross-listener checks (names, addresses) working across both kinds.
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
import { errorAt, expectConfigError, refusal } from '../../helpers/config-errors.js';

type Obj = Record<string, unknown>;

const dir = mkdtempSync(join(tmpdir(), 'portcullis-tcp-config-'));
const pkiDir = join(dir, 'pki');
const f = {
  ca: join(pkiDir, 'ca.pem'),
  crl: join(pkiDir, 'ca.crl'),
  server: { cert: join(pkiDir, 'server.pem'), key: join(pkiDir, 'server-key.pem') },
  alice: { cert: join(pkiDir, 'client-alice.pem'), key: join(pkiDir, 'client-alice-key.pem') },
  bob: { cert: join(pkiDir, 'client-bob.pem'), key: join(pkiDir, 'client-bob-key.pem') },
} as const;

beforeAll(async () => {
  await writePki(pkiDir);
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

function tls(overrides: Obj = {}): Obj {
  return {
    cert: f.server.cert,
    key: f.server.key,
    clientCertificate: 'require',
    clientCa: f.ca,
    crl: f.crl,
    ...overrides,
  };
}

/** A valid tcp listener with overrides (`tls` merges; an `undefined` value drops the key). */
function tcpListener(overrides: Obj = {}): Obj {
  const out = new Map<string, unknown>([
    ['name', 'comm'],
    ['listen', '127.0.0.1:0'],
    ['protocol', 'tcp'],
    ['tls', tls()],
    ['upstream', 'tcp://127.0.0.1:8786'],
  ]);
  for (const [k, v] of Object.entries(overrides)) {
    if (k === 'tls' && v !== undefined) out.set(k, tls(v as Obj));
    else if (v === undefined) out.delete(k);
    else out.set(k, v);
  }
  return Object.fromEntries(out);
}

function httpListener(overrides: Obj = {}): Obj {
  return {
    name: 'web',
    listen: '127.0.0.1:0',
    tls: tls(),
    routes: [{ id: 'echo', match: { pathPrefix: '/' }, upstream: 'builtin:echo' }],
    ...overrides,
  };
}

function config(top: Obj = {}, ...listeners: Obj[]): string {
  return stringify({
    admin: { enabled: false },
    listeners: listeners.length > 0 ? listeners : [tcpListener()],
    ...top,
  });
}

function load(text: string): RuntimeConfig {
  return loadConfigText(text, join(dir, 'portcullis.yaml'));
}

const TCP_KEYS =
  'name, listen, protocol, tls, serverNames, allowClients, maxConnections, maxConnectionsPerClient, upstream, proxyProtocol';

describe('tcp listeners: every bad one is refused with key path, value and expectation', () => {
  // [case, config text, key path, the value as it appears in the message, what was expected]
  const cases: [string, () => string, string, string | RegExp, string | RegExp][] = [
    [
      'unknown key on a tcp listener (lists the tcp keys)',
      () => config({}, tcpListener({ upstreem: 'tcp://127.0.0.1:1' })),
      'listeners[0].upstreem',
      '"tcp://127.0.0.1:1"',
      new RegExp(`did you mean "upstream"\\?.*keys here: ${TCP_KEYS}\\)`),
    ],
    [
      'unknown key in a tcp upstream mapping',
      () => config({}, tcpListener({ upstream: { url: 'tls://10.0.0.5:8786', crt: 'x.pem' } })),
      'listeners[0].upstream.crt',
      '"x.pem"',
      /did you mean "cert"\?.*keys here: url, ca, cert, key, servername\)/,
    ],
    [
      'unknown key in the tls block of a tcp listener',
      () => config({}, tcpListener({ tls: { crt: 'x.pem' } })),
      'listeners[0].tls.crt',
      '"x.pem"',
      /did you mean "cert"/,
    ],
    [
      'routes on a tcp listener',
      () => config({}, tcpListener({ routes: [{ match: { pathPrefix: '/' }, upstream: 'builtin:echo' }] })),
      'listeners[0].routes',
      /got \[/,
      new RegExp(`keys here: ${TCP_KEYS}\\)`),
    ],
    [
      'plaintext on a tcp listener',
      () => config({ requireEncryption: false }, tcpListener({ plaintext: true })),
      'listeners[0].plaintext',
      'got true',
      'unknown keys are refused',
    ],
    [
      'missing tls',
      () => config({}, tcpListener({ tls: undefined })),
      'listeners[0].tls',
      'got nothing',
      'this key is required',
    ],
    [
      'missing upstream',
      () => config({}, tcpListener({ upstream: undefined })),
      'listeners[0].upstream',
      'got nothing',
      'tcp://127.0.0.1:8786',
    ],
    [
      'unknown protocol',
      () => config({}, tcpListener({ protocol: 'udp' })),
      'listeners[0].protocol',
      '"udp"',
      'one of "http", "tcp"',
    ],
    [
      'proxyProtocol other than v2',
      () => config({}, tcpListener({ proxyProtocol: 'v1' })),
      'listeners[0].proxyProtocol',
      '"v1"',
      '"v2"',
    ],
    [
      'http:// upstream on a tcp listener',
      () => config({}, tcpListener({ upstream: 'http://127.0.0.1:8787' })),
      'listeners[0].upstream',
      '"http://127.0.0.1:8787"',
      'a tcp:// or tls:// upstream',
    ],
    [
      'builtin:echo on a tcp listener',
      () => config({}, tcpListener({ upstream: 'builtin:echo' })),
      'listeners[0].upstream',
      '"builtin:echo"',
      'a tcp:// or tls:// upstream',
    ],
    [
      'tcp:// to a non-loopback host under requireEncryption',
      () => config({}, tcpListener({ upstream: 'tcp://10.0.0.5:8786' })),
      'listeners[0].upstream',
      '"tcp://10.0.0.5:8786"',
      'tls:// or a loopback tcp:// upstream (requireEncryption is true',
    ],
    [
      'tcp:// to a *.localhost name under requireEncryption',
      () => config({}, tcpListener({ upstream: { url: 'tcp://scheduler.localhost:8786' } })),
      'listeners[0].upstream.url',
      '"tcp://scheduler.localhost:8786"',
      'loopback tcp://',
    ],
    [
      'tcp upstream without a port',
      () => config({}, tcpListener({ upstream: 'tls://scheduler.example' })),
      'listeners[0].upstream',
      '"tls://scheduler.example"',
      'an explicit port from 1 to 65535',
    ],
    [
      'tcp upstream with a path',
      () => config({}, tcpListener({ upstream: 'tcp://127.0.0.1:8786/x' })),
      'listeners[0].upstream',
      '"tcp://127.0.0.1:8786/x"',
      'host and port only',
    ],
    [
      'TLS options with a tcp:// upstream',
      () => config({}, tcpListener({ upstream: { url: 'tcp://127.0.0.1:8786', ca: f.ca } })),
      'listeners[0].upstream',
      /got \{/,
      'TLS options (ca, cert, key, servername) only with a tls:// url',
    ],
    [
      'tls:// upstream with a cert and no key',
      () => config({}, tcpListener({ upstream: { url: 'tls://127.0.0.1:8700', cert: f.alice.cert } })),
      'listeners[0].upstream.key',
      'got nothing',
      'both listeners[0].upstream.cert and listeners[0].upstream.key, or neither',
    ],
    [
      'tls:// upstream with a key that does not match its cert',
      () =>
        config(
          {},
          tcpListener({ upstream: { url: 'tls://127.0.0.1:8700', cert: f.alice.cert, key: f.bob.key } }),
        ),
      'listeners[0].upstream.key',
      f.bob.key,
      'the private key of the certificate in listeners[0].upstream.cert',
    ],
    [
      'tls:// upstream with an unreadable ca',
      () => config({}, tcpListener({ upstream: { url: 'tls://127.0.0.1:8700', ca: join(dir, 'nope.pem') } })),
      'listeners[0].upstream.ca',
      'nope.pem',
      'a readable file (ENOENT',
    ],
    [
      'clientCertificate optional without allowClients',
      () => config({}, tcpListener({ tls: { clientCertificate: 'optional' } })),
      'listeners[0].tls.clientCertificate',
      '"optional"',
      '"optional" together with listeners[0].allowClients',
    ],
    [
      'clientCertificate none under requireEncryption',
      () =>
        config({}, tcpListener({ tls: { clientCertificate: 'none', clientCa: undefined, crl: undefined } })),
      'listeners[0].tls.clientCertificate',
      '"none"',
      'refused while requireEncryption is true',
    ],
    [
      'clientCertificate none with allowClients',
      () =>
        config(
          { requireEncryption: false },
          tcpListener({
            tls: { clientCertificate: 'none', clientCa: undefined, crl: undefined },
            allowClients: ['CN=alice'],
          }),
        ),
      'listeners[0].allowClients',
      '["CN=alice"]',
      'no client could match',
    ],
    [
      'a listener name used by an http and a tcp listener',
      () => config({}, httpListener({ name: 'same' }), tcpListener({ name: 'same' })),
      'listeners[1].name',
      '"same"',
      'a listener name used only once',
    ],
    [
      'an address used by an http and a tcp listener',
      () =>
        config({}, httpListener({ listen: '127.0.0.1:18786' }), tcpListener({ listen: '127.0.0.1:18786' })),
      'listeners[1].listen',
      '"127.0.0.1:18786"',
      'an address not already used by listeners[0]',
    ],
    [
      'the admin address on a tcp listener',
      () =>
        config(
          { admin: { enabled: true, listen: '127.0.0.1:18787' } },
          tcpListener({ listen: '127.0.0.1:18787' }),
        ),
      'admin.listen',
      '"127.0.0.1:18787"',
      'an address not already used by listeners[0]',
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

  it('an unknown key on an http listener still lists the http keys', () => {
    const err = refusal(() => load(config({}, httpListener({ upstream: 'tcp://127.0.0.1:1' }))));
    expect(errorAt(err, 'listeners[0].upstream').message).toContain(
      'keys here: name, listen, protocol, tls, serverNames, plaintext, allowClients, maxConnections, maxConnectionsPerClient, routes)',
    );
  });
});

describe('tcp listeners: good configs resolve to what createTcpListener takes', () => {
  it('a tcp:// loopback upstream, next to an http listener', () => {
    const cfg = load(
      config({}, httpListener(), tcpListener({ allowClients: ['CN=alice'], proxyProtocol: 'v2' })),
    );
    expect(cfg.listeners.map((l) => l.protocol)).toEqual(['http', 'tcp']);
    const l = cfg.listeners[1];
    if (l?.protocol !== 'tcp') throw new Error('expected a tcp listener');
    expect(l).toMatchObject({
      name: 'comm',
      keyPath: 'listeners[1]',
      address: { host: '127.0.0.1', port: 0 },
      upstream: { kind: 'tcp', host: '127.0.0.1', port: 8786 },
      proxyProtocol: 'v2',
    });
    expect(l.tls.options.requestCert).toBe(true);
    expect(l.acl?.entries.length).toBe(1);
    expect(Object.isFrozen(l)).toBe(true);
  });

  it('a tls:// upstream with ca, client cert and key, servername; proxyProtocol absent', () => {
    const cfg = load(
      config(
        {},
        tcpListener({
          upstream: {
            url: 'tls://[::1]:8700',
            ca: f.ca,
            cert: f.alice.cert,
            key: f.alice.key,
            servername: 'scheduler',
          },
        }),
      ),
    );
    const l = cfg.listeners[0];
    if (l?.protocol !== 'tcp') throw new Error('expected a tcp listener');
    expect(l.proxyProtocol).toBeUndefined();
    expect(l.upstream).toMatchObject({ kind: 'tls', host: '::1', port: 8700, servername: 'scheduler' });
    if (l.upstream.kind !== 'tls') throw new Error('expected tls');
    expect(
      Buffer.isBuffer(l.upstream.ca) && Buffer.isBuffer(l.upstream.cert) && Buffer.isBuffer(l.upstream.key),
    ).toBe(true);
  });

  it('tls:// to any host under requireEncryption, tcp:// to any host without it', () => {
    expect(
      load(config({}, tcpListener({ upstream: 'tls://scheduler.example:8786' }))).listeners,
    ).toHaveLength(1);
    expect(
      load(config({ requireEncryption: false }, tcpListener({ upstream: 'tcp://10.0.0.5:8786' }))).listeners,
    ).toHaveLength(1);
  });

  it('optional with allowClients is accepted; none only without requireEncryption, with a warning', () => {
    expect(
      load(config({}, tcpListener({ tls: { clientCertificate: 'optional' }, allowClients: ['CN=alice'] })))
        .listeners,
    ).toHaveLength(1);
    const cfg = load(
      config(
        { requireEncryption: false },
        tcpListener({ tls: { clientCertificate: 'none', clientCa: undefined, crl: undefined } }),
      ),
    );
    expect(cfg.warnings.join('\n')).toContain('asks for no client certificate');
  });
});
