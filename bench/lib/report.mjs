// The bench's one table (terminal and Markdown) and the machine facts printed above it.
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import os from 'node:os';

function cmdOut(cmd, args) {
  // Some tools print their version on stderr (nginx -v) or exit non-zero after printing it (wrk -v).
  const r = spawnSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 10_000 });
  if (r.error) return 'not installed';
  const text = `${r.stdout ?? ''}\n${r.stderr ?? ''}`.trim();
  return text ? text.split('\n')[0].trim() : 'unknown';
}

/** `stunnel 5.68 (OpenSSL 3.0.9)`: stunnel prints its version after an unrelated first line, on stderr. */
function stunnelVersion() {
  const r = spawnSync('stunnel4', ['-version'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 10_000 });
  if (r.error) return 'not installed';
  const text = `${r.stdout ?? ''}\n${r.stderr ?? ''}`;
  const v = /stunnel ([\d.]+)/.exec(text)?.[1];
  const ssl = /Compiled with (OpenSSL [\d.a-z]+)/.exec(text)?.[1];
  return v ? `stunnel ${v}${ssl ? ` (${ssl})` : ''}` : 'unknown';
}

/** Machine and version facts, as [label, value] pairs. */
export function machineFacts(root) {
  let cpu = 'unknown';
  try {
    cpu = /model name\s*:\s*(.*)/.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? cpu;
  } catch {
    /* not Linux */
  }
  const git = cmdOut('git', ['-C', root, 'rev-parse', '--short', 'HEAD']);
  let dirty = '';
  try {
    dirty = execFileSync('git', ['-C', root, 'status', '--porcelain', '--', 'src'], { encoding: 'utf8' }).trim() ? ' (+ uncommitted changes in src/)' : '';
  } catch {
    /* not a git checkout */
  }
  return [
    ['date', new Date().toISOString()],
    ['host', os.hostname()],
    ['nproc', String(os.availableParallelism())],
    ['CPU', cpu],
    ['memory', `${Math.round(os.totalmem() / 2 ** 30)} GiB`],
    ['kernel', `${os.type()} ${os.release()}`],
    ['load average at start', os.loadavg().map((l) => l.toFixed(2)).join(' ')],
    ['Node', `${process.version} (OpenSSL ${process.versions.openssl})`],
    ['openssl CLI', cmdOut('openssl', ['version'])],
    ['HAProxy', cmdOut('haproxy', ['-v'])],
    ['nginx', cmdOut('nginx', ['-v'])],
    ['stunnel', stunnelVersion()],
    ['wrk', cmdOut('wrk', ['-v'])],
    ['h2load', cmdOut('h2load', ['--version'])],
    ['Portcullis', `${git}${dirty}`],
  ];
}

const fmtInt = (v) => (Number.isFinite(v) ? Math.round(v).toLocaleString('en-US') : '–');
const fmt = (v, d = 2) => (Number.isFinite(v) ? v.toFixed(d) : '–');
const fmtRatio = (v) => (Number.isFinite(v) ? `${v.toFixed(2)}×` : '–');

export const COLUMNS = ['case', 'req/s', 'vs direct', 'vs HAProxy', 'vs nginx', 'p50 ms', 'p99 ms', 'proxy CPU µs/req', 'wrk/h2load CPU µs/req', 'proxy max RSS MiB', 'errors'];

/** One row of cells per case (placeholders and failures span the numbers with their reason). */
export function tableRows(rows) {
  return rows.map((r) => {
    if (r.na !== undefined) return [r.label, r.na, '', '', '', '', '', '', '', '', ''];
    return [
      r.label,
      fmtInt(r.rps),
      r.vsDirectText ?? fmtRatio(r.vsDirect),
      fmtRatio(r.vsHaproxy),
      fmtRatio(r.vsNginx),
      fmt(r.p50),
      fmt(r.p99),
      fmt(r.cpuUsPerReq, 1),
      fmt(r.genCpuUsPerReq, 1),
      fmt(r.rssMiB, 0),
      r.errors === 0 ? '0' : `${fmtInt(r.errors)} !`,
    ];
  });
}

/** Fixed-width text table for the terminal. */
export function textTable(rows) {
  const body = tableRows(rows);
  // Placeholder rows print their reason after the label and take no part in the column widths.
  const measured = body.filter((_, i) => rows[i].na === undefined);
  const cells = [COLUMNS, ...measured];
  const widths = COLUMNS.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length), i === 0 ? Math.max(...body.map((r) => r[0].length)) : 0));
  const line = (r) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ').trimEnd();
  return [
    line(COLUMNS),
    widths.map((w) => '-'.repeat(w)).join('  '),
    ...body.map((r, i) => (rows[i].na === undefined ? line(r) : `${r[0].padEnd(widths[0])}  ${r[1]}`)),
  ].join('\n');
}

/** GitHub Markdown table. */
export function markdownTable(rows) {
  const esc = (c) => String(c).replace(/\|/g, '\\|');
  const out = [`| ${COLUMNS.join(' | ')} |`, `|---|${COLUMNS.slice(1).map(() => '---:').join('|')}|`];
  for (const r of tableRows(rows)) out.push(`| ${r.map(esc).join(' | ')} |`);
  return out.join('\n');
}
