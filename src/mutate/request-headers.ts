/**
 * The header set the upstream receives, built in one pass over the client's raw headers.
 *
 * Threat model #94–#97: client copies of every header the gateway owns are dropped, hop-by-hop headers
 * and every header the client nominated in `Connection` are dropped (RFC 9110 §7.6.1), and the
 * gateway's own identity headers are added apart from the client's, so a client can neither spoof them
 * nor get them removed by naming them in `Connection`. A header name with an
 * underscore is refused outright: upstreams that fold `_` into `-` (WSGI, PHP) would otherwise read
 * `X_Forwarded_Client_Cert` as the gateway's header (Envoy `headers_with_underscores_action`).
 */
import { GatewayError } from '../errors.js';
import { withoutGatewayCookies } from '../authn/session-cookie.js';
import {
  emptyBaggageTally,
  isBaggageOverLimits,
  isOptOutSignal,
  isTelemetryHeader,
  tallyBaggage,
  type BaggageTally,
  type TelemetryPolicy,
} from './telemetry.js';
import { isValidRequestId, type RequestIdSource } from './request-id.js';

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
  // The gateway answers `Expect: 100-continue` itself, after its checks (threat model #71).
  'expect',
  // Rebuilt from the validated authority.
  'host',
]);

/**
 * Headers only the gateway may set. Every client copy is removed, whatever the route: identity and
 * forwarding headers decide access upstream (Envoy XFCC SANITIZE, `use_remote_address`; oauth2-proxy
 * CVE-2025-64484; threat model #94–#96).
 */
const OWNED = new Set([
  'x-forwarded-client-cert',
  'forwarded',
  'x-real-ip',
  // Client-address headers other frameworks derive the caller from (Rails `Client-IP`, Akamai
  // `True-Client-IP`, ...): an upstream must only ever learn the peer address from X-Forwarded-For.
  'client-ip',
  'x-client-ip',
  'true-client-ip',
  'x-cluster-client-ip',
  // URL / method rewrites some backends honour over the request line (IIS/Symfony, nginx
  // auth_request): the gateway authorised the request line, so nothing may override it (threat model #96).
  'x-original-url',
  'x-original-uri',
  'x-rewrite-url',
  'x-http-method-override',
  'x-http-method',
  'x-method-override',
  'remote-user',
  'x-client-cert',
  'x-client-verify',
  'x-ssl-client-cert',
  'x-client-cert-san',
]);
/** `x-forwarded-*` and `x-auth-*` (gateway identity), `x-remote-*` (Kubernetes request-header authn:
 * X-Remote-User, X-Remote-Group, X-Remote-Extra-*). */
const OWNED_PREFIXES = ['x-forwarded-', 'x-auth-', 'x-remote-'] as const;

/** Kubernetes user impersonation (Impersonate-User, -Group, -Uid, -Extra-*): a client must never
 * choose whom an upstream API server acts as; only an explicit gateway feature could set them. */
const IMPERSONATE_PREFIX = 'impersonate-';

function isOwned(name: string): boolean {
  if (OWNED.has(name)) return true;
  const c = name.charCodeAt(0);
  if (c === 105 /* i */) return name.startsWith(IMPERSONATE_PREFIX);
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
  /** Remove the client's `Authorization` (a route with `auth` and no `forwardToken: true`). */
  readonly dropAuthorization?: boolean;
  /** Telemetry header policy of the route; absent: telemetry headers pass like any other (but a
   * `baggage` over the W3C limits, which is dropped whatever the policy). */
  readonly telemetry?: TelemetryPolicy;
  /** Makes a request id when the client sent no valid `X-Request-Id` (mutate/request-id.ts). */
  readonly newRequestId: RequestIdSource;
}

/** What the identity headers are made of (a subset of `authn/principal.ts` `Principal`). */
export interface AuthHeadersSource {
  readonly subject: string;
  readonly scopes: readonly string[];
  readonly provider: string;
}

