// A sample upstream for deploy/docker/compose.yaml and the README's `docker run` example: answers every
// request with JSON naming what it received, including the identity headers Portcullis adds
// (X-Forwarded-Client-Cert, X-Forwarded-For). It listens on loopback only: it shares the gateway's network
// namespace, and only the gateway can reach it. Replace it with your service.
import { createServer } from 'node:http';

const port = Number(process.env.PORT ?? 8080);
const server = createServer((req, res) => {
  req.resume();
  req.on('end', () => {
    console.log(JSON.stringify({ msg: 'request', method: req.method, path: req.url }));
    const body = JSON.stringify({
      upstream: 'sample-upstream',
      method: req.method,
      path: req.url,
      clientCert: req.headers['x-forwarded-client-cert'] ?? null,
      forwardedFor: req.headers['x-forwarded-for'] ?? null,
    });
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(`${body}\n`);
  });
});
server.listen(port, '127.0.0.1', () => {
  const { port: bound } = server.address();
  console.log(JSON.stringify({ msg: 'sample upstream listening', address: '127.0.0.1', port: bound }));
});
// `docker stop`: finish what is in flight (at most 5 s), then exit.
process.on('SIGTERM', () => {
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 5_000).unref();
});
