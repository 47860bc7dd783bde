/**
 * The in-memory store (the default): one process, bounded. At most `maxEntries` keys (sets count as one);
 * past it the least recently used key goes first: for a session that is a logout, never a pass. Lifetimes are
 * measured on the monotonic clock, so a wall clock stepped back never keeps a value alive longer.
 */
import { LRUCache } from 'lru-cache';
import { monotonicMs, type Clock } from '../clock.js';
import type { InvalidationChannel, KeyValueStore, Store } from './store.js';

/** Keys the memory store holds at most by default: 100,000 (a session is about 2 KB: ~200 MB worst case). */
export const DEFAULT_MAX_ENTRIES = 100_000;

type Entry = { readonly value: string; readonly until: number } | { readonly set: Set<string>; until: number };

/** Options of {@link createMemoryStore}. */
export interface MemoryStoreOptions {
  readonly maxEntries?: number;
}

/** Creates an in-memory {@link KeyValueStore}. */
export function createMemoryStore(opts: MemoryStoreOptions, deps: { readonly clock: Pick<Clock, 'hrtime'> }): KeyValueStore {
  const cache = new LRUCache<string, Entry>({ max: opts.maxEntries ?? DEFAULT_MAX_ENTRIES });
  const now = (): number => monotonicMs(deps.clock);
  const live = (key: string): Entry | undefined => {
    const e = cache.get(key);
    if (e === undefined) return undefined;
    if (e.until <= now()) {
      cache.delete(key);
      return undefined;
    }
    return e;
  };
  return {
    get(key) {
      const e = live(key);
      return Promise.resolve(e !== undefined && 'value' in e ? e.value : undefined);
    },
    getMany(keys) {
      return Promise.resolve(
        keys.map((key) => {
          const e = live(key);
          return e !== undefined && 'value' in e ? e.value : undefined;
        }),
      );
    },
    set(key, value, ttlMs) {
      cache.set(key, { value, until: now() + ttlMs });
      return Promise.resolve();
    },
    add(key, value, ttlMs) {
      if (live(key) !== undefined) return Promise.resolve(false);
      cache.set(key, { value, until: now() + ttlMs });
      return Promise.resolve(true);
    },
    delete(key) {
      const had = live(key) !== undefined;
      cache.delete(key);
      return Promise.resolve(had);
    },
    deleteIfEquals(key, value) {
      const e = live(key);
      if (e === undefined || !('value' in e) || e.value !== value) return Promise.resolve(false);
      cache.delete(key);
      return Promise.resolve(true);
    },
    addToSet(key, member, ttlMs) {
      const e = live(key);
      const until = now() + ttlMs;
      if (e !== undefined && 'set' in e) {
        e.set.add(member);
        e.until = Math.max(e.until, until);
      } else cache.set(key, { set: new Set([member]), until });
      return Promise.resolve();
    },
    members(key) {
      const e = live(key);
      return Promise.resolve(e !== undefined && 'set' in e ? [...e.set] : []);
    },
    count(prefix) {
      let n = 0;
      const t = now();
      for (const [key, e] of cache.entries()) if (e.until > t && key.startsWith(prefix)) n++;
      return Promise.resolve(n);
    },
  };
}

/**
 * The invalidation channel of one process: a message reaches this process's subscribers, synchronously, and
 * nobody else (cluster workers hear of a purge through the primary, cluster/). Never disconnected.
 */
export function createLocalChannel(): InvalidationChannel {
  const listeners = new Set<{ readonly onMessage: (message: string) => void; readonly onReset: () => void }>();
  return {
    publish(message) {
      for (const l of listeners) l.onMessage(message);
      return Promise.resolve();
    },
    subscribe(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    connected: () => true,
  };
}

/** The default {@link Store}: a memory store and a local channel; always healthy. */
export function createMemoryBackedStore(opts: MemoryStoreOptions, deps: { readonly clock: Pick<Clock, 'hrtime'> }): Store {
  return {
    type: 'memory',
    kv: createMemoryStore(opts, deps),
    channel: createLocalChannel(),
    health: { problem: () => undefined },
    close: () => Promise.resolve(),
  };
}
