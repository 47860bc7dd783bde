/**
 * The `store` section: where sessions, pre-login records, token-cache entries, revocations and refresh locks
 * live. Absent (or `type: memory`): in this process's memory, as before. `type: redis`: one Redis shared by
 * every replica (store/redis.ts), reached over TLS (`rediss://`) or, on loopback only under requireEncryption,
 * over plaintext `redis://`. The password comes from a file (never from the URL: a config file is not a secret
 * store), and every file is read here, at load, so that a missing one is a config error naming its key.
 */
import { z } from 'zod';
import { ConfigError } from '../errors.js';
import { isLoopbackHost } from '../policy/loopback.js';
import type { CompileContext } from './context.js';
import { readAt } from './files.js';

/** Defaults of `store` (type redis), each with its unit and reason. */
export const STORE_DEFAULTS = {
  /** Prefix of every key the gateway writes: several gateways (or other applications) can share one Redis. */
  keyPrefix: 'portcullis:',
  /** Longest wait for one Redis command, in ms: 500. A request waits at most this long for its session
   * before it is refused (never passed): a stalled Redis must not stall every request. */
  commandTimeoutMs: 500,
  /** Longest wait for a connection (TCP + TLS + AUTH), in ms: 2000. Reconnection goes on in the background. */
  connectTimeoutMs: 2_000,
  /** A session that cannot be read while Redis is unavailable: 503 (`service-unavailable`), so that a
   * browser is not sent through a login that cannot complete either; `no-session` treats it as logged out. */
  whenUnavailable: 'service-unavailable' as 'service-unavailable' | 'no-session',
  /** Whether an unavailable Redis makes `/readyz` fail: false, because readiness failing on every replica at
   * once takes Bearer-token routes (which need no store) down with it. Turn on when every route needs it. */
  requiredForReadiness: false,
} as const;

const nonEmpty = z.string().min(1);
const positiveMs = z
  .number({ error: 'a whole number of milliseconds, e.g. 500 (no unit suffix)' })
  .int('a whole number of milliseconds')
  .positive('a number of milliseconds > 0')
  .max(60_000, 'at most 60000 ms');

const memoryStore = z.strictObject({ type: z.literal('memory') });

