/** TLS session ticket keys: derivation and the rotation schedule (listener/ticket-keys.ts). */
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { Clock } from '../../../src/clock.js';
import {
  startTicketKeyRotation,
  TICKET_KEY_BYTES,
  ticketKeyPeriod,
  ticketKeysFor,
} from '../../../src/listener/ticket-keys.js';

const secret = Buffer.alloc(48, 7);
const clock: Clock = { now: () => Date.now(), hrtime: () => process.hrtime.bigint() };

describe('ticketKeysFor', () => {
  it('is 48 bytes and the same for the same secret, material and period (every worker derives alike)', () => {
    const a = ticketKeysFor(secret, 'digest-1', 42);
    expect(a.length).toBe(TICKET_KEY_BYTES);
    expect(ticketKeysFor(Buffer.alloc(48, 7), 'digest-1', 42).equals(a)).toBe(true);
  });

  it('changes with the period, the TLS material and the secret', () => {
    const a = ticketKeysFor(secret, 'digest-1', 42);
    expect(ticketKeysFor(secret, 'digest-1', 43).equals(a)).toBe(false);
    expect(ticketKeysFor(secret, 'digest-2', 42).equals(a)).toBe(false);
    expect(ticketKeysFor(Buffer.alloc(48, 8), 'digest-1', 42).equals(a)).toBe(false);
  });

  it('does not let material and period run into each other', () => {
    expect(ticketKeysFor(secret, 'd1', 23).equals(ticketKeysFor(secret, 'd12', 3))).toBe(false);
  });
});

describe('ticketKeyPeriod', () => {
  it('numbers the periods from the epoch, so processes with one clock agree', () => {
    expect(ticketKeyPeriod(0, 1000)).toBe(0);
    expect(ticketKeyPeriod(999, 1000)).toBe(0);
    expect(ticketKeyPeriod(1000, 1000)).toBe(1);
    expect(ticketKeyPeriod(3_600_000 * 5 + 1, 3_600_000)).toBe(5);
  });
});

describe('startTicketKeyRotation', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('calls onRotate once at each period boundary with the new period, never before, until stopped', () => {
    vi.useFakeTimers({ now: 10_000_250 });
    const seen: number[] = [];
    const rotation = startTicketKeyRotation({
      rotationMs: 1000,
      clock,
      onRotate: (p) => seen.push(p),
      onError: () => undefined,
    });
    expect(rotation.period()).toBe(10_000);
    vi.advanceTimersByTime(740);
    expect(seen).toEqual([]);
    vi.advanceTimersByTime(20);
    expect(seen).toEqual([10_001]);
    vi.advanceTimersByTime(3000);
    expect(seen).toEqual([10_001, 10_002, 10_003, 10_004]);
    rotation.stop();
    vi.advanceTimersByTime(5000);
    expect(seen).toHaveLength(4);
  });

  it('goes on after a rotation that throws, reporting each failure', () => {
    vi.useFakeTimers({ now: 0 });
    const errors: unknown[] = [];
    let calls = 0;
    const rotation = startTicketKeyRotation({
      rotationMs: 1000,
      clock,
      onRotate: () => {
        calls++;
        throw new Error('setTicketKeys refused');
      },
      onError: (e) => errors.push(e),
    });
    vi.advanceTimersByTime(3100);
    rotation.stop();
    expect(calls).toBe(3);
    expect(errors).toHaveLength(3);
  });

  it('does not hold the process open (the timer is unref-ed)', () => {
    const timeouts = (): number => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
    const before = timeouts();
    const rotation = startTicketKeyRotation({
      rotationMs: 3_600_000,
      clock,
      onRotate: () => undefined,
      onError: () => undefined,
    });
    // An unref-ed timer is not among the resources that keep the event loop alive.
    expect(timeouts()).toBe(before);
    rotation.stop();
  });
});
