/**
 * deploy/systemd/portcullis.service: the directives the README promises, read from the unit file, and
 * the file as systemd itself reads it.
 * - ExecStart runs `portcullis start` and ExecStartPre `portcullis check` on one config; ExecReload sends
 *   SIGHUP to the main process; KillSignal is SIGTERM and TimeoutStopSec is above the drain.
 * - Hardening: NoNewPrivileges, ProtectSystem=strict, ProtectHome, PrivateTmp, CAP_NET_BIND_SERVICE as the
 *   only capability (bounding and ambient), a dedicated user (declared by portcullis.sysusers), no
 *   writable path (the gateway writes no file), and no MemoryDenyWriteExecute (V8 needs it off).
 * - `systemd-analyze verify` accepts it without a word (an unknown or misspelt directive is only a
 *   warning there, so any output about the unit fails), with ExecStart/ExecStartPre pointed at the built
 *   dist/src/main.js through this node (verify checks that the binary exists, and /usr/local/bin/portcullis
 *   is not installed here); `systemd-analyze security --offline` rates its exposure 2.0 or less.
 * - ExecReload and KillSignal, done as systemd does them to a real gateway: the reload is applied, and the
 *   stop drains and exits 0 within TimeoutStopSec.
 * Skipped, with the reason printed, where systemd-analyze is missing (.ci/run installs Debian's systemd).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULTS } from '../../../src/config/defaults.js';
import { BIN, killAll, listeningPorts, startBinary, type StartedBinary } from '../../helpers/binary.js';
import { writePki, type TestPkiPaths } from '../../helpers/pki.js';

const UNIT = 'deploy/systemd/portcullis.service';
const SHUTDOWN_FLUSH_S = 2; // main.ts: after the drain, up to 2 s for the last log lines before exit
const CLUSTER_STOP_MARGIN_S = 5; // cluster/primary.ts: workers get shutdownGraceMs + 5 s

/** `[Section]` → key → every value given (in order; an empty assignment resets, as systemd does). */
function parseUnit(text: string): Map<string, Map<string, string[]>> {
  const sections = new Map<string, Map<string, string[]>>();
  let current: Map<string, string[]> | undefined;
  for (const raw of text.replace(/\\\n/g, ' ').split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    const section = /^\[(.+)\]$/.exec(line);
    if (section) {
      current = new Map();
      sections.set(section[1]!, current);
      continue;
    }
    const kv = /^([A-Za-z0-9]+)=(.*)$/.exec(line);
    if (!kv || current === undefined) throw new Error(`unreadable unit line: ${line}`);
    const values = current.get(kv[1]!) ?? [];
    if (kv[2] === '') values.length = 0;
    else values.push(kv[2]!);
    current.set(kv[1]!, values);
  }
  return sections;
}

const text = readFileSync(UNIT, 'utf8');
const unit = parseUnit(text);
const service = unit.get('Service') ?? new Map<string, string[]>();
/** The last value of a [Service] key (what systemd uses for single-valued settings). */
const get = (key: string): string | undefined => service.get(key)?.at(-1);
const argv = (key: string): string[] => (get(key) ?? '').split(/\s+/);

/** systemd time span in seconds (`25`, `25s`, `1min 30s`). */
function seconds(span: string): number {
  let total = 0;
  for (const m of span.matchAll(/(\d+)\s*(min|s|ms)?/g)) {
    const n = Number(m[1]);
    total += m[2] === 'min' ? n * 60 : m[2] === 'ms' ? n / 1000 : n;
  }
  return total;
}

describe('deploy/systemd/portcullis.service: directives', () => {
  it('starts `portcullis start`, after `portcullis check`, on the same config', () => {
    const start = argv('ExecStart');
    const pre = argv('ExecStartPre');
    expect(start[0]).toMatch(/\/portcullis$/);
    expect(start.slice(1, 3)).toEqual(['start', '--config']);
    expect(pre[0]).toBe(start[0]);
    expect(pre.slice(1)).toEqual(['check', '--config', start[3]]);
    expect(start[3]).toMatch(/^\/etc\/portcullis\/[^/]+\.yaml$/);
  });

  it('reload is SIGHUP to the main process; stop is SIGTERM with time for the drain', () => {
    expect(get('ExecReload')).toBe('/bin/kill -HUP $MAINPID');
    expect(get('KillSignal')).toBe('SIGTERM');
    expect(seconds(get('TimeoutStopSec') ?? '0')).toBeGreaterThan(
      DEFAULTS.timeouts.shutdownGraceMs / 1000 + CLUSTER_STOP_MARGIN_S + SHUTDOWN_FLUSH_S,
    );
    // An invalid config is not retried in a loop.
    expect(service.get('RestartPreventExitStatus')).toContain('3');
  });

  it.each([
    ['NoNewPrivileges', 'yes'],
    ['ProtectSystem', 'strict'],
    ['ProtectHome', 'yes'],
    ['PrivateTmp', 'yes'],
    ['PrivateDevices', 'yes'],
    ['CapabilityBoundingSet', 'CAP_NET_BIND_SERVICE'],
    ['AmbientCapabilities', 'CAP_NET_BIND_SERVICE'],
  ])('%s=%s', (key, value) => {
    expect(service.get(key)).toEqual([value]);
  });

  it('runs as a dedicated user, declared by portcullis.sysusers', () => {
    const user = get('User');
    expect(user).toBe('portcullis');
    expect(get('Group')).toBe('portcullis');
    const sysusers = readFileSync('deploy/systemd/portcullis.sysusers', 'utf8');
    expect(sysusers).toMatch(new RegExp(`^u ${user!} - `, 'm'));
  });

  it('nothing writable, and no MemoryDenyWriteExecute (V8 compiles to executable memory)', () => {
    expect(service.get('ReadWritePaths')).toBeUndefined();
    expect(service.get('MemoryDenyWriteExecute')).toBeUndefined();
  });
});

