/**
 * Peer identity: what a verified client certificate says about the caller.
 *
 * Computed once per connection from `tlsSocket.getPeerX509Certificate()` (see {@link peerIdentityFromX509}),
 * after the TLS layer verified the chain (`socket.authorized === true` is the caller's check, not this
 * module's). Everything here is pure: no I/O, no clock, regexes compiled once at module load.
 */

import type { X509Certificate } from 'node:crypto';
import type { DetailedPeerCertificate, PeerCertificate } from 'node:tls';
import { GatewayError } from '../errors.js';

/** The identity of the TLS peer, computed once per connection from a certificate the TLS layer verified. */
export interface PeerIdentity {
  /** Subject DN in RFC 4514 order and escaping, e.g. `CN=alice,OU=dev` (most specific first). */
  readonly subject: string;
  /** Every CN attribute value of the subject (usually one). */
  readonly commonNames: readonly string[];
  /** Every OU attribute value of the subject. */
  readonly organizationalUnits: readonly string[];
  /** DNS subjectAltName entries, as written in the certificate. */
  readonly dnsNames: readonly string[];
  /** URI subjectAltName entries (SPIFFE IDs among them), as written in the certificate. */
  readonly uris: readonly string[];
  /** SHA-256 of the DER certificate, lowercase hex without separators. */
  readonly fingerprint256: string;
  /** Serial number, uppercase hex. */
  readonly serialNumber: string;
  /** notAfter, epoch milliseconds. */
  readonly validToMs: number;
}

/** One subjectAltName entry as Node prints it: `type` is Node's label (`DNS`, `URI`, `IP Address`, ...). */
export interface SubjectAltNameEntry {
  readonly type: string;
  readonly value: string;
}

/**
 * Parses Node's `subjectaltname` string (from `getPeerCertificate()` or `X509Certificate#subjectAltName`)
 * into its entries, in certificate order.
 *
 * Node (since the CVE-2021-44532 fix, so every Node 20) prints entries as `TYPE:value` joined by `", "`. A
 * value that holds a comma, a quote, a backslash, an apostrophe or a control character is printed as a JSON
 * string literal instead, e.g. `URI:"spiffe://evil.example/x\u002c URI:spiffe://example.org/admin"`; a bare
 * value never contains a comma. The parser therefore never splits inside a quoted value and decodes a quoted
 * value with `JSON.parse`, so the example above is ONE URI whose value contains `, URI:`. A naive
 * `split(', ')` or `includes('URI:...')` would read two (threat model #20).
 *
 * For `DirName` and `othername`, Node puts the quote after the type (`othername:"XmppAddr:..."`): the value is
 * then the decoded literal including its inner prefix.
 *
 * @param s the `subjectaltname` string; `''` gives `[]`.
 * @throws GatewayError `ERR_IDENTITY_BAD_CLIENT_CERT` when the string is not in that format (fail closed:
 *   an entry that cannot be read exactly is never guessed at).
 */
export function parseSubjectAltName(s: string): SubjectAltNameEntry[] {
  const out: SubjectAltNameEntry[] = [];
  const n = s.length;
  if (n === 0) return out;
  let pos = 0;
  for (;;) {
    const colon = s.indexOf(':', pos);
    if (colon <= pos) throw badSan('entry without a type');
    const type = s.slice(pos, colon);
    if (!SAN_TYPE.test(type)) throw badSan('unexpected characters in an entry type');
    let value: string;
    let next: number;
    if (s.charCodeAt(colon + 1) === QUOTE) {
      // A JSON string literal: find its closing quote, skipping every backslash escape.
      let j = colon + 2;
      for (;;) {
        if (j >= n) throw badSan('unterminated quoted value');
        const c = s.charCodeAt(j);
        if (c === QUOTE) break;
        j += c === BACKSLASH ? 2 : 1;
      }
      try {
        value = JSON.parse(s.slice(colon + 1, j + 1)) as string;
      } catch (err) {
        throw badSan('invalid quoted value', err);
      }
      next = j + 1;
    } else {
      // A bare value: Node only prints values without commas bare, so it ends at the next comma.
      const comma = s.indexOf(',', colon + 1);
      next = comma === -1 ? n : comma;
      value = s.slice(colon + 1, next);
    }
    out.push({ type, value });
    if (next === n) return out;
    if (s.charCodeAt(next) !== COMMA || s.charCodeAt(next + 1) !== SPACE) {
      throw badSan('entries not separated by ", "');
    }
    pos = next + 2;
  }
}

