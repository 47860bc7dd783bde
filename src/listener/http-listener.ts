/**
 * An HTTP listener: a front TCP server that sniffs the first byte (plaintext gets a 400, see
 * policy/plaintext.ts), then a `node:http2` secure server with `allowHTTP1` (ALPN h2 and http/1.1).
 *
 * The connection-level guards live here: TLS handshake timeout, renegotiation disabled, certificate
 * verdicts turned into per-connection state (every refusal counted by reason, logged at a bounded
 * rate), HTTP/2 limits, and the gateway's own header/keep-alive
 * timers for HTTP/1.1 — Node's http2 server does not enforce headersTimeout on its HTTP/1 fallback, so
 * without them slowloris holds connections open forever (threat model #101).
 */
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http';
import {
  createSecureServer,
  type Http2ServerRequest,
  type Http2ServerResponse,
  type Http2Session,
  type Http2SecureServer,
  type ServerHttp2Stream,
} from 'node:http2';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import type { Http2Config, TimeoutsConfig } from '../config/schema.js';
import type { DecisionRuntimeListener, HttpRuntimeListener } from '../config/runtime.js';
import { systemClock, type Clock } from '../clock.js';
import { ERRORS, GatewayError, type ErrorCode } from '../errors.js';
import { rawAnswer, refusal } from '../pipeline/respond.js';
import type { Logger } from '../observability/logger.js';
import type { ConnectionRejectReason, Metrics } from '../observability/metrics.js';
import { openFrontDoor, tlsRejectReason, type FrontDoor, type Intake } from './front-door.js';
import { listenerBlock, type Listener, type ListenerRuntime } from './listener.js';
import { swapSecureContext } from './tls-material.js';
import {
  attachConnectionState,
  createConnectionState,
  createVerifiedConnections,
  socketPeer,
} from './connection.js';
import type { HttpHandler } from './http-handler.js';
import { isDroppingInput, lingeringClose } from './refused-body.js';

export interface HttpListenerDeps {
  readonly logger: Logger;
  readonly metrics: Metrics;
  /** The request handler of the config it starts with; a reload brings its own (`update`). */
  readonly handler: HttpHandler;
  readonly timeouts: TimeoutsConfig;
  readonly http2: Http2Config;
  /** Time source of the refusal-log rate limit; the system clock when absent. */
  readonly clock?: Clock;
  /**
   * TLS session ticket keys (48 bytes) of the first secure context: the app derives them (listener/ticket-keys.ts)
   * so that every worker of a cluster holds the same ones and a client resumes whichever worker answers.
   * Absent: Node's random keys.
   */
  readonly ticketKeys?: Buffer;
}

const kTimer = Symbol('portcullis.h1timer');
/** Set on a socket once its HTTP/1.1 parse error has been answered. */
const kRefused = Symbol('portcullis.refused');
/** What a connection whose request did not arrive in time gets (Node's `requestTimeout`). */
const REQUEST_TIMEOUT_ANSWER = rawAnswer({ status: 408, headers: {}, body: '' });

/**
 * The registry code for an llhttp error: a method llhttp does not know (or that is not a token) is a bad
 * method, the rest of the request line (target, version) a bad target, a header section over the limit
 * is 431, anything else (header syntax, Content-Length and Transfer-Encoding framing, chunk syntax) is a
 * bad header.
 */
export function parseErrorCode(hpeCode: string): ErrorCode {
  if (hpeCode === 'HPE_HEADER_OVERFLOW') return 'ERR_REQUEST_HEADERS_TOO_LARGE';
  if (hpeCode === 'HPE_INVALID_METHOD') return 'ERR_REQUEST_BAD_METHOD';
  if (hpeCode === 'HPE_INVALID_URL' || hpeCode === 'HPE_INVALID_VERSION') return 'ERR_REQUEST_BAD_PATH';
  return 'ERR_REQUEST_BAD_HEADER';
}
const kInflight = Symbol('portcullis.inflight');
const kPipeline = Symbol('portcullis.pipeline');
type H1Socket = Socket & {
  [kTimer]?: NodeJS.Timeout | undefined;
  [kInflight]?: number;
  [kPipeline]?: (() => void)[];
};

