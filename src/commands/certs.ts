/**
 * The file-writing logic behind `portcullis certs init | issue | revoke | crl`: a development PKI in one
 * directory. No console and no process.exit here: each command returns what it did, and a refusal is a
 * {@link CertsError} whose message the CLI prints as is.
 */
import { createPrivateKey, randomBytes, X509Certificate } from 'node:crypto';
import { chmod, mkdir, readFile, stat } from 'node:fs/promises';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { systemClock } from '../clock.js';
import { OU_PATTERN } from './defaults.js';
import { writeFileAtomic } from './files.js';
import { pkcs12Bundle } from '../certs/pkcs12.js';
import { createDevSigningKey, devJwksFromPrivatePem, DEV_KEY_FILES } from '../authn/jwks-dev.js';
import {
  certSerialHex,
  createCa,
  createCrl,
  issueClientCert,
  issueServerCert,
  parseCrl,
  verifyCrlSignature,
  type CertAndKey,
  type RevokedEntry,
} from '../certs/pki.js';

/** Every default of the `certs` commands, with its unit and the reason for it. */
export const CERTS_DEFAULTS = {
  /** CA lifetime, days (10 years): a dev CA should outlive everything it signs, so it never needs rotating mid-project. */
  caDays: 3650,
  /** Server certificate lifetime, days: 825 is the longest server lifetime Apple platforms still accept. */
  serverDays: 825,
  /** Client certificate lifetime, days (1 year): long enough for a dev setup, short enough to expire a forgotten laptop. */
  clientDays: 365,
  /**
   * CRL nextUpdate, days after issue: one year, like the client certificates. Once it passes, OpenSSL
   * rejects every client (CRL_HAS_EXPIRED), so a short value would lock a dev setup out after a month;
   * every `revoke` re-signs it ({@link certsRefreshCrl} does so without a change). Production CRLs come
   * from the operator's CA, with its own schedule.
   */
  crlDays: 365,
  /** Clients minted by `certs init` when none are named. */
  clients: ['alice'] as readonly string[],
  /** Names every server certificate carries, so loopback clients can verify the hostname. */
  serverHosts: ['localhost', '127.0.0.1', '::1'] as readonly string[],
  /** CA subject common name. */
  caCommonName: 'Portcullis Dev CA',
  /** OU of dev client certificates, so an ACL can admit "OU=dev". */
  clientOrganizationalUnit: 'dev',
  /** URI SAN prefix of client certificates (a SPIFFE ID): `<prefix><name>`. */
  clientUriPrefix: 'spiffe://portcullis.dev/client/',
  /** Common name of the cluster CA (`--cluster`): a second CA, so the users' CA can never vouch for a cluster peer. */
  clusterCaCommonName: 'Portcullis Dev Cluster CA',
  /** Names the scheduler and worker certificates carry: the gateway dials the scheduler at 127.0.0.1. */
  clusterHosts: ['localhost', '127.0.0.1', '::1'] as readonly string[],
} as const;

/** File names inside the output directory. */
export const CERTS_FILES = {
  caCert: 'ca.pem',
  caKey: 'ca-key.pem',
  serverCert: 'server.pem',
  serverKey: 'server-key.pem',
  crl: 'ca.crl',
  /** ES256 private key of dev JWTs (`portcullis token mint`), 0600. */
  jwtSigningKey: DEV_KEY_FILES.signingKey,
  /** Its public JWKS, the `jwksFile` of the embedded config's `dev-jwt` provider, 0644. */
  jwks: DEV_KEY_FILES.jwks,
} as const;

/**
 * The cluster side of a scheduler behind the gateway (`certs init --cluster`), for `config/examples/dask.yaml`:
 * a cluster CA of its own, the scheduler's and a worker's certificates (EKU serverAuth and clientAuth: a Dask
 * process listens and connects with one identity), and the gateway's client certificate for its `tls://`
 * upstream (EKU clientAuth), all signed by the cluster CA.
 */
export const CLUSTER_FILES = {
  caCert: 'cluster-ca.pem',
  caKey: 'cluster-ca-key.pem',
  schedulerCert: 'scheduler.pem',
  schedulerKey: 'scheduler-key.pem',
  workerCert: 'worker.pem',
  workerKey: 'worker-key.pem',
  gatewayClientCert: 'gateway-client.pem',
  gatewayClientKey: 'gateway-client-key.pem',
} as const;

/** `client-<name>.pem` */
export function clientCertFile(name: string): string {
  return `client-${name}.pem`;
}

