/**
 * The two entry points of an HTTP listener, as thin adapters over the pipeline: `handle` (a request with a
 * response object, HTTP/1.1 or HTTP/2) and `handleUpgrade` (an HTTP/1.1 upgrade on a raw socket). Each makes
 * a request context, runs the listener's stages (pipeline/http-stages.ts) through the stage runner, and ends
 * in one of three ways: the terminal (forward, gateway endpoint, WebSocket tunnel), a gateway answer, or a
 * refusal — all written by the one responder (pipeline/respond.ts) and logged with their reason code.
 *
 * Nothing a client sends can escape as an exception: every failure is a GatewayError answered with its
 * status from the registry (fail closed, never crash). `Expect: 100-continue` is answered by the terminal,
 * so only after every stage, authentication included, has passed.
 */
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Http2ServerRequest, Http2ServerResponse } from 'node:http2';
import type { HttpRuntimeListener } from '../config/runtime.js';
import type { Authenticator } from '../authn/principal.js';
import { GatewayError, toGatewayError, type ErrorCode } from '../errors.js';
import { withPrincipal } from '../mutate/request-headers.js';
import type { TelemetryMatcher } from '../mutate/telemetry.js';
import type { AuthMetrics } from '../observability/auth-metrics.js';
import type { Logger } from '../observability/logger.js';
import type { AccessLog } from '../observability/access-log.js';
import { randomRequestId, requestIdOf, type RequestIdSource } from '../mutate/request-id.js';
import type { Metrics } from '../observability/metrics.js';
import { createRequestCounter } from '../observability/request-counter.js';
import type { Clock } from '../clock.js';
import type { RequestContext } from '../pipeline/context.js';
import { createHttpStages } from '../pipeline/http-stages.js';
import { createLoginEndpoints, loginHref } from '../endpoints/login.js';
import { bodyBytes, refusal, writeAnswer, writeRawAnswer, type Answer } from '../pipeline/respond.js';
import { buildRouteRuntimes, type RouteTerminal } from '../pipeline/route-runtime.js';
import { runStages, type StageEnds } from '../pipeline/run.js';
import { connectionStateOf, socketPeer } from './connection.js';
import { createRequestLogger } from './request-log.js';
import { bodyPending, lingeringClose, stopReadingBody } from './refused-body.js';
import type { ClientRequest, ClientResponse, ForwardOutcome, ForwardRequest } from '../proxy/types.js';
import { TUNNEL_CLOSE_REASONS, type WebSocketProxy } from '../proxy/websocket.js';

/** Answers a request that passed every check (route id → terminal map built at start). */
export type RouteForwarder = RouteTerminal;

/** What the handler needs from the rest of the app. */
export interface HttpHandlerDeps {
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly clock: Clock;
  /** Where the one line per request goes (observability/access-log.ts). */
  readonly accessLog: AccessLog;
  /** Makes request ids; default random UUIDs. */
  readonly newRequestId?: RequestIdSource;
  /** The terminal of each route id: its forwarder, or the gateway endpoint that answers it. */
  readonly forwarders: ReadonlyMap<string, RouteForwarder>;
  readonly websocket: WebSocketProxy;
  /** The app's authentication providers by name (`authProviders`); every name a route lists must be here. */
  readonly authenticators?: ReadonlyMap<string, Authenticator>;
  readonly authMetrics?: AuthMetrics;
  /** How long a login endpoint waits for a request body (back-channel logout): `timeouts.requestBodyMs`. */
  readonly bodyMs?: number;
  /** `telemetry` of the runtime config; absent: telemetry headers pass like any other. */
  readonly telemetry?: {
    readonly optOut: boolean;
    readonly honorClientSignals: boolean;
    readonly matcher: TelemetryMatcher;
  };
}

/** The two entry points of an HTTP listener. */
export interface HttpHandler {
  /** `request` and `checkContinue` events of the server (HTTP/1.1 and HTTP/2). */
  handle(req: ClientRequest, res: ClientResponse, expectContinue: boolean): void;
  /** `upgrade` event (HTTP/1.1 only). */
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void;
}

/** The earlier of two optional instants (epoch ms); undefined when neither is known. */
function earliest(a: number | undefined, b: number | undefined): number | undefined {
  if (a === undefined) return b;
  if (b === undefined) return a;
  return Math.min(a, b);
}

/**
 * HTTP/1.1 connections whose last answer was a refusal that closes them (`Connection: close`). Node
 * keeps parsing what is already buffered and emits `request` for every pipelined request behind the
 * refused one before the refusal is even flushed; none of them may be acted on (threat model #59–#67:
 * "a request pipelined behind it is never processed").
 */
