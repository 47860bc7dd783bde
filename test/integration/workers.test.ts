/**
 * `workers: 2` end to end, on the built binary (dist/, built by test/global-setup.ts): a node:cluster
 * primary with two worker processes behind one mTLS listener, a real upstream, the admin listener on the
 * primary. Proves that connections are served by both workers, that /metrics on the primary sums them,
 * that a TLS session resumes whichever worker answers (shared ticket keys), that a killed worker is
 * restarted while the other keeps serving (and /readyz says so meanwhile), and that SIGTERM drains every
 * process and leaves none behind.
 */
import { type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { adminGet, sampleValue } from '../helpers/admin.js';
import { freePort, killAll, spawnCli, startBinary, type StartedBinary } from '../helpers/binary.js';
import { h1 } from '../helpers/clients.js';
import { writePki, type TestPkiPaths } from '../helpers/pki.js';
import { startUpstream, type TestUpstream } from '../helpers/upstream.js';

type Line = Record<string, unknown>;

let dir: string;
let pki: TestPkiPaths;
let upstream: TestUpstream;
const children = new Set<ChildProcess>();

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'portcullis-workers-'));
  pki = await writePki(join(dir, 'pki'));
  upstream = await startUpstream();
});

afterAll(async () => {
  killAll(children);
  await upstream.close();
  await rm(dir, { recursive: true, force: true });
});

let configs = 0;
async function writeConfig(config: Line): Promise<string> {
  const file = join(dir, `config-${++configs}.yaml`);
  await writeFile(file, stringify(config));
  return file;
}

function clusterConfig(adminPort: number, listen = '127.0.0.1:0'): Line {
  return {
    workers: 2,
    log: { level: 'info', access: true },
    admin: { listen: `127.0.0.1:${adminPort}` },
    listeners: [
      {
        name: 'main',
        listen,
        tls: { cert: pki.server.cert, key: pki.server.key, clientCertificate: 'require', clientCa: pki.ca },
        routes: [{ id: 'up', match: { pathPrefix: '/' }, upstream: upstream.url }],
      },
    ],
  };
}

/** A running cluster (see test/helpers/binary.ts) and its data port. */
interface Running extends StartedBinary {
  port: number;
}

/** Resolves once `pred` holds (polled every 10 ms), or rejects after `ms`. */
async function until(pred: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function startCluster(file: string): Promise<Running> {
  const run = startBinary(file);
  children.add(run.child);
  await run.waitFor((l) => l.msg === 'admin listening', 'the cluster to start', 20_000);
  const listening = run.lines.find((l) => l.msg === 'listening' && l.listener === 'main');
  return { ...run, port: listening?.port as number };
}

/** The pid of each worker slot, from the primary's latest `worker started` line per slot. */
function workerPids(lines: readonly Line[]): Map<number, number> {
  const pids = new Map<number, number>();
  for (const l of lines) if (l.msg === 'worker started') pids.set(l.worker as number, l.pid as number);
  return pids;
}

/** Access-log lines (one per answered request) whose path starts with `prefix`, counted by worker slot. */
function servedBy(lines: readonly Line[], prefix: string): Map<number, number> {
  const by = new Map<number, number>();
  for (const l of lines)
    if (l.msg === 'request' && typeof l.path === 'string' && l.path.startsWith(prefix))
      by.set(l.worker as number, (by.get(l.worker as number) ?? 0) + 1);
  return by;
}

/** Runs `n` tasks, `concurrency` at a time. */
async function pool<T>(n: number, concurrency: number, task: (i: number) => Promise<T>): Promise<T[]> {
  const out: T[] = new Array<T>(n);
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < n) {
        const i = next++;
        out[i] = await task(i);
      }
    }),
  );
  return out;
}

