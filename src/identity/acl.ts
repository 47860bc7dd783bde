/**
 * Client allow-lists (`allowClients`): which verified client certificates may use a listener or a route.
 *
 * Compiled once at config load into sets and segment arrays; `allows` is a handful of lookups per call. Secure
 * by default, as ghostunnel's `--allow-*` flags: an empty list allows nobody, no certificate is never allowed,
 * names match exactly, and a glob matches whole segments or labels only.
 */

import { ConfigError } from '../errors.js';
import type { PeerIdentity } from './peer.js';

/** A compiled client allow-list. */
export interface ClientAcl {
  /** The entries it was compiled from, as configured (for logs and `check` output). */
  readonly entries: readonly string[];
  /**
   * Whether this peer may pass: true when at least one entry matches. Always false for an empty list and for
   * `undefined` (no client certificate).
   */
  allows(identity: PeerIdentity | undefined): boolean;
}

/**
 * Compiles `allowClients` entries into a {@link ClientAcl}. Entries (prefixes are upper case, exactly):
 *
 * - `CN=<name>`, `OU=<name>`: one subject CN / OU value equals `<name>` exactly: case-sensitive, code unit by
 *   code unit, no trimming, no Unicode normalisation (`client10`, `Client1`, `client1 `, a Cyrillic `с`: all
 *   fail against `CN=client1`, threat model #19). No glob.
 * - `DNS=<name>`: one DNS SAN equals `<name>` (ASCII case-insensitive). `*.example.com` matches exactly one
 *   extra leftmost label (`a.example.com`; not `example.com`, not `a.b.example.com`). Only a whole leftmost
 *   label may be `*`.
 * - `URI=<scheme>://<authority>[/<segment>...]`: scheme and authority match ASCII case-insensitively, the
 *   path case-sensitively segment by segment. A `*` segment matches exactly one non-empty segment; `**`,
 *   allowed only as the last segment, matches one or more. A URI SAN that is not canonical (query, fragment,
 *   `%`, `.` or `..` segment, empty segment or trailing `/`, userinfo, non-ASCII) never matches. With several
 *   URI SANs, one matching is enough, EXCEPT for `spiffe://` patterns: an X509-SVID carries exactly one URI
 *   SAN, so a certificate with more never matches them, and the SAN must be a valid SPIFFE ID (scheme and
 *   trust domain lower case, `[a-z0-9._-]` trust domain without port, `[A-Za-z0-9._-]` segments), so
 *   `SPIFFE://Example.org/ns/a` does not match `spiffe://example.org/ns/*` (threat model #23).
 * - `SHA256=<hex>`: the certificate's SHA-256 fingerprint; colons optional, any case.
 *
 * @param entries the configured list; `[]` compiles to an ACL that allows nobody (fail closed).
 * @param keyPath the config key path of the list, used in error messages as `${keyPath}[i]`.
 * @throws ConfigError naming `${keyPath}[i]` for a malformed entry: unknown prefix, empty value, glob in a
 *   CN/OU, partial-segment or misplaced `*`/`**`, bad hex, non-canonical URI pattern, control characters or
 *   surrounding whitespace.
 */
