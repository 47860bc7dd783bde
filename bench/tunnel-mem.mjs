#!/usr/bin/env node
// Memory of the TCP tunnel (issue 18 point 3): RSS per open tunnel and no growth across a long transfer.
//
//   npm run bench:tunnel-mem                      1,000 idle + 100 busy tunnels, then 10 min of transfers
//   npm run bench:tunnel-mem -- --minutes 3       a shorter growth run (the issue asks for 100 GiB in total;
//                                                 on a shared 2-core machine that is hours: bounded by time)
//   npm run bench:tunnel-mem -- --idle 200 --busy 20 --minutes 1 --churn 2000     a smoke run
//   /path/to/other/node bench/tunnel-mem.mjs --name tunnel-mem-node24.22   the servers run on the node that runs this
//
// Portcullis (dist/, one process, one `protocol: tcp` listener requiring a client certificate) and the bare
// Node reference (lib/tunnel-bare.mjs) in front of the tunload upstream (shim/tunload.c):
// - idle: N TLS tunnels opened by this process (100 handshakes in flight), each with its upstream connection
//   made (one 64-byte ping echoed through it), then held; VmRSS of the server before and with all N open;
// - busy: M tunnels each downloading without pause (tunload, 1 MiB reads) while VmRSS is sampled every
//   200 ms; the peak over the pass minus the RSS before it, per tunnel;
// - churn: N short tunnels (`--churn N`, default 20,000), 50 at a time, each opened, proven by one echoed ping
//   and closed; VmRSS after every tenth: what a server keeps per connection it has served and closed (the
//   growth row opens 18 connections per 4 passes, so this is the part of its growth that comes from
//   connections rather than bytes);
// - growth: uploads and downloads (1 connection × 1 GiB, 8 × 128 MiB) back to back until the time is up;
//   VmRSS after every pass, and V8's heap (used, total) and external memory from the admin listener's
//   /metrics, so that RSS growth can be told apart from live JavaScript objects. PASS when the largest RSS of the last tenth of the bytes is < 1.05 × the largest
//   of the tenth after the first (warm) tenth.
// Writes bench/results/<date>-tunnel-mem.md. Every loop is bounded in count and time.
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { mintPki } from './lib/pki.mjs';
import { freePort, killAllNow, listeningPort, processTree, runBounded, start, stop } from './lib/proc.mjs';
import { buildTunload, TUNNEL_CIPHERSUITE } from './lib/tunnel.mjs';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const BENCH = join(ROOT, 'bench');
const TMP = join(BENCH, 'results', 'tmp');
const DIST = join(ROOT, 'dist');
const MiB = 2 ** 20;

const { values: opt } = parseArgs({
  options: {
    idle: { type: 'string', default: '1000' },
    busy: { type: 'string', default: '100' },
    minutes: { type: 'string', default: '10' },
    churn: { type: 'string', default: '20000' },
    name: { type: 'string', default: 'tunnel-mem' },
    keep: { type: 'boolean', default: false },
  },
});
const IDLE = Number(opt.idle);
const BUSY = Number(opt.busy);
const MINUTES = Number(opt.minutes);
const CHURN = Number(opt.churn);
const log = (m) => process.stderr.write(`tunnel-mem: ${m}\n`);
process.on('exit', () => killAllNow());
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => (killAllNow(), process.exit(130)));

/** VmRSS summed over the process tree, in MiB. */
function rssMiB(pid) {
  let kib = 0;
  for (const p of processTree(pid)) {
    try {
      kib += Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${p}/status`, 'utf8'))?.[1] ?? 0);
    } catch {
      /* exited */
    }
  }
  return kib / 1024;
}

/** V8 heap used and total, and external memory, in MiB, from a Portcullis admin listener's /metrics. */
async function heapMiB(adminPort) {
  try {
    const text = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`, { signal: AbortSignal.timeout(5_000) })).text();
    const gauge = (name) => Number(new RegExp(`^portcullis_nodejs_${name} ([0-9.e+]+)$`, 'm').exec(text)?.[1] ?? NaN) / MiB;
    return { heapUsed: gauge('heap_size_used_bytes'), heapTotal: gauge('heap_size_total_bytes'), external: gauge('external_memory_bytes') };
  } catch {
    return { heapUsed: NaN, heapTotal: NaN, external: NaN };
  }
}

