/**
 * The file watch (`reload.checkFilesSeconds`, config/watch.ts) with the built binary: a certificate renewed
 * in place and a refreshed CRL are served without a SIGHUP, in one process and in a cluster; with the watch
 * off, nothing changes until a signal. Real TLS with client certificates, a real upstream.
 */
import { X509Certificate } from 'node:crypto';
import { type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ConnectionOptions, TLSSocket } from 'node:tls';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCrl, issueServerCert } from '../../src/certs/pki.js';
import { killAll, startBinary, type StartedBinary } from '../helpers/binary.js';
import { tlsOptions } from '../helpers/clients.js';
import { tlsListener } from '../helpers/gateway.js';
import { mintTestPki, writePki, type TestPkiPaths } from '../helpers/pki.js';
import { startUpstream, type TestUpstream } from '../helpers/upstream.js';

/** One request on a fresh connection: the status and the server certificate's fingerprint, or the error code. */
function visit(
  port: number,
  tls: ConnectionOptions,
  path: string,
): Promise<{ status: number; fingerprint: string }> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      { ...tls, host: '127.0.0.1', port, path, agent: false, headers: { host: `localhost:${port}` } },
      (res) => {
        const fingerprint = (
          res.socket as unknown as Pick<TLSSocket, 'getPeerCertificate'>
        ).getPeerCertificate().fingerprint256;
        res.resume();
        res.on('end', () => resolve({ status: res.statusCode ?? 0, fingerprint }));
      },
    );
    req.on('error', reject);
    req.end();
  });
}