const closingConnections = new WeakSet<object>();

/** Whether the client's side of an exchange is gone (HTTP/1.1 socket closed or request aborted, HTTP/2
 * stream closed). An `Http2ServerResponse` has no `destroyed`: its stream says it. */
function clientGone(req: ClientRequest, res: ClientResponse): boolean {
  if (req.httpVersionMajor === 2) {
    const stream = (res as Http2ServerResponse).stream;
    return stream.closed || stream.destroyed;
  }
  return (res as { destroyed: boolean }).destroyed || req.errored !== null;
}

/** Creates the handler of one listener. */
export function createHttpHandler(listener: HttpRuntimeListener, deps: HttpHandlerDeps): HttpHandler {
  const { metrics, clock } = deps;
  const lname = listener.name;
  const newRequestId = deps.newRequestId ?? randomRequestId;
  const { runtimeOf } = buildRouteRuntimes(listener, {
    metrics,
    terminals: deps.forwarders,
    authenticators: deps.authenticators,
    telemetry: deps.telemetry,
  });
  const hasLogin = Object.values(listener.routeAuth).some((a) => a.login !== undefined);
  const login = hasLogin ? createLoginEndpoints(listener, deps.authenticators, { bodyMs: deps.bodyMs ?? 10_000 }) : undefined;
  const stages = createHttpStages(listener, { runtimeOf, newRequestId, authMetrics: deps.authMetrics, login });
  const telemetryRequest = metrics.telemetryStripped.labels('request');
  const telemetryResponse = metrics.telemetryStripped.labels('response');
  /** The tunnel-close counters of this listener, by reason, resolved once. */
  const tunnelClosed = new Map<string, ReturnType<Metrics['tunnelsClosed']['labels']>>(
    TUNNEL_CLOSE_REASONS.map((r) => [r, metrics.tunnelsClosed.labels(lname, r)]),
  );
  const denialCounters = new Map<ErrorCode, ReturnType<Metrics['denials']['labels']>>();
  const denialCounter = (code: ErrorCode): ReturnType<Metrics['denials']['labels']> => {
    let c = denialCounters.get(code);
    if (c === undefined) {
      c = metrics.denials.labels(lname, code);
      denialCounters.set(code, c);
    }
    return c;
  };
  /** A browser's request (not an upgrade: its refusal goes on a raw socket to a script, not to a person). */
  const wantsHtml = (ctx: RequestContext): boolean =>
    !ctx.upgrade && (ctx.req.headers.accept ?? '').toLowerCase().includes('text/html');
  /** Requests refused before a route was found count under route `none`. */
  const unrouted = createRequestCounter(metrics, lname, 'none');

  /** Writes the request's access-log line. */
  const logAccess = createRequestLogger(lname, { clock, accessLog: deps.accessLog, newRequestId });

  /** Counts and logs a refusal (or an upstream failure) and returns its answer. */
  function refusalOf(ctx: RequestContext, err: GatewayError): Answer {
    denialCounter(err.code).inc();
    // Denials after routing (client ACL, auth) count under their route id; earlier ones under `none`.
    (ctx.rt?.requests ?? unrouted).count(ctx.req.method, err.status);
    ctx.requestId ??= requestIdOf(ctx.req.rawHeaders, newRequestId);
    const answer = refusal(err, {
      scope: ctx.scope,
      requestId: ctx.requestId,
      html: wantsHtml(ctx) ? { loginHref: hasLogin ? loginHref(ctx.target?.path) : undefined } : undefined,
    });
    logAccess(ctx, {
      status: answer.status,
      outcome: err.code.startsWith('ERR_UPSTREAM_') ? 'upstream_error' : 'denied',
      reason: err.code,
      detail: err.detail,
      bytesOut: bodyBytes(answer),
    });
    return answer;
  }

  /** Ends a request with the gateway's own refusal (or upstream failure). Never throws. */
  function deny(ctx: RequestContext, res: ClientResponse, err: GatewayError): void {
    const req = ctx.req;
    const answer = refusalOf(ctx, err);
    // The rest of a body still arriving is not read: the connection closes (HTTP/1.1) or the stream is
    // reset (HTTP/2) after the answer (refused-body.ts).
    const unreadBody = bodyPending(req);
    // A malformed request may be a smuggling attempt: do not reuse an HTTP/1.1 connection after it,
    // and never act on what the client pipelined behind it.
    const close = req.httpVersionMajor === 1 && (unreadBody || err.code.startsWith('ERR_REQUEST_'));
    if (close) closingConnections.add(req.socket);
    if (res.headersSent) {
      res.destroy();
      return;
    }
    writeAnswer(res, answer, close);
    if (unreadBody) stopReadingBody(req, res);
  }

  /** Hands a request that passed every stage to its route's terminal. Never throws. */
  function dispatch(ctx: RequestContext, res: ClientResponse): void {
    const req = ctx.req;
    const rt = ctx.rt;
    const scanned = ctx.headers;
    const target = ctx.target;
    const terminal = rt?.terminal;
    if (rt === undefined || scanned === undefined || target === undefined || terminal === undefined) {
      deny(ctx, res, new GatewayError('ERR_INTERNAL', `no terminal for route ${rt?.id ?? 'none'}`));
      return;
    }
    const principal = ctx.principal;
    if (principal !== undefined && clientGone(req, res)) {
      // The client left while its credential was being checked.
      rt.requests.count(req.method, 0);
      logAccess(ctx, { status: 0, outcome: 'aborted', reason: 'client_closed' });
      return;
    }
    const telemetry = rt.telemetry;
    const fr: ForwardRequest = {
      route: target.route,
      method: req.method ?? 'GET',
      path: ctx.forwardPath ?? target.path,
      headers: principal === undefined ? scanned.headers : withPrincipal(scanned, principal),
      hasBody: ctx.isH2 ? !(req as Http2ServerRequest).stream.endAfterHeaders : scanned.hasBody,
      expectContinue: ctx.expectContinue,
      requestId: scanned.requestId,
      ...(telemetry !== undefined && scanned.stripResponseTelemetry ? { stripResponseTelemetry: telemetry } : {}),
    };
    // Counted once per request, here: the headers left the gateway without them.
    if (scanned.telemetryStripped > 0) telemetryRequest.inc(scanned.telemetryStripped);
    let pending: Promise<ForwardOutcome>;
    try {
      pending = terminal(fr, req, res);
    } catch (err) {
      deny(ctx, res, toGatewayError(err));
      return;
    }
    pending.then(
      (outcome) => {
        const seconds = Number(clock.hrtime() - ctx.started) / 1e9;
        rt.requests.count(req.method, outcome.status);
        rt.duration.observe(seconds);
        if (outcome.upstreamSeconds !== undefined) rt.upstream.observe(outcome.upstreamSeconds);
        if (outcome.telemetryStripped !== undefined) telemetryResponse.inc(outcome.telemetryStripped);
        const reason = outcome.abortedReason;
        logAccess(ctx, {
          status: outcome.status,
          outcome:
            reason === undefined
              ? 'forwarded'
              : reason.startsWith('ERR_UPSTREAM_')
                ? 'upstream_error'
                : 'aborted',
          reason,
          bytesIn: outcome.bytesIn ?? 0,
          bytesOut: outcome.bytesOut ?? 0,
        });
      },
      (err: unknown) => {
        if (clientGone(req, res)) {
          // The client went away (or its request body was malformed and Node answered 400 and closed)
          // before any response: the abort is the client's doing, not an upstream failure.
          rt.requests.count(req.method, 0);
          logAccess(ctx, { status: 0, outcome: 'aborted', reason: 'client_closed' });
          return;
        }
        const gerr = toGatewayError(err);
        // A body deadline (ERR_REQUEST_BODY_TIMEOUT) is the client's failure, not the upstream's.
        if (gerr.code.startsWith('ERR_UPSTREAM_')) metrics.upstreamErrors.labels(rt.id, gerr.code).inc();
        deny(ctx, res, gerr);
      },
    );
  }

  /** A gateway answer (redirect, owned page) to a request: written and logged like a response. */
  function answerRequest(ctx: RequestContext, res: ClientResponse, answer: Answer): void {
    (ctx.rt?.requests ?? unrouted).count(ctx.req.method, answer.status);
    writeAnswer(res, answer);
    logAccess(ctx, { status: answer.status, outcome: 'answered', bytesOut: bodyBytes(answer) });
  }

  function handle(req: ClientRequest, res: ClientResponse, expectContinue: boolean): void {
    const conn = connectionStateOf(req.socket);
    const ctx: RequestContext = {
      req,
      isH2: req.httpVersionMajor === 2,
      upgrade: false,
      expectContinue,
      conn,
      peer: conn ?? socketPeer(req.socket),
      started: clock.hrtime(),
    };
    if (req.httpVersionMajor === 1 && closingConnections.has(req.socket)) {
      // Pipelined behind a refusal on a connection that Node closes once that refusal is written:
      // left unanswered (its response would be queued behind the close) and never forwarded.
      logAccess(ctx, { status: 0, outcome: 'aborted', reason: 'pipelined_after_close' });
      return;
    }
    runStages(stages.request, ctx, requestEnds(res));
  }

  const requestEnds = (res: ClientResponse): StageEnds<RequestContext> => ({
    pass: (ctx) => dispatch(ctx, res),
    answer: (ctx, a) => answerRequest(ctx, res, a),
    refuse: (ctx, err) => deny(ctx, res, err),
  });

  /** Opens the tunnel of an upgrade that passed every stage. Never throws. */
  function tunnel(ctx: RequestContext, socket: Duplex, head: Buffer): void {
    const rt = ctx.rt;
    const scanned = ctx.headers;
    const key = ctx.websocketKey;
    const upstream = rt?.route.upstream;
    if (rt === undefined || scanned === undefined || key === undefined || upstream?.kind !== 'http') {
      refuseUpgrade(ctx, socket, new GatewayError('ERR_INTERNAL', 'upgrade without a checked handshake'));
      return;
    }
    const principal = ctx.principal;
    if (principal !== undefined && socket.destroyed) {
      logAccess(ctx, { status: 0, outcome: 'aborted', reason: 'client_closed' });
      return;
    }
    if (scanned.telemetryStripped > 0) telemetryRequest.inc(scanned.telemetryStripped);
    const headers = principal === undefined ? scanned.headers : withPrincipal(scanned, principal);
    // The tunnel closes itself when the earliest expiry of its token and client certificate passes.
    const closeAtMs = earliest(principal?.expiresAtMs, ctx.conn?.identity?.validToMs);
    const path = ctx.forwardPath ?? ctx.target?.path ?? '/';
    // The upstream's answer (a 101 or a refusal) is cleaned like any response, telemetry included.
    const telemetry = rt.telemetry;
    const stripResponseTelemetry = telemetry !== undefined && scanned.stripResponseTelemetry ? telemetry : undefined;
    const forward = { path, headers, key, requestId: scanned.requestId, stripResponseTelemetry, closeAtMs };
    deps.websocket.upgrade(upstream, socket, head, forward).then(
      (outcome) => {
        rt.requests.count('GET', outcome.status);
        if (outcome.telemetryStripped !== undefined) telemetryResponse.inc(outcome.telemetryStripped);
        if (outcome.reason !== undefined) tunnelClosed.get(outcome.reason)?.inc();
        // Upgrades that failed upstream count like requests that did (threat model #121).
        const failed = outcome.reason?.startsWith('ERR_UPSTREAM_') === true;
        if (failed) metrics.upstreamErrors.labels(rt.id, outcome.reason as ErrorCode).inc();
        logAccess(ctx, {
          status: outcome.status,
          outcome: failed
            ? 'upstream_error'
            : outcome.status === 101 || outcome.reason === undefined
              ? 'forwarded'
              : 'aborted',
          reason: outcome.reason,
        });
      },
      () => socket.destroy(),
    );
  }

  function refuseUpgrade(ctx: RequestContext, socket: Duplex, err: GatewayError): void {
    writeRawAnswer(socket, refusalOf(ctx, err));
    // Nothing after the refused handshake is read: FIN, at most a bounded linger, then the socket is gone.
    lingeringClose(socket);
  }

  function handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    if (req.httpVersionMajor === 2) {
      // An HTTP/2 CONNECT reaches the server's `connect` event as (request, response), not as
      // (request, socket, head): answer it as a request (refused as CONNECT), never with raw HTTP/1
      // bytes written into an HTTP/2 response body under a 200.
      handle(req, socket as unknown as Http2ServerResponse, false);
      return;
    }
    // The client socket needs its error listener before anything can fail (threat model #92).
    socket.on('error', () => socket.destroy());
    const conn = connectionStateOf(req.socket);
    const ctx: RequestContext = {
      req,
      isH2: false,
      upgrade: true,
      expectContinue: false,
      conn,
      peer: conn ?? socketPeer(req.socket),
      started: clock.hrtime(),
    };
    runStages(stages.upgrade, ctx, {
      pass: (c) => tunnel(c, socket, head),
      answer: (c, a) => {
        (c.rt?.requests ?? unrouted).count(req.method, a.status);
        writeRawAnswer(socket, a);
        lingeringClose(socket);
        logAccess(c, { status: a.status, outcome: 'answered', bytesOut: bodyBytes(a) });
      },
      refuse: (c, err) => refuseUpgrade(c, socket, err),
    });
  }

  return { handle, handleUpgrade };
}
