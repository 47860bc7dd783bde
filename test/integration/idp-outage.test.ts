/**
 * Threat model #125 (IdP completely down under mixed traffic) and #126 (JWKS rotation under load), end to end:
 * one gateway over real TLS (alice's client certificate, HTTP/2), a fake IdP over HTTP, a recording upstream.
 *
 * Routes: `/jwt` (JWT verified locally against the IdP's JWKS), `/opaque` (RFC 7662 introspection, cached) and
 * `/opaque-stale` (the same provider, with `staleIfErrorSeconds`: the contrast of threat model #55).
 *
 * The JWKS reaches the gateway through a small front (`startJwksFront`) that forwards every fetch to the fake
 * IdP and can stop publishing a key: the fake IdP can add keys but not retire one while keeping the newer one.
 * IdP faults pass through it unchanged (a 500 stays a 500, a reset stays a reset).
 *
 * Time: `jwksMaxAgeSeconds` cannot be set under 30 s. Instead of sleeping 30 s, the tests move time forward
 * (`advanceClocks`): `Date.now()` is offset for the whole process (the gateway's wall clock, jose's token
 * checks, the fake IdP's `iat`/`exp`), and the gateway is given a clock whose monotonic reading carries the
 * same offset (the key set's age, the cooldown and every other duration run on it), as if the time had
 * passed; timers, sockets and TLS keep real time. Every other deadline (cache TTLs, cooldown, backoff) is
 * waited for in real time.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { constants as h2constants, type ClientHttp2Session } from 'node:http2';
import type { AddressInfo, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import type { JWK } from 'jose';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { BACKOFF_INITIAL_MS, BACKOFF_MAX_MS } from '../../src/authn/jwks.js';
import { PAUSE_AFTER_FAILURES, PAUSE_INITIAL_MS, PAUSE_MAX_MS } from '../../src/authn/introspection.js';
import type { Clock } from '../../src/clock.js';
import { adminGet } from '../helpers/admin.js';
import { h2session } from '../helpers/clients.js';
import { startGateway, tlsListener, type TestGateway } from '../helpers/gateway.js';
import { createFakeIdp, type FakeIdp, type IdpFault } from '../helpers/idp.js';
import { startUpstream, type TestUpstream } from '../helpers/upstream.js';

const AUD = 'portcullis-idp-outage';
/** jwksCooldownSeconds: an unknown kid refetches the JWKS at most once per second. */
const COOLDOWN_MS = 1_000;
/** jwksMaxAgeSeconds: the schema's minimum (30 s); reached by moving the wall clock. */
const MAX_AGE_MS = 30_000;
/** cacheMaxSeconds of the JWT provider: a verified token string is served from cache this long. */
const JWT_CACHE_MS = 2_000;
/** cache.maxTtlSeconds of the introspection provider. */
const OPAQUE_TTL_MS = 2_000;
/** staleIfErrorSeconds of `/opaque-stale` (it must cover the 31 s wall-clock jump). */
const STALE_MS = 60_000;
/** Per client request: nothing in these tests should take more than a fraction of it. */
const REQUEST_TIMEOUT_MS = 5_000;
/** Slack for a loaded CI machine (2 shared cores) on deadlines that are behaviour, not speed. */
const CI_MARGIN_MS = 2_500;

/**
 * The most JWKS fetch attempts the gateway's backoff lets out within `elapsedMs` of the first failure: one at
 * 0, then after waits of 1 s, 2 s, 4 s, ... (capped at 30 s), i.e. at 0, 1, 3, 7, 15 s. Each wait counts from
 * the end of the failed attempt, so real attempts can only be later than this schedule, never earlier.
 */
function backoffAttempts(elapsedMs: number): number {
  let at = 0;
  let wait = BACKOFF_INITIAL_MS;
  let n = 0;
  while (at <= elapsedMs) {
    n++;
    at += wait;
    wait = Math.min(wait * 2, BACKOFF_MAX_MS);
  }
  return n;
}

/**
 * The most introspection calls a failing IdP can get in `elapsedMs` (introspection.ts pause):
 * PAUSE_AFTER_FAILURES calls, then one probe after each pause (PAUSE_INITIAL_MS, doubling, capped), plus
 * `overlap` for calls that had already started when a failure became known (they count as one failure).
 */
