/**
 * The request-target normaliser: one canonical path, computed once per request, that is both matched
 * against the route table and forwarded upstream, so the path that was authorised is the path the upstream
 * sees (threat model #67; Envoy `normalize_path` + `merge_slashes` + `path_with_escaped_slashes_action:
 * REJECT_REQUEST`). Ambiguous targets that a backend could read differently are rejected, not repaired.
 */

/** Why a request target was refused. Stable: used as a log field and a metric label value. */
export type PathRejectReason =
  /** Does not start with `/` (absolute-form, authority-form and `*` are converted or refused by the caller). */
  | 'not_origin_form'
  /** A `#` anywhere: a fragment is never sent on the wire (RFC 9110 §7.1), so its presence is an attack. */
  | 'fragment'
  /** A raw `\` in the path: some backends read it as `/` (`/public\..\admin`). */
  | 'backslash'
  /** `%2F` in the path: a backend that decodes before routing sees another path. */
  | 'encoded_slash'
  /** `%5C` in the path: the encoded form of {@link PathRejectReason} `backslash`. */
  | 'encoded_backslash'
  /** `..` that would climb above `/` (RFC 3986 §5.2.4 would silently drop it; we refuse). */
  | 'dot_segment_above_root'
  /** A raw byte < 0x21 or 0x7F anywhere, or an encoded C0 control / DEL (`%00`–`%1F`, `%7F`) in the path. */
  | 'control_char'
  /** A raw character above 0x7E: RFC 3986 allows only ASCII, and undici refuses some of them outright. */
  | 'non_ascii'
  /** A raw `;` in the path: Tomcat-style path parameters (`/admin;x`) would otherwise bypass prefix routes. */
  | 'semicolon'
  /** A `%` not followed by two hex digits. */
  | 'bad_percent';

/** The outcome of {@link normalizeRequestTarget}. */
export type NormalizedTarget =
  | { readonly ok: true; readonly path: string; readonly query: string }
  | { readonly ok: false; readonly reason: PathRejectReason };

/**
 * Normalises an origin-form request target (`/path?query`, RFC 9112 §3.2.1) or refuses it.
 *
 * On success, `path` is the canonical path to use for BOTH route matching and forwarding, and `query` is the
 * raw query including its leading `?` (or `''`). The path:
 * 1. has percent-encoded unreserved characters decoded (`ALPHA DIGIT - . _ ~`, RFC 3986 §6.2.2.2), so
 *    `/%61dmin` is `/admin` and `%2e%2e` is a `..` segment; every other escape is kept with upper-case hex
 *    (`%c3%a9` → `%C3%A9`); `%25` stays `%25`, so `%252e%252e` stays a literal segment;
 * 2. has runs of `/` merged (`//admin/x` → `/admin/x`);
 * 3. has `.` and `..` segments resolved (RFC 3986 §5.2.4); a trailing `.` or `..` segment leaves a trailing
 *    slash (`/admin/.` → `/admin/`).
 *
 * It is refused (`ok: false`, see {@link PathRejectReason}) when: it does not start with `/`; it contains `#`
 * anywhere; it contains a raw control byte, space, DEL or non-ASCII character anywhere (path or query); the
 * path contains a raw `\` or `;`, an encoded `/`, `\` or control character, a malformed `%` escape, or a `..`
 * above the root. The query is otherwise not inspected or changed.
 *
 * A path with none of `%`, `\`, `;`, `#`, `//`, `/.`, control or non-ASCII characters is returned as is,
 * without building any array. Case is preserved (`/ADMIN` stays `/ADMIN`; routes are case-sensitive).
 */