/**
 * Builds the {@link PeerIdentity} of a TLS peer from `tlsSocket.getPeerCertificate()` (detailed or not).
 *
 * - `subject`: RFC 4514 string, most specific attribute first (Node's attribute order reversed, so `CN=`
 *   usually leads). Values are escaped per RFC 4514 §2.4: `,+"\<>;` get a backslash, as do a leading `#` or
 *   space and a trailing space; NUL and other control characters (0x01–0x1F, 0x7F) become `\XX` hex, as
 *   OpenSSL's RFC 2253 printer does, so the string stays on one line. A CN of `evil, O=admin` gives
 *   `CN=evil\, O=admin`, which no reader takes for an `O=admin` attribute (CVE-2021-44533, threat model #21).
 *   Node groups repeated attribute types into one array, so the interleaving of different types across RDNs
 *   is not recoverable and a multi-valued RDN (`CN=a+O=b`) is printed as separate RDNs.
 * - `commonNames`, `organizationalUnits`: the raw attribute values, unescaped, in certificate order.
 * - `dnsNames`, `uris`: the DNS and URI entries of {@link parseSubjectAltName}; other SAN types are dropped.
 * - `fingerprint256`: lowercase hex without colons; `serialNumber`: uppercase hex; `validToMs` from `valid_to`.
 *
 * The caller must have checked `socket.authorized === true`: this function reads, it does not verify.
 *
 * @throws GatewayError `ERR_IDENTITY_NO_CLIENT_CERT` when the object is the `{}` Node returns for a peer that
 *   sent no certificate; `ERR_IDENTITY_BAD_CLIENT_CERT` when a field cannot be read exactly (unparseable
 *   subjectAltName, fingerprint or date).
 */
export function peerIdentityFromCertificate(cert: DetailedPeerCertificate | PeerCertificate): PeerIdentity {
  // Runtime shape check: Node returns `{}` (typed as a full certificate) when the peer sent none.
  const rawFingerprint = (cert as Partial<PeerCertificate>).fingerprint256;
  if (typeof rawFingerprint !== 'string' || rawFingerprint === '') {
    throw new GatewayError('ERR_IDENTITY_NO_CLIENT_CERT', 'the peer certificate object is empty');
  }
  const fingerprint256 = rawFingerprint.replaceAll(':', '').toLowerCase();
  if (!SHA256_HEX.test(fingerprint256)) {
    throw new GatewayError('ERR_IDENTITY_BAD_CLIENT_CERT', 'fingerprint256 is not 32 bytes of hex');
  }

  const commonNames: string[] = [];
  const organizationalUnits: string[] = [];
  const rdns: string[] = [];
  const subject = (cert as Partial<PeerCertificate>).subject ?? {};
  for (const key of Object.keys(subject)) {
    const raw = subject[key];
    if (raw === undefined) continue;
    const values = typeof raw === 'string' ? [raw] : raw;
    for (const value of values) {
      if (typeof value !== 'string') continue;
      if (key === 'CN') commonNames.push(value);
      else if (key === 'OU') organizationalUnits.push(value);
      rdns.push(`${key}=${escapeRfc4514Value(value)}`);
    }
  }
  // RFC 4514 §2.1: the last RDN of the sequence is output first.
  rdns.reverse();

  const dnsNames: string[] = [];
  const uris: string[] = [];
  const san = (cert as Partial<PeerCertificate>).subjectaltname;
  if (typeof san === 'string') {
    for (const entry of parseSubjectAltName(san)) {
      if (entry.type === 'DNS') dnsNames.push(entry.value);
      else if (entry.type === 'URI') uris.push(entry.value);
    }
  }

  return {
    subject: rdns.join(','),
    commonNames,
    organizationalUnits,
    dnsNames,
    uris,
    fingerprint256,
    serialNumber: ((cert as Partial<PeerCertificate>).serialNumber ?? '').toUpperCase(),
    validToMs: parseOpenSslTime((cert as Partial<PeerCertificate>).valid_to),
  };
}

