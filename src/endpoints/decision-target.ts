/**
 * The target of every route of a decision listener (`protocol: decision`): such a route has no upstream, its
 * request is never forwarded; the listener answers the proxy that asked with the decision instead
 * (listener/decision-handler.ts).
 */
import type { GatewayEndpointTarget, UpstreamSpec } from '../proxy/upstream.js';

/** The one target of decision routes. */
export const DECISION_TARGET: GatewayEndpointTarget = Object.freeze({ kind: 'gateway', endpoint: 'decision' });

/** Whether a route's target is a decision (the proxy in front forwards the request, an upgrade included). */
export function isDecisionTarget(upstream: UpstreamSpec): boolean {
  return upstream.kind === 'gateway' && upstream.endpoint === DECISION_TARGET.endpoint;
}
