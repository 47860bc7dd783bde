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
import { createLogger, type Logger } from './observability/logger.js';
import { createMetrics, type Metrics } from './observability/metrics.js';
import { createHttpForwarder, type HttpForwarder } from './proxy/http-forward.js';
import { forwardToEcho } from './proxy/echo.js';
import { createWebSocketProxy } from './proxy/websocket.js';
import { startAdminServer, type AdminServer } from './admin/server.js';

/** Side effects the app takes from outside. */
export interface AppDeps {
  readonly logger?: Logger;
  readonly clock?: Clock;
  readonly registry?: Registry;
}

/** A started gateway. */
export interface App {
  readonly config: RuntimeConfig;
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly registry: Registry;
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
  for (const w of config.warnings) logger.warn(w);

  const pools = new Map<string, HttpForwarder>();
  const websocket = createWebSocketProxy(config.timeouts);
  const listeners: RunningListener[] = [];
  let admin: AdminServer | undefined;

  const closeAll = async (graceMs: number): Promise<void> => {
    await Promise.allSettled(listeners.map((l) => l.close(graceMs)));
    await admin?.close();
    websocket.close();
    await Promise.allSettled([...pools.values()].map((p) => p.close()));
  };

  try {
    for (const l of config.listeners) {
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
          pool = createHttpForwarder(up, config.timeouts);
          pools.set(key, pool);
        }
        forwarders.set(route.id, pool.forward);
      }
      const handler = createHttpHandler(l, { logger, metrics, clock, accessLog: config.log.access, forwarders, websocket });
      listeners.push(await startHttpListener(l, { logger, metrics, handler, timeouts: config.timeouts, http2: config.http2 }));
    }
    if (config.admin.enabled) {
      admin = await startAdminServer(config.admin.address, { registry, notReady: () => [] });
    }
  } catch (err) {
    await closeAll(0);
    throw err;
  }
  for (const l of listeners) {
    const a = l.address();
    logger.info({ listener: l.name, address: a.address, port: a.port }, 'listening');
  }

  return {
    config,
    logger,
    metrics,
    registry,
    port(name: string): number {
      const l = listeners.find((x) => x.name === name);
      if (!l) throw new Error(`no listener named ${name}`);
      return l.address().port;
    },
    adminPort: () => admin?.address().port,
    close: (graceMs = config.timeouts.shutdownGraceMs) => closeAll(graceMs),
  };
}