/** Starts a server; Portcullis with `adminPort` also gets its admin listener there (for {@link heapMiB}). */
async function startServer(kind, dir, pki, upstreamPort, adminPort = undefined) {
  const f = pki.files;
  mkdirSync(dir, { recursive: true });
  if (kind === 'portcullis') {
    const cfg = join(dir, 'portcullis.yaml');
    writeFileSync(
      cfg,
      `requireEncryption: true
admin: ${adminPort === undefined ? '{ enabled: false }' : `{ enabled: true, listen: 127.0.0.1:${adminPort} }`}
log: { level: info, access: false }
timeouts: { idleMs: 900000, tlsHandshakeMs: 60000 }
listeners:
  - name: bench
    listen: 127.0.0.1:0
    protocol: tcp
    maxConnections: 100000
    tls: { cert: ${f.rsaCert}, key: ${f.rsaKey}, minVersion: TLSv1.2, clientCertificate: require, clientCa: ${f.caCert} }
    upstream: tcp://127.0.0.1:${upstreamPort}
`,
    );
    const proc = start('portcullis', process.execPath, [join(DIST, 'src', 'main.js'), 'start', '--config', cfg], { cwd: dir });
    return { proc, port: await proc.waitForLine((l) => listeningPort(l, 'bench')) };
  }
  const proc = start('node-bare', process.execPath, [join(BENCH, 'lib', 'tunnel-bare.mjs'), JSON.stringify({ cert: f.rsaCert, key: f.rsaKey, ca: f.caCert, upstreamPort })], { cwd: dir });
  return { proc, port: await proc.waitForLine((l) => listeningPort(l)) };
}

/** Opens `n` tunnels (at most 100 handshakes at once), each proven end to end by one echoed ping. */
async function openIdle(port, pki, n) {
  const cert = readFileSync(pki.files.clientCert);
  const key = readFileSync(pki.files.clientKey);
  const ca = readFileSync(pki.files.caCert);
  const header = Buffer.from('P 1000000'.padEnd(31, ' ') + '\n');
  const ping = Buffer.alloc(64, 0x70);
  const sockets = [];
  let failed = 0;
  const one = () =>
    new Promise((res) => {
      const s = tlsConnect({ host: '127.0.0.1', port, cert, key, ca, minVersion: 'TLSv1.3', ciphers: TUNNEL_CIPHERSUITE, servername: '' });
      const t = setTimeout(() => (failed++, s.destroy(), res()), 30_000);
      let got = 0;
      s.on('error', () => undefined);
      s.once('secureConnect', () => s.write(Buffer.concat([header, ping])));
      s.on('data', (c) => {
        got += c.length;
        if (got >= 64) {
          clearTimeout(t);
          sockets.push(s);
          res();
        }
      });
      s.once('close', () => (clearTimeout(t), res()));
    });
  for (let i = 0; i < n; i += 100) await Promise.all(Array.from({ length: Math.min(100, n - i) }, one));
  return { sockets, failed: failed + (n - sockets.length - failed) };
}

