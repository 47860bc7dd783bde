/**
 * Pure PKI functions: a CA, server and client certificates, and CRLs, all as PEM strings.
 *
 * node-forge builds and signs the X.509 structures (it is RSA-only, so every key is RSA-2048); Node's
 * native crypto generates the keys because forge's JavaScript keygen is an order of magnitude slower.
 * forge has no CRL API, so CRLs are assembled here from `forge.asn1` (RFC 5280 §5.1).
 *
 * Nothing here touches the file system; `commands/certs.ts` owns files and modes.
 */
import { generateKeyPairSync, randomBytes, verify as cryptoVerify, X509Certificate } from 'node:crypto';
import { isIP } from 'node:net';
import forge from 'node-forge';
import { systemClock } from '../clock.js';

const { asn1, pki } = forge;
type Asn1 = forge.asn1.Asn1;

/** A certificate and its private key, both PEM (LF line endings), plus the certificate's serial number. */
export interface CertAndKey {
  /** `-----BEGIN CERTIFICATE-----` */
  certPem: string;
  /** PKCS#8 `-----BEGIN PRIVATE KEY-----`, unencrypted: callers must store it with mode 0600. */
  keyPem: string;
  /** Serial number as uppercase hex without leading zero bytes (the form Node's `X509Certificate.serialNumber` uses). */
  serialHex: string;
}

/** One entry of a CRL's revokedCertificates list. */
export interface RevokedEntry {
  serialHex: string;
  revokedAt: Date;
}

/** What {@link parseCrl} reads back from a CRL. */
export interface ParsedCrl {
  revoked: RevokedEntry[];
  crlNumber: number;
  thisUpdate: Date;
  /** Absent only when the CRL omits it (ours always carry it). */
  nextUpdate?: Date;
}

/** RSA modulus size in bits: 2048 is the floor every current TLS stack accepts, and keygen stays fast. */
const RSA_MODULUS_BITS = 2048;
/** Serial numbers are 16 random bytes (RFC 5280 §4.1.2.2: positive, at most 20 octets; CA/B BR: ≥ 64 bits of entropy). */
const SERIAL_BYTES = 16;
/**
 * notBefore is backdated by 5 minutes (ms) unless given explicitly, so a peer whose clock runs slightly
 * behind does not reject a certificate minted a moment ago.
 */
const NOT_BEFORE_BACKDATE_MS = 5 * 60 * 1000;
const DAY_MS = 24 * 60 * 60 * 1000;

// Object identifiers used when building structures by hand (RFC 5280 §4.2.1, §5.2; RFC 4055 §5).
const OID_SHA256_WITH_RSA = '1.2.840.113549.1.1.11';
const OID_AUTHORITY_KEY_IDENTIFIER = '2.5.29.35';
const OID_CRL_NUMBER = '2.5.29.20';
/** cRLNumber is an INTEGER up to 20 octets (RFC 5280 §5.2.3); forge's integer codec stops at 31 bits. */
const MAX_CRL_NUMBER = 0x7fffffff;
/** Context-specific tag number 0 (`[0]`): forge keeps tag numbers in the `type` field, typed as asn1.Type. */
const CONTEXT_TAG_0: forge.asn1.Type = asn1.Type.NONE;
/**
 * UTF8String as an attribute's `valueTagClass`: @types/node-forge declares that field as asn1.Class, but
 * forge stores the value's universal tag number (an asn1.Type) there.
 */
// eslint-disable-next-line @typescript-eslint/no-unsafe-enum-assignment -- the typings are wrong, see above
const UTF8_VALUE_TAG = asn1.Type.UTF8 as number as forge.asn1.Class;

// ---------------------------------------------------------------------------------------------------------
// Public API

/**
 * Creates a self-signed root CA: basicConstraints CA:true (critical), keyUsage keyCertSign + cRLSign
 * (critical, so OpenSSL accepts its CRLs), subjectKeyIdentifier (which issued certificates and CRLs point
 * back to through authorityKeyIdentifier).
 *
 * @throws Error when `days` is not a positive integer or `commonName` is empty.
 */
