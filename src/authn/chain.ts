/**
 * The provider chain of a route (`auth.providers`): asks each provider in order.
 *
 * - `'not_applicable'` (not a credential of its kind) → the next provider;
 * - a {@link Principal} → done;
 * - a throw → stop: an invalid credential is never retried on another path (threat model #58), and an
 *   unavailable IdP is a 503, never a fall-through to a provider that might say yes.
 *
 * All `'not_applicable'` → `ERR_AUTHN_INVALID_TOKEN` (a credential was presented and nobody recognised it).
 */
import { GatewayError, toGatewayError } from '../errors.js';
import type { Credential } from './credential.js';
import type { AuthenticateOptions, Authenticator, Principal } from './principal.js';

/** Authenticates one credential through the chain. Rejects only with a GatewayError. */
export type AuthChain = (credential: Credential, opts?: AuthenticateOptions) => Promise<Principal>;

/**
 * Builds a route's chain from its providers, in the order the route lists them.
 * @throws TypeError for an empty list (the route schema requires at least one).
 */
export function createAuthChain(providers: readonly Authenticator[]): AuthChain {
  if (providers.length === 0) throw new TypeError('an auth chain needs at least one provider');
  const list = [...providers];
  return async (credential, opts) => {
    for (const provider of list) {
      let result;
      try {
        result = await provider.authenticate(credential, opts);
      } catch (err) {
        // A provider bug is still a denial (ERR_INTERNAL), never a pass.
        throw toGatewayError(err);
      }
      if (result !== 'not_applicable') return result;
    }
    throw new GatewayError(
      'ERR_AUTHN_INVALID_TOKEN',
      `no provider recognised the ${credential.kind} credential (${list.map((p) => p.name).join(', ')})`,
    );
  };
}