function introspectionAttempts(elapsedMs: number, overlap = 2): number {
  let at = 0;
  let n = PAUSE_AFTER_FAILURES;
  for (let k = 0; ; k++) {
    at += Math.min(PAUSE_INITIAL_MS * 2 ** k, PAUSE_MAX_MS);
    if (at > elapsedMs) return n + overlap;
    n++;
  }
}

/** The pause in force after `failures` failed introspection calls in a row (0: none). */
function introspectionPause(failures: number): number {
  return failures < PAUSE_AFTER_FAILURES
    ? 0
    : Math.min(PAUSE_INITIAL_MS * 2 ** (failures - PAUSE_AFTER_FAILURES), PAUSE_MAX_MS);
}

/** The wait the gateway imposes after `failures` consecutive failed JWKS fetches. */
function backoffWait(failures: number): number {
  return Math.min(BACKOFF_INITIAL_MS * 2 ** Math.max(failures - 1, 0), BACKOFF_MAX_MS);
}

// --- wall clock ------------------------------------------------------------------------------------------

const realDateNow = Date.now.bind(Date);
let clockOffsetMs = 0;
/** Moves time forward: `Date.now()` for everything in this process, and the gateway's monotonic clock. */
function advanceClocks(ms: number): void {
  clockOffsetMs += ms;
}
/** The gateway's clock: the (offset) `Date.now()`, and a monotonic reading offset alike. */
const gatewayClock: Clock = {
  now: () => Date.now(),
  hrtime: () => process.hrtime.bigint() + BigInt(Math.round(clockOffsetMs * 1e6)),
};

// --- JWKS front ------------------------------------------------------------------------------------------

interface JwksFront {
  readonly url: string;
  /** kids the IdP no longer publishes. */
  readonly retired: Set<string>;
  /** performance.now() of every fetch the gateway made. */
  readonly fetches: number[];
  close(): Promise<void>;
}

