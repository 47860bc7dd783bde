/**
 * HTTP forwarding through undici: one keep-alive Pool per upstream origin, created at start.
 *
 * Why undici and not http-proxy: http-proxy 1.18.1 throws on HTTP/2 requests and costs about 1.5× the
 * CPU per request on this stack (CONVENTIONS.md). Bodies stream both ways with backpressure (no
 * buffering); a client that goes away aborts the upstream request, which frees its socket (hostile
 * case 108); upstream timeouts map to 504, connection failures to 502.
 */
import { Pool } from 'undici';
import type { TimeoutsConfig } from '../config/schema.js';
import type { UpstreamSpec } from '../authz/routes.js';
import { DEFAULTS } from '../config/defaults.js';
import { cleanResponseHeaders } from '../mutate/request-headers.js';
import { toUpstreamError } from './upstream-errors.js';
import type { ClientRequest, ClientResponse, ForwardOutcome, ForwardRequest } from './types.js';

type HttpUpstream = Extract<UpstreamSpec, { kind: 'http' }>;

/** A forwarder bound to one upstream origin. */
export interface HttpForwarder {
  readonly forward: (fr: ForwardRequest, req: ClientRequest, res: ClientResponse) => Promise<ForwardOutcome>;
  readonly close: () => Promise<void>;
}

/** Creates the Pool for `upstream`. TLS to the upstream always verifies its certificate. */
export function createHttpForwarder(upstream: HttpUpstream, timeouts: TimeoutsConfig): HttpForwarder {
  const tls = upstream.tls;
  const pool = new Pool(upstream.origin, {
    connections: DEFAULTS.upstream.maxConnections,
    pipelining: 1,
    keepAliveTimeout: 4_000,
    keepAliveMaxTimeout: 60_000,
    headersTimeout: timeouts.upstreamResponseMs,
    bodyTimeout: timeouts.upstreamIdleMs,
    connect: {
      timeout: timeouts.upstreamConnectMs,
      rejectUnauthorized: true,
      ...(tls?.ca ? { ca: tls.ca } : {}),
      ...(tls?.cert ? { cert: tls.cert } : {}),
      ...(tls?.key ? { key: tls.key } : {}),
      ...(tls?.servername ? { servername: tls.servername } : {}),
    },
  });

  async function forward(fr: ForwardRequest, req: ClientRequest, res: ClientResponse): Promise<ForwardOutcome> {
    const ac = new AbortController();
    // The client went away before the response finished: abort upstream so its socket is freed.
    const onClose = (): void => {
      if (!res.writableFinished) ac.abort();
    };
    res.once('close', onClose);
    if (fr.expectContinue) res.writeContinue();
    let upstreamRes;
    try {
      upstreamRes = await pool.request({
        method: fr.method,
        path: fr.path,
        headers: fr.headers,
        body: fr.hasBody ? req : null,
        signal: ac.signal,
      });
    } catch (err) {
      res.off('close', onClose);
      throw toUpstreamError(err);
    }
    const { statusCode, headers, body } = upstreamRes;
    if (res.destroyed || res.writableEnded) {
      body.destroy();
      return { status: statusCode, abortedReason: 'client_closed' };
    }
    cleanResponseHeaders(headers);
    return new Promise<ForwardOutcome>((resolve) => {
      let aborted: string | undefined;
      body.on('error', (err) => {
        // Mid-body failure: the status line is out, so the only honest signal is a cut connection
        // (HTTP/1.1: no final chunk; HTTP/2: RST_STREAM).
        aborted = toUpstreamError(err).code;
        res.destroy();
      });
      res.once('close', () => {
        if (!body.destroyed) body.destroy();
        resolve(aborted === undefined ? { status: statusCode } : { status: statusCode, abortedReason: aborted });
      });
      try {
        res.writeHead(statusCode, headers as Record<string, string | string[]>);
      } catch {
        aborted = 'ERR_UPSTREAM_BAD_RESPONSE';
        body.destroy();
        res.destroy();
        return;
      }
      body.pipe(res as NodeJS.WritableStream);
    });
  }

  return {
    forward,
    close: () => pool.close(),
  };
}
