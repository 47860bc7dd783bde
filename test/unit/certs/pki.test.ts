import { createPrivateKey, X509Certificate } from 'node:crypto';
import forge from 'node-forge';
import { describe, expect, it } from 'vitest';
import {
  certSerialHex,
  createCa,
  createCrl,
  crlNumberOf,
  issueClientCert,
  issueServerCert,
  normalizeSerialHex,
  parseCrl,
  parseCrlRevoked,
  verifyCrlSignature,
  type CertAndKey,
} from '../../../src/certs/pki.js';
import { mintTestPki, tryClientCertificate, type TestClientName } from '../../helpers/pki.js';

const DAY_MS = 24 * 60 * 60 * 1000;
const NOW = new Date('2030-06-15T12:00:00.000Z');

/** The decoded extensions forge reads back from a certificate (ours, so the shapes are known). */
function extensionOf(certPem: string, name: string): Record<string, unknown> | undefined {
  const ext: unknown = forge.pki.certificateFromPem(certPem).getExtension(name);
  return typeof ext === 'object' && ext !== null ? (ext as Record<string, unknown>) : undefined;
}

/** keyIdentifier of the authorityKeyIdentifier extension, as uppercase hex. */
function authorityKeyIdHex(certPem: string): string {
  const ext = extensionOf(certPem, 'authorityKeyIdentifier');
  const value = ext?.['value'];
  if (typeof value !== 'string') throw new Error('no authorityKeyIdentifier');
  const seq = forge.asn1.fromDer(value).value;
  if (!Array.isArray(seq) || seq[0] === undefined || typeof seq[0].value !== 'string')
    throw new Error('bad AKI');
  return forge.util.bytesToHex(seq[0].value).toUpperCase();
}

function subjectKeyIdHex(certPem: string): string {
  const hex = extensionOf(certPem, 'subjectKeyIdentifier')?.['subjectKeyIdentifier'];
  if (typeof hex !== 'string') throw new Error('no subjectKeyIdentifier');
  return hex.toUpperCase();
}

function expectSignedBy(leaf: CertAndKey, ca: CertAndKey): void {
  const cert = new X509Certificate(leaf.certPem);
  const caCert = new X509Certificate(ca.certPem);
  expect(cert.checkIssued(caCert)).toBe(true);
  expect(cert.verify(caCert.publicKey)).toBe(true);
  expect(cert.checkPrivateKey(createPrivateKey(leaf.keyPem))).toBe(true);
  expect(authorityKeyIdHex(leaf.certPem)).toBe(subjectKeyIdHex(ca.certPem));
}

describe('createCa', () => {
  const ca = createCa({ commonName: 'Unit CA', days: 10, now: NOW });

  it('is a self-signed CA whose key matches, valid from just before now for `days`', () => {
    const cert = new X509Certificate(ca.certPem);
    expect(cert.ca).toBe(true);
    expect(cert.subject).toBe('CN=Unit CA');
    expect(cert.issuer).toBe('CN=Unit CA');
    expect(cert.checkIssued(cert)).toBe(true);
    expect(cert.verify(cert.publicKey)).toBe(true);
    expect(cert.checkPrivateKey(createPrivateKey(ca.keyPem))).toBe(true);
    expect(createPrivateKey(ca.keyPem).asymmetricKeyDetails?.modulusLength).toBe(2048);
    expect(ca.keyPem).toMatch(/^-----BEGIN PRIVATE KEY-----\n/);
    expect(new Date(cert.validFrom).getTime()).toBeLessThanOrEqual(NOW.getTime());
    expect(new Date(cert.validFrom).getTime()).toBeGreaterThan(NOW.getTime() - 10 * 60_000);
    expect(new Date(cert.validTo).getTime()).toBe(NOW.getTime() + 10 * DAY_MS);
  });

  it('marks basicConstraints and keyUsage critical, with keyCertSign and cRLSign only', () => {
    expect(extensionOf(ca.certPem, 'basicConstraints')).toMatchObject({ cA: true, critical: true });
    expect(extensionOf(ca.certPem, 'keyUsage')).toMatchObject({
      critical: true,
      keyCertSign: true,
      cRLSign: true,
      digitalSignature: false,
      keyEncipherment: false,
    });
    expect(subjectKeyIdHex(ca.certPem)).toMatch(/^[0-9A-F]{40}$/);
  });

  it('reports the serial Node reads: 16 bytes, positive, uppercase', () => {
    expect(ca.serialHex).toBe(new X509Certificate(ca.certPem).serialNumber);
    expect(certSerialHex(ca.certPem)).toBe(ca.serialHex);
    expect(ca.serialHex).toMatch(/^[1-7][0-9A-F]{31}$|^0[1-9A-F][0-9A-F]{30}$/);
  });

  it.each([
    ['zero days', { commonName: 'x', days: 0 }],
    ['fractional days', { commonName: 'x', days: 1.5 }],
    ['an empty name', { commonName: ' ', days: 1 }],
  ])('refuses %s', (_label, opts) => {
    expect(() => createCa(opts)).toThrow();
  });

  it('signs leaves under a non-ASCII CA name that Node chains correctly', () => {
    const utf8Ca = createCa({ commonName: 'Prüf-CA ünïcødé', days: 1 });
    const leaf = issueClientCert(utf8Ca, { commonName: 'x', days: 1 });
    expect(new X509Certificate(leaf.certPem).issuer).toBe('CN=Prüf-CA ünïcødé');
    expectSignedBy(leaf, utf8Ca);
  });
});

