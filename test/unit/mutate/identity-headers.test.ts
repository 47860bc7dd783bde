/**
 * The identity headers of a route with `auth` (issue 3 point 6): `X-Auth-Subject/-Scopes/-Provider` set by
 * the gateway among its own headers, client copies gone, Authorization removed unless the route forwards it,
 * and every value header-safe (no CR/LF injection, no invalid field value for undici to throw on).
 */
import { describe, expect, it } from 'vitest';
import { buildUpstreamHeaders, headerSafe, withPrincipal } from '../../../src/mutate/request-headers.js';

const gw = {
  host: 'gw.example',
  clientAddress: '10.0.0.1',
  proto: 'https' as const,
  xfcc: 'Hash=ab',
  newRequestId: () => 'rid-1',
};

/** Names in order. */
const names = (list: readonly string[]): string[] => list.filter((_, i) => i % 2 === 0);
const valuesOf = (list: readonly string[], name: string): string[] =>
  list.flatMap((v, i) => (i % 2 === 1 && list[i - 1] === name ? [v] : []));

describe('headerSafe', () => {
  it.each<[string, string]>([
    ['alice', 'alice'],
    ['spiffe://x/y?z=1', 'spiffe://x/y?z=1'],
    ['100%', '100%25'],
    ['a b', 'a%20b'],
    ['eve\r\nX-Injected: 1', 'eve%0D%0AX-Injected:%201'],
    ['nul\u0000', 'nul%00'],
    ['tab\there', 'tab%09here'],
    ['del\u007f', 'del%7F'],
    ['é', '%C3%A9'],
    ['😀', '%F0%9F%98%80'],
    ['lone \ud800 surrogate', 'lone%20%EF%BF%BD%20surrogate'],
    ['', ''],
  ])('%j → %j', (input, expected) => {
    const out = headerSafe(input);
    expect(out).toBe(expected);
    expect(out).toMatch(/^[\x21-\x7e]*$/);
    if (!input.includes('\ud800')) expect(decodeURIComponent(out)).toBe(input);
  });
});

describe('withPrincipal and dropAuthorization', () => {
  const raw = [
    'Authorization',
    'Bearer abc',
    'X-Auth-Subject',
    'admin',
    'x-auth-scopes',
    'admin',
    'X-Auth-Provider',
    'spoof',
    'Accept',
    '*/*',
  ];

  it('adds the identity right after the gateway headers, before any client header; client copies are gone', () => {
    const scanned = buildUpstreamHeaders(raw, { ...gw, dropAuthorization: true });
    const out = withPrincipal(scanned, { subject: 'alice', scopes: ['read', 'write'], provider: 'corp' });
    expect(names(out)).toEqual([
      'host',
      'x-forwarded-for',
      'x-forwarded-proto',
      'x-forwarded-host',
      'x-request-id',
      'x-forwarded-client-cert',
      'x-auth-subject',
      'x-auth-scopes',
      'x-auth-provider',
      'accept',
    ]);
    expect(valuesOf(out, 'x-auth-subject')).toEqual(['alice']);
    expect(valuesOf(out, 'x-auth-scopes')).toEqual(['read write']);
    expect(valuesOf(out, 'x-auth-provider')).toEqual(['corp']);
    expect(valuesOf(out, 'authorization')).toEqual([]);
    // The scanned list itself is not changed (it is built once, before authentication).
    expect(names(scanned.headers)).not.toContain('x-auth-subject');
  });

  it('keeps Authorization when the route forwards it (forwardToken) or has no auth', () => {
    expect(valuesOf(buildUpstreamHeaders(raw, gw).headers, 'authorization')).toEqual(['Bearer abc']);
    expect(
      valuesOf(buildUpstreamHeaders(raw, { ...gw, dropAuthorization: false }).headers, 'authorization'),
    ).toEqual(['Bearer abc']);
  });

  it('a WebSocket upgrade keeps its Connection/Upgrade pair after the identity', () => {
    const scanned = buildUpstreamHeaders(raw, { ...gw, upgrade: true, dropAuthorization: true });
    const out = withPrincipal(scanned, { subject: 'a', scopes: [], provider: 'p' });
    expect(valuesOf(out, 'x-auth-scopes')).toEqual(['']);
    expect(valuesOf(out, 'upgrade')).toEqual(['websocket']);
    expect(names(out).indexOf('x-auth-provider')).toBeLessThan(names(out).indexOf('accept'));
  });

  it('percent-encodes a hostile subject and scopes', () => {
    const scanned = buildUpstreamHeaders([], gw);
    const out = withPrincipal(scanned, { subject: 'x\r\ny: 1', scopes: ['a\nb', 'ok'], provider: 'p' });
    expect(valuesOf(out, 'x-auth-subject')).toEqual(['x%0D%0Ay:%201']);
    expect(valuesOf(out, 'x-auth-scopes')).toEqual(['a%0Ab ok']);
  });
});