/**
 * Reads Node's `X509Certificate#subject` text back into the object `getPeerCertificate().subject` gives:
 * attribute short name (or dotted OID) → raw value, a repeated attribute as an array in certificate order,
 * keys in the order they first appear. {@link peerIdentityFromX509} uses it so that a connection's identity
 * does not need `getPeerCertificate()`, which builds the whole legacy object (three fingerprints, the public
 * key, the raw DER) on every handshake.
 *
 * Node prints the subject with OpenSSL's `X509_NAME_print_ex` and the flags ESC_2253, ESC_CTRL, UTF8_CONVERT,
 * SEP_MULTILINE and FN_SN: one RDN per line, the values of a multi-valued RDN joined by `" + "`, `KEY=value`
 * with no spaces around `=`; in a value, `,+"\<>;` and a leading `#` or space and a trailing space are
 * backslash-escaped, and a control character (including DEL) is `\XX` in hex, so neither a newline nor an
 * unescaped `" + "` can come from inside a value. Anything outside that grammar throws (fail closed): an
 * identity is never guessed at.
 *
 * @throws GatewayError `ERR_IDENTITY_BAD_CLIENT_CERT` when the text is not in that format.
 */
export function subjectFromX509Text(text: string): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = Object.create(null) as Record<string, string | string[]>;
  const n = text.length;
  let pos = 0;
  while (pos < n) {
    const eq = text.indexOf('=', pos);
    if (eq <= pos) throw badSubject('attribute without a name');
    const key = text.slice(pos, eq);
    if (!SUBJECT_KEY.test(key)) throw badSubject('unexpected characters in an attribute name');
    let value = '';
    let i = eq + 1;
    for (;;) {
      if (i >= n) break;
      const c = text.charCodeAt(i);
      if (c === NEWLINE) break;
      if (c === SPACE && text.startsWith(' + ', i)) break;
      if (c === BACKSLASH) {
        const next = text.charAt(i + 1);
        const hex = text.slice(i + 1, i + 3);
        if (HEX_PAIR.test(hex)) {
          value += String.fromCharCode(Number.parseInt(hex, 16));
          i += 3;
        } else if (next !== '' && ESCAPED_SPECIALS.includes(next)) {
          value += next;
          i += 2;
        } else {
          throw badSubject('unknown escape');
        }
        continue;
      }
      value += text.charAt(i);
      i += 1;
    }
    const prev = out[key];
    out[key] = prev === undefined ? value : typeof prev === 'string' ? [prev, value] : [...prev, value];
    if (i >= n) break;
    pos = i + (text.charCodeAt(i) === NEWLINE ? 1 : 3);
    if (pos >= n) throw badSubject('separator at the end');
  }
  return out;
}

/**
 * Builds the {@link PeerIdentity} of a TLS peer from `tlsSocket.getPeerX509Certificate()`: the same identity
 * {@link peerIdentityFromCertificate} builds from `getPeerCertificate()` (test/unit/identity/peer.test.ts
 * checks the two agree on hostile subjects), at a fraction of the cost per handshake. Same contract: the
 * caller has checked `socket.authorized === true`.
 *
 * @throws GatewayError `ERR_IDENTITY_BAD_CLIENT_CERT` when a field cannot be read exactly.
 */
export function peerIdentityFromX509(cert: X509Certificate): PeerIdentity {
  const legacyShape = {
    fingerprint256: cert.fingerprint256,
    subject: subjectFromX509Text(cert.subject),
    subjectaltname: cert.subjectAltName,
    serialNumber: cert.serialNumber,
    valid_to: cert.validTo,
  };
  return peerIdentityFromCertificate(legacyShape as unknown as PeerCertificate);
}

// ---------------------------------------------------------------------------------------------------------

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const NEWLINE = 0x0a;
const COMMA = 0x2c;
const SPACE = 0x20;

