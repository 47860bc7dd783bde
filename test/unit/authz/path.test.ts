import { describe, expect, it } from 'vitest';
import { normalizeRequestTarget } from '../../../src/authz/path.js';

describe('normalizeRequestTarget: threat model #67 matrix', () => {
  it.each<[string, string]>([
    ['/public/../admin', '/admin'],
    ['/public/%2e%2e/admin', '/admin'],
    ['/public/%2E%2E/admin', '/admin'],
    ['/public/%252e%252e/admin', '/public/%252e%252e/admin'],
    ['//admin/x', '/admin/x'],
    ['/ADMIN', '/ADMIN'],
    ['/admin/.', '/admin/'],
    ['/%61dmin', '/admin'],
  ])('%j → path %j', (target, path) => {
    expect(normalizeRequestTarget(target)).toEqual({ ok: true, path, query: '' });
  });

  it.each<[string, string]>([
    ['/public/..%2fadmin', 'encoded_slash'],
    ['/public\\..\\admin', 'backslash'],
    ['/admin;x', 'semicolon'],
    ['/public;/../admin', 'semicolon'],
    ['/admin%00', 'control_char'],
    ['/admin#frag', 'fragment'],
    ['/public#/../admin', 'fragment'],
  ])('%j → rejected (%s)', (target, reason) => {
    expect(normalizeRequestTarget(target)).toEqual({ ok: false, reason });
  });
});

describe('normalizeRequestTarget: accepted targets', () => {
  it.each<[string, string, string]>([
    // fast path: returned as is
    ['/', '/', ''],
    ['/admin', '/admin', ''],
    ['/static/app.min.js', '/static/app.min.js', ''],
    ['/a/b/', '/a/b/', ''],
    ['/a-b_c~d', '/a-b_c~d', ''],
    ['/ADMIN/X', '/ADMIN/X', ''],
    // queries: raw, with the "?"
    ['/search?q=1&r=%zz', '/search', '?q=1&r=%zz'],
    ['/search?', '/search', '?'],
    ['/a?next=/../admin;x', '/a', '?next=/../admin;x'],
    ['/a?x=%2F%5C\\', '/a', '?x=%2F%5C\\'],
    ['/a/../b?x=1', '/b', '?x=1'],
    ['/?x', '/', '?x'],
    // slash merging and dot segments
    ['//', '/', ''],
    ['///a///b//', '/a/b/', ''],
    ['/a/./b', '/a/b', ''],
    ['/a/b/..', '/a/', ''],
    ['/a/b/../', '/a/', ''],
    ['/a/..', '/', ''],
    ['/a/b/../../c', '/c', ''],
    ['/.', '/', ''],
    ['/./', '/', ''],
    ['/a/...', '/a/...', ''],
    ['/a/..b/.c', '/a/..b/.c', ''],
    ['/.well-known/x', '/.well-known/x', ''],
    ['/a/.%2E/b', '/b', ''],
    // escapes: unreserved decoded, others upper-cased, %25 kept
    ['/%41%7a%30%2D%2e%5F%7E', '/Az0-._~', ''],
    ['/caf%c3%a9', '/caf%C3%A9', ''],
    ['/a%20b', '/a%20b', ''],
    ['/a%3bb', '/a%3Bb', ''],
    ['/%25', '/%25', ''],
    ['/%252F', '/%252F', ''],
  ])('%j → path %j, query %j', (target, path, query) => {
    expect(normalizeRequestTarget(target)).toEqual({ ok: true, path, query });
  });

  it('returns the same string on the fast path', () => {
    const target = '/api/v1/items/42';
    const result = normalizeRequestTarget(target);
    expect(result.ok && result.path).toBe(target);
  });
});

describe('normalizeRequestTarget: rejected targets', () => {
  it.each<[string, string]>([
    ['', 'not_origin_form'],
    ['admin', 'not_origin_form'],
    ['*', 'not_origin_form'],
    ['http://example.com/admin', 'not_origin_form'],
    ['example.com:443', 'not_origin_form'],
    ['?x=1', 'not_origin_form'],
    ['/..', 'dot_segment_above_root'],
    ['/../', 'dot_segment_above_root'],
    ['/../admin', 'dot_segment_above_root'],
    ['/a/b/../../..', 'dot_segment_above_root'],
    ['/a/../../b', 'dot_segment_above_root'],
    ['/%2e%2e/admin', 'dot_segment_above_root'],
    ['/a/%zz', 'bad_percent'],
    ['/a/%', 'bad_percent'],
    ['/a/%4', 'bad_percent'],
    ['/a/%g1', 'bad_percent'],
    ['/a%2F..', 'encoded_slash'],
    ['/a%2fb', 'encoded_slash'],
    ['/a%5Cb', 'encoded_backslash'],
    ['/a%5cb', 'encoded_backslash'],
    ['/a%0Ab', 'control_char'],
    ['/a%0d%0aX: y', 'control_char'],
    ['/a%7F', 'control_char'],
    ['/a b', 'control_char'],
    ['/a\tb', 'control_char'],
    ['/a\r\nX-Injected: 1', 'control_char'],
    ['/a\u0000', 'control_char'],
    ['/a\u007f', 'control_char'],
    ['/a?x=1 2', 'control_char'],
    ['/a?x=\n', 'control_char'],
    ['/a?x=\u0000', 'control_char'],
    ['/a?x#y', 'fragment'],
    ['/a?x=1#', 'fragment'],
    ['/#', 'fragment'],
    ['/caf\u00e9', 'non_ascii'],
    ['/a?q=\u00e9', 'non_ascii'],
    ['/\u2025/admin', 'non_ascii'],
    ['/a\\b', 'backslash'],
    ['/a;', 'semicolon'],
    ['/;/admin', 'semicolon'],
  ])('%j → %s', (target, reason) => {
    expect(normalizeRequestTarget(target)).toEqual({ ok: false, reason });
  });
});
