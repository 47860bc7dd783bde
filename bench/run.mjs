#!/usr/bin/env node
// Portcullis benchmark: one run, one table. See bench/README.md.
//
//   npm run bench                      3 runs of 10 s per case (medians), ~15 minutes
//   npm run bench -- --quick           1 run of 3 s per case, a smoke test
//   npm run bench -- --only direct,portcullis-mtls,haproxy-mtls
//   npm run bench -- --list            the case names
//   npm run bench -- --cpu-prof        also profile the Portcullis processes (node --cpu-prof) and print
//                                      the top self-time functions
//   npm run bench -- --only tunnel     the TCP tunnel rows only (stunnel, HAProxy mode tcp, bare Node);
//                                      --tunnel-mib 128 for a smoke run (default 1024: 1 GiB transfers)
//
// It mints a PKI, starts an upstream, then every selected proxy in its own process on 127.0.0.1, and
// drives them with wrk / h2load through an LD_PRELOAD shim that presents the client certificate. The
// cases are interleaved (run 1 of every case, then run 2 ...) so that drift on a shared machine hits
// every case alike. Every child is killed at the end, also on error and Ctrl-C.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { haproxyCfg, nginxConf, nginxDecisionConf, portcullisDecisionYaml, portcullisJwtProvider, portcullisYaml } from './lib/configs.mjs';
import { runLoad } from './lib/load.mjs';
import { mintPki } from './lib/pki.mjs';
import { cpuDelta, cpuSample, extraNodeArgs, freePort, killAllNow, listeningPort, peakRssMiB, start, stop, waitForPort } from './lib/proc.mjs';
import { machineFacts, markdownTable, textTable } from './lib/report.mjs';
import { buildTunload, runTunnelBench, tunnelCases, tunnelMarkdownTable, tunnelSelects, tunnelServerNeeds, tunnelTextTable, tunnelVerdicts, TUNNEL_CIPHERSUITE } from './lib/tunnel.mjs';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const BENCH = join(ROOT, 'bench');
const RESULTS = join(BENCH, 'results');
const TMP = join(RESULTS, 'tmp');
const DIST = join(ROOT, 'dist');

// ---------------------------------------------------------------------------------------------------------
// Options

const { values: opt } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    runs: { type: 'string' },
    duration: { type: 'string' },
    warmup: { type: 'string' },
    only: { type: 'string' },
    connections: { type: 'string', default: '64' },
    'handshake-clients': { type: 'string', default: '8' },
    threads: { type: 'string', default: '2' },
    'cpu-prof': { type: 'boolean', default: false },
    'tunnel-mib': { type: 'string' },
    keep: { type: 'boolean', default: false },
    list: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
/** Measured runs per case (median reported). */
const RUNS = Number(opt.runs ?? (opt.quick ? 1 : 3));
/** Seconds per measured run. */
const DURATION = Number(opt.duration ?? (opt.quick ? 3 : 10));
/** Seconds of unmeasured load before each measured run (JIT, connection pools, TLS caches). */
const WARMUP = Number(opt.warmup ?? (opt.quick ? 1 : 2));
const CONNECTIONS = Number(opt.connections);
const THREADS = Number(opt.threads);
/** Full-handshake rows: hsload threads, each one blocking connection at a time. */
const HANDSHAKE_CLIENTS = Number(opt['handshake-clients']);
/** HTTP/2: streams in flight per connection (h2load -m). */
const H2_STREAMS = 10;
/** The fixed-rate rows: total requests per second, over this many connections. */
const FIXED_RATE = 1000;
const FIXED_RATE_CONNECTIONS = 10;
/** Tunnel rows: MiB moved by the single-connection transfers (the 8-connection rows move 8 × this / 4). */
const TUNNEL_MIB = Number(opt['tunnel-mib'] ?? (opt.quick ? 128 : 1024));

// ---------------------------------------------------------------------------------------------------------
// What this machine and this build of Portcullis can do

function have(cmd) {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd} || test -x /usr/sbin/${cmd}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}
const tools = Object.fromEntries(['wrk', 'h2load', 'haproxy', 'nginx', 'gcc', 'openssl', 'stunnel4', 'redis-server'].map((t) => [t, have(t)]));

/** Features of the compiled Portcullis, read from its schema, so rows turn on as issues land. */
function portcullisFeatures() {
  const read = (...parts) => {
    try {
      return readFileSync(join(DIST, 'src', ...parts), 'utf8');
    } catch {
      return ''; // not built, or not there yet
    }
  };
  const schema = read('config', 'schema.js');
  const auth = /authProviders/.test(schema);
  return {
    jwt: auth && /jwksFile/.test(read('authn', 'jwt.js')),
    introspection: auth && /introspection/.test(read('authn', 'introspection.js')),
    workers: /\bworkers\b/.test(schema),
    store: /type: z.literal\('redis'\)/.test(read('config', 'store.js')),
    decision: /\bdecision\b/.test(read('config', 'listeners.js')),
  };
}
const features = portcullisFeatures();

// ---------------------------------------------------------------------------------------------------------
// The cases. `server` says what to start; `load` how to drive it; `group` which rows ratios compare.

const h1 = (headers = []) => ({ tool: 'wrk', connections: CONNECTIONS, threads: THREADS, headers });
const h2 = () => ({ tool: 'h2load', connections: CONNECTIONS, streams: H2_STREAMS, threads: THREADS, headers: [] });
// Not wrk with `Connection: close`: wrk spins while a handshake is in progress (shim/hsload.c says why).
const handshake = () => ({ tool: 'hsload', threads: HANDSHAKE_CLIENTS });
const rate = () => ({ tool: 'h2load-rate', connections: FIXED_RATE_CONNECTIONS, rate: FIXED_RATE, threads: 1 });

function needs(cond, why) {
  return cond ? undefined : why;
}
const NEEDS_JWT = needs(features.jwt, 'n/a (needs issue 3: JWT)');
const NEEDS_INTRO = needs(features.introspection, 'n/a (needs issue 3: introspection)');
const NEEDS_WORKERS = needs(features.workers, 'n/a (needs issue 6: `workers: auto`)');
const NEEDS_REDIS =
  needs(features.store, 'n/a (needs issue 17: `store: redis`)') ?? needs(tools['redis-server'], 'n/a (redis-server not installed)');
const NEEDS_DECISION = needs(features.decision, 'n/a (needs issue 16: the decision listener)');

