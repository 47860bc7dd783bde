/**
 * Bodies stream through the gateway without being buffered (threat model #79, #103): a 200 MB upload
 * and a 200 MB download (HTTP/1.1 and HTTP/2) pass through the built `portcullis` binary, running as
 * its own process so that its RSS is its own, while the test samples /proc/<pid>/status.
 *
 * Also: an https:// upstream is verified against the configured CA, and a wrong CA is a 502
 * ERR_UPSTREAM_TLS, never a silent retry without verification (threat model #130).
 */
import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { request as httpsRequest } from 'node:https';
import { connect as h2connect } from 'node:http2';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { spawnCli } from '../helpers/binary.js';
import { h1, h2, h2session, tlsOptions } from '../helpers/clients.js';
import { startGateway, tlsListener, type TestGateway } from '../helpers/gateway.js';
import { issueServerCert } from '../../src/certs/pki.js';
import { mintTestPki, writePki, type TestPkiPaths } from '../helpers/pki.js';
import { startTlsUpstream, startUpstream, type TestUpstream } from '../helpers/upstream.js';

const MB = 1024 * 1024;
const TOTAL = 200 * MB;
/**
 * The gateway's RSS may grow by less than this while 200 MB pass through it: buffering the body would
 * take more than the body. What does grow is garbage the GC has not yet collected (young generation and
 * the external memory of each chunk), and on Node 24 it levels off near 85 MB whatever the size: a
 * download of 100, 200, 400 and 800 MB grew the RSS by 88, 81, 85 and 85 MB (Node 20: about 60 MB).
 */
const RSS_BUDGET = 128 * MB;

/** VmRSS of `pid` in bytes (Linux /proc). */
function rssOf(pid: number): number {
  const m = /^VmRSS:\s+(\d+)\s+kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (m === null) throw new Error(`no VmRSS for ${pid}`);
  return Number(m[1]) * 1024;
}

/** Samples the RSS of `pid` every 25 ms while `work` runs; returns the maximum seen. */
async function maxRssDuring(pid: number, work: () => Promise<void>): Promise<number> {
  let max = rssOf(pid);
  const timer = setInterval(() => {
    try {
      max = Math.max(max, rssOf(pid));
    } catch {
      /* process gone: the test fails on its own assertions */
    }
  }, 25);
  try {
    await work();
  } finally {
    clearInterval(timer);
  }
  return Math.max(max, rssOf(pid));
}

/** Starts `portcullis start --config file` and resolves with the child and the bound port, read from the
 * `"msg":"listening"` log line. Bounded: rejects after 20 s or if the child exits first. */
function startBinary(file: string): Promise<{ child: ChildProcess; port: number }> {
  const child = spawnCli(['start', '--config', file]);
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`no "listening" line within 20 s; stdout=${out} stderr=${err}`));
    }, 20_000);
    child.stderr?.on('data', (c: Buffer) => (err += c.toString()));
    child.stdout?.on('data', (c: Buffer) => {
      out += c.toString();
      for (const line of out.split('\n')) {
        if (!line.includes('"msg":"listening"')) continue;
        const port = (JSON.parse(line) as { port?: number }).port;
        if (typeof port === 'number') {
          clearTimeout(timer);
          resolve({ child, port });
          return;
        }
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`portcullis exited with ${code}; stderr=${err}`));
    });
  });
}

async function stopBinary(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const t = setTimeout(() => child.kill('SIGKILL'), 5_000);
  await exited;
  clearTimeout(t);
}

/** 200 MB in 64 KiB chunks, generated on the fly (one buffer reused, never 200 MB in memory). */
function* generate(total: number): Generator<Buffer> {
  const chunk = Buffer.alloc(64 * 1024, 0x7a);
  for (let left = total; left > 0; left -= chunk.length)
    yield left >= chunk.length ? chunk : chunk.subarray(0, left);
}

