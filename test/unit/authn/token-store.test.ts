import { describe, expect, it } from 'vitest';
import { tokenHash } from '../../../src/authn/bearer.js';
import {
  addToken,
  createToken,
  listTokens,
  parseTokenFile,
  revokeToken,
  TokenFileError,
} from '../../../src/authn/token-store.js';

const NOW = Date.parse('2025-06-01T00:00:00Z');

describe('createToken', () => {
  it('makes a pcs_ token of 32 random bytes and stores only its hash', () => {
    const { token, record } = createToken('alice', 3600, NOW, { scopes: ['read'] });
    expect(token).toMatch(/^pcs_[A-Za-z0-9_-]{43}$/);
    expect(record).toEqual({
      name: 'alice',
      sha256: tokenHash(token),
      createdAt: '2025-06-01T00:00:00.000Z',
      expiresAt: '2025-06-01T01:00:00.000Z',
      scopes: ['read'],
    });
    expect(JSON.stringify(record)).not.toContain(token.slice(4));
  });

  it('two tokens differ', () => {
    expect(createToken('a', undefined, NOW).token).not.toBe(createToken('a', undefined, NOW).token);
  });

  it.each([[''], ['has space'], ['-lead'], ['x'.repeat(65)], ['a/b']])('refuses the name %j', (name) => {
    expect(() => createToken(name, 60, NOW)).toThrow(TypeError);
  });

  it.each([[0], [-1], [1.5]])('refuses the lifetime %j', (ttl) => {
    expect(() => createToken('a', ttl, NOW)).toThrow(TypeError);
  });
});

describe('the file: add, list, revoke', () => {
  it('round-trips and reports status', () => {
    const a = createToken('alice', 3600, NOW);
    const b = createToken('bob', 60, NOW - 120_000);
    let text = addToken(undefined, a.record, NOW);
    text = addToken(text, b.record, NOW);
    expect(listTokens(text, NOW).map((t) => [t.name, t.status, t.hashPrefix])).toEqual([
      ['alice', 'active', a.record.sha256.slice(0, 12)],
      ['bob', 'expired', b.record.sha256.slice(0, 12)],
    ]);
    const r = revokeToken(text, 'alice', NOW + 1000);
    expect(r.revoked).toBe(1);
    expect(listTokens(r.text, NOW)[0]).toMatchObject({ name: 'alice', status: 'revoked' });
    expect(parseTokenFile(r.text).tokens[0]).toMatchObject({
      revoked: true,
      revokedAt: '2025-06-01T00:00:01.000Z',
    });
    expect(revokeToken(r.text, 'alice', NOW).revoked).toBe(0);
    expect(revokeToken(r.text, 'nobody', NOW).revoked).toBe(0);
  });

  it('refuses a second live token with one name, allows it after revocation', () => {
    const text = addToken(undefined, createToken('alice', 60, NOW).record, NOW);
    expect(() => addToken(text, createToken('alice', 60, NOW).record, NOW)).toThrow(TokenFileError);
    const revoked = revokeToken(text, 'alice', NOW).text;
    expect(() => addToken(revoked, createToken('alice', 60, NOW).record, NOW)).not.toThrow();
  });

  it.each([
    ['half-written', '{"tokens": [ {"name": "a"'],
    ['unknown key', '{"tokens": [], "extra": 1}'],
    ['bad hash', '{"tokens": [{"name":"a","sha256":"XYZ","createdAt":"2025-01-01T00:00:00Z"}]}'],
    ['bad date', `{"tokens": [{"name":"a","sha256":"${'a'.repeat(64)}","createdAt":"yesterday"}]}`],
    [
      'duplicate hash',
      `{"tokens": [{"name":"a","sha256":"${'a'.repeat(64)}","createdAt":"2025-01-01T00:00:00Z"},{"name":"b","sha256":"${'a'.repeat(64)}","createdAt":"2025-01-01T00:00:00Z"}]}`,
    ],
    ['not an object', '[]'],
  ])('parseTokenFile refuses a %s file', (_name, text) => {
    expect(() => parseTokenFile(text)).toThrow(TokenFileError);
  });

  it('an empty file is an empty list', () => {
    expect(parseTokenFile('')).toEqual({ tokens: [] });
  });
});
