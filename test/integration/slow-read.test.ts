/**
 * Threat model #103 (slow read) and #79 (HTTP/2 zero window): a client that asks for a large response and
 * then never reads it must not make the gateway buffer that response, nor hold the connection (and the
 * upstream connection behind it) forever.
 *
 * Expected of the gateway:
 * - backpressure to the upstream: the bytes the upstream manages to write stall at a bounded amount (socket
 *   buffers plus a chunk or two per exchange), far below the body's size, while the client connection is
 *   still open — the gateway stopped reading, it did not read everything into memory;
 * - `timeouts.idleMs` with no progress closes the client connection (HTTP/1.1) or the session (HTTP/2);
 * - that close aborts the upstream exchange, so the upstream response and its socket are released;
 * - process memory stays bounded with several slow readers at once, and the gateway keeps serving.
 *
 * Measured on Node 20: the close comes about 2 × idleMs after the last progress, not idleMs (Node's socket
 * and HTTP/2 session timers let the first expiry pass while a write is pending); the HTTP/2 session is
 * destroyed without a GOAWAY. The bounds below allow that; the figures are logged.
 *
 * The upstream is this file's own: it streams up to BODY_BYTES honouring backpressure itself and counts
 * the bytes it could hand to `write()`, so a figure near BODY_BYTES means the gateway read it all.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { h1, h2, h2session, tlsOptions } from '../helpers/clients.js';
import { FLAG, FRAME, frame, frameReader, PREFACE, requestHeaders } from '../helpers/h2-frames.js';
import { startGateway, tlsListener, type TestGateway } from '../helpers/gateway.js';

const IDLE_MS = 1_500;
/** Size of the upstream's /big response. */
const BODY_BYTES = 200 * 1024 * 1024;
const CHUNK_BYTES = 64 * 1024;
/** Upper bound of what one stalled exchange may let the upstream write (loopback socket buffers on both
 * sides plus the gateway's own per-exchange buffer are a few MiB). */
const STALL_BOUND = 16 * 1024 * 1024;
/** Safety fuse: bytes the upstream writes per test, across all responses, before it gives up on its own.
 * Far above what bounded exchanges need (20 × STALL_BOUND), it only keeps a gateway without backpressure
 * from eating gigabytes of this shared machine's memory; the per-exchange assertions still fail then. */
const FUSE_BYTES = 400 * 1024 * 1024;
const MiB = 1024 * 1024;

/** One /big response as the upstream saw it. */
interface BigResponse {
  /** Bytes handed to `res.write()` so far. */
  written: number;
  /** The whole body was written and flushed. */
  finished: boolean;
  /** Date.now() when the response closed (0: still open). */
  closedAt: number;
  /** The upstream's TCP socket of this exchange closed. */
  socketClosed: boolean;
}

let upstream: Server;
let upPort = 0;
const big = new Map<string, BigResponse>();
let fuseLeft = FUSE_BYTES;
let fuseBlown = false;
const upSockets = new Set<Socket>();
let gw: TestGateway;

function handleUpstream(req: IncomingMessage, res: ServerResponse): void {
  req.on('error', () => undefined);
  res.on('error', () => undefined);
  const url = new URL(req.url ?? '/', 'http://upstream');
  if (url.pathname !== '/big') {
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.end('ok\n');
    return;
  }
  const id = url.searchParams.get('id') ?? 'anonymous';
  const rec: BigResponse = { written: 0, finished: false, closedAt: 0, socketClosed: false };
  big.set(id, rec);
  req.socket.once('close', () => (rec.socketClosed = true));
  res.once('close', () => {
    rec.closedAt = Date.now();
    rec.finished = res.writableFinished;
  });
  const chunk = Buffer.alloc(CHUNK_BYTES, 0x61);
  res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(BODY_BYTES) });
  // Bounded: at most BODY_BYTES / CHUNK_BYTES writes per response, and the fuse across responses.
  const pump = (): void => {
    while (!res.destroyed && rec.written < BODY_BYTES) {
      if (fuseLeft <= 0) {
        fuseBlown = true;
        res.destroy();
        return;
      }
      const n = Math.min(CHUNK_BYTES, BODY_BYTES - rec.written);
      rec.written += n;
      fuseLeft -= n;
      if (!res.write(n === CHUNK_BYTES ? chunk : chunk.subarray(0, n))) {
        res.once('drain', pump);
        return;
      }
    }
    if (!res.destroyed) res.end();
  };
  pump();
}

