/**
 * A PKI minted once per test process for integration tests, built on src/certs/pki.ts.
 *
 * Identities (what ACL tests can match on):
 * - `alice`: CN=alice, OU=data-science, URI spiffe://portcullis.test/client/alice
 * - `bob`: CN=bob, OU=ops, URI spiffe://portcullis.test/client/bob
 * - `expired`: CN=expired, valid from 2 days ago until 1 day ago
 * - `notYetValid`: CN=not-yet-valid, valid from tomorrow
 * - `revoked`: CN=revoked, listed in `crlPem`
 * - `otherCaAlice`: CN=alice, OU=data-science, same URI as alice, signed by `otherCa` — whose subject
 *   (CN=Portcullis Test CA) equals `ca`'s, so only the signature tells them apart.
 *
 * The server certificate covers localhost, 127.0.0.1 and ::1.
 *
 * {@link mintMisusedClients} mints, on demand, certificates that chain to a CA but are not meant to be TLS
 * clients (a CA, a CRL-signing key, a server certificate): src/certs/pki.ts never makes those on purpose.
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { chmod, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { connect as connectTls, createServer as createTlsServer, type TLSSocket } from 'node:tls';
import forge from 'node-forge';
import {
  createCa,
  createCrl,
  issueClientCert,
  issueServerCert,
  type CertAndKey,
} from '../../src/certs/pki.js';

const DAY_MS = 24 * 60 * 60 * 1000;
/** Same CN for both CAs, so tests prove chains are checked by key, not by name. */
const TEST_CA_CN = 'Portcullis Test CA';
const URI_PREFIX = 'spiffe://portcullis.test/client/';

export type TestClientName = 'alice' | 'bob' | 'expired' | 'notYetValid' | 'revoked' | 'otherCaAlice';

export interface TestPki {
  ca: CertAndKey;
  /** A second CA with the same subject as `ca` and a different key. */
  otherCa: CertAndKey;
  server: CertAndKey;
  clients: Record<TestClientName, CertAndKey>;
  /** Signed by `ca`, lists `clients.revoked`, nextUpdate in 30 days. */
  crlPem: string;
  /** Signed by `ca`, lists nothing. */
  emptyCrlPem: string;
  /** Signed by `ca`, lists nothing, nextUpdate yesterday: OpenSSL rejects every client (CRL_HAS_EXPIRED). */
  staleCrlPem: string;
}

export interface TestPkiPaths {
  dir: string;
  /** ca.pem */
  ca: string;
  /** other-ca.pem */
  otherCa: string;
  server: { cert: string; key: string };
  /** client-<k>.pem and client-<k>-key.pem */
  clients: Record<TestClientName, { cert: string; key: string }>;
  /** ca.crl (= crlPem) */
  crl: string;
  /** ca-empty.crl */
  emptyCrl: string;
  /** ca-stale.crl */
  staleCrl: string;
}

let memo: TestPki | undefined;

/** The per-process test PKI: minted on first call (about a second of RSA keygen), then shared. */
export function mintTestPki(): TestPki {
  memo ??= mint(new Date());
  return memo;
}

function mint(now: Date): TestPki {
  const days = 30;
  const ca = createCa({ commonName: TEST_CA_CN, days: 365, now });
  const otherCa = createCa({ commonName: TEST_CA_CN, days: 365, now });
  const server = issueServerCert(ca, { hosts: ['localhost', '127.0.0.1', '::1'], days, now });
  const person = (signer: CertAndKey, cn: string, ou: string): CertAndKey =>
    issueClientCert(signer, {
      commonName: cn,
      organizationalUnit: ou,
      uris: [`${URI_PREFIX}${cn}`],
      days,
      now,
    });
  const clients: Record<TestClientName, CertAndKey> = {
    alice: person(ca, 'alice', 'data-science'),
    bob: person(ca, 'bob', 'ops'),
    expired: issueClientCert(ca, {
      commonName: 'expired',
      notBefore: new Date(now.getTime() - 2 * DAY_MS),
      notAfter: new Date(now.getTime() - DAY_MS),
    }),
    notYetValid: issueClientCert(ca, {
      commonName: 'not-yet-valid',
      notBefore: new Date(now.getTime() + DAY_MS),
      notAfter: new Date(now.getTime() + 2 * DAY_MS),
    }),
    revoked: issueClientCert(ca, { commonName: 'revoked', days, now }),
    otherCaAlice: person(otherCa, 'alice', 'data-science'),
  };
  const revokedAt = new Date(now.getTime() - 60_000);
  return {
    ca,
    otherCa,
    server,
    clients,
    crlPem: createCrl(ca, {
      revoked: [{ serialHex: clients.revoked.serialHex, revokedAt }],
      crlNumber: 2,
      thisUpdate: now,
      days,
    }),
    emptyCrlPem: createCrl(ca, { revoked: [], crlNumber: 1, thisUpdate: now, days }),
    staleCrlPem: createCrl(ca, {
      revoked: [],
      crlNumber: 1,
      thisUpdate: new Date(now.getTime() - 2 * DAY_MS),
      nextUpdate: new Date(now.getTime() - DAY_MS),
    }),
  };
}

