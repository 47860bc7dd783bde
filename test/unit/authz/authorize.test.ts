import { describe, expect, it } from 'vitest';
import { authorize, authorizeClient, authorizeMethod } from '../../../src/authz/authorize.js';
import { compileMethodPolicy, DEFAULT_METHOD_POLICY } from '../../../src/authz/methods.js';
import { compileRoutePolicy } from '../../../src/authz/policy.js';
import { compileClientAcl } from '../../../src/identity/acl.js';
import type { Principal } from '../../../src/authn/principal.js';
import type { PeerIdentity } from '../../../src/identity/peer.js';

const principal = (scopes: string[]): Principal => ({
  subject: 'alice',
  scopes,
  provider: 'p',
  claims: {},
  expiresAtMs: undefined,
});
const req = { method: 'GET', path: '/' };

describe('authorize', () => {
  const policy = compileRoutePolicy({ scopes: ['read'] }, 'r.auth');

  it('a route without requirements allows anyone', () => {
    expect(() => authorize({ acl: undefined, policy: undefined, methods: DEFAULT_METHOD_POLICY }, undefined, undefined, req)).not.toThrow();
  });

  it('scopes are checked on the principal', () => {
    const route = { acl: undefined, policy, methods: DEFAULT_METHOD_POLICY };
    expect(() => authorize(route, undefined, principal(['read']), req)).not.toThrow();
    expect(() => authorize(route, undefined, principal([]), req)).toThrow(
      expect.objectContaining({ code: 'ERR_AUTHZ_INSUFFICIENT_SCOPE' }),
    );
  });

  it('a route with auth and no principal is refused (fail closed)', () => {
    expect(() => authorize({ acl: undefined, policy, methods: DEFAULT_METHOD_POLICY }, undefined, undefined, req)).toThrow(
      expect.objectContaining({ code: 'ERR_AUTHN_MISSING' }),
    );
  });

  it('a route allow-list needs a verified certificate it names', () => {
    const acl = compileClientAcl(['CN=alice'], 'r.allowClients');
    const route = { acl, policy: undefined, methods: DEFAULT_METHOD_POLICY };
    expect(() => authorizeClient(route, undefined)).toThrow(
      expect.objectContaining({ code: 'ERR_IDENTITY_NO_CLIENT_CERT' }),
    );
    const bob: PeerIdentity = {
      subject: 'CN=bob',
      commonNames: ['bob'],
      organizationalUnits: [],
      dnsNames: [],
      uris: [],
      fingerprint256: 'ab'.repeat(32),
      serialNumber: '01',
      validToMs: Date.now() + 60_000,
    };
    expect(() => authorize(route, { ...bob, subject: 'CN=alice', commonNames: ['alice'] }, undefined, req)).not.toThrow();
    expect(() => authorize(route, bob, undefined, req)).toThrow(
      expect.objectContaining({ code: 'ERR_AUTHZ_ROUTE_ACL' }),
    );
  });

  it("the route's methods are checked, before and after authentication alike", () => {
    const route = { acl: undefined, policy, methods: compileMethodPolicy(['GET'], 'r.methods') };
    expect(() => authorizeMethod(route, 'HEAD')).not.toThrow();
    expect(() => authorizeMethod(route, 'POST')).toThrow(
      expect.objectContaining({ code: 'ERR_AUTHZ_METHOD_NOT_ALLOWED', allow: 'GET, HEAD' }),
    );
    expect(() => authorize(route, undefined, principal(['read']), { method: 'POST', path: '/' })).toThrow(
      expect.objectContaining({ code: 'ERR_AUTHZ_METHOD_NOT_ALLOWED' }),
    );
    expect(() => authorize(route, undefined, principal(['read']), { method: 'TRACE', path: '/' })).toThrow(
      expect.objectContaining({ code: 'ERR_REQUEST_METHOD_REFUSED' }),
    );
  });
});
