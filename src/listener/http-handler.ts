/**
 * The request pipeline of an HTTP listener, one function per request, walking the stages in order:
 *
 *   request form (method, authority, target) → SNI/Host → route → client certificate policy
 *   → header rewrite → [Bearer token → provider chain → route policy] → forward (undici, echo)
 *   → access log + metrics
 *
 * A route without `auth` runs synchronously up to the forwarder. A route with `auth` awaits its provider
 * chain; the route policy (scopes, claims) is checked on every request, whether the principal came from a
 * provider cache or not (CVE-2021-32701). `Expect: 100-continue` is answered by the forwarder, so only after
 * every check, authentication included, has passed.
 *
 * The stages live in their own modules: request-form.ts (form, SNI/Host, route, client policy),
 * authn/route-auth.ts (credential, provider chain, route policy), observability/request-counter.ts; this file
 * runs them in order, answers refusals and writes the access log.
 *
 * WebSocket upgrades walk the same stages before http-proxy takes the socket. Every failure is a
 * GatewayError answered with its status from the registry and logged with its code; nothing a client
 * sends can escape as an exception (fail closed, never crash).
 */
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { constants as h2constants, type Http2ServerRequest, type Http2ServerResponse } from 'node:http2';
import type { HttpRuntimeListener } from '../config/load.js';
import type { Route } from '../authz/routes.js';
import type { Authenticator } from '../authn/principal.js';
import { authenticate, buildAuthStages, credentialOf, type AuthStage } from '../authn/route-auth.js';
import { bearerChallenge, ERRORS, GatewayError, toGatewayError, type ErrorCode } from '../errors.js';
import { buildUpstreamHeaders, withPrincipal } from '../mutate/request-headers.js';
import type { TelemetryMatcher, TelemetryPolicy } from '../mutate/telemetry.js';
import type { AuthMetrics } from '../observability/auth-metrics.js';
import type { Logger } from '../observability/logger.js';
import {
  loggablePath,
  type AccessEntry,
  type AccessLog,
  type AccessOutcome,
} from '../observability/access-log.js';
import { randomRequestId, requestIdOf, type RequestIdSource } from '../mutate/request-id.js';
import type { Metrics } from '../observability/metrics.js';
import { createRequestCounter, type RequestCounter } from '../observability/request-counter.js';
import type { Clock } from '../clock.js';
import { connectionStateOf, socketPeer, type ClientPeer, type ConnectionState } from './connection.js';
import { checkClient, resolveRequest } from './request-form.js';
import type { ClientRequest, ClientResponse, ForwardOutcome, ForwardRequest } from '../proxy/types.js';
import { TUNNEL_CLOSE_REASONS, writeRawError, type WebSocketProxy } from '../proxy/websocket.js';

const H2_NO_ERROR = h2constants.NGHTTP2_NO_ERROR;

/** Forwards a request that passed every check (route → forwarder map built at start). */
export type RouteForwarder = (
  fr: ForwardRequest,
  req: ClientRequest,
  res: ClientResponse,
) => Promise<ForwardOutcome>;

