// The idle-connection client of bench/soak.mjs, run in its own process (so its memory and CPU are not
// Portcullis's): opens `count` mTLS keep-alive connections to Portcullis (at most `concurrency` handshakes
// in flight), sends one small GET on each so the server's HTTP layer is set up, then holds them all for
// `holdSeconds` without a byte, then sends one more GET on every connection still open to prove it is
// still served. Progress is one JSON line per phase on stdout:
//   {"msg":"held", ...}      every connection is open and answered its first GET (or failed)
//   {"msg":"holding", ...}   every 5 s during the hold: how many are still open
//   {"msg":"hold-end", ...}  the hold is over (the parent samples Portcullis here, before the re-check)
//   {"msg":"done", ...}      the re-check is over; the process exits
// Usage: node soak-idle-client.mjs '{"port":N,"count":N,"concurrency":N,"holdSeconds":N,"cert":…,"key":…,"ca":…,"openTimeoutS":N}'
import { readFileSync } from 'node:fs';
import { connect, createSecureContext } from 'node:tls';

const cfg = JSON.parse(process.argv[2] ?? '{}');
const out = (o) => process.stdout.write(`${JSON.stringify(o)}\n`);
// One context shared by every connection: the client's own memory stays small.
const secureContext = createSecureContext({
  cert: readFileSync(cfg.cert),
  key: readFileSync(cfg.key),
  ca: readFileSync(cfg.ca),
});
const REQUEST = 'GET /soak-idle HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: portcullis-soak\r\n\r\n';

/** Resolves with the status code of one HTTP/1.1 response read from `sock` (Content-Length bodies only). */
function readResponse(sock, timeoutMs) {
  return new Promise((resolve) => {
    let buf = '';
    const finish = (status) => {
      clearTimeout(timer);
      sock.off('data', onData);
      sock.off('close', onClose);
      resolve(status);
    };
    const onData = (chunk) => {
      buf += chunk.toString('latin1');
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      const len = Number(/\r\ncontent-length:\s*(\d+)/i.exec(buf.slice(0, end))?.[1] ?? 0);
      if (buf.length - end - 4 >= len) finish(Number(/^HTTP\/1\.1 (\d{3})/.exec(buf)?.[1] ?? 0));
    };
    const onClose = () => finish(-1);
    const timer = setTimeout(() => finish(-2), timeoutMs);
    sock.on('data', onData);
    sock.on('close', onClose);
  });
}

const open = new Set();
let failed = 0;
let droppedDuringHold = 0;
let holding = false;
const errors = new Map();
const noteError = (what) => errors.set(what, (errors.get(what) ?? 0) + 1);

/** One connection: handshake, one GET; resolves true when it is open and answered 200. */
function openOne() {
  return new Promise((resolve) => {
    const sock = connect({ host: '127.0.0.1', port: cfg.port, secureContext, ALPNProtocols: ['http/1.1'] });
    let settled = false;
    const fail = (why) => {
      if (settled) return;
      settled = true;
      noteError(why);
      sock.destroy();
      resolve(false);
    };
    const timer = setTimeout(() => fail('open timeout'), (cfg.openTimeoutS ?? 30) * 1000);
    sock.on('error', (err) => fail(err.code ?? err.message));
    sock.once('secureConnect', async () => {
      sock.write(REQUEST);
      const status = await readResponse(sock, 15_000);
      clearTimeout(timer);
      if (status !== 200)
        return fail(`first GET: ${status === -1 ? 'closed' : status === -2 ? 'timeout' : status}`);
      settled = true;
      open.add(sock);
      sock.once('close', () => {
        if (open.delete(sock) && holding) droppedDuringHold += 1;
      });
      resolve(true);
    });
  });
}

const t0 = Date.now();
let next = 0;
async function lane() {
  while (next < cfg.count) {
    next += 1;
    if (!(await openOne())) failed += 1;
  }
}
await Promise.all(Array.from({ length: Math.min(cfg.concurrency, cfg.count) }, lane));
out({
  msg: 'held',
  open: open.size,
  failed,
  errors: Object.fromEntries(errors),
  openSeconds: (Date.now() - t0) / 1000,
});

holding = true;
const holdStart = Date.now();
const progress = setInterval(
  () => out({ msg: 'holding', open: open.size, droppedDuringHold, seconds: (Date.now() - holdStart) / 1000 }),
  5_000,
);
await new Promise((r) => setTimeout(r, cfg.holdSeconds * 1000));
clearInterval(progress);
holding = false;
out({ msg: 'hold-end', open: open.size, droppedDuringHold });
await new Promise((r) => setTimeout(r, 1_000)); // lets the parent read /proc before the re-check burst

// Re-check: one more GET on every connection still open, 500 at a time.
const socks = [...open];
let recheckOk = 0;
let recheckFailed = 0;
for (let i = 0; i < socks.length; i += 500) {
  const batch = socks.slice(i, i + 500);
  const statuses = await Promise.all(
    batch.map((s) => {
      if (s.destroyed) return -1;
      s.write(REQUEST);
      return readResponse(s, 15_000);
    }),
  );
  for (const st of statuses)
    if (st === 200) recheckOk += 1;
    else recheckFailed += 1;
}
out({ msg: 'done', held: socks.length, droppedDuringHold, recheckOk, recheckFailed });
for (const s of open) s.destroy();
process.exit(0);
