/**
 * The composition root: builds every stage from a valid {@link RuntimeConfig} and its injected deps,
 * binds the listeners, and tears everything down. No module keeps process-wide state of its own.
 *
 * What one config builds (auth providers, upstream pools, one handler per HTTP listener) is a generation,
 * made by one function at start and at every reload: a reload builds the next generation from the new
 * config and swaps it in whole; the old one finishes the requests it already has and is closed after the
 * shutdown grace period.
 */
import { randomBytes } from 'node:crypto';
import { Registry } from 'prom-client';
import {
  ConfigInvalid,
  type DecisionRuntimeListener,
  type HttpRuntimeListener,
  type ListenerTls,
  type RuntimeConfig,
} from './config/load.js';
import { loadConfigFile } from './load-config.js';
import { unixSocketPath } from './config/addresses.js';
import type { Clock } from './clock.js';
import { monotonicMs, systemClock } from './clock.js';
import { ConfigError } from './errors.js';
import { createHttpHandler, type HttpHandler, type RouteForwarder } from './listener/http-handler.js';
import type { Listener, ListenerRuntime } from './listener/listener.js';
import { createListener, requestHandlerOf } from './listener/listener-types.js';
import { createDecisionHandler } from './listener/decision-handler.js';
import { stableDigest, tlsMaterialDigest } from './listener/tls-material.js';
import {
  startTicketKeyRotation,
  TICKET_KEY_BYTES,
  TICKET_KEY_ROTATION_MS,
  currentTicketKeys,
} from './listener/ticket-keys.js';
import { createLogger, type Logger } from './observability/logger.js';
import { createMetrics, type Metrics } from './observability/metrics.js';
import { createAccessLog } from './observability/access-log.js';
import { createHttpForwarder, type HttpForwarder } from './proxy/http-forward.js';
import { createEndpoints, isEndpointName } from './endpoints/registry.js';
import { createWebSocketProxy, type WebSocketProxy } from './proxy/websocket.js';
import { adminRefusalReporter, registryMetrics, startAdminServer } from './admin/server.js';
import { createAuthenticator } from './authn/providers.js';
import { createStore } from './store/create.js';
import { providerFiles } from './authn/provider-config.js';
import type { Authenticator, FetchLike, SharedStoreDeps } from './authn/principal.js';
import { createAuthMetrics, createAuthnObserver, type AuthMetrics } from './observability/auth-metrics.js';

/** Side effects the app takes from outside. */
export interface AppDeps {
  readonly logger?: Logger;
  readonly clock?: Clock;
  readonly registry?: Registry;
  /** Outbound HTTP of the auth providers (introspection, JWKS). Default: the global fetch. */
  readonly fetch?: FetchLike;
  /**
   * The 48-byte secret every data listener's TLS session ticket keys are derived from (listener/ticket-keys.ts):
   * a cluster's, shared by its workers so that they derive the same keys. Default: random, this process only.
   */
  readonly ticketKeys?: Buffer;
  /** How often the ticket keys rotate, in ms. Default {@link TICKET_KEY_ROTATION_MS} (one hour); tests shorten it. */
  readonly ticketKeyRotationMs?: number;
}

/** One reason a reload was refused: the key path it is about, and what happened. */
export interface ReloadError {
  /** Key path in the config file (`listeners[0].listen`, `timeouts.idleMs`, ...), or '' for the whole file. */
  readonly keyPath: string;
  readonly message: string;
}

/** The outcome of a reload: the new config serves, or it was refused and the old one keeps serving. */
export type ReloadResult =
  { readonly ok: true } | { readonly ok: false; readonly errors: readonly ReloadError[] };

