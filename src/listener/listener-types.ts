/**
 * The listener table: every `listeners[].protocol`, each as `{ create, requestHandler }` in one place. The
 * composition root (app.ts) makes its listeners and the request handlers of each config through this table
 * and never asks which protocol a listener has; adding a kind of listener is its own module plus one entry
 * here.
 */
import type {
  DecisionRuntimeListener,
  HttpRuntimeListener,
  RuntimeListener,
  TcpRuntimeListener,
} from '../config/runtime.js';
import type { Clock } from '../clock.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import { youngCollection } from '../proxy/gc-pacer.js';
import type { HttpHandler } from './http-handler.js';
import { createHttpListener } from './http-listener.js';
import type { Listener, ListenerRuntime } from './listener.js';
import { createTcpListener } from './tcp-listener.js';

/** What every listener is made with, whatever its kind: the process's logger, metrics and clock. */
export interface ListenerDeps {
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly clock: Clock;
}

/**
 * How a config builds the request handler of each kind of listener that answers HTTP, from its routes: the
 * app makes these (they hold its providers, forwarder pools and access log), the table picks one.
 */
export interface HandlerBuilders {
  readonly http: (listener: HttpRuntimeListener) => HttpHandler;
  readonly decision: (listener: DecisionRuntimeListener) => HttpHandler;
}

/** One kind of listener: how it is made, and what each config builds for it. */
export interface ListenerType<L extends RuntimeListener> {
  /**
   * Makes a listener from its block of `runtime.config`, unbound (`start` binds it). Reads the settings a
   * reload never changes (`timeouts`, `http2`) from `runtime.config`.
   */
  readonly create: (listener: L, runtime: ListenerRuntime, deps: ListenerDeps) => Listener;
  /**
   * The request handler a config builds for a listener of this kind, made by its builder from its routes;
   * absent when the kind answers no HTTP request (a TCP listener pipes bytes).
   */
  readonly requestHandler?: (listener: L, build: HandlerBuilders) => HttpHandler;
}

/** The request handler `runtime` holds for listener `name`. @throws Error when it has none (a wiring bug). */
function handlerOf(runtime: ListenerRuntime, name: string): HttpHandler {
  const handler = runtime.handlers.get(name);
  if (handler === undefined) throw new Error(`no handler for listener ${name}`);
  return handler;
}

/** An HTTP listener (http-listener.ts) serving the request handler the runtime built for `listener`. */
function servedOverHttp(
  listener: HttpRuntimeListener | DecisionRuntimeListener,
  runtime: ListenerRuntime,
  deps: ListenerDeps,
): Listener {
  return createHttpListener(listener, {
    ...deps,
    handler: handlerOf(runtime, listener.name),
    timeouts: runtime.config.timeouts,
    http2: runtime.config.http2,
    ...(listener.tls !== undefined ? { ticketKeys: runtime.ticketKeys(listener.tls) } : {}),
  });
}

/** V8's young-generation collection for a TCP listener's pipes, where this V8 has one (proxy/gc-pacer.ts). */
function withYoungCollection(): { collectYoung?: () => void } {
  const collect = youngCollection();
  return collect === undefined ? {} : { collectYoung: collect };
}

/** The table. Keys are the `protocol` values of the config. */
export const LISTENER_TYPES = {
  http: {
    create: servedOverHttp,
    requestHandler: (listener, build) => build.http(listener),
  } satisfies ListenerType<HttpRuntimeListener>,
  decision: {
    // A plaintext HTTP listener on loopback whose handler answers the proxy's subrequests.
    create: servedOverHttp,
    requestHandler: (listener, build) => build.decision(listener),
  } satisfies ListenerType<DecisionRuntimeListener>,
  tcp: {
    create: (listener, runtime, deps) =>
      createTcpListener(listener, {
        ...deps,
        timeouts: runtime.config.timeouts,
        accessLog: runtime.config.log.access,
        ticketKeys: runtime.ticketKeys(listener.tls),
        ...withYoungCollection(),
      }),
  } satisfies ListenerType<TcpRuntimeListener>,
} as const;

/** The type of `listener`'s protocol (the table is keyed by every protocol the config accepts). */
function typeOf(listener: RuntimeListener): ListenerType<RuntimeListener> {
  return LISTENER_TYPES[listener.protocol] as ListenerType<RuntimeListener>;
}

/** Makes the listener of a config block, whatever its protocol, unbound (see {@link ListenerType.create}). */
export function createListener(
  listener: RuntimeListener,
  runtime: ListenerRuntime,
  deps: ListenerDeps,
): Listener {
  return typeOf(listener).create(listener, runtime, deps);
}

/**
 * The request handler of `listener`, made by its builder in `build`, or undefined when its kind answers no
 * HTTP request (see {@link ListenerType.requestHandler}).
 */
export function requestHandlerOf(listener: RuntimeListener, build: HandlerBuilders): HttpHandler | undefined {
  return typeOf(listener).requestHandler?.(listener, build);
}
