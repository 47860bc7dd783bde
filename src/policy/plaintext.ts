/**
 * Require-encryption at the byte level: look at the first byte of a connection before the TLS layer
 * takes it. A TLS record starts with 0x16 (handshake); anything else is plaintext, which gets a one-line
 * HTTP 400 and a close instead of the silent reset Node's TLS server would give (DESIGN.md contract); a
 * TCP listener passes `plaintextAnswer: 'none'` and only closes ("a TCP listener closes").
 *
 * The socket is paused and the chunk pushed back (`unshift`) before TLS takes over: the TLS layer drains
 * the socket's buffer, so ALPN h2 and http/1.1 both keep working (CONVENTIONS.md, known traps).
 */
import type { Socket } from 'node:net';
import { GatewayError } from '../errors.js';
import { rawAnswer, refusal } from '../pipeline/respond.js';

/** First byte of a TLS record carrying a handshake message (RFC 8446 §5.1, ContentType.handshake). */
const TLS_HANDSHAKE = 0x16;

/** The answer written on a TLS port to a client that spoke plaintext. */
export const PLAINTEXT_ANSWER = rawAnswer(refusal(new GatewayError('ERR_POLICY_PLAINTEXT')));

/** What the sniffer decided about one connection. */
export interface SniffHandlers {
  /** The first byte is a TLS handshake: the socket (paused, chunk unshifted) goes to the TLS server. */
  readonly onTls: (socket: Socket) => void;
  /** Plaintext: the 400 was written and the socket is closing (with `plaintextAnswer: 'none'`: destroyed). */
  readonly onPlaintext: (socket: Socket) => void;
  /** Nothing arrived within the timeout: the socket was destroyed. */
  readonly onTimeout: (socket: Socket) => void;
  /**
   * What plaintext gets: `http-400` (default, the HTTP listener's contract: {@link PLAINTEXT_ANSWER} then
   * close) or `none` (a TCP listener: the socket is destroyed without a byte in answer).
   */
  readonly plaintextAnswer?: 'http-400' | 'none';
}

/**
 * Waits for the first chunk of `socket` (at most `timeoutMs`) and hands the connection to TLS, answers
 * plaintext, or drops a silent socket. Never throws; socket errors destroy the socket.
 */
export function sniffConnection(socket: Socket, timeoutMs: number, handlers: SniffHandlers): void {
  const onError = (): void => {
    clearTimeout(timer);
    socket.destroy();
  };
  const timer = setTimeout(() => {
    socket.off('data', onData);
    socket.destroy();
    handlers.onTimeout(socket);
  }, timeoutMs);
  timer.unref();
  const onData = (chunk: Buffer): void => {
    clearTimeout(timer);
    socket.off('error', onError);
    socket.pause();
    if (chunk[0] === TLS_HANDSHAKE) {
      socket.unshift(chunk);
      handlers.onTls(socket);
      return;
    }
    socket.on('error', () => socket.destroy());
    if (handlers.plaintextAnswer === 'none') {
      socket.destroy();
      handlers.onPlaintext(socket);
      return;
    }
    socket.end(PLAINTEXT_ANSWER);
    // Do not wait for the peer: close even if it keeps the connection half-open.
    setTimeout(() => socket.destroy(), 1_000).unref();
    handlers.onPlaintext(socket);
  };
  socket.once('data', onData);
  socket.once('error', onError);
}
