import { execFileSync } from 'node:child_process';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { cp, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  CERTS_DEFAULTS,
  CLUSTER_FILES,
  CertsError,
  certsInit,
  certsIssue,
  certsRefreshCrl,
  certsRevoke,
  ensureDevCerts,
  ensureDevSigningKey,
  type CertsErrorCode,
} from '../../../src/commands/certs.js';
import {
  createCa,
  createCrl,
  issueClientCert,
  parseCrl,
  verifyCrlSignature,
} from '../../../src/certs/pki.js';
import { tryClientCertificate } from '../../helpers/pki.js';

const DAY_MS = 24 * 60 * 60 * 1000;
const dirs: string[] = [];

async function freshDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'portcullis-certs-'));
  dirs.push(dir);
  return dir;
}

let template: Promise<string> | undefined;

/**
 * A fresh copy of one `certs init --client alice --client bob` directory: keygen is the slow part, so the
 * tests that only need *a* PKI share one and mutate their own copy.
 */
async function initializedDir(): Promise<string> {
  template ??= freshDir().then(async (dir) => {
    await certsInit({ out: dir, clients: ['alice', 'bob'] });
    return dir;
  });
  const out = await freshDir();
  await cp(await template, out, { recursive: true });
  return out;
}

afterAll(async () => {
  await Promise.all(dirs.map((dir) => rm(dir, { recursive: true, force: true })));
});

async function modeOf(path: string): Promise<number> {
  return (await stat(path)).mode & 0o777;
}

async function read(dir: string, name: string): Promise<string> {
  return readFile(join(dir, name), 'utf8');
}

async function x509(dir: string, name: string): Promise<X509Certificate> {
  return new X509Certificate(await read(dir, name));
}

/** Runs `action` and returns the CertsError it threw (failing the test if it did not throw one). */
async function refusal(action: () => Promise<unknown>): Promise<CertsError> {
  try {
    await action();
  } catch (error) {
    expect(error).toBeInstanceOf(CertsError);
    return error as CertsError;
  }
  throw new Error('expected a CertsError, nothing was thrown');
}

async function expectRefusal(
  action: () => Promise<unknown>,
  code: CertsErrorCode,
  message: RegExp,
): Promise<void> {
  const error = await refusal(action);
  expect(error.code).toBe(code);
  expect(error.message).toMatch(message);
}

/** Server + client files of a dev PKI in `dir`, as the TLS helper wants them. */
async function tlsFiles(dir: string, client: string): Promise<Parameters<typeof tryClientCertificate>[0]> {
  return {
    caPem: await read(dir, 'ca.pem'),
    crlPem: await read(dir, 'ca.crl'),
    server: { certPem: await read(dir, 'server.pem'), keyPem: await read(dir, 'server-key.pem') },
    client: {
      certPem: await read(dir, `client-${client}.pem`),
      keyPem: await read(dir, `client-${client}-key.pem`),
    },
  };
}

