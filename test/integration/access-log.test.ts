/**
 * The access-log contract (issue 4 point 3) end to end: the real gateway (in-process, its log lines
 * captured), a recording upstream, the fake IdP over HTTP, a static tokens file, real HTTP/1.1, HTTP/2 and
 * TLS clients. One `request` line per request with every field, the request id rule (kept when valid, else
 * a UUID; sent upstream once and back to the client), denials and upstream failures with their reason, the
 * principal of an authenticated request named by provider and token hash, never by token, and a grep of
 * the whole captured log for every secret and query string the run sent. `log.access: false` keeps the
 * warn lines of failures. A TCP listener logs one `tcp connection` line per connection.
 *
 * The non-blocking destination is shown on the built binary: stdout piped to the test and not read for
 * 2,000 requests (the pipe fills), every request still answered.
 */
import { execFileSync, type ChildProcess } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { closeSync, constants as fsConstants, openSync, readFileSync, readSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { Agent, request as httpsRequest } from 'node:https';
import { createServer as createNetServer, type AddressInfo, type Server as NetServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tokenHash } from '../../src/authn/bearer.js';
import { tokenCreate } from '../../src/commands/token.js';
import { createLogDestination, createLogger } from '../../src/observability/logger.js';
import { freePort, spawnCli } from '../helpers/binary.js';
import { h1, h2, h2session, tlsOptions, type Reply } from '../helpers/clients.js';
import { createFakeIdp, type FakeIdp } from '../helpers/idp.js';
import { startGateway, tlsListener, type TestGateway } from '../helpers/gateway.js';
import { writePki, type TestPkiPaths } from '../helpers/pki.js';
import { startUpstream, type SeenRequest, type TestUpstream } from '../helpers/upstream.js';

const AUD = 'gw-api';
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
type Line = Record<string, unknown>;

/** Every value of `name` among the raw header lines the upstream received. */
function values(seen: SeenRequest, name: string): string[] {
  const out: string[] = [];
  for (let i = 0; i + 1 < seen.rawHeaders.length; i += 2)
    if ((seen.rawHeaders[i] as string).toLowerCase() === name) out.push(seen.rawHeaders[i + 1] as string);
  return out;
}

/** SHA-256 of a PEM certificate, lower-case hex without colons (the log's clientFingerprint). */
function fingerprintOf(certFile: string): string {
  return new X509Certificate(readFileSync(certFile)).fingerprint256.replaceAll(':', '').toLowerCase();
}

/** The lines matching `pred`, waiting up to 3 s for at least one (a line is written once the answer is). */
async function linesWhere(gw: TestGateway, pred: (l: Line) => boolean): Promise<Line[]> {
  const until = Date.now() + 3_000;
  for (;;) {
    const found = gw.logs().filter(pred);
    if (found.length > 0 || Date.now() > until) return found;
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** The `request` lines of one request id (after a short settle, so a duplicate would show). */
async function requestLines(gw: TestGateway, requestId: string): Promise<Line[]> {
  await linesWhere(gw, (l) => l.msg === 'request' && l.requestId === requestId);
  await new Promise((r) => setTimeout(r, 50));
  return gw.logs().filter((l) => l.msg === 'request' && l.requestId === requestId);
}

/** A TCP server that echoes what it gets and closes when the client does. */
async function startEchoServer(): Promise<{ server: NetServer; port: number }> {
  const server = createNetServer((s) => {
    s.on('error', () => undefined);
    s.pipe(s);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, port: (server.address() as AddressInfo).port };
}

describe('access log: one line per request, every field, nothing secret (real gateway)', () => {
  let idp: FakeIdp;
  let up: TestUpstream;
  let echo: { server: NetServer; port: number };
  let gw: TestGateway;
  let files: string;
  let port: number;
  let aliceFp: string;
  let staticToken: string;
  /** Every secret and query string this suite sent: none may appear in the log. */
  const secrets: string[] = [];

  beforeAll(async () => {
    idp = await createFakeIdp();
    await idp.listen();
    up = await startUpstream();
    echo = await startEchoServer();
    files = await mkdtemp(join(tmpdir(), 'portcullis-access-'));
    const secretFile = join(files, 'introspection-secret');
    await writeFile(secretFile, `${idp.clientSecret}\n`, { mode: 0o600 });
    const tokensFile = join(files, 'tokens.json');
    staticToken = (
      await tokenCreate({ file: tokensFile, name: 'carol', expiresInSeconds: 3600, scopes: ['read'] })
    ).token;
    secrets.push(staticToken);
    const dead = await freePort();
    const route = (id: string, extra: Record<string, unknown> = {}): Record<string, unknown> => ({
      id,
      match: { pathPrefix: `/${id}` },
      upstream: up.url,
      ...extra,
    });
    gw = await startGateway((pki) => ({
      log: { level: 'info', access: true },
      authProviders: {
        'idp-jwt': {
          type: 'jwt',
          issuer: idp.issuer,
          audience: AUD,
          jwksUri: idp.jwksUri,
          algorithms: ['ES256'],
        },
        'idp-opaque': {
          type: 'introspection',
          endpoint: idp.introspectionUri,
          clientId: idp.clientId,
          clientSecretFile: secretFile,
          timeoutMs: 1_000,
        },
        team: { type: 'static', tokensFile },
      },
      listeners: [
        tlsListener(pki, {
          routes: [
            route('open'),
            route('acl', { allowClients: ['CN=bob'] }),
            route('jwt', { auth: { providers: ['idp-jwt'] } }),
            route('opaque', { auth: { providers: ['idp-opaque'] } }),
            route('static', { auth: { providers: ['team'] } }),
            route('query', { auth: { providers: ['idp-jwt'], allowQueryToken: true } }),
            route('dead', { upstream: `http://127.0.0.1:${dead}` }),
          ],
        }),
        {
          name: 'raw',
          listen: '127.0.0.1:0',
          protocol: 'tcp',
          tls: {
            cert: pki.server.cert,
            key: pki.server.key,
            clientCertificate: 'require',
            clientCa: pki.ca,
            crl: pki.crl,
          },
          upstream: `tcp://127.0.0.1:${echo.port}`,
        },
      ],
    }));
    port = gw.port('main');
    aliceFp = fingerprintOf(gw.pki.clients.alice.cert);
  });

  afterAll(async () => {
    await gw?.close();
    await up?.close();
    await idp?.close();
    await new Promise<void>((r) => (echo ? echo.server.close(() => r()) : r()));
    if (files) await rm(files, { recursive: true, force: true });
  });

  /** Sends `path` (h1 or h2) and returns the reply and what the upstream saw (0 or 1 request). */
  async function send(
    proto: 'h1' | 'h2',
    path: string,
    opts: { method?: string; headers?: Record<string, string | string[]>; body?: string } = {},
  ): Promise<{ reply: Reply; seen: SeenRequest | undefined }> {
    const n = up.seen.length;
    let reply: Reply;
    if (proto === 'h1') {
      reply = await h1(port, gw.pki, {
        path,
        ...(opts.method ? { method: opts.method } : {}),
        ...(opts.headers ? { headers: opts.headers } : {}),
        ...(opts.body !== undefined ? { body: opts.body } : {}),
      });
    } else {
      const s = h2session(port, gw.pki);
      try {
        reply = await h2(s, { ':path': path, ':method': opts.method ?? 'GET', ...opts.headers }, opts.body);
      } finally {
        s.close();
      }
    }
    expect(up.seen.length - n).toBeLessThanOrEqual(1);
    return { reply, seen: up.seen.length > n ? up.seen.at(-1) : undefined };
  }

  it.each(['h1', 'h2'] as const)(
    '%s: a forwarded POST logs exactly one line with every field; the upstream got that one request id',
    async (proto) => {
      const body = 'x'.repeat(1_234);
      const query = `?q=query-secret-${proto}&z=1`;
      secrets.push(query.slice(1), `query-secret-${proto}`);
      const { reply, seen } = await send(proto, `/open//a/./b/%61${query}`, {
        method: 'POST',
        headers: { 'content-type': 'text/plain' },
        body,
      });
      expect(reply.status).toBe(200);
      expect(seen?.bodyBytes).toBe(1_234);
      const ids = values(seen as SeenRequest, 'x-request-id');
      expect(ids).toHaveLength(1);
      const rid = ids[0] as string;
      expect(rid).toMatch(UUID);
      expect(reply.headers['x-request-id']).toBe(rid);
      const lines = await requestLines(gw, rid);
      expect(lines).toHaveLength(1);
      const l = lines[0] as Line;
      expect(l).toMatchObject({
        level: 'info',
        msg: 'request',
        listener: 'main',
        route: 'open',
        method: 'POST',
        path: '/open/a/b/a',
        status: 200,
        bytesIn: 1_234,
        bytesOut: Buffer.byteLength(reply.body),
        clientFingerprint: aliceFp,
        outcome: 'forwarded',
        requestId: rid,
      });
      expect(Buffer.byteLength(reply.body)).toBeGreaterThan(0);
      expect(String(l.clientSubject)).toContain('CN=alice');
      expect(l.clientFingerprint).toMatch(/^[0-9a-f]{64}$/);
      expect(typeof l.time).toBe('string');
      expect(Math.abs(Date.parse(l.time as string) - Date.now())).toBeLessThan(60_000);
      expect(typeof l.durationMs).toBe('number');
      expect(l.durationMs as number).toBeGreaterThan(0);
      // A clean forward has no reason, and an unauthenticated route no principal.
      for (const k of ['reason', 'principal', 'provider', 'tokenHash']) expect(l, k).not.toHaveProperty(k);
    },
  );

  it.each(['h1', 'h2'] as const)(
    '%s: a valid client X-Request-Id is kept upstream, in the answer and in the log',
    async (proto) => {
      const rid = `abc-123_X.y:${proto}`;
      const { reply, seen } = await send(proto, '/open/keep', { headers: { 'x-request-id': rid } });
      expect(reply.status).toBe(200);
      expect(values(seen as SeenRequest, 'x-request-id')).toEqual([rid]);
      expect(reply.headers['x-request-id']).toBe(rid);
      expect(await requestLines(gw, rid)).toHaveLength(1);
    },
  );

  it.each<[string, string | string[]]>([
    ['129 characters', 'a'.repeat(129)],
    ['a space', 'has space'],
    ['two headers', ['first-id', 'second-id']],
    ['a quote', 'id"quoted'],
    ['empty', ''],
  ])(
    'an X-Request-Id with %s is replaced by a UUID, upstream, in the answer and in the log',
    async (_label, bad) => {
      const { reply, seen } = await send('h1', '/open/replace', { headers: { 'x-request-id': bad } });
      expect(reply.status).toBe(200);
      const ids = values(seen as SeenRequest, 'x-request-id');
      expect(ids).toHaveLength(1);
      expect(ids[0]).toMatch(UUID);
      expect(reply.headers['x-request-id']).toBe(ids[0]);
      expect(await requestLines(gw, ids[0] as string)).toHaveLength(1);
    },
  );

  it.each<[string, 'h1' | 'h2', string, Record<string, string>, number, string]>([
    ['no route', 'h1', '/nowhere/x?q=query-secret-404', {}, 404, 'ERR_ROUTE_NOT_FOUND'],
    ['no route', 'h2', '/nowhere/y?q=query-secret-404b', {}, 404, 'ERR_ROUTE_NOT_FOUND'],
    ['route ACL', 'h1', '/acl/x?q=query-secret-403', {}, 403, 'ERR_AUTHZ_ROUTE_ACL'],
    ['missing token', 'h1', '/jwt/x?q=query-secret-401', {}, 401, 'ERR_AUTHN_MISSING'],
    [
      'bad token',
      'h2',
      '/jwt/y?q=query-secret-401b',
      { authorization: 'Bearer not-a-real-token-s3cr3t' },
      401,
      'ERR_AUTHN_INVALID_TOKEN',
    ],
    ['bad path', 'h1', '/open/%2f..?q=query-secret-400', {}, 400, 'ERR_REQUEST_BAD_PATH'],
  ])(
    'denied (%s, %s): outcome denied with its ERR_* reason, X-Request-Id in the answer, upstream saw nothing',
    async (_label, proto, path, headers, status, reason) => {
      secrets.push(path.slice(path.indexOf('?') + 1), ...Object.values(headers));
      const { reply, seen } = await send(proto, path, { headers });
      expect(reply.status).toBe(status);
      expect(seen).toBeUndefined();
      const rid = reply.headers['x-request-id'] as string;
      expect(rid).toMatch(UUID);
      const lines = await requestLines(gw, rid);
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatchObject({
        level: 'info',
        listener: 'main',
        status,
        outcome: 'denied',
        reason,
        path: path.slice(0, path.indexOf('?')),
        clientFingerprint: aliceFp,
        bytesOut: Buffer.byteLength(reply.body),
      });
    },
  );

  it('a denial keeps a valid client request id too', async () => {
    const { reply, seen } = await send('h1', '/nowhere/z', { headers: { 'x-request-id': 'client-id-404' } });
    expect(reply.status).toBe(404);
    expect(seen).toBeUndefined();
    expect(reply.headers['x-request-id']).toBe('client-id-404');
    expect(await requestLines(gw, 'client-id-404')).toHaveLength(1);
  });

  it('upstream down: 502, outcome upstream_error with its reason, at level warn', async () => {
    const { reply } = await send('h1', '/dead/x?q=query-secret-502');
    secrets.push('q=query-secret-502');
    expect(reply.status).toBe(502);
    const rid = reply.headers['x-request-id'] as string;
    const lines = await requestLines(gw, rid);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({
      level: 'warn',
      route: 'dead',
      path: '/dead/x',
      status: 502,
      outcome: 'upstream_error',
      reason: 'ERR_UPSTREAM_UNAVAILABLE',
    });
  });

  it('authenticated routes log principal, provider and a 12-hex token hash (JWT, opaque, static, query token)', async () => {
    const jwt = await idp.sign({ sub: 'alice', aud: AUD });
    const opaque = idp.issueOpaque({
      active: true,
      sub: 'opaque-user',
      exp: Math.floor(Date.now() / 1000) + 3600,
    });
    const queryJwt = await idp.sign({ sub: 'query-user', aud: AUD, jti: 'q1' });
    const cookie = 'session=cookie-secret-4711; theme=dark';
    const basic = 'Basic dXNlcjpzZWNyZXQtcGFzcy0xMjM=';
    secrets.push(
      jwt,
      opaque,
      queryJwt,
      `Bearer ${jwt}`,
      `Bearer ${opaque}`,
      `Bearer ${staticToken}`,
      cookie,
      'cookie-secret-4711',
      basic,
    );
    const cases: [string, string, Record<string, string>, string, string, string][] = [
      [
        'h1',
        '/jwt/a?j=query-secret-jwt',
        { authorization: `Bearer ${jwt}`, cookie },
        'alice',
        'idp-jwt',
        jwt,
      ],
      [
        'h2',
        '/opaque/a?o=query-secret-opaque',
        { authorization: `Bearer ${opaque}`, cookie },
        'opaque-user',
        'idp-opaque',
        opaque,
      ],
      [
        'h1',
        '/static/a?s=query-secret-static',
        { authorization: `Bearer ${staticToken}` },
        'carol',
        'team',
        staticToken,
      ],
      ['h1', `/query/a?access_token=${queryJwt}&k=query-secret-keep`, {}, 'query-user', 'idp-jwt', queryJwt],
    ];
    for (const [proto, path, headers, principal, provider, token] of cases) {
      secrets.push(path.slice(path.indexOf('?') + 1));
      const { reply, seen } = await send(proto as 'h1' | 'h2', path, { headers });
      expect(reply.status, path).toBe(200);
      expect(seen, path).toBeDefined();
      const rid = values(seen as SeenRequest, 'x-request-id')[0] as string;
      const lines = await requestLines(gw, rid);
      expect(lines, path).toHaveLength(1);
      expect(lines[0], path).toMatchObject({
        outcome: 'forwarded',
        principal,
        provider,
        tokenHash: tokenHash(token).slice(0, 12),
        path: path.slice(0, path.indexOf('?')),
      });
      expect((lines[0] as Line).tokenHash).toMatch(/^[0-9a-f]{12}$/);
    }
    // An Authorization and a cookie on an open route are relayed (not the gateway's business) but never logged.
    const { reply } = await send('h1', '/open/creds', { headers: { authorization: basic, cookie } });
    expect(reply.status).toBe(200);
  });

  it('TCP listener: one `tcp connection` line with a connection id, the client certificate and the bytes', async () => {
    const before = gw.logs().filter((l) => l.msg === 'tcp connection').length;
    const got = await new Promise<string>((resolve, reject) => {
      const s = tlsConnect({ ...tlsOptions(gw.pki, 'alice'), host: '127.0.0.1', port: gw.port('raw') });
      let text = '';
      s.on('secureConnect', () => s.write('hello tcp'));
      s.on('data', (c: Buffer) => {
        text += c.toString();
        if (text.length >= 9) s.end();
      });
      s.on('close', () => resolve(text));
      s.on('error', reject);
    });
    expect(got).toBe('hello tcp');
    const lines = (await linesWhere(gw, (l) => l.msg === 'tcp connection')).slice(before);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({
      level: 'info',
      listener: 'raw',
      clientFingerprint: aliceFp,
      bytesIn: 9,
      bytesOut: 9,
    });
    const l = lines[0] as Line;
    expect(l.connectionId).toMatch(UUID);
    expect(String(l.clientSubject)).toContain('CN=alice');
    expect(typeof l.durationMs).toBe('number');
    expect(typeof l.reason).toBe('string');
  });

  // Last: greps everything the other tests logged.
  it('the whole captured log holds no token, cookie, Authorization value or query string the run sent', () => {
    const all = JSON.stringify(gw.logs());
    expect(gw.logs().filter((l) => l.msg === 'request').length).toBeGreaterThanOrEqual(20);
    expect(secrets.length).toBeGreaterThanOrEqual(20);
    for (const s of secrets) {
      expect(s.length, s).toBeGreaterThan(4);
      expect(all.includes(s), `log contains ${s.slice(0, 40)}`).toBe(false);
    }
    // The control: the grep sees what is there.
    expect(all.includes('/open/a/b/a')).toBe(true);
    expect(all.includes(aliceFp)).toBe(true);
  });
});

describe('log.access: false', () => {
  let up: TestUpstream;
  let gw: TestGateway;

  beforeAll(async () => {
    up = await startUpstream();
    const dead = await freePort();
    gw = await startGateway((pki) => ({
      log: { level: 'info', access: false },
      listeners: [
        tlsListener(pki, {
          routes: [
            { id: 'open', match: { pathPrefix: '/open' }, upstream: up.url },
            { id: 'dead', match: { pathPrefix: '/dead' }, upstream: `http://127.0.0.1:${dead}` },
          ],
        }),
      ],
    }));
  });

  afterAll(async () => {
    await gw?.close();
    await up?.close();
  });

  it('no info request line for a forward or a denial, but a 502 still logs its warn line', async () => {
    const ok = await h1(gw.port(), gw.pki, { path: '/open/x' });
    expect(ok.status).toBe(200);
    const denied = await h1(gw.port(), gw.pki, { path: '/nowhere' });
    expect(denied.status).toBe(404);
    const bad = await h1(gw.port(), gw.pki, { path: '/dead/x' });
    expect(bad.status).toBe(502);
    const warn = await linesWhere(
      gw,
      (l) => l.msg === 'request' && l.requestId === bad.headers['x-request-id'],
    );
    expect(warn).toHaveLength(1);
    expect(warn[0]).toMatchObject({ level: 'warn', status: 502, outcome: 'upstream_error', route: 'dead' });
    await new Promise((r) => setTimeout(r, 100));
    const requests = gw.logs().filter((l) => l.msg === 'request');
    expect(requests).toHaveLength(1);
    expect(requests.filter((l) => l.level === 'info')).toEqual([]);
  });
});

/** Keep-alive GETs over one agent; resolves with the statuses. */
function keepAliveGets(
  port: number,
  pki: TestPkiPaths,
  n: number,
  agent: Agent,
  phase: string,
): Promise<number[]> {
  const one = (i: number): Promise<number> =>
    new Promise((resolve) => {
      const req = httpsRequest(
        {
          ...tlsOptions(pki, 'alice'),
          host: '127.0.0.1',
          port,
          path: `/${phase}/${i}?q=${i}`,
          agent,
          headers: { host: `localhost:${port}` },
        },
        (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode ?? 0));
          res.on('error', () => resolve(-1));
        },
      );
      req.setTimeout(10_000, () => req.destroy());
      req.on('error', () => resolve(-1));
      req.end();
    });
  return Promise.all(Array.from({ length: n }, (_, i) => one(i)));
}

describe('the built binary: a stalled stdout never blocks the request path', () => {
  let dir: string;
  let child: ChildProcess | undefined;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'portcullis-stall-'));
  });

  afterAll(async () => {
    if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true });
  });

  it('2,000 keep-alive requests all answered while nobody reads the log pipe; the lines are there afterwards', async () => {
    const pki = await writePki(join(dir, 'pki'));
    const file = join(dir, 'portcullis.yaml');
    await writeFile(
      file,
      stringify({
        admin: { enabled: false },
        workers: 1,
        log: { level: 'info', access: true },
        listeners: [
          tlsListener(pki, {
            routes: [{ id: 'echo', match: { pathPrefix: '/' }, upstream: 'builtin:echo' }],
          }),
        ],
      }),
    );
    const c = spawnCli(['start', '--config', file]);
    child = c;
    let stderr = '';
    c.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    // Read stdout through the start and a warm-up (the figures then compare a warm process with
    // itself), then stop reading: from there on the pipe fills and stays full.
    let flowing = '';
    const onData = (d: Buffer): void => {
      flowing += d.toString();
    };
    c.stdout?.on('data', onData);
    const port = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no listening line within 15 s:\n${stderr}`)), 15_000);
      const poll = setInterval(() => {
        const m = /"msg":"listening"[^\n]*"port":(\d+)|"port":(\d+)[^\n]*"msg":"listening"/.exec(flowing);
        if (m) {
          clearTimeout(timer);
          clearInterval(poll);
          resolve(Number(m[1] ?? m[2]));
        }
      }, 20);
      c.once('exit', (code) => reject(new Error(`exited ${String(code)}:\n${stderr}`)));
    });
    const timed = async (phase: string): Promise<{ ok: number; ms: number }> => {
      const agent = new Agent({ keepAlive: true, maxSockets: 8 });
      const t0 = Date.now();
      const statuses = await keepAliveGets(port, pki, 2_000, agent, phase);
      agent.destroy();
      return { ok: statuses.filter((x) => x === 200).length, ms: Date.now() - t0 };
    };
    const warm = await timed('warm');
    expect(warm.ok).toBe(2_000);

    c.stdout?.off('data', onData);
    c.stdout?.pause();
    const stalled = await timed('flood');
    console.info(
      `[access-log] 2000 keep-alive requests: stdout read ${warm.ms} ms; stdout unread ${stalled.ms} ms (${stalled.ok} x 200)`,
    );
    expect(stalled.ok).toBe(2_000);
    expect(c.exitCode).toBeNull();
    // The parent stopped pulling (at most its 16 KiB high-water mark and a chunk in hand): the ~840 KB of
    // access lines were left in the full pipe and in the child's buffer, and the child served on.
    expect(c.stdout?.readableLength ?? 0).toBeLessThan(256 * 1024);

    // Now drain the pipe: the stalled phase's lines come out as the child flushes its buffer.
    let rest = '';
    c.stdout?.on('data', (d: Buffer) => (rest += d.toString()));
    c.stdout?.resume();
    const floodLines = (): string[] => rest.split('\n').filter((l) => l.includes('"path":"/flood/'));
    const until = Date.now() + 10_000;
    while (floodLines().length < 2_000 && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
    const lines = floodLines();
    console.info(
      `[access-log] stalled-phase request lines read afterwards: ${lines.length}, ${rest.length} bytes`,
    );
    // 2,000 lines of ~420 bytes are under the 16 MiB cap: none dropped.
    expect(lines).toHaveLength(2_000);
    expect(rest.includes('log lines dropped')).toBe(false);
    const first = JSON.parse(lines[0] as string) as Line;
    expect(first).toMatchObject({ msg: 'request', outcome: 'forwarded', status: 200 });
    expect(String(first.path)).toMatch(/^\/flood\/\d+$/);
    expect(rest.includes('?q=') || flowing.includes('?q=')).toBe(false);
    c.kill('SIGTERM');
    await new Promise((r) => c.once('exit', r));
  }, 60_000);
});

describe('the log destination is bounded: a stalled reader costs dropped lines, not memory', () => {
  let dir: string;
  const fds: number[] = [];

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'portcullis-fifo-'));
  });

  afterAll(async () => {
    for (const fd of fds.splice(0)) closeSync(fd);
    await rm(dir, { recursive: true, force: true });
  });

  it('1 MB of lines into a FIFO nobody reads with a 64 KiB cap: the excess is dropped and counted, then reported once read', async () => {
    const fifo = join(dir, 'log.fifo');
    execFileSync('mkfifo', [fifo]);
    const rfd = openSync(fifo, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK);
    fds.push(rfd);
    const wfd = openSync(fifo, fsConstants.O_WRONLY | fsConstants.O_NONBLOCK);
    const dest = createLogDestination(wfd, 64 * 1024);
    const logger = createLogger('info', dest);
    const pad = 'p'.repeat(150);
    for (let i = 0; i < 5_000; i++) logger.info({ i, pad }, 'request');
    // At most the pipe (64 KiB) plus the cap (64 KiB) of ~220-byte lines got through: most were dropped.
    const dropped = dest.droppedLines();
    console.info(
      `[access-log] bounded destination: ${dropped} of 5000 lines dropped with the reader stalled`,
    );
    expect(dropped).toBeGreaterThan(5_000 - (128 * 1024) / 200);
    expect(dropped).toBeLessThan(5_000);

    // Read everything: the buffered lines follow, then one warn line with the count.
    let text = '';
    const buf = Buffer.alloc(64 * 1024);
    const until = Date.now() + 5_000;
    while (!text.includes('"msg":"log lines dropped"') && Date.now() < until) {
      try {
        const n = readSync(rfd, buf, 0, buf.length, null);
        text += buf.toString('utf8', 0, n);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') throw err;
        await new Promise((r) => setTimeout(r, 20));
      }
    }
    const lines = text
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => JSON.parse(l) as Line);
    const report = lines.filter((l) => l.msg === 'log lines dropped');
    expect(report).toHaveLength(1);
    expect(report[0]).toMatchObject({ level: 'warn', service: 'portcullis', dropped });
    expect(lines.filter((l) => l.msg === 'request')).toHaveLength(5_000 - dropped);
    // Whole lines only: every line read parsed as JSON above, in order.
    const seq = lines.filter((l) => l.msg === 'request').map((l) => l.i as number);
    expect(seq).toEqual([...seq].sort((a, b) => a - b));

    // The reader goes away: the next writes fail with EPIPE, which must not throw or crash.
    closeSync(rfd);
    fds.splice(fds.indexOf(rfd), 1);
    expect(() => {
      for (let i = 0; i < 10; i++) logger.info({ i }, 'after close');
    }).not.toThrow();
    await new Promise((r) => setTimeout(r, 300));
    // EPIPE is not retried, so nothing is in flight: SonicBoom closes its fd.
    (dest as unknown as { destroy(): void }).destroy();
  });
});