/** Every case, in table order. */
const CASES = [
  { name: 'gen-ceiling', label: 'load generator ceiling: wrk → nginx `return 200`, plaintext', group: 'gen', server: { kind: 'nginx-return' }, load: h1(), needs: tools.nginx ? undefined : 'n/a (nginx not installed)' },
  { name: 'direct', label: 'direct plaintext to the upstream', group: 'h1', server: { kind: 'direct' }, load: h1() },
  { name: 'portcullis-mtls', label: 'Portcullis mTLS, 1 process', group: 'h1', server: { kind: 'portcullis', cert: 'rsa' }, load: h1() },
  { name: 'portcullis-mtls-jwt', label: 'Portcullis mTLS + JWT ES256 (cached), 1 process', group: 'h1', server: { kind: 'portcullis', cert: 'rsa', auth: 'jwt' }, load: h1(['Authorization: Bearer {ES256}']), needs: NEEDS_JWT },
  { name: 'portcullis-mtls-introspection', label: 'Portcullis mTLS + introspection (cached), 1 process', group: 'h1', server: { kind: 'portcullis', cert: 'rsa', auth: 'introspection' }, load: h1(['Authorization: Bearer {OPAQUE}']), needs: NEEDS_INTRO },
  { name: 'portcullis-mtls-workers', label: 'Portcullis mTLS, `workers: auto`', group: 'h1', server: { kind: 'portcullis', cert: 'rsa', workers: 'auto' }, load: h1(), needs: NEEDS_WORKERS },
  { name: 'portcullis-mtls-workers-sched-none', label: 'Portcullis mTLS, `workers: auto`, workers accept (SCHED_NONE, comparison)', group: 'h1', server: { kind: 'portcullis', cert: 'rsa', workers: 'auto', env: { NODE_CLUSTER_SCHED_POLICY: 'none' } }, load: h1(), needs: NEEDS_WORKERS },
  { name: 'portcullis-mtls-jwt-workers', label: 'Portcullis mTLS + JWT ES256 (cached), `workers: auto`', group: 'h1', server: { kind: 'portcullis', cert: 'rsa', auth: 'jwt', workers: 'auto' }, load: h1(['Authorization: Bearer {ES256}']), needs: NEEDS_JWT ?? NEEDS_WORKERS },
  { name: 'portcullis-mtls-introspection-workers', label: 'Portcullis mTLS + introspection (cached), `workers: auto`', group: 'h1', server: { kind: 'portcullis', cert: 'rsa', auth: 'introspection', workers: 'auto' }, load: h1(['Authorization: Bearer {OPAQUE}']), needs: NEEDS_INTRO ?? NEEDS_WORKERS },
  { name: 'portcullis-mtls-introspection-2p', label: 'Portcullis mTLS + introspection (cached), 2 processes (`workers: 2`), memory store', group: 'h1', server: { kind: 'portcullis', cert: 'rsa', auth: 'introspection', workers: 2 }, load: h1(['Authorization: Bearer {OPAQUE}']), needs: NEEDS_INTRO ?? NEEDS_WORKERS },
  { name: 'portcullis-mtls-introspection-2p-redis', label: 'Portcullis mTLS + introspection (cached), 2 processes sharing Redis (`store: redis`, near-cache hits)', group: 'h1', server: { kind: 'portcullis', cert: 'rsa', auth: 'introspection', workers: 2, store: 'redis' }, load: h1(['Authorization: Bearer {OPAQUE}']), needs: NEEDS_INTRO ?? NEEDS_WORKERS ?? NEEDS_REDIS },
  { name: 'node-undici', label: 'Node https + undici Pool, 1 process (reference: the bare forwarding shape, no checks)', group: 'h1', server: { kind: 'node-undici', cert: 'rsa' }, load: h1() },
  { name: 'node-undici-2', label: 'Node https + undici Pool, 2 processes (reference: the bare forwarding shape, no checks)', group: 'h1', server: { kind: 'node-undici', cert: 'rsa', workers: 2 }, load: h1() },
  { name: 'haproxy-mtls', label: 'HAProxy mTLS', group: 'h1', server: { kind: 'haproxy', cert: 'rsa' }, load: h1(), ref: 'haproxy' },
  { name: 'nginx-mtls', label: 'nginx mTLS', group: 'h1', server: { kind: 'nginx', cert: 'rsa' }, load: h1(), ref: 'nginx' },
  { name: 'haproxy-jwt-es256', label: 'HAProxy mTLS + jwt_verify ES256 (every request)', group: 'h1', server: { kind: 'haproxy', cert: 'rsa', jwt: 'ES256' }, load: h1(['Authorization: Bearer {ES256}']) },
  { name: 'haproxy-jwt-rs256', label: 'HAProxy mTLS + jwt_verify RS256 (every request)', group: 'h1', server: { kind: 'haproxy', cert: 'rsa', jwt: 'RS256' }, load: h1(['Authorization: Bearer {RS256}']) },
  { name: 'nginx-decision-cached', label: 'nginx mTLS + Portcullis decisions (JWT ES256), nginx caching each decision 10 s', group: 'h1', server: { kind: 'nginx-decision', cert: 'rsa', cacheSeconds: 10 }, load: h1(['Authorization: Bearer {ES256}']), needs: NEEDS_DECISION ?? NEEDS_JWT },
  { name: 'nginx-decision', label: 'nginx mTLS + Portcullis decisions (JWT ES256), a decision per request', group: 'h1', server: { kind: 'nginx-decision', cert: 'rsa' }, load: h1(['Authorization: Bearer {ES256}']), needs: NEEDS_DECISION ?? NEEDS_JWT },
  { name: 'nginx-decision-workers', label: 'nginx mTLS + Portcullis decisions (JWT ES256, `workers: auto`), a decision per request', group: 'h1', server: { kind: 'nginx-decision', cert: 'rsa', workers: 'auto' }, load: h1(['Authorization: Bearer {ES256}']), needs: NEEDS_DECISION ?? NEEDS_JWT ?? NEEDS_WORKERS },
  { name: 'portcullis-h2', label: 'HTTP/2 (h2load -m 10): Portcullis mTLS, 1 process', group: 'h2', server: { kind: 'portcullis', cert: 'rsa' }, load: h2() },
  { name: 'haproxy-h2', label: 'HTTP/2 (h2load -m 10): HAProxy mTLS', group: 'h2', server: { kind: 'haproxy', cert: 'rsa' }, load: h2(), ref: 'haproxy' },
  { name: 'nginx-h2', label: 'HTTP/2 (h2load -m 10): nginx mTLS', group: 'h2', server: { kind: 'nginx', cert: 'rsa' }, load: h2(), ref: 'nginx' },
  { name: 'portcullis-handshake-ecdsa', label: 'full handshakes/s, ECDSA P-256: Portcullis, 1 process', group: 'hs-ec', server: { kind: 'portcullis', cert: 'ec' }, load: handshake() },
  { name: 'portcullis-handshake-ecdsa-workers', label: 'full handshakes/s, ECDSA P-256: Portcullis, `workers: auto`', group: 'hs-ec', server: { kind: 'portcullis', cert: 'ec', workers: 'auto' }, load: handshake(), needs: NEEDS_WORKERS },
  { name: 'portcullis-handshake-ecdsa-workers-sched-none', label: 'full handshakes/s, ECDSA P-256: Portcullis, `workers: auto`, workers accept (SCHED_NONE, comparison)', group: 'hs-ec', server: { kind: 'portcullis', cert: 'ec', workers: 'auto', env: { NODE_CLUSTER_SCHED_POLICY: 'none' } }, load: handshake(), needs: NEEDS_WORKERS },
  { name: 'node-handshake-ecdsa', label: 'full handshakes/s, ECDSA P-256: bare Node https server, 1 process (reference: no proxying)', group: 'hs-ec', server: { kind: 'node-bare', cert: 'ec' }, load: handshake() },
  { name: 'haproxy-handshake-ecdsa', label: 'full handshakes/s, ECDSA P-256: HAProxy', group: 'hs-ec', server: { kind: 'haproxy', cert: 'ec' }, load: handshake(), ref: 'haproxy' },
  { name: 'nginx-handshake-ecdsa', label: 'full handshakes/s, ECDSA P-256: nginx', group: 'hs-ec', server: { kind: 'nginx', cert: 'ec' }, load: handshake(), ref: 'nginx' },
  { name: 'portcullis-handshake-rsa', label: 'full handshakes/s, RSA-2048: Portcullis, 1 process', group: 'hs-rsa', server: { kind: 'portcullis', cert: 'rsa' }, load: handshake() },
  { name: 'portcullis-handshake-rsa-workers', label: 'full handshakes/s, RSA-2048: Portcullis, `workers: auto`', group: 'hs-rsa', server: { kind: 'portcullis', cert: 'rsa', workers: 'auto' }, load: handshake(), needs: NEEDS_WORKERS },
  { name: 'portcullis-handshake-rsa-workers-sched-none', label: 'full handshakes/s, RSA-2048: Portcullis, `workers: auto`, workers accept (SCHED_NONE, comparison)', group: 'hs-rsa', server: { kind: 'portcullis', cert: 'rsa', workers: 'auto', env: { NODE_CLUSTER_SCHED_POLICY: 'none' } }, load: handshake(), needs: NEEDS_WORKERS },
  { name: 'node-handshake-rsa', label: 'full handshakes/s, RSA-2048: bare Node https server, 1 process (reference: no proxying)', group: 'hs-rsa', server: { kind: 'node-bare', cert: 'rsa' }, load: handshake() },
  { name: 'haproxy-handshake-rsa', label: 'full handshakes/s, RSA-2048: HAProxy', group: 'hs-rsa', server: { kind: 'haproxy', cert: 'rsa' }, load: handshake(), ref: 'haproxy' },
  { name: 'nginx-handshake-rsa', label: 'full handshakes/s, RSA-2048: nginx', group: 'hs-rsa', server: { kind: 'nginx', cert: 'rsa' }, load: handshake(), ref: 'nginx' },
  { name: 'direct-1k', label: `fixed ${FIXED_RATE} req/s (latency): direct plaintext`, group: 'rate', server: { kind: 'direct' }, load: rate(), ref: 'direct' },
  { name: 'portcullis-1k', label: `fixed ${FIXED_RATE} req/s (latency): Portcullis mTLS, 1 process`, group: 'rate', server: { kind: 'portcullis', cert: 'rsa' }, load: rate() },
  { name: 'portcullis-1k-workers', label: `fixed ${FIXED_RATE} req/s (latency): Portcullis mTLS, \`workers: auto\``, group: 'rate', server: { kind: 'portcullis', cert: 'rsa', workers: 'auto' }, load: rate(), needs: NEEDS_WORKERS },
  { name: 'haproxy-1k', label: `fixed ${FIXED_RATE} req/s (latency): HAProxy mTLS`, group: 'rate', server: { kind: 'haproxy', cert: 'rsa' }, load: rate(), ref: 'haproxy' },
  { name: 'nginx-1k', label: `fixed ${FIXED_RATE} req/s (latency): nginx mTLS`, group: 'rate', server: { kind: 'nginx', cert: 'rsa' }, load: rate(), ref: 'nginx' },
];
for (const c of CASES) {
  if (c.needs !== undefined) continue;
  const tool = c.load.tool === 'wrk' ? 'wrk' : 'h2load';
  if (!tools[tool]) c.needs = `n/a (${tool} not installed: bench/install.sh)`;
  else if (c.server.kind === 'haproxy' && !tools.haproxy) c.needs = 'n/a (haproxy not installed: bench/install.sh)';
  else if ((c.server.kind === 'nginx' || c.server.kind === 'nginx-decision') && !tools.nginx) c.needs = 'n/a (nginx not installed: bench/install.sh)';
}