describe('certsInit', () => {
  it('writes the documented files into a new 0700 directory: keys 0600, the rest 0644', async () => {
    const out = join(await freshDir(), 'nested', 'certs');
    const { written } = await certsInit({ out });
    const expected = [
      'ca-key.pem',
      'ca.crl',
      'ca.pem',
      'client-alice-key.pem',
      'client-alice.pem',
      'jwks.json',
      'jwt-signing-key.pem',
      'server-key.pem',
      'server.pem',
    ];
    expect((await readdir(out)).sort()).toEqual(expected);
    expect(written.map((path) => path.slice(out.length + 1)).sort()).toEqual(expected);
    expect(written.at(-1)).toBe(join(out, 'ca.pem'));
    expect(await modeOf(out)).toBe(0o700);
    for (const name of expected) {
      expect([name, await modeOf(join(out, name))]).toEqual([
        name,
        name.endsWith('-key.pem') ? 0o600 : 0o644,
      ]);
    }
  });

  it.each([
    ['000', 0o000],
    ['077', 0o077],
  ])('sets the modes explicitly under umask %s', async (_label, umask) => {
    const out = join(await freshDir(), 'pki');
    const previous = process.umask(umask);
    try {
      await certsInit({ out });
    } finally {
      process.umask(previous);
    }
    expect(await modeOf(out)).toBe(0o700);
    expect(await modeOf(join(out, 'ca-key.pem'))).toBe(0o600);
    expect(await modeOf(join(out, 'client-alice-key.pem'))).toBe(0o600);
    expect(await modeOf(join(out, 'ca.pem'))).toBe(0o644);
    expect(await modeOf(join(out, 'server.pem'))).toBe(0o644);
  });

  it('mints a CA, a loopback server cert plus extra hosts, named clients and an empty CRL', async () => {
    const out = await freshDir();
    const now = new Date('2030-01-01T00:00:00.000Z');
    await certsInit({
      out,
      hosts: ['gw.example.test', 'LOCALHOST', '10.1.2.3', '127.0.0.1'],
      clients: ['bob', 'carol.ops'],
      days: 10,
      now,
    });
    const ca = await x509(out, 'ca.pem');
    expect(ca.ca).toBe(true);
    expect(ca.subject).toBe(`CN=${CERTS_DEFAULTS.caCommonName}`);
    expect(ca.checkPrivateKey(createPrivateKey(await read(out, 'ca-key.pem')))).toBe(true);
    expect(new Date(ca.validTo).getTime()).toBe(now.getTime() + CERTS_DEFAULTS.caDays * DAY_MS);

    const server = await x509(out, 'server.pem');
    expect(server.subjectAltName).toBe(
      'DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1, DNS:gw.example.test, IP Address:10.1.2.3',
    );
    expect(server.keyUsage).toEqual(['1.3.6.1.5.5.7.3.1']);
    expect(server.checkIssued(ca) && server.verify(ca.publicKey)).toBe(true);
    expect(server.checkPrivateKey(createPrivateKey(await read(out, 'server-key.pem')))).toBe(true);
    expect(new Date(server.validTo).getTime()).toBe(now.getTime() + CERTS_DEFAULTS.serverDays * DAY_MS);

    for (const name of ['bob', 'carol.ops']) {
      const client = await x509(out, `client-${name}.pem`);
      expect(client.subject).toBe(`CN=${name}\nOU=dev`);
      expect(client.subjectAltName).toBe(`URI:spiffe://portcullis.dev/client/${name}`);
      expect(client.keyUsage).toEqual(['1.3.6.1.5.5.7.3.2']);
      expect(client.checkIssued(ca) && client.verify(ca.publicKey)).toBe(true);
      expect(client.checkPrivateKey(createPrivateKey(await read(out, `client-${name}-key.pem`)))).toBe(true);
      expect(new Date(client.validTo).getTime()).toBe(now.getTime() + 10 * DAY_MS);
    }
    expect(await readdir(out)).not.toContain('client-alice.pem');

    const crl = await read(out, 'ca.crl');
    expect(verifyCrlSignature(crl, ca.toString())).toBe(true);
    expect(parseCrl(crl)).toEqual({
      revoked: [],
      crlNumber: 1,
      thisUpdate: now,
      nextUpdate: new Date(now.getTime() + CERTS_DEFAULTS.crlDays * DAY_MS),
    });
  });

  it('produces files a mutual-TLS server accepts as they are', async () => {
    const out = await initializedDir();
    const outcome = await tryClientCertificate(await tlsFiles(out, 'alice'));
    expect(outcome).toEqual({ accepted: true, authorizationError: undefined, received: 'hello' });
  });

  it('refuses to overwrite, naming the first existing file and --force, and leaves everything as it was', async () => {
    const out = await initializedDir();
    const before = await read(out, 'ca.pem');
    await expectRefusal(
      () => certsInit({ out }),
      'ERR_CERTS_EXISTS',
      new RegExp(`^${join(out, 'ca.pem').replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} already exists.*--force`),
    );
    expect(await read(out, 'ca.pem')).toBe(before);
  });

  it('refuses when any single target exists, and writes nothing', async () => {
    const out = await freshDir();
    await writeFile(join(out, 'client-alice-key.pem'), 'mine', { mode: 0o644 });
    await expectRefusal(() => certsInit({ out }), 'ERR_CERTS_EXISTS', /client-alice-key\.pem already exists/);
    expect(await readdir(out)).toEqual(['client-alice-key.pem']);
    expect(await read(out, 'client-alice-key.pem')).toBe('mine');
  });

  it('overwrites with force: a new CA, and a pre-existing 0644 key file ends up 0600', async () => {
    const out = await freshDir();
    await writeFile(join(out, 'ca-key.pem'), 'old', { mode: 0o644 });
    await writeFile(join(out, 'ca.pem'), 'old', { mode: 0o644 });
    await certsInit({ out, force: true });
    expect(await modeOf(join(out, 'ca-key.pem'))).toBe(0o600);
    const ca = await x509(out, 'ca.pem');
    expect(ca.checkPrivateKey(createPrivateKey(await read(out, 'ca-key.pem')))).toBe(true);
    expect((await readdir(out)).filter((name) => name.endsWith('.tmp'))).toEqual([]);
  });

  it.each(['', '../evil', '.hidden', 'a/b', 'x'.repeat(65), 'with space', '-dash'])(
    'refuses client name %j before writing anything',
    async (name) => {
      const out = join(await freshDir(), 'never');
      await expectRefusal(
        () => certsInit({ out, clients: [name] }),
        'ERR_CERTS_INVALID_NAME',
        /invalid client name/,
      );
      await expect(stat(out)).rejects.toMatchObject({ code: 'ENOENT' });
    },
  );

  it.each([
    ['days 0', { days: 0 }, /--days/],
    ['fractional days', { days: 2.5 }, /--days/],
    ['a bad host', { hosts: ['not a host'] }, /--hosts/],
  ])('refuses %s before writing anything', async (_label, extra, message) => {
    const out = join(await freshDir(), 'never');
    await expectRefusal(() => certsInit({ out, ...extra }), 'ERR_CERTS_INVALID_OPTION', message);
    await expect(stat(out)).rejects.toMatchObject({ code: 'ENOENT' });
  });
});

