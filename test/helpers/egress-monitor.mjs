/**
 * Egress monitor, preloaded into a process under test with `node --import <this file> ...`: records every
 * outbound attempt the process makes (issue 4 point 4: "the gateway itself never sends anything anywhere")
 * as one JSON line per attempt in the file named by `PORTCULLIS_EGRESS_LOG`. Without that variable it does
 * nothing. It never throws into the host process and never changes what a call does: every wrapper records,
 * then calls the original with the same `this` and arguments.
 *
 * What is seen, and through which hook (several hooks may report the same attempt; the test compares sets):
 * - TCP and TLS connects, IPC paths included: `net.Socket.prototype.connect` (tls.connect, net.connect,
 *   http, undici and fetch all end there) → kind `tcp`;
 * - the `net.client.socket` diagnostics channel (Node 20 publishes it from net.connect, not from
 *   tls.connect) → kind `net.client.socket`, its destination taken from the `tcp` record of the same socket;
 * - undici and fetch (`undici:client:beforeConnect`) → kind `undici`;
 * - `http`/`https`/`http2` request functions (`request`, `get`, `connect`) → kinds `http.request`, ...;
 *   the `http.client.request.start` channel → kind `http.client.request.start`;
 * - every DNS query: `dns` and `dns.promises` `lookup*`/`resolve*`/`reverse`, and `Resolver` instances
 *   → kinds `dns.lookup`, `dns.promises.resolve4`, `dns.Resolver.resolve4`, ...;
 * - UDP: `dgram.createSocket`, and `send`/`connect`/`bind` of a dgram socket → kinds `udp.*`;
 * - new processes and threads (a child could egress unseen): `child_process.*`, `cluster.fork`,
 *   `worker_threads.Worker` → kinds `spawn.*`, `worker`.
 *
 * Each record: `{ kind, host, port, path?, pid, time }` (`time` is Date.now() in ms).
 */
import { appendFileSync } from 'node:fs';
import { createRequire, syncBuiltinESMExports } from 'node:module';

const LOG = process.env.PORTCULLIS_EGRESS_LOG;
const require = createRequire(import.meta.url);

if (LOG !== undefined && LOG !== '') install(LOG);

