/**
 * The gateway's login endpoints (DESIGN.md "Wave 2"), answered by the pipeline's `login` stage and never
 * forwarded:
 *
 *   GET  /_portcullis/login?rd=/path     starts a login (the provider of the route `/path` is on)
 *   GET  /_portcullis/callback           the IdP's redirect back: code exchange, session, redirect to `rd`
 *   GET|POST /_portcullis/logout         ends the session; RP-initiated logout at the IdP when it offers it
 *   GET  /_portcullis/logged-out         a small page: you are logged out, log in again
 *   POST /_portcullis/backchannel-logout OpenID Back-Channel Logout 1.0: the IdP ends every session of a person
 *
 * A return address is only ever a path of this origin ({@link sameOriginPath}): never an open redirect.
 * Every failure is a GatewayError (a refusal: the browser gets the short HTML page with a login link).
 */
import type { IncomingMessage } from 'node:http';
import type { RoutedListener } from '../config/runtime.js';
import { GatewayError } from '../errors.js';
import type { Authenticator } from '../authn/principal.js';
import { isLoginProvider, unverifiedIssuer, type LoginProvider, type LoginSite } from '../authn/oidc.js';
import { clearCookie, LOGIN_COOKIE, readCookie, SESSION_COOKIE } from '../authn/session-cookie.js';
import type { RequestContext as NodeRequestContext, RequestView } from '../pipeline/context.js';
import { ownedBody, redirect, type Answer } from '../pipeline/respond.js';
import { routingHost } from '../listener/request-form.js';
import { LOGIN_PATH_PREFIX } from './login-paths.js';

/** The context the login endpoints read: a request's line and headers (a body only where one is read). */
type RequestContext = NodeRequestContext<RequestView>;

/** Largest back-channel logout request body read: 16 KiB (a logout token is well under 2 KiB). */
export const MAX_LOGOUT_BODY_BYTES = 16 * 1024;

/** What the pipeline asks of the login endpoints. */
export interface LoginEndpoints {
  /** Answers a request on the login paths. Rejects with a GatewayError. */
  answer(ctx: RequestContext): Promise<Answer>;
  /** The redirect that sends a browser without a (live) session to log in, then back to `returnTo`. */
  startLogin(provider: LoginProvider, ctx: RequestContext, returnTo: string, clearSession: boolean): Promise<Answer>;
}

/** Whether a request is a browser navigation: GET or HEAD, `Accept` naming `text/html`, not an upgrade. */
export function isBrowserNavigation(req: RequestView, upgrade: boolean): boolean {
  if (upgrade || (req.method !== 'GET' && req.method !== 'HEAD')) return false;
  const accept = req.headers.accept;
  return typeof accept === 'string' && accept.toLowerCase().includes('text/html');
}

/**
 * `value` as a path on this origin, or `/` when it is anything else: an absolute URL, `//host`, `/\host`, a
 * scheme, control characters (browsers strip tabs and newlines, turning `/\t/evil` into `//evil`).
 */
export function sameOriginPath(value: string | null, origin: string): string {
  if (value === null || !value.startsWith('/') || value.startsWith('//') || value.startsWith('/\\')) return '/';
  // eslint-disable-next-line no-control-regex
  if (/[\x00-\x1f\x7f\\]/.test(value)) return '/';
  const url = URL.parse(value, origin);
  if (url === null || url.origin !== origin) return '/';
  return url.pathname + url.search;
}

/** The login link of a refusal page: log in, then come back to `path` (or `/`). */
export function loginHref(path: string | undefined): string {
  return `${LOGIN_PATH_PREFIX}/login?rd=${encodeURIComponent(path ?? '/')}`;
}

/** Where a request arrived: its listener and origin (the authority passed the Host and SNI checks). */
export function siteOf(listener: Pick<RoutedListener, 'name'>, ctx: RequestContext): LoginSite {
  const authority = ctx.target?.authority;
  if (authority === undefined) throw new GatewayError('ERR_INTERNAL', 'login before the form stage');
  return { listener: listener.name, origin: `https://${authority.toLowerCase()}` };
}

/** Reads a small request body as text, refusing past `max` bytes or after `ms`. */
function readBody(req: RequestView, max: number, ms: number): Promise<string> {
  if (!isReadable(req)) return Promise.reject(new GatewayError('ERR_INTERNAL', 'a request without a body stream'));
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const timer = setTimeout(() => done(new GatewayError('ERR_REQUEST_BODY_TIMEOUT', 'logout body')), ms);
    timer.unref();
    const done = (err?: GatewayError): void => {
      clearTimeout(timer);
      req.off('data', onData);
      req.off('end', onEnd);
      if (err !== undefined) reject(err);
      else resolve(Buffer.concat(chunks).toString('utf8'));
    };
    const onData = (c: Buffer): void => {
      size += c.length;
      if (size > max) done(new GatewayError('ERR_LOGOUT_BAD_TOKEN', 'logout body too large'));
      else chunks.push(c);
    };
    const onEnd = (): void => done();
    req.on('data', onData);
    req.once('end', onEnd);
    req.once('error', () => done(new GatewayError('ERR_LOGOUT_BAD_TOKEN', 'logout body unreadable')));
  });
}