/** What the handler needs from the rest of the app. */
export interface HttpHandlerDeps {
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly clock: Clock;
  /** Where the one line per request goes (observability/access-log.ts). */
  readonly accessLog: AccessLog;
  /** Makes request ids; default random UUIDs. */
  readonly newRequestId?: RequestIdSource;
  /** The forwarder of each route id. */
  readonly forwarders: ReadonlyMap<string, RouteForwarder>;
  readonly websocket: WebSocketProxy;
  /** The app's authentication providers by name (`authProviders`); every name a route lists must be here. */
  readonly authenticators?: ReadonlyMap<string, Authenticator>;
  readonly authMetrics?: AuthMetrics;
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

const KEY_RE = /^[A-Za-z0-9+/]{22}==$/;

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

/** What a request has learned by the time it ends: the access log's view of it. */
interface RequestContext {
  readonly started: bigint;
  readonly conn: ConnectionState | undefined;
  /** Who sent it: the connection's peer (read once at its handshake), or the socket's on a plaintext listener,
   * read when the request starts (a client that leaves takes its address with it). */
  readonly peer: ClientPeer;
  /** Normalized path once the target was checked (else the raw one is logged). */
  path?: string;
  /** The route's runtime once the router found it. */
  rt?: RouteRuntime;
  requestId?: string;
  /** The route's required scopes for the `scope` of a 403 challenge. */
  scope?: string;
  hashPrefix?: string;
  provider?: string;
  principal?: string;
  upgrade?: true;
}

const STATUS_TEXT: Record<number, string> = { 400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden' };

/** What a request needs from its route, resolved once per listener (see createHttpHandler). */
interface RouteRuntime {
  readonly id: string;
  readonly forwarder: RouteForwarder | undefined;
  readonly stage: AuthStage | undefined;
  readonly telemetry: TelemetryPolicy | undefined;
  readonly requests: RequestCounter;
  readonly duration: ReturnType<Metrics['requestDuration']['labels']>;
  readonly upstream: ReturnType<Metrics['upstreamDuration']['labels']>;
}

/** Creates the handler of one listener. */
export function createHttpHandler(listener: HttpRuntimeListener, deps: HttpHandlerDeps): HttpHandler {
  const { metrics, clock } = deps;
  const lname = listener.name;
  const proto = listener.tls ? 'https' : 'http';
  const authStages = buildAuthStages(listener, deps.authenticators);
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
  // Everything a request needs from its route, resolved once here: the hot path makes one lookup (by
  // the Route object the router returned) and no lookup by a config string.
  const runtimes = new Map<Route, RouteRuntime>();
  for (const r of listener.routes.routes) {
    let telemetry: TelemetryPolicy | undefined;
    if (deps.telemetry !== undefined) {
      const t = deps.telemetry;
      const strip = listener.routeTelemetryOptOut?.[r.id] ?? t.optOut;
      // Nothing to do on a route that never strips: skip the per-header lookups entirely.
      if (strip || t.honorClientSignals)
        telemetry = { matcher: t.matcher, strip, honorClientSignals: t.honorClientSignals };
    }
    runtimes.set(r, {
      id: r.id,
      forwarder: deps.forwarders.get(r.id),
      stage: authStages.get(r.id),
      telemetry,
      requests: createRequestCounter(metrics, lname, r.id),
      duration: metrics.requestDuration.labels(lname, r.id),
      upstream: metrics.upstreamDuration.labels(r.id),
    });
  }
  /** Requests refused before a route was found count under route `none`. */
  const unrouted = createRequestCounter(metrics, lname, 'none');
  const runtimeOf = (route: Route): RouteRuntime => {
    const rt = runtimes.get(route);
    // Every route the router returns was listed at start; a miss is a wiring bug, refused (fail closed).
    if (rt === undefined) throw new GatewayError('ERR_INTERNAL', `route ${route.id} has no runtime`);
    return rt;
  };
  const newRequestId = deps.newRequestId ?? randomRequestId;

  /** Writes the request's access-log line. */
  function logAccess(
    req: IncomingMessage | ClientRequest,
    ctx: RequestContext,
    end: {
      status: number;
      outcome: AccessOutcome;
      reason?: string | undefined;
      detail?: string | undefined;
      bytesIn?: number;
      bytesOut?: number;
    },
  ): void {
    // With the access log off, a forwarded or refused request costs no line object at all.
    if (!deps.accessLog.wants(end.status, end.outcome)) return;
    const identity = ctx.conn?.identity;
    const entry: AccessEntry = {
      listener: lname,
      route: ctx.rt?.id,
      method: req.method,
      path: ctx.path ?? loggablePath(req.url),
      clientAddress: ctx.peer.clientAddress,
      clientPort: ctx.peer.clientPort,
      status: end.status,
      durationMs: Number(clock.hrtime() - ctx.started) / 1e6,
      bytesIn: end.bytesIn ?? 0,
      bytesOut: end.bytesOut ?? 0,
      clientSubject: identity?.subject,
      clientFingerprint: identity?.fingerprint256,
      principal: ctx.principal,
      provider: ctx.provider,
      tokenHash: ctx.hashPrefix,
      outcome: end.outcome,
      reason: end.reason,
      detail: end.detail,
      requestId: ctx.requestId ?? requestIdOf(req.rawHeaders, newRequestId),
      upgrade: ctx.upgrade,
    };
    deps.accessLog.write(entry);
  }

  /** Counts an auth decision (routes with `auth` only). */
  function recordAuth(routeId: string, provider: string | undefined, result: 'allow' | ErrorCode): void {
    deps.authMetrics?.decision(routeId, provider ?? 'none', result);
  }

  /** Ends a request with the gateway's own refusal (or upstream failure). Never throws. */
  function deny(req: ClientRequest, res: ClientResponse, err: GatewayError, ctx: RequestContext): void {
    const spec = ERRORS[err.code];
    denialCounter(err.code).inc();
    // Denials after routing (client ACL, auth) count under their route id; earlier ones under `none`.
    (ctx.rt?.requests ?? unrouted).count(req.method, spec.status);
    ctx.requestId ??= requestIdOf(req.rawHeaders, newRequestId);
    const body = `${spec.message}\n`;
    const bytesOut = Buffer.byteLength(body);
    logAccess(req, ctx, {
      status: spec.status,
      outcome: err.code.startsWith('ERR_UPSTREAM_') ? 'upstream_error' : 'denied',
      reason: err.code,
      detail: err.detail,
      bytesOut,
    });
    if (res.headersSent || res.destroyed) {
      res.destroy();
      return;
    }
    const headers: Record<string, string | number> = {
      'content-type': 'text/plain; charset=utf-8',
      'content-length': bytesOut,
      'cache-control': 'no-store',
      'x-request-id': ctx.requestId,
    };
    const challenge = bearerChallenge(err.code, ctx.scope);
    if (challenge !== undefined) headers['www-authenticate'] = challenge;
    // A malformed request may be a smuggling attempt: do not reuse an HTTP/1.1 connection after it,
    // and never act on what the client pipelined behind it.
    if (req.httpVersionMajor === 1 && err.code.startsWith('ERR_REQUEST_')) {
      headers.connection = 'close';
      closingConnections.add(req.socket);
    }
    try {
      res.writeHead(spec.status, headers);
      res.end(body);
      if (req.httpVersionMajor === 2 && err.code === 'ERR_REQUEST_BODY_TIMEOUT') {
        // The rest of the body is not wanted: after the complete response, RST_STREAM NO_ERROR asks the
        // client to stop sending it (RFC 9113 §8.1) and frees the stream's slot in the session. Node does
        // this itself only for a body nobody started reading; it waits for the stream's writable side
        // to finish, then one turn, as here.
        const stream = (res as Http2ServerResponse).stream;
        const close = (): void => {
          setImmediate(() => {
            if (!stream.destroyed && !stream.closed) stream.close(H2_NO_ERROR);
          });
        };
        if (stream.writableFinished) close();
        else stream.once('finish', close);
      }
    } catch {
      res.destroy();
    }
  }

  /** Hands a request that passed every check to its route's forwarder. Never throws. */
  function dispatch(
    req: ClientRequest,
    res: ClientResponse,
    ctx: RequestContext,
    rt: RouteRuntime,
    fr: ForwardRequest,
    telemetryStripped: number,
  ): void {
    const forwarder = rt.forwarder;
    if (forwarder === undefined) {
      deny(req, res, new GatewayError('ERR_INTERNAL', `no forwarder for route ${rt.id}`), ctx);
      return;
    }
    // Counted once per request, here: the headers left the gateway without them.
    if (telemetryStripped > 0) telemetryRequest.inc(telemetryStripped);
    let pending: Promise<ForwardOutcome>;
    try {
      pending = forwarder(fr, req, res);
    } catch (err) {
      deny(req, res, toGatewayError(err), ctx);
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
        logAccess(req, ctx, {
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
          logAccess(req, ctx, { status: 0, outcome: 'aborted', reason: 'client_closed' });
          return;
        }
        const gerr = toGatewayError(err);
        // A body deadline (ERR_REQUEST_BODY_TIMEOUT) is the client's failure, not the upstream's.
        if (gerr.code.startsWith('ERR_UPSTREAM_')) metrics.upstreamErrors.labels(rt.id, gerr.code).inc();
        deny(req, res, gerr, ctx);
      },
    );
  }

  function handle(req: ClientRequest, res: ClientResponse, expectContinue: boolean): void {
    const conn = connectionStateOf(req.socket);
    const ctx: RequestContext = { started: clock.hrtime(), conn, peer: conn ?? socketPeer(req.socket) };
    if (req.httpVersionMajor === 1 && closingConnections.has(req.socket)) {
      // Pipelined behind a refusal on a connection that Node closes once that refusal is written:
      // left unanswered (its response would be queued behind the close) and never forwarded.
      logAccess(req, ctx, { status: 0, outcome: 'aborted', reason: 'pipelined_after_close' });
      return;
    }
    let stage: AuthStage | undefined;
    try {
      const isH2 = req.httpVersionMajor === 2;
      const r = resolveRequest(listener, conn, req.method, req.url, req.rawHeaders, isH2);
      const route = r.route;
      const rt = runtimeOf(route);
      ctx.rt = rt;
      ctx.path = r.pathname;
      checkClient(listener, conn, route);
      stage = rt.stage;
      // The credential is looked at before anything else is built: a request without one is refused cheaply.
      const cred = stage === undefined ? undefined : credentialOf(stage, req.rawHeaders, r);
      // Headers are checked (and built) before any provider is asked: a request refused for its form costs
      // no IdP call.
      const telemetry = rt.telemetry;
      const scanned = buildUpstreamHeaders(req.rawHeaders, {
        host: r.authority,
        clientAddress: ctx.peer.clientAddress,
        proto,
        xfcc: conn?.xfcc,
        dropAuthorization: stage !== undefined && !stage.forwardToken,
        newRequestId,
        ...(telemetry !== undefined ? { telemetry } : {}),
      });
      ctx.requestId = scanned.requestId;
      const stripResponse =
        telemetry !== undefined && scanned.stripResponseTelemetry
          ? { stripResponseTelemetry: telemetry }
          : {};
      const hasBody = isH2 ? !(req as Http2ServerRequest).stream.endAfterHeaders : scanned.hasBody;
      const method = req.method ?? 'GET';
      const requestId = scanned.requestId;
      if (stage === undefined) {
        // No auth on this route: synchronous all the way to the forwarder.
        dispatch(
          req,
          res,
          ctx,
          rt,
          {
            route,
            method,
            path: r.path,
            headers: scanned.headers,
            hasBody,
            expectContinue,
            requestId,
            ...stripResponse,
          },
          scanned.telemetryStripped,
        );
        return;
      }
      // Fail closed: a route with auth never reaches the forwarder without a credential.
      if (cred === undefined) throw new GatewayError('ERR_AUTHN_MISSING');
      const s = stage;
      ctx.scope = s.scope;
      authenticate(s, cred.token)
        .then((authed) => {
          ctx.hashPrefix = authed.hashPrefix;
          if (!authed.ok) {
            recordAuth(s.routeId, authed.provider, authed.error.code);
            if (authed.provider !== undefined) ctx.provider = authed.provider;
            deny(req, res, authed.error, ctx);
            return;
          }
          const p = authed.principal;
          recordAuth(s.routeId, p.provider, 'allow');
          ctx.provider = p.provider;
          ctx.principal = p.subject;
          if (clientGone(req, res)) {
            rt.requests.count(req.method, 0);
            logAccess(req, ctx, { status: 0, outcome: 'aborted', reason: 'client_closed' });
            return;
          }
          const headers = withPrincipal(scanned, p);
          dispatch(
            req,
            res,
            ctx,
            rt,
            { route, method, path: cred.path, headers, hasBody, expectContinue, requestId, ...stripResponse },
            scanned.telemetryStripped,
          );
        })
        // authenticate() never rejects; a bug in what follows it is still a denial, never a pass.
        .catch((err: unknown) => deny(req, res, toGatewayError(err), ctx));
    } catch (err) {
      const gerr = toGatewayError(err);
      if (stage !== undefined && (gerr.code === 'ERR_AUTHN_MISSING' || gerr.code === 'ERR_AUTHN_MALFORMED')) {
        recordAuth(stage.routeId, undefined, gerr.code);
        ctx.scope = stage.scope;
      }
      deny(req, res, gerr, ctx);
    }
  }

  function handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    if (req.httpVersionMajor === 2) {
      // An HTTP/2 CONNECT reaches the server's `connect` event as (request, response), not as
      // (request, socket, head): answer it as a request (refused as CONNECT), never with raw HTTP/1
      // bytes written into an HTTP/2 response body under a 200.
      handle(req, socket as unknown as Http2ServerResponse, false);
      return;
    }
    const conn = connectionStateOf(req.socket);
    const ctx: RequestContext = { started: clock.hrtime(), conn, peer: conn ?? socketPeer(req.socket), upgrade: true };
    // The client socket needs its error listener before anything can fail (threat model #92).
    socket.on('error', () => socket.destroy());
    const denyRaw = (err: GatewayError): void => {
      denialCounter(err.code).inc();
      (ctx.rt?.requests ?? unrouted).count(req.method, err.status);
      ctx.requestId ??= requestIdOf(req.rawHeaders, newRequestId);
      const body = `${ERRORS[err.code].message}\n`;
      logAccess(req, ctx, {
        status: err.status,
        outcome: 'denied',
        reason: err.code,
        detail: err.detail,
        bytesOut: Buffer.byteLength(body),
      });
      const challenge = bearerChallenge(err.code, ctx.scope);
      if (challenge === undefined || socket.destroyed || !socket.writable) {
        writeRawError(socket, err);
        return;
      }
      // RFC 6750 §3: the challenge goes with the refusal of an upgrade too (writeRawError sends none).
      socket.end(
        `HTTP/1.1 ${err.status} ${STATUS_TEXT[err.status] ?? 'Error'}\r\nContent-Type: text/plain; charset=utf-8\r\n` +
          `Content-Length: ${Buffer.byteLength(body)}\r\nCache-Control: no-store\r\nWWW-Authenticate: ${challenge}\r\n` +
          `X-Request-Id: ${ctx.requestId}\r\nConnection: close\r\n\r\n${body}`,
      );
    };
    let stage: AuthStage | undefined;
    try {
      const r = resolveRequest(listener, conn, req.method, req.url, req.rawHeaders, false);
      const rt = runtimeOf(r.route);
      ctx.rt = rt;
      ctx.path = r.pathname;
      checkClient(listener, conn, r.route);
      // Only a well-formed WebSocket handshake is tunnelled (RFC 6455 §4.1; threat model #73, #87, #89):
      // h2c and every other upgrade token are refused with an answer, never a hang.
      const upgrade = (req.headers.upgrade ?? '').trim().toLowerCase();
      if (upgrade !== 'websocket')
        throw new GatewayError('ERR_REQUEST_UPGRADE_REFUSED', `upgrade: ${upgrade.slice(0, 32)}`);
      const key = req.headers['sec-websocket-key'];
      if (
        req.method !== 'GET' ||
        req.headers['sec-websocket-version'] !== '13' ||
        typeof key !== 'string' ||
        !KEY_RE.test(key)
      ) {
        throw new GatewayError('ERR_REQUEST_BAD_WEBSOCKET');
      }
      const upstream = r.route.upstream;
      if (upstream.kind !== 'http')
        throw new GatewayError('ERR_REQUEST_UPGRADE_REFUSED', 'upstream cannot upgrade');
      stage = rt.stage;
      const cred = stage === undefined ? undefined : credentialOf(stage, req.rawHeaders, r);
      const scanned = buildUpstreamHeaders(req.rawHeaders, {
        host: r.authority,
        clientAddress: ctx.peer.clientAddress,
        proto,
        xfcc: conn?.xfcc,
        upgrade: true,
        dropAuthorization: stage !== undefined && !stage.forwardToken,
        newRequestId,
        // Request direction only: the 101 response goes back through http-proxy untouched.
        ...(rt.telemetry !== undefined ? { telemetry: rt.telemetry } : {}),
      });
      ctx.requestId = scanned.requestId;
      const routeId = rt.id;
      if (scanned.telemetryStripped > 0) telemetryRequest.inc(scanned.telemetryStripped);
      /** Opens the tunnel; it closes itself when `closeAtMs` (the credentials' earliest expiry) passes. */
      const tunnel = (list: readonly string[], path: string, closeAtMs: number | undefined): void => {
        const headers: Record<string, string | string[]> = {};
        for (let i = 0; i + 1 < list.length; i += 2) {
          const name = list[i] as string;
          const value = list[i + 1] as string;
          const prev = headers[name];
          headers[name] = prev === undefined ? value : Array.isArray(prev) ? [...prev, value] : [prev, value];
        }
        deps.websocket.upgrade(upstream, req, socket, head, { path, headers, key, closeAtMs }).then(
          (outcome) => {
            rt.requests.count('GET', outcome.status);
            if (outcome.reason !== undefined) tunnelClosed.get(outcome.reason)?.inc();
            // Upgrades that failed upstream count like requests that did (threat model #121).
            const failed = outcome.reason?.startsWith('ERR_UPSTREAM_') === true;
            if (failed) metrics.upstreamErrors.labels(routeId, outcome.reason as ErrorCode).inc();
            logAccess(req, ctx, {
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
      };
      const certNotAfter = conn?.identity?.validToMs;
      if (stage === undefined) {
        tunnel(scanned.headers, r.path, certNotAfter);
        return;
      }
      // Fail closed: a route with auth never opens a tunnel without a credential.
      if (cred === undefined) throw new GatewayError('ERR_AUTHN_MISSING');
      const s = stage;
      ctx.scope = s.scope;
      authenticate(s, cred.token)
        .then((authed) => {
          ctx.hashPrefix = authed.hashPrefix;
          if (!authed.ok) {
            recordAuth(s.routeId, authed.provider, authed.error.code);
            if (authed.provider !== undefined) ctx.provider = authed.provider;
            denyRaw(authed.error);
            return;
          }
          const p = authed.principal;
          recordAuth(s.routeId, p.provider, 'allow');
          ctx.provider = p.provider;
          ctx.principal = p.subject;
          if (socket.destroyed) {
            logAccess(req, ctx, { status: 0, outcome: 'aborted', reason: 'client_closed' });
            return;
          }
          tunnel(withPrincipal(scanned, p), cred.path, earliest(p.expiresAtMs, certNotAfter));
        })
        .catch((err: unknown) => denyRaw(toGatewayError(err)));
    } catch (err) {
      const gerr = toGatewayError(err);
      if (stage !== undefined && (gerr.code === 'ERR_AUTHN_MISSING' || gerr.code === 'ERR_AUTHN_MALFORMED')) {
        recordAuth(stage.routeId, undefined, gerr.code);
        ctx.scope = stage.scope;
      }
      denyRaw(gerr);
    }
  }

  return { handle, handleUpgrade };
}
