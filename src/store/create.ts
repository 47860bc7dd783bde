/**
 * The store a config asks for: `store.type: redis` (shared by every replica, store/redis.ts) or the memory
 * default (this process). The only module that picks between them.
 */
import type { Clock } from '../clock.js';
import type { StoreRuntimeConfig } from '../config/store.js';
import { createMemoryBackedStore } from './memory.js';
import { createRedisStore, type RedisStoreDeps } from './redis.js';
import type { Store } from './store.js';

/** Creates the configured store. A Redis store connects in the background (it refuses until connected). */
export function createStore(
  config: StoreRuntimeConfig,
  deps: RedisStoreDeps & { readonly clock: Pick<Clock, 'hrtime'> },
): Store {
  return config.type === 'redis' ? createRedisStore(config, deps) : createMemoryBackedStore({}, deps);
}
