/**
 * The TCP listener (src/listener/tcp-listener.ts) and its pipe (src/proxy/tcp-pipe.ts), end to end on
 * loopback port 0 with the per-run test PKI: real TLS clients, real upstreams that record what reached them
 * (accept count, PROXY header, bytes, how they were closed). Issue 5 points 1–4 and threat model #110, in
 * ghostunnel's style: every denial asserts the upstream accepted nothing.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import {
  createServer as createNetServer,
  connect as netConnect,
  type AddressInfo,
  type Server,
  type Socket,
} from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import {
  connect as tlsConnect,
  createServer as createTlsServer,
  type TLSSocket,
  type Server as TlsServer,
} from 'node:tls';
import { Registry } from 'prom-client';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { createCa, issueClientCert, issueServerCert, type CertAndKey } from '../../src/certs/pki.js';
import { loadConfigText } from '../../src/load-config.js';
import type { ListenerTls } from '../../src/config/runtime.js';
import type { ClientAcl } from '../../src/identity/acl.js';
import type { Listener } from '../../src/listener/listener.js';
import {
  createTcpListener,
  type TcpListenerConfig,
  type TcpListenerDeps,
} from '../../src/listener/tcp-listener.js';
import { createLogger } from '../../src/observability/logger.js';
import { createMetrics } from '../../src/observability/metrics.js';
import {
  createReadBuffer,
  pipeTcp,
  PIPE_BUFFER_BYTES,
  READ_BUFFER_BYTES,
  type PipeOptions,
  type PipeResult,
  type TcpUpstream,
} from '../../src/proxy/tcp-pipe.js';
import { GC_PACE_BYTES } from '../../src/proxy/gc-pacer.js';
import { tlsOptions } from '../helpers/clients.js';
import { writePki, type TestClientName, type TestPkiPaths } from '../helpers/pki.js';

// ---------------------------------------------------------------------------------------------------------
// Upstreams that record what reached them

interface UpstreamConnection {
  socket: Socket | TLSSocket;
  received: number;
  /** The PROXY v2 header, when the upstream expects one. */
  proxy?: {
    source: string;
    sourcePort: number;
    destination: string;
    destinationPort: number;
    family: number;
  };
  /** The upstream saw a FIN from the gateway. */
  ended: boolean;
  /** Error code when the gateway's side was reset. */
  error?: string;
  closed: Promise<void>;
  /** Subject CN of the certificate the gateway presented (TLS upstreams). */
  peerCn?: string;
  /** `flood`: bytes whose write completed (handed to the kernel). */
  flushed: number;
  /** `slow`: SHA-256 of everything received, once the gateway's FIN arrived. */
  digest?: string;
  /** `pieces`: SHA-256 of everything sent. */
  sentDigest?: string;
}

interface TestUpstream {
  port: number;
  accepted: number;
  /** TLS handshakes the upstream refused (wrong client cert, or the gateway gave up). */
  tlsErrors: string[];
  connections: UpstreamConnection[];
  close(): Promise<void>;
}

type UpstreamMode = 'echo' | 'sink' | 'silent' | 'reset' | 'flood' | 'slow' | 'pieces';

/**
 * An upstream: `echo` echoes every byte and, after the gateway's FIN, writes `<<EOF n>>` (n = bytes it
 * received) before its own FIN — so every test also checks that half-close works; `sink` accepts and never
 * reads; `silent` reads and never answers; `reset` answers the first chunk with a RST; `flood` writes as
 * fast as the connection takes it (honouring its own backpressure) and counts what it flushed; `slow` reads
 * one chunk, then nothing for 10 ms, and hashes what it read; `pieces` sends `bytes` random bytes of its
 * own (every connection different) in writes of 1 B to `pieceBytes` (100 KiB), one per event-loop turn when
 * `paced` (so that the gateway reads them one by one), honouring its own backpressure, then its FIN.
 */