const SERVER_AUTH = '1.3.6.1.5.5.7.3.1';
const CLIENT_AUTH = '1.3.6.1.5.5.7.3.2';

describe('certsInit: ou and the cluster side (--ou, --cluster)', () => {
  it('writes the cluster CA and the scheduler, worker and gateway-client certificates beside the PKI; clients get the OU', async () => {
    const out = await freshDir();
    const { written } = await certsInit({ out, clients: ['alice'], ou: 'data-science', cluster: true });
    const cluster = Object.values(CLUSTER_FILES);
    expect(cluster.sort()).toEqual(
      [
        'cluster-ca-key.pem',
        'cluster-ca.pem',
        'gateway-client-key.pem',
        'gateway-client.pem',
        'scheduler-key.pem',
        'scheduler.pem',
        'worker-key.pem',
        'worker.pem',
      ].sort(),
    );
    const names = await readdir(out);
    for (const f of cluster) {
      expect(names).toContain(f);
      expect(written).toContain(join(out, f));
      expect([f, await modeOf(join(out, f))]).toEqual([f, f.endsWith('-key.pem') ? 0o600 : 0o644]);
    }
    expect(written.at(-1)).toBe(join(out, 'ca.pem'));
    expect((await x509(out, 'client-alice.pem')).subject).toBe('CN=alice\nOU=data-science');

    const usersCa = await x509(out, 'ca.pem');
    const clusterCa = await x509(out, 'cluster-ca.pem');
    expect(clusterCa.ca).toBe(true);
    expect(clusterCa.subject).toBe(`CN=${CERTS_DEFAULTS.clusterCaCommonName}`);
    expect(clusterCa.publicKey.export({ format: 'der', type: 'spki' })).not.toEqual(
      usersCa.publicKey.export({ format: 'der', type: 'spki' }),
    );
    for (const [name, usages] of [
      ['scheduler', [SERVER_AUTH, CLIENT_AUTH]],
      ['worker', [SERVER_AUTH, CLIENT_AUTH]],
      ['gateway-client', [CLIENT_AUTH]],
    ] as const) {
      const cert = await x509(out, `${name}.pem`);
      expect([name, [...(cert.keyUsage ?? [])].sort()]).toEqual([name, [...usages].sort()]);
      expect(cert.checkIssued(clusterCa) && cert.verify(clusterCa.publicKey)).toBe(true);
      expect(cert.verify(usersCa.publicKey)).toBe(false);
      expect(cert.checkPrivateKey(createPrivateKey(await read(out, `${name}-key.pem`)))).toBe(true);
    }
    expect((await x509(out, 'scheduler.pem')).subjectAltName).toBe(
      'DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1',
    );
  });

  it('the cluster files work over real TLS: the gateway and a worker reach the scheduler; a user certificate does not', async () => {
    const out = await freshDir();
    await certsInit({ out, cluster: true });
    const pair = async (name: string): Promise<{ certPem: string; keyPem: string }> => ({
      certPem: await read(out, `${name}.pem`),
      keyPem: await read(out, `${name}-key.pem`),
    });
    const caPem = await read(out, 'cluster-ca.pem');
    const scheduler = await pair('scheduler');
    for (const client of ['gateway-client', 'worker']) {
      expect([client, await tryClientCertificate({ caPem, server: scheduler, client: await pair(client) })]).toEqual([
        client,
        { accepted: true, authorizationError: undefined, received: 'hello' },
      ]);
    }
    const user = await tryClientCertificate({ caPem, server: scheduler, client: await pair('client-alice') });
    expect(user.accepted).toBe(false);
  });

  it('refuses to overwrite a cluster file without force (and only with --cluster); an OU that would change an ACL match is refused', async () => {
    const out = await freshDir();
    await writeFile(join(out, 'scheduler.pem'), 'mine');
    await expectRefusal(() => certsInit({ out, cluster: true }), 'ERR_CERTS_EXISTS', /scheduler\.pem already exists/);
    expect(await readdir(out)).toEqual(['scheduler.pem']);
    await certsInit({ out });
    expect(await read(out, 'scheduler.pem')).toBe('mine');
    const other = await freshDir();
    await expectRefusal(() => certsInit({ out: other, ou: 'a,OU=admins' }), 'ERR_CERTS_INVALID_OPTION', /invalid --ou/);
    expect(await readdir(other)).toEqual([]);
  });

  it('certsIssue takes the OU too', async () => {
    const out = await initializedDir();
    await certsIssue({ out, name: 'dave', ou: 'data-science' });
    expect((await x509(out, 'client-dave.pem')).subject).toBe('CN=dave\nOU=data-science');
  });
});

