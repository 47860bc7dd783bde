/**
 * The composition root: builds every stage from a valid {@link RuntimeConfig} and its injected deps,
 * binds the listeners, and tears everything down. No module keeps process-wide state of its own.
 */
import { Registry } from 'prom-client';
import type { RuntimeConfig } from './config/load.js';
import type { Clock } from './clock.js';
import { systemClock } from './clock.js';
import { createHttpHandler, type RouteForwarder } from './listener/http-handler.js';
import { startHttpListener, type RunningListener } from './listener/http-listener.js';
import { startTcpListener } from './listener/tcp-listener.js';
import { createLogger, type Logger } from './observability/logger.js';
import { createMetrics, type Metrics } from './observability/metrics.js';
import { createAccessLog } from './observability/access-log.js';
import { createHttpForwarder, type HttpForwarder } from './proxy/http-forward.js';
import { forwardToEcho } from './proxy/echo.js';
import { createWebSocketProxy } from './proxy/websocket.js';
import { registryMetrics, startAdminServer, type AdminServer } from './admin/server.js';
import { createAuthenticators } from './authn/providers.js';
import type { Authenticator, FetchLike } from './authn/principal.js';
import { createAuthMetrics, createAuthnObserver } from './observability/auth-metrics.js';

/** Side effects the app takes from outside. */
export interface AppDeps {
  readonly logger?: Logger;
  readonly clock?: Clock;
  readonly registry?: Registry;
  /** Outbound HTTP of the auth providers (introspection, JWKS). Default: the global fetch. */
  readonly fetch?: FetchLike;
  /** TLS session ticket keys for every data listener (a cluster's, shared by its workers). Default: Node's per-process keys. */
  readonly ticketKeys?: Buffer;
}

/** A started gateway. */
export interface App {
  readonly config: RuntimeConfig;
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly registry: Registry;
  /** The authentication providers built from `authProviders`, by name (one set per app start). */
  readonly authenticators: ReadonlyMap<string, Authenticator>;
  /**
   * Drops cached token answers of every provider: all of them, or the one token whose SHA-256 (lower-case
   * hex) is given. Returns how many entries went. What `POST /cache/purge` on the admin listener calls.
   */
  purgeTokenCache(sha256?: string): number;
  /** What is not ready (providers whose key set was never fetched, ...); empty when ready. */
  notReady(): readonly string[];
  /** Bound port of each listener by name (useful with port 0). */
  port(listenerName: string): number;
  /** Bound port of the admin listener, when enabled. */
  adminPort(): number | undefined;
  /** Graceful stop: stop accepting, drain for up to `graceMs`, close upstream pools. */
  close(graceMs?: number): Promise<void>;
}

/**
 * Builds and starts the gateway. On any failure to bind, everything already bound is closed and the
 * error (a ConfigError naming the key path) is rethrown: nothing stays half-listening.
 */
