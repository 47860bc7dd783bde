/**
 * Route policy: what a route's `auth` block demands of an authenticated principal (scopes and claims).
 *
 * Compiled once at config load; `check` runs on EVERY request, whether the principal came from a cache or
 * not. A cached authentication never carries a cached authorization (Oathkeeper CVE-2021-32701: a cached
 * introspection result skipped the scope check of another rule; heimdall#3452).
 *
 * Matching:
 * - `scopes`: every listed scope must be among the principal's scopes (exact, case-sensitive).
 * - `claims`: for each claim name (top-level claims only), the principal's claim must match:
 *   - a string / number / boolean: the claim equals it (same type: `1` ≠ `"1"`), or the claim is a list that
 *     contains it;
 *   - a list of strings: ALL of them must be present (the claim is a list containing each, or a single value
 *     equal to the only one listed). A list never means "any of": use separate routes for alternatives.
 *   A missing claim never matches.
 */
import { z } from 'zod';
import { ConfigError, GatewayError } from '../errors.js';
import type { Principal } from '../authn/principal.js';
import { MAX_STALE_IF_ERROR_SECONDS } from '../authn/provider-config.js';

/** A configured claim requirement. */
export type ClaimRequirement = string | number | boolean | readonly string[];

/** The policy part of a route's `auth` block. */
export interface RoutePolicySpec {
  readonly scopes?: readonly string[] | undefined;
  readonly claims?: Readonly<Record<string, ClaimRequirement>> | undefined;
  /** The `email` claim must be an address at one of these domains (exactly: no subdomain), not unverified. */
  readonly emailDomains?: readonly string[] | undefined;
}

/** A compiled route policy. */
export interface RoutePolicy {
  /** The required scopes, as configured (for the RFC 6750 §3 `scope` attribute of a 403 challenge). */
  readonly requiredScopes: readonly string[];
  /**
   * Passes silently, or throws.
   * @throws GatewayError `ERR_AUTHZ_INSUFFICIENT_SCOPE` (403, `error="insufficient_scope"`); the detail names
   *   the missing scope or claim, never the principal's values.
   */
  check(principal: Principal): void;
}

/** RFC 6749 §3.3 scope-token: printable ASCII except space, `"` and `\`. */
const SCOPE_TOKEN = /^[\x21\x23-\x5b\x5d-\x7e]+$/;
/** A DNS domain: labels of letters, digits and hyphens. */
const DOMAIN = /^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;
/** Claim names that would reach `Object.prototype` if used as plain keys. */
const FORBIDDEN_CLAIMS = new Set(['__proto__', 'constructor', 'prototype']);

/** The route's `auth` block (strict). The config loader puts it under `routes[i].auth`. */
export const routeAuthSchema = z
  .strictObject({
    /** Provider names from `authProviders`, tried in order (see `authn/chain.ts`). Optional with `login`. */
    providers: z.array(z.string().min(1)).min(1, 'at least one provider name from authProviders').optional(),
    /**
     * A `type: oidc` provider: a browser without a session is sent to log in there; anything else without a
     * credential gets 401. Bearer tokens of `providers` keep working on the same route.
     */
    login: z.string().min(1).optional(),
    scopes: z
      .array(z.string().regex(SCOPE_TOKEN, 'a scope token: printable ASCII without spaces, " or \\'))
      .optional(),
    claims: z
      .record(
        z.string().min(1),
        z.union([z.string(), z.number(), z.boolean(), z.array(z.string()).min(1)], {
          error: 'a string, number, boolean or non-empty list of strings',
        }),
      )
      .optional(),
    /**
     * The principal's `email` claim must end in `@<one of these>` (case-insensitive, the domain exactly, as
     * oauth2-proxy's `--email-domain`), and `email_verified` must not be false.
     */
    emailDomains: z
      .array(z.string().regex(DOMAIN, 'a DNS domain such as example.com (no @, no wildcard)'))
      .min(1, 'at least one domain (or leave the key out)')
      .optional(),
    /** RFC 6750 §2.3 `?access_token=`: refused (400) unless this route opts in (e.g. browser WebSockets). */
    allowQueryToken: z.boolean().default(false),
    /** Forward the client's Authorization header upstream; off: the gateway removes it. */
    forwardToken: z.boolean().default(false),
    /** Introspection: serve a cached answer this many seconds past its freshness while the IdP is down. 0 = never. */
    staleIfErrorSeconds: z.number().int().min(0).max(MAX_STALE_IF_ERROR_SECONDS).default(0),
  })
  .refine((a) => a.providers !== undefined || a.login !== undefined, {
    path: ['providers'],
    message: 'at least one provider name from authProviders (or a login provider in login)',
  });