describe('certsIssue', () => {
  it('signs a new client with the CA already in the directory, leaving the CA untouched', async () => {
    const out = await initializedDir();
    const caBefore = await read(out, 'ca.pem');
    const alice = await x509(out, 'client-alice.pem');

    const result = await certsIssue({ out, name: 'dave', days: 7 });
    expect(result.written).toEqual([join(out, 'client-dave-key.pem'), join(out, 'client-dave.pem')]);
    const ca = await x509(out, 'ca.pem');
    const dave = await x509(out, 'client-dave.pem');
    expect(await read(out, 'ca.pem')).toBe(caBefore);
    expect(dave.checkIssued(ca) && dave.verify(ca.publicKey)).toBe(true);
    expect(dave.issuer).toBe(alice.issuer);
    expect(dave.subject).toBe('CN=dave\nOU=dev');
    expect(dave.serialNumber).toBe(result.serialHex);
    expect(dave.serialNumber).not.toBe(alice.serialNumber);
    expect(dave.checkPrivateKey(createPrivateKey(await read(out, 'client-dave-key.pem')))).toBe(true);
    expect(await modeOf(join(out, 'client-dave-key.pem'))).toBe(0o600);
    expect(await modeOf(join(out, 'client-dave.pem'))).toBe(0o644);

    const outcome = await tryClientCertificate(await tlsFiles(out, 'dave'));
    expect(outcome.accepted).toBe(true);
  });

  it('refuses to overwrite an existing client without force, and replaces it with force', async () => {
    const out = await initializedDir();
    const before = await read(out, 'client-alice.pem');
    await expectRefusal(
      () => certsIssue({ out, name: 'alice' }),
      'ERR_CERTS_EXISTS',
      /client-alice\.pem already exists.*--force/,
    );
    expect(await read(out, 'client-alice.pem')).toBe(before);

    const { serialHex } = await certsIssue({ out, name: 'alice', force: true });
    expect((await x509(out, 'client-alice.pem')).serialNumber).toBe(serialHex);
    expect(await read(out, 'client-alice.pem')).not.toBe(before);
  });

  it('refuses without a CA, with a CA key that is not the CA cert key, with an expired CA, and bad names', async () => {
    const empty = await freshDir();
    await expectRefusal(
      () => certsIssue({ out: empty, name: 'x' }),
      'ERR_CERTS_MISSING',
      /ca\.pem not found.*certs init/,
    );

    const out = await initializedDir();
    await expectRefusal(
      () => certsIssue({ out, name: 'x', now: new Date(Date.now() + (CERTS_DEFAULTS.caDays + 1) * DAY_MS) }),
      'ERR_CERTS_INVALID_OPTION',
      /expired/,
    );
    await expectRefusal(
      () => certsIssue({ out, name: '../x' }),
      'ERR_CERTS_INVALID_NAME',
      /invalid client name/,
    );
    await writeFile(join(out, 'ca-key.pem'), await read(out, 'client-alice-key.pem'));
    await expectRefusal(
      () => certsIssue({ out, name: 'x' }),
      'ERR_CERTS_MISMATCH',
      /ca-key\.pem is not the key of/,
    );
    expect(await readdir(out)).not.toContain('client-x.pem');
  });
});

