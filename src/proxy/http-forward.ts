/**
 * HTTP forwarding through undici: one keep-alive Pool per upstream origin, created at start.
 *
 * Why undici and not http-proxy: http-proxy 1.18.1 throws on HTTP/2 requests and costs about 1.5× the
 * CPU per request on this stack (CONVENTIONS.md). Bodies stream both ways with backpressure (no
 * buffering); a client that goes away aborts the upstream request, which frees its socket (hostile
 * case 108); upstream timeouts map to 504, connection failures to 502.
 */
import { Http2ServerResponse, constants as h2constants } from 'node:http2';
import { isIP } from 'node:net';
import { Pool, buildConnector, type Dispatcher } from 'undici';
import type { TimeoutsConfig } from '../config/schema.js';
import type { UpstreamSpec } from '../authz/routes.js';
import { DEFAULTS } from '../config/defaults.js';
import { cleanResponseHeaders, stripResponseTelemetry } from '../mutate/request-headers.js';
import type { Clock } from '../clock.js';
import { toUpstreamError } from './upstream-errors.js';
import type { ClientRequest, ClientResponse, ForwardOutcome, ForwardRequest } from './types.js';

type HttpUpstream = Extract<UpstreamSpec, { kind: 'http' }>;

/** A forwarder bound to one upstream origin. */
export interface HttpForwarder {
  readonly forward: (fr: ForwardRequest, req: ClientRequest, res: ClientResponse) => Promise<ForwardOutcome>;
  readonly close: () => Promise<void>;
}

/** Creates the Pool for `upstream`. TLS to the upstream always verifies its certificate, against the
 * configured `servername` or else the upstream's own host name — never against the client's Host. */
