/**
 * The ordered stages of an HTTP listener (DESIGN.md, "The pipeline"):
 *
 *   form        method, header count, one well-formed authority, origin-form target, SNI = Host, route
 *   client      the listener's allow-list, and the route's (before any credential costs an IdP call)
 *   method      TRACE, an unknown method, or one outside the route's `methods`: 405 (before any credential too)
 *   [login]     the gateway's login paths (`/_portcullis/...`) are answered here (endpoints/login.ts)
 *   [websocket] a well-formed RFC 6455 handshake to an upstream that can upgrade (upgrades only)
 *   credential  the credential the route's `auth` reads (Bearer, or the session cookie on a login route), or
 *               401/400 at once; a browser without a session is sent to log in (302); a WebSocket upgrade
 *               carrying the session cookie must come from the listener's own origin (403)
 *   headers     the upstream request headers: hop-by-hop, spoofed identity, telemetry removed
 *   authenticate  credential → principal through the route's provider chain (the only stage that may wait)
 *   authorize   route ACL, scopes and claims (authz/authorize.ts), on every request, cached principal or not
 *
 * Then the terminal: the forwarder or the gateway endpoint of the route, or the WebSocket tunnel.
 * The form and header stages come before authentication, so a request refused for its form costs no IdP
 * call; a route without `auth` runs every stage synchronously.
 */
import { authorize, authorizeClient, authorizeMethod } from '../authz/authorize.js';
import { credentialOf } from '../authn/credential.js';
import type { RoutedListener } from '../config/runtime.js';
import { GatewayError, type ErrorCode } from '../errors.js';
import { resolveRequest } from '../listener/request-form.js';
import { buildUpstreamHeaders } from '../mutate/request-headers.js';
import type { RequestIdSource } from '../mutate/request-id.js';
import type { AuthMetrics } from '../observability/auth-metrics.js';
import type { RequestContext as NodeRequestContext, RequestView } from './context.js';
import type { RouteRuntime } from './route-runtime.js';
import type { Stage } from './run.js';
import type { Answer } from './respond.js';
import { isBrowserNavigation, siteOf, type LoginEndpoints } from '../endpoints/login.js';
import type { Route } from '../authz/routes.js';
import { isDecisionTarget } from '../endpoints/decision-target.js';

/** The context the stages work on: they read the request's line and headers only. */
type RequestContext = NodeRequestContext<RequestView>;

/** What the stages need besides the listener. */
export interface HttpStageDeps {
  readonly runtimeOf: (route: Route) => RouteRuntime;
  readonly newRequestId: RequestIdSource;
  readonly authMetrics?: AuthMetrics | undefined;
  /** The gateway's login endpoints of this listener (a listener with a login route has them). */
  readonly login?: LoginEndpoints | undefined;
}

/** The two stage lists of a listener. */
export interface HttpStages {
  readonly request: readonly Stage<RequestContext>[];
  readonly upgrade: readonly Stage<RequestContext>[];
}

/** RFC 6455 §4.1: a 16-byte nonce, base64. */
const KEY_RE = /^[A-Za-z0-9+/]{22}==$/;

/** The route runtime of a context past the form stage (fail closed if a stage ran out of order). */
function routeOf(ctx: RequestContext): RouteRuntime {
  const rt = ctx.rt;
  if (rt === undefined) throw new GatewayError('ERR_INTERNAL', 'stage ran before the route was found');
  return rt;
}

