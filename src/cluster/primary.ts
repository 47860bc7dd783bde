/**
 * The cluster primary of `workers: N | auto`: forks N worker processes running the same entry with the
 * same config path (cluster/worker.ts), hands each the TLS session ticket keys over the IPC channel (so a
 * client resumes its session whichever worker answers), serves the admin listener for the whole cluster
 * (metrics summed over every worker, readiness = every worker serving and ready, purge broadcast), restarts
 * a worker that dies (bounded: cluster/policy.ts), forwards SIGHUP, and drains every worker on stop.
 *
 * The primary serves no data traffic itself. With node:cluster's round-robin scheduling (the default
 * here) it accepts the connections and passes each to a worker in turn; the workers do all TLS and HTTP.
 */
import type { Worker } from 'node:cluster';
import { Counter, Gauge, Registry } from 'prom-client';
import { adminRefusalReporter, type AdminDeps } from '../admin/server.js';
import type { Listener } from '../listener/listener.js';
import { systemClock, type Clock } from '../clock.js';
import type { RuntimeConfig } from '../config/runtime.js';
import type { Logger } from '../observability/logger.js';
import {
  collectProcessMetrics,
  createBuildInfo,
  createRejectedConnectionsCounter,
} from '../observability/metrics.js';
import { parseToPrimary, type Question } from './messages.js';
import { aggregateMetrics, type MetricsJson } from './metrics.js';
import { createRestartBudget, RESTART_DEFAULTS, type RestartBudgetConfig } from './policy.js';
import { TICKET_KEYS_BYTES } from './worker.js';
import {
  startTicketKeyRotation,
  TICKET_KEY_ROTATION_MS,
  currentTicketKeys,
  type TicketKeyRotation,
} from '../listener/ticket-keys.js';

export interface PrimaryDeps {
  readonly logger: Logger;
  /** Forks one worker process (node:cluster `fork`, scheduling policy already set). */
  readonly fork: () => Worker;
  /** Starts the admin server for the cluster (admin/server.ts `startAdminServer` on `config.admin`). */
  readonly startAdmin: (config: RuntimeConfig, deps: AdminDeps) => Promise<Listener>;
  /** Source of the TLS ticket keys (crypto.randomBytes). */
  readonly randomBytes: (size: number) => Buffer;
  readonly clock?: Clock;
  readonly restart?: RestartBudgetConfig;
  /** How long a worker has to answer a metrics / readiness / purge question, in ms. Default 2 s. */
  readonly askTimeoutMs?: number;
  /** How long workers may take to drain after SIGTERM before they are killed, in ms. Default: shutdownGraceMs + 5 s. */
  readonly stopTimeoutMs?: number;
}

/** The cluster could not start: a worker failed (its reason and exit code), or the admin listener did. */
export class ClusterStartFailed extends Error {
  constructor(
    readonly exitCode: number,
    message: string,
  ) {
    super(message);
    this.name = 'ClusterStartFailed';
  }
}

/** A running cluster primary. */
export interface ClusterPrimary {
  /** The primary's own metrics (process metrics, worker count, restarts), also part of `/metrics`. */
  readonly registry: Registry;
  /** Bound port of the admin listener, when enabled. */
  adminPort(): number | undefined;
  /** Pids of the worker processes serving now, by slot (1..N); a slot being restarted is absent. */
  workerPids(): ReadonlyMap<number, number>;
  /** Sends `signal` to every live worker (SIGHUP: each worker reloads as a single process would). */
  forward(signal: NodeJS.Signals): void;
  /**
   * Drains: every worker gets SIGTERM (it stops accepting, finishes in-flight requests, exits), stragglers
   * are killed after the stop timeout, then the admin listener closes. Idempotent; resolves with the exit
   * code the process should end with (0, or 1 when the cluster stopped because workers kept dying).
   */
  stop(): Promise<number>;
  /** Resolves once the cluster has stopped, whoever stopped it (a signal, or the restart budget), with the exit code. */
  readonly done: Promise<number>;
}