beforeAll(async () => {
  upstream = createServer(handleUpstream);
  upstream.on('connection', (s: Socket) => {
    upSockets.add(s);
    s.once('close', () => upSockets.delete(s));
  });
  await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
  upPort = (upstream.address() as AddressInfo).port;
  gw = await startGateway((pki) => ({
    timeouts: { idleMs: IDLE_MS },
    listeners: [
      tlsListener(pki, {
        routes: [{ id: 'up', match: { pathPrefix: '/' }, upstream: `http://127.0.0.1:${upPort}` }],
      }),
    ],
  }));
});

afterAll(async () => {
  await gw?.close();
  if (upstream) {
    upstream.closeAllConnections();
    for (const s of upSockets) s.destroy();
    await new Promise<void>((resolve) => upstream.close(() => resolve()));
  }
});

const activeConnections = (): Promise<number> =>
  gw.metric('portcullis_active_connections', { listener: 'main' });
const activeStreams = (): Promise<number> => gw.metric('portcullis_active_streams', { listener: 'main' });
const rssMiB = (): number => Math.round((process.memoryUsage().rss / MiB) * 10) / 10;
const mib = (n: number): string => `${(n / MiB).toFixed(2)} MiB`;

/** Polls `cond` every `stepMs` for at most `timeoutMs`; Date.now() when it held, or -1. */
async function waitUntil(
  cond: () => boolean | Promise<boolean>,
  timeoutMs: number,
  stepMs = 25,
): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (let i = 0; i <= Math.ceil(timeoutMs / stepMs); i++) {
    if (await cond()) return Date.now();
    if (Date.now() >= deadline) break;
    await sleep(stepMs);
  }
  return -1;
}

/**
 * Waits until the upstream's written counts of `ids` have not moved for `quietMs` (bounded by
 * `timeoutMs`). Returns the counts, whether they settled, and whether every response was still open then
 * (a stall, not an abort).
 */
async function plateau(
  ids: readonly string[],
  quietMs = 500,
  timeoutMs = 8_000,
): Promise<{ written: number[]; settled: boolean; allOpen: boolean; lastProgressAt: number }> {
  const read = (): number[] => ids.map((id) => big.get(id)?.written ?? 0);
  const allOpen = (): boolean => ids.every((id) => big.get(id)?.closedAt === 0);
  let last = read();
  let quietSince = Date.now();
  const deadline = Date.now() + timeoutMs;
  for (let i = 0; i < Math.ceil(timeoutMs / 50) + 1 && Date.now() < deadline; i++) {
    await sleep(50);
    const now = read();
    if (now.some((v, k) => v !== last[k])) {
      last = now;
      quietSince = Date.now();
    } else if (Date.now() - quietSince >= quietMs) {
      return { written: now, settled: true, allOpen: allOpen(), lastProgressAt: quietSince };
    }
  }
  return { written: last, settled: false, allOpen: allOpen(), lastProgressAt: quietSince };
}

/** An HTTP/1.1 client that sends `GET /big?id=…`, reads the first chunk of the answer, then stops reading. */
interface SlowReader {
  readonly socket: TLSSocket;
  /** The first bytes it read (the status line and headers). */
  readonly head: string;
  /** Date.now() when it stopped reading. */
  readonly pausedAt: number;
}

