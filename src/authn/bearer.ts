/**
 * Bearer token extraction (RFC 6750 §2) and the token hash.
 *
 * Strict by design: a request carries its token one way only, in one header, in token68 syntax, under a
 * length cap checked before any decoding or crypto (jose verifies a 1 MB token happily: threat model #41).
 * Anything ambiguous is `ERR_AUTHN_MALFORMED` (400 `invalid_request`), never a guess: Node keeps the first of
 * two `Authorization` headers silently, so decisions could depend on header order (threat model #43).
 */
import { hash } from 'node:crypto';
import { GatewayError } from '../errors.js';

/**
 * Longest token accepted, in characters: 8 KiB. Real access tokens are under 2 KiB (a JWT with a few dozen
 * claims); Node's own header cap is 16 KiB for the whole section. Longer is refused before any decoding.
 */
export const MAX_TOKEN_LENGTH = 8192;

/** RFC 6750 §2.1 `b64token` / RFC 9110 §11.2 token68: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`. */
const TOKEN68 = /^[A-Za-z0-9\-._~+/]+=*$/;

/** The query parameter of RFC 6750 §2.3. */
const QUERY_PARAM = 'access_token';

/** What {@link extractBearer} found. */
export type BearerCredential = { readonly token: string } | { readonly none: true };

/**
 * Finds the Bearer token of a request.
 *
 * - Exactly one `Authorization` header (two or more → malformed, whatever their order or content).
 * - Scheme `Bearer`, case-insensitive (RFC 9110 §11.1), then exactly one space, then a token68 of at most
 *   {@link MAX_TOKEN_LENGTH} characters. Leading and trailing spaces/tabs around the whole field value are not
 *   part of it (RFC 9110 §5.5) and are ignored; anything else (empty token, two spaces, a comma list, padding
 *   in the middle, non-token68 bytes) → malformed.
 * - Another scheme (`Basic ...`) is not a Bearer credential: `{ none: true }`, so the route answers 401 with a
 *   Bearer challenge. A bare scheme name with no credential (`Bearer`) → malformed.
 * - `access_token` in the query (RFC 6750 §2.3) → malformed unless `allowQueryToken`; when allowed, it must
 *   appear once and there must be no `Authorization` header at all (RFC 6750 §2: one method per request).
 *
 * @param rawHeaders `req.rawHeaders`: names and values alternating, duplicates kept.
 * @param query the raw query string, with or without its leading `?` ("" when there is none).
 * @throws GatewayError `ERR_AUTHN_MALFORMED`.
 */
export function extractBearer(
  rawHeaders: readonly string[],
  query: string,
  allowQueryToken: boolean,
): BearerCredential {
  let header: string | undefined;
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const name = rawHeaders[i];
    if (name !== undefined && name.length === 13 && name.toLowerCase() === 'authorization') {
      if (header !== undefined) throw malformed('more than one Authorization header');
      header = rawHeaders[i + 1] ?? '';
    }
  }
  const fromQuery = queryToken(query);
  if (fromQuery !== undefined) {
    if (!allowQueryToken) throw malformed('access_token in the query string is not allowed on this route');
    if (header !== undefined) throw malformed('token both in the Authorization header and in the query');
    return { token: checkToken(fromQuery, 'query access_token') };
  }
  if (header === undefined) return { none: true };
  return parseAuthorization(header);
}

function parseAuthorization(raw: string): BearerCredential {
  const value = trimOws(raw);
  if (value === '') throw malformed('empty Authorization header');
  const space = value.indexOf(' ');
  const scheme = space === -1 ? value : value.slice(0, space);
  if (scheme.toLowerCase() !== 'bearer') return { none: true };
  if (space === -1) throw malformed('Bearer scheme without a token');
  return { token: checkToken(value.slice(space + 1), 'Authorization header') };
}

function checkToken(token: string, where: string): string {
  if (token.length === 0) throw malformed(`empty token in the ${where}`);
  if (token.length > MAX_TOKEN_LENGTH) {
    throw malformed(`token in the ${where} longer than ${MAX_TOKEN_LENGTH} characters (${token.length})`);
  }
  if (!TOKEN68.test(token)) throw malformed(`token in the ${where} is not token68 (RFC 6750 §2.1)`);
  return token;
}

/** The decoded `access_token` query value, or undefined when absent. Two of them → malformed. */
function queryToken(query: string): string | undefined {
  if (query === '' || query === '?') return undefined;
  // Cheap pre-check: most requests have no such parameter (a `%` may hide an encoded name).
  if (!query.includes(QUERY_PARAM) && !query.includes('%')) return undefined;
  const params = new URLSearchParams(query.startsWith('?') ? query.slice(1) : query);
  const all = params.getAll(QUERY_PARAM);
  if (all.length === 0) return undefined;
  if (all.length > 1) throw malformed('more than one access_token query parameter');
  return all[0];
}

/**
 * The query string without its `access_token` parameter, for forwarding a request whose token came from the
 * query (RFC 6750 §2.3 / §5.3: the token must not travel further than needed). Other parameters keep their
 * original bytes and order. Returns "" or a string starting with `?`.
 */
export function removeQueryToken(query: string): string {
  const q = query.startsWith('?') ? query.slice(1) : query;
  if (q === '') return '';
  const kept = q.split('&').filter((pair) => {
    const eq = pair.indexOf('=');
    const rawName = eq === -1 ? pair : pair.slice(0, eq);
    let name: string;
    try {
      name = decodeURIComponent(rawName.replaceAll('+', ' '));
    } catch {
      return true;
    }
    return name !== QUERY_PARAM;
  });
  return kept.length === 0 ? '' : `?${kept.join('&')}`;
}

/**
 * SHA-256 of the token (UTF-8), lower-case hex: the only cache key and the only log handle a token ever
 * has. Computed on every request of an authenticated route, so through the one-shot `crypto.hash`
 * (Node ≥ 20.12), about a third of the cost of a `Hash` object.
 */
export function tokenHash(token: string): string {
  return hash('sha256', token, 'hex');
}

function trimOws(value: string): string {
  let start = 0;
  let end = value.length;
  while (start < end && (value.charCodeAt(start) === 32 || value.charCodeAt(start) === 9)) start++;
  while (end > start && (value.charCodeAt(end - 1) === 32 || value.charCodeAt(end - 1) === 9)) end--;
  return value.slice(start, end);
}

function malformed(detail: string): GatewayError {
  return new GatewayError('ERR_AUTHN_MALFORMED', detail);
}
