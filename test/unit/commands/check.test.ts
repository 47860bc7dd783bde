/**
 * `check --print`'s redaction: every secret-ish value becomes "[redacted]" wherever it sits, and settings
 * that only mention a secret (a `...File` path, `forwardToken: true`, `maxTokenAgeSeconds`) stay readable.
 */
import { describe, expect, it } from 'vitest';
import { REDACTED, redactSecrets } from '../../../src/commands/check.js';

/** A PEM block shaped like a private key (a truncated header, no key in it), built so the file holds no key block. */
const PEM_KIND = ['PRIVATE', 'KEY'].join(' ');
const PEM_KEY = `-----BEGIN ${PEM_KIND}-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END ${PEM_KIND}-----\n`;
const JWT = 'eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLWJ5dGVz';
const STATIC = 'pcs_AAAABBBBCCCCDDDDEEEEFFFF0123456789abcdef';

describe('redactSecrets', () => {
  it.each<[string, unknown]>([
    ['clientSecret', 's3cr3t-value'],
    ['password', 'hunter2'],
    ['cookieSecret', 'c00kie-secret'],
    ['apiKey', 'ak-123456'],
    ['api_key', 'ak-123456'],
    ['bearerToken', 'tok-123'],
    ['sessionKey', 'sess-key-bytes'],
    ['hmacKey', 'hmac-key'],
    ['passphrase', 'open sesame'],
    ['credentials', 'user:pass'],
    ['secrets', ['one', 'two']],
  ])('a value under %j is redacted (by its name)', (key, value) => {
    const out = redactSecrets({ nested: { [key]: value } }) as { nested: Record<string, unknown> };
    expect(out.nested[key]).toEqual(Array.isArray(value) ? value.map(() => REDACTED) : REDACTED);
  });

  it('inline private keys, JWTs and static tokens are redacted under any key', () => {
    const out = redactSecrets({ a: PEM_KEY, list: [JWT, 'plain'], b: { c: STATIC } });
    expect(out).toEqual({ a: REDACTED, list: [REDACTED, 'plain'], b: { c: REDACTED } });
  });

  it('URL passwords and secret query parameters are redacted, the rest of the URL kept', () => {
    const out = redactSecrets({
      u1: 'https://svc:p%40ss@idp.example/jwks',
      u2: 'https://idp.example/jwks?access_token=abc123&tenant=t1&sig=xyz#frag',
      u3: 'https://idp.example/introspect?api_key=k1',
      host: 'idp.example',
    });
    expect(out).toEqual({
      u1: `https://svc:${REDACTED}@idp.example/jwks`,
      u2: `https://idp.example/jwks?access_token=${REDACTED}&tenant=t1&sig=${REDACTED}#frag`,
      u3: `https://idp.example/introspect?api_key=${REDACTED}`,
      host: 'idp.example',
    });
    const text = JSON.stringify(out);
    for (const secret of ['p%40ss', 'abc123', 'xyz', 'k1']) expect(text).not.toContain(secret);
  });

  it('keeps what only names a secret: file paths, booleans, limits', () => {
    const config = {
      clientSecretFile: '/run/secrets/introspection',
      tokensFile: 'tokens.json',
      forwardToken: true,
      allowQueryToken: false,
      maxTokenAgeSeconds: 600,
      key: 'certs/server-key.pem',
      clientId: 'portcullis',
    };
    expect(redactSecrets(config)).toEqual(config);
  });
});