/** Opens, pings and closes `n` tunnels, 50 at a time; VmRSS of the server after every tenth of them. */
async function churnRow(kind, pki, upstreamPort, runDir) {
  const srv = await startServer(kind, join(runDir, `${kind}-churn`), pki, upstreamPort);
  await new Promise((r) => setTimeout(r, 500));
  const before = rssMiB(srv.proc.pid);
  const samples = [];
  let failed = 0;
  const step = Math.max(50, Math.ceil(CHURN / 10));
  for (let done = 0; done < CHURN; ) {
    const n = Math.min(step, CHURN - done);
    for (let i = 0; i < n; i += 50) {
      const batch = await openIdle(srv.port, pki, Math.min(50, n - i));
      failed += batch.failed;
      await Promise.all(batch.sockets.map((s) => new Promise((r) => (s.once('close', r), s.end()))));
    }
    done += n;
    samples.push({ conns: done, rss: rssMiB(srv.proc.pid) });
  }
  await stop(srv.proc);
  const first = samples[0];
  const last = samples.at(-1);
  const perConnKiB = samples.length > 1 ? ((last.rss - first.rss) * 1024) / (last.conns - first.conns) : NaN;
  return { kind, before, samples, failed, perConnKiB };
}

async function idleRow(kind, pki, upstreamPort, runDir) {
  const srv = await startServer(kind, join(runDir, `${kind}-idle`), pki, upstreamPort);
  await new Promise((r) => setTimeout(r, 500));
  const before = rssMiB(srv.proc.pid);
  const { sockets, failed } = await openIdle(srv.port, pki, IDLE);
  await new Promise((r) => setTimeout(r, 3_000));
  const held = rssMiB(srv.proc.pid);
  for (const s of sockets) s.destroy();
  await stop(srv.proc);
  return { kind, before, held, open: sockets.length, failed, perTunnelKiB: ((held - before) * 1024) / Math.max(1, sockets.length) };
}

async function busyRow(kind, pki, upstreamPort, runDir, tunload) {
  const srv = await startServer(kind, join(runDir, `${kind}-busy`), pki, upstreamPort);
  const f = pki.files;
  const args = (mode, size, conns, secs) => ['run', '127.0.0.1', String(srv.port), mode, String(size), String(conns), String(secs), f.clientCert, f.clientKey, f.caCert, TUNNEL_CIPHERSUITE];
  await runBounded(tunload, args('down', 32 * MiB, 4, 60), { timeoutMs: 120_000 }); // warm-up
  await new Promise((r) => setTimeout(r, 1_000));
  const before = rssMiB(srv.proc.pid);
  let peak = before;
  const sampler = setInterval(() => (peak = Math.max(peak, rssMiB(srv.proc.pid))), 200);
  const r = await runBounded(tunload, args('down', 64 * MiB, BUSY, 240), { timeoutMs: 300_000 });
  clearInterval(sampler);
  await stop(srv.proc);
  let out = {};
  try {
    out = JSON.parse(r.stdout.trim().split('\n').pop());
  } catch {
    out = { error: r.stderr.slice(0, 200) };
  }
  return { kind, before, peak, conns: BUSY, perTunnelKiB: ((peak - before) * 1024) / BUSY, mibps: out.bytes / MiB / out.seconds, errors: out.errors, error: out.error };
}