/** The TCP tunnel cases (lib/tunnel.mjs): `tunnel-<workload>-<server>`. */
const TUNNEL_CASES = tunnelCases(TUNNEL_MIB);
for (const c of TUNNEL_CASES) c.needs = tunnelServerNeeds(c.server);

if (opt.help || opt.list) {
  if (opt.help) process.stdout.write(readFileSync(fileURLToPath(import.meta.url), 'utf8').split('\n').slice(1, 15).map((l) => l.replace(/^\/\/ ?/, '')).join('\n') + '\n\ncases:\n');
  for (const c of CASES) process.stdout.write(`  ${c.name.padEnd(40)} ${c.label}${c.needs ? `  [${c.needs}]` : ''}\n`);
  process.stdout.write('\ntunnel cases (--only tunnel | tunnel-<workload> | tunnel-<server> | a full name; `http` = every case above):\n');
  for (const c of TUNNEL_CASES) process.stdout.write(`  ${c.name.padEnd(40)} ${c.workload.label}: ${c.server.label}${c.needs ? `  [${c.needs}]` : ''}\n`);
  process.exit(0);
}

let selected = CASES;
let tunnelSelected = TUNNEL_CASES;
if (opt.only) {
  const names = opt.only.split(',').map((s) => s.trim()).filter(Boolean);
  const unknown = names.filter((n) => n !== 'http' && !CASES.some((c) => c.name === n) && !TUNNEL_CASES.some((c) => tunnelSelects(n, c)));
  if (unknown.length > 0) {
    process.stderr.write(`bench: unknown case(s) ${unknown.join(', ')}; --list shows them\n`);
    process.exit(2);
  }
  selected = CASES.filter((c) => names.includes(c.name) || names.includes('http'));
  tunnelSelected = TUNNEL_CASES.filter((c) => names.some((n) => tunnelSelects(n, c)));
}
/** Only tunnel rows: the HTTP part (wrk, the HTTP upstream, the shim) does not run at all. */
const tunnelOnly = selected.length === 0 && tunnelSelected.length > 0;

// ---------------------------------------------------------------------------------------------------------
// Cleanup: every child dies with us.

let cleaningUp = false;
process.on('exit', () => killAllNow());
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => {
    if (cleaningUp) return;
    cleaningUp = true;
    process.stderr.write(`\nbench: ${sig}, stopping every child process\n`);
    killAllNow();
    process.exit(130);
  });
}

const log = (msg) => process.stderr.write(`bench: ${msg}\n`);

// ---------------------------------------------------------------------------------------------------------
// Servers

/** Compiles the client-certificate shim into TMP, on demand: when shim.so is missing or older than shim.c. */
function buildShim() {
  const src = join(BENCH, 'shim', 'shim.c');
  const out = join(TMP, 'shim.so');
  if (!existsSync(out) || statSync(src).mtimeMs > statSync(out).mtimeMs) {
    if (!tools.gcc) throw new Error('gcc not installed: run bench/install.sh');
    execFileSync('gcc', ['-O2', '-shared', '-fPIC', '-o', out, src, '-ldl', '-lssl'], { stdio: 'inherit', timeout: 60_000 });
    log(`built ${out}`);
  }
  return out;
}

