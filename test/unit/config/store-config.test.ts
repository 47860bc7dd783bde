/**
 * The `store` section: absent is the memory store; `type: redis` resolves its URL, password file, TLS files
 * and prefix at load; every bad value is refused with key path, value and expectation; plaintext Redis only on
 * loopback under requireEncryption; a Redis store lifts the "oidc needs workers: 1" rule.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfigText } from '../../../src/load-config.js';
import type { RuntimeConfig } from '../../../src/config/runtime.js';
import { STORE_DEFAULTS } from '../../../src/config/store.js';
import { writePki } from '../../helpers/pki.js';
import { expectConfigError, refusal } from '../../helpers/config-errors.js';

type Obj = Record<string, unknown>;

const dir = mkdtempSync(join(tmpdir(), 'portcullis-store-config-'));
const pkiDir = join(dir, 'pki');
const passwordFile = join(dir, 'redis-password');
const emptyFile = join(dir, 'empty');

beforeAll(async () => {
  await writePki(pkiDir);
  writeFileSync(passwordFile, 's3cret-redis\n', { mode: 0o600 });
  writeFileSync(emptyFile, '');
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const listener = {
  name: 'web',
  listen: '127.0.0.1:0',
  tls: { cert: join(pkiDir, 'server.pem'), key: join(pkiDir, 'server-key.pem'), clientCertificate: 'none' },
  routes: [{ id: 'echo', match: { pathPrefix: '/' }, upstream: 'builtin:echo' }],
};

function config(store: Obj | undefined, top: Obj = {}): string {
  return stringify({ admin: { enabled: false }, listeners: [listener], ...(store !== undefined ? { store } : {}), ...top });
}

function load(text: string): RuntimeConfig {
  return loadConfigText(text, join(dir, 'portcullis.yaml'));
}

describe('store config', () => {
  it('is the memory store when absent or type: memory', () => {
    expect(load(config(undefined)).store).toEqual({ type: 'memory' });
    expect(load(config({ type: 'memory' })).store).toEqual({ type: 'memory' });
  });

  it('resolves a TLS Redis with a password file, client certificate and prefix, defaults filled in', () => {
    const s = load(
      config({
        type: 'redis',
        url: 'rediss://redis.internal:6380/2',
        passwordFile,
        keyPrefix: 'gw1:',
        tls: { ca: join(pkiDir, 'ca.pem'), cert: join(pkiDir, 'client-alice.pem'), key: join(pkiDir, 'client-alice-key.pem') },
      }),
    ).store;
    if (s.type !== 'redis') throw new Error('not redis');
    expect(s).toMatchObject({
      host: 'redis.internal',
      port: 6380,
      db: 2,
      password: 's3cret-redis',
      keyPrefix: 'gw1:',
      commandTimeoutMs: STORE_DEFAULTS.commandTimeoutMs,
      whenUnavailable: 'service-unavailable',
      requiredForReadiness: false,
    });
    expect(s.tls?.ca?.toString()).toContain('BEGIN CERTIFICATE');
    expect(s.tls?.key?.toString()).toContain('PRIVATE KEY');
  });

  it('accepts plaintext redis:// on loopback under requireEncryption (IPv4, IPv6, localhost)', () => {
    for (const url of ['redis://127.0.0.1:6379', 'redis://[::1]:6379/0', 'redis://localhost:6379/1'])
      expect(load(config({ type: 'redis', url })).store.type).toBe('redis');
  });

  it('warns instead of refusing plaintext off loopback when requireEncryption is false', () => {
    const c = load(
      stringify({
        requireEncryption: false,
        admin: { enabled: false },
        listeners: [listener],
        store: { type: 'redis', url: 'redis://10.0.0.5:6379/0' },
      }),
    );
    expect(c.warnings.join('\n')).toMatch(/store.url redis:\/\/10.0.0.5:6379\/0 is PLAINTEXT/);
  });

  // [case, store block, key path, value in the message, what was expected]
  const cases: [string, Obj, string, string | RegExp, string | RegExp][] = [
    ['plaintext off loopback', { type: 'redis', url: 'redis://10.0.0.5:6379/0' }, 'store.url', 'redis://10.0.0.5', 'a rediss:// URL (TLS), or redis:// on a loopback address only'],
    ['a password in the URL (never echoed)', { type: 'redis', url: 'rediss://u:hunter2@redis:6380/0' }, 'store.url', '[redacted]', 'a URL without user or password'],
    ['not a redis URL', { type: 'redis', url: 'http://redis:6379' }, 'store.url', 'http://redis:6379', 'a redis:// or rediss:// URL'],
    ['a database past 15', { type: 'redis', url: 'rediss://redis:6380/16' }, 'store.url', '/16', 'a database number 0 to 15'],
    ['tls with redis://', { type: 'redis', url: 'redis://127.0.0.1:6379', tls: { ca: 'x' } }, 'store.tls', '{...}', 'use rediss:// for TLS'],
    ['a client certificate without its key', { type: 'redis', url: 'rediss://redis:6380', tls: { cert: join(pkiDir, 'client-alice.pem') } }, 'store.tls.key', 'nothing', 'store.tls.cert and store.tls.key together'],
    ['a missing password file', { type: 'redis', url: 'rediss://redis:6380', passwordFile: join(dir, 'nope') }, 'store.passwordFile', 'nope', /a readable file \(ENOENT/],
    ['an empty password file', { type: 'redis', url: 'rediss://redis:6380', passwordFile: emptyFile }, 'store.passwordFile', 'empty', 'it is empty'],
    ['a missing CA file', { type: 'redis', url: 'rediss://redis:6380', tls: { ca: join(dir, 'no-ca.pem') } }, 'store.tls.ca', 'no-ca.pem', 'a readable file'],
    ['an unknown type', { type: 'memcached' }, 'store.type', 'memcached', 'memory or redis'],
    ['an unknown key', { type: 'redis', url: 'rediss://redis:6380', passwd: 'x' }, 'store.passwd', '[redacted]', 'known keys'],
    ['a bad prefix', { type: 'redis', url: 'rediss://redis:6380', keyPrefix: 'a b' }, 'store.keyPrefix', 'a b', 'a prefix of letters'],
    ['a unit suffix on a timeout', { type: 'redis', url: 'rediss://redis:6380', commandTimeoutMs: '1s' }, 'store.commandTimeoutMs', '1s', 'milliseconds'],
    ['an unknown failure mode', { type: 'redis', url: 'rediss://redis:6380', whenUnavailable: 'allow' }, 'store.whenUnavailable', 'allow', '"service-unavailable" (503) or "no-session"'],
  ];
  it.each(cases)('refuses %s', (_name, store, path, value, expected) => {
    expectConfigError(refusal(() => load(config(store))), path, value, expected);
  });

  it('keeps the password out of every error message', () => {
    const err = refusal(() => load(config({ type: 'redis', url: 'rediss://u:hunter2@redis:6380/0' })));
    expect(err.message).not.toContain('hunter2');
  });

  describe('workers with an oidc provider', () => {
    const sso = (secret: string): Obj => ({
      sso: { type: 'oidc', issuer: 'https://idp.example.com/', clientId: 'gw', clientSecretFile: secret },
    });
    it('needs workers: 1 with the memory store, and not with a Redis store (sessions shared there)', () => {
      const top = { workers: 4, authProviders: sso(passwordFile) };
      const err = refusal(() => load(config(undefined, top)));
      expect(err.errors.find((e) => e.path === 'workers')?.message).toMatch(/or a store with type: redis/);
      expect(load(config({ type: 'redis', url: 'redis://127.0.0.1:6379/0' }, top)).workers).toBe(4);
    });
  });
});