export function createHttpForwarder(
  upstream: HttpUpstream,
  timeouts: TimeoutsConfig,
  clock: Clock,
): HttpForwarder {
  const tls = upstream.tls;
  // undici takes a request's TLS server name from its Host header unless told otherwise, so the
  // client's Host (the gateway's public name) would become the SNI sent upstream and the name the
  // upstream's certificate is checked against; a Host that changes between requests would also tear
  // down the pooled connection ("servername changed"). The connector pins the name per upstream:
  // the configured servername, else the upstream host (an IP literal: no SNI, RFC 6066 §3, and the
  // certificate is checked against the IP).
  const pinnedServername = tls?.servername ?? (isIP(upstream.hostname) === 0 ? upstream.hostname : undefined);
  const baseConnect = buildConnector({
    timeout: timeouts.upstreamConnectMs,
    rejectUnauthorized: true,
    ...(tls?.ca ? { ca: tls.ca } : {}),
    ...(tls?.cert ? { cert: tls.cert } : {}),
    ...(tls?.key ? { key: tls.key } : {}),
    ...(pinnedServername !== undefined ? { servername: pinnedServername } : {}),
  });
  // '' falls through to the pinned name (or, for an IP, to none) inside undici's connector.
  const connect: buildConnector.connector = (opts, cb) => baseConnect({ ...opts, servername: '' }, cb);
  const pool = new Pool(upstream.origin, {
    connections: DEFAULTS.upstream.maxConnections,
    pipelining: 1,
    keepAliveTimeout: 4_000,
    keepAliveMaxTimeout: 60_000,
    headersTimeout: timeouts.upstreamResponseMs,
    bodyTimeout: timeouts.upstreamIdleMs,
    connect,
  });
  /** One constant name per upstream for undici's connection reuse check (see above). */
  const reuseKey = pinnedServername ?? upstream.hostname;

  async function forward(
    fr: ForwardRequest,
    req: ClientRequest,
    res: ClientResponse,
  ): Promise<ForwardOutcome> {
    const ac = new AbortController();
    // Whether the client's side of the exchange is gone. Tracked here because neither stream flag says
    // so on HTTP/2: an Http2ServerResponse has no `destroyed`, and after an RST_STREAM its
    // `writableFinished` is true (hostile cases 74, 108).
    let clientGone = false;
    let complete = false;
    const onClose = (): void => {
      clientGone = true;
      // The client went away before the response finished: abort upstream so its socket is freed.
      if (!complete) ac.abort();
    };
    res.once('close', onClose);
    if (res instanceof Http2ServerResponse) {
      // Rapid reset (CVE-2023-44487, hostile case 74) sends HEADERS and RST_STREAM in one packet; the
      // reset is processed after this handler returns. One event-loop turn lets it land, so a stream
      // that is already cancelled opens no upstream connection and sends no request.
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
    if (clientGone || isClosed(res)) {
      res.off('close', onClose);
      return { status: 0, abortedReason: 'client_closed' };
    }
    if (fr.expectContinue) res.writeContinue();
    let upstreamRes;
    let sentAt = 0n;
    const counts = { in: 0, out: 0 };
    try {
      // `servername` is read by undici's Request but missing from its types; so is an async-iterable body
      // (undici's Request accepts any iterable: lib/core/request.js).
      const options: Omit<Dispatcher.RequestOptions, 'body'> & {
        servername: string;
        body: AsyncIterable<Buffer> | null;
      } = {
        method: fr.method,
        path: fr.path,
        headers: fr.headers,
        body: fr.hasBody ? countedBody(req, counts) : null,
        signal: ac.signal,
        servername: reuseKey,
      };
      sentAt = clock.hrtime();
      upstreamRes = await pool.request(options as Dispatcher.RequestOptions);
    } catch (err) {
      res.off('close', onClose);
      if (clientGone) return { status: 0, abortedReason: 'client_closed' };
      throw toUpstreamError(err);
    }
    const upstreamSeconds = Number(clock.hrtime() - sentAt) / 1e9;
    const { statusCode, headers, body } = upstreamRes;
    if (clientGone || isClosed(res)) {
      body.destroy();
      return { status: statusCode, abortedReason: 'client_closed' };
    }
    cleanResponseHeaders(headers);
    // The client gets the id its request went upstream with, unless the upstream answered with its own.
    if (headers['x-request-id'] === undefined) headers['x-request-id'] = fr.requestId;
    const telemetryStripped = fr.stripResponseTelemetry
      ? stripResponseTelemetry(headers, fr.stripResponseTelemetry)
      : 0;
    return new Promise<ForwardOutcome>((resolve) => {
      let aborted: string | undefined;
      body.once('end', () => (complete = true));
      body.on('error', (err) => {
        if (clientGone) return; // our own abort: the 'close' below reports it
        // Mid-body failure: the status line is out, so the only honest signal is a cut connection
        // (HTTP/1.1: no final chunk; HTTP/2: RST_STREAM INTERNAL_ERROR, hostile case 123).
        aborted = toUpstreamError(err).code;
        cut(res);
      });
      res.once('close', () => {
        if (!body.destroyed) body.destroy();
        if (aborted === undefined && !complete) aborted = 'client_closed';
        const base = {
          status: statusCode,
          upstreamSeconds,
          bytesIn: counts.in,
          bytesOut: counts.out,
          ...(telemetryStripped > 0 ? { telemetryStripped } : {}),
        };
        resolve(aborted === undefined ? base : { ...base, abortedReason: aborted });
      });
      try {
        res.writeHead(statusCode, headers as Record<string, string | string[]>);
      } catch {
        aborted = 'ERR_UPSTREAM_BAD_RESPONSE';
        body.destroy();
        cut(res);
        return;
      }
      body.pipe(res as NodeJS.WritableStream);
      // After pipe(): the body already flows, this listener only counts what passes.
      body.on('data', (chunk: Buffer) => (counts.out += chunk.length));
    });
  }

  return {
    forward,
    close: () => pool.close(),
  };
}

/**
 * The client's request body as undici reads it, counting the bytes that pass. An async generator keeps
 * undici's backpressure (it pulls one chunk at a time) and, unlike a second 'data' listener, cannot start
 * the stream flowing before undici reads it (a chunk read then would be lost).
 */
async function* countedBody(req: ClientRequest, counts: { in: number }): AsyncGenerator<Buffer> {
  for await (const chunk of req as AsyncIterable<Buffer>) {
    counts.in += chunk.length;
    yield chunk;
  }
}

/** Whether the client's response stream is already closed (HTTP/1.1 socket gone, HTTP/2 stream closed). */
function isClosed(res: ClientResponse): boolean {
  if (res instanceof Http2ServerResponse) return res.stream.closed || res.stream.destroyed;
  return res.destroyed;
}

/** Ends a response that cannot complete so that the client sees a failure, not a short success:
 * HTTP/2 resets the stream with INTERNAL_ERROR (RFC 9113 §8.1), HTTP/1.1 closes the connection
 * (no final chunk, or fewer bytes than Content-Length). */
function cut(res: ClientResponse): void {
  if (res instanceof Http2ServerResponse) {
    if (!res.stream.destroyed) res.stream.close(h2constants.NGHTTP2_INTERNAL_ERROR);
  } else res.destroy();
}