export function createCa(opts: { commonName: string; days: number; now?: Date }): CertAndKey {
  requireNonEmpty(opts.commonName, 'commonName');
  const now = opts.now ?? currentDate();
  const key = generateRsaKey();
  const cert = pki.createCertificate();
  const serialHex = randomSerialHex();
  cert.serialNumber = serialHex;
  cert.publicKey = key.forgePublic;
  setValidity(cert, defaultNotBefore(now), addDays(now, requireDays(opts.days, 'days')));
  const subject = [utf8Attr('commonName', opts.commonName)];
  cert.setSubject(subject);
  cert.setIssuer(subject);
  cert.setExtensions([
    { name: 'basicConstraints', cA: true, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
    { name: 'subjectKeyIdentifier' },
  ]);
  cert.sign(key.forgePrivate, forge.md.sha256.create());
  return { certPem: certToPem(cert), keyPem: key.pem, serialHex };
}

/**
 * Issues a TLS server certificate signed by `ca`. Each host becomes a subjectAltName: an IP address entry
 * for an IPv4/IPv6 literal (brackets around IPv6 are accepted and dropped), a DNS entry otherwise —
 * clients match the SAN, never the CN (RFC 6125 §6.4.4). EKU serverAuth; keyUsage digitalSignature +
 * keyEncipherment (critical).
 *
 * @param opts.commonName defaults to the first host.
 * @param opts.clientAuth adds EKU clientAuth: a certificate that both listens and connects with one
 *   identity, as a Dask scheduler or worker does.
 * @throws Error when `hosts` is empty or holds an invalid name, `days` is not a positive integer, or the
 *   CA's key does not match its certificate.
 */
export function issueServerCert(
  ca: CertAndKey,
  opts: { commonName?: string; hosts: readonly string[]; days: number; now?: Date; clientAuth?: boolean },
): CertAndKey {
  if (opts.hosts.length === 0)
    throw new Error('issueServerCert: hosts must name at least one DNS name or IP address');
  const altNames = opts.hosts.map(hostAltName);
  const now = opts.now ?? currentDate();
  const firstHost = opts.hosts[0] ?? '';
  return issueLeaf(ca, {
    subject: [utf8Attr('commonName', opts.commonName ?? stripBrackets(firstHost))],
    altNames,
    notBefore: defaultNotBefore(now),
    notAfter: addDays(now, requireDays(opts.days, 'days')),
    keyUsage: { digitalSignature: true, keyEncipherment: true },
    extKeyUsage: opts.clientAuth === true ? { serverAuth: true, clientAuth: true } : { serverAuth: true },
  });
}

/**
 * Issues a TLS client certificate signed by `ca`: subject CN (and OU when given), optional URI SANs
 * (e.g. SPIFFE IDs) and DNS SANs, EKU clientAuth, keyUsage digitalSignature (critical).
 *
 * Validity is `notBefore` (default: now minus a few minutes) to `notAfter` (default: now + `days`); the
 * explicit dates win over `days`, so tests can mint expired or not-yet-valid certificates.
 *
 * @throws Error when neither `days` nor `notAfter` is given, when notAfter is not after notBefore, when a
 *   URI is not an absolute ASCII URI, or when the CA's key does not match its certificate.
 */
export function issueClientCert(
  ca: CertAndKey,
  opts: {
    commonName: string;
    organizationalUnit?: string;
    uris?: readonly string[];
    dnsNames?: readonly string[];
    days?: number;
    notBefore?: Date;
    notAfter?: Date;
    now?: Date;
  },
): CertAndKey {
  requireNonEmpty(opts.commonName, 'commonName');
  const now = opts.now ?? currentDate();
  let notAfter = opts.notAfter;
  if (notAfter === undefined) {
    if (opts.days === undefined) throw new Error('issueClientCert: give days or notAfter');
    notAfter = addDays(now, requireDays(opts.days, 'days'));
  }
  const subject = [utf8Attr('commonName', opts.commonName)];
  if (opts.organizationalUnit !== undefined) {
    requireNonEmpty(opts.organizationalUnit, 'organizationalUnit');
    subject.push(utf8Attr('organizationalUnitName', opts.organizationalUnit));
  }
  const altNames: AltName[] = [
    ...(opts.uris ?? []).map(uriAltName),
    ...(opts.dnsNames ?? []).map((name) => dnsAltName(name)),
  ];
  return issueLeaf(ca, {
    subject,
    altNames,
    notBefore: opts.notBefore ?? defaultNotBefore(now),
    notAfter,
    keyUsage: { digitalSignature: true },
    extKeyUsage: { clientAuth: true },
  });
}

/**
 * Builds a v2 CRL signed by `ca` (SHA-256 with RSA, PKCS#1 v1.5) and returns it as
 * `-----BEGIN X509 CRL-----` PEM, in the form OpenSSL (and so Node's `tls` `crl` option) accepts:
 * issuer = the CA certificate's subject, byte for byte; thisUpdate/nextUpdate as UTCTime (GeneralizedTime
 * from 2050, RFC 5280 §5.1.2.4); revokedCertificates only when non-empty (an empty SEQUENCE is invalid
 * DER for it); crlExtensions authorityKeyIdentifier (the CA's subjectKeyIdentifier) and cRLNumber.
 *
 * Duplicate serials are listed once (the first entry wins).
 *
 * @param opts.nextUpdate wins over `opts.days`; one of them is required, because a CRL with a stale
 *   nextUpdate makes OpenSSL reject every client, so its lifetime is always a deliberate choice.
 * @throws Error on a malformed serial, a crlNumber outside 0..2^31-1, a nextUpdate not after thisUpdate,
 *   or a CA key that does not match its certificate.
 */
export function createCrl(
  ca: CertAndKey,
  opts: {
    revoked: readonly RevokedEntry[];
    crlNumber: number;
    thisUpdate?: Date;
    nextUpdate?: Date;
    days?: number;
  },
): string {
  const { certAsn1, privateKey, subjectKeyId } = loadCa(ca);
  if (!Number.isInteger(opts.crlNumber) || opts.crlNumber < 0 || opts.crlNumber > MAX_CRL_NUMBER) {
    throw new Error(`createCrl: crlNumber must be an integer in 0..${MAX_CRL_NUMBER}, got ${opts.crlNumber}`);
  }
  const thisUpdate = truncateToSecond(opts.thisUpdate ?? currentDate());
  let nextUpdate = opts.nextUpdate;
  if (nextUpdate === undefined) {
    if (opts.days === undefined) throw new Error('createCrl: give nextUpdate or days');
    nextUpdate = addDays(thisUpdate, requireDays(opts.days, 'days'));
  }
  nextUpdate = truncateToSecond(nextUpdate);
  if (nextUpdate.getTime() <= thisUpdate.getTime()) {
    throw new Error('createCrl: nextUpdate must be after thisUpdate');
  }

  const seen = new Set<string>();
  const entries: Asn1[] = [];
  for (const entry of opts.revoked) {
    const serial = normalizeSerialHex(entry.serialHex);
    if (seen.has(serial)) continue;
    seen.add(serial);
    entries.push(
      seq([
        prim(asn1.Type.INTEGER, serialToIntegerBytes(serial)),
        timeAsn1(truncateToSecond(entry.revokedAt)),
      ]),
    );
  }

  const algorithm = seq([oid(OID_SHA256_WITH_RSA), prim(asn1.Type.NULL, '')]);
  const crlExtensions = seq([
    // RFC 5280 §5.2.1: conforming CAs MUST include authorityKeyIdentifier in all CRLs.
    extension(
      OID_AUTHORITY_KEY_IDENTIFIER,
      seq([asn1.create(asn1.Class.CONTEXT_SPECIFIC, CONTEXT_TAG_0, false, subjectKeyId)]),
    ),
    // RFC 5280 §5.2.3: MUST include cRLNumber, monotonically increasing.
    extension(OID_CRL_NUMBER, prim(asn1.Type.INTEGER, asn1.integerToDer(opts.crlNumber).getBytes())),
  ]);
  const tbsCertList = seq([
    prim(asn1.Type.INTEGER, asn1.integerToDer(1).getBytes()), // version v2 (extensions present)
    algorithm,
    certSubjectAsn1(certAsn1),
    timeAsn1(thisUpdate),
    timeAsn1(nextUpdate),
    ...(entries.length > 0 ? [seq(entries)] : []),
    asn1.create(asn1.Class.CONTEXT_SPECIFIC, CONTEXT_TAG_0, true, [crlExtensions]),
  ]);

  const md = forge.md.sha256.create();
  md.update(asn1.toDer(tbsCertList).getBytes());
  const signature = privateKey.sign(md, 'RSASSA-PKCS1-V1_5');
  const certificateList = seq([
    tbsCertList,
    algorithm,
    prim(asn1.Type.BITSTRING, String.fromCharCode(0) + signature), // 0 unused bits
  ]);
  return toPem('X509 CRL', asn1.toDer(certificateList).getBytes());
}

/**
 * Reads a PEM CRL back: revoked entries, cRLNumber (0 when absent), thisUpdate and nextUpdate.
 * Does not check the signature: use {@link verifyCrlSignature} for that.
 *
 * @throws Error when the text is not one well-formed `X509 CRL` PEM block.
 */
export function parseCrl(crlPem: string): ParsedCrl {
  const blocks = decodePem(crlPem);
  const block = blocks[0];
  if (blocks.length !== 1 || block === undefined || block.type !== 'X509 CRL') {
    throw new Error('not a single PEM "X509 CRL" block');
  }
  const certList = children(asn1.fromDer(block.body));
  const tbs = children(at(certList, 0));
  let index = 0;
  const first = at(tbs, index);
  if (first.tagClass === asn1.Class.UNIVERSAL && first.type === asn1.Type.INTEGER) index += 1; // version
  index += 2; // signature AlgorithmIdentifier, issuer Name
  const thisUpdate = timeToDate(at(tbs, index));
  index += 1;
  const result: ParsedCrl = { revoked: [], crlNumber: 0, thisUpdate };
  let node = tbs[index];
  if (node !== undefined && isTime(node)) {
    result.nextUpdate = timeToDate(node);
    index += 1;
    node = tbs[index];
  }
  if (node !== undefined && node.tagClass === asn1.Class.UNIVERSAL && node.type === asn1.Type.SEQUENCE) {
    for (const entry of children(node)) {
      const fields = children(entry);
      result.revoked.push({
        serialHex: normalizeSerialHex(forge.util.bytesToHex(bytesOf(at(fields, 0)))),
        revokedAt: timeToDate(at(fields, 1)),
      });
    }
    index += 1;
    node = tbs[index];
  }
  if (node !== undefined && node.tagClass === asn1.Class.CONTEXT_SPECIFIC && node.type === CONTEXT_TAG_0) {
    for (const ext of children(at(children(node), 0))) {
      const fields = children(ext);
      if (asn1.derToOid(bytesOf(at(fields, 0))) !== OID_CRL_NUMBER) continue;
      const value = asn1.fromDer(bytesOf(at(fields, fields.length - 1)));
      result.crlNumber = asn1.derToInteger(bytesOf(value));
    }
  }
  return result;
}

/** The revoked entries of a PEM CRL (see {@link parseCrl}), so `revoke` can add to an existing list. */
export function parseCrlRevoked(crlPem: string): RevokedEntry[] {
  return parseCrl(crlPem).revoked;
}

/** The cRLNumber of a PEM CRL (0 when it has none), so the next CRL can carry a larger one. */
export function crlNumberOf(crlPem: string): number {
  return parseCrl(crlPem).crlNumber;
}

/**
 * Whether `crlPem` carries a valid SHA-256/RSA signature by the key of `caCertPem`. Lets callers refuse
 * to extend a CRL that some other CA signed (a re-initialised CA with a leftover `ca.crl`).
 * Returns false (never throws) for a malformed CRL.
 */
export function verifyCrlSignature(crlPem: string, caCertPem: string): boolean {
  try {
    const block = decodePem(crlPem)[0];
    if (block === undefined || block.type !== 'X509 CRL') return false;
    const parts = children(asn1.fromDer(block.body));
    const tbsDer = asn1.toDer(at(parts, 0)).getBytes();
    const algorithm = children(at(parts, 1));
    if (asn1.derToOid(bytesOf(at(algorithm, 0))) !== OID_SHA256_WITH_RSA) return false;
    const signature = bytesOf(at(parts, 2)).slice(1); // drop the unused-bits octet
    return cryptoVerify(
      'sha256',
      Buffer.from(tbsDer, 'binary'),
      new X509Certificate(caCertPem).publicKey,
      Buffer.from(signature, 'binary'),
    );
  } catch {
    return false;
  }
}

/** The serial number of a PEM certificate, normalised like {@link CertAndKey.serialHex}. */
export function certSerialHex(certPem: string): string {
  return normalizeSerialHex(new X509Certificate(certPem).serialNumber);
}

/**
 * Canonical form of a serial number in hex: uppercase, leading zero bytes removed, even length.
 *
 * @throws Error when the input is not hex or is zero (RFC 5280 §4.1.2.2: serials are positive).
 */
export function normalizeSerialHex(serialHex: string): string {
  if (!/^[0-9A-Fa-f]+$/.test(serialHex)) throw new Error(`invalid serial number "${serialHex}"`);
  let hex = serialHex.toUpperCase().replace(/^0+/, '');
  if (hex === '') throw new Error('invalid serial number 0');
  if (hex.length % 2 === 1) hex = `0${hex}`;
  return hex;
}

// ---------------------------------------------------------------------------------------------------------
// Certificates

interface AltName {
  type: 2 | 6 | 7; // dNSName, uniformResourceIdentifier, iPAddress (RFC 5280 §4.2.1.6)
  value: string; // IA5String text, or raw address bytes for type 7
}

interface GeneratedKey {
  pem: string;
  forgePrivate: forge.pki.rsa.PrivateKey;
  forgePublic: forge.pki.rsa.PublicKey;
}

interface LoadedCa {
  cert: forge.pki.Certificate;
  certAsn1: Asn1;
  privateKey: forge.pki.rsa.PrivateKey;
  /** Raw bytes of the CA's subjectKeyIdentifier. */
  subjectKeyId: string;
}

function issueLeaf(
  ca: CertAndKey,
  spec: {
    subject: forge.pki.CertificateField[];
    altNames: AltName[];
    notBefore: Date;
    notAfter: Date;
    keyUsage: Record<string, boolean>;
    extKeyUsage: Record<string, boolean>;
  },
): CertAndKey {
  const loaded = loadCa(ca);
  const key = generateRsaKey();
  const cert = pki.createCertificate();
  const serialHex = randomSerialHex();
  cert.serialNumber = serialHex;
  cert.publicKey = key.forgePublic;
  setValidity(cert, spec.notBefore, spec.notAfter);
  cert.setSubject(spec.subject);
  cert.setIssuer(issuerAttributes(loaded.cert));
  const extensions: object[] = [
    { name: 'basicConstraints', cA: false },
    { name: 'keyUsage', critical: true, ...spec.keyUsage },
    { name: 'extKeyUsage', ...spec.extKeyUsage },
  ];
  if (spec.altNames.length > 0) extensions.push({ name: 'subjectAltName', altNames: spec.altNames });
  extensions.push(
    { name: 'subjectKeyIdentifier' },
    { name: 'authorityKeyIdentifier', keyIdentifier: loaded.subjectKeyId },
  );
  cert.setExtensions(extensions);
  cert.sign(loaded.privateKey, forge.md.sha256.create());
  return { certPem: certToPem(cert), keyPem: key.pem, serialHex };
}

/** Parses the CA pair and checks that the key belongs to the certificate (a mismatch would mint unverifiable certs). */
function loadCa(ca: CertAndKey): LoadedCa {
  const cert = pki.certificateFromPem(ca.certPem);
  const privateKey = pki.privateKeyFromPem(ca.keyPem);
  const publicKey = cert.publicKey as Partial<forge.pki.rsa.PublicKey>;
  if (publicKey.n === undefined || publicKey.n.compareTo(privateKey.n) !== 0) {
    throw new Error('CA private key does not match the CA certificate');
  }
  // The DER as written, not forge's re-encoding: the CRL issuer must repeat the CA subject exactly.
  const certAsn1 = asn1.fromDer(decodePem(ca.certPem)[0]?.body ?? '');
  return { cert, certAsn1, privateKey, subjectKeyId: subjectKeyIdOf(cert) };
}

/** The CA's subjectKeyIdentifier bytes, or the RFC 5280 §4.2.1.2 (1) SHA-1 key hash forge uses when it has none. */
function subjectKeyIdOf(cert: forge.pki.Certificate): string {
  const ext: unknown = cert.getExtension('subjectKeyIdentifier');
  if (typeof ext === 'object' && ext !== null && 'subjectKeyIdentifier' in ext) {
    const hex = ext.subjectKeyIdentifier;
    if (typeof hex === 'string' && hex !== '') return forge.util.hexToBytes(hex);
  }
  return cert.generateSubjectKeyIdentifier().getBytes();
}

/**
 * The CA subject as attributes for a new certificate's issuer. forge keeps parsed values as raw bytes but
 * UTF-8-encodes UTF8String values again when writing, so those are decoded first: otherwise a non-ASCII
 * CA name would not match and chain building would fail.
 */
function issuerAttributes(caCert: forge.pki.Certificate): forge.pki.CertificateField[] {
  return caCert.subject.attributes.map((attr) =>
    attr.valueTagClass === UTF8_VALUE_TAG && typeof attr.value === 'string'
      ? { ...attr, value: forge.util.decodeUtf8(attr.value) }
      : attr,
  );
}

/** The subject Name node of a certificate, exactly as encoded (CRL issuer must match it). */
function certSubjectAsn1(certAsn1: Asn1): Asn1 {
  const tbs = children(at(children(certAsn1), 0));
  // TBSCertificate: [0] version (optional), serialNumber, signature, issuer, validity, subject, ...
  const offset = at(tbs, 0).tagClass === asn1.Class.CONTEXT_SPECIFIC ? 1 : 0;
  return at(tbs, offset + 4);
}

function generateRsaKey(): GeneratedKey {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', {
    modulusLength: RSA_MODULUS_BITS,
    publicExponent: 0x10001,
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
    publicKeyEncoding: { type: 'spki', format: 'pem' },
  });
  return {
    pem: privateKey,
    forgePrivate: pki.privateKeyFromPem(privateKey),
    forgePublic: pki.publicKeyFromPem(publicKey),
  };
}

