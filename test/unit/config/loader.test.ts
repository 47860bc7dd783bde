/**
 * config/load.ts `createConfigLoader` over injected reads and the injected auth-provider check: config/ builds
 * no provider itself (src/load-config.ts plugs the real check in). In memory: a map of files, no disk.
 */
import { stringify } from 'yaml';
import { describe, expect, it } from 'vitest';
import type { AuthProviderConfig } from '../../../src/authn/provider-config.js';
import type { LoadIo } from '../../../src/config/context.js';
import { fileDigest } from '../../../src/config/files.js';
import { createConfigLoader } from '../../../src/config/load.js';
import { ConfigError } from '../../../src/errors.js';
import { errorAt, refusal } from '../../helpers/config-errors.js';

const CONFIG = stringify({
  requireEncryption: false,
  admin: { enabled: false },
  authProviders: { team: { type: 'static', tokensFile: 'tokens.json' } },
  listeners: [
    {
      name: 'main',
      listen: '127.0.0.1:0',
      plaintext: true,
      routes: [{ id: 'api', match: { pathPrefix: '/' }, upstream: 'builtin:echo', auth: { providers: ['team'] } }],
    },
  ],
});

const FILES: Record<string, string> = {
  '/etc/portcullis/portcullis.yaml': CONFIG,
  '/etc/portcullis/tokens.json': '{"tokens":[]}\n',
};

const readFile = (path: string): Buffer => {
  const text = FILES[path];
  if (text === undefined) throw Object.assign(new Error(`ENOENT: ${path}`), { code: 'ENOENT' });
  return Buffer.from(text);
};

type Check = (name: string, config: AuthProviderConfig, io: LoadIo) => void;
const loader = (checkAuthProvider: Check) => createConfigLoader({ readFile, now: () => 0, checkAuthProvider });

describe('createConfigLoader: the injected auth-provider check', () => {
  it('gets each provider with its file paths made absolute, and reads through the loader (the read is recorded)', () => {
    const seen: { name: string; config: AuthProviderConfig }[] = [];
    const config = loader((name, provider, io) => {
      seen.push({ name, config: provider });
      io.readFile('/etc/portcullis/tokens.json');
    }).loadFile('/etc/portcullis/portcullis.yaml');
    expect(seen).toEqual([{ name: 'team', config: { type: 'static', tokensFile: '/etc/portcullis/tokens.json' } }]);
    expect(config.files).toEqual({
      '/etc/portcullis/portcullis.yaml': fileDigest(Buffer.from(CONFIG)),
      '/etc/portcullis/tokens.json': fileDigest(Buffer.from(FILES['/etc/portcullis/tokens.json'] ?? '')),
    });
  });

  it('lists a ConfigError it throws as it is, with the line of its key', () => {
    const err = refusal(() =>
      loader(() => {
        throw new ConfigError('authProviders.team.tokensFile', 'tokens.json', 'a readable tokens file (broken)');
      }).loadFile('/etc/portcullis/portcullis.yaml'),
    );
    expect(err.errors).toHaveLength(1);
    expect(errorAt(err, 'authProviders.team.tokensFile').message).toBe(
      'authProviders.team.tokensFile: got "tokens.json"; expected a readable tokens file (broken)',
    );
    const line = CONFIG.split('\n').findIndex((l) => l.trim().startsWith('tokensFile:')) + 1;
    expect(err.lines).toEqual([line]);
  });

  it('reports any other failure as an unusable provider at its key', () => {
    const err = refusal(() =>
      loader(() => {
        throw new Error('boom');
      }).loadText(CONFIG, '/etc/portcullis/portcullis.yaml'),
    );
    expect(errorAt(err, 'authProviders.team').message).toBe(
      'authProviders.team: got "static"; expected a usable provider (boom)',
    );
  });

  it('is not run for a provider whose file cannot be read (the loader reports the file)', () => {
    let runs = 0;
    const err = refusal(() =>
      loader(() => {
        runs++;
      }).loadText(CONFIG.replace('tokens.json', 'missing.json'), '/etc/portcullis/portcullis.yaml'),
    );
    expect(runs).toBe(0);
    expect(errorAt(err, 'authProviders.team.tokensFile').message).toBe(
      'authProviders.team.tokensFile: got "missing.json"; expected a readable file (ENOENT: no such file: /etc/portcullis/missing.json)',
    );
  });
});
