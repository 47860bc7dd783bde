/**
 * A real upstream for integration tests: an HTTP/1.1 server on 127.0.0.1:0 that records exactly what
 * arrived (raw request line and raw header block, body size), so tests assert on what was forwarded,
 * not on what a library reconstructed. Behaviour per path:
 *
 *   /slow?ms=N        waits N ms before answering
 *   /download?bytes=N streams N bytes (chunked) in 64 KiB pieces, honouring backpressure
 *   /chunked          a chunked answer with Keep-Alive and Connection-named headers (threat model #83)
 *   /hold             answers headers, then never finishes (client-abort tests)
 *   /reset?bytes=N    answers headers and N bytes (chunked), then resets the TCP connection (RST)
 *   /ws               WebSocket echo (ws package)
 *   /fake101          answers an upgrade with a 101 that has a wrong Sec-WebSocket-Accept
 *   /ws-silent        accepts an upgrade request and never answers it
 *   /ws-refuse        answers an upgrade with a chunked 403 carrying hop-by-hop headers, a header its
 *                     Connection names, two Set-Cookie and a telemetry header, then closes
 *   anything else     200 JSON {method, url, headers} after reading the whole body
 *
 * `startTlsUpstream(pki)` serves the same paths over HTTPS with the test PKI's server certificate.
 */
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { WebSocketServer } from 'ws';
import type { TestPkiPaths } from './pki.js';

/** One request as the upstream saw it. */
export interface SeenRequest {
  readonly method: string;
  readonly url: string;
  /** Raw header lines as received, names in original case. */
  readonly rawHeaders: readonly string[];
  /** Lowercased header map (first value wins for duplicates; arrays joined by ', '). */
  readonly headers: Record<string, string>;
  bodyBytes: number;
  /** TLS upstreams only: the CN of the client certificate the gateway presented, if any. */
  readonly clientCertCn?: string;
}

export interface TestUpstream {
  readonly port: number;
  readonly url: string;
  /** Every request that reached the upstream, upgrades included. */
  readonly seen: SeenRequest[];
  /** TCP connections accepted so far, and currently open. */
  connections(): { accepted: number; open: number };
  /** HTTP requests (not upgrades) being answered now, and the most ever answered at once. */
  inflight(): { now: number; max: number };
  /** Bytes that arrived on /fake101 sockets after the fake 101 was written (a smuggled tunnel). */
  fake101Bytes(): number;
  close(): Promise<void>;
}

function record(req: IncomingMessage, seen: SeenRequest[]): SeenRequest {
  const headers: Record<string, string> = {};
  for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) {
    const k = (req.rawHeaders[i] as string).toLowerCase();
    headers[k] ??= req.rawHeaders[i + 1] as string;
  }
  const sock = req.socket as Partial<TLSSocket>;
  const peer = typeof sock.getPeerCertificate === 'function' ? sock.getPeerCertificate() : undefined;
  const cn = peer?.subject?.CN;
  const s: SeenRequest = {
    method: req.method ?? '',
    url: req.url ?? '',
    rawHeaders: [...req.rawHeaders],
    headers,
    bodyBytes: 0,
    ...(typeof cn === 'string' ? { clientCertCn: cn } : {}),
  };
  seen.push(s);
  return s;
}

interface Counters {
  inflight: number;
  maxInflight: number;
  fake101Bytes: number;
}

function handle(req: IncomingMessage, res: ServerResponse, seen: SeenRequest[], counters: Counters): void {
  const s = record(req, seen);
  counters.inflight++;
  counters.maxInflight = Math.max(counters.maxInflight, counters.inflight);
  res.once('close', () => counters.inflight--);
  const url = new URL(req.url ?? '/', 'http://upstream');
  req.on('data', (c: Buffer) => (s.bodyBytes += c.length));
  req.on('error', () => undefined);
  res.on('error', () => undefined);
  const path = url.pathname;
  if (path === '/slow') {
    const timer = setTimeout(() => res.end('slow\n'), Number(url.searchParams.get('ms') ?? '1000'));
    res.on('close', () => clearTimeout(timer));
    return;
  }
  if (path === '/hold') {
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    res.write('data: hello\n\n');
    return;
  }
  if (path === '/chunked') {
    res.writeHead(200, { 'content-type': 'text/plain', 'keep-alive': 'timeout=5', connection: 'keep-alive, x-secret-hop', 'x-secret-hop': 'drop-me' });
    res.write('part1\n');
    setTimeout(() => res.end('part2\n'), 10);
    return;
  }
  if (path === '/reset') {
    // Headers and some body, then a TCP RST (SO_LINGER 0): the upstream dies mid-response (threat model #123).
    const bytes = Number(url.searchParams.get('bytes') ?? '65536');
    res.writeHead(200, { 'content-type': 'application/octet-stream' });
    res.write(Buffer.alloc(bytes, 0x62), () => {
      setTimeout(() => req.socket.resetAndDestroy(), 50);
    });
    return;
  }
  if (path === '/download') {
    let left = Number(url.searchParams.get('bytes') ?? '0');
    const chunk = Buffer.alloc(64 * 1024, 0x61);
    res.writeHead(200, { 'content-type': 'application/octet-stream' });
    const pump = (): void => {
      while (left > 0) {
        const n = Math.min(left, chunk.length);
        left -= n;
        if (!res.write(n === chunk.length ? chunk : chunk.subarray(0, n))) {
          res.once('drain', pump);
          return;
        }
      }
      res.end();
    };
    pump();
    return;
  }
  req.on('end', () => {
    const body = JSON.stringify({ method: req.method, url: req.url, headers: s.headers, bodyBytes: s.bodyBytes });
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  });
}

