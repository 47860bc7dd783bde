/**
 * `portcullis check --print`: the effective config (the file with every default applied) as YAML on stdout,
 * with no secret of the config in it — not the introspection client secret (its file is named, never read
 * into the print), not a static token, not a private key, not a credential in an IdP URL's query.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse, stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDevSigningKey } from '../../src/authn/jwks-dev.js';
import { tokenCreate } from '../../src/commands/token.js';
import { runCli } from '../helpers/binary.js';
import { writePki, type TestPkiPaths } from '../helpers/pki.js';

let dir: string;
let pki: TestPkiPaths;
let configFile: string;
/** Every secret the config reaches, directly or through a file. */
const secrets: string[] = [];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'portcullis-print-'));
  pki = await writePki(join(dir, 'pki'));
  const introspectionSecret = `intro-${randomBytes(12).toString('hex')}`;
  await writeFile(join(dir, 'introspection-secret'), `${introspectionSecret}\n`, { mode: 0o600 });
  const apiKey = `jwks-${randomBytes(12).toString('hex')}`;
  const created = await tokenCreate({
    file: join(dir, 'tokens.json'),
    name: 'carol',
    expiresInSeconds: 3600,
  });
  const signing = await createDevSigningKey();
  await writeFile(join(dir, 'jwks.json'), JSON.stringify(signing.publicJwks));
  secrets.push(introspectionSecret, apiKey, created.token, signing.privatePem.split('\n')[1] ?? '');
  // The private keys of the TLS files the config names: their bodies must not appear either.
  for (const keyFile of [pki.server.key, pki.clients.alice.key])
    secrets.push(readFileSync(keyFile, 'utf8').split('\n')[1] ?? '');
  configFile = join(dir, 'portcullis.yaml');
  await writeFile(
    configFile,
    stringify({
      admin: { enabled: false },
      authProviders: {
        corp: {
          type: 'introspection',
          endpoint: 'https://127.0.0.1:1/introspect',
          clientId: 'portcullis',
          clientSecretFile: 'introspection-secret',
        },
        idp: {
          type: 'jwt',
          issuer: 'https://idp.example/',
          audience: 'api',
          // A credential in the query of a key-set URL (some IdPs and gateways do this).
          jwksUri: `https://127.0.0.1:1/jwks?api_key=${apiKey}`,
          algorithms: ['ES256'],
        },
        dev: {
          type: 'jwt',
          issuer: 'https://dev/',
          audience: 'dev',
          jwksFile: 'jwks.json',
          algorithms: ['ES256'],
        },
        team: { type: 'static', tokensFile: 'tokens.json' },
      },
      listeners: [
        {
          name: 'main',
          listen: '127.0.0.1:0',
          tls: { cert: pki.server.cert, key: pki.server.key, clientCa: pki.ca, crl: pki.crl },
          routes: [
            {
              id: 'api',
              match: { pathPrefix: '/' },
              upstream: {
                url: 'https://127.0.0.1:9443',
                ca: pki.ca,
                cert: pki.clients.alice.cert,
                key: pki.clients.alice.key,
              },
              auth: { providers: ['team', 'corp', 'idp', 'dev'], forwardToken: true },
            },
          ],
        },
      ],
    }),
  );
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('portcullis check --print', () => {
  it('prints the effective config with every default, and none of the secrets', async () => {
    const r = await runCli(['check', '--print', '--config', configFile]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^# config OK: /);
    for (const secret of secrets) {
      expect(secret.length).toBeGreaterThan(8);
      expect(r.stdout).not.toContain(secret);
    }
    const printed: unknown = parse(r.stdout);
    // Defaults the file never wrote.
    expect(printed).toMatchObject({
      requireEncryption: true,
      timeouts: { tlsHandshakeMs: 10_000 },
      log: { level: 'info', access: true },
      listeners: [
        {
          protocol: 'http',
          tls: { clientCertificate: 'require' },
          routes: [{ auth: { forwardToken: true } }],
        },
      ],
      authProviders: {
        // The secret file is named (what an operator needs to check), its content is not there.
        corp: { authMethod: 'client_secret_basic', clientSecretFile: 'introspection-secret' },
        idp: { jwksUri: 'https://127.0.0.1:1/jwks?api_key=[redacted]' },
      },
    });
  });

  it('an invalid config: exit 3, the errors on stderr, nothing printed', async () => {
    const bad = join(dir, 'bad.yaml');
    await writeFile(bad, 'listeners: []\n');
    const r = await runCli(['check', '--print', '--config', bad]);
    expect(r.code).toBe(3);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain('listeners');
  });
});
