/**
 * The built `portcullis` binary end to end (dist/, built by test/global-setup.ts): exit codes (0 ok,
 * 1 failure, 2 usage, 3 invalid config), a bad config refused before anything listens, a good one
 * serving mTLS until SIGTERM, and the `certs` commands producing a PKI the gateway enforces (revocation).
 */
import { type ChildProcess } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { chmodSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { get as httpGet } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { connect, createServer, type AddressInfo, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  freePort,
  killAll,
  listeningPorts,
  runCli,
  startBinary,
  type StartedBinary,
} from '../helpers/binary.js';
import { h1 } from '../helpers/clients.js';
import { writePki, type TestPkiPaths } from '../helpers/pki.js';

const EXIT = { ok: 0, failure: 1, usage: 2, config: 3 } as const;

let dir: string;
let pki: TestPkiPaths;
const children = new Set<ChildProcess>();

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'portcullis-cli-'));
  pki = await writePki(join(dir, 'pki'));
});

afterAll(async () => {
  killAll(children);
  await rm(dir, { recursive: true, force: true });
});

type Obj = Record<string, unknown>;

/** A listener on 127.0.0.1:0 with the test PKI (client certificate required, CRL set). */
function listener(overrides: Obj = {}): Obj {
  return {
    name: 'main',
    listen: '127.0.0.1:0',
    tls: {
      cert: pki.server.cert,
      key: pki.server.key,
      clientCertificate: 'require',
      clientCa: pki.ca,
      crl: pki.crl,
    },
    routes: [{ id: 'echo', match: { pathPrefix: '/' }, upstream: 'builtin:echo' }],
    ...overrides,
  };
}

let configs = 0;
/** Writes a config (an object as YAML, or raw text) into the temp dir and returns its path. */
async function writeConfig(config: Obj | string): Promise<string> {
  const file = join(dir, `config-${++configs}.yaml`);
  await writeFile(file, typeof config === 'string' ? config : stringify(config));
  return file;
}

/** Holds a port on 127.0.0.1 until closed. */
async function occupy(): Promise<{ port: number; server: Server }> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { port: (server.address() as AddressInfo).port, server };
}

/** Whether something accepts TCP connections on 127.0.0.1:port. */
function isListening(port: number): Promise<boolean> {
  return new Promise((res) => {
    const s = connect({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      res(true);
    });
    s.once('error', () => res(false));
  });
}

/** A started gateway child (see test/helpers/binary.ts) and the ports it announced. */
interface Running extends StartedBinary {
  port: number;
  adminPort: number | undefined;
}

/** Starts `portcullis start --config file` and waits for the `listening` line of `name`. */
async function startGateway(file: string, opts: { name?: string; admin?: boolean } = {}): Promise<Running> {
  const run = startBinary(file);
  children.add(run.child);
  return { ...run, ...(await listeningPorts(run, opts)) };
}

/** GET / over mTLS with arbitrary PEM files; resolves with the status or the error code. */
function mtlsGet(
  port: number,
  files: { ca: string; cert: string; key: string },
): Promise<{ status?: number; error?: string }> {
  return new Promise((res) => {
    const req = httpsRequest(
      {
        host: '127.0.0.1',
        port,
        path: '/',
        servername: 'localhost',
        headers: { host: `localhost:${port}` },
        ca: readFileSync(files.ca),
        cert: readFileSync(files.cert),
        key: readFileSync(files.key),
        agent: false,
        timeout: 5_000,
      },
      (r) => {
        r.resume();
        r.on('end', () => res({ status: r.statusCode ?? 0 }));
      },
    );
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (e: NodeJS.ErrnoException) => res({ error: e.code ?? e.message }));
    req.end();
  });
}

function httpStatus(port: number, path: string): Promise<number> {
  return new Promise((res, rej) => {
    httpGet({ host: '127.0.0.1', port, path }, (r) => {
      r.resume();
      res(r.statusCode ?? 0);
    }).on('error', rej);
  });
}

