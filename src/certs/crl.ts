/**
 * A listener's `tls.crl` file, read at load: one PEM CRL per CA of the client-CA bundle, concatenated, as
 * operators keep them.
 *
 * Node hands the `crl` option to OpenSSL one buffer at a time and reads only the first CRL of each buffer:
 * the CRLs after it were silently dropped, and every client of their CAs was then refused
 * (UNABLE_TO_GET_CRL), the revoked and the good alike. So the file is split here and each CRL becomes one
 * element of the `crl` array. Node sets X509_V_FLAG_CRL_CHECK_ALL: once any CRL is given, OpenSSL wants a
 * current CRL for every CA of a client's chain, so a CA of the bundle without one would refuse all its
 * clients. Each CRL is therefore matched to the CA that signed it (issuer name, then signature), checked
 * for freshness, and a CA left without a CRL is a config error, all before anything listens.
 *
 * Pure: no I/O (the caller reads the file), the time comes in as a number.
 */
import { constants, verify, type KeyObject, type X509Certificate } from 'node:crypto';
import { createSecureContext } from 'node:tls';
import { parseCrl } from './pki.js';
import { DER, bytesOf, childrenOf, contentOf, oidText, readTlv, type Tlv } from './der.js';

/** One CRL of the file, checked. */
export interface LoadedCrl {
  /** Position in the file (0 = first): the `index` label of the CRL gauge, never the issuer's name. */
  readonly index: number;
  /** Position in the client-CA bundle of the CA that signed it. */
  readonly caIndex: number;
  /** The issuer, as Node prints a subject (for logs and config errors only). */
  readonly issuer: string;
  /** This CRL alone, PEM: one element of the secure context's `crl` array. */
  readonly pem: Buffer;
  /** nextUpdate (ms since the epoch), when the CRL carries one: OpenSSL refuses every client of its CA after it. */
  readonly nextUpdateMs: number | undefined;
  /** The serials it revokes, normalized hex (certs/pki.ts `normalizeSerialHex`). */
  readonly revoked: readonly string[];
}

/** What {@link readCrlFile} found: the CRLs when every check passed, and what to expect instead otherwise. */
export interface CrlFile {
  readonly crls: readonly LoadedCrl[];
  /**
   * Each problem as the "expected ..." part of a config error (`a PEM X.509 CRL (...)`), naming the file and,
   * for one CRL of several, its position. Empty when the file is good.
   */
  readonly problems: readonly string[];
}

const PEM_BLOCK_RE = /-----BEGIN ([A-Z0-9 ]+)-----([\s\S]*?)-----END \1-----/g;

/**
 * Splits, parses and checks a CRL file against the client CA bundle `cas` (in bundle order) at `nowMs`:
 * every PEM block is an `X509 CRL` that Node accepts and that parses; its issuer names a CA of the bundle
 * whose key verifies its signature; at most one CRL per CA; thisUpdate not in the future and nextUpdate
 * (when present) not passed; and every CA of the bundle has a CRL.
 *
 * @param file the absolute path, for the messages.
 */
