/**
 * The `tls` sections of a config: a listener's, `admin.tls` and an upstream mapping's. Every file is read and
 * checked before anything listens (key matches certificate, certificate valid now and fit to serve, CA bundle
 * of CA certificates only, one current CRL per client CA), then built into the secure-context options Node
 * takes — and tried once with `createSecureContext`, so that what Node would refuse is a config error now.
 */
import { X509Certificate } from 'node:crypto';
import { createSecureContext } from 'node:tls';
import { readCrlFile } from '../certs/crl.js';
import { checkServerNames, serverNameProblem } from '../certs/server-names.js';
import { ConfigError } from '../errors.js';
import { serverCertificateProblem } from '../identity/purpose.js';
import type { CompileContext } from './context.js';
import { TLS_CIPHERS } from './defaults.js';
import { checkValidNow, readAt, readCertificates, readKey } from './files.js';
import type { CertInfo, ListenAddress, ListenerTls } from './runtime.js';
import type { ListenerTlsFile } from './schema.js';

/**
 * Resolves a `tls` section (a listener's, or `admin.tls`) whose parent key path is `p`: errors are named
 * `${p}.tls.cert`, `${p}.tls.clientCa`, ... Reads and checks every file (key matches cert, certificate
 * valid now, CA bundle of CA certificates only, CRL current) and builds the secure-context options.
 * Returns undefined when `t` is absent or anything failed (the errors are in `ctx.errors`).
 */
export function resolveListenerTls(ctx: CompileContext, t: ListenerTlsFile | undefined, p: string): ListenerTls | undefined {
  if (t === undefined) return undefined;
  const errorsBefore = ctx.errors.length;
  const cert = readCertificates(ctx, `${p}.tls.cert`, t.cert);
  const key = readKey(ctx, `${p}.tls.key`, t.key);
  const leaf = cert?.certs[0];
  if (cert && leaf) {
    checkValidNow(ctx, `${p}.tls.cert`, t.cert, leaf);
    const purpose = serverCertificateProblem(leaf);
    if (purpose !== undefined)
      ctx.errors.push(new ConfigError(`${p}.tls.cert`, t.cert, `a TLS server certificate (${purpose}: ${cert.file})`));
    if (key && !leaf.checkPrivateKey(key.key)) {
      ctx.errors.push(
        new ConfigError(`${p}.tls.key`, t.key, `the private key of the certificate in ${p}.tls.cert`),
      );
    }
  }
  let ca: Buffer | undefined;
  let caCerts: X509Certificate[] | undefined;
  const certificates: CertInfo[] = [];
  if (leaf && cert)
    certificates.push({
      kind: 'server',
      index: 0,
      keyPath: `${p}.tls.cert`,
      file: cert.file,
      subject: leaf.subject,
      validToMs: Date.parse(leaf.validTo),
    });
  if (t.clientCertificate !== 'none') {
    if (t.clientCa === undefined) {
      ctx.errors.push(
        new ConfigError(
          `${p}.tls.clientCa`,
          undefined,
          `a CA bundle file (clientCertificate is "${t.clientCertificate}"; without a CA Node would trust its public roots)`,
        ),
      );
    } else {
      const bundle = resolveClientCaBundle(ctx, t.clientCa, `${p}.tls.clientCa`);
      if (bundle) {
        ca = bundle.data;
        caCerts = bundle.certs;
        certificates.push(...bundle.certificates);
      }
    }
  } else if (t.clientCa !== undefined) {
    ctx.errors.push(
      new ConfigError(
        `${p}.tls.clientCa`,
        t.clientCa,
        `no clientCa when ${p}.tls.clientCertificate is "none"`,
      ),
    );
  }
  const crl = t.crl === undefined ? undefined : resolveCrl(ctx, t.clientCertificate, t.crl, p, caCerts);
  if (ctx.errors.length > errorsBefore || !cert || !key) return undefined;
  const options = {
    cert: cert.data,
    key: key.data,
    minVersion: t.minVersion,
    ciphers: TLS_CIPHERS,
    honorCipherOrder: true,
    ...(ca ? { ca } : {}),
    ...(crl ? { crl: crl.crls.map((c) => c.pem) } : {}),
    requestCert: t.clientCertificate !== 'none',
    // `optional` completes the handshake without a certificate; the listener then closes connections
    // that presented a certificate which failed verification, and routes that need one answer 403.
    rejectUnauthorized: t.clientCertificate === 'require',
  };
  try {
    createSecureContext(options);
  } catch (err) {
    ctx.errors.push(
      new ConfigError(
        `${p}.tls`,
        t,
        `TLS material Node accepts (${err instanceof Error ? err.message : 'rejected'})`,
      ),
    );
    return undefined;
  }
  return {
    clientCertificate: t.clientCertificate,
    options,
    certificates,
    ...(crl
      ? {
          crls: crl.crls.map((c) => ({ index: c.index, nextUpdateMs: c.nextUpdateMs })),
          revokedSerials: [...new Set(crl.crls.flatMap((c) => c.revoked))],
        }
      : {}),
  };
}

