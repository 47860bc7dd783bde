/**
 * What counts as "never leaves the machine" for the require-encryption policy: the one rule behind plaintext
 * upstreams, an admin listener without TLS and an IdP reached over http://, so all three agree.
 */
import { isIP } from 'node:net';

/**
 * True for addresses that never leave the machine: 127.0.0.0/8, ::1, `localhost`. Other `*.localhost`
 * names are not trusted: without a resolver that special-cases them (RFC 6761 §6.3) they go to DNS,
 * which could send plaintext anywhere.
 */
export function isLoopbackHost(host: string): boolean {
  const h = host.toLowerCase().replace(/^\[|\]$/g, '');
  if (h === 'localhost') return true;
  if (h === '::1' || h === '0:0:0:0:0:0:0:1') return true;
  if (isIP(h) === 4) return h.startsWith('127.');
  if (h.startsWith('::ffff:')) return h.slice(7).startsWith('127.');
  return false;
}