function slowReader(id: string): Promise<SlowReader> {
  return new Promise((resolve, reject) => {
    const socket: TLSSocket = tlsConnect({
      ...tlsOptions(gw.pki, 'alice'),
      host: '127.0.0.1',
      port: gw.port(),
      ALPNProtocols: ['http/1.1'],
    });
    socket.on('error', () => undefined);
    const guard = setTimeout(() => {
      socket.destroy();
      reject(new Error(`slow reader ${id}: no answer within 5 s`));
    }, 5_000);
    socket.once('secureConnect', () => {
      socket.write(`GET /big?id=${id} HTTP/1.1\r\nHost: localhost:${gw.port()}\r\n\r\n`);
    });
    socket.once('data', (c: Buffer) => {
      socket.pause();
      clearTimeout(guard);
      resolve({ socket, head: c.subarray(0, 200).toString('latin1'), pausedAt: Date.now() });
    });
    socket.once('close', () => {
      clearTimeout(guard);
      reject(new Error(`slow reader ${id}: closed before any answer`));
    });
  });
}

/**
 * Resumes a paused reader and reads what is left in the socket buffers until the peer's close (or
 * `timeoutMs`): a connection the gateway closed ends once those buffers are drained.
 */
function drain(socket: TLSSocket, timeoutMs = 10_000): Promise<{ closed: boolean; bytes: number }> {
  return new Promise((resolve) => {
    let bytes = 0;
    let done = false;
    const finish = (closed: boolean): void => {
      if (done) return;
      done = true;
      clearTimeout(guard);
      socket.destroy();
      resolve({ closed, bytes });
    };
    const guard = setTimeout(() => finish(false), timeoutMs);
    if (socket.destroyed) {
      finish(true);
      return;
    }
    socket.on('data', (c: Buffer) => (bytes += c.length));
    socket.once('end', () => finish(true));
    socket.once('close', () => finish(true));
    socket.resume();
  });
}