describe('issueServerCert', () => {
  const ca = createCa({ commonName: 'Unit CA', days: 10 });
  const server = issueServerCert(ca, {
    hosts: ['localhost', 'gw.example.test', '127.0.0.1', '[::1]', '::ffff:10.0.0.1', '*.svc.example.test'],
    days: 5,
  });
  const cert = new X509Certificate(server.certPem);

  it('puts DNS names and IP literals (v4, v6, bracketed v6, v4-mapped) in the SAN, in order', () => {
    expect(cert.subjectAltName).toBe(
      'DNS:localhost, DNS:gw.example.test, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1, ' +
        'IP Address:0:0:0:0:0:FFFF:A00:1, DNS:*.svc.example.test',
    );
    expect(cert.checkHost('gw.example.test')).toBe('gw.example.test');
    expect(cert.checkHost('api.svc.example.test')).toBe('*.svc.example.test'); // Node returns the matching SAN
    expect(cert.checkHost('a.b.svc.example.test')).toBeUndefined();
    expect(cert.checkIP('::1')).toBe('::1');
    expect(cert.checkIP('10.0.0.2')).toBeUndefined();
    expect(cert.subject).toBe('CN=localhost');
  });

  it('is a serverAuth leaf signed by the CA, with its own matching key', () => {
    expect(cert.ca).toBe(false);
    expect(cert.keyUsage).toEqual(['1.3.6.1.5.5.7.3.1']);
    expect(extensionOf(server.certPem, 'keyUsage')).toMatchObject({
      critical: true,
      digitalSignature: true,
      keyEncipherment: true,
      keyCertSign: false,
    });
    expectSignedBy(server, ca);
    expect(server.serialHex).toBe(cert.serialNumber);
    expect(server.serialHex).not.toBe(ca.serialHex);
  });

  it('uses an explicit commonName', () => {
    const named = issueServerCert(ca, { commonName: 'gateway', hosts: ['127.0.0.1'], days: 1 });
    expect(new X509Certificate(named.certPem).subject).toBe('CN=gateway');
  });

  it.each([
    ['no hosts', []],
    ['an empty host', ['']],
    ['a space', ['bad host']],
    ['an empty label', ['a..example']],
    ['a leading hyphen', ['-x.example']],
    ['a zone id', ['fe80::1%eth0']],
    ['brackets around a name', ['[localhost]']],
  ])('refuses %s', (_label, hosts) => {
    expect(() => issueServerCert(ca, { hosts, days: 1 })).toThrow();
  });

  it('refuses a CA whose key belongs to another certificate', () => {
    const other = createCa({ commonName: 'Unit CA', days: 1 });
    expect(() => issueServerCert({ ...ca, keyPem: other.keyPem }, { hosts: ['localhost'], days: 1 })).toThrow(
      /does not match/,
    );
  });
});

