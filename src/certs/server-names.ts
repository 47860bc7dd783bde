/**
 * The names clients use to reach a listener (`serverNames`), and whether the listener's certificate covers
 * them. A certificate for other names loads and serves fine, and every client that checks the host name
 * (all browsers, curl, Node, Go, Python by default) refuses the handshake: an outage that `check` and
 * `start` can see coming. The gateway warns about it (a log line at warn and
 * `portcullis_tls_certificate_name_mismatch`); it does not refuse to start, because a client that pins the
 * CA alone (Dask's, for one) still connects.
 *
 * Only subjectAltName entries count, never the subject CN (RFC 6125 §6.4.4; browsers ignore the CN).
 * Pure: no I/O.
 */
import type { X509Certificate } from 'node:crypto';
import { isIP } from 'node:net';

/** A DNS host name: letters, digits, hyphens and underscores in dot-separated labels of 1–63 (RFC 1123 §2.1). */
const DNS_NAME = /^(?=.{1,253}$)[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*$/;

/**
 * The names to check when `serverNames` is not set: the listen host when it is a DNS name; nothing for an
 * IP address (a wildcard address such as 0.0.0.0 or ::, or one interface), which says nothing about the
 * names clients use.
 */
export function defaultServerNames(listenHost: string): string[] {
  const host = listenHost.toLowerCase();
  return isIP(host) === 0 && DNS_NAME.test(host) ? [host] : [];
}

/**
 * Why `name` cannot be a `serverNames` entry (the "expected ..." of a config error), or undefined when it
 * can: a DNS name or an IP address that a client connects to. A wildcard is a certificate's business, not
 * a name a client dials.
 */
export function serverNameProblem(name: string): string | undefined {
  if (isIP(name) !== 0) return undefined;
  if (DNS_NAME.test(name.toLowerCase())) return undefined;
  return 'a DNS name or an IP address that clients connect to (letters, digits, - and _ in dot-separated labels; no wildcard, port or scheme)';
}

/**
 * Whether a subjectAltName of `cert` covers `name` the way a TLS client checks it: an IP address against the
 * IP entries; a DNS name against the DNS entries, a wildcard matching exactly one whole left-most label
 * (RFC 6125 §6.4.3; no partial `f*.example` wildcards). The subject CN is never consulted.
 */
export function certificateCoversName(cert: X509Certificate, name: string): boolean {
  if (isIP(name) !== 0) return cert.checkIP(name) !== undefined;
  return (
    cert.checkHost(name, {
      subject: 'never',
      wildcards: true,
      partialWildcards: false,
      multiLabelWildcards: false,
      singleLabelSubdomains: false,
    }) !== undefined
  );
}

/** What {@link checkServerNames} found. */
export interface ServerNameCheck {
  /** The names checked: `serverNames` as given (lowercased, each once), or the default from the listen host. */
  readonly names: readonly string[];
  /** True when `names` is not empty and no subjectAltName of the certificate covers any of them. */
  readonly mismatch: boolean;
  /** The certificate's subjectAltName, as Node prints it ('' without one), for the warning. */
  readonly subjectAltNames: string;
}

/**
 * Checks the server certificate `cert` (the leaf) against `configured` (`serverNames`), or, when that is
 * undefined, against {@link defaultServerNames} of `listenHost`.
 */
export function checkServerNames(
  cert: X509Certificate,
  configured: readonly string[] | undefined,
  listenHost: string | undefined,
): ServerNameCheck {
  const names =
    configured !== undefined
      ? [...new Set(configured.map((n) => n.toLowerCase()))]
      : listenHost === undefined
        ? []
        : defaultServerNames(listenHost);
  return {
    names,
    mismatch: names.length > 0 && !names.some((n) => certificateCoversName(cert, n)),
    subjectAltNames: cert.subjectAltName ?? '',
  };
}