/** Compiles the full-handshake generator (shim/hsload.c) into TMP, on demand, as buildShim does. */
function buildHsload() {
  const src = join(BENCH, 'shim', 'hsload.c');
  const out = join(TMP, 'hsload');
  if (!existsSync(out) || statSync(src).mtimeMs > statSync(out).mtimeMs) {
    if (!tools.gcc) throw new Error('gcc not installed: run bench/install.sh');
    execFileSync('gcc', ['-O2', '-o', out, src, '-lssl', '-lcrypto', '-lpthread'], { stdio: 'inherit', timeout: 60_000 });
    log(`built ${out}`);
  }
  return out;
}

async function startUpstream(runDir) {
  const proc = start('upstream', process.execPath, [join(BENCH, 'upstream.mjs')], { cwd: runDir });
  const port = await proc.waitForLine((l) => listeningPort(l));
  return { proc, port };
}

/**
 * Starts the server of one case; resolves { proc, url, family } (proc undefined for direct: the shared
 * upstream is measured instead).
 */
async function startServer(c, ctx) {
  const s = c.server;
  const dir = join(ctx.runDir, c.name);
  mkdirSync(dir, { recursive: true });
  const { files } = ctx.pki;
  const cert = s.cert === 'ec' ? files.ecCert : files.rsaCert;
  const key = s.cert === 'ec' ? files.ecKey : files.rsaKey;
  const combined = s.cert === 'ec' ? files.ecCombined : files.rsaCombined;
  switch (s.kind) {
    case 'direct':
      return { proc: ctx.upstream.proc, url: `http://127.0.0.1:${ctx.upstream.port}/`, family: 'direct', shared: true };
    case 'portcullis': {
      let extra = '';
      let routeAuth;
      if (s.workers) extra += `workers: ${s.workers}\n`;
      if (s.auth === 'jwt') {
        extra += portcullisJwtProvider(files.jwks);
        routeAuth = '{ providers: [bench-jwt] }';
      } else if (s.auth === 'introspection') {
        writeFileSync(join(dir, 'introspection-secret'), 'bench-secret\n', { mode: 0o600 });
        extra += `authProviders:
  bench-introspection:
    type: introspection
    endpoint: http://127.0.0.1:${ctx.upstream.port}/introspect
    clientId: bench
    clientSecretFile: ${join(dir, 'introspection-secret')}
    audience: bench-api
    cache: { maxEntries: 10000, maxTtlSeconds: 300, negativeTtlSeconds: 10 }
    timeoutMs: 2000
`;
        routeAuth = '{ providers: [bench-introspection] }';
      }
      if (s.store === 'redis') {
        // A Redis of its own (loopback, no persistence), started with the row and stopped with the bench.
        const redisPort = await freePort();
        const redis = start(`${c.name}-redis`, 'redis-server', ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir], { cwd: dir });
        await waitForPort(redisPort, 10_000, redis);
        extra += `store:\n  type: redis\n  url: redis://127.0.0.1:${redisPort}/0\n  keyPrefix: "bench:"\n`;
      }
      const cfg = join(dir, 'portcullis.yaml');
      writeFileSync(cfg, portcullisYaml({ cert, key, ca: files.caCert, upstreamPort: ctx.upstream.port, routeAuth, extra }));
      const nodeArgs = [...extraNodeArgs(), ...(opt['cpu-prof'] ? ['--cpu-prof', `--cpu-prof-dir=${join(dir, 'prof')}`] : [])];
      // `env`: NODE_CLUSTER_SCHED_POLICY for the `workers` scheduling comparison rows.
      const proc = start(c.name, process.execPath, [...nodeArgs, join(DIST, 'src', 'main.js'), 'start', '--config', cfg], { cwd: dir, ...(s.env ? { env: s.env } : {}) });
      const port = await proc.waitForLine((l) => listeningPort(l, 'bench'));
      return { proc, url: `https://127.0.0.1:${port}/`, family: 'portcullis', profDir: opt['cpu-prof'] ? join(dir, 'prof') : undefined };
    }
    case 'node-bare': {
      // The reference for what Node's TLS stack itself costs: the soak's bare server (same server
      // construction as Portcullis, client certificate required, answers every request itself).
      const args = [...extraNodeArgs(), join(BENCH, 'lib', 'soak-bare-server.mjs'), JSON.stringify({ cert, key, ca: files.caCert })];
      const proc = start(c.name, process.execPath, args, { cwd: dir });
      const port = await proc.waitForLine((l) => listeningPort(l));
      return { proc, url: `https://127.0.0.1:${port}/`, family: 'node-bare' };
    }
    case 'node-undici': {
      // The issue's reference shape (lib/node-undici-proxy.mjs): what forwarding alone costs on Node.
      const args = [...extraNodeArgs(), join(BENCH, 'lib', 'node-undici-proxy.mjs'), JSON.stringify({ cert, key, ca: files.caCert, upstreamPort: ctx.upstream.port, workers: s.workers ?? 0 })];
      const proc = start(c.name, process.execPath, args, { cwd: dir });
      const port = await proc.waitForLine((l) => listeningPort(l));
      return { proc, url: `https://127.0.0.1:${port}/`, family: 'node-undici' };
    }
    case 'haproxy': {
      const port = await freePort();
      const cfg = join(dir, 'haproxy.cfg');
      const jwt = s.jwt ? { alg: s.jwt, publicKey: ctx.pki.jwt[s.jwt].publicKey } : undefined;
      writeFileSync(cfg, haproxyCfg({ port, combined, ca: files.caCert, upstreamPort: ctx.upstream.port, jwt }));
      try {
        execFileSync('haproxy', ['-c', '-q', '-f', cfg], { stdio: 'pipe', timeout: 10_000 });
      } catch (err) {
        const why = `${err.stderr ?? ''}${err.stdout ?? ''}`.trim().split('\n').filter((l) => /ALERT|error/i.test(l)).slice(0, 2).join(' ');
        throw new NotSupported(`n/a (haproxy rejected the config${s.jwt ? ': no jwt_verify?' : ''}) ${why.slice(0, 160)}`);
      }
      const proc = start(c.name, 'haproxy', ['-db', '-f', cfg], { cwd: dir });
      await waitForPort(port, 10_000, proc);
      return { proc, url: `https://127.0.0.1:${port}/`, family: 'haproxy' };
    }
    case 'nginx-decision': {
      // Two processes per row: Portcullis answering decisions, and nginx carrying the bytes. Both count.
      const pcfg = join(dir, 'portcullis.yaml');
      writeFileSync(pcfg, portcullisDecisionYaml({ jwksFile: files.jwks, workers: s.workers }));
      const decider = start(`${c.name}-portcullis`, process.execPath, [...extraNodeArgs(), join(DIST, 'src', 'main.js'), 'start', '--config', pcfg], { cwd: dir });
      const decisionPort = await decider.waitForLine((l) => listeningPort(l, 'bench'));
      const port = await freePort();
      const cfg = join(dir, 'nginx.conf');
      writeFileSync(cfg, nginxDecisionConf({ dir, port, cert, key, ca: files.caCert, upstreamPort: ctx.upstream.port, decisionPort, cacheSeconds: s.cacheSeconds }));
      const proc = start(c.name, 'nginx', ['-p', dir, '-c', cfg, '-e', join(dir, 'error.log')], { cwd: dir });
      await waitForPort(port, 10_000, proc);
      return { proc, also: [decider], url: `https://127.0.0.1:${port}/`, family: 'nginx-decision' };
    }
    case 'nginx':
    case 'nginx-return': {
      const port = await freePort();
      const cfg = join(dir, 'nginx.conf');
      writeFileSync(cfg, nginxConf({ dir, port, cert, key, ca: files.caCert, upstreamPort: ctx.upstream.port, plaintextReturn: s.kind === 'nginx-return' }));
      const proc = start(c.name, 'nginx', ['-p', dir, '-c', cfg, '-e', join(dir, 'error.log')], { cwd: dir });
      await waitForPort(port, 10_000, proc);
      return { proc, url: `${s.kind === 'nginx-return' ? 'http' : 'https'}://127.0.0.1:${port}/`, family: s.kind === 'nginx' ? 'nginx' : 'nginx-return' };
    }
    default:
      throw new Error(`unknown server kind ${s.kind}`);
  }
}