/** Facts about the request body learned while scanning the headers. */
export interface ScannedHeaders {
  /** Flat `[name, value, name, value, ...]` list, names lowercased, ready for undici. */
  readonly headers: string[];
  /** The request has `Content-Length` > 0 or `Transfer-Encoding` (HTTP/1.1 only). */
  readonly hasBody: boolean;
  /** Index in `headers` where the client's headers start (the gateway's own come first). */
  readonly gatewayEnd: number;
  /** Telemetry headers removed from the request (for the stripped counter), oversized `baggage` lines included. */
  readonly telemetryStripped: number;
  /** The response's telemetry headers are to be stripped too (policy on, or the client opted out). */
  readonly stripResponseTelemetry: boolean;
  /** The request's id, sent upstream as `x-request-id`: the client's when exactly one valid one came. */
  readonly requestId: string;
}

/**
 * Builds the upstream header list from the client's raw headers (`req.rawHeaders`: a flat list of
 * name/value pairs; HTTP/2 pseudo-headers are skipped). Throws `ERR_REQUEST_BAD_HEADER` for an
 * underscore in a header name.
 *
 * The gateway's own headers come first (`host`, `x-forwarded-for`, `x-forwarded-proto`,
 * `x-forwarded-host`, `x-request-id`, then `x-forwarded-client-cert` when there is a certificate), each exactly once,
 * followed by the client's surviving headers in their original order, names lowercased. First, so that
 * an upstream which keeps only its first N header lines (Node keeps 1000 in `req.headers`) drops client
 * headers, never the identity the gateway vouches for (threat model #70).
 *
 * Every `baggage` line of a request whose baggage, all lines together, is over the W3C limits (8192 bytes
 * or 180 list-members, telemetry.ts) is dropped and counted in `telemetryStripped`, whatever the telemetry
 * policy (threat model #98). Only `baggage` values are looked at; other headers cost one string compare.
 */
export function buildUpstreamHeaders(rawHeaders: readonly string[], gw: GatewayHeaders): ScannedHeaders {
  const client: string[] = [];
  let nominated: Set<string> | undefined;
  let hasBody = false;
  const tel = gw.telemetry;
  const stripAlways = tel?.strip === true;
  // Under honorClientSignals a DNT / Sec-GPC header may come after the telemetry headers: those are kept
  // in `client` and dropped in the final copy below, so the request is still scanned once.
  const watchSignals = tel !== undefined && !stripAlways && tel.honorClientSignals;
  let clientOptOut = false;
  let deferred = 0;
  let stripped = 0;
  let clientRequestId: string | undefined;
  let requestIds = 0;
  // Allocated on the first `baggage` line only.
  let baggage: BaggageTally | undefined;
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
          if (t !== '' && t !== 'close' && t !== 'keep-alive' && t !== 'upgrade')
            (nominated ??= new Set()).add(t);
        }
      } else if (name === 'transfer-encoding') hasBody = true;
      continue;
    }
    if (isOwned(name)) continue;
    if (name === 'x-request-id') {
      // Re-added below among the gateway's own headers, exactly once.
      requestIds++;
      clientRequestId = value;
      continue;
    }
    if (gw.dropAuthorization === true && name === 'authorization') continue;
    if (name === 'cookie') {
      // The gateway's own cookies (session, pre-login) never reach an upstream, on any route: a cookie is
      // sent to every path of its host, and an upstream holding the session id could act as the user.
      const kept = withoutGatewayCookies(value);
      if (kept !== '') client.push(name, kept);
      continue;
    }
    if (name === 'content-length' && value !== '0') hasBody = true;
    if (tel !== undefined && isTelemetryHeader(tel.matcher, name)) {
      if (stripAlways) {
        stripped++;
        continue;
      }
      if (watchSignals) deferred++;
    } else if (watchSignals && !clientOptOut && isOptOutSignal(name, value)) clientOptOut = true;
    // Every baggage line that would be relayed, telemetry policy or not, counts toward the W3C limits.
    if (name === 'baggage') tallyBaggage((baggage ??= emptyBaggageTally()), value);
    client.push(name, value);
  }
  const dropDeferred = clientOptOut && deferred > 0;
  const dropBaggage = baggage !== undefined && isBaggageOverLimits(baggage);
  const requestId =
    requestIds === 1 && clientRequestId !== undefined && isValidRequestId(clientRequestId)
      ? clientRequestId
      : gw.newRequestId();
  const headers = [
    'host',
    gw.host,
    'x-forwarded-for',
    gw.clientAddress,
    'x-forwarded-proto',
    gw.proto,
    'x-forwarded-host',
    gw.host,
    'x-request-id',
    requestId,
  ];
  if (gw.xfcc !== undefined) headers.push('x-forwarded-client-cert', gw.xfcc);
  const gatewayEnd = headers.length;
  if (gw.upgrade === true) headers.push('connection', 'Upgrade', 'upgrade', 'websocket');
  // RFC 9110 §7.6.1: a proxy removes every field the client named in Connection. The gateway's own
  // headers above are not subject to it: they are not the client's.
  for (let i = 0; i + 1 < client.length; i += 2) {
    const name = client[i] as string;
    if (nominated !== undefined && nominated.has(name)) continue;
    if (dropDeferred && isTelemetryHeader((tel as TelemetryPolicy).matcher, name)) {
      stripped++;
      continue;
    }
    if (dropBaggage && name === 'baggage') {
      stripped++;
      continue;
    }
    headers.push(name, client[i + 1] as string);
  }
  return {
    headers,
    hasBody,
    gatewayEnd,
    telemetryStripped: stripped,
    stripResponseTelemetry: stripAlways || clientOptOut,
    requestId,
  };
}

