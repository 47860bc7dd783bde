/**
 * The front door every listener shares (HTTP, TCP and admin): the accepting `net.Server`, the connection
 * caps (all clients, and per client address), the plaintext sniff on the first byte where the listener
 * answers plaintext (policy/plaintext.ts),
 * the count of open connections, the refusal log (rate-limited: a flood of refused connections cannot flood
 * the log, threat model #1), the bind, and the drain at shutdown. What happens past the caps (and the first
 * byte, where it is read here) is the listener's own (see {@link Intake}).
 */
import { createServer as createNetServer, type AddressInfo, type Server, type Socket } from 'node:net';
import type { ListenAddress } from '../config/runtime.js';
import { monotonicMs, type Clock } from '../clock.js';
import type { Logger } from '../observability/logger.js';
import type { ConnectionRejectReason } from '../observability/metrics.js';
import { sniffConnection } from '../policy/plaintext.js';
import { bindListener, capConnections } from './bind.js';
import { admitSocket, createClientCap } from './client-cap.js';
import { socketPeer, type ClientPeer } from './connection.js';

/**
 * Connection refusals logged per listener per second. Every refusal is counted by the metric; past this
 * many a second, lines are dropped and the next line written says how many were (`suppressed`), so a
 * flood of plaintext or garbage connections cannot flood the log (threat model #1).
 */
export const REFUSAL_LOG_LINES_PER_SECOND = 20;

/** A fixed-window limiter: `write` runs at most `perWindow` times per `windowMs`; the count of
 * dropped calls is handed to the next call that runs. `now` is a monotonic reading in ms: a wall clock
 * stepped back would hold the window shut (and the log silent) until it caught up. */
export function createLogLimiter(
  perWindow: number,
  windowMs: number,
  now: () => number,
): (write: (suppressed: number | undefined) => void) => void {
  let windowStart = Number.NEGATIVE_INFINITY;
  let used = 0;
  let suppressed = 0;
  return (write) => {
    const t = now();
    if (t - windowStart >= windowMs) {
      windowStart = t;
      used = 0;
    }
    if (used >= perWindow) {
      suppressed += 1;
      return;
    }
    used += 1;
    const dropped = suppressed;
    suppressed = 0;
    write(dropped > 0 ? dropped : undefined);
  };
}

/**
 * Maps a TLS handshake failure to a bounded reason label. Node verifies the client certificate after
 * the handshake and destroys the socket, so the verify result is on the socket (`authorizationError`:
 * CERT_REVOKED, CERT_HAS_EXPIRED, ...), not in the error.
 */
export function tlsRejectReason(err: Error & { code?: string }, authorizationError: unknown): ConnectionRejectReason {
  const code = err.code ?? '';
  const msg = err.message.toLowerCase();
  if (code === 'ERR_TLS_HANDSHAKE_TIMEOUT') return 'handshake_timeout';
  if (code === 'ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE' || msg.includes('peer did not return a certificate')) return 'no_client_cert';
  const verify = typeof authorizationError === 'string' ? authorizationError : authorizationError instanceof Error ? authorizationError.message : '';
  if (verify.includes('REVOKED') || msg.includes('revoked')) return 'revoked';
  if (verify !== '' || msg.includes('certificate') || code.includes('CERT')) return 'bad_client_cert';
  return 'protocol';
}

/** What the front door of one listener is set up with (reloadable: the two caps). */
export interface FrontDoorConfig {
  readonly name: string;
  readonly keyPath: string;
  readonly address: ListenAddress;
  /**
   * Open client connections accepted at once; more are closed at accept, before the handshake. Undefined: no
   * cap (the admin listener, which has no such setting).
   */
  readonly maxConnections: number | undefined;
  /** Open connections one client address may hold; undefined: no such cap. */
  readonly maxConnectionsPerClient?: number | undefined;
}

/**
 * How a connection past the caps is taken in: by whom, and whether its first byte is read here.
 *
 * - `http-400` (an HTTP listener with TLS): the first byte is read here; plaintext gets a one-line 400
 *   (policy/plaintext.ts), silence is refused after `firstByteMs` (the TLS handshake timeout), and a TLS
 *   handshake (the socket paused, its chunk pushed back) goes to `onTls`.
 * - `tls-layer` (a TCP listener): not a byte is read here; every socket goes to `onTls`, whose TLS server
 *   refuses plaintext without a byte in answer. A socket whose first bytes were read in JS and pushed back
 *   is read in small pieces by the TLS layer for its whole life (issue 18: 4.7× more reads per MiB), which a
 *   byte pipe cannot afford. `allowHalfOpen` keeps a half-closed client connection open (a TCP pipe forwards
 *   the FIN).
 * - `server`: the front door guards `server` instead of making one, for a server that reads the bytes itself
 *   (Node's HTTP server of a plaintext HTTP listener, the admin listener's HTTP or HTTPS server);
 *   `onAccepted`, when given, is told of each connection past the caps.
 */
export type Intake =
  | {
      readonly kind: 'http-400';
      readonly firstByteMs: number;
      readonly onTls: (socket: Socket) => void;
    }
  | {
      readonly kind: 'tls-layer';
      readonly allowHalfOpen?: boolean;
      readonly onTls: (socket: Socket) => void;
    }
  | {
      readonly kind: 'server';
      readonly server: Server;
      readonly onAccepted?: (socket: Socket) => void;
    };

