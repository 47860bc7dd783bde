/**
 * The route table: compiled once at load, looked up once per request.
 *
 * A route matches on host (exact, or a leading `*.` wildcard of one label) and on a path prefix that
 * ends at a segment boundary (`/api` matches `/api` and `/api/x`, never `/apix`). Longest match wins:
 * an exact host beats a wildcard host beats no host; within those, the longest prefix wins. No match is
 * a 404 (`ERR_ROUTE_NOT_FOUND`): nothing falls through to a default.
 */
import type { ClientAcl } from '../identity/acl.js';
import type { UpstreamSpec } from '../proxy/upstream.js';
import type { MethodPolicy } from './methods.js';

/** One compiled route. */
export interface Route {
  /** Stable id, used in logs and metric labels (never a raw path). */
  readonly id: string;
  /** Lowercased exact host, `*.suffix` wildcard, or undefined for any host. */
  readonly host: string | undefined;
  /** Path prefix, without a trailing slash unless it is `/`. */
  readonly pathPrefix: string;
  /** Where its requests go: an upstream, or an endpoint the gateway answers itself. */
  readonly upstream: UpstreamSpec;
  /** Route-level client allow-list; undefined means the listener's decision stands. */
  readonly acl: ClientAcl | undefined;
  /** The methods this route forwards (`methods:`, else the default set; authz/methods.ts). */
  readonly methods: MethodPolicy;
}

/** Finds the route for a normalized host (lowercase, no port, no trailing dot) and a normalized path. */
export interface RouteTable {
  readonly routes: readonly Route[];
  lookup(host: string, path: string): Route | undefined;
}

function prefixMatches(prefix: string, path: string): boolean {
  if (prefix === '/') return true;
  if (!path.startsWith(prefix)) return false;
  // Segment boundary: the prefix ends the path, or the next character starts a new segment.
  return path.length === prefix.length || path.charCodeAt(prefix.length) === 47 /* / */;
}

function byPrefixLengthDesc(a: Route, b: Route): number {
  return b.pathPrefix.length - a.pathPrefix.length;
}

function firstMatch(list: readonly Route[] | undefined, path: string): Route | undefined {
  if (list === undefined) return undefined;
  for (const r of list) if (prefixMatches(r.pathPrefix, path)) return r;
  return undefined;
}

/** Compiles routes (already validated) into a lookup structure; precomputes everything per host. */
export function compileRouteTable(routes: readonly Route[]): RouteTable {
  const exact = new Map<string, Route[]>();
  const wildcard = new Map<string, Route[]>(); // key: suffix without the leading '*', e.g. '.example.com'
  const anyHost: Route[] = [];
  for (const r of routes) {
    if (r.host === undefined) anyHost.push(r);
    else if (r.host.startsWith('*.')) {
      const key = r.host.slice(1);
      wildcard.set(key, [...(wildcard.get(key) ?? []), r]);
    } else exact.set(r.host, [...(exact.get(r.host) ?? []), r]);
  }
  for (const list of exact.values()) list.sort(byPrefixLengthDesc);
  for (const list of wildcard.values()) list.sort(byPrefixLengthDesc);
  anyHost.sort(byPrefixLengthDesc);
  const hasHostRoutes = exact.size > 0 || wildcard.size > 0;

  return {
    routes,
    lookup(host: string, path: string): Route | undefined {
      if (hasHostRoutes) {
        const e = firstMatch(exact.get(host), path);
        if (e !== undefined) return e;
        const dot = host.indexOf('.');
        if (dot > 0) {
          const w = firstMatch(wildcard.get(host.slice(dot)), path);
          if (w !== undefined) return w;
        }
      }
      return firstMatch(anyHost, path);
    },
  };
}
