/**
 * The header set the upstream receives, built in one pass over the client's raw headers.
 *
 * Order of operations matters (hostile cases 94–97): client copies of every header the gateway owns are
 * dropped, hop-by-hop headers and every header the client nominated in `Connection` are dropped
 * (RFC 9110 §7.6.1), and only then are the gateway's own identity headers added — so a client can
 * neither spoof them nor get them removed by naming them in `Connection`. A header name with an
 * underscore is refused outright: upstreams that fold `_` into `-` (WSGI, PHP) would otherwise read
 * `X_Forwarded_Client_Cert` as the gateway's header (Envoy `headers_with_underscores_action`).
 */
import { GatewayError } from '../errors.js';

/** Hop-by-hop headers (RFC 9110 §7.6.1) and headers the gateway sets or refuses to pass on. */
const DROPPED = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'proxy-authorization',
  'proxy-authenticate',
  'http2-settings',
  // The gateway answers `Expect: 100-continue` itself, after its checks (hostile case 71).
  'expect',
  // Rebuilt from the validated authority.
  'host',
]);

/**
 * Headers only the gateway may set. Every client copy is removed, whatever the route: identity and
 * forwarding headers decide access upstream (Envoy XFCC SANITIZE, `use_remote_address`; oauth2-proxy
 * CVE-2025-64484; hostile cases 94–96).
 */
const OWNED = new Set([
  'x-forwarded-client-cert',
  'forwarded',
  'x-real-ip',
  'x-original-url',
  'x-rewrite-url',
  'x-http-method-override',
  'x-http-method',
  'x-method-override',
  'x-remote-user',
  'remote-user',
  'x-client-cert',
  'x-client-verify',
  'x-ssl-client-cert',
  'x-client-cert-san',
]);
const OWNED_PREFIXES = ['x-forwarded-', 'x-auth-'] as const;

function isOwned(name: string): boolean {
  if (OWNED.has(name)) return true;
  const c = name.charCodeAt(0);
  if (c !== 120 /* x */) return false;
  for (const p of OWNED_PREFIXES) if (name.startsWith(p)) return true;
  return false;
}

/** What the gateway adds; computed by the caller (per connection where possible). */
export interface GatewayHeaders {
  /** Validated authority, sent as `Host` (RFC 9113 §8.3.1: `:authority` becomes Host). */
  readonly host: string;
  /** The TCP peer's address; it replaces any client-sent X-Forwarded-For. */
  readonly clientAddress: string;
  readonly proto: 'https' | 'http';
  /** Envoy-format XFCC of the verified client certificate, when there is one. */
  readonly xfcc: string | undefined;
  /** For a WebSocket upgrade: keep `Upgrade: websocket` / `Connection: Upgrade`. */
  readonly upgrade?: boolean;
}

/** Facts about the request body learned while scanning the headers. */
export interface ScannedHeaders {
  /** Flat `[name, value, name, value, ...]` list, names lowercased, ready for undici. */
  readonly headers: string[];
  /** The request has `Content-Length` > 0 or `Transfer-Encoding` (HTTP/1.1 only). */
  readonly hasBody: boolean;
}

/**
 * Builds the upstream header list from the client's raw headers (`req.rawHeaders`: a flat list of
 * name/value pairs; HTTP/2 pseudo-headers are skipped). Throws `ERR_REQUEST_BAD_HEADER` for an
 * underscore in a header name.
 */
export function buildUpstreamHeaders(rawHeaders: readonly string[], gw: GatewayHeaders): ScannedHeaders {
  const out: string[] = [];
  let nominated: string[] | undefined;
  let hasBody = false;
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const rawName = rawHeaders[i] as string;
    const value = rawHeaders[i + 1] as string;
    if (rawName.charCodeAt(0) === 58 /* : */) continue; // HTTP/2 pseudo-header
    const name = rawName.toLowerCase();
    if (name.includes('_')) throw new GatewayError('ERR_REQUEST_BAD_HEADER', 'underscore in header name');
    if (DROPPED.has(name)) {
      if (name === 'connection') {
        for (const token of value.split(',')) {
          const t = token.trim().toLowerCase();
          if (t !== '' && t !== 'close' && t !== 'keep-alive' && t !== 'upgrade') (nominated ??= []).push(t);
        }
      } else if (name === 'transfer-encoding') hasBody = true;
      continue;
    }
    if (isOwned(name)) continue;
    if (name === 'content-length' && value !== '0') hasBody = true;
    out.push(name, value);
  }
  let headers = out;
  if (nominated !== undefined) {
    // RFC 9110 §7.6.1: a proxy removes every field the client named in Connection — but never the
    // gateway's own headers, which are added after this step.
    const drop = new Set(nominated);
    headers = [];
    for (let i = 0; i + 1 < out.length; i += 2) {
      const name = out[i] as string;
      if (!drop.has(name)) headers.push(name, out[i + 1] as string);
    }
  }
  headers.push('host', gw.host, 'x-forwarded-for', gw.clientAddress, 'x-forwarded-proto', gw.proto, 'x-forwarded-host', gw.host);
  if (gw.xfcc !== undefined) headers.push('x-forwarded-client-cert', gw.xfcc);
  if (gw.upgrade === true) headers.push('connection', 'Upgrade', 'upgrade', 'websocket');
  return { headers, hasBody };
}

/** Response headers never passed back to the client (RFC 9110 §7.6.1; HTTP/2 forbids them, RFC 9113 §8.2.2). */
const RESPONSE_DROPPED = ['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'te', 'trailer', 'http2-settings'];

/**
 * Removes hop-by-hop headers, and those the upstream nominated in `Connection`, from an upstream
 * response header object in place. Needed for correctness on HTTP/1.1 and for survival on HTTP/2,
 * where writing `transfer-encoding` throws (hostile case 83).
 */
export function cleanResponseHeaders(headers: Record<string, string | string[] | undefined>): void {
  const conn = headers.connection;
  if (conn !== undefined) {
    for (const token of (Array.isArray(conn) ? conn.join(',') : conn).split(',')) {
      const t = token.trim().toLowerCase();
      if (t !== '') Reflect.deleteProperty(headers, t);
    }
  }
  for (const h of RESPONSE_DROPPED) Reflect.deleteProperty(headers, h);
}