/** Forwards `GET /jwks` to the fake IdP (faults included) and drops retired kids from a 200 answer. */
async function startJwksFront(idp: FakeIdp): Promise<JwksFront> {
  const retired = new Set<string>();
  const fetches: number[] = [];
  const sockets = new Set<Socket>();
  const server: Server = createServer((req, res) => {
    fetches.push(performance.now());
    void (async () => {
      try {
        const answer = await fetch(idp.jwksUri, {
          redirect: 'manual',
          signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
        });
        let body = await answer.text();
        if (answer.status === 200) {
          const set = JSON.parse(body) as { keys: JWK[] };
          body = JSON.stringify({ keys: set.keys.filter((k) => !retired.has(k.kid ?? '')) });
        }
        res.writeHead(answer.status, {
          'content-type': answer.headers.get('content-type') ?? 'application/octet-stream',
        });
        res.end(body);
      } catch {
        req.socket.destroy(); // the IdP dropped the connection: so does its front
      }
    })();
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/jwks`,
    retired,
    fetches,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      }),
  };
}

// --- load ------------------------------------------------------------------------------------------------

/** One client request and its outcome. */
interface Shot {
  readonly kind: string;
  readonly path: string;
  /** ms after the start of its load phase when it was sent. */
  readonly sentAt: number;
  /** performance.now() when it was sent. */
  readonly sentAbs: number;
  /** HTTP status; 0 when the request failed or timed out. */
  readonly status: number;
}

/** One HTTP/2 request with a Bearer token; resolves with the status (0 on error or after the timeout). */
function send(session: ClientHttp2Session, path: string, token: string): Promise<number> {
  return new Promise((resolve) => {
    let status = 0;
    const stream = session.request({ ':method': 'GET', ':path': path, authorization: `Bearer ${token}` });
    stream.setTimeout(REQUEST_TIMEOUT_MS, () => stream.close(h2constants.NGHTTP2_CANCEL));
    stream.on('response', (h) => (status = Number(h[':status'])));
    stream.on('data', () => undefined);
    stream.on('error', () => undefined);
    stream.on('close', () => resolve(status));
    stream.end();
  });
}

interface Request {
  readonly kind: string;
  readonly path: string;
  readonly token: string;
}

/**
 * Sends `make(i)` at `ratePerSec`, without waiting for answers, until `maxRequests` were sent or `durationMs`
 * passed (whichever first); then waits for every answer (each bounded by {@link REQUEST_TIMEOUT_MS}).
 */
async function runLoad(
  session: ClientHttp2Session,
  opts: {
    readonly ratePerSec: number;
    readonly durationMs: number;
    readonly maxRequests: number;
    readonly make: (i: number) => Promise<Request> | Request;
  },
): Promise<Shot[]> {
  const start = performance.now();
  const pending: Promise<Shot>[] = [];
  for (let i = 0; i < opts.maxRequests && performance.now() - start < opts.durationMs; i++) {
    const { kind, path, token } = await opts.make(i);
    const sentAbs = performance.now();
    pending.push(
      send(session, path, token).then((status) => ({ kind, path, sentAt: sentAbs - start, sentAbs, status })),
    );
    const next = start + ((i + 1) * 1000) / opts.ratePerSec;
    await sleep(Math.max(0, next - performance.now()));
  }
  return Promise.all(pending);
}

const statusesOf = (shots: readonly Shot[], kind: string): number[] =>
  shots.filter((s) => s.kind === kind).map((s) => s.status);

/** {status: count} of the shots of one kind, for messages and the report. */
function tally(shots: readonly Shot[], kind?: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const s of shots) if (kind === undefined || s.kind === kind) out[s.status] = (out[s.status] ?? 0) + 1;
  return out;
}

// --- shared setup ----------------------------------------------------------------------------------------

let idp: FakeIdp;
let front: JwksFront;
let up: TestUpstream;
let gw: TestGateway;
let files: string;
let adminPort: number;

const jti = (): string => randomBytes(9).toString('base64url');
/** A JWT signed by the IdP's key `kid` (its current key by default), never sent before (unique jti). */
const jwt = (kid?: string): Promise<string> =>
  idp.sign({ sub: 'alice', aud: AUD, scope: 'read', jti: jti() }, {}, kid);
/** A JWT signed by a real IdP key but naming a kid the JWKS never had. */
const ghostKidJwt = (): Promise<string> =>
  idp.sign({ sub: 'alice', aud: AUD, scope: 'read', jti: jti() }, { kid: `ghost-${jti()}` });

/** Upstream requests since `from`, by URL, must be exactly the 200s among `shots`: no denial got through. */
function expectUpstreamSawOnlyAllowed(shots: readonly Shot[], from: number): void {
  const seen = up.seen
    .slice(from)
    .map((s) => s.url)
    .sort();
  const allowed = shots
    .filter((s) => s.status === 200)
    .map((s) => s.path)
    .sort();
  expect(seen).toEqual(allowed);
}

/** Every 503 among `shots` logged ERR_AUTHN_UNAVAILABLE, every 401 ERR_AUTHN_INVALID_TOKEN. */
async function expectReasonCodes(shots: readonly Shot[]): Promise<void> {
  await sleep(50); // access-log lines are written off the request path
  const reason = new Map<string, unknown>();
  for (const l of gw.logs()) if (l.msg === 'request') reason.set(String(l.path), l.reason);
  for (const s of shots) {
    if (s.status === 503) expect(reason.get(s.path), s.path).toBe('ERR_AUTHN_UNAVAILABLE');
    if (s.status === 401) expect(reason.get(s.path), s.path).toBe('ERR_AUTHN_INVALID_TOKEN');
  }
}

beforeAll(async () => {
  vi.spyOn(Date, 'now').mockImplementation(() => realDateNow() + clockOffsetMs);
  idp = await createFakeIdp();
  await idp.listen();
  front = await startJwksFront(idp);
  up = await startUpstream();
  files = await mkdtemp(join(tmpdir(), 'portcullis-idp-outage-'));
  const secretFile = join(files, 'introspection-secret');
  await writeFile(secretFile, `${idp.clientSecret}\n`, { mode: 0o600 });
  const route = (id: string, auth: Record<string, unknown>): Record<string, unknown> => ({
    id,
    match: { pathPrefix: `/${id}` },
    upstream: up.url,
    auth: { scopes: ['read'], ...auth },
  });
  gw = await startGateway(
    (pki) => ({
      admin: { enabled: true, listen: '127.0.0.1:0' },
      authProviders: {
        'idp-jwt': {
          type: 'jwt',
          issuer: idp.issuer,
          audience: AUD,
          jwksUri: front.url,
          algorithms: ['ES256'],
          cacheMaxSeconds: JWT_CACHE_MS / 1000,
          jwksTimeoutMs: 1_000,
          jwksCooldownSeconds: COOLDOWN_MS / 1000,
          jwksMaxAgeSeconds: MAX_AGE_MS / 1000,
        },
        'idp-opaque': {
          type: 'introspection',
          endpoint: idp.introspectionUri,
          clientId: idp.clientId,
          clientSecretFile: secretFile,
          timeoutMs: 1_000,
          maxConcurrentCalls: 32,
          cache: { maxTtlSeconds: OPAQUE_TTL_MS / 1000, negativeTtlSeconds: 1 },
        },
      },
      listeners: [
        tlsListener(pki, {
          routes: [
            route('jwt', { providers: ['idp-jwt'] }),
            route('opaque', { providers: ['idp-opaque'] }),
            route('opaque-stale', { providers: ['idp-opaque'], staleIfErrorSeconds: STALE_MS / 1000 }),
          ],
        }),
      ],
    }),
    { clock: gatewayClock },
  );
  adminPort = gw.app.adminPort() as number;
}, 60_000);

afterAll(async () => {
  await gw?.close();
  await up?.close();
  await front?.close();
  await idp?.close();
  if (files) await rm(files, { recursive: true, force: true });
  vi.restoreAllMocks();
});

// --- threat model #125 -----------------------------------------------------------------------------------

describe('threat model #125: the IdP completely down under mixed traffic', () => {
  it.each<[string, IdpFault]>([
    ['500 on both endpoints', '500'],
    ['connection reset on both endpoints', 'reset'],
  ])(
    '%s: fresh keys verify locally, cached opaque answers last their TTL, nothing unverifiable passes, IdP hits are bounded, it recovers on its own',
    async (label, fault) => {
      const tag = fault === '500' ? 'o500' : 'orst';
      const session = h2session(gw.port(), gw.pki);
      const seenFrom = up.seen.length;
      const all: Shot[] = [];
      try {
        // Warm up with the IdP answering: one JWT and one opaque token, both cached now.
        const j0 = await jwt();
        const t0 = idp.issueOpaque();
        expect(await send(session, `/jwt/${tag}-warm`, j0)).toBe(200);
        const warmSent = performance.now();
        expect(await send(session, `/opaque/${tag}-warm`, t0)).toBe(200);
        all.push(
          { kind: 'warm', path: `/jwt/${tag}-warm`, sentAt: 0, sentAbs: warmSent, status: 200 },
          { kind: 'warm', path: `/opaque/${tag}-warm`, sentAt: 0, sentAbs: warmSent, status: 200 },
        );
        // The opaque answer is fresh until at most OPAQUE_TTL after the IdP gave it, which is after warmSent.
        const opaqueFreshUntil = performance.now() + OPAQUE_TTL_MS;

        // ---- outage, key set fresh -----------------------------------------------------------------
        idp.setFault(fault, 'all');
        const outageStart = performance.now();
        const jwksAt0 = front.fetches.length;
        const introspectAt0 = idp.counts.introspection;
        const kinds = [
          'jwt-cached',
          'jwt-fresh',
          'jwt-ghost-kid',
          'opaque-cached',
          'stale-route',
          'opaque-new',
        ];
        const phase1 = await runLoad(session, {
          ratePerSec: 60,
          durationMs: 2_600,
          maxRequests: 160,
          make: async (i) => {
            const kind = kinds[i % kinds.length] as string;
            const path = (r: string): string => `/${r}/${tag}-p1-${i}`;
            switch (kind) {
              case 'jwt-cached':
                return { kind, path: path('jwt'), token: j0 };
              case 'jwt-fresh':
                return { kind, path: path('jwt'), token: await jwt() };
              case 'jwt-ghost-kid':
                return { kind, path: path('jwt'), token: await ghostKidJwt() };
              case 'opaque-cached':
                return { kind, path: path('opaque'), token: t0 };
              case 'stale-route':
                return { kind, path: path('opaque-stale'), token: t0 };
              default:
                // Valid at the IdP, never seen by the gateway: only the IdP could vouch for it.
                return { kind, path: path('opaque'), token: idp.issueOpaque() };
            }
          },
        });
        const phase1Ms = performance.now() - outageStart;
        const readyFresh = await adminGet(adminPort, '/readyz');
        all.push(...phase1);
        const jwksPhase1 = front.fetches.length - jwksAt0;
        const introspectPhase1 = idp.counts.introspection - introspectAt0;

        // JWTs whose key the gateway holds keep passing: it verifies them locally while the set is fresh.
        expect(
          statusesOf(phase1, 'jwt-cached').every((s) => s === 200),
          JSON.stringify(tally(phase1, 'jwt-cached')),
        ).toBe(true);
        expect(
          statusesOf(phase1, 'jwt-fresh').every((s) => s === 200),
          JSON.stringify(tally(phase1, 'jwt-fresh')),
        ).toBe(true);
        // An unknown kid cannot be verified: 401 (set fresh, cooling down) or 503 (refetch failed / backing off).
        const ghost = statusesOf(phase1, 'jwt-ghost-kid');
        expect(ghost.length).toBeGreaterThan(10);
        expect(
          ghost.every((s) => s === 401 || s === 503),
          JSON.stringify(tally(phase1, 'jwt-ghost-kid')),
        ).toBe(true);
        // A token the gateway never saw cannot be vouched for: 503 (unavailable, not invalid), never 200.
        expect(
          statusesOf(phase1, 'opaque-new').every((s) => s === 503),
          JSON.stringify(tally(phase1, 'opaque-new')),
        ).toBe(true);
        // The cached opaque answer is served until its TTL ends, then 503: no stale positive on /opaque.
        const cached = phase1.filter((s) => s.kind === 'opaque-cached');
        expect(cached[0]?.status).toBe(200);
        const afterTtl = cached.filter((s) => s.sentAbs > opaqueFreshUntil);
        expect(afterTtl.length).toBeGreaterThan(0);
        expect(afterTtl.map((s) => s.status)).toEqual(afterTtl.map(() => 503));
        const firstDenied = cached.findIndex((s) => s.status !== 200);
        expect(cached.slice(firstDenied).every((s) => s.status === 503)).toBe(true); // no flapping back to 200
        // ... while the route with staleIfErrorSeconds serves that same answer on (threat model #55's opt-in).
        expect(
          statusesOf(phase1, 'stale-route').every((s) => s === 200),
          JSON.stringify(tally(phase1, 'stale-route')),
        ).toBe(true);
        // /readyz follows the key set, and it is still fresh (jwks.ts readiness(); introspection has no probe).
        expect(readyFresh.status).toBe(200);
        // Bounded IdP traffic: JWKS fetches follow the backoff schedule, however many unknown kids arrive;
        // introspection calls follow the pause schedule, however many new tokens arrive, and none is made
        // for a cache hit.
        expect(jwksPhase1).toBeLessThanOrEqual(backoffAttempts(phase1Ms));
        const opaqueRequests = phase1.filter((s) =>
          ['opaque-cached', 'stale-route', 'opaque-new'].includes(s.kind),
        );
        const freshHits = cached.filter((s) => s.status === 200).length;
        expect(introspectPhase1).toBeGreaterThanOrEqual(PAUSE_AFTER_FAILURES);
        expect(introspectPhase1).toBeLessThan(statusesOf(phase1, 'opaque-new').length);
        expect(introspectPhase1).toBeLessThanOrEqual(introspectionAttempts(phase1Ms));
        expect(introspectPhase1).toBeLessThanOrEqual(opaqueRequests.length - freshHits);

        // ---- outage, key set past its max age (the wall clock moves past jwksMaxAgeSeconds) --------------
        const jwksAt1 = front.fetches.length;
        const phase2Start = performance.now();
        advanceClocks(MAX_AGE_MS + 1_000);
        const phase2 = await runLoad(session, {
          ratePerSec: 40,
          durationMs: 600,
          maxRequests: 24,
          make: async (i) => {
            const kind = ['jwt-cached', 'jwt-fresh', 'opaque-cached', 'stale-route'][i % 4] as string;
            const r = kind.startsWith('jwt') ? 'jwt' : kind === 'stale-route' ? 'opaque-stale' : 'opaque';
            const token = kind === 'jwt-fresh' ? await jwt() : kind === 'jwt-cached' ? j0 : t0;
            return { kind, path: `/${r}/${tag}-p2-${i}`, token };
          },
        });
        const phase2Ms = performance.now() - phase2Start;
        const readyStale = await adminGet(adminPort, '/readyz');
        all.push(...phase2);
        const jwksPhase2 = front.fetches.length - jwksAt1;

        // A key set older than its max age whose refresh fails is not used: even the known key → 503.
        expect(
          statusesOf(phase2, 'jwt-fresh').every((s) => s === 503),
          JSON.stringify(tally(phase2, 'jwt-fresh')),
        ).toBe(true);
        expect(
          statusesOf(phase2, 'jwt-cached').every((s) => s === 503),
          JSON.stringify(tally(phase2, 'jwt-cached')),
        ).toBe(true);
        expect(statusesOf(phase2, 'opaque-cached').every((s) => s === 503)).toBe(true);
        expect(statusesOf(phase2, 'stale-route').every((s) => s === 200)).toBe(true);
        expect(readyStale.status).toBe(503);
        expect((JSON.parse(readyStale.body) as { notReady: string[] }).notReady).toContainEqual(
          expect.stringMatching(/^authProviders\.idp-jwt: jwks older than its max age and refresh failing/),
        );
        expect(jwksPhase2).toBeGreaterThanOrEqual(1); // the stale set was refreshed ...
        expect(jwksPhase2).toBeLessThanOrEqual(backoffAttempts(phase2Ms)); // ... not once per request

        // ---- recovery: the IdP answers again; no restart, no purge -------------------------------------
        const failures = front.fetches.length - jwksAt0; // every fetch of the outage failed
        const jwksAtClear = front.fetches.length;
        const lastFailedFetch = front.fetches.at(-1) as number;
        idp.setFault('ok', 'all');
        const clearedAt = performance.now();
        const jwtDeadline = backoffWait(failures) + CI_MARGIN_MS;
        // Every introspection call of the outage failed; fewer of them counted (overlapping calls count once),
        // so the pause in force is at most this one.
        const opaqueDeadline = introspectionPause(idp.counts.introspection - introspectAt0) + CI_MARGIN_MS;
        let jwtRecoveredMs: number | undefined;
        let opaqueRecoveredMs: number | undefined;
        const probes: Shot[] = [];
        const deadline = Math.max(jwtDeadline, opaqueDeadline);
        for (let i = 0; i < 400 && performance.now() - clearedAt < deadline; i++) {
          if (jwtRecoveredMs === undefined) {
            const path = `/jwt/${tag}-rec-${i}`;
            const status = await send(session, path, await jwt());
            probes.push({ kind: 'jwt-probe', path, sentAt: 0, sentAbs: performance.now(), status });
            if (status === 200) jwtRecoveredMs = performance.now() - clearedAt;
          }
          if (opaqueRecoveredMs === undefined) {
            const path = `/opaque/${tag}-rec-${i}`;
            const status = await send(session, path, idp.issueOpaque());
            probes.push({ kind: 'opaque-probe', path, sentAt: 0, sentAbs: performance.now(), status });
            if (status === 200) opaqueRecoveredMs = performance.now() - clearedAt;
          }
          if (jwtRecoveredMs !== undefined && opaqueRecoveredMs !== undefined) break;
          await sleep(100);
        }
        all.push(...probes);
        const readyAfter = await adminGet(adminPort, '/readyz');
        const j0After = await send(session, `/jwt/${tag}-after`, j0);
        all.push({ kind: 'after', path: `/jwt/${tag}-after`, sentAt: 0, sentAbs: 0, status: j0After });

        console.log(
          `[idp-outage ${label}] phase 1 (${Math.round(phase1Ms)} ms, set fresh): ${phase1.length} client requests ` +
            `(${JSON.stringify(tally(phase1))}); IdP: ${jwksPhase1} JWKS fetches for ` +
            `${statusesOf(phase1, 'jwt-ghost-kid').length} unknown-kid requests (ghost: ${JSON.stringify(tally(phase1, 'jwt-ghost-kid'))}), ` +
            `${introspectPhase1} introspection calls for ${opaqueRequests.length} opaque requests ` +
            `(${freshHits} cache hits on /opaque, ${afterTtl.length} sent after the TTL). ` +
            `Phase 2 (+${MAX_AGE_MS + 1_000} ms wall clock, ${Math.round(phase2Ms)} ms): ${phase2.length} requests ` +
            `(${JSON.stringify(tally(phase2))}), ${jwksPhase2} JWKS fetches. Recovery: backoff wait ${backoffWait(failures)} ms ` +
            `after ${failures} failed fetches (last ${Math.round(clearedAt - lastFailedFetch)} ms before the clear); ` +
            `JWT ${jwtRecoveredMs === undefined ? 'NOT' : Math.round(jwtRecoveredMs)} ms, opaque ` +
            `${opaqueRecoveredMs === undefined ? 'NOT' : Math.round(opaqueRecoveredMs)} ms; ` +
            `${front.fetches.length - jwksAtClear} JWKS fetch(es) for ${probes.filter((p) => p.kind === 'jwt-probe').length} JWT probes`,
        );

        // Back within one backoff period, by one fetch (no fetch per probe while it waited), without a restart.
        expect(opaqueRecoveredMs).toBeDefined();
        expect(opaqueRecoveredMs).toBeLessThanOrEqual(opaqueDeadline); // the first probe after the pause
        expect(jwtRecoveredMs).toBeDefined();
        expect(jwtRecoveredMs).toBeLessThanOrEqual(jwtDeadline);
        expect(front.fetches.length - jwksAtClear).toBe(1);
        // Until then the JWT probes were refused as unavailable, never as invalid.
        expect(
          probes.filter((p) => p.kind === 'jwt-probe' && p.status !== 200).every((p) => p.status === 503),
        ).toBe(true);
        expect(readyAfter.status).toBe(200);
        expect(j0After).toBe(200);

        // No request failed at the client; no denial reached the upstream; each denial has its reason code.
        expect(all.filter((s) => s.status === 0)).toEqual([]);
        expectUpstreamSawOnlyAllowed(all, seenFrom);
        await expectReasonCodes(all);
      } finally {
        idp.setFault('ok', 'all');
        session.close();
      }
    },
    40_000,
  );

  describe('introspection retry rate while the IdP fails (threat model #125 "bounded IdP retry QPS")', () => {
    const TOKENS = 3;
    let calls = 0;
    let requests = 0;
    let outageMs = 0;

    it('the same few uncached tokens, sent again and again: every request 503, nothing upstream', async () => {
      const session = h2session(gw.port(), gw.pki);
      const seenFrom = up.seen.length;
      const tokens = Array.from({ length: TOKENS }, () => idp.issueOpaque());
      try {
        idp.setFault('500', 'introspection');
        const before = idp.counts.introspection;
        const start = performance.now();
        const shots = await runLoad(session, {
          ratePerSec: 30,
          durationMs: 2_000,
          maxRequests: 60,
          make: (i) => ({ kind: 'repeat', path: `/opaque/repeat-${i}`, token: tokens[i % TOKENS] as string }),
        });
        outageMs = performance.now() - start;
        calls = idp.counts.introspection - before;
        requests = shots.length;
        console.log(
          `[idp-outage introspection retries] ${requests} requests with ${TOKENS} distinct tokens in ` +
            `${Math.round(outageMs)} ms → ${calls} introspection calls (${JSON.stringify(tally(shots))})`,
        );
        expect(
          shots.every((s) => s.status === 503),
          JSON.stringify(tally(shots)),
        ).toBe(true);
        expectUpstreamSawOnlyAllowed(shots, seenFrom);
        await expectReasonCodes(shots);
      } finally {
        idp.setFault('ok', 'all');
        session.close();
      }
    }, 15_000);

    // Threat model #125 "bounded IdP retry QPS": after two failures in a row the provider pauses its calls and then
    // probes one at a time (introspection.ts), whatever the number of tokens or requests.
    it('asks the failing IdP a bounded number of times (the pause schedule), not once per request', () => {
      expect(requests).toBeGreaterThan(30);
      expect(calls).toBeLessThanOrEqual(introspectionAttempts(outageMs));
      expect(calls).toBeLessThan(requests / 4);
    }, 5_000);
  });
});

// --- threat model #126 -----------------------------------------------------------------------------------

describe('threat model #126: JWKS rotation under load', () => {
  it('k1+k2 published, then k2 issued, then k1 removed: no valid token refused in the overlap, one fetch picks up k2, k1 fails only after the max age, fetches bounded', async () => {
    const session = h2session(gw.port(), gw.pki);
    const seenFrom = up.seen.length;
    const all: Shot[] = [];
    const k1 = idp.currentKid;
    try {
      const k1Cached = await jwt(k1);
      expect(await send(session, '/jwt/rot-warm', k1Cached)).toBe(200);
      all.push({ kind: 'warm', path: '/jwt/rot-warm', sentAt: 0, sentAbs: 0, status: 200 });
      // The unknown-kid refetch is allowed once the cooldown since the last fetch has passed: let it pass.
      const sinceLast = performance.now() - (front.fetches.at(-1) ?? 0);
      if (sinceLast < COOLDOWN_MS + 300) await sleep(COOLDOWN_MS + 300 - sinceLast);

      let k2 = '';
      const phase = async (
        name: string,
        durationMs: number,
        kinds: readonly string[],
      ): Promise<{ shots: Shot[]; fetches: number; ms: number }> => {
        const at = front.fetches.length;
        const start = performance.now();
        const shots = await runLoad(session, {
          ratePerSec: 50,
          durationMs,
          maxRequests: Math.ceil((durationMs / 1000) * 50) + 5,
          make: async (i) => {
            const kind = kinds[i % kinds.length] as string;
            const token = kind === 'k1-cached' ? k1Cached : await jwt(kind === 'k2' ? k2 : k1);
            return { kind, path: `/jwt/rot-${name}-${i}`, token };
          },
        });
        all.push(...shots);
        return { shots, fetches: front.fetches.length - at, ms: performance.now() - start };
      };

      // A: k1 only. B: the IdP publishes k1+k2 (sign still uses k1). C: it issues with k2 too.
      const a = await phase('a', 800, ['k1', 'k1-cached']);
      k2 = await idp.rotate(); // publishes [k1, k2]
      const b = await phase('b', 600, ['k1', 'k1-cached']);
      const c = await phase('c', 1_200, ['k1', 'k2']);
      // D: the IdP stops publishing k1. The gateway's set (fetched in C) still holds it and is fresh.
      front.retired.add(k1);
      const d = await phase('d', 1_200, ['k1', 'k2']);
      // E: the set reaches its max age (measured from its fetch in C): k1 is gone, k2 stays.
      const lastFetch = front.fetches.at(-1) as number;
      advanceClocks(MAX_AGE_MS - (performance.now() - lastFetch) + 1_000);
      const e = await phase('e', 1_500, ['k1', 'k2', 'k1-cached']);

      const figures = Object.entries({ a, b, c, d, e }).map(
        ([n, p]) =>
          `${n}: ${p.shots.length} req ${JSON.stringify(tally(p.shots))} ${p.fetches} JWKS fetch(es)`,
      );
      console.log(`[idp-rotation] ${figures.join('; ')}`);

      // Overlap and after removal, before the max age: every valid token passes, k1 and k2 alike.
      for (const p of [a, b, c, d]) expect(tally(p.shots)).toEqual({ 200: p.shots.length });
      expect(statusesOf(c.shots, 'k2').length).toBeGreaterThan(10);
      expect(statusesOf(d.shots, 'k1').length).toBeGreaterThan(10); // k1 removed at the IdP, still trusted
      // Fetches: publishing k2 alone causes none; the first k2 token exactly one; nothing while the set is fresh.
      expect([a.fetches, b.fetches, c.fetches, d.fetches]).toEqual([0, 0, 1, 0]);
      // After the max age: k1 refused (invalid, not unavailable), the cached k1 token too; k2 passes.
      expect(
        statusesOf(e.shots, 'k1').every((s) => s === 401),
        JSON.stringify(tally(e.shots, 'k1')),
      ).toBe(true);
      expect(statusesOf(e.shots, 'k1-cached').every((s) => s === 401)).toBe(true);
      expect(
        statusesOf(e.shots, 'k2').every((s) => s === 200),
        JSON.stringify(tally(e.shots, 'k2')),
      ).toBe(true);
      // One scheduled refresh, then k1's now-unknown kid refetches at most once per cooldown.
      expect(e.fetches).toBeGreaterThanOrEqual(1);
      expect(e.fetches).toBeLessThanOrEqual(1 + Math.floor(e.ms / COOLDOWN_MS));
      const total = [a, b, c, d, e].reduce((n, p) => n + p.fetches, 0);
      const sent = [a, b, c, d, e].reduce((n, p) => n + p.shots.length, 0);
      expect(total).toBeLessThanOrEqual(2 + Math.floor(e.ms / COOLDOWN_MS));
      expect(sent).toBeGreaterThan(200);

      expect(all.filter((s) => s.status === 0)).toEqual([]);
      expectUpstreamSawOnlyAllowed(all, seenFrom);
      await expectReasonCodes(all);
    } finally {
      front.retired.clear();
      session.close();
    }
  }, 30_000);
});
