/**
 * The files a config names, read relative to the config file's folder through the injected `readFile`:
 * certificates (every one of a PEM bundle parsed), private keys (an encrypted one refused up front), and the
 * digest that records what was read for the file watch. A failure is a config error at the key that named
 * the file, with the reason and the absolute path.
 */
import { X509Certificate, createHash, createPrivateKey, type KeyObject } from 'node:crypto';
import { resolve } from 'node:path';
import { ConfigError } from '../errors.js';
import type { FileContext, LoadIo } from './context.js';

/** SHA-256 (hex) of a file's content, as `RuntimeConfig.files` records it (config/watch.ts compares them). */
export function fileDigest(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/** `deps` whose `readFile` also records each file read, by absolute path, with its digest, into `files`. */
export function recordReads<D extends LoadIo>(deps: D, files: Record<string, string>): D {
  return {
    ...deps,
    readFile: (path) => {
      const data = deps.readFile(path);
      files[resolve(path)] = fileDigest(data);
      return data;
    },
  };
}

/** Why a file could not be read, in a few words: the errno code, spelt out for the common ones. */
export function errnoText(err: unknown): string {
  if (err && typeof err === 'object' && 'code' in err && typeof err.code === 'string') {
    const map: Record<string, string> = {
      ENOENT: 'ENOENT: no such file',
      EACCES: 'EACCES: permission denied',
      EISDIR: 'EISDIR: it is a directory',
    };
    return map[err.code] ?? err.code;
  }
  return err instanceof Error ? err.message : 'unreadable';
}

/** Reads `value` (relative to the config's folder); a failure is a config error at `keyPath`, undefined then. */
export function readAt(ctx: FileContext, keyPath: string, value: string): { file: string; data: Buffer } | undefined {
  const file = resolve(ctx.baseDir, value);
  try {
    return { file, data: ctx.deps.readFile(file) };
  } catch (err) {
    ctx.errors.push(new ConfigError(keyPath, value, `a readable file (${errnoText(err)}: ${file})`));
    return undefined;
  }
}

const PEM_CERT_RE = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/** Parses every certificate of a PEM bundle; errors when there is none or one does not parse. */
export function readCertificates(
  ctx: FileContext,
  keyPath: string,
  value: string,
): { file: string; data: Buffer; certs: X509Certificate[] } | undefined {
  const read = readAt(ctx, keyPath, value);
  if (read === undefined) return undefined;
  const blocks = read.data.toString('latin1').match(PEM_CERT_RE) ?? [];
  if (blocks.length === 0) {
    ctx.errors.push(
      new ConfigError(keyPath, value, `a PEM file with at least one certificate (${read.file} has none)`),
    );
    return undefined;
  }
  const certs: X509Certificate[] = [];
  for (const block of blocks) {
    try {
      certs.push(new X509Certificate(block));
    } catch {
      ctx.errors.push(
        new ConfigError(keyPath, value, `PEM certificates that parse (${read.file} has a broken one)`),
      );
      return undefined;
    }
  }
  return { ...read, certs };
}

/** A config error at `keyPath` unless `cert` is valid at the injected `now` (expired, or not yet valid). */
export function checkValidNow(ctx: FileContext, keyPath: string, value: string, cert: X509Certificate): void {
  const now = ctx.deps.now();
  const from = Date.parse(cert.validFrom);
  const to = Date.parse(cert.validTo);
  if (to <= now)
    ctx.errors.push(new ConfigError(keyPath, value, `a certificate valid now (it expired ${cert.validTo})`));
  else if (from > now)
    ctx.errors.push(
      new ConfigError(keyPath, value, `a certificate valid now (it is not valid before ${cert.validFrom})`),
    );
}

/**
 * Reads and parses an unencrypted PEM private key; an encrypted or unparsable one is a config error at
 * `keyPath` (undefined then).
 */
export function readKey(ctx: FileContext, keyPath: string, value: string): { data: Buffer; key: KeyObject } | undefined {
  const read = readAt(ctx, keyPath, value);
  if (read === undefined) return undefined;
  // An encrypted key is refused up front: there is no passphrase option, and nothing may ever prompt
  // for one (threat model #115). Node 20 reports a missing passphrase as "interrupted or cancelled".
  const text = read.data.toString('latin1');
  if (/-----BEGIN ENCRYPTED PRIVATE KEY-----|Proc-Type:\s*4,\s*ENCRYPTED/.test(text)) {
    ctx.errors.push(
      new ConfigError(
        keyPath,
        value,
        `a PEM private key (it is encrypted; give an unencrypted key: ${read.file})`,
      ),
    );
    return undefined;
  }
  try {
    return { data: read.data, key: createPrivateKey(read.data) };
  } catch (err) {
    const code = err && typeof err === 'object' && 'code' in err ? String(err.code) : '';
    const encrypted = [
      'ERR_MISSING_PASSPHRASE',
      'ERR_OSSL_CRYPTO_INTERRUPTED_OR_CANCELLED',
      'ERR_OSSL_BAD_DECRYPT',
    ].includes(code);
    const why = encrypted ? 'it is encrypted; give an unencrypted key' : 'it does not parse';
    ctx.errors.push(new ConfigError(keyPath, value, `a PEM private key (${why}: ${read.file})`));
    return undefined;
  }
}
