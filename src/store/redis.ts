/**
 * The Redis store (`store.type: redis`): the {@link KeyValueStore} of every replica, on one Redis, through
 * ioredis. Keys are `<keyPrefix><caller's key>`; values carry Redis's own lifetimes (`PX`), so nothing
 * outlives its TTL even if no gateway ever reads it again.
 *
 * Never fail open (DESIGN.md "Wave 2"): no offline queue and no retried or resent commands, so a command
 * while Redis is down rejects at once; every command has a timeout (`commandTimeoutMs`), so a stalled Redis
 * (SIGSTOP, a partition that keeps the TCP connection) rejects within it too. The caller turns a rejection
 * into "no session" or a 503, never into a pass. Reconnection runs in the background forever (backoff up to
 * 2 s): when Redis returns, service resumes without a restart.
 *
 * Invalidations travel on one pub/sub channel (`<keyPrefix>invalidate`) over a second connection; when that
 * connection drops, messages may have been missed, so subscribers are told to drop every local copy
 * ({@link InvalidationChannel.onReset}), and {@link InvalidationChannel.connected} is false until it is back.
 */
import { Redis, type RedisOptions } from 'ioredis';
import type { RedisStoreRuntime } from '../config/store.js';
import type { InvalidationChannel, Store } from './store.js';

/** Why a store command failed, as a closed set (the `reason` label of `portcullis_store_failures_total`). */
export type StoreFailureReason = 'timeout' | 'unavailable' | 'error';
/** Every {@link StoreFailureReason}, for tests and dashboards that enumerate the closed set. */
export const STORE_FAILURE_REASONS: readonly StoreFailureReason[] = ['timeout', 'unavailable', 'error'];

/** Side effects of the Redis store. */
export interface RedisStoreDeps {
  /** Each failed command, by reason (metrics). */
  readonly onFailure?: (reason: StoreFailureReason) => void;
  /** Connection state changes, for the log. */
  readonly logger?: { warn(obj: object, msg: string): void; info(obj: object, msg: string): void };
}

/** Longest wait between reconnection attempts: 2 s (Redis back → service back within about that). */
const MAX_RECONNECT_DELAY_MS = 2_000;
/** How often the health is checked with a PING while nothing else runs: 1 s (readiness follows within it). */
const PING_EVERY_MS = 1_000;
/** The subscriber's command timeout: its SUBSCRIBE may wait for a connection, never a request. */
const SUBSCRIBER_TIMEOUT_MS = 10_000;
/** Keys one SCAN step asks for when counting sessions. */
const SCAN_COUNT = 1_000;

