// Child processes of the bench: start them in their own process group, wait for readiness, measure their
// CPU time and peak RSS from /proc, and kill every one of them at the end — also on error and Ctrl-C.
import { spawn, execFileSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { connect, createServer } from 'node:net';

/** Every process group this bench started and has not reaped yet. */
const live = new Set();

const CLK_TCK = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/**
 * Extra node flags for every Portcullis and bare Node server the bench starts (both get the same ones, so
 * their rows stay comparable): `BENCH_NODE_ARGS='--max-semi-space-size=16'`, for experiments with V8 or
 * libuv settings. Empty when unset.
 */
export function extraNodeArgs() {
  return (process.env.BENCH_NODE_ARGS ?? '').split(' ').filter((a) => a !== '');
}

/**
 * Spawns `cmd args` detached (its own process group, so `killTree` reaches its workers too), with stdout
 * and stderr captured into a bounded tail buffer. Returns { child, pid, output(), exited }.
 */
export function start(name, cmd, args, opts = {}) {
  const child = spawn(cmd, args, {
    cwd: opts.cwd,
    env: { ...process.env, ...(opts.env ?? {}) },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  live.add(child);
  let tail = '';
  const lineWaiters = [];
  let partial = '';
  const onData = (chunk) => {
    const text = chunk.toString('utf8');
    tail = (tail + text).slice(-16_384);
    if (lineWaiters.length === 0) return;
    partial += text;
    const lines = partial.split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) {
      for (const w of [...lineWaiters]) {
        const m = w.test(line);
        if (m !== undefined && m !== null && m !== false) {
          lineWaiters.splice(lineWaiters.indexOf(w), 1);
          w.resolve(m);
        }
      }
    }
  };
  child.stdout.on('data', onData);
  child.stderr.on('data', onData);
  const exited = new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      live.delete(child);
      for (const w of lineWaiters.splice(0)) w.reject(new Error(`${name} exited (${code ?? signal}) before it was ready:\n${tail}`));
      resolve({ code, signal });
    });
    child.on('error', (err) => {
      live.delete(child);
      for (const w of lineWaiters.splice(0)) w.reject(new Error(`${name} could not start: ${err.message}`));
      resolve({ code: -1, signal: null, error: err });
    });
  });
  return {
    name,
    child,
    pid: child.pid,
    exited,
    output: () => tail,
    /** Resolves with test(line)'s truthy result for the first matching output line, or rejects on exit/timeout. */
    waitForLine(test, timeoutMs = 15_000) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          const i = lineWaiters.indexOf(w);
          if (i >= 0) lineWaiters.splice(i, 1);
          reject(new Error(`${name} not ready after ${timeoutMs} ms:\n${tail}`));
        }, timeoutMs);
        const w = {
          test,
          resolve: (v) => (clearTimeout(timer), resolve(v)),
          reject: (e) => (clearTimeout(timer), reject(e)),
        };
        lineWaiters.push(w);
      });
    },
  };
}

/**
 * Runs a command to completion with a hard time limit; resolves { code, stdout, stderr, timedOut, cpuSeconds }.
 * cpuSeconds is the command's own user + system CPU time: it runs under `sh`, which reads its own
 * cutime/cstime from /proc after waiting for the command (exact, unlike sampling a process that is about
 * to exit).
 */
export function runBounded(cmd, args, { env, timeoutMs, cwd } = {}) {
  const script = '"$@"; rc=$?; echo "BENCH_STAT $(cat /proc/$$/stat)" >&2; exit $rc';
  return new Promise((resolve) => {
    const child = spawn('/bin/sh', ['-c', script, 'sh', cmd, ...args], {
      cwd,
      env: { ...process.env, ...(env ?? {}) },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    live.add(child);
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout.on('data', (c) => (stdout += c));
    child.stderr.on('data', (c) => (stderr = (stderr + c).slice(-65_536)));
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup(child.pid, 'SIGKILL');
    }, timeoutMs);
    const done = (code, signal) => {
      clearTimeout(timer);
      live.delete(child);
      let cpuSeconds;
      const m = /BENCH_STAT (.*)/.exec(stderr);
      if (m) {
        const rest = m[1].slice(m[1].lastIndexOf(')') + 2).split(' ');
        // fields 16 and 17: cutime, cstime (children waited for, i.e. the command)
        cpuSeconds = (Number(rest[13]) + Number(rest[14])) / CLK_TCK;
        stderr = stderr.replace(/BENCH_STAT .*\n?/, '');
      }
      resolve({ code, signal, stdout, stderr, timedOut, cpuSeconds });
    };
    child.on('exit', done);
    child.on('error', (err) => {
      stderr += String(err);
      done(-1, null);
    });
  });
}

