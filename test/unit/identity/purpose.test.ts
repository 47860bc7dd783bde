/**
 * identity/purpose.ts on certificates minted per run: a certificate that chains to the client CA but is a
 * CA, a CRL-signing key or a server certificate is never a client identity; a server certificate without
 * serverAuth is not a server certificate.
 */
import { X509Certificate } from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import { GatewayError } from '../../../src/errors.js';
import { assertClientCertificatePurpose, serverCertificateProblem } from '../../../src/identity/purpose.js';
import type { CertAndKey } from '../../../src/certs/pki.js';
import { mintMisusedClients, mintTestPki, type MisusedClientName } from '../../helpers/pki.js';

let misused: Record<MisusedClientName, CertAndKey>;

beforeAll(() => {
  misused = mintMisusedClients(mintTestPki().ca);
});

const x509 = (c: CertAndKey): X509Certificate => new X509Certificate(c.certPem);

describe('assertClientCertificatePurpose', () => {
  it('lets a client certificate through (EKU clientAuth, keyUsage digitalSignature)', () => {
    expect(() => assertClientCertificatePurpose(x509(mintTestPki().clients.alice))).not.toThrow();
  });

  it.each<[MisusedClientName, RegExp]>([
    ['caTrue', /basicConstraints CA:TRUE/],
    ['caTrueBare', /basicConstraints CA:TRUE/],
    ['certSignOnly', /keyUsage permits neither digitalSignature nor keyAgreement/],
    ['serverAuthOnly', /extendedKeyUsage does not include clientAuth/],
    ['codeSigningOnly', /extendedKeyUsage does not include clientAuth/],
  ])('refuses %s with ERR_IDENTITY_BAD_CLIENT_CERT naming the rule', (name, why) => {
    let caught: unknown;
    try {
      assertClientCertificatePurpose(x509(misused[name]));
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(GatewayError);
    expect((caught as GatewayError).code).toBe('ERR_IDENTITY_BAD_CLIENT_CERT');
    expect((caught as GatewayError).detail).toMatch(why);
  });

  it('refuses the client CA certificate itself', () => {
    expect(() => assertClientCertificatePurpose(x509(mintTestPki().ca))).toThrow(/CA:TRUE/);
  });
});

describe('serverCertificateProblem', () => {
  it('accepts a server certificate (EKU serverAuth)', () => {
    expect(serverCertificateProblem(x509(mintTestPki().server))).toBeUndefined();
  });

  it('accepts a certificate without EKU (every purpose)', () => {
    expect(serverCertificateProblem(x509(misused.caTrueBare))).toBeUndefined();
  });

  it.each<[string, () => CertAndKey]>([
    ['a client certificate (EKU clientAuth only)', () => mintTestPki().clients.alice],
    ['a code-signing certificate', () => misused.codeSigningOnly],
  ])('refuses %s, naming what the EKU lists', (_name, cert) => {
    expect(serverCertificateProblem(x509(cert()))).toMatch(/extendedKeyUsage lacks serverAuth .*it lists 1\.3\.6\.1\.5\.5\.7\.3\.[23]/);
  });
});
