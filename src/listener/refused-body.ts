/**
 * A request the gateway answers itself (a refusal before forwarding: 401, 403, 404, 405, 421, ...; or a
 * failure that ends the exchange) while its body is still arriving: the rest of the body is not wanted and
 * is not read.
 *
 * Left to itself, Node reads and drops the unread body of every answered HTTP/1.1 request to keep the
 * connection alive (`req._dump()` in `_http_server.js`), for as long as the client keeps sending: hundreds
 * of MiB in a few seconds over loopback. Here an HTTP/1.1 refusal says `Connection: close` (the caller sets it), and
 * once the answer is flushed the connection gets a lingering close: FIN after the answer, then at most
 * {@link LINGER_MAX_BYTES} read and dropped for at most {@link LINGER_MAX_MS}, then destroyed. The linger
 * is there so that the client reads the answer before a RST (a close with unread bytes makes the kernel
 * send one, and a RST can make the client's side discard an answer it has not read yet: nginx's
 * `lingering_close`, Envoy's `delayed_close_timeout`); the bounds are there so it costs nothing.
 * An HTTP/2 refusal resets the stream with NO_ERROR once the answer is complete (RFC 9113 §8.1: "a server
 * MAY request that the client abort transmission of a request without error"); what a client can send
 * before that is bounded by the stream's flow-control window (`http2.initialWindowSize`).
 */
import { constants as h2constants, type Http2ServerRequest, type Http2ServerResponse } from 'node:http2';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { ClientRequest, ClientResponse } from '../proxy/types.js';

/** Bytes a refused HTTP/1.1 connection still reads (and drops) after its answer: 64 KiB, a few TCP
 * segments' worth, enough for the client to see the answer before the close. */
export const LINGER_MAX_BYTES = 64 * 1024;
/** ms a refused HTTP/1.1 connection lingers after its answer before it is destroyed (Envoy's
 * `delayed_close_timeout` default). */
export const LINGER_MAX_MS = 1_000;

/**
 * Whether the request's body may still be arriving. HTTP/1.1: it declares one (a non-zero Content-Length
 * or a Transfer-Encoding) and Node has not seen its end. HTTP/2: the HEADERS frame did not end the stream
 * and the stream is still open.
 */
export function bodyPending(req: ClientRequest): boolean {
  if (req.httpVersionMajor === 2) {
    const stream = (req as Http2ServerRequest).stream;
    return !stream.endAfterHeaders && !stream.closed && !stream.destroyed;
  }
  if (req.complete) return false;
  const cl = req.headers['content-length'];
  return req.headers['transfer-encoding'] !== undefined || (cl !== undefined && cl !== '0');
}

/**
 * Ends what is left of a request whose answer has just been written (`res.end()`): HTTP/2 resets the
 * stream (NO_ERROR) after the complete answer; HTTP/1.1 closes the connection with a bounded lingering
 * close once the answer is flushed. The HTTP/1.1 answer must say `Connection: close`.
 */
export function stopReadingBody(req: ClientRequest, res: ClientResponse): void {
  if (req.httpVersionMajor === 2) {
    const stream = (res as Http2ServerResponse).stream;
    // After the writable side finished, then one turn, as Node itself does for a body nobody started
    // reading (and only for those: a body the forwarder had begun to stream would keep coming).
    const close = (): void => {
      setImmediate(() => {
        if (!stream.destroyed && !stream.closed) stream.close(h2constants.NGHTTP2_NO_ERROR);
      });
    };
    if (stream.writableFinished) close();
    else stream.once('finish', close);
    return;
  }
  const socket = req.socket as Socket & { [kDropping]?: true };
  socket[kDropping] = true;
  // What is left of the body is read and dropped through the request stream, counted: Node's parser keeps
  // its hold on the socket (it may read it natively, and a 'data' listener on the socket would take the
  // socket from it), and a consumed request is one Node does not drain on its own (`req._dump()`).
  let read = 0;
  req.on('data', (chunk: Buffer) => {
    read += chunk.length;
    if (read > LINGER_MAX_BYTES) socket.destroy();
  });
  const linger = (): void => {
    endThenDestroy(socket);
  };
  // Node ends a `Connection: close` answer with `socket.destroySoon()`: FIN, then destroy as soon as it is
  // flushed, unread bytes or not. This socket lingers instead. The 'finish' listener starts the same
  // linger should Node ever not call destroySoon (it runs once).
  socket.destroySoon = linger;
  res.once('finish', linger);
}

const kLingering = Symbol('portcullis.lingering');
const kDropping = Symbol('portcullis.dropping');

/**
 * Whether `socket` was answered and is closing: what the client still sends is read only to be dropped (a
 * parse error in it, or the client closing in the middle of a body, is not a new request to refuse).
 */
export function isDroppingInput(socket: Duplex & { [kDropping]?: true }): boolean {
  return socket[kDropping] === true;
}

/** FIN after what was written, then destroy when the client closes its side or after LINGER_MAX_MS. Once. */
function endThenDestroy(socket: Duplex & { [kLingering]?: true }): boolean {
  if (socket[kLingering] === true || socket.destroyed) return false;
  socket[kLingering] = true;
  if (!socket.writableEnded) socket.end();
  const timer = setTimeout(() => socket.destroy(), LINGER_MAX_MS);
  timer.unref();
  socket.once('close', () => clearTimeout(timer));
  socket.once('end', () => socket.destroy());
  return true;
}

/**
 * Ends a socket no HTTP parser reads any more (a refused upgrade, a request the parser refused): FIN after
 * what was written, then reads and drops at most {@link LINGER_MAX_BYTES} for at most
 * {@link LINGER_MAX_MS}, then destroys it; at once if the client closes its side. Runs once per socket.
 */
export function lingeringClose(socket: Duplex & { [kDropping]?: true }): void {
  socket[kDropping] = true;
  if (!endThenDestroy(socket)) return;
  let read = 0;
  socket.on('data', (chunk: Buffer) => {
    read += chunk.length;
    if (read > LINGER_MAX_BYTES) socket.destroy();
  });
  socket.resume();
}
