/**
 * Content fingerprints of configuration: what tells a reload that a listener's TLS material (or an upstream,
 * or an ACL) really changed, and what the TLS session ticket keys are derived from (ticket-keys.ts), so that
 * processes that loaded the same files agree on them without talking.
 */
import { createHash } from 'node:crypto';
import type { ListenerTls } from '../config/load.js';

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
