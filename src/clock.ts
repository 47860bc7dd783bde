/** The only module that reads the time: everything else takes a {@link Clock} in its deps. */
export interface Clock {
  /** Wall-clock milliseconds since the epoch (certificate validity, token expiry). */
  now(): number;
  /** Monotonic high-resolution time in nanoseconds (latency measurements). */
  hrtime(): bigint;
}

/** The real clock. */
export const systemClock: Clock = {
  now: () => Date.now(),
  hrtime: () => process.hrtime.bigint(),
};
