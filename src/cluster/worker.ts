/**
 * A cluster worker: one of the `workers` processes of a primary (cluster/primary.ts). It serves the data
 * listeners — the listening sockets are the primary's, shared through node:cluster — with the TLS ticket
 * keys the primary gave it, never binds the admin port (the primary serves it), and answers the primary's
 * questions (metrics, readiness, token-cache purge) over the IPC channel.
 */
import type { App, AppDeps } from '../app.js';
import type { RuntimeConfig } from '../config/runtime.js';
import type { Logger } from '../observability/logger.js';
import { parseToWorker, type AskMessage, type InitMessage, type ToPrimary } from './messages.js';

/** The worker's end of the IPC channel (the `process` of a forked worker, or a fake in tests). */
export interface WorkerChannel {
  /** Sends a message to the primary; resolves once it is written (so the worker may exit after it). */
  send(message: ToPrimary): Promise<void>;
  /** Subscribes to every message from the primary. */
  onMessage(listener: (message: unknown) => void): void;
}

export interface WorkerDeps {
  readonly channel: WorkerChannel;
  /** Starts the gateway (app.ts `startApp`). */
  readonly startApp: (config: RuntimeConfig, deps: AppDeps) => Promise<App>;
  /** Creates the process logger at the configured level; the worker adds `worker: <slot>` to every line. */
  readonly createLogger: (level: string) => Logger;
  /** How long to wait for the primary's init message, in ms. Default 10 s. */
  readonly initTimeoutMs?: number;
}

/** The key of a worker's 48-byte TLS ticket keys: what `tls.Server#setTicketKeys` takes. */
export const TICKET_KEYS_BYTES = 48;

/**
 * The config a worker runs: the loaded one with the admin listener disabled (the primary serves admin for
 * the whole cluster). A new frozen object: the loaded {@link RuntimeConfig} is never mutated.
 */
export function workerConfig(config: RuntimeConfig): RuntimeConfig {
  // The primary already logged the config's warnings once for the whole cluster.
  return Object.freeze({
    ...config,
    admin: Object.freeze({ ...config.admin, enabled: false }),
    warnings: [],
  });
}

/** Waits for the primary's init message, asking for it first (a message sent before a listener exists is lost). */
function awaitInit(channel: WorkerChannel, timeoutMs: number): Promise<InitMessage> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`no init message from the cluster primary within ${timeoutMs} ms`)),
      timeoutMs,
    );
    channel.onMessage((raw) => {
      const m = parseToWorker(raw);
      if (m?.type !== 'portcullis:init') return;
      clearTimeout(timer);
      resolve(m);
    });
    channel.send({ type: 'portcullis:hello' }).catch((err: unknown) => {
      clearTimeout(timer);
      reject(err instanceof Error ? err : new Error(String(err)));
    });
  });
}

/** Answers one question of the primary from the running app. */
async function answer(app: App, ask: AskMessage): Promise<unknown> {
  switch (ask.q) {
    case 'metrics':
      return app.registry.getMetricsAsJSON();
    case 'notReady':
      return [...app.notReady()];
    case 'purge': {
      const purged = app.purgeTokenCache(ask.sha256);
      app.logger.info(
        { purged, ...(ask.sha256 !== undefined ? { tokenHash: ask.sha256.slice(0, 12) } : { all: true }) },
        'token cache purged',
      );
      return purged;
    }
  }
}

/**
 * Starts this process as a cluster worker: gets its slot and the ticket keys from the primary, starts the
 * app with {@link workerConfig}, then tells the primary it serves. Rejects as `startApp` does (a bind
 * failure is a ConfigError); the caller reports the failure to the primary and exits.
 */
export async function startClusterWorker(config: RuntimeConfig, deps: WorkerDeps): Promise<App> {
  const { channel } = deps;
  const init = await awaitInit(channel, deps.initTimeoutMs ?? 10_000);
  const ticketKeys = Buffer.from(init.ticketKeys, 'base64');
  if (ticketKeys.length !== TICKET_KEYS_BYTES)
    throw new Error(
      `the cluster primary sent ${ticketKeys.length} bytes of TLS ticket keys, not ${TICKET_KEYS_BYTES}`,
    );
  const logger = deps.createLogger(config.log.level).child({ worker: init.slot });
  const app = await deps.startApp(workerConfig(config), { logger, ticketKeys });
  channel.onMessage((raw) => {
    const m = parseToWorker(raw);
    if (m?.type !== 'portcullis:ask') return;
    answer(app, m)
      .then(
        (value) => channel.send({ type: 'portcullis:answer', id: m.id, value }),
        (err: unknown) =>
          channel.send({
            type: 'portcullis:answer',
            id: m.id,
            error: err instanceof Error ? err.message : String(err),
          }),
      )
      .catch(() => undefined); // the channel closed: the primary is gone and this worker exits with it
  });
  await channel.send({ type: 'portcullis:started' });
  return app;
}