async function startUpstream(
  opts: {
    mode?: UpstreamMode;
    proxy?: boolean;
    tls?: { cert: CertAndKey; ca: string };
    port?: number;
    /** `pieces`: bytes each connection sends, the largest write, one write per event-loop turn. */
    bytes?: number;
    pieceBytes?: number;
    paced?: boolean;
  } = {},
): Promise<TestUpstream> {
  const mode = opts.mode ?? 'echo';
  const state: TestUpstream = {
    port: 0,
    accepted: 0,
    tlsErrors: [],
    connections: [],
    close: () => Promise.resolve(),
  };
  const serve = (socket: Socket | TLSSocket, leading?: Buffer): void => {
    let onClose: () => void = () => undefined;
    const conn: UpstreamConnection = {
      socket,
      received: 0,
      flushed: 0,
      ended: false,
      closed: new Promise<void>((r) => (onClose = r)),
    };
    state.connections.push(conn);
    if ('getPeerCertificate' in socket) {
      const cn = socket.getPeerCertificate().subject?.CN;
      if (typeof cn === 'string') conn.peerCn = cn;
    }
    socket.on('error', (err: NodeJS.ErrnoException) => (conn.error ??= err.code ?? err.message));
    socket.on('close', () => onClose());
    socket.on('end', () => {
      conn.ended = true;
      if (mode === 'echo') socket.end(`<<EOF ${conn.received}>>`);
    });
    if (mode === 'sink') {
      socket.pause();
      return;
    }
    if (mode === 'flood') {
      const piece = randomBytes(64 * 1024);
      const pump = (): void => {
        while (!socket.destroyed) {
          const ok = socket.write(piece, (err) => {
            if (!err) conn.flushed += piece.length;
          });
          if (!ok) {
            socket.once('drain', pump);
            return;
          }
        }
      };
      pump();
      return;
    }
    if (mode === 'pieces') {
      const data = randomBytes(opts.bytes ?? 0);
      conn.sentDigest = createHash('sha256').update(data).digest('hex');
      let at = 0;
      const send = (): void => {
        while (at < data.length && !socket.destroyed) {
          const n = Math.min(
            data.length - at,
            1 + Math.floor(Math.random() * (opts.pieceBytes ?? 100 * 1024)),
          );
          const ok = socket.write(data.subarray(at, at + n));
          at += n;
          if (!ok) {
            socket.once('drain', send);
            return;
          }
          if (opts.paced === true) {
            setImmediate(send);
            return;
          }
        }
        if (at >= data.length) socket.end();
      };
      send();
      return;
    }
    const hash = mode === 'slow' ? createHash('sha256') : undefined;
    if (hash !== undefined) socket.on('end', () => (conn.digest = hash.digest('hex')));
    const onData = (chunk: Buffer): void => {
      conn.received += chunk.length;
      if (hash !== undefined) {
        hash.update(chunk);
        socket.pause();
        setTimeout(() => socket.resume(), 10);
        return;
      }
      if (mode === 'reset') {
        socket.resetAndDestroy();
        return;
      }
      if (mode === 'echo' && !socket.write(chunk)) socket.pause();
    };
    socket.on('drain', () => socket.resume());
    socket.on('data', onData);
    if (leading !== undefined && leading.length > 0) onData(leading);
  };
  let tlsServer: TlsServer | undefined;
  if (opts.tls) {
    tlsServer = createTlsServer({
      cert: opts.tls.cert.certPem,
      key: opts.tls.cert.keyPem,
      ca: opts.tls.ca,
      requestCert: true,
      rejectUnauthorized: true,
      allowHalfOpen: true,
    });
    tlsServer.on('secureConnection', (s: TLSSocket) => serve(s));
    tlsServer.on('tlsClientError', (err: NodeJS.ErrnoException) =>
      state.tlsErrors.push(err.code ?? err.message),
    );
  }
  const rawSockets = new Set<Socket>();
  const server: Server = createNetServer({ allowHalfOpen: true, pauseOnConnect: false }, (socket) => {
    state.accepted += 1;
    rawSockets.add(socket);
    socket.once('close', () => rawSockets.delete(socket));
    socket.on('error', () => undefined);
    const handOff = (rest: Buffer | undefined): void => {
      if (tlsServer) {
        if (rest !== undefined && rest.length > 0) socket.unshift(rest);
        tlsServer.emit('connection', socket);
      } else {
        serve(socket, rest);
      }
    };
    if (!opts.proxy) {
      handOff(undefined);
      return;
    }
    // Read exactly the PROXY v2 header, then hand the rest on (to TLS when the upstream speaks it).
    let buf = Buffer.alloc(0);
    const onData = (chunk: Buffer): void => {
      buf = Buffer.concat([buf, chunk]);
      if (buf.length < 16) return;
      const len = 16 + buf.readUInt16BE(14);
      if (buf.length < len) return;
      socket.off('data', onData);
      socket.pause();
      const header = parseProxyV2(buf.subarray(0, len));
      handOff(buf.subarray(len));
      const conn = state.connections.at(-1);
      if (conn && !tlsServer) conn.proxy = header;
      else pendingProxy.push(header);
      if (!tlsServer) socket.resume();
    };
    socket.on('data', onData);
  });
  const pendingProxy: NonNullable<UpstreamConnection['proxy']>[] = [];
  if (tlsServer) {
    // One connection at a time in these tests: the header read before TLS belongs to the next handshake.
    tlsServer.on('secureConnection', () => {
      const conn = state.connections.at(-1);
      const header = pendingProxy.shift();
      if (conn && header) conn.proxy = header;
    });
  }
  await new Promise<void>((resolve) => server.listen(opts.port ?? 0, '127.0.0.1', resolve));
  state.port = (server.address() as AddressInfo).port;
  state.close = () =>
    new Promise<void>((resolve) => {
      for (const c of state.connections) c.socket.destroy();
      for (const r of rawSockets) r.destroy();
      server.close(() => resolve());
    });
  return state;
}

/** Reads a PROXY v2 header (PROXY command, TCP over IPv4 or IPv6) as the test upstream sees it. */
function parseProxyV2(b: Buffer): NonNullable<UpstreamConnection['proxy']> {
  expect(b.subarray(0, 12).toString('hex')).toBe('0d0a0d0a000d0a515549540a');
  expect(b[12]).toBe(0x21);
  const family = b[13] ?? 0;
  const width = family === 0x11 ? 4 : 16;
  const ip = (at: number): string =>
    width === 4
      ? [...b.subarray(at, at + 4)].join('.')
      : Array.from({ length: 8 }, (_, i) => b.readUInt16BE(at + 2 * i).toString(16)).join(':');
  return {
    family,
    source: ip(16),
    destination: ip(16 + width),
    sourcePort: b.readUInt16BE(16 + 2 * width),
    destinationPort: b.readUInt16BE(18 + 2 * width),
  };
}

// ---------------------------------------------------------------------------------------------------------
// The listener under test

interface Gateway {
  listener: Listener;
  port: number;
  logs: Record<string, unknown>[];
  metric(name: string, labels?: Record<string, string>): Promise<number>;
}

let dir: string;
let pki: TestPkiPaths;
let listenerTls: ListenerTls;
let listenerAcl: ClientAcl | undefined;
/** A second PKI for the scheduler side of re-encryption: its own CA, a server cert, the gateway's client cert. */
let cluster: { ca: CertAndKey; server: CertAndKey; gateway: CertAndKey; stranger: CertAndKey };
const running: { close(): Promise<void> }[] = [];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'portcullis-tcp-'));
  pki = await writePki(join(dir, 'pki'));
  // The listener's TLS material and ACL exactly as the config loader resolves them for a listener block.
  const yaml = stringify({
    admin: { enabled: false },
    listeners: [
      {
        name: 'dask-comm',
        listen: '127.0.0.1:0',
        tls: {
          cert: pki.server.cert,
          key: pki.server.key,
          clientCertificate: 'require',
          clientCa: pki.ca,
          crl: pki.crl,
        },
        allowClients: ['OU=data-science'],
        routes: [{ match: { pathPrefix: '/' }, upstream: 'builtin:echo' }],
      },
    ],
  });
  const loaded = loadConfigText(yaml, join(dir, 'portcullis.yaml')).listeners[0]!;
  listenerTls = loaded.tls!;
  listenerAcl = loaded.acl;
  const clusterCa = createCa({ commonName: 'Cluster CA', days: 30 });
  cluster = {
    ca: clusterCa,
    server: issueServerCert(clusterCa, { hosts: ['127.0.0.1', 'scheduler.cluster.test'], days: 30 }),
    gateway: issueClientCert(clusterCa, { commonName: 'portcullis-gateway', days: 30 }),
    stranger: issueClientCert(createCa({ commonName: 'Cluster CA', days: 30 }), {
      commonName: 'portcullis-gateway',
      days: 30,
    }),
  };
});