/** `client-<name>-key.pem` */
export function clientKeyFile(name: string): string {
  return `client-${name}-key.pem`;
}

/** Stable codes of every refusal, so the CLI and tests can tell them apart without parsing messages. */
export type CertsErrorCode =
  | 'ERR_CERTS_EXISTS' // a file would be overwritten and force was not given
  | 'ERR_CERTS_INVALID_NAME' // a client name outside CLIENT_NAME_PATTERN
  | 'ERR_CERTS_INVALID_OPTION' // a bad day count or host
  | 'ERR_CERTS_MISSING' // a file the command needs is not there
  | 'ERR_CERTS_MISMATCH'; // files that do not belong together (key vs cert, cert vs CA, CRL vs CA)

/** A refusal of a `certs` command; `message` is meant for the operator and names the file or value at fault. */
export class CertsError extends Error {
  override readonly name = 'CertsError';
  constructor(
    readonly code: CertsErrorCode,
    message: string,
  ) {
    super(message);
  }
}

/**
 * Client names become file names and certificate CNs: a letter or digit first, then letters, digits,
 * `.`, `_`, `-`, 64 characters at most — no path separators, no leading dot.
 */
export const CLIENT_NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

const DIR_MODE = 0o700;
const KEY_MODE = 0o600;
const PUBLIC_MODE = 0o644;

/** What a command wrote: paths joined onto `out`, in the order they were written. */
export interface CertsWritten {
  written: string[];
}

/**
 * Creates a fresh development PKI in `out` (created with mode 0700 when missing): `ca.pem`, `ca-key.pem`,
 * `server.pem` + `server-key.pem` (SANs localhost, 127.0.0.1, ::1 and `hosts`), `client-<name>.pem` +
 * `client-<name>-key.pem` per client (CN=name, OU=dev, URI SAN spiffe://portcullis.dev/client/<name>),
 * `ca.crl` (empty, cRLNumber 1), and the dev JWT signing key: `jwt-signing-key.pem` (ES256, PKCS#8) and its
 * public `jwks.json` (what `portcullis token mint` signs with and the embedded config's `dev-jwt` provider
 * verifies against). With `cluster`, also the {@link CLUSTER_FILES}. `ou` replaces the clients' OU (`dev`).
 * Private keys get mode 0600 and everything else 0644, set explicitly
 * whatever the umask. Each file is written to a temporary name and renamed, so a watcher never reads half
 * a file; `ca.pem` is written last, so its presence means a complete set.
 *
 * @throws CertsError ERR_CERTS_EXISTS naming the first file that exists (unless `force`), or
 *   ERR_CERTS_INVALID_NAME / ERR_CERTS_INVALID_OPTION before anything is written.
 */