/** Builds the stages of `listener`. */
export function createHttpStages(listener: RoutedListener, deps: HttpStageDeps): HttpStages {
  const proto = listener.tls ? 'https' : 'http';
  const { runtimeOf, newRequestId } = deps;
  const recordAuth = (routeId: string, provider: string | undefined, result: 'allow' | ErrorCode): void => {
    deps.authMetrics?.decision(routeId, provider ?? 'none', result);
  };

  const form: Stage<RequestContext> = (ctx) => {
    const req = ctx.req;
    const r = resolveRequest(listener, ctx.conn, req.method, req.url, req.rawHeaders, ctx.isH2);
    ctx.target = r;
    ctx.rt = runtimeOf(r.route);
    ctx.path = r.pathname;
    ctx.forwardPath = r.path;
    return undefined;
  };

  const client: Stage<RequestContext> = (ctx) => {
    const conn = ctx.conn;
    if (listener.acl !== undefined && conn?.listenerAllowed !== true) {
      throw new GatewayError(
        conn?.identity === undefined ? 'ERR_IDENTITY_NO_CLIENT_CERT' : 'ERR_IDENTITY_LISTENER_ACL',
      );
    }
    authorizeClient(routeOf(ctx).requirements, conn?.identity);
    return undefined;
  };

  const method: Stage<RequestContext> = (ctx) => {
    // The form stage checked it is a token (never undefined past it).
    authorizeMethod(routeOf(ctx).requirements, ctx.req.method ?? '');
    return undefined;
  };

  const websocket: Stage<RequestContext> = (ctx) => {
    const req = ctx.req;
    // Only a well-formed WebSocket handshake is tunnelled (RFC 6455 §4.1; threat model #73, #87, #89): h2c and
    // every other upgrade token are refused with an answer, never a hang.
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
    // A decision's proxy opens the tunnel itself, to its own upstream.
    const target = routeOf(ctx).route.upstream;
    if (target.kind !== 'http' && !isDecisionTarget(target))
      throw new GatewayError('ERR_REQUEST_UPGRADE_REFUSED', 'upstream cannot upgrade');
    ctx.websocketKey = key;
    return undefined;
  };

  const loginPaths: Stage<RequestContext> = (ctx) => {
    const up = routeOf(ctx).route.upstream;
    if (up.kind !== 'gateway' || up.endpoint !== 'login') return undefined;
    if (deps.login === undefined) throw new GatewayError('ERR_INTERNAL', 'login paths without login endpoints');
    return deps.login.answer(ctx);
  };

  /** A browser sent to log in (after a session that is missing or ended); undefined for anything else. */
  const loginAnswer = (ctx: RequestContext, err: unknown): Promise<Answer> | undefined => {
    const login = ctx.rt?.auth?.login;
    if (login === undefined || deps.login === undefined || !(err instanceof GatewayError)) return undefined;
    if (err.code !== 'ERR_AUTHN_MISSING' && err.code !== 'ERR_AUTHN_SESSION_ENDED') return undefined;
    if (!isBrowserNavigation(ctx.req, ctx.upgrade)) return undefined;
    return deps.login.startLogin(login, ctx, ctx.target?.path ?? '/', err.code === 'ERR_AUTHN_SESSION_ENDED');
  };

  const credential: Stage<RequestContext> = (ctx) => {
    const rt = routeOf(ctx);
    const auth = rt.auth;
    if (auth === undefined) return undefined;
    ctx.scope = auth.scope;
    const target = ctx.target;
    if (target === undefined) throw new GatewayError('ERR_INTERNAL', 'credential before form');
    try {
      const site = auth.sessionCookie ? siteOf(listener, ctx) : undefined;
      const found = credentialOf(auth, ctx.req.rawHeaders, target, site);
      // Cross-site WebSocket hijacking: a page of another origin opening a socket with the browser's cookie.
      if (found.credential.kind === 'session' && ctx.upgrade && ctx.req.headers.origin !== site?.origin)
        throw new GatewayError('ERR_REQUEST_CROSS_ORIGIN', 'WebSocket Origin is not this listener’s');
      ctx.credential = found.credential;
      ctx.forwardPath = found.path;
    } catch (err) {
      const answer = loginAnswer(ctx, err);
      if (answer !== undefined) return answer;
      if (err instanceof GatewayError) recordAuth(rt.id, undefined, err.code);
      throw err;
    }
    return undefined;
  };

  const headers =
    (upgrade: boolean): Stage<RequestContext> =>
    (ctx) => {
      const rt = routeOf(ctx);
      const conn = ctx.conn;
      const scanned = buildUpstreamHeaders(ctx.req.rawHeaders, {
        host: ctx.target?.authority ?? '',
        clientAddress: ctx.peer.clientAddress,
        proto,
        xfcc: conn?.xfcc,
        ...(upgrade ? { upgrade: true } : {}),
        dropAuthorization: rt.auth !== undefined && !rt.auth.forwardToken,
        newRequestId,
        // On an upgrade, the request direction only: the 101 goes back to the client untouched.
        ...(rt.telemetry !== undefined ? { telemetry: rt.telemetry } : {}),
      });
      ctx.headers = scanned;
      ctx.requestId = scanned.requestId;
      return undefined;
    };

  const authenticate: Stage<RequestContext> = (ctx) => {
    const rt = routeOf(ctx);
    const auth = rt.auth;
    if (auth === undefined) return undefined;
    const cred = ctx.credential;
    // Fail closed: a route with auth never goes on without a credential.
    if (cred === undefined) throw new GatewayError('ERR_AUTHN_MISSING');
    if ('hash' in cred) ctx.hashPrefix = cred.hash.slice(0, 12);
    return auth.chain(cred, auth.options).then(
      (principal) => {
        ctx.principal = principal;
        ctx.provider = principal.provider;
        return undefined;
      },
      (err: unknown) => {
        if (err instanceof GatewayError) recordAuth(rt.id, undefined, err.code);
        const answer = cred.kind === 'session' ? loginAnswer(ctx, err) : undefined;
        if (answer !== undefined) return answer;
        throw err;
      },
    );
  };

  const authorizeStage: Stage<RequestContext> = (ctx) => {
    const rt = routeOf(ctx);
    const principal = ctx.principal;
    try {
      authorize(rt.requirements, ctx.conn?.identity, principal, {
        method: ctx.req.method ?? '',
        path: ctx.path ?? '',
      });
    } catch (err) {
      if (rt.auth !== undefined && err instanceof GatewayError) recordAuth(rt.id, principal?.provider, err.code);
      // The provider that vouched stays in the log; the principal it refused does not.
      delete ctx.principal;
      throw err;
    }
    if (rt.auth !== undefined) recordAuth(rt.id, principal?.provider, 'allow');
    return undefined;
  };

  return {
    request: [form, client, method, loginPaths, credential, headers(false), authenticate, authorizeStage],
    upgrade: [form, client, method, websocket, credential, headers(true), authenticate, authorizeStage],
  };
}
