/**
 * The original request a proxy asks a decision about, read from the headers of its auth subrequest:
 *
 *   from: nginx            X-Original-Method, X-Original-URI, X-Forwarded-Host, X-Forwarded-For
 *   from: ingress-nginx    X-Original-Method, X-Original-URL (absolute: the host is its authority), X-Forwarded-For
 *   from: caddy | traefik  X-Forwarded-Method, X-Forwarded-Uri, X-Forwarded-Host, X-Forwarded-For
 *
 * Each of method, URI and host must be there exactly once (fail closed: a proxy that does not say what it
 * will forward gets no decision, and a duplicate means something between client and proxy added one). Only
 * the family of the configured proxy is read: an `X-Forwarded-Uri` that reaches an nginx decision was not set
 * by nginx, so it is the client's and is ignored (oauth2-proxy GHSA-7x63-xv5r-3p2x). The client address is the
 * last X-Forwarded-For entry: the one the proxy itself appended, the only one it vouches for.
 *
 * The view keeps the subrequest's other headers, which are the original request's (Authorization, Cookie,
 * Accept, Origin, Sec-WebSocket-*), with Host set to the original host and every forwarding header, and the
 * certificate header, removed: the stages then read it as they read a request that reached a listener.
 */
import type { IncomingHttpHeaders } from 'node:http';
import { GatewayError } from '../errors.js';
import type { RequestView } from '../pipeline/context.js';

/** The proxies whose subrequests a decision listener reads. */
export type ProxyKind = 'nginx' | 'ingress-nginx' | 'caddy' | 'traefik';

/** Where each proxy puts the original method and URI (lowercase header names). */
export const ORIGINAL_REQUEST_HEADERS: Readonly<Record<ProxyKind, { readonly method: string; readonly uri: string }>> = {
  nginx: { method: 'x-original-method', uri: 'x-original-uri' },
  // The controller's auth location sends the whole URL ($scheme://$host$request_uri) and no X-Forwarded-Host.
  'ingress-nginx': { method: 'x-original-method', uri: 'x-original-url' },
  caddy: { method: 'x-forwarded-method', uri: 'x-forwarded-uri' },
  traefik: { method: 'x-forwarded-method', uri: 'x-forwarded-uri' },
};

/** A Caddy placeholder as written in a Caddyfile (`{http.request.tls.client.certificate_der_base64}`). */
const CADDY_PLACEHOLDER = /^\{[A-Za-z0-9_.]+\}$/;

/** The original request, as a view the stages read. */
export interface OriginalRequest extends RequestView {
  readonly method: string;
  readonly url: string;
  readonly rawHeaders: readonly string[];
  readonly headers: IncomingHttpHeaders;
  /** The last X-Forwarded-For entry (trimmed), or undefined when there is none. */
  readonly clientAddress: string | undefined;
  /** The certificate header's value, when a header name is configured and the proxy sent one (non-empty). */
  readonly certificate: string | undefined;
  /** The original request is a WebSocket handshake (its `Upgrade` header names websocket). */
  readonly upgrade: boolean;
}

/** The authority of an absolute http(s) URL. @throws GatewayError when `url` is not one. */
function authorityOf(url: string): string {
  const m = /^https?:\/\/([^/?#]+)/i.exec(url);
  if (m === null) throw new GatewayError('ERR_DECISION_BAD_SUBREQUEST', 'x-original-url is not an absolute URL');
  return m[1] as string;
}

/** Headers of the subrequest that describe it, not the original request: never part of the view. */
function isForwardingHeader(name: string): boolean {
  return (
    name === 'host' ||
    name === 'forwarded' ||
    name === 'x-real-ip' ||
    name === 'content-length' ||
    name === 'transfer-encoding' ||
    name.startsWith('x-original-') ||
    name.startsWith('x-forwarded-')
  );
}

/**
 * Reads the original request from a subrequest's raw headers.
 * @param certificateHeader the configured certificate header (lowercase), if any: read, then removed.
 * @throws GatewayError `ERR_DECISION_BAD_SUBREQUEST` when method, URI or host is missing or repeated.
 */
export function originalRequest(
  from: ProxyKind,
  rawHeaders: readonly string[],
  certificateHeader: string | undefined,
): OriginalRequest {
  const names = ORIGINAL_REQUEST_HEADERS[from];
  const found = new Map<string, string[]>();
  const kept: string[] = [];
  const headers: IncomingHttpHeaders = {};
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const raw = rawHeaders[i] as string;
    const value = rawHeaders[i + 1] as string;
    const name = raw.toLowerCase();
    if (name === names.method || name === names.uri || name === 'x-forwarded-host' || name === 'x-forwarded-for' || name === certificateHeader) {
      const list = found.get(name);
      if (list === undefined) found.set(name, [value]);
      else list.push(value);
      continue;
    }
    if (isForwardingHeader(name)) continue;
    kept.push(raw, value);
    // As node joins repeated headers (most with ", "; cookie with "; "), for the few the stages read by name.
    const prev = headers[name];
    if (prev === undefined) headers[name] = value;
    else if (name === 'cookie') headers[name] = `${String(prev)}; ${value}`;
    else if (name !== 'set-cookie') headers[name] = `${String(prev)}, ${value}`;
  }
  const once = (name: string): string => {
    const list = found.get(name);
    if (list === undefined || list.length === 0) throw new GatewayError('ERR_DECISION_BAD_SUBREQUEST', `no ${name}`);
    if (list.length > 1) throw new GatewayError('ERR_DECISION_BAD_SUBREQUEST', `${name} more than once`);
    return list[0] as string;
  };
  const method = once(names.method);
  const url = once(names.uri);
  // An absolute URL names its host; the form stage then checks the URL's authority is that host.
  const host = from === 'ingress-nginx' ? authorityOf(url) : once('x-forwarded-host');
  headers.host = host;
  const xff = found.get('x-forwarded-for');
  const last = xff?.at(-1)?.split(',').at(-1)?.trim();
  let certificate: string | undefined;
  if (certificateHeader !== undefined) {
    const list = found.get(certificateHeader) ?? [];
    if (list.length > 1) throw new GatewayError('ERR_DECISION_BAD_SUBREQUEST', `${certificateHeader} more than once`);
    const value = list[0]?.trim();
    // Caddy leaves a placeholder it cannot fill as it is written: `{http.request.tls.client.…}` when the
    // client presented no certificate. The Caddyfile removes a client's copy of the header first, so this is
    // Caddy's own "none".
    const unfilled = from === 'caddy' && value !== undefined && CADDY_PLACEHOLDER.test(value);
    certificate = value === undefined || value === '' || unfilled ? undefined : value;
  }
  return {
    method,
    url,
    rawHeaders: ['Host', host, ...kept],
    headers,
    clientAddress: last === undefined || last === '' ? undefined : last,
    certificate,
    upgrade: (headers.upgrade ?? '').toLowerCase().split(',').some((t) => t.trim() === 'websocket'),
  };
}