export async function certsInit(opts: {
  out: string;
  hosts?: readonly string[];
  clients?: readonly string[];
  ou?: string;
  cluster?: boolean;
  force?: boolean;
  days?: number;
  now?: Date;
}): Promise<CertsWritten> {
  const now = opts.now ?? currentDate();
  const clients = dedupe(opts.clients ?? CERTS_DEFAULTS.clients, (name) => name);
  clients.forEach(requireClientName);
  const clientDays = requireDays(opts.days ?? CERTS_DEFAULTS.clientDays, 'days');
  const hosts = dedupe([...CERTS_DEFAULTS.serverHosts, ...(opts.hosts ?? [])], hostKey);
  const ou = requireOu(opts.ou ?? CERTS_DEFAULTS.clientOrganizationalUnit);

  const out = opts.out;
  const files = {
    caCert: join(out, CERTS_FILES.caCert),
    caKey: join(out, CERTS_FILES.caKey),
    serverCert: join(out, CERTS_FILES.serverCert),
    serverKey: join(out, CERTS_FILES.serverKey),
    crl: join(out, CERTS_FILES.crl),
    jwtSigningKey: join(out, CERTS_FILES.jwtSigningKey),
    jwks: join(out, CERTS_FILES.jwks),
  };
  const clientFiles = clients.map((name) => ({
    name,
    cert: join(out, clientCertFile(name)),
    key: join(out, clientKeyFile(name)),
  }));
  const clusterPaths = Object.values(CLUSTER_FILES).map((f) => join(out, f));
  if (opts.force !== true) {
    await refuseExisting([
      files.caCert,
      files.caKey,
      files.serverCert,
      files.serverKey,
      ...clientFiles.flatMap((c) => [c.cert, c.key]),
      files.crl,
      files.jwtSigningKey,
      files.jwks,
      ...(opts.cluster === true ? clusterPaths : []),
    ]);
  }

  // Everything is minted in memory first: a bad host fails before a single file is touched.
  const ca = createCa({ commonName: CERTS_DEFAULTS.caCommonName, days: CERTS_DEFAULTS.caDays, now });
  let server: CertAndKey;
  try {
    server = issueServerCert(ca, { hosts, days: CERTS_DEFAULTS.serverDays, now });
  } catch (error) {
    throw new CertsError('ERR_CERTS_INVALID_OPTION', `invalid --hosts entry: ${messageOf(error)}`);
  }
  const issued = clientFiles.map((c) => ({ ...c, pair: mintClient(ca, c.name, clientDays, now, ou) }));
  const cluster = opts.cluster === true ? mintCluster(now) : undefined;
  const crlPem = createCrl(ca, { revoked: [], crlNumber: 1, thisUpdate: now, days: CERTS_DEFAULTS.crlDays });
  const signing = await createDevSigningKey();

  await ensureDir(out);
  const written: string[] = [];
  const put = async (path: string, data: string, mode: number): Promise<void> => {
    await writeFileAtomic(path, data, mode);
    written.push(path);
  };
  await put(files.caKey, ca.keyPem, KEY_MODE);
  await put(files.serverKey, server.keyPem, KEY_MODE);
  await put(files.serverCert, server.certPem, PUBLIC_MODE);
  for (const c of issued) {
    await put(c.key, c.pair.keyPem, KEY_MODE);
    await put(c.cert, c.pair.certPem, PUBLIC_MODE);
  }
  await put(files.crl, crlPem, PUBLIC_MODE);
  await put(files.jwtSigningKey, signing.privatePem, KEY_MODE);
  await put(files.jwks, `${JSON.stringify(signing.publicJwks, null, 2)}\n`, PUBLIC_MODE);
  if (cluster !== undefined) {
    for (const [file, data, mode] of cluster) await put(join(out, file), data, mode);
  }
  await put(files.caCert, ca.certPem, PUBLIC_MODE); // last: its presence marks a complete set
  return { written };
}

/**
 * Signs one more client certificate with the CA in `out` (reads `ca.pem` and `ca-key.pem`) and writes
 * `client-<name>.pem` (0644) and `client-<name>-key.pem` (0600).
 *
 * @throws CertsError ERR_CERTS_EXISTS when either file exists and `force` is not set; ERR_CERTS_MISSING
 *   when the CA files are absent; ERR_CERTS_MISMATCH when the CA key does not match `ca.pem`;
 *   ERR_CERTS_INVALID_OPTION when the CA has expired or `days` is not a positive integer.
 */
export async function certsIssue(opts: {
  out: string;
  name: string;
  days?: number;
  ou?: string;
  force?: boolean;
  now?: Date;
  /**
   * Also write `client-<name>.p12` (0600): a PKCS#12 bundle of the certificate, its key and the CA, for a
   * browser or keychain. `passphrase` protects it; without one a random passphrase is made and written to
   * `client-<name>.p12.pass` (0600), never printed.
   */
  p12?: { readonly passphrase?: string | undefined };
}): Promise<CertsWritten & { serialHex: string }> {
  requireClientName(opts.name);
  if (opts.p12?.passphrase === '')
    throw new CertsError('ERR_CERTS_INVALID_OPTION', 'the PKCS#12 passphrase is empty');
  const days = requireDays(opts.days ?? CERTS_DEFAULTS.clientDays, 'days');
  const now = opts.now ?? currentDate();
  const certPath = join(opts.out, clientCertFile(opts.name));
  const keyPath = join(opts.out, clientKeyFile(opts.name));
  if (opts.force !== true) await refuseExisting([certPath, keyPath]);

  const ca = await loadCa(opts.out, now);
  const ou = requireOu(opts.ou ?? CERTS_DEFAULTS.clientOrganizationalUnit);
  const p12Path = join(opts.out, `client-${opts.name}.p12`);
  const passPath = `${p12Path}.pass`;
  const generated = opts.p12 !== undefined && opts.p12.passphrase === undefined;
  if (opts.p12 !== undefined && opts.force !== true) await refuseExisting(generated ? [p12Path, passPath] : [p12Path]);
  const pair = mintClient(ca, opts.name, days, now, ou);
  await writeFileAtomic(keyPath, pair.keyPem, KEY_MODE);
  await writeFileAtomic(certPath, pair.certPem, PUBLIC_MODE);
  const written = [keyPath, certPath];
  if (opts.p12 !== undefined) {
    const passphrase = opts.p12.passphrase ?? randomBytes(24).toString('base64url');
    const bundle = pkcs12Bundle({ certPem: pair.certPem, keyPem: pair.keyPem, caPem: ca.certPem, passphrase, friendlyName: opts.name });
    if (generated) {
      await writeFileAtomic(passPath, `${passphrase}\n`, KEY_MODE);
      written.push(passPath);
    }
    await writeFileAtomic(p12Path, bundle, KEY_MODE);
    written.push(p12Path);
  }
  return { written, serialHex: pair.serialHex };
}

