/**
 * `npm pack` makes a package that works once installed: a copy of the sources (with a stale file in dist/
 * and dev keys lying around, as in a used clone) is packed — `prepack` cleans and builds dist/ — and the
 * tarball is installed globally into a temporary prefix. Then, as a user who is not root and does not own
 * the installation (`nobody`, when the suite runs as root), `portcullis --version`, `certs init --out`,
 * `certs init` and `token mint` with the defaults, `schema`, and `start` + `probe` on the embedded default
 * config all work, and the installation directory is left exactly as installed: the dev certificates and
 * the config copy go to the user's ~/.config/portcullis.
 */
import { execFileSync, spawn, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  cpSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const ROOT = resolve('.');
const pkg = JSON.parse(readFileSync('package.json', 'utf8')) as {
  name: string;
  version: string;
  license: string;
};

let dir: string;
let tarball: string;
let packedFiles: string[];
let prefix: string;
let installDir: string;
let home: string;
/** How a command runs as the test user: argv prefix (setpriv) and why it is not `nobody`, if it is not. */
let asUser: { argv: string[]; uid: number; gid: number; note: string | undefined };

/** Every file under `d`, relative, sorted (to compare an installation before and after). */
function listing(d: string): string[] {
  const out: string[] = [];
  const walk = (p: string): void => {
    for (const e of readdirSync(p, { withFileTypes: true })) {
      const full = join(p, e.name);
      if (e.isDirectory()) walk(full);
      else out.push(relative(d, full));
    }
  };
  walk(d);
  return out.sort();
}

function run(
  cmd: string,
  args: string[],
  opts: { cwd?: string; timeout?: number } = {},
): SpawnSyncReturns<string> {
  return spawnSync(cmd, args, {
    encoding: 'utf8',
    timeout: opts.timeout ?? 240_000,
    ...(opts.cwd ? { cwd: opts.cwd } : {}),
  });
}

/** The environment of the test user: the installed bin and this node on the PATH, HOME of its own. */
function userEnv(): NodeJS.ProcessEnv {
  return {
    PATH: [join(prefix, 'bin'), dirname(process.execPath), '/usr/local/bin', '/usr/bin', '/bin'].join(':'),
    HOME: home,
    LANG: 'C',
  };
}

/** Runs the installed `portcullis` as the test user. */
function portcullis(args: string[], timeout = 60_000): SpawnSyncReturns<string> {
  const [cmd, ...rest] = [...asUser.argv, 'portcullis', ...args];
  return spawnSync(cmd ?? 'portcullis', rest, { encoding: 'utf8', env: userEnv(), cwd: home, timeout });
}

/** Whether something accepts connections on 127.0.0.1:port. */
function busy(port: number): Promise<boolean> {
  return new Promise((res) => {
    const s = connect({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      res(true);
    });
    s.once('error', () => res(false));
  });
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'portcullis-pack-'));
  chmodSync(dir, 0o755); // the test user must reach the installation and its HOME below
  // A used clone: sources, a stale file in dist/, dev keys in certs-dev/ and the Dask example's dask/.
  const src = join(dir, 'src');
  mkdirSync(src);
  for (const f of [
    'package.json',
    'package-lock.json',
    'tsconfig.json',
    'tsconfig.build.json',
    'LICENSE',
    'README.md',
  ])
    cpSync(f, join(src, f));
  for (const d of ['src', 'config', 'schema']) cpSync(d, join(src, d), { recursive: true });
  symlinkSync(join(ROOT, 'node_modules'), join(src, 'node_modules'));
  mkdirSync(join(src, 'dist', 'src', 'certs'), { recursive: true });
  writeFileSync(join(src, 'dist', 'src', 'certs', 'command.js'), '// stale: moved to commands/ long ago\n');
  mkdirSync(join(src, 'certs-dev'));
  writeFileSync(join(src, 'certs-dev', 'ca-key.pem'), 'not for the package\n');
  mkdirSync(join(src, 'dask', 'certs'), { recursive: true });
  writeFileSync(join(src, 'dask', 'certs', 'scheduler-key.pem'), 'not for the package\n');

  const packed = run('npm', ['pack', '--json', '--pack-destination', dir], { cwd: src });
  if (packed.status !== 0) throw new Error(`npm pack failed (${String(packed.status)}):\n${packed.stderr}`);
  // npm prints the prepack scripts' output before its JSON.
  const json = JSON.parse(packed.stdout.slice(packed.stdout.indexOf('['))) as {
    filename: string;
    files: { path: string }[];
  }[];
  tarball = join(dir, json[0]?.filename ?? '');
  packedFiles = (json[0]?.files ?? []).map((f) => f.path).sort();

  prefix = join(dir, 'prefix');
  const installed = run('npm', [
    'install',
    '--global',
    '--prefix',
    prefix,
    '--prefer-offline',
    '--no-audit',
    '--no-fund',
    '--no-update-notifier',
    tarball,
  ]);
  if (installed.status !== 0)
    throw new Error(`npm install -g failed (${String(installed.status)}):\n${installed.stderr}`);
  installDir = join(prefix, 'lib', 'node_modules', pkg.name);

  home = join(dir, 'home');
  mkdirSync(home, { mode: 0o700 });
  const uid = process.getuid?.() ?? -1;
  asUser = { argv: [], uid, gid: process.getgid?.() ?? -1, note: undefined };
  if (uid === 0) {
    const nobody = Number(execFileSync('id', ['-u', 'nobody'], { encoding: 'utf8' }).trim());
    const nogroup = Number(execFileSync('id', ['-g', 'nobody'], { encoding: 'utf8' }).trim());
    const argv = ['setpriv', `--reuid=${nobody}`, `--regid=${nogroup}`, '--clear-groups', '--'];
    const probe = spawnSync(argv[0] ?? 'setpriv', [...argv.slice(1), process.execPath, '-e', '0'], {
      encoding: 'utf8',
    });
    if (probe.status === 0) {
      chownSync(home, nobody, nogroup);
      asUser = { argv, uid: nobody, gid: nogroup, note: undefined };
    } else {
      asUser.note = `running as root: setpriv to nobody failed (${probe.stderr.trim() || probe.error?.message || 'unknown'})`;
    }
  }
  if (asUser.note !== undefined) console.warn(`package.test: ${asUser.note}`);
}, 600_000);

afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('npm pack', () => {
  it('ships the built dist/, the LICENSE, the configs and the schema; no sources, no stale build, no keys', () => {
    for (const f of [
      'LICENSE',
      'README.md',
      'package.json',
      'dist/src/main.js',
      'dist/src/cli.js',
      'dist/src/commands/probe.js',
      'config/portcullis.yaml',
      'config/examples/dask.yaml',
      'schema/portcullis.schema.json',
    ])
      expect(packedFiles).toContain(f);
    const unwanted = packedFiles.filter((f) =>
      /^(src|test|bench|certs-dev|dask|node_modules)\/|\.pem$|\.ts$|^dist\/src\/certs\/command\.js$/.test(f),
    );
    expect(unwanted).toEqual([]);
  });

  it('LICENSE is the Apache License 2.0 that package.json names', () => {
    expect(pkg.license).toBe('Apache-2.0');
    const license = readFileSync(join(installDir, 'LICENSE'), 'utf8');
    expect(license).toMatch(
      /^\s*Apache License\s+Version 2\.0, January 2004\s+http:\/\/www\.apache\.org\/licenses\//,
    );
    expect(license).toContain('TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION');
    expect(license).toContain('END OF TERMS AND CONDITIONS');
  });
});

describe('npm install -g <tarball>, used by a user who does not own the installation', () => {
  let before: string[];
  beforeAll(() => {
    before = listing(installDir);
  });

  it('the user is not root and cannot write the installation', () => {
    if (asUser.note !== undefined) console.warn(`skipped the non-root check: ${asUser.note}`);
    else {
      expect(asUser.uid).not.toBe(0);
      const w = spawnSync(asUser.argv[0] ?? 'setpriv', [
        ...asUser.argv.slice(1),
        'sh',
        '-c',
        `touch "${installDir}/x"`,
      ]);
      expect(w.status).not.toBe(0);
    }
  });

  it('portcullis --version and -v print the package version', () => {
    for (const flag of ['--version', '-v']) {
      const r = portcullis([flag]);
      expect(r.stderr).toBe('');
      expect([flag, r.status, r.stdout]).toEqual([flag, 0, `portcullis ${pkg.version}\n`]);
    }
  });

  it('portcullis --help and <command> --help work from the installed files', () => {
    const r = portcullis(['certs', 'init', '--help']);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^Usage: portcullis certs init /);
  });

  it('certs init --out DIR writes a PKI the user owns, keys 0600', () => {
    const out = join(home, 'pki');
    const r = portcullis(['certs', 'init', '--out', out]);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const key = statSync(join(out, 'ca-key.pem'));
    expect(key.mode & 0o777).toBe(0o600);
    expect(key.uid).toBe(asUser.uid);
    expect(statSync(join(out, 'ca.pem')).uid).toBe(asUser.uid);
  });

  it('certs init and token mint without --out use ~/.config/portcullis/certs-dev, not the installation', () => {
    const r = portcullis(['certs', 'init']);
    expect(r.status, r.stderr).toBe(0);
    const certs = join(home, '.config', 'portcullis', 'certs-dev');
    expect(r.stdout).toContain(join(certs, 'ca.pem'));
    expect(statSync(join(certs, 'jwt-signing-key.pem')).uid).toBe(asUser.uid);
    const jwt = portcullis(['token', 'mint', '--sub', 'alice']);
    expect(jwt.status, jwt.stderr).toBe(0);
    expect(jwt.stdout).toMatch(/^eyJ[\w-]+\.[\w-]+\.[\w-]+\n$/);
  });

  it('schema prints the shipped schema', () => {
    const r = portcullis(['schema']);
    expect(r.status).toBe(0);
    expect(r.stdout).toBe(readFileSync(join(installDir, 'schema', 'portcullis.schema.json'), 'utf8'));
  });

  it('start on the embedded default: the config copy and the certificates go to ~/.config/portcullis; probe says ready', async () => {
    const [https, admin] = await Promise.all([busy(8443), busy(9090)]);
    if (https || admin) {
      console.warn(
        'skipped `start` on the embedded default: 127.0.0.1:8443 or :9090 is in use on this machine',
      );
      return;
    }
    const [cmd, ...rest] = [...asUser.argv, 'portcullis', 'start'];
    const child = spawn(cmd ?? 'portcullis', rest, {
      env: userEnv(),
      cwd: home,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    try {
      const deadline = Date.now() + 30_000;
      while (!stdout.includes('"admin listening"') && child.exitCode === null && Date.now() < deadline)
        await new Promise((r) => setTimeout(r, 100));
      expect(stdout, stderr).toContain('"admin listening"');
      const config = join(home, '.config', 'portcullis', 'config', 'portcullis.yaml');
      expect(stderr).toContain(`copied the embedded default config to ${config}`);
      expect(statSync(config).uid).toBe(asUser.uid);
      expect(readFileSync(config, 'utf8')).toContain(
        `# yaml-language-server: $schema=${join(installDir, 'schema', 'portcullis.schema.json')}`,
      );
      const probe = portcullis(['probe']);
      expect(probe.stderr).toBe('');
      expect(probe.status).toBe(0);
      expect(probe.stdout).toBe('portcullis probe: http://127.0.0.1:9090/readyz: 200\n');
    } finally {
      // setpriv execs the gateway in its own place: the signal reaches it.
      child.kill('SIGTERM');
      const code = await exited;
      expect(code).toBe(0);
    }
  }, 90_000);

  it('the installation is exactly as npm installed it: nothing was written into it', () => {
    expect(listing(installDir)).toEqual(before);
    expect(readdirSync(installDir)).not.toContain('certs-dev');
  });
});