class NotSupported extends Error {}

// ---------------------------------------------------------------------------------------------------------
// Measuring

const median = (xs) => {
  const v = xs.filter(Number.isFinite).sort((a, b) => a - b);
  if (v.length === 0) return NaN;
  const m = Math.floor(v.length / 2);
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
};

function headersFor(c, ctx) {
  return (c.load.headers ?? []).map((h) =>
    h.replace('{ES256}', ctx.pki.jwt.ES256.token).replace('{RS256}', ctx.pki.jwt.RS256.token).replace('{OPAQUE}', ctx.opaqueToken),
  );
}

/** One measured pass of one case: generator output + the proxy's CPU delta over exactly that pass. */
async function measure(c, srv, ctx, seconds) {
  const load = { ...c.load, headers: headersFor(c, ctx) };
  // A row of two processes (nginx + Portcullis decisions) counts both; `also` is the second one alone.
  const also = srv.also ?? [];
  const before = cpuSample(srv.proc.pid);
  const alsoBefore = also.map((p) => cpuSample(p.pid));
  const r = await runLoad({ load, url: srv.url, seconds, shimEnv: ctx.shimEnv, logFile: join(ctx.runDir, `${c.name}.h2load.log`), hsloadBin: ctx.hsload });
  const after = cpuSample(srv.proc.pid);
  const alsoCpu = also.reduce((n, p, i) => n + cpuDelta(alsoBefore[i], cpuSample(p.pid)), 0);
  const cpu = cpuDelta(before, after) + alsoCpu;
  return {
    ...r,
    cpuUsPerReq: r.requests > 0 ? (cpu * 1e6) / r.requests : NaN,
    alsoCpuUsPerReq: also.length > 0 && r.requests > 0 ? (alsoCpu * 1e6) / r.requests : NaN,
    genCpuUsPerReq: r.requests > 0 && r.genCpuSeconds !== undefined ? (r.genCpuSeconds * 1e6) / r.requests : NaN,
  };
}

/** The same JWT with one character of its signature changed (not the last one, whose low bits may be padding). */
function breakSignature(jwt) {
  const dot = jwt.lastIndexOf('.');
  const i = dot + Math.floor((jwt.length - dot) / 2);
  return `${jwt.slice(0, i)}${jwt[i] === 'A' ? 'B' : 'A'}${jwt.slice(i + 1)}`;
}

/** wrk without the shim must get no 2xx from an mTLS server: proves the certificate is required (and that the shim is what supplies it). */
async function mtlsCheck(c, srv) {
  const r = await runLoad({ load: { tool: 'wrk', connections: 4, threads: 1, headers: [] }, url: srv.url, seconds: 1, shimEnv: {}, logFile: '' });
  return { okWithoutCert: Number.isFinite(r.ok) ? r.ok : 0, errors: r.socketErrors, detail: r.errorDetail };
}

// ---------------------------------------------------------------------------------------------------------
// Profile summary (--cpu-prof)

function topSelfTime(profDir, n = 10) {
  if (!profDir || !existsSync(profDir)) return [];
  const files = readdirSync(profDir).filter((f) => f.endsWith('.cpuprofile'));
  const self = new Map();
  let total = 0;
  for (const f of files) {
    const prof = JSON.parse(readFileSync(join(profDir, f), 'utf8'));
    const byId = new Map(prof.nodes.map((node) => [node.id, node]));
    const dt = new Map();
    prof.samples.forEach((id, i) => dt.set(id, (dt.get(id) ?? 0) + (prof.timeDeltas[i] ?? 0)));
    for (const [id, us] of dt) {
      const cf = byId.get(id)?.callFrame;
      if (!cf) continue;
      const where = cf.url ? `${cf.url.replace(/^file:\/\//, '').replace(`${ROOT}/`, '')}:${cf.lineNumber + 1}` : '';
      const k = `${cf.functionName || '(anonymous)'} ${where}`.trim();
      self.set(k, (self.get(k) ?? 0) + us);
      total += us;
    }
  }
  // Percentages of busy time: the process idles between cases, and (idle) would top every list.
  const busy = total - (self.get('(idle)') ?? 0);
  self.delete('(idle)');
  return [...self.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, n)
    .map(([k, us]) => ({ fn: k, ms: us / 1000, pct: (100 * us) / busy }));
}

// ---------------------------------------------------------------------------------------------------------
// Main

