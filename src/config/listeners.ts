/**
 * The `listeners` list: each `protocol: http` listener with its routes, each `protocol: tcp` listener with
 * its upstream, and the rules that tie a listener's keys together (TLS or an explicit `plaintext`, client
 * certificate policy against `allowClients`, unique route ids). Each route is compiled by its stage:
 * authz/routes.ts, authz/methods.ts, identity/acl.ts; its `auth` by config/auth.ts.
 */
import { compileMethodPolicy, DEFAULT_METHOD_POLICY, type MethodPolicy } from '../authz/methods.js';
import { compileRouteTable, type Route } from '../authz/routes.js';
import { LOGIN_PATH_PREFIX, loginEndpointRoutes } from '../endpoints/login-paths.js';
import { ConfigError } from '../errors.js';
import { compileClientAcl, type ClientAcl } from '../identity/acl.js';
import { parseListen, unixSocketPath } from './addresses.js';
import { resolveRouteAuth } from './auth.js';
import type { CompileContext } from './context.js';
import { DECISION_TARGET } from '../endpoints/decision-target.js';
import { isLoopbackHost } from '../policy/loopback.js';
import type {
  DecisionRuntimeListener,
  ForwardedCertificateTrust,
  HttpRuntimeListener,
  RouteAuth,
  RuntimeListener,
  TcpRuntimeListener,
} from './runtime.js';
import type {
  DecisionListenerFile,
  DecisionRouteFile,
  HttpListenerFile,
  ListenerFile,
  RouteFile,
  TcpListenerFile,
} from './schema.js';
import { resolveClientCaBundle, resolveCrlFile, resolveListenerTls, withServerNames } from './tls.js';
import { resolveTcpUpstream, resolveUpstream } from './upstreams.js';

/** An `allowClients` list compiled (identity/acl.ts); its error goes to `ctx.errors`. Undefined when absent. */
export function compileAcl(
  ctx: CompileContext,
  entries: readonly string[] | undefined,
  keyPath: string,
): ClientAcl | undefined {
  if (entries === undefined) return undefined;
  try {
    return compileClientAcl(entries, keyPath);
  } catch (err) {
    if (err instanceof ConfigError) ctx.errors.push(err);
    else throw err;
    return undefined;
  }
}

function normalizeRouteHost(ctx: CompileContext, host: string | undefined, keyPath: string): string | undefined {
  if (host === undefined) return undefined;
  const h = host.toLowerCase().replace(/\.$/, '');
  const label = '[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?';
  if (!new RegExp(`^(?:\\*\\.)?${label}(?:\\.${label})*$`).test(h)) {
    ctx.errors.push(
      new ConfigError(keyPath, host, 'a host name, optionally with a leading "*." wildcard (no port)'),
    );
  }
  return h;
}

/**
 * `listeners[i]`, either protocol. `seenRouteIds` spans every listener: a route id is unique in the whole
 * config (it labels metrics and logs).
 */
export function resolveListener(
  ctx: CompileContext,
  l: ListenerFile,
  i: number,
  seenRouteIds: Set<string>,
): RuntimeListener | undefined {
  ctx.upstreamCerts.length = 0;
  const r =
    l.protocol === 'tcp'
      ? resolveTcpListener(ctx, l, i)
      : l.protocol === 'decision'
        ? resolveDecisionListener(ctx, l, i, seenRouteIds)
        : resolveHttpListener(ctx, l, i, seenRouteIds);
  if (r === undefined || ctx.upstreamCerts.length === 0) return r;
  return { ...r, upstreamCertificates: [...ctx.upstreamCerts] };
}

/**
 * A `protocol: tcp` listener. Fail closed on the client certificate policy: a TCP listener has no later
 * stage (no route, no 403) that could demand a certificate, so
 * - `optional` is accepted only with `allowClients` (the ACL then refuses anonymous clients); without it,
 *   `optional` would silently admit anyone — an error naming both keys;
 * - `none` (anonymous TLS, anyone may pipe) is accepted only with requireEncryption false and no
 *   `allowClients` (which could match nobody), and is then warned about.
 */