interface Slot {
  readonly n: number;
  worker: Worker | undefined;
  /** The current worker said `started` (its listeners are bound). */
  started: boolean;
  restartTimer: NodeJS.Timeout | undefined;
}

interface Pending {
  readonly slot: Slot;
  readonly resolve: (value: unknown) => void;
  readonly reject: (err: Error) => void;
  readonly timer: NodeJS.Timeout;
}

/**
 * Starts the primary of `count` workers and waits until every worker serves, then binds the admin
 * listener. Rejects with {@link ClusterStartFailed} when a worker fails to start (after stopping the
 * others; its exit code — 3 for a config or bind error — is the one to exit with), or with the admin
 * server's ConfigError when the admin port cannot be bound.
 */
export async function startClusterPrimary(
  config: RuntimeConfig,
  count: number,
  deps: PrimaryDeps,
): Promise<ClusterPrimary> {
  const { logger } = deps;
  const clock = deps.clock ?? systemClock;
  const askTimeoutMs = deps.askTimeoutMs ?? 2_000;
  const stopTimeoutMs = deps.stopTimeoutMs ?? config.timeouts.shutdownGraceMs + 5_000;
  const budget = createRestartBudget(deps.restart ?? RESTART_DEFAULTS, { clock });
  // 48 bytes: 16 of key name, 16 of HMAC secret, 16 of AES key (tls.Server#setTicketKeys). Made once per
  // primary: a restarted worker gets the same keys, so sessions survive worker restarts too.
  const ticketSecret = deps.randomBytes(TICKET_KEYS_BYTES);
  const ticketKeys = ticketSecret.toString('base64');
  /** The admin listener's ticket keys now: derived like a worker's (listener/ticket-keys.ts), rotated hourly. */
  const adminTicketKeys = (): Buffer =>
    currentTicketKeys(ticketSecret, config.admin.tls, clock.now(), TICKET_KEY_ROTATION_MS);
  let adminRotation: TicketKeyRotation | undefined;

  const registry = new Registry();
  collectProcessMetrics(registry);
  createBuildInfo(registry);
  const slots: Slot[] = Array.from({ length: count }, (_, i) => ({
    n: i + 1,
    worker: undefined,
    started: false,
    restartTimer: undefined,
  }));
  new Gauge({
    name: 'portcullis_cluster_workers',
    help: 'Worker processes serving now (workers > 1: the primary answers the admin listener for all of them).',
    registers: [registry],
    collect() {
      this.set(slots.filter((s) => s.started).length);
    },
  });
  const restarts = new Counter({
    name: 'portcullis_cluster_worker_restarts_total',
    help: 'Worker processes restarted after an unexpected exit.',
    registers: [registry],
  });

  const pending = new Map<number, Pending>();
  let nextId = 1;
  let stopping = false;
  let exitCode = 0;
  let admin: Listener | undefined;
  let killTimer: NodeJS.Timeout | undefined;
  let resolveDone: (code: number) => void = () => undefined;
  const done = new Promise<number>((r) => (resolveDone = r));

  // Start-up: resolved when every slot has started once; rejected by the first failure before that.
  let startupDone = false;
  let resolveStartup: () => void = () => undefined;
  let rejectStartup: (err: ClusterStartFailed) => void = () => undefined;
  const startup = new Promise<void>((res, rej) => {
    resolveStartup = res;
    rejectStartup = rej;
  });
  const failures = new Map<Slot, { code: number; message: string }>();

  const checkDone = (): void => {
    if (!stopping || slots.some((s) => s.worker !== undefined)) return;
    if (killTimer !== undefined) clearTimeout(killTimer);
    const closing = admin?.close() ?? Promise.resolve();
    closing.then(
      () => resolveDone(exitCode),
      () => resolveDone(exitCode),
    );
  };

  const stop = (code = 0): Promise<number> => {
    if (stopping) return done;
    stopping = true;
    exitCode = code;
    adminRotation?.stop();
    for (const s of slots) {
      if (s.restartTimer !== undefined) clearTimeout(s.restartTimer);
      s.restartTimer = undefined;
      // SIGTERM, not the IPC channel: the worker drains exactly as a single process does on SIGTERM.
      s.worker?.process.kill('SIGTERM');
    }
    killTimer = setTimeout(() => {
      for (const s of slots) {
        if (s.worker === undefined) continue;
        logger.warn({ worker: s.n, pid: s.worker.process.pid }, 'worker did not stop in time: killed');
        s.worker.process.kill('SIGKILL');
      }
    }, stopTimeoutMs);
    checkDone();
    return done;
  };

  const onExit = (slot: Slot, worker: Worker, code: number | null, signal: string | null): void => {
    if (slot.worker !== worker) return;
    slot.worker = undefined;
    const wasStarted = slot.started;
    slot.started = false;
    for (const [id, p] of pending) {
      if (p.slot !== slot) continue;
      pending.delete(id);
      clearTimeout(p.timer);
      p.reject(new Error(`worker ${slot.n} exited`));
    }
    const fields = { worker: slot.n, pid: worker.process.pid, code, signal };
    if (stopping) {
      logger.info(fields, 'worker stopped');
      checkDone();
      return;
    }
    const failure = failures.get(slot);
    failures.delete(slot);
    if (!startupDone) {
      rejectStartup(
        new ClusterStartFailed(
          failure?.code ?? (code !== null && code !== 0 ? code : 1),
          failure?.message ??
            `worker ${slot.n} exited (code ${String(code)}, signal ${String(signal)}) before it served`,
        ),
      );
      return;
    }
    logger.error(
      { ...fields, ...(failure ? { reason: failure.message } : {}), wasServing: wasStarted },
      'worker exited unexpectedly',
    );
    const decision = budget.next();
    if (!decision.restart) {
      logger.fatal(
        { worker: slot.n, restarts: decision.restartsInWindow },
        'workers keep dying: restart budget spent, stopping the gateway',
      );
      void stop(1);
      return;
    }
    logger.warn({ worker: slot.n, delayMs: decision.delayMs }, 'restarting worker');
    slot.restartTimer = setTimeout(() => {
      slot.restartTimer = undefined;
      if (stopping) return;
      restarts.inc();
      spawn(slot);
    }, decision.delayMs);
  };

  const spawn = (slot: Slot): void => {
    const worker = deps.fork();
    slot.worker = worker;
    slot.started = false;
    worker.on('message', (raw: unknown) => {
      const m = parseToPrimary(raw);
      if (m === undefined) return;
      switch (m.type) {
        case 'portcullis:hello':
          worker.send({ type: 'portcullis:init', slot: slot.n, ticketKeys });
          return;
        case 'portcullis:started':
          if (slot.worker !== worker) return;
          slot.started = true;
          logger.info({ worker: slot.n, pid: worker.process.pid }, 'worker started');
          if (!startupDone && slots.every((s) => s.started)) {
            startupDone = true;
            resolveStartup();
          }
          return;
        case 'portcullis:failed':
          failures.set(slot, { code: m.code, message: m.message });
          return;
        case 'portcullis:answer': {
          const p = pending.get(m.id);
          if (p === undefined || p.slot !== slot) return;
          pending.delete(m.id);
          clearTimeout(p.timer);
          if (m.error !== undefined) p.reject(new Error(m.error));
          else p.resolve(m.value);
          return;
        }
      }
    });
    // 'error' (e.g. a send on a closed channel) must not become an uncaught exception in the primary.
    worker.on('error', (err: Error) => logger.warn({ worker: slot.n, err }, 'worker channel error'));
    worker.on('exit', (code: number | null, signal: string | null) => onExit(slot, worker, code, signal));
  };

  const ask = (slot: Slot, question: Question): Promise<unknown> =>
    new Promise((resolve, reject) => {
      const worker = slot.worker;
      if (worker === undefined || !slot.started) {
        reject(new Error(`worker ${slot.n} not running`));
        return;
      }
      const id = nextId++;
      const timer = setTimeout(() => {
        pending.delete(id);
        reject(new Error(`worker ${slot.n} did not answer within ${askTimeoutMs} ms`));
      }, askTimeoutMs);
      pending.set(id, { slot, resolve, reject, timer });
      worker.send({ type: 'portcullis:ask', id, ...question }, (err) => {
        if (err === null) return;
        pending.delete(id);
        clearTimeout(timer);
        reject(err);
      });
    });

  const adminDeps: AdminDeps = {
    logger,
    onRefusal: adminRefusalReporter(logger, createRejectedConnectionsCounter(registry)),
    metrics: async () => {
      const answers = await Promise.all(
        // A worker not running (or not answering) is left out: its counters restart from 0 with it.
        slots
          .filter((s) => s.started)
          .map((s) =>
            ask(s, { q: 'metrics' }).then(
              (v) => (Array.isArray(v) ? (v as MetricsJson) : undefined),
              () => undefined,
            ),
          ),
      );
      const all = [
        await registry.getMetricsAsJSON(),
        ...answers.filter((a): a is MetricsJson => a !== undefined),
      ];
      const aggregated = aggregateMetrics(all);
      return { contentType: aggregated.contentType, text: await aggregated.metrics() };
    },
    notReady: async () => {
      const out = new Set<string>();
      await Promise.all(
        slots.map(async (s) => {
          if (!s.started) {
            out.add(`worker ${s.n} not running`);
            return;
          }
          try {
            const v = await ask(s, { q: 'notReady' });
            if (!Array.isArray(v)) throw new Error('bad answer');
            // Workers run the same config: their lists are mostly the same lines, listed once.
            for (const why of v) out.add(String(why));
          } catch {
            out.add(`worker ${s.n} not answering`);
          }
        }),
      );
      return [...out].sort();
    },
    purge: async (sha256) => {
      const question: Question = sha256 === undefined ? { q: 'purge' } : { q: 'purge', sha256 };
      const answers = await Promise.allSettled(slots.filter((s) => s.started).map((s) => ask(s, question)));
      let purged = 0;
      let missed = 0;
      for (const a of answers) {
        if (a.status === 'fulfilled' && typeof a.value === 'number') purged += a.value;
        else missed += 1;
      }
      // A worker that is not running has no cache; one that did not answer may still hold the token.
      if (missed > 0) logger.error({ missed }, 'token cache purge: some workers did not answer; purge again');
      logger.info(
        { purged, ...(sha256 !== undefined ? { tokenHash: sha256.slice(0, 12) } : { all: true }) },
        'token cache purged',
      );
      return purged;
    },
  };

  for (const s of slots) spawn(s);
  try {
    await startup;
  } catch (err) {
    await stop(1);
    throw err;
  }
  logger.info({ workers: count }, 'all workers serving');
  if (config.admin.enabled) {
    try {
      admin = await deps.startAdmin(config, {
        ...adminDeps,
        ...(config.admin.tls !== undefined ? { ticketKeys: adminTicketKeys() } : {}),
      });
      if (config.admin.tls !== undefined)
        adminRotation = startTicketKeyRotation({
          rotationMs: TICKET_KEY_ROTATION_MS,
          clock,
          onRotate: () => admin?.setTicketKeys(adminTicketKeys()),
          onError: (err) =>
            logger.error({ err }, 'TLS session ticket key rotation failed: the previous keys stay'),
        });
    } catch (err) {
      await stop(1);
      throw err;
    }
  }

  return {
    registry,
    adminPort: () => admin?.address().port,
    workerPids: () => {
      const pids = new Map<number, number>();
      for (const s of slots)
        if (s.started && s.worker?.process.pid !== undefined) pids.set(s.n, s.worker.process.pid);
      return pids;
    },
    forward: (signal) => {
      // Only to workers that serve: one still starting has no handler yet (SIGHUP would kill it), and it
      // reads the config file as it is now anyway.
      for (const s of slots) if (s.started) s.worker?.process.kill(signal);
    },
    stop: () => stop(0),
    done,
  };
}
