// The reference row of the idle soak: what Node itself costs per idle mTLS connection, without
// Portcullis. The same server construction Portcullis uses (http2.createSecureServer with allowHTTP1,
// client certificate required), answering every request itself with a 30-byte body; keep-alive and idle
// timers off. Prints {"msg":"listening","listener":"bench","port":N} once it accepts connections.
// Usage: node soak-bare-server.mjs '{"cert":…,"key":…,"ca":…}'
import { createSecureServer } from 'node:http2';
import { secureServerOptions } from './server-options.mjs';

const cfg = JSON.parse(process.argv[2] ?? '{}');
const BODY = Buffer.from('hello from the bare node server\n').subarray(0, 30);
const server = createSecureServer(secureServerOptions(cfg));
server.setTimeout(0);
server.keepAliveTimeout = 0; // used by the HTTP/1 fallback: 0 = never close an idle connection
server.on('request', (req, res) => {
  req.resume();
  res.writeHead(200, { 'content-type': 'text/plain', 'content-length': String(BODY.length) });
  res.end(BODY);
});
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(
    `${JSON.stringify({ msg: 'listening', listener: 'bench', port: server.address().port })}\n`,
  );
});
process.on('SIGTERM', () => process.exit(0));
