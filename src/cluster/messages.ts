/**
 * The messages between a cluster primary and its workers over the node:cluster IPC channel (JSON).
 * Secrets (the TLS ticket keys) travel only here, never in the environment or argv of a worker:
 * `/proc/<pid>/environ` and `/proc/<pid>/cmdline` are readable by other processes of the same user.
 * Every type starts with `portcullis:`; other messages on the channel (node:cluster's own, prom-client's)
 * are ignored by both sides.
 */

/** What a primary asks a running worker; the worker answers with an {@link AnswerMessage} of the same id. */
export type Question =
  { readonly q: 'metrics' } | { readonly q: 'notReady' } | { readonly q: 'purge'; readonly sha256?: string };

/** Worker → primary: the worker listens for messages now and wants its {@link InitMessage}. */
export interface HelloMessage {
  readonly type: 'portcullis:hello';
}
/** Primary → worker: its slot number (1..N, stable across restarts) and the shared TLS ticket keys (base64). */
export interface InitMessage {
  readonly type: 'portcullis:init';
  readonly slot: number;
  readonly ticketKeys: string;
}
/** Worker → primary: every listener is bound; the worker serves. */
export interface StartedMessage {
  readonly type: 'portcullis:started';
}
/** Worker → primary: the worker could not start; it exits with `code` (3: config or bind error, 1: other). */
export interface FailedMessage {
  readonly type: 'portcullis:failed';
  readonly code: number;
  readonly message: string;
}
/** Primary → worker: a question. */
export type AskMessage = { readonly type: 'portcullis:ask'; readonly id: number } & Question;
/** Worker → primary: the answer to the question `id` (or why there is none). */
export interface AnswerMessage {
  readonly type: 'portcullis:answer';
  readonly id: number;
  readonly value?: unknown;
  readonly error?: string;
}

export type ToWorker = InitMessage | AskMessage;
export type ToPrimary = HelloMessage | StartedMessage | FailedMessage | AnswerMessage;

function isObject(m: unknown): m is Record<string, unknown> {
  return typeof m === 'object' && m !== null && !Array.isArray(m);
}

/** Narrows a message received by a worker; anything else (not ours, malformed) is `undefined`. */
export function parseToWorker(m: unknown): ToWorker | undefined {
  if (!isObject(m)) return undefined;
  if (m.type === 'portcullis:init' && typeof m.slot === 'number' && typeof m.ticketKeys === 'string')
    return { type: m.type, slot: m.slot, ticketKeys: m.ticketKeys };
  if (m.type === 'portcullis:ask' && typeof m.id === 'number') {
    if (m.q === 'metrics' || m.q === 'notReady') return { type: m.type, id: m.id, q: m.q };
    if (m.q === 'purge')
      return {
        type: m.type,
        id: m.id,
        q: 'purge',
        ...(typeof m.sha256 === 'string' ? { sha256: m.sha256 } : {}),
      };
  }
  return undefined;
}

/** Narrows a message received by the primary; anything else is `undefined`. */
export function parseToPrimary(m: unknown): ToPrimary | undefined {
  if (!isObject(m)) return undefined;
  if (m.type === 'portcullis:hello' || m.type === 'portcullis:started') return { type: m.type };
  if (m.type === 'portcullis:failed' && typeof m.code === 'number' && typeof m.message === 'string')
    return { type: m.type, code: m.code, message: m.message };
  if (m.type === 'portcullis:answer' && typeof m.id === 'number')
    return {
      type: m.type,
      id: m.id,
      ...('value' in m ? { value: m.value } : {}),
      ...(typeof m.error === 'string' ? { error: m.error } : {}),
    };
  return undefined;
}