/** A started gateway. */
export interface App {
  /** The config serving now (a reload swaps it whole). */
  readonly config: RuntimeConfig;
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly registry: Registry;
  /** The authentication providers built from `authProviders`, by name (a reload keeps the unchanged ones). */
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
  /**
   * Swaps in `newConfig` without dropping a connection, or refuses it and keeps serving the old one.
   * Refused (`ok: false`, each reason logged at error with its key path) when it changes what only a
   * restart can change: the listeners (names, order, protocol, address, TLS or not, client certificate
   * mode), `admin`, `workers`, `timeouts`, `http2`. Otherwise new requests get the new routes, route
   * policies, auth providers (new ones for changed providers) and upstream pools (new ones for changed upstreams), new
   * handshakes the new certificates, CA, CRL and listener ACL, TCP listeners' new connections the new
   * upstream; the log level and certificate gauges follow. Requests in flight finish on what they
   * started with; the old pools and providers no longer used are closed after `timeouts.shutdownGraceMs`.
   * Counts `portcullis_config_reloads_total{result}` and, on success, sets the last-reload timestamp.
   * Reloads run one after the other. Never rejects: an exception is a refusal.
   */
  reload(newConfig: RuntimeConfig): Promise<ReloadResult>;
  /** Graceful stop: stop accepting, drain for up to `graceMs`, close upstream pools. */
  close(graceMs?: number): Promise<void>;
}

/** An authentication provider and what it was made from (a reload keeps it, and its cache, when that did not
 * change: its settings and the content of its files). */
interface ProviderEntry {
  readonly fingerprint: string;
  readonly authenticator: Authenticator;
}

/** An upstream pool and what it was made from (a reload keeps it when that did not change). */
interface PoolEntry {
  readonly fingerprint: string;
  readonly forwarder: HttpForwarder;
}

/** What the app builds from one config and swaps whole at a reload. */
interface Generation {
  readonly config: RuntimeConfig;
  readonly authenticators: ReadonlyMap<string, Authenticator>;
  /** The providers by name with their fingerprints, possibly the previous generation's. */
  readonly providers: ReadonlyMap<string, ProviderEntry>;
  /** Pools by key: one per distinct upstream (origin + TLS identity), possibly the previous generation's. */
  readonly pools: ReadonlyMap<string, PoolEntry>;
  /** The handler of each HTTP listener, by listener name. */
  readonly handlers: ReadonlyMap<string, HttpHandler>;
  /** The first fetch of the providers this generation made (remote JWKS). Never rejects. */
  readonly warmUp: Promise<unknown>;
}

/** The invalidation message of a token-cache purge: `purge:*` or `purge:<sha256 hex>`. */
const PURGE_MESSAGE = 'purge:';

/** What every generation shares: made once per app. */
interface Shared {
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly clock: Clock;
  readonly websocket: WebSocketProxy;
  readonly fetch: FetchLike | undefined;
  /** The shared store (store.type: redis), handed to the providers; undefined with the memory store. */
  readonly shared: SharedStoreDeps | undefined;
}

/**
 * Builds the per-config parts: the auth providers (bound to the scrape-time auth metrics), the upstream
 * pools (reusing `previous`'s pool of an upstream whose origin and TLS identity did not change) and one
 * handler per HTTP listener. On a failure, what it created is closed and the error rethrown; `previous`
 * is left untouched except that the auth metrics must be rebound to it by the caller.
 */