async function growthRow(pki, upstreamPort, runDir, tunload) {
  const adminPort = await freePort();
  const srv = await startServer('portcullis', join(runDir, 'growth'), pki, upstreamPort, adminPort);
  const f = pki.files;
  const passes = [
    ['up', 1024 * MiB, 1],
    ['down', 1024 * MiB, 1],
    ['up', 128 * MiB, 8],
    ['down', 128 * MiB, 8],
  ];
  const samples = [];
  let bytes = 0;
  const deadline = Date.now() + MINUTES * 60_000;
  for (let i = 0; Date.now() < deadline && i < 100_000; i++) {
    const [mode, size, conns] = passes[i % passes.length];
    const r = await runBounded(tunload, ['run', '127.0.0.1', String(srv.port), mode, String(size), String(conns), '300', f.clientCert, f.clientKey, f.caCert, TUNNEL_CIPHERSUITE], { timeoutMs: 360_000 });
    let moved = 0;
    try {
      const j = JSON.parse(r.stdout.trim().split('\n').pop());
      moved = j.bytes;
      if (j.errors) log(`growth pass ${i}: ${j.error}`);
    } catch {
      log(`growth pass ${i}: no result (${r.stderr.slice(0, 200)})`);
    }
    bytes += moved;
    samples.push({ gib: bytes / 2 ** 30, rss: rssMiB(srv.proc.pid), ...(await heapMiB(adminPort)) });
  }
  await stop(srv.proc);
  const total = bytes / 2 ** 30;
  const inRange = (a, b) => samples.filter((s) => s.gib > a * total && s.gib <= b * total).map((s) => s.rss);
  const warm = Math.max(...inRange(0.1, 0.2), -Infinity);
  const last = Math.max(...inRange(0.9, 1.0), -Infinity);
  const first = samples[0]?.rss;
  const final = samples.at(-1)?.rss;
  // The V8 heap at the same points: live objects (used) and what V8 reserved (total), to tell a leak of
  // JavaScript objects from the heap or the allocator growing.
  const heapOf = (a, b, key) => Math.max(...samples.filter((x) => x.gib > a * total && x.gib <= b * total).map((x) => x[key]).filter(Number.isFinite), -Infinity);
  const heap = { usedWarm: heapOf(0.1, 0.2, 'heapUsed'), usedLast: heapOf(0.9, 1.0, 'heapUsed'), totalWarm: heapOf(0.1, 0.2, 'heapTotal'), totalLast: heapOf(0.9, 1.0, 'heapTotal') };
  return { total, passes: samples.length, first, warm, last, final, heap, max: Math.max(...samples.map((s) => s.rss)), pass: Number.isFinite(warm) && Number.isFinite(last) && last < 1.05 * warm, samples };
}

