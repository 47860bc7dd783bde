import { decodeProtectedHeader } from 'jose';
import { describe, expect, it } from 'vitest';
import { tokenHash } from '../../../src/authn/bearer.js';
import { createDevSigningKey, mintDevJwt } from '../../../src/authn/jwks-dev.js';
import { createJwtProvider } from '../../../src/authn/jwt.js';
import { jwtProviderSchema } from '../../../src/authn/provider-config.js';
import type { Principal } from '../../../src/authn/principal.js';

const NOW = Date.parse('2025-06-01T00:00:00Z');
const clock = { now: () => NOW, hrtime: () => 0n };

describe('dev signing key and dev JWTs', () => {
  it('a dev token (from the JWK or the PEM) verifies through a jwksFile provider', async () => {
    const key = await createDevSigningKey();
    expect(key.publicJwks.keys).toHaveLength(1);
    expect(key.publicJwks.keys[0]).toMatchObject({
      kty: 'EC',
      crv: 'P-256',
      kid: key.kid,
      alg: 'ES256',
      use: 'sig',
    });
    expect(key.publicJwks.keys[0]).not.toHaveProperty('d');
    expect(key.privatePem).toMatch(/^-----BEGIN PRIVATE KEY-----/);
    const config = jwtProviderSchema.parse({
      type: 'jwt',
      issuer: 'https://portcullis.dev',
      audience: 'portcullis',
      jwksFile: '/certs-dev/jwks.json',
      algorithms: ['ES256'],
      typ: 'at+jwt',
    });
    const provider = createJwtProvider('dev', config, {
      clock,
      readFile: () => JSON.stringify(key.publicJwks),
    });
    for (const k of [key.privateJwk, key.privatePem]) {
      const token = await mintDevJwt({
        key: k,
        issuer: 'https://portcullis.dev',
        audience: 'portcullis',
        sub: 'alice',
        scope: 'a b',
        ttlSeconds: 3600,
        now: NOW,
      });
      expect(decodeProtectedHeader(token)).toEqual({ alg: 'ES256', kid: key.kid, typ: 'at+jwt' });
      const p = (await provider.authenticate({ kind: 'bearer', token: token, hash: tokenHash(token) })) as Principal;
      expect(p).toMatchObject({
        subject: 'alice',
        scopes: ['a', 'b'],
        clientId: 'portcullis-dev',
        expiresAtMs: NOW + 3_600_000,
      });
    }
  });

  it('refuses a bad ttl or a non-P-256 key', async () => {
    const key = await createDevSigningKey();
    const base = { key: key.privateJwk, issuer: 'i', audience: 'a', sub: 's', now: NOW };
    await expect(mintDevJwt({ ...base, ttlSeconds: 0 })).rejects.toThrow(TypeError);
    await expect(
      mintDevJwt({ ...base, ttlSeconds: 60, key: { ...key.privateJwk, crv: 'P-384' } }),
    ).rejects.toThrow(TypeError);
    await expect(mintDevJwt({ ...base, ttlSeconds: 60, key: key.publicJwks.keys[0]! })).rejects.toThrow(
      TypeError,
    );
  });

  it('two keys differ', async () => {
    expect((await createDevSigningKey()).kid).not.toBe((await createDevSigningKey()).kid);
  });
});