async function until<T>(probe: () => Promise<T | undefined>, what: string, ms = 15_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const got = await probe().catch(() => undefined);
    if (got !== undefined) return got;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const fingerprintOf = (pem: string): string => new X509Certificate(pem).fingerprint256;

let up: TestUpstream;
const dirs: string[] = [];
const children = new Set<ChildProcess>();

beforeAll(async () => {
  up = await startUpstream();
});
afterAll(async () => {
  killAll(children);
  await up.close();
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

/** A config file over its own copy of the test PKI (so renewing it touches no other test), and the binary. */
async function start(
  extra: Record<string, unknown>,
): Promise<{ pki: TestPkiPaths; gw: StartedBinary; port: number }> {
  const dir = await mkdtemp(join(tmpdir(), 'portcullis-watch-'));
  dirs.push(dir);
  const pki = await writePki(join(dir, 'pki'));
  const file = join(dir, 'portcullis.yaml');
  await writeFile(
    file,
    stringify({
      admin: { enabled: false, listen: '127.0.0.1:0' },
      listeners: [tlsListener(pki, { routes: [{ id: 'up', match: { pathPrefix: '/' }, upstream: up.url }] })],
      ...extra,
    }),
  );
  const gw = startBinary(file);
  children.add(gw.child);
  const listening = await gw.waitFor(
    (l) => l.msg === 'listening' && l.listener === 'main',
    'a listening line',
    60_000,
  );
  return { pki, gw, port: listening.port as number };
}

/** Renews the server certificate in place the way a non-atomic tool does: the key first, then the certificate. */
async function renew(pki: TestPkiPaths): Promise<string> {
  const renewed = issueServerCert(mintTestPki().ca, { hosts: ['localhost', '127.0.0.1', '::1'], days: 60 });
  await writeFile(pki.server.key, renewed.keyPem, { mode: 0o600 });
  await writeFile(pki.server.cert, renewed.certPem);
  return fingerprintOf(renewed.certPem);
}

describe('reload.checkFilesSeconds', () => {
  it('one process: a certificate renewed in place is served without a signal, and a new CRL refuses its client', async () => {
    const { pki, gw, port } = await start({ reload: { checkFilesSeconds: 1 } });
    const alice = tlsOptions(pki, 'alice');
    const bob = tlsOptions(pki, 'bob');
    const before = fingerprintOf(await readFile(pki.server.cert, 'utf8'));
    expect(await visit(port, alice, '/w-1')).toEqual({ status: 200, fingerprint: before });

    const after = await renew(pki);
    const served = await until(async () => {
      const v = await visit(port, alice, '/w-2');
      return v.fingerprint === after ? v : undefined;
    }, 'the renewed certificate');
    expect(served.status).toBe(200);
    const line = gw.lines.find((l) => l.msg === 'reloading config' && l.trigger === 'files changed');
    expect(line?.files).toEqual(expect.arrayContaining([pki.server.cert]));
    expect(gw.lines.some((l) => l.msg === 'config reloaded')).toBe(true);

    // bob is revoked in a refreshed CRL written over the old one: his new connections are refused.
    expect((await visit(port, bob, '/bob-1')).status).toBe(200);
    const test = mintTestPki();
    const now = new Date();
    await writeFile(
      pki.crl,
      createCrl(test.ca, {
        revoked: [
          { serialHex: test.clients.revoked.serialHex, revokedAt: new Date(now.getTime() - 60_000) },
          { serialHex: test.clients.bob.serialHex, revokedAt: new Date(now.getTime() - 60_000) },
        ],
        crlNumber: 7,
        thisUpdate: now,
        days: 30,
      }),
    );
    await until(
      () =>
        visit(port, bob, '/bob-polling').then(
          () => undefined,
          () => true,
        ),
      'bob to be refused',
    );
    // From now on bob gets nowhere, alice still does.
    const seen = up.seen.length;
    await expect(visit(port, bob, '/bob-refused')).rejects.toThrow();
    expect((await visit(port, alice, '/alice-still')).status).toBe(200);
    expect(up.seen.slice(seen).map((s) => s.url)).toEqual(['/alice-still']);
    // The only errors allowed: a look that caught the renewal between its two writes (refused, then applied).
    expect(
      gw.lines.filter(
        (l) =>
          l.level === 'fatal' || (l.level === 'error' && !String(l.msg).startsWith('config reload refused')),
      ),
    ).toEqual([]);

    gw.child.kill('SIGTERM');
    expect((await gw.exited).code).toBe(0);
  }, 60_000);

  it('0 turns the watch off: the renewed certificate is served only after a SIGHUP', async () => {
    const { pki, gw, port } = await start({ reload: { checkFilesSeconds: 0 } });
    const alice = tlsOptions(pki, 'alice');
    const before = fingerprintOf(await readFile(pki.server.cert, 'utf8'));
    const after = await renew(pki);
    await new Promise((r) => setTimeout(r, 2_500));
    expect((await visit(port, alice, '/off-1')).fingerprint).toBe(before);
    expect(gw.lines.some((l) => l.msg === 'reloading config')).toBe(false);

    gw.child.kill('SIGHUP');
    await gw.waitFor((l) => l.msg === 'config reloaded', "'config reloaded'");
    expect((await visit(port, alice, '/off-2')).fingerprint).toBe(after);
    gw.child.kill('SIGTERM');
    expect((await gw.exited).code).toBe(0);
  }, 60_000);

  it('workers: 2: the primary sees the change and every worker serves the renewed certificate', async () => {
    const { pki, gw, port } = await start({ workers: 2, reload: { checkFilesSeconds: 1 } });
    const alice = tlsOptions(pki, 'alice');
    await gw.waitFor((l) => l.msg === 'cluster started', "'cluster started'", 60_000);
    const after = await renew(pki);
    await until(
      async () => {
        const v = await visit(port, alice, '/cluster-w');
        return v.fingerprint === after ? v : undefined;
      },
      'the renewed certificate',
      20_000,
    );
    await until(
      () =>
        Promise.resolve(
          new Set(gw.lines.filter((l) => l.msg === 'config reloaded').map((l) => l.worker)).size === 2
            ? true
            : undefined,
        ),
      'both workers to reload',
    );
    // Round-robin hands consecutive connections to both workers: all of them serve the renewed certificate.
    for (let i = 0; i < 6; i++) expect((await visit(port, alice, `/cluster-${i}`)).fingerprint).toBe(after);
    expect(
      gw.lines.some((l) => l.msg === 'SIGHUP: forwarded to every worker' && l.trigger === 'files changed'),
    ).toBe(true);
    gw.child.kill('SIGTERM');
    expect((await gw.exited).code).toBe(0);
  }, 90_000);
});
