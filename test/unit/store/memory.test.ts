/** The memory store: lifetimes on the monotonic clock, one-time inserts, sets, and its bound. */
import { describe, expect, it } from 'vitest';
import { createMemoryStore } from '../../../src/store/memory.js';

function fakeClock(): { hrtime: () => bigint; advance: (ms: number) => void } {
  let ns = 0n;
  return { hrtime: () => ns, advance: (ms) => (ns += BigInt(ms) * 1_000_000n) };
}

describe('createMemoryStore', () => {
  it('forgets a value when its lifetime ends', async () => {
    const clock = fakeClock();
    const s = createMemoryStore({}, { clock });
    await s.set('k', 'v', 1_000);
    expect(await s.get('k')).toBe('v');
    clock.advance(999);
    expect(await s.get('k')).toBe('v');
    clock.advance(1);
    expect(await s.get('k')).toBeUndefined();
  });

  it('adds a key once (a replayed jti is refused) and again after its lifetime', async () => {
    const clock = fakeClock();
    const s = createMemoryStore({}, { clock });
    expect(await s.add('jti', '1', 100)).toBe(true);
    expect(await s.add('jti', '1', 100)).toBe(false);
    clock.advance(100);
    expect(await s.add('jti', '1', 100)).toBe(true);
  });

  it('keeps sets, counts by prefix, and deletes', async () => {
    const s = createMemoryStore({}, { clock: fakeClock() });
    await s.addToSet('sid:x', 'a', 1_000);
    await s.addToSet('sid:x', 'b', 1_000);
    expect([...(await s.members('sid:x'))].sort()).toEqual(['a', 'b']);
    await s.set('session:p:a', '{}', 1_000);
    await s.set('session:p:b', '{}', 1_000);
    expect(await s.count('session:p:')).toBe(2);
    expect(await s.delete('session:p:a')).toBe(true);
    expect(await s.delete('session:p:a')).toBe(false);
    expect(await s.count('session:p:')).toBe(1);
  });

  it('is bounded: past maxEntries the least recently used key goes', async () => {
    const s = createMemoryStore({ maxEntries: 2 }, { clock: fakeClock() });
    await s.set('a', '1', 1_000);
    await s.set('b', '2', 1_000);
    await s.get('a');
    await s.set('c', '3', 1_000);
    expect(await s.get('b')).toBeUndefined();
    expect(await s.get('a')).toBe('1');
  });
});
