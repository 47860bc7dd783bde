/**
 * Real clients for integration tests: HTTP/1.1 (node:https), HTTP/2 (node:http2), and raw bytes over
 * TLS (node:tls) for requests no well-behaved client would send. Each presents a client certificate
 * when given one and trusts only the test CA.
 */
import { readFileSync } from 'node:fs';
import { request as httpsRequest, type RequestOptions } from 'node:https';
import { connect as h2connect, type ClientHttp2Session, type OutgoingHttpHeaders } from 'node:http2';
import { connect as tlsConnect, type ConnectionOptions, type TLSSocket } from 'node:tls';
import type { TestPkiPaths, TestClientName } from './pki.js';

export interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** TLS options presenting `client`'s certificate (or none) and trusting the test CA. */
export function tlsOptions(pki: TestPkiPaths, client: TestClientName | undefined): ConnectionOptions {
  return {
    ca: readFileSync(pki.ca),
    ...(client ? { cert: readFileSync(pki.clients[client].cert), key: readFileSync(pki.clients[client].key) } : {}),
    servername: 'localhost',
  };
}

/** One HTTP/1.1 request over a fresh TLS connection. */
export function h1(
  port: number,
  pki: TestPkiPaths,
  opts: { client?: TestClientName | undefined; path?: string; method?: string; headers?: Record<string, string | string[]>; body?: string | Buffer; servername?: string } = {},
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const o: RequestOptions = {
      ...tlsOptions(pki, 'client' in opts ? opts.client : 'alice'),
      host: '127.0.0.1',
      port,
      path: opts.path ?? '/',
      method: opts.method ?? 'GET',
      headers: { host: `localhost:${port}`, ...opts.headers },
      agent: false,
      ...(opts.servername ? { servername: opts.servername } : {}),
    };
    const req = httpsRequest(o, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(opts.body);
  });
}

/** Opens an HTTP/2 session presenting `client`'s certificate. */
export function h2session(port: number, pki: TestPkiPaths, client: TestClientName | undefined = 'alice'): ClientHttp2Session {
  const session = h2connect(`https://localhost:${port}`, { ...tlsOptions(pki, client), host: '127.0.0.1', port });
  session.on('error', () => undefined);
  return session;
}

/** One HTTP/2 request on `session`. */
export function h2(session: ClientHttp2Session, headers: OutgoingHttpHeaders, body?: string | Buffer): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const stream = session.request({ ':method': 'GET', ':path': '/', ...headers }, { endStream: body === undefined });
    let status = 0;
    let resHeaders: Record<string, string | string[] | undefined> = {};
    stream.on('response', (h) => {
      status = Number(h[':status']);
      resHeaders = h;
    });
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => resolve({ status, headers: resHeaders, body: Buffer.concat(chunks).toString('utf8') }));
    stream.on('error', reject);
    if (body !== undefined) stream.end(body);
  });
}

/**
 * Sends raw bytes over a TLS connection (ALPN http/1.1) and collects everything until the server closes
 * the connection or `timeoutMs` passes. Resolves with what was read and whether the server closed.
 */
export function rawTls(
  port: number,
  pki: TestPkiPaths,
  data: string | Buffer,
  opts: { client?: TestClientName | undefined; timeoutMs?: number; servername?: string } = {},
): Promise<{ text: string; closed: boolean }> {
  return new Promise((resolve) => {
    const socket: TLSSocket = tlsConnect({
      ...tlsOptions(pki, 'client' in opts ? opts.client : 'alice'),
      host: '127.0.0.1',
      port,
      ALPNProtocols: ['http/1.1'],
      ...(opts.servername ? { servername: opts.servername } : {}),
    });
    const chunks: Buffer[] = [];
    let done = false;
    const finish = (closed: boolean): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      resolve({ text: Buffer.concat(chunks).toString('latin1'), closed });
    };
    const timer = setTimeout(() => finish(false), opts.timeoutMs ?? 3_000);
    socket.on('secureConnect', () => socket.write(data));
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('end', () => finish(true));
    socket.on('close', () => finish(true));
    socket.on('error', () => finish(true));
  });
}