/**
 * Writes `pki` into `dir` (created when missing) and returns the paths. Keys get mode 0600, like the
 * real `certs init`, so a gateway that checks key permissions accepts them.
 */
export async function writePki(dir: string, pki: TestPki = mintTestPki()): Promise<TestPkiPaths> {
  await mkdir(dir, { recursive: true });
  const put = async (name: string, data: string, mode = 0o644): Promise<string> => {
    const path = join(dir, name);
    await writeFile(path, data, { mode });
    await chmod(path, mode);
    return path;
  };
  const names = Object.keys(pki.clients) as TestClientName[];
  const clientPaths = {} as Record<TestClientName, { cert: string; key: string }>;
  for (const name of names) {
    const pair = pki.clients[name];
    clientPaths[name] = {
      cert: await put(`client-${name}.pem`, pair.certPem),
      key: await put(`client-${name}-key.pem`, pair.keyPem, 0o600),
    };
  }
  return {
    dir,
    ca: await put('ca.pem', pki.ca.certPem),
    otherCa: await put('other-ca.pem', pki.otherCa.certPem),
    server: {
      cert: await put('server.pem', pki.server.certPem),
      key: await put('server-key.pem', pki.server.keyPem, 0o600),
    },
    clients: clientPaths,
    crl: await put('ca.crl', pki.crlPem),
    emptyCrl: await put('ca-empty.crl', pki.emptyCrlPem),
    staleCrl: await put('ca-stale.crl', pki.staleCrlPem),
  };
}

/** What {@link tryClientCertificate} saw on both ends of one connection. */
export interface HandshakeOutcome {
  /** The server accepted the client certificate and emitted `secureConnection`. */
  accepted: boolean;
  /**
   * OpenSSL's verify code for the client certificate when the server refused it (`CERT_REVOKED`,
   * `CRL_HAS_EXPIRED`, `CERT_HAS_EXPIRED`, ...). Node verifies after the handshake and destroys the socket
   * without a TLS alert, so the `tlsClientError` itself only says ECONNRESET: the reason is on the socket.
   */
  authorizationError: string | undefined;
  /** What the client read before the connection closed (the server writes "hello" once it accepts). */
  received: string;
}

/**
 * Starts a mutual-TLS server on 127.0.0.1:0 (`requestCert` + `rejectUnauthorized`, the given CA and
 * optional CRL), connects once with `client`, and reports what happened. Always closes the server.
 */