async function main() {
  mkdirSync(TMP, { recursive: true });
  const runDir = join(TMP, `mem-${new Date().toISOString().replace(/[:.]/g, '-')}`);
  mkdirSync(runDir, { recursive: true });
  const watchdog = setTimeout(() => (log('watchdog: time bound exceeded'), killAllNow(), process.exit(124)), (MINUTES * 60 + 900) * 1000);
  watchdog.unref();
  const tunload = buildTunload(BENCH, TMP, log);
  const pki = await mintPki(runDir, DIST);
  const up = start('upstream', tunload, ['serve', '0'], { cwd: runDir });
  const upstreamPort = await up.waitForLine((l) => listeningPort(l));
  const load0 = os.loadavg()[0];
  const idle = [];
  for (const kind of IDLE > 0 ? ['portcullis', 'node-bare'] : []) {
    log(`idle: ${IDLE} tunnels through ${kind}`);
    idle.push(await idleRow(kind, pki, upstreamPort, runDir));
    log(JSON.stringify(idle.at(-1)));
  }
  const busy = [];
  for (const kind of BUSY > 0 ? ['portcullis', 'node-bare'] : []) {
    log(`busy: ${BUSY} downloading tunnels through ${kind}`);
    busy.push(await busyRow(kind, pki, upstreamPort, runDir, tunload));
    log(JSON.stringify(busy.at(-1)));
  }
  const churn = [];
  for (const kind of CHURN > 0 ? ['portcullis', 'node-bare'] : []) {
    log(`churn: ${CHURN} short tunnels through ${kind}`);
    churn.push(await churnRow(kind, pki, upstreamPort, runDir));
    log(JSON.stringify({ ...churn.at(-1), samples: undefined }));
  }
  let growth;
  if (MINUTES > 0) {
    log(`growth: transfers for ${MINUTES} min`);
    growth = await growthRow(pki, upstreamPort, runDir, tunload);
    log(JSON.stringify({ ...growth, samples: undefined }));
  }
  await stop(up);
  clearTimeout(watchdog);

  const f1 = (v) => (Number.isFinite(v) ? v.toFixed(1) : '–');
  const date = new Date().toISOString().slice(0, 10);
  const md = [
    `# TCP tunnel memory — ${date} on ${os.hostname()}`,
    '',
    `Command: \`node bench/tunnel-mem.mjs ${process.argv.slice(2).join(' ')}\`. Node ${process.version}, Portcullis ${execFileSync('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim()}, ` +
      `${os.availableParallelism()} cores, load average ${load0.toFixed(2)} at start, ${os.loadavg()[0].toFixed(2)} at the end. VmRSS of the server process (Portcullis: one process).`,
    '',
    '| tunnels | server | RSS before MiB | RSS with the tunnels MiB | KiB per tunnel | notes |',
    '|---|---|---:|---:|---:|---|',
    ...idle.map((r) => `| ${IDLE} idle (TLS 1.3, upstream connected, one ping each) | ${r.kind} | ${f1(r.before)} | ${f1(r.held)} | ${f1(r.perTunnelKiB)} | ${r.open} open, ${r.failed} failed |`),
    ...busy.map((r) => `| ${BUSY} busy (each downloading 64 MiB at once) | ${r.kind} | ${f1(r.before)} | ${f1(r.peak)} (peak) | ${f1(r.perTunnelKiB)} | ${f1(r.mibps)} MiB/s in total, ${r.errors ?? '?'} errors${r.error ? ` (${r.error})` : ''} |`),
    '',
    ...(churn.length === 0
      ? []
      : [
          `Churn: ${CHURN} short tunnels, 50 at a time, each opened (TLS 1.3, client certificate), proven by one echoed ping and closed. VmRSS after every tenth, MiB, and what it grew by per connection from the first tenth to the last:`,
          '',
          '| server | RSS before | ' + churn[0].samples.map((x) => `after ${x.conns}`).join(' | ') + ' | KiB per connection | failed |',
          '|---|' + '---:|'.repeat(churn[0].samples.length + 3),
          ...churn.map((r) => `| ${r.kind} | ${f1(r.before)} | ${r.samples.map((x) => f1(x.rss)).join(' | ')} | ${f1(r.perConnKiB)} | ${r.failed} |`),
          '',
        ]),
    ...(growth === undefined
      ? []
      : [
          `Growth: ${growth.passes} passes (1 GiB up, 1 GiB down, 8 × 128 MiB up, 8 × 128 MiB down, repeated) in ${MINUTES} min, ${f1(growth.total)} GiB tunneled in total ` +
            `(the issue asks for 100 GiB; bounded by time on this shared machine). Portcullis RSS after the first pass ${f1(growth.first)} MiB, largest between 10 % and 20 % of the bytes ${f1(growth.warm)} MiB, ` +
            `largest over the last 10 % ${f1(growth.last)} MiB, after the last pass ${f1(growth.final)} MiB, largest of all ${f1(growth.max)} MiB: **${growth.pass ? 'PASS' : 'FAIL'}** (last < 1.05 × warm).`,
          '',
          `V8 heap at the same points (largest between 10 % and 20 % of the bytes → largest over the last 10 %): used ${f1(growth.heap.usedWarm)} → ${f1(growth.heap.usedLast)} MiB, ` +
            `total (reserved) ${f1(growth.heap.totalWarm)} → ${f1(growth.heap.totalLast)} MiB. RSS growing while the heap used does not is not a leak of JavaScript objects.`,
          '',
          '<details><summary>After every pass (GiB so far: RSS / V8 heap used / V8 heap total / external, MiB)</summary>',
          '',
          growth.samples.map((s) => `${s.gib.toFixed(1)}: ${[s.rss, s.heapUsed, s.heapTotal, s.external].map(f1).join(' / ')}`).join(', '),
          '',
          '</details>',
          '',
        ]),
  ].join('\n');
  const file = join(BENCH, 'results', `${date}-${opt.name}.md`);
  writeFileSync(file, md);
  process.stdout.write(`${md}\nwritten: ${file}\n`);
  if (!opt.keep) rmSync(runDir, { recursive: true, force: true });
}

main().then(
  () => (killAllNow(), process.exit(0)),
  (err) => (process.stderr.write(`tunnel-mem: ${err?.stack ?? err}\n`), killAllNow(), process.exit(1)),
);
