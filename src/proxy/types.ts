/** The shapes shared by the forwarders: one request to send, and the server objects it came on. */
import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import { Http2ServerResponse, type Http2ServerRequest } from 'node:http2';
import type { Route } from '../authz/routes.js';
import type { TelemetryPolicy } from '../mutate/telemetry.js';

export type ClientRequest = IncomingMessage | Http2ServerRequest;
export type ClientResponse = ServerResponse | Http2ServerResponse;

/**
 * `res.writeHead(status, headers)` on either kind of response. The two classes' overloads differ in
 * @types/node, so a call on the union does not type-check; the narrowing is the only difference.
 * Throws as `writeHead` does (an invalid header name or value).
 */
export function writeHead(res: ClientResponse, status: number, headers: OutgoingHttpHeaders): void {
  if (res instanceof Http2ServerResponse) res.writeHead(status, headers);
  else res.writeHead(status, headers);
}

/** A request that passed every check, ready to leave the gateway. */
export interface ForwardRequest {
  readonly route: Route;
  readonly method: string;
  /** Normalized path plus the raw query: exactly what was authorised. */
  readonly path: string;
  /** Flat name/value list built by `mutate/request-headers.ts`. */
  readonly headers: string[];
  /** Whether to stream the client's body upstream. */
  readonly hasBody: boolean;
  /** The client sent `Expect: 100-continue`: answer `100` only now, after every check passed. */
  readonly expectContinue: boolean;
  /** Strip these telemetry headers from the upstream's response (the request's opt-out was in force). */
  readonly stripResponseTelemetry?: TelemetryPolicy;
  /** The request's id (also in `headers` as x-request-id): added to the response when the upstream set none. */
  readonly requestId: string;
}

/** What happened upstream, for the access log and metrics. */
export interface ForwardOutcome {
  readonly status: number;
  /** Set when the exchange failed after the response had started (the client saw a truncated body). */
  readonly abortedReason?: string;
  /** Telemetry headers removed from the upstream's response. */
  readonly telemetryStripped?: number;
  /** Seconds from sending the request upstream to the upstream's response headers. */
  readonly upstreamSeconds?: number;
  /** Request body bytes read from the client. */
  readonly bytesIn?: number;
  /** Response body bytes written to the client. */
  readonly bytesOut?: number;
}

/** Sends one request upstream and streams the answer back. Rejects with a GatewayError before any
 * response byte was written; after that it never rejects (it cuts the client's response instead). */
export type Forward = (
  fr: ForwardRequest,
  req: ClientRequest,
  res: ClientResponse,
) => Promise<ForwardOutcome>;
