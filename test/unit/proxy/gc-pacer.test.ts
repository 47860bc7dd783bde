/**
 * The young-generation pacer of the TCP pipes (src/proxy/gc-pacer.ts, issue 18): when it collects, and that
 * the collection it gets from V8 is a real young-generation one that leaves no `gc` global behind.
 */
import { PerformanceObserver, constants, type PerformanceEntry } from 'node:perf_hooks';
import { runInNewContext } from 'node:vm';
import { describe, expect, it } from 'vitest';
import { createGcPacer, GC_PACE_BYTES, youngCollection } from '../../../src/proxy/gc-pacer.js';

describe('createGcPacer', () => {
  it('collects once every `everyBytes` released, counting from the last collection', () => {
    let calls = 0;
    const released = createGcPacer({ everyBytes: 100 }, { collect: () => (calls += 1) });
    released(60);
    expect(calls).toBe(0);
    released(39);
    expect(calls).toBe(0);
    released(1);
    expect(calls).toBe(1);
    released(99);
    expect(calls).toBe(1);
    released(16 * 1024);
    expect(calls).toBe(2);
  });

  it('16 KiB TLS records: one collection per GC_PACE_BYTES of them', () => {
    let calls = 0;
    const released = createGcPacer({ everyBytes: GC_PACE_BYTES }, { collect: () => (calls += 1) });
    const record = 16 * 1024;
    for (let i = 0; i < (3 * GC_PACE_BYTES) / record; i++) released(record);
    expect(calls).toBe(3);
  });
});

describe('youngCollection', () => {
  it('runs a young-generation collection (a scavenge) when called', async () => {
    const collect = youngCollection();
    expect(collect).toBeTypeOf('function');
    const kinds: number[] = [];
    const observer = new PerformanceObserver((list) => {
      for (const e of list.getEntries() as (PerformanceEntry & { detail?: { kind?: number } })[])
        if (e.detail?.kind !== undefined) kinds.push(e.detail.kind);
    });
    observer.observe({ entryTypes: ['gc'] });
    try {
      collect!();
      // GC entries are delivered asynchronously.
      const until = Date.now() + 2_000;
      while (!kinds.includes(constants.NODE_PERFORMANCE_GC_MINOR) && Date.now() < until)
        await new Promise((r) => setTimeout(r, 10));
    } finally {
      observer.disconnect();
    }
    expect(kinds).toContain(constants.NODE_PERFORMANCE_GC_MINOR);
    expect(kinds).not.toContain(constants.NODE_PERFORMANCE_GC_MAJOR);
  });

  it('is one function for the process, and leaves no `gc` in the main context or in later contexts', () => {
    expect(youngCollection()).toBe(youngCollection());
    expect(typeof (globalThis as { gc?: unknown }).gc).toBe('undefined');
    expect(runInNewContext('typeof gc')).toBe('undefined');
  });
});