/** 16 random bytes, top bit cleared (positive INTEGER) and first byte non-zero (minimal DER, fixed length). */
function randomSerialHex(): string {
  const bytes = randomBytes(SERIAL_BYTES);
  let first = (bytes[0] ?? 0) & 0x7f;
  while (first === 0) first = (randomBytes(1)[0] ?? 0) & 0x7f;
  bytes[0] = first;
  return bytes.toString('hex').toUpperCase();
}

function setValidity(cert: forge.pki.Certificate, notBefore: Date, notAfter: Date): void {
  if (Number.isNaN(notBefore.getTime()) || Number.isNaN(notAfter.getTime()))
    throw new Error('invalid validity date');
  if (notAfter.getTime() <= notBefore.getTime()) throw new Error('notAfter must be after notBefore');
  cert.validity.notBefore = truncateToSecond(notBefore);
  cert.validity.notAfter = truncateToSecond(notAfter);
}

function utf8Attr(name: 'commonName' | 'organizationalUnitName', value: string): forge.pki.CertificateField {
  // RFC 5280 §4.1.2.4: new certificates encode DirectoryString as UTF8String.
  return { name, value, valueTagClass: UTF8_VALUE_TAG };
}

function hostAltName(host: string): AltName {
  const bare = stripBrackets(host);
  const family = isIP(bare);
  if (family === 4 || family === 6) {
    if (bare.includes('%'))
      throw new Error(`IPv6 zone identifiers have no place in a certificate: "${host}"`);
    return { type: 7, value: ipToBytes(bare, family) };
  }
  if (bare !== host) throw new Error(`"${host}" is not an IP address`);
  return dnsAltName(host);
}