/** The HTTP rows: every selected case, interleaved; returns { rows, notes, profiles }. */
async function runHttp(runDir, pki, stamp) {
  const shim = buildShim();
  const hsload = buildHsload();
  const ctx = {
    runDir,
    pki,
    opaqueToken: `bench-opaque-${stamp}`,
    shimEnv: { LD_PRELOAD: shim, BENCH_CLIENT_CERT: pki.files.clientCert, BENCH_CLIENT_KEY: pki.files.clientKey },
    hsload,
  };
  ctx.upstream = await startUpstream(runDir);
  log(`upstream on 127.0.0.1:${ctx.upstream.port} (pid ${ctx.upstream.proc.pid})`);

  // Start every selected server up front (idle servers cost no CPU), so the runs can be interleaved.
  const servers = new Map();
  const results = new Map();
  for (const c of selected) {
    if (c.needs !== undefined) continue;
    try {
      servers.set(c.name, await startServer(c, ctx));
    } catch (err) {
      c.needs = err instanceof NotSupported ? err.message : `failed to start: ${String(err.message).split('\n')[0].slice(0, 200)}`;
      log(`${c.name}: ${c.needs}`);
      if (!(err instanceof NotSupported)) log(String(err.message).slice(0, 2000));
    }
  }

  // mTLS really required, and the shim really supplies the certificate: one no-certificate pass per family.
  const mtls = {};
  for (const c of selected) {
    const srv = servers.get(c.name);
    if (!srv || mtls[srv.family] !== undefined || !srv.url.startsWith('https:')) continue;
    mtls[srv.family] = await mtlsCheck(c, srv);
    log(`mTLS check ${srv.family}: wrk without the shim got ${mtls[srv.family].okWithoutCert} 2xx (${mtls[srv.family].detail || 'no detail'})`);
  }

  // The JWT rows really verify: the same token with a broken signature must get no 2xx.
  const tokenChecks = {};
  for (const c of selected) {
    const srv = servers.get(c.name);
    if (!srv || !(c.load.headers ?? []).some((h) => /\{(ES256|RS256)\}/.test(h))) continue;
    const bad = headersFor(c, ctx).map((h) => (h.startsWith('Authorization: Bearer ') ? `Authorization: Bearer ${breakSignature(h.slice(22))}` : h));
    const r = await runLoad({ load: { tool: 'wrk', connections: 4, threads: 1, headers: bad }, url: srv.url, seconds: 1, shimEnv: ctx.shimEnv, logFile: '' });
    tokenChecks[c.name] = Number.isFinite(r.ok) ? r.ok : 0;
    log(`token check ${c.name}: a token with a broken signature got ${tokenChecks[c.name]} 2xx`);
  }

  for (let run = 1; run <= RUNS; run++) {
    for (const c of selected) {
      const srv = servers.get(c.name);
      if (!srv) continue;
      const load = { ...c.load, headers: headersFor(c, ctx) };
      if (WARMUP > 0) await runLoad({ load, url: srv.url, seconds: WARMUP, shimEnv: ctx.shimEnv, logFile: join(runDir, `${c.name}.warm.log`), hsloadBin: ctx.hsload });
      const m = await measure(c, srv, ctx, DURATION);
      const list = results.get(c.name) ?? [];
      list.push(m);
      results.set(c.name, list);
      log(
        `run ${run}/${RUNS} ${c.name}: ${Number.isFinite(m.rps) ? Math.round(m.rps) : '?'} req/s, p99 ${m.p99?.toFixed?.(2)} ms, ` +
          `proxy ${m.cpuUsPerReq?.toFixed?.(1)} µs/req${m.non2xx + m.socketErrors > 0 ? `, errors: ${m.non2xx} non-2xx, ${m.errorDetail}` : ''}${m.failed ? `, FAILED ${m.failed}` : ''}`,
      );
    }
  }

  // Peak RSS now (the servers are still up), then stop them all.
  const rss = new Map();
  for (const [name, srv] of servers) rss.set(name, srv.shared ? NaN : peakRssMiB(srv.proc.pid) + (srv.also ?? []).reduce((n, p) => n + peakRssMiB(p.pid), 0));
  let introspections;
  try {
    introspections = (await (await fetch(`http://127.0.0.1:${ctx.upstream.port}/__bench/introspections`)).text()).trim();
  } catch {
    /* upstream gone */
  }
  await Promise.all([...servers.values()].filter((s) => !s.shared).flatMap((s) => [s.proc, ...(s.also ?? [])]).map((p) => stop(p)));
  await stop(ctx.upstream.proc);

  // Aggregate: medians of the runs, ratios within a run.
  const rows = selected.map((c) => {
    const runs = results.get(c.name);
    if (c.needs !== undefined || !runs) return { name: c.name, label: c.label, group: c.group, na: c.needs ?? 'n/a (did not run)' };
    const failed = runs.find((r) => r.failed)?.failed;
    if (runs.every((r) => !Number.isFinite(r.rps))) return { name: c.name, label: c.label, group: c.group, na: `failed: ${failed ?? 'no output'}`.slice(0, 200) };
    return {
      name: c.name,
      label: c.label,
      group: c.group,
      ref: c.ref,
      rps: median(runs.map((r) => r.rps)),
      p50: median(runs.map((r) => r.p50)),
      p99: median(runs.map((r) => r.p99)),
      cpuUsPerReq: c.server.kind === 'direct' ? NaN : median(runs.map((r) => r.cpuUsPerReq)),
      upstreamCpuUsPerReq: c.server.kind === 'direct' ? median(runs.map((r) => r.cpuUsPerReq)) : NaN,
      genCpuUsPerReq: median(runs.map((r) => r.genCpuUsPerReq)),
      alsoCpuUsPerReq: median(runs.map((r) => r.alsoCpuUsPerReq)),
      rssMiB: rss.get(c.name),
      errors: runs.reduce((n, r) => n + (r.non2xx || 0) + (r.socketErrors || 0), 0),
      runs: runs.map((r) => r.rps),
    };
  });
  const byRef = (group, ref) => rows.find((r) => r.group === group && r.ref === ref && r.na === undefined);
  const direct = rows.find((r) => r.name === 'direct' && r.na === undefined);
  for (const r of rows) {
    if (r.na !== undefined) continue;
    if (r.group === 'rate') {
      const d = byRef('rate', 'direct');
      if (d && r !== d) {
        const added = r.p99 - d.p99;
        r.vsDirectText = `p99 ${added >= 0 ? '+' : '−'}${Math.abs(added).toFixed(2)} ms`;
      }
      continue;
    }
    if (direct && (r.group === 'h1' || r.group === 'h2' || r.group === 'gen')) r.vsDirect = r.rps / direct.rps;
    const hap = byRef(r.group, 'haproxy');
    const ngx = byRef(r.group, 'nginx');
    if (hap) r.vsHaproxy = r.rps / hap.rps;
    if (ngx) r.vsNginx = r.rps / ngx.rps;
  }

  // Profiles of the Portcullis processes (written at their exit).
  const profiles = [];
  if (opt['cpu-prof']) {
    for (const [name, srv] of servers) {
      if (!srv.profDir) continue;
      const top = topSelfTime(srv.profDir);
      if (top.length > 0) profiles.push({ name, top });
    }
  }

  // Output.
  const gen = rows.find((r) => r.name === 'gen-ceiling' && r.na === undefined);
  const notes = [];
  if (gen) notes.push(`Load generator ceiling: wrk alone reached ${Math.round(gen.rps).toLocaleString('en-US')} req/s against nginx \`return 200\` (plaintext), using ${gen.genCpuUsPerReq.toFixed(1)} µs of wrk CPU per request.`);
  if (direct) notes.push(`Against the direct upstream wrk used ${direct.genCpuUsPerReq.toFixed(1)} µs of CPU per request and the upstream ${direct.upstreamCpuUsPerReq.toFixed(1)} µs (the upstream, one Node process, is what "direct" measures).`);
  const mtlsRow = rows.find((r) => r.name === 'portcullis-mtls' && r.na === undefined);
  if (mtlsRow) notes.push(`wrk's own CPU per request over mTLS (Portcullis row): ${mtlsRow.genCpuUsPerReq.toFixed(1)} µs — on ${os.availableParallelism()} cores the generator and the proxy share the same CPUs.`);
  for (const [fam, m] of Object.entries(mtls)) notes.push(`mTLS check (${fam}): wrk without the client-certificate shim got ${m.okWithoutCert} successful responses${m.okWithoutCert === 0 ? ' (certificate required, as configured)' : ' — THE SERVER DID NOT REQUIRE A CERTIFICATE'}.`);
  for (const [name, ok] of Object.entries(tokenChecks)) notes.push(`Token check (${name}): the same JWT with a broken signature got ${ok} successful responses${ok === 0 ? ' (verified, as configured)' : ' — THE PROXY DID NOT VERIFY THE SIGNATURE'}.`);
  const mem2 = rows.find((r) => r.name === 'portcullis-mtls-introspection-2p' && r.na === undefined);
  const redis2 = rows.find((r) => r.name === 'portcullis-mtls-introspection-2p-redis' && r.na === undefined);
  if (mem2 && redis2)
    notes.push(`Shared store: 2 processes with Redis did ${((redis2.rps / mem2.rps) * 100).toFixed(1)} % of the memory store's cached-introspection throughput (${redis2.cpuUsPerReq.toFixed(1)} vs ${mem2.cpuUsPerReq.toFixed(1)} µs of gateway CPU per request; target: within 10 %). A cached decision is a near-cache hit: no Redis round trip.`);
  for (const r of rows) {
    if (r.na !== undefined || !Number.isFinite(r.alsoCpuUsPerReq)) continue;
    notes.push(`${r.name}: of its ${r.cpuUsPerReq.toFixed(1)} µs of proxy CPU per request, Portcullis's decisions took ${r.alsoCpuUsPerReq.toFixed(1)} µs and nginx the rest${/cached/.test(r.name) ? ' (decisions cached by nginx: Portcullis is asked once per token and request line per 10 s)' : ' (one decision per request)'}.`);
  }
  const es256 = rows.find((r) => r.name === 'haproxy-jwt-es256' && r.na === undefined);
  const rs256 = rows.find((r) => r.name === 'haproxy-jwt-rs256' && r.na === undefined);
  for (const r of rows.filter((x) => x.name.startsWith('nginx-decision') && x.na === undefined)) {
    const vs = [es256 ? `${(r.rps / es256.rps).toFixed(2)}× HAProxy + jwt_verify ES256` : '', rs256 ? `${(r.rps / rs256.rps).toFixed(2)}× its RS256` : ''].filter(Boolean).join(', ');
    if (vs) notes.push(`${r.name}: ${vs} (issue 16 targets for the cached row: ≥ 1.5× ES256 and ≥ 1.0× RS256).`);
  }
  if (introspections !== undefined && selected.some((c) => c.server.auth === 'introspection' && servers.has(c.name))) notes.push(`Introspection calls that reached the fake IdP during the whole run: ${introspections}.`);

  return { rows, notes, profiles };
}

