/**
 * Low-level probes for connection-policy and client-certificate tests: one TLS connection with exact
 * client settings (versions, suites, ALPN, certificate) that reports what happened at the TLS layer and
 * what came back; a raw TCP socket that sends bytes no TLS client would; and a certificate minter for
 * hostile subject / SAN contents that `src/certs/pki.ts` refuses to produce on purpose.
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { connect as netConnect } from 'node:net';
import { connect as tlsConnect, type ConnectionOptions, type TLSSocket } from 'node:tls';
import forge from 'node-forge';
import type { CertAndKey } from '../../src/certs/pki.js';
import type { TestClientName, TestPkiPaths } from './pki.js';

/** A client certificate and key, PEM. */
export interface ClientPem {
  readonly cert: string | Buffer;
  readonly key: string | Buffer;
}

/** The PEM pair of a test-PKI client. */
export function clientPem(pki: TestPkiPaths, name: TestClientName): ClientPem {
  return { cert: readFileSync(pki.clients[name].cert), key: readFileSync(pki.clients[name].key) };
}

/** What one TLS connection attempt saw, from the client's side. */
export interface TlsAttempt {
  /** The client completed its side of the handshake (`secureConnect`). With TLS 1.3 this happens before
   * the server has checked the client certificate, so a refusal shows up afterwards as an alert. */
  readonly handshake: boolean;
  /** Negotiated protocol version (`TLSv1.2`, `TLSv1.3`), or null. */
  readonly protocol: string | null;
  /** Negotiated ALPN protocol, false when none. */
  readonly alpn: string | false;
  /** Negotiated cipher name, when the handshake completed. */
  readonly cipher: string | undefined;
  /** `code` of the first error the client saw (an alert, ECONNRESET, ...). */
  readonly errorCode: string | undefined;
  /** Everything read before the close, latin1. */
  readonly response: string;
  /** Status of the first HTTP/1.x status line read, 0 when none. */
  readonly status: number;
  /** The server closed the connection (rather than the probe giving up at `timeoutMs`). */
  readonly closed: boolean;
  /** ms from connect to close (or to the timeout). */
  readonly elapsedMs: number;
}

export interface TlsAttemptOptions {
  /** Trusted CA for the server certificate. */
  readonly ca: string | Buffer;
  /** Client certificate to present; none when absent. */
  readonly client?: ClientPem | undefined;
  readonly minVersion?: ConnectionOptions['minVersion'];
  readonly maxVersion?: ConnectionOptions['maxVersion'];
  readonly ciphers?: string;
  readonly ALPNProtocols?: string[];
  readonly servername?: string;
  /** Request bytes written once the handshake completes; `false` writes nothing. Default: a GET of
   * `path` with `Connection: close`. */
  readonly request?: string | false;
  readonly path?: string;
  /** Extra request header lines (`Name: value`) for the default request. */
  readonly headerLines?: readonly string[];
  /** Gives up (and destroys the socket) after this many ms. Default 5000. */
  readonly timeoutMs?: number;
  /** Called right after the handshake, before the request is written. */
  readonly onSecure?: (socket: TLSSocket) => void;
}

/** Opens one TLS connection to 127.0.0.1:`port`, sends one HTTP/1.1 request, reads until the close. */
export function tlsAttempt(port: number, opts: TlsAttemptOptions): Promise<TlsAttempt> {
  return new Promise((resolve) => {
    const started = Date.now();
    const socket = tlsConnect({
      host: '127.0.0.1',
      port,
      ca: opts.ca,
      servername: opts.servername ?? 'localhost',
      ...(opts.client ? { cert: opts.client.cert, key: opts.client.key } : {}),
      ...(opts.minVersion ? { minVersion: opts.minVersion } : {}),
      ...(opts.maxVersion ? { maxVersion: opts.maxVersion } : {}),
      ...(opts.ciphers !== undefined ? { ciphers: opts.ciphers } : {}),
      ALPNProtocols: opts.ALPNProtocols ?? ['http/1.1'],
    });
    const chunks: Buffer[] = [];
    let handshake = false;
    let protocol: string | null = null;
    let alpn: string | false = false;
    let cipher: string | undefined;
    let errorCode: string | undefined;
    let done = false;
    const finish = (closed: boolean): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      const response = Buffer.concat(chunks).toString('latin1');
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(response);
      resolve({ handshake, protocol, alpn, cipher, errorCode, response, status: m ? Number(m[1]) : 0, closed, elapsedMs: Date.now() - started });
    };
    const timer = setTimeout(() => finish(false), opts.timeoutMs ?? 5_000);
    socket.on('secureConnect', () => {
      handshake = true;
      protocol = socket.getProtocol();
      alpn = socket.alpnProtocol ?? false;
      cipher = socket.getCipher().name;
      opts.onSecure?.(socket);
      const request =
        opts.request ??
        `GET ${opts.path ?? '/'} HTTP/1.1\r\nHost: localhost:${port}\r\n${(opts.headerLines ?? []).map((l) => `${l}\r\n`).join('')}Connection: close\r\n\r\n`;
      if (request !== false && !socket.destroyed) socket.write(request);
    });
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', (err: NodeJS.ErrnoException) => {
      errorCode ??= err.code ?? err.message;
      finish(true);
    });
    socket.on('end', () => finish(true));
    socket.on('close', () => finish(true));
  });
}

