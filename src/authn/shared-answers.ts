/**
 * The shared tier of an introspection provider's answer cache (`store.type: redis`): answers one replica
 * checked, read by the others instead of asking the IdP again. The provider's own LRU stays in front of it (the
 * near-cache: a cached decision costs no Redis round trip), kept coherent by the purge messages of the store's
 * invalidation channel (app.ts).
 *
 * Same rules as the local cache (CONVENTIONS rule 7): key SHA-256(token) (`answer:<provider>:<hash>`), stored
 * only after every check passed, a lifetime of min(exp − now, maxTtl) (negative answers: negativeTtl) kept by
 * Redis itself, and `exp` / `nbf` checked again by the reader on every hit. Times are wall-clock epoch ms:
 * replicas share no monotonic clock.
 *
 * Revocation: every answer carries the cache generation it was asked under (`answer-generation:<provider>`, a
 * random id). A purge — one token or all — writes a new generation, so every answer stored before it is
 * ignored by every replica at once, including one written late by a call that began before the purge. (One
 * token's purge thus costs each other cached token one more IdP call: purges are rare operator actions.)
 *
 * Never fail open: a store that cannot be read is a miss — the token is checked at the IdP as without a store —
 * and a store that cannot be written is an answer not shared. Neither rejects.
 */
import { randomBytes } from 'node:crypto';
import type { Clock } from '../clock.js';
import type { KeyValueStore } from '../store/store.js';
import type { Principal } from './principal.js';

/** An answer read from the shared tier, with how long it is still fresh (ms from now). */
export type SharedAnswer =
  | { readonly active: false; readonly freshForMs: number }
  | {
      readonly active: true;
      readonly principal: Principal;
      readonly freshForMs: number;
      readonly expMs: number | undefined;
      readonly nbfMs: number | undefined;
    };

/** The shared answers of one provider. */
export interface SharedAnswers {
  /** The fresh shared answer for `hash` (undefined: none, stale, of an older generation, or the store failed), and
   * the generation to store a new answer under (undefined when the store failed: nothing is stored then). */
  lookup(hash: string): Promise<{ readonly answer: SharedAnswer | undefined; readonly generation: string | undefined }>;
  /** Shares an answer this process checked, asked under `generation`, fresh for `freshForMs`. Never rejects. */
  share(hash: string, generation: string, answer: SharedAnswer): void;
  /** A new generation: every answer shared before is ignored from now on (a purge). Rejects when the store fails. */
  invalidate(): Promise<void>;
}

/** The generation id lives a week: far past any answer's lifetime (maxTtl); a lost one just starts a new one. */
const GENERATION_TTL_MS = 7 * 86_400_000;

/** The stored form: generation, active, fresh until (epoch ms), principal, exp, nbf. */
interface Stored {
  readonly g: string;
  readonly a: boolean;
  readonly u: number;
  readonly p?: Principal;
  readonly e?: number;
  readonly n?: number;
}

function parse(text: string | undefined): Stored | undefined {
  if (text === undefined) return undefined;
  try {
    const s = JSON.parse(text) as Partial<Stored>;
    if (typeof s.g !== 'string' || typeof s.a !== 'boolean' || typeof s.u !== 'number') return undefined;
    if (s.a && (typeof s.p !== 'object' || s.p === null || typeof s.p.subject !== 'string' || !Array.isArray(s.p.scopes)))
      return undefined;
    return s as Stored;
  } catch {
    return undefined;
  }
}

/** Creates the shared answers of provider `name` on `kv`. */
export function createSharedAnswers(name: string, kv: KeyValueStore, clock: Pick<Clock, 'now'>): SharedAnswers {
  const generationKey = `answer-generation:${name}`;
  const answerKey = (hash: string): string => `answer:${name}:${hash}`;
  const newGeneration = (): string => randomBytes(12).toString('base64url');

  return {
    async lookup(hash) {
      let text: string | undefined;
      let generation: string | undefined;
      try {
        [text, generation] = await kv.getMany([answerKey(hash), generationKey]);
        if (generation === undefined) {
          // None yet (a new Redis, or evicted): make one; of two replicas racing, the first one's wins.
          const mine = newGeneration();
          generation = (await kv.add(generationKey, mine, GENERATION_TTL_MS)) ? mine : await kv.get(generationKey);
          return { answer: undefined, generation };
        }
      } catch {
        return { answer: undefined, generation: undefined };
      }
      const s = parse(text);
      const now = clock.now();
      if (s?.g !== generation || s.u <= now) return { answer: undefined, generation };
      if (!s.a) return { answer: { active: false, freshForMs: s.u - now }, generation };
      // The token's own bounds, by this replica's clock (the writer's may differ).
      if ((s.e !== undefined && now >= s.e) || (s.n !== undefined && now < s.n)) return { answer: undefined, generation };
      const p = s.p as Principal;
      const principal: Principal = { ...p, scopes: Object.freeze([...p.scopes]), claims: Object.freeze({ ...p.claims }) };
      return {
        answer: { active: true, principal, freshForMs: s.u - now, expMs: s.e, nbfMs: s.n },
        generation,
      };
    },
    share(hash, generation, answer) {
      const ttl = Math.floor(answer.freshForMs);
      if (ttl < 1) return;
      const stored: Stored = answer.active
        ? {
            g: generation,
            a: true,
            u: clock.now() + ttl,
            p: answer.principal,
            ...(answer.expMs !== undefined ? { e: answer.expMs } : {}),
            ...(answer.nbfMs !== undefined ? { n: answer.nbfMs } : {}),
          }
        : { g: generation, a: false, u: clock.now() + ttl };
      kv.set(answerKey(hash), JSON.stringify(stored), ttl).catch(() => undefined);
    },
    async invalidate() {
      await kv.set(generationKey, newGeneration(), GENERATION_TTL_MS);
    },
  };
}
