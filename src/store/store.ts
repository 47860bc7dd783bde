/**
 * The store: where state that outlives one request is kept (browser sessions, pre-login records, replayed
 * `jti`s), behind one small interface so that the in-memory default and a shared store (Redis, a later issue)
 * are interchangeable.
 *
 * Contract (DESIGN.md "Wave 2": the store never fails open): every value has a lifetime and is gone after it;
 * a read that fails rejects, and the caller treats that as "nothing there" (no session), never as a pass.
 * Keys are chosen by the caller and never hold a secret: a session is stored under the SHA-256 of its id.
 */

/** A key-value store with lifetimes, one-time inserts and small sets (indexes). */
export interface KeyValueStore {
  /** The value under `key`, or undefined when there is none or its lifetime ended. */
  get(key: string): Promise<string | undefined>;
  /** Stores `value` under `key` for `ttlMs` (replacing any value and lifetime). */
  set(key: string, value: string, ttlMs: number): Promise<void>;
  /** Stores `value` only when `key` holds nothing: true when it did (a `jti` seen for the first time). */
  add(key: string, value: string, ttlMs: number): Promise<boolean>;
  /** Removes `key`: true when it held a value. */
  delete(key: string): Promise<boolean>;
  /** Adds `member` to the set under `key`; the set lives at least `ttlMs` from now. */
  addToSet(key: string, member: string, ttlMs: number): Promise<void>;
  /** The members of the set under `key` (empty when none). */
  members(key: string): Promise<readonly string[]>;
  /** How many live values have keys starting with `prefix` (for the active-sessions gauge). */
  count(prefix: string): Promise<number>;
}
