/**
 * The file side of `portcullis token create | list | revoke | mint`: atomic 0600 writes, concurrent edits
 * serialised by the lock, and the dev JWT accepted by a `jwksFile` provider with the documented issuer and
 * audience (what the embedded config's `dev-jwt` provider expects).
 */
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { tokenHash } from '../../../src/authn/bearer.js';
import { createDevSigningKey, DEV_AUDIENCE, DEV_ISSUER } from '../../../src/authn/jwks-dev.js';
import { createJwtProvider } from '../../../src/authn/jwt.js';
import { jwtProviderSchema } from '../../../src/authn/provider-config.js';
import type { Principal } from '../../../src/authn/principal.js';
import {
  tokenCreate,
  tokenList,
  tokenMint,
  tokenRevoke,
  TokenCommandError,
} from '../../../src/commands/token.js';
import { createStaticProvider } from '../../../src/authn/static.js';

const dirs: string[] = [];
async function fresh(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'portcullis-token-'));
  dirs.push(d);
  return d;
}
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

describe('token create | list | revoke', () => {
  it('twenty concurrent creates all land in the file (the lock serialises them); mode 0600; no lock left', async () => {
    const file = join(await fresh(), 'tokens.json');
    const made = await Promise.all(
      Array.from({ length: 20 }, (_, i) => tokenCreate({ file, name: `t${i}`, expiresInSeconds: 3600 })),
    );
    const list = await tokenList({ file });
    expect(list.map((t) => t.name).sort()).toEqual(made.map((m) => m.record.name).sort());
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    await expect(stat(`${file}.lock`)).rejects.toThrow(/ENOENT/);
    const text = await readFile(file, 'utf8');
    for (const m of made) {
      expect(text).not.toContain(m.token);
      expect(text).toContain(tokenHash(m.token));
    }
  });

  it('what the static provider accepts follows create and revoke', async () => {
    const file = join(await fresh(), 'tokens.json');
    const { token } = await tokenCreate({ file, name: 'bob', expiresInSeconds: 60, scopes: ['read'] });
    let now = Date.now();
    const p = createStaticProvider(
      'team',
      { type: 'static', tokensFile: file },
      { clock: { now: () => now, hrtime: () => BigInt(now) * 1_000_000n } },
    );
    expect(((await p.authenticate({ kind: 'bearer', token: token, hash: tokenHash(token) })) as Principal).subject).toBe('bob');
    expect(await tokenRevoke({ file, name: 'bob' })).toEqual({ revoked: 1 });
    now += 1_001; // the provider re-checks the file at most once a second
    await expect(p.authenticate({ kind: 'bearer', token: token, hash: tokenHash(token) })).rejects.toMatchObject({
      code: 'ERR_AUTHN_INVALID_TOKEN',
    });
  });

  it('a stale lock left by a crashed edit is removed', async () => {
    const file = join(await fresh(), 'tokens.json');
    await writeFile(`${file}.lock`, '');
    const { utimes } = await import('node:fs/promises');
    const old = new Date(Date.now() - 60_000);
    await utimes(`${file}.lock`, old, old);
    await tokenCreate({ file, name: 'a', expiresInSeconds: 60 });
    expect((await tokenList({ file })).map((t) => t.name)).toEqual(['a']);
  });

  it('refusals are TokenCommandErrors naming the file', async () => {
    const file = join(await fresh(), 'tokens.json');
    await expect(tokenList({ file })).rejects.toThrow(TokenCommandError);
    await writeFile(file, '{"tokens": [{"name": 1}]}');
    await expect(tokenList({ file })).rejects.toThrow(new RegExp(`${file}: tokens\\.0\\.name`));
    await expect(
      tokenCreate({ file: join(file, 'x', 'y.json'), name: 'a', expiresInSeconds: 1 }),
    ).rejects.toThrow(TokenCommandError);
  });
});

describe('token mint', () => {
  it('signs a dev token that a jwksFile provider with the documented issuer and audience accepts', async () => {
    const d = await fresh();
    const key = await createDevSigningKey();
    await writeFile(join(d, 'jwt-signing-key.pem'), key.privatePem);
    const jwt = await tokenMint({
      keyFile: join(d, 'jwt-signing-key.pem'),
      sub: 'alice',
      scope: 'a b',
      ttlSeconds: 600,
    });
    const provider = createJwtProvider(
      'dev-jwt',
      jwtProviderSchema.parse({
        type: 'jwt',
        issuer: DEV_ISSUER,
        audience: DEV_AUDIENCE,
        jwksFile: '/x/jwks.json',
        algorithms: ['ES256'],
        typ: 'at+jwt',
      }),
      { clock: { now: () => Date.now(), hrtime: () => 0n }, readFile: () => JSON.stringify(key.publicJwks) },
    );
    const p = (await provider.authenticate({ kind: 'bearer', token: jwt, hash: tokenHash(jwt) })) as Principal;
    expect(p).toMatchObject({ subject: 'alice', scopes: ['a', 'b'], provider: 'dev-jwt' });
  });

  it('refuses a missing key file (pointing at certs init) and an empty subject', async () => {
    const d = await fresh();
    await expect(tokenMint({ keyFile: join(d, 'nope.pem'), sub: 'a', ttlSeconds: 60 })).rejects.toThrow(
      /run `portcullis certs init` first/,
    );
    await expect(tokenMint({ keyFile: join(d, 'nope.pem'), sub: '', ttlSeconds: 60 })).rejects.toThrow(
      /--sub/,
    );
  });
});