/**
 * Revokes `client-<name>.pem`: re-signs `ca.crl` with its serial added to the earlier entries and the
 * cRLNumber raised by one (a missing `ca.crl` starts a new list). Revoking a serial already listed
 * changes nothing and reports `alreadyRevoked`.
 *
 * @throws CertsError ERR_CERTS_MISSING when the client certificate or CA files are absent;
 *   ERR_CERTS_MISMATCH when the client certificate was not issued by `ca.pem`, or `ca.crl` is malformed
 *   or not signed by the CA (extending it would launder someone else's list).
 */
export async function certsRevoke(opts: {
  out: string;
  name: string;
  now?: Date;
}): Promise<CertsWritten & { serialHex: string; alreadyRevoked: boolean; crlNumber: number }> {
  requireClientName(opts.name);
  const now = opts.now ?? currentDate();
  const certPath = join(opts.out, clientCertFile(opts.name));
  const clientPem = await readRequired(certPath, `there is no client "${opts.name}" to revoke`);
  const ca = await loadCa(opts.out, now, { allowExpired: true });
  const caX509 = new X509Certificate(ca.certPem);
  const clientX509 = parseCertificate(clientPem, certPath);
  if (!clientX509.checkIssued(caX509) || !clientX509.verify(caX509.publicKey)) {
    throw new CertsError(
      'ERR_CERTS_MISMATCH',
      `${certPath} was not issued by ${join(opts.out, CERTS_FILES.caCert)}`,
    );
  }
  const serialHex = certSerialHex(clientPem);

  const current = await readCurrentCrl(opts.out, ca.certPem);
  if (current.revoked.some((entry) => entry.serialHex === serialHex)) {
    return { written: [], serialHex, alreadyRevoked: true, crlNumber: current.crlNumber };
  }
  const crlNumber = current.crlNumber + 1;
  const crlPath = await writeCrl(
    opts.out,
    ca,
    [...current.revoked, { serialHex, revokedAt: now }],
    crlNumber,
    now,
  );
  return { written: [crlPath], serialHex, alreadyRevoked: false, crlNumber };
}

/**
 * Re-signs `ca.crl` with the same entries, a fresh thisUpdate/nextUpdate and the cRLNumber raised by one.
 * A CRL past its nextUpdate makes OpenSSL reject every client, so this has to run at least every
 * {@link CERTS_DEFAULTS.crlDays} days on a PKI that uses its CRL.
 *
 * @throws CertsError as {@link certsRevoke} for the CA and CRL files; ERR_CERTS_INVALID_OPTION for bad `days`.
 */
export async function certsRefreshCrl(opts: {
  out: string;
  days?: number;
  now?: Date;
}): Promise<CertsWritten & { crlNumber: number; nextUpdate: Date }> {
  const days = requireDays(opts.days ?? CERTS_DEFAULTS.crlDays, 'days');
  const now = opts.now ?? currentDate();
  const ca = await loadCa(opts.out, now, { allowExpired: true });
  const current = await readCurrentCrl(opts.out, ca.certPem);
  const crlNumber = current.crlNumber + 1;
  const crlPath = await writeCrl(opts.out, ca, current.revoked, crlNumber, now, days);
  const nextUpdate = parseCrl(await readFile(crlPath, 'utf8')).nextUpdate ?? now;
  return { written: [crlPath], crlNumber, nextUpdate };
}

/**
 * First-start convenience for `portcullis start`: runs {@link certsInit} with every default when
 * `out/ca.pem` is missing, and adds the dev JWT signing key and JWKS to a set made before they existed
 * ({@link ensureDevSigningKey}). Returns whether it created any file.
 *
 * @throws CertsError ERR_CERTS_EXISTS when `ca.pem` is missing but other PKI files are present (a broken
 *   set is never silently replaced).
 */