function resolveTcpListener(ctx: CompileContext, l: TcpListenerFile, i: number): TcpRuntimeListener | undefined {
  const p = `listeners[${i}]`;
  const address = parseListen(l.listen, `${p}.listen`, ctx.errors);
  const tls = withServerNames(ctx, resolveListenerTls(ctx, l.tls, p), l.tls, l.serverNames, address, p, `listener "${l.name}"`);
  const mode = l.tls.clientCertificate;
  if (mode === 'optional' && l.allowClients === undefined) {
    ctx.errors.push(
      new ConfigError(
        `${p}.tls.clientCertificate`,
        mode,
        `"require", or "optional" together with ${p}.allowClients (a tcp listener has no later stage that could demand a certificate: "optional" alone would admit anonymous clients)`,
      ),
    );
  }
  if (mode === 'none') {
    if (l.allowClients !== undefined) {
      ctx.errors.push(
        new ConfigError(
          `${p}.allowClients`,
          l.allowClients,
          `no allowClients when ${p}.tls.clientCertificate is "none" (no client could match)`,
        ),
      );
    } else if (ctx.requireEncryption) {
      ctx.errors.push(
        new ConfigError(
          `${p}.tls.clientCertificate`,
          mode,
          '"require" (or "optional" with allowClients): a tcp listener without client certificates admits anyone, refused while requireEncryption is true',
        ),
      );
    } else {
      ctx.warnings.push(
        `listener "${l.name}" (tcp) asks for no client certificate: anyone who reaches ${l.listen} is piped to the upstream`,
      );
    }
  }
  const acl = compileAcl(ctx, l.allowClients, `${p}.allowClients`);
  const upstream = resolveTcpUpstream(ctx, l.upstream, `${p}.upstream`);
  if (!address || !tls || !upstream) return undefined;
  return {
    protocol: 'tcp',
    name: l.name,
    keyPath: p,
    address,
    tls,
    acl,
    upstream,
    proxyProtocol: l.proxyProtocol,
    maxConnections: l.maxConnections,
    maxConnectionsPerClient: l.maxConnectionsPerClient,
  };
}

/**
 * A `protocol: decision` listener. Plaintext, so a loopback address or a Unix socket only: whoever can connect to it is the
 * proxy whose headers it believes (the original method, URI, host, client address and certificate), so
 * nothing off this machine may reach it. A forwarded client certificate needs the CA it must be issued by.
 */
function resolveDecisionListener(
  ctx: CompileContext,
  l: DecisionListenerFile,
  i: number,
  seenRouteIds: Set<string>,
): DecisionRuntimeListener | undefined {
  const p = `listeners[${i}]`;
  const address = parseListen(l.listen, `${p}.listen`, ctx.errors);
  if (address !== undefined && unixSocketPath(address) === undefined && !isLoopbackHost(address.host))
    ctx.errors.push(
      new ConfigError(
        `${p}.listen`,
        l.listen,
        'a loopback address (127.0.0.1:4180, [::1]:4180) or a Unix socket (unix:/run/portcullis/decide.sock): a decision listener believes the headers of whoever connects, so only the proxy on this machine may',
      ),
    );
  const forwardedCertificate = resolveForwardedCertificate(ctx, l, p);
  const noCertificates = l.clientCertificateHeader === undefined ? `${p}.clientCertificateHeader is not set` : undefined;
  if (noCertificates !== undefined && l.allowClients !== undefined)
    ctx.errors.push(new ConfigError(`${p}.allowClients`, l.allowClients, `no allowClients when ${noCertificates} (no client could match)`));
  const acl = compileAcl(ctx, l.allowClients, `${p}.allowClients`);
  // The proxy terminates TLS for the browser: a login route's Secure cookies are fine behind it.
  const { routes, routeAuth, routeTelemetryOptOut } = resolveRoutes(ctx, l.routes, p, {
    listenerName: l.name,
    noCertificates,
    tls: true,
    seenRouteIds,
  });
  if (!address) return undefined;
  return {
    protocol: 'decision',
    name: l.name,
    keyPath: p,
    address,
    tls: undefined,
    from: l.from,
    forwardedCertificate,
    acl,
    routes,
    maxConnections: l.maxConnections,
    maxConnectionsPerClient: l.maxConnectionsPerClient,
    routeAuth,
    routeTelemetryOptOut,
  };
}

