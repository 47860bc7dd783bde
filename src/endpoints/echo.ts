/**
 * The built-in echo endpoint (`upstream: builtin:echo`), a gateway endpoint: answers with a JSON view of the method, path
 * and headers the upstream would have received — the operator's view of what the gateway forwards.
 * The request body is read and counted, never stored; a body still arriving after `requestBodyMs` is
 * refused with 408, as a real upstream's would be (threat model #102).
 */
import { GatewayError } from '../errors.js';
import {
  writeHead,
  type ClientRequest,
  type ClientResponse,
  type ForwardOutcome,
  type ForwardRequest,
} from '../proxy/types.js';

/** The JSON document the echo upstream answers with. */
export interface EchoBody {
  readonly upstream: 'builtin:echo';
  readonly method: string;
  readonly path: string;
  readonly headers: Record<string, string | string[]>;
  readonly bodyBytes: number;
}

/** Makes the echo forwarder: answers each request with its echo once its body has arrived. */
export function createEchoForwarder(
  bodyMs: number,
): (fr: ForwardRequest, req: ClientRequest, res: ClientResponse) => Promise<ForwardOutcome> {
  return (fr, req, res) => forwardToEcho(fr, req, res, bodyMs);
}

/** Answers one request with its echo; rejects with `ERR_REQUEST_BODY_TIMEOUT` when its body is not
 * complete within `bodyMs`. */
export function forwardToEcho(
  fr: ForwardRequest,
  req: ClientRequest,
  res: ClientResponse,
  bodyMs: number,
): Promise<ForwardOutcome> {
  const headers: Record<string, string | string[]> = {};
  for (let i = 0; i + 1 < fr.headers.length; i += 2) {
    const name = fr.headers[i] as string;
    const value = fr.headers[i + 1] as string;
    const prev = headers[name];
    headers[name] = prev === undefined ? value : Array.isArray(prev) ? [...prev, value] : [prev, value];
  }
  if (fr.expectContinue) res.writeContinue();
  return new Promise((resolve, reject) => {
    let bodyBytes = 0;
    let done = false;
    const timer = fr.hasBody
      ? setTimeout(() => {
          if (done) return;
          done = true;
          req.off('data', count);
          reject(
            new GatewayError(
              'ERR_REQUEST_BODY_TIMEOUT',
              `request body incomplete after ${bodyMs} ms (${bodyBytes} bytes read)`,
            ),
          );
        }, bodyMs)
      : undefined;
    timer?.unref();
    const settle = (outcome: ForwardOutcome): void => {
      clearTimeout(timer);
      if (done) return;
      done = true;
      resolve(outcome);
    };
    const count = (chunk: Buffer): void => {
      bodyBytes += chunk.length;
    };
    const answer = (): void => {
      if (done) return;
      const doc: EchoBody = {
        upstream: 'builtin:echo',
        method: fr.method,
        path: fr.path,
        headers,
        bodyBytes,
      };
      const text = JSON.stringify(doc, null, 2) + '\n';
      const length = Buffer.byteLength(text);
      writeHead(res, 200, {
        'content-type': 'application/json',
        'content-length': length,
        'cache-control': 'no-store',
        'x-request-id': fr.requestId,
      });
      res.end(text);
      settle({ status: 200, bytesIn: bodyBytes, bytesOut: length });
    };
    req.on('data', count);
    req.once('end', answer);
    req.once('error', () => settle({ status: 0, abortedReason: 'client_error' }));
    req.once('close', () => {
      if (!req.readableEnded) settle({ status: 0, abortedReason: 'client_closed' });
    });
  });
}