/** One HTTP/1.1 request on a new TLS connection, optionally offering `session`; reports resumption. */
function tlsRequest(
  port: number,
  path: string,
  session?: Buffer,
): Promise<{ status: string; reused: boolean; session: Promise<Buffer> }> {
  return new Promise((resolve, reject) => {
    let gotSession: (s: Buffer) => void = () => undefined;
    const ticket = new Promise<Buffer>((r) => (gotSession = r));
    const socket: TLSSocket = tlsConnect({
      host: '127.0.0.1',
      port,
      servername: 'localhost',
      ca: readFileSync(pki.ca),
      cert: readFileSync(pki.clients.alice.cert),
      key: readFileSync(pki.clients.alice.key),
      ALPNProtocols: ['http/1.1'],
      ...(session !== undefined ? { session } : {}),
    });
    socket.on('session', (s: Buffer) => gotSession(s));
    let data = '';
    socket.on('secureConnect', () => {
      socket.write(`GET ${path} HTTP/1.1\r\nHost: localhost:${port}\r\nConnection: close\r\n\r\n`);
    });
    socket.on('data', (c: Buffer) => (data += c.toString()));
    socket.on('end', () =>
      resolve({ status: data.slice(0, 12), reused: socket.isSessionReused(), session: ticket }),
    );
    socket.on('error', reject);
    socket.setTimeout(5_000, () => socket.destroy(new Error('timeout')));
  });
}