export function compileClientAcl(entries: readonly string[], keyPath: string): ClientAcl {
  const commonNames = new Set<string>();
  const units = new Set<string>();
  const fingerprints = new Set<string>();
  const dnsExact = new Set<string>();
  /** Suffixes, lower case, with the leading dot: `*.example.com` → `.example.com`. */
  const dnsWildcards: string[] = [];
  const uriPatterns: UriPattern[] = [];

  entries.forEach((entry, i) => {
    const path = `${keyPath}[${i}]`;
    if (typeof entry !== 'string') throw new ConfigError(path, entry, 'a string such as "CN=client1"');
    const eq = entry.indexOf('=');
    const prefix = eq === -1 ? entry : entry.slice(0, eq);
    const value = eq === -1 ? '' : entry.slice(eq + 1);
    if (!(PREFIXES as readonly string[]).includes(prefix)) {
      throw new ConfigError(
        path,
        entry,
        `one of ${PREFIXES.map((p) => `${p}=...`).join(', ')} (upper-case prefix)`,
      );
    }
    if (value === '') throw new ConfigError(path, entry, `a non-empty value after "${prefix}="`);
    if (CONTROL.test(value)) throw new ConfigError(path, entry, 'a value without control characters');
    if (value.trim() !== value) {
      throw new ConfigError(path, entry, 'a value without leading or trailing whitespace');
    }
    if ((prefix === 'DNS' || prefix === 'URI') && !PRINTABLE_ASCII.test(value)) {
      // Also keeps toLowerCase() below ASCII-only (no Kelvin sign folding into "k").
      throw new ConfigError(path, entry, `an ASCII ${prefix} pattern (IDNs and IRIs in their ASCII form)`);
    }
    switch (prefix as Prefix) {
      case 'CN':
      case 'OU':
        if (value.includes('*')) {
          throw new ConfigError(path, entry, `an exact ${prefix} (globs are only for DNS= and URI=)`);
        }
        (prefix === 'CN' ? commonNames : units).add(value);
        return;
      case 'SHA256': {
        const hex = value.replaceAll(':', '').toLowerCase();
        if (!SHA256_HEX.test(hex)) {
          throw new ConfigError(path, entry, 'a SHA-256 fingerprint: 64 hex digits, colons optional');
        }
        fingerprints.add(hex);
        return;
      }
      case 'DNS':
        compileDns(value, path, entry, dnsExact, dnsWildcards);
        return;
      case 'URI':
        uriPatterns.push(compileUri(value, path, entry));
        return;
    }
  });

  const frozenEntries = Object.freeze([...entries]);
  const checkNames = commonNames.size > 0 || units.size > 0;
  const checkDns = dnsExact.size > 0 || dnsWildcards.length > 0;
  const checkUris = uriPatterns.length > 0;
  const checkFingerprint = fingerprints.size > 0;

  return {
    entries: frozenEntries,
    allows(identity: PeerIdentity | undefined): boolean {
      if (identity === undefined) return false;
      if (checkFingerprint && fingerprints.has(identity.fingerprint256)) return true;
      if (checkNames) {
        for (const cn of identity.commonNames) if (commonNames.has(cn)) return true;
        for (const ou of identity.organizationalUnits) if (units.has(ou)) return true;
      }
      if (checkDns) {
        for (const name of identity.dnsNames) if (matchDns(name, dnsExact, dnsWildcards)) return true;
      }
      if (checkUris && identity.uris.length > 0) {
        const count = identity.uris.length;
        for (const uri of identity.uris) {
          const parsed = parseUriIdentity(uri);
          if (parsed === undefined) continue;
          for (const pattern of uriPatterns) {
            if (pattern.spiffe && (count !== 1 || !parsed.spiffe)) continue;
            if (matchUri(pattern, parsed)) return true;
          }
        }
      }
      return false;
    },
  };
}

// ---------------------------------------------------------------------------------------------------------

const PREFIXES = ['CN', 'OU', 'DNS', 'URI', 'SHA256'] as const;
type Prefix = (typeof PREFIXES)[number];

