/**
 * A client certificate forwarded by the proxy (identity/forwarded-cert.ts): checked like a TLS handshake would
 * check it (issuer and signature, validity, CRL, purpose), in either encoding a proxy sends.
 */
import { X509Certificate } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { normalizeSerialHex } from '../../../src/certs/pki.js';
import { GatewayError } from '../../../src/errors.js';
import { createForwardedCertVerifier, parseForwardedCertificate } from '../../../src/identity/forwarded-cert.js';
import { mintTestPki } from '../../helpers/pki.js';

const pki = mintTestPki();
const now = Date.now();
const trust = {
  caPem: pki.ca.certPem,
  revokedSerials: [normalizeSerialHex(new X509Certificate(pki.clients.revoked.certPem).serialNumber)],
  crlNextUpdateMs: now + 86_400_000,
};
const verifier = createForwardedCertVerifier(trust);

function failure(value: string, v = verifier, at = now): string | undefined {
  try {
    v.verify(value, at);
  } catch (err) {
    return err instanceof GatewayError ? `${err.code}: ${err.detail ?? ''}` : String(err);
  }
  return undefined;
}

describe('forwarded client certificates', () => {
  it('nginx’s URL-escaped PEM and caddy’s base64 DER of alice both verify, to the same identity', () => {
    const pem = pki.clients.alice.certPem;
    const escaped = verifier.verify(encodeURIComponent(pem), now);
    const der = verifier.verify(new X509Certificate(pem).raw.toString('base64'), now);
    expect(escaped.identity.subject).toContain('CN=alice');
    expect(der.identity.fingerprint256).toBe(escaped.identity.fingerprint256);
    expect(escaped.xfcc).toContain('CN=alice');
  });

  it.each([
    ['revoked', () => encodeURIComponent(pki.clients.revoked.certPem), /^ERR_IDENTITY_REVOKED_CLIENT_CERT/],
    ['expired', () => encodeURIComponent(pki.clients.expired.certPem), /BAD_CLIENT_CERT.*expired/],
    ['not yet valid', () => encodeURIComponent(pki.clients.notYetValid.certPem), /BAD_CLIENT_CERT.*not yet valid/],
    ['another CA’s, same issuer name', () => encodeURIComponent(pki.clients.otherCaAlice.certPem), /BAD_CLIENT_CERT.*not issued by a CA/],
    ['the CA itself (self-issued, but not a client: identity/purpose.ts)', () => encodeURIComponent(pki.ca.certPem), /BAD_CLIENT_CERT.*CA certificate/],
    ['a chain of two', () => encodeURIComponent(pki.clients.alice.certPem + pki.ca.certPem), /not exactly one PEM/],
    ['garbage', () => 'hello%20world', /neither PEM nor base64 DER/],
    ['a broken escape', () => '%E0%A4%A', /not URL-escaped/],
    ['too long', () => 'A'.repeat(20_000), /too long/],
  ] as [string, () => string, RegExp][])('%s: refused', (_n, value, reason) => {
    expect(failure(value())).toMatch(reason);
  });

  it('while a CRL is past its nextUpdate, every certificate is refused (as OpenSSL does on a TLS listener)', () => {
    const stale = createForwardedCertVerifier({ ...trust, crlNextUpdateMs: now - 1 });
    expect(failure(encodeURIComponent(pki.clients.alice.certPem), stale)).toMatch(/past its nextUpdate/);
  });

  it('parseForwardedCertificate accepts a plain (unescaped) PEM too', () => {
    expect(parseForwardedCertificate(pki.clients.bob.certPem).subject).toContain('CN=bob');
  });
});