const redisStore = z.strictObject({
  type: z.literal('redis'),
  url: z
    .string({ error: 'a Redis URL, e.g. rediss://redis.internal:6380/0' })
    .regex(/^rediss?:\/\//, 'a redis:// or rediss:// URL, e.g. rediss://redis.internal:6380/0'),
  /** Redis ACL user name (AUTH username password); absent: the default user. */
  username: nonEmpty.optional(),
  /** A file holding the AUTH password (one line). */
  passwordFile: nonEmpty.optional(),
  keyPrefix: z
    .string()
    .regex(/^[A-Za-z0-9:._-]{1,64}$/, 'a prefix of letters, digits, : . _ - (1 to 64), e.g. "portcullis:"')
    .default(STORE_DEFAULTS.keyPrefix),
  /** TLS to Redis (rediss:// only): the CA that signed Redis's certificate, and a client certificate. */
  tls: z
    .strictObject({
      ca: nonEmpty.optional(),
      cert: nonEmpty.optional(),
      key: nonEmpty.optional(),
      servername: nonEmpty.optional(),
    })
    .optional(),
  commandTimeoutMs: positiveMs.default(STORE_DEFAULTS.commandTimeoutMs),
  connectTimeoutMs: positiveMs.default(STORE_DEFAULTS.connectTimeoutMs),
  whenUnavailable: z
    .enum(['service-unavailable', 'no-session'], {
      error: '"service-unavailable" (503) or "no-session" (log in again)',
    })
    .default(STORE_DEFAULTS.whenUnavailable),
  requiredForReadiness: z.boolean().default(STORE_DEFAULTS.requiredForReadiness),
});

/** The `store` section as written. */
export const storeSchema = z.discriminatedUnion('type', [memoryStore, redisStore], {
  error: 'a store with type: memory or redis',
});

export type StoreFile = z.infer<typeof storeSchema>;

/** A Redis store, resolved: address, TLS material and password read, ready for store/redis.ts. */
export interface RedisStoreRuntime {
  readonly type: 'redis';
  /** The URL as written (it never holds a password: refused at load). For logs and errors. */
  readonly url: string;
  readonly host: string;
  readonly port: number;
  readonly db: number;
  /** TLS options when the URL is `rediss://`; undefined for plaintext (loopback, or requireEncryption off). */
  readonly tls:
    | {
        readonly ca: Buffer | undefined;
        readonly cert: Buffer | undefined;
        readonly key: Buffer | undefined;
        readonly servername: string | undefined;
      }
    | undefined;
  readonly username: string | undefined;
  readonly password: string | undefined;
  readonly keyPrefix: string;
  readonly commandTimeoutMs: number;
  readonly connectTimeoutMs: number;
  readonly whenUnavailable: 'service-unavailable' | 'no-session';
  readonly requiredForReadiness: boolean;
}

/** The store, resolved. */
export type StoreRuntimeConfig = { readonly type: 'memory' } | RedisStoreRuntime;

/**
 * `store` → its runtime form. Errors (pushed to `ctx.errors`) name the key: a URL with a password or a path
 * that is not a database number, plaintext off loopback under requireEncryption, `tls` on a `redis://` URL, a
 * client certificate without its key, an unreadable or empty password file.
 */
export function resolveStore(ctx: CompileContext, s: StoreFile | undefined): StoreRuntimeConfig | undefined {
  if (s === undefined || s.type === 'memory') return { type: 'memory' };
  const { errors } = ctx;
  const before = errors.length;
  const url = URL.parse(s.url);
  if (url === null || url.hostname === '') {
    errors.push(new ConfigError('store.url', s.url, 'a Redis URL with a host, e.g. rediss://redis.internal:6380/0'));
    return undefined;
  }
  if (url.password !== '' || url.username !== '')
    errors.push(
      new ConfigError(
        'store.url',
        `${url.protocol}//[redacted]@${url.host}${url.pathname}`,
        'a URL without user or password (put the password in store.passwordFile and the user in store.username)',
      ),
    );
  const dbText = url.pathname.replace(/^\//, '');
  const db = dbText === '' ? 0 : Number(dbText);
  if (!/^\d{0,2}$/.test(dbText) || !Number.isInteger(db) || db > 15)
    errors.push(new ConfigError('store.url', s.url, 'a database number 0 to 15 as the path (e.g. /0), or no path'));
  if (url.search !== '' || url.hash !== '')
    errors.push(new ConfigError('store.url', s.url, 'a URL without query or fragment (options are keys of store)'));
  const host = url.hostname.replace(/^\[|\]$/g, '');
  const tlsUrl = url.protocol === 'rediss:';
  if (!tlsUrl && !isLoopbackHost(host)) {
    if (ctx.requireEncryption)
      errors.push(
        new ConfigError(
          'store.url',
          s.url,
          'a rediss:// URL (TLS), or redis:// on a loopback address only (requireEncryption is true: sessions and tokens must not cross the network in clear)',
        ),
      );
    else ctx.warnings.push(`store.url ${s.url} is PLAINTEXT to a host off loopback: sessions and token answers cross the network in clear`);
  }
  if (!tlsUrl && s.tls !== undefined)
    errors.push(new ConfigError('store.tls', '{...}', 'no tls section with a redis:// URL (use rediss:// for TLS)'));
  if ((s.tls?.cert === undefined) !== (s.tls?.key === undefined))
    errors.push(
      new ConfigError(
        s.tls?.cert === undefined ? 'store.tls.cert' : 'store.tls.key',
        undefined,
        'store.tls.cert and store.tls.key together (a client certificate needs its key)',
      ),
    );
  const read = (key: string, value: string | undefined): Buffer | undefined =>
    value === undefined ? undefined : readAt(ctx, key, value)?.data;
  let password: string | undefined;
  if (s.passwordFile !== undefined) {
    const data = read('store.passwordFile', s.passwordFile);
    if (data !== undefined) {
      password = data.toString('utf8').replace(/\r?\n$/, '');
      if (password === '')
        errors.push(new ConfigError('store.passwordFile', s.passwordFile, 'a file holding the Redis password (it is empty)'));
    }
  }
  const tls = tlsUrl
    ? {
        ca: read('store.tls.ca', s.tls?.ca),
        cert: read('store.tls.cert', s.tls?.cert),
        key: read('store.tls.key', s.tls?.key),
        servername: s.tls?.servername,
      }
    : undefined;
  if (errors.length > before) return undefined;
  return {
    type: 'redis',
    url: s.url,
    host,
    port: url.port === '' ? 6379 : Number(url.port),
    db,
    tls,
    username: s.username,
    password,
    keyPrefix: s.keyPrefix,
    commandTimeoutMs: s.commandTimeoutMs,
    connectTimeoutMs: s.connectTimeoutMs,
    whenUnavailable: s.whenUnavailable,
    requiredForReadiness: s.requiredForReadiness,
  };
}
