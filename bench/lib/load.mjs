// Load generators: wrk (HTTP/1.1) and h2load (HTTP/2, and HTTP/1.1 at a fixed rate), run through the
// LD_PRELOAD client-certificate shim, and hsload (full handshakes, shim/hsload.c), each run bounded in
// time; plus their output parsers.
import { readFileSync, rmSync } from 'node:fs';
import { runBounded } from './proc.mjs';

/** Extra seconds a generator may take beyond its duration before it is killed. */
const GRACE_S = 20;

/** `1.23ms` / `850.00us` / `1.02s` / `3m` → milliseconds. */
export function toMs(text) {
  const m = /^([\d.]+)(us|ms|s|m)$/.exec(text.trim());
  if (!m) return NaN;
  const v = Number(m[1]);
  return { us: v / 1000, ms: v, s: v * 1000, m: v * 60_000 }[m[2]];
}

/** Parses `wrk --latency` output. */
export function parseWrk(out) {
  const num = (re) => {
    const m = re.exec(out);
    return m ? Number(m[1]) : NaN;
  };
  const pct = (p) => {
    const m = new RegExp(`^\\s*${p}%\\s+(\\S+)`, 'm').exec(out);
    return m ? toMs(m[1]) : NaN;
  };
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const socketErrors = sock ? sock.slice(1).reduce((a, b) => a + Number(b), 0) : 0;
  const requests = num(/(\d+) requests in/);
  const non2xx = num(/Non-2xx or 3xx responses: (\d+)/) || 0;
  return {
    requests,
    ok: Number.isFinite(requests) ? requests - non2xx : NaN,
    rps: num(/Requests\/sec:\s+([\d.]+)/),
    p50: pct(50),
    p99: pct(99),
    non2xx,
    socketErrors,
    errorDetail: sock ? sock[0] : '',
  };
}

/** Parses h2load's summary, and percentiles from its --log-file (µs per request, 3rd column). */
export function parseH2load(out, logFile) {
  const fin = /finished in ([\d.]+)s, ([\d.]+) req\/s/.exec(out);
  const req = /requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/.exec(out);
  const codes = /status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx/.exec(out);
  let p50 = NaN;
  let p99 = NaN;
  try {
    const durations = readFileSync(logFile, 'utf8')
      .split('\n')
      .map((l) => Number(l.split('\t')[2]))
      .filter((v) => Number.isFinite(v) && v >= 0)
      .sort((a, b) => a - b);
    if (durations.length > 0) {
      p50 = durations[Math.min(durations.length - 1, Math.floor(durations.length * 0.5))] / 1000;
      p99 = durations[Math.min(durations.length - 1, Math.floor(durations.length * 0.99))] / 1000;
    }
  } catch {
    /* no log: percentiles stay NaN */
  } finally {
    rmSync(logFile, { force: true });
  }
  const done = req ? Number(req[3]) : NaN;
  const ok2xx = codes ? Number(codes[1]) : NaN;
  return {
    requests: done,
    ok: ok2xx,
    rps: fin ? Number(fin[2]) : NaN,
    p50,
    p99,
    non2xx: codes ? Number(codes[2]) + Number(codes[3]) + Number(codes[4]) : 0,
    socketErrors: req ? Number(req[5]) + Number(req[6]) + Number(req[7]) : 0,
    errorDetail: req ? req[0] : '',
  };
}

/** Parses hsload's one JSON line (shim/hsload.c). */
export function parseHsload(out) {
  let j;
  try {
    j = JSON.parse(out.trim().split('\n').pop() ?? '');
  } catch {
    return { requests: NaN, ok: NaN, rps: NaN, p50: NaN, p99: NaN, non2xx: 0, socketErrors: 0, errorDetail: 'hsload printed no result' };
  }
  return {
    requests: j.connections,
    ok: j.ok,
    rps: j.seconds > 0 ? j.connections / j.seconds : NaN,
    p50: j.p50_ms >= 0 ? j.p50_ms : NaN,
    p99: j.p99_ms >= 0 ? j.p99_ms : NaN,
    non2xx: 0,
    socketErrors: j.errors,
    errorDetail: j.errors > 0 ? `${j.errors} connections failed or got no 200` : '',
  };
}

/**
 * Runs one load-generator pass. `load` is the case's workload:
 *   { tool: 'wrk', connections, threads, headers[] }                 closed loop, HTTP/1.1 keep-alive
 *   { tool: 'h2load', connections, streams, threads, headers[] }     closed loop, HTTP/2
 *   { tool: 'h2load-rate', connections, rate, threads }              open loop, HTTP/1.1 at a fixed total rate
 *   { tool: 'hsload', threads }                                      a full handshake + one request per connection
 * `shimEnv` is the LD_PRELOAD environment (empty object: no client certificate); hsload reads the client
 * certificate and key from its BENCH_CLIENT_CERT / BENCH_CLIENT_KEY and runs the binary `hsloadBin`.
 */
export async function runLoad({ load, url, seconds, shimEnv, logFile, hsloadBin }) {
  const timeoutMs = (seconds + GRACE_S) * 1000;
  const hdrs = (load.headers ?? []).flatMap((h) => ['-H', h]);
  let res;
  let parsed;
  if (load.tool === 'hsload') {
    const u = new URL(url);
    const args = [u.hostname, u.port, String(seconds), String(load.threads), shimEnv.BENCH_CLIENT_CERT ?? '', shimEnv.BENCH_CLIENT_KEY ?? ''];
    res = await runBounded(hsloadBin, args, { timeoutMs });
    parsed = parseHsload(res.stdout);
  } else if (load.tool === 'wrk') {
    const args = ['-t', String(load.threads), '-c', String(load.connections), '-d', `${seconds}s`, '--latency', '--timeout', '5s', ...hdrs, url];
    res = await runBounded('wrk', args, { env: shimEnv, timeoutMs });
    parsed = parseWrk(res.stdout);
  } else {
    const common = ['-t', String(load.threads), '-c', String(load.connections), '-D', String(seconds), `--log-file=${logFile}`, ...hdrs];
    const args =
      load.tool === 'h2load'
        ? [...common, '-m', String(load.streams), url]
        : [...common, '--h1', '-m', '1', `--rps=${load.rate / load.connections}`, url];
    res = await runBounded('h2load', args, { env: shimEnv, timeoutMs });
    parsed = parseH2load(res.stdout, logFile);
  }
  return {
    ...parsed,
    genCpuSeconds: res.cpuSeconds,
    failed: res.timedOut ? 'timed out' : res.code !== 0 ? `exit ${res.code ?? res.signal}: ${(res.stderr || res.stdout).trim().split('\n').slice(-3).join(' | ')}` : undefined,
    raw: res.stdout,
  };
}