export function normalizeRequestTarget(target: string): NormalizedTarget {
  if (target.charCodeAt(0) !== SLASH) return REJECT.not_origin_form;

  // One scan of the whole target: find the query, refuse what is refused everywhere, and note whether the
  // path needs the slow path.
  const n = target.length;
  let queryStart = n;
  let slow = false;
  let prev = 0;
  for (let i = 0; i < n; i++) {
    const c = target.charCodeAt(i);
    if (c === HASH) return REJECT.fragment;
    if (c < 0x21 || c === 0x7f) return REJECT.control_char;
    if (c > 0x7e) return REJECT.non_ascii;
    if (queryStart === n) {
      if (c === QUESTION) queryStart = i;
      else if (c === BACKSLASH) return REJECT.backslash;
      else if (c === SEMICOLON) return REJECT.semicolon;
      else if (c === PERCENT || (prev === SLASH && (c === SLASH || c === DOT))) slow = true;
    }
    prev = c;
  }
  const query = queryStart === n ? '' : target.slice(queryStart);
  const rawPath = queryStart === n ? target : target.slice(0, queryStart);
  if (!slow) return { ok: true, path: rawPath, query };

  // Slow path, step 1: validate and normalise escapes (RFC 3986 §6.2.2.1 and §6.2.2.2).
  let decoded = '';
  let copied = 0;
  const pathEnd = rawPath.length;
  for (let i = 0; i < pathEnd; i++) {
    if (rawPath.charCodeAt(i) !== PERCENT) continue;
    const hi = hexValue(rawPath.charCodeAt(i + 1));
    const lo = hexValue(rawPath.charCodeAt(i + 2));
    if (hi < 0 || lo < 0) return REJECT.bad_percent;
    const byte = (hi << 4) | lo;
    if (byte === SLASH) return REJECT.encoded_slash;
    if (byte === BACKSLASH) return REJECT.encoded_backslash;
    if (byte < 0x20 || byte === 0x7f) return REJECT.control_char;
    decoded += rawPath.slice(copied, i);
    decoded += UNRESERVED[byte] === 1 ? String.fromCharCode(byte) : `%${HEX.charAt(hi)}${HEX.charAt(lo)}`;
    i += 2;
    copied = i + 1;
  }
  decoded += rawPath.slice(copied);

  // Step 2: merge slashes and remove dot segments (RFC 3986 §5.2.4), refusing to climb above the root.
  const parts = decoded.split('/');
  const out: string[] = [];
  let trailingSlash = false;
  // parts[0] is the empty string before the leading '/'.
  for (let i = 1; i < parts.length; i++) {
    const segment = parts[i] as string;
    trailingSlash = false;
    if (segment === '' || segment === '.') {
      trailingSlash = true;
    } else if (segment === '..') {
      if (out.pop() === undefined) return REJECT.dot_segment_above_root;
      trailingSlash = true;
    } else {
      out.push(segment);
    }
  }
  const path = out.length === 0 ? '/' : `/${out.join('/')}${trailingSlash ? '/' : ''}`;
  return { ok: true, path, query };
}

// ---------------------------------------------------------------------------------------------------------

const SLASH = 0x2f;
const BACKSLASH = 0x5c;
const DOT = 0x2e;
const HASH = 0x23;
const QUESTION = 0x3f;
const SEMICOLON = 0x3b;
const PERCENT = 0x25;
const HEX = '0123456789ABCDEF';

/** The rejections, allocated once: a refused request costs no allocation here. */
const REJECT: { readonly [R in PathRejectReason]: { readonly ok: false; readonly reason: R } } = {
  not_origin_form: { ok: false, reason: 'not_origin_form' },
  fragment: { ok: false, reason: 'fragment' },
  backslash: { ok: false, reason: 'backslash' },
  encoded_slash: { ok: false, reason: 'encoded_slash' },
  encoded_backslash: { ok: false, reason: 'encoded_backslash' },
  dot_segment_above_root: { ok: false, reason: 'dot_segment_above_root' },
  control_char: { ok: false, reason: 'control_char' },
  non_ascii: { ok: false, reason: 'non_ascii' },
  semicolon: { ok: false, reason: 'semicolon' },
  bad_percent: { ok: false, reason: 'bad_percent' },
};

/** 1 for the RFC 3986 §2.3 unreserved bytes: ALPHA DIGIT "-" "." "_" "~". */
const UNRESERVED: Uint8Array = (() => {
  const table = new Uint8Array(256);
  for (let c = 0x30; c <= 0x39; c++) table[c] = 1;
  for (let c = 0x41; c <= 0x5a; c++) table[c] = 1;
  for (let c = 0x61; c <= 0x7a; c++) table[c] = 1;
  for (const ch of '-._~') table[ch.charCodeAt(0)] = 1;
  return table;
})();

/** The value of one hex digit, or -1 (also for NaN past the end of the string). */
function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x41 && c <= 0x46) return c - 0x37;
  if (c >= 0x61 && c <= 0x66) return c - 0x57;
  return -1;
}
