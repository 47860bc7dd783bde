import { describe, expect, it } from 'vitest';
import { GatewayError } from '../../../src/errors.js';
import { ownedBody, rawAnswer, redirect, refusal, statusText } from '../../../src/pipeline/respond.js';

describe('the responder', () => {
  it('a refusal carries the registry status, a generic body, no-store and the RFC 6750 challenge', () => {
    const a = refusal(new GatewayError('ERR_AUTHZ_INSUFFICIENT_SCOPE', 'missing scope "x"'), {
      scope: 'read write',
      requestId: 'r-1',
    });
    expect(a.status).toBe(403);
    expect(a.headers['www-authenticate']).toBe(
      'Bearer realm="portcullis", error="insufficient_scope", scope="read write"',
    );
    expect(a.headers['cache-control']).toBe('no-store');
    expect(a.headers['x-request-id']).toBe('r-1');
    // The detail (the reason) never reaches the peer.
    expect(a.body).not.toContain('missing scope');
  });

  it('a 405 carries Allow (RFC 9110 §15.5.6), also as raw bytes', () => {
    const a = refusal(new GatewayError('ERR_AUTHZ_METHOD_NOT_ALLOWED', 'PUT', { allow: 'GET, HEAD' }));
    expect(a.status).toBe(405);
    expect(a.headers.allow).toBe('GET, HEAD');
    expect(rawAnswer(a)).toMatch(/^Allow: GET, HEAD\r$/m);
    expect(refusal(new GatewayError('ERR_AUTHN_MISSING')).headers.allow).toBeUndefined();
  });

  it('status texts come from node:http', () => {
    expect(statusText(421)).toBe('Misdirected Request');
    expect(statusText(405)).toBe('Method Not Allowed');
  });

  it('raw bytes: status line, conventional header names, length and close', () => {
    const raw = rawAnswer(refusal(new GatewayError('ERR_AUTHN_MISSING')));
    expect(raw).toMatch(/^HTTP\/1\.1 401 Unauthorized\r\n/);
    expect(raw).toMatch(/^WWW-Authenticate: Bearer realm="portcullis"\r$/m);
    expect(raw).toMatch(/^Connection: close\r$/m);
    const body = raw.slice(raw.indexOf('\r\n\r\n') + 4);
    expect(raw).toMatch(new RegExp(`^Content-Length: ${Buffer.byteLength(body)}\\r$`, 'm'));
  });

  it('a redirect is a 302 with its location and no-store', () => {
    const a = redirect('https://idp.example/authorize?x=1');
    expect(a.status).toBe(302);
    expect(a.headers.location).toBe('https://idp.example/authorize?x=1');
    expect(a.headers['cache-control']).toBe('no-store');
  });

  it('an HTML body of the gateway goes with a CSP that runs no script, and nosniff', () => {
    const a = ownedBody(401, 'html', '<p>log in</p>');
    expect(a.headers['content-type']).toBe('text/html; charset=utf-8');
    expect(a.headers['content-security-policy']).toContain("default-src 'none'");
    expect(a.headers['x-content-type-options']).toBe('nosniff');
    expect(ownedBody(200, 'json', '{}').headers['content-type']).toBe('application/json');
  });
});
