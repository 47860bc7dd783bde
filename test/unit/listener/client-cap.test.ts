/** `maxConnectionsPerClient` bookkeeping (listener/client-cap.ts). */
import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import { admitSocket, createClientCap } from '../../../src/listener/client-cap.js';

/** A socket stand-in: an address, `destroy()` that records and emits 'close'. */
function fakeSocket(
  remoteAddress: string | undefined,
): EventEmitter & { remoteAddress?: string; destroyed: boolean; destroy(): void } {
  const s = new EventEmitter() as EventEmitter & {
    remoteAddress?: string;
    destroyed: boolean;
    destroy(): void;
  };
  if (remoteAddress !== undefined) s.remoteAddress = remoteAddress;
  s.destroyed = false;
  s.destroy = () => {
    s.destroyed = true;
    s.emit('close');
  };
  return s;
}

describe('createClientCap', () => {
  it('admits up to the cap per address, each address on its own; a release frees one slot', () => {
    const cap = createClientCap(2);
    expect([cap.admit('10.0.0.1'), cap.admit('10.0.0.1'), cap.admit('10.0.0.1')]).toEqual([
      true,
      true,
      false,
    ]);
    expect(cap.admit('10.0.0.2')).toBe(true);
    cap.release('10.0.0.1');
    expect(cap.admit('10.0.0.1')).toBe(true);
    expect(cap.admit('10.0.0.1')).toBe(false);
  });

  it('undefined is no cap; setMax applies to the next admissions, open ones stay', () => {
    const cap = createClientCap(undefined);
    for (let i = 0; i < 1_000; i++) expect(cap.admit('10.0.0.1')).toBe(true);
    cap.setMax(1);
    expect(cap.admit('10.0.0.1')).toBe(false);
    expect(cap.admit('10.0.0.9')).toBe(true);
    expect(cap.admit('10.0.0.9')).toBe(false);
  });
});

describe('admitSocket', () => {
  it('counts an admitted socket until its close; destroys a refused one and reports its address', () => {
    const cap = createClientCap(1);
    const refused: string[] = [];
    const first = fakeSocket('192.0.2.7');
    expect(admitSocket(cap, first as never, (a) => refused.push(a))).toBe(true);
    const second = fakeSocket('192.0.2.7');
    expect(admitSocket(cap, second as never, (a) => refused.push(a))).toBe(false);
    expect(second.destroyed).toBe(true);
    expect(refused).toEqual(['192.0.2.7']);
    first.emit('close');
    expect(admitSocket(cap, fakeSocket('192.0.2.7') as never, (a) => refused.push(a))).toBe(true);
  });

  it('with no cap set, admits without counting or listening for the close (no cost per connection)', () => {
    const s = fakeSocket('192.0.2.7');
    expect(admitSocket(createClientCap(undefined), s as never, () => undefined)).toBe(true);
    expect(s.listenerCount('close')).toBe(0);
  });

  it('a socket without an address (already gone) counts under one empty key, never crashes', () => {
    const cap = createClientCap(1);
    expect(admitSocket(cap, fakeSocket(undefined) as never, () => undefined)).toBe(true);
    expect(admitSocket(cap, fakeSocket(undefined) as never, () => undefined)).toBe(false);
  });
});
