/**
 * What the remote-calling providers (introspection, remote JWKS) share: the endpoint URL rule, a size-capped
 * body reader, and the content-type check. CONVENTIONS rule 6: remote calls trust nothing.
 */
import { isIP } from 'node:net';
import { z } from 'zod';

/** Whether a URL's host is a loopback address (127.0.0.0/8, ::1) or `localhost`. */
export function isLoopbackHost(hostname: string): boolean {
  const host = hostname.startsWith('[') && hostname.endsWith(']') ? hostname.slice(1, -1) : hostname;
  if (host.toLowerCase() === 'localhost') return true;
  if (isIP(host) === 4) return host.startsWith('127.');
  if (isIP(host) === 6) return host === '::1' || host === '0:0:0:0:0:0:0:1';
  return false;
}

/**
 * An IdP endpoint: `https://`, or `http://` to a loopback host only (the bytes never leave the machine).
 * No userinfo (credentials go in their own keys, read from files), no fragment.
 */
export const endpointUrlSchema = z.string().superRefine((value, ctx) => {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    ctx.addIssue({ code: 'custom', input: value, message: 'an absolute https:// URL' });
    return;
  }
  const secure = url.protocol === 'https:' || (url.protocol === 'http:' && isLoopbackHost(url.hostname));
  if (!secure) {
    ctx.addIssue({
      code: 'custom',
      input: value,
      message:
        'an https:// URL (http:// only to a loopback host such as 127.0.0.1: a token or key set must not cross a network in clear)',
    });
  } else if (url.username !== '' || url.password !== '' || url.hash !== '') {
    ctx.addIssue({ code: 'custom', input: value, message: 'a URL without user:password@ or #fragment' });
  }
});

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
