/** The gateway's cookies: their form, how they are read, and that they never go upstream. */
import { describe, expect, it } from 'vitest';
import {
  clearCookie,
  newCookieId,
  readCookie,
  SESSION_COOKIE,
  setCookie,
  withoutGatewayCookies,
} from '../../../src/authn/session-cookie.js';

describe('session cookies', () => {
  it('are __Host-, Secure, HttpOnly, SameSite=Lax, Path=/ and hold a 43-character random id', () => {
    const id = newCookieId();
    expect(id).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(newCookieId()).not.toBe(id);
    const line = setCookie(SESSION_COOKIE, id, 43_200);
    expect(line).toBe(`__Host-portcullis=${id}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=43200`);
    expect(line.length).toBeLessThan(1024);
    expect(clearCookie(SESSION_COOKIE)).toBe('__Host-portcullis=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0');
  });

  it.each<[string, string[], string | undefined]>([
    ['one header', ['Cookie', `a=1; __Host-portcullis=${'x'.repeat(43)}; b=2`], 'x'.repeat(43)],
    ['HTTP/2 split headers', ['cookie', 'a=1', 'cookie', `__Host-portcullis=${'y'.repeat(43)}`], 'y'.repeat(43)],
    ['the first of two', ['cookie', `__Host-portcullis=${'a'.repeat(43)}; __Host-portcullis=${'b'.repeat(43)}`], 'a'.repeat(43)],
    ['absent', ['cookie', 'a=1'], undefined],
    ['tampered (too short)', ['cookie', `__Host-portcullis=${'x'.repeat(42)}`], undefined],
    ['tampered (bad characters)', ['cookie', `__Host-portcullis=${'x'.repeat(42)}.`], undefined],
    ['a prefix of the name only', ['cookie', `__Host-portcullis-login=${'x'.repeat(43)}`], undefined],
  ])('reads the session cookie: %s', (_name, raw, want) => {
    expect(readCookie(raw, SESSION_COOKIE)).toBe(want);
  });

  it.each<[string, string]>([
    ['a=1; b=2', 'a=1; b=2'],
    [`a=1; __Host-portcullis=${'x'.repeat(43)}; b=2`, 'a=1; b=2'],
    [`__Host-portcullis=v;__Host-portcullis-login=w`, ''],
    [`__Host-portcullis-login=w; theme=dark`, 'theme=dark'],
  ])('removes the gateway cookies from %j', (value, want) => {
    expect(withoutGatewayCookies(value)).toBe(want);
  });
});
