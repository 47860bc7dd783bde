// Memory readings and the small statistics of bench/soak.mjs.
import { readFileSync, readdirSync } from 'node:fs';
import { processTree } from './proc.mjs';

/** VmRSS (current resident set) of the pid and every descendant, in KiB: { total, byPid }. */
export function rssKiB(rootPid) {
  const byPid = {};
  let total = 0;
  for (const pid of processTree(rootPid)) {
    try {
      const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
      if (m) {
        byPid[pid] = Number(m[1]);
        total += Number(m[1]);
      }
    } catch {
      /* exited between the listing and the read */
    }
  }
  return { total, byPid };
}

/** Open file descriptors of the pid and its descendants (a cross-check of the connection count), or NaN. */
export function openFds(rootPid) {
  let n = 0;
  for (const pid of processTree(rootPid)) {
    try {
      n += readdirSync(`/proc/${pid}/fd`).length;
    } catch {
      /* exited */
    }
  }
  return n === 0 ? Number.NaN : n;
}

export function median(xs) {
  const v = xs.filter(Number.isFinite).sort((a, b) => a - b);
  if (v.length === 0) return Number.NaN;
  const m = Math.floor(v.length / 2);
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

/** Least-squares slope of y over x (NaN with fewer than 2 points). */
export function slope(points) {
  const n = points.length;
  if (n < 2) return Number.NaN;
  const mx = points.reduce((a, p) => a + p.x, 0) / n;
  const my = points.reduce((a, p) => a + p.y, 0) / n;
  let num = 0;
  let den = 0;
  for (const p of points) {
    num += (p.x - mx) * (p.y - my);
    den += (p.x - mx) ** 2;
  }
  return den === 0 ? Number.NaN : num / den;
}

export const mib = (kib) => kib / 1024;

/**
 * Follows `node --trace-gc` output on a child's stdout: every Mark-Compact as
 * { t, pid, afterMiB, committedMiB } (the heap used and committed after the full GC).
 */
export function followMarkCompacts(child) {
  const events = [];
  let partial = '';
  child.stdout.on('data', (chunk) => {
    const lines = (partial + chunk.toString('utf8')).split('\n');
    partial = lines.pop() ?? '';
    for (const l of lines) {
      const m =
        /^\[(\d+):[^\]]*\].*Mark-Compact(?: \([a-z ]+\))? ([\d.]+) \(([\d.]+)\) -> ([\d.]+) \(([\d.]+)\) MB/.exec(
          l,
        );
      if (m)
        events.push({ t: Date.now(), pid: Number(m[1]), afterMiB: Number(m[4]), committedMiB: Number(m[5]) });
    }
  });
  return events;
}

/** The sum, over processes, of the last Mark-Compact of each (NaN when there was none). */
export function lastHeapMiB(events, field = 'afterMiB') {
  const last = new Map();
  for (const e of events) last.set(e.pid, e[field]);
  return last.size === 0 ? Number.NaN : [...last.values()].reduce((a, b) => a + b, 0);
}
