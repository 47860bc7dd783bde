/**
 * The request handler of a decision listener (`protocol: decision`): it answers the auth subrequests of a
 * proxy in front (nginx `auth_request`, Caddy `forward_auth`, Traefik `forwardAuth`) instead of forwarding.
 *
 * A subrequest describes the original request in headers (decision-request.ts). That description becomes a
 * request view, and the view walks the same stages as a request reaching an http listener
 * (pipeline/http-stages.ts: form and path normalization, route, client certificate, method, credential,
 * authentication, authorization); the forwarded client certificate, verified against the listener's CA and
 * CRL (identity/forwarded-cert.ts), stands where a TLS connection's certificate would. Then, instead of the
 * terminal, the proxy gets the decision:
 *
 *   200  allowed, with the identity headers an upstream would get (X-Auth-Subject, X-Auth-Scopes,
 *        X-Auth-Provider, X-Forwarded-Client-Cert, X-Request-Id) for `auth_request_set` / `copy_headers`, and
 *        what the upstream may get of the client's Cookie and Authorization (X-Portcullis-Cookie, -Authorization)
 *   401  no or a bad credential, with `WWW-Authenticate`; for a browser on a login route also the login path
 *        in `X-Portcullis-Login` (nginx: `error_page 401 = @login`); for caddy and traefik, which pass a
 *        non-2xx answer on to the client, a 302 to that path instead
 *   403  everything else that is refused: a path no route covers, a malformed target, a method the route
 *        refuses, a bad, unknown or revoked certificate (nginx's auth_request passes only 2xx, 401 and 403:
 *        any other status would become its 500)
 *   5xx  the identity provider did not answer: never a 200
 *
 * The browser's own requests for the login paths (`/_portcullis/...`), which the proxy passes on to this
 * listener with the original Host, are answered as an http listener answers them (endpoints/login.ts).
 */
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Authenticator } from '../authn/principal.js';
import type { Clock } from '../clock.js';
import type { DecisionRuntimeListener } from '../config/runtime.js';
import { createLoginEndpoints, loginHref, type LoginEndpoints } from '../endpoints/login.js';
import { LOGIN_PATH_PREFIX } from '../endpoints/login-paths.js';
import { GatewayError, toGatewayError } from '../errors.js';
import { createForwardedCertVerifier } from '../identity/forwarded-cert.js';
import { randomRequestId, type RequestIdSource } from '../mutate/request-id.js';
import { withPrincipal } from '../mutate/request-headers.js';
import type { AccessLog } from '../observability/access-log.js';
import type { AuthMetrics } from '../observability/auth-metrics.js';
import type { Logger } from '../observability/logger.js';
import type { DecisionResult, Metrics } from '../observability/metrics.js';
import { createRequestCounter } from '../observability/request-counter.js';
import type { RequestContext, RequestView } from '../pipeline/context.js';
import { createHttpStages } from '../pipeline/http-stages.js';
import { bodyBytes, redirect, refusal, writeAnswer, writeRawAnswer, type Answer } from '../pipeline/respond.js';
import { buildRouteRuntimes } from '../pipeline/route-runtime.js';
import { runStages, type StageEnds } from '../pipeline/run.js';
import type { ClientRequest, ClientResponse } from '../proxy/types.js';
import type { ConnectionState } from './connection.js';
import { socketPeer } from './connection.js';
import { originalRequest, type OriginalRequest } from './decision-request.js';
import type { HttpHandler } from './http-handler.js';
import { lingeringClose } from './refused-body.js';
import { createRequestLogger } from './request-log.js';

/** The header of a 401 that carries the login path for a browser (nginx `$upstream_http_x_portcullis_login`). */
export const LOGIN_LOCATION_HEADER = 'x-portcullis-login';

/** The identity headers a 200 carries (each present, empty when the request has none). */
export const ANSWERED_HEADERS: ReadonlySet<string> = new Set([
  'x-auth-subject',
  'x-auth-scopes',
  'x-auth-provider',
  'x-forwarded-client-cert',
  'x-request-id',
]);

/**
 * What the upstream may receive of the client's own credentials, as the 200 carries them (absent: nothing):
 * the Cookie header without the gateway's session and pre-login cookies, and Authorization only on a route
 * with `forwardToken: true`, as the gateway would forward them itself. The proxy sets them on the forwarded
 * request in place of the client's.
 */
const PASSED_ON = new Map([
  ['cookie', 'x-portcullis-cookie'],
  ['authorization', 'x-portcullis-authorization'],
]);

/** What the handler needs from the rest of the app (the http handler's, without forwarders). */
export interface DecisionHandlerDeps {
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly clock: Clock;
  readonly accessLog: AccessLog;
  readonly newRequestId?: RequestIdSource;
  readonly authenticators?: ReadonlyMap<string, Authenticator>;
  readonly authMetrics?: AuthMetrics;
  /** How long a login endpoint waits for a request body (back-channel logout): `timeouts.requestBodyMs`. */
  readonly bodyMs?: number;
}

