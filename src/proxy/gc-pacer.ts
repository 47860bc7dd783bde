/**
 * Young-generation collections paced by the buffers a TCP tunnel lets go of (issue 18).
 *
 * Why it exists: every TLS record a client sends through a tunnel reaches JavaScript as a new 16 KiB Buffer,
 * whose bytes live outside V8's heap and are freed only when V8 collects the small object that holds them.
 * V8 collects its young generation when that fills up with objects, and a tunnel makes few objects per byte:
 * with the 16 MiB semi-space the gateway's start-up grows the young generation to, hundreds of MiB of spent
 * buffers waited for a collection, V8's external-memory limit (64 MiB over what the last full collection
 * left) was reached first, and V8 answered with full mark-compacts of the whole heap. Measured on an
 * 8-connection upload (4 GiB): 39 full collections, 2.6 s of CPU per GiB against 1.8 for the bare Node
 * pipe, whose young generation stays at 1 MiB. A young collection every {@link GC_PACE_BYTES} of spent
 * buffers frees them at under a millisecond each, and (nearly) no full collection is needed.
 *
 * Why not a smaller young generation for the whole process (`--max-semi-space-size=1`): it did the same for
 * the tunnel and cost the HTTP listeners 56–75 % more CPU per request (their requests make many short-lived
 * objects, which a small young generation promotes). The pacer acts only while tunnels move bytes.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

/**
 * Bytes of spent buffers between two young-generation collections: 4 MiB, about 0.5 ms of collection per
 * 4 MiB moved (a few per cent of what moving them costs). Why not more: after an idle spell V8's memory
 * reducer shrinks the heap and its limits to what is live, and then the buffers a pace of 8 or 16 MiB lets
 * pile up were enough to start a full collection every ~80 ms (measured, 8 uploads after 30 s idle: 99
 * full collections and 2.7-3.2 s/GiB at 8 MiB; 10 and 1.7-2.2 s/GiB at 4 MiB; 64 MiB let the
 * external-memory collections back in). Why not less: at 1 MiB the collections themselves cost more than
 * they saved (3,000 per 3 GiB, 2.4-2.8 s/GiB).
 */
export const GC_PACE_BYTES = 4 * 1024 * 1024;

/**
 * Counts the bytes of buffers given up (`released(bytes)`) and calls `collect` once every `everyBytes` of
 * them. Synchronous and allocation-free per call; `collect` runs inside the call that crossed the mark.
 */
export function createGcPacer(
  config: { readonly everyBytes: number },
  deps: { readonly collect: () => void },
): (bytes: number) => void {
  let pending = 0;
  return (bytes: number): void => {
    pending += bytes;
    if (pending < config.everyBytes) return;
    pending = 0;
    deps.collect();
  };
}

let young: (() => void) | null | undefined;

/**
 * V8's young-generation collection (a scavenge) as a function, or undefined where this V8 does not offer it.
 * Node exposes V8's `gc()` only to contexts created while `--expose-gc` is set: the flag is set for the one
 * context made here and cleared again, so no other context (and not the main one) gets a global `gc`.
 * The same function for the whole process (there is one heap).
 */
export function youngCollection(): (() => void) | undefined {
  if (young === undefined) {
    young = null;
    try {
      setFlagsFromString('--expose-gc');
      const gc: unknown = runInNewContext('typeof gc === "function" ? gc : undefined');
      if (typeof gc === 'function') {
        const options = { type: 'minor' };
        young = () => {
          (gc as (o: typeof options) => void)(options);
        };
      }
    } catch {
      // No V8 flag or context: V8 alone decides when to collect.
    } finally {
      setFlagsFromString('--no-expose-gc');
    }
  }
  return young ?? undefined;
}
