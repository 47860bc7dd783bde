/**
 * A real upstream for integration tests: an HTTP/1.1 server on 127.0.0.1:0 that records exactly what
 * arrived (raw request line and raw header block, body size), so tests assert on what was forwarded,
 * not on what a library reconstructed. Behaviour per path:
 *
 *   /slow?ms=N        waits N ms before answering
 *   /download?bytes=N streams N bytes (chunked) in 64 KiB pieces, honouring backpressure
 *   /chunked          a chunked answer with Keep-Alive and Connection-named headers (hostile case 83)
 *   /hold             answers headers, then never finishes (client-abort tests)
 *   /ws               WebSocket echo (ws package)
 *   /fake101          answers an upgrade with a 101 that has a wrong Sec-WebSocket-Accept
 *   anything else     200 JSON {method, url, headers} after reading the whole body
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { WebSocketServer } from 'ws';

/** One request as the upstream saw it. */
export interface SeenRequest {
  readonly method: string;
  readonly url: string;
  /** Raw header lines as received, names in original case. */
  readonly rawHeaders: readonly string[];
  /** Lowercased header map (first value wins for duplicates; arrays joined by ', '). */
  readonly headers: Record<string, string>;
  bodyBytes: number;
}

export interface TestUpstream {
  readonly port: number;
  readonly url: string;
  /** Every request that reached the upstream, upgrades included. */
  readonly seen: SeenRequest[];
  /** TCP connections accepted so far, and currently open. */
  connections(): { accepted: number; open: number };
  close(): Promise<void>;
}

function record(req: IncomingMessage, seen: SeenRequest[]): SeenRequest {
  const headers: Record<string, string> = {};
  for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) {
    const k = (req.rawHeaders[i] as string).toLowerCase();
    headers[k] ??= req.rawHeaders[i + 1] as string;
  }
  const s: SeenRequest = { method: req.method ?? '', url: req.url ?? '', rawHeaders: [...req.rawHeaders], headers, bodyBytes: 0 };
  seen.push(s);
  return s;
}

function handle(req: IncomingMessage, res: ServerResponse, seen: SeenRequest[]): void {
  const s = record(req, seen);
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
  const seen: SeenRequest[] = [];
  let accepted = 0;
  const open = new Set<Socket>();
  const server: Server = createServer((req, res) => handle(req, res, seen));
  server.keepAliveTimeout = 5_000;
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
    if (req.url?.startsWith('/fake101')) {
      socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: bm90LXRoZS1yaWdodC12YWx1ZQ==\r\n\r\n');
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    seen,
    connections: () => ({ accepted, open: open.size }),
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
