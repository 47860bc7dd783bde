/**
 * The built-in echo upstream (`upstream: builtin:echo`): answers with a JSON view of the method, path
 * and headers the upstream would have received — the operator's view of what the gateway forwards.
 * The request body is read and counted, never stored.
 */
import type { ClientRequest, ClientResponse, ForwardOutcome, ForwardRequest } from './types.js';

/** The JSON document the echo upstream answers with. */
export interface EchoBody {
  readonly upstream: 'builtin:echo';
  readonly method: string;
  readonly path: string;
  readonly headers: Record<string, string | string[]>;
  readonly bodyBytes: number;
}

/** Answers one request with its echo. */
export function forwardToEcho(
  fr: ForwardRequest,
  req: ClientRequest,
  res: ClientResponse,
): Promise<ForwardOutcome> {
  const headers: Record<string, string | string[]> = {};
  for (let i = 0; i + 1 < fr.headers.length; i += 2) {
    const name = fr.headers[i] as string;
    const value = fr.headers[i + 1] as string;
    const prev = headers[name];
    headers[name] = prev === undefined ? value : Array.isArray(prev) ? [...prev, value] : [prev, value];
  }
  if (fr.expectContinue) res.writeContinue();
  return new Promise((resolve) => {
    let bodyBytes = 0;
    const answer = (): void => {
      const doc: EchoBody = {
        upstream: 'builtin:echo',
        method: fr.method,
        path: fr.path,
        headers,
        bodyBytes,
      };
      const text = JSON.stringify(doc, null, 2) + '\n';
      const length = Buffer.byteLength(text);
      res.writeHead(200, {
        'content-type': 'application/json',
        'content-length': length,
        'cache-control': 'no-store',
        'x-request-id': fr.requestId,
      });
      res.end(text);
      resolve({ status: 200, bytesIn: bodyBytes, bytesOut: length });
    };
    req.on('data', (chunk: Buffer) => (bodyBytes += chunk.length));
    req.once('end', answer);
    req.once('error', () => resolve({ status: 0, abortedReason: 'client_error' }));
    req.once('close', () => {
      if (!req.readableEnded) resolve({ status: 0, abortedReason: 'client_closed' });
    });
  });
}
