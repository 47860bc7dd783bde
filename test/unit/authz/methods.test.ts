import { METHODS } from 'node:http';
import { describe, expect, it } from 'vitest';
import {
  checkMethodForm,
  checkRouteMethod,
  compileMethodPolicy,
  DEFAULT_METHOD_POLICY,
  FORWARDED_METHODS,
  REFUSED_METHODS,
} from '../../../src/authz/methods.js';
import { ConfigError, GatewayError, type ErrorCode } from '../../../src/errors.js';

/** Runs `fn`, returning the GatewayError it throws (failing if it does not). */
function refusal(fn: () => void): GatewayError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(GatewayError);
    return err as GatewayError;
  }
  throw new Error('expected a GatewayError');
}

describe('the forwarded set', () => {
  it("is Node's HTTP/1.1 parser's list minus CONNECT and TRACE: both protocols answer alike", () => {
    expect([...FORWARDED_METHODS].sort()).toEqual(METHODS.filter((m) => !REFUSED_METHODS.includes(m)).sort());
  });
});

describe('checkMethodForm (before routing)', () => {
  it.each(['GET', 'PROPFIND', 'FOO', 'get', 'M-SEARCH', "X!#$%&'*+.^_`|~1"])('%s passes', (m) => {
    expect(() => checkMethodForm(m)).not.toThrow();
  });

  it.each([undefined, '', 'G T', 'GET?', 'GET\0', 'ΓET', 'GET\r\nX: y', '(GET)'])(
    '%j → 400 ERR_REQUEST_BAD_METHOD',
    (m) => {
      const e = refusal(() => checkMethodForm(m));
      expect(e.code).toBe('ERR_REQUEST_BAD_METHOD');
      expect(e.status).toBe(400);
    },
  );

  it('CONNECT → 405 with the default set in Allow (it names no path, so no route)', () => {
    const e = refusal(() => checkMethodForm('CONNECT'));
    expect(e.code).toBe('ERR_REQUEST_METHOD_REFUSED');
    expect(e.status).toBe(405);
    expect(e.allow).toBe(DEFAULT_METHOD_POLICY.allow);
    expect(e.allow).not.toMatch(/CONNECT|TRACE/);
  });
});

describe('checkRouteMethod (after routing)', () => {
  const getPost = compileMethodPolicy(['POST', 'GET'], 'routes[0].methods');

  it('a route without methods: forwards every method of the set, refuses the rest', () => {
    for (const m of FORWARDED_METHODS) expect(() => checkRouteMethod(m, DEFAULT_METHOD_POLICY)).not.toThrow();
    expect(refusal(() => checkRouteMethod('TRACE', DEFAULT_METHOD_POLICY)).code).toBe('ERR_REQUEST_METHOD_REFUSED');
  });

  it('GET brings HEAD; Allow follows the set order, whatever the config order', () => {
    expect(getPost.allow).toBe('GET, HEAD, POST');
    expect(() => checkRouteMethod('HEAD', getPost)).not.toThrow();
    expect(() => checkRouteMethod('POST', getPost)).not.toThrow();
  });

  it.each<[string, ErrorCode]>([
    ['PUT', 'ERR_AUTHZ_METHOD_NOT_ALLOWED'],
    ['DELETE', 'ERR_AUTHZ_METHOD_NOT_ALLOWED'],
    ['OPTIONS', 'ERR_AUTHZ_METHOD_NOT_ALLOWED'],
    ['TRACE', 'ERR_REQUEST_METHOD_REFUSED'],
    ['FOO', 'ERR_REQUEST_METHOD_REFUSED'],
    // Methods are case-sensitive (RFC 9110 §9.1): `get` is not GET.
    ['get', 'ERR_REQUEST_METHOD_REFUSED'],
  ])('%s on a GET/POST route → 405 %s with the route’s Allow', (m, code) => {
    const e = refusal(() => checkRouteMethod(m, getPost));
    expect(e.code).toBe(code);
    expect(e.status).toBe(405);
    expect(e.allow).toBe('GET, HEAD, POST');
  });

  it('the log detail of an unknown method is bounded', () => {
    const e = refusal(() => checkRouteMethod('X'.repeat(500), getPost));
    expect(e.detail?.length).toBeLessThan(64);
  });
});

describe('compileMethodPolicy', () => {
  it('absent: the default policy', () => {
    expect(compileMethodPolicy(undefined, 'm')).toBe(DEFAULT_METHOD_POLICY);
  });

  it.each<[string[], string]>([
    [[], 'm'],
    [['get'], 'm[0]'],
    [['GET', 'TRACE'], 'm[1]'],
    [['CONNECT'], 'm[0]'],
    [['FOO'], 'm[0]'],
    [['G T'], 'm[0]'],
    [['GET', 'GET'], 'm[1]'],
  ])('%j → ConfigError at %s', (list, path) => {
    try {
      compileMethodPolicy(list, 'm');
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as ConfigError).path).toBe(path);
      return;
    }
    throw new Error('expected a ConfigError');
  });
});
