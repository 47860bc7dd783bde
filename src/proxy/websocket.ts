/**
 * WebSocket upgrades (HTTP/1.1), proxied by http-proxy after the same checks as any request.
 *
 * http-proxy is sound on this path, but only with guards (threat model #92, #87–#89): every error
 * is handled (a missing handler crashes the process), the client socket gets its error listener before
 * anything else, the upstream's 101 is verified (`Sec-WebSocket-Accept` = base64(SHA-1(key + GUID)),
 * RFC 6455 §4.2.2) before the tunnel opens — an upstream that fakes a 101 cannot turn the connection into
 * a raw tunnel (threat model #88) — and the upgrade wait and the tunnel's idleness are bounded by timers.
 *
 * A tunnel does not outlive the credentials it was opened with (threat model #91): it is closed (TCP close
 * on both sides) when the Bearer token's `exp` or the client certificate's notAfter passes, whichever
 * comes first. A tunnel is one request to HTTP: nothing else would ever check them again. With
 * `timeouts.tunnelMaxMs` it is also closed that long after it opened, however busy (threat model #90d).
 *
 * Clocks (issue 12 point 7): the expiry is a wall-clock instant and is compared with the wall clock, re-read
 * at least every {@link EXPIRY_RECHECK_MS} (a wall clock stepped forward past it closes the tunnel within
 * that; one stepped back keeps it open only as long as the credentials still say). The lifetime limit is a
 * duration and runs on the monotonic clock.
 */