function dnsAltName(name: string): AltName {
  // Letters, digits, hyphen, underscore in dot-separated labels; an optional leading "*." wildcard.
  const label = '[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?';
  if (name.length > 253 || !new RegExp(`^(?:\\*\\.)?${label}(?:\\.${label})*$`).test(name)) {
    throw new Error(`invalid DNS name "${name}"`);
  }
  return { type: 2, value: name };
}

function uriAltName(uri: string): AltName {
  // IA5String: printable ASCII only; RFC 5280 §4.2.1.6: an absolute URI with a scheme.
  if (!/^[\x21-\x7e]+$/.test(uri) || !URL.canParse(uri)) throw new Error(`invalid URI "${uri}"`);
  return { type: 6, value: uri };
}

/** Address bytes in network order; `family` comes from `net.isIP`, so the text is already valid. */
function ipToBytes(ip: string, family: 4 | 6): string {
  if (family === 4) return String.fromCharCode(...ip.split('.').map((part) => Number.parseInt(part, 10)));
  let text = ip;
  const lastColon = text.lastIndexOf(':');
  const tail = text.slice(lastColon + 1);
  if (tail.includes('.')) {
    // An embedded IPv4 tail (::ffff:192.0.2.1) becomes the last two 16-bit groups.
    const [a = 0, b = 0, c = 0, d = 0] = tail.split('.').map((part) => Number.parseInt(part, 10));
    text = `${text.slice(0, lastColon + 1)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const halves = text.split('::');
  const head = halves[0] === undefined || halves[0] === '' ? [] : halves[0].split(':');
  const rest = halves[1] === undefined || halves[1] === '' ? [] : halves[1].split(':');
  const groups =
    halves.length === 2
      ? [...head, ...Array<string>(8 - head.length - rest.length).fill('0'), ...rest]
      : head;
  const out = Buffer.alloc(16);
  groups.forEach((group, i) => out.writeUInt16BE(Number.parseInt(group, 16), i * 2));
  return out.toString('binary');
}

function stripBrackets(host: string): string {
  return host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
}

function certToPem(cert: forge.pki.Certificate): string {
  return toPem('CERTIFICATE', asn1.toDer(pki.certificateToAsn1(cert)).getBytes());
}

// ---------------------------------------------------------------------------------------------------------
// ASN.1 helpers

function seq(items: Asn1[]): Asn1 {
  return asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SEQUENCE, true, items);
}

function prim(type: forge.asn1.Type, bytes: string): Asn1 {
  return asn1.create(asn1.Class.UNIVERSAL, type, false, bytes);
}

function oid(dotted: string): Asn1 {
  return prim(asn1.Type.OID, asn1.oidToDer(dotted).getBytes());
}

/** Extension ::= SEQUENCE { extnID, critical DEFAULT FALSE (omitted: DER), extnValue OCTET STRING }. */
function extension(extnId: string, value: Asn1): Asn1 {
  return seq([oid(extnId), prim(asn1.Type.OCTETSTRING, asn1.toDer(value).getBytes())]);
}

/** RFC 5280 §5.1.2.4: UTCTime through 2049, GeneralizedTime from 2050. */
function timeAsn1(date: Date): Asn1 {
  return date.getUTCFullYear() < 2050
    ? prim(asn1.Type.UTCTIME, asn1.dateToUtcTime(date))
    : prim(asn1.Type.GENERALIZEDTIME, asn1.dateToGeneralizedTime(date));
}

function isTime(node: Asn1): boolean {
  return (
    node.tagClass === asn1.Class.UNIVERSAL &&
    (node.type === asn1.Type.UTCTIME || node.type === asn1.Type.GENERALIZEDTIME)
  );
}

function timeToDate(node: Asn1): Date {
  if (!isTime(node)) throw new Error('malformed CRL: expected a Time');
  const text = bytesOf(node);
  return node.type === asn1.Type.UTCTIME ? asn1.utcTimeToDate(text) : asn1.generalizedTimeToDate(text);
}

/** INTEGER content octets for a positive serial: a 0x00 pad when the top bit is set (two's complement). */
function serialToIntegerBytes(normalizedHex: string): string {
  const bytes = forge.util.hexToBytes(normalizedHex);
  return bytes.charCodeAt(0) >= 0x80 ? String.fromCharCode(0) + bytes : bytes;
}

function children(node: Asn1): Asn1[] {
  if (!Array.isArray(node.value)) throw new Error('malformed ASN.1: expected a constructed value');
  return node.value;
}

function bytesOf(node: Asn1): string {
  if (typeof node.value !== 'string') throw new Error('malformed ASN.1: expected a primitive value');
  return node.value;
}

function at(nodes: Asn1[], index: number): Asn1 {
  const node = nodes[index];
  if (node === undefined) throw new Error('malformed ASN.1: structure too short');
  return node;
}

function decodePem(text: string): forge.pem.ObjectPEM[] {
  try {
    return forge.pem.decode(text);
  } catch (error) {
    throw new Error(`malformed PEM: ${error instanceof Error ? error.message : String(error)}`);
  }
}

/** PEM with LF line endings (forge writes CRLF); OpenSSL and Node read either. */
function toPem(type: string, der: string): string {
  return forge.pem.encode({ type, body: der }).replace(/\r\n/g, '\n');
}

// ---------------------------------------------------------------------------------------------------------
// Small checks and dates

function currentDate(): Date {
  return new Date(systemClock.now());
}

function defaultNotBefore(now: Date): Date {
  return new Date(now.getTime() - NOT_BEFORE_BACKDATE_MS);
}

function addDays(date: Date, days: number): Date {
  return new Date(date.getTime() + days * DAY_MS);
}

/** X.509 times have one-second resolution: keep the Date we report equal to what was encoded. */
function truncateToSecond(date: Date): Date {
  return new Date(Math.floor(date.getTime() / 1000) * 1000);
}

function requireDays(days: number, name: string): number {
  if (!Number.isInteger(days) || days <= 0)
    throw new Error(`${name} must be a positive integer, got ${days}`);
  return days;
}

function requireNonEmpty(value: string, name: string): void {
  if (value.trim() === '') throw new Error(`${name} must not be empty`);
}