afterEach(async () => {
  while (running.length > 0) await running.pop()!.close();
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function startGateway(
  upstream: TcpUpstream,
  opts: Partial<
    Pick<TcpListenerConfig, 'proxyProtocol'> & Pick<TcpListenerDeps, 'accessLog' | 'collectYoung'>
  > & {
    timeouts?: Partial<TcpListenerDeps['timeouts']>;
    acl?: ClientAcl | undefined;
  } = {},
): Promise<Gateway> {
  const logs: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString('utf8').split('\n'))
        if (line !== '') logs.push(JSON.parse(line) as Record<string, unknown>);
      cb();
    },
  });
  const registry = new Registry();
  const listener = createTcpListener(
    {
      name: 'dask-comm',
      keyPath: 'listeners[0]',
      address: { host: '127.0.0.1', port: 0 },
      tls: listenerTls,
      acl: 'acl' in opts ? opts.acl : listenerAcl,
      upstream,
      proxyProtocol: opts.proxyProtocol,
    },
    {
      logger: createLogger('debug', sink),
      metrics: createMetrics(registry, { processMetrics: false }),
      timeouts: { tlsHandshakeMs: 5_000, upstreamConnectMs: 2_000, idleMs: 20_000, ...opts.timeouts },
      ...(opts.accessLog !== undefined ? { accessLog: opts.accessLog } : {}),
      ...(opts.collectYoung !== undefined ? { collectYoung: opts.collectYoung } : {}),
    },
  );
  await listener.start();
  running.push({ close: () => listener.close() });
  return {
    listener,
    port: listener.address().port,
    logs,
    async metric(name, labels = {}) {
      const m = registry.getSingleMetric(name);
      if (!m) return 0;
      let total = 0;
      for (const v of (await m.get()).values) {
        const ls = v.labels as Record<string, string | number>;
        if (Object.entries(labels).every(([k, want]) => String(ls[k]) === want)) total += v.value;
      }
      return total;
    },
  };
}

async function withUpstream(opts: Parameters<typeof startUpstream>[0] = {}): Promise<TestUpstream> {
  const u = await startUpstream(opts);
  running.push(u);
  return u;
}

const tcp = (u: TestUpstream): TcpUpstream => ({ kind: 'tcp', host: '127.0.0.1', port: u.port });

// ---------------------------------------------------------------------------------------------------------
// Clients

interface Session {
  socket: TLSSocket;
  /** The TCP socket under the TLS client (for an abortive close). */
  raw: Socket;
  /** The client's TCP port (what a PROXY header must name). */
  localPort(): number;
  /** Everything read until the gateway closed or ended the connection. */
  done: Promise<{ data: Buffer; ended: boolean; error: string | undefined; secure: boolean }>;
  /** Resolves once at least `n` bytes were read. */
  waitFor(n: number): Promise<Buffer>;
}

/** A TLS client over a TCP socket we hold, presenting `client`'s certificate (or none). */
function connectClient(
  port: number,
  client: TestClientName | 'none' = 'alice',
  opts: { collect?: boolean } = {},
): Session {
  const raw = netConnect({ host: '127.0.0.1', port });
  raw.on('error', () => undefined);
  let localPort = 0;
  raw.once('connect', () => (localPort = raw.localPort ?? 0));
  const socket = tlsConnect({ ...tlsOptions(pki, client === 'none' ? undefined : client), socket: raw });
  const chunks: Buffer[] = [];
  let length = 0;
  let waiters: { n: number; resolve: (b: Buffer) => void }[] = [];
  let ended = false;
  let error: string | undefined;
  let secure = false;
  socket.on('secureConnect', () => (secure = true));
  socket.on('data', (c: Buffer) => {
    length += c.length;
    if (opts.collect !== false) chunks.push(c);
    waiters = waiters.filter((w) => {
      if (length < w.n) return true;
      w.resolve(Buffer.concat(chunks));
      return false;
    });
  });
  socket.on('end', () => (ended = true));
  const done = new Promise<{ data: Buffer; ended: boolean; error: string | undefined; secure: boolean }>(
    (resolve) => {
      socket.on('error', (err: NodeJS.ErrnoException) => (error ??= err.code ?? err.message));
      socket.on('close', () => resolve({ data: Buffer.concat(chunks), ended, error, secure }));
    },
  );
  running.push({
    close: async () => {
      socket.destroy();
      await done;
    },
  });
  return {
    socket,
    raw,
    localPort: () => localPort,
    done,
    waitFor: (n) =>
      length >= n
        ? Promise.resolve(Buffer.concat(chunks))
        : new Promise((resolve) => waiters.push({ n, resolve })),
  };
}

/** Writes `total` bytes in `chunk`-byte writes, honouring backpressure; resolves with their SHA-256. */
async function writeAll(
  socket: TLSSocket,
  total: number,
  chunk: number,
  seed = randomBytes(256 * 1024),
): Promise<string> {
  const hash = createHash('sha256');
  let sent = 0;
  while (sent < total) {
    const n = Math.min(chunk, total - sent);
    const offset = sent % (seed.length - chunk);
    const piece = seed.subarray(offset, offset + n);
    hash.update(piece);
    sent += n;
    if (!socket.write(piece)) await new Promise((r) => socket.once('drain', r));
  }
  return hash.digest('hex');
}

/**
 * A TLS server of the test's own whose first connection is piped to `up` by pipeTcp with a shared read
 * buffer, as the listener does: what the listener does not expose, the gateway's client socket, is here.
 */
async function pipeDirect(
  up: TestUpstream,
  before: (socket: TLSSocket) => void = () => undefined,
  extra: Partial<PipeOptions> = {},
): Promise<{ port: number; client: Promise<TLSSocket>; piped: Promise<PipeResult> }> {
  const server = createTlsServer({ ...listenerTls.options, allowHalfOpen: true });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  running.push({ close: () => new Promise<void>((r) => server.close(() => r())) });
  let piped: Promise<PipeResult> | undefined;
  const client = new Promise<TLSSocket>((resolve) =>
    server.once('secureConnection', (socket: TLSSocket) => {
      before(socket);
      piped = pipeTcp(socket, tcp(up), {
        connectTimeoutMs: 2_000,
        idleMs: 20_000,
        readBuffer: createReadBuffer(),
        ...extra,
      });
      resolve(socket);
    }),
  );
  return { port: (server.address() as AddressInfo).port, client, piped: client.then(() => piped!) };
}

/** Reads `s` to its end, hashing; a slow reader stops for 2 ms after every chunk. */
function slowDownload(s: Session, slow: boolean): { done: Promise<string>; received: () => number } {
  const hash = createHash('sha256');
  let received = 0;
  s.socket.on('data', (c: Buffer) => {
    hash.update(c);
    received += c.length;
    if (!slow) return;
    s.socket.pause();
    setTimeout(() => s.socket.resume(), 2);
  });
  return { done: s.done.then(() => hash.digest('hex')), received: () => received };
}

/** V8's full GC, exposed at run time (vitest's workers do not start with --expose-gc). */
function exposeGc(): () => void {
  setFlagsFromString('--expose-gc');
  return runInNewContext('gc') as () => void;
}

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

async function eventually(check: () => boolean | Promise<boolean>, ms = 3_000): Promise<void> {
  const until = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > until) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}

const accessLines = (g: Gateway): Record<string, unknown>[] =>
  g.logs.filter((l) => l.msg === 'tcp connection');

// ---------------------------------------------------------------------------------------------------------