/** The tunnel rows (lib/tunnel.mjs); returns its rows, notes and verdicts. */
async function runTunnel(runDir, pki, loadAtStart) {
  const tunload = buildTunload(BENCH, TMP, log);
  const t = await runTunnelBench(
    tunnelSelected.filter((c) => c.needs === undefined),
    { runDir, pki, tunload, dist: DIST, benchDir: BENCH, runs: RUNS, warmup: WARMUP > 0, cpuProf: opt['cpu-prof'], log },
  );
  // A run is noisy when other processes took CPU: before it started (load average) or during the passes.
  const measured = t.rows.filter((r) => r.na === undefined);
  const otherCores = measured.map((r) => r.otherCores).sort((a, b) => a - b);
  const otherMedian = otherCores.length > 0 ? otherCores[Math.floor(otherCores.length / 2)] : NaN;
  const otherMax = otherCores.length > 0 ? otherCores[otherCores.length - 1] : NaN;
  const noisy = !(loadAtStart < 1.0) || !(otherMedian < 0.25);
  const verdicts = tunnelVerdicts(t.rows, { noisy });
  const notes = [];
  notes.push(
    `TLS: the client (bench/shim/tunload.c) offers TLS 1.3 only and one cipher suite, ${TUNNEL_CIPHERSUITE}; the cipher column is what each server negotiated. ` +
      'Every server requires a client certificate from the bench CA and verifies its chain; the client verifies the server against the same CA.',
  );
  for (const [name, ch] of Object.entries(t.checks))
    notes.push(`mTLS check (${name}): a client without a certificate got ${ch.without} of 3 echoes back (${ch.withoutError || 'no error'})${ch.without === 0 ? '' : ' — THE SERVER DID NOT REQUIRE A CERTIFICATE'}; with one, ${ch.with} of 3 (${ch.version} ${ch.cipher}).`);
  notes.push(
    `Load: 1-minute load average ${loadAtStart.toFixed(2)} before the tunnel part started; other processes used a median of ${otherMedian.toFixed(2)} cores (max ${otherMax.toFixed(2)}) during the measured passes ` +
      `(machine busy time from /proc/stat minus the server, the client, the upstream and the bench). ${noisy ? 'NOISY RUN: no target is claimed met from it.' : 'Quiet enough to judge the targets.'}`,
  );
  let profiles = [];
  if (opt['cpu-prof']) {
    for (const c of tunnelSelected) {
      if (c.server.kind !== 'portcullis' && c.server.kind !== 'node-bare') continue;
      const dir = join(runDir, `tunnel-${c.server.name}`, 'prof');
      if (profiles.some((p) => p.name === `tunnel-${c.server.name}`)) continue;
      const top = topSelfTime(dir, 15);
      if (top.length > 0) profiles.push({ name: `tunnel-${c.server.name}`, top });
    }
  }
  return { rows: t.rows, notes, verdicts, profiles, noisy };
}

