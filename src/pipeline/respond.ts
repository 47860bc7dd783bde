/**
 * The one responder: every answer the gateway writes itself (a refusal, a redirect, a body it owns) is an
 * {@link Answer}, rendered here as an HTTP/1.1 or HTTP/2 response, or as raw HTTP/1.1 bytes on a socket
 * that no HTTP server owns any more (a refused upgrade, a parse error, plaintext on a TLS port).
 *
 * Status texts come from `node:http`'s `STATUS_CODES`, and the refusal body from the error registry
 * (errors.ts): the peer learns the status and a generic sentence, never the reason (that goes to the log).
 */
import { STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
import { bearerChallenge, ERRORS, type GatewayError } from '../errors.js';
import { writeHead, type ClientResponse } from '../proxy/types.js';

/** A complete answer of the gateway's own: status, headers (lowercase names) and a small body. */
export interface Answer {
  readonly status: number;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: string;
  /** `Set-Cookie` lines (the gateway's own cookies only), one header each. */
  readonly cookies?: readonly string[];
}

/** Options of a refusal. */
export interface RefusalOptions {
  /** The route's required scopes, for an `insufficient_scope` challenge (RFC 6750 §3). */
  readonly scope?: string | undefined;
  readonly requestId?: string | undefined;
  /**
   * The refused request is a browser's (`Accept: text/html`): the body is a short HTML page instead of text,
   * with a login link when the listener has a login (`loginHref`, a path of this origin).
   */
  readonly html?: { readonly loginHref: string | undefined } | undefined;
}

/** HTML-escapes text for an element or a double-quoted attribute. */
function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/**
 * The page a browser gets for a refusal: the registry's generic sentence, the request id, a login link. Never
 * a token, a signature or the reason (that goes to the log), and no script: the CSP of {@link ownedBody}.
 */
function refusalPage(status: number, message: string, requestId: string | undefined, loginHref: string | undefined): string {
  const title = `${status} ${statusText(status)}`;
  return (
    `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(title)}</title></head><body>` +
    `<h1>${escapeHtml(title)}</h1><p>${escapeHtml(message)}</p>` +
    (loginHref !== undefined ? `<p><a href="${escapeHtml(loginHref)}">Log in</a></p>` : '') +
    (requestId !== undefined ? `<p>Request id: <code>${escapeHtml(requestId)}</code></p>` : '') +
    '</body></html>\n'
  );
}

/**
 * The answer to a refusal: the registry's status and message, `no-store`, the request id, the RFC 6750
 * challenge where the code has one, and `Allow` on a 405.
 */
export function refusal(err: GatewayError, opts: RefusalOptions = {}): Answer {
  const headers: Record<string, string> = {
    'content-type': 'text/plain; charset=utf-8',
    'cache-control': 'no-store',
  };
  if (opts.requestId !== undefined) headers['x-request-id'] = opts.requestId;
  const challenge = bearerChallenge(err.code, opts.scope);
  if (challenge !== undefined) headers['www-authenticate'] = challenge;
  // RFC 9110 §15.5.6: a 405 lists the methods the target allows.
  if (err.allow !== undefined) headers.allow = err.allow;
  const { status, message } = ERRORS[err.code];
  if (opts.html !== undefined) {
    const page = ownedBody(status, 'html', refusalPage(status, message, opts.requestId, opts.html.loginHref));
    return { status, headers: { ...headers, ...page.headers }, body: page.body };
  }
  return { status, headers, body: `${message}\n` };
}

/**
 * A redirect (302 by default) to `location`, which the caller has already checked (same origin, or the
 * IdP's authorization endpoint): the responder never builds a location from request input itself.
 */
export function redirect(location: string, extra: Readonly<Record<string, string>> = {}, status = 302): Answer {
  return {
    status,
    headers: { location, 'cache-control': 'no-store', 'content-type': 'text/plain; charset=utf-8', ...extra },
    body: '',
  };
}

/**
 * A body the gateway owns (a login page, a JSON document). HTML always goes with a restrictive CSP and
 * `nosniff`, so a page of the gateway's can run no script and embed nothing.
 */
export function ownedBody(
  status: number,
  type: 'html' | 'json' | 'text',
  body: string,
  extra: Readonly<Record<string, string>> = {},
): Answer {
  const headers: Record<string, string> = {
    'content-type':
      type === 'html'
        ? 'text/html; charset=utf-8'
        : type === 'json'
          ? 'application/json'
          : 'text/plain; charset=utf-8',
    'cache-control': 'no-store',
    'x-content-type-options': 'nosniff',
  };
  if (type === 'html') {
    headers['content-security-policy'] = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'";
    headers['referrer-policy'] = 'no-referrer';
  }
  return { status, headers: { ...headers, ...extra }, body };
}

/** The reason phrase of a status (RFC 9110 §15), from Node's table. */
export function statusText(status: number): string {
  return STATUS_CODES[status] ?? 'Unknown';
}

/** Bytes an answer puts on the wire as its body. */
export function bodyBytes(answer: Answer): number {
  return Buffer.byteLength(answer.body);
}

/**
 * Writes `answer` as the response of an HTTP/1.1 or HTTP/2 request. `close`: an HTTP/1.1 connection is not
 * reused after it (`Connection: close`). A response that already started (or whose stream is gone) cannot
 * carry it: it is destroyed instead. Never throws.
 */
export function writeAnswer(res: ClientResponse, answer: Answer, close = false): void {
  if (res.headersSent || isGone(res)) {
    res.destroy();
    return;
  }
  const headers: Record<string, string | number | string[]> = {
    ...answer.headers,
    'content-length': bodyBytes(answer),
  };
  if (answer.cookies !== undefined && answer.cookies.length > 0) headers['set-cookie'] = [...answer.cookies];
  if (close && !('stream' in res)) headers.connection = 'close';
  try {
    writeHead(res, answer.status, headers);
    res.end(answer.body);
  } catch {
    res.destroy();
  }
}

function isGone(res: ClientResponse): boolean {
  if ('stream' in res) {
    const stream = res.stream;
    return stream.destroyed || stream.closed;
  }
  return res.destroyed;
}

/** The conventional spelling of a header name on the wire (`www-authenticate` → `WWW-Authenticate`). */
function wireName(name: string): string {
  if (name === 'www-authenticate') return 'WWW-Authenticate';
  return name.replace(/(^|-)([a-z])/g, (_m, dash: string, c: string) => dash + c.toUpperCase());
}

/** `answer` as raw HTTP/1.1 bytes, always with `Connection: close`. */
export function rawAnswer(answer: Answer): string {
  let head = `HTTP/1.1 ${answer.status} ${statusText(answer.status)}\r\n`;
  for (const [name, value] of Object.entries(answer.headers)) head += `${wireName(name)}: ${value}\r\n`;
  for (const cookie of answer.cookies ?? []) head += `Set-Cookie: ${cookie}\r\n`;
  return `${head}Content-Length: ${bodyBytes(answer)}\r\nConnection: close\r\n\r\n${answer.body}`;
}

/**
 * Writes `answer` on a socket that speaks HTTP/1.1 but is no server's any more (an upgrade the gateway
 * refuses, a request the parser refused) and ends it. A socket that can no longer be written is destroyed.
 */
export function writeRawAnswer(socket: Duplex, answer: Answer): void {
  if (socket.destroyed || !socket.writable) {
    socket.destroy();
    return;
  }
  socket.end(rawAnswer(answer));
}