export async function tryClientCertificate(opts: {
  caPem: string;
  crlPem?: string;
  server: Pick<CertAndKey, 'certPem' | 'keyPem'>;
  client: Pick<CertAndKey, 'certPem' | 'keyPem'>;
}): Promise<HandshakeOutcome> {
  const server = createTlsServer(
    {
      key: opts.server.keyPem,
      cert: opts.server.certPem,
      ca: opts.caPem,
      ...(opts.crlPem === undefined ? {} : { crl: opts.crlPem }),
      requestCert: true,
      rejectUnauthorized: true,
    },
    (socket) => socket.end('hello'),
  );
  const serverSide = new Promise<Pick<HandshakeOutcome, 'accepted' | 'authorizationError'>>((resolve) => {
    server.once('secureConnection', () => resolve({ accepted: true, authorizationError: undefined }));
    server.once('tlsClientError', (error: NodeJS.ErrnoException, socket: TLSSocket) => {
      const reason: unknown = socket.authorizationError;
      resolve({ accepted: false, authorizationError: typeof reason === 'string' ? reason : error.code });
    });
  });
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', resolve);
    });
    const address = server.address();
    if (address === null || typeof address === 'string') throw new Error('server has no TCP address');
    const received = await new Promise<string>((resolve) => {
      let data = '';
      const socket = connectTls({
        host: '127.0.0.1',
        port: address.port,
        servername: 'localhost',
        ca: opts.caPem,
        cert: opts.client.certPem,
        key: opts.client.keyPem,
      });
      socket.setEncoding('utf8');
      socket.setTimeout(5_000, () => socket.destroy());
      socket.on('data', (chunk: string) => (data += chunk));
      socket.on('error', () => undefined); // a refused client sees a reset or an alert: the outcome is `received`
      socket.on('close', () => resolve(data));
    });
    const outcome = await withTimeout(
      serverSide,
      5_000,
      'the server reported neither acceptance nor an error',
    );
    return { ...outcome, received };
  } finally {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

async function withTimeout<T>(promise: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(message)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Certificates that chain to the client CA but must never be a client identity (each is what its name says;
 * every other field is a normal client's: CN, validity of 30 days from an hour ago):
 * - `caTrue`: basicConstraints CA:TRUE with keyUsage digitalSignature + keyCertSign + cRLSign and EKU
 *   clientAuth: a sub-CA that OpenSSL accepts as a TLS client;
 * - `caTrueBare`: basicConstraints CA:TRUE and no keyUsage or EKU at all (OpenSSL accepts it too);
 * - `certSignOnly`: not a CA, keyUsage keyCertSign + cRLSign only, no EKU;
 * - `serverAuthOnly`: a server certificate (EKU serverAuth, keyUsage digitalSignature);
 * - `codeSigningOnly`: EKU codeSigning, no keyUsage.
 */
export type MisusedClientName = 'caTrue' | 'caTrueBare' | 'certSignOnly' | 'serverAuthOnly' | 'codeSigningOnly';

/** Mints the {@link MisusedClientName} certificates, signed by `ca` (RSA-2048 keys, a second or so in all). */
export function mintMisusedClients(ca: CertAndKey): Record<MisusedClientName, CertAndKey> {
  const notClient = { name: 'basicConstraints', cA: false };
  return {
    caTrue: mintLeafWithExtensions(ca, 'sub-ca', [
      { name: 'basicConstraints', cA: true, critical: true },
      { name: 'keyUsage', critical: true, digitalSignature: true, keyCertSign: true, cRLSign: true },
      { name: 'extKeyUsage', clientAuth: true },
    ]),
    caTrueBare: mintLeafWithExtensions(ca, 'bare-ca', [{ name: 'basicConstraints', cA: true, critical: true }]),
    certSignOnly: mintLeafWithExtensions(ca, 'cert-signer', [
      notClient,
      { name: 'keyUsage', critical: true, keyCertSign: true, cRLSign: true },
    ]),
    serverAuthOnly: mintLeafWithExtensions(ca, 'a-server', [
      notClient,
      { name: 'keyUsage', critical: true, digitalSignature: true },
      { name: 'extKeyUsage', serverAuth: true },
    ]),
    codeSigningOnly: mintLeafWithExtensions(ca, 'code-signer', [notClient, { name: 'extKeyUsage', codeSigning: true }]),
  };
}

/** A certificate signed by `ca` with CN=`commonName` and exactly `extensions` (plus SKI and AKI). */
function mintLeafWithExtensions(ca: CertAndKey, commonName: string, extensions: object[]): CertAndKey {
  const caCert = forge.pki.certificateFromPem(ca.certPem);
  const { privateKey, publicKey } = generateKeyPairSync('rsa', {
    modulusLength: 2048,
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
    publicKeyEncoding: { type: 'spki', format: 'pem' },
  });
  const cert = forge.pki.createCertificate();
  const serial = randomBytes(16);
  serial[0] = ((serial[0] ?? 1) & 0x7f) | 0x01;
  cert.serialNumber = serial.toString('hex');
  cert.publicKey = forge.pki.publicKeyFromPem(publicKey);
  const now = Date.now();
  cert.validity.notBefore = new Date(Math.floor((now - 3_600_000) / 1000) * 1000);
  cert.validity.notAfter = new Date(Math.floor((now + 30 * DAY_MS) / 1000) * 1000);
  cert.setSubject([{ shortName: 'CN', value: commonName }]);
  cert.setIssuer(caCert.subject.attributes);
  cert.setExtensions([
    ...extensions,
    { name: 'subjectKeyIdentifier' },
    { name: 'authorityKeyIdentifier', keyIdentifier: caCert.generateSubjectKeyIdentifier().getBytes() },
  ]);
  cert.sign(forge.pki.privateKeyFromPem(ca.keyPem), forge.md.sha256.create());
  return { certPem: forge.pki.certificateToPem(cert), keyPem: privateKey, serialHex: serial.toString('hex').toUpperCase() };
}