describe('tcp listener: piping (issue 5 point 1, threat model #110)', () => {
  it('alice gets every byte back: 1 MiB in 1 KiB writes, checksum, then half-close still reads the reply', async () => {
    const up = await withUpstream();
    const gw = await startGateway(tcp(up));
    const s = connectClient(gw.port);
    const total = 1024 * 1024;
    const sent = await writeAll(s.socket, total, 1024);
    const echoed = await s.waitFor(total);
    expect(sha256(echoed.subarray(0, total))).toBe(sent);
    // Client FIN → upstream `end`; the upstream then answers and the client still reads it.
    s.socket.end();
    const r = await s.done;
    expect(r.error).toBeUndefined();
    expect(r.ended).toBe(true);
    expect(r.data.subarray(total).toString()).toBe(`<<EOF ${total}>>`);
    expect(up.connections[0]?.ended).toBe(true);

    await eventually(() => accessLines(gw).length === 1);
    const line = accessLines(gw)[0]!;
    expect(line).toMatchObject({
      level: 'info',
      listener: 'dask-comm',
      connectionId: expect.stringMatching(/^[0-9a-f-]{36}$/) as unknown,
      clientAddress: '127.0.0.1',
      clientSubject: expect.stringContaining('CN=alice') as unknown,
      clientFingerprint: expect.stringMatching(/^[0-9a-f]{64}$/) as unknown,
      bytesIn: total,
      bytesOut: total + `<<EOF ${total}>>`.length,
      reason: 'closed',
    });
    expect(typeof line.durationMs).toBe('number');
    expect(await gw.metric('portcullis_tcp_bytes_total', { direction: 'in' })).toBe(total);
    expect(await gw.metric('portcullis_tcp_connections_total', { reason: 'closed' })).toBe(1);
    expect(await gw.metric('portcullis_tls_handshakes_total')).toBe(1);
    await eventually(async () => (await gw.metric('portcullis_active_connections')) === 0);
  });

  it('half-close: the client sends and shuts down its write side, then reads what the upstream says after it', async () => {
    const up = await withUpstream();
    const gw = await startGateway(tcp(up));
    const s = connectClient(gw.port);
    await new Promise((r) => s.socket.once('secureConnect', r));
    s.socket.end('ping');
    const r = await s.done;
    expect(r.data.toString()).toBe('ping<<EOF 4>>');
    expect(r.ended).toBe(true);
  });

  it('tiny writes: 20,000 one-byte writes arrive intact and in order', async () => {
    const up = await withUpstream();
    const gw = await startGateway(tcp(up));
    const s = connectClient(gw.port);
    s.socket.setNoDelay(true);
    const sent = await writeAll(s.socket, 20_000, 1);
    const echoed = await s.waitFor(20_000);
    expect(sha256(echoed.subarray(0, 20_000))).toBe(sent);
  });

  it('50 MB full duplex: both directions at once, checksums equal, RSS stays bounded', async () => {
    const up = await withUpstream();
    const gw = await startGateway(tcp(up));
    const s = connectClient(gw.port, 'alice', { collect: false });
    const total = 50 * 1024 * 1024;
    const back = createHash('sha256');
    let got = 0;
    const finished = new Promise<void>((resolve) => {
      s.socket.on('data', (c: Buffer) => {
        if (got >= total) return; // the upstream's `<<EOF n>>` trailer after the client's FIN
        const take = Math.min(c.length, total - got);
        back.update(c.subarray(0, take));
        got += c.length;
        if (got >= total) resolve();
      });
    });
    // Live Buffer memory after a full GC is what buffering the transfer would hold (V8 frees ArrayBuffer
    // memory on a background thread: two GCs a turn apart let it catch up). RSS also counts garbage not yet
    // collected, so it only gets a loose bound.
    const gc = exposeGc();
    const live = async (): Promise<number> => {
      gc();
      await new Promise((r) => setTimeout(r, 5));
      gc();
      return process.memoryUsage().arrayBuffers;
    };
    const liveBefore = await live();
    const rssBefore = process.memoryUsage().rss;
    let liveMax = liveBefore;
    let rssMax = rssBefore;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        await new Promise((r) => setTimeout(r, 100));
        rssMax = Math.max(rssMax, process.memoryUsage().rss);
        liveMax = Math.max(liveMax, await live());
      }
    })();
    try {
      const sent = await writeAll(s.socket, total, 64 * 1024);
      await finished;
      expect(back.digest('hex')).toBe(sent);
    } finally {
      sampling = false;
      await sampler;
    }
    expect(liveMax - liveBefore).toBeLessThan(16 * 1024 * 1024);
    expect(rssMax - rssBefore).toBeLessThan(100 * 1024 * 1024);
    s.socket.end();
    await s.done;
    await eventually(() => accessLines(gw).length === 1);
    expect(accessLines(gw)[0]).toMatchObject({ bytesIn: total, reason: 'closed' });
  }, 60_000);

  it('backpressure: an upstream that accepts and never reads stalls the client; the gateway buffers a bounded amount', async () => {
    const up = await withUpstream({ mode: 'sink' });
    const gw = await startGateway(tcp(up));
    const s = connectClient(gw.port);
    await new Promise((r) => s.socket.once('secureConnect', r));
    // What the kernel can hold on the two loopback connections (socket buffers, both ends) is the only
    // other place bytes can wait; everything the client flushed beyond that would be in the gateway.
    const maxOf = async (f: string): Promise<number> =>
      Number((await readFile(f, 'utf8')).trim().split(/\s+/)[2]);
    const kernel =
      2 * ((await maxOf('/proc/sys/net/ipv4/tcp_rmem')) + (await maxOf('/proc/sys/net/ipv4/tcp_wmem')));
    const bound = kernel + 8 * 1024 * 1024;
    const piece = randomBytes(64 * 1024);
    const goal = bound + 64 * 1024 * 1024;
    let queued = 0;
    // Write until the client's own buffer has not drained for a second.
    for (;;) {
      while (queued < goal && s.socket.write(piece)) queued += piece.length;
      if (queued >= goal) break;
      const drained = await Promise.race([
        new Promise<boolean>((r) => s.socket.once('drain', () => r(true))),
        new Promise<boolean>((r) => setTimeout(() => r(false), 1_000)),
      ]);
      queued += piece.length;
      if (!drained) break;
    }
    const flushed = s.raw.bytesWritten;
    expect(queued).toBeLessThan(goal);
    expect(flushed).toBeLessThan(bound);
    expect(up.connections[0]?.received).toBe(0);
    // Still connected: backpressure is not an error.
    expect(s.socket.destroyed).toBe(false);
    expect(accessLines(gw)).toHaveLength(0);
  }, 30_000);

  it('backpressure the other way: a client that never reads stalls an upstream that floods it', async () => {
    const up = await withUpstream({ mode: 'flood' });
    const gw = await startGateway(tcp(up));
    const s = connectClient(gw.port, 'alice', { collect: false });
    await new Promise((r) => s.socket.once('secureConnect', r));
    s.socket.pause();
    s.socket.write('go');
    await eventually(() => up.connections.length === 1);
    const conn = up.connections[0]!;
    // Wait until the upstream has made no progress for a second.
    let last = -1;
    for (let round = 0; round < 10 && conn.flushed !== last; round++) {
      last = conn.flushed;
      await new Promise((r) => setTimeout(r, 500));
    }
    const maxOf = async (f: string): Promise<number> =>
      Number((await readFile(f, 'utf8')).trim().split(/\s+/)[2]);
    const kernel =
      2 * ((await maxOf('/proc/sys/net/ipv4/tcp_rmem')) + (await maxOf('/proc/sys/net/ipv4/tcp_wmem')));
    // The client's own TLS socket buffers a little too (its readable highWaterMark); the rest is kernel.
    expect(conn.flushed).toBeLessThan(kernel + 8 * 1024 * 1024);
    expect(conn.flushed).toBeGreaterThan(0);
    expect(s.socket.destroyed).toBe(false);
  }, 30_000);

  it('backpressure at the pipe buffer size (issue 18): a slow upstream reader keeps what the gateway holds for it within PIPE_BUFFER_BYTES plus one read', async () => {
    const up = await withUpstream({ mode: 'slow' });
    const gw = await startGateway(tcp(up));
    const s = connectClient(gw.port, 'alice', { collect: false });
    await new Promise((r) => s.socket.once('secureConnect', r));
    const total = 8 * 1024 * 1024;
    const writing = writeAll(s.socket, total, 64 * 1024);
    await eventually(() => up.connections.length === 1);
    const conn = up.connections[0]!;
    // The gateway's own socket to the upstream (same process): what it holds for the upstream is its
    // write buffer (the kernel's socket buffers are not the gateway's memory, and are bounded by the kernel).
    const gatewaySide = (): Socket | undefined =>
      (process as unknown as { _getActiveHandles(): unknown[] })
        ._getActiveHandles()
        .find(
          (h): h is Socket =>
            h instanceof Object &&
            'remotePort' in h &&
            (h as Socket).remotePort === up.port &&
            (h as Socket).localPort === conn.socket.remotePort,
        );
    await eventually(() => gatewaySide() !== undefined);
    const gwUp = gatewaySide()!;
    expect(gwUp.writableHighWaterMark).toBe(PIPE_BUFFER_BYTES);
    let most = 0;
    const sample = setInterval(() => (most = Math.max(most, gwUp.writableLength)), 2);
    let digest: string;
    try {
      digest = await writing;
      s.socket.end();
      await eventually(() => conn.digest !== undefined, 30_000);
    } finally {
      clearInterval(sample);
    }
    expect(conn.received).toBe(total);
    expect(conn.digest).toBe(digest);
    // Paused once the buffer reached the mark: it never holds more than the mark plus the chunk that
    // crossed it (a TLS record: 16 KiB) ...
    expect(most).toBeLessThan(PIPE_BUFFER_BYTES + 64 * 1024);
    // ... and the reader really was slower than the writer: the buffer filled up to the mark.
    expect(most).toBeGreaterThanOrEqual(PIPE_BUFFER_BYTES);
    await s.done;
  }, 60_000);

  it('the read buffer the pipes share (issue 18): two downloads at once, one reader slow, each gets its own bytes in order', async () => {
    const total = 8 * 1024 * 1024;
    const up = await withUpstream({ mode: 'pieces', bytes: total });
    const gw = await startGateway(tcp(up));
    const slow = slowDownload(connectClient(gw.port, 'alice', { collect: false }), true);
    const fast = slowDownload(connectClient(gw.port, 'alice', { collect: false }), false);
    const [slowDigest, fastDigest] = await Promise.all([slow.done, fast.done]);
    expect(slow.received()).toBe(total);
    expect(slowDigest).toBe(up.connections[0]!.sentDigest);
    expect(fastDigest).toBe(up.connections[1]!.sentDigest);
    expect(slowDigest).not.toBe(fastDigest);
  }, 60_000);

  it('backpressure toward a slow client with the shared read buffer (issue 18): the gateway holds at most PIPE_BUFFER_BYTES plus one read for it', async () => {
    const total = 8 * 1024 * 1024;
    const up = await withUpstream({ mode: 'pieces', bytes: total });
    const { port, client } = await pipeDirect(up);
    const download = slowDownload(connectClient(port, 'alice', { collect: false }), true);
    const gateway = await client;
    expect(gateway.writableHighWaterMark).toBe(PIPE_BUFFER_BYTES);
    let most = 0;
    const sample = setInterval(() => (most = Math.max(most, gateway.writableLength)), 1);
    try {
      expect(await download.done).toBe(up.connections[0]!.sentDigest);
    } finally {
      clearInterval(sample);
    }
    expect(most).toBeLessThanOrEqual(PIPE_BUFFER_BYTES + READ_BUFFER_BYTES);
    // The reader really was slower: bytes waited in the gateway.
    expect(most).toBeGreaterThan(0);
  }, 60_000);

  it('the shared read buffer: upstream bytes that have to wait behind a pending write to the client are its own copy', async () => {
    // Through the listener a read never finds a write pending (the TLS write completes before the next
    // read): a corked client socket makes every write wait, which is the case the copy is for.
    const total = 256 * 1024;
    const up = await withUpstream({ mode: 'pieces', bytes: total, pieceBytes: 2048, paced: true });
    const { port, client, piped } = await pipeDirect(up, (socket) => {
      socket.cork();
      setTimeout(() => socket.uncork(), 200);
    });
    const r = await connectClient(port, 'alice').done;
    await client;
    expect(r.data.length).toBe(total);
    expect(sha256(r.data)).toBe(up.connections[0]!.sentDigest);
    expect((await piped).bytesOut).toBe(total);
  });

  it('released buffers (issue 18): every byte a client uploads is reported to the pacer once, after it was handed on', async () => {
    const up = await withUpstream({ mode: 'slow' });
    let released = 0;
    const { port, piped } = await pipeDirect(up, undefined, { onReleased: (n) => (released += n) });
    const s = connectClient(port, 'alice', { collect: false });
    await new Promise((r) => s.socket.once('secureConnect', r));
    const total = 2 * 1024 * 1024;
    const digest = await writeAll(s.socket, total, 64 * 1024);
    s.socket.end();
    const result = await piped;
    expect(result.bytesIn).toBe(total);
    expect(up.connections[0]!.digest).toBe(digest);
    // The upstream sent nothing back: what was released is the client's bytes, each once.
    expect(released).toBe(total);
  }, 60_000);

  it('young collections are paced by the bytes tunneled (issue 18): 40 MiB up and back, a collection every GC_PACE_BYTES', async () => {
    const up = await withUpstream({ mode: 'echo' });
    let collections = 0;
    const gw = await startGateway(tcp(up), { collectYoung: () => (collections += 1) });
    const s = connectClient(gw.port, 'alice', { collect: false });
    await new Promise((r) => s.socket.once('secureConnect', r));
    const total = 40 * 1024 * 1024;
    await writeAll(s.socket, total, 64 * 1024);
    await s.waitFor(total);
    s.socket.end();
    await s.done;
    expect(up.connections[0]!.received).toBe(total);
    // The upload alone makes total / GC_PACE_BYTES collections; the echo adds at most as many again.
    expect(collections).toBeGreaterThanOrEqual(Math.floor(total / GC_PACE_BYTES));
    expect(collections).toBeLessThanOrEqual(Math.floor((2 * total) / GC_PACE_BYTES));
  }, 60_000);

  it('idle timeout: no byte either way for idleMs closes both sides', async () => {
    const up = await withUpstream();
    const gw = await startGateway(tcp(up), { timeouts: { idleMs: 400 } });
    const s = connectClient(gw.port);
    // Before the last byte either way (the echo), so the gateway's idle timer starts after t0.
    const t0 = Date.now();
    s.socket.write('x');
    await s.waitFor(1);
    const r = await s.done;
    expect(Date.now() - t0).toBeGreaterThanOrEqual(300);
    expect(Date.now() - t0).toBeLessThan(3_000);
    expect(r.data.toString()).toBe('x');
    await up.connections[0]!.closed;
    await eventually(() => accessLines(gw).length === 1);
    expect(accessLines(gw)[0]).toMatchObject({ reason: 'idle_timeout', bytesIn: 1, bytesOut: 1 });
  });

  it('tunnelMaxMs: a busy connection is closed on both sides once it is that old (threat model #90d)', async () => {
    const up = await withUpstream();
    const gw = await startGateway(tcp(up), { timeouts: { idleMs: 20_000, tunnelMaxMs: 800 } });
    const s = connectClient(gw.port);
    // A byte every 100 ms: never idle, so only the lifetime can end it.
    const ticker = setInterval(() => {
      if (!s.socket.destroyed) s.socket.write('y');
    }, 100);
    const t0 = Date.now();
    const r = await s.done;
    clearInterval(ticker);
    const took = Date.now() - t0;
    expect(took).toBeGreaterThanOrEqual(700);
    expect(took).toBeLessThan(3_000);
    expect(r.data.length).toBeGreaterThan(3); // the echo flowed until the end
    await up.connections[0]!.closed;
    await eventually(() => accessLines(gw).length === 1);
    expect(accessLines(gw)[0]).toMatchObject({ reason: 'max_lifetime' });
    expect(await gw.metric('portcullis_tcp_connections_total', { reason: 'max_lifetime' })).toBe(1);
  });

  it('abortive close: a client RST resets the upstream connection (never a clean FIN)', async () => {
    const up = await withUpstream();
    const gw = await startGateway(tcp(up));
    const s = connectClient(gw.port);
    s.socket.write('partial upload');
    await s.waitFor(14);
    s.raw.resetAndDestroy();
    const conn = up.connections[0]!;
    await conn.closed;
    expect(conn.ended).toBe(false);
    expect(conn.error).toBe('ECONNRESET');
    await eventually(() => accessLines(gw).length === 1);
    expect(accessLines(gw)[0]).toMatchObject({ reason: 'client_reset' });
  });

  it('abortive close: an upstream RST resets the client connection', async () => {
    const up = await withUpstream({ mode: 'reset' });
    const gw = await startGateway(tcp(up));
    const s = connectClient(gw.port);
    s.socket.write('hello');
    const r = await s.done;
    expect(r.ended).toBe(false);
    expect(r.error).toBe('ECONNRESET');
    await eventually(() => accessLines(gw).length === 1);
    expect(accessLines(gw)[0]).toMatchObject({ reason: 'upstream_reset' });
  });

  it('upstream down: the client is closed promptly and the failure is counted and logged', async () => {
    const up = await startUpstream();
    const port = up.port;
    await up.close();
    const gw = await startGateway({ kind: 'tcp', host: '127.0.0.1', port }, { accessLog: false });
    const s = connectClient(gw.port);
    s.socket.write('anyone there?');
    // From the end of the TLS handshake, when the gateway dials the upstream.
    await Promise.race([new Promise((r) => s.socket.once('secureConnect', r)), s.done]);
    const t0 = Date.now();
    const r = await s.done;
    // Refused at once, not after upstreamConnectMs (2_000).
    expect(Date.now() - t0).toBeLessThan(1_500);
    expect(r.data.length).toBe(0);
    expect(await gw.metric('portcullis_tcp_connections_total', { reason: 'upstream_unavailable' })).toBe(1);
    // Logged at warn even with the access log off.
    expect(accessLines(gw)[0]).toMatchObject({
      level: 'warn',
      reason: 'upstream_unavailable',
      detail: 'ECONNREFUSED',
    });
  });

  it('a flapping upstream: refused while down, served again once it is back on the same port', async () => {
    const first = await startUpstream();
    const port = first.port;
    const gw = await startGateway({ kind: 'tcp', host: '127.0.0.1', port });
    const roundTrip = async (): Promise<string> => {
      const s = connectClient(gw.port);
      await new Promise((r) => s.socket.once('secureConnect', r));
      s.socket.end('hi');
      return (await s.done).data.toString();
    };
    expect(await roundTrip()).toBe('hi<<EOF 2>>');
    await first.close();
    expect(await roundTrip()).toBe('');
    const second = await withUpstream({ port });
    expect(await roundTrip()).toBe('hi<<EOF 2>>');
    expect(second.accepted).toBe(1);
    expect(await gw.metric('portcullis_tcp_connections_total', { reason: 'closed' })).toBe(2);
    expect(await gw.metric('portcullis_tcp_connections_total', { reason: 'upstream_unavailable' })).toBe(1);
  });

  it('a silent client (no byte) is closed after the handshake timeout and counted', async () => {
    const up = await withUpstream();
    const gw = await startGateway(tcp(up), { timeouts: { tlsHandshakeMs: 300 } });
    const raw = netConnect({ host: '127.0.0.1', port: gw.port });
    raw.on('error', () => undefined);
    const t0 = Date.now();
    await new Promise((r) => raw.once('close', r));
    expect(Date.now() - t0).toBeGreaterThanOrEqual(250);
    expect(
      await gw.metric('portcullis_tls_rejected_connections_total', { reason: 'handshake_timeout' }),
    ).toBe(1);
    expect(up.accepted).toBe(0);
  });

  it('no socket leak: after piped, refused, plaintext and upstream-down connections, open fds return to baseline', async () => {
    const up = await withUpstream();
    const gw = await startGateway(tcp(up));
    const down = await startUpstream();
    await down.close();
    const gwDown = await startGateway({ kind: 'tcp', host: '127.0.0.1', port: down.port });
    const fds = async (): Promise<number> => (await readdir('/proc/self/fd')).length;
    const settle = async (): Promise<void> => {
      await eventually(
        async () =>
          (await gw.metric('portcullis_active_connections')) === 0 &&
          (await gwDown.metric('portcullis_active_connections')) === 0,
      );
      await Promise.all(up.connections.map((c) => c.closed));
    };
    // Warm up (lazy handles, the TLS session cache), then measure.
    const one = connectClient(gw.port);
    await new Promise((r) => one.socket.once('secureConnect', r));
    one.socket.end('x');
    await one.done;
    await settle();
    const baseline = await fds();
    const runs: Promise<unknown>[] = [];
    for (let i = 0; i < 10; i++) {
      const ok = connectClient(gw.port);
      ok.socket.once('secureConnect', () => ok.socket.end('hello'));
      runs.push(ok.done);
      const reset = connectClient(gw.port);
      reset.socket.once('secureConnect', () => {
        reset.socket.write('x');
        setTimeout(() => reset.raw.resetAndDestroy(), 20);
      });
      runs.push(reset.done);
      runs.push(connectClient(gw.port, 'bob').done);
      runs.push(connectClient(gw.port, 'revoked').done);
      runs.push(connectClient(gwDown.port).done);
      const plain = netConnect({ host: '127.0.0.1', port: gw.port });
      plain.on('error', () => undefined);
      plain.end('GET / HTTP/1.1\r\n\r\n');
      runs.push(new Promise((r) => plain.once('close', r)));
    }
    await Promise.all(runs);
    await settle();
    await eventually(async () => (await fds()) <= baseline + 2);
    expect(await gw.metric('portcullis_tcp_connections_total')).toBe(21);
    expect(await gwDown.metric('portcullis_tcp_connections_total', { reason: 'upstream_unavailable' })).toBe(
      10,
    );
  }, 30_000);

  it('drain(grace): piped connections are cut when the grace period ends, reason shutdown', async () => {
    const up = await withUpstream();
    const gw = await startGateway(tcp(up));
    const s = connectClient(gw.port);
    s.socket.write('x');
    await s.waitFor(1);
    const t0 = Date.now();
    await gw.listener.drain(300);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(250);
    const r = await s.done;
    expect(r.data.toString()).toBe('x');
    await eventually(() => accessLines(gw).length === 1);
    expect(accessLines(gw)[0]).toMatchObject({ reason: 'shutdown' });
  });
});