export async function startApp(config: RuntimeConfig, deps: AppDeps = {}): Promise<App> {
  const logger = deps.logger ?? createLogger(config.log.level);
  const clock = deps.clock ?? systemClock;
  const registry = deps.registry ?? new Registry();
  const metrics = createMetrics(registry);
  const accessLog = createAccessLog(logger, config.log.access);
  // Like prometheus_config_last_reload_success_timestamp_seconds: the start is the first successful load.
  metrics.configLastReloadSuccess.set(clock.now() / 1000);
  for (const w of config.warnings) logger.warn(w);
  setCertificateGauges(config, metrics);

  // The providers are runtime objects made from the (immutable) config: one set per app start, shared by
  // every listener. A file they need was checked at load; a remote JWKS is fetched now (warmUp), and a
  // failure there is not fatal: readiness says so and requests get 503 until it answers.
  const authLogger = logger.child({ component: 'authn' });
  const authenticators = createAuthenticators(config.authProviders, {
    clock,
    logger: authLogger,
    observer: createAuthnObserver(metrics),
    ...(deps.fetch !== undefined ? { fetch: deps.fetch } : {}),
  });
  const authMetrics = createAuthMetrics(metrics, authenticators);
  const warmUp = Promise.all([...authenticators.values()].map((p) => p.warmUp()));
  const notReady = (): string[] => {
    const out: string[] = [];
    // Checked against the clock at each /readyz: a server certificate can expire while the process runs.
    const now = clock.now();
    for (const l of config.listeners) {
      for (const c of l.tls?.certificates ?? []) {
        if (c.kind === 'server' && c.validToMs <= now)
          out.push(
            `listeners.${l.name}: server certificate (${c.keyPath}) expired at ${new Date(c.validToMs).toISOString()}`,
          );
      }
    }
    for (const [name, p] of authenticators) {
      const why = p.readiness();
      if (why !== undefined) out.push(`authProviders.${name}: ${why}`);
    }
    return out;
  };
  const purgeTokenCache = (sha256?: string): number => {
    let n = 0;
    for (const p of authenticators.values()) n += p.purge?.(sha256) ?? 0;
    return n;
  };

  const pools = new Map<string, HttpForwarder>();
  const websocket = createWebSocketProxy(config.timeouts);
  const listeners: RunningListener[] = [];
  let admin: AdminServer | undefined;

  const closeAll = async (graceMs: number): Promise<void> => {
    await Promise.allSettled(listeners.map((l) => l.close(graceMs)));
    await admin?.close();
    websocket.close();
    await Promise.allSettled([...pools.values()].map((p) => p.close()));
    for (const p of authenticators.values()) p.close();
  };

  try {
    for (const l of config.listeners) {
      if (l.protocol === 'tcp') {
        // TLS in, bytes out to one upstream: no routes, no HTTP stage (listener/tcp-listener.ts).
        listeners.push(
          await startTcpListener(l, l.upstream, {
            logger,
            metrics,
            timeouts: config.timeouts,
            proxyProtocol: l.proxyProtocol,
            accessLog: config.log.access,
            clock,
            ...(deps.ticketKeys !== undefined ? { ticketKeys: deps.ticketKeys } : {}),
          }),
        );
        continue;
      }
      const forwarders = new Map<string, RouteForwarder>();
      for (const route of l.routes.routes) {
        const up = route.upstream;
        if (up.kind === 'echo') {
          forwarders.set(route.id, forwardToEcho);
          continue;
        }
        // One pool per distinct upstream (origin + TLS identity), shared by every route using it.
        const key = `${up.origin}|${route.id.length > 0 && up.tls ? route.id : ''}`;
        let pool = pools.get(key);
        if (pool === undefined) {
          pool = createHttpForwarder(up, config.timeouts, clock);
          pools.set(key, pool);
        }
        forwarders.set(route.id, pool.forward);
      }
      const handler = createHttpHandler(l, {
        logger,
        metrics,
        clock,
        accessLog,
        forwarders,
        websocket,
        authenticators,
        authMetrics,
        telemetry: config.telemetry,
      });
      listeners.push(
        await startHttpListener(l, {
          logger,
          metrics,
          handler,
          timeouts: config.timeouts,
          http2: config.http2,
          ...(deps.ticketKeys !== undefined ? { ticketKeys: deps.ticketKeys } : {}),
        }),
      );
    }
    if (config.admin.enabled) {
      admin = await startAdminServer(config.admin, {
        metrics: registryMetrics(registry),
        notReady,
        purge: (sha256) => {
          const purged = purgeTokenCache(sha256);
          logger.info(
            { purged, ...(sha256 !== undefined ? { tokenHash: sha256.slice(0, 12) } : { all: true }) },
            'token cache purged',
          );
          return purged;
        },
      });
    }
    await warmUp;
  } catch (err) {
    await closeAll(0);
    throw err;
  }
  for (const l of listeners) {
    const a = l.address();
    logger.info({ listener: l.name, address: a.address, port: a.port }, 'listening');
  }
  for (const why of notReady())
    logger.warn({ reason: why }, 'not ready: requests on routes that need it get 503');

  return {
    config,
    logger,
    metrics,
    registry,
    authenticators,
    purgeTokenCache,
    notReady,
    port(name: string): number {
      const l = listeners.find((x) => x.name === name);
      if (!l) throw new Error(`no listener named ${name}`);
      return l.address().port;
    },
    adminPort: () => admin?.address().port,
    close: (graceMs = config.timeouts.shutdownGraceMs) => closeAll(graceMs),
  };
}

/**
 * Sets the certificate expiry and CRL nextUpdate gauges once from the loaded config. Labels are the
 * listener name, the certificate's kind and its position in its PEM bundle: never a subject or a path.
 */
function setCertificateGauges(config: RuntimeConfig, metrics: Metrics): void {
  // The admin listener's own TLS material is labelled listener="admin" (load.ts keeps that name free).
  // Not gated on admin.enabled: a cluster worker runs with admin disabled while its primary serves it.
  const adminTls = config.admin.tls;
  const sources = [...config.listeners, ...(adminTls ? [{ name: 'admin', tls: adminTls, upstreamCertificates: undefined }] : [])];
  for (const l of sources) {
    const certs = [...(l.tls?.certificates ?? []), ...(l.upstreamCertificates ?? [])];
    // Upstream bundles of several routes share kind and index: keep the earliest notAfter per label set,
    // the one an alert has to fire on.
    const earliest = new Map<string, { kind: string; index: number; ms: number }>();
    for (const c of certs) {
      const key = `${c.kind}/${c.index}`;
      const prev = earliest.get(key);
      if (prev === undefined || c.validToMs < prev.ms)
        earliest.set(key, { kind: c.kind, index: c.index, ms: c.validToMs });
    }
    for (const e of earliest.values())
      metrics.certificateExpiry.labels(l.name, e.kind, String(e.index)).set(e.ms / 1000);
    if (l.tls?.crlNextUpdateMs !== undefined)
      metrics.crlNextUpdate.labels(l.name).set(l.tls.crlNextUpdateMs / 1000);
  }
}