/**
 * `${p}.tls.crl`: every CRL of the file, split and checked against the client CA bundle (certs/crl.ts).
 * Each problem is a config error at `${p}.tls.crl`; undefined then, or when the bundle itself failed (its
 * own errors say why).
 */
function resolveCrl(
  ctx: CompileContext,
  mode: ListenerTlsFile['clientCertificate'],
  value: string,
  p: string,
  cas: readonly X509Certificate[] | undefined,
): ReturnType<typeof readCrlFile> | undefined {
  if (mode === 'none') {
    ctx.errors.push(new ConfigError(`${p}.tls.crl`, value, `no crl when ${p}.tls.clientCertificate is "none"`));
    return undefined;
  }
  return resolveCrlFile(ctx, value, `${p}.tls.crl`, cas);
}

/**
 * A CRL file at `keyPath`, split and checked against the client CA bundle `cas` (certs/crl.ts): each problem
 * is a config error at `keyPath`; undefined then, or when the bundle itself failed (its own errors say why).
 * Shared by a listener's `tls.crl` and a decision listener's `crl`.
 */
export function resolveCrlFile(
  ctx: CompileContext,
  value: string,
  keyPath: string,
  cas: readonly X509Certificate[] | undefined,
): ReturnType<typeof readCrlFile> | undefined {
  const read = readAt(ctx, keyPath, value);
  if (read === undefined || cas === undefined) return undefined;
  const result = readCrlFile(read.data.toString('latin1'), read.file, cas, ctx.deps.now());
  for (const problem of result.problems) ctx.errors.push(new ConfigError(keyPath, value, problem));
  return result.problems.length === 0 ? result : undefined;
}

/**
 * A client-CA bundle at `keyPath`: CA certificates only, each valid now, with their expiry facts (kind `ca`).
 * Undefined when the file cannot be read (the error is in `ctx.errors`). Shared by a listener's
 * `tls.clientCa` and a decision listener's `clientCa`.
 */
export function resolveClientCaBundle(
  ctx: CompileContext,
  value: string,
  keyPath: string,
): { readonly data: Buffer; readonly certs: X509Certificate[]; readonly certificates: CertInfo[] } | undefined {
  const bundle = readCertificates(ctx, keyPath, value);
  if (!bundle) return undefined;
  const certificates: CertInfo[] = [];
  for (const [index, c] of bundle.certs.entries()) {
    if (!c.ca)
      ctx.errors.push(
        new ConfigError(keyPath, value, `CA certificates only (${c.subject.replace(/\n/g, ',')} is not a CA)`),
      );
    // An expired CA makes OpenSSL refuse every client: say so now rather than at the first handshake.
    else checkValidNow(ctx, keyPath, value, c);
    certificates.push({
      kind: 'ca',
      index,
      keyPath,
      file: bundle.file,
      subject: c.subject,
      validToMs: Date.parse(c.validTo),
    });
  }
  return { data: bundle.data, certs: bundle.certs, certificates };
}

