/**
 * Telemetry header matching (`telemetry.headers`), compiled once at load into an exact-name set and a
 * short prefix list, so the per-request check is one Set lookup plus, for names starting with a prefix's
 * first letter only, a `startsWith`. Hostile case 98: a client's forged trace context (`traceparent`,
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
      errors.push(new ConfigError(at, raw, 'a header name, with `*` only at the end as a prefix wildcard (e.g. "x-b3-*")'));
    } else if (body === '') {
      errors.push(new ConfigError(at, raw, 'a header name or prefix (a bare "*" would strip every header)'));
    } else if (!TOKEN.test(body) || body.includes('*')) {
      errors.push(new ConfigError(at, raw, 'a header name of RFC 9110 token characters (letters, digits, -)'));
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
