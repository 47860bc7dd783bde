/**
 * A TCP listener (`protocol: tcp`): TLS in, raw bytes out — the pipeline of DESIGN.md up to "peer identity",
 * then proxy/tcp-pipe.ts. What a Dask scheduler's comm port (8786) sits behind (issue 5).
 *
 * The front is the listeners' front door (front-door.ts: connection caps, the active-connection gauge,
 * the refusal log, bind and drain) in its `tls-layer` mode: it hands every socket straight to a `tls.Server`
 * with the listener's TLS options, a handshake timeout and renegotiation disabled. Per connection, in this
 * order, and nothing reaches the upstream before the last check passed:
 *
 * 1. plaintext → closed without a byte in answer (DESIGN: "a TCP listener closes"), counted
 *    `reason="plaintext"`; silent socket → closed after the handshake timeout, `handshake_timeout`.
 *    Unlike the HTTP listener, which must answer plaintext with a 400 and so reads the first byte itself
 *    (policy/plaintext.ts), this one lets OpenSSL read it: a first record that is not TLS at all (an HTTP
 *    request, a Dask frame, any bytes without a TLS record header) fails the handshake with one of
 *    {@link PLAINTEXT_TLS_ERRORS} and OpenSSL sends no alert for it. Why not sniff: a socket whose first
 *    bytes were read in JS and handed back (`unshift`) leaves Node's TLS layer reading the connection in
 *    ~4–20 KiB pieces instead of 64 KiB for its whole life (its input buffer ring keeps the small first
 *    buffer): measured 4.7× more read calls and ~20 % more CPU per GiB uploaded (issue 18);
 * 2. TLS handshake with the client certificate policy: `require` is enforced by OpenSSL (no certificate,
 *    another CA, expired, revoked per the CRL → handshake refused, counted by reason); `optional` with a
 *    certificate that failed verification → closed, never downgraded to anonymous;
 * 3. the listener ACL (`allowClients`) against the verified identity → a miss is closed, counted `acl`;
 * 4. only then the upstream connection (tcp-pipe.ts), optionally led by a PROXY v2 header.
 *
 * Upstreams that cannot read headers learn nothing of the client's identity, so the gateway records it: one
 * JSON access-log line per piped connection at close (listener, client address, certificate subject and
 * SHA-256 fingerprint, bytes each way, duration, close reason — issue 5 point 4) and the `portcullis_tcp_*` metrics
 * (observability/metrics.ts).
 */
import { randomRequestId } from '../mutate/request-id.js';
import { DEFAULTS } from '../config/defaults.js';
import { createServer as createTlsServer, type TLSSocket } from 'node:tls';
import { systemClock, type Clock } from '../clock.js';
import type { TcpRuntimeListener } from '../config/runtime.js';
import type { TimeoutsConfig } from '../config/schema.js';
import type { Logger } from '../observability/logger.js';
import type { ConnectionRejectReason, Metrics } from '../observability/metrics.js';
import { createGcPacer, GC_PACE_BYTES } from '../proxy/gc-pacer.js';
import {
  CLOSE_REASONS,
  createReadBuffer,
  pipeTcp,
  type CloseReason,
  type PipeResult,
} from '../proxy/tcp-pipe.js';
import {
  createConnectionState,
  createVerifiedConnections,
  socketPeer,
  type ConnectionState,
} from './connection.js';
import { openFrontDoor, tlsRejectReason, type FrontDoor } from './front-door.js';
import { listenerBlock, type Listener, type ListenerRuntime } from './listener.js';
import { swapSecureContext } from './tls-material.js';

/** A `protocol: tcp` listener, resolved: the config's {@link TcpRuntimeListener}, its caps optional. */
export type TcpListenerConfig = Pick<
  TcpRuntimeListener,
  'name' | 'keyPath' | 'address' | 'tls' | 'acl' | 'upstream' | 'proxyProtocol'
> & {
  /** Open client connections accepted at once; absent: {@link DEFAULTS.maxConnections}. */
  readonly maxConnections?: number;
  /** Open connections one client address may hold; absent: no such cap (listener/client-cap.ts). */
  readonly maxConnectionsPerClient?: number | undefined;
};