export type RouteAuthConfig = z.output<typeof routeAuthSchema>;

/**
 * Compiles a route's scope and claim requirements.
 * @param keyPath the config path of the route's `auth` block, for error messages (`${keyPath}.scopes[0]`).
 * @throws ConfigError for a malformed scope, a forbidden or empty claim name, or an unsupported value.
 */
export function compileRoutePolicy(spec: RoutePolicySpec, keyPath: string): RoutePolicy {
  const scopes = [...(spec.scopes ?? [])];
  scopes.forEach((s, i) => {
    if (typeof s !== 'string' || !SCOPE_TOKEN.test(s)) {
      throw new ConfigError(
        `${keyPath}.scopes[${i}]`,
        s,
        'a scope token: printable ASCII without spaces, " or \\',
      );
    }
  });
  const claims: [string, ClaimRequirement][] = [];
  for (const [name, want] of Object.entries(spec.claims ?? {})) {
    const path = `${keyPath}.claims.${name}`;
    if (name === '' || FORBIDDEN_CLAIMS.has(name))
      throw new ConfigError(path, name, 'a claim name (not __proto__, constructor or prototype)');
    if (Array.isArray(want)) {
      if (want.length === 0 || !want.every((w) => typeof w === 'string'))
        throw new ConfigError(path, want, 'a non-empty list of strings');
      claims.push([name, Object.freeze([...want])]);
    } else if (
      typeof want === 'string' ||
      typeof want === 'boolean' ||
      (typeof want === 'number' && Number.isFinite(want))
    ) {
      claims.push([name, want]);
    } else {
      throw new ConfigError(path, want, 'a string, number, boolean or non-empty list of strings');
    }
  }
  const domains = new Set((spec.emailDomains ?? []).map((d) => d.toLowerCase()));
  const requiredScopes = Object.freeze([...new Set(scopes)]);
  const requiredClaims = Object.freeze(claims);

  return {
    requiredScopes,
    check(principal: Principal): void {
      for (const scope of requiredScopes) {
        if (!principal.scopes.includes(scope)) {
          throw new GatewayError('ERR_AUTHZ_INSUFFICIENT_SCOPE', `missing scope ${JSON.stringify(scope)}`);
        }
      }
      for (const [name, want] of requiredClaims) {
        const have = Object.hasOwn(principal.claims, name) ? principal.claims[name] : undefined;
        if (!claimMatches(have, want)) {
          throw new GatewayError(
            'ERR_AUTHZ_INSUFFICIENT_SCOPE',
            `claim ${JSON.stringify(name)} does not match`,
          );
        }
      }
      if (domains.size > 0) {
        const email = principal.claims.email;
        const at = typeof email === 'string' ? email.lastIndexOf('@') : -1;
        if (
          typeof email !== 'string' ||
          at < 1 ||
          !domains.has(email.slice(at + 1).toLowerCase()) ||
          principal.claims.email_verified === false
        )
          throw new GatewayError('ERR_AUTHZ_INSUFFICIENT_SCOPE', 'email domain does not match');
      }
    },
  };
}

function claimMatches(have: unknown, want: ClaimRequirement): boolean {
  if (have === undefined || have === null) return false;
  if (Array.isArray(want)) {
    if (Array.isArray(have)) return want.every((w) => have.includes(w));
    return want.length === 1 && have === want[0];
  }
  if (Array.isArray(have)) return have.includes(want);
  return have === want;
}
