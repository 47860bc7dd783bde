/**
 * The config loader refuses every bad config before anything listens, and says where and why: each
 * error names the key path, the value found and what was expected (`<path>: got <value>; expected <what>`).
 * Files come from the per-run test PKI written into a temp folder, plus a few broken ones made here.
 */
import { createHash, createPrivateKey } from 'node:crypto';
import { mkdtempSync, readFileSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { issueServerCert } from '../../../src/certs/pki.js';
import { DEFAULTS } from '../../../src/config/defaults.js';
import { isLoopbackHost } from '../../../src/policy/loopback.js';
import { loadConfigFile, loadConfigText } from '../../../src/load-config.js';
import type { HttpRuntimeListener, RuntimeConfig } from '../../../src/config/runtime.js';
import { mintTestPki, writePki } from '../../helpers/pki.js';
import { errorAt, expectConfigError, refusal } from '../../helpers/config-errors.js';

const DAY_MS = 24 * 60 * 60 * 1000;

/** Made at collection time so the `it.each` table can name the paths; filled in `beforeAll`. */
const dir = mkdtempSync(join(tmpdir(), 'portcullis-config-'));
const pkiDir = join(dir, 'pki');
const clientPaths = (name: string): { cert: string; key: string } => ({
  cert: join(pkiDir, `client-${name}.pem`),
  key: join(pkiDir, `client-${name}-key.pem`),
});
const f = {
  dir,
  pki: {
    ca: join(pkiDir, 'ca.pem'),
    crl: join(pkiDir, 'ca.crl'),
    staleCrl: join(pkiDir, 'ca-stale.crl'),
    server: { cert: join(pkiDir, 'server.pem'), key: join(pkiDir, 'server-key.pem') },
    clients: { alice: clientPaths('alice'), bob: clientPaths('bob') },
  },
  garbage: join(dir, 'garbage.pem'),
  empty: join(dir, 'empty.pem'),
  encryptedKey: join(dir, 'encrypted-key.pem'),
  expiredCert: join(dir, 'expired.pem'),
  expiredKey: join(dir, 'expired-key.pem'),
  futureCert: join(dir, 'future.pem'),
  futureKey: join(dir, 'future-key.pem'),
  caPlusLeaf: join(dir, 'ca-plus-leaf.pem'),
  garbageCrl: join(dir, 'garbage.crl'),
} as const;

beforeAll(async () => {
  const written = await writePki(pkiDir);
  expect(written).toMatchObject(f.pki);
  const test = mintTestPki();
  const past = new Date(Date.now() - 10 * DAY_MS);
  const expired = issueServerCert(test.ca, { hosts: ['localhost'], days: 1, now: past });
  const future = issueServerCert(test.ca, {
    hosts: ['localhost'],
    days: 10,
    now: new Date(Date.now() + 2 * DAY_MS),
  });
  const encrypted = createPrivateKey(test.server.keyPem).export({
    format: 'pem',
    type: 'pkcs8',
    cipher: 'aes-256-cbc',
    passphrase: 'not-given-to-the-gateway',
  }) as string;
  const files: [string, string][] = [
    [f.garbage, 'garbage\n'],
    [f.empty, ''],
    [f.encryptedKey, encrypted],
    [f.expiredCert, expired.certPem],
    [f.expiredKey, expired.keyPem],
    [f.futureCert, future.certPem],
    [f.futureKey, future.keyPem],
    [f.caPlusLeaf, test.ca.certPem + test.clients.alice.certPem],
    [f.garbageCrl, '-----BEGIN X509 CRL-----\nZ2FyYmFnZQ==\n-----END X509 CRL-----\n'],
  ];
  for (const [path, data] of files) await writeFile(path, data, { mode: 0o600 });
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

type Obj = Record<string, unknown>;

/** A TLS block from the test PKI: client certificate required, CA and CRL set. */
function tls(overrides: Obj = {}): Obj {
  return {
    cert: f.pki.server.cert,
    key: f.pki.server.key,
    clientCertificate: 'require',
    clientCa: f.pki.ca,
    crl: f.pki.crl,
    ...overrides,
  };
}

/** A valid listener with overrides (`tls` overrides merge into the default TLS block; `tls: undefined` drops it). */
function listener(overrides: Obj = {}): Obj {
  const out = new Map<string, unknown>([
    ['name', 'main'],
    ['listen', '127.0.0.1:0'],
    ['tls', tls()],
    ['routes', [{ id: 'echo', match: { pathPrefix: '/' }, upstream: 'builtin:echo' }]],
  ]);
  for (const [k, v] of Object.entries(overrides)) {
    if (k === 'tls' && v !== undefined) out.set(k, tls(v as Obj));
    else if (v === undefined) out.delete(k);
    else out.set(k, v);
  }
  return Object.fromEntries(out);
}

/** A valid config (admin off) with top-level overrides. */
function config(top: Obj = {}, ...listeners: Obj[]): string {
  return stringify({
    admin: { enabled: false },
    listeners: listeners.length > 0 ? listeners : [listener()],
    ...top,
  });
}

/** One route with `upstream`. */
function upstreamRoute(upstream: unknown): Obj {
  return { routes: [{ id: 'up', match: { pathPrefix: '/' }, upstream }] };
}

function load(text: string): RuntimeConfig {
  return loadConfigText(text, join(dir, 'portcullis.yaml'));
}

describe('loadConfigText: every bad config is refused with key path, value and expectation', () => {
  // [case, config text, key path, the value as it appears in the message, what was expected]
  const cases: [string, () => string, string, string | RegExp, string | RegExp][] = [
    // unknown keys: a typo in a security key is an error, never ignored (threat model #118)
    [
      'unknown top-level key',
      () => config({ requre_encryption: true }),
      'requre_encryption',
      'got true',
      /did you mean "requireEncryption"/,
    ],
    [
      'unknown nested key',
      () => config({}, listener({ tls: { crt: f.pki.server.cert } })),
      'listeners[0].tls.crt',
      f.pki.server.cert,
      /did you mean "cert"/,
    ],
    [
      'unknown key in an upstream mapping',
      () => config({}, listener(upstreamRoute({ url: 'https://10.0.0.5', crt: 'x.pem' }))),
      'listeners[0].routes[0].upstream.crt',
      '"x.pem"',
      /did you mean "cert"/,
    ],
    // types and ranges
    [
      'maxConnections of 0 (a listener that refuses everyone)',
      () => config({}, listener({ maxConnections: 0 })),
      'listeners[0].maxConnections',
      'got 0',
      '>= 1',
    ],
    [
      'maxConnections that is not a whole number',
      () => config({}, listener({ maxConnections: 2.5 })),
      'listeners[0].maxConnections',
      'got 2.5',
      'a whole number',
    ],
    [
      'maxConnectionsPerClient of 0',
      () => config({}, listener({ maxConnectionsPerClient: 0 })),
      'listeners[0].maxConnectionsPerClient',
      'got 0',
      '>= 1',
    ],
    [
      'maxConnectionsPerClient as a string',
      () => config({}, listener({ maxConnectionsPerClient: '10' })),
      'listeners[0].maxConnectionsPerClient',
      '"10"',
      'a number',
    ],
    [
      'listen as a number',
      () => config({}, listener({ listen: 8443 })),
      'listeners[0].listen',
      'got 8443',
      'a "host:port" string',
    ],
    [
      'port that is not a number',
      () => config({}, listener({ listen: '127.0.0.1:abc' })),
      'listeners[0].listen',
      '"127.0.0.1:abc"',
      'host:port',
    ],
    [
      'port above 65535',
      () => config({}, listener({ listen: '127.0.0.1:70000' })),
      'listeners[0].listen',
      '"127.0.0.1:70000"',
      'a port from 0 to 65535',
    ],
    [
      'brackets around an IPv4 address',
      () => config({}, listener({ listen: '[1.2.3.4]:80' })),
      'listeners[0].listen',
      '"[1.2.3.4]:80"',
      'IPv6',
    ],
    [
      'number given as a string',
      () => config({ http2: { maxConcurrentStreams: 'abc' } }),
      'http2.maxConcurrentStreams',
      '"abc"',
      'a number',
    ],
    ['negative timeout', () => config({ timeouts: { idleMs: -1 } }), 'timeouts.idleMs', 'got -1', '> 0'],
    [
      'zero timeout',
      () => config({ timeouts: { upstreamResponseMs: 0 } }),
      'timeouts.upstreamResponseMs',
      'got 0',
      '> 0',
    ],
    [
      'timeout with a unit',
      () => config({ timeouts: { tlsHandshakeMs: '5m' } }),
      'timeouts.tlsHandshakeMs',
      '"5m"',
      'milliseconds',
    ],
    [
      'fractional timeout',
      () => config({ timeouts: { keepAliveMs: 1.5 } }),
      'timeouts.keepAliveMs',
      'got 1.5',
      'whole number',
    ],
    [
      'a file check interval with a unit',
      () => config({ reload: { checkFilesSeconds: '60s' } }),
      'reload.checkFilesSeconds',
      '"60s"',
      'seconds',
    ],
    [
      'a negative file check interval',
      () => config({ reload: { checkFilesSeconds: -1 } }),
      'reload.checkFilesSeconds',
      'got -1',
      '0 (off) or more',
    ],
    [
      'a file check interval over a day',
      () => config({ reload: { checkFilesSeconds: 86_401 } }),
      'reload.checkFilesSeconds',
      'got 86401',
      'at most 86400',
    ],
    [
      'request body deadline of zero',
      () => config({ timeouts: { requestBodyMs: 0 } }),
      'timeouts.requestBodyMs',
      'got 0',
      '> 0',
    ],
    [
      'boolean as a string',
      () => config({ requireEncryption: 'yes' }),
      'requireEncryption',
      '"yes"',
      'true or false',
    ],
    [
      'listeners missing',
      () => stringify({ admin: { enabled: false } }),
      'listeners',
      'nothing (the key is missing)',
      'required',
    ],
    ['no listeners', () => config({ listeners: [] }), 'listeners', 'got []', 'at least one listener'],
    [
      'no routes',
      () => config({}, listener({ routes: [] })),
      'listeners[0].routes',
      'got []',
      'at least one route',
    ],
    [
      'unknown clientCertificate mode',
      () => config({}, listener({ tls: { clientCertificate: 'maybe' } })),
      'listeners[0].tls.clientCertificate',
      '"maybe"',
      '"require", "optional", "none"',
    ],
    [
      'upstream of the wrong type',
      () => config({}, listener(upstreamRoute(5))),
      'listeners[0].routes[0].upstream',
      'got 5',
      'an upstream URL',
    ],
    // certificate and key files (threat model #111, #113, #115)
    [
      'missing certificate file',
      () => config({}, listener({ tls: { cert: 'nope.crt' } })),
      'listeners[0].tls.cert',
      '"nope.crt"',
      /ENOENT.*portcullis-config-[^/]+\/nope\.crt/,
    ],
    [
      'missing key file',
      () => config({}, listener({ tls: { key: './nope-key.pem' } })),
      'listeners[0].tls.key',
      '"./nope-key.pem"',
      'ENOENT',
    ],
    [
      'certificate file with garbage',
      () => config({}, listener({ tls: { cert: f.garbage } })),
      'listeners[0].tls.cert',
      f.garbage,
      'at least one certificate',
    ],
    [
      'empty certificate file',
      () => config({}, listener({ tls: { cert: f.empty } })),
      'listeners[0].tls.cert',
      f.empty,
      'at least one certificate',
    ],
    [
      'key that does not match the certificate',
      () => config({}, listener({ tls: { key: f.pki.clients.alice.key } })),
      'listeners[0].tls.key',
      f.pki.clients.alice.key,
      'the private key of the certificate in listeners[0].tls.cert',
    ],
    [
      'certificate file given as the key',
      () => config({}, listener({ tls: { key: f.pki.server.cert } })),
      'listeners[0].tls.key',
      f.pki.server.cert,
      'a PEM private key',
    ],
    [
      'encrypted private key',
      () => config({}, listener({ tls: { key: f.encryptedKey } })),
      'listeners[0].tls.key',
      f.encryptedKey,
      'encrypted',
    ],
    [
      'expired server certificate',
      () => config({}, listener({ tls: { cert: f.expiredCert, key: f.expiredKey } })),
      'listeners[0].tls.cert',
      f.expiredCert,
      /valid now \(it expired/,
    ],
    [
      'server certificate not valid yet',
      () => config({}, listener({ tls: { cert: f.futureCert, key: f.futureKey } })),
      'listeners[0].tls.cert',
      f.futureCert,
      'not valid before',
    ],
    // the client CA (threat model #26, #113, #114)
    [
      'CA file with no certificate',
      () => config({}, listener({ tls: { clientCa: f.garbage } })),
      'listeners[0].tls.clientCa',
      f.garbage,
      'at least one certificate',
    ],
    [
      'empty CA file',
      () => config({}, listener({ tls: { clientCa: f.empty } })),
      'listeners[0].tls.clientCa',
      f.empty,
      'at least one certificate',
    ],
    [
      'private key given as the CA',
      () => config({}, listener({ tls: { clientCa: f.pki.server.key } })),
      'listeners[0].tls.clientCa',
      f.pki.server.key,
      'at least one certificate',
    ],
    [
      'CA bundle holding a non-CA certificate',
      () => config({}, listener({ tls: { clientCa: f.caPlusLeaf } })),
      'listeners[0].tls.clientCa',
      f.caPlusLeaf,
      /CA certificates only .*CN=alice.* is not a CA/,
    ],
    [
      'garbage CRL',
      () => config({}, listener({ tls: { crl: f.garbageCrl } })),
      'listeners[0].tls.crl',
      f.garbageCrl,
      'a PEM X.509 CRL',
    ],
    [
      'CRL past its nextUpdate (OpenSSL would refuse every client)',
      () => config({}, listener({ tls: { crl: f.pki.staleCrl } })),
      'listeners[0].tls.crl',
      f.pki.staleCrl,
      /a current CRL \(its nextUpdate passed at .*refuse every client/,
    ],
    [
      'certificate given as the CRL',
      () => config({}, listener({ tls: { crl: f.pki.ca } })),
      'listeners[0].tls.crl',
      f.pki.ca,
      'a PEM X.509 CRL',
    ],
    [
      'clientCertificate require without clientCa',
      () => config({}, listener({ tls: { clientCa: undefined, crl: undefined } })),
      'listeners[0].tls.clientCa',
      'nothing (the key is missing)',
      'public roots',
    ],
    [
      'clientCertificate default (require) without clientCa',
      () =>
        config({}, listener({ tls: { clientCertificate: undefined, clientCa: undefined, crl: undefined } })),
      'listeners[0].tls.clientCa',
      'nothing (the key is missing)',
      'public roots',
    ],
    [
      'clientCertificate optional without clientCa',
      () =>
        config({}, listener({ tls: { clientCertificate: 'optional', clientCa: undefined, crl: undefined } })),
      'listeners[0].tls.clientCa',
      'nothing (the key is missing)',
      'public roots',
    ],
    [
      'empty clientCa',
      () => config({}, listener({ tls: { clientCa: '' } })),
      'listeners[0].tls.clientCa',
      'got ""',
      'public roots',
    ],
    [
      'clientCa with clientCertificate none',
      () => config({}, listener({ tls: { clientCertificate: 'none', crl: undefined } })),
      'listeners[0].tls.clientCa',
      f.pki.ca,
      'no clientCa when listeners[0].tls.clientCertificate is "none"',
    ],
    // require-encryption (threat model #119)
    [
      'plaintext listener under requireEncryption',
      () => config({}, listener({ tls: undefined })),
      'listeners[0].tls',
      'nothing (the key is missing)',
      'requireEncryption is true',
    ],
    [
      'plaintext: true under requireEncryption',
      () => config({}, listener({ tls: undefined, plaintext: true })),
      'listeners[0].plaintext',
      'got true',
      'requireEncryption is true',
    ],
    [
      'no tls and no plaintext: true without requireEncryption',
      () => config({ requireEncryption: false }, listener({ tls: undefined })),
      'listeners[0].tls',
      'nothing (the key is missing)',
      'listeners[0].plaintext: true',
    ],
    [
      'non-loopback http:// upstream',
      () => config({}, listener(upstreamRoute('http://10.0.0.5:8080'))),
      'listeners[0].routes[0].upstream',
      '"http://10.0.0.5:8080"',
      /https:\/\/.*requireEncryption is true/,
    ],
    [
      'non-loopback http:// upstream in a mapping',
      () => config({}, listener(upstreamRoute({ url: 'http://10.0.0.5:8080' }))),
      'listeners[0].routes[0].upstream.url',
      '"http://10.0.0.5:8080"',
      'requireEncryption is true',
    ],
    [
      '*.localhost http:// upstream (resolved by DNS)',
      () => config({}, listener(upstreamRoute('http://evil.localhost:8080'))),
      'listeners[0].routes[0].upstream',
      '"http://evil.localhost:8080"',
      'requireEncryption is true',
    ],
    [
      '0.0.0.0 http:// upstream',
      () => config({}, listener(upstreamRoute('http://0.0.0.0:8080'))),
      'listeners[0].routes[0].upstream',
      '"http://0.0.0.0:8080"',
      'requireEncryption is true',
    ],
    [
      'minVersion TLSv1',
      () => config({}, listener({ tls: { minVersion: 'TLSv1' } })),
      'listeners[0].tls.minVersion',
      '"TLSv1"',
      /"TLSv1\.2" or "TLSv1\.3".*RFC 8996/,
    ],
    [
      'minVersion TLSv1.1',
      () => config({}, listener({ tls: { minVersion: 'TLSv1.1' } })),
      'listeners[0].tls.minVersion',
      '"TLSv1.1"',
      '"TLSv1.2" or "TLSv1.3"',
    ],
    [
      'plaintext: true together with tls',
      () => config({}, listener({ plaintext: true })),
      'listeners[0].plaintext',
      'got true',
      'either listeners[0].tls or listeners[0].plaintext, not both',
    ],
    [
      'plaintext: false',
      () => config({ requireEncryption: false }, listener({ tls: undefined, plaintext: false })),
      'listeners[0].plaintext',
      'got false',
      'true (or leave the key out',
    ],
    // ACLs, names, ids
    [
      'bad ACL entry',
      () => config({}, listener({ allowClients: ['XX=foo'] })),
      'listeners[0].allowClients[0]',
      '"XX=foo"',
      'CN=...',
    ],
    [
      'bad route ACL entry',
      () =>
        config(
          {},
          listener({
            routes: [{ id: 'r', upstream: 'builtin:echo', match: {}, allowClients: ['CN=a', 'cn=b'] }],
          }),
        ),
      'listeners[0].routes[0].allowClients[1]',
      '"cn=b"',
      'upper-case prefix',
    ],
    [
      'duplicate listener names',
      () =>
        config({}, listener(), listener({ routes: [{ id: 'other', upstream: 'builtin:echo', match: {} }] })),
      'listeners[1].name',
      '"main"',
      'a listener name used only once',
    ],
    [
      'duplicate route ids',
      () =>
        config(
          {},
          listener({
            routes: [
              { id: 'same', upstream: 'builtin:echo', match: { pathPrefix: '/a' } },
              { id: 'same', upstream: 'builtin:echo', match: { pathPrefix: '/b' } },
            ],
          }),
        ),
      'listeners[0].routes[1].id',
      '"same"',
      'a route id used only once',
    ],
    [
      'duplicate route ids across listeners',
      () => config({}, listener(), listener({ name: 'second' })),
      'listeners[1].routes[0].id',
      '"echo"',
      'a route id used only once',
    ],
    [
      'two listeners on one address',
      () =>
        config(
          {},
          listener({ listen: '127.0.0.1:18443' }),
          listener({
            name: 'b',
            listen: '127.0.0.1:18443',
            routes: [{ id: 'b', upstream: 'builtin:echo', match: {} }],
          }),
        ),
      'listeners[1].listen',
      '"127.0.0.1:18443"',
      'not already used by listeners[0]',
    ],
    [
      'admin on a listener address',
      () =>
        config(
          { admin: { enabled: true, listen: '127.0.0.1:18443' } },
          listener({ listen: '127.0.0.1:18443' }),
        ),
      'admin.listen',
      '"127.0.0.1:18443"',
      'not already used by listeners[0]',
    ],
    [
      'admin not on loopback',
      () => config({ admin: { enabled: true, listen: '0.0.0.0:9090' } }),
      'admin.listen',
      '"0.0.0.0:9090"',
      'a loopback address',
    ],
    // upstreams
    [
      'ftp upstream',
      () => config({}, listener(upstreamRoute('ftp://x'))),
      'listeners[0].routes[0].upstream',
      '"ftp://x"',
      'an http:// or https:// upstream',
    ],
    [
      'upstream that is not a URL',
      () => config({}, listener(upstreamRoute('127.0.0.1:8080'))),
      'listeners[0].routes[0].upstream',
      '"127.0.0.1:8080"',
      /an? (upstream URL|http:\/\/ or https:\/\/ upstream)/,
    ],
    [
      'upstream with a path',
      () => config({}, listener(upstreamRoute('http://127.0.0.1:1/path'))),
      'listeners[0].routes[0].upstream',
      '"http://127.0.0.1:1/path"',
      'an origin only',
    ],
    [
      'upstream with credentials',
      () => config({}, listener(upstreamRoute('https://user:pw@10.0.0.5'))),
      'listeners[0].routes[0].upstream',
      '"https://user:pw@10.0.0.5"',
      'an origin only',
    ],
    [
      'https upstream with cert and no key',
      () =>
        config({}, listener(upstreamRoute({ url: 'https://10.0.0.5:8443', cert: f.pki.clients.alice.cert }))),
      'listeners[0].routes[0].upstream.key',
      'nothing (the key is missing)',
      'both listeners[0].routes[0].upstream.cert and listeners[0].routes[0].upstream.key',
    ],
    [
      'https upstream with key and no cert',
      () =>
        config({}, listener(upstreamRoute({ url: 'https://10.0.0.5:8443', key: f.pki.clients.alice.key }))),
      'listeners[0].routes[0].upstream.cert',
      'nothing (the key is missing)',
      'or neither',
    ],
    [
      'https upstream with a mismatched client key',
      () =>
        config(
          {},
          listener(
            upstreamRoute({
              url: 'https://10.0.0.5:8443',
              cert: f.pki.clients.alice.cert,
              key: f.pki.clients.bob.key,
            }),
          ),
        ),
      'listeners[0].routes[0].upstream.key',
      f.pki.clients.bob.key,
      'the private key of the certificate',
    ],
    [
      'TLS options on an http:// upstream',
      () => config({}, listener(upstreamRoute({ url: 'http://127.0.0.1:8080', ca: f.pki.ca }))),
      'listeners[0].routes[0].upstream',
      f.pki.ca,
      'only with an https:// url',
    ],
    [
      'TLS options on builtin:echo',
      () => config({}, listener(upstreamRoute({ url: 'builtin:echo', ca: f.pki.ca }))),
      'listeners[0].routes[0].upstream',
      'builtin:echo',
      'it takes no TLS options',
    ],
    [
      'route host with a port',
      () =>
        config(
          {},
          listener({ routes: [{ id: 'h', upstream: 'builtin:echo', match: { host: 'a.example:443' } }] }),
        ),
      'listeners[0].routes[0].match.host',
      '"a.example:443"',
      'a host name',
    ],
    [
      'path prefix with dot segments',
      () =>
        config(
          {},
          listener({ routes: [{ id: 'p', upstream: 'builtin:echo', match: { pathPrefix: '/a/../b' } }] }),
        ),
      'listeners[0].routes[0].match.pathPrefix',
      '"/a/../b"',
      'a normalized path prefix',
    ],
    // route methods (authz/methods.ts): known uppercase tokens, never CONNECT or TRACE
    ...(
      [
        ['lowercase', ['GET', 'post'], 1, '"post"', 'an uppercase method ("POST"): methods are case-sensitive'],
        ['TRACE', ['TRACE'], 0, '"TRACE"', 'a method other than CONNECT and TRACE (never forwarded)'],
        ['CONNECT', ['GET', 'CONNECT'], 1, '"CONNECT"', 'a method other than CONNECT and TRACE (never forwarded)'],
        ['not a token', ['GET', 'G T'], 1, '"G T"', 'an HTTP method token (RFC 9110 §5.6.2), e.g. "GET"'],
        ['unknown', ['FOO'], 0, '"FOO"', /^one of GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS, ACL/],
        ['listed twice', ['GET', 'POST', 'GET'], 2, '"GET"', 'each method listed once'],
      ] as const
    ).map(([what, methods, i, value, expected]): [string, () => string, string, string, string | RegExp] => [
      `route methods: ${what}`,
      () => config({}, listener({ routes: [{ id: 'm', upstream: 'builtin:echo', match: {}, methods }] })),
      `listeners[0].routes[0].methods[${i}]`,
      value,
      expected,
    ]),
    [
      'route methods: an empty list',
      () => config({}, listener({ routes: [{ id: 'm', upstream: 'builtin:echo', match: {}, methods: [] }] })),
      'listeners[0].routes[0].methods',
      '[]',
      'a non-empty list of methods (leave the key out to allow every method)',
    ],
    [
      'route methods: not a list',
      () => config({}, listener({ routes: [{ id: 'm', upstream: 'builtin:echo', match: {}, methods: 'GET' }] })),
      'listeners[0].routes[0].methods',
      '"GET"',
      /list|array/,
    ],
    // YAML itself (threat model #118)
    ['empty file', () => '', '', 'got null', 'a YAML mapping'],
    ['only a comment', () => '# nothing here\n', '', 'got null', 'a YAML mapping'],
    ['a scalar document', () => 'hello\n', '', '"hello"', 'a mapping (key: value)'],
    [
      'tab-indented YAML',
      () => 'admin:\n\tenabled: false\nlisteners: []\n',
      'admin',
      '"\\tenabled: false"',
      /valid YAML: Tabs .* \(line 2, column 1\)/,
    ],
    [
      'duplicate keys',
      () => `listeners:\n  - name: main\n    listen: 127.0.0.1:0\n    listen: 127.0.0.1:1\n`,
      'listeners[0].listen',
      '"    listen: 127.0.0.1:1"',
      /valid YAML: Map keys must be unique \(line 4, column 5\)/,
    ],
    [
      'duplicate top-level keys',
      () => 'requireEncryption: true\nrequireEncryption: false\n',
      'requireEncryption',
      '"requireEncryption: false"',
      /unique \(line 2, column 1\)/,
    ],
    ['unterminated quote', () => 'listeners: "abc\n', 'listeners', '"listeners: \\"abc"', 'valid YAML'],
  ];

  it.each(cases)('%s', (_name, text, path, value, expected) => {
    const err = refusal(() => load(text()));
    // `<key path>: got <value>; expected <what>`
    const e = expectConfigError(err, path, value, expected);
    // the listing names the file the error is in
    expect(err.message).toContain(join(dir, 'portcullis.yaml'));
    expect(err.message).toContain(e.message);
  });

  it('lists every problem at once, each with the line of its key', () => {
    const text = [
      'admin: { enabled: false }',
      'timeouts:',
      '  idleMs: -1',
      'listeners:',
      '  - name: main',
      '    listen: 8443',
      '    tls: { cert: a.pem, key: b.pem, clientCa: c.pem }',
      '    routes: [{ upstream: "builtin:echo", match: {} }]',
      '',
    ].join('\n');
    const err = refusal(() => load(text));
    expect(err.errors.map((e) => e.path).sort()).toEqual(['listeners[0].listen', 'timeouts.idleMs']);
    expect(err.message).toMatch(/- timeouts\.idleMs: got -1; expected .* \(line 3\)$/m);
    expect(err.message).toMatch(/- listeners\[0\]\.listen: got 8443; expected .* \(line 6\)$/m);
  });

  it('reports every unknown key of one mapping, each on its own path', () => {
    const err = refusal(() => load(config({ requre_encryption: true, telemetri: {} })));
    expect(errorAt(err, 'requre_encryption').value).toBe(true);
    expect(errorAt(err, 'telemetri').value).toEqual({});
  });

  it('never prints the value of an unknown key that looks like a secret', () => {
    const err = refusal(() => load(config({ clientSecret: 'hunter2', apiToken: 'tok-123' })));
    expect(errorAt(err, 'clientSecret').message).toContain('got "[redacted]"');
    expect(errorAt(err, 'apiToken').message).toContain('got "[redacted]"');
    expect(err.message).not.toContain('hunter2');
    expect(err.message).not.toContain('tok-123');
  });

  it('reports both the unknown key and the missing one it was meant to be', () => {
    const l = listener();
    l.tls = { crt: f.pki.server.cert, key: f.pki.server.key, clientCa: f.pki.ca };
    const err = refusal(() => load(config({}, l)));
    expect(errorAt(err, 'listeners[0].tls.crt').message).toContain('did you mean "cert"');
    expect(errorAt(err, 'listeners[0].tls.cert').message).toMatch(
      /got nothing \(the key is missing\); expected a string \(this key is required\)/,
    );
  });

  it('an unreadable config file is a ConfigInvalid naming the file', () => {
    const missing = join(dir, 'no-such.yaml');
    const err = refusal(() => loadConfigFile(missing));
    expect(err.errors[0]?.message).toContain(missing);
    expect(err.errors[0]?.message).toContain('ENOENT');
  });

  it('an encrypted key is refused without asking for a passphrase (no prompt, no hang)', () => {
    const started = Date.now();
    const err = refusal(() => load(config({}, listener({ tls: { key: f.encryptedKey } }))));
    expect(errorAt(err, 'listeners[0].tls.key').message).toContain(
      'it is encrypted; give an unencrypted key',
    );
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  it('uses the injected clock for certificate validity', () => {
    const text = config();
    const file = join(dir, 'portcullis.yaml');
    expect(() =>
      loadConfigText(text, file, { readFile: (p) => readFileSync(p), now: () => Date.now() + 400 * DAY_MS }),
    ).toThrow(/it expired/);
  });
});

describe('loadConfigText: what loads', () => {
  it('resolves relative paths against the config file folder', async () => {
    const confDir = join(dir, 'conf');
    await mkdir(confDir, { recursive: true });
    const file = join(confDir, 'portcullis.yaml');
    await writeFile(
      file,
      stringify({
        admin: { enabled: false },
        listeners: [
          listener({
            tls: {
              cert: '../pki/server.pem',
              key: '../pki/server-key.pem',
              clientCa: '../pki/ca.pem',
              crl: '../pki/ca.crl',
            },
          }),
        ],
      }),
    );
    const cfg = loadConfigFile(file);
    const t = cfg.listeners[0]?.tls;
    expect(t?.certificates.map((c) => c.file)).toEqual([f.pki.server.cert, f.pki.ca]);
    expect(Buffer.from(t?.options.cert as Buffer).toString()).toBe(readFileSync(f.pki.server.cert, 'utf8'));
    expect(t?.options.requestCert).toBe(true);
    expect(t?.options.rejectUnauthorized).toBe(true);
    expect(t?.options.minVersion).toBe('TLSv1.2');
    expect(cfg.source).toBe(file);
    // Every file it was made from, with the digest of what was read (what the file watch compares).
    const digest = (p: string): string => createHash('sha256').update(readFileSync(p)).digest('hex');
    expect(cfg.files).toEqual({
      [file]: digest(file),
      [f.pki.server.cert]: digest(f.pki.server.cert),
      [f.pki.server.key]: digest(f.pki.server.key),
      [f.pki.ca]: digest(f.pki.ca),
      [f.pki.crl]: digest(f.pki.crl),
    });
  });

  it('applies the defaults', () => {
    const cfg = load(config());
    expect(cfg.requireEncryption).toBe(true);
    expect(cfg.timeouts).toEqual(DEFAULTS.timeouts);
    expect(cfg.http2).toEqual(DEFAULTS.http2);
    expect(cfg.log).toEqual(DEFAULTS.log);
    expect(cfg.reload).toEqual({ checkFilesSeconds: 60 });
    expect(cfg.warnings).toEqual([]);
  });

  it.each([
    'http://127.0.0.1:8080',
    'http://localhost:8080',
    'http://[::1]:8080',
    'http://127.9.9.9:8080',
    'https://10.0.0.5:8443',
    'http://127.0.0.1:8080/',
  ])('accepts the upstream %s under requireEncryption', (url) => {
    const cfg = load(config({}, listener(upstreamRoute(url))));
    const up = (cfg.listeners[0] as HttpRuntimeListener | undefined)?.routes.routes[0]?.upstream;
    expect(up?.kind).toBe('http');
  });

  it('accepts an https upstream with its own CA and client certificate', () => {
    const cfg = load(
      config(
        {},
        listener(
          upstreamRoute({
            url: 'https://10.0.0.5:8443',
            ca: f.pki.ca,
            cert: f.pki.clients.alice.cert,
            key: f.pki.clients.alice.key,
            servername: 'up.example',
          }),
        ),
      ),
    );
    const up = (cfg.listeners[0] as HttpRuntimeListener | undefined)?.routes.routes[0]?.upstream;
    expect(up).toMatchObject({
      kind: 'http',
      origin: 'https://10.0.0.5:8443',
      loopback: false,
      tls: { servername: 'up.example' },
    });
  });

  it('requireEncryption: false + plaintext: true loads, with a warning', () => {
    const cfg = load(
      config(
        { requireEncryption: false },
        listener({ tls: undefined, plaintext: true }),
        listener({ name: 'b', routes: [{ id: 'b', upstream: 'http://10.0.0.5:8080', match: {} }] }),
      ),
    );
    expect(cfg.requireEncryption).toBe(false);
    expect(cfg.listeners[0]?.tls).toBeUndefined();
    expect(cfg.listeners[1]?.tls).toBeDefined();
    expect(cfg.warnings).toHaveLength(1);
    expect(cfg.warnings[0]).toMatch(/listener "main" serves PLAINTEXT on 127\.0\.0\.1:0/);
  });

  it('clientCertificate none needs no CA and asks for no certificate', () => {
    const cfg = load(
      config({}, listener({ tls: { clientCertificate: 'none', clientCa: undefined, crl: undefined } })),
    );
    expect(cfg.listeners[0]?.tls?.options.requestCert).toBe(false);
    expect(cfg.listeners[0]?.tls?.options.ca).toBeUndefined();
  });

  it('the runtime config is deep-frozen', () => {
    const cfg = load(config({}, listener({ allowClients: ['CN=alice'] })));
    const unfrozen: string[] = [];
    const walk = (v: unknown, path: string, seen: Set<unknown>): void => {
      if (v === null || typeof v !== 'object' || Buffer.isBuffer(v) || seen.has(v)) return;
      seen.add(v);
      if (!Object.isFrozen(v)) unfrozen.push(path);
      for (const [k, child] of Object.entries(v)) walk(child, `${path}.${k}`, seen);
    };
    walk(cfg, 'config', new Set());
    expect(unfrozen).toEqual([]);
    expect(() => {
      (cfg as { requireEncryption: boolean }).requireEncryption = false;
    }).toThrow(TypeError);
    expect(() => {
      (cfg.listeners as RuntimeConfig['listeners'][number][]).push(cfg.listeners[0]!);
    }).toThrow(TypeError);
    expect(() => {
      (cfg.timeouts as { idleMs: number }).idleMs = 1;
    }).toThrow(TypeError);
  });
});

describe('isLoopbackHost', () => {
  it.each([
    ['127.0.0.1', true],
    ['127.255.0.1', true],
    ['::1', true],
    ['[::1]', true],
    ['localhost', true],
    ['LOCALHOST', true],
    ['evil.localhost', false],
    ['localhost.evil.example', false],
    ['10.0.0.5', false],
    ['0.0.0.0', false],
    ['128.0.0.1', false],
    ['::', false],
  ])('%s → %s', (host, loopback) => {
    expect(isLoopbackHost(host)).toBe(loopback);
  });
});
