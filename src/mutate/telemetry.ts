/**
 * Telemetry header matching (`telemetry.headers`), compiled once at load into an exact-name set and a
 * short prefix list, so the per-request check is one Set lookup plus, for names starting with a prefix's
 * first letter only, a `startsWith`. Threat model #98: a client's forged trace context (`traceparent`,
 * `X-B3-Sampled: 1`, a 64 KB `baggage`) must not reach the upstream, and the upstream's tracing
 * identifiers must not reach callers.
 */
import { ConfigError } from '../errors.js';

/** The compiled list: lower-case exact names and lower-case prefixes (a trailing `*` in the config). */
export interface TelemetryMatcher {
  readonly exact: ReadonlySet<string>;
  readonly prefixes: readonly string[];
}

/** RFC 9110 §5.6.2 token characters, lower case (names are compared lower-cased). */
const TOKEN = /^[!#$%&'*+.^_`|~0-9a-z-]+$/;

/**
 * Compiles a list of header names, each optionally ending in one `*` (a prefix). Pushes a ConfigError
 * naming `<keyPath>[i]` for an empty entry, a bare `*`, a `*` anywhere but at the end, or a character
 * that cannot be in a header name. `offset` is the index of the first entry of `names` in the list the
 * operator wrote (entries before it are the built-in defaults, reported as `keyPath` with no index).
 */
export function compileTelemetryHeaders(
  names: readonly string[],
  keyPath: string,
  errors: ConfigError[],
  offset = 0,
): TelemetryMatcher {
  const exact = new Set<string>();
  const prefixes: string[] = [];
  names.forEach((raw, i) => {
    const at = i >= offset ? `${keyPath}[${i - offset}]` : keyPath;
    const name = raw.trim().toLowerCase();
    const star = name.indexOf('*');
    const isPrefix = star !== -1 && star === name.length - 1;
    const body = isPrefix ? name.slice(0, -1) : name;
    if (star !== -1 && !isPrefix) {
      errors.push(
        new ConfigError(
          at,
          raw,
          'a header name, with `*` only at the end as a prefix wildcard (e.g. "x-b3-*")',
        ),
      );
    } else if (body === '') {
      errors.push(new ConfigError(at, raw, 'a header name or prefix (a bare "*" would strip every header)'));
    } else if (!TOKEN.test(body) || body.includes('*')) {
      errors.push(
        new ConfigError(at, raw, 'a header name of RFC 9110 token characters (letters, digits, -)'),
      );
    } else if (isPrefix) {
      if (!prefixes.includes(body)) prefixes.push(body);
    } else exact.add(body);
  });
  return { exact, prefixes };
}

/** Whether a lower-cased header name is on the list. */
export function isTelemetryHeader(m: TelemetryMatcher, name: string): boolean {
  if (m.exact.has(name)) return true;
  for (const p of m.prefixes) if (name.startsWith(p)) return true;
  return false;
}

/** How a request treats telemetry headers (resolved per route at start). */
export interface TelemetryPolicy {
  readonly matcher: TelemetryMatcher;
  /** Strip in both directions (telemetry.optOut, or the route's override). */
  readonly strip: boolean;
  /** `DNT: 1` or `Sec-GPC: 1` on the request strips even when `strip` is false. */
  readonly honorClientSignals: boolean;
}

/** `DNT: 1` (Tracking Preference Expression) or `Sec-GPC: 1` (Global Privacy Control): exactly "1". */
export function isOptOutSignal(name: string, value: string): boolean {
  return (name === 'dnt' || name === 'sec-gpc') && value.trim() === '1';
}

/**
 * W3C Baggage §limits (https://www.w3.org/TR/baggage/#limits): a propagator need not pass on more than
 * 8192 bytes or 180 list-members, and when a request has several `baggage` lines the limits apply to all
 * of them together. Threat model #98: a baggage over them is dropped whole, whatever `telemetry.optOut`
 * says, so a client cannot make the gateway relay an arbitrarily large context (or one a W3C-conformant
 * upstream would cut at an arbitrary member) into the upstream's tracing and logs.
 */
export const BAGGAGE_MAX_BYTES = 8192;
/** See {@link BAGGAGE_MAX_BYTES}. */
export const BAGGAGE_MAX_MEMBERS = 180;

/** Running totals of the `baggage` lines of one request, for {@link isBaggageOverLimits}. */
export interface BaggageTally {
  /** Lines seen. */
  lines: number;
  /** Size of the lines joined with `,` (header values are latin1 strings: one character per byte). */
  bytes: number;
  /** List-members: every comma-separated entry, empty ones included (counting them fails closed). */
  members: number;
}

/** A tally of no `baggage` line. */
export function emptyBaggageTally(): BaggageTally {
  return { lines: 0, bytes: 0, members: 0 };
}

/** Adds one `baggage` line's value to `tally` (one pass over its characters). */
export function tallyBaggage(tally: BaggageTally, value: string): void {
  let members = 1;
  for (let i = 0; i < value.length; i++) if (value.charCodeAt(i) === 44 /* , */) members++;
  // Lines combine as one list (RFC 9110 §5.3): the joining comma counts, and so does its member.
  tally.bytes += value.length + (tally.lines > 0 ? 1 : 0);
  tally.members += members;
  tally.lines++;
}

/** Whether the request's `baggage` lines, together, exceed 8192 bytes or 180 list-members. */
export function isBaggageOverLimits(tally: BaggageTally): boolean {
  return tally.bytes > BAGGAGE_MAX_BYTES || tally.members > BAGGAGE_MAX_MEMBERS;
}
