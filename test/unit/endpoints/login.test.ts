/** The return address of a login is a path of this origin, whatever the query says: never an open redirect. */
import { describe, expect, it } from 'vitest';
import { isBrowserNavigation, sameOriginPath } from '../../../src/endpoints/login.js';
import type { ClientRequest } from '../../../src/proxy/types.js';

const ORIGIN = 'https://gw.example:8443';

describe('sameOriginPath', () => {
  it.each<[string | null, string]>([
    ['/app/page?x=1', '/app/page?x=1'],
    ['/', '/'],
    [null, '/'],
    ['', '/'],
    ['https://evil.example/x', '/'],
    ['//evil.example/x', '/'],
    ['/\\evil.example', '/'],
    ['/\t/evil.example', '/'],
    ['/\n/evil.example', '/'],
    ['javascript:alert(1)', '/'],
    ['app', '/'],
    ['/a/../../b', '/b'],
  ])('%j → %j', (value, want) => {
    expect(sameOriginPath(value, ORIGIN)).toBe(want);
  });
});

describe('isBrowserNavigation', () => {
  const req = (method: string, accept?: string): ClientRequest =>
    ({ method, headers: accept === undefined ? {} : { accept } }) as unknown as ClientRequest;
  it.each<[string, string | undefined, boolean, boolean]>([
    ['GET', 'text/html,application/xhtml+xml', false, true],
    ['HEAD', 'text/html', false, true],
    ['GET', 'application/json', false, false],
    ['GET', undefined, false, false],
    ['POST', 'text/html', false, false],
    ['GET', 'text/html', true, false],
  ])('%s Accept %j upgrade %j → %j', (method, accept, upgrade, want) => {
    expect(isBrowserNavigation(req(method, accept), upgrade)).toBe(want);
  });
});
