/**
 * The stage runner: walks a request through an ordered list of stages (hono's `compose`, Oathkeeper's loop
 * over authn → authz → mutate), then hands it to a terminal (forward, tunnel, or an endpoint of the gateway's).
 *
 * A stage reads and fills the request context and returns:
 * - nothing: go on with the next stage (a stage without work for this request returns at once);
 * - an {@link Answer}: the gateway answers the request itself (a redirect, a page); no later stage runs;
 * - a promise of either (authentication asks a provider): the walk resumes when it settles.
 * A stage refuses by throwing a `GatewayError`; anything else thrown is `ERR_INTERNAL`, still a refusal.
 *
 * A request whose stages are all synchronous runs synchronously to its terminal: no promise, no tick.
 */
import { toGatewayError, type GatewayError } from '../errors.js';
import type { Answer } from './respond.js';

/** What a stage says about a request. */
export type StageResult = Answer | undefined | Promise<Answer | undefined>;

/** One step of the pipeline. */
export type Stage<C> = (ctx: C) => StageResult;

/** Where a walk ends. None of these may throw; the runner guards them anyway. */
export interface StageEnds<C> {
  /** Every stage passed. */
  readonly pass: (ctx: C) => void;
  /** A stage answered for the gateway. */
  readonly answer: (ctx: C, answer: Answer) => void;
  /** A stage refused (or failed: fail closed). */
  readonly refuse: (ctx: C, err: GatewayError) => void;
}

function isPromise(r: StageResult): r is Promise<Answer | undefined> {
  return typeof (r as Promise<unknown> | undefined)?.then === 'function';
}

/** Runs `stages` in order on `ctx`. Never throws and never rejects. */
export function runStages<C>(stages: readonly Stage<C>[], ctx: C, ends: StageEnds<C>): void {
  walk(stages, 0, ctx, ends);
}

function walk<C>(stages: readonly Stage<C>[], from: number, ctx: C, ends: StageEnds<C>): void {
  let i = from;
  try {
    for (; i < stages.length; i++) {
      const r = (stages[i] as Stage<C>)(ctx);
      if (r === undefined) continue;
      if (isPromise(r)) {
        const next = i + 1;
        r.then(
          (a) => {
            if (a === undefined) walk(stages, next, ctx, ends);
            else settle(() => ends.answer(ctx, a), ctx, ends);
          },
          (err: unknown) => settle(() => ends.refuse(ctx, toGatewayError(err)), ctx, ends),
        );
        return;
      }
      settle(() => ends.answer(ctx, r), ctx, ends);
      return;
    }
  } catch (err) {
    settle(() => ends.refuse(ctx, toGatewayError(err)), ctx, ends);
    return;
  }
  settle(() => ends.pass(ctx), ctx, ends);
}

/** Runs an end; an end that throws (a bug) still refuses, once, and never escapes. */
function settle<C>(end: () => void, ctx: C, ends: StageEnds<C>): void {
  try {
    end();
  } catch (err) {
    try {
      ends.refuse(ctx, toGatewayError(err));
    } catch {
      /* a refusal that cannot even be written: the request's own stream handlers close it */
    }
  }
}