describe(`slow read over HTTP/1.1 (threat model #103), idleMs = ${IDLE_MS} ms`, () => {
  it(
    'a client that stops reading a 200 MB download: the upstream is held back, the connection is closed after idleMs, the upstream exchange is aborted',
    { timeout: 20_000 },
    async () => {
      fuseLeft = FUSE_BYTES;
      expect(await waitUntil(async () => (await activeConnections()) === 0, 3_000)).not.toBe(-1);
      const reader = await slowReader('h1');
      try {
        expect(reader.head).toMatch(/^HTTP\/1\.1 200 /);
        // (a) backpressure: the upstream's writes stall at a bounded figure while the connection is open.
        const stall = await plateau(['h1']);
        const written = stall.written[0] ?? 0;
        console.info(`[slow-read h1] upstream wrote ${mib(written)} of ${mib(BODY_BYTES)} before stalling`);
        expect(written).toBeLessThan(STALL_BOUND);
        expect(written).toBeGreaterThan(0);
        expect(stall.settled).toBe(true);
        expect(stall.allOpen).toBe(true);
        expect(fuseBlown).toBe(false);

        // (b) the gateway closes the connection after about idleMs without progress. Measured: about
        // 2 × idleMs, because Node's socket timer (net.Socket#_onTimeout) lets the first expiry pass when
        // the write queue changed since the last write, and fires on the second.
        const closedAt = await waitUntil(async () => (await activeConnections()) === 0, 2 * IDLE_MS + 5_000);
        const closeMs = closedAt === -1 ? -1 : closedAt - stall.lastProgressAt;
        console.info(
          `[slow-read h1] gateway closed the connection ${closeMs} ms after the upstream's last progress ` +
            `(${closedAt === -1 ? -1 : closedAt - reader.pausedAt} ms after the client stopped reading)`,
        );
        expect(closedAt).not.toBe(-1);
        expect(closeMs).toBeGreaterThanOrEqual(IDLE_MS - 200);
        // The close comes at about 2 × idleMs (see (b) above); the bound is on that.
        expect(closeMs).toBeLessThan(2 * IDLE_MS + 3_000);

        // (c) the upstream response is aborted, unfinished, and its socket released.
        const rec = big.get('h1')!;
        expect(await waitUntil(() => rec.closedAt !== 0 && rec.socketClosed, 3_000)).not.toBe(-1);
        console.info(
          `[slow-read h1] upstream response closed ${rec.closedAt - reader.pausedAt} ms after the pause, ` +
            `${mib(rec.written)} written`,
        );
        expect(rec.finished).toBe(false);
        expect(rec.written).toBeLessThan(STALL_BOUND);
        expect(rec.closedAt - stall.lastProgressAt).toBeLessThan(2 * IDLE_MS + 3_000);

        // The client sees the close once it reads what the socket buffers still hold: a cut response.
        const rest = await drain(reader.socket);
        console.info(`[slow-read h1] client drained ${mib(rest.bytes)} after resuming, then saw the close`);
        expect(rest.closed).toBe(true);
        expect(rest.bytes).toBeLessThan(BODY_BYTES);
      } finally {
        reader.socket.destroy();
      }

      // (d) the gateway keeps serving.
      expect((await h1(gw.port(), gw.pki, { path: '/after-slow-read' })).status).toBe(200);
    },
  );

  it(
    '20 slow readers at once: each upstream write stalls at a bounded amount, RSS growth stays bounded, all are closed',
    { timeout: 25_000 },
    async () => {
      const N = 20;
      fuseLeft = FUSE_BYTES;
      fuseBlown = false;
      expect(await waitUntil(async () => (await activeConnections()) === 0, 3_000)).not.toBe(-1);
      const rssBefore = rssMiB();
      const ids = Array.from({ length: N }, (_, i) => `many-${i}`);
      const settled = await Promise.allSettled(ids.map((id) => slowReader(id)));
      const readers = settled.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
      try {
        expect(readers).toHaveLength(N);
        for (const r of readers) expect(r.head).toMatch(/^HTTP\/1\.1 200 /);
        const lastPause = Math.max(...readers.map((r) => r.pausedAt));
        const stall = await plateau(ids);
        const rssPeak = rssMiB();
        const total = stall.written.reduce((a, b) => a + b, 0);
        console.info(
          `[slow-read h1 ×${N}] upstream wrote per connection min ${mib(Math.min(...stall.written))}, ` +
            `max ${mib(Math.max(...stall.written))}, total ${mib(total)}; RSS ${rssBefore} MiB before, ` +
            `${rssPeak} MiB with all ${N} stalled`,
        );
        for (const w of stall.written) {
          expect(w).toBeLessThan(STALL_BOUND);
          expect(w).toBeGreaterThan(0);
        }
        expect(fuseBlown).toBe(false);
        expect(stall.settled).toBe(true);
        expect(stall.allOpen).toBe(true);
        // A loose sanity bound (tight figures belong to the benchmark): without backpressure this is GiBs.
        expect(rssPeak - rssBefore).toBeLessThan(150);

        const closedAt = await waitUntil(async () => (await activeConnections()) === 0, 2 * IDLE_MS + 5_000);
        console.info(
          `[slow-read h1 ×${N}] all connections closed ` +
            `${closedAt === -1 ? -1 : closedAt - stall.lastProgressAt} ms after the upstream's last progress ` +
            `(${closedAt === -1 ? -1 : closedAt - lastPause} ms after the last pause)`,
        );
        expect(closedAt).not.toBe(-1);
        expect(closedAt - stall.lastProgressAt).toBeGreaterThanOrEqual(IDLE_MS - 200);
        expect(closedAt - stall.lastProgressAt).toBeLessThan(2 * IDLE_MS + 3_000);
        const recs = ids.map((id) => big.get(id)!);
        expect(await waitUntil(() => recs.every((r) => r.closedAt !== 0 && r.socketClosed), 3_000)).not.toBe(
          -1,
        );
        expect(recs.filter((r) => r.finished)).toHaveLength(0);

        const drained = await Promise.all(readers.map((r) => drain(r.socket)));
        expect(drained.every((d) => d.closed && d.bytes < BODY_BYTES)).toBe(true);
        console.info(`[slow-read h1 ×${N}] RSS ${rssMiB()} MiB after all closed`);
      } finally {
        for (const r of readers) r.socket.destroy();
      }
      expect((await h1(gw.port(), gw.pki, { path: '/after-many' })).status).toBe(200);
    },
  );
});

