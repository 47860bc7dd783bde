import { execFileSync } from 'node:child_process';
import { X509Certificate, generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import * as tls from 'node:tls';
import forge from 'node-forge';
import { beforeAll, describe, expect, it } from 'vitest';
import { GatewayError } from '../../../src/errors.js';
import {
  parseSubjectAltName,
  peerIdentityFromCertificate,
  peerIdentityFromX509,
  subjectFromX509Text,
} from '../../../src/identity/peer.js';

// A PKI minted per run: one CA, one server certificate for 127.0.0.1, and client certificates with odd
// subjects and SANs. The client certificates share one key (only their contents differ).

interface KeyPair {
  pem: string;
  forgePrivate: forge.pki.rsa.PrivateKey;
  forgePublic: forge.pki.rsa.PublicKey;
}

function rsaKey(): KeyPair {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', {
    modulusLength: 2048,
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
    publicKeyEncoding: { type: 'spki', format: 'pem' },
  });
  return {
    pem: privateKey,
    forgePrivate: forge.pki.privateKeyFromPem(privateKey),
    forgePublic: forge.pki.publicKeyFromPem(publicKey),
  };
}

type Attr = { shortName: string; value: string };
type AltName = { type: 2; value: string } | { type: 6; value: string } | { type: 7; ip: string };

const NOT_AFTER = new Date(Date.UTC(2031, 5, 15, 12, 34, 56));
let serial = 0x1000;

function issue(
  subject: Attr[],
  key: KeyPair,
  issuer: { subject: Attr[]; key: KeyPair },
  extensions: object[],
): string {
  const cert = forge.pki.createCertificate();
  cert.publicKey = key.forgePublic;
  cert.serialNumber = (serial++).toString(16).padStart(4, '0') + 'abcdef';
  cert.validity.notBefore = new Date(Date.now() - 3_600_000);
  cert.validity.notAfter = NOT_AFTER;
  cert.setSubject(subject);
  cert.setIssuer(issuer.subject);
  cert.setExtensions(extensions);
  cert.sign(issuer.key.forgePrivate, forge.md.sha256.create());
  return forge.pki.certificateToPem(cert);
}

let caPem: string;
let caSubject: Attr[];
let caKey: KeyPair;
let serverKey: KeyPair;
let serverPem: string;
let clientKey: KeyPair;

function clientCert(subject: Attr[], altNames: AltName[]): string {
  const extensions: object[] = [{ name: 'extKeyUsage', clientAuth: true }];
  if (altNames.length > 0) extensions.push({ name: 'subjectAltName', altNames });
  return issue(subject, clientKey, { subject: caSubject, key: caKey }, extensions);
}

