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
import { parseListen } from './addresses.js';
import { resolveRouteAuth } from './auth.js';
import type { CompileContext } from './context.js';
import type { HttpRuntimeListener, RouteAuth, RuntimeListener, TcpRuntimeListener } from './runtime.js';
import type { HttpListenerFile, ListenerFile, TcpListenerFile } from './schema.js';
import { resolveListenerTls, withServerNames } from './tls.js';
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
  const r = l.protocol === 'tcp' ? resolveTcpListener(ctx, l, i) : resolveHttpListener(ctx, l, i, seenRouteIds);
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
  const routes: Route[] = [];
  // No prototype: a route id such as "constructor" is a plain key.
  const routeAuth = Object.create(null) as Record<string, RouteAuth>;
  const routeTelemetryOptOut = Object.create(null) as Record<string, boolean>;
  l.routes.forEach((r, j) => {
    if (r.telemetry !== undefined) routeTelemetryOptOut[r.id ?? `${l.name}-${j}`] = r.telemetry.optOut;
    const rp = `${p}.routes[${j}]`;
    const id = r.id ?? `${l.name}-${j}`;
    if (seenRouteIds.has(id)) ctx.errors.push(new ConfigError(`${rp}.id`, id, 'a route id used only once'));
    seenRouteIds.add(id);
    if (mode === 'none' && r.allowClients !== undefined) {
      ctx.errors.push(
        new ConfigError(
          `${rp}.allowClients`,
          r.allowClients,
          `no allowClients when ${p}.tls.clientCertificate is "none"`,
        ),
      );
    }
    const upstream = resolveUpstream(ctx, r.upstream, `${rp}.upstream`);
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
    if (r.auth?.login !== undefined && l.tls === undefined)
      ctx.errors.push(
        new ConfigError(`${rp}.auth.login`, r.auth.login, 'a login route on a TLS listener (its cookies are Secure)'),
      );
  });
  // The gateway's own login paths (endpoints/login.ts), on every listener that has a login route.
  const loginHosts = routes.filter((r) => routeAuth[r.id]?.login !== undefined).map((r) => r.host);
  if (loginHosts.length > 0) {
    l.routes.forEach((r, j) => {
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
  if (!address) return undefined;
  return {
    name: l.name,
    keyPath: p,
    address,
    protocol: 'http',
    tls,
    acl,
    routes: compileRouteTable(routes),
    maxConnections: l.maxConnections,
    maxConnectionsPerClient: l.maxConnectionsPerClient,
    routeAuth,
    routeTelemetryOptOut,
  };
}
