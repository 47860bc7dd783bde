#!/usr/bin/env node
// Redis memory per 100,000 browser sessions and per 100,000 cached introspection answers (issue 17 point 6).
//
//   npm run build && node bench/store-sizing.mjs [--count 100000]
//
// Starts its own redis-server (loopback, free port, no persistence), writes the records through the
// gateway's own code (dist/: the Redis store, the session store, the shared introspection answers) and reads
// `used_memory` from INFO memory before and after each batch. Prints a Markdown table.
//
// Record sizes are assumptions, stated in the output: a session holds the IdP's tokens (access, refresh and ID
// token) and the ID token's claims, so its size follows the IdP. The defaults are those of a typical
// enterprise IdP issuing JWT access tokens (about 1 KB each); oidc-provider's opaque tokens are far smaller.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const dist = (p) => import(pathToFileURL(join(ROOT, 'dist', 'src', p)).href);
const { createRedisStore } = await dist('store/redis.js');
const { createSessionStore } = await dist('authn/sessions.js');
const { createSharedAnswers } = await dist('authn/shared-answers.js');
const { Redis } = await import('ioredis');

const { values: opt } = parseArgs({ options: { count: { type: 'string', default: '100000' } } });
const COUNT = Number(opt.count);
const ACCESS_TOKEN_CHARS = 1_000;
const REFRESH_TOKEN_CHARS = 1_000;
const ID_TOKEN_CHARS = 1_200;

async function freePort() {
  const s = createServer();
  await new Promise((r) => s.listen(0, '127.0.0.1', r));
  const port = s.address().port;
  await new Promise((r) => s.close(r));
  return port;
}

async function untilListening(port) {
  for (let i = 0; i < 200; i++) {
    const ok = await new Promise((r) => {
      const c = connect(port, '127.0.0.1');
      c.once('connect', () => (c.destroy(), r(true)));
      c.once('error', () => r(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('redis-server did not start');
}

const text = (n) => randomBytes(Math.ceil((n * 3) / 4)).toString('base64url').slice(0, n);

const dir = mkdtempSync(join(tmpdir(), 'portcullis-sizing-'));
const port = await freePort();
const server = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir], { stdio: 'ignore' });
try {
  await untilListening(port);
  const raw = new Redis({ host: '127.0.0.1', port });
  const used = async () => Number(/used_memory:(\d+)/.exec(await raw.info('memory'))[1]);
  const store = createRedisStore({
    type: 'redis', url: `redis://127.0.0.1:${port}/0`, host: '127.0.0.1', port, db: 0, tls: undefined, username: undefined,
    password: undefined, keyPrefix: 'portcullis:', commandTimeoutMs: 5_000, connectTimeoutMs: 2_000,
    whenUnavailable: 'service-unavailable', requiredForReadiness: false,
  });
  await new Promise((r) => setTimeout(r, 200));
  const clock = { now: () => Date.now() };
  const out = [];

  // Sessions: the record, its sid index and its sub index (one person, one IdP session each).
  const sessions = createSessionStore('corp-sso', store.kv, { idleMs: 3_600_000, absoluteMs: 43_200_000 }, clock);
  const before = await used();
  const now = Date.now();
  let recordBytes = 0;
  for (let i = 0; i < COUNT; i += 500) {
    await Promise.all(
      Array.from({ length: Math.min(500, COUNT - i) }, (_, j) => {
        const sub = `user-${i + j}-${text(8)}`;
        const record = {
          v: 1, listener: 'web', origin: 'https://app.example.com', sub, sid: text(36),
          claims: { iss: 'https://idp.example.com/', sub, aud: 'portcullis', exp: Math.floor(now / 1000) + 3600, iat: Math.floor(now / 1000), auth_time: Math.floor(now / 1000), sid: text(36), email: `${sub}@example.com`, groups: ['data-science', 'staff'], name: 'A. Person' },
          scopes: ['openid', 'profile', 'email', 'offline_access'],
          accessToken: text(ACCESS_TOKEN_CHARS), accessExpiresAtMs: now + 300_000, refreshToken: text(REFRESH_TOKEN_CHARS), idToken: text(ID_TOKEN_CHARS),
          createdAtMs: now, lastSeenAtMs: now, absoluteExpiresAtMs: now + 43_200_000,
        };
        if (i + j === 0) recordBytes = JSON.stringify(record).length;
        return sessions.create(randomBytes(32).toString('hex'), record);
      }),
    );
  }
  const afterSessions = await used();
  out.push([`${COUNT.toLocaleString('en-US')} browser sessions (record ${recordBytes.toLocaleString('en-US')} B of JSON + sid and sub indexes)`, afterSessions - before]);

  // Cached introspection answers: what a replica shares after the IdP said active.
  const answers = createSharedAnswers('corp-introspection', store.kv, clock);
  const { generation } = await answers.lookup('0'.repeat(64));
  const answerBytes = [];
  for (let i = 0; i < COUNT; i += 500) {
    for (let j = 0; j < Math.min(500, COUNT - i); j++) {
      const principal = {
        subject: `svc-${i + j}`, scopes: ['read', 'write'], provider: 'corp-introspection', clientId: 'billing-api',
        claims: { active: true, sub: `svc-${i + j}`, client_id: 'billing-api', scope: 'read write', exp: Math.floor(now / 1000) + 3600, iat: Math.floor(now / 1000), iss: 'https://idp.example.com/', aud: 'https://api.example.com', token_type: 'Bearer' },
        expiresAtMs: now + 3_600_000,
      };
      if (answerBytes.length === 0) answerBytes.push(JSON.stringify(principal).length);
      answers.share(randomBytes(32).toString('hex'), generation, { active: true, principal, freshForMs: 300_000, expMs: now + 3_600_000, nbfMs: undefined });
    }
    await raw.ping(); // a barrier: the shares above were sent on another connection, but let the server catch up
  }
  await new Promise((r) => setTimeout(r, 500));
  const afterAnswers = await used();
  const keys = await raw.dbsize();
  out.push([`${COUNT.toLocaleString('en-US')} cached introspection answers (principal ${answerBytes[0].toLocaleString('en-US')} B of JSON)`, afterAnswers - afterSessions]);

  const version = /redis_version:(\S+)/.exec(await raw.info('server'))[1];
  process.stdout.write(`Redis ${version} used_memory (INFO memory) added by each batch; ${keys.toLocaleString('en-US')} keys at the end.\n`);
  process.stdout.write(`Tokens assumed: access ${ACCESS_TOKEN_CHARS} chars, refresh ${REFRESH_TOKEN_CHARS}, ID token ${ID_TOKEN_CHARS}.\n\n`);
  process.stdout.write('| what | Redis memory | per item |\n|---|---:|---:|\n');
  for (const [what, bytes] of out)
    process.stdout.write(`| ${what} | ${(bytes / 1024 / 1024).toFixed(1)} MiB | ${Math.round(bytes / COUNT).toLocaleString('en-US')} B |\n`);
  raw.disconnect();
  await store.close();
} finally {
  server.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
}