export function readCrlFile(
  text: string,
  file: string,
  cas: readonly X509Certificate[],
  nowMs: number,
): CrlFile {
  const problems: string[] = [];
  const blocks = [...text.matchAll(PEM_BLOCK_RE)];
  const other = blocks.find((b) => b[1] !== 'X509 CRL');
  if (other !== undefined) return fail(`a PEM X.509 CRL (${file} holds a "${other[1] ?? ''}" block; X509 CRL blocks only)`);
  if (blocks.length === 0) return fail(`a PEM X.509 CRL (${file} has none)`);
  const several = blocks.length > 1;
  const which = (i: number): string => (several ? `CRL #${i + 1} of ${blocks.length} in ${file}` : file);
  const subjects = cas.map((ca) => {
    try {
      return canonicalName(ca.raw, subjectOf(ca.raw));
    } catch {
      return undefined;
    }
  });
  const crls: LoadedCrl[] = [];
  const byCa = new Map<number, number>();
  blocks.forEach((block, index) => {
    const pem = Buffer.from(block[0], 'latin1');
    let parsed: ReturnType<typeof parseCrl>;
    let parts: CrlParts;
    try {
      // Node (OpenSSL) must take it: the same call the secure context makes.
      createSecureContext({ crl: pem });
      parsed = parseCrl(block[0]);
      parts = crlParts(Buffer.from((block[2] ?? '').replace(/[^A-Za-z0-9+/=]/g, ''), 'base64'));
    } catch {
      problems.push(`a PEM X.509 CRL (${which(index)} does not parse)`);
      return;
    }
    const issuerText = parts.issuerText;
    const named = cas.flatMap((_, i) => (subjects[i] !== undefined && subjects[i] === parts.issuerCanonical ? [i] : []));
    if (named.length === 0) {
      problems.push(
        `a CRL issued by a CA of the client CA bundle (${which(index)} is issued by "${issuerText}", which is none of them)`,
      );
      return;
    }
    // Two CAs may share a name (a re-made CA): the signature says which one issued it.
    const caIndex = named.find((i) => {
      const ca = cas[i];
      return ca !== undefined && signatureVerifies(parts, ca.publicKey);
    });
    if (caIndex === undefined) {
      problems.push(
        `a CRL signed by its issuer (the signature of ${which(index)} does not verify with the key of the client CA "${issuerText}": re-sign it with that CA)`,
      );
      return;
    }
    const earlier = byCa.get(caIndex);
    if (earlier !== undefined) {
      problems.push(
        `one CRL per CA (${which(index)} and CRL #${earlier + 1} are both from client CA #${caIndex + 1} "${issuerText}"; keep the newest)`,
      );
      return;
    }
    byCa.set(caIndex, index);
    const nextUpdate = parsed.nextUpdate;
    // OpenSSL refuses every client of this CA while its CRL is not yet valid (CRL_NOT_YET_VALID) or past its
    // nextUpdate (CRL_HAS_EXPIRED): refuse to start with a clear message instead of serving an outage.
    if (parsed.thisUpdate.getTime() > nowMs) {
      problems.push(
        `a current CRL (${which(index)} is not valid before ${parsed.thisUpdate.toISOString()}; OpenSSL would refuse every client of "${issuerText}": check the clocks)`,
      );
    }
    if (nextUpdate !== undefined && nextUpdate.getTime() <= nowMs) {
      problems.push(
        `a current CRL (its nextUpdate passed at ${nextUpdate.toISOString()}${several ? ` for ${which(index)}` : ''}; OpenSSL would refuse every client${several ? ` of "${issuerText}"` : ''}: re-sign it)`,
      );
    }
    crls.push({
      index,
      caIndex,
      issuer: issuerText,
      pem,
      nextUpdateMs: nextUpdate?.getTime(),
      revoked: parsed.revoked.map((r) => r.serialHex),
    });
  });
  if (problems.length === 0) {
    cas.forEach((ca, i) => {
      if (byCa.has(i)) return;
      problems.push(
        `a CRL for every CA of the client CA bundle (client CA #${i + 1} "${oneLine(ca.subject)}" has none in ${file}; OpenSSL checks the CRL of every CA in a client's chain and would refuse every client it signed)`,
      );
    });
  }
  return problems.length === 0 ? { crls, problems } : { crls: [], problems };

  function fail(problem: string): CrlFile {
    return { crls: [], problems: [problem] };
  }
}

/** The fields of a CertificateList (RFC 5280 §5.1) that the checks read. */
interface CrlParts {
  readonly der: Uint8Array;
  readonly tbs: Tlv;
  readonly algorithm: string;
  readonly algorithmParams: Tlv | undefined;
  readonly signature: Uint8Array;
  readonly issuerCanonical: string;
  readonly issuerText: string;
}

