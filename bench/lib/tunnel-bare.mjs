// The reference row of the TCP tunnel bench: the bare Node shape a TLS-in, TCP-out tunnel reduces to —
// `tls.createServer` (client certificate required) + `net.connect` + `pipe` both ways, with TCP_NODELAY
// on both sockets like Portcullis's listener, and nothing else (no ACL, no timers, no byte counters, no
// metrics, no access log). What moving bytes through Node's TLS costs, so that Portcullis's own cost is the
// difference. Prints {"msg":"listening","listener":"bench","port":N} once it accepts connections.
// `workers` > 1: node:cluster with that many workers (round-robin accept in the primary, Node's default on
// Linux, as Portcullis's `workers`), the reference of the `workers: auto` rows.
// Usage: node tunnel-bare.mjs '{"cert":…,"key":…,"ca":…,"upstreamPort":N,"workers":0}'
import cluster from 'node:cluster';
import { readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { createServer } from 'node:tls';

const cfg = JSON.parse(process.argv[2] ?? '{}');
if (cfg.workers > 1 && cluster.isPrimary) {
  for (let i = 0; i < cfg.workers; i++) cluster.fork();
  process.on('SIGTERM', () => {
    for (const w of Object.values(cluster.workers)) w.process.kill('SIGTERM');
    process.exit(0);
  });
} else {
  serve();
}

function serve() {
  const server = createServer(
    {
      cert: readFileSync(cfg.cert),
      key: readFileSync(cfg.key),
      ca: readFileSync(cfg.ca),
      requestCert: true,
      rejectUnauthorized: true,
      minVersion: 'TLSv1.2',
      noDelay: true,
      allowHalfOpen: true,
    },
    (client) => {
      const upstream = connect({
        host: '127.0.0.1',
        port: cfg.upstreamPort,
        noDelay: true,
        allowHalfOpen: true,
      });
      const fail = () => {
        client.destroy();
        upstream.destroy();
      };
      client.on('error', fail);
      upstream.on('error', fail);
      client.pipe(upstream);
      upstream.pipe(client);
    },
  );
  server.on('tlsClientError', () => {});
  server.listen(0, '127.0.0.1', () => {
    process.stdout.write(
      `${JSON.stringify({ msg: 'listening', listener: 'bench', port: server.address().port })}\n`,
    );
  });
  process.on('SIGTERM', () => process.exit(0));
}