/**
 * `${p}.serverNames` (or, when absent, the listen host if it is a DNS name) against the server certificate
 * of `tls` (certs/server-names.ts). A certificate whose SANs cover none of them is a warning naming the
 * listener and the names, and `serverNameMismatch` on the returned TLS settings (the metric): it loads,
 * because a client that checks only the CA still connects. An invalid entry, or `serverNames` on a
 * listener without TLS, is an error.
 */
export function withServerNames(
  ctx: CompileContext,
  tls: ListenerTls | undefined,
  tlsFile: ListenerTlsFile | undefined,
  names: readonly string[] | undefined,
  address: ListenAddress | undefined,
  p: string,
  label: string,
): ListenerTls | undefined {
  if (names !== undefined) {
    if (tlsFile === undefined) {
      ctx.errors.push(
        new ConfigError(`${p}.serverNames`, names, `no serverNames without ${p}.tls (they are checked against its certificate)`),
      );
    }
    names.forEach((n, i) => {
      const problem = serverNameProblem(n);
      if (problem !== undefined) ctx.errors.push(new ConfigError(`${p}.serverNames[${i}]`, n, problem));
    });
  }
  if (tls === undefined) return undefined;
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(tls.options.cert as Buffer);
  } catch {
    return tls; // resolveListenerTls parsed it already; nothing better to say here
  }
  const check = checkServerNames(leaf, names, address?.host);
  if (check.mismatch)
    ctx.warnings.push(
      `${label}: the server certificate (${p}.tls.cert) covers none of the names clients use, ${check.names.join(', ')} ` +
        `(${names !== undefined ? `${p}.serverNames` : `the listen host; set ${p}.serverNames to the names clients use`}); ` +
        `its subjectAltNames: ${check.subjectAltNames || 'none'}. Clients that check the host name will refuse the handshake`,
    );
  return { ...tls, serverNames: check.names, serverNameMismatch: check.mismatch };
}

/** The TLS options of an upstream mapping (`https://` or `tls://`): CA bundle, client cert + key, servername. */
export function resolveUpstreamTls(
  ctx: CompileContext,
  u: { ca?: string | undefined; cert?: string | undefined; key?: string | undefined; servername?: string | undefined },
  p: string,
): { ca?: Buffer; cert?: Buffer; key?: Buffer; servername?: string } {
  const tls: { ca?: Buffer; cert?: Buffer; key?: Buffer; servername?: string } = {};
  if (u.ca !== undefined) {
    const ca = readCertificates(ctx, `${p}.ca`, u.ca);
    if (ca) {
      tls.ca = ca.data;
      for (const [index, c] of ca.certs.entries())
        ctx.upstreamCerts.push({ kind: 'upstream_ca', index, keyPath: `${p}.ca`, file: ca.file, subject: c.subject, validToMs: Date.parse(c.validTo) });
    }
  }
  if ((u.cert === undefined) !== (u.key === undefined)) {
    ctx.errors.push(
      new ConfigError(
        u.cert === undefined ? `${p}.cert` : `${p}.key`,
        undefined,
        `both ${p}.cert and ${p}.key, or neither`,
      ),
    );
  } else if (u.cert !== undefined && u.key !== undefined) {
    const cert = readCertificates(ctx, `${p}.cert`, u.cert);
    const key = readKey(ctx, `${p}.key`, u.key);
    if (cert?.certs[0] && key && !cert.certs[0].checkPrivateKey(key.key))
      ctx.errors.push(new ConfigError(`${p}.key`, u.key, `the private key of the certificate in ${p}.cert`));
    if (cert && key) {
      tls.cert = cert.data;
      tls.key = key.data;
      const leaf = cert.certs[0];
      if (leaf)
        ctx.upstreamCerts.push({ kind: 'upstream_client', index: 0, keyPath: `${p}.cert`, file: cert.file, subject: leaf.subject, validToMs: Date.parse(leaf.validTo) });
    }
  }
  if (u.servername !== undefined) tls.servername = u.servername;
  return tls;
}