export async function ensureDevCerts(out: string): Promise<boolean> {
  if (!(await exists(join(out, CERTS_FILES.caCert)))) {
    await certsInit({ out });
    return true;
  }
  return (await ensureDevSigningKey(out)).written.length > 0;
}

/**
 * Makes sure `out` holds the dev JWT signing key and its JWKS: writes both when the key is missing (a
 * `jwks.json` without its key is replaced: it could only verify tokens nobody can mint), or only
 * `jwks.json` (derived from the key) when that alone is missing. Leaves a complete pair alone.
 *
 * @throws CertsError ERR_CERTS_MISMATCH when `jwt-signing-key.pem` is not an EC P-256 private key.
 */
export async function ensureDevSigningKey(out: string): Promise<CertsWritten> {
  const keyPath = join(out, CERTS_FILES.jwtSigningKey);
  const jwksPath = join(out, CERTS_FILES.jwks);
  const hasKey = await exists(keyPath);
  if (hasKey && (await exists(jwksPath))) return { written: [] };
  await ensureDir(out);
  if (!hasKey) {
    const signing = await createDevSigningKey();
    await writeFileAtomic(keyPath, signing.privatePem, KEY_MODE);
    await writeFileAtomic(jwksPath, `${JSON.stringify(signing.publicJwks, null, 2)}\n`, PUBLIC_MODE);
    return { written: [keyPath, jwksPath] };
  }
  let jwks;
  try {
    jwks = await devJwksFromPrivatePem(await readFile(keyPath, 'utf8'));
  } catch (error) {
    throw new CertsError('ERR_CERTS_MISMATCH', `${keyPath} is not an ES256 (P-256) private key: ${messageOf(error)}`);
  }
  await writeFileAtomic(jwksPath, `${JSON.stringify(jwks, null, 2)}\n`, PUBLIC_MODE);
  return { written: [jwksPath] };
}

// ---------------------------------------------------------------------------------------------------------

function mintClient(ca: CertAndKey, name: string, days: number, now: Date, ou: string): CertAndKey {
  return issueClientCert(ca, {
    commonName: name,
    organizationalUnit: ou,
    uris: [`${CERTS_DEFAULTS.clientUriPrefix}${name}`],
    days,
    now,
  });
}

/** The {@link CLUSTER_FILES} as [file name, contents, mode], the CA certificate last. */
function mintCluster(now: Date): [string, string, number][] {
  const ca = createCa({ commonName: CERTS_DEFAULTS.clusterCaCommonName, days: CERTS_DEFAULTS.caDays, now });
  const peer = (commonName: string): CertAndKey =>
    issueServerCert(ca, {
      commonName,
      hosts: CERTS_DEFAULTS.clusterHosts,
      days: CERTS_DEFAULTS.serverDays,
      now,
      clientAuth: true,
    });
  const scheduler = peer('dask-scheduler');
  const worker = peer('dask-worker');
  const gateway = issueClientCert(ca, { commonName: 'portcullis-gateway', days: CERTS_DEFAULTS.serverDays, now });
  const f = CLUSTER_FILES;
  return [
    [f.caKey, ca.keyPem, KEY_MODE],
    [f.schedulerKey, scheduler.keyPem, KEY_MODE],
    [f.schedulerCert, scheduler.certPem, PUBLIC_MODE],
    [f.workerKey, worker.keyPem, KEY_MODE],
    [f.workerCert, worker.certPem, PUBLIC_MODE],
    [f.gatewayClientKey, gateway.keyPem, KEY_MODE],
    [f.gatewayClientCert, gateway.certPem, PUBLIC_MODE],
    [f.caCert, ca.certPem, PUBLIC_MODE],
  ];
}

/** Reads the CA pair from `out` and checks that it belongs together and (unless allowed) is still valid. */
async function loadCa(out: string, now: Date, opts: { allowExpired?: boolean } = {}): Promise<CertAndKey> {
  const certPath = join(out, CERTS_FILES.caCert);
  const keyPath = join(out, CERTS_FILES.caKey);
  const hint = 'run `portcullis certs init` first';
  const certPem = await readRequired(certPath, hint);
  const keyPem = await readRequired(keyPath, hint);
  const x509 = parseCertificate(certPem, certPath);
  let matches: boolean;
  try {
    matches = x509.checkPrivateKey(createPrivateKey(keyPem));
  } catch (error) {
    throw new CertsError(
      'ERR_CERTS_MISMATCH',
      `${keyPath} is not a readable private key: ${messageOf(error)}`,
    );
  }
  if (!matches) throw new CertsError('ERR_CERTS_MISMATCH', `${keyPath} is not the key of ${certPath}`);
  if (opts.allowExpired !== true && new Date(x509.validTo).getTime() <= now.getTime()) {
    throw new CertsError(
      'ERR_CERTS_INVALID_OPTION',
      `${certPath} expired on ${x509.validTo}; run \`portcullis certs init --force\` for a new PKI`,
    );
  }
  return { certPem, keyPem, serialHex: certSerialHex(certPem) };
}