/** `clientCertificateHeader` with its `clientCa` and `crl`: all three or the header's absence. */
function resolveForwardedCertificate(
  ctx: CompileContext,
  l: DecisionListenerFile,
  p: string,
): ForwardedCertificateTrust | undefined {
  if (l.clientCertificateHeader === undefined) {
    for (const key of ['clientCa', 'crl'] as const)
      if (l[key] !== undefined)
        ctx.errors.push(new ConfigError(`${p}.${key}`, l[key], `no ${key} without ${p}.clientCertificateHeader`));
    return undefined;
  }
  if (l.clientCa === undefined) {
    ctx.errors.push(
      new ConfigError(`${p}.clientCa`, undefined, `a CA bundle file (the issuer of the certificates ${p}.clientCertificateHeader carries)`),
    );
    return undefined;
  }
  const bundle = resolveClientCaBundle(ctx, l.clientCa, `${p}.clientCa`);
  const crl = l.crl === undefined ? undefined : resolveCrlFile(ctx, l.crl, `${p}.crl`, bundle?.certs);
  if (bundle === undefined || (l.crl !== undefined && crl === undefined)) return undefined;
  const next = crl?.crls.map((c) => c.nextUpdateMs).filter((n): n is number => n !== undefined) ?? [];
  return {
    header: l.clientCertificateHeader.toLowerCase(),
    caPem: bundle.data.toString('latin1'),
    revokedSerials: [...new Set(crl?.crls.flatMap((c) => c.revoked) ?? [])],
    crlNextUpdateMs: next.length === 0 ? undefined : Math.min(...next),
  };
}

function resolveHttpListener(
  ctx: CompileContext,
  l: HttpListenerFile,
  i: number,
  seenRouteIds: Set<string>,
): HttpRuntimeListener | undefined {
  const p = `listeners[${i}]`;
  const address = parseListen(l.listen, `${p}.listen`, ctx.errors);
  if (l.tls !== undefined && l.plaintext === true) {
    ctx.errors.push(new ConfigError(`${p}.plaintext`, true, `either ${p}.tls or ${p}.plaintext, not both`));
  } else if (l.tls === undefined) {
    if (ctx.requireEncryption) {
      ctx.errors.push(
        new ConfigError(
          `${p}.tls`,
          undefined,
          'a tls section (requireEncryption is true; plaintext listeners are refused)',
        ),
      );
      if (l.plaintext === true) {
        ctx.errors.push(
          new ConfigError(
            `${p}.plaintext`,
            true,
            'no plaintext listener while requireEncryption is true (set requireEncryption: false to allow one)',
          ),
        );
      }
    } else if (l.plaintext !== true) {
      ctx.errors.push(
        new ConfigError(
          `${p}.tls`,
          undefined,
          `a tls section, or ${p}.plaintext: true to serve plaintext on purpose`,
        ),
      );
    }
  }
  const tls = withServerNames(ctx, resolveListenerTls(ctx, l.tls, p), l.tls, l.serverNames, address, p, `listener "${l.name}"`);
  const mode = l.tls?.clientCertificate ?? 'none';
  if (mode === 'none' && l.allowClients !== undefined) {
    ctx.errors.push(
      new ConfigError(
        `${p}.allowClients`,
        l.allowClients,
        `no allowClients when ${p}.tls.clientCertificate is "none" (no client could match)`,
      ),
    );
  }
  const acl = compileAcl(ctx, l.allowClients, `${p}.allowClients`);
  const { routes, routeAuth, routeTelemetryOptOut } = resolveRoutes(ctx, l.routes, p, {
    listenerName: l.name,
    noCertificates: mode === 'none' ? `${p}.tls.clientCertificate is "none"` : undefined,
    tls: l.tls !== undefined,
    seenRouteIds,
  });
  if (!address) return undefined;
  return {
    name: l.name,
    keyPath: p,
    address,
    protocol: 'http',
    tls,
    acl,
    routes,
    maxConnections: l.maxConnections,
    maxConnectionsPerClient: l.maxConnectionsPerClient,
    routeAuth,
    routeTelemetryOptOut,
  };
}

/** How {@link resolveRoutes} reads the routes of one listener. */
interface RouteListFacts {
  readonly listenerName: string;
  /** Why the listener has no client certificates (a route's `allowClients` could match nobody), or undefined. */
  readonly noCertificates: string | undefined;
  /** Browsers reach it over TLS (an https listener, or a decision listener behind a TLS proxy). */
  readonly tls: boolean;
  readonly seenRouteIds: Set<string>;
}

