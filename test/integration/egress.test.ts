/**
 * Issue 4 point 4, last sentence: "The gateway itself never sends anything anywhere". The BUILT gateway
 * (dist/src/main.js) runs as its own process with test/helpers/egress-monitor.mjs preloaded, which writes
 * every outbound attempt of that process (TCP/TLS connects, undici and fetch, http requests, every DNS
 * query, UDP, child processes and threads) to a file. The tests then compare that file with what the
 * config allows: the configured upstreams and IdPs, nothing else.
 *
 * Also threat model #98 where telemetry.test.ts leaves it open: an oversized `baggage` (W3C limits: 8192
 * bytes, 180 members) and a forged `sampled=1` trace context, with telemetry.optOut on and off. A forged
 * trace context relayed upstream is egress of client data too, and `sampled=1` must not make the gateway
 * export anything anywhere.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { adminGet } from '../helpers/admin.js';
import { BIN, freePort, listeningPorts, startBinary } from '../helpers/binary.js';
import { h1 } from '../helpers/clients.js';
import { tlsListener } from '../helpers/gateway.js';
import { createFakeIdp, type FakeIdp } from '../helpers/idp.js';
import { writePki, type TestPkiPaths } from '../helpers/pki.js';
import { startUpstream, type TestUpstream } from '../helpers/upstream.js';

const MONITOR = resolve('test/helpers/egress-monitor.mjs');
/** How long the gateway idles (no client traffic, admin scrapes only) before the first check. */
const IDLE_MS = 5_000;

/** Threat model #98: a forged, sampled trace context from the client. */
const TRACE_ID = '4bf92f3577b34da6a3ce929d0e0e4736';
/** Over both W3C baggage limits (8192 bytes, 180 members) yet under Node's 16 KB header block. */
const OVERSIZED_BAGGAGE = Array.from({ length: 200 }, (_, i) => `member${i}=${'x'.repeat(36)}`).join(',');
const FORGED: Record<string, string> = {
  traceparent: `00-${TRACE_ID}-00f067aa0ba902b7-01`,
  tracestate: 'forged=1',
  baggage: `userId=admin,role=root,${OVERSIZED_BAGGAGE}`,
  b3: '80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1',
  'X-B3-TraceId': '80f198ee56343ba864fe8b2a57d3eff7',
  'X-B3-Sampled': '1',
  'uber-trace-id': '5d7bfb9d4e3c1a2b:5d7bfb9d4e3c1a2b:0:1',
  'X-Amzn-Trace-Id': 'Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1',
  'sentry-trace': '771a43a4192642f0b136d5159a501700-b12d6b5c57ecd8e8-1',
};

/** One line of the monitor's log. */
interface Egress {
  kind: string;
  host: string | null;
  port: number | null;
  path?: string;
  detail?: string;
  pid: number;
  time: number;
}

/** Kinds that name a connection destination (host:port or an IPC path). */
const CONNECT_KINDS = new Set([
  'tcp',
  'net.client.socket',
  'undici',
  'http.request',
  'http.get',
  'https.request',
  'https.get',
  'http2.connect',
]);

const dest = (r: Egress): string => r.path ?? `${r.host ?? '?'}:${String(r.port)}`;

function readEgress(file: string): Egress[] {
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as Egress);
}

/** The destinations seen by the connect hooks (optionally of one kind). */
function destinations(records: readonly Egress[], kind?: string): string[] {
  return [
    ...new Set(
      records.filter((r) => (kind === undefined ? CONNECT_KINDS.has(r.kind) : r.kind === kind)).map(dest),
    ),
  ].sort();
}

/** What the config allows: connect destinations (host:port) and host names a DNS query may ask for. */
interface Allowed {
  dests: ReadonlySet<string>;
  hosts: ReadonlySet<string>;
}

/**
 * Every record that is not allowed: a connect to anything else, a DNS query for a host not in the config,
 * any UDP, any new process or thread (a child could send what this monitor cannot see), or a monitor hook
 * that failed to install.
 */