function buildGeneration(
  config: RuntimeConfig,
  shared: Shared,
  previous: Generation | undefined,
): Generation {
  const { logger, metrics, clock } = shared;
  // The providers are runtime objects made from the (immutable) config, shared by every listener. One whose
  // settings and files did not change is the previous generation's, with its token cache, its key set and
  // its IdP state: a reload (a CRL refreshed, a route added) must not send every cached token to the IdP
  // again. A file they need was checked at load; a remote JWKS is fetched by warmUp, and a failure there is
  // not fatal: readiness says so and requests get 503 until it answers.
  const authnDeps = {
    clock,
    logger: logger.child({ component: 'authn' }),
    observer: createAuthnObserver(metrics),
    ...(shared.fetch !== undefined ? { fetch: shared.fetch } : {}),
    ...(shared.shared !== undefined ? { shared: shared.shared } : {}),
  };
  const providers = new Map<string, ProviderEntry>();
  const made: Authenticator[] = [];
  const pools = new Map<string, PoolEntry>();
  const authenticators = new Map<string, Authenticator>();
  try {
    for (const [name, pc] of Object.entries(config.authProviders)) {
      const fingerprint = stableDigest([
        JSON.stringify(pc),
        // A change of a file's content (a rotated secret, a new tokens file) makes a new provider.
        ...providerFiles(pc).map(([, file]) => config.files[file] ?? 'unread'),
      ]);
      const before = previous?.providers.get(name);
      let entry: ProviderEntry;
      if (before?.fingerprint === fingerprint) entry = before;
      else {
        entry = { fingerprint, authenticator: createAuthenticator(name, pc, authnDeps) };
        made.push(entry.authenticator);
      }
      providers.set(name, entry);
      authenticators.set(name, entry.authenticator);
    }
    const authMetrics: AuthMetrics = createAuthMetrics(metrics, authenticators);
    const accessLog = createAccessLog(logger, config.log.access);
    const handlers = new Map<string, HttpHandler>();
    const endpoints = createEndpoints(config.timeouts);
    /** The request handler of an HTTP listener: its routes' forwarders (pools shared by every route and
     * listener using the same upstream), the auth providers and the access log of this config. */
    const buildHandler = (l: HttpRuntimeListener): HttpHandler => {
      const forwarders = new Map<string, RouteForwarder>();
      for (const route of l.routes.routes) {
        const up = route.upstream;
        if (up.kind === 'gateway') {
          // The loader only accepts endpoint names; a miss is a wiring bug, refused before anything serves.
          const endpoint = isEndpointName(up.endpoint) ? endpoints.get(up.endpoint) : undefined;
          if (endpoint === undefined) throw new Error(`route ${route.id}: no gateway endpoint ${up.endpoint}`);
          forwarders.set(route.id, endpoint);
          continue;
        }
        // One pool per distinct upstream (origin + TLS identity), shared by every route using it.
        const key = `${up.origin}|${route.id.length > 0 && up.tls ? route.id : ''}`;
        let entry = pools.get(key);
        if (entry === undefined) {
          const fingerprint = stableDigest([
            up.origin,
            up.tls?.ca,
            up.tls?.cert,
            up.tls?.key,
            up.tls?.servername,
          ]);
          const before = previous?.pools.get(key);
          entry =
            before?.fingerprint === fingerprint
              ? before
              : { fingerprint, forwarder: createHttpForwarder(up, config.timeouts, clock) };
          pools.set(key, entry);
        }
        forwarders.set(route.id, entry.forwarder.forward);
      }
      return createHttpHandler(l, {
        logger,
        metrics,
        clock,
        accessLog,
        forwarders,
        websocket: shared.websocket,
        authenticators,
        authMetrics,
        bodyMs: config.timeouts.requestBodyMs,
        telemetry: config.telemetry,
      });
    };
    const buildDecisionHandler = (l: DecisionRuntimeListener): HttpHandler =>
      createDecisionHandler(l, {
        logger,
        metrics,
        clock,
        accessLog,
        authenticators,
        authMetrics,
        bodyMs: config.timeouts.requestBodyMs,
      });
    for (const l of config.listeners) {
      const handler = requestHandlerOf(l, { http: buildHandler, decision: buildDecisionHandler });
      if (handler !== undefined) handlers.set(l.name, handler);
    }
    const warmUp = Promise.all(made.map((p) => p.warmUp()));
    return { config, authenticators, providers, pools, handlers, warmUp };
  } catch (err) {
    void retire({ authenticators, pools }, previous === undefined ? [] : [previous]);
    throw err;
  }
}

/**
 * Closes the providers and pools of `gen` that none of `others` uses (a generation that serves, or one whose
 * grace period still runs): a reload hands unchanged ones on.
 */
function retire(
  gen: Pick<Generation, 'authenticators' | 'pools'>,
  others: readonly Pick<Generation, 'authenticators' | 'pools'>[],
): Promise<unknown> {
  const inUse = new Set(others.flatMap((o) => [...o.authenticators.values()]));
  for (const p of gen.authenticators.values()) if (!inUse.has(p)) p.close();
  const kept = new Set(others.flatMap((o) => [...o.pools.values()].map((e) => e.forwarder)));
  // undici's close waits for the requests the pool still has: nothing in flight is cut.
  return Promise.allSettled(
    [...gen.pools.values()].filter((e) => !kept.has(e.forwarder)).map((e) => e.forwarder.close()),
  );
}