describe('portcullis: usage', () => {
  it('--help prints the usage and exits 0', async () => {
    const r = await runCli(['--help']);
    expect(r.code).toBe(EXIT.ok);
    expect(r.stdout).toContain('Usage: portcullis <command>');
    expect(r.stderr).toBe('');
  });

  it('version, --version and -v print the package version and exit 0', async () => {
    const pkg = JSON.parse(readFileSync('package.json', 'utf8')) as { version: string };
    for (const arg of ['version', '--version', '-v']) {
      const r = await runCli([arg]);
      expect([arg, r.code, r.stdout]).toEqual([arg, EXIT.ok, `portcullis ${pkg.version}\n`]);
    }
  });

  it.each([
    [['start', '--help'], 'start', ['--config FILE', '3  invalid config']],
    [['check', '-h'], 'check', ['--print', '3  invalid config']],
    [['probe', '--help'], 'probe', ['--path PATH', '--timeout DURATION', '--cert FILE', '1  any other answer']],
    [['certs', 'init', '--help'], 'certs init', ['--cluster', '--ou OU', '1  a file exists']],
    [['token', 'create', '--name', 'x', '--help'], 'token create', ['--expires-in DURATION', '(required)']],
    [['help', 'schema'], 'schema', ['0  printed']],
  ])('%j prints that command\'s usage, options and exit codes', async (argv, name, parts) => {
    const r = await runCli(argv);
    expect(r.code).toBe(EXIT.ok);
    expect(r.stderr).toBe('');
    expect(r.stdout.startsWith(`Usage: portcullis ${name}`)).toBe(true);
    expect(r.stdout).toContain('Exit codes:');
    expect(r.stdout).toContain('2  usage error');
    for (const part of parts) expect(r.stdout).toContain(part);
  });

  it.each([
    [['serve'], 'unknown command "serve"'],
    [['check', '--conf', 'x.yaml'], 'unknown option --conf'],
    [['certs', 'issue'], '--name NAME is required'],
  ])('%j exits 2 with the reason and the usage', async (argv, reason) => {
    const r = await runCli(argv);
    expect(r.code).toBe(EXIT.usage);
    expect(r.stderr).toContain(reason);
    expect(r.stderr).toContain('Usage: portcullis');
    expect(r.stdout).toBe('');
  });

  it('a usage error inside a command shows that command\'s usage line and where its help is', async () => {
    const r = await runCli(['certs', 'issue', '--days', '3']);
    expect(r.code).toBe(EXIT.usage);
    expect(r.stderr).toBe(
      'portcullis: certs issue: --name NAME is required\n\n' +
        'Usage: portcullis certs issue [--out DIR] --name NAME [--days N] [--ou OU] [--force] [--p12] [--p12-passphrase-file FILE]\n' +
        'Run `portcullis certs issue --help` for its options and exit codes.\n',
    );
  });
});