describe('200 MB through the gateway binary without buffering (separate process, RSS sampled)', () => {
  let dir: string;
  let pki: TestPkiPaths;
  let up: TestUpstream;
  let child: ChildProcess;
  let port: number;
  let baseline = 0;
  const growth: Record<string, number> = {};

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'portcullis-stream-'));
    pki = await writePki(join(dir, 'pki'));
    up = await startUpstream();
    const file = join(dir, 'portcullis.yaml');
    await writeFile(
      file,
      stringify({
        admin: { enabled: false },
        // info: the "listening" line carries the port; no access log (400 MB would not change it).
        log: { level: 'info', access: false },
        listeners: [
          {
            name: 'main',
            listen: '127.0.0.1:0',
            tls: {
              cert: pki.server.cert,
              key: pki.server.key,
              clientCertificate: 'require',
              clientCa: pki.ca,
            },
            routes: [{ id: 'up', match: { pathPrefix: '/' }, upstream: up.url }],
          },
        ],
      }),
    );
    ({ child, port } = await startBinary(file));
    // Warm up every code path once (TLS, HTTP/1.1, HTTP/2, undici), then take the baseline.
    expect((await h1(port, pki, { path: '/warm' })).status).toBe(200);
    const s = h2session(port, pki);
    expect((await h2(s, { ':path': '/warm' })).status).toBe(200);
    s.close();
    await new Promise((r) => setTimeout(r, 200));
    baseline = rssOf(child.pid!);
  });

  afterAll(async () => {
    console.log(
      `gateway RSS baseline ${(baseline / MB).toFixed(1)} MB; growth during 200 MB transfers: ${JSON.stringify(Object.fromEntries(Object.entries(growth).map(([k, v]) => [k, `${(v / MB).toFixed(1)} MB`])))}`,
    );
    if (child) await stopBinary(child);
    await up.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('streams a 200 MB HTTP/1.1 upload (chunked, from a generator)', { timeout: 90_000 }, async () => {
    const before = rssOf(child.pid!);
    let reply = '';
    let status = 0;
    const max = await maxRssDuring(child.pid!, async () => {
      const req = httpsRequest({
        ...tlsOptions(pki, 'alice'),
        host: '127.0.0.1',
        port,
        method: 'POST',
        path: '/upload',
        headers: {
          host: `localhost:${port}`,
          'content-type': 'application/octet-stream',
          'transfer-encoding': 'chunked',
        },
        agent: false,
      });
      const answered = new Promise<void>((resolve, reject) => {
        req.on('response', (res) => {
          status = res.statusCode ?? 0;
          res.setEncoding('utf8');
          res.on('data', (c: string) => (reply += c));
          res.on('end', resolve);
          res.on('error', reject);
        });
        req.on('error', reject);
      });
      await pipeline(Readable.from(generate(TOTAL)), req);
      await answered;
    });
    expect(status).toBe(200);
    expect((JSON.parse(reply) as { bodyBytes: number }).bodyBytes).toBe(TOTAL);
    expect(up.seen.at(-1)?.bodyBytes).toBe(TOTAL);
    growth.upload = max - Math.min(before, baseline);
    expect(growth.upload).toBeLessThan(RSS_BUDGET);
  });

  it('streams a 200 MB HTTP/1.1 download', { timeout: 90_000 }, async () => {
    const before = rssOf(child.pid!);
    let received = 0;
    let status = 0;
    const max = await maxRssDuring(child.pid!, async () => {
      await new Promise<void>((resolve, reject) => {
        const req = httpsRequest(
          {
            ...tlsOptions(pki, 'alice'),
            host: '127.0.0.1',
            port,
            path: `/download?bytes=${TOTAL}`,
            headers: { host: `localhost:${port}` },
            agent: false,
          },
          (res) => {
            status = res.statusCode ?? 0;
            res.on('data', (c: Buffer) => (received += c.length));
            res.on('end', resolve);
            res.on('error', reject);
          },
        );
        req.on('error', reject);
        req.end();
      });
    });
    expect(status).toBe(200);
    expect(received).toBe(TOTAL);
    growth.downloadH1 = max - Math.min(before, baseline);
    expect(growth.downloadH1).toBeLessThan(RSS_BUDGET);
  });

  it('streams a 200 MB HTTP/2 download', { timeout: 90_000 }, async () => {
    const before = rssOf(child.pid!);
    let received = 0;
    let status = 0;
    const session = h2connect(`https://localhost:${port}`, {
      ...tlsOptions(pki, 'alice'),
      host: '127.0.0.1',
      port,
    });
    session.on('error', () => undefined);
    try {
      const max = await maxRssDuring(child.pid!, async () => {
        await new Promise<void>((resolve, reject) => {
          const stream = session.request({ ':method': 'GET', ':path': `/download?bytes=${TOTAL}` });
          stream.on('response', (h) => (status = Number(h[':status'])));
          stream.on('data', (c: Buffer) => (received += c.length));
          stream.on('end', resolve);
          stream.on('error', reject);
        });
      });
      expect(status).toBe(200);
      expect(received).toBe(TOTAL);
      growth.downloadH2 = max - Math.min(before, baseline);
      expect(growth.downloadH2).toBeLessThan(RSS_BUDGET);
    } finally {
      session.close();
    }
  });
});