function install(file) {
  const dc = require('node:diagnostics_channel');
  const net = require('node:net');
  const dns = require('node:dns');
  const dgram = require('node:dgram');
  const http = require('node:http');
  const https = require('node:https');
  const http2 = require('node:http2');
  const childProcess = require('node:child_process');
  const cluster = require('node:cluster');
  const workerThreads = require('node:worker_threads');

  const record = (kind, dest = {}) => {
    try {
      const line = {
        kind,
        host: dest.host ?? null,
        port: dest.port ?? null,
        pid: process.pid,
        time: Date.now(),
      };
      if (dest.path !== undefined) line.path = dest.path;
      if (dest.detail !== undefined) line.detail = dest.detail;
      appendFileSync(file, `${JSON.stringify(line)}\n`);
    } catch {
      // A monitor must never crash the process it watches.
    }
  };
  const num = (p) => (p === undefined || p === null || p === '' ? null : Number(p));

  /** Replaces obj[name] by a recording wrapper (if it is a function). */
  const wrap = (obj, name, kind, describe) => {
    const orig = obj?.[name];
    if (typeof orig !== 'function') return;
    const wrapped = function (...args) {
      let dest = {};
      try {
        dest = describe(args, this) ?? {};
      } catch {
        dest = {};
      }
      record(kind, dest);
      return new.target ? Reflect.construct(orig, args, new.target) : orig.apply(this, args);
    };
    Object.defineProperties(wrapped, Object.getOwnPropertyDescriptors(orig));
    obj[name] = wrapped;
  };

  // --- TCP / TLS / IPC -------------------------------------------------------------------------------
  const socketDest = new WeakMap();
  /** net's internal normalised form is [options, cb] with a symbol key; the public forms are (options), (port, host), (path). */
  const connectDest = (args) => {
    let a = args;
    if (Array.isArray(a[0])) a = a[0];
    const first = a[0];
    if (first !== null && typeof first === 'object') {
      if (typeof first.path === 'string') return { path: first.path };
      return { host: first.host ?? 'localhost', port: num(first.port) };
    }
    if (typeof first === 'string' && Number.isNaN(Number(first))) return { path: first };
    return { host: typeof a[1] === 'string' ? a[1] : 'localhost', port: num(first) };
  };
  const protoConnect = net.Socket.prototype.connect;
  net.Socket.prototype.connect = function (...args) {
    let dest = {};
    try {
      dest = connectDest(args);
      socketDest.set(this, dest);
    } catch {
      dest = {};
    }
    record('tcp', dest);
    return protoConnect.apply(this, args);
  };

  const subscribe = (name, fn) => {
    try {
      dc.subscribe(name, (msg) => {
        try {
          fn(msg);
        } catch {
          // ignore
        }
      });
    } catch {
      record('monitor.no-channel', { detail: name });
    }
  };
  // Published before socket.connect runs: read the destination the `tcp` hook stored, one microtask later.
  subscribe('net.client.socket', ({ socket }) =>
    queueMicrotask(() =>
      record('net.client.socket', socketDest.get(socket) ?? { detail: 'destination unknown' }),
    ),
  );
  subscribe('undici:client:beforeConnect', ({ connectParams: p }) =>
    record('undici', { host: p.hostname ?? p.host, port: num(p.port), detail: p.protocol }),
  );
  subscribe('http.client.request.start', ({ request }) => {
    const sock = request.socket;
    record('http.client.request.start', {
      host: request.host,
      port: num(sock?.remotePort),
      detail: request.path,
    });
  });

  // --- http / https / http2 ----------------------------------------------------------------------------
  const requestDest = (args) => {
    const [a, b] = args;
    const fromUrl = (u) => ({ host: u.hostname, port: num(u.port) });
    if (typeof a === 'string') return fromUrl(new URL(a));
    if (a instanceof URL) return fromUrl(a);
    const o = a ?? b ?? {};
    if (typeof o.socketPath === 'string') return { path: o.socketPath };
    return { host: o.hostname ?? o.host ?? 'localhost', port: num(o.port) };
  };
  for (const [mod, label] of [
    [http, 'http'],
    [https, 'https'],
  ]) {
    wrap(mod, 'request', `${label}.request`, requestDest);
    wrap(mod, 'get', `${label}.get`, requestDest);
  }
  wrap(http2, 'connect', 'http2.connect', (args) => {
    const u = typeof args[0] === 'string' ? new URL(args[0]) : args[0];
    return { host: u.hostname, port: num(u.port) };
  });

  // --- DNS ---------------------------------------------------------------------------------------------
  const DNS_FNS = [
    'lookup',
    'lookupService',
    'resolve',
    'resolve4',
    'resolve6',
    'resolveAny',
    'resolveCaa',
    'resolveCname',
    'resolveMx',
    'resolveNaptr',
    'resolveNs',
    'resolvePtr',
    'resolveSoa',
    'resolveSrv',
    'resolveTxt',
    'reverse',
  ];
  const dnsDest = (args) => ({ host: String(args[0]), port: typeof args[1] === 'number' ? args[1] : null });
  for (const fn of DNS_FNS) {
    wrap(dns, fn, `dns.${fn}`, dnsDest);
    wrap(dns.promises, fn, `dns.promises.${fn}`, dnsDest);
    wrap(dns.Resolver.prototype, fn, `dns.Resolver.${fn}`, dnsDest);
    wrap(dns.promises.Resolver.prototype, fn, `dns.promises.Resolver.${fn}`, dnsDest);
  }

  // --- UDP ---------------------------------------------------------------------------------------------
  wrap(dgram, 'createSocket', 'udp.createSocket', (args) => ({
    detail: typeof args[0] === 'string' ? args[0] : args[0]?.type,
  }));
  wrap(dgram.Socket.prototype, 'send', 'udp.send', (args) => {
    // send(msg[, offset, length], port[, address][, cb])
    const rest = args.slice(1).filter((x) => typeof x !== 'function');
    const port = rest.length >= 3 ? rest[2] : rest[0];
    const host = rest.length >= 3 ? rest[3] : rest[1];
    return { host: typeof host === 'string' ? host : null, port: num(port) };
  });
  wrap(dgram.Socket.prototype, 'connect', 'udp.connect', (args) => ({
    host: typeof args[1] === 'string' ? args[1] : 'localhost',
    port: num(args[0]),
  }));
  wrap(dgram.Socket.prototype, 'bind', 'udp.bind', () => ({}));

  // --- processes and threads -----------------------------------------------------------------------------
  for (const fn of ['spawn', 'spawnSync', 'exec', 'execSync', 'execFile', 'execFileSync', 'fork']) {
    wrap(childProcess, fn, `spawn.${fn}`, (args) => ({ detail: String(args[0]) }));
  }
  wrap(cluster, 'fork', 'spawn.cluster.fork', () => ({}));
  wrap(workerThreads, 'Worker', 'worker', (args) => ({ detail: String(args[0]) }));

  // ESM named imports of built-ins (`import { request } from 'node:http'`) see the wrappers too.
  syncBuiltinESMExports();
  record('monitor.installed', { detail: process.version });
}
