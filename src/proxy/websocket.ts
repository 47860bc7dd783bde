/**
 * WebSocket upgrades (HTTP/1.1), forwarded with `node:http`/`node:https` after the same checks as any
 * request: one upstream request per upgrade carrying the cleaned and identity headers, on its own
 * connection.
 *
 * Every error on either socket is handled (none may crash the process, threat model #92, #121); the
 * upstream's 101 is verified (`Upgrade: websocket`, `Sec-WebSocket-Accept` = base64(SHA-1(key + GUID)),
 * RFC 6455 §4.2.2) before the tunnel opens — an upstream that fakes a 101 cannot turn the connection into
 * a raw tunnel (threat model #88); any other answer is cleaned like an HTTP response
 * (mutate/response-headers.ts) and relayed, then the connection closes; the upstream's connect, its
 * answer and the tunnel's idleness are bounded by timers (threat model #90).
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
import {
  STATUS_CODES,
  request as httpRequest,
  validateHeaderName,
  validateHeaderValue,
  type ClientRequest,
  type IncomingMessage,
  type RequestOptions,
} from 'node:http';
import { request as httpsRequest } from 'node:https';
import { isIP, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { monotonicMs, systemClock, type Clock } from '../clock.js';
import type { TimeoutsConfig } from '../config/schema.js';
import { ERRORS, GatewayError } from '../errors.js';
import { buildResponseHeaders, type ResponseHeaders } from '../mutate/response-headers.js';
import type { TelemetryPolicy } from '../mutate/telemetry.js';
import { toUpstreamError } from './upstream-errors.js';
import type { HttpUpstream } from './upstream.js';

const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

/** What became of an upgrade, for the access log. */
export interface UpgradeOutcome {
  /** 101 for a tunnel; the upstream's status for a refused upgrade it answered; the gateway's otherwise. */
  readonly status: number;
  readonly reason?: string;
  /** Telemetry headers removed from the upstream's answer. */
  readonly telemetryStripped?: number;
}