/**
 * HTTP/1.1 pipelining. Node's parser emits every pipelined request of a read at once, before any answer
 * is written, and only stops reading once answers pile up — with a slow upstream or IdP, nothing piles
 * up, so one connection could start thousands of upstream requests or IdP calls. The gateway runs the
 * requests of one connection one after the other (answers are in order anyway, RFC 9112 §9.3.2), stops
 * reading past {@link PIPELINE_PAUSE_AT} queued requests, and cuts a connection that has more than
 * {@link PIPELINE_MAX} waiting (no real client pipelines that deep).
 */
const PIPELINE_PAUSE_AT = 8;
const PIPELINE_MAX = 64;

/**
 * Creates an HTTP listener, unbound (`start` binds it): of an http listener, or of a decision listener
 * (plaintext on loopback; its handler answers instead of forwarding, listener/decision-handler.ts). On a reload (`update`), requests that arrive from
 * then on run on the new config's handler, requests in flight finish on the old one; on a TLS listener the
 * new certificate, key, CA and CRL apply to handshakes from then on, and the listener ACL, read at each
 * handshake, to new connections. Plaintext stays plaintext and TLS stays TLS: a reload cannot change that
 * (app.ts `restartNeeded`).
 */
export function createHttpListener(
  listener: HttpRuntimeListener | DecisionRuntimeListener,
  deps: HttpListenerDeps,
): Listener {
  const { logger, metrics, timeouts } = deps;
  // Swapped whole by `update` (config reload); read at each handshake and each request.
  let handler = deps.handler;
  let current = listener;
  const name = listener.name;
  const active = metrics.activeConnections.labels(name);
  const streams = metrics.activeStreams.labels(name);
  // Metric children resolved once: a handshake does no label lookup by string.
  const handshakesH2 = metrics.handshakes.labels(name, 'h2');
  const handshakesH1 = metrics.handshakes.labels(name, 'http/1.1');
  const handshakesNone = metrics.handshakes.labels(name, 'none');
  const reject = (reason: ConnectionRejectReason): void => metrics.rejectedConnections.labels(name, reason).inc();
  const clock = deps.clock ?? systemClock;
  // Set once the front door is open (`start`); nothing is refused before that.
  let door: FrontDoor | undefined = undefined;
  /** One info line about a refused connection, rate-limited (front-door.ts REFUSAL_LOG_LINES_PER_SECOND). */
  const logRefusal = (fields: Record<string, unknown>, msg: string): void => door?.logRefusal(fields, msg);
  const isClosing = (): boolean => door?.closing === true;
  const sessions = new Set<Http2Session>();
  /** HTTP/1.1 connections past the handshake (drained one by one at close). */
  const h1Sockets = new Set<H1Socket>();
  const verified = createVerifiedConnections(logger, name);

  const clearTimer = (s: H1Socket): void => {
    const t = s[kTimer];
    if (t !== undefined) {
      clearTimeout(t);
      s[kTimer] = undefined;
    }
  };
  const armTimer = (s: H1Socket, ms: number, reason: ConnectionRejectReason | undefined): void => {
    clearTimer(s);
    const t = setTimeout(() => {
      if (reason) reject(reason);
      s.destroy();
    }, ms);
    t.unref();
    s[kTimer] = t;
  };

  const onRequest = (req: IncomingMessage | Http2ServerRequest, res: ServerResponse | Http2ServerResponse, expectContinue: boolean): void => {
    // Errors on either stream must never become uncaught exceptions (a crash is a denial of service).
    req.on('error', noop);
    res.on('error', noop);
    if (req.httpVersionMajor === 1) {
      const s = req.socket as H1Socket;
      clearTimer(s);
      const n = (s[kInflight] ?? 0) + 1;
      s[kInflight] = n;
      res.once('close', () => {
        const left = (s[kInflight] ?? 1) - 1;
        s[kInflight] = left;
        const queue = s[kPipeline];
        const next = queue?.shift();
        if (queue !== undefined && queue.length < PIPELINE_PAUSE_AT && s.isPaused() && !s.destroyed) s.resume();
        if (next !== undefined) {
          next();
          return;
        }
        if (left === 0 && !s.destroyed) {
          if (isClosing()) s.destroySoon();
          else armTimer(s, timeouts.keepAliveMs, undefined);
        }
      });
      if (n > 1) {
        // Pipelined behind a request still in flight: run it when that one is answered.
        const queue = (s[kPipeline] ??= []);
        if (queue.length >= PIPELINE_MAX) {
          logger.info({ listener: name, reason: 'pipeline_flood', queued: queue.length, ...socketPeer(s) }, 'connection cut');
          s.destroy();
          return;
        }
        queue.push(() => {
          handler.handle(req, res, expectContinue);
        });
        if (queue.length >= PIPELINE_PAUSE_AT) s.pause();
        return;
      }
    }
    handler.handle(req, res, expectContinue);
  };
  const onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
    // The upgrade socket is the connection's TLS socket: its header timer no longer applies.
    // eslint-disable-next-line @typescript-eslint/no-unsafe-class-instance-assignment -- same object, wider type
    clearTimer(socket as H1Socket);
    handler.handleUpgrade(req, socket, head);
  };

  let server: Http2SecureServer | ReturnType<typeof createHttpServer>;
  /** How the front door hands a connection over (front-door.ts). */
  let intake: Intake;
  let secureServer: Http2SecureServer | undefined;
  if (listener.tls) {
    const tls = listener.tls;
    const h2 = deps.http2;
    // Node 24 applies its HTTP/1 server options to the allowHTTP1 fallback (Node 20 did not), with
    // defaults that would answer before the gateway and record nothing: a bare 400 for a missing Host
    // (the gateway refuses it as ERR_REQUEST_BAD_HOST, logged and counted), a 408 once a request has
    // taken 300 s whatever requestBodyMs says, an idle keep-alive connection closed after 5 s whatever
    // keepAliveMs says. The gateway's own timers stay in charge; Node's are set to agree with them.
    // (@types/node does not list these options for http2, hence the separate object.)
    const http1Fallback = {
      requireHostHeader: false,
      requestTimeout: 0,
      headersTimeout: timeouts.requestHeadersMs,
      keepAliveTimeout: timeouts.keepAliveMs,
    };
    const secure = createSecureServer({
      ...tls.options,
      ...http1Fallback,
      allowHTTP1: true,
      ALPNProtocols: ['h2', 'http/1.1'],
      handshakeTimeout: timeouts.tlsHandshakeMs,
      maxSessionMemory: h2.maxSessionMemoryMb,
      settings: {
        maxConcurrentStreams: h2.maxConcurrentStreams,
        maxHeaderListSize: h2.maxHeaderListSize,
        initialWindowSize: h2.initialWindowSize,
        enablePush: false,
      },
    });
    // Idle sockets (HTTP/1.1) and idle sessions (HTTP/2) are closed after idleMs (threat model #85).
    secure.setTimeout(timeouts.idleMs);
    if (deps.ticketKeys !== undefined) secure.setTicketKeys(deps.ticketKeys);
    secure.prependListener('secureConnection', (socket: TLSSocket) => {
      // TLS 1.2 renegotiation is a CPU-exhaustion and confusion vector; nothing here needs it.
      socket.disableRenegotiation();
      socket.on('error', noop);
      const clientCertificate = current.tls?.clientCertificate ?? tls.clientCertificate;
      if (!socket.authorized && clientCertificate !== 'none') {
        const cert = socket.getPeerCertificate();
        const presented = cert && Object.keys(cert).length > 0;
        if (presented || clientCertificate === 'require') {
          // `optional`: a certificate was presented and failed verification. Never downgrade it to
          // "anonymous": refuse the connection, as `require` does. (`require` never gets here through
          // Node, which already refused the handshake; if it ever did, it is refused here too.)
          const detail = String(socket.authorizationError ?? 'no certificate');
          const reason: ConnectionRejectReason = !presented ? 'no_client_cert' : detail.includes('REVOKED') ? 'revoked' : 'bad_client_cert';
          reject(reason);
          logRefusal({ reason, detail, ...socketPeer(socket) }, 'connection refused');
          socket.destroy();
          return;
        }
      }
      try {
        const state = createConnectionState(socket, current.acl);
        attachConnectionState(socket, state);
        verified.add(socket, state);
      } catch (err) {
        // A certificate the identity parser cannot read exactly is refused, never half-trusted.
        reject('bad_client_cert');
        logRefusal(
          { reason: 'bad_client_cert', detail: err instanceof Error ? err.message : 'unreadable', ...socketPeer(socket) },
          'connection refused',
        );
        socket.destroy();
        return;
      }
      const alpn = socket.alpnProtocol;
      (alpn === 'h2' ? handshakesH2 : alpn === 'http/1.1' ? handshakesH1 : handshakesNone).inc();
      if (socket.alpnProtocol !== 'h2') {
        h1Sockets.add(socket);
        // The timer holds the socket: cleared at close, or a closed connection would stay in memory until
        // its keep-alive or header timer fired (found by bench/soak.mjs: +6 KiB per connection).
        socket.once('close', () => {
          h1Sockets.delete(socket);
          clearTimer(socket);
        });
        armTimer(socket, timeouts.requestHeadersMs, 'headers_timeout');
      }
    });
    secure.on('tlsClientError', (err: Error & { code?: string }, socket: TLSSocket) => {
      const verify: unknown = socket.authorizationError;
      const reason = tlsRejectReason(err, verify);
      reject(reason);
      // With `require`, Node verifies the certificate after the handshake and destroys the socket: the
      // error is then a bare ECONNRESET and the real reason (CERT_REVOKED, CRL_HAS_EXPIRED, ...) is the
      // socket's verify result, which is what the operator needs to read.
      const detail = typeof verify === 'string' && verify !== '' ? verify : (err.code ?? err.message);
      logRefusal({ reason, detail, ...socketPeer(socket) }, 'tls handshake refused');
    });
    secure.on('session', (session: Http2Session) => {
      sessions.add(session);
      session.once('close', () => sessions.delete(session));
      // Every stream ends with one 'close' (answered, reset by either side, errored, or its session gone).
      session.on('stream', (stream: ServerHttp2Stream) => {
        streams.inc();
        stream.once('close', () => streams.dec());
      });
      if (isClosing()) session.close();
    });
    secure.on('sessionError', noop);
    secure.on('request', (req: Http2ServerRequest, res: Http2ServerResponse) => onRequest(req, res, false));
    secure.on('checkContinue', (req: Http2ServerRequest, res: Http2ServerResponse) => onRequest(req, res, true));
    secure.on('upgrade', onUpgrade);
    secure.on('connect', (req: IncomingMessage, socket: Duplex, head: Buffer) => onUpgrade(req, socket, head));
    server = secure;
    secureServer = secure;
    intake = {
      // Plaintext on a TLS port gets a one-line 400 (policy/plaintext.ts), so the first byte is read here.
      kind: 'http-400',
      firstByteMs: timeouts.tlsHandshakeMs,
      onTls: (socket) => secure.emit('connection', socket),
    };
  } else {
    // Plaintext on purpose (requireEncryption: false + plaintext: true): Node's own HTTP timers apply.
    const plain = createHttpServer({
      // As on the TLS listener: a missing Host is the gateway's refusal, logged and counted.
      requireHostHeader: false,
      headersTimeout: timeouts.requestHeadersMs,
      requestTimeout: 0,
      keepAliveTimeout: timeouts.keepAliveMs,
    });
    plain.setTimeout(timeouts.idleMs);
    plain.on('request', (req: IncomingMessage, res: ServerResponse) => onRequest(req, res, false));
    plain.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => onRequest(req, res, true));
    plain.on('upgrade', onUpgrade);
    plain.on('connect', onUpgrade);
    intake = {
      // Node's HTTP server is the front and reads the bytes itself.
      kind: 'server',
      server: plain,
      onAccepted: (socket) => {
        h1Sockets.add(socket);
        socket.once('close', () => {
          h1Sockets.delete(socket);
          clearTimer(socket);
        });
      },
    };
    server = plain;
  }
  server.on('clientError', (err: Error & { code?: string }, socket: Duplex) => {
    // Malformed HTTP/1 (llhttp refused it, code HPE_*): one short answer from the error registry, then
    // close; never reuse the connection. Every other error lands here too and gets no HTTP answer: the
    // http2 secure server forwards TLS handshake failures (already counted by tlsClientError), and a TLS
    // socket reports a refused renegotiation (ERR_TLS_RENEGOTIATION_DISABLED) or a reset as an error.
    const s = socket as Duplex & { [kRefused]?: true; _httpMessage?: ServerResponse | null };
    // The parser stays in its error state: every later chunk would report the same error again.
    if (s[kRefused]) return;
    s[kRefused] = true;
    if (isDroppingInput(socket)) {
      // Already answered, now dropping the rest of a refused request's body: the client closing in the
      // middle of it (HPE_INVALID_EOF_STATE) or sending garbage is not a second request to refuse.
      socket.destroy();
      return;
    }
    const code = err.code ?? '';
    const parseError = code.startsWith('HPE_');
    if (!parseError && code !== 'ERR_HTTP_REQUEST_TIMEOUT') {
      if (code === 'ERR_TLS_RENEGOTIATION_DISABLED' || code === 'ERR_TLS_SESSION_ATTACK') {
        logRefusal({ reason: 'protocol', detail: code, ...socketPeer(socket as Partial<Pick<Socket, 'remoteAddress' | 'remotePort'>>) }, 'connection closed');
      }
      socket.destroy();
      return;
    }
    let answer: string;
    if (parseError) {
      const gcode = parseErrorCode(code);
      metrics.denials.labels(name, gcode).inc();
      logRefusal(
        {
          status: ERRORS[gcode].status,
          reason: gcode,
          detail: code,
          ...socketPeer(socket as Partial<Pick<Socket, 'remoteAddress' | 'remotePort'>>),
        },
        'request refused by the HTTP/1.1 parser',
      );
      answer = rawAnswer(refusal(new GatewayError(gcode)));
    } else {
      answer = REQUEST_TIMEOUT_ANSWER;
    }
    const send = (): void => {
      if (!socket.writable || socket.destroyed) {
        socket.destroy();
        return;
      }
      socket.end(answer);
      // Lingering close (as nginx does): keep reading and dropping what the client is still sending for
      // a moment, within a bound (refused-body.ts). Closing with unread bytes makes the kernel send a
      // RST, and a RST makes the client's kernel discard the answer before the client has read it.
      lingeringClose(socket);
    };
    const inflight = s._httpMessage;
    if (inflight && !inflight.writableFinished && !inflight.destroyed) {
      if (inflight.req.complete) {
        // The error is in a later pipelined request and an earlier one is still being answered: that
        // answer finishes first, the refusal must not be spliced into it.
        inflight.once('close', send);
        return;
      }
      if (inflight.headersSent) {
        // The in-flight request's own body is malformed and its answer has begun: nothing can be said.
        socket.destroy();
        return;
      }
    }
    send();
  });

  const drain = (graceMs: number): Promise<void> => {
    const front = door;
    if (front === undefined) return Promise.resolve();
    const closed = front.stopAccepting();
    if (front.server !== server) server.close();
    for (const session of sessions) session.close();
    // Idle HTTP/1.1 connections close now; busy ones after their response (see onRequest).
    for (const s of h1Sockets) if ((s[kInflight] ?? 0) === 0) s.destroy();
    const force = setTimeout(() => front.destroyAll(), graceMs);
    force.unref();
    return closed.finally(() => clearTimeout(force));
  };

  return {
    name,
    async start(): Promise<void> {
      door = await openFrontDoor(current, { logger, clock, reject, active, intake });
    },
    address() {
      if (door === undefined) throw new Error(`listener ${name} is not started`);
      return door.address();
    },
    setTicketKeys(keys: Buffer): void {
      secureServer?.setTicketKeys(keys);
    },
    closeRevoked: (serials: ReadonlySet<string>): number => verified.closeRevoked(serials),
    update(runtime: ListenerRuntime): void {
      const next = listenerBlock(runtime.config, name, listener.protocol);
      const nextHandler = runtime.handlers.get(name);
      if (nextHandler === undefined) throw new Error(`no handler for listener ${name}`);
      if (secureServer !== undefined && next.tls !== undefined)
        swapSecureContext(secureServer, current.tls, next.tls, runtime.ticketKeys);
      current = next;
      handler = nextHandler;
      door?.update(next);
    },
    drain,
    close: () => drain(0),
  };
}

function noop(): void {
  /* error already handled by the owner of the stream */
}