/**
 * Why `next` cannot replace `current` without a restart: each reason names its key path. Empty when a
 * reload can apply it.
 */
export function restartNeeded(current: RuntimeConfig, next: RuntimeConfig): ReloadError[] {
  const out: ReloadError[] = [];
  const need = (keyPath: string, what: string): void => {
    out.push({
      keyPath,
      message: `${what}: a restart is needed to change it (the running config keeps serving)`,
    });
  };
  if (current.workers !== next.workers) need('workers', `workers ${current.workers} -> ${next.workers}`);
  // The store's connection is made once: where sessions live cannot change under running sessions. Its files
  // renewed in place (a rotated password, a renewed client certificate) are not refused: refusing would block
  // every other reload, e.g. the listeners' certificate rotation; a warning says a restart applies them.
  if (storeShape(current.store) !== storeShape(next.store))
    need('store', `store (${current.store.type} -> ${next.store.type}, or its settings)`);
  // The file watch is armed once, by the process that owns it (main.ts): a new interval takes a restart.
  if (current.reload.checkFilesSeconds !== next.reload.checkFilesSeconds)
    need(
      'reload.checkFilesSeconds',
      `reload.checkFilesSeconds ${current.reload.checkFilesSeconds} -> ${next.reload.checkFilesSeconds}`,
    );
  for (const k of Object.keys(current.timeouts) as (keyof RuntimeConfig['timeouts'])[])
    if (current.timeouts[k] !== next.timeouts[k])
      need(`timeouts.${k}`, `timeouts.${k} ${current.timeouts[k]} -> ${next.timeouts[k]}`);
  for (const k of Object.keys(current.http2) as (keyof RuntimeConfig['http2'])[])
    if (current.http2[k] !== next.http2[k])
      need(`http2.${k}`, `http2.${k} ${current.http2[k]} -> ${next.http2[k]}`);
  const a = current.admin;
  const b = next.admin;
  if (a.enabled !== b.enabled) need('admin.enabled', `admin.enabled ${a.enabled} -> ${b.enabled}`);
  if (a.address.host !== b.address.host || a.address.port !== b.address.port)
    need('admin.listen', `admin.listen ${hostPort(a.address)} -> ${hostPort(b.address)}`);
  // The admin server has no way to swap its secure context: a change of its TLS settings is refused. Files
  // renewed in place (same paths, new contents) are not: the reload goes on and a warning says the admin
  // listener keeps the old material until a restart (refusing would block the data listeners' rotation).
  if (adminTlsShape(a.tls) !== adminTlsShape(b.tls))
    need('admin.tls', 'admin.tls changed (on/off, clientCertificate, minVersion or certificate files)');
  if (stableDigest(a.acl?.entries ?? null) !== stableDigest(b.acl?.entries ?? null))
    need('admin.allowClients', 'admin.allowClients changed');
  const names = (c: RuntimeConfig): string => c.listeners.map((l) => l.name).join(', ');
  if (names(current) !== names(next)) {
    need('listeners', `the listeners [${names(current)}] -> [${names(next)}]`);
    return out;
  }
  current.listeners.forEach((l, i) => {
    const n = next.listeners[i];
    if (n === undefined) return;
    const at = n.keyPath;
    if (l.protocol !== n.protocol)
      need(`${at}.protocol`, `${at}.protocol (${l.name}) ${l.protocol} -> ${n.protocol}`);
    if (l.address.host !== n.address.host || l.address.port !== n.address.port)
      need(`${at}.listen`, `${at}.listen (${l.name}) ${hostPort(l.address)} -> ${hostPort(n.address)}`);
    if ((l.tls === undefined) !== (n.tls === undefined))
      need(`${at}.tls`, `${at}.tls (${l.name}): TLS ${l.tls ? 'on' : 'off'} -> ${n.tls ? 'on' : 'off'}`);
    else if (l.tls && n.tls && l.tls.clientCertificate !== n.tls.clientCertificate)
      need(
        `${at}.tls.clientCertificate`,
        `${at}.tls.clientCertificate (${l.name}) ${l.tls.clientCertificate} -> ${n.tls.clientCertificate}`,
      );
  });
  return out;
}