// --- A raw HTTP/2 client: Node's own client manages flow control itself (it grants window as the
// application reads), so the only honest zero-window peer is one that writes the frames by hand. ---

/** HEADERS for `GET path`, ending the stream (no body). */
function getHeaders(streamId: number, authority: string, path: string): Buffer {
  return frame(
    FRAME.HEADERS,
    FLAG.END_STREAM | FLAG.END_HEADERS,
    streamId,
    requestHeaders('GET', path, authority),
  );
}

interface RawH2Stream {
  /** :status 200 as its static-table index (0x88), the way nghttp2 encodes it. */
  status200: boolean;
  headersAt: number;
  dataBytes: number;
  rstCode: number | undefined;
}

interface RawH2 {
  readonly socket: TLSSocket;
  readonly streams: Map<number, RawH2Stream>;
  goawayCode: number | undefined;
  /** Date.now() when the connection closed (0: open). */
  closedAt: number;
}

/**
 * Opens an h2 connection advertising SETTINGS_INITIAL_WINDOW_SIZE = 0 and sends one GET per path. It
 * acknowledges SETTINGS and answers PING (both carry no flow-control credit) and never sends WINDOW_UPDATE.
 */
function rawH2(paths: readonly string[]): Promise<RawH2> {
  return new Promise((resolve, reject) => {
    const socket: TLSSocket = tlsConnect({
      ...tlsOptions(gw.pki, 'alice'),
      host: '127.0.0.1',
      port: gw.port(),
      ALPNProtocols: ['h2'],
    });
    const conn: RawH2 = { socket, streams: new Map(), goawayCode: undefined, closedAt: 0 };
    socket.on('error', () => undefined);
    socket.once('close', () => (conn.closedAt = Date.now()));
    const guard = setTimeout(() => {
      socket.destroy();
      reject(new Error('h2: no handshake within 5 s'));
    }, 5_000);
    socket.once('secureConnect', () => {
      clearTimeout(guard);
      if (socket.alpnProtocol !== 'h2') {
        socket.destroy();
        reject(new Error(`h2: ALPN ${String(socket.alpnProtocol)}`));
        return;
      }
      const settings = Buffer.alloc(12);
      settings.writeUInt16BE(0x2, 0); // SETTINGS_ENABLE_PUSH
      settings.writeUInt32BE(0, 2);
      settings.writeUInt16BE(0x4, 6); // SETTINGS_INITIAL_WINDOW_SIZE
      settings.writeUInt32BE(0, 8);
      const authority = `localhost:${gw.port()}`;
      const out = [PREFACE, frame(FRAME.SETTINGS, 0, 0, settings)];
      paths.forEach((p, i) => {
        const id = 2 * i + 1;
        conn.streams.set(id, { status200: false, headersAt: 0, dataBytes: 0, rstCode: undefined });
        out.push(getHeaders(id, authority, p));
      });
      socket.write(Buffer.concat(out));
      resolve(conn);
    });
    socket.on(
      'data',
      frameReader(({ type, flags, stream, payload }) => {
        const st = conn.streams.get(stream);
        if (type === FRAME.SETTINGS && (flags & FLAG.ACK) === 0)
          socket.write(frame(FRAME.SETTINGS, FLAG.ACK, 0));
        else if (type === FRAME.PING && (flags & FLAG.ACK) === 0)
          socket.write(frame(FRAME.PING, FLAG.ACK, 0, payload));
        else if (type === FRAME.HEADERS && st) {
          st.status200 = payload[0] === 0x88;
          st.headersAt = Date.now();
        } else if (type === FRAME.DATA && st) st.dataBytes += payload.length;
        else if (type === FRAME.RST_STREAM && st) st.rstCode = payload.readUInt32BE(0);
        else if (type === FRAME.GOAWAY) conn.goawayCode = payload.readUInt32BE(4);
      }),
    );
  });
}