/** Node's SAN type labels: letters, digits and spaces (`IP Address`, `Registered ID`). */
const SAN_TYPE = /^[A-Za-z0-9 ]+$/;
const SHA256_HEX = /^[0-9a-f]{64}$/;
/** An attribute name as `X509_NAME_print_ex` writes it: a short name (`CN`, `OU`, `emailAddress`) or a dotted OID. */
const SUBJECT_KEY = /^(?:[A-Za-z][A-Za-z0-9_-]*|\d+(?:\.\d+)+)$/;
/** What follows a backslash in ESC_2253 output (`=` too, should an OpenSSL version escape it). */
const ESCAPED_SPECIALS = ',+"\\<>;# =';
const HEX_PAIR = /^[0-9A-Fa-f]{2}$/;

/** Anything that needs RFC 4514 escaping; values that do not match (the usual case) are returned as is. */
// eslint-disable-next-line no-control-regex -- control characters are exactly what must be escaped
const NEEDS_DN_ESCAPE = /[,+"\\<>;\x00-\x1f\x7f]|^[# ]| $/;
const HEX_DIGITS = '0123456789ABCDEF';

/** RFC 4514 §2.4 value escaping, plus `\XX` for control characters (see {@link peerIdentityFromCertificate}). */
function escapeRfc4514Value(value: string): string {
  if (!NEEDS_DN_ESCAPE.test(value)) return value;
  let out = '';
  const last = value.length - 1;
  for (let i = 0; i <= last; i++) {
    const ch = value.charAt(i);
    const c = value.charCodeAt(i);
    if (c < 0x20 || c === 0x7f) {
      out += `\\${HEX_DIGITS.charAt(c >> 4)}${HEX_DIGITS.charAt(c & 15)}`;
    } else if (
      ch === ',' ||
      ch === '+' ||
      ch === '"' ||
      ch === '\\' ||
      ch === '<' ||
      ch === '>' ||
      ch === ';' ||
      (i === 0 && (ch === '#' || ch === ' ')) ||
      (i === last && ch === ' ')
    ) {
      out += `\\${ch}`;
    } else {
      out += ch;
    }
  }
  return out;
}

const MONTHS: Readonly<Record<string, number>> = {
  Jan: 0,
  Feb: 1,
  Mar: 2,
  Apr: 3,
  May: 4,
  Jun: 5,
  Jul: 6,
  Aug: 7,
  Sep: 8,
  Oct: 9,
  Nov: 10,
  Dec: 11,
};

/** OpenSSL `ASN1_TIME_print` output, e.g. `Nov 22 18:13:08 2026 GMT` or `Jan  2 03:04:05.5 2049 GMT`. */
const OPENSSL_TIME = /^([A-Z][a-z]{2}) {1,2}(\d{1,2}) (\d{2}):(\d{2}):(\d{2})(\.\d+)? (\d{4}) GMT$/;

/** Parses Node's `valid_to` exactly (no engine-dependent `Date.parse`); throws rather than guess. */
function parseOpenSslTime(text: string | undefined): number {
  const m = typeof text === 'string' ? OPENSSL_TIME.exec(text) : null;
  const month = m?.[1] === undefined ? undefined : MONTHS[m[1]];
  if (m === null || month === undefined) {
    throw new GatewayError('ERR_IDENTITY_BAD_CLIENT_CERT', 'valid_to is not an OpenSSL time');
  }
  const fraction = m[6] === undefined ? 0 : Math.floor(Number(m[6]) * 1000);
  return Date.UTC(Number(m[7]), month, Number(m[2]), Number(m[3]), Number(m[4]), Number(m[5])) + fraction;
}

function badSubject(detail: string): GatewayError {
  return new GatewayError('ERR_IDENTITY_BAD_CLIENT_CERT', `subject: ${detail}`);
}

function badSan(detail: string, cause?: unknown): GatewayError {
  return new GatewayError(
    'ERR_IDENTITY_BAD_CLIENT_CERT',
    `subjectaltname: ${detail}`,
    cause === undefined ? undefined : { cause },
  );
}