function killGroup(pid, signal) {
  try {
    process.kill(-pid, signal);
  } catch {
    try {
      process.kill(pid, signal);
    } catch {
      /* already gone */
    }
  }
}

/** SIGTERM the process group, then SIGKILL it after `graceMs` if it is still there. */
export async function stop(proc, graceMs = 3_000) {
  if (proc === undefined || proc.child.exitCode !== null || proc.child.signalCode !== null) {
    // The leader is gone; its group may still hold workers (nginx): sweep it.
    if (proc !== undefined) killGroup(proc.pid, 'SIGKILL');
    return;
  }
  killGroup(proc.pid, 'SIGTERM');
  const t = setTimeout(() => killGroup(proc.pid, 'SIGKILL'), graceMs);
  await proc.exited;
  clearTimeout(t);
  killGroup(proc.pid, 'SIGKILL');
}

/** Synchronous last-resort cleanup for 'exit' and signal handlers. */
export function killAllNow() {
  for (const child of live) killGroup(child.pid, 'SIGKILL');
  live.clear();
}

/** The pid and every descendant of it (nginx workers, cluster workers), read from /proc. */
export function processTree(rootPid) {
  const children = new Map();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = readStat(Number(entry));
    if (stat === undefined) continue;
    const list = children.get(stat.ppid) ?? [];
    list.push(Number(entry));
    children.set(stat.ppid, list);
  }
  const out = [];
  const queue = [rootPid];
  while (queue.length > 0) {
    const pid = queue.shift();
    out.push(pid);
    for (const c of children.get(pid) ?? []) queue.push(c);
  }
  return out;
}

function readStat(pid) {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Field 2 (comm) may hold spaces and parentheses: split after the last ')'.
    const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
    // rest[0] is field 3 (state): ppid = field 4, utime = 14, stime = 15.
    return { ppid: Number(rest[1]), utime: Number(rest[11]), stime: Number(rest[12]) };
  } catch {
    return undefined;
  }
}

/**
 * CPU seconds (user + system, all threads) used so far by each pid of the tree, keyed by pid, so that a
 * worker that appears or dies between two samples is still counted correctly.
 */
export function cpuSample(rootPid) {
  const sample = new Map();
  for (const pid of processTree(rootPid)) {
    const s = readStat(pid);
    if (s !== undefined) sample.set(pid, (s.utime + s.stime) / CLK_TCK);
  }
  return sample;
}

/** CPU seconds used between two samples (pids only in `after` count from zero). */
export function cpuDelta(before, after) {
  let total = 0;
  for (const [pid, t] of after) total += t - (before.get(pid) ?? 0);
  return total;
}

/** Sum of VmHWM (peak resident set) over the tree, in MiB. Shared pages count once per process. */
export function peakRssMiB(rootPid) {
  let kib = 0;
  for (const pid of processTree(rootPid)) {
    try {
      const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
      if (m) kib += Number(m[1]);
    } catch {
      /* exited */
    }
  }
  return kib / 1024;
}

/** Resolves when 127.0.0.1:port accepts a TCP connection; rejects after timeoutMs. */
/**
 * For `proc.waitForLine`: the port of a `{"msg":"listening",...,"port":N}` JSON line (the upstream, the bare
 * server and Portcullis all print one), optionally only for the listener named `listener`; undefined for
 * any other line.
 */
export function listeningPort(line, listener = undefined) {
  try {
    const j = JSON.parse(line);
    return j.msg === 'listening' && (listener === undefined || j.listener === listener) ? j.port : undefined;
  } catch {
    return undefined;
  }
}

export async function waitForPort(port, timeoutMs = 10_000, proc = undefined) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise((resolve) => {
      const s = connect({ host: '127.0.0.1', port });
      s.once('connect', () => (s.destroy(), resolve(true)));
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (proc !== undefined && proc.child.exitCode !== null) throw new Error(`${proc.name} exited:\n${proc.output()}`);
    if (Date.now() > deadline) throw new Error(`port ${port} not open after ${timeoutMs} ms${proc ? `:\n${proc.output()}` : ''}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A free TCP port on 127.0.0.1 (bound and released; the bench's own child takes it right after). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}
