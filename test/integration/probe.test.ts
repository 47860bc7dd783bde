/**
 * `portcullis probe` against the real gateway binary: exit 0 when the admin listener answers 200, exit 1
 * with one line on stderr otherwise — nothing listening, /readyz 503 (an IdP key set never fetched), an
 * admin that never answers (the timeout), an admin over mTLS without a client certificate or with a CA
 * that does not vouch for it — and the admin's client certificate, CA and SNI options when it speaks TLS.
 */
import { type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer as createNetServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { probeHost } from '../../src/commands/probe.js';
import { freePort, killAll, listeningPorts, runCli, startBinary } from '../helpers/binary.js';
import { writePki, type TestPkiPaths } from '../helpers/pki.js';

let dir: string;
let pki: TestPkiPaths;
const children = new Set<ChildProcess>();

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'portcullis-probe-'));
  pki = await writePki(join(dir, 'pki'));
});

afterAll(async () => {
  killAll(children);
  await rm(dir, { recursive: true, force: true });
});

let n = 0;
/** A config with one echo listener on port 0 and the admin listener on `adminPort`. */
async function writeConfig(adminPort: number, extra: Record<string, unknown> = {}): Promise<string> {
  const { admin, ...rest } = extra as { admin?: Record<string, unknown> };
  const file = join(dir, `probe-${++n}.yaml`);
  await writeFile(
    file,
    stringify({
      admin: { listen: `127.0.0.1:${adminPort}`, ...admin },
      listeners: [
        {
          name: 'main',
          listen: '127.0.0.1:0',
          tls: { cert: pki.server.cert, key: pki.server.key, clientCa: pki.ca },
          routes: [{ id: 'echo', match: { pathPrefix: '/' }, upstream: 'builtin:echo' }],
        },
      ],
      ...rest,
    }),
  );
  return file;
}

/** Starts the binary on `file` and waits for its listener and admin lines. */
async function start(file: string): Promise<ChildProcess> {
  const run = startBinary(file);
  children.add(run.child);
  await listeningPorts(run, { admin: true });
  return run.child;
}

async function stop(child: ChildProcess): Promise<void> {
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await exited;
}

describe('portcullis probe: plaintext admin on loopback', () => {
  it('a ready gateway: /readyz and /healthz exit 0 with one line on stdout', async () => {
    const port = await freePort();
    const file = await writeConfig(port);
    const child = await start(file);
    try {
      for (const path of ['/readyz', '/healthz']) {
        const r = await runCli(['probe', '--config', file, '--path', path]);
        expect(r.code, r.stderr).toBe(0);
        expect(r.stderr).toBe('');
        expect(r.stdout).toBe(`portcullis probe: http://127.0.0.1:${port}${path}: 200\n`);
      }
    } finally {
      await stop(child);
    }
  });

  it('nothing listening: exit 1 at once, one line naming the address', async () => {
    const port = await freePort();
    const file = await writeConfig(port);
    const started = Date.now();
    const r = await runCli(['probe', '--config', file]);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(
      new RegExp(`^portcullis probe: http://127\\.0\\.0\\.1:${port}/readyz: .*ECONNREFUSED.*\\n$`),
    );
    expect(r.stderr.split('\n')).toHaveLength(2); // one line and its newline
    expect(Date.now() - started).toBeLessThan(10_000);
  });

  it("/readyz 503 (a route's IdP key set never fetched): exit 1 naming what is not ready; /healthz still 0", async () => {
    const port = await freePort();
    const deadIdp = await freePort();
    const file = await writeConfig(port, {
      authProviders: {
        idp: {
          type: 'jwt',
          issuer: 'https://idp.example/',
          audience: 'api',
          jwksUri: `http://127.0.0.1:${deadIdp}/jwks`,
          algorithms: ['ES256'],
        },
      },
      listeners: [
        {
          name: 'main',
          listen: '127.0.0.1:0',
          tls: { cert: pki.server.cert, key: pki.server.key, clientCa: pki.ca },
          routes: [
            { id: 'api', match: { pathPrefix: '/' }, upstream: 'builtin:echo', auth: { providers: ['idp'] } },
          ],
        },
      ],
    });
    const child = await start(file);
    try {
      const r = await runCli(['probe', '--config', file]);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(
        /^portcullis probe: http:\/\/127\.0\.0\.1:\d+\/readyz: 503 \(not ready: authProviders\.idp: .*\)\n$/,
      );
      const live = await runCli(['probe', '--config', file, '--path', '/healthz']);
      expect(live.code).toBe(0);
    } finally {
      await stop(child);
    }
  });

  it('an admin that accepts but never answers: exit 1 after --timeout', async () => {
    const held: Socket[] = [];
    const silent: Server = createNetServer((s) => held.push(s));
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    try {
      const file = await writeConfig((silent.address() as AddressInfo).port);
      const started = Date.now();
      const r = await runCli(['probe', '--config', file, '--timeout', '300ms']);
      const elapsed = Date.now() - started;
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/: no answer within 300 ms\n$/);
      expect(held.length).toBe(1);
      // Node's start-up is most of it; without the timeout the probe would wait for the socket forever.
      expect(elapsed).toBeLessThan(8_000);
    } finally {
      for (const s of held) s.destroy();
      await new Promise<void>((r) => silent.close(() => r()));
    }
  });

  it('config problems: exit 1 with the reason (a missing file, the admin turned off)', async () => {
    const missing = await runCli(['probe', '--config', join(dir, 'nope.yaml')]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/cannot read the config .*nope\.yaml: ENOENT/);
    const off = await runCli(['probe', '--config', await writeConfig(9, { admin: { enabled: false } })]);
    expect(off.code).toBe(1);
    expect(off.stderr).toMatch(/the admin listener is off/);
    const usage = await runCli(['probe', '--path', '/metrics']);
    expect(usage.code).toBe(2);
  });
});