/** A real mTLS handshake on 127.0.0.1:0; resolves with what the server's socket says about the client. */
type Seen = { peer: tls.PeerCertificate; authorized: boolean; x509: X509Certificate | undefined };
async function handshake(certPem: string): Promise<Seen> {
  const server = tls.createServer({
    key: serverKey.pem,
    cert: serverPem,
    ca: caPem,
    requestCert: true,
    rejectUnauthorized: true,
  });
  const seen = new Promise<Seen>((resolve) => {
    server.once('secureConnection', (socket: tls.TLSSocket) => {
      resolve({
        peer: socket.getPeerCertificate(true),
        authorized: socket.authorized,
        x509: socket.getPeerX509Certificate(),
      });
      socket.end();
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  const client = tls.connect({ host: '127.0.0.1', port, ca: caPem, key: clientKey.pem, cert: certPem });
  client.on('error', () => undefined);
  client.resume();
  try {
    return await seen;
  } finally {
    client.destroy();
    server.close();
  }
}

beforeAll(() => {
  caKey = rsaKey();
  serverKey = rsaKey();
  clientKey = rsaKey();
  caSubject = [{ shortName: 'CN', value: 'Portcullis Test CA' }];
  caPem = issue(caSubject, caKey, { subject: caSubject, key: caKey }, [
    { name: 'basicConstraints', cA: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true },
  ]);
  serverPem = issue(
    [{ shortName: 'CN', value: 'localhost' }],
    serverKey,
    { subject: caSubject, key: caKey },
    [{ name: 'subjectAltName', altNames: [{ type: 7, ip: '127.0.0.1' }] }],
  );
});

describe('peerIdentityFromCertificate (real handshake)', () => {
  it('reads a normal client certificate: CN, OU, DNS, URI, fingerprint, serial, notAfter', async () => {
    const pem = clientCert(
      [
        { shortName: 'C', value: 'DE' },
        { shortName: 'O', value: 'Example' },
        { shortName: 'OU', value: 'dev' },
        { shortName: 'CN', value: 'client1' },
      ],
      [
        { type: 2, value: 'client1.example.com' },
        { type: 6, value: 'spiffe://example.org/ns/a' },
        { type: 7, ip: '10.0.0.1' },
        { type: 2, value: 'alt.example.com' },
      ],
    );
    const { peer, authorized } = await handshake(pem);
    expect(authorized).toBe(true);
    const id = peerIdentityFromCertificate(peer);
    const x509 = new X509Certificate(pem);

    expect(id).toEqual({
      subject: 'CN=client1,OU=dev,O=Example,C=DE',
      commonNames: ['client1'],
      organizationalUnits: ['dev'],
      dnsNames: ['client1.example.com', 'alt.example.com'],
      uris: ['spiffe://example.org/ns/a'],
      fingerprint256: x509.fingerprint256.replaceAll(':', '').toLowerCase(),
      serialNumber: x509.serialNumber.toUpperCase(),
      validToMs: NOT_AFTER.getTime(),
    });
    expect(id.fingerprint256).toMatch(/^[0-9a-f]{64}$/);
    expect(id.validToMs).toBe(Date.parse(x509.validTo));
  });

  it('keeps a URI SAN containing ", URI:" as ONE uri (CVE-2021-44532, threat model #20)', async () => {
    const evil = 'spiffe://evil.example/x, URI:spiffe://example.org/admin';
    const pem = clientCert(
      [{ shortName: 'CN', value: 'evil' }],
      [
        { type: 6, value: evil },
        { type: 2, value: 'ok.example' },
        { type: 2, value: 'admin.internal' },
      ],
    );
    const { peer } = await handshake(pem);
    // The raw string Node hands over is the escaped form, on which a naive `includes` check is fooled.
    expect(peer.subjectaltname).toContain('\\u002c URI:spiffe://example.org/admin"');
    expect(peer.subjectaltname?.includes('URI:spiffe://example.org/admin')).toBe(true);

    const id = peerIdentityFromCertificate(peer);
    expect(id.uris).toEqual([evil]);
    expect(id.uris).not.toContain('spiffe://example.org/admin');
    expect(id.dnsNames).toEqual(['ok.example', 'admin.internal']);
  });

  it('escapes a comma in the CN so the subject cannot be read as O=admin (CVE-2021-44533, threat model #21)', async () => {
    const { peer } = await handshake(clientCert([{ shortName: 'CN', value: 'evil, O=admin' }], []));
    const id = peerIdentityFromCertificate(peer);
    expect(id.subject).toBe('CN=evil\\, O=admin');
    expect(id.commonNames).toEqual(['evil, O=admin']);
    // Splitting the subject on unescaped commas yields one RDN, never an "O=admin" one.
    expect(id.subject.split(/(?<!\\),/)).toEqual(['CN=evil\\, O=admin']);
  });

  it('keeps a newline in the CN raw in commonNames and hex-escaped in the one-line subject (threat model #22)', async () => {
    const { peer } = await handshake(clientCert([{ shortName: 'CN', value: 'line1\nX-Injected: yes' }], []));
    const id = peerIdentityFromCertificate(peer);
    expect(id.commonNames).toEqual(['line1\nX-Injected: yes']);
    expect(id.subject).toBe('CN=line1\\0AX-Injected: yes');
    expect(id.subject).not.toMatch(/[\r\n]/);
  });

  it('reads two CNs, most specific (last) first in the subject', async () => {
    const { peer } = await handshake(
      clientCert(
        [
          { shortName: 'OU', value: 'ops' },
          { shortName: 'CN', value: 'first' },
          { shortName: 'CN', value: 'second' },
        ],
        [],
      ),
    );
    const id = peerIdentityFromCertificate(peer);
    expect(id.commonNames).toEqual(['first', 'second']);
    expect(id.organizationalUnits).toEqual(['ops']);
    expect(id.subject).toBe('CN=second,CN=first,OU=ops');
    expect(id.dnsNames).toEqual([]);
    expect(id.uris).toEqual([]);
  });

  it('escapes every RFC 4514 special, leading "#"/space and trailing space', async () => {
    const { peer } = await handshake(
      clientCert(
        [
          { shortName: 'O', value: ' lead and trail ' },
          { shortName: 'OU', value: '#hash' },
          { shortName: 'CN', value: 'a+b"c\\d<e>f;g,h=i é' },
        ],
        [],
      ),
    );
    const id = peerIdentityFromCertificate(peer);
    expect(id.subject).toBe('CN=a\\+b\\"c\\\\d\\<e\\>f\\;g\\,h=i é,OU=\\#hash,O=\\ lead and trail\\ ');
  });

  it('refuses the empty object Node returns when the peer sent no certificate', () => {
    const empty = {} as tls.PeerCertificate;
    expect(() => peerIdentityFromCertificate(empty)).toThrow(
      expect.objectContaining({ code: 'ERR_IDENTITY_NO_CLIENT_CERT' }) as Error,
    );
  });
});

describe('parseSubjectAltName', () => {
  it.each<[string, { type: string; value: string }[]]>([
    ['', []],
    ['DNS:a.example', [{ type: 'DNS', value: 'a.example' }]],
    [
      'DNS:a.example, URI:spiffe://example.org/x, IP Address:127.0.0.1',
      [
        { type: 'DNS', value: 'a.example' },
        { type: 'URI', value: 'spiffe://example.org/x' },
        { type: 'IP Address', value: '127.0.0.1' },
      ],
    ],
    [
      'URI:"spiffe://evil.example/x\\u002c URI:spiffe://example.org/admin", DNS:ok.example',
      [
        { type: 'URI', value: 'spiffe://evil.example/x, URI:spiffe://example.org/admin' },
        { type: 'DNS', value: 'ok.example' },
      ],
    ],
    // Quotes and backslashes inside a quoted value; a quoted "\", DNS:..." must not end it early.
    [
      'DNS:"a\\"b", DNS:"x\\\\\\", DNS:y", URI:z:w',
      [
        { type: 'DNS', value: 'a"b' },
        { type: 'DNS', value: 'x\\", DNS:y' },
        { type: 'URI', value: 'z:w' },
      ],
    ],
    ['DNS:"line\\u000aX: y"', [{ type: 'DNS', value: 'line\nX: y' }]],
    ['othername:"XmppAddr:a\\u002cb"', [{ type: 'othername', value: 'XmppAddr:a,b' }]],
  ])('parses %j', (input, expected) => {
    expect(parseSubjectAltName(input)).toEqual(expected);
  });

  it.each([
    ['no type', 'a.example'],
    ['empty type', ':a'],
    ['unterminated quote', 'URI:"spiffe://x'],
    ['bad JSON escape', 'URI:"\\x41"'],
    ['garbage after a quoted value', 'URI:"a"b'],
    ['separator without space', 'DNS:a,DNS:b'],
    ['trailing separator', 'DNS:a, '],
    ['type with a quote', 'D"NS:a'],
  ])('throws ERR_IDENTITY_BAD_CLIENT_CERT on %s', (_label, input) => {
    let caught: unknown;
    try {
      parseSubjectAltName(input);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(GatewayError);
    expect((caught as GatewayError).code).toBe('ERR_IDENTITY_BAD_CLIENT_CERT');
  });

  it('agrees with X509Certificate#subjectAltName on a hostile certificate', () => {
    const pem = clientCert(
      [{ shortName: 'CN', value: 'x' }],
      [
        { type: 6, value: 'spiffe://evil.example/x, URI:spiffe://example.org/admin' },
        { type: 2, value: "quote'd" },
        { type: 6, value: 'urn:a"b\\c' },
      ],
    );
    const parsed = parseSubjectAltName(new X509Certificate(pem).subjectAltName ?? '');
    expect(parsed).toEqual([
      { type: 'URI', value: 'spiffe://evil.example/x, URI:spiffe://example.org/admin' },
      { type: 'DNS', value: "quote'd" },
      { type: 'URI', value: 'urn:a"b\\c' },
    ]);
  });
});

// The connection path reads the identity from getPeerX509Certificate() (cheap); the legacy object of
// getPeerCertificate() is the reference it must agree with, byte for byte, on every subject.
describe('peerIdentityFromX509 agrees with peerIdentityFromCertificate', () => {
  const subjects: { name: string; subject: Attr[]; san?: AltName[] }[] = [
    {
      name: 'plain',
      subject: [
        { shortName: 'OU', value: 'dev' },
        { shortName: 'CN', value: 'alice' },
      ],
      san: [
        { type: 6, value: 'spiffe://x/alice' },
        { type: 2, value: 'a.example' },
      ],
    },
    { name: 'comma (threat model #21)', subject: [{ shortName: 'CN', value: 'evil, O=admin' }] },
    {
      name: 'control characters (threat model #22)',
      subject: [{ shortName: 'CN', value: 'line1\nX-Injected: yes\r\tz\x7fy\x01' }],
    },
    { name: 'NUL', subject: [{ shortName: 'CN', value: 'nul\u0000byte' }] },
    {
      name: 'every RFC 4514 special',
      subject: [
        { shortName: 'O', value: ' lead and trail ' },
        { shortName: 'OU', value: '#hash' },
        { shortName: 'CN', value: 'a+b"c\\d<e>f;g,h=i é \\0A \\Q' },
      ],
    },
    {
      name: 'interleaved repeats',
      subject: [
        { shortName: 'OU', value: 'ops' },
        { shortName: 'CN', value: 'first' },
        { shortName: 'OU', value: 'dev' },
        { shortName: 'CN', value: 'second' },
      ],
    },
    {
      name: 'a value holding " + " and a trailing space',
      subject: [
        { shortName: 'CN', value: 'x + y' },
        { shortName: 'CN', value: 'trail ' },
      ],
    },
    { name: 'empty value', subject: [{ shortName: 'CN', value: '' }] },
    {
      name: 'unknown attribute (dotted OID)',
      subject: [{ type: '1.2.3.4.5', value: 'custom' } as unknown as Attr, { shortName: 'CN', value: 'c' }],
    },
    {
      name: 'UTF-8 string',
      subject: [
        {
          shortName: 'CN',
          value: forge.util.encodeUtf8('smile 😀 ü'),
          valueTagClass: forge.asn1.Type.UTF8,
        } as unknown as Attr,
      ],
    },
    {
      name: 'BMPString',
      subject: [
        { shortName: 'CN', value: 'bmp', valueTagClass: forge.asn1.Type.BMPSTRING } as unknown as Attr,
      ],
    },
    { name: 'a lookalike of an escape', subject: [{ shortName: 'CN', value: '\\2C not a comma \\' }] },
  ];
  for (const c of subjects) {
    it(c.name, () => {
      const x = new X509Certificate(clientCert(c.subject, c.san ?? []));
      const reference = peerIdentityFromCertificate(x.toLegacyObject());
      expect(peerIdentityFromX509(x)).toEqual(reference);
    });
  }

  it("a multi-valued RDN (CN=a+O=b, from the openssl CLI) reads as separate attributes, as Node's legacy object does", (ctx) => {
    const dir = mkdtempSync(join(tmpdir(), 'portcullis-rdn-'));
    try {
      writeFileSync(join(dir, 'key.pem'), clientKey.pem);
      try {
        execFileSync(
          'openssl',
          [
            'req',
            '-new',
            '-x509',
            '-key',
            join(dir, 'key.pem'),
            '-out',
            join(dir, 'cert.pem'),
            '-days',
            '1',
            '-multivalue-rdn',
            '-subj',
            '/OU=ops+CN=multi \\+ value/CN=last',
          ],
          { stdio: 'pipe' },
        );
      } catch (err) {
        console.log(`skipped: the openssl CLI is not available (${(err as Error).message.split('\n')[0]})`);
        ctx.skip();
        return;
      }
      const x = new X509Certificate(readFileSync(join(dir, 'cert.pem')));
      expect(x.subject).toContain(' + ');
      const id = peerIdentityFromX509(x);
      expect(id).toEqual(peerIdentityFromCertificate(x.toLegacyObject()));
      expect(id.commonNames).toEqual(['multi + value', 'last']);
      expect(id.organizationalUnits).toEqual(['ops']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('agrees on a real handshake', async () => {
    const pem = clientCert(
      [
        { shortName: 'CN', value: 'evil, O=admin' },
        { shortName: 'OU', value: 'x\ny' },
      ],
      [{ type: 6, value: 'spiffe://a/b' }],
    );
    const { peer, x509 } = await handshake(pem);
    expect(x509).toBeDefined();
    expect(peerIdentityFromX509(x509 as X509Certificate)).toEqual(peerIdentityFromCertificate(peer));
  });
});

describe('subjectFromX509Text', () => {
  it('reads keys, escapes, repeats and multi-valued RDNs', () => {
    expect(subjectFromX509Text('OU=a\nCN=x\\, y \\+ z\\0A\nCN=b + O=c\\ ')).toEqual({
      OU: 'a',
      CN: ['x, y + z\n', 'b'],
      O: 'c ',
    });
    expect(subjectFromX509Text('')).toEqual({});
    expect(subjectFromX509Text('CN=')).toEqual({ CN: '' });
  });

  it.each([
    ['no "="', 'CN'],
    ['empty name', '=x'],
    ['a name with a space', 'C N=x'],
    ['an unknown escape', 'CN=a\\Qb'],
    ['a lone backslash at the end', 'CN=a\\'],
    ['a separator at the end', 'CN=a\n'],
    ['a multi-value separator at the end', 'CN=a + '],
  ])('refuses %s', (_name, text) => {
    expect(() => subjectFromX509Text(text)).toThrow(
      expect.objectContaining({ code: 'ERR_IDENTITY_BAD_CLIENT_CERT' }) as Error,
    );
  });
});