describe('tcp listener: refusals before the upstream (issue 5 point 1)', () => {
  it.each<[string, TestClientName | 'none', string]>([
    ['no certificate', 'none', 'no_client_cert'],
    ['a certificate from another CA with the same name', 'otherCaAlice', 'bad_client_cert'],
    ['an expired certificate', 'expired', 'bad_client_cert'],
    ['a revoked certificate', 'revoked', 'revoked'],
    ['a valid certificate outside allowClients (bob, OU=ops)', 'bob', 'acl'],
  ])('%s: closed, counted, and the upstream never accepts', async (_name, client, reason) => {
    const up = await withUpstream();
    const gw = await startGateway(tcp(up));
    const s = connectClient(gw.port, client);
    s.socket.on('secureConnect', () => s.socket.write('should never arrive'));
    const r = await s.done;
    expect(r.data.length).toBe(0);
    await eventually(
      async () => (await gw.metric('portcullis_tls_rejected_connections_total', { reason })) === 1,
    );
    expect(up.accepted).toBe(0);
    expect(accessLines(gw)).toHaveLength(0);
    await eventually(async () => (await gw.metric('portcullis_active_connections')) === 0);
  });

  it('the ACL refusal log names the certificate (subject and fingerprint), not just the reason', async () => {
    const up = await withUpstream();
    const gw = await startGateway(tcp(up));
    await connectClient(gw.port, 'bob').done;
    await eventually(() => gw.logs.some((l) => l.reason === 'acl'));
    expect(gw.logs.find((l) => l.reason === 'acl')).toMatchObject({
      msg: 'connection refused',
      clientSubject: expect.stringContaining('CN=bob') as unknown,
      clientFingerprint: expect.stringMatching(/^[0-9a-f]{64}$/) as unknown,
    });
  });

  it('no allowClients: any certificate the CA vouches for passes', async () => {
    const up = await withUpstream();
    const gw = await startGateway(tcp(up), { acl: undefined });
    const s = connectClient(gw.port, 'bob');
    await new Promise((r) => s.socket.once('secureConnect', r));
    s.socket.end('ok');
    expect((await s.done).data.toString()).toBe('ok<<EOF 2>>');
  });

  it.each([
    ['an HTTP request', 'GET / HTTP/1.1\r\nHost: x\r\n\r\n'],
    ['a Dask-style binary frame', Buffer.from([0x01, 0, 0, 0, 0, 0, 0, 0, 0x08, 0, 0, 0, 0, 0, 0, 0])],
  ])('plaintext (%s): closed without a byte in answer, counted, upstream untouched', async (_name, bytes) => {
    const up = await withUpstream();
    const gw = await startGateway(tcp(up));
    const raw = netConnect({ host: '127.0.0.1', port: gw.port });
    raw.on('error', () => undefined);
    const chunks: Buffer[] = [];
    raw.on('data', (c: Buffer) => chunks.push(c));
    raw.write(bytes);
    await new Promise((r) => raw.once('close', r));
    expect(Buffer.concat(chunks).length).toBe(0);
    expect(await gw.metric('portcullis_tls_rejected_connections_total', { reason: 'plaintext' })).toBe(1);
    expect(up.accepted).toBe(0);
  });
});

