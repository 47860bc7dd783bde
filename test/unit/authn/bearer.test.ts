import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { extractBearer, MAX_TOKEN_LENGTH, removeQueryToken, tokenHash } from '../../../src/authn/bearer.js';
import { GatewayError } from '../../../src/errors.js';

const h = (...values: string[]): string[] => values.flatMap((v) => ['Authorization', v]);

function code(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return err instanceof GatewayError ? err.code : `not a GatewayError: ${String(err)}`;
  }
  return undefined;
}

describe('extractBearer: the Authorization header', () => {
  it.each([
    ['Bearer abc', 'abc'],
    ['bearer abc', 'abc'], // RFC 9110 §11.1: the scheme is case-insensitive (threat model #42)
    ['BEARER abc', 'abc'],
    ['Bearer abc==', 'abc=='],
    ['Bearer a-b.c_d~e+f/g', 'a-b.c_d~e+f/g'],
    ['Bearer tok.extra', 'tok.extra'], // token68 allows dots: the provider decides
    ['  Bearer abc\t', 'abc'], // OWS around the field value is not part of it (RFC 9110 §5.5)
  ])('%j → token %j', (value, token) => {
    expect(extractBearer(h(value), '', false)).toEqual({ token });
  });

  it('accepts any header-name casing', () => {
    expect(extractBearer(['AUTHORIZATION', 'Bearer x', 'host', 'a'], '', false)).toEqual({ token: 'x' });
  });

  it('no header → none', () => {
    expect(extractBearer(['host', 'example.com'], '', false)).toEqual({ none: true });
  });

  it.each([['Basic dXNlcjpwYXNz'], ['Digest username="a"'], ['Token abc']])(
    'another scheme %j is not a Bearer credential → none',
    (value) => {
      expect(extractBearer(h(value), '', false)).toEqual({ none: true });
    },
  );

  it.each([
    ['empty header', ''],
    ['scheme only', 'Bearer'],
    ['scheme and a space', 'Bearer '],
    ['two spaces', 'Bearer  abc'],
    ['space inside the token', 'Bearer a b'],
    ['padding in the middle', 'Bearer ab=c'],
    ['a comma list', 'Bearer a, Bearer b'],
    ['non-base64url bytes', 'Bearer abc$'],
    ['non-ASCII', 'Bearer abcé'],
    ['quotes', 'Bearer "abc"'],
  ])('%s → ERR_AUTHN_MALFORMED (threat model #42)', (_name, value) => {
    expect(code(() => extractBearer(h(value), '', false))).toBe('ERR_AUTHN_MALFORMED');
  });

  it.each([
    ['valid then garbage', ['Bearer good', 'Bearer garbage!']],
    ['garbage then valid', ['Bearer garbage!', 'Bearer good']],
    ['two valid', ['Bearer a', 'Bearer a']],
    ['Bearer and Basic', ['Basic eA==', 'Bearer a']],
  ])('two Authorization headers (%s) → malformed whatever the order (threat model #43)', (_name, values) => {
    expect(code(() => extractBearer(h(...values), '', false))).toBe('ERR_AUTHN_MALFORMED');
  });

  it('caps the token length before anything else (threat model #41)', () => {
    expect(extractBearer(h(`Bearer ${'a'.repeat(MAX_TOKEN_LENGTH)}`), '', false)).toEqual({
      token: 'a'.repeat(MAX_TOKEN_LENGTH),
    });
    expect(code(() => extractBearer(h(`Bearer ${'a'.repeat(MAX_TOKEN_LENGTH + 1)}`), '', false))).toBe(
      'ERR_AUTHN_MALFORMED',
    );
    // Built before the clock starts: only extractBearer is timed.
    const huge = h(`Bearer ${'a'.repeat(1024 * 1024)}`);
    const started = process.hrtime.bigint();
    expect(code(() => extractBearer(huge, '', false))).toBe('ERR_AUTHN_MALFORMED');
    // The length check is microseconds; the bound leaves room for a stalled CI machine.
    expect(Number(process.hrtime.bigint() - started) / 1e6).toBeLessThan(500);
  });
});

describe('extractBearer: access_token in the query (RFC 6750 §2.3)', () => {
  it.each([['access_token=abc'], ['?access_token=abc'], ['a=1&access_token=abc'], ['%61ccess_token=abc']])(
    '%j is refused unless the route allows it',
    (query) => {
      expect(code(() => extractBearer([], query, false))).toBe('ERR_AUTHN_MALFORMED');
      expect(extractBearer([], query, true)).toEqual({ token: 'abc' });
    },
  );

  it('decodes the query value (percent-encoded token68 characters)', () => {
    expect(extractBearer([], 'access_token=a%2Bb%2Fc%3D', true)).toEqual({ token: 'a+b/c=' });
  });

  it.each([
    ['header and query', h('Bearer abc'), 'access_token=abc'],
    ['two query tokens', [], 'access_token=a&access_token=b'],
    ['an empty query token', [], 'access_token='],
    ['a 1 MB query token', [], `access_token=${'a'.repeat(1024 * 1024)}`],
    ['a non-token68 query token', [], 'access_token=a%20b'],
  ])('%s → malformed even when allowed', (_name, headers, query) => {
    expect(code(() => extractBearer(headers, query, true))).toBe('ERR_AUTHN_MALFORMED');
  });

  it('a query without access_token does not matter', () => {
    expect(extractBearer(h('Bearer abc'), 'x=access_token', false)).toEqual({ token: 'abc' });
    expect(extractBearer([], '?a=1&b=%20', false)).toEqual({ none: true });
  });

  it.each([
    ['access_token=abc', ''],
    ['?access_token=abc', ''],
    ['?a=1&access_token=abc&b=2', '?a=1&b=2'],
    ['a=%2F&%61ccess_token=x', '?a=%2F'],
    ['a=1', '?a=1'],
    ['', ''],
  ])('removeQueryToken(%j) → %j', (query, out) => {
    expect(removeQueryToken(query)).toBe(out);
  });
});

describe('tokenHash', () => {
  it('is SHA-256 hex', () => {
    expect(tokenHash('abc')).toBe('ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
    expect(tokenHash('x')).toMatch(/^[0-9a-f]{64}$/);
  });

  it('hashes the UTF-8 bytes of a non-ASCII string', () => {
    // SHA-256 of the 2 UTF-8 bytes C3 A9 ("é"), not of the Latin-1 byte E9.
    expect(tokenHash('é')).toBe(
      createHash('sha256')
        .update(Buffer.from([0xc3, 0xa9]))
        .digest('hex'),
    );
  });
});
