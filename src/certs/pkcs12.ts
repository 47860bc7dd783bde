/**
 * A PKCS#12 bundle (RFC 7292) of a client certificate, its key and the CA: what a browser or an OS keychain
 * imports to present the certificate. Encrypted with a passphrase (PBE-SHA1-3DES for the key and the
 * certificates, an HMAC-SHA1 integrity check): the one scheme every importer reads, OpenSSL 3 included
 * without its legacy provider. node-forge, as the rest of the PKI (RSA keys).
 */
import forge from 'node-forge';

/**
 * The DER bytes of a PKCS#12 bundle holding `keyPem`, `certPem` (with `friendlyName`) and `caPem`.
 * @throws Error when the passphrase is empty or a PEM is not an RSA key or a certificate.
 */
export function pkcs12Bundle(opts: {
  readonly certPem: string;
  readonly keyPem: string;
  readonly caPem: string;
  readonly passphrase: string;
  readonly friendlyName: string;
}): Buffer {
  if (opts.passphrase === '') throw new Error('a PKCS#12 bundle needs a passphrase');
  const key = forge.pki.privateKeyFromPem(opts.keyPem);
  const cert = forge.pki.certificateFromPem(opts.certPem);
  const ca = forge.pki.certificateFromPem(opts.caPem);
  const asn1 = forge.pkcs12.toPkcs12Asn1(key, [cert, ca], opts.passphrase, {
    algorithm: '3des',
    friendlyName: opts.friendlyName,
    generateLocalKeyId: true,
  });
  return Buffer.from(forge.asn1.toDer(asn1).getBytes(), 'binary');
}
