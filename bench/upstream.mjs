// The bench upstream: a minimal keep-alive Node HTTP server on 127.0.0.1 answering every request with a
// small fixed body. It runs in its own process (started by run.mjs) and prints one JSON line
// {"msg":"listening","port":N} on stdout once it accepts connections.
//
// It doubles as the RFC 7662 introspection endpoint of the introspection rows: POST /introspect answers
// "active" for any token, and GET /__bench/introspections says how many calls arrived (a caching
// gateway makes a handful, whatever the request count).
import { createServer } from 'node:http';

const BODY = Buffer.from('hello from the bench upstream\n');
const HEADERS = { 'content-type': 'text/plain', 'content-length': String(BODY.length) };

let introspections = 0;

function introspect(req, res) {
  introspections += 1;
  req.resume();
  req.on('end', () => {
    const now = Math.floor(Date.now() / 1000);
    const body = JSON.stringify({
      active: true,
      sub: 'bench-user',
      scope: 'bench:read',
      aud: 'bench-api',
      client_id: 'bench',
      token_type: 'Bearer',
      iat: now,
      exp: now + 3600,
    });
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) });
    res.end(body);
  });
}

const server = createServer((req, res) => {
  if (req.method === 'POST' && req.url === '/introspect') return introspect(req, res);
  if (req.url === '/__bench/introspections') {
    res.writeHead(200, { 'content-type': 'text/plain' });
    return res.end(`${introspections}\n`);
  }
  // Drain any request body, then answer; keep-alive is Node's default for HTTP/1.1.
  req.resume();
  res.writeHead(200, HEADERS);
  res.end(BODY);
});
// Proxies keep pooled connections open between cases; do not close them under them (Node's default is 5 s).
server.keepAliveTimeout = 120_000;
server.headersTimeout = 125_000;
server.requestTimeout = 0;
server.maxRequestsPerSocket = 0;

server.listen(Number(process.env.BENCH_UPSTREAM_PORT ?? 0), '127.0.0.1', () => {
  const addr = server.address();
  process.stdout.write(`${JSON.stringify({ msg: 'listening', port: addr.port, pid: process.pid })}\n`);
});

const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