/** Starts the recording upstream on 127.0.0.1:0. */
export async function startUpstream(): Promise<TestUpstream> {
  return serve((handler) => createServer(handler), 'http');
}

/** Options of {@link startTlsUpstream}. */
export interface TlsUpstreamOptions {
  /** Certificate and key to present instead of the test PKI's server certificate. */
  readonly server?: { readonly certPem: string; readonly keyPem: string };
  /** Require a client certificate issued by `pki.ca` (an mTLS upstream). */
  readonly requireClientCert?: boolean;
}

/** Starts the same upstream over HTTPS on 127.0.0.1:0, presenting the test PKI's server certificate
 * (valid for localhost and 127.0.0.1, issued by `pki.ca`) unless `opts.server` says otherwise. */
export async function startTlsUpstream(pki: TestPkiPaths, opts: TlsUpstreamOptions = {}): Promise<TestUpstream> {
  const cert = opts.server?.certPem ?? readFileSync(pki.server.cert);
  const key = opts.server?.keyPem ?? readFileSync(pki.server.key);
  const mtls = opts.requireClientCert === true ? { requestCert: true, rejectUnauthorized: true, ca: readFileSync(pki.ca) } : {};
  return serve((handler) => createHttpsServer({ cert, key, ...mtls }, handler), 'https');
}

async function serve(
  make: (handler: (req: IncomingMessage, res: ServerResponse) => void) => Server,
  scheme: 'http' | 'https',
): Promise<TestUpstream> {
  const seen: SeenRequest[] = [];
  const counters: Counters = { inflight: 0, maxInflight: 0, fake101Bytes: 0 };
  let accepted = 0;
  const open = new Set<Socket>();
  const server: Server = make((req, res) => handle(req, res, seen, counters));
  server.keepAliveTimeout = 5_000;
  // Node 24 answers 431 past 1,000 request headers (Node 20 kept the first ones): a test that sends the
  // gateway its 1,000 must see what the gateway forwards, its own identity headers added.
  server.maxHeadersCount = 2_000;
  server.on('connection', (socket: Socket) => {
    accepted++;
    open.add(socket);
    socket.on('close', () => open.delete(socket));
  });
  const wss = new WebSocketServer({ noServer: true });
  wss.on('connection', (ws) => ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary })));
  server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
    record(req, seen);
    socket.on('error', () => undefined);
    // An upgraded socket has no HTTP server behind it any more and allows half-open: close it when the
    // peer does, so connections().open reflects what the gateway really keeps open.
    socket.on('end', () => socket.destroy());
    if (req.url?.startsWith('/fake101')) {
      socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: bm90LXRoZS1yaWdodC12YWx1ZQ==\r\n\r\n');
      counters.fake101Bytes += head.length;
      socket.on('data', (c: Buffer) => (counters.fake101Bytes += c.length));
      return;
    }
    if (req.url?.startsWith('/ws-silent')) return; // holds the socket, never answers (threat model #90b)
    if (req.url?.startsWith('/ws-refuse')) {
      socket.end(
        'HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nSet-Cookie: a=1; Path=/\r\n' +
          'Connection: close, X-Hop\r\nX-Hop: secret-hop\r\nKeep-Alive: timeout=5\r\nUpgrade: websocket\r\n' +
          'Proxy-Connection: keep-alive\r\nTransfer-Encoding: chunked\r\nSet-Cookie: b=2; Path=/\r\n' +
          'traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n' +
          '\r\n7\r\nrefused\r\n0\r\n\r\n',
      );
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    url: `${scheme}://127.0.0.1:${port}`,
    seen,
    connections: () => ({ accepted, open: open.size }),
    inflight: () => ({ now: counters.inflight, max: counters.maxInflight }),
    fake101Bytes: () => counters.fake101Bytes,
    close: () =>
      new Promise<void>((resolve) => {
        for (const c of wss.clients) c.terminate();
        wss.close();
        server.close(() => resolve());
        server.closeAllConnections();
        for (const s of open) s.destroy();
      }),
  };
}
