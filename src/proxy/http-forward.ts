/**
 * HTTP forwarding through undici: one keep-alive Pool per upstream origin, created at start.
 *
 * Why undici and not http-proxy: http-proxy 1.18.1 throws on HTTP/2 requests and costs about 1.5× the
 * CPU per request on this stack (CONVENTIONS.md). Bodies stream both ways with backpressure (no
 * buffering); a client that goes away aborts the upstream request, which frees its socket (threat
 * model #108); upstream timeouts map to 504, connection failures to 502. A request whose body has not all
 * arrived within `requestBodyMs`, and whose upstream has not started answering, is aborted upstream and
 * refused with 408 (threat model #102).
 *
 * Interim responses (1xx) from the upstream are not relayed: the gateway answers `Expect: 100-continue`
 * itself, and a 103 Early Hints repeats what the final response says. They do not stop the clock either:
 * undici restarts its headers timer on each one, so an upstream that sends a 102 or 103 every few seconds
 * would hold a request forever (threat model #134); the first one arms the gateway's own deadline,
 * `upstreamResponseMs` after the request went out, which later ones do not move. Past it the answer is 504
 * and the upstream connection is destroyed, never returned to the pool. (undici itself refuses a
 * `100 Continue` to a request that did not ask for one: the connection is destroyed and the answer is 502.)
 */
