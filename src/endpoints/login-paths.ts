/**
 * The gateway's own login paths: `/_portcullis/login`, `/callback`, `/logout`, `/logged-out` and
 * `/backchannel-logout`. On a listener with a login route they are a route of their own, answered by the
 * gateway (endpoints/login.ts) and never forwarded, whatever the operator's routes match.
 */
import { DEFAULT_METHOD_POLICY } from '../authz/methods.js';
import type { Route } from '../authz/routes.js';

/** Every login path starts with this. */
export const LOGIN_PATH_PREFIX = '/_portcullis';

/** The route id of the login paths (ids a config may use start with a letter or digit: no clash). */
export const LOGIN_ROUTE_ID = '_portcullis';

/**
 * The login paths as routes: one for any host, and one per host of the listener's login routes (a route for an
 * exact host wins over any-host routes in the route table, so each such host needs its own).
 */
export function loginEndpointRoutes(hosts: readonly (string | undefined)[]): Route[] {
  const unique = [...new Set([undefined, ...hosts])];
  return unique.map((host) => ({
    id: LOGIN_ROUTE_ID,
    host,
    pathPrefix: LOGIN_PATH_PREFIX,
    upstream: { kind: 'gateway', endpoint: 'login' },
    acl: undefined,
    methods: DEFAULT_METHOD_POLICY,
  }));
}
