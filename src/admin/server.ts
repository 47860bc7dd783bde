/**
 * The admin listener: `GET /metrics` (Prometheus text), `GET /healthz` (the process answers),
 * `GET /readyz` (200 only when every data listener is bound; 503 with a JSON body naming what is not).
 * Never served on a data port; loopback unless the operator says otherwise (config checks it).
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';
import type { ListenAddress } from '../config/load.js';
import { ConfigError } from '../errors.js';

/** Readiness: the names of what is not ready yet (empty = ready). */
export type ReadinessProbe = () => readonly string[];

export interface AdminServer {
  address(): AddressInfo;
  close(): Promise<void>;
}

/** Starts the admin server. Rejects with a ConfigError naming `admin.listen` when it cannot bind. */
export async function startAdminServer(address: ListenAddress, deps: { registry: Registry; notReady: ReadinessProbe }): Promise<AdminServer> {
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    const send = (status: number, type: string, body: string): void => {
      res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store' });
      res.end(req.method === 'HEAD' ? undefined : body);
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      send(405, 'text/plain; charset=utf-8', 'method not allowed\n');
      return;
    }
    if (path === '/metrics') {
      deps.registry.metrics().then(
        (text) => send(200, deps.registry.contentType, text),
        () => send(500, 'text/plain; charset=utf-8', 'metrics unavailable\n'),
      );
    } else if (path === '/healthz') {
      send(200, 'application/json', '{"status":"ok"}\n');
    } else if (path === '/readyz') {
      const missing = deps.notReady();
      send(missing.length === 0 ? 200 : 503, 'application/json', JSON.stringify({ ready: missing.length === 0, notReady: missing }) + '\n');
    } else {
      send(404, 'text/plain; charset=utf-8', 'not found\n');
    }
  });
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(new ConfigError('admin.listen', `${address.host}:${address.port}`, `an address this process can bind (${err.code ?? err.message})`)),
    );
    server.listen({ host: address.host, port: address.port, exclusive: true }, () => resolve());
  });
  return {
    address: () => server.address() as AddressInfo,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