type Context = RequestContext<RequestView>;

/**
 * The status a proxy is told for a refusal of status `status`: 401 and 403 as they are, 5xx as it is (an
 * outage is never an allow), every other refusal 403.
 */
export function decisionStatus(status: number): number {
  if (status === 401 || status === 403 || status >= 500) return status;
  return 403;
}

function resultOf(status: number): DecisionResult {
  if (status < 300) return 'allow';
  if (status === 401) return 'unauthorized';
  if (status === 403) return 'forbidden';
  return 'error';
}

/** The identity headers of a request that passed every stage, as the 200 of its decision carries them. */
function identityHeaders(ctx: Context): Record<string, string> {
  const scanned = ctx.headers;
  const out: Record<string, string> = { 'cache-control': 'no-store', 'content-type': 'text/plain; charset=utf-8' };
  // Every one is present, empty when the request has none: a proxy that copies headers then replaces the
  // client's copy with nothing (Caddy 2.6's copy_headers writes its own placeholder for a missing one).
  for (const name of [...ANSWERED_HEADERS, ...PASSED_ON.values()]) out[name] = '';
  if (scanned === undefined) return out;
  const list = ctx.principal === undefined ? scanned.headers : withPrincipal(scanned, ctx.principal);
  for (let i = 0; i + 1 < list.length; i += 2) {
    const name = list[i] as string;
    const value = list[i + 1] as string;
    if (ANSWERED_HEADERS.has(name) && out[name] === '') out[name] = value;
    const passed = PASSED_ON.get(name);
    if (passed !== undefined) out[passed] = out[passed] === '' ? value : `${out[passed] ?? ''}; ${value}`;
  }
  return out;
}

