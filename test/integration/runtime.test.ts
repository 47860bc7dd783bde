/**
 * The runtime Portcullis is tested and ships on: Node.js 24 LTS (package.json `engines`; the `node`
 * devDependency puts Node 24 first on the PATH of every npm script, so `npm test` and `npm start` run on
 * it even where the machine's own `node` is older). And the built binary prints no deprecation warning,
 * at start or while it serves HTTP/1.1, HTTP/2, WebSocket and admin traffic, reloads and drains.
 */
import { type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket, type ClientOptions } from 'ws';
import { stringify } from 'yaml';
import { scrapeText } from '../helpers/admin.js';
import { killAll, listeningPorts, startBinary, type StartedBinary } from '../helpers/binary.js';
import { h1, h2, h2session, rawTls } from '../helpers/clients.js';
import { writePki, type TestPkiPaths } from '../helpers/pki.js';
import { startUpstream, type TestUpstream } from '../helpers/upstream.js';

interface PackageJson {
  engines: { node: string };
  devDependencies: Record<string, string>;
}

const pkg = JSON.parse(readFileSync('package.json', 'utf8')) as PackageJson;

/** Major version of a `^24.21.0` / `>=24` style range. */
function majorOf(range: string): number {
  const m = /(\d+)/.exec(range);
  if (m === null) throw new Error(`no version in ${range}`);
  return Number(m[1]);
}

describe('the runtime', () => {
  it('is Node.js 24: the node devDependency, at least what engines asks', () => {
    const major = Number(process.versions.node.split('.')[0]);
    const devNode = pkg.devDependencies.node;
    expect(devNode).toBeDefined();
    expect(majorOf(devNode ?? '')).toBe(24);
    expect(majorOf(pkg.engines.node)).toBe(24);
    // vitest, its workers, tsc in global-setup and every spawned binary run on process.execPath.
    expect(`${process.version} at ${process.execPath}`).toMatch(/^v24\./);
    expect(major).toBeGreaterThanOrEqual(majorOf(pkg.engines.node));
  });
});

describe('the built binary prints no deprecation warning', () => {
  let dir: string;
  let pki: TestPkiPaths;
  let up: TestUpstream;
  const children = new Set<ChildProcess>();

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'portcullis-runtime-'));
    pki = await writePki(join(dir, 'pki'));
    up = await startUpstream();
  });
  afterAll(async () => {
    killAll(children);
    await up.close();
    await rm(dir, { recursive: true, force: true });
  });

  it(
    'at start, under HTTP/1.1, HTTP/2, WebSocket and admin traffic, on SIGHUP and on SIGTERM',
    { timeout: 60_000 },
    async () => {
      const file = join(dir, 'portcullis.yaml');
      await writeFile(
        file,
        stringify({
          log: { level: 'info', access: true },
          admin: { listen: '127.0.0.1:0' },
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
              routes: [{ id: 'up', match: { pathPrefix: '/' }, upstream: up.url }],
            },
          ],
        }),
      );
      // --trace-deprecation prints where a deprecated call came from (the line still names the
      // DeprecationWarning); --pending-deprecation adds those Node has announced but does not print yet.
      // Not --throw-deprecation: the gateway keeps running past an uncaught exception and only logs it.
      const run: StartedBinary = startBinary(file, {
        nodeArgs: ['--trace-deprecation', '--pending-deprecation'],
      });
      children.add(run.child);
      const { port, adminPort } = await listeningPorts(run, { admin: true });

      expect((await h1(port, pki, { path: '/h1' })).status).toBe(200);
      const session = h2session(port, pki);
      try {
        expect((await h2(session, { ':path': '/h2' })).status).toBe(200);
      } finally {
        session.close();
      }
      const options = {
        ca: readFileSync(pki.ca),
        cert: readFileSync(pki.clients.alice.cert),
        key: readFileSync(pki.clients.alice.key),
        servername: 'localhost',
        headers: { host: `localhost:${port}` },
        handshakeTimeout: 5_000,
      } as ClientOptions;
      const ws = new WebSocket(`wss://127.0.0.1:${port}/ws`, options);
      ws.on('error', () => undefined);
      try {
        const echoed = await new Promise<string>((resolve, reject) => {
          const t = setTimeout(() => reject(new Error('no echo within 5 s')), 5_000);
          ws.once('open', () => ws.send('hello'));
          ws.once('message', (data: Buffer) => {
            clearTimeout(t);
            resolve(data.toString('utf8'));
          });
        });
        expect(echoed).toBe('hello');
      } finally {
        ws.terminate();
      }
      // An upgrade the upstream refuses, relayed.
      const refused = await rawTls(
        port,
        pki,
        `GET /ws-refuse HTTP/1.1\r\nHost: localhost:${port}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
          'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n',
      );
      expect(refused.text).toMatch(/^HTTP\/1\.1 403 /);
      expect(await scrapeText(adminPort ?? 0)).toMatch(/^portcullis_http_requests_total\{/m);

      run.child.kill('SIGHUP');
      await run.waitFor((l) => l.msg === 'config reloaded', 'config reloaded line');
      expect((await h1(port, pki, { path: '/after-reload' })).status).toBe(200);

      run.child.kill('SIGTERM');
      expect(await run.exited).toEqual({ code: 0, signal: null });
      expect(run.stderr()).not.toMatch(/DeprecationWarning|\[DEP\d+\]/);
      expect(run.lines.filter((l) => l.level === 'fatal' || l.level === 60)).toEqual([]);
    },
  );
});
