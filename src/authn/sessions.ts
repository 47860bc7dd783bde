/**
 * Browser sessions: records in the store (store/store.ts) under the SHA-256 of the cookie's id, with an idle
 * and an absolute timeout, and an index by OpenID `sid` and `sub` so that a back-channel logout ends every
 * session of a person at once.
 *
 * Times are wall-clock epoch ms (a shared store is read by other processes, which share no monotonic clock);
 * the store's own lifetime (min(idle, absolute − now)) bounds a record even if nobody reads it again.
 * Fail closed: a record that cannot be read or parsed is no session.
 */
import type { Clock } from '../clock.js';
import type { KeyValueStore } from '../store/store.js';

/** One session, as stored. Holds tokens: never logged, never given to anything but the provider that made it. */
export interface SessionRecord {
  readonly v: 1;
  /** Where the session may be used: the listener name and the origin the cookie was set for. */
  readonly listener: string;
  readonly origin: string;
  readonly sub: string;
  readonly sid: string | undefined;
  /** The verified ID token's claims (groups, email, ...): what route policies read. */
  readonly claims: Readonly<Record<string, unknown>>;
  readonly scopes: readonly string[];
  readonly accessToken: string | undefined;
  /** Epoch ms when the access token expires; undefined when the IdP did not say. */
  readonly accessExpiresAtMs: number | undefined;
  readonly refreshToken: string | undefined;
  /** The raw ID token, for `id_token_hint` at logout. */
  readonly idToken: string | undefined;
  readonly createdAtMs: number;
  readonly lastSeenAtMs: number;
  readonly absoluteExpiresAtMs: number;
}

/** Timeouts of the sessions of one provider. */
export interface SessionTimeouts {
  readonly idleMs: number;
  readonly absoluteMs: number;
}

/** A record is written back on use at most this often: 60 s (the idle timeout is not finer than a minute). */
const TOUCH_EVERY_MS = 60_000;

/** The sessions of one provider in a store. */
export interface SessionStore {
  /** Stores a new session under `hash` (the SHA-256 hex of its cookie id). */
  create(hash: string, record: SessionRecord): Promise<void>;
  /**
   * The live session under `hash`, its last use moved to now; undefined (and removed) when it is absent,
   * unreadable, idle too long or past its absolute timeout. `ended` says which timeout removed it.
   */
  use(hash: string): Promise<{ readonly record?: SessionRecord; readonly ended?: 'idle' | 'absolute' }>;
  /** Replaces the record of a live session (a refresh). */
  save(hash: string, record: SessionRecord): Promise<void>;
  /** Ends one session: true when it existed. */
  end(hash: string): Promise<boolean>;
  /** Ends every session with this `sid` (or, when `sid` is undefined, this `sub`): how many ended. */
  endAll(by: { readonly sid?: string | undefined; readonly sub?: string | undefined }): Promise<number>;
  /** Live sessions now (the active-sessions gauge). */
  count(): Promise<number>;
}

/** Creates the session store of provider `name` on `store`. Keys: `session:<name>:<hash>`, `sid:`, `sub:`. */
export function createSessionStore(
  name: string,
  store: KeyValueStore,
  timeouts: SessionTimeouts,
  clock: Pick<Clock, 'now'>,
): SessionStore {
  const key = (hash: string): string => `session:${name}:${hash}`;
  const sidKey = (sid: string): string => `sid:${name}:${sid}`;
  const subKey = (sub: string): string => `sub:${name}:${sub}`;
  const ttl = (r: SessionRecord, now: number): number =>
    Math.max(1, Math.min(timeouts.idleMs, r.absoluteExpiresAtMs - now));

  const write = async (hash: string, r: SessionRecord): Promise<void> => {
    await store.set(key(hash), JSON.stringify(r), ttl(r, clock.now()));
  };

  return {
    async create(hash, r) {
      await write(hash, r);
      const life = r.absoluteExpiresAtMs - clock.now();
      if (r.sid !== undefined) await store.addToSet(sidKey(r.sid), hash, life);
      await store.addToSet(subKey(r.sub), hash, life);
    },
    async use(hash) {
      const text = await store.get(key(hash));
      if (text === undefined) return {};
      let r: SessionRecord;
      try {
        r = JSON.parse(text) as SessionRecord;
      } catch {
        await store.delete(key(hash));
        return {};
      }
      if (r.v !== 1 || typeof r.sub !== 'string' || typeof r.lastSeenAtMs !== 'number') {
        await store.delete(key(hash));
        return {};
      }
      const now = clock.now();
      const ended =
        now >= r.absoluteExpiresAtMs ? 'absolute' : now - r.lastSeenAtMs >= timeouts.idleMs ? 'idle' : undefined;
      if (ended !== undefined) {
        await store.delete(key(hash));
        return { ended };
      }
      if (now - r.lastSeenAtMs >= TOUCH_EVERY_MS) {
        r = { ...r, lastSeenAtMs: now };
        await write(hash, r);
      }
      return { record: r };
    },
    save: write,
    end: (hash) => store.delete(key(hash)),
    async endAll(by) {
      const index = by.sid !== undefined ? sidKey(by.sid) : by.sub !== undefined ? subKey(by.sub) : undefined;
      if (index === undefined) return 0;
      let n = 0;
      for (const hash of await store.members(index)) if (await store.delete(key(hash))) n++;
      await store.delete(index);
      return n;
    },
    count: () => store.count(`session:${name}:`),
  };
}
