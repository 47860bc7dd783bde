/**
 * The built binary (`portcullis check` / `portcullis start`) on the TLS material checks: a server
 * certificate without serverAuth and a CRL file whose second CRL does not parse are config errors (exit 3,
 * stderr names the key path and the file, nothing listens); a certificate that covers none of the
 * listener's serverNames is a warning (`check` prints it and exits 0; `start` logs it at warn and exports
 * `portcullis_tls_certificate_name_mismatch{listener} 1` on /metrics).
 */
import { type ChildProcess } from 'node:child_process';
import { get as httpGet } from 'node:http';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { killAll, listeningPorts, runCli, startBinary } from '../helpers/binary.js';
import { mintTestPki, writePki, type TestPkiPaths } from '../helpers/pki.js';

const EXIT = { ok: 0, config: 3 } as const;

let dir: string;
let pki: TestPkiPaths;
let brokenCrl: string;
const children = new Set<ChildProcess>();

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'portcullis-tls-cli-'));
  pki = await writePki(join(dir, 'pki'));
  brokenCrl = join(dir, 'broken-second.crl');
  await writeFile(brokenCrl, `${mintTestPki().crlPem}-----BEGIN X509 CRL-----\nZ2FyYmFnZQ==\n-----END X509 CRL-----\n`);
});

afterAll(async () => {
  killAll(children);
  await rm(dir, { recursive: true, force: true });
});

type Obj = Record<string, unknown>;

function listener(overrides: Obj = {}): Obj {
  const { tls, ...rest } = overrides as { tls?: Obj };
  return {
    name: 'main',
    listen: '127.0.0.1:0',
    tls: { cert: pki.server.cert, key: pki.server.key, clientCertificate: 'require', clientCa: pki.ca, crl: pki.crl, ...tls },
    routes: [{ id: 'echo', match: { pathPrefix: '/' }, upstream: 'builtin:echo' }],
    ...rest,
  };
}

let n = 0;
async function writeConfig(config: Obj): Promise<string> {
  const file = join(dir, `config-${++n}.yaml`);
  await writeFile(file, stringify(config));
  return file;
}

function httpText(port: number, path: string): Promise<string> {
  return new Promise((res, rej) => {
    httpGet({ host: '127.0.0.1', port, path }, (r) => {
      let body = '';
      r.setEncoding('utf8');
      r.on('data', (c: string) => (body += c));
      r.on('end', () => res(body));
    }).on('error', rej);
  });
}

describe.each(['check', 'start'] as const)('portcullis %s: config errors name the key path', (command) => {
  it.each<[string, () => Obj, string, RegExp]>([
    [
      'a client certificate as the server certificate (extendedKeyUsage without serverAuth)',
      () => listener({ tls: { cert: pki.clients.alice.cert, key: pki.clients.alice.key } }),
      'listeners[0].tls.cert',
      /extendedKeyUsage lacks serverAuth/,
    ],
    [
      'a CRL file whose second CRL does not parse',
      () => listener({ tls: { crl: brokenCrl } }),
      'listeners[0].tls.crl',
      /CRL #2 of 2 in .*broken-second\.crl does not parse/,
    ],
  ])('%s: exit 3', async (_name, l, path, reason) => {
    const file = await writeConfig({ admin: { enabled: false }, listeners: [l()] });
    const r = await runCli([command, '--config', file], { timeoutMs: 15_000 });
    expect(r.code).toBe(EXIT.config);
    expect(r.stderr).toContain(`  - ${path}: got `);
    expect(r.stderr).toMatch(reason);
    expect(r.stdout).not.toMatch(/listening/);
  });
});

describe('serverNames that the certificate does not cover', () => {
  it('check: exit 0, prints the warning naming the listener and the names', async () => {
    const file = await writeConfig({ admin: { enabled: false }, listeners: [listener({ serverNames: ['gw.example.org'] })] });
    const r = await runCli(['check', '--config', file]);
    expect(r.code).toBe(EXIT.ok);
    expect(r.stdout).toMatch(/^warning: listener "main": the server certificate \(listeners\[0\]\.tls\.cert\) covers none of the names clients use, gw\.example\.org /m);
  });

  it('start: a warn log line naming the listener and the names, and the gauge at 1 on /metrics', async () => {
    const file = await writeConfig({
      admin: { enabled: true, listen: '127.0.0.1:0' },
      listeners: [listener({ serverNames: ['gw.example.org'] })],
    });
    const run = startBinary(file);
    children.add(run.child);
    const { adminPort } = await listeningPorts(run, { admin: true });
    const warn = await run.waitFor(
      (l) => l.level === 'warn' && typeof l.msg === 'string' && l.msg.includes('covers none of the names'),
      'the name mismatch warning',
    );
    expect(warn.msg).toContain('listener "main"');
    expect(warn.msg).toContain('gw.example.org');
    const metrics = await httpText(adminPort!, '/metrics');
    expect(metrics).toMatch(/^portcullis_tls_certificate_name_mismatch\{listener="main"\} 1$/m);
    run.child.kill('SIGTERM');
    expect((await run.exited).code).toBe(EXIT.ok);
  });
});