async function main() {
  mkdirSync(TMP, { recursive: true });
  for (const t of [...(selected.length > 0 ? ['wrk'] : []), 'openssl']) if (!tools[t]) throw new Error(`${t} not installed: run bench/install.sh`);
  if (!existsSync(join(DIST, 'src', 'main.js'))) throw new Error('dist/src/main.js missing: run `npm run build` (npm run bench does)');

  // One directory per run; older run directories are removed (unless --keep) so tmp does not grow.
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  if (!opt.keep) for (const d of readdirSync(TMP)) if (d.startsWith('run-')) rmSync(join(TMP, d), { recursive: true, force: true });
  const runDir = join(TMP, `run-${stamp}`);
  mkdirSync(runDir, { recursive: true });

  const facts = machineFacts(ROOT);
  const loadAtStart = os.loadavg()[0];
  const active = selected.filter((c) => c.needs === undefined);
  const tunnelActive = tunnelSelected.filter((c) => c.needs === undefined);
  // Tunnel passes at a pessimistic 50 MiB/s, plus warm-up and the ping rows' 20 s bound.
  const tunnelSeconds = tunnelActive.reduce((n, c) => n + (c.workload.mode === 'ping' ? 20 : (c.workload.size * c.workload.conns) / 2 ** 20 / 50) + 3, 0) * RUNS;
  const estimate = active.length * RUNS * (DURATION + WARMUP + 1) + tunnelSeconds + 30;
  log(`${active.length} HTTP case(s) × ${RUNS} run(s) × ${DURATION} s (+${WARMUP} s warm-up), ${tunnelActive.length} tunnel case(s) × ${RUNS} run(s); up to ~${Math.ceil(estimate / 60)} min; work dir ${runDir}`);
  // A hard bound on the whole run: nothing may hang the machine.
  const watchdog = setTimeout(() => {
    log('watchdog: run exceeded its time bound, killing everything');
    killAllNow();
    process.exit(124);
  }, (estimate * 2 + 180) * 1000);
  watchdog.unref();

  log('minting PKI (RSA via dist/src/certs/pki.js, ECDSA P-256 via openssl)');
  const pki = await mintPki(runDir, DIST);
  const http = selected.length > 0 ? await runHttp(runDir, pki, stamp) : undefined;
  const tunnelLoad = os.loadavg()[0];
  const tunnel = tunnelSelected.length > 0 ? await runTunnel(runDir, pki, http ? tunnelLoad : loadAtStart) : undefined;
  clearTimeout(watchdog);
  const rows = http?.rows ?? [];
  const notes = http?.notes ?? [];
  const profiles = [...(http?.profiles ?? []), ...(tunnel?.profiles ?? [])];

  if (http) process.stdout.write(`\n${textTable(rows)}\n\n${notes.map((n) => `- ${n}`).join('\n')}\n`);
  if (tunnel) {
    process.stdout.write(`\nTCP tunnel rows (TLS in, plain TCP out; medians of ${RUNS}):\n\n${tunnelTextTable(tunnel.rows)}\n\n${tunnel.notes.map((n) => `- ${n}`).join('\n')}\n`);
    process.stdout.write(`\nTargets (issue 18):\n${tunnel.verdicts.map((v) => `  ${v.what}: ${v.value ?? ''} → ${v.result}`).join('\n')}\n`);
  }
  if (profiles.length > 0) {
    for (const p of profiles) {
      process.stdout.write(`\nTop self-time functions, ${p.name} (node --cpu-prof, % of the process's busy time, idle excluded):\n`);
      for (const t of p.top) process.stdout.write(`  ${t.pct.toFixed(1).padStart(5)}%  ${t.ms.toFixed(0).padStart(7)} ms  ${t.fn}\n`);
    }
  }

  const date = new Date().toISOString().slice(0, 10);
  const host = os.hostname().replace(/[^A-Za-z0-9.-]/g, '_');
  // A quick or partial (--only) run never overwrites the file of a full run.
  // A tunnel-only run is <date>-tunnel.md (the tunnel rows' own file).
  const partial = opt.only && !(tunnelOnly && tunnelSelected.length === TUNNEL_CASES.length);
  const mdFile = join(RESULTS, `${date}-${tunnelOnly ? 'tunnel' : host}${opt.quick || opt['tunnel-mib'] ? '-quick' : ''}${partial ? '-partial' : ''}.md`);
  const md = [
    `# Portcullis bench — ${date} on ${host}${opt.quick ? ' (quick smoke run)' : ''}`,
    '',
    `Command: \`node bench/run.mjs ${process.argv.slice(2).join(' ')}\`. ` +
      (http ? '' : `${RUNS} interleaved run(s) per tunnel case (each after an unmeasured warm-up pass of up to 64 MiB / 1,000 messages), medians.`),
    ...(http ? [] : ['']),
    http ? `${RUNS} run(s) of ${DURATION} s per case (+${WARMUP} s warm-up each), medians; ` +
      `runs interleaved across cases. wrk: ${THREADS} threads, ${CONNECTIONS} connections, keep-alive, GET /; h2load: ${CONNECTIONS} connections × ${H2_STREAMS} streams; ` +
      `full-handshake rows: hsload (bench/shim/hsload.c), ${HANDSHAKE_CLIENTS} blocking client threads, one TLS connection per request; ` +
      `fixed-rate rows: h2load --h1, ${FIXED_RATE_CONNECTIONS} connections, ${FIXED_RATE} req/s in total. Every TLS row requires a client certificate (RSA-2048, bench CA).` : '',
    '',
    '| machine | |',
    '|---|---|',
    ...facts.map(([k, v]) => `| ${k} | ${String(v).replace(/\|/g, '\\|')} |`),
    '',
    ...(http
      ? [
          markdownTable(rows),
          '',
          'Ratios: "vs direct" divides by the direct row (HTTP/1.1 and HTTP/2 throughput rows); "vs HAProxy" / "vs nginx" divide by the HAProxy / nginx row of the same workload ' +
            '(mTLS keep-alive, HTTP/2, or full handshakes with the same server key type). Proxy CPU is user + system time of the whole process tree (all threads, workers) ' +
            'over the measured pass, divided by the requests completed; RSS is the sum of VmHWM over that tree at the end of the run.',
          '',
          ...notes.map((n) => `- ${n}`),
          '',
          '<details><summary>req/s of every run</summary>',
          '',
          ...rows.filter((r) => r.runs).map((r) => `- ${r.name}: ${r.runs.map((x) => Math.round(x)).join(', ')}`),
          '',
          '</details>',
        ]
      : []),
    ...(tunnel
      ? [
          '',
          '## TCP tunnel (TLS in, plain TCP out)',
          '',
          tunnelMarkdownTable(tunnel.rows),
          '',
          'MiB/s: payload bytes over the wall time from the moment every connection had finished its handshake to the last byte (upload: the upstream\'s acknowledgement ' +
            'that it read every byte). Ratios divide by the stunnel / HAProxy / bare Node (1 process) row of the same workload (ping-pong: messages per second). ' +
            'Server CPU: user + system time of the server\'s whole process tree (threads, cluster workers) over the measured pass, per GiB moved (ping-pong: per message); ' +
            'client CPU likewise for tunload. Max RSS: sum of VmHWM over the tree at the end of the run. Other load: cores used by everything else on the machine during the pass.',
          '',
          ...tunnel.notes.map((n) => `- ${n}`),
          '',
          '### Targets (issue 18)',
          '',
          '| target | this run | verdict |',
          '|---|---:|---|',
          ...tunnel.verdicts.map((v) => `| ${v.what.replace(/\|/g, '\\|')} | ${v.value ?? ''} | ${v.result} |`),
          '',
          '<details><summary>every run (MiB/s or ping p50 µs; server CPU s/GiB or µs/msg)</summary>',
          '',
          ...tunnel.rows.filter((r) => r.runs).map((r) => `- ${r.name}: ${r.runs.map((x) => x.toFixed(1)).join(', ')}; CPU ${r.runsCpu.map((x) => x.toFixed(2)).join(', ')}`),
          '',
          '</details>',
        ]
      : []),
    ...(profiles.length > 0
      ? ['', ...profiles.flatMap((p) => [`## Top self-time functions: ${p.name}`, '', 'node --cpu-prof over the whole process lifetime; % of busy (non-idle) samples. Crypto and socket I/O done in C++ count as the JS frame that called into them.', '', '| self % | ms | function |', '|---:|---:|---|', ...p.top.map((t) => `| ${t.pct.toFixed(1)} | ${t.ms.toFixed(0)} | \`${t.fn}\` |`), ''])]
      : []),
    '',
  ].join('\n');
  writeFileSync(mdFile, md);
  process.stdout.write(`\nwritten: ${mdFile}\n`);
  if (!opt.keep) rmSync(runDir, { recursive: true, force: true });
}

main().then(
  () => {
    killAllNow();
    process.exit(0);
  },
  (err) => {
    process.stderr.write(`bench: ${err?.stack ?? err}\n`);
    killAllNow();
    process.exit(1);
  },
);
