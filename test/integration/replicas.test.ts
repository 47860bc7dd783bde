/**
 * Several replicas (issue 17): two gateways (the built binary; B with `workers: 2`, so three serving
 * processes) behind one public origin, sharing a real `redis-server`, in front of a real OpenID provider (oidc-provider 9) and a recording upstream.
 *
 * A session made on A works on B; a user logout or a back-channel logout on A is honoured on B within 1 s; a
 * refresh due on both at once makes one IdP call (the refresh lock). Faults: Redis stalled (SIGSTOP) or killed
 * makes a session unreadable — a 503 on A (`whenUnavailable: service-unavailable`), "log in again" on B
 * (`no-session`), `/readyz` and `portcullis_store_up` say so, and the upstream sees nothing; on SIGCONT the
 * sessions resume; after a restart (no persistence) they are gone and a new login works on both, without a
 * gateway restart; a session evicted under `maxmemory` is no session.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadOidcProvider } from '../helpers/oidc.js';
import { driveIdpLogin, endIdpSession, Jar, ssoProvider, startLoginIdp, untilLoginRedirects, type LoginIdp } from '../helpers/idp-login.js';
import { freePort, killAll, listeningPorts, startBinary, type StartedBinary } from '../helpers/binary.js';
import { writePki, type TestPkiPaths } from '../helpers/pki.js';
import { redisMissing, startRedis, type TestRedis } from '../helpers/redis.js';
import { startUpstream, type TestUpstream } from '../helpers/upstream.js';
import { h1, type Reply } from '../helpers/clients.js';
import { adminGet, adminPost, scrapeText, sampleValue } from '../helpers/admin.js';
import { createFakeIdp, type FakeIdp } from '../helpers/idp.js';
import { tokenHash } from '../../src/authn/bearer.js';

const Provider = await loadOidcProvider('test/integration/replicas.test.ts');
const missing = redisMissing('test/integration/replicas.test.ts');

const HTML = 'text/html,application/xhtml+xml';

function cookieOf(r: Reply, name: string): string | undefined {
  const v = r.headers['set-cookie'];
  const lines = v === undefined ? [] : Array.isArray(v) ? v : [v];
  return lines.find((c) => c.startsWith(`${name}=`))?.split(';')[0];
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function until(cond: () => Promise<boolean>, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await sleep(50);
  }
}

interface Replica {
  readonly run: StartedBinary;
  readonly port: number;
  readonly adminPort: number;
}

describe.skipIf(Provider === undefined || missing !== undefined)('two gateway processes sharing sessions on Redis', () => {
  let dir: string;
  let pki: TestPkiPaths;
  let redis: TestRedis;
  let idp: LoginIdp;
  /** The introspection endpoint (opaque tokens) behind the `/api` route. */
  let opaque: FakeIdp;
  let up: TestUpstream;
  let a: Replica;
  let b: Replica;
  /** The public authority both replicas serve (a load balancer's): A's port. */
  let authority: string;

  /** A request to `replica` as if through the load balancer (Host: the public authority). */
  const get = async (
    replica: Replica,
    path: string,
    headers: Record<string, string> = {},
  ): Promise<{ reply: Reply; reached: boolean }> => {
    const before = up.seen.length;
    const reply = await h1(replica.port, pki, { client: undefined, path, headers: { host: authority, ...headers } });
    return { reply, reached: up.seen.length > before };
  };

  /** Logs `user` in through `replica`; returns the session cookie (`name=value`). */
  async function login(replica: Replica, user: string, jar = new Jar()): Promise<string> {
    const start = await get(replica, '/app/page', { accept: HTML });
    expect(start.reply.status).toBe(302);
    const pre = cookieOf(start.reply, '__Host-portcullis-login') ?? '';
    const callback = new URL(await driveIdpLogin(start.reply.headers.location as string, user, jar));
    const back = await get(replica, callback.pathname + callback.search, { accept: HTML, cookie: pre });
    expect(back.reply.status, back.reply.body).toBe(302);
    const cookie = cookieOf(back.reply, '__Host-portcullis');
    if (cookie === undefined) throw new Error('no session cookie');
    return cookie;
  }

  async function startReplica(name: string, port: number, store: Record<string, unknown>, workers = 1): Promise<Replica> {
    const adminPort = await freePort();
    const file = join(dir, `${name}.yaml`);
    await writeFile(
      file,
      stringify({
        admin: { listen: `127.0.0.1:${adminPort}` },
        workers,
        log: { level: 'info', access: false },
        store: { type: 'redis', url: redis.url, keyPrefix: 'it:', commandTimeoutMs: 300, requiredForReadiness: true, ...store },
        authProviders: {
          sso: ssoProvider(idp),
          opaque: {
            type: 'introspection',
            endpoint: opaque.introspectionUri,
            clientId: opaque.clientId,
            clientSecretFile: join(dir, 'introspection-secret'),
            cache: { maxTtlSeconds: 300 },
          },
        },
        listeners: [
          {
            name: 'main',
            listen: `127.0.0.1:${port}`,
            tls: { cert: pki.server.cert, key: pki.server.key, clientCertificate: 'none' },
            routes: [
              { id: 'app', match: { pathPrefix: '/app' }, upstream: up.url, auth: { login: 'sso' } },
              { id: 'api', match: { pathPrefix: '/api' }, upstream: up.url, auth: { providers: ['opaque'] } },
              { id: 'open', match: { pathPrefix: '/' }, upstream: up.url },
            ],
          },
        ],
      }),
    );
    const run = startBinary(file);
    await listeningPorts(run, { admin: true });
    const replica = { run, port, adminPort };
    await untilLoginRedirects(async () => (await get(replica, '/app/', { accept: HTML })).reply.status);
    return replica;
  }

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'portcullis-replicas-'));
    pki = await writePki(join(dir, 'pki'));
    redis = await startRedis();
    up = await startUpstream();
    opaque = await createFakeIdp();
    await opaque.listen();
    await writeFile(join(dir, 'introspection-secret'), `${opaque.clientSecret}\n`, { mode: 0o600 });
    idp = await startLoginIdp(Provider!);
    idp.trust(pki.ca);
    const portA = await freePort();
    const portB = await freePort();
    authority = `localhost:${portA}`;
    // One public origin: the IdP knows only A's (its back-channel logout goes to A).
    await idp.configure([`https://${authority}`], 62);
    [a, b] = await Promise.all([
      startReplica('a', portA, { whenUnavailable: 'service-unavailable' }),
      // B is itself a cluster of 2 workers (allowed with an oidc provider because sessions are in Redis).
      startReplica('b', portB, { whenUnavailable: 'no-session', requiredForReadiness: false }, 2),
    ]);
  }, 60_000);

  afterAll(async () => {
    killAll([a?.run.child, b?.run.child].filter((c) => c !== undefined));
    await idp?.close();
    await opaque?.close();
    await up?.close();
    await redis?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('a session made on A works on B (and on A), the session cookie removed upstream', async () => {
    const cookie = await login(a, 'alice');
    const onB = await get(b, '/app/page', { cookie });
    expect(onB.reply.status).toBe(200);
    expect(onB.reached).toBe(true);
    const seen = up.seen.at(-1);
    expect(JSON.stringify(seen?.rawHeaders)).not.toContain('__Host-portcullis');
    expect((await get(a, '/app/page', { cookie })).reply.status).toBe(200);
    const metrics = await scrapeText(b.adminPort);
    expect(sampleValue(metrics, 'portcullis_store_up')).toBe(1);
    expect(sampleValue(metrics, 'portcullis_sessions_active{provider="sso"}')).toBeGreaterThanOrEqual(1);
  });

  it('a logout on A ends the session on B at once', async () => {
    const cookie = await login(a, 'alice');
    expect((await get(b, '/app/page', { cookie })).reply.status).toBe(200);
    const out = await get(a, '/_portcullis/logout', { cookie, accept: HTML });
    expect(out.reply.status).toBe(302);
    const after = await get(b, '/app/page', { cookie });
    expect(after.reply.status).toBe(401);
    expect(after.reached).toBe(false);
  });

  it('a back-channel logout delivered to A is honoured on B within 1 s', async () => {
    const jar = new Jar();
    const cookie = await login(a, 'bob', jar);
    expect((await get(b, '/app/page', { cookie })).reply.status).toBe(200);
    expect([302, 303]).toContain(await endIdpSession(idp.issuer, jar));
    const t0 = Date.now();
    await until(async () => (await get(b, '/app/page', { cookie })).reply.status === 401, 1_000, 'B refuses the session');
    console.log(`back-channel logout on A honoured on B after ${Date.now() - t0} ms`);
    const after = await get(b, '/app/page', { cookie });
    expect(after.reached).toBe(false);
  });

  it('a refresh due on both replicas at once makes one IdP call, and both keep the session', async () => {
    const cookie = await login(a, 'carol');
    // The access token lives 62 s and is refreshed 60 s before: due after 2 s.
    await sleep(2_300);
    const before = idp.grants.get('refresh_token') ?? 0;
    const replies = await Promise.all(
      Array.from({ length: 20 }, (_, i) => get(i % 2 === 0 ? a : b, '/app/page', { cookie })),
    );
    expect(replies.map((r) => r.reply.status)).toEqual(Array(20).fill(200));
    expect((idp.grants.get('refresh_token') ?? 0) - before).toBe(1);
    // The rotated refresh token was saved for both: the next refresh (again on both) succeeds.
    await sleep(2_300);
    const again = await Promise.all(
      Array.from({ length: 10 }, (_, i) => get(i % 2 === 0 ? b : a, '/app/page', { cookie })),
    );
    expect(again.map((r) => r.reply.status)).toEqual(Array(10).fill(200));
    expect((idp.grants.get('refresh_token') ?? 0) - before).toBe(2);
  });

  const bearer = (replica: Replica, token: string): Promise<{ reply: Reply; reached: boolean }> =>
    get(replica, '/api/x', { authorization: `Bearer ${token}` });

  it('a token checked on A is not asked again on B (shared answer), and B then decides from its near-cache', async () => {
    const token = opaque.issueOpaque();
    const before = opaque.counts.introspection;
    expect((await bearer(a, token)).reply.status).toBe(200);
    expect(opaque.counts.introspection - before).toBe(1);
    for (let i = 0; i < 5; i++) expect((await bearer(b, token)).reply.status).toBe(200);
    expect(opaque.counts.introspection - before).toBe(1);
  });

  it('a purge on A is honoured on B within 1 s (pub/sub), without waiting for the 300 s TTL', async () => {
    const token = opaque.issueOpaque();
    expect((await bearer(a, token)).reply.status).toBe(200);
    expect((await bearer(b, token)).reply.status).toBe(200);
    opaque.revoke(token);
    // Cached on both: the revocation is not seen yet (the documented window, ≤ maxTtlSeconds).
    expect((await bearer(b, token)).reply.status).toBe(200);
    const purge = await adminPost(a.adminPort, `/cache/purge?sha256=${tokenHash(token)}`);
    expect(purge.status).toBe(200);
    const t0 = Date.now();
    await until(async () => (await bearer(b, token)).reply.status === 401, 1_000, 'B refuses the purged token');
    console.log(`purge on A honoured on B after ${Date.now() - t0} ms`);
    expect((await bearer(a, token)).reply.status).toBe(401);
    expect((await bearer(b, token)).reached).toBe(false);
  });

  it('a stale or malformed invalidation message is harmless: nothing revoked passes, valid tokens keep working', async () => {
    const valid = opaque.issueOpaque();
    const revoked = opaque.issueOpaque();
    expect((await bearer(b, valid)).reply.status).toBe(200);
    opaque.revoke(revoked);
    expect((await bearer(b, revoked)).reply.status).toBe(401);
    const raw = new Redis({ host: '127.0.0.1', port: redis.port });
    try {
      // Replayed old purges, a purge of a token nobody has, garbage, and a message for another prefix.
      for (const m of ['purge:*', `purge:${tokenHash(valid)}`, `purge:${'0'.repeat(64)}`, 'purge:not-a-hash', 'garbage', ''])
        await raw.publish('it:invalidate', m);
      await raw.publish('other:invalidate', 'purge:*');
    } finally {
      raw.disconnect();
    }
    await sleep(200);
    for (const r of [a, b]) {
      expect((await bearer(r, valid)).reply.status).toBe(200);
      const denied = await bearer(r, revoked);
      expect(denied.reply.status).toBe(401);
      expect(denied.reached).toBe(false);
    }
  });

  it('a session evicted under maxmemory is no session: the upstream sees nothing', async () => {
    const cookie = await login(a, 'dave');
    expect((await get(b, '/app/page', { cookie })).reply.status).toBe(200);
    const raw = new Redis({ host: '127.0.0.1', port: redis.port });
    try {
      await raw.config('SET', 'maxmemory-policy', 'allkeys-lru');
      const used = Number(/used_memory:(\d+)/.exec(await raw.info('memory'))?.[1]);
      await raw.config('SET', 'maxmemory', String(used + 2 * 1024 * 1024));
      const big = 'z'.repeat(10_000);
      for (let i = 0; i < 1_000; i++) await raw.set(`filler:${i}`, big);
      const onB = await get(b, '/app/page', { cookie });
      const onA = await get(a, '/app/page', { cookie });
      expect(onB.reply.status).toBe(401);
      expect(onA.reply.status).toBe(401);
      expect(onA.reached || onB.reached).toBe(false);
    } finally {
      await raw.config('SET', 'maxmemory', '0');
      await raw.flushdb();
      raw.disconnect();
    }
  });

  it('Redis stalled (SIGSTOP): a 503 on A, log in again on B, /readyz (where required) and store_up say so; sessions resume on SIGCONT', async () => {
    const cookie = await login(a, 'erin');
    expect((await get(b, '/app/page', { cookie })).reply.status).toBe(200);
    redis.stall();
    try {
      const t0 = Date.now();
      const onA = await get(a, '/app/page', { cookie });
      expect(Date.now() - t0).toBeLessThan(2_000);
      expect(onA.reply.status).toBe(503);
      expect(onA.reached).toBe(false);
      const browserB = await get(b, '/app/page', { cookie, accept: HTML });
      const apiB = await get(b, '/app/page', { cookie });
      expect(apiB.reply.status).toBe(401);
      // The browser is sent to log in, which cannot be recorded while Redis is stalled: 503, not a half login.
      expect(browserB.reply.status).toBe(503);
      expect(apiB.reached || browserB.reached).toBe(false);
      await until(async () => (await adminGet(a.adminPort, '/readyz')).status === 503, 3_000, '/readyz 503');
      expect((await adminGet(a.adminPort, '/readyz')).body).toMatch(/store: redis/);
      // B does not make readiness depend on the store (its Bearer routes work without it).
      expect((await adminGet(b.adminPort, '/readyz')).status).toBe(200);
      expect(sampleValue(await scrapeText(a.adminPort), 'portcullis_store_up')).toBe(0);
    } finally {
      redis.resume();
    }
    await until(async () => (await get(b, '/app/page', { cookie })).reply.status === 200, 5_000, 'session back on B');
    expect((await get(a, '/app/page', { cookie })).reply.status).toBe(200);
    await until(async () => (await adminGet(a.adminPort, '/readyz')).status === 200, 5_000, '/readyz 200');
  });

  it('Redis killed: no request passes; restarted (empty): sessions are gone, a new login works on both, no gateway restart', async () => {
    const cookie = await login(b, 'frank');
    await redis.kill();
    const onA = await get(a, '/app/page', { cookie });
    const onB = await get(b, '/app/page', { cookie });
    expect(onA.reply.status).toBe(503);
    expect(onB.reply.status).toBe(401);
    expect(onA.reached || onB.reached).toBe(false);
    // A login cannot start while its pre-login record cannot be written: 503, not a half login.
    const start = await get(a, '/app/page', { accept: HTML });
    expect(start.reply.status).toBe(503);
    expect(sampleValue(await scrapeText(b.adminPort), 'portcullis_store_up')).toBe(0);
    await redis.restart();
    await until(async () => (await adminGet(a.adminPort, '/readyz')).status === 200, 10_000, '/readyz 200 after restart');
    // B's readiness does not follow the store: its metric does.
    await until(async () => sampleValue(await scrapeText(b.adminPort), 'portcullis_store_up') === 1, 10_000, 'store_up 1 on B');
    const old = await get(a, '/app/page', { cookie });
    expect(old.reply.status).toBe(401);
    expect(old.reached).toBe(false);
    const fresh = await login(a, 'frank');
    expect((await get(b, '/app/page', { cookie: fresh })).reply.status).toBe(200);
  });
});