describe(`HTTP/2 zero window (threat model #79), idleMs = ${IDLE_MS} ms`, () => {
  it(
    '20 streams on a session with SETTINGS_INITIAL_WINDOW_SIZE = 0: upstream writes stall per stream, the session is closed after idleMs, the upstream exchanges are aborted, the gateway stays up',
    { timeout: 25_000 },
    async () => {
      const N = 20;
      fuseLeft = FUSE_BYTES;
      fuseBlown = false;
      expect(await waitUntil(async () => (await activeConnections()) === 0, 3_000)).not.toBe(-1);
      const rssBefore = rssMiB();
      const ids = Array.from({ length: N }, (_, i) => `h2-${i}`);
      const conn = await rawH2(ids.map((id) => `/big?id=${id}`));
      try {
        // Every stream got its response headers (HEADERS are not flow-controlled), and no DATA at all.
        expect(
          await waitUntil(() => [...conn.streams.values()].every((s) => s.headersAt !== 0), 5_000),
        ).not.toBe(-1);
        expect([...conn.streams.values()].every((s) => s.status200)).toBe(true);
        const lastHeaders = Math.max(...[...conn.streams.values()].map((s) => s.headersAt));
        expect(await waitUntil(() => ids.every((id) => big.has(id)), 3_000)).not.toBe(-1);

        const stall = await plateau(ids);
        const rssPeak = rssMiB();
        const total = stall.written.reduce((a, b) => a + b, 0);
        console.info(
          `[zero-window h2 ×${N}] upstream wrote per stream min ${mib(Math.min(...stall.written))}, ` +
            `max ${mib(Math.max(...stall.written))}, total ${mib(total)}; RSS ${rssBefore} MiB before, ` +
            `${rssPeak} MiB with all ${N} stalled`,
        );
        for (const w of stall.written) {
          expect(w).toBeLessThan(STALL_BOUND);
          expect(w).toBeGreaterThan(0);
        }
        expect(fuseBlown).toBe(false);
        expect(stall.settled).toBe(true);
        expect(stall.allOpen).toBe(true);
        expect(rssPeak - rssBefore).toBeLessThan(150);
        // The gateway honoured the zero window.
        expect([...conn.streams.values()].reduce((a, s) => a + s.dataBytes, 0)).toBe(0);

        // The session is closed after idleMs with no progress.
        const closedAt = await waitUntil(() => conn.closedAt !== 0, 2 * IDLE_MS + 5_000);
        const closeMs = closedAt === -1 ? -1 : conn.closedAt - lastHeaders;
        console.info(
          `[zero-window h2 ×${N}] session closed ${closeMs} ms after the last response headers ` +
            `(GOAWAY ${String(conn.goawayCode)}, RST_STREAM on ` +
            `${[...conn.streams.values()].filter((s) => s.rstCode !== undefined).length} streams, codes ` +
            `${[...new Set([...conn.streams.values()].flatMap((s) => (s.rstCode === undefined ? [] : [s.rstCode])))].join(',')})`,
        );
        expect(closedAt).not.toBe(-1);
        expect(closeMs).toBeGreaterThanOrEqual(IDLE_MS - 200);
        // As over HTTP/1.1, the close comes at about 2 × idleMs (Node's socket timer); the bound is on that.
        expect(closeMs).toBeLessThan(2 * IDLE_MS + 3_000);

        // The upstream exchanges are aborted and their sockets released.
        const recs = ids.map((id) => big.get(id)!);
        expect(await waitUntil(() => recs.every((r) => r.closedAt !== 0 && r.socketClosed), 3_000)).not.toBe(
          -1,
        );
        expect(recs.filter((r) => r.finished)).toHaveLength(0);
        expect(await waitUntil(async () => (await activeStreams()) === 0, 3_000)).not.toBe(-1);
        console.info(`[zero-window h2 ×${N}] RSS ${rssMiB()} MiB after the session closed`);
      } finally {
        conn.socket.destroy();
      }

      // The gateway stays up, for both protocols.
      const s = h2session(gw.port(), gw.pki);
      try {
        expect((await h2(s, { ':path': '/after-zero-window' })).status).toBe(200);
      } finally {
        s.destroy();
      }
      expect((await h1(gw.port(), gw.pki, { path: '/after-zero-window' })).status).toBe(200);
    },
  );
});