const analyze = spawnSync('systemd-analyze', ['--version'], { encoding: 'utf8' });
const haveAnalyze = analyze.status === 0;
if (!haveAnalyze)
  console.log('skipped: systemd-analyze is not installed (Debian package systemd; .ci/run installs it)');

describe.skipIf(!haveAnalyze)('deploy/systemd/portcullis.service: systemd-analyze', () => {
  let dir: string;
  let copy: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'portcullis-systemd-'));
    copy = join(dir, 'portcullis.service');
    // verify checks that ExecStart's program exists: point it at the build through this node.
    const real = `${process.execPath} ${resolve(BIN)}`;
    await writeFile(copy, text.replaceAll(argv('ExecStart')[0]!, real));
  });

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('`systemd-analyze verify` accepts the unit without a warning', () => {
    expect(readFileSync(copy, 'utf8')).toContain(`ExecStart=${process.execPath} `);
    const r = spawnSync('systemd-analyze', ['verify', '--man=no', copy], { encoding: 'utf8' });
    const about = `${r.stdout}${r.stderr}`
      .split('\n')
      .filter((l) => l.includes('portcullis'))
      .join('\n');
    expect(about).toBe('');
    expect(r.status, r.stderr).toBe(0);
  });

  it('`systemd-analyze verify` does complain about a misspelt directive (the check above can fail)', async () => {
    const bad = join(dir, 'misspelt.service');
    await writeFile(bad, readFileSync(copy, 'utf8').replace('ProtectHome=yes', 'ProtectHom=yes'));
    const r = spawnSync('systemd-analyze', ['verify', '--man=no', bad], { encoding: 'utf8' });
    expect(`${r.stdout}${r.stderr}`).toMatch(/Unknown key.*ProtectHom/);
  });

  it('`systemd-analyze security --offline` rates the exposure at most 2.0', () => {
    const r = spawnSync('systemd-analyze', ['security', '--offline=yes', '--no-pager', copy], {
      encoding: 'utf8',
    });
    const m = /Overall exposure level for \S+: (\d+\.\d+)/.exec(`${r.stdout}${r.stderr}`);
    expect(m, r.stdout + r.stderr).not.toBeNull();
    expect(Number(m![1])).toBeLessThanOrEqual(2.0);
  });
});

describe('ExecReload and KillSignal on a real gateway', () => {
  let dir: string;
  let pki: TestPkiPaths;
  let gw: StartedBinary;
  const children = new Set<StartedBinary['child']>();

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'portcullis-systemd-run-'));
    pki = await writePki(join(dir, 'pki'));
    const file = join(dir, 'portcullis.yaml');
    await writeFile(
      file,
      stringify({
        admin: { enabled: false, listen: '127.0.0.1:0' },
        reload: { checkFilesSeconds: 0 },
        listeners: [
          {
            name: 'main',
            listen: '127.0.0.1:0',
            tls: {
              cert: pki.server.cert,
              key: pki.server.key,
              clientCertificate: 'require',
              clientCa: pki.ca,
            },
            routes: [{ id: 'echo', match: { pathPrefix: '/' }, upstream: 'builtin:echo' }],
          },
        ],
      }),
    );
    gw = startBinary(file);
    children.add(gw.child);
    await listeningPorts(gw);
  });

  afterAll(async () => {
    killAll(children);
    await rm(dir, { recursive: true, force: true });
  });

  it('ExecReload, with $MAINPID as systemd substitutes it, reloads the config', async () => {
    const [program, ...args] = argv('ExecReload').map((a) => (a === '$MAINPID' ? String(gw.child.pid) : a));
    execFileSync(program!, args);
    await gw.waitFor((l) => l.msg === 'config reloaded', 'config reloaded', 10_000);
    expect(gw.lines.find((l) => l.msg === 'reloading config')?.signal).toBe('SIGHUP');
  });

  it('KillSignal drains and exits 0 within TimeoutStopSec', async () => {
    const started = Date.now();
    gw.child.kill(get('KillSignal') as NodeJS.Signals);
    const exit = await gw.exited;
    expect(exit).toEqual({ code: 0, signal: null });
    expect(Date.now() - started).toBeLessThan(seconds(get('TimeoutStopSec') ?? '0') * 1000);
  });
});