describe('tcp listener: PROXY protocol v2 (issue 5 point 3)', () => {
  it('the upstream receives the header first, with the client address and the gateway address, then the bytes', async () => {
    const up = await withUpstream({ proxy: true });
    const gw = await startGateway(tcp(up), { proxyProtocol: 'v2' });
    const s = connectClient(gw.port);
    await new Promise((r) => s.socket.once('secureConnect', r));
    s.socket.end('after the header');
    const r = await s.done;
    expect(r.data.toString()).toBe('after the header<<EOF 16>>');
    expect(up.connections[0]?.proxy).toEqual({
      family: 0x11,
      source: '127.0.0.1',
      sourcePort: s.localPort(),
      destination: '127.0.0.1',
      destinationPort: gw.port,
    });
    // The header is not payload.
    await eventually(() => accessLines(gw).length === 1);
    expect(accessLines(gw)[0]).toMatchObject({ bytesIn: 16 });
  });

  it('without proxyProtocol the upstream gets the bytes alone', async () => {
    const up = await withUpstream();
    const gw = await startGateway(tcp(up));
    const s = connectClient(gw.port);
    await new Promise((r) => s.socket.once('secureConnect', r));
    s.socket.end('plain');
    expect((await s.done).data.toString()).toBe('plain<<EOF 5>>');
  });

  it('to a tls:// upstream the header goes before the TLS handshake', async () => {
    const up = await withUpstream({ proxy: true, tls: { cert: cluster.server, ca: cluster.ca.certPem } });
    const gw = await startGateway(
      {
        kind: 'tls',
        host: '127.0.0.1',
        port: up.port,
        ca: cluster.ca.certPem,
        cert: cluster.gateway.certPem,
        key: cluster.gateway.keyPem,
      },
      { proxyProtocol: 'v2' },
    );
    const s = connectClient(gw.port);
    await new Promise((r) => s.socket.once('secureConnect', r));
    s.socket.end('secret');
    expect((await s.done).data.toString()).toBe('secret<<EOF 6>>');
    expect(up.connections[0]?.proxy).toMatchObject({
      source: '127.0.0.1',
      sourcePort: s.localPort(),
      destinationPort: gw.port,
    });
  });
});