describe('https:// upstream: verified against the configured CA, never retried without verification (130)', () => {
  let up: TestUpstream;
  /** Certificate for 127.0.0.1 only. */
  let ipOnly: TestUpstream;
  /** Certificate for localhost only, reached at 127.0.0.1. */
  let nameOnly: TestUpstream;
  let gw: TestGateway;
  beforeAll(async () => {
    // The upstreams' certificates come from the same per-run PKI the gateway will be given.
    const scratch = await mkdtemp(join(tmpdir(), 'portcullis-tlsup-'));
    const pki = await writePki(scratch);
    const ca = mintTestPki().ca;
    up = await startTlsUpstream(pki);
    ipOnly = await startTlsUpstream(pki, { server: issueServerCert(ca, { hosts: ['127.0.0.1'], days: 2 }) });
    nameOnly = await startTlsUpstream(pki, {
      server: issueServerCert(ca, { hosts: ['localhost'], days: 2 }),
    });
    gw = await startGateway((p) => ({
      listeners: [
        tlsListener(p, {
          routes: [
            {
              id: 'good',
              match: { pathPrefix: '/good' },
              upstream: { url: `https://localhost:${up.port}`, ca: p.ca },
            },
            {
              id: 'wrongca',
              match: { pathPrefix: '/wrongca' },
              upstream: { url: `https://localhost:${up.port}`, ca: p.otherCa },
            },
            {
              id: 'iponly',
              match: { pathPrefix: '/iponly' },
              upstream: { url: `https://127.0.0.1:${ipOnly.port}`, ca: p.ca },
            },
            {
              id: 'nameonly',
              match: { pathPrefix: '/nameonly' },
              upstream: { url: `https://127.0.0.1:${nameOnly.port}`, ca: p.ca },
            },
          ],
        }),
      ],
    }));
    await rm(scratch, { recursive: true, force: true });
  });
  afterAll(async () => {
    await gw.close();
    await up.close();
    await ipOnly.close();
    await nameOnly.close();
  });

  it('forwards over verified TLS (HTTP/1.1 and HTTP/2)', async () => {
    const r = await h1(gw.port(), gw.pki, { path: '/good/x' });
    expect(r.status).toBe(200);
    expect(up.seen.at(-1)?.url).toBe('/good/x');
    const s = h2session(gw.port(), gw.pki);
    try {
      const r2 = await h2(s, { ':path': '/good/h2' });
      expect(r2.status).toBe(200);
      expect(up.seen.at(-1)?.url).toBe('/good/h2');
    } finally {
      s.close();
    }
  });

  it("checks the upstream certificate against the upstream address, not against the client's Host", async () => {
    // The client says Host: localhost. An upstream at 127.0.0.1 with a certificate for 127.0.0.1 only
    // is the right server...
    expect((await h1(gw.port(), gw.pki, { path: '/iponly/x' })).status).toBe(200);
    // ...and one whose certificate names only localhost is not, whatever Host the client sends.
    const seen = nameOnly.seen.length;
    const r = await h1(gw.port(), gw.pki, { path: '/nameonly/x' });
    expect(r.status).toBe(502);
    expect(nameOnly.seen.length).toBe(seen);
    expect(gw.logs().at(-1)?.reason).toBe('ERR_UPSTREAM_TLS');
  });

  it('answers 502 ERR_UPSTREAM_TLS when the upstream certificate is not from the configured CA', async () => {
    const seenBefore = up.seen.length;
    const tlsErrorsBefore = await gw.metric('portcullis_upstream_errors_total', {
      route: 'wrongca',
      reason: 'ERR_UPSTREAM_TLS',
    });
    for (let i = 0; i < 3; i++) {
      const r = await h1(gw.port(), gw.pki, { path: '/wrongca/x' });
      expect(r.status).toBe(502);
      expect(r.body).toMatch(/TLS/);
    }
    const s = h2session(gw.port(), gw.pki);
    try {
      expect((await h2(s, { ':path': '/wrongca/h2' })).status).toBe(502);
    } finally {
      s.close();
    }
    // No request ever reached the upstream: no retry without verification.
    expect(up.seen.length).toBe(seenBefore);
    expect(
      (await gw.metric('portcullis_upstream_errors_total', {
        route: 'wrongca',
        reason: 'ERR_UPSTREAM_TLS',
      })) - tlsErrorsBefore,
    ).toBe(4);
  });
});
