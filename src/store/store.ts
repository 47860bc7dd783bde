/**
 * The store: where state that outlives one request is kept (browser sessions, pre-login records, replayed
 * `jti`s, refresh locks, token-cache answers and revocations), behind one small interface so that the in-memory
 * default (memory.ts) and the shared Redis store (redis.ts) are interchangeable.
 *
 * Contract (DESIGN.md "Wave 2": the store never fails open): every value has a lifetime and is gone after it;
 * a read that fails rejects, and the caller treats that as "nothing there" (no session) or "unavailable" (503),
 * never as a pass. Keys are chosen by the caller and never hold a secret: a session is stored under the SHA-256
 * of its id.
 */

/** A key-value store with lifetimes, one-time inserts and small sets (indexes). */
export interface KeyValueStore {
  /** The value under `key`, or undefined when there is none or its lifetime ended. */
  get(key: string): Promise<string | undefined>;
  /** The values under `keys`, in order, in one round trip (undefined where there is none). */
  getMany(keys: readonly string[]): Promise<readonly (string | undefined)[]>;
  /** Stores `value` under `key` for `ttlMs` (replacing any value and lifetime). */
  set(key: string, value: string, ttlMs: number): Promise<void>;
  /** Stores `value` only when `key` holds nothing: true when it did (a `jti` seen for the first time, a lock taken). */
  add(key: string, value: string, ttlMs: number): Promise<boolean>;
  /** Removes `key`: true when it held a value. */
  delete(key: string): Promise<boolean>;
  /** Removes `key` only while it holds `value` (a lock released by its owner, not one taken over since). */
  deleteIfEquals(key: string, value: string): Promise<boolean>;
  /** Adds `member` to the set under `key`; the set lives at least `ttlMs` from now. */
  addToSet(key: string, member: string, ttlMs: number): Promise<void>;
  /** The members of the set under `key` (empty when none). */
  members(key: string): Promise<readonly string[]>;
  /** How many live values have keys starting with `prefix` (for the active-sessions gauge). */
  count(prefix: string): Promise<number>;
}

/**
 * Invalidation messages between the replicas that share a store: what one publishes, every one (itself
 * included) receives, at most once, with no guarantee of delivery — so a receiver treats a message as a hint to
 * drop local copies, and lifetimes stay the backstop. `onReset` is called when messages may have been missed
 * (the channel was disconnected): every local copy must go.
 */
export interface InvalidationChannel {
  publish(message: string): Promise<void>;
  subscribe(listener: { readonly onMessage: (message: string) => void; readonly onReset: () => void }): () => void;
  /** Whether messages are being received now: local copies may be trusted only while this is true. */
  connected(): boolean;
}

/** Health of a store, for the metric and `/readyz`. */
export interface StoreHealth {
  /** Undefined when the store answers; else why not (for the log and `/readyz`). */
  problem(): string | undefined;
}

/** A store as the app holds it: the values, the invalidation channel, its health and how to close it. */
export interface Store {
  readonly type: 'memory' | 'redis';
  readonly kv: KeyValueStore;
  readonly channel: InvalidationChannel;
  readonly health: StoreHealth;
  close(): Promise<void>;
}
