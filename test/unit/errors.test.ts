/** The error registry's RFC 6750 §3 challenges: which codes send one, with which `error` and `scope`. */
import { describe, expect, it } from 'vitest';
import { bearerChallenge, ERROR_CODES, ERRORS, type ErrorCode } from '../../src/errors.js';

describe('bearerChallenge', () => {
  it.each<[ErrorCode, string | undefined, string | undefined]>([
    ['ERR_AUTHN_MISSING', undefined, 'Bearer realm="portcullis"'],
    ['ERR_AUTHN_MISSING', 'read', 'Bearer realm="portcullis"'],
    ['ERR_AUTHN_MALFORMED', undefined, 'Bearer realm="portcullis", error="invalid_request"'],
    ['ERR_AUTHN_INVALID_TOKEN', 'read', 'Bearer realm="portcullis", error="invalid_token"'],
    [
      'ERR_AUTHZ_INSUFFICIENT_SCOPE',
      'read write',
      'Bearer realm="portcullis", error="insufficient_scope", scope="read write"',
    ],
    ['ERR_AUTHZ_INSUFFICIENT_SCOPE', '', 'Bearer realm="portcullis", error="insufficient_scope"'],
    ['ERR_AUTHN_UNAVAILABLE', undefined, undefined],
    ['ERR_AUTHZ_ROUTE_ACL', undefined, undefined],
  ])('%s (scope %j) → %j', (code, scope, expected) => {
    expect(bearerChallenge(code, scope)).toBe(expected);
  });

  it('every code with a challenge answers 400, 401 or 403; 503 never challenges (the token may be fine)', () => {
    for (const code of ERROR_CODES) {
      if (bearerChallenge(code) !== undefined) expect([400, 401, 403]).toContain(ERRORS[code].status);
    }
    expect(ERRORS.ERR_AUTHN_UNAVAILABLE.status).toBe(503);
  });
});