function violations(records: readonly Egress[], allowed: Allowed): Egress[] {
  return records.filter((r) => {
    if (CONNECT_KINDS.has(r.kind)) return !allowed.dests.has(dest(r));
    if (r.kind === 'http.client.request.start') return !allowed.hosts.has(r.host ?? '');
    if (r.kind.startsWith('dns.')) return !allowed.hosts.has(r.host ?? '');
    if (r.kind.startsWith('udp.') || r.kind.startsWith('spawn.') || r.kind === 'worker') return true;
    if (r.kind === 'monitor.installed') return false;
    return true; // monitor.no-channel or a kind this test does not know: look at it
  });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A gateway child process under the monitor, with everything it was configured to reach. */
interface Watched {
  optOut: boolean;
  child: ChildProcess;
  dir: string;
  pki: TestPkiPaths;
  log: string;
  idp: FakeIdp;
  port: number;
  adminPort: number;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stderr: () => string;
  /** Records up to the end of the idle window. */
  idle: Egress[];
  /** The configured upstreams and IdP, as host:port. */
  upstreamDest: string;
  deadDest: string;
  bynameDest: string;
  idpDest: string;
  allowed: Allowed;
}

/** Writes the config, spawns `node --import <monitor> dist/src/main.js start --config <file>`, waits for both listening lines. */
async function startWatched(optOut: boolean, up: TestUpstream): Promise<Watched> {
  const dir = await mkdtemp(join(tmpdir(), 'portcullis-egress-'));
  const pki = await writePki(join(dir, 'pki'));
  const idp = await createFakeIdp();
  await idp.listen();
  const secretFile = join(dir, 'introspection-secret');
  await writeFile(secretFile, `${idp.clientSecret}\n`);
  const dead = await freePort();
  const idpUrl = new URL(idp.issuer);
  const config = {
    admin: { enabled: true, listen: '127.0.0.1:0' },
    telemetry: { optOut },
    authProviders: {
      'idp-jwt': {
        type: 'jwt',
        issuer: idp.issuer,
        audience: 'api',
        jwksUri: idp.jwksUri,
        algorithms: ['ES256'],
      },
      'idp-opaque': {
        type: 'introspection',
        endpoint: idp.introspectionUri,
        clientId: idp.clientId,
        clientSecretFile: secretFile,
      },
    },
    listeners: [
      tlsListener(pki, {
        routes: [
          { id: 'jwt', match: { pathPrefix: '/jwt/' }, upstream: up.url, auth: { providers: ['idp-jwt'] } },
          {
            id: 'opaque',
            match: { pathPrefix: '/opaque/' },
            upstream: up.url,
            auth: { providers: ['idp-opaque'] },
          },
          // Configured by name: the gateway must resolve it, so the DNS hook has something to see.
          { id: 'byname', match: { pathPrefix: '/byname/' }, upstream: `http://localhost:${up.port}` },
          // Configured but down: a failed attempt is still an attempt, and must be recorded.
          { id: 'dead', match: { pathPrefix: '/dead/' }, upstream: `http://127.0.0.1:${dead}` },
          { id: 'open', match: { pathPrefix: '/' }, upstream: up.url },
        ],
      }),
    ],
  };
  const file = join(dir, 'portcullis.yaml');
  await writeFile(file, stringify(config));
  const log = join(dir, 'egress.jsonl');
  const run = startBinary(file, {
    nodeArgs: ['--import', MONITOR],
    env: { ...process.env, PORTCULLIS_EGRESS_LOG: log },
  });
  const { child, exited, stderr } = run;
  const { port, adminPort } = await listeningPorts(run, { admin: true });
  const upstreamDest = `127.0.0.1:${up.port}`;
  const idpDest = `${idpUrl.hostname}:${idpUrl.port}`;
  const deadDest = `127.0.0.1:${dead}`;
  const bynameDest = `localhost:${up.port}`;
  return {
    optOut,
    child,
    dir,
    pki,
    log,
    idp,
    port,
    adminPort: adminPort as number,
    exited,
    stderr,
    idle: [],
    upstreamDest,
    deadDest,
    bynameDest,
    idpDest,
    // Listen addresses are IP literals too: Node's server.listen passes them through dns.lookup, which
    // answers an IP literal itself without a query (the monitor still sees the call).
    allowed: {
      dests: new Set([upstreamDest, idpDest, deadDest, bynameDest]),
      hosts: new Set(['127.0.0.1', idpUrl.hostname, 'localhost']),
    },
  };
}

describe('egress monitor self-test (the hooks see what they claim to see)', () => {
  it('records TCP, TLS, fetch, http.request, DNS, UDP and a child process of a plain node script', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'portcullis-egress-self-'));
    const log = join(dir, 'egress.jsonl');
    const script = `
      import http from 'node:http'; import tls from 'node:tls'; import net from 'node:net';
      import dgram from 'node:dgram'; import { lookup } from 'node:dns'; import dnsp from 'node:dns/promises';
      import { execFileSync } from 'node:child_process';
      const srv = http.createServer((q, r) => r.end('ok'));
      await new Promise((r) => srv.listen(0, '127.0.0.1', r));
      const port = srv.address().port;
      await (await fetch('http://127.0.0.1:' + port + '/')).text();
      await new Promise((r) => http.get({ host: '127.0.0.1', port: port + 0, path: '/', agent: false }, (x) => { x.resume(); x.on('end', r); }));
      await new Promise((r) => { const s = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false }); s.on('error', r); s.on('close', r); setTimeout(() => s.destroy(), 100); });
      await new Promise((r) => { const s = net.connect({ path: '/nonexistent/portcullis-egress.sock' }); s.on('error', r); });
      await new Promise((r) => lookup('egress-self-test.invalid', r));
      await dnsp.resolveTxt('egress-self-test.invalid').catch(() => undefined);
      const u = dgram.createSocket('udp4'); await new Promise((r) => u.send('x', 9, '127.0.0.1', r)); u.close();
      execFileSync(process.execPath, ['-e', '0']);
      srv.close();
    `;
    try {
      const code = await new Promise<number | null>((res) => {
        const c = spawn(process.execPath, ['--import', MONITOR, '--input-type=module', '-e', script], {
          stdio: 'ignore',
          env: { ...process.env, PORTCULLIS_EGRESS_LOG: log },
        });
        c.on('exit', res);
      });
      expect(code).toBe(0);
      const all = readEgress(log);
      const kinds = new Set(all.map((r) => r.kind));
      for (const k of [
        'monitor.installed',
        'tcp',
        'net.client.socket',
        'undici',
        'http.get',
        'http.client.request.start',
        'dns.lookup',
        'dns.promises.resolveTxt',
        'udp.createSocket',
        'udp.send',
        'spawn.execFileSync',
      ])
        expect(kinds.has(k), `kind ${k} recorded`).toBe(true);
      // The TLS connect (tls.connect publishes no net.client.socket) is seen by the prototype hook.
      expect(all.filter((r) => r.kind === 'tcp' && r.host === '127.0.0.1').length).toBeGreaterThanOrEqual(3);
      expect(all.some((r) => r.kind === 'tcp' && r.path === '/nonexistent/portcullis-egress.sock')).toBe(
        true,
      );
      expect(all.some((r) => r.kind === 'dns.lookup' && r.host === 'egress-self-test.invalid')).toBe(true);
      expect(all.some((r) => r.kind === 'udp.send' && r.host === '127.0.0.1' && r.port === 9)).toBe(true);
      // And violations() flags what is not allowed.
      const v = violations(all, { dests: new Set(), hosts: new Set() });
      expect(v.some((r) => r.kind.startsWith('udp.'))).toBe(true);
      expect(v.some((r) => r.kind === 'spawn.execFileSync')).toBe(true);
      expect(v.some((r) => r.kind === 'dns.lookup')).toBe(true);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
  it('flags a gateway process that phones home (an injected preload: TCP, DNS and UDP)', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'portcullis-egress-home-'));
    const log = join(dir, 'egress.jsonl');
    const pki = await writePki(join(dir, 'pki'));
    const file = join(dir, 'portcullis.yaml');
    await writeFile(
      file,
      stringify({ admin: { enabled: false, listen: '127.0.0.1:0' }, listeners: [tlsListener(pki)] }),
    );
    const phoneHome = `data:text/javascript,${encodeURIComponent(
      "import net from 'node:net'; import dns from 'node:dns'; import dgram from 'node:dgram';" +
        "setTimeout(() => { net.connect(9, '127.0.0.2').on('error', () => {}); dns.lookup('telemetry.example', () => {});" +
        "const u = dgram.createSocket('udp4'); u.send('x', 8125, '127.0.0.1', () => u.close()); }, 300).unref();",
    )}`;
    const child = spawn(
      process.execPath,
      ['--import', MONITOR, '--import', phoneHome, BIN, 'start', '--config', file],
      {
        stdio: 'ignore',
        env: { ...process.env, PORTCULLIS_EGRESS_LOG: log },
      },
    );
    try {
      // Waits for the last of the three (the UDP send), bounded.
      const want = (rs: Egress[]): boolean =>
        rs.some((r) => r.kind === 'net.client.socket') &&
        rs.some((r) => r.kind === 'udp.send' && r.port === 8125);
      const until = Date.now() + 10_000;
      while (Date.now() < until && !want(readEgress(log))) await sleep(100);
      const v = violations(readEgress(log), { dests: new Set(), hosts: new Set(['127.0.0.1']) });
      expect(v.some((r) => r.kind === 'tcp' && dest(r) === '127.0.0.2:9')).toBe(true);
      expect(v.some((r) => r.kind === 'net.client.socket' && dest(r) === '127.0.0.2:9')).toBe(true);
      expect(v.some((r) => r.kind === 'dns.lookup' && r.host === 'telemetry.example')).toBe(true);
      expect(v.some((r) => r.kind === 'udp.send' && r.port === 8125)).toBe(true);
    } finally {
      child.kill('SIGKILL');
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('the gateway opens no outbound connection except to configured upstreams and IdPs', () => {
  let up: TestUpstream;
  const gws: Watched[] = [];
  const byOptOut = (optOut: boolean): Watched => gws.find((g) => g.optOut === optOut) as Watched;

  beforeAll(async () => {
    up = await startUpstream();
    gws.push(await startWatched(true, up), await startWatched(false, up));
    // The idle window: no client traffic at all, only admin scrapes, both gateways at once.
    const until = Date.now() + IDLE_MS;
    while (Date.now() < until) {
      for (const g of gws) {
        for (const path of ['/metrics', '/healthz', '/readyz'])
          expect((await adminGet(g.adminPort, path)).status).toBe(200);
      }
      await sleep(1_000);
    }
    for (const g of gws) g.idle = readEgress(g.log);
  }, 40_000);

  afterAll(async () => {
    for (const g of gws) {
      if (g.child.exitCode === null && g.child.signalCode === null) g.child.kill('SIGKILL');
      await g.idp.close();
      await rm(g.dir, { recursive: true, force: true });
    }
    await up?.close();
  });

  describe.each([true, false])('telemetry.optOut: %s', (optOut) => {
    it(`idle for ${IDLE_MS / 1000} s with admin scrapes only: the JWKS warm-up to the IdP and nothing else`, () => {
      const g = byOptOut(optOut);
      expect(g.idle.some((r) => r.kind === 'monitor.installed' && r.pid === g.child.pid)).toBe(true);
      const byKind: Record<string, number> = {};
      for (const r of g.idle) byKind[r.kind] = (byKind[r.kind] ?? 0) + 1;
      console.info(
        `[egress] optOut=${String(optOut)} idle ${IDLE_MS} ms, records by kind: ${JSON.stringify(byKind)}`,
      );
      expect(violations(g.idle, g.allowed)).toEqual([]);
      // Idle, only the IdP: not the upstreams (nobody asked), exactly the warm-up JWKS fetch.
      expect(destinations(g.idle)).toEqual([g.idpDest]);
      expect(destinations(g.idle, 'tcp')).toEqual([g.idpDest]);
      expect(g.idp.counts).toEqual({ jwks: 1, introspection: 0, other: 0 });
      expect(
        g.idle.filter((r) => r.kind.startsWith('udp.') || r.kind.startsWith('spawn.') || r.kind === 'worker'),
      ).toEqual([]);
      // The only DNS calls are the listen addresses (IP literals, answered without a query).
      const dnsHosts = new Set(g.idle.filter((r) => r.kind.startsWith('dns.')).map((r) => r.host));
      for (const h of dnsHosts) expect(isIP(h ?? ''), `DNS call for ${String(h)} while idle`).not.toBe(0);
      expect(new Set(g.idle.map((r) => r.pid))).toEqual(new Set([g.child.pid]));
    });

    it('client traffic reaches exactly the configured upstreams and IdP (the control: the monitor sees them)', async () => {
      const g = byOptOut(optOut);
      const before = readEgress(g.log).length;
      const jwt = await g.idp.sign({ aud: 'api', sub: 'alice' });
      const opaque = g.idp.issueOpaque();
      const n = up.seen.length;
      expect((await h1(g.port, g.pki, { path: '/open/x' })).status).toBe(200);
      expect(
        (await h1(g.port, g.pki, { path: '/jwt/x', headers: { authorization: `Bearer ${jwt}` } })).status,
      ).toBe(200);
      expect(
        (await h1(g.port, g.pki, { path: '/opaque/x', headers: { authorization: `Bearer ${opaque}` } }))
          .status,
      ).toBe(200);
      const byname = await h1(g.port, g.pki, { path: '/byname/x' });
      expect(byname.status).toBe(200);
      expect((await h1(g.port, g.pki, { path: '/dead/x' })).status).toBe(502);
      expect(up.seen.length - n).toBe(4);
      expect(g.idp.counts.introspection).toBe(1);

      const traffic = readEgress(g.log).slice(before);
      expect(violations(traffic, g.allowed)).toEqual([]);
      // Exactly these destinations: the monitor saw the upstream (by IP and by name), the dead upstream
      // (a refused connect is recorded) and the IdP (introspection). A blind monitor fails here.
      expect(destinations(traffic)).toEqual([g.deadDest, g.upstreamDest, g.idpDest, g.bynameDest].sort());
      // Each hook on its own: the socket-level hook and undici's channel both saw the upstream and the IdP.
      for (const kind of ['tcp', 'undici', 'net.client.socket']) {
        expect(destinations(traffic, kind), kind).toContain(g.upstreamDest);
        expect(destinations(traffic, kind), kind).toContain(g.idpDest);
      }
      // The upstream configured by name was resolved, and only that name.
      expect(traffic.some((r) => r.kind === 'dns.lookup' && r.host === 'localhost')).toBe(true);
      const named = new Set(
        traffic.filter((r) => r.kind.startsWith('dns.') && isIP(r.host ?? '') === 0).map((r) => r.host),
      );
      expect([...named]).toEqual(['localhost']);
    });

    it('threat model #98: a forged sampled=1 trace context and a 9 KB / 200-member baggage make the gateway send nothing new', async () => {
      const g = byOptOut(optOut);
      const before = readEgress(g.log).length;
      const idpBefore = { ...g.idp.counts };
      const n = up.seen.length;
      const reply = await h1(g.port, g.pki, { path: '/open/98', headers: FORGED });
      expect(reply.status).toBe(200);
      expect(up.seen.length - n).toBe(1);
      const seen = (up.seen[n] as (typeof up.seen)[number]).headers;
      if (optOut) {
        expect(Object.keys(FORGED).filter((k) => seen[k.toLowerCase()] !== undefined)).toEqual([]);
      } else {
        // optOut off relays the client's values as they are: per config, the operator's choice.
        expect(seen.traceparent).toBe(FORGED.traceparent);
        expect(seen['x-b3-sampled']).toBe('1');
      }
      // A forced sampling decision starts no exporter: at most a connection to the upstream (the pool
      // usually reuses the one the previous test opened, so often none at all).
      await sleep(1_500);
      const after = readEgress(g.log).slice(before);
      expect(violations(after, g.allowed)).toEqual([]);
      for (const d of destinations(after)) expect([g.upstreamDest]).toContain(d);
      expect(g.idp.counts).toEqual(idpBefore);
      // Nothing the client sent shows up in /metrics.
      const metrics = (await adminGet(g.adminPort, '/metrics')).body;
      for (const v of [TRACE_ID, 'userId=admin', 'member199', '80f198ee56343ba864fe8b2a57d3eff7'])
        expect(metrics.includes(v), v).toBe(false);
    });

    // Threat model #98 expects "Oversized baggage is dropped (the W3C limits are 8192 bytes and 180 members)".
    // With optOut on the whole header is stripped; with it off the gateway still drops a baggage over the
    // W3C limits (src/mutate/request-headers.ts): a client cannot push an unbounded list upstream.
    it('threat model #98: a baggage over the W3C limits (9 KB, 200 members) does not reach the upstream', async () => {
      expect(Buffer.byteLength(OVERSIZED_BAGGAGE)).toBeGreaterThan(8192);
      expect(OVERSIZED_BAGGAGE.split(',').length).toBeGreaterThan(180);
      const g = byOptOut(optOut);
      const n = up.seen.length;
      const reply = await h1(g.port, g.pki, {
        path: '/open/98-baggage',
        headers: { baggage: OVERSIZED_BAGGAGE },
      });
      expect(reply.status).toBe(200);
      expect(up.seen.length - n).toBe(1);
      expect((up.seen[n] as (typeof up.seen)[number]).headers.baggage).toBeUndefined();
    });

    it('threat model #98: a 64 KB baggage never reaches the upstream', async () => {
      const g = byOptOut(optOut);
      const n = up.seen.length;
      const big = Array.from({ length: 2_200 }, (_, i) => `k${i}=${'v'.repeat(24)}`).join(',');
      expect(big.length).toBeGreaterThan(64 * 1024);
      const r = await h1(g.port, g.pki, { path: '/open/64k', headers: { baggage: big } }).then(
        (x) => ({ status: x.status, error: undefined }),
        (e: unknown) => ({ status: 0, error: (e as NodeJS.ErrnoException).code ?? String(e) }),
      );
      console.info(
        `[egress] optOut=${String(optOut)}: 64 KB baggage answered ${r.error ?? String(r.status)}`,
      );
      // Either refused at the header limit (431, or the connection closed) or forwarded without it.
      if (r.status === 200) expect((up.seen[n] as (typeof up.seen)[number]).headers.baggage).toBeUndefined();
      else expect(up.seen.length).toBe(n);
      expect(r.status === 200 || r.status === 431 || r.error !== undefined).toBe(true);
    });

    it('SIGTERM: nothing outbound during shutdown either', async () => {
      const g = byOptOut(optOut);
      const t = Date.now();
      const before = readEgress(g.log).length;
      g.child.kill('SIGTERM');
      const { code } = await g.exited;
      expect(code, g.stderr()).toBe(0);
      const all = readEgress(g.log);
      const shutdown = all.slice(before).concat(all.slice(0, before).filter((r) => r.time >= t));
      expect(violations(shutdown, g.allowed)).toEqual([]);
      expect(destinations(shutdown)).toEqual([]);
      // And over the whole life of the process: no UDP, no child process, no thread, one pid.
      expect(
        all.filter((r) => r.kind.startsWith('udp.') || r.kind.startsWith('spawn.') || r.kind === 'worker'),
      ).toEqual([]);
      expect(new Set(all.map((r) => r.pid))).toEqual(new Set([g.child.pid]));
    });
  });
});