// Adds a member to a set and makes the set live at least ARGV[2] ms from now (PEXPIRE GT does not apply to
// a key without a lifetime, which a new set is).
const ADD_TO_SET = `redis.call('SADD', KEYS[1], ARGV[1])
local t = redis.call('PTTL', KEYS[1])
if t < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1`;
// Deletes KEYS[1] only while it holds ARGV[1] (a lock released by its owner).
const DELETE_IF_EQUALS = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`;

/** The ioredis options of a resolved config: TLS, AUTH, timeouts, and no queue that could delay a refusal. */
export function redisOptions(config: RedisStoreRuntime) {
  return {
    host: config.host,
    port: config.port,
    db: config.db,
    ...(config.username !== undefined ? { username: config.username } : {}),
    ...(config.password !== undefined ? { password: config.password } : {}),
    ...(config.tls !== undefined
      ? {
          tls: {
            ...(config.tls.ca !== undefined ? { ca: config.tls.ca } : {}),
            ...(config.tls.cert !== undefined ? { cert: config.tls.cert } : {}),
            ...(config.tls.key !== undefined ? { key: config.tls.key } : {}),
            ...(config.tls.servername !== undefined ? { servername: config.tls.servername } : {}),
            minVersion: 'TLSv1.2' as const,
          },
        }
      : {}),
    connectTimeout: config.connectTimeoutMs,
    commandTimeout: config.commandTimeoutMs,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    autoResendUnfulfilledCommands: false,
    retryStrategy: (times: number) => Math.min(50 * 2 ** Math.min(times, 6), MAX_RECONNECT_DELAY_MS),
    // A server-side error (LOADING, READONLY after a failover) is a failed command, never a silent retry.
    reconnectOnError: () => false,
    lazyConnect: false,
    connectionName: 'portcullis',
  } satisfies RedisOptions;
}

function reasonOf(err: unknown): StoreFailureReason {
  const message = err instanceof Error ? err.message : '';
  if (message.includes('timed out')) return 'timeout';
  if (message.includes('enableOfflineQueue') || message.includes('Connection is closed')) return 'unavailable';
  return 'error';
}

/**
 * Creates the Redis store and starts connecting (in the background: a Redis that is down at start is a store
 * that refuses until it is up, not a start failure).
 */
export function createRedisStore(config: RedisStoreRuntime, deps: RedisStoreDeps = {}): Store {
  const options = redisOptions(config);
  const client = new Redis(options);
  // The subscriber may queue its SUBSCRIBE until connected; it never carries a request's command.
  const subscriber = new Redis({ ...options, commandTimeout: SUBSCRIBER_TIMEOUT_MS, enableOfflineQueue: true, autoResubscribe: true });
  const prefix = config.keyPrefix;
  const channelName = `${prefix}invalidate`;
  let problem: string | undefined = 'not connected yet';
  let closed = false;
  let subscribed = false;

  client.on('ready', () => {
    if (problem !== undefined) deps.logger?.info({ store: config.url }, 'store: connected to Redis');
    problem = undefined;
  });
  client.on('error', (err: Error) => {
    // ioredis emits every connection error here; without a listener it would print them. Logged once per change.
    if (problem === undefined) deps.logger?.warn({ store: config.url, err: err.message }, 'store: Redis unavailable');
    problem = `redis ${config.url}: ${err.message}`;
  });
  client.on('close', () => {
    if (!closed && problem === undefined) {
      deps.logger?.warn({ store: config.url }, 'store: connection to Redis lost');
      problem = `redis ${config.url}: connection lost`;
    }
  });
  subscriber.on('error', () => undefined);

  const listeners = new Set<{ readonly onMessage: (message: string) => void; readonly onReset: () => void }>();
  const reset = (): void => {
    for (const l of listeners) l.onReset();
  };
  subscriber.on('message', (ch: string, message: string) => {
    if (ch !== channelName) return;
    for (const l of listeners) l.onMessage(message);
  });
  subscriber.on('close', () => {
    if (subscribed) reset();
    subscribed = false;
  });
  // autoResubscribe renews the subscription on reconnect; `subscribed` follows the server's confirmation.
  subscriber.on('ready', () => {
    subscriber.subscribe(channelName).then(
      () => {
        subscribed = true;
        // Messages sent while disconnected are lost: drop every local copy once more, now that we listen.
        reset();
      },
      () => undefined,
    );
  });

  /** Runs a command; a failure marks the store unhealthy, is counted, and rejects. */
  const run = async <T>(command: () => Promise<T>): Promise<T> => {
    try {
      const value = await command();
      problem = undefined;
      return value;
    } catch (err) {
      const reason = reasonOf(err);
      deps.onFailure?.(reason);
      if (reason !== 'error') problem = `redis ${config.url}: ${reason === 'timeout' ? 'command timed out' : 'unavailable'}`;
      throw new Error(`store: ${err instanceof Error ? err.message : 'failed'}`, { cause: err });
    }
  };
  const k = (key: string): string => prefix + key;
  const ttl = (ms: number): number => Math.max(1, Math.ceil(ms));

  // The health follows commands; while none run, a PING keeps it current (readiness, the metric).
  const ping = setInterval(() => {
    run(() => client.ping()).catch(() => undefined);
  }, PING_EVERY_MS);
  ping.unref();

  const channel: InvalidationChannel = {
    async publish(message) {
      await run(() => client.publish(channelName, message));
    },
    subscribe(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    connected: () => subscribed,
  };

  return {
    type: 'redis',
    kv: {
      get: (key) => run(async () => (await client.get(k(key))) ?? undefined),
      getMany: (keys) =>
        run(async () =>
          keys.length === 0 ? [] : (await client.mget(keys.map(k))).map((v) => v ?? undefined),
        ),
      set: (key, value, ttlMs) =>
        run(async () => {
          await client.set(k(key), value, 'PX', ttl(ttlMs));
        }),
      add: (key, value, ttlMs) => run(async () => (await client.set(k(key), value, 'PX', ttl(ttlMs), 'NX')) === 'OK'),
      delete: (key) => run(async () => (await client.del(k(key))) > 0),
      deleteIfEquals: (key, value) => run(async () => (await client.eval(DELETE_IF_EQUALS, 1, k(key), value)) === 1),
      addToSet: (key, member, ttlMs) =>
        run(async () => {
          await client.eval(ADD_TO_SET, 1, k(key), member, String(ttl(ttlMs)));
        }),
      members: (key) => run(() => client.smembers(k(key))),
      count: (keyPrefix) =>
        run(async () => {
          // SCAN, not KEYS: it never blocks Redis for the whole keyspace (the gauge is read at scrape time).
          let cursor = '0';
          let n = 0;
          do {
            const [next, keys] = await client.scan(cursor, 'MATCH', `${k(keyPrefix)}*`, 'COUNT', SCAN_COUNT);
            cursor = next;
            n += keys.length;
          } while (cursor !== '0');
          return n;
        }),
    },
    channel,
    health: { problem: () => problem },
    async close() {
      closed = true;
      clearInterval(ping);
      listeners.clear();
      client.disconnect();
      subscriber.disconnect();
      return Promise.resolve();
    },
  };
}
