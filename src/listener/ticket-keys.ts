/**
 * TLS session ticket keys that rotate.
 *
 * A session ticket is the server's session state encrypted under its ticket key; whoever holds that key can
 * open every ticket it sealed, and a TLS 1.2 ticket carries the session's master secret. Node makes one random
 * key per secure context and keeps it for the life of the process, so one memory leak would expose every
 * ticket-resumed TLS 1.2 session since the start. Here the key is derived from a 48-byte secret, the
 * listener's TLS material and the current rotation period, and replaced when the period ends (Go's
 * crypto/tls, which ghostunnel runs on, rotates its keys in the same spirit). A ticket from an earlier period
 * is not resumed: that client makes one full handshake.
 *
 * The derivation needs no coordination: every worker of a cluster holds the same secret, loads the same
 * files and reads the same clock, so all of them derive the same key for a period and a client resumes
 * whichever worker answers. A change of the TLS material (a reload with a new CA or CRL) changes the key at
 * once, so no session made under the old trust is resumed.
 */
import { createHmac } from 'node:crypto';
import type { Clock } from '../clock.js';
import type { ListenerTls } from '../config/runtime.js';
import { tlsMaterialDigest } from './tls-material.js';

/** The length of what `tls.Server#setTicketKeys` takes: 16 bytes of name, 16 of HMAC key, 16 of AES key. */
export const TICKET_KEY_BYTES = 48;

/** How long one ticket key is used: one hour. A client resumes at most this long with one key. */
export const TICKET_KEY_ROTATION_MS = 3_600_000;

/** The rotation period `nowMs` falls in: periods start at multiples of `rotationMs` since the epoch. */
export function ticketKeyPeriod(nowMs: number, rotationMs: number): number {
  return Math.floor(nowMs / rotationMs);
}

/**
 * The ticket keys of one listener for one period: HMAC-SHA-384(secret, material ‖ period), 48 bytes.
 * `material` identifies the TLS material (a digest of certificate, key, CA, CRL and versions).
 */
export function ticketKeysFor(secret: Buffer, material: string, period: number): Buffer {
  return createHmac('sha384', secret).update(`portcullis ticket keys\0${material}\0${period}`).digest();
}

/** The keys a listener with TLS material `tls` uses at `nowMs`: {@link ticketKeysFor} of the current period. */
export function currentTicketKeys(
  secret: Buffer,
  tls: ListenerTls | undefined,
  nowMs: number,
  rotationMs: number,
): Buffer {
  return ticketKeysFor(secret, tlsMaterialDigest(tls), ticketKeyPeriod(nowMs, rotationMs));
}

/** A running rotation schedule. */
export interface TicketKeyRotation {
  /** The current period (what {@link ticketKeysFor} takes). */
  period(): number;
  /** Stops the schedule (at shutdown). */
  stop(): void;
}

/**
 * Calls `onRotate(period)` when each rotation period begins, from the next boundary on. The timer is unref'd
 * (it never holds the process open) and re-armed after each call; an exception in `onRotate` is passed to
 * `onError` and the schedule goes on, so a failed rotation never stops the next one.
 */
export function startTicketKeyRotation(opts: {
  readonly rotationMs: number;
  readonly clock: Clock;
  readonly onRotate: (period: number) => void;
  readonly onError: (err: unknown) => void;
}): TicketKeyRotation {
  const { rotationMs, clock } = opts;
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  const arm = (): void => {
    if (stopped) return;
    const now = clock.now();
    // A few ms past the boundary, so the period read when it fires is the new one.
    const wait = (ticketKeyPeriod(now, rotationMs) + 1) * rotationMs - now + 5;
    timer = setTimeout(fire, wait);
    timer.unref();
  };
  const fire = (): void => {
    try {
      opts.onRotate(ticketKeyPeriod(clock.now(), rotationMs));
    } catch (err) {
      opts.onError(err);
    }
    arm();
  };
  arm();
  return {
    period: () => ticketKeyPeriod(clock.now(), rotationMs),
    stop(): void {
      stopped = true;
      clearTimeout(timer);
    },
  };
}
