/**
 * Content fingerprints of configuration: what tells a reload that a listener's TLS material (or an upstream,
 * or an ACL) really changed, and what the TLS session ticket keys are derived from (ticket-keys.ts), so that
 * processes that loaded the same files agree on them without talking.
 */
import { createHash } from 'node:crypto';
import type { Server as TlsServer } from 'node:tls';
import type { ListenerTls } from '../config/runtime.js';

/** SHA-256 (hex) of a tree of strings, buffers, numbers, booleans and arrays: a content fingerprint. */
export function stableDigest(value: unknown): string {
  const h = createHash('sha256');
  const walk = (v: unknown): void => {
    if (Buffer.isBuffer(v) || v instanceof Uint8Array) {
      h.update(`b${v.length}:`);
      h.update(v);
    } else if (Array.isArray(v)) {
      h.update(`a${v.length}[`);
      for (const x of v) walk(x);
      h.update(']');
    } else if (typeof v === 'string') h.update(`s${Buffer.byteLength(v)}:${v}`);
    else h.update(`v:${String(v)};`);
  };
  walk(value);
  return h.digest('hex');
}

/** Fingerprint of what a listener's secure context is made from (undefined: a plaintext listener). */
export function tlsMaterialDigest(tls: ListenerTls | undefined): string {
  if (tls === undefined) return 'none';
  const o = tls.options;
  return stableDigest([
    tls.clientCertificate,
    o.cert,
    o.key,
    o.ca,
    o.crl,
    o.minVersion,
    o.maxVersion,
    o.ciphers,
  ]);
}

/**
 * What a config reload does to a listener's TLS server. The secure context is kept when the TLS material
 * did not change: sessions and tickets stay valid. Otherwise a new one is made from `after`'s options for
 * the handshakes from now on (open connections keep theirs), with ticket keys derived from the new material
 * (`ticketKeysOf`): every worker that loaded the same files resumes the others' sessions, while no session
 * from before the change (made under another CA or CRL) is resumed. Throws, and changes nothing, when
 * OpenSSL refuses the material.
 */
export function swapSecureContext(
  server: Pick<TlsServer, 'setSecureContext'>,
  before: ListenerTls | undefined,
  after: ListenerTls,
  ticketKeysOf: (tls: ListenerTls) => Buffer,
): void {
  if (tlsMaterialDigest(after) === tlsMaterialDigest(before)) return;
  server.setSecureContext({ ...after.options, ticketKeys: ticketKeysOf(after) });
}