export interface TcpListenerDeps {
  readonly logger: Logger;
  /** The process metrics: the connection counters and the `tcp*` ones (bytes, connections, duration). */
  readonly metrics: Pick<
    Metrics,
    | 'rejectedConnections'
    | 'activeConnections'
    | 'handshakes'
    | 'tcpBytes'
    | 'tcpConnections'
    | 'tcpConnectionDuration'
  >;
  /** `tlsHandshakeMs` (first byte and handshake), `upstreamConnectMs`, `idleMs` (no byte either way),
   * `tunnelMaxMs` (longest life of a piped connection; absent: none). */
  readonly timeouts: Pick<TimeoutsConfig, 'tlsHandshakeMs' | 'upstreamConnectMs' | 'idleMs' | 'tunnelMaxMs'>;
  /** One info line per piped connection (`log.access`); failures of the upstream are logged regardless. */
  readonly accessLog?: boolean;
  /** Time source of durations and of the refusal-log rate limit; the system clock when absent. */
  readonly clock?: Clock;
  /** TLS session ticket keys of the first secure context (see HttpListenerDeps.ticketKeys). */
  readonly ticketKeys?: Buffer;
  /**
   * V8's young-generation collection, called every {@link GC_PACE_BYTES} of buffers the listener's pipes let
   * go of (proxy/gc-pacer.ts: `youngCollection()`); absent: V8 alone decides when to collect.
   */
  readonly collectYoung?: () => void;
}

/**
 * OpenSSL's verdicts on a first record that is not TLS (Node's `err.code` on `tlsClientError`): counted
 * and logged as plaintext. For these OpenSSL sends no alert (its record layer: "doesn't look like TLS —
 * don't send an alert"), so the client gets not a byte, as DESIGN asks. Bytes that do carry a TLS record
 * header with another record type get a TLS alert and are counted as `protocol`.
 */
export const PLAINTEXT_TLS_ERRORS: ReadonlySet<string> = new Set([
  'ERR_SSL_HTTP_REQUEST',
  'ERR_SSL_HTTPS_PROXY_REQUEST',
  'ERR_SSL_WRONG_VERSION_NUMBER',
]);

/** Close reasons that are the upstream's fault: logged at warn even with the access log off. */
const UPSTREAM_FAILURES: ReadonlySet<CloseReason> = new Set([
  'upstream_unavailable',
  'upstream_tls',
  'connect_timeout',
]);

/**
 * Creates a TCP listener piping every admitted connection to the listener's `upstream`, unbound (`start`
 * binds it). On a reload (`update`), new handshakes use the new TLS material and are checked against the new
 * ACL; connections admitted from then on are piped to the new upstream, with the new `proxyProtocol`;
 * connections already piped keep theirs. `drain` lets piped connections end by themselves for up to the
 * grace period, then closes both sides (reason `shutdown`); a connection still in its handshake is refused
 * when it completes.
 */