/** What a raw TCP exchange saw. */
export interface RawTcpResult {
  /** Everything read, latin1. */
  readonly text: string;
  /** The server closed (end, reset or close) before `timeoutMs`. */
  readonly closed: boolean;
  /** ms from connect until the close (or the timeout). */
  readonly elapsedMs: number;
}

/**
 * Connects to 127.0.0.1:`port`, writes `chunks` (each after `gapMs`), and reads until the server closes
 * or `timeoutMs` passes. An empty `chunks` is a silent socket.
 */
export function rawTcp(port: number, chunks: readonly (string | Buffer)[], opts: { timeoutMs?: number; gapMs?: number } = {}): Promise<RawTcpResult> {
  return new Promise((resolve) => {
    const started = Date.now();
    const socket = netConnect({ host: '127.0.0.1', port });
    const got: Buffer[] = [];
    let done = false;
    const timers: NodeJS.Timeout[] = [];
    const finish = (closed: boolean): void => {
      if (done) return;
      done = true;
      for (const t of timers) clearTimeout(t);
      socket.destroy();
      resolve({ text: Buffer.concat(got).toString('latin1'), closed, elapsedMs: Date.now() - started });
    };
    timers.push(setTimeout(() => finish(false), opts.timeoutMs ?? 5_000));
    socket.on('connect', () => {
      chunks.forEach((c, i) => {
        timers.push(
          setTimeout(() => {
            if (!socket.destroyed) socket.write(c);
          }, i * (opts.gapMs ?? 0)),
        );
      });
    });
    socket.on('data', (c: Buffer) => got.push(c));
    socket.on('error', () => finish(true));
    socket.on('end', () => finish(true));
    socket.on('close', () => finish(true));
  });
}

/**
 * A TLS record header announcing a handshake message (0x16, TLS 1.0 record version, `length`), followed
 * by the first bytes of a ClientHello and nothing more: a partial ClientHello the server waits on.
 */
export function partialClientHello(length = 512): Buffer {
  return Buffer.from([0x16, 0x03, 0x01, (length >> 8) & 0xff, length & 0xff, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]);
}

/** A TLS handshake record header (claiming `length` bytes) followed by `length` random bytes. */
export function tlsRecordWithGarbage(length = 64): Buffer {
  return Buffer.concat([Buffer.from([0x16, 0x03, 0x01, (length >> 8) & 0xff, length & 0xff]), randomBytes(length)]);
}

/** One subject attribute for {@link mintClientCertificate}, e.g. `{ shortName: 'CN', value: 'alice' }`. */
export interface SubjectAttr {
  readonly shortName: 'CN' | 'OU' | 'O';
  readonly value: string;
}

/**
 * Mints a client certificate signed by `ca` with exactly the given subject and URI SANs, without the
 * input checks of `issueClientCert` (which rightly refuses a URI with a space or a comma): for hostile
 * certificate tests (threat model #20–#22). EKU clientAuth, valid from one hour ago for `days`.
 */
export function mintClientCertificate(ca: CertAndKey, spec: { subject: readonly SubjectAttr[]; uris?: readonly string[]; days?: number }): CertAndKey {
  const caCert = forge.pki.certificateFromPem(ca.certPem);
  const caKey = forge.pki.privateKeyFromPem(ca.keyPem);
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
  cert.validity.notAfter = new Date(Math.floor((now + (spec.days ?? 30) * 86_400_000) / 1000) * 1000);
  // UTF8String values: forge keeps the universal tag number in valueTagClass, typed as asn1.Class.
  // eslint-disable-next-line @typescript-eslint/no-unsafe-enum-assignment -- the typings are wrong there
  const utf8 = forge.asn1.Type.UTF8 as number as forge.asn1.Class;
  cert.setSubject(spec.subject.map((a) => ({ shortName: a.shortName, value: a.value, valueTagClass: utf8 })));
  cert.setIssuer(caCert.subject.attributes);
  const extensions: object[] = [
    { name: 'basicConstraints', cA: false },
    { name: 'keyUsage', critical: true, digitalSignature: true },
    { name: 'extKeyUsage', clientAuth: true },
    { name: 'subjectKeyIdentifier' },
    { name: 'authorityKeyIdentifier', keyIdentifier: caCert.generateSubjectKeyIdentifier().getBytes() },
  ];
  if (spec.uris && spec.uris.length > 0) {
    extensions.push({ name: 'subjectAltName', altNames: spec.uris.map((value) => ({ type: 6, value })) });
  }
  cert.setExtensions(extensions);
  cert.sign(caKey, forge.md.sha256.create());
  return { certPem: forge.pki.certificateToPem(cert), keyPem: privateKey, serialHex: serial.toString('hex').toUpperCase() };
}