export interface FrontDoorDeps {
  readonly logger: Logger;
  readonly clock: Clock;
  /** Counts one refused connection by reason (`portcullis_tls_rejected_connections_total`). */
  readonly reject: (reason: ConnectionRejectReason) => void;
  /** The open-connections gauge of the listener; absent: not counted (the admin listener). */
  readonly active?: { inc(): void; dec(): void };
  readonly intake: Intake;
}

/** A bound front door. */
export interface FrontDoor {
  readonly server: Server;
  /** Every accepted client socket, until it closes. */
  readonly sockets: ReadonlySet<Socket>;
  /** True once {@link FrontDoor.stopAccepting} was called: new connections are closed at accept. */
  readonly closing: boolean;
  /** One info line about a refused connection or request, rate-limited per listener. */
  logRefusal(fields: Record<string, unknown>, msg: string): void;
  /** Counts, logs (with the socket's peer) and closes a connection refused after its handshake. */
  refuse(socket: Socket, reason: ConnectionRejectReason, fields?: Record<string, unknown>): void;
  /** Applies the caps of a reloaded config to connections from now on. */
  update(config: FrontDoorConfig): void;
  address(): AddressInfo;
  /** Stops accepting; resolves when the server has closed (every accepted socket gone). */
  stopAccepting(): Promise<void>;
  /** Destroys every open client socket. */
  destroyAll(): void;
}

/**
 * Creates the front door and binds it. Rejects with a ConfigError naming `<keyPath>.listen` when the address
 * cannot be bound; after that, an accept failure is logged, never thrown.
 */
export async function openFrontDoor(config: FrontDoorConfig, deps: FrontDoorDeps): Promise<FrontDoor> {
  const { logger, reject } = deps;
  const name = config.name;
  let current = config;
  let closing = false;
  const sockets = new Set<Socket>();
  const limit = createLogLimiter(REFUSAL_LOG_LINES_PER_SECOND, 1_000, () => monotonicMs(deps.clock));
  const logRefusal = (fields: Record<string, unknown>, msg: string): void =>
    limit((suppressed) =>
      logger.info({ listener: name, ...fields, ...(suppressed === undefined ? {} : { suppressed }) }, msg),
    );
  const perClient = createClientCap(config.maxConnectionsPerClient);
  const refuseClient = (peer: ClientPeer): void => {
    reject('client_connection_limit');
    logRefusal(
      { reason: 'client_connection_limit', ...peer, maxConnectionsPerClient: current.maxConnectionsPerClient },
      'connection refused',
    );
  };

  const { intake, active } = deps;
  const accept = (socket: Socket): void => {
    sockets.add(socket);
    active?.inc();
    socket.once('close', () => {
      sockets.delete(socket);
      active?.dec();
    });
    if (closing) {
      socket.destroy();
      return;
    }
    // Read while connected: the refusal lines below are written after the socket is destroyed.
    const peer = socketPeer(socket);
    if (!admitSocket(perClient, socket, () => refuseClient(peer))) return;
    if (intake.kind === 'server') {
      intake.onAccepted?.(socket);
      return;
    }
    if (intake.kind === 'tls-layer') {
      intake.onTls(socket);
      return;
    }
    sniffConnection(socket, intake.firstByteMs, {
      onTls: intake.onTls,
      onPlaintext: () => {
        reject('plaintext');
        logRefusal({ reason: 'plaintext', ...peer }, 'plaintext on a TLS port');
      },
      onTimeout: () => {
        reject('handshake_timeout');
        logRefusal(
          { reason: 'handshake_timeout', detail: 'no byte before the handshake timeout', ...peer },
          'tls handshake refused',
        );
      },
    });
  };
  let server: Server;
  if (intake.kind === 'server') {
    server = intake.server;
    server.on('connection', accept);
  } else {
    const allowHalfOpen = intake.kind === 'tls-layer' && intake.allowHalfOpen === true;
    server = createNetServer({ noDelay: true, allowHalfOpen }, accept);
  }
  const cap =
    config.maxConnections === undefined
      ? undefined
      : capConnections(server, config.maxConnections, (peer) => {
          reject('connection_limit');
          logRefusal(
            { reason: 'connection_limit', ...peer, maxConnections: current.maxConnections },
            'connection refused',
          );
        });
  await bindListener(server, config);
  // After the bind, a server 'error' (an accept failure such as EMFILE) must be logged, never thrown: an
  // EventEmitter without an 'error' listener would take the whole process down.
  server.on('error', (err: NodeJS.ErrnoException) => {
    logger.error({ listener: name, detail: err.code ?? err.message }, 'listener error');
  });

  return {
    server,
    sockets,
    get closing() {
      return closing;
    },
    logRefusal,
    refuse(socket, reason, fields = {}) {
      reject(reason);
      logRefusal({ reason, ...fields, ...socketPeer(socket) }, 'connection refused');
      socket.destroy();
    },
    update(next) {
      current = next;
      if (next.maxConnections !== undefined) cap?.setMax(next.maxConnections);
      perClient.setMax(next.maxConnectionsPerClient);
    },
    address: () => {
      const a = server.address();
      // A Unix socket's address is its path: reported as the address, with port 0.
      return typeof a === 'string' ? { address: a, family: 'unix', port: 0 } : (a as AddressInfo);
    },
    stopAccepting() {
      closing = true;
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
    destroyAll() {
      for (const s of sockets) s.destroy();
    },
  };
}
