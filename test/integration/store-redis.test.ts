/**
 * The Redis store against a real `redis-server` (Debian's), started per suite on a free loopback port: the
 * KeyValueStore contract with Redis's own lifetimes, the key prefix, TLS with a client certificate and AUTH from
 * a file, the invalidation channel between two stores, and the faults — Redis killed and restarted, stalled
 * (SIGSTOP/SIGCONT) — where every command must refuse within its timeout (never hang, never pass) and service
 * must resume without a new store.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfigText } from '../../src/load-config.js';
import type { RedisStoreRuntime } from '../../src/config/store.js';
import { createRedisStore, type StoreFailureReason } from '../../src/store/redis.js';
import type { Store } from '../../src/store/store.js';
import { writePki, type TestPkiPaths } from '../helpers/pki.js';
import { redisMissing, startRedis, type TestRedis } from '../helpers/redis.js';
import { reloadGateway, startGateway, tlsListener } from '../helpers/gateway.js';
import { stringify } from 'yaml';

const missing = redisMissing('test/integration/store-redis.test.ts');

let dir: string;
let pki: TestPkiPaths;

/** The runtime store config of a `store` block, through the real loader. */
function storeConfig(store: Record<string, unknown>): RedisStoreRuntime {
  const text = stringify({
    admin: { enabled: false },
    store,
    listeners: [
      {
        name: 'web',
        listen: '127.0.0.1:0',
        tls: { cert: pki.server.cert, key: pki.server.key, clientCertificate: 'none' },
        routes: [{ id: 'echo', match: { pathPrefix: '/' }, upstream: 'builtin:echo' }],
      },
    ],
  });
  const c = loadConfigText(text, join(dir, 'portcullis.yaml')).store;
  if (c.type !== 'redis') throw new Error('not a redis store');
  return c;
}

