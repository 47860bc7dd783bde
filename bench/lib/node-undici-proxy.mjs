// Reference rows of the keep-alive group: the bare shape the issue's table calls "Node https + undici
// Pool" — the same server construction as Portcullis (http2.createSecureServer, allowHTTP1, client
// certificate required) forwarding every request to the upstream through one keep-alive undici Pool with
// `pool.request()`, nothing else: no routing, no header rewrite, no identity, no logging, no metrics.
// With "workers": N it forks N cluster workers (round-robin, as `workers: auto` does).
// Prints {"msg":"listening","listener":"bench","port":N} once it accepts connections (in cluster mode
// from the first worker that listens; all share the port).
// Usage: node node-undici-proxy.mjs '{"cert":…,"key":…,"ca":…,"upstreamPort":N,"workers":0}'
import cluster from 'node:cluster';
import { createSecureServer } from 'node:http2';
import { secureServerOptions } from './server-options.mjs';
import { Pool } from 'undici';

const cfg = JSON.parse(process.argv[2] ?? '{}');
const workers = Number(cfg.workers ?? 0);

/** Hop-by-hop request headers (RFC 9110 §7.6.1) and HTTP/2 pseudo-headers: not forwarded. */
const HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'te', 'host']);

if (workers > 0 && cluster.isPrimary) {
  let announced = false;
  for (let i = 0; i < workers; i++) cluster.fork();
  cluster.on('message', (_w, msg) => {
    if (!announced && msg?.port) {
      announced = true;
      process.stdout.write(`${JSON.stringify({ msg: 'listening', listener: 'bench', port: msg.port })}\n`);
    }
  });
  process.on('SIGTERM', () => {
    for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGTERM');
    process.exit(0);
  });
} else {
  const pool = new Pool(`http://127.0.0.1:${cfg.upstreamPort}`, { connections: 128, pipelining: 1 });
  const server = createSecureServer(secureServerOptions(cfg));
  server.on('request', (req, res) => {
    const headers = {};
    for (const [k, v] of Object.entries(req.headers)) if (k[0] !== ':' && !HOP.has(k)) headers[k] = v;
    const hasBody = req.method !== 'GET' && req.method !== 'HEAD';
    pool
      .request({ method: req.method, path: req.url, headers, body: hasBody ? req : null })
      .then(({ statusCode, headers: h, body }) => {
        delete h.connection;
        delete h['keep-alive'];
        delete h['transfer-encoding'];
        res.writeHead(statusCode, h);
        body.pipe(res);
      })
      .catch(() => {
        if (!res.headersSent) res.writeHead(502).end();
        else res.destroy();
      });
  });
  // In a cluster, listen(0) gives every worker the same port (the primary binds it once).
  server.listen(0, '127.0.0.1', () => {
    const port = server.address().port;
    if (cluster.isWorker) process.send({ port });
    else process.stdout.write(`${JSON.stringify({ msg: 'listening', listener: 'bench', port })}\n`);
  });
  process.on('SIGTERM', () => process.exit(0));
}