/** The current CRL's entries and number, or an empty list numbered 0 when `ca.crl` does not exist. */
async function readCurrentCrl(
  out: string,
  caCertPem: string,
): Promise<{ revoked: RevokedEntry[]; crlNumber: number }> {
  const crlPath = join(out, CERTS_FILES.crl);
  let crlPem: string;
  try {
    crlPem = await readFile(crlPath, 'utf8');
  } catch (error) {
    if (isNotFound(error)) return { revoked: [], crlNumber: 0 };
    throw error;
  }
  if (!verifyCrlSignature(crlPem, caCertPem)) {
    throw new CertsError(
      'ERR_CERTS_MISMATCH',
      `${crlPath} is not a CRL signed by ${join(out, CERTS_FILES.caCert)}; move it aside to start a new list`,
    );
  }
  const parsed = parseCrl(crlPem);
  return { revoked: parsed.revoked, crlNumber: parsed.crlNumber };
}

async function writeCrl(
  out: string,
  ca: CertAndKey,
  revoked: readonly RevokedEntry[],
  crlNumber: number,
  now: Date,
  days: number = CERTS_DEFAULTS.crlDays,
): Promise<string> {
  const crlPath = join(out, CERTS_FILES.crl);
  await writeFileAtomic(crlPath, createCrl(ca, { revoked, crlNumber, thisUpdate: now, days }), PUBLIC_MODE);
  return crlPath;
}

function parseCertificate(pem: string, path: string): X509Certificate {
  try {
    return new X509Certificate(pem);
  } catch (error) {
    throw new CertsError('ERR_CERTS_MISMATCH', `${path} is not a PEM certificate: ${messageOf(error)}`);
  }
}

async function readRequired(path: string, hint: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (error) {
    if (isNotFound(error)) throw new CertsError('ERR_CERTS_MISSING', `${path} not found: ${hint}`);
    throw error;
  }
}

async function refuseExisting(paths: readonly string[]): Promise<void> {
  for (const path of paths) {
    if (await exists(path)) {
      throw new CertsError('ERR_CERTS_EXISTS', `${path} already exists; pass --force to overwrite it`);
    }
  }
}

/** Creates `dir` (and parents) when missing; the directory itself gets 0700 whatever the umask. */
async function ensureDir(dir: string): Promise<void> {
  if (await exists(dir)) return;
  await mkdir(dir, { recursive: true, mode: DIR_MODE });
  await chmod(dir, DIR_MODE);
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (error) {
    if (isNotFound(error)) return false;
    throw error;
  }
}

function isNotFound(error: unknown): boolean {
  return error instanceof Error && 'code' in error && error.code === 'ENOENT';
}

function requireClientName(name: string): void {
  if (!CLIENT_NAME_PATTERN.test(name)) {
    throw new CertsError(
      'ERR_CERTS_INVALID_NAME',
      `invalid client name "${name}": use 1-64 letters, digits, ".", "_" or "-", starting with a letter or digit`,
    );
  }
}

function requireOu(ou: string): string {
  if (!OU_PATTERN.test(ou)) {
    throw new CertsError(
      'ERR_CERTS_INVALID_OPTION',
      `invalid --ou "${ou}": use 1-64 letters, digits, space, ".", "_" or "-", starting with a letter or digit`,
    );
  }
  return ou;
}

function requireDays(days: number, option: string): number {
  if (!Number.isInteger(days) || days <= 0) {
    throw new CertsError(
      'ERR_CERTS_INVALID_OPTION',
      `--${option} must be a positive whole number of days, got ${days}`,
    );
  }
  return days;
}

/** Hosts compare case-insensitively, IP literals by their bracket-free text. */
function hostKey(host: string): string {
  const bare = host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
  return isIP(bare) === 0 ? bare.toLowerCase() : bare;
}

function dedupe(values: readonly string[], key: (value: string) => string): string[] {
  const seen = new Set<string>();
  return values.filter((value) => {
    const k = key(value);
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function currentDate(): Date {
  return new Date(systemClock.now());
}
