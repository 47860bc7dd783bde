// Micro-benchmark of the Bearer authentication path (issue 3, point 9), in one process, on dist/:
//   1. per-request cost of a CACHED JWT hit and a CACHED introspection hit, over a no-auth baseline
//      (the same per-request work the handler does: extract the header, hash, chain, policy check);
//   2. 1,000 concurrent requests carrying one new opaque token → how many introspection calls;
//   3. 100,000 distinct tokens → cache entries stay within the configured bound.
// Usage: npm run build && node bench/auth-micro.mjs [--rounds 5] [--iterations 200000]
// Prints medians of several interleaved rounds; writes nothing.
import { authProvidersSchema, createAuthenticators } from '../dist/src/authn/providers.js';
import { createAuthChain } from '../dist/src/authn/chain.js';
import { extractBearer, tokenHash } from '../dist/src/authn/bearer.js';
import { compileRoutePolicy } from '../dist/src/authz/policy.js';
import { createDevSigningKey, mintDevJwt, DEV_ISSUER, DEV_AUDIENCE } from '../dist/src/authn/jwks-dev.js';
import { systemClock } from '../dist/src/clock.js';

const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i === -1 ? dflt : Number(process.argv[i + 1]);
};
const ROUNDS = arg('rounds', 5);
const N = arg('iterations', 200_000);
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const key = await createDevSigningKey();
const jwt = await mintDevJwt({ key: key.privatePem, issuer: DEV_ISSUER, audience: DEV_AUDIENCE, sub: 'alice', scope: 'read write', ttlSeconds: 3600, now: new Date() });

let introspectionCalls = 0;
const fakeFetch = async (_url, init) => {
  introspectionCalls++;
  const body = String(init.body ?? '');
  const token = new URLSearchParams(body).get('token') ?? '';
  await new Promise((r) => setTimeout(r, 5)); // an IdP round trip
  const answer = token.startsWith('inactive') ? { active: false } : { active: true, sub: 'svc', scope: 'read write', exp: Math.floor(Date.now() / 1000) + 3600 };
  return new Response(JSON.stringify(answer), { status: 200, headers: { 'content-type': 'application/json' } });
};
const files = { '/jwks.json': JSON.stringify(key.publicJwks), '/secret': 's3cret' };
const MAX_ENTRIES = 10_000;
const providers = createAuthenticators(
  authProvidersSchema.parse({
    dev: { type: 'jwt', issuer: DEV_ISSUER, audience: DEV_AUDIENCE, jwksFile: '/jwks.json', algorithms: ['ES256'] },
    idp: { type: 'introspection', endpoint: 'http://127.0.0.1:1/introspect', clientId: 'gw', clientSecretFile: '/secret', cache: { maxEntries: MAX_ENTRIES } },
  }),
  { clock: systemClock, fetch: fakeFetch, readFile: (p) => files[p], statFile: () => ({ mtimeMs: 0, size: 0 }) },
);
for (const p of providers.values()) await p.warmUp();
const jwtChain = createAuthChain([providers.get('dev')]);
const idpChain = createAuthChain([providers.get('idp')]);
const policy = compileRoutePolicy({ scopes: ['read'] }, 'bench');

const opaque = 'opaque-hot-token-0123456789';
const jwtHeaders = ['host', 'x', 'authorization', `Bearer ${jwt}`, 'accept', '*/*'];
const opaqueHeaders = ['host', 'x', 'authorization', `Bearer ${opaque}`, 'accept', '*/*'];
const noAuthHeaders = ['host', 'x', 'accept', '*/*'];

// Prime the caches (one signature check, one introspection call).
policy.check(await jwtChain(jwt, tokenHash(jwt)));
policy.check(await idpChain(opaque, tokenHash(opaque)));

async function perRequest(kind) {
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < N; i++) {
    if (kind === 'none') {
      // the no-auth baseline: the handler does nothing for a route without auth, but still awaits
      await Promise.resolve(noAuthHeaders.length);
      continue;
    }
    const headers = kind === 'jwt' ? jwtHeaders : opaqueHeaders;
    const cred = extractBearer(headers, '', false);
    const principal = await (kind === 'jwt' ? jwtChain : idpChain)(cred.token, tokenHash(cred.token));
    policy.check(principal);
  }
  return Number(process.hrtime.bigint() - t0) / 1e3 / N; // µs per request
}

const results = { none: [], jwt: [], idp: [] };
for (let r = 0; r < ROUNDS; r++) for (const k of ['none', 'jwt', 'idp']) results[k].push(await perRequest(k));
const base = median(results.none);
console.log(`per-request cost, median of ${ROUNDS} interleaved rounds of ${N.toLocaleString()}:`);
console.log(`  no auth (baseline)        ${base.toFixed(2)} µs`);
console.log(`  cached JWT hit            ${median(results.jwt).toFixed(2)} µs  (+${(median(results.jwt) - base).toFixed(2)} µs over no auth; target < 20)`);
console.log(`  cached introspection hit  ${median(results.idp).toFixed(2)} µs  (+${(median(results.idp) - base).toFixed(2)} µs over no auth; target < 20)`);

// 2. thundering herd on one new opaque token
introspectionCalls = 0;
const fresh = 'opaque-new-token-for-the-herd';
const herd = await Promise.allSettled(Array.from({ length: 1000 }, () => idpChain(fresh, tokenHash(fresh))));
console.log(`1,000 concurrent requests with one new opaque token: ${introspectionCalls} introspection call(s), ${herd.filter((x) => x.status === 'fulfilled').length} allowed (target: exactly 1 call)`);

// 3. 100,000 distinct tokens
const idp = providers.get('idp');
for (let i = 0; i < 100_000; i += 1000) {
  await Promise.all(Array.from({ length: 1000 }, (_, j) => idpChain(`distinct-${i + j}`, tokenHash(`distinct-${i + j}`))));
}
const stats = idp.stats();
console.log(`100,000 distinct tokens: cache entries ${stats.cacheEntries} (bound ${MAX_ENTRIES}), evictions ${stats.cacheEvictions}`);
for (const p of providers.values()) p.close();
