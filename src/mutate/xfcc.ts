/**
 * The `X-Forwarded-Client-Cert` value the gateway sends upstream, in Envoy's format, computed from the
 * verified peer identity. (Any XFCC the client sent is removed elsewhere before this one is set: threat
 * model #94.)
 */

import type { PeerIdentity } from '../identity/peer.js';

/**
 * Formats the Envoy-style XFCC element for a peer:
 * `Hash=<sha256 hex>;Subject="<RFC 4514 subject>";URI=<uri>;...;DNS=<name>;...` with one `URI=` per URI SAN
 * then one `DNS=` per DNS SAN, each in certificate order. `By=` and `Cert=` are not emitted.
 *
 * Encoding, applied to every value, in this order:
 * 1. **Percent-encoding** (as Envoy does for XFCC): every character outside printable ASCII 0x20–0x7E, and
 *    `%` itself, becomes `%XX` per UTF-8 byte (`\n` → `%0A`, `é` → `%C3%A9`, `%` → `%25`; a lone UTF-16
 *    surrogate becomes U+FFFD, `%EF%BF%BD`).
 * 2. **Quoting** (Envoy's XFCC grammar): `Subject` is always, and any other value containing `,`, `;`, `=`,
 *    `"` or `\` is, wrapped in double quotes with `"` and `\` escaped by a backslash.
 *
 * A reader undoes them in reverse order: unquote (drop `\` before the escaped character), then percent-decode.
 * The result contains only printable ASCII, so it is always a valid HTTP field value: a CN holding CR/LF can
 * never inject a header (threat model #22) and `res.setHeader` / `http.validateHeaderValue` never throw. A URI
 * SAN holding `, URI=...` stays one quoted value (threat model #20).
 */
export function formatXfcc(identity: PeerIdentity): string {
  let out = `Hash=${element(identity.fingerprint256)};Subject="${escapeQuoted(percentEncode(identity.subject))}"`;
  for (const uri of identity.uris) out += `;URI=${element(uri)}`;
  for (const name of identity.dnsNames) out += `;DNS=${element(name)}`;
  return out;
}

// ---------------------------------------------------------------------------------------------------------

/** Characters that must be percent-encoded: outside 0x20–0x7E, and `%`. */
const NEEDS_PERCENT = /[^\x20-\x24\x26-\x7e]/;
/** Characters that force an XFCC value into quotes. */
const NEEDS_QUOTES = /[,;="\\]/;
/** Characters escaped inside quotes. */
const QUOTED_SPECIALS = /["\\]/g;
const HEX = '0123456789ABCDEF';

/** One XFCC value: percent-encoded, then quoted only if Envoy's grammar needs it. */
function element(value: string): string {
  const encoded = percentEncode(value);
  return NEEDS_QUOTES.test(encoded) ? `"${escapeQuoted(encoded)}"` : encoded;
}

function escapeQuoted(value: string): string {
  return value.replace(QUOTED_SPECIALS, '\\$&');
}

/** UTF-8 percent-encoding of everything outside printable ASCII, and of `%`; fast when nothing needs it. */
function percentEncode(value: string): string {
  if (!NEEDS_PERCENT.test(value)) return value;
  let out = '';
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c >= 0x20 && c <= 0x7e && c !== 0x25) {
      out += value.charAt(i);
      continue;
    }
    let cp = c;
    if (c >= 0xd800 && c <= 0xdbff) {
      const next = value.charCodeAt(i + 1);
      if (next >= 0xdc00 && next <= 0xdfff) {
        cp = 0x10000 + ((c - 0xd800) << 10) + (next - 0xdc00);
        i++;
      } else {
        cp = 0xfffd;
      }
    } else if (c >= 0xdc00 && c <= 0xdfff) {
      cp = 0xfffd;
    }
    if (cp < 0x80) {
      out += pct(cp);
    } else if (cp < 0x800) {
      out += pct(0xc0 | (cp >> 6)) + pct(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
      out += pct(0xe0 | (cp >> 12)) + pct(0x80 | ((cp >> 6) & 0x3f)) + pct(0x80 | (cp & 0x3f));
    } else {
      out +=
        pct(0xf0 | (cp >> 18)) +
        pct(0x80 | ((cp >> 12) & 0x3f)) +
        pct(0x80 | ((cp >> 6) & 0x3f)) +
        pct(0x80 | (cp & 0x3f));
    }
  }
  return out;
}

function pct(byte: number): string {
  return `%${HEX.charAt(byte >> 4)}${HEX.charAt(byte & 15)}`;
}
