/**
 * What a certificate may be used for (RFC 5280 §4.2.1.3 keyUsage, §4.2.1.9 basicConstraints, §4.2.1.12
 * extendedKeyUsage), checked where a certificate becomes a client identity and where one is loaded as a
 * listener's server certificate.
 *
 * OpenSSL's own purpose check (`ssl_client`) lets a CA certificate through as a TLS client as long as its
 * keyUsage includes digitalSignature, or it has none: a sub-CA's key, chaining to the client CA, would
 * then be a client like any other. The gateway refuses that itself, and repeats OpenSSL's keyUsage and
 * extendedKeyUsage rules, so the decision does not hang on a verify flag it does not set.
 */
import type { X509Certificate } from 'node:crypto';
import { DER, certificateExtensions, readTlv } from '../certs/der.js';
import { GatewayError } from '../errors.js';

/** id-kp-serverAuth (RFC 5280 §4.2.1.12). */
export const EKU_SERVER_AUTH = '1.3.6.1.5.5.7.3.1';
/** id-kp-clientAuth (RFC 5280 §4.2.1.12). */
export const EKU_CLIENT_AUTH = '1.3.6.1.5.5.7.3.2';
const OID_KEY_USAGE = '2.5.29.15';

/** keyUsage bits (RFC 5280 §4.2.1.3), as a mask over the first content octet of the BIT STRING. */
const KU_DIGITAL_SIGNATURE = 0x80;
const KU_KEY_AGREEMENT = 0x08;

/**
 * Refuses a certificate that verified against the client CA but is not meant to authenticate a TLS client:
 *
 * - basicConstraints CA:TRUE: a CA's key signs certificates; it is not a client;
 * - a keyUsage that permits neither digitalSignature nor keyAgreement (e.g. keyCertSign/cRLSign only): the
 *   key may not sign a TLS CertificateVerify (RFC 8446 §4.4.3);
 * - an extendedKeyUsage without clientAuth (when the extension is present; anyExtendedKeyUsage does not
 *   count, as in OpenSSL).
 *
 * A certificate with neither keyUsage nor extendedKeyUsage passes, as it does in OpenSSL.
 *
 * @throws GatewayError `ERR_IDENTITY_BAD_CLIENT_CERT` naming the rule (for the log, never the peer); also when
 *   the certificate's extensions cannot be read exactly (fail closed).
 */
export function assertClientCertificatePurpose(cert: X509Certificate): void {
  if (cert.ca) refuse('a CA certificate (basicConstraints CA:TRUE) is not a client identity');
  const keyUsage = keyUsageOctet(cert);
  if (keyUsage !== undefined && (keyUsage & (KU_DIGITAL_SIGNATURE | KU_KEY_AGREEMENT)) === 0)
    refuse('its keyUsage permits neither digitalSignature nor keyAgreement (a CA or CRL signing key is not a client)');
  const eku = cert.keyUsage; // Node's name for the extendedKeyUsage OIDs; undefined without the extension
  if (eku !== undefined && !eku.includes(EKU_CLIENT_AUTH)) refuse('its extendedKeyUsage does not include clientAuth');
}

/**
 * Why `cert` cannot serve as a TLS server certificate, or undefined when it can: an extendedKeyUsage that is
 * present without serverAuth makes every TLS client refuse the handshake (RFC 5280 §4.2.1.12; OpenSSL's
 * `ssl_server` purpose).
 */
export function serverCertificateProblem(cert: X509Certificate): string | undefined {
  const eku = cert.keyUsage;
  if (eku === undefined || eku.includes(EKU_SERVER_AUTH)) return undefined;
  return `its extendedKeyUsage lacks serverAuth (${EKU_SERVER_AUTH}; it lists ${eku.length === 0 ? 'nothing' : eku.join(', ')}): TLS clients would refuse it`;
}

/** The first octet of the keyUsage bits (every bit the check reads), or undefined without the extension. */
function keyUsageOctet(cert: X509Certificate): number | undefined {
  let value: Uint8Array | undefined;
  try {
    value = certificateExtensions(cert.raw).get(OID_KEY_USAGE);
    if (value === undefined) return undefined;
    const bits = readTlv(value, 0);
    if (bits.tag !== DER.BIT_STRING || bits.end !== value.length) throw new Error('keyUsage is not a BIT STRING');
    // First content octet: the count of unused bits; an empty bit string sets nothing.
    return bits.end - bits.contentStart > 1 ? (value[bits.contentStart + 1] ?? 0) : 0;
  } catch (err) {
    throw new GatewayError('ERR_IDENTITY_BAD_CLIENT_CERT', 'its extensions cannot be read', { cause: err });
  }
}

function refuse(detail: string): never {
  throw new GatewayError('ERR_IDENTITY_BAD_CLIENT_CERT', `client certificate refused: ${detail}`);
}
