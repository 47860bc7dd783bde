/**
 * Reading the original request from a proxy's auth subrequest (listener/decision-request.ts): which headers
 * each proxy's family is read from, exactly once each, and what the stages then see.
 */
import { describe, expect, it } from 'vitest';
import { GatewayError } from '../../../src/errors.js';
import { originalRequest } from '../../../src/listener/decision-request.js';

const flat = (h: [string, string][]): string[] => h.flat();

function code(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return err instanceof GatewayError ? `${err.code} ${err.detail ?? ''}` : String(err);
  }
  return undefined;
}

describe('originalRequest', () => {
  const nginx: [string, string][] = [
    ['Host', '127.0.0.1:4180'],
    ['X-Original-Method', 'POST'],
    ['X-Original-URI', '/api/x?y=1'],
    ['X-Forwarded-Host', 'App.Test'],
    ['X-Forwarded-For', '10.0.0.1, 192.0.2.9'],
    ['Authorization', 'Bearer abc'],
    ['Cookie', 'a=1'],
    ['Cookie', 'b=2'],
    ['Accept', 'text/html'],
    ['X-SSL-Client-Cert', '-----BEGIN%20CERTIFICATE-----'],
    ['Content-Length', '0'],
  ];

  it('nginx: method, URI and host from X-Original-* and X-Forwarded-Host; the rest is the original request', () => {
    const v = originalRequest('nginx', flat(nginx), 'x-ssl-client-cert');
    expect(v.method).toBe('POST');
    expect(v.url).toBe('/api/x?y=1');
    expect(v.clientAddress).toBe('192.0.2.9');
    expect(v.certificate).toBe('-----BEGIN%20CERTIFICATE-----');
    expect(v.rawHeaders).toEqual(['Host', 'App.Test', 'Authorization', 'Bearer abc', 'Cookie', 'a=1', 'Cookie', 'b=2', 'Accept', 'text/html']);
    expect(v.headers).toMatchObject({ host: 'App.Test', authorization: 'Bearer abc', cookie: 'a=1; b=2', accept: 'text/html' });
    expect(v.upgrade).toBe(false);
  });

  it('caddy and traefik: X-Forwarded-Method and -Uri; X-Original-* is not theirs and is dropped unread', () => {
    for (const from of ['caddy', 'traefik'] as const) {
      const v = originalRequest(
        from,
        flat([
          ['X-Forwarded-Method', 'GET'],
          ['X-Forwarded-Uri', '/admin'],
          ['X-Forwarded-Host', 'app.test'],
          ['X-Original-URI', '/public'],
        ]),
        undefined,
      );
      expect(v.url).toBe('/admin');
      expect(v.rawHeaders).toEqual(['Host', 'app.test']);
    }
  });

  it('ingress-nginx: the host is the authority of X-Original-URL; X-Forwarded-Host is not read', () => {
    const v = originalRequest(
      'ingress-nginx',
      flat([
        ['X-Original-Method', 'GET'],
        ['X-Original-URL', 'https://App.Test:8443/api?x=1'],
        ['X-Forwarded-Host', 'evil.test'],
      ]),
      undefined,
    );
    expect([v.url, v.headers.host]).toEqual(['https://App.Test:8443/api?x=1', 'App.Test:8443']);
    expect(v.rawHeaders).toEqual(['Host', 'App.Test:8443']);
    expect(code(() => originalRequest('ingress-nginx', flat([['X-Original-Method', 'GET'], ['X-Original-URL', '/api']]), undefined))).toBe(
      'ERR_DECISION_BAD_SUBREQUEST x-original-url is not an absolute URL',
    );
  });

  it('nginx: a client’s X-Forwarded-Uri never becomes the URI', () => {
    const raw = flat([
      ['X-Original-Method', 'GET'],
      ['X-Original-URI', '/admin'],
      ['X-Forwarded-Host', 'app.test'],
      ['X-Forwarded-Uri', '/public'],
      ['X-Forwarded-Method', 'OPTIONS'],
    ]);
    const v = originalRequest('nginx', raw, undefined);
    expect([v.method, v.url]).toEqual(['GET', '/admin']);
  });

  it.each([
    ['no method', [['X-Original-URI', '/'], ['X-Forwarded-Host', 'h']], 'no x-original-method'],
    ['no URI', [['X-Original-Method', 'GET'], ['X-Forwarded-Host', 'h']], 'no x-original-uri'],
    ['no host', [['X-Original-Method', 'GET'], ['X-Original-URI', '/']], 'no x-forwarded-host'],
    ['two URIs', [['X-Original-Method', 'GET'], ['X-Original-URI', '/'], ['x-original-uri', '/a'], ['X-Forwarded-Host', 'h']], 'x-original-uri more than once'],
    ['two hosts', [['X-Original-Method', 'GET'], ['X-Original-URI', '/'], ['X-Forwarded-Host', 'h'], ['X-Forwarded-Host', 'i']], 'x-forwarded-host more than once'],
    ['two certificates', [['X-Original-Method', 'GET'], ['X-Original-URI', '/'], ['X-Forwarded-Host', 'h'], ['X-Cert', 'a'], ['X-Cert', 'b']], 'x-cert more than once'],
  ] as [string, [string, string][], string][])('%s: ERR_DECISION_BAD_SUBREQUEST', (_n, headers, detail) => {
    expect(code(() => originalRequest('nginx', flat(headers), 'x-cert'))).toBe(`ERR_DECISION_BAD_SUBREQUEST ${detail}`);
  });

  it('an unconfigured certificate header is dropped, never read; an empty one is no certificate', () => {
    const base: [string, string][] = [['X-Original-Method', 'GET'], ['X-Original-URI', '/'], ['X-Forwarded-Host', 'h']];
    const other = originalRequest('nginx', flat([...base, ['X-SSL-Client-Cert', 'pem']]), undefined);
    expect(other.certificate).toBeUndefined();
    expect(other.rawHeaders).toEqual(['Host', 'h', 'X-SSL-Client-Cert', 'pem']);
    expect(originalRequest('nginx', flat([...base, ['X-SSL-Client-Cert', '']]), 'x-ssl-client-cert').certificate).toBeUndefined();
  });

  it('caddy: a placeholder caddy could not fill (no client certificate) is no certificate; on nginx it is one', () => {
    const base: [string, string][] = [['X-Forwarded-Method', 'GET'], ['X-Forwarded-Uri', '/'], ['X-Forwarded-Host', 'h']];
    const placeholder: [string, string] = ['X-Cert', '{http.request.tls.client.certificate_der_base64}'];
    expect(originalRequest('caddy', flat([...base, placeholder]), 'x-cert').certificate).toBeUndefined();
    const nginx: [string, string][] = [['X-Original-Method', 'GET'], ['X-Original-URI', '/'], ['X-Forwarded-Host', 'h'], placeholder];
    expect(originalRequest('nginx', flat(nginx), 'x-cert').certificate).toBe(placeholder[1]);
  });

  it('forwarding headers of the subrequest are never part of the view', () => {
    const v = originalRequest(
      'nginx',
      flat([
        ['X-Original-Method', 'GET'],
        ['X-Original-URI', '/'],
        ['X-Forwarded-Host', 'h'],
        ['Forwarded', 'for=1.2.3.4'],
        ['X-Real-IP', '1.2.3.4'],
        ['X-Forwarded-Proto', 'http'],
        ['X-Original-URL', '/x'],
        ['Transfer-Encoding', 'chunked'],
      ]),
      undefined,
    );
    expect(v.rawHeaders).toEqual(['Host', 'h']);
    expect(v.clientAddress).toBeUndefined();
  });

  it('a WebSocket handshake is recognised by its Upgrade header', () => {
    const v = originalRequest(
      'nginx',
      flat([['X-Original-Method', 'GET'], ['X-Original-URI', '/'], ['X-Forwarded-Host', 'h'], ['Upgrade', 'WebSocket']]),
      undefined,
    );
    expect(v.upgrade).toBe(true);
  });
});