describe('portcullis check', () => {
  it('a good config: exit 0, "config OK"', async () => {
    const file = await writeConfig({ admin: { enabled: false }, listeners: [listener()] });
    const r = await runCli(['check', '--config', file]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(EXIT.ok);
    expect(r.stdout).toContain(`config OK: ${file} (1 listener(s), 1 route(s))`);
  });

  it('prints the warnings of a plaintext listener', async () => {
    const file = await writeConfig({
      requireEncryption: false,
      admin: { enabled: false },
      listeners: [listener({ tls: undefined, plaintext: true })],
    });
    const r = await runCli(['check', '--config', file]);
    expect(r.code).toBe(EXIT.ok);
    expect(r.stdout).toMatch(/^warning: listener "main" serves PLAINTEXT/m);
  });

  it.each<[string, () => Obj | string, string, RegExp]>([
    [
      'unknown key',
      () => ({ requre_encryption: true, listeners: [listener()] }),
      'requre_encryption',
      /did you mean "requireEncryption"/,
    ],
    [
      'missing cert file',
      () => ({ listeners: [listener({ tls: { cert: 'nope.crt', key: pki.server.key, clientCa: pki.ca } })] }),
      'listeners[0].tls.cert',
      /ENOENT.*nope\.crt/,
    ],
    [
      'no client CA',
      () => ({
        listeners: [
          listener({ tls: { cert: pki.server.cert, key: pki.server.key, clientCertificate: 'require' } }),
        ],
      }),
      'listeners[0].tls.clientCa',
      /public roots/,
    ],
    [
      'plaintext upstream off the machine',
      () => ({
        listeners: [listener({ routes: [{ id: 'r', match: {}, upstream: 'http://10.0.0.5:8080' }] })],
      }),
      'listeners[0].routes[0].upstream',
      /requireEncryption is true/,
    ],
    [
      'TLS 1.0',
      () => ({
        listeners: [
          listener({
            tls: { cert: pki.server.cert, key: pki.server.key, clientCa: pki.ca, minVersion: 'TLSv1' },
          }),
        ],
      }),
      'listeners[0].tls.minVersion',
      /"TLSv1\.2" or "TLSv1\.3"/,
    ],
    ['tab-indented YAML', () => 'admin:\n\tenabled: false\n', 'admin', /valid YAML: Tabs .*line 2/],
    ['empty file', () => '', '(root)', /a YAML mapping/],
  ])('%s: exit 3, stderr names the key path', async (_name, config, path, reason) => {
    const file = await writeConfig(config());
    const r = await runCli(['check', '--config', file]);
    expect(r.code).toBe(EXIT.config);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain(`portcullis: invalid config ${file}:`);
    expect(r.stderr).toContain(`  - ${path}: got `);
    expect(r.stderr).toMatch(reason);
  });

  it('a config file that does not exist: exit 3 naming it', async () => {
    const file = join(dir, 'nowhere.yaml');
    const r = await runCli(['check', '--config', file]);
    expect(r.code).toBe(EXIT.config);
    expect(r.stderr).toContain(file);
    expect(r.stderr).toContain('ENOENT');
  });

  it('an encrypted key: exit 3 at once, no passphrase prompt even with stdin open', async () => {
    const { createPrivateKey } = await import('node:crypto');
    const keyFile = join(dir, 'encrypted-key.pem');
    const pem = createPrivateKey(readFileSync(pki.server.key)).export({
      format: 'pem',
      type: 'pkcs8',
      cipher: 'aes-256-cbc',
      passphrase: 'pw',
    });
    await writeFile(keyFile, pem, { mode: 0o600 });
    const file = await writeConfig({
      listeners: [listener({ tls: { cert: pki.server.cert, key: keyFile, clientCa: pki.ca } })],
    });
    // stdin stays an open pipe: a prompt would wait on it until the 10 s kill.
    const r = await runCli(['start', '--config', file], {
      stdio: ['pipe', 'pipe', 'pipe'],
      timeoutMs: 10_000,
    });
    expect(r.code).toBe(EXIT.config);
    expect(r.stderr).toContain('listeners[0].tls.key');
    expect(r.stderr).toContain('encrypted');
    expect(r.stdout).not.toContain('listening');
  });
});

describe('portcullis start', () => {
  it('a listen address in use: exit 3 naming listeners[0].listen, nothing left listening', async () => {
    const busy = await occupy();
    try {
      const file = await writeConfig({
        admin: { enabled: true, listen: '127.0.0.1:0' },
        listeners: [listener({ listen: `127.0.0.1:${busy.port}` })],
      });
      const r = await runCli(['start', '--config', file], { timeoutMs: 15_000 });
      expect(r.code).toBe(EXIT.config);
      expect(r.stderr).toContain(`listeners[0].listen: got "127.0.0.1:${busy.port}"`);
      expect(r.stderr).toContain('EADDRINUSE');
      expect(r.stdout).not.toMatch(/"msg":"(admin )?listening"/);
    } finally {
      busy.server.close();
    }
  });

  it('a later listener in use: exit 3 naming it, and the earlier listener and admin are closed', async () => {
    const busy = await occupy();
    const first = await freePort();
    try {
      const file = await writeConfig({
        admin: { enabled: true, listen: '127.0.0.1:0' },
        listeners: [
          listener({ listen: `127.0.0.1:${first}` }),
          listener({
            name: 'second',
            listen: `127.0.0.1:${busy.port}`,
            routes: [{ id: 'second', match: {}, upstream: 'builtin:echo' }],
          }),
        ],
      });
      const r = await runCli(['start', '--config', file], { timeoutMs: 15_000 });
      expect(r.code).toBe(EXIT.config);
      expect(r.stderr).toContain(`listeners[1].listen: got "127.0.0.1:${busy.port}"`);
      expect(await isListening(first)).toBe(false);
    } finally {
      busy.server.close();
    }
  });

  it('the admin address in use: exit 3 naming admin.listen, the data listener is closed', async () => {
    const busy = await occupy();
    const data = await freePort();
    try {
      const file = await writeConfig({
        admin: { enabled: true, listen: `127.0.0.1:${busy.port}` },
        listeners: [listener({ listen: `127.0.0.1:${data}` })],
      });
      const r = await runCli(['start', '--config', file], { timeoutMs: 15_000 });
      expect(r.code).toBe(EXIT.config);
      expect(r.stderr).toContain(`admin.listen: got "127.0.0.1:${busy.port}"`);
      expect(await isListening(data)).toBe(false);
    } finally {
      busy.server.close();
    }
  });

  it('a bad config: exit 3 before anything listens', async () => {
    const file = await writeConfig({
      admin: { enabled: true, listen: '127.0.0.1:0' },
      listeners: [listener({ allowClients: ['XX=foo'] })],
    });
    const r = await runCli(['start', '--config', file]);
    expect(r.code).toBe(EXIT.config);
    expect(r.stderr).toContain('listeners[0].allowClients[0]: got "XX=foo"');
    expect(r.stdout).toBe('');
  });

  it('a good config: logs listening with the port, serves mTLS, SIGTERM drains and exits 0', async () => {
    const file = await writeConfig({
      admin: { enabled: true, listen: '127.0.0.1:0' },
      log: { level: 'info', access: true },
      listeners: [listener()],
    });
    const gw = await startGateway(file, { admin: true });
    expect(gw.port).toBeGreaterThan(0);
    expect(gw.lines.find((l) => l.msg === 'listening')).toMatchObject({
      listener: 'main',
      address: '127.0.0.1',
      port: gw.port,
    });

    const ok = await h1(gw.port, pki, { client: 'alice', path: '/hello' });
    expect(ok.status).toBe(200);
    const noCert = await h1(gw.port, pki, { client: undefined }).then(
      (r) => r.status,
      (e: unknown) => (e as NodeJS.ErrnoException).code,
    );
    expect(noCert).not.toBe(200);
    expect(await httpStatus(gw.adminPort!, '/healthz')).toBe(200);

    gw.child.kill('SIGTERM');
    const { code } = await gw.exited;
    expect(code).toBe(EXIT.ok);
    expect(await isListening(gw.port)).toBe(false);
    expect(await isListening(gw.adminPort!)).toBe(false);
    expect(gw.lines.some((l) => l.msg === 'draining' && l.signal === 'SIGTERM')).toBe(true);
  });
});

describe('portcullis: unreadable files (threat model #117)', () => {
  const isRoot = process.getuid?.() === 0;
  if (!isRoot) console.log('skipping the unreadable-key test: it needs root to run the child as uid 65534');

  it.skipIf(!isRoot)('a key file nobody may read: exit 3 with EACCES, run as uid/gid 65534', async () => {
    // A tree the unprivileged child can walk (0755 dirs, 0644 files), except the key (000).
    const root = await mkdtemp(join(tmpdir(), 'portcullis-eacces-'));
    try {
      const paths = await writePki(join(root, 'pki'));
      const file = join(root, 'portcullis.yaml');
      await writeFile(
        file,
        stringify({
          admin: { enabled: false },
          listeners: [
            {
              ...listener(),
              tls: { cert: paths.server.cert, key: paths.server.key, clientCa: paths.ca, crl: paths.crl },
            },
          ],
        }),
      );
      const walk = (p: string): void => {
        if (statSync(p).isDirectory()) {
          chmodSync(p, 0o755);
          for (const e of readdirSync(p)) walk(join(p, e));
        } else chmodSync(p, 0o644);
      };
      walk(root);
      chmodSync(paths.server.key, 0o000);
      const r = await runCli(['start', '--config', file], { uid: 65534, gid: 65534, timeoutMs: 15_000 });
      expect(r.stderr).toContain('listeners[0].tls.key');
      expect(r.stderr).toContain('EACCES');
      expect(r.stderr).toContain(paths.server.key);
      expect(r.code).toBe(EXIT.config);
      expect(r.stdout).not.toContain('listening');
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});

describe('portcullis certs', () => {
  /** Shared by the tests below, in order: init, then issue + revoke. */
  const devPki = (): string => join(dir, 'dev-pki');

  it('init writes the PKI with 0600 keys; a second run without --force fails naming the file', async () => {
    const out = devPki();
    const r = await runCli([
      'certs',
      'init',
      '--out',
      out,
      '--hosts',
      'gw.example',
      '--clients',
      'alice,bob',
    ]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(EXIT.ok);
    const files = readdirSync(out).sort();
    expect(files).toEqual([
      'ca-key.pem',
      'ca.crl',
      'ca.pem',
      'client-alice-key.pem',
      'client-alice.pem',
      'client-bob-key.pem',
      'client-bob.pem',
      'jwks.json',
      'jwt-signing-key.pem',
      'server-key.pem',
      'server.pem',
    ]);
    for (const f of files) {
      expect([f, statSync(join(out, f)).mode & 0o777]).toEqual([f, f.endsWith('-key.pem') ? 0o600 : 0o644]);
      expect(r.stdout).toContain(join(out, f));
    }
    const server = new X509Certificate(readFileSync(join(out, 'server.pem')));
    expect(server.subjectAltName).toContain('DNS:gw.example');
    expect(server.subjectAltName).toContain('DNS:localhost');

    const before = await readFile(join(out, 'ca.pem'), 'utf8');
    const again = await runCli(['certs', 'init', '--out', out, '--clients', 'alice']);
    expect(again.code).not.toBe(EXIT.ok);
    expect(again.stderr).toMatch(
      new RegExp(`${out.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}/[\\w.-]+\\.(pem|crl) already exists`),
    );
    expect(again.stderr).toContain('--force');
    expect(await readFile(join(out, 'ca.pem'), 'utf8')).toBe(before);
  });

  it('issue + revoke carol: a gateway on that PKI accepts carol, then after revoke refuses her and accepts alice', async () => {
    const out = devPki();
    const issued = await runCli(['certs', 'issue', '--out', out, '--name', 'carol']);
    expect(issued.stderr).toBe('');
    expect(issued.code).toBe(EXIT.ok);
    expect(statSync(join(out, 'client-carol-key.pem')).mode & 0o777).toBe(0o600);

    const file = await writeConfig({
      admin: { enabled: false },
      listeners: [
        listener({
          tls: {
            cert: join(out, 'server.pem'),
            key: join(out, 'server-key.pem'),
            clientCertificate: 'require',
            clientCa: join(out, 'ca.pem'),
            crl: join(out, 'ca.crl'),
          },
        }),
      ],
    });
    const client = (name: string): { ca: string; cert: string; key: string } => ({
      ca: join(out, 'ca.pem'),
      cert: join(out, `client-${name}.pem`),
      key: join(out, `client-${name}-key.pem`),
    });

    // Before the revocation carol gets in: the refusal below is the CRL's doing, nothing else.
    const before = await startGateway(file);
    try {
      expect(await mtlsGet(before.port, client('carol'))).toEqual({ status: 200 });
    } finally {
      before.child.kill('SIGTERM');
      expect((await before.exited).code).toBe(EXIT.ok);
    }

    const crlBefore = await readFile(join(out, 'ca.crl'), 'utf8');
    const revoked = await runCli(['certs', 'revoke', '--out', out, '--name', 'carol']);
    expect(revoked.stderr).toBe('');
    expect(revoked.code).toBe(EXIT.ok);
    expect(await readFile(join(out, 'ca.crl'), 'utf8')).not.toBe(crlBefore);

    const gw = await startGateway(file);
    try {
      const carol = await mtlsGet(gw.port, client('carol'));
      expect(carol.status).toBeUndefined();
      expect(carol.error).toBeDefined();
      expect(await mtlsGet(gw.port, client('alice'))).toEqual({ status: 200 });
      expect(await mtlsGet(gw.port, client('bob'))).toEqual({ status: 200 });
      // A certificate from another CA (the test PKI) is refused too.
      const stranger = await mtlsGet(gw.port, {
        ca: join(out, 'ca.pem'),
        cert: pki.clients.alice.cert,
        key: pki.clients.alice.key,
      });
      expect(stranger.status).toBeUndefined();
      // The log says why carol was refused.
      const deadline = Date.now() + 3_000;
      const refusedFor = (): unknown =>
        gw.lines.find((l) => l.msg === 'tls handshake refused' && l.reason === 'revoked');
      while (refusedFor() === undefined && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      expect(refusedFor()).toMatchObject({ listener: 'main', reason: 'revoked', detail: 'CERT_REVOKED' });
    } finally {
      gw.child.kill('SIGTERM');
      expect((await gw.exited).code).toBe(EXIT.ok);
    }
  });

  it('the embedded default config checks OK next to a certs-dev made by certs init', async () => {
    const root = join(dir, 'embedded');
    await mkdir(join(root, 'config'), { recursive: true });
    await copyFile(resolve('config/portcullis.yaml'), join(root, 'config', 'portcullis.yaml'));
    const init = await runCli(['certs', 'init', '--out', join(root, 'certs-dev')]);
    expect(init.code).toBe(EXIT.ok);
    const r = await runCli(['check', '--config', join(root, 'config', 'portcullis.yaml')]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(EXIT.ok);
    expect(r.stdout).toContain('config OK');
  });
});