describe('tcp listener: re-encryption to a tls:// upstream (issue 5 point 2)', () => {
  it('verifies the upstream against its CA and presents the gateway certificate, which the upstream verifies', async () => {
    const up = await withUpstream({ tls: { cert: cluster.server, ca: cluster.ca.certPem } });
    const gw = await startGateway({
      kind: 'tls',
      host: '127.0.0.1',
      port: up.port,
      ca: cluster.ca.certPem,
      cert: cluster.gateway.certPem,
      key: cluster.gateway.keyPem,
    });
    const s = connectClient(gw.port);
    const total = 256 * 1024;
    const sent = await writeAll(s.socket, total, 1024);
    s.socket.end();
    const r = await s.done;
    expect(sha256(r.data.subarray(0, total))).toBe(sent);
    expect(r.data.subarray(total).toString()).toBe(`<<EOF ${total}>>`);
    expect(up.connections[0]?.peerCn).toBe('portcullis-gateway');
    expect(up.tlsErrors).toEqual([]);
  });

  it('a servername is sent as SNI and checked against the upstream certificate', async () => {
    const up = await withUpstream({ tls: { cert: cluster.server, ca: cluster.ca.certPem } });
    const gw = await startGateway({
      kind: 'tls',
      host: '127.0.0.1',
      port: up.port,
      ca: cluster.ca.certPem,
      cert: cluster.gateway.certPem,
      key: cluster.gateway.keyPem,
      servername: 'scheduler.cluster.test',
    });
    const s = connectClient(gw.port);
    await new Promise((r) => s.socket.once('secureConnect', r));
    s.socket.end('sni');
    expect((await s.done).data.toString()).toBe('sni<<EOF 3>>');
    expect((up.connections[0]?.socket as TLSSocket & { servername?: string }).servername).toBe(
      'scheduler.cluster.test',
    );
  });

  it.each<[string, () => TcpUpstream, readonly string[], RegExp]>([
    [
      'the upstream certificate does not chain to the configured CA',
      () => ({
        kind: 'tls',
        host: '127.0.0.1',
        port: 0,
        ca: readTestCa(),
        cert: cluster.gateway.certPem,
        key: cluster.gateway.keyPem,
      }),
      ['upstream_tls'],
      /UNABLE_TO_VERIFY|SELF_SIGNED|UNABLE_TO_GET/,
    ],
    [
      'the servername is not in the upstream certificate',
      () => ({
        kind: 'tls',
        host: '127.0.0.1',
        port: 0,
        ca: cluster.ca.certPem,
        cert: cluster.gateway.certPem,
        key: cluster.gateway.keyPem,
        servername: 'other.cluster.test',
      }),
      ['upstream_tls'],
      /ALTNAME/,
    ],
    [
      'the gateway presents no client certificate',
      () => ({ kind: 'tls', host: '127.0.0.1', port: 0, ca: cluster.ca.certPem }),
      ['upstream_tls'],
      /CERTIFICATE_REQUIRED|HANDSHAKE_FAILURE/,
    ],
    [
      // Node (this test's upstream) verifies the client chain after the handshake and closes without an
      // alert, so the gateway sees a close or a reset rather than a TLS alert; OpenSSL servers (Dask) alert.
      'the gateway presents a certificate from another CA',
      () => ({
        kind: 'tls',
        host: '127.0.0.1',
        port: 0,
        ca: cluster.ca.certPem,
        cert: cluster.stranger.certPem,
        key: cluster.stranger.keyPem,
      }),
      ['upstream_tls', 'upstream_reset', 'closed'],
      /.*/,
    ],
  ])(
    'refused: %s — the client gets nothing and the upstream application sees no connection',
    async (_name, spec, reasons, detail) => {
      const up = await withUpstream({ tls: { cert: cluster.server, ca: cluster.ca.certPem } });
      const gw = await startGateway({ ...spec(), port: up.port });
      const s = connectClient(gw.port);
      s.socket.on('secureConnect', () => s.socket.write('must not arrive'));
      const r = await s.done;
      expect(r.data.length).toBe(0);
      await eventually(() => accessLines(gw).length === 1);
      const line = accessLines(gw)[0]!;
      expect(reasons).toContain(line.reason);
      expect(typeof line.detail === 'string' ? line.detail : '').toMatch(detail);
      expect(up.connections).toHaveLength(0);
    },
  );

  it('connect timeout: an upstream that accepts TCP but never answers the TLS handshake', async () => {
    const up = await withUpstream({ mode: 'silent' });
    const gw = await startGateway(
      { kind: 'tls', host: '127.0.0.1', port: up.port, ca: cluster.ca.certPem },
      { timeouts: { upstreamConnectMs: 300 } },
    );
    const s = connectClient(gw.port);
    const t0 = Date.now();
    const r = await s.done;
    expect(Date.now() - t0).toBeLessThan(2_000);
    expect(r.data.length).toBe(0);
    await eventually(() => accessLines(gw).length === 1);
    expect(accessLines(gw)[0]).toMatchObject({ reason: 'connect_timeout' });
  });
});

let testCaPem: string | undefined;
function readTestCa(): string {
  // The listener's client CA: a real CA, just not the one that signed the upstream.
  testCaPem ??= (listenerTls.options.ca as Buffer).toString('utf8');
  return testCaPem;
}
