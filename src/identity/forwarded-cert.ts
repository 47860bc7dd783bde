/**
 * A client certificate that a proxy in front verified and forwarded in a header (nginx
 * `$ssl_client_escaped_cert`: URL-escaped PEM; Caddy `{http.request.tls.client.certificate_der_base64}`:
 * base64 DER), checked again here before it becomes the request's client identity: the decision listener
 * never takes the proxy's word for who the client is, only for what it was shown. The checks are the ones a
 * TLS listener's handshake makes: issued and signed by a CA of the listener's bundle, valid now, not revoked
 * by its CRLs (nor judged while a CRL is past its nextUpdate), and fit to be a client (identity/purpose.ts).
 */
import { X509Certificate } from 'node:crypto';
import { normalizeSerialHex } from '../certs/pki.js';
import { GatewayError } from '../errors.js';
import { formatXfcc } from '../mutate/xfcc.js';
import { peerIdentityFromX509, type PeerIdentity } from './peer.js';
import { assertClientCertificatePurpose } from './purpose.js';

/** Longest header value read: a client certificate with a long chain of SANs stays well under 16 KiB. */
export const MAX_FORWARDED_CERT_CHARS = 16 * 1024;

/** A forwarded certificate that passed every check. */
export interface ForwardedIdentity {
  readonly identity: PeerIdentity;
  /** `X-Forwarded-Client-Cert` of it (Envoy format), as a TLS listener computes it. */
  readonly xfcc: string;
  /** notAfter, ms since the epoch. */
  readonly validToMs: number;
}

/** Checks forwarded certificates against one CA bundle and CRL set. */
export interface ForwardedCertVerifier {
  /**
   * The identity of the certificate in header value `value`.
   * @throws GatewayError `ERR_IDENTITY_REVOKED_CLIENT_CERT` when a CRL revokes it, else
   *   `ERR_IDENTITY_BAD_CLIENT_CERT` (unreadable, unknown issuer, bad signature, expired, not yet valid, a CA or
   *   a certificate not for TLS clients, or a CRL past its nextUpdate), the reason in the error's detail.
   */
  verify(value: string, nowMs: number): ForwardedIdentity;
}

/** What the verifier is made from (config/runtime.ts `ForwardedCertificateTrust`). */
export interface ForwardedCertTrust {
  readonly caPem: string;
  readonly revokedSerials: readonly string[];
  readonly crlNextUpdateMs: number | undefined;
}

const PEM_CERT_RE = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;

function bad(detail: string): never {
  throw new GatewayError('ERR_IDENTITY_BAD_CLIENT_CERT', `forwarded certificate: ${detail}`);
}

/** The certificate of a header value: URL-escaped (or plain) PEM, or base64 DER. One certificate only. */
export function parseForwardedCertificate(value: string): X509Certificate {
  if (value.length > MAX_FORWARDED_CERT_CHARS) bad('too long');
  let text: string;
  try {
    text = decodeURIComponent(value).trim();
  } catch {
    bad('not URL-escaped');
  }
  if (text.startsWith('-----BEGIN')) {
    const blocks = text.match(PEM_CERT_RE) ?? [];
    // A chain would let the proxy (or a client through a misconfigured one) name an issuer: one leaf only.
    const [block] = blocks;
    if (block === undefined || blocks.length !== 1 || block.length !== text.length) bad('not exactly one PEM certificate');
    try {
      return new X509Certificate(block);
    } catch {
      bad('unreadable PEM');
    }
  }
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(text)) bad('neither PEM nor base64 DER');
  try {
    return new X509Certificate(Buffer.from(text, 'base64'));
  } catch {
    bad('unreadable DER');
  }
}

/** Makes the verifier of one decision listener: its CA bundle is parsed once. */
export function createForwardedCertVerifier(trust: ForwardedCertTrust): ForwardedCertVerifier {
  const cas = (trust.caPem.match(PEM_CERT_RE) ?? []).map((pem) => new X509Certificate(pem));
  const revoked = new Set(trust.revokedSerials);
  return {
    verify(value, nowMs) {
      const cert = parseForwardedCertificate(value);
      const issuer = cas.find((ca) => cert.checkIssued(ca) && cert.verify(ca.publicKey));
      if (issuer === undefined) bad('not issued by a CA of clientCa');
      const from = Date.parse(cert.validFrom);
      const to = Date.parse(cert.validTo);
      if (!(from <= nowMs)) bad('not yet valid');
      if (!(nowMs <= to)) bad('expired');
      if (trust.crlNextUpdateMs !== undefined && nowMs > trust.crlNextUpdateMs) bad('a CRL is past its nextUpdate');
      let serial: string;
      try {
        serial = normalizeSerialHex(cert.serialNumber);
      } catch {
        bad('unreadable serial number');
      }
      if (revoked.has(serial))
        throw new GatewayError('ERR_IDENTITY_REVOKED_CLIENT_CERT', `forwarded certificate serial ${serial}`);
      assertClientCertificatePurpose(cert);
      const identity = peerIdentityFromX509(cert);
      return { identity, xfcc: formatXfcc(identity), validToMs: to };
    },
  };
}