/**
 * The upstream header list with the authenticated caller added among the gateway's own headers (before any
 * client header, like XFCC): `x-auth-subject`, `x-auth-scopes` (space-separated), `x-auth-provider`, each
 * made {@link headerSafe}. Client copies of `x-auth-*` never survive {@link buildUpstreamHeaders}, so these
 * are the only ones the upstream sees.
 */
export function withPrincipal(scanned: ScannedHeaders, p: AuthHeadersSource): string[] {
  const out = scanned.headers.slice(0, scanned.gatewayEnd);
  out.push(
    'x-auth-subject',
    headerSafe(p.subject),
    'x-auth-scopes',
    p.scopes.map(headerSafe).join(' '),
    'x-auth-provider',
    headerSafe(p.provider),
  );
  for (let i = scanned.gatewayEnd; i < scanned.headers.length; i++) out.push(scanned.headers[i] as string);
  return out;
}

/** Bytes kept as they are in an identity header: visible ASCII except `%` (0x21–0x24, 0x26–0x7E). */
const HEADER_SAFE = /^[\x21-\x24\x26-\x7e]*$/;
const HEX = '0123456789ABCDEF';

/**
 * An identity value made safe for a header: every UTF-8 byte outside visible ASCII, and `%` itself, becomes
 * `%XX` (RFC 3986 percent-encoding, as the XFCC value does). A subject holding CR/LF, NUL, spaces or
 * non-ASCII text can then neither inject a header nor make the upstream request invalid; an upstream
 * percent-decodes to get the exact value back. Spaces are encoded too, so `X-Auth-Scopes` stays an
 * unambiguous space-separated list and no value loses leading or trailing whitespace to a parser.
 */
export function headerSafe(value: string): string {
  if (HEADER_SAFE.test(value)) return value;
  let out = '';
  // Buffer's UTF-8 encoder turns a lone surrogate into U+FFFD (EF BF BD).
  for (const byte of Buffer.from(value, 'utf8')) {
    out +=
      byte >= 0x21 && byte <= 0x7e && byte !== 0x25
        ? String.fromCharCode(byte)
        : `%${HEX.charAt(byte >> 4)}${HEX.charAt(byte & 15)}`;
  }
  return out;
}