import { Http2ServerResponse, constants as h2constants } from 'node:http2';
import { isIP } from 'node:net';
import { Pool, buildConnector, type Dispatcher } from 'undici';
import type { TimeoutsConfig } from '../config/schema.js';
import type { HttpUpstream } from './upstream.js';
import { DEFAULTS } from '../config/defaults.js';
import { GatewayError } from '../errors.js';
import { buildResponseHeaders } from '../mutate/response-headers.js';
import type { Clock } from '../clock.js';
import { toUpstreamError } from './upstream-errors.js';
import {
  writeHead,
  type ClientRequest,
  type ClientResponse,
  type ForwardOutcome,
  type ForwardRequest,
} from './types.js';


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
    // HTTP/1.1 to every upstream, as before undici 8 made ALPN offer h2 by default: the header rules
    // (hop-by-hop, Connection nomination, raw response headers) are HTTP/1.1's.
    allowH2: false,
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

  function forward(fr: ForwardRequest, req: ClientRequest, res: ClientResponse): Promise<ForwardOutcome> {
    return new Promise<ForwardOutcome>((resolve, reject) => {
      const ex = new Exchange(fr, req, res, clock, timeouts, resolve, reject);
      if (res instanceof Http2ServerResponse) {
        // Rapid reset (CVE-2023-44487, threat model #74) sends HEADERS and RST_STREAM in one packet; the
        // reset is processed after this handler returns. One event-loop turn lets it land, so a stream
        // that is already cancelled opens no upstream connection and sends no request.
        setImmediate(() => ex.start(pool, reuseKey));
      } else ex.start(pool, reuseKey);
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
async function* countedBody(
  req: ClientRequest,
  counts: { in: number },
  onEnd: () => void,
): AsyncGenerator<Buffer> {
  for await (const chunk of req as AsyncIterable<Buffer>) {
    counts.in += chunk.length;
    yield chunk;
  }
  onEnd();
}

/**
 * One request's trip upstream and back, as an undici dispatch handler (its lowest-level API). Compared
 * with `pool.request()` this skips, per request, an AsyncResource, an AbortController, a promise and a
 * Readable body piped into the response: the upstream's chunks are written to the client as undici
 * hands them over, and backpressure is undici's own (the controller's pause, and resume on the client's
 * 'drain'). The response headers are taken raw (`controller.rawHeaders`), as the upstream sent them.
 *
 * Settles exactly once: rejects with a GatewayError only while nothing was written to the client;
 * after the status line is out it resolves, cutting the client's response on a mid-body failure.
 */
class Exchange implements Dispatcher.DispatchHandler {
  /** undici's abort of this request, known once it is assigned to a connection (onRequestStart). */
  private abortUpstream: ((err: Error) => void) | undefined;
  /** `requestBodyMs`: armed while a request body is still arriving and no response has started. */
  private bodyTimer: NodeJS.Timeout | undefined;
  /** The body deadline passed before undici connected the request: abort it as soon as it does. */
  private abortOnConnect: Error | undefined;
  /** When the whole request had gone upstream (undici's headers timer starts there); undefined before. */
  private waitingSince: bigint | undefined;
  /** `upstreamResponseMs` from `waitingSince`, armed by the first interim response (see the module comment). */
  private interimTimer: NodeJS.Timeout | undefined;
  /** Interim (1xx) responses the upstream sent for this request; none is relayed. */
  private interim = 0;
  private controller: Dispatcher.DispatchController | undefined;
  /** The client's side is gone (see onClientClose): neither stream flag says so reliably on HTTP/2. */
  private clientGone = false;
  private started = false;
  private complete = false;
  private settled = false;
  private status = 0;
  private aborted: string | undefined;
  private sentAt = 0n;
  private upstreamSeconds = 0;
  private telemetryStripped = 0;
  private readonly counts = { in: 0, out: 0 };

  constructor(
    private readonly fr: ForwardRequest,
    private readonly req: ClientRequest,
    private readonly res: ClientResponse,
    private readonly clock: Clock,
    private readonly timeouts: Pick<TimeoutsConfig, 'requestBodyMs' | 'upstreamResponseMs'>,
    private readonly resolve: (o: ForwardOutcome) => void,
    private readonly reject: (e: Error) => void,
  ) {
    res.once('close', this.onClientClose);
  }

  /** Sends the request, unless the client already left. */
  start(pool: Pool, servername: string): void {
    if (this.clientGone || isClosed(this.res)) {
      this.finish({ status: 0, abortedReason: 'client_closed' });
      return;
    }
    if (this.fr.expectContinue) this.res.writeContinue();
    const fr = this.fr;
    // `servername` is read by undici's Request but missing from its types; so is an async-iterable body
    // (undici's Request accepts any iterable: lib/core/request.js).
    const options: Omit<Dispatcher.DispatchOptions, 'body'> & {
      servername: string;
      body: AsyncIterable<Buffer> | null;
    } = {
      method: fr.method,
      path: fr.path,
      headers: fr.headers,
      body: fr.hasBody ? countedBody(this.req, this.counts, this.bodyHandedOver) : null,
      servername,
    };
    if (fr.hasBody) {
      this.bodyTimer = setTimeout(this.onBodyTimeout, this.timeouts.requestBodyMs);
      this.bodyTimer.unref();
    }
    this.sentAt = this.clock.hrtime();
    pool.dispatch(options as Dispatcher.DispatchOptions, this);
  }

  /** The whole body went upstream, or the response started: the body deadline no longer applies. */
  private readonly disarmBody = (): void => {
    if (this.bodyTimer !== undefined) clearTimeout(this.bodyTimer);
    this.bodyTimer = undefined;
  };

  /** The client's body has all been handed to undici: from now the upstream has everything to answer. */
  private readonly bodyHandedOver = (): void => {
    this.disarmBody();
    this.startWaiting();
  };

  /** The request is complete upstream: the `upstreamResponseMs` clock starts (interim responses count
   * from here; an interim response that came during the upload arms the deadline now). */
  private startWaiting(): void {
    this.waitingSince ??= this.clock.hrtime();
    if (this.interim > 0) this.armInterimDeadline();
  }

  /** Arms, once, the final-response deadline that interim responses cannot move. */
  private armInterimDeadline(): void {
    if (this.interimTimer !== undefined || this.waitingSince === undefined || this.settled || this.started) return;
    const elapsedMs = Number(this.clock.hrtime() - this.waitingSince) / 1e6;
    this.interimTimer = setTimeout(this.onInterimTimeout, Math.max(0, this.timeouts.upstreamResponseMs - elapsedMs));
    this.interimTimer.unref();
  }

  private disarmInterim(): void {
    if (this.interimTimer !== undefined) clearTimeout(this.interimTimer);
    this.interimTimer = undefined;
  }

  /**
   * `upstreamResponseMs` passed since the request went out, with interim responses and no final one:
   * 504 now, and the upstream request is aborted, which destroys its connection (it is not reused: the
   * upstream is still in the middle of an answer).
   */
  private readonly onInterimTimeout = (): void => {
    this.interimTimer = undefined;
    if (this.settled || this.started || this.complete) return;
    const err = new GatewayError(
      'ERR_UPSTREAM_TIMEOUT',
      `no final response ${this.timeouts.upstreamResponseMs} ms after the request (${this.interim} interim responses)`,
    );
    this.disarmBody();
    this.res.off('close', this.onClientClose);
    this.settled = true;
    this.reject(err);
    this.abortUpstream?.(err);
  };

  /**
   * `requestBodyMs` passed with the body still arriving and no response started: refuse with 408 now
   * (the handler closes an HTTP/1.1 connection after it, the rest of the body being unread) and abort
   * the upstream request, which closes its half-sent upstream connection instead of leaving it
   * waiting for bytes that will never come.
   */
  private readonly onBodyTimeout = (): void => {
    this.bodyTimer = undefined;
    if (this.settled || this.started || this.complete) return;
    const err = new GatewayError(
      'ERR_REQUEST_BODY_TIMEOUT',
      `request body incomplete after ${this.timeouts.requestBodyMs} ms (${this.counts.in} bytes read)`,
    );
    this.res.off('close', this.onClientClose);
    this.settled = true;
    this.reject(err);
    if (this.abortUpstream !== undefined) this.abortUpstream(err);
    else this.abortOnConnect = err;
  };

  private readonly onClientClose = (): void => {
    this.clientGone = true;
    this.disarmBody();
    this.disarmInterim();
    if (!this.complete) {
      // The client went away before the response finished: abort upstream so its socket is freed.
      this.abortUpstream?.(new Error('client closed'));
      if (!this.started) this.finish({ status: 0, abortedReason: 'client_closed' });
    }
    if (this.started) this.finishStarted();
  };

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller;
    const abort = (err: Error): void => {
      controller.abort(err);
    };
    this.abortUpstream = abort;
    if (this.abortOnConnect !== undefined) abort(this.abortOnConnect);
    else if (this.clientGone) abort(new Error('client closed'));
    else if (!this.fr.hasBody) this.startWaiting();
  }

  onResponseStart(controller: Dispatcher.DispatchController, statusCode: number): void {
    if (statusCode < 200) {
      // 1xx (102 Processing, 103 Early Hints): never relayed (the gateway answered Expect itself), and
      // never a reason to wait longer than upstreamResponseMs for the final answer.
      this.interim += 1;
      this.armInterimDeadline();
      return;
    }
    this.disarmInterim();
    // The response started: from here the body may take as long as the exchange lives (streams,
    // uploads the upstream answers early), bounded by the idle timers only.
    this.disarmBody();
    if (this.settled) {
      // Refused for its body deadline just before the answer came: the client already has its 408.
      this.abortUpstream?.(new Error('already answered'));
      return;
    }
    this.upstreamSeconds = Number(this.clock.hrtime() - this.sentAt) / 1e9;
    this.status = statusCode;
    const res = this.res;
    if (this.clientGone || isClosed(res)) {
      this.abortUpstream?.(new Error('client closed'));
      return;
    }
    // HTTP/1.1 upstreams (allowH2 is off): undici's parser hands over the raw name/value Buffers.
    const raw = controller.rawHeaders;
    const built = buildResponseHeaders(
      Array.isArray(raw) ? raw : [],
      this.fr.requestId,
      this.fr.stripResponseTelemetry,
    );
    this.telemetryStripped = built.telemetryStripped;
    this.started = true;
    try {
      writeHead(res, statusCode, built.headers);
    } catch {
      this.aborted = 'ERR_UPSTREAM_BAD_RESPONSE';
      this.abortUpstream?.(new Error('bad response headers'));
      cut(res);
    }
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.clientGone) {
      controller.pause();
      return;
    }
    this.counts.out += chunk.length;
    if ((this.res as NodeJS.WritableStream).write(chunk)) return;
    controller.pause();
    this.res.once('drain', this.onDrain);
  }

  private readonly onDrain = (): void => {
    this.controller?.resume();
  };

  onResponseEnd(): void {
    this.complete = true;
    if (this.clientGone) return;
    // Trailers from the upstream are not relayed (they are rarely meaningful through a gateway).
    this.res.end();
  }

  onResponseError(_controller: Dispatcher.DispatchController, err: Error): void {
    this.disarmBody();
    this.disarmInterim();
    // Our own abort after the body deadline answered the client: nothing left to report.
    if (this.settled && !this.started) return;
    if (this.clientGone) {
      // Our own abort after the client left: the close handler reports it.
      if (!this.started) this.finish({ status: 0, abortedReason: 'client_closed' });
      return;
    }
    if (!this.started) {
      this.res.off('close', this.onClientClose);
      this.settled = true;
      this.reject(toUpstreamError(err));
      return;
    }
    // Mid-body failure: the status line is out, so the only honest signal is a cut connection
    // (HTTP/1.1: no final chunk; HTTP/2: RST_STREAM INTERNAL_ERROR, threat model #123).
    this.aborted ??= toUpstreamError(err).code;
    cut(this.res);
  }

  /** The client's response closed after the status line went out: report what it got. */
  private finishStarted(): void {
    if (this.aborted === undefined && !this.complete) this.aborted = 'client_closed';
    const base: ForwardOutcome = {
      status: this.status,
      upstreamSeconds: this.upstreamSeconds,
      bytesIn: this.counts.in,
      bytesOut: this.counts.out,
      ...(this.telemetryStripped > 0 ? { telemetryStripped: this.telemetryStripped } : {}),
    };
    this.finish(this.aborted === undefined ? base : { ...base, abortedReason: this.aborted });
  }

  private finish(outcome: ForwardOutcome): void {
    this.disarmBody();
    this.disarmInterim();
    if (this.settled) return;
    this.settled = true;
    this.res.off('close', this.onClientClose);
    this.resolve(outcome);
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