const SHA256_HEX = /^[0-9a-f]{64}$/;
// eslint-disable-next-line no-control-regex -- control characters are exactly what is refused
const CONTROL = /[\x00-\x1f\x7f]/;
/** Printable ASCII without space: anything else in a DNS or URI SAN is not comparable ASCII-case-insensitively. */
const PRINTABLE_ASCII = /^[\x21-\x7e]+$/;
/** A DNS label as allowed in patterns (LDH plus `_`, which real service names use). */
const DNS_LABEL = /^[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?$/;
/** RFC 3986 §3.1 scheme. */
const URI_SCHEME = /^[a-z][a-z0-9+.-]*$/;
/** A host[:port] authority: reg-name / IP literal characters, no userinfo (`@`), no escapes. */
const URI_AUTHORITY = /^[a-z0-9._~:[\]-]+$/;
/** A path segment: RFC 3986 pchar without `%` (escapes make an ID non-canonical). */
const URI_SEGMENT = /^[A-Za-z0-9._~!$&'()*+,;=:@-]+$/;
/** SPIFFE ID trust domain and path segment characters (go-spiffe's rules). */
const SPIFFE_TRUST_DOMAIN = /^[a-z0-9._-]+$/;
const SPIFFE_SEGMENT = /^[A-Za-z0-9._-]+$/;

function compileDns(
  value: string,
  path: string,
  entry: string,
  exact: Set<string>,
  wildcards: string[],
): void {
  const lower = value.toLowerCase();
  const labels = lower.split('.');
  const wildcard = labels[0] === '*';
  const rest = wildcard ? labels.slice(1) : labels;
  if (rest.length === 0 || !rest.every((label) => DNS_LABEL.test(label))) {
    throw new ConfigError(
      path,
      entry,
      'a DNS name of letters, digits, "-" and "_" labels, optionally starting with a whole "*." label ' +
        '(e.g. "*.example.com"); "*" is allowed only as the entire leftmost label',
    );
  }
  if (wildcard) wildcards.push(`.${rest.join('.')}`);
  else exact.add(lower);
}

function matchDns(name: string, exact: ReadonlySet<string>, wildcards: readonly string[]): boolean {
  if (!PRINTABLE_ASCII.test(name)) return false;
  // ASCII-only input: toLowerCase cannot fold a non-ASCII letter (the Kelvin sign) into an ASCII one.
  const lower = name.toLowerCase();
  if (exact.has(lower)) return true;
  for (const suffix of wildcards) {
    if (lower.length > suffix.length && lower.endsWith(suffix)) {
      const label = lower.slice(0, lower.length - suffix.length);
      if (DNS_LABEL.test(label)) return true;
    }
  }
  return false;
}

/** A compiled `URI=` pattern. */
interface UriPattern {
  /** `scheme://authority`, lower case. */
  readonly origin: string;
  /** Literal segments, or `*` (one segment) or `**` (one or more, last only). */
  readonly segments: readonly string[];
  /** Whether the last segment is `**`. */
  readonly tail: boolean;
  /** A `spiffe://` pattern: exactly one URI SAN, and it must be a valid SPIFFE ID. */
  readonly spiffe: boolean;
}

/** A URI SAN in canonical form, split for matching. */
interface ParsedUri {
  readonly origin: string;
  readonly segments: readonly string[];
  readonly spiffe: boolean;
}

function compileUri(value: string, path: string, entry: string): UriPattern {
  const fail = (expected: string): ConfigError => new ConfigError(path, entry, expected);
  const sep = value.indexOf('://');
  if (sep <= 0) throw fail('an absolute URI pattern such as "spiffe://example.org/ns/*"');
  const scheme = value.slice(0, sep);
  const afterScheme = sep + 3;
  const slash = value.indexOf('/', afterScheme);
  const authority = value.slice(afterScheme, slash === -1 ? value.length : slash);
  const pathPart = slash === -1 ? '' : value.slice(slash + 1);
  const spiffe = scheme.toLowerCase() === 'spiffe';
  if (spiffe) {
    if (scheme !== 'spiffe' || !SPIFFE_TRUST_DOMAIN.test(authority)) {
      throw fail('a SPIFFE ID pattern: "spiffe://" then a lower-case trust domain of [a-z0-9._-], no port');
    }
  } else if (!URI_SCHEME.test(scheme.toLowerCase()) || !URI_AUTHORITY.test(authority.toLowerCase())) {
    throw fail('a URI pattern with a scheme and a host[:port] authority, without "*", "@" or "%" in them');
  }
  const segments = slash === -1 ? [] : pathPart.split('/');
  const last = segments.length - 1;
  segments.forEach((segment, i) => {
    if (segment === '*') return;
    if (segment === '**') {
      if (i !== last) throw fail('"**" only as the last path segment');
      return;
    }
    if (segment.includes('*')) throw fail('"*" and "**" only as whole path segments (not "a*")');
    if (segment === '' || segment === '.' || segment === '..') {
      throw fail('a canonical path: no empty segment, no trailing "/", no "." or ".." segment');
    }
    if (!(spiffe ? SPIFFE_SEGMENT : URI_SEGMENT).test(segment)) {
      throw fail(
        spiffe
          ? 'SPIFFE path segments of [A-Za-z0-9._-] only'
          : 'path segments without "%", "?", "#" or non-ASCII characters',
      );
    }
  });
  return {
    origin: `${scheme}://${authority}`.toLowerCase(),
    segments,
    tail: segments[last] === '**',
    spiffe,
  };
}

/**
 * Splits a URI SAN, or returns undefined when it is not canonical (it then matches no pattern): see
 * {@link compileClientAcl}. Only module-level regexes are used; no allocation beyond the split.
 */
function parseUriIdentity(uri: string): ParsedUri | undefined {
  if (!PRINTABLE_ASCII.test(uri)) return undefined;
  const sep = uri.indexOf('://');
  if (sep <= 0) return undefined;
  const afterScheme = sep + 3;
  const slash = uri.indexOf('/', afterScheme);
  const scheme = uri.slice(0, sep);
  const authority = uri.slice(afterScheme, slash === -1 ? uri.length : slash);
  const spiffe = scheme === 'spiffe' && SPIFFE_TRUST_DOMAIN.test(authority);
  if (!spiffe && !URI_AUTHORITY.test(authority.toLowerCase())) return undefined;
  if (!URI_SCHEME.test(scheme.toLowerCase())) return undefined;
  const segments = slash === -1 ? [] : uri.slice(slash + 1).split('/');
  let spiffeSegments = spiffe;
  for (const segment of segments) {
    if (segment === '' || segment === '.' || segment === '..' || !URI_SEGMENT.test(segment)) return undefined;
    if (spiffeSegments && !SPIFFE_SEGMENT.test(segment)) spiffeSegments = false;
  }
  return { origin: `${scheme}://${authority}`.toLowerCase(), segments, spiffe: spiffeSegments };
}

function matchUri(pattern: UriPattern, id: ParsedUri): boolean {
  if (pattern.origin !== id.origin) return false;
  const p = pattern.segments;
  const s = id.segments;
  if (pattern.tail ? s.length < p.length : s.length !== p.length) return false;
  const literal = pattern.tail ? p.length - 1 : p.length;
  for (let i = 0; i < literal; i++) {
    const want = p[i];
    if (want !== '*' && want !== s[i]) return false;
  }
  return true;
}