import { createHash } from 'node:crypto';
import type { ClientRequest, IncomingMessage } from 'node:http';
import { isIP, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import httpProxy from 'http-proxy';
import { monotonicMs, systemClock, type Clock } from '../clock.js';
import type { HttpUpstream } from './upstream.js';
import type { TimeoutsConfig } from '../config/schema.js';
import { ERRORS, GatewayError } from '../errors.js';
import { toUpstreamError } from './upstream-errors.js';

const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

/** What became of an upgrade, for the access log. */
export interface UpgradeOutcome {
  readonly status: number;
  readonly reason?: string;
}


/** Proxies validated upgrade requests. */
export interface WebSocketProxy {
  upgrade(
    upstream: HttpUpstream,
    req: IncomingMessage,
    socket: Duplex,
    head: Buffer,
    forward: {
      readonly path: string;
      readonly headers: Record<string, string | string[]>;
      readonly key: string;
      /** Epoch ms at which the tunnel must close: the earliest expiry of its token and client certificate. */
      readonly closeAtMs?: number | undefined;
    },
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

/**
 * http-proxy options for one upstream. The TLS material goes on the `target` object: http-proxy's
 * setupOutgoing copies `key`, `cert`, `ca` (and `pfx`, `passphrase`, `ciphers`) from the target only —
 * top-level `key`/`cert` are silently dropped, and so would be the gateway's client certificate to an
 * mTLS upstream. `servername` (SNI and the name the certificate is checked against) is not in that list:
 * it rides in `ssl`, the base object of the outgoing request options (threat model #130).
 * `secure: true` keeps `rejectUnauthorized` on: no upstream certificate goes unverified (threat model #130).
 */
function upstreamOptions(upstream: HttpUpstream): httpProxy.ServerOptions {
  const tls = upstream.tls;
  // PEM files, read and checked at load; http-proxy's types want strings.
  const target = {
    protocol: upstream.protocol === 'https:' ? 'wss:' : 'ws:',
    host: upstream.hostname,
    hostname: upstream.hostname,
    port: upstream.port,
    ...(tls?.ca ? { ca: tls.ca.toString('utf8') } : {}),
    ...(tls?.cert ? { cert: tls.cert.toString('utf8') } : {}),
    ...(tls?.key ? { key: tls.key.toString('utf8') } : {}),
  };
  // Node's https agent would otherwise take the server name from the Host header — the client's — and
  // check the upstream's certificate against it. Pin it as http-forward.ts does: the configured
  // servername, else the upstream host; '' for an IP literal (no SNI; the certificate is checked
  // against the IP).
  const servername = tls?.servername ?? (isIP(upstream.hostname) === 0 ? upstream.hostname : '');
  return {
    target,
    secure: true,
    ...(upstream.protocol === 'https:' ? { ssl: { servername } } : {}),
  };
}

/** Why an open tunnel was closed by the gateway (the outcome's `reason`, a metric label): a closed set. */
export const TUNNEL_CLOSE_REASONS = ['idle', 'credential_expired', 'max_lifetime'] as const;
export type TunnelCloseReason = (typeof TUNNEL_CLOSE_REASONS)[number];

/** Longest delay setTimeout takes (2^31 − 1 ms, about 24.8 days); longer ones fire at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * How often, at most, an open tunnel re-reads the wall clock against its credentials' expiry: 1 s. Timers run
 * on the monotonic clock, so without it a wall clock stepped forward past `exp` would go unnoticed until the
 * timer set before the step fired.
 */
export const EXPIRY_RECHECK_MS = 1_000;

/** Creates the WebSocket proxy. One http-proxy server is shared; per-upgrade state lives in closures.
 * `clock.now()` (epoch ms) is what `closeAtMs` is compared with; `tunnelMaxMs` runs on its monotonic reading. */
export function createWebSocketProxy(timeouts: TimeoutsConfig, clock: Clock = systemClock): WebSocketProxy {
  const proxy = httpProxy.createProxyServer({ ws: true, xfwd: false, secure: true, prependPath: false, followRedirects: false });
  // Without an 'error' listener http-proxy rethrows and the process dies (§4 item 3). Per-call callbacks
  // below handle each error; this one is the backstop.
  proxy.on('error', (_err, _req, target) => {
    if (target && 'destroy' in target && typeof target.destroy === 'function') target.destroy();
  });
  // One dispatcher for every upgrade: http-proxy emits 'proxyReqWs' synchronously inside `proxy.ws`, so
  // the upgrade's own hook is found by its request (a listener per upgrade would pile up on the shared
  // emitter under concurrent upgrades).
  const pending = new WeakMap<IncomingMessage, (proxyReq: ClientRequest) => void>();
  proxy.on('proxyReqWs', (proxyReq: ClientRequest, preq: IncomingMessage) => {
    const hook = pending.get(preq);
    if (hook !== undefined) {
      pending.delete(preq);
      hook(proxyReq);
    }
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
        let upstreamReq: ClientRequest | undefined;
        socket.on('close', () => {
          // The client left before the tunnel opened: drop the upstream request too, or its connection
          // stays open until the upstream answers or the response timer fires (threat model #92, #108).
          if (!upgraded) upstreamReq?.destroy();
          settle({ status: upgraded ? 101 : 499, reason: upgraded ? 'closed' : 'client_closed' });
        });
        req.url = forward.path;
        req.headers = forward.headers;
        const expectedAccept = createHash('sha1').update(forward.key + WS_GUID).digest('base64');

        pending.set(req, (proxyReq) => {
          upstreamReq = proxyReq;
          // The upstream must answer the upgrade in time (threat model #90b).
          proxyReq.setTimeout(timeouts.upstreamResponseMs, () => {
            proxyReq.destroy(Object.assign(new Error('upgrade response timeout'), { code: 'UND_ERR_HEADERS_TIMEOUT' }));
          });
          proxyReq.prependListener('upgrade', (proxyRes: IncomingMessage, proxySocket: Socket) => {
            const upgradeHeader = (proxyRes.headers.upgrade ?? '').toLowerCase();
            if (upgradeHeader !== 'websocket' || proxyRes.headers['sec-websocket-accept'] !== expectedAccept) {
              // A fake or broken 101: never open the tunnel (threat model #88). http-proxy's own listener
              // still runs after this one; with both sockets destroyed its writes and pipes are no-ops.
              proxySocket.destroy();
              writeRawError(socket, new GatewayError('ERR_UPSTREAM_BAD_RESPONSE'));
              socket.destroy();
              settle({ status: 502, reason: 'ERR_UPSTREAM_BAD_RESPONSE' });
              return;
            }
            upgraded = true;
            proxySocket.once('close', () => socket.destroy());
            socket.once('close', () => proxySocket.destroy());
            /** The gateway ends the tunnel: its reason is what the access log and the metric get. */
            const end = (reason: TunnelCloseReason): void => {
              settle({ status: 101, reason });
              proxySocket.destroy();
              socket.destroy();
            };
            // The earlier of the credentials' expiry (wall clock) and the lifetime limit (monotonic) closes
            // the tunnel.
            const expiresAtMs = forward.closeAtMs;
            const lifetimeEndMs =
              timeouts.tunnelMaxMs === undefined ? undefined : monotonicMs(clock) + timeouts.tunnelMaxMs;
            if (expiresAtMs !== undefined || lifetimeEndMs !== undefined) {
              // Re-armed in steps: a certificate's notAfter is often months away, past setTimeout's range,
              // and the wall clock is re-read at least every EXPIRY_RECHECK_MS.
              let expiry: NodeJS.Timeout | undefined;
              const arm = (): void => {
                const byLifetime = lifetimeEndMs === undefined ? Infinity : lifetimeEndMs - monotonicMs(clock);
                const byExpiry = expiresAtMs === undefined ? Infinity : expiresAtMs - clock.now();
                if (byLifetime <= 0 || byExpiry <= 0) {
                  end(byLifetime < byExpiry ? 'max_lifetime' : 'credential_expired');
                  return;
                }
                const wallStep = expiresAtMs === undefined ? Infinity : Math.min(byExpiry, EXPIRY_RECHECK_MS);
                expiry = setTimeout(arm, Math.min(byLifetime, wallStep, MAX_TIMER_MS));
              };
              arm();
              proxySocket.once('close', () => clearTimeout(expiry));
            }
            // http-proxy's listener, which runs next, calls setupSocket(), which sets the socket's timeout
            // to 0; arm the tunnel's idle timer after it (threat model #90c). Socket timeouts count bytes
            // in both directions, so one timer on the upstream half covers the tunnel.
            process.nextTick(() => {
              if (proxySocket.destroyed) return;
              proxySocket.setTimeout(timeouts.idleMs);
              proxySocket.on('timeout', () => end('idle'));
            });
          });
        });

        try {
          proxy.ws(
            req,
            socket,
            head,
            upstreamOptions(upstream),
            (err: Error) => {
              const gerr = toUpstreamError(err);
              if (!upgraded) writeRawError(socket, gerr);
              else socket.destroy();
              settle({ status: upgraded ? 101 : gerr.status, reason: gerr.code });
            },
          );
        } catch (err) {
          // http.request throws synchronously on options it cannot use: an answer, never a crash.
          pending.delete(req);
          writeRawError(socket, new GatewayError('ERR_INTERNAL', err instanceof Error ? err.message : 'proxy.ws threw'));
          settle({ status: 500, reason: 'ERR_INTERNAL' });
        }
      });
    },
    close() {
      proxy.close();
    },
  };
}