function hostPort(a: { readonly host: string; readonly port: number }): string {
  if (unixSocketPath(a) !== undefined) return a.host;
  return a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}

/** The store settings as written, without the contents of its files (password, TLS material). */
function storeShape(store: RuntimeConfig['store']): string {
  if (store.type === 'memory') return 'memory';
  const { password, tls, ...rest } = store;
  return stableDigest([JSON.stringify(rest), password !== undefined, tls?.servername, tls?.ca !== undefined, tls?.cert !== undefined]);
}

/** The contents of the store's files: what a reload keeps until a restart. */
function storeMaterial(store: RuntimeConfig['store']): string {
  if (store.type === 'memory') return 'memory';
  return stableDigest([store.password, store.tls?.ca?.toString('base64'), store.tls?.cert?.toString('base64'), store.tls?.key?.toString('base64')]);
}

/** The admin TLS settings as written (not the files' contents): what a reload may not change. */
function adminTlsShape(tls: ListenerTls | undefined): string {
  if (tls === undefined) return 'none';
  return stableDigest([
    tls.clientCertificate,
    tls.options.minVersion,
    tls.options.crl !== undefined,
    tls.certificates.map((c) => `${c.kind}:${c.keyPath}:${c.file}`),
  ]);
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
  // Like prometheus_config_last_reload_success_timestamp_seconds: the start is the first successful load.
  metrics.configLastReloadSuccess.set(clock.now() / 1000);
  for (const w of config.warnings) logger.warn(w);
  setCertificateGauges(config, metrics);

  // Shared by every generation: it depends only on `timeouts`, which a reload never changes.
  const websocket = createWebSocketProxy(config.timeouts, clock);
  // One store for the life of the app (a reload that changes it is refused: restartNeeded).
  const store = createStore(config.store, {
    clock,
    logger: logger.child({ component: 'store' }),
    onFailure: (reason) => metrics.storeFailures.inc({ reason }),
  });
  metrics.bindStore(() => store.health.problem());
  const sharedStore: SharedStoreDeps | undefined =
    config.store.type === 'redis'
      ? {
          kv: store.kv,
          channel: store.channel,
          whenUnavailable: config.store.whenUnavailable,
        }
      : undefined;
  const shared: Shared = { logger, metrics, clock, websocket, fetch: deps.fetch, shared: sharedStore };
  let gen: Generation;
  try {
    gen = buildGeneration(config, shared, undefined);
  } catch (err) {
    await store.close();
    throw err;
  }
  /** Generations replaced by a reload whose grace period is still running: closed at once by close(). */
  const retiring = new Map<NodeJS.Timeout, Generation>();

  const notReady = (): string[] => {
    const out: string[] = [];
    // Draining (SIGTERM, a Kubernetes preStop): the load balancer must stop sending new work while the
    // requests in flight finish, so readiness fails for the whole drain (the admin listener closes last).
    if (closing) out.push('draining: the gateway is shutting down');
    // Checked against the clock at each /readyz: a server certificate can expire while the process runs.
    const now = clock.now();
    for (const l of gen.config.listeners) {
      for (const c of l.tls?.certificates ?? []) {
        if (c.kind === 'server' && c.validToMs <= now)
          out.push(
            `listeners.${l.name}: server certificate (${c.keyPath}) expired at ${new Date(c.validToMs).toISOString()}`,
          );
      }
    }
    if (config.store.type === 'redis' && config.store.requiredForReadiness) {
      const why = store.health.problem();
      if (why !== undefined) out.push(`store: ${why}`);
    }
    for (const [name, p] of gen.authenticators) {
      const why = p.readiness();
      if (why !== undefined) out.push(`authProviders.${name}: ${why}`);
    }
    return out;
  };
  const purgeHere = (sha256?: string): number => {
    let n = 0;
    for (const p of gen.authenticators.values()) n += p.purge?.(sha256) ?? 0;
    return n;
  };
  // With a shared store a purge is also sent to every replica (store/redis.ts: pub/sub); what this process
  // purged is counted here, the others purge when the message reaches them (within a second).
  const purgeTokenCache = (sha256?: string): number => {
    const n = purgeHere(sha256);
    if (config.store.type === 'redis') {
      // The shared answers first (a new generation), then the message: a replica that drops its local copy on
      // the message and asks again must not find the old answer in Redis.
      const providers = [...gen.authenticators.values()];
      Promise.all(providers.map((p) => p.purgeShared?.() ?? Promise.resolve()))
        .then(() => store.channel.publish(`${PURGE_MESSAGE}${sha256 ?? '*'}`))
        .catch((err: unknown) => {
          logger.error(
            { err: err instanceof Error ? err.message : String(err) },
            'purge not shared with the other replicas: the store is unavailable (their copies end at their TTL, or when their channel reconnects)',
          );
        });
    }
    return n;
  };
  if (config.store.type === 'redis')
    store.channel.subscribe({
      onMessage: (message) => {
        if (!message.startsWith(PURGE_MESSAGE)) return;
        const target = message.slice(PURGE_MESSAGE.length);
        if (target === '*') purgeHere();
        else if (/^[0-9a-f]{64}$/.test(target)) purgeHere(target);
      },
      // Messages may have been missed while the channel was down: a purge sent meanwhile must still hold.
      onReset: () => purgeHere(),
    });

  // Ticket keys: derived per listener from one secret, its TLS material and the hour (listener/ticket-keys.ts).
  const ticketSecret = deps.ticketKeys ?? randomBytes(TICKET_KEY_BYTES);
  const rotationMs = deps.ticketKeyRotationMs ?? TICKET_KEY_ROTATION_MS;
  const ticketKeysOf = (tls: ListenerTls | undefined): Buffer =>
    currentTicketKeys(ticketSecret, tls, clock.now(), rotationMs);
  /** What the listeners serve `g` with (listener/listener.ts). */
  const runtimeOf = (g: Generation): ListenerRuntime => ({
    config: g.config,
    handlers: g.handlers,
    ticketKeys: ticketKeysOf,
  });

  /** The data listeners, in config order (a reload keeps the order: restartNeeded). */
  const listeners: Listener[] = [];
  let admin: Listener | undefined;
  let closing = false;
  // Rotates what is listening at each boundary (nothing yet during the start; closed by closeAll).
  const rotation = startTicketKeyRotation({
    rotationMs,
    clock,
    onRotate: (period) => {
      gen.config.listeners.forEach((l, i) => {
        if (l.tls !== undefined) listeners[i]?.setTicketKeys(ticketKeysOf(l.tls));
      });
      // The admin listener keeps the TLS material it started with (a reload does not swap it).
      if (config.admin.tls !== undefined) admin?.setTicketKeys(ticketKeysOf(config.admin.tls));
      logger.debug({ period }, 'TLS session ticket keys rotated');
    },
    onError: (err) => logger.error({ err }, 'TLS session ticket key rotation failed: the previous keys stay'),
  });

  const closeAll = async (graceMs: number): Promise<void> => {
    closing = true;
    rotation.stop();
    await Promise.allSettled(listeners.map((l) => l.drain(graceMs)));
    await admin?.close();
    websocket.close();
    for (const [timer, old] of retiring) {
      clearTimeout(timer);
      await retire(old, []);
    }
    retiring.clear();
    await retire(gen, []);
    await store.close();
  };

  try {
    for (const l of config.listeners) {
      const listener = createListener(l, runtimeOf(gen), { logger, metrics, clock });
      await listener.start();
      listeners.push(listener);
    }
    if (config.admin.enabled) {
      admin = await startAdminServer(config.admin, {
        logger,
        metrics: registryMetrics(registry),
        notReady,
        ...(config.admin.tls !== undefined ? { ticketKeys: ticketKeysOf(config.admin.tls) } : {}),
        onRefusal: adminRefusalReporter(logger, metrics.rejectedConnections, () => monotonicMs(clock)),
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
    await gen.warmUp;
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

  /** Points every listener at `next` (and its config); on a throw, puts back the ones already moved. */
  const applyListeners = (from: Generation, next: Generation): void => {
    const moved: Listener[] = [];
    try {
      for (const l of listeners) {
        l.update(runtimeOf(next));
        moved.push(l);
      }
    } catch (err) {
      for (const l of moved) {
        try {
          l.update(runtimeOf(from));
        } catch {
          /* the old material was accepted before: nothing better to do than keep going */
        }
      }
      throw err;
    }
  };

  const doReload = async (next: RuntimeConfig): Promise<ReloadResult> => {
    const from = gen;
    let built: Generation | undefined;
    try {
      if (closing) return refused([{ keyPath: '', message: 'the gateway is shutting down' }]);
      const needs = restartNeeded(from.config, next);
      if (needs.length > 0) return refused(needs);
      built = buildGeneration(next, shared, from);
      await built.warmUp;
      if (closing) throw new Error('the gateway started shutting down during the reload');
      applyListeners(from, built);
    } catch (err) {
      // The new generation never served: close what it made, give the old providers their metrics back.
      if (built !== undefined) void retire(built, [from, ...retiring.values()]);
      metrics.bindAuthProviders(from.authenticators);
      return refused([{ keyPath: '', message: err instanceof Error ? err.message : String(err) }]);
    }
    // From here the new config serves: what follows is bookkeeping and must not undo the swap.
    gen = built;
    // Requests already running hold the old handler, pools and providers: they get the grace period.
    const timer = setTimeout(() => {
      retiring.delete(timer);
      void retire(from, [gen, ...retiring.values()]);
    }, next.timeouts.shutdownGraceMs);
    timer.unref();
    retiring.set(timer, from);
    metrics.configReloads.inc({ result: 'success' });
    metrics.configLastReloadSuccess.set(clock.now() / 1000);
    try {
      closeNewlyRevoked(from.config, next);
      if (next.log.level !== from.config.log.level) logger.level = next.log.level;
      metrics.certificateExpiry.reset();
      metrics.crlNextUpdate.reset();
      metrics.certificateNameMismatch.reset();
      setCertificateGauges(next, metrics);
      for (const w of next.warnings) logger.warn(w);
      if (tlsMaterialDigest(from.config.admin.tls) !== tlsMaterialDigest(next.admin.tls))
        logger.warn(
          { keyPath: 'admin.tls' },
          'the admin listener keeps serving its TLS material from before the reload until a restart',
        );
      if (storeMaterial(from.config.store) !== storeMaterial(next.store))
        logger.warn(
          { keyPath: 'store' },
          'the store keeps the Redis password and TLS material it connected with until a restart',
        );
      logger.info({ source: next.source, listeners: next.listeners.length }, 'config reloaded');
      for (const why of notReady())
        logger.warn({ reason: why }, 'not ready: requests on routes that need it get 503');
    } catch (err) {
      logger.error({ err }, 'config reloaded, but updating the log level or certificate gauges failed');
    }
    return { ok: true };
  };

  /**
   * A TLS session is verified once, at its handshake: the open connections of a client the new CRL revokes
   * would outlive the revocation. Each listener closes those whose certificate serial the new CRL lists and
   * the old one did not (the ones listed before could not connect).
   */
  const closeNewlyRevoked = (before: RuntimeConfig, after: RuntimeConfig): void => {
    after.listeners.forEach((l, i) => {
      const now = l.tls?.revokedSerials ?? [];
      if (now.length === 0) return;
      const was = new Set(before.listeners[i]?.tls?.revokedSerials ?? []);
      const added = new Set(now.filter((s) => !was.has(s)));
      if (added.size === 0) return;
      const closed = listeners[i]?.closeRevoked(added) ?? 0;
      logger.info(
        { listener: l.name, newlyRevoked: added.size, closed },
        'new CRL applied to open connections',
      );
    });
  };

  const refused = (errors: readonly ReloadError[]): ReloadResult => {
    metrics.configReloads.inc({ result: 'failure' });
    for (const e of errors)
      logger.error(
        { keyPath: e.keyPath, reason: e.message },
        'config reload refused: the running config keeps serving',
      );
    return { ok: false, errors };
  };

  let queue: Promise<unknown> = Promise.resolve();

  return {
    get config() {
      return gen.config;
    },
    logger,
    metrics,
    registry,
    get authenticators() {
      return gen.authenticators;
    },
    purgeTokenCache,
    notReady,
    port(name: string): number {
      const l = listeners.find((x) => x.name === name);
      if (!l) throw new Error(`no listener named ${name}`);
      return l.address().port;
    },
    adminPort: () => admin?.address().port,
    reload(next: RuntimeConfig): Promise<ReloadResult> {
      // One reload at a time, in order; an unexpected rejection is a refusal and never blocks the next one.
      const result = queue
        .then(() => doReload(next))
        .catch((err: unknown) =>
          refused([{ keyPath: '', message: err instanceof Error ? err.message : String(err) }]),
        );
      queue = result.catch(() => undefined);
      return result;
    },
    close: (graceMs = gen.config.timeouts.shutdownGraceMs) => closeAll(graceMs),
  };
}

/** Options of {@link reloadFromFile}. */
export interface ReloadFromFileDeps {
  /** Loads and validates the file. Default: load-config.ts `loadConfigFile`. */
  readonly load?: (file: string) => RuntimeConfig;
  /** Turns the loaded config into the one this process runs (a cluster worker's `workerConfig`). */
  readonly prepare?: (config: RuntimeConfig) => RuntimeConfig;
}

/**
 * What SIGHUP does: loads `file` again and hands it to {@link App.reload}. A file that does not load
 * (YAML, schema, a missing or expired certificate, ...) is a refused reload: counted as a failure, each
 * error logged at error with its key path, value and expectation, and the running config keeps serving.
 * Never rejects.
 */
export async function reloadFromFile(
  app: App,
  file: string,
  deps: ReloadFromFileDeps = {},
): Promise<ReloadResult> {
  let next: RuntimeConfig;
  try {
    next = (deps.load ?? loadConfigFile)(file);
    if (deps.prepare) next = deps.prepare(next);
  } catch (err) {
    const errors: ReloadError[] =
      err instanceof ConfigInvalid
        ? err.errors.map((e) => ({ keyPath: e.path, message: e.message }))
        : err instanceof ConfigError
          ? [{ keyPath: err.path, message: err.message }]
          : [{ keyPath: '', message: err instanceof Error ? err.message : String(err) }];
    app.metrics.configReloads.inc({ result: 'failure' });
    for (const e of errors)
      app.logger.error(
        { keyPath: e.keyPath, reason: e.message, source: file },
        'config reload refused: invalid config, the running config keeps serving',
      );
    return { ok: false, errors };
  }
  return app.reload(next);
}

/**
 * Sets the certificate expiry, CRL nextUpdate and certificate name mismatch gauges from the loaded config (at
 * start and at each reload). Labels are the listener name, the certificate's kind and its position in its PEM
 * bundle (a CRL's position in its file): never a subject or a path.
 */
function setCertificateGauges(config: RuntimeConfig, metrics: Metrics): void {
  // The admin listener's own TLS material is labelled listener="admin" (load.ts keeps that name free).
  // Not gated on admin.enabled: a cluster worker runs with admin disabled while its primary serves it.
  const adminTls = config.admin.tls;
  const sources = [
    ...config.listeners,
    ...(adminTls ? [{ name: 'admin', tls: adminTls, upstreamCertificates: undefined }] : []),
  ];
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
    for (const crl of l.tls?.crls ?? [])
      if (crl.nextUpdateMs !== undefined)
        metrics.crlNextUpdate.labels(l.name, String(crl.index)).set(crl.nextUpdateMs / 1000);
    if (l.tls !== undefined)
      metrics.certificateNameMismatch.labels(l.name).set(l.tls.serverNameMismatch === true ? 1 : 0);
  }
}
