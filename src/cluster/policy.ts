/**
 * The pure decisions of a `workers` cluster: how many worker processes to run, and whether (and after how
 * long) a worker that died may be restarted. No I/O: the primary (cluster/primary.ts) acts on the answers.
 */
import { monotonicMs, type Clock } from '../clock.js';

/** What {@link resolveWorkerCount} reads from the machine. */
export interface WorkerCountDeps {
  /** Cores this process may use (`os.availableParallelism()`). */
  readonly availableParallelism: () => number;
}

/**
 * The number of worker processes for the `workers` setting: a number as given (the schema already
 * checked it is a positive integer), `auto` one per core the process may use (at least 1).
 * 1 means "serve in this process, no cluster".
 */
export function resolveWorkerCount(workers: number | 'auto', deps: WorkerCountDeps): number {
  if (workers !== 'auto') return workers;
  const n = Math.floor(deps.availableParallelism());
  return Number.isFinite(n) && n >= 1 ? n : 1;
}

/** Bounds on restarting workers that die unexpectedly. */
export interface RestartBudgetConfig {
  /** Restarts allowed within `windowMs`; one more means something is wrong with every start. */
  readonly maxRestarts: number;
  /** Sliding window of the count, in ms. */
  readonly windowMs: number;
  /** Delay before the first restart in a window, in ms; doubled for each further one. */
  readonly baseDelayMs: number;
  /** Longest delay before a restart, in ms. */
  readonly maxDelayMs: number;
}

/**
 * At most 5 restarts a minute (then the primary exits non-zero and its supervisor takes over: a worker
 * that dies at every start must not become a fork loop); 100 ms before the first, doubling up to 5 s,
 * so a crash caused by a request pattern does not take a core at 100 % while it lasts.
 */
export const RESTART_DEFAULTS: RestartBudgetConfig = {
  maxRestarts: 5,
  windowMs: 60_000,
  baseDelayMs: 100,
  maxDelayMs: 5_000,
};

/** The verdict on one unexpected worker exit. */
export type RestartDecision =
  | { readonly restart: true; readonly delayMs: number }
  | { readonly restart: false; readonly restartsInWindow: number };

/** Counts restarts in a sliding window and says whether the next one is allowed. */
export interface RestartBudget {
  /** Called once per unexpected exit: allowed (and the delay to wait), or the budget is spent. */
  next(): RestartDecision;
}

/**
 * A restart budget shared by every worker slot of one primary (a bug that kills all workers counts once
 * per death, not once per slot). The window runs on `deps.clock`'s monotonic reading: a wall clock stepped
 * back would keep old deaths in the window (no restarts) until it caught up.
 */
export function createRestartBudget(
  config: RestartBudgetConfig = RESTART_DEFAULTS,
  deps: { readonly clock: Pick<Clock, 'hrtime'> },
): RestartBudget {
  const restarts: number[] = [];
  return {
    next(): RestartDecision {
      const now = monotonicMs(deps.clock);
      while (restarts.length > 0 && (restarts[0] ?? 0) <= now - config.windowMs) restarts.shift();
      if (restarts.length >= config.maxRestarts) return { restart: false, restartsInWindow: restarts.length };
      const delayMs = Math.min(config.maxDelayMs, config.baseDelayMs * 2 ** restarts.length);
      restarts.push(now);
      return { restart: true, delayMs };
    },
  };
}