/** Whether a request view is a node request, whose body can be read (a proxy's description has none). */
function isReadable(req: RequestView): req is RequestView & Pick<IncomingMessage, 'on' | 'off' | 'once'> {
  return typeof (req as Partial<IncomingMessage>).on === 'function';
}

/** The page a browser sees after logging out. */
function loggedOutPage(): Answer {
  return ownedBody(
    200,
    'html',
    '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Logged out</title></head><body>' +
      `<h1>You are logged out</h1><p><a href="${loginHref('/')}">Log in again</a></p></body></html>\n`,
  );
}

/** Builds the login endpoints of `listener` from the app's providers. */
export function createLoginEndpoints(
  listener: Pick<RoutedListener, 'name' | 'routes' | 'routeAuth'>,
  authenticators: ReadonlyMap<string, Authenticator> | undefined,
  opts: { readonly bodyMs: number },
): LoginEndpoints {
  /** The login provider of each route id with `auth.login`. */
  const byRoute = new Map<string, LoginProvider>();
  for (const [id, auth] of Object.entries(listener.routeAuth)) {
    if (auth.login === undefined) continue;
    const p = authenticators?.get(auth.login);
    if (!isLoginProvider(p)) throw new Error(`${auth.keyPath}.login: provider "${auth.login}" is not an oidc provider`);
    byRoute.set(id, p);
  }
  const providers = [...new Set(byRoute.values())];

  async function startLogin(
    provider: LoginProvider,
    ctx: RequestContext,
    returnTo: string,
    clearSession: boolean,
  ): Promise<Answer> {
    const site = siteOf(listener, ctx);
    const step = await provider.beginLogin(site, sameOriginPath(returnTo, site.origin));
    return { ...redirect(step.location), cookies: clearSession ? [...step.cookies, clearCookie(SESSION_COOKIE)] : step.cookies };
  }

  async function answer(ctx: RequestContext): Promise<Answer> {
    const site = siteOf(listener, ctx);
    const path = ctx.path ?? '';
    const query = new URLSearchParams(ctx.target?.query ?? '');
    const method = ctx.req.method;
    const raw = ctx.req.rawHeaders;
    const sub = path.slice(LOGIN_PATH_PREFIX.length);
    if (sub === '/login' && (method === 'GET' || method === 'HEAD')) {
      const rd = sameOriginPath(query.get('rd'), site.origin);
      const route = listener.routes.lookup(routingHost(ctx.target?.authority ?? ''), new URL(rd, site.origin).pathname);
      // The provider of the route `rd` is on; for any other path the listener's first (nearly always its only).
      const provider = (route === undefined ? undefined : byRoute.get(route.id)) ?? providers[0];
      if (provider === undefined) throw new GatewayError('ERR_ROUTE_NOT_FOUND', 'login on a listener without login');
      return startLogin(provider, ctx, rd, false);
    }
    if (sub === '/callback' && method === 'GET') {
      const cookie = readCookie(raw, LOGIN_COOKIE);
      let owner: LoginProvider | undefined;
      if (cookie !== undefined) for (const p of providers) if (await p.ownsLogin(cookie)) owner = p;
      // No provider knows this browser's pre-login cookie: the first one refuses it (and counts a bad state).
      if (owner === undefined) await (providers[0] ?? failNoProvider()).finishLogin(site, query, undefined);
      if (owner === undefined) failNoProvider();
      const step = await owner.finishLogin(site, query, cookie);
      return { ...redirect(`${site.origin}${step.location}`), cookies: step.cookies };
    }
    if (sub === '/logout' && (method === 'GET' || method === 'POST')) {
      const id = readCookie(raw, SESSION_COOKIE);
      const loggedOut = `${site.origin}${LOGIN_PATH_PREFIX}/logged-out`;
      let location = loggedOut;
      let cookies: readonly string[] = [clearCookie(SESSION_COOKIE)];
      for (const p of providers) {
        const step = await p.logout(site, id, loggedOut);
        if (step.location !== loggedOut) location = step.location;
        cookies = step.cookies;
      }
      return { ...redirect(location), cookies };
    }
    if (sub === '/logged-out' && (method === 'GET' || method === 'HEAD')) return loggedOutPage();
    if (sub === '/backchannel-logout' && method === 'POST') {
      const body = await readBody(ctx.req, MAX_LOGOUT_BODY_BYTES, opts.bodyMs);
      const token = new URLSearchParams(body).get('logout_token');
      if (token === null || token === '') throw new GatewayError('ERR_LOGOUT_BAD_TOKEN', 'no logout_token');
      const iss = unverifiedIssuer(token);
      const provider = iss === undefined ? undefined : providers.find((p) => p.issuedBy(iss));
      if (provider === undefined) throw new GatewayError('ERR_LOGOUT_BAD_TOKEN', 'logout token of an unknown issuer');
      await provider.backchannelLogout(token);
      return ownedBody(200, 'text', '');
    }
    throw new GatewayError('ERR_ROUTE_NOT_FOUND', 'no such login path');
  }

  return { answer, startLogin };
}

function failNoProvider(): never {
  throw new GatewayError('ERR_LOGIN_BAD_STATE', 'no pre-login record');
}
