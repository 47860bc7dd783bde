import { describe, expect, it } from 'vitest';
import { DEFAULT_METHOD_POLICY } from '../../../src/authz/methods.js';
import { compileRouteTable, type Route } from '../../../src/authz/routes.js';

/** A route as load.ts produces it: host lowercased (or a `*.` wildcard), prefix without a trailing slash. */
function route(id: string, pathPrefix: string, host?: string): Route {
  return { id, host, pathPrefix, upstream: { kind: 'gateway', endpoint: 'echo' }, acl: undefined, methods: DEFAULT_METHOD_POLICY };
}

describe('compileRouteTable: host precedence', () => {
  // Declared in the "wrong" order on purpose: precedence must not depend on config order.
  const table = compileRouteTable([
    route('any-root', '/'),
    route('wild-root', '/', '*.example.com'),
    route('exact-root', '/', 'api.example.com'),
    route('wild-deep', '/deep', '*.example.com'),
    route('other-api', '/api', 'other.test'),
  ]);

  it.each<[string, string, string | undefined]>([
    // exact host beats the wildcard beats no host
    ['api.example.com', '/x', 'exact-root'],
    ['web.example.com', '/x', 'wild-root'],
    ['elsewhere.test', '/x', 'any-root'],
    // a wildcard covers exactly one extra leftmost label
    ['example.com', '/x', 'any-root'],
    ['a.b.example.com', '/x', 'any-root'],
    ['evilexample.com', '/x', 'any-root'],
    ['xexample.com', '/x', 'any-root'],
    // within one host tier the longest prefix wins; a more specific host tier is tried first
    ['web.example.com', '/deep/x', 'wild-deep'],
    ['api.example.com', '/deep/x', 'exact-root'],
    // an exact host whose routes do not match the path falls through to the next tier
    ['other.test', '/api/v1', 'other-api'],
    ['other.test', '/apix', 'any-root'],
  ])('host %j, path %j → %s', (host, path, id) => {
    expect(table.lookup(host, path)?.id).toBe(id);
  });
});

describe('compileRouteTable: path prefixes', () => {
  const table = compileRouteTable([
    route('api', '/api'),
    route('api-v1', '/api/v1'),
    route('static', '/static/js'),
    route('admin', '/admin'),
  ]);

  it.each<[string, string | undefined]>([
    ['/api', 'api'],
    ['/api/', 'api'],
    ['/api/x', 'api'],
    ['/api/v1', 'api-v1'],
    ['/api/v1/jobs', 'api-v1'],
    ['/api/v10', 'api'],
    ['/api/v1x', 'api'],
    ['/static/js/app.js', 'static'],
    ['/static/jsx', undefined],
    ['/static', undefined],
    // segment boundary: a prefix never matches inside a segment
    ['/apix', undefined],
    ['/api-internal', undefined],
    ['/adminx', undefined],
    ['/administrator', undefined],
    // routes are case-sensitive: /ADMIN is not /admin (and matches nothing here)
    ['/ADMIN', undefined],
    ['/', undefined],
  ])('%j → %s', (path, id) => {
    expect(table.lookup('any.host', path)?.id).toBe(id);
  });

  it('no match is undefined (the handler answers 404), never a default route', () => {
    expect(compileRouteTable([]).lookup('localhost', '/')).toBeUndefined();
    expect(compileRouteTable([route('h', '/', 'a.test')]).lookup('b.test', '/')).toBeUndefined();
  });

  it('a root route catches everything of its tier', () => {
    const t = compileRouteTable([route('root', '/'), route('api', '/api')]);
    expect(t.lookup('h', '/')?.id).toBe('root');
    expect(t.lookup('h', '/apix')?.id).toBe('root');
    expect(t.lookup('h', '/api/x')?.id).toBe('api');
  });

  it('two routes with the same host and prefix: the first declared wins (stable)', () => {
    const t = compileRouteTable([route('first', '/x'), route('second', '/x')]);
    expect(t.lookup('h', '/x')?.id).toBe('first');
  });

  it('keeps the routes it was given, in order', () => {
    const routes = [route('a', '/a'), route('b', '/b', 'h.test')];
    expect(compileRouteTable(routes).routes.map((r) => r.id)).toEqual(['a', 'b']);
  });
});