describe('issueClientCert', () => {
  const ca = createCa({ commonName: 'Unit CA', days: 10 });

  it('carries CN, OU, URI and DNS SANs and clientAuth, signed by the CA', () => {
    const alice = issueClientCert(ca, {
      commonName: 'alice',
      organizationalUnit: 'data-science',
      uris: ['spiffe://lab.example/alice'],
      dnsNames: ['alice.lab.example'],
      days: 3,
      now: NOW,
    });
    const cert = new X509Certificate(alice.certPem);
    expect(cert.subject).toBe('CN=alice\nOU=data-science');
    expect(cert.subjectAltName).toBe('URI:spiffe://lab.example/alice, DNS:alice.lab.example');
    expect(cert.keyUsage).toEqual(['1.3.6.1.5.5.7.3.2']);
    expect(extensionOf(alice.certPem, 'keyUsage')).toMatchObject({ critical: true, digitalSignature: true });
    expect(new Date(cert.validTo).getTime()).toBe(NOW.getTime() + 3 * DAY_MS);
    expectSignedBy(alice, ca);
  });

  it('omits the SAN extension when there are no names', () => {
    const bare = issueClientCert(ca, { commonName: 'bare', days: 1 });
    expect(new X509Certificate(bare.certPem).subjectAltName).toBeUndefined();
  });

  it('lets notBefore/notAfter override days (second precision)', () => {
    const notBefore = new Date('2020-01-01T00:00:00.900Z');
    const notAfter = new Date('2020-01-02T00:00:00.000Z');
    const old = issueClientCert(ca, { commonName: 'old', notBefore, notAfter, days: 365 });
    const cert = new X509Certificate(old.certPem);
    expect(new Date(cert.validFrom).toISOString()).toBe('2020-01-01T00:00:00.000Z');
    expect(new Date(cert.validTo).toISOString()).toBe('2020-01-02T00:00:00.000Z');
  });

  it.each([
    ['neither days nor notAfter', { commonName: 'x' }],
    [
      'notAfter before notBefore',
      { commonName: 'x', notBefore: NOW, notAfter: new Date(NOW.getTime() - 1000) },
    ],
    ['a relative URI', { commonName: 'x', days: 1, uris: ['/client/x'] }],
    ['a non-ASCII URI', { commonName: 'x', days: 1, uris: ['spiffe://lab/ü'] }],
    ['an empty OU', { commonName: 'x', days: 1, organizationalUnit: '' }],
  ])('refuses %s', (_label, opts) => {
    expect(() => issueClientCert(ca, opts)).toThrow();
  });
});

describe('createCrl / parseCrl', () => {
  const pki = mintTestPki();
  const thisUpdate = new Date('2031-03-01T10:00:00.000Z');

  it('round-trips entries, number and dates (second precision), listing a serial once', () => {
    const crl = createCrl(pki.ca, {
      revoked: [
        { serialHex: pki.clients.bob.serialHex, revokedAt: new Date('2031-02-01T00:00:00.700Z') },
        { serialHex: '8000000000000001', revokedAt: thisUpdate },
        { serialHex: '00ab', revokedAt: thisUpdate },
        { serialHex: pki.clients.bob.serialHex.toLowerCase(), revokedAt: thisUpdate },
      ],
      crlNumber: 41,
      thisUpdate,
      days: 7,
    });
    expect(crl).toMatch(/^-----BEGIN X509 CRL-----\n[A-Za-z0-9+/=\n]+-----END X509 CRL-----\n?$/);
    expect(parseCrl(crl)).toEqual({
      revoked: [
        { serialHex: pki.clients.bob.serialHex, revokedAt: new Date('2031-02-01T00:00:00.000Z') },
        { serialHex: '8000000000000001', revokedAt: thisUpdate },
        { serialHex: 'AB', revokedAt: thisUpdate },
      ],
      crlNumber: 41,
      thisUpdate,
      nextUpdate: new Date(thisUpdate.getTime() + 7 * DAY_MS),
    });
    expect(parseCrlRevoked(crl)).toHaveLength(3);
    expect(crlNumberOf(crl)).toBe(41);
  });

  it('encodes dates from 2050 as GeneralizedTime and reads them back', () => {
    const later = new Date('2051-07-04T08:09:10.000Z');
    const crl = createCrl(pki.ca, { revoked: [], crlNumber: 0, thisUpdate: later, days: 1 });
    expect(parseCrl(crl).thisUpdate).toEqual(later);
    expect(parseCrl(crl).revoked).toEqual([]);
  });

  it('is signed by the CA key, not by another key under the same CA name', () => {
    expect(verifyCrlSignature(pki.crlPem, pki.ca.certPem)).toBe(true);
    expect(verifyCrlSignature(pki.crlPem, pki.otherCa.certPem)).toBe(false);
    const body = forge.pem.decode(pki.crlPem)[0]!.body;
    const tampered = body.slice(0, -1) + String.fromCharCode(body.charCodeAt(body.length - 1) ^ 1);
    const tamperedPem = forge.pem.encode({ type: 'X509 CRL', body: tampered });
    expect(verifyCrlSignature(tamperedPem, pki.ca.certPem)).toBe(false);
    expect(verifyCrlSignature('not a crl', pki.ca.certPem)).toBe(false);
  });

  it('describes the test PKI CRLs as documented', () => {
    expect(parseCrlRevoked(pki.crlPem).map((e) => e.serialHex)).toEqual([pki.clients.revoked.serialHex]);
    expect(parseCrlRevoked(pki.emptyCrlPem)).toEqual([]);
    expect(parseCrl(pki.staleCrlPem).nextUpdate!.getTime()).toBeLessThan(Date.now());
  });

  it.each([
    ['a negative number', { revoked: [], crlNumber: -1, days: 1 }],
    ['a number past 31 bits', { revoked: [], crlNumber: 2 ** 31, days: 1 }],
    ['no lifetime', { revoked: [], crlNumber: 1 }],
    ['nextUpdate before thisUpdate', { revoked: [], crlNumber: 1, thisUpdate, nextUpdate: new Date(0) }],
    ['a non-hex serial', { revoked: [{ serialHex: 'XYZ', revokedAt: thisUpdate }], crlNumber: 1, days: 1 }],
    ['serial zero', { revoked: [{ serialHex: '00', revokedAt: thisUpdate }], crlNumber: 1, days: 1 }],
  ])('refuses %s', (_label, opts) => {
    expect(() => createCrl(pki.ca, opts)).toThrow();
  });

  it('refuses to sign with a key that is not the CA certificate key', () => {
    expect(() =>
      createCrl({ ...pki.ca, keyPem: pki.otherCa.keyPem }, { revoked: [], crlNumber: 1, days: 1 }),
    ).toThrow(/does not match/);
  });

  it('refuses text that is not a CRL', () => {
    expect(() => parseCrl(pki.ca.certPem)).toThrow(/X509 CRL/);
  });

  it.each([
    ['0a', '0A'],
    ['000001', '01'],
    ['ABC', '0ABC'],
    ['7f', '7F'],
  ])('normalizes serial %s to %s', (input, expected) => {
    expect(normalizeSerialHex(input)).toBe(expected);
  });
});