/** Proxies validated upgrade requests. */
export interface WebSocketProxy {
  /** Forwards one upgrade on the client's `socket` (`head`: bytes that followed its handshake). Never
   * rejects: every failure is an answer on the socket and an outcome. */
  upgrade(
    upstream: HttpUpstream,
    socket: Duplex,
    head: Buffer,
    forward: {
      readonly path: string;
      /** Flat name/value list built by `mutate/request-headers.ts` (with `Upgrade`/`Connection`). */
      readonly headers: readonly string[];
      /** The client's Sec-WebSocket-Key: the upstream's Sec-WebSocket-Accept is checked against it. */
      readonly key: string;
      /** Added to the upstream's answer as x-request-id when it set none. */
      readonly requestId: string;
      /** Strip these telemetry headers from the upstream's answer (the request's opt-out was in force). */
      readonly stripResponseTelemetry?: TelemetryPolicy | undefined;
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

/** HTTP/1.1 status line texts (RFC 9110 §15); the upstream's own reason phrase is not relayed. */
function statusLine(status: number): string {
  return `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Unknown'}\r\n`;
}

/** Serialises a header block (names and values already checked by Node's parser or built here). */
function headerLines(headers: ResponseHeaders): string {
  let out = '';
  for (const [name, value] of Object.entries(headers)) {
    if (Array.isArray(value)) for (const v of value) out += `${name}: ${v}\r\n`;
    else out += `${name}: ${value}\r\n`;
  }
  return out;
}

/** Throws (ERR_INVALID_HTTP_TOKEN, ERR_INVALID_CHAR) on a header Node would refuse to write itself. */
function validateHeaders(headers: ResponseHeaders): void {
  for (const [name, value] of Object.entries(headers)) {
    validateHeaderName(name);
    for (const v of Array.isArray(value) ? value : [value]) validateHeaderValue(name, v);
  }
}

/** Request options for one upstream: TLS verifies the upstream's certificate, with the configured CA,
 * client certificate and server name, as http-forward.ts does for requests (threat model #130). */
function requestOptions(upstream: HttpUpstream, path: string, headers: readonly string[]): RequestOptions {
  const tls = upstream.tls;
  // Node's https agent would otherwise take the server name from the Host header — the client's — and
  // check the upstream's certificate against it. Pin it as http-forward.ts does: the configured
  // servername, else the upstream host; '' for an IP literal (no SNI, RFC 6066 §3; the certificate is
  // checked against the IP).
  const servername = tls?.servername ?? (isIP(upstream.hostname) === 0 ? upstream.hostname : '');
  return {
    host: upstream.hostname,
    port: upstream.port,
    method: 'GET',
    path,
    // A flat [name, value, ...] list is written as given: the cleaned and identity headers, in order.
    headers,
    // One connection per tunnel, never pooled: after the 101 it is no longer HTTP.
    agent: false,
    ...(upstream.protocol === 'https:'
      ? {
          rejectUnauthorized: true,
          servername,
          ...(tls?.ca ? { ca: tls.ca } : {}),
          ...(tls?.cert ? { cert: tls.cert } : {}),
          ...(tls?.key ? { key: tls.key } : {}),
        }
      : {}),
  };
}

/** An upstream failure with the code the error mapping knows (a timer of ours, not the socket's). */
function timeoutError(message: string, code: string): Error {
  return Object.assign(new Error(message), { code });
}

/** After an answer that ends the exchange: reads and drops what the client still sends (nothing is
 * parsed from it; reading lets its close complete), and destroys the socket if the client has not
 * closed its side `idleMs` after the last byte (a half-closed socket would otherwise stay). */
function drain(socket: Duplex, idleMs: number): void {
  socket.resume();
  const s = socket as Partial<Socket>;
  s.setTimeout?.(idleMs, () => socket.destroy());
}

/** Socket tuning where the Duplex is a real socket (it is: the connection's TLS or TCP socket). */
function tuneSocket(socket: Duplex): void {
  const s = socket as Partial<Socket>;
  // The server's idle timer does not apply to an upgraded socket: the tunnel's own timer does.
  s.setTimeout?.(0);
  s.setNoDelay?.(true);
}

/**
 * Creates the WebSocket proxy. Each upgrade is one `node:http`/`node:https` request with its own
 * connection; `clock.now()` (epoch ms) is what `closeAtMs` is compared with and `tunnelMaxMs` runs on its
 * monotonic reading. `close()` destroys whatever is
 * still open upstream (a backstop at shutdown, after the listeners closed their client sockets).
 */
export function createWebSocketProxy(timeouts: TimeoutsConfig, clock: Clock = systemClock): WebSocketProxy {
  /** Upstream requests in flight and the upstream halves of open tunnels. */
  const live = new Set<ClientRequest | Duplex>();

  return {
    upgrade(upstream, socket, head, forward) {
      return new Promise<UpgradeOutcome>((resolve) => {
        let settled = false;
        const settle = (o: UpgradeOutcome): void => {
          if (!settled) {
            settled = true;
            resolve(o);
          }
        };
        /** The phase the upgrade is in: what a close or an error means depends on it. */
        let phase: 'waiting' | 'answering' | 'tunnel' | 'done' = 'waiting';
        /** The status of a non-101 answer being relayed. */
        let answered = 0;
        let telemetryStripped = 0;
        const withTelemetry = (o: UpgradeOutcome): UpgradeOutcome =>
          telemetryStripped > 0 ? { ...o, telemetryStripped } : o;

        const expectedAccept = createHash('sha1')
          .update(forward.key + WS_GUID)
          .digest('base64');
        let upstreamReq: ClientRequest;
        try {
          const options = requestOptions(upstream, forward.path, forward.headers);
          upstreamReq = upstream.protocol === 'https:' ? httpsRequest(options) : httpRequest(options);
        } catch (err) {
          // http.request throws synchronously on options or headers it cannot use: an answer, never a crash.
          writeRawError(
            socket,
            new GatewayError('ERR_INTERNAL', err instanceof Error ? err.message : 'request threw'),
          );
          drain(socket, timeouts.idleMs);
          settle({ status: 500, reason: 'ERR_INTERNAL' });
          return;
        }
        live.add(upstreamReq);
        tuneSocket(socket);
        // Bytes the client sent after its handshake wait in the socket; they go upstream only once the
        // tunnel is open (never after a refused or fake 101, threat model #87, #88).
        if (head.length > 0) socket.unshift(head);

        /** Fails the upgrade while nothing was written to the client yet: an answer, then a close. */
        const failBeforeAnswer = (err: unknown): void => {
          phase = 'done';
          clearTimeout(responseTimer);
          clearTimeout(connectTimer);
          live.delete(upstreamReq);
          upstreamReq.destroy();
          const gerr = err instanceof GatewayError ? err : toUpstreamError(err);
          writeRawError(socket, gerr);
          drain(socket, timeouts.idleMs);
          settle({ status: gerr.status, reason: gerr.code });
        };

        // The upstream must connect and answer the upgrade in time (threat model #90b); Node's own
        // socket timeouts are idle timers, these are deadlines.
        const connectTimer = setTimeout(() => {
          failBeforeAnswer(timeoutError('upgrade connect timeout', 'UND_ERR_CONNECT_TIMEOUT'));
        }, timeouts.upstreamConnectMs);
        const responseTimer = setTimeout(() => {
          failBeforeAnswer(timeoutError('upgrade response timeout', 'UND_ERR_HEADERS_TIMEOUT'));
        }, timeouts.upstreamResponseMs);
        // Connected means TCP and, to an https:// upstream, the TLS handshake (as undici's connect timeout).
        upstreamReq.once('socket', (s: Socket) => {
          s.once(upstream.protocol === 'https:' ? 'secureConnect' : 'connect', () => {
            clearTimeout(connectTimer);
          });
        });

        upstreamReq.on('error', (err) => {
          if (phase === 'waiting') failBeforeAnswer(err);
        });

        socket.on('close', () => {
          if (phase === 'waiting') {
            // The client left before the upstream answered: drop the upstream request too, or its
            // connection stays open until the upstream answers or the timer fires (threat model #92, #108).
            phase = 'done';
            clearTimeout(responseTimer);
            clearTimeout(connectTimer);
            live.delete(upstreamReq);
            upstreamReq.destroy();
            settle({ status: 499, reason: 'client_closed' });
          } else if (phase === 'answering') {
            phase = 'done';
            live.delete(upstreamReq);
            upstreamReq.destroy();
            settle(withTelemetry({ status: answered, reason: 'client_closed' }));
          } else if (phase === 'tunnel') {
            settle(withTelemetry({ status: 101, reason: 'closed' }));
          }
        });

        // Not a 101: the upstream refused the upgrade. Its answer is cleaned like any response (hop-by-hop
        // and Connection-named headers, telemetry under the opt-out; the request id added) and relayed;
        // then the connection closes, the gateway reading nothing more from it.
        upstreamReq.on('response', (res: IncomingMessage) => {
          if (phase !== 'waiting') {
            res.destroy();
            return;
          }
          phase = 'answering';
          clearTimeout(responseTimer);
          clearTimeout(connectTimer);
          answered = res.statusCode ?? 502;
          const built = buildResponseHeaders(
            res.rawHeaders,
            forward.requestId,
            forward.stripResponseTelemetry,
          );
          telemetryStripped = built.telemetryStripped;
          const headers = { ...built.headers, connection: 'close' };
          try {
            validateHeaders(headers);
          } catch {
            phase = 'waiting';
            failBeforeAnswer(new GatewayError('ERR_UPSTREAM_BAD_RESPONSE', 'upgrade answer headers'));
            return;
          }
          // The body may be slow; each silence is bounded like an HTTP response body's (upstreamIdleMs).
          upstreamReq.setTimeout(timeouts.upstreamIdleMs, () => {
            upstreamReq.destroy(timeoutError('upgrade answer body idle', 'UND_ERR_BODY_TIMEOUT'));
          });
          const cutAnswer = (err: unknown): void => {
            if (phase !== 'answering') return;
            phase = 'done';
            live.delete(upstreamReq);
            // The status line is out: the only honest signal left is a cut connection.
            socket.destroy();
            settle(withTelemetry({ status: answered, reason: toUpstreamError(err).code }));
          };
          res.on('error', cutAnswer);
          upstreamReq.on('error', cutAnswer);
          res.on('aborted', () => {
            cutAnswer(timeoutError('upstream closed mid-answer', 'ECONNRESET'));
          });
          res.on('end', () => {
            if (phase !== 'answering') return;
            phase = 'done';
            live.delete(upstreamReq);
            settle(withTelemetry({ status: answered }));
          });
          socket.write(statusLine(answered) + headerLines(headers) + '\r\n');
          res.pipe(socket);
          drain(socket, timeouts.idleMs);
        });

        upstreamReq.on('upgrade', (res: IncomingMessage, proxySocket: Socket, proxyHead: Buffer) => {
          clearTimeout(responseTimer);
          clearTimeout(connectTimer);
          live.delete(upstreamReq);
          proxySocket.on('error', () => proxySocket.destroy());
          if (phase !== 'waiting' || socket.destroyed) {
            proxySocket.destroy();
            return;
          }
          const upgradeHeader = (res.headers.upgrade ?? '').trim().toLowerCase();
          if (upgradeHeader !== 'websocket' || res.headers['sec-websocket-accept'] !== expectedAccept) {
            // A fake or broken 101: never open the tunnel (threat model #88).
            proxySocket.destroy();
            failBeforeAnswer(new GatewayError('ERR_UPSTREAM_BAD_RESPONSE', 'upgrade: not a valid 101'));
            return;
          }
          const built = buildResponseHeaders(
            res.rawHeaders,
            forward.requestId,
            forward.stripResponseTelemetry,
          );
          const headers: ResponseHeaders = { ...built.headers, upgrade: 'websocket', connection: 'Upgrade' };
          try {
            validateHeaders(headers);
          } catch {
            proxySocket.destroy();
            failBeforeAnswer(new GatewayError('ERR_UPSTREAM_BAD_RESPONSE', 'upgrade answer headers'));
            return;
          }
          telemetryStripped = built.telemetryStripped;
          phase = 'tunnel';
          live.add(proxySocket);
          proxySocket.setNoDelay(true);
          proxySocket.once('close', () => {
            live.delete(proxySocket);
            socket.destroy();
          });
          socket.once('close', () => proxySocket.destroy());
          /** The gateway ends the tunnel: its reason is what the access log and the metric get. */
          const end = (reason: TunnelCloseReason): void => {
            settle(withTelemetry({ status: 101, reason }));
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
          if (proxySocket.destroyed) return;
          // The tunnel's idle timer (threat model #90c). Socket timeouts count bytes in both directions,
          // so one timer on the upstream half covers the tunnel.
          proxySocket.setTimeout(timeouts.idleMs);
          proxySocket.on('timeout', () => {
            end('idle');
          });
          socket.write(statusLine(101) + headerLines(headers) + '\r\n');
          // Bytes the upstream sent right behind its 101 (its first frames) follow the handshake.
          if (proxyHead.length > 0) socket.write(proxyHead);
          proxySocket.pipe(socket);
          socket.pipe(proxySocket);
        });

        upstreamReq.end();
      });
    },
    close() {
      for (const s of live) s.destroy();
      live.clear();
    },
  };
}