async function until(cond: () => boolean | Promise<boolean>, ms = 5_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** How long `p` takes to settle, and whether it rejected. */
async function timed(p: Promise<unknown>): Promise<{ ms: number; rejected: boolean }> {
  const t0 = performance.now();
  try {
    await p;
    return { ms: performance.now() - t0, rejected: false };
  } catch {
    return { ms: performance.now() - t0, rejected: true };
  }
}

describe.skipIf(missing !== undefined)('Redis store on a real redis-server', () => {
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'portcullis-store-'));
    pki = await writePki(join(dir, 'pki'));
  });
  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  describe('plaintext on loopback', () => {
    let redis: TestRedis;
    let store: Store;
    const failures: StoreFailureReason[] = [];
    beforeAll(async () => {
      redis = await startRedis();
      store = createRedisStore(storeConfig({ type: 'redis', url: redis.url, keyPrefix: 'pt:', commandTimeoutMs: 300 }), {
        onFailure: (r) => failures.push(r),
      });
      await until(() => store.health.problem() === undefined);
    });
    afterAll(async () => {
      await store?.close();
      await redis?.close();
    });

    it('keeps the KeyValueStore contract: set/get, one-time add, delete, deleteIfEquals, sets, count', async () => {
      const kv = store.kv;
      await kv.set('session:a:1', 'one', 10_000);
      expect(await kv.get('session:a:1')).toBe('one');
      expect(await kv.get('session:a:none')).toBeUndefined();
      expect(await kv.add('jti:x', '1', 10_000)).toBe(true);
      expect(await kv.add('jti:x', '1', 10_000)).toBe(false);
      expect(await kv.deleteIfEquals('jti:x', 'other')).toBe(false);
      expect(await kv.deleteIfEquals('jti:x', '1')).toBe(true);
      expect(await kv.delete('jti:x')).toBe(false);
      await kv.addToSet('sid:a:s1', 'h1', 10_000);
      await kv.addToSet('sid:a:s1', 'h2', 10_000);
      expect([...(await kv.members('sid:a:s1'))].sort()).toEqual(['h1', 'h2']);
      await kv.set('session:a:2', 'two', 10_000);
      expect(await kv.count('session:a:')).toBe(2);
    });

    it('writes every key under the prefix, with Redis lifetimes (nothing outlives its TTL)', async () => {
      await store.kv.set('ttl:k', 'v', 150);
      await store.kv.addToSet('ttl:set', 'm', 150);
      const raw = new Redis({ port: redis.port, host: '127.0.0.1' });
      try {
        expect(await raw.get('pt:ttl:k')).toBe('v');
        expect(await raw.get('ttl:k')).toBeNull();
        const ttl = await raw.pttl('pt:ttl:set');
        expect(ttl).toBeGreaterThan(0);
        expect(ttl).toBeLessThanOrEqual(150);
        await new Promise((r) => setTimeout(r, 250));
        expect(await store.kv.get('ttl:k')).toBeUndefined();
        expect(await store.kv.members('ttl:set')).toEqual([]);
      } finally {
        raw.disconnect();
      }
    });

    it('delivers an invalidation to every store on the channel within 1 s, and resets them when the channel was lost', async () => {
      const other = createRedisStore(storeConfig({ type: 'redis', url: redis.url, keyPrefix: 'pt:' }));
      try {
        const got: string[] = [];
        let resets = 0;
        other.channel.subscribe({ onMessage: (m) => got.push(m), onReset: () => resets++ });
        await until(() => other.channel.connected());
        const t0 = performance.now();
        await store.channel.publish('purge:*');
        await until(() => got.includes('purge:*'), 1_000);
        expect(performance.now() - t0).toBeLessThan(1_000);
        const before = resets;
        await redis.kill();
        await until(() => !other.channel.connected());
        expect(resets).toBeGreaterThan(before);
        await redis.restart();
        await until(() => other.channel.connected(), 10_000);
        await until(() => store.health.problem() === undefined, 10_000);
        // A message after the reconnect arrives again.
        await store.channel.publish('purge:again');
        await until(() => got.includes('purge:again'), 1_000);
      } finally {
        await other.close();
      }
    });

    it('refuses at once while Redis is down and resumes when it is back, without a new store', async () => {
      await redis.kill();
      await until(() => store.health.problem() !== undefined);
      const r = await timed(store.kv.get('session:a:1'));
      expect(r.rejected).toBe(true);
      expect(r.ms).toBeLessThan(300 + 200);
      expect(failures).toContain('unavailable');
      await redis.restart();
      await until(async () => !(await timed(store.kv.set('back', '1', 1_000))).rejected, 10_000);
      expect(await store.kv.get('back')).toBe('1');
      expect(store.health.problem()).toBeUndefined();
    });

    it('refuses within commandTimeoutMs while Redis is stalled (SIGSTOP) and resumes on SIGCONT', async () => {
      await store.kv.set('stall:k', 'v', 60_000);
      redis.stall();
      try {
        const r = await timed(store.kv.get('stall:k'));
        expect(r.rejected).toBe(true);
        expect(r.ms).toBeGreaterThanOrEqual(250);
        expect(r.ms).toBeLessThan(300 + 400);
        expect(failures).toContain('timeout');
        expect(store.health.problem()).toMatch(/timed out/);
      } finally {
        redis.resume();
      }
      await until(async () => (await store.kv.get('stall:k').catch(() => undefined)) === 'v', 5_000);
      await until(() => store.health.problem() === undefined);
    });
  });

  describe('TLS with a client certificate and AUTH from a file', () => {
    let redis: TestRedis;
    let passwordFile: string;
    beforeAll(async () => {
      passwordFile = join(dir, 'redis-password');
      await writeFile(passwordFile, 'correct horse battery\n', { mode: 0o600 });
      redis = await startRedis({ tls: pki, password: 'correct horse battery' });
    });
    afterAll(async () => {
      await redis?.close();
    });

    const tls = (): Record<string, unknown> => ({
      ca: pki.ca,
      cert: pki.clients.alice.cert,
      key: pki.clients.alice.key,
      servername: 'localhost',
    });

    it('connects over TLS with the password and works', async () => {
      const store = createRedisStore(storeConfig({ type: 'redis', url: redis.url, passwordFile, tls: tls() }));
      try {
        await until(() => store.health.problem() === undefined);
        await store.kv.set('tls:k', 'v', 5_000);
        expect(await store.kv.get('tls:k')).toBe('v');
      } finally {
        await store.close();
      }
    });

    it.each([
      ['without the password', (): Record<string, unknown> => ({ tls: tls() })],
      ['with a wrong password', (): Record<string, unknown> => ({ tls: tls(), passwordFile: pki.ca })],
      ['without a client certificate', (): Record<string, unknown> => ({ passwordFile, tls: { ca: pki.ca, servername: 'localhost' } })],
      ['trusting another CA', (): Record<string, unknown> => ({ passwordFile, tls: { ...tls(), ca: pki.otherCa } })],
    ])('refuses every command %s (never a pass) and reports the problem', async (_name, extra) => {
      const store = createRedisStore(storeConfig({ type: 'redis', url: redis.url, commandTimeoutMs: 300, ...extra() }));
      try {
        await new Promise((r) => setTimeout(r, 500));
        await expect(store.kv.get('tls:k')).rejects.toThrow(/store:/);
        expect(store.health.problem()).toBeDefined();
      } finally {
        await store.close();
      }
    });
  });

  describe('maxmemory eviction', () => {
    let redis: TestRedis;
    beforeAll(async () => {
      redis = await startRedis({ maxmemoryBytes: 4 * 1024 * 1024 });
    });
    afterAll(async () => {
      await redis?.close();
    });

    it('an evicted key reads as absent (no session), never as an error that passes', async () => {
      const store = createRedisStore(storeConfig({ type: 'redis', url: redis.url }));
      try {
        await until(() => store.health.problem() === undefined);
        // allkeys-lru is approximate (Redis samples a few keys per eviction), so which keys go is chance: the
        // test writes 10 MB into 4 MiB and reads every key back. Each one is its own value or absent, never
        // an error and never another value, and most are absent.
        const value = (i: number): string => `${String(i).padStart(5, '0')}:${'y'.repeat(10_000)}`;
        for (let i = 0; i < 1_000; i++) await store.kv.set(`session:p:${i}`, value(i), 600_000);
        let absent = 0;
        for (let i = 0; i < 1_000; i++) {
          const got = await store.kv.get(`session:p:${i}`);
          if (got === undefined) absent += 1;
          else expect(got).toBe(value(i));
        }
        expect(absent).toBeGreaterThan(500);
        expect(absent).toBeLessThan(1_000);
      } finally {
        await store.close();
      }
    });
  });

  describe('reload', () => {
    it('refuses a change of the store (restart needed), and applies a renewed password file with a warning', async () => {
      const redis = await startRedis();
      const passwordFile = join(dir, 'gw-redis-password');
      await writeFile(passwordFile, 'first\n');
      const config = (url: string) => (p: TestPkiPaths) => ({
        store: { type: 'redis', url, passwordFile },
        listeners: [tlsListener(p)],
      });
      const gw = await startGateway(config(redis.url));
      try {
        const moved = await reloadGateway(gw, config('redis://127.0.0.1:1/0'));
        expect(moved.ok).toBe(false);
        if (!moved.ok) expect(moved.errors.map((e) => e.keyPath)).toContain('store');
        await writeFile(passwordFile, 'second\n');
        expect(await reloadGateway(gw, config(redis.url))).toEqual({ ok: true });
        const warned = gw.logs().some((l) => l.msg === 'the store keeps the Redis password and TLS material it connected with until a restart');
        expect(warned).toBe(true);
      } finally {
        await gw.close();
        await redis.close();
      }
    });
  });
});
