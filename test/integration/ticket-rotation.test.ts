/**
 * TLS session ticket keys rotate (listener/ticket-keys.ts): a session resumes within a rotation period and
 * not after it; processes that share the secret (a cluster's workers) resume each other's sessions, and a
 * process with another secret does not. The real app on a real TLS listener with client certificates; the
 * rotation period is shortened through the app's `ticketKeyRotationMs` dependency.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect, type ConnectionOptions, type SecureVersion } from 'node:tls';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startApp, type App } from '../../src/app.js';
import { loadConfigFile } from '../../src/load-config.js';
import { createLogger } from '../../src/observability/logger.js';
import { tlsOptions } from '../helpers/clients.js';
import { tlsListener } from '../helpers/gateway.js';
import { writePki, type TestPkiPaths } from '../helpers/pki.js';
import { Writable } from 'node:stream';

interface Visit {
  status: number;
  reused: boolean;
  /** The last session (ticket) the server gave on this connection. */
  session: Buffer | undefined;
}

/** One `GET /` over a fresh TLS connection, offering `session` for resumption. */
function visit(
  port: number,
  tls: ConnectionOptions,
  version: SecureVersion,
  session?: Buffer,
  path = '/',
): Promise<Visit> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({
      ...tls,
      host: '127.0.0.1',
      port,
      ALPNProtocols: ['http/1.1'],
      minVersion: version,
      maxVersion: version,
      ...(session !== undefined ? { session } : {}),
    });
    let got: Buffer | undefined;
    let reused = false;
    let text = '';
    socket.on('session', (s: Buffer) => (got = s));
    socket.on('secureConnect', () => {
      // Read here: after the close the socket no longer knows.
      reused = socket.isSessionReused();
      socket.write(`GET ${path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`);
    });
    socket.setEncoding('latin1');
    socket.on('data', (c: string) => (text += c));
    socket.on('error', reject);
    socket.on('close', () =>
      resolve({
        status: Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0),
        reused,
        session: got,
      }),
    );
    socket.setTimeout(5_000, () => socket.destroy(new Error('no answer within 5 s')));
  });
}

/** Log lines of every app this file starts (debug: the rotation line). */
const lines: Record<string, unknown>[] = [];
const capture = (): ReturnType<typeof createLogger> =>
  createLogger(
    'debug',
    new Writable({
      write(chunk: Buffer, _e, cb) {
        for (const l of chunk.toString('utf8').split('\n'))
          if (l !== '') lines.push(JSON.parse(l) as Record<string, unknown>);
        cb();
      },
    }),
  );

let dir: string;
let pki: TestPkiPaths;
let file: string;
/** The same listener, plus the admin listener over TLS on 127.0.0.1:0. */
let adminFile: string;
const apps: App[] = [];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'portcullis-tickets-'));
  pki = await writePki(join(dir, 'pki'));
  file = join(dir, 'portcullis.yaml');
  await writeFile(
    file,
    stringify({ admin: { enabled: false, listen: '127.0.0.1:0' }, listeners: [tlsListener(pki)] }),
  );
  adminFile = join(dir, 'admin.yaml');
  await writeFile(
    adminFile,
    stringify({
      admin: {
        listen: '127.0.0.1:0',
        tls: { cert: pki.server.cert, key: pki.server.key, clientCa: pki.ca, clientCertificate: 'require' },
      },
      listeners: [tlsListener(pki)],
    }),
  );
});

afterAll(async () => {
  await Promise.allSettled(apps.map((a) => a.close(0)));
  await rm(dir, { recursive: true, force: true });
});

async function start(
  deps: { ticketKeys?: Buffer; ticketKeyRotationMs?: number },
  which: 'listener' | 'admin' = 'listener',
): Promise<number> {
  const app = await startApp(loadConfigFile(which === 'admin' ? adminFile : file), {
    logger: capture(),
    ...deps,
  });
  apps.push(app);
  return which === 'admin' ? (app.adminPort() as number) : app.port('main');
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('ticket keys rotate', () => {
  const ROTATION_MS = 2_500;

  it.each([
    ['TLSv1.2', 'listener'],
    ['TLSv1.3', 'listener'],
    ['TLSv1.2', 'admin'],
    ['TLSv1.3', 'admin'],
  ] as const)(
    '%s, %s: a session resumes within its period; after the rotation it does not, and the client is served after a full handshake',
    async (version, which) => {
      const port = await start({ ticketKeyRotationMs: ROTATION_MS }, which);
      const path = which === 'admin' ? '/healthz' : '/';
      const tls = tlsOptions(pki, 'alice');
      // Start just after a boundary, so the first two visits fall in one period.
      await sleep(ROTATION_MS - (Date.now() % ROTATION_MS) + 50);
      const first = await visit(port, tls, version, undefined, path);
      expect(first).toMatchObject({ status: 200, reused: false });
      expect(first.session).toBeDefined();
      const again = await visit(port, tls, version, first.session, path);
      expect(again).toMatchObject({ status: 200, reused: true });

      const next = Math.floor(Date.now() / ROTATION_MS) + 1;
      await sleep(ROTATION_MS - (Date.now() % ROTATION_MS) + 20);
      // The gateway's timer has rotated the keys (a slow event loop could run the test's timer first).
      for (
        let i = 0;
        i < 100 && !lines.some((l) => l.msg === 'TLS session ticket keys rotated' && l.period === next);
        i++
      )
        await sleep(20);
      expect(lines.some((l) => l.msg === 'TLS session ticket keys rotated' && l.period === next)).toBe(true);
      const after = await visit(port, tls, version, first.session, path);
      expect(after).toMatchObject({ status: 200, reused: false });
      // The ticket given under the new keys resumes again.
      const renewed = await visit(port, tls, version, after.session, path);
      expect(renewed).toMatchObject({ status: 200, reused: true });
    },
    15_000,
  );
});

describe('processes that share the secret (a cluster) derive the same keys', () => {
  it.each(['TLSv1.2', 'TLSv1.3'] as const)(
    '%s: a session from one resumes on the other; a process with another secret makes a full handshake',
    async (version) => {
      const secret = randomBytes(48);
      const a = await start({ ticketKeys: secret });
      const b = await start({ ticketKeys: Buffer.from(secret) });
      const other = await start({ ticketKeys: randomBytes(48) });
      const tls = tlsOptions(pki, 'alice');
      const first = await visit(a, tls, version);
      expect(first.status).toBe(200);
      expect(await visit(b, tls, version, first.session)).toMatchObject({ status: 200, reused: true });
      expect(await visit(other, tls, version, first.session)).toMatchObject({ status: 200, reused: false });
    },
    15_000,
  );
});