describe('Node TLS with a CRL from createCrl (requestCert + rejectUnauthorized)', () => {
  const pki = mintTestPki();

  it.each<[TestClientName, boolean, string | undefined]>([
    ['alice', true, undefined],
    ['bob', true, undefined],
    ['revoked', false, 'CERT_REVOKED'],
    ['expired', false, 'CERT_HAS_EXPIRED'],
    ['notYetValid', false, 'CERT_NOT_YET_VALID'],
    // Same issuer name, different key: OpenSSL finds no issuer whose key verifies the leaf.
    ['otherCaAlice', false, 'UNABLE_TO_VERIFY_LEAF_SIGNATURE'],
  ])('with the revocation list, client %s: accepted=%s (%s)', async (name, accepted, reason) => {
    const outcome = await tryClientCertificate({
      caPem: pki.ca.certPem,
      crlPem: pki.crlPem,
      server: pki.server,
      client: pki.clients[name],
    });
    expect(outcome).toEqual({ accepted, authorizationError: reason, received: accepted ? 'hello' : '' });
  });

  it.each<TestClientName>(['alice', 'bob', 'revoked'])(
    'an empty CRL lets valid client %s in',
    async (name) => {
      const outcome = await tryClientCertificate({
        caPem: pki.ca.certPem,
        crlPem: pki.emptyCrlPem,
        server: pki.server,
        client: pki.clients[name],
      });
      expect(outcome).toEqual({ accepted: true, authorizationError: undefined, received: 'hello' });
    },
  );

  it('matches the CRL to a CA with a non-ASCII name (issuer copied byte for byte)', async () => {
    const utf8Ca = createCa({ commonName: 'Prüf-CA ünïcødé', days: 1 });
    const server = issueServerCert(utf8Ca, { hosts: ['localhost'], days: 1 });
    const client = issueClientCert(utf8Ca, { commonName: 'x', days: 1 });
    const crlPem = createCrl(utf8Ca, {
      revoked: [{ serialHex: client.serialHex, revokedAt: new Date() }],
      crlNumber: 1,
      days: 1,
    });
    const outcome = await tryClientCertificate({ caPem: utf8Ca.certPem, crlPem, server, client });
    expect(outcome.authorizationError).toBe('CERT_REVOKED');
  });

  it('a CRL past its nextUpdate shuts every client out', async () => {
    const outcome = await tryClientCertificate({
      caPem: pki.ca.certPem,
      crlPem: pki.staleCrlPem,
      server: pki.server,
      client: pki.clients.alice,
    });
    expect(outcome).toEqual({ accepted: false, authorizationError: 'CRL_HAS_EXPIRED', received: '' });
  });

  // OpenSSL matches a CRL to the issuer by name and authorityKeyIdentifier; a CRL whose AKI names another
  // key is not a candidate, so the issuer has no CRL at all and, with CRL checking on, nobody gets in.
  it('a CRL signed by another CA under the same name shuts every client out', async () => {
    const foreignCrl = createCrl(pki.otherCa, { revoked: [], crlNumber: 1, days: 1 });
    const outcome = await tryClientCertificate({
      caPem: pki.ca.certPem,
      crlPem: foreignCrl,
      server: pki.server,
      client: pki.clients.alice,
    });
    expect(outcome.accepted).toBe(false);
    expect(outcome.authorizationError).toBe('UNABLE_TO_GET_CRL');
  });
});