function crlParts(der: Uint8Array): CrlParts {
  const list = readTlv(der, 0);
  if (list.tag !== DER.SEQUENCE || list.end !== der.length) throw new Error('not a CertificateList');
  const [tbs, alg, sig] = childrenOf(der, list);
  if (tbs?.tag !== DER.SEQUENCE || alg?.tag !== DER.SEQUENCE || sig?.tag !== DER.BIT_STRING)
    throw new Error('not a CertificateList');
  const fields = childrenOf(der, tbs);
  const issuer = fields[(fields[0]?.tag === DER.INTEGER ? 1 : 0) + 1]; // [version,] signature, issuer
  if (issuer?.tag !== DER.SEQUENCE) throw new Error('no issuer');
  const [algId, params] = childrenOf(der, alg);
  if (algId?.tag !== DER.OID) throw new Error('no signature algorithm');
  const bits = contentOf(der, sig);
  if (bits[0] !== 0) throw new Error('a signature with unused bits');
  return {
    der,
    tbs,
    algorithm: oidText(contentOf(der, algId)),
    algorithmParams: params,
    signature: bits.subarray(1),
    issuerCanonical: canonicalName(der, issuer),
    issuerText: nameText(der, issuer),
  };
}

/** Digest names of the signature algorithms OpenSSL signs CRLs with (RFC 4055, RFC 5758, RFC 8410). */
const RSA_PKCS1: Readonly<Record<string, string>> = {
  '1.2.840.113549.1.1.5': 'sha1',
  '1.2.840.113549.1.1.14': 'sha224',
  '1.2.840.113549.1.1.11': 'sha256',
  '1.2.840.113549.1.1.12': 'sha384',
  '1.2.840.113549.1.1.13': 'sha512',
};
const ECDSA: Readonly<Record<string, string>> = {
  '1.2.840.10045.4.1': 'sha1',
  '1.2.840.10045.4.3.1': 'sha224',
  '1.2.840.10045.4.3.2': 'sha256',
  '1.2.840.10045.4.3.3': 'sha384',
  '1.2.840.10045.4.3.4': 'sha512',
};
const EDDSA = new Set(['1.3.101.112', '1.3.101.113']);
const RSA_PSS = '1.2.840.113549.1.1.10';
const MGF1 = '1.2.840.113549.1.1.8';
const HASHES: Readonly<Record<string, string>> = {
  '1.3.14.3.2.26': 'sha1',
  '2.16.840.1.101.3.4.2.4': 'sha224',
  '2.16.840.1.101.3.4.2.1': 'sha256',
  '2.16.840.1.101.3.4.2.2': 'sha384',
  '2.16.840.1.101.3.4.2.3': 'sha512',
};

/** Whether `key` verifies the CRL's signature; false (never a throw) for an algorithm this does not know. */
function signatureVerifies(crl: CrlParts, key: KeyObject): boolean {
  const data = bytesOf(crl.der, crl.tbs);
  try {
    const pkcs1 = RSA_PKCS1[crl.algorithm];
    if (pkcs1 !== undefined) return key.asymmetricKeyType === 'rsa' && verify(pkcs1, data, key, crl.signature);
    const ecdsa = ECDSA[crl.algorithm];
    if (ecdsa !== undefined) return key.asymmetricKeyType === 'ec' && verify(ecdsa, data, key, crl.signature);
    if (EDDSA.has(crl.algorithm)) return verify(null, data, key, crl.signature);
    if (crl.algorithm === RSA_PSS) {
      const pss = pssParams(crl.der, crl.algorithmParams);
      return (
        pss !== undefined &&
        verify(pss.hash, data, { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: pss.saltLength }, crl.signature)
      );
    }
  } catch {
    return false;
  }
  return false;
}

/** RSASSA-PSS-params (RFC 4055 §3.1) when MGF1 uses the message digest (what Node can verify); else undefined. */
function pssParams(der: Uint8Array, params: Tlv | undefined): { hash: string; saltLength: number } | undefined {
  let hash = 'sha1';
  let mgfHash = 'sha1';
  let saltLength = 20;
  if (params !== undefined && params.tag === DER.SEQUENCE) {
    for (const field of childrenOf(der, params)) {
      const inner = childrenOf(der, field)[0];
      if (inner === undefined) return undefined;
      if (field.tag === 0xa0) hash = algorithmHash(der, inner) ?? '';
      else if (field.tag === 0xa1) {
        const [mgf, mgfParams] = childrenOf(der, inner);
        if (mgf === undefined || oidText(contentOf(der, mgf)) !== MGF1 || mgfParams === undefined) return undefined;
        mgfHash = algorithmHash(der, mgfParams) ?? '';
      } else if (field.tag === 0xa2 && inner.tag === DER.INTEGER) {
        saltLength = contentOf(der, inner).reduce((n, b) => n * 256 + b, 0);
      }
    }
  }
  return hash !== '' && hash === mgfHash ? { hash, saltLength } : undefined;
}

