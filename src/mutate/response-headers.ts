/**
 * The header set the client receives from an upstream's answer (an HTTP response, or the non-101 answer
 * to a WebSocket upgrade), built in one pass over the raw response headers: hop-by-hop headers and
 * every header the upstream nominated in `Connection` are dropped (RFC 9110 §7.6.1; on HTTP/2 writing
 * `transfer-encoding` would even throw, RFC 9113 §8.2.2, threat model #83), telemetry headers are
 * dropped under the request's opt-out, and the request id is added when the upstream set none.
 */
import { isTelemetryHeader, type TelemetryPolicy } from './telemetry.js';

/** Response headers as Node's `writeHead` takes them. */
export type ResponseHeaders = Record<string, string | string[]>;

/** Never passed back to the client. */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'upgrade',
  'te',
  'trailer',
  'http2-settings',
]);

/** The client's response headers and how many telemetry headers went. */
export interface BuiltResponseHeaders {
  readonly headers: ResponseHeaders;
  readonly telemetryStripped: number;
}

/**
 * Builds the client's response headers from a raw list (`[name, value, ...]`: undici's Buffers, or the
 * latin1 strings of Node's `rawHeaders` for a refused WebSocket upgrade). Names are lower-cased; a
 * repeated name (Set-Cookie) becomes an array in order; values keep their bytes (latin1). `requestId`
 * is added as `x-request-id` unless the upstream sent one.
 */
export function buildResponseHeaders(
  raw: readonly (Buffer | string)[],
  requestId: string,
  telemetry: TelemetryPolicy | undefined,
): BuiltResponseHeaders {
  const headers: ResponseHeaders = {};
  let nominated: string[] | undefined;
  let stripped = 0;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const n = raw[i] as Buffer | string;
    const v = raw[i + 1] as Buffer | string;
    const name = (typeof n === 'string' ? n : n.toString('latin1')).toLowerCase();
    const value = typeof v === 'string' ? v : v.toString('latin1');
    if (HOP_BY_HOP.has(name)) {
      if (name === 'connection') {
        for (const token of value.split(',')) {
          const t = token.trim().toLowerCase();
          if (t !== '') (nominated ??= []).push(t);
        }
      }
      continue;
    }
    if (telemetry !== undefined && isTelemetryHeader(telemetry.matcher, name)) {
      stripped++;
      continue;
    }
    const prev = headers[name];
    if (prev === undefined) headers[name] = value;
    else if (Array.isArray(prev)) prev.push(value);
    else headers[name] = [prev, value];
  }
  // The Connection header may come after the headers it names: removed once every name is known.
  if (nominated !== undefined) for (const t of nominated) Reflect.deleteProperty(headers, t);
  headers['x-request-id'] ??= requestId;
  return { headers, telemetryStripped: stripped };
}
