// A PKI minted per bench run: an RSA CA, RSA-2048 server and client certificates through Portcullis's own
// node-forge functions (imported from dist/, so `npm run build` must have run), an ECDSA P-256 server
// certificate signed by the same CA through the openssl CLI (node-forge signs RSA only), and the JWT keys
// and tokens for the HAProxy jwt_verify rows (and, later, Portcullis's own JWT rows).
import { execFileSync } from 'node:child_process';
import { createHash, generateKeyPairSync, sign } from 'node:crypto';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const HOSTS = ['127.0.0.1', 'localhost'];
const DAYS = 2;
/** JWT claims every bench token carries; the proxies check exactly these. */
export const JWT_ISSUER = 'https://idp.bench.invalid/';
export const JWT_AUDIENCE = 'bench-api';

function write(dir, name, text, mode = 0o600) {
  const file = join(dir, name);
  writeFileSync(file, text, { mode });
  return file;
}

function b64url(buf) {
  return Buffer.from(buf).toString('base64url');
}

function signJwt(alg, privateKey, kid) {
  const now = Math.floor(Date.now() / 1000);
  const header = { alg, typ: 'JWT', kid };
  const payload = {
    iss: JWT_ISSUER,
    aud: JWT_AUDIENCE,
    sub: 'bench-user',
    scope: 'bench:read',
    iat: now,
    nbf: now - 60,
    exp: now + 6 * 3600,
  };
  const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(payload))}`;
  const sig =
    alg === 'ES256'
      ? sign('sha256', Buffer.from(input), { key: privateKey, dsaEncoding: 'ieee-p1363' }) // RFC 7518 §3.4: r||s
      : sign('sha256', Buffer.from(input), privateKey); // RS256: RSASSA-PKCS1-v1_5 with SHA-256
  return `${input}.${b64url(sig)}`;
}

/**
 * Mints everything into `dir` and returns the file paths (and the JWTs as strings).
 * @param distDir the compiled Portcullis (`dist/`), whose src/certs/pki.js is imported.
 */
export async function mintPki(dir, distDir) {
  const pkiJs = join(distDir, 'src', 'certs', 'pki.js');
  if (!existsSync(pkiJs)) throw new Error(`${pkiJs} not found: run \`npm run build\` first (npm run bench does)`);
  const { createCa, issueServerCert, issueClientCert } = await import(pathToFileURL(pkiJs).href);

  const ca = createCa({ commonName: 'Portcullis bench CA', days: DAYS });
  const server = issueServerCert(ca, { hosts: HOSTS, days: DAYS });
  const client = issueClientCert(ca, { commonName: 'bench-client', organizationalUnit: 'bench', days: DAYS });

  const f = {};
  f.caCert = write(dir, 'ca.pem', ca.certPem, 0o644);
  f.caKey = write(dir, 'ca-key.pem', ca.keyPem);
  f.rsaCert = write(dir, 'server-rsa.pem', server.certPem, 0o644);
  f.rsaKey = write(dir, 'server-rsa-key.pem', server.keyPem);
  f.rsaCombined = write(dir, 'server-rsa-combined.pem', server.certPem + server.keyPem); // HAProxy `crt`
  f.clientCert = write(dir, 'client.pem', client.certPem, 0o644);
  f.clientKey = write(dir, 'client-key.pem', client.keyPem);

  // ECDSA P-256 server certificate, signed by the (RSA) CA with openssl.
  f.ecKey = join(dir, 'server-ec-key.pem');
  const csr = join(dir, 'server-ec.csr');
  const ext = write(
    dir,
    'server-ec.ext',
    [
      'basicConstraints=critical,CA:FALSE',
      'keyUsage=critical,digitalSignature',
      'extendedKeyUsage=serverAuth',
      `subjectAltName=${HOSTS.map((h) => (/^\d/.test(h) ? `IP:${h}` : `DNS:${h}`)).join(',')}`,
      '',
    ].join('\n'),
    0o644,
  );
  f.ecCert = join(dir, 'server-ec.pem');
  const openssl = (...args) => execFileSync('openssl', args, { stdio: ['ignore', 'pipe', 'pipe'], timeout: 30_000 });
  openssl('genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', f.ecKey);
  openssl('req', '-new', '-key', f.ecKey, '-subj', '/CN=127.0.0.1', '-out', csr);
  openssl(
    'x509', '-req', '-in', csr, '-CA', f.caCert, '-CAkey', f.caKey, '-CAcreateserial',
    '-days', String(DAYS), '-sha256', '-extfile', ext, '-out', f.ecCert,
  );
  const { readFileSync } = await import('node:fs');
  f.ecCombined = write(dir, 'server-ec-combined.pem', readFileSync(f.ecCert, 'utf8') + readFileSync(f.ecKey, 'utf8'));

  // JWT signing keys: ES256 (P-256) and RS256 (RSA-2048). Public keys as SPKI PEM (HAProxy jwt_verify,
  // jwksFile) plus a JWKS document for Portcullis's jwt provider once it exists.
  const jwt = {};
  const jwks = { keys: [] };
  for (const [alg, gen] of [
    ['ES256', () => generateKeyPairSync('ec', { namedCurve: 'P-256' })],
    ['RS256', () => generateKeyPairSync('rsa', { modulusLength: 2048 })],
  ]) {
    const { privateKey, publicKey } = gen();
    const pubPem = publicKey.export({ type: 'spki', format: 'pem' });
    const kid = createHash('sha256').update(pubPem).digest('base64url').slice(0, 16);
    const lower = alg.toLowerCase();
    jwt[alg] = {
      publicKey: write(dir, `jwt-${lower}-pub.pem`, pubPem, 0o644),
      privateKey: write(dir, `jwt-${lower}-key.pem`, privateKey.export({ type: 'pkcs8', format: 'pem' })),
      token: signJwt(alg, privateKey, kid),
    };
    jwks.keys.push({ ...publicKey.export({ format: 'jwk' }), kid, alg, use: 'sig' });
  }
  f.jwks = write(dir, 'jwks.json', `${JSON.stringify(jwks, null, 2)}\n`, 0o644);
  return { files: f, jwt };
}
