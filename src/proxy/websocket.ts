/**
 * WebSocket upgrades (HTTP/1.1), proxied by http-proxy after the same checks as any request.
 *
 * http-proxy is sound on this path, but only with guards (hostile-cases §4 items 3, 4, 10): every error
 * is handled (a missing handler crashes the process), the client socket gets its error listener before
 * anything else, the upstream's 101 is verified (`Sec-WebSocket-Accept` = base64(SHA-1(key + GUID)),
 * RFC 6455 §4.2.2) before the tunnel opens — an upstream that fakes a 101 cannot turn the connection into
 * a raw tunnel (hostile case 88) — and the upgrade wait and the tunnel's idleness are bounded by timers.
 */
import { createHash } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import httpProxy from 'http-proxy';
import type { UpstreamSpec } from '../authz/routes.js';
import type { TimeoutsConfig } from '../config/schema.js';
import { ERRORS, GatewayError } from '../errors.js';
import { toUpstreamError } from './upstream-errors.js';

const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

/** What became of an upgrade, for the access log. */
export interface UpgradeOutcome {
  readonly status: number;
  readonly reason?: string;
}

type HttpUpstream = Extract<UpstreamSpec, { kind: 'http' }>;

/** Proxies validated upgrade requests. */
export interface WebSocketProxy {
  upgrade(
    upstream: HttpUpstream,
    req: IncomingMessage,
    socket: Duplex,
    head: Buffer,
    forward: { readonly path: string; readonly headers: Record<string, string | string[]>; readonly key: string },
  ): Promise<UpgradeOutcome>;
  close(): void;
}

/** Writes a minimal HTTP/1.1 error answer on a raw socket and closes it. */
export function writeRawError(socket: Duplex, err: GatewayError): void {
  if (socket.destroyed || !socket.writable) {
    socket.destroy();
    return;
  }
  const body = `${ERRORS[err.code].message}\n`;
  socket.end(
    `HTTP/1.1 ${err.status} ${statusText(err.status)}\r\nContent-Type: text/plain; charset=utf-8\r\n` +
      `Content-Length: ${Buffer.byteLength(body)}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n${body}`,
  );
}

function statusText(status: number): string {
  const texts: Record<number, string> = {
    400: 'Bad Request',
    401: 'Unauthorized',
    403: 'Forbidden',
    404: 'Not Found',
    421: 'Misdirected Request',
    500: 'Internal Server Error',
    502: 'Bad Gateway',
    503: 'Service Unavailable',
    504: 'Gateway Timeout',
  };
  return texts[status] ?? 'Error';
}

/** Creates the WebSocket proxy. One http-proxy server is shared; per-upgrade state lives in closures. */
export function createWebSocketProxy(timeouts: TimeoutsConfig): WebSocketProxy {
  const proxy = httpProxy.createProxyServer({ ws: true, xfwd: false, secure: true, prependPath: false, followRedirects: false });
  // Without an 'error' listener http-proxy rethrows and the process dies (§4 item 3). Per-call callbacks
  // below handle each error; this one is the backstop.
  proxy.on('error', (_err, _req, target) => {
    if (target && 'destroy' in target && typeof target.destroy === 'function') target.destroy();
  });

  return {
    upgrade(upstream, req, socket, head, forward) {
      return new Promise<UpgradeOutcome>((resolve) => {
        let settled = false;
        const settle = (o: UpgradeOutcome): void => {
          if (!settled) {
            settled = true;
            resolve(o);
          }
        };
        let upgraded = false;
        socket.on('close', () => settle({ status: upgraded ? 101 : 499, reason: upgraded ? 'closed' : 'client_closed' }));
        req.url = forward.path;
        req.headers = forward.headers;
        const expectedAccept = createHash('sha1').update(forward.key + WS_GUID).digest('base64');

        const onProxyReq = (proxyReq: import('node:http').ClientRequest, preq: IncomingMessage): void => {
          if (preq !== req) return;
          proxy.off('proxyReqWs', onProxyReq);
          // The upstream must answer the upgrade in time (hostile case 90b).
          proxyReq.setTimeout(timeouts.upstreamResponseMs, () => {
            proxyReq.destroy(Object.assign(new Error('upgrade response timeout'), { code: 'UND_ERR_HEADERS_TIMEOUT' }));
          });
          proxyReq.prependListener('upgrade', (proxyRes: IncomingMessage, proxySocket: Duplex & { setTimeout(ms: number): void }) => {
            const upgradeHeader = (proxyRes.headers.upgrade ?? '').toLowerCase();
            if (upgradeHeader !== 'websocket' || proxyRes.headers['sec-websocket-accept'] !== expectedAccept) {
              // A fake or broken 101: never open the tunnel (hostile case 88).
              proxySocket.destroy();
              writeRawError(socket, new GatewayError('ERR_UPSTREAM_BAD_RESPONSE'));
              socket.destroy();
              settle({ status: 502, reason: 'ERR_UPSTREAM_BAD_RESPONSE' });
              return;
            }
            upgraded = true;
            proxySocket.setTimeout(timeouts.idleMs);
            proxySocket.on('timeout', () => {
              proxySocket.destroy();
              socket.destroy();
            });
            proxySocket.once('close', () => socket.destroy());
            socket.once('close', () => proxySocket.destroy());
          });
        };
        proxy.on('proxyReqWs', onProxyReq);

        const tls = upstream.tls;
        proxy.ws(
          req,
          socket,
          head,
          {
            target: `${upstream.protocol === 'https:' ? 'wss:' : 'ws:'}//${upstream.hostname.includes(':') ? `[${upstream.hostname}]` : upstream.hostname}:${upstream.port}`,
            secure: true,
            ...(tls?.ca ? { ca: tls.ca } : {}),
            ...(tls?.cert ? { cert: tls.cert } : {}),
            ...(tls?.key ? { key: tls.key } : {}),
          },
          (err: Error) => {
            proxy.off('proxyReqWs', onProxyReq);
            const gerr = toUpstreamError(err);
            if (!upgraded) writeRawError(socket, gerr);
            else socket.destroy();
            settle({ status: upgraded ? 101 : gerr.status, reason: gerr.code });
          },
        );
      });
    },
    close() {
      proxy.close();
    },
  };
}
