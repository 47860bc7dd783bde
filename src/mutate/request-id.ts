/**
 * The request id: one per request, kept from the client's `X-Request-Id` when it is a sane one, else
 * made here; it goes upstream as `X-Request-Id`, back to the client on the gateway's own answers, and
 * into the access log, so one id follows a request through the gateway, the upstream and their logs.
 */
import { randomUUID } from 'node:crypto';

/**
 * A client-sent X-Request-Id the gateway keeps: 1 to 128 characters of letters, digits and `. _ : -`
 * (UUIDs, ULIDs, hex and Envoy's ids all fit). Anything else — empty, too long, spaces, control bytes,
 * two headers — is replaced by a fresh id, so a client can neither break a log line nor smuggle text
 * into the upstream's logs through it.
 */
const REQUEST_ID_RE = /^[A-Za-z0-9._:-]{1,128}$/;

/** Whether `value` is a request id the gateway keeps. */
export function isValidRequestId(value: string): boolean {
  return REQUEST_ID_RE.test(value);
}

/** Makes request ids (injected so tests can predict them). */
export type RequestIdSource = () => string;

/** Random UUIDv4 ids (crypto.randomUUID keeps a pool of random bytes: ~100 ns each). */
export const randomRequestId: RequestIdSource = () => randomUUID();

/**
 * The request id of a request from its raw headers: the client's X-Request-Id when there is exactly one
 * and it is valid, else a new one. Used on paths where the header scan in mutate/request-headers.ts did
 * not run (refusals before it).
 */
export function requestIdOf(rawHeaders: readonly string[], next: RequestIdSource): string {
  let found: string | undefined;
  let count = 0;
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const name = rawHeaders[i] as string;
    if (name.length === 12 && name.toLowerCase() === 'x-request-id') {
      count++;
      found = rawHeaders[i + 1];
    }
  }
  return count === 1 && found !== undefined && isValidRequestId(found) ? found : next();
}
