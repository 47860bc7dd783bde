/**
 * The only module that reads the time: everything else takes a {@link Clock} in its deps.
 *
 * Two readings, two jobs (issue 12 point 7):
 *
 * - the **wall clock** ({@link Clock.now}) says what time it is. It is compared with instants that others
 *   wrote down in wall time: a token's `exp`/`nbf`/`iat`, a certificate's validity, a static token's
 *   `expiresAt`, the ticket-key hour, timestamps in logs and metrics. It can be stepped back or forward at any
 *   moment (NTP, a VM resumed, an operator), so it never measures how long something lasted;
 * - the **monotonic clock** ({@link Clock.hrtime}, {@link monotonicMs}) only moves forward, at a steady rate,
 *   from an arbitrary origin. Every duration is measured on it: cache lifetimes, backoffs and pauses, rate
 *   windows, latencies, a tunnel's lifetime.
 *
 * A cached decision therefore ends at the earlier of "its lifetime elapsed on the monotonic clock" and "the
 * token's own `exp` passed on the wall clock", and is refused while the token's `nbf` is ahead on the wall
 * clock: a stepped wall clock neither extends nor cuts it beyond what the token says.
 */
export interface Clock {
  /** Wall-clock milliseconds since the epoch. For instants (token and certificate times), never durations. */
  now(): number;
  /** Monotonic time in nanoseconds from an arbitrary origin: never steps. For durations and deadlines. */
  hrtime(): bigint;
}

/** The real clock: `Date.now()` and `process.hrtime.bigint()` (CLOCK_MONOTONIC on Linux). */
export const systemClock: Clock = {
  now: () => Date.now(),
  hrtime: () => process.hrtime.bigint(),
};

/**
 * The monotonic reading of `clock` in milliseconds (fractional): what cache lifetimes, backoffs and rate
 * windows compare. Only differences between two readings mean anything.
 */
export function monotonicMs(clock: Pick<Clock, 'hrtime'>): number {
  return Number(clock.hrtime()) / 1e6;
}