describe('certsRevoke', () => {
  it('adds the serial to ca.crl, keeps earlier entries, bumps the number, and TLS then rejects that client', async () => {
    const out = await initializedDir();
    const aliceSerial = (await x509(out, 'client-alice.pem')).serialNumber;
    const bobSerial = (await x509(out, 'client-bob.pem')).serialNumber;

    // Not in the future: OpenSSL refuses a CRL whose thisUpdate is ahead of its clock (CRL_NOT_YET_VALID).
    const revokedAt = new Date(Math.floor(Date.now() / 1000) * 1000 - 60_000);
    const first = await certsRevoke({ out, name: 'alice', now: revokedAt });
    expect(first).toEqual({
      written: [join(out, 'ca.crl')],
      serialHex: aliceSerial,
      alreadyRevoked: false,
      crlNumber: 2,
    });
    const crl1 = parseCrl(await read(out, 'ca.crl'));
    expect(crl1.crlNumber).toBe(2);
    expect(crl1.revoked).toEqual([{ serialHex: aliceSerial, revokedAt }]);
    expect(verifyCrlSignature(await read(out, 'ca.crl'), await read(out, 'ca.pem'))).toBe(true);

    expect(await tryClientCertificate(await tlsFiles(out, 'alice'))).toEqual({
      accepted: false,
      authorizationError: 'CERT_REVOKED',
      received: '',
    });
    expect((await tryClientCertificate(await tlsFiles(out, 'bob'))).accepted).toBe(true);

    const second = await certsRevoke({ out, name: 'bob' });
    expect(second.crlNumber).toBe(3);
    const crl2 = parseCrl(await read(out, 'ca.crl'));
    expect(crl2.revoked.map((entry) => entry.serialHex)).toEqual([aliceSerial, bobSerial]);
    expect(crl2.revoked[0]?.revokedAt).toEqual(revokedAt);
    expect((await tryClientCertificate(await tlsFiles(out, 'bob'))).authorizationError).toBe('CERT_REVOKED');
  });

  it('is idempotent: revoking twice leaves ca.crl byte for byte as it was', async () => {
    const out = await initializedDir();
    await certsRevoke({ out, name: 'alice' });
    const before = await read(out, 'ca.crl');
    const again = await certsRevoke({ out, name: 'alice' });
    expect(again.alreadyRevoked).toBe(true);
    expect(again.written).toEqual([]);
    expect(again.crlNumber).toBe(2);
    expect(await read(out, 'ca.crl')).toBe(before);
    expect(parseCrl(before).revoked).toHaveLength(1);
  });

  it('starts a new list at cRLNumber 1 when ca.crl is missing', async () => {
    const out = await initializedDir();
    await rm(join(out, 'ca.crl'));
    const result = await certsRevoke({ out, name: 'alice' });
    expect(result.crlNumber).toBe(1);
    expect(parseCrl(await read(out, 'ca.crl')).revoked.map((e) => e.serialHex)).toEqual([result.serialHex]);
  });

  it('refuses an unknown client, a certificate from another CA, and a CRL signed by another CA', async () => {
    const out = await initializedDir();
    await expectRefusal(
      () => certsRevoke({ out, name: 'nobody' }),
      'ERR_CERTS_MISSING',
      /client-nobody\.pem not found/,
    );

    const stranger = createCa({ commonName: CERTS_DEFAULTS.caCommonName, days: 1 });
    const foreign = issueClientCert(stranger, { commonName: 'eve', days: 1 });
    await writeFile(join(out, 'client-eve.pem'), foreign.certPem);
    await expectRefusal(() => certsRevoke({ out, name: 'eve' }), 'ERR_CERTS_MISMATCH', /was not issued by/);

    const crlBefore = createCrl(stranger, { revoked: [], crlNumber: 9, days: 1 });
    await writeFile(join(out, 'ca.crl'), crlBefore);
    await expectRefusal(
      () => certsRevoke({ out, name: 'alice' }),
      'ERR_CERTS_MISMATCH',
      /ca\.crl is not a CRL signed by/,
    );
    expect(await read(out, 'ca.crl')).toBe(crlBefore);
  });
});

