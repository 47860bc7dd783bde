/**
 * A minimal DER reader (ITU-T X.690 §8.1, §10.1): enough to walk a certificate or a CRL that OpenSSL has
 * already parsed and pick out one field, without building a whole object tree on every handshake. Only the
 * low tag-number form and definite lengths up to 4 octets (DER's only forms for X.509) are read; anything
 * else throws, so a caller never acts on a structure it read halfway.
 */

/** One TLV inside a buffer: its tag octet and where it, and its content, start and end. */
export interface Tlv {
  /** The identifier octet, e.g. 0x30 SEQUENCE, 0x06 OID, 0xa3 `[3]` constructed. */
  readonly tag: number;
  /** Offset of the identifier octet. */
  readonly start: number;
  /** Offset of the first content octet. */
  readonly contentStart: number;
  /** Offset just past the last content octet. */
  readonly end: number;
}

/** Universal tags used by callers. */
export const DER = {
  BOOLEAN: 0x01,
  INTEGER: 0x02,
  BIT_STRING: 0x03,
  OCTET_STRING: 0x04,
  NULL: 0x05,
  OID: 0x06,
  SEQUENCE: 0x30,
  SET: 0x31,
} as const;

/**
 * Reads the TLV at `offset`, which must end at or before `limit`.
 *
 * @throws Error on a truncated TLV, a high tag number, an indefinite or over-long length.
 */
export function readTlv(buf: Uint8Array, offset: number, limit: number = buf.length): Tlv {
  if (offset + 2 > limit) throw new Error('DER: truncated');
  const tag = buf[offset] ?? 0;
  if ((tag & 0x1f) === 0x1f) throw new Error('DER: high tag numbers are not read');
  let length = buf[offset + 1] ?? 0;
  let contentStart = offset + 2;
  if (length & 0x80) {
    const octets = length & 0x7f;
    // 0x80 is the indefinite form (BER, never DER); more than 4 octets cannot describe a certificate.
    if (octets === 0 || octets > 4 || contentStart + octets > limit) throw new Error('DER: bad length');
    length = 0;
    for (let i = 0; i < octets; i++) length = length * 256 + (buf[contentStart + i] ?? 0);
    contentStart += octets;
  }
  const end = contentStart + length;
  if (end > limit) throw new Error('DER: truncated');
  return { tag, start: offset, contentStart, end };
}

/** The TLVs inside a constructed `tlv`, in order. @throws Error when they do not tile its content exactly. */
export function childrenOf(buf: Uint8Array, tlv: Tlv): Tlv[] {
  const out: Tlv[] = [];
  let at = tlv.contentStart;
  while (at < tlv.end) {
    const child = readTlv(buf, at, tlv.end);
    out.push(child);
    at = child.end;
  }
  return out;
}

/** The content octets of `tlv`. */
export function contentOf(buf: Uint8Array, tlv: Tlv): Uint8Array {
  return buf.subarray(tlv.contentStart, tlv.end);
}

/** The whole TLV (identifier, length and content octets). */
export function bytesOf(buf: Uint8Array, tlv: Tlv): Uint8Array {
  return buf.subarray(tlv.start, tlv.end);
}

/** Dotted-decimal form of an OBJECT IDENTIFIER's content octets (X.690 §8.19). @throws Error when malformed. */
export function oidText(content: Uint8Array): string {
  if (content.length === 0) throw new Error('DER: empty OID');
  const parts: number[] = [];
  let value = 0;
  for (let i = 0; i < content.length; i++) {
    const b = content[i] ?? 0;
    if (value === 0 && b === 0x80) throw new Error('DER: non-minimal OID');
    value = value * 128 + (b & 0x7f);
    if (value > Number.MAX_SAFE_INTEGER / 128) throw new Error('DER: OID arc too large');
    if ((b & 0x80) === 0) {
      parts.push(value);
      value = 0;
    } else if (i === content.length - 1) throw new Error('DER: truncated OID');
  }
  const first = parts[0] ?? 0;
  const head = first < 40 ? [0, first] : first < 80 ? [1, first - 40] : [2, first - 80];
  return [...head, ...parts.slice(1)].join('.');
}

/**
 * The extensions of a DER certificate (RFC 5280 §4.1): OID → the content of its extnValue OCTET STRING.
 *
 * @throws Error when the certificate is not well-formed DER or lists an extension twice (RFC 5280 §4.2).
 */
export function certificateExtensions(der: Uint8Array): Map<string, Uint8Array> {
  const cert = readTlv(der, 0);
  const tbs = childrenOf(der, cert)[0];
  if (cert.tag !== DER.SEQUENCE || tbs?.tag !== DER.SEQUENCE) throw new Error('DER: not a certificate');
  const out = new Map<string, Uint8Array>();
  for (const field of childrenOf(der, tbs)) {
    if (field.tag !== 0xa3) continue; // extensions [3] EXPLICIT
    const list = childrenOf(der, field)[0];
    if (list?.tag !== DER.SEQUENCE) throw new Error('DER: bad extensions');
    for (const ext of childrenOf(der, list)) {
      const parts = childrenOf(der, ext);
      const id = parts[0];
      const value = parts[parts.length - 1];
      if (id?.tag !== DER.OID || value?.tag !== DER.OCTET_STRING || parts.length > 3)
        throw new Error('DER: bad extension');
      const oid = oidText(contentOf(der, id));
      if (out.has(oid)) throw new Error(`DER: extension ${oid} appears twice`);
      out.set(oid, contentOf(der, value));
    }
  }
  return out;
}