describe('portcullis probe: admin over mTLS', () => {
  let port: number;
  let file: string;
  let child: ChildProcess;

  beforeAll(async () => {
    port = await freePort();
    file = await writeConfig(port, {
      admin: {
        tls: { cert: pki.server.cert, key: pki.server.key, clientCa: pki.ca, clientCertificate: 'require' },
        allowClients: ['CN=alice'],
      },
    });
    child = await start(file);
  });

  afterAll(async () => {
    if (child) await stop(child);
  });

  const alice = (): string[] => ['--cert', pki.clients.alice.cert, '--key', pki.clients.alice.key];

  it('with the client certificate the admin requires: exit 0', async () => {
    const r = await runCli(['probe', '--config', file, ...alice()]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe(`portcullis probe: https://127.0.0.1:${port}/readyz: 200\n`);
  });

  it("--ca verifies the admin's certificate, --servername its name", async () => {
    const ok = await runCli([
      'probe',
      '--config',
      file,
      ...alice(),
      '--ca',
      pki.ca,
      '--servername',
      'localhost',
    ]);
    expect(ok.code, ok.stderr).toBe(0);
    const chainOnly = await runCli(['probe', '--config', file, ...alice(), '--ca', pki.ca]);
    expect(chainOnly.code, chainOnly.stderr).toBe(0);
    const wrongName = await runCli([
      'probe',
      '--config',
      file,
      ...alice(),
      '--ca',
      pki.ca,
      '--servername',
      'admin.example',
    ]);
    expect(wrongName.code).toBe(1);
    expect(wrongName.stderr).toMatch(/ERR_TLS_CERT_ALTNAME_INVALID|altnames/);
    const otherCa = await runCli(['probe', '--config', file, ...alice(), '--ca', pki.otherCa]);
    expect(otherCa.code).toBe(1);
    expect(otherCa.stderr).toMatch(/certificate|signature/i);
  });

  it('without a certificate: exit 1, saying one is needed; a client the allow-list does not name: exit 1 (403)', async () => {
    const none = await runCli(['probe', '--config', file]);
    expect(none.code).toBe(1);
    expect(none.stderr).toMatch(/requires a client certificate: pass --cert FILE --key FILE/);
    const bob = await runCli([
      'probe',
      '--config',
      file,
      '--cert',
      pki.clients.bob.cert,
      '--key',
      pki.clients.bob.key,
    ]);
    expect(bob.code).toBe(1);
    expect(bob.stderr).toMatch(/: 403 \(.*client not allowed.*\)\n$/);
  });
});

describe('probeHost', () => {
  it.each([
    ['0.0.0.0', '127.0.0.1'],
    ['::', '::1'],
    ['127.0.0.1', '127.0.0.1'],
    ['10.1.2.3', '10.1.2.3'],
    ['localhost', 'localhost'],
  ])('%s → %s', (bind, dial) => {
    expect(probeHost(bind)).toBe(dial);
  });
});
