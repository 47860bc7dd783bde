import { describe, expect, it } from 'vitest';
import { GatewayError } from '../../../src/errors.js';
import { redirect, type Answer } from '../../../src/pipeline/respond.js';
import { runStages, type Stage, type StageEnds } from '../../../src/pipeline/run.js';

interface Ctx {
  seen: string[];
}

type Recorder = StageEnds<Ctx> & { ended: string[]; answered?: Answer; err?: GatewayError };

function recorder(): Recorder {
  const r: Recorder = {
    ended: [],
    pass: () => r.ended.push('pass'),
    answer: (_c, a) => {
      r.ended.push('answer');
      r.answered = a;
    },
    refuse: (_c, e) => {
      r.ended.push('refuse');
      r.err = e;
    },
  };
  return r;
}

const step =
  (name: string): Stage<Ctx> =>
  (c) => {
    c.seen.push(name);
    return undefined;
  };

describe('runStages', () => {
  it('runs synchronous stages in order and passes synchronously', () => {
    const ctx: Ctx = { seen: [] };
    const ends = recorder();
    runStages([step('a'), step('b'), step('c')], ctx, ends);
    // No tick was needed: everything happened before runStages returned.
    expect(ctx.seen).toEqual(['a', 'b', 'c']);
    expect(ends.ended).toEqual(['pass']);
  });

  it('a throw refuses with that GatewayError and runs no later stage', () => {
    const ctx: Ctx = { seen: [] };
    const ends = recorder();
    const refuse: Stage<Ctx> = () => {
      throw new GatewayError('ERR_AUTHN_MISSING');
    };
    runStages([step('a'), refuse, step('c')], ctx, ends);
    expect(ctx.seen).toEqual(['a']);
    expect(ends.ended).toEqual(['refuse']);
    expect(ends.err?.code).toBe('ERR_AUTHN_MISSING');
  });

  it('anything else thrown is ERR_INTERNAL: still a refusal, never a pass', () => {
    const ends = recorder();
    runStages(
      [
        () => {
          throw new TypeError('bug');
        },
      ],
      { seen: [] },
      ends,
    );
    expect(ends.ended).toEqual(['refuse']);
    expect(ends.err?.code).toBe('ERR_INTERNAL');
  });

  it('an answer ends the walk with that answer', () => {
    const ctx: Ctx = { seen: [] };
    const ends = recorder();
    runStages([step('a'), () => redirect('/login'), step('c')], ctx, ends);
    expect(ctx.seen).toEqual(['a']);
    expect(ends.ended).toEqual(['answer']);
    expect(ends.answered?.status).toBe(302);
  });

  it('an async stage resumes the walk when it settles', async () => {
    const ctx: Ctx = { seen: [] };
    const ends = recorder();
    const wait: Stage<Ctx> = (c) =>
      new Promise((resolve) =>
        setTimeout(() => {
          c.seen.push('async');
          resolve(undefined);
        }, 5),
      );
    runStages([step('a'), wait, step('c')], ctx, ends);
    expect(ends.ended).toEqual([]);
    await new Promise((r) => setTimeout(r, 30));
    expect(ctx.seen).toEqual(['a', 'async', 'c']);
    expect(ends.ended).toEqual(['pass']);
  });

  it('an async rejection refuses; a rejection that is not a GatewayError is ERR_INTERNAL', async () => {
    const ends = recorder();
    runStages([() => Promise.reject(new Error('idp bug')), step('never')], { seen: [] }, ends);
    await new Promise((r) => setTimeout(r, 5));
    expect(ends.ended).toEqual(['refuse']);
    expect(ends.err?.code).toBe('ERR_INTERNAL');
  });

  it('a terminal that throws becomes one refusal, and nothing escapes', () => {
    const ends = recorder();
    const throwing: StageEnds<Ctx> = {
      ...ends,
      pass: () => {
        throw new Error('terminal bug');
      },
    };
    expect(() => runStages([step('a')], { seen: [] }, throwing)).not.toThrow();
    expect(ends.ended).toEqual(['refuse']);
    expect(ends.err?.code).toBe('ERR_INTERNAL');
  });
});