/**
 * The `routes` of an http or decision listener at `p`: each route's match, upstream (a decision route has
 * none: {@link DECISION_TARGET}), methods, allow-list and `auth`, plus the gateway's login paths when a
 * route has a browser login. Errors go to `ctx.errors`.
 */
function resolveRoutes(
  ctx: CompileContext,
  list: readonly (RouteFile | DecisionRouteFile)[],
  p: string,
  facts: RouteListFacts,
): Pick<HttpRuntimeListener, 'routes' | 'routeAuth'> & { readonly routeTelemetryOptOut: Record<string, boolean> } {
  const { seenRouteIds } = facts;
  const routes: Route[] = [];
  // No prototype: a route id such as "constructor" is a plain key.
  const routeAuth = Object.create(null) as Record<string, RouteAuth>;
  const routeTelemetryOptOut = Object.create(null) as Record<string, boolean>;
  list.forEach((r, j) => {
    if ('telemetry' in r && r.telemetry !== undefined) routeTelemetryOptOut[r.id ?? `${facts.listenerName}-${j}`] = r.telemetry.optOut;
    const rp = `${p}.routes[${j}]`;
    const id = r.id ?? `${facts.listenerName}-${j}`;
    if (seenRouteIds.has(id)) ctx.errors.push(new ConfigError(`${rp}.id`, id, 'a route id used only once'));
    seenRouteIds.add(id);
    if (facts.noCertificates !== undefined && r.allowClients !== undefined)
      ctx.errors.push(new ConfigError(`${rp}.allowClients`, r.allowClients, `no allowClients when ${facts.noCertificates}`));
    const upstream = 'upstream' in r ? resolveUpstream(ctx, r.upstream, `${rp}.upstream`) : DECISION_TARGET;
    const host = normalizeRouteHost(ctx, r.match.host, `${rp}.match.host`);
    const prefix = r.match.pathPrefix;
    if (
      prefix !== '/' &&
      (/[?#;\\%]|\/\/|\/\.\.?(?:\/|$)/.test(prefix) ||
        (prefix.endsWith('/') && prefix.length > 1 && prefix.slice(0, -1).endsWith('/')))
    ) {
      ctx.errors.push(
        new ConfigError(
          `${rp}.match.pathPrefix`,
          prefix,
          'a normalized path prefix (no ?, #, ;, \\, %, //, or dot segments)',
        ),
      );
    }
    const pathPrefix = prefix.length > 1 && prefix.endsWith('/') ? prefix.slice(0, -1) : prefix;
    const racl = compileAcl(ctx, r.allowClients, `${rp}.allowClients`);
    let methods: MethodPolicy = DEFAULT_METHOD_POLICY;
    try {
      methods = compileMethodPolicy(r.methods, `${rp}.methods`);
    } catch (err) {
      if (err instanceof ConfigError) ctx.errors.push(err);
      else throw err;
    }
    if (r.auth !== undefined) {
      const auth = resolveRouteAuth(ctx, r.auth, `${rp}.auth`, id);
      if (auth !== undefined) routeAuth[id] = auth;
    }
    if (upstream) routes.push({ id, host, pathPrefix, upstream, acl: racl, methods });
    if (r.auth?.login !== undefined && !facts.tls)
      ctx.errors.push(
        new ConfigError(`${rp}.auth.login`, r.auth.login, 'a login route on a TLS listener (its cookies are Secure)'),
      );
  });
  // The gateway's own login paths (endpoints/login.ts), on every listener that has a login route.
  const loginHosts = routes.filter((r) => routeAuth[r.id]?.login !== undefined).map((r) => r.host);
  if (loginHosts.length > 0) {
    list.forEach((r, j) => {
      const prefix = r.match.pathPrefix;
      if (prefix === LOGIN_PATH_PREFIX || prefix.startsWith(`${LOGIN_PATH_PREFIX}/`))
        ctx.errors.push(
          new ConfigError(
            `${p}.routes[${j}].match.pathPrefix`,
            prefix,
            `a path outside ${LOGIN_PATH_PREFIX}/ (the gateway's own login paths on a listener with a login route)`,
          ),
        );
    });
    routes.push(...loginEndpointRoutes(loginHosts));
  }
  return { routes: compileRouteTable(routes), routeAuth, routeTelemetryOptOut };
}
