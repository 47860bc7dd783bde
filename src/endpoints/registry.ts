/**
 * Gateway endpoints: routes the gateway answers itself, never forwarded (`upstream: builtin:<name>`). Each
 * endpoint is a handler with the same contract as a forwarder (proxy/types.ts `Forward`): it gets the request
 * after every stage passed — form, client policy, authentication, authorization — and answers it, usually
 * through the responder (pipeline/respond.ts).
 *
 * Today: `echo` (what an upstream would receive) and `login` (the browser login paths, `/_portcullis/...`, a
 * route the loader adds itself; never `upstream: builtin:login` in a config). The assertion JWKS and the
 * decision answers will be endpoints of this kind.
 */
import type { TimeoutsConfig } from '../config/schema.js';
import { GatewayError } from '../errors.js';
import type { Forward } from '../proxy/types.js';
import { createEchoForwarder } from './echo.js';

/** The names `upstream: builtin:<name>` accepts. */
export const ENDPOINT_NAMES = ['echo', 'login'] as const;

export type EndpointName = (typeof ENDPOINT_NAMES)[number];

/** Whether `name` is an endpoint of the gateway's. */
export function isEndpointName(name: string): name is EndpointName {
  return (ENDPOINT_NAMES as readonly string[]).includes(name);
}

/** Builds every endpoint's handler, by name. */
export function createEndpoints(timeouts: Pick<TimeoutsConfig, 'requestBodyMs'>): ReadonlyMap<EndpointName, Forward> {
  return new Map<EndpointName, Forward>([
    ['echo', createEchoForwarder(timeouts.requestBodyMs)],
    // The login paths are answered by the pipeline's login stage (endpoints/login.ts) before any terminal
    // runs: reaching this one is a wiring bug, refused.
    ['login', () => Promise.reject(new GatewayError('ERR_INTERNAL', 'login paths reached a terminal'))],
  ]);
}
