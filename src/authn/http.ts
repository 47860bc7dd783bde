/**
 * What the remote-calling providers (introspection, remote JWKS) share: a size-capped body reader, the
 * content-type check and a secret-free description of a failed call (the endpoint URL rule is config:
 * authn/provider-config.ts). CONVENTIONS rule 6: remote calls trust nothing.
 */

/** The body is larger than the cap: the read stopped there. */
export class BodyTooLarge extends Error {
  constructor(maxBytes: number) {
    super(`response body over ${maxBytes} bytes`);
    this.name = 'BodyTooLarge';
  }
}

/**
 * Reads a response body as UTF-8, refusing (and cancelling the stream) past `maxBytes`. jose and fetch have
 * no cap of their own: a 10 MB "key set" would otherwise be buffered and parsed (threat model #47).
 */
export async function readBodyCapped(response: Response, maxBytes: number): Promise<string> {
  const declared = response.headers.get('content-length');
  if (declared !== null && Number(declared) > maxBytes) {
    await response.body?.cancel().catch(() => undefined);
    throw new BodyTooLarge(maxBytes);
  }
  const body = response.body;
  if (body === null) return '';
  const reader = body.getReader() as ReadableStreamDefaultReader<Uint8Array>;
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > maxBytes) {
      await reader.cancel().catch(() => undefined);
      throw new BodyTooLarge(maxBytes);
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** Whether the media type is `application/json` (parameters such as charset allowed; RFC 7662 §2.2). */
export function isJsonContentType(value: string | null): boolean {
  if (value === null) return false;
  const semi = value.indexOf(';');
  const type = (semi === -1 ? value : value.slice(0, semi)).trim().toLowerCase();
  return type === 'application/json';
}

/** Discards a body we will not read, so the connection can be reused; never throws. */
export async function discardBody(response: Response): Promise<void> {
  await response.body?.cancel().catch(() => undefined);
}

/** A short, secret-free description of a fetch failure for logs and error details. */
export function describeFetchError(err: unknown): string {
  if (err instanceof Error) {
    if (err.name === 'TimeoutError' || err.name === 'AbortError') return 'timeout';
    const cause = (err as { cause?: unknown }).cause;
    const code = cause !== null && typeof cause === 'object' ? (cause as { code?: unknown }).code : undefined;
    return typeof code === 'string' ? `${err.message} (${code})` : err.message.slice(0, 200);
  }
  return 'non-error thrown';
}