function algorithmHash(der: Uint8Array, alg: Tlv): string | undefined {
  const id = childrenOf(der, alg)[0];
  return id?.tag === DER.OID ? HASHES[oidText(contentOf(der, id))] : undefined;
}

/** The subject Name of a DER certificate (RFC 5280 §4.1.2.6). */
function subjectOf(der: Uint8Array): Tlv {
  const tbs = childrenOf(der, readTlv(der, 0))[0];
  if (tbs === undefined) throw new Error('not a certificate');
  const fields = childrenOf(der, tbs);
  const subject = fields[(fields[0]?.tag === 0xa0 ? 1 : 0) + 4]; // [0] version, serial, signature, issuer, validity, subject
  if (subject?.tag !== DER.SEQUENCE) throw new Error('no subject');
  return subject;
}

/** String types of a DirectoryString and how their content decodes. */
const STRING_TYPES: Readonly<Record<number, BufferEncoding | 'ucs2be'>> = {
  0x0c: 'utf8', // UTF8String
  0x13: 'latin1', // PrintableString
  0x14: 'latin1', // TeletexString (T61): read as Latin-1, like OpenSSL
  0x16: 'latin1', // IA5String
  0x1a: 'latin1', // VisibleString
  0x1e: 'ucs2be', // BMPString
};

/**
 * A Name compared the way OpenSSL compares names (`X509_NAME_cmp` on the canonical encoding): attribute
 * string values case-folded, trimmed and with inner whitespace collapsed, whatever their string type; the
 * attributes of one RDN in a fixed order; any other value byte for byte.
 */
function canonicalName(der: Uint8Array, name: Tlv): string {
  return childrenOf(der, name)
    .map((rdn) =>
      childrenOf(der, rdn)
        .map((atv) => {
          const [type, value] = childrenOf(der, atv);
          if (type?.tag !== DER.OID || value === undefined) throw new Error('bad attribute');
          return `${oidText(contentOf(der, type))}=${canonicalValue(der, value)}`;
        })
        .sort()
        .join('+'),
    )
    .join(',');
}

function canonicalValue(der: Uint8Array, value: Tlv): string {
  const text = stringValue(der, value);
  if (text === undefined) return `#${Buffer.from(bytesOf(der, value)).toString('hex')}`;
  // ASCII letters only, as OpenSSL folds them: a name OpenSSL tells apart must not match here.
  return `"${text.trim().replace(/\s+/g, ' ').replace(/[A-Z]/g, (c) => c.toLowerCase())}"`;
}

function stringValue(der: Uint8Array, value: Tlv): string | undefined {
  const encoding = STRING_TYPES[value.tag];
  if (encoding === undefined) return undefined;
  const content = Buffer.from(contentOf(der, value));
  if (encoding !== 'ucs2be') return content.toString(encoding);
  const swapped = Buffer.from(content);
  if (swapped.length % 2 === 0) swapped.swap16();
  return swapped.toString('utf16le');
}

/** `CN=...,O=...` for messages: most specific attribute last, as written; unknown types by OID. */
function nameText(der: Uint8Array, name: Tlv): string {
  const short: Readonly<Record<string, string>> = {
    '2.5.4.3': 'CN',
    '2.5.4.6': 'C',
    '2.5.4.7': 'L',
    '2.5.4.8': 'ST',
    '2.5.4.10': 'O',
    '2.5.4.11': 'OU',
  };
  const parts: string[] = [];
  for (const rdn of childrenOf(der, name))
    for (const atv of childrenOf(der, rdn)) {
      const [type, value] = childrenOf(der, atv);
      if (type === undefined || value === undefined) continue;
      const oid = oidText(contentOf(der, type));
      parts.push(`${short[oid] ?? oid}=${stringValue(der, value) ?? '#'}`);
    }
  return oneLine(parts.join(','));
}

/** Control characters (a hostile name) never reach a log or a message as such. */
function oneLine(text: string): string {
  // eslint-disable-next-line no-control-regex -- control characters are exactly what must go
  return text.replace(/[\x00-\x1f\x7f]+/g, ',');
}
