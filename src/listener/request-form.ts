/**
 * The first stages of an HTTP request, before any credential is looked at: its form (method syntax, header count,
 * one well-formed authority, an origin-form target normalized once), SNI against Host, and the
 * route. Pure functions of the request and the connection: each failure is a GatewayError carrying its status
 * (the pipeline's responder answers it).
 */
import type { RoutedListener } from '../config/runtime.js';
import type { Route } from '../authz/routes.js';
import { normalizeRequestTarget } from '../authz/path.js';
import { checkMethodForm } from '../authz/methods.js';
import { GatewayError } from '../errors.js';
import type { ConnectionState } from './connection.js';

/** Host header syntax (RFC 9110 §7.2, RFC 3986 §3.2.2): reg-name labels or a bracketed IPv6 literal,
 * optional port. Refuses `user@host`, paths, empty labels and control bytes (threat model #69). */
const HOST_RE =
  /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?)(?::\d{1,5})?$/;

/** Lowercased host without port or trailing dot, for routing and the SNI comparison. */
export function routingHost(authority: string): string {
  let h = authority;
  if (h.charCodeAt(0) === 91 /* [ */) {
    const end = h.indexOf(']');
    h = h.slice(0, end + 1);
  } else {
    const colon = h.indexOf(':');
    if (colon !== -1) h = h.slice(0, colon);
    if (h.endsWith('.')) h = h.slice(0, -1);
  }
  return h.toLowerCase();
}

interface RequestFacts {
  /** `:authority` (HTTP/2) if present, else the Host value; '' when neither. */
  authority: string;
  hostCount: number;
  host: string | undefined;
  /** HTTP/2 only: the request carried `:authority`. */
  hasAuthority: boolean;
}

/** Finds the authority in the raw headers: `:authority` on HTTP/2, else `Host`; counts Host lines.
 * `:authority` is only looked at on HTTP/2: on HTTP/1.1 it is not a header name that can exist. */
function scanAuthority(raw: readonly string[], isH2: boolean): RequestFacts {
  const facts: RequestFacts = { authority: '', hostCount: 0, host: undefined, hasAuthority: false };
  let h2Authority: string | undefined;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i] as string;
    if (name.length === 4 && name.toLowerCase() === 'host') {
      facts.hostCount++;
      facts.host = raw[i + 1];
    } else if (isH2 && name === ':authority') h2Authority = raw[i + 1];
  }
  if (h2Authority !== undefined) {
    facts.authority = h2Authority;
    facts.hasAuthority = true;
  } else if (facts.host !== undefined) facts.authority = facts.host;
  return facts;
}

/**
 * Node keeps at most 1000 headers in `req.headers` (http `maxHeadersCount`) but up to ~1023 in
 * `req.rawHeaders`, and drops the rest of either silently (threat model #70). Past 1000 the two views
 * disagree and the request the gateway checked may not be the one the client sent: refuse it (431).
 */
const MAX_RAW_HEADER_ENTRIES = 2 * 1000;

/** Checks the request's form and finds its route. Throws GatewayError. */
export function resolveRequest(
  listener: Pick<RoutedListener, 'routes'>,
  conn: ConnectionState | undefined,
  method: string | undefined,
  url: string | undefined,
  rawHeaders: readonly string[],
  isH2: boolean,
): ResolvedRequest {
  // A malformed method is 400; CONNECT (which names no path, so no route) 405 (authz/methods.ts).
  checkMethodForm(method);
  if (rawHeaders.length > MAX_RAW_HEADER_ENTRIES)
    throw new GatewayError('ERR_REQUEST_HEADERS_TOO_LARGE', 'more than 1000 headers');
  const facts = scanAuthority(rawHeaders, isH2);
  if (facts.hostCount > 1) throw new GatewayError('ERR_REQUEST_BAD_HOST', 'duplicate Host');
  if (isH2) {
    // RFC 9113 §8.3.1: a Host that disagrees with :authority makes the request malformed (threat model #81).
    if (
      facts.hasAuthority &&
      facts.host !== undefined &&
      facts.host.toLowerCase() !== facts.authority.toLowerCase()
    ) {
      throw new GatewayError('ERR_REQUEST_BAD_HOST', ':authority and host disagree');
    }
  } else if (facts.hostCount === 0) {
    // RFC 9112 §3.2: Host is mandatory. Node's parser does not enforce it (neither on 1.1 nor on 1.0).
    throw new GatewayError('ERR_REQUEST_BAD_HOST', 'no Host');
  }
  const authority = facts.authority;
  if (authority === '' || !HOST_RE.test(authority))
    throw new GatewayError('ERR_REQUEST_BAD_HOST', 'malformed authority');
  let target = url ?? '';
  if (target.charCodeAt(0) !== 47 /* / */) {
    // Absolute-form (RFC 9112 §3.2.2): accepted only when it names the same host as Host; the path that
    // is authorised is then the path that is forwarded (threat model #66). Anything else is refused.
    const m = /^https?:\/\/([^/?#]*)(\/[^#]*)?$/i.exec(target);
    if (m === null || (m[1] ?? '').toLowerCase() !== authority.toLowerCase()) {
      throw new GatewayError('ERR_REQUEST_BAD_PATH', 'request target not in origin-form');
    }
    target = m[2] ?? '/';
  }
  const norm = normalizeRequestTarget(target);
  if (!norm.ok) throw new GatewayError('ERR_REQUEST_BAD_PATH', norm.reason);
  const host = routingHost(authority);
  // A request for another host than the TLS server name is misdirected (RFC 9110 §15.5.20): it would
  // let a client pick a route with another policy than the one its connection was set up for
  // (threat model #8, #9).
  if (conn?.servername !== undefined && conn.servername !== host) {
    throw new GatewayError('ERR_REQUEST_MISDIRECTED', 'SNI and Host differ');
  }
  const route = listener.routes.lookup(host, norm.path);
  if (route === undefined) throw new GatewayError('ERR_ROUTE_NOT_FOUND');
  return {
    route,
    path: norm.query === '' ? norm.path : norm.path + norm.query,
    pathname: norm.path,
    query: norm.query,
    authority,
  };
}

/** A request whose form was checked and whose route was found. */
export interface ResolvedRequest {
  readonly route: Route;
  /** Normalized path plus the raw query: what is forwarded (unless a query token is stripped from it). */
  readonly path: string;
  /** The normalized path alone. */
  readonly pathname: string;
  /** The raw query with its leading `?`, or ''. */
  readonly query: string;
  readonly authority: string;
}