/** Creates the handler of one decision listener. */
export function createDecisionHandler(listener: DecisionRuntimeListener, deps: DecisionHandlerDeps): HttpHandler {
  const { metrics, clock } = deps;
  const lname = listener.name;
  const newRequestId = deps.newRequestId ?? randomRequestId;
  const { runtimeOf } = buildRouteRuntimes(listener, {
    metrics,
    terminals: new Map(),
    authenticators: deps.authenticators,
  });
  const hasLogin = Object.values(listener.routeAuth).some((a) => a.login !== undefined);
  const login = hasLogin
    ? createLoginEndpoints(listener, deps.authenticators, { bodyMs: deps.bodyMs ?? 10_000 })
    : undefined;
  // A decision never starts a login itself (its cookies could not reach the browser through nginx): a browser
  // is pointed at the login path, which the proxy passes on to this listener. Nor is a login path decided:
  // the proxy sends those here as they are.
  const pointToLogin: LoginEndpoints | undefined =
    login === undefined
      ? undefined
      : {
          answer: () => Promise.reject(new GatewayError('ERR_ROUTE_NOT_FOUND', 'a login path is answered, not decided')),
          startLogin: (_provider, _ctx, returnTo) => Promise.resolve(loginPointer(returnTo)),
        };
  const stageDeps = { runtimeOf, newRequestId, authMetrics: deps.authMetrics };
  const decisionStages = createHttpStages(listener, { ...stageDeps, login: pointToLogin });
  const loginStages = createHttpStages(listener, { ...stageDeps, login });
  const verifier =
    listener.forwardedCertificate === undefined ? undefined : createForwardedCertVerifier(listener.forwardedCertificate);
  const logAccess = createRequestLogger(lname, { clock, accessLog: deps.accessLog, newRequestId });
  const unrouted = createRequestCounter(metrics, lname, 'none');

  /** Where a browser without a session is sent: the login path, then back to `returnTo`. */
  function loginPointer(returnTo: string): Answer {
    const href = loginHref(returnTo);
    // nginx's auth_request turns any status but 2xx, 401 and 403 into a 500: the login path goes in a header.
    if (listener.from === 'caddy' || listener.from === 'traefik') return redirect(href);
    return {
      status: 401,
      headers: { [LOGIN_LOCATION_HEADER]: href, 'cache-control': 'no-store', 'content-type': 'text/plain; charset=utf-8' },
      body: '',
    };
  }

  /** Counts a decision and writes its line. */
  function record(ctx: Context, answer: Answer, result: DecisionResult, err?: GatewayError): void {
    metrics.decisions.labels(lname, ctx.rt?.id ?? 'none', result).inc();
    (ctx.rt?.requests ?? unrouted).count(ctx.req.method, answer.status);
    if (err !== undefined) metrics.denials.labels(lname, err.code).inc();
    logAccess(ctx, {
      status: answer.status,
      outcome: err === undefined ? 'answered' : 'denied',
      reason: err?.code ?? (result === 'login' ? 'login' : undefined),
      detail: err?.detail,
      bytesOut: bodyBytes(answer),
    });
  }

  function refuse(ctx: Context, err: GatewayError, reply: (a: Answer) => void): void {
    ctx.requestId ??= newRequestId();
    const base = refusal(err, { scope: ctx.scope, requestId: ctx.requestId });
    const answer = { ...base, status: decisionStatus(base.status) };
    record(ctx, answer, resultOf(answer.status), err);
    reply(answer);
  }

  const decisionEnds = (reply: (a: Answer) => void): StageEnds<Context> => ({
    pass: (ctx) => {
      const answer: Answer = { status: 200, headers: identityHeaders(ctx), body: '' };
      record(ctx, answer, 'allow');
      reply(answer);
    },
    answer: (ctx, a) => {
      record(ctx, a, 'login');
      reply(a);
    },
    refuse: (ctx, err) => refuse(ctx, err, reply),
  });

  /** The forwarded client certificate as the connection state the stages read; undefined without one. */
  function forwardedConnection(view: OriginalRequest, peer: Context['peer']): ConnectionState | undefined {
    if (view.certificate === undefined || verifier === undefined) return undefined;
    const { identity, xfcc } = verifier.verify(view.certificate, clock.now());
    return {
      identity,
      xfcc,
      servername: undefined,
      listenerAllowed: listener.acl === undefined ? true : listener.acl.allows(identity),
      ...peer,
    };
  }

  /** A subrequest: the original request it describes walks the stages; `reply` writes the decision. */
  function decide(req: IncomingMessage | ClientRequest, reply: (a: Answer) => void): void {
    const socketAddress = socketPeer(req.socket);
    const started = clock.hrtime();
    let view: OriginalRequest;
    try {
      view = originalRequest(listener.from, req.rawHeaders, listener.forwardedCertificate?.header);
    } catch (err) {
      const bare: Context = { req, isH2: false, upgrade: false, expectContinue: false, conn: undefined, peer: socketAddress, started };
      refuse(bare, toGatewayError(err), reply);
      return;
    }
    const peer = { clientAddress: view.clientAddress ?? socketAddress.clientAddress, clientPort: undefined };
    const base = { req: view, isH2: false, upgrade: view.upgrade, expectContinue: false, peer, started };
    let ctx: Context;
    try {
      ctx = { ...base, conn: forwardedConnection(view, peer) };
    } catch (err) {
      refuse({ ...base, conn: undefined }, toGatewayError(err), reply);
      return;
    }
    runStages(view.upgrade ? decisionStages.upgrade : decisionStages.request, ctx, decisionEnds(reply));
  }

  /** A browser's request for a login path, passed on by the proxy with its Host: answered as it is. */
  function answerLoginPath(req: ClientRequest, res: ClientResponse): void {
    const ctx: Context = {
      req,
      isH2: false,
      upgrade: false,
      expectContinue: false,
      conn: undefined,
      peer: socketPeer(req.socket),
      started: clock.hrtime(),
    };
    const write = (status: number, answer: Answer, err?: GatewayError): void => {
      (ctx.rt?.requests ?? unrouted).count(req.method, status);
      if (err !== undefined) metrics.denials.labels(lname, err.code).inc();
      logAccess(ctx, {
        status,
        outcome: err === undefined ? 'answered' : 'denied',
        reason: err?.code,
        detail: err?.detail,
        bytesOut: bodyBytes(answer),
      });
      writeAnswer(res, answer);
    };
    runStages(loginStages.request, ctx, {
      pass: () => write(500, refusal(new GatewayError('ERR_INTERNAL')), new GatewayError('ERR_INTERNAL', 'login path passed')),
      answer: (_c, a) => write(a.status, a),
      refuse: (_c, err) => {
        const html = (req.headers.accept ?? '').toLowerCase().includes('text/html') ? { loginHref: loginHref('/') } : undefined;
        const a = refusal(err, { requestId: (ctx.requestId ??= newRequestId()), html });
        write(a.status, a, err);
      },
    });
  }

  function isLoginPath(url: string | undefined): boolean {
    return url !== undefined && (url === LOGIN_PATH_PREFIX || url.startsWith(`${LOGIN_PATH_PREFIX}/`) || url.startsWith(`${LOGIN_PATH_PREFIX}?`));
  }

  return {
    handle(req, res) {
      if (login !== undefined && isLoginPath(req.url)) answerLoginPath(req, res);
      else decide(req, (a) => writeAnswer(res, a));
    },
    handleUpgrade(req: IncomingMessage, socket: Duplex) {
      // Caddy keeps a WebSocket handshake's Upgrade on its forward_auth subrequest: decided all the same, the
      // answer on the raw socket (never a 101: the proxy tunnels to its own upstream).
      socket.on('error', () => socket.destroy());
      decide(req, (a) => {
        writeRawAnswer(socket, a);
        lingeringClose(socket);
      });
    },
  };
}