describe('certsRefreshCrl', () => {
  it('re-signs the same entries with a new number and a fresh nextUpdate', async () => {
    const out = await initializedDir();
    const { serialHex } = await certsRevoke({ out, name: 'alice' });
    const now = new Date(Date.now() + 20 * DAY_MS);
    now.setUTCMilliseconds(0);
    const result = await certsRefreshCrl({ out, now, days: 3 });
    expect(result.crlNumber).toBe(3);
    expect(result.nextUpdate).toEqual(new Date(now.getTime() + 3 * DAY_MS));
    const crl = parseCrl(await read(out, 'ca.crl'));
    expect(crl.revoked.map((e) => e.serialHex)).toEqual([serialHex]);
    expect(crl.thisUpdate).toEqual(now);
    expect(crl.crlNumber).toBe(3);
  });
});

describe('ensureDevCerts', () => {
  it('creates the PKI once, then leaves it alone', async () => {
    const out = join(await freshDir(), 'certs-dev');
    expect(await ensureDevCerts(out)).toBe(true);
    const ca = await read(out, 'ca.pem');
    expect(await readdir(out)).toContain('client-alice.pem');
    expect(await ensureDevCerts(out)).toBe(false);
    expect(await read(out, 'ca.pem')).toBe(ca);
  });

  it('adds the dev JWT signing key and JWKS to a set made before they existed, then leaves them alone', async () => {
    const out = join(await freshDir(), 'certs-dev');
    await certsInit({ out });
    await rm(join(out, 'jwt-signing-key.pem'));
    await rm(join(out, 'jwks.json'));
    const ca = await read(out, 'ca.pem');
    expect(await ensureDevCerts(out)).toBe(true);
    expect(await read(out, 'ca.pem')).toBe(ca);
    expect(await modeOf(join(out, 'jwt-signing-key.pem'))).toBe(0o600);
    expect(await modeOf(join(out, 'jwks.json'))).toBe(0o644);
    const key = await read(out, 'jwt-signing-key.pem');
    expect(await ensureDevCerts(out)).toBe(false);
    expect(await read(out, 'jwt-signing-key.pem')).toBe(key);
  });

  it('rebuilds a missing jwks.json from the existing signing key (same kid), keeping the key', async () => {
    const out = join(await freshDir(), 'certs-dev');
    await certsInit({ out });
    const jwks = await read(out, 'jwks.json');
    const key = await read(out, 'jwt-signing-key.pem');
    await rm(join(out, 'jwks.json'));
    expect(await ensureDevSigningKey(out)).toEqual({ written: [join(out, 'jwks.json')] });
    expect(JSON.parse(await read(out, 'jwks.json'))).toEqual(JSON.parse(jwks));
    expect(await read(out, 'jwt-signing-key.pem')).toBe(key);
  });

  it('refuses a signing key that is not ES256', async () => {
    const out = await freshDir();
    await writeFile(join(out, 'jwt-signing-key.pem'), 'not a key');
    await expectRefusal(() => ensureDevSigningKey(out), 'ERR_CERTS_MISMATCH', /jwt-signing-key\.pem is not an ES256/);
  });

  it('refuses to replace a broken set (ca.pem gone, other files present)', async () => {
    const out = await freshDir();
    await writeFile(join(out, 'server.pem'), 'x');
    await expectRefusal(() => ensureDevCerts(out), 'ERR_CERTS_EXISTS', /server\.pem already exists/);
  });
});