describe('workers: 2 (node:cluster)', () => {
  let adminPort: number;
  let gw: Running;

  beforeAll(async () => {
    adminPort = await freePort();
    gw = await startCluster(await writeConfig(clusterConfig(adminPort)));
  });

  it('serves from both workers, and /metrics on the primary sums their counters', async () => {
    expect(workerPids(gw.lines).size).toBe(2);
    const before = upstream.seen.length;
    const replies = await pool(200, 8, (i) => h1(gw.port, pki, { path: `/spread-${i}` }));
    expect(replies.every((r) => r.status === 200)).toBe(true);
    expect(upstream.seen.length - before).toBe(200);
    // Every request got an access-log line from the worker that served it: both served some.
    await until(
      () => [...servedBy(gw.lines, '/spread-').values()].reduce((a, b) => a + b, 0) === 200,
      5_000,
      'access log',
    );
    const by = servedBy(gw.lines, '/spread-');
    expect([...by.keys()].sort()).toEqual([1, 2]);
    expect(by.get(1)).toBeGreaterThan(0);
    expect(by.get(2)).toBeGreaterThan(0);

    const m = await adminGet(adminPort, '/metrics');
    expect(m.status).toBe(200);
    expect(
      sampleValue(
        m.body,
        'portcullis_http_requests_total{listener="main",route="up",method="GET",status_class="2xx"}',
      ),
    ).toBe(200);
    expect(sampleValue(m.body, 'portcullis_cluster_workers')).toBe(2);
    // Gauges that are the same in every worker are not multiplied by the worker count.
    const serverExpiry = sampleValue(
      m.body,
      'portcullis_certificate_expiry_timestamp_seconds{listener="main",kind="server",index="0"}',
    );
    expect(serverExpiry).toBeGreaterThan(Date.now() / 1000);
    expect(serverExpiry).toBeLessThan(Date.now() / 1000 + 20 * 365 * 86_400);
    expect(m.body).toContain('portcullis_process_cpu_seconds_total');
  });

  it('resumes a TLS session whichever worker answers (ticket keys shared by the primary)', async () => {
    const first = await tlsRequest(gw.port, '/resume-first');
    expect(first.status).toBe('HTTP/1.1 200');
    expect(first.reused).toBe(false);
    const session = await first.session;
    const resumed = [];
    // One after the other: round-robin sends consecutive connections to alternating workers.
    for (let i = 0; i < 20; i++) resumed.push(await tlsRequest(gw.port, `/resume-${i}`, session));
    expect(resumed.map((r) => r.status)).toEqual(Array<string>(20).fill('HTTP/1.1 200'));
    expect(resumed.map((r) => r.reused)).toEqual(Array<boolean>(20).fill(true));
    await until(
      () => [...servedBy(gw.lines, '/resume-').values()].reduce((a, b) => a + b, 0) === 21,
      5_000,
      'access log',
    );
    const by = servedBy(gw.lines, '/resume-');
    expect(by.get(1)).toBeGreaterThan(0);
    expect(by.get(2)).toBeGreaterThan(0);
  });

  it('restarts a worker killed with SIGKILL; the other serves meanwhile and /readyz names the missing one', async () => {
    const pids = workerPids(gw.lines);
    const victim = pids.get(1) as number;
    expect(victim).toBeGreaterThan(0);
    expect((await adminGet(adminPort, '/readyz')).status).toBe(200);
    const mark = gw.lines.length;
    process.kill(victim, 'SIGKILL');

    await until(
      () => gw.lines.slice(mark).some((l) => l.msg === 'worker exited unexpectedly'),
      5_000,
      'the exit',
    );
    // While slot 1 is down (100 ms back-off + a Node start-up), readiness says which worker is missing.
    // Polled (up to 5 s) rather than sampled once.
    let down = await adminGet(adminPort, '/readyz');
    const downBy = Date.now() + 5_000;
    while (down.status !== 503 && Date.now() < downBy) {
      await new Promise((r) => setTimeout(r, 20));
      down = await adminGet(adminPort, '/readyz');
    }
    const during = await pool(10, 2, (i) => h1(gw.port, pki, { path: `/during-${i}` }));
    expect(during.every((r) => r.status === 200)).toBe(true);
    expect(down.status).toBe(503);
    expect(JSON.parse(down.body)).toEqual({ ready: false, notReady: ['worker 1 not running'] });

    await until(() => workerPids(gw.lines).get(1) !== victim, 15_000, 'the restart');
    const restarted = workerPids(gw.lines).get(1) as number;
    expect(restarted).not.toBe(victim);
    expect(() => process.kill(victim, 0)).toThrow(/ESRCH/);
    expect((await adminGet(adminPort, '/readyz')).status).toBe(200);
    const after = await pool(20, 4, (i) => h1(gw.port, pki, { path: `/after-${i}` }));
    expect(after.every((r) => r.status === 200)).toBe(true);
    const m = await adminGet(adminPort, '/metrics');
    expect(sampleValue(m.body, 'portcullis_cluster_worker_restarts_total')).toBe(1);
    expect(sampleValue(m.body, 'portcullis_cluster_workers')).toBe(2);
  });

  it('SIGHUP to the primary is passed to the workers and kills nobody', async () => {
    const pids = workerPids(gw.lines);
    const mark = gw.lines.length;
    gw.child.kill('SIGHUP');
    await until(
      () => gw.lines.slice(mark).some((l) => l.msg === 'SIGHUP: forwarded to every worker'),
      5_000,
      'the forward',
    );
    // Each worker handles it as a single process would (it logs a line about it).
    await until(
      () =>
        new Set(
          gw.lines
            .slice(mark)
            .filter((l) => typeof l.worker === 'number' && l.role === undefined)
            .map((l) => l.worker),
        ).size === 2,
      5_000,
      'both workers to react',
    );
    expect((await h1(gw.port, pki, { path: '/after-hup' })).status).toBe(200);
    expect(workerPids(gw.lines)).toEqual(pids);
    for (const pid of pids.values()) expect(() => process.kill(pid, 0)).not.toThrow();
    expect(gw.lines.slice(mark).some((l) => l.msg === 'worker exited unexpectedly')).toBe(false);
  });

  it('SIGTERM to the primary drains every worker; all exit 0 and no process is left', async () => {
    const pids = [...workerPids(gw.lines).values()];
    expect(pids).toHaveLength(2);
    gw.child.kill('SIGTERM');
    const { code, signal } = await gw.exited;
    expect({ code, signal }).toEqual({ code: 0, signal: null });
    const stopped = gw.lines.filter((l) => l.msg === 'worker stopped');
    expect(stopped.map((l) => l.pid).sort()).toEqual([...pids].sort());
    expect(stopped.every((l) => l.code === 0 && l.signal === null)).toBe(true);
    for (const pid of pids) expect(() => process.kill(pid, 0)).toThrow(/ESRCH/);
  });
});

describe('workers: 2, start-up failures', () => {
  let held: Server;
  afterAll(() => new Promise<void>((r) => held.close(() => r())));

  it('a listener address already in use fails the start once, with exit code 3 and one message', async () => {
    held = createServer();
    await new Promise<void>((r) => held.listen(0, '127.0.0.1', r));
    const busy = (held.address() as AddressInfo).port;
    const child = spawnCli([
      'start',
      '--config',
      await writeConfig(clusterConfig(await freePort(), `127.0.0.1:${busy}`)),
    ]);
    children.add(child);
    let stderr = '';
    child.stderr?.on('data', (c: Buffer) => (stderr += c.toString()));
    const code = await new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
    expect(code).toBe(3);
    expect(stderr.match(/listeners\[0\]\.listen/g)).toHaveLength(1);
  });
});