export function createTcpListener(listener: TcpListenerConfig, deps: TcpListenerDeps): Listener {
  const { logger, metrics, timeouts } = deps;
  const name = listener.name;
  // Swapped whole by `update` (config reload); read at each handshake and each new pipe.
  let current = listener;
  let accessLog = deps.accessLog;
  const tls = listener.tls;
  const clock = deps.clock ?? systemClock;
  const active = metrics.activeConnections.labels(name);
  const bytesIn = metrics.tcpBytes.labels(name, 'in');
  const bytesOut = metrics.tcpBytes.labels(name, 'out');
  const duration = metrics.tcpConnectionDuration.labels(name);
  const handshakes = metrics.handshakes.labels(name, 'none');
  // Every series exists from the start (a dashboard shows 0, not "no data").
  // (`labels()` alone creates no series in prom-client: `inc(0)` does.)
  for (const reason of CLOSE_REASONS) metrics.tcpConnections.labels(name, reason).inc(0);
  const reject = (reason: ConnectionRejectReason): void =>
    metrics.rejectedConnections.labels(name, reason).inc();
  // Set once the front door is open (`start`); nothing is refused before that.
  let door: FrontDoor | undefined = undefined;
  /** One info line about a refused connection, rate-limited (front-door.ts REFUSAL_LOG_LINES_PER_SECOND). */
  const logRefusal = (fields: Record<string, unknown>, msg: string): void => door?.logRefusal(fields, msg);
  /** Aborts every pipe at the end of the shutdown grace period. */
  const shutdown = new AbortController();
  const verified = createVerifiedConnections(logger, name);
  // One buffer for the upstream reads of every connection of this listener (tcp-pipe.ts READ_BUFFER_BYTES).
  const readBuffer = createReadBuffer();
  const onReleased =
    deps.collectYoung === undefined
      ? undefined
      : createGcPacer({ everyBytes: GC_PACE_BYTES }, { collect: deps.collectYoung });

  const secure = createTlsServer({
    ...tls.options,
    handshakeTimeout: timeouts.tlsHandshakeMs,
    // Half-close is forwarded (tcp-pipe.ts): a client FIN must not end the gateway's side at once.
    allowHalfOpen: true,
  });
  if (deps.ticketKeys !== undefined) secure.setTicketKeys(deps.ticketKeys);
  secure.on('tlsClientError', (err: Error & { code?: string }, socket: TLSSocket) => {
    // Read while connected: the lines below are written after the socket is destroyed.
    const peer = socketPeer(socket);
    // Node does not close the socket itself when the handshake times out (it only reports it here).
    socket.destroy();
    if (err.code !== undefined && PLAINTEXT_TLS_ERRORS.has(err.code)) {
      reject('plaintext');
      logRefusal({ reason: 'plaintext', detail: err.code, ...peer }, 'plaintext on a TLS port');
      return;
    }
    const verify: unknown = socket.authorizationError;
    const reason = tlsRejectReason(err, verify);
    reject(reason);
    // Node verifies a required certificate after the handshake and destroys the socket: the error is then
    // a bare ECONNRESET and the reason (CERT_REVOKED, CERT_HAS_EXPIRED, ...) is the socket's verify result.
    const detail = typeof verify === 'string' && verify !== '' ? verify : (err.code ?? err.message);
    logRefusal({ reason, detail, ...peer }, 'tls handshake refused');
  });
  secure.on('secureConnection', (socket: TLSSocket) => {
    // TLS 1.2 renegotiation is a CPU-exhaustion and confusion vector; a byte pipe never needs it.
    socket.disableRenegotiation();
    socket.on('error', noop);
    const refuse = (reason: ConnectionRejectReason, fields: Record<string, unknown>): void => {
      reject(reason);
      logRefusal({ reason, ...fields, ...socketPeer(socket) }, 'connection refused');
      socket.destroy();
    };
    const clientCertificate = current.tls.clientCertificate;
    if (!socket.authorized && clientCertificate !== 'none') {
      const cert = socket.getPeerCertificate();
      const presented = Object.keys(cert).length > 0;
      if (presented || clientCertificate === 'require') {
        // `optional` with a certificate that failed verification: refused, never treated as anonymous
        // (`require` never gets here through Node, which refused the handshake already).
        const detail = String(socket.authorizationError ?? 'no certificate');
        refuse(!presented ? 'no_client_cert' : detail.includes('REVOKED') ? 'revoked' : 'bad_client_cert', {
          detail,
        });
        return;
      }
    }
    let state: ConnectionState;
    try {
      state = createConnectionState(socket, current.acl);
    } catch (err) {
      // A certificate the identity parser cannot read exactly is refused, never half-trusted.
      refuse('bad_client_cert', { detail: err instanceof Error ? err.message : 'unreadable' });
      return;
    }
    handshakes.inc();
    const who = state.identity
      ? { clientSubject: state.identity.subject, clientFingerprint: state.identity.fingerprint256 }
      : { clientSubject: null, clientFingerprint: null };
    if (!state.listenerAllowed) {
      // Before any upstream connection: an ACL miss never costs the upstream an accept.
      refuse('acl', who);
      return;
    }
    if (door?.closing === true) {
      socket.destroy();
      return;
    }
    verified.add(socket, state);
    pipe(socket, state, who);
  });

  function pipe(socket: TLSSocket, state: ConnectionState, who: Record<string, unknown>): void {
    const started = clock.hrtime();
    const source = { address: state.clientAddress, port: socket.remotePort ?? -1 };
    const destination = { address: socket.localAddress ?? '', port: socket.localPort ?? -1 };
    const done = (result: PipeResult): void => {
      const seconds = Number(clock.hrtime() - started) / 1e9;
      metrics.tcpConnections.labels(name, result.closeReason).inc();
      duration.observe(seconds);
      const fields = {
        listener: name,
        // One id per connection, like an HTTP request's X-Request-Id (nothing to forward it in: raw TCP).
        connectionId: randomRequestId(),
        clientAddress: state.clientAddress,
        clientPort: state.clientPort,
        ...who,
        ...(state.servername !== undefined ? { servername: state.servername } : {}),
        bytesIn: result.bytesIn,
        bytesOut: result.bytesOut,
        durationMs: seconds * 1e3,
        reason: result.closeReason,
        ...(result.detail !== undefined ? { detail: result.detail } : {}),
      };
      if (UPSTREAM_FAILURES.has(result.closeReason)) logger.warn(fields, 'tcp connection');
      else if (accessLog !== false) logger.info(fields, 'tcp connection');
    };
    const { upstream, proxyProtocol } = current;
    void pipeTcp(socket, upstream, {
      connectTimeoutMs: timeouts.upstreamConnectMs,
      idleMs: timeouts.idleMs,
      ...(timeouts.tunnelMaxMs !== undefined ? { maxLifetimeMs: timeouts.tunnelMaxMs } : {}),
      signal: shutdown.signal,
      onBytes: (direction, n) => (direction === 'in' ? bytesIn : bytesOut).inc(n),
      readBuffer,
      ...(onReleased !== undefined ? { onReleased } : {}),
      ...(proxyProtocol === 'v2' ? { proxyProtocol: { source, destination } } : {}),
    }).then(done);
  }

  const drain = (graceMs: number): Promise<void> => {
    const front = door;
    if (front === undefined) return Promise.resolve();
    const closed = front.stopAccepting();
    const stop = (): void => {
      shutdown.abort();
      front.destroyAll();
    };
    // Connections still handshaking end by themselves within the handshake timeout (and are refused
    // at secureConnection); piped ones are cut when the grace period is over.
    if (graceMs <= 0) stop();
    const force = setTimeout(stop, Math.max(0, graceMs));
    force.unref();
    return closed.finally(() => clearTimeout(force));
  };

  return {
    name,
    async start(): Promise<void> {
      door = await openFrontDoor(
        { ...current, maxConnections: current.maxConnections ?? DEFAULTS.maxConnections },
        {
          logger,
          clock,
          reject,
          active,
          intake: {
            // Not a byte read in JS (see the file comment): plaintext and silence are the TLS server's to
            // refuse ('tlsClientError': PLAINTEXT_TLS_ERRORS, ERR_TLS_HANDSHAKE_TIMEOUT).
            kind: 'tls-layer',
            // Half-close is forwarded (tcp-pipe.ts): a client FIN must not end the gateway's side at once.
            allowHalfOpen: true,
            onTls: (socket) => secure.emit('connection', socket),
          },
        },
      );
    },
    address() {
      if (door === undefined) throw new Error(`listener ${name} is not started`);
      return door.address();
    },
    setTicketKeys(keys: Buffer): void {
      secure.setTicketKeys(keys);
    },
    closeRevoked: (serials: ReadonlySet<string>): number => verified.closeRevoked(serials),
    update(runtime: ListenerRuntime): void {
      const next = listenerBlock(runtime.config, name, 'tcp');
      swapSecureContext(secure, current.tls, next.tls, runtime.ticketKeys);
      current = next;
      accessLog = runtime.config.log.access;
      door?.update(next);
    },
    drain,
    close: () => drain(0),
  };
}

function noop(): void {
  /* errors are handled by the pipe, which owns the socket from here */
}