describe('certsIssue --p12', () => {
  const openssl = (args: string[]): string => execFileSync('openssl', args, { encoding: 'utf8' });

  it('writes a PKCS#12 bundle (0600) that openssl opens with the generated passphrase', async () => {
    const out = await initializedDir();
    const result = await certsIssue({ out, name: 'erin', p12: {} });
    const p12 = join(out, 'client-erin.p12');
    const pass = join(out, 'client-erin.p12.pass');
    expect(result.written).toEqual([join(out, 'client-erin-key.pem'), join(out, 'client-erin.pem'), pass, p12]);
    expect(await modeOf(p12)).toBe(0o600);
    expect(await modeOf(pass)).toBe(0o600);
    expect((await read(out, 'client-erin.p12.pass')).trim()).toMatch(/^[A-Za-z0-9_-]{32}$/);
    const info = openssl(['pkcs12', '-in', p12, '-passin', `file:${pass}`, '-nodes']);
    // The certificate, its key and the CA, under the client's name.
    expect(info).toContain('friendlyName: erin');
    expect(info).toMatch(/subject=CN\s*=\s*erin/);
    expect(info).toContain('-----BEGIN PRIVATE KEY-----');
    expect(info.match(/-----BEGIN CERTIFICATE-----/g)).toHaveLength(2);
    const key = /-----BEGIN PRIVATE KEY-----[\s\S]+?-----END PRIVATE KEY-----/.exec(info)?.[0] ?? '';
    expect((await x509(out, 'client-erin.pem')).checkPrivateKey(createPrivateKey(key))).toBe(true);
    // A wrong passphrase opens nothing.
    expect(() => execFileSync('openssl', ['pkcs12', '-in', p12, '-passin', 'pass:wrong', '-nodes'], { stdio: 'pipe' })).toThrow();
  });

  it('uses a given passphrase (no .pass file) and refuses an empty one', async () => {
    const out = await initializedDir();
    const result = await certsIssue({ out, name: 'frank', p12: { passphrase: 'correct horse' } });
    expect(result.written).toEqual([join(out, 'client-frank-key.pem'), join(out, 'client-frank.pem'), join(out, 'client-frank.p12')]);
    expect(openssl(['pkcs12', '-in', join(out, 'client-frank.p12'), '-passin', 'pass:correct horse', '-nokeys'])).toMatch(
      /subject=CN\s*=\s*frank/,
    );
    await expectRefusal(() => certsIssue({ out, name: 'gina', p12: { passphrase: '' } }), 'ERR_CERTS_INVALID_OPTION', /passphrase/);
  });
});
