/**
 * The admin listener: `GET /metrics` (Prometheus text), `GET /healthz` (the process answers),
 * `GET /readyz` (200 only when everything is ready; 503 with a JSON body naming what is not — e.g. a JWT
 * provider whose JWKS was never fetched), and `POST /cache/purge` (drops cached token answers, so a token
 * revoked at the IdP stops working at once instead of at the end of its cache TTL).
 * Never served on a data port; loopback unless the operator says otherwise (config checks it).
 *
 * With `admin.tls` it serves HTTPS with the secure-context options config/tls.ts built for it — the same
 * resolver and options as a data listener (certificate, key, TLS floor, ciphers, client CA, CRL): a client
 * without a required certificate, or with one from another CA, fails the handshake; a verified client the
 * `admin.allowClients` list does not name gets `403 {"error":"client not allowed"}` and nothing else.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import type { Counter, Registry } from 'prom-client';
import { monotonicMs, systemClock } from '../clock.js';
import type { AdminRuntimeConfig } from '../config/runtime.js';
import { createConnectionState, socketPeer, type ClientPeer } from '../listener/connection.js';
import {
  createLogLimiter,
  openFrontDoor,
  REFUSAL_LOG_LINES_PER_SECOND,
  tlsRejectReason,
  type FrontDoor,
} from '../listener/front-door.js';
import type { Listener } from '../listener/listener.js';
import type { Logger } from '../observability/logger.js';
import type { ConnectionRejectReason } from '../observability/metrics.js';

/** Readiness: the names of what is not ready yet (empty = ready). Async so a cluster primary can ask its workers. */
export type ReadinessProbe = () => readonly string[] | Promise<readonly string[]>;

/** Drops cached token answers: all of them, or one token by its SHA-256 (lower-case hex). Returns the count. */
export type TokenCachePurge = (sha256?: string) => number | Promise<number>;

/** The Prometheus exposition: one registry's, or the sum over a cluster's workers. */
export type MetricsSource = () => Promise<{ readonly contentType: string; readonly text: string }>;

/** One refused admin connection or request: why (the data listeners' closed set of reasons), the
 * detail for the log (a verify result or an error code — never a secret), and who it was. */
export interface AdminRefusal extends ClientPeer {
  readonly reason: ConnectionRejectReason;
  readonly detail: string;
}

/** What the admin server serves, injected by the app (one process) or by the cluster primary. */
export interface AdminDeps {
  readonly metrics: MetricsSource;
  readonly notReady: ReadinessProbe;
  readonly purge?: TokenCachePurge;
  /**
   * Told of every refusal with `admin.tls`: a failed handshake (no certificate, another CA, revoked,
   * TLS < 1.2, plaintext, timeout), a presented certificate that failed verification under `optional`, or a
   * verified client not on `admin.allowClients` (`acl`, answered 403). The caller counts and logs it, as a
   * data listener does: who tried to reach `/metrics` or the purge endpoint is an operator's question.
   */
  readonly onRefusal?: (refusal: AdminRefusal) => void;
  /** TLS session ticket keys to start with (listener/ticket-keys.ts); Node's random ones when absent. */
  readonly ticketKeys?: Buffer;
  /** Where a failure to accept (EMFILE) is logged; the listener keeps serving once descriptors are free. */
  readonly logger: Logger;
}

/**
 * The usual `onRefusal`: counts each refusal as `portcullis_tls_rejected_connections_total{listener="admin"}`
 * and logs it at info as `admin connection refused`, at most REFUSAL_LOG_LINES_PER_SECOND lines a second
 * (the next line written says how many were dropped), as a data listener does.
 */
export function adminRefusalReporter(
  logger: Pick<Logger, 'info'>,
  counter: Counter<'listener' | 'reason'>,
  now: () => number = () => monotonicMs(systemClock),
): (refusal: AdminRefusal) => void {
  const limit = createLogLimiter(REFUSAL_LOG_LINES_PER_SECOND, 1_000, now);
  return ({ reason, detail, clientAddress, clientPort }) => {
    counter.labels('admin', reason).inc();
    limit((suppressed) =>
      logger.info(
        {
          listener: 'admin',
          reason,
          detail,
          clientAddress,
          clientPort,
          ...(suppressed === undefined ? {} : { suppressed }),
        },
        'admin connection refused',
      ),
    );
  };
}

/** The {@link MetricsSource} of one prom-client registry. */
export function registryMetrics(registry: Registry): MetricsSource {
  return async () => ({ contentType: registry.contentType, text: await registry.metrics() });
}

/** Largest purge request body read: 1 KiB (`{"sha256":"<64 hex>"}` is 77 bytes). */
const MAX_PURGE_BODY_BYTES = 1024;
const SHA256_HEX = /^[0-9a-fA-F]{64}$/;

/** A refused purge request: status and the one-line reason sent back. */
class PurgeRefused extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** Reads a small request body; refuses (413) past the cap without buffering the rest. */
function readBody(req: IncomingMessage, max: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length'] ?? '0');
    if (declared > max) {
      reject(new PurgeRefused(413, `body over ${max} bytes`));
      return;
    }
    const chunks: Buffer[] = [];
    let total = 0;
    req.on('data', (c: Buffer) => {
      total += c.length;
      // Past the cap the rest is read and dropped (bounded by requestTimeout); the 413 goes out at once.
      if (total > max) reject(new PurgeRefused(413, `body over ${max} bytes`));
      else chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

/**
 * Which token a purge request names: `undefined` for "all" (no query, empty body), or the SHA-256 from
 * `?sha256=<64 hex>` or a JSON body `{"sha256": "<64 hex>"}` (lower-cased). Anything else is refused: a
 * typo must not silently purge everything, or nothing.
 */
async function purgeTarget(req: IncomingMessage, query: string): Promise<string | undefined> {
  const params = new URLSearchParams(query);
  const keys = [...new Set(params.keys())];
  if (keys.some((k) => k !== 'sha256')) throw new PurgeRefused(400, 'the only query parameter is sha256');
  const fromQuery = params.getAll('sha256');
  if (fromQuery.length > 1) throw new PurgeRefused(400, 'sha256 given more than once');
  const body = (await readBody(req, MAX_PURGE_BODY_BYTES)).trim();
  let fromBody: string | undefined;
  if (body !== '') {
    let json: unknown;
    try {
      json = JSON.parse(body);
    } catch {
      throw new PurgeRefused(400, 'the body is not JSON: send nothing (purge all) or {"sha256":"<64 hex>"}');
    }
    if (
      json === null ||
      typeof json !== 'object' ||
      Array.isArray(json) ||
      Object.keys(json).some((k) => k !== 'sha256') ||
      typeof (json as { sha256?: unknown }).sha256 !== 'string'
    ) {
      throw new PurgeRefused(400, 'the body must be {"sha256":"<64 hex>"}');
    }
    fromBody = (json as { sha256: string }).sha256;
  }
  const [q] = fromQuery;
  if (q !== undefined && fromBody !== undefined)
    throw new PurgeRefused(400, 'sha256 both in the query and in the body');
  const hash = q ?? fromBody;
  if (hash === undefined) return undefined;
  if (!SHA256_HEX.test(hash))
    throw new PurgeRefused(400, 'sha256 must be 64 hex digits (the SHA-256 of the token)');
  return hash.toLowerCase();
}

/** What the admin server needs of its config: the address, and for HTTPS the TLS options and the ACL. */
export type AdminListenerConfig = Pick<AdminRuntimeConfig, 'address' | 'tls' | 'acl'>;

/** ms to complete a TLS handshake on the admin listener (Node's default, 120 s, lets silent sockets linger). */
const ADMIN_HANDSHAKE_TIMEOUT_MS = 10_000;

/**
 * Creates the admin listener, unbound (`start` binds it, through the listeners' front door, front-door.ts):
 * plaintext HTTP when `admin.tls` is undefined, else HTTPS. No handshake failure, refused certificate or
 * socket error can throw out of it. It has no connection cap of its own and reads no byte before its server.
 * A reload changes nothing here: one that changes its address, TLS settings or allow-list is refused (app.ts
 * `restartNeeded`), and it serves the TLS material it started with until a restart, CRL included.
 */
export function createAdminListener(admin: AdminListenerConfig, deps: AdminDeps): Listener {
  const serve = (req: IncomingMessage, res: ServerResponse): void => {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const path = q === -1 ? url : url.slice(0, q);
    const query = q === -1 ? '' : url.slice(q + 1);
    const send = (status: number, type: string, body: string, extra: Record<string, string> = {}): void => {
      res.writeHead(status, {
        'content-type': type,
        'content-length': Buffer.byteLength(body),
        'cache-control': 'no-store',
        ...extra,
      });
      res.end(req.method === 'HEAD' ? undefined : body);
    };
    const json = (status: number, value: unknown): void =>
      send(status, 'application/json', `${JSON.stringify(value)}\n`);

    if (path === '/cache/purge') {
      if (req.method !== 'POST') {
        send(405, 'text/plain; charset=utf-8', 'method not allowed: POST\n', { allow: 'POST' });
        return;
      }
      // A web page in a browser on this machine can POST to loopback; browsers mark such requests with
      // Origin / Sec-Fetch-Site. An operator's curl sends neither.
      const site = req.headers['sec-fetch-site'];
      if (req.headers.origin !== undefined || (site !== undefined && site !== 'none')) {
        json(403, { error: 'cross-site requests are refused' });
        return;
      }
      const purge = deps.purge;
      purgeTarget(req, query)
        .then(async (hash) => (purge === undefined ? 0 : purge(hash)))
        .then(
          (purged) => json(200, { purged }),
          (err: unknown) => {
            if (!req.complete) req.resume();
            if (err instanceof PurgeRefused) json(err.status, { error: err.message });
            else json(400, { error: 'unreadable request' });
          },
        );
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      send(405, 'text/plain; charset=utf-8', 'method not allowed\n', { allow: 'GET, HEAD' });
      return;
    }
    if (path === '/metrics') {
      deps.metrics().then(
        (m) => send(200, m.contentType, m.text),
        () => send(500, 'text/plain; charset=utf-8', 'metrics unavailable\n'),
      );
    } else if (path === '/healthz') {
      send(200, 'application/json', '{"status":"ok"}\n');
    } else if (path === '/readyz') {
      Promise.resolve()
        .then(() => deps.notReady())
        .then(
          (missing) =>
            json(missing.length === 0 ? 200 : 503, { ready: missing.length === 0, notReady: missing }),
          // Fail closed: a probe that cannot answer is not ready.
          () => json(503, { ready: false, notReady: ['readiness probe failed'] }),
        );
    } else {
      send(404, 'text/plain; charset=utf-8', 'not found\n');
    }
  };

  /** Sockets already reported: a connection refused for its ACL is reported once, not per request. */
  const reported = new WeakSet<object>();
  const refuseOnce = (socket: Socket, reason: ConnectionRejectReason, detail: string): void => {
    if (reported.has(socket)) return;
    reported.add(socket);
    try {
      deps.onRefusal?.({ reason, detail, ...socketPeer(socket) });
    } catch {
      // Counting or logging a refusal must never turn it into a crash.
    }
  };

  const tls = admin.tls;
  let server: Server;
  /** The same server when it is HTTPS (its ticket keys can be set). */
  let secure: HttpsServer | undefined;
  if (tls === undefined) {
    server = createServer(serve);
  } else {
    /** The allow-list verdict of each connection, decided once at the end of its handshake. */
    const allowed = new WeakMap<object, boolean>();
    secure = createHttpsServer(
      { ...tls.options, handshakeTimeout: ADMIN_HANDSHAKE_TIMEOUT_MS },
      (req, res) => {
        req.on('error', noop);
        res.on('error', noop);
        // Fail closed: a socket without a verdict (never seen at the handshake) is not allowed either.
        if (allowed.get(req.socket) !== true) {
          refuseOnce(req.socket, 'acl', 'not on admin.allowClients');
          const body = '{"error":"client not allowed"}\n';
          res.writeHead(403, {
            'content-type': 'application/json',
            'content-length': Buffer.byteLength(body),
            'cache-control': 'no-store',
            connection: 'close',
          });
          res.end(req.method === 'HEAD' ? undefined : body);
          return;
        }
        serve(req, res);
      },
    );
    server = secure;
    // Runs before the HTTP layer takes the socket: the certificate verdict and the ACL decide first.
    server.prependListener('secureConnection', (socket: TLSSocket) => {
      // TLS 1.2 renegotiation: a CPU-exhaustion vector the admin listener has no use for.
      socket.disableRenegotiation();
      socket.on('error', noop);
      if (!socket.authorized && tls.clientCertificate !== 'none') {
        const cert = socket.getPeerCertificate();
        // `optional`: a certificate that was presented and failed verification is refused, never treated
        // as "anonymous"; `require` never gets here without one (Node refused the handshake).
        if (Object.keys(cert).length > 0 || tls.clientCertificate === 'require') {
          const verify = String(socket.authorizationError ?? 'unverified certificate');
          refuseOnce(socket, tlsRejectReason(new Error(verify), verify), verify);
          socket.destroy();
          return;
        }
      }
      try {
        allowed.set(socket, createConnectionState(socket, admin.acl).listenerAllowed);
      } catch (err) {
        // A certificate that is not a client's, or that the identity parser cannot read exactly, is
        // refused, never half-trusted.
        refuseOnce(socket, 'bad_client_cert', err instanceof Error ? err.message : 'client certificate not readable');
        socket.destroy();
      }
    });
    // A refused or broken handshake (no certificate, another CA, TLS < 1.2, plaintext bytes, timeout):
    // Node destroys the socket; the reason is classified as on a data listener.
    server.on('tlsClientError', (err: Error & { code?: string }, socket: TLSSocket) => {
      const verify: unknown = socket.authorizationError;
      const detail = typeof verify === 'string' && verify !== '' ? verify : (err.code ?? err.message);
      refuseOnce(socket, tlsRejectReason(err, verify), detail);
    });
  }
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
  if (deps.ticketKeys !== undefined) secure?.setTicketKeys(deps.ticketKeys);

  let door: FrontDoor | undefined;
  const drain = (graceMs: number): Promise<void> => {
    const front = door;
    if (front === undefined) return Promise.resolve();
    const closed = front.stopAccepting();
    // Idle keep-alive connections close now; a request being answered gets up to the grace period.
    server.closeIdleConnections();
    if (graceMs <= 0) front.destroyAll();
    const force = setTimeout(() => front.destroyAll(), Math.max(0, graceMs));
    force.unref();
    return closed.finally(() => clearTimeout(force));
  };
  return {
    name: 'admin',
    async start(): Promise<void> {
      door = await openFrontDoor(
        { name: 'admin', keyPath: 'admin', address: admin.address, maxConnections: undefined },
        {
          logger: deps.logger,
          clock: systemClock,
          // No cap, and no byte read before the server: the front door refuses nothing here. The refusals of
          // the admin listener are its TLS server's and its allow-list's, reported through `onRefusal`.
          reject: () => undefined,
          intake: { kind: 'server', server },
        },
      );
    },
    address() {
      if (door === undefined) throw new Error('the admin listener is not started');
      return door.address();
    },
    // Nothing a reload may change reaches the admin listener (see above).
    update: () => undefined,
    setTicketKeys: (keys) => secure?.setTicketKeys(keys),
    // The CRL it serves with is the one it started with: a reload's newly revoked serials do not reach it.
    closeRevoked: () => 0,
    drain,
    close: () => drain(0),
  };
}

/**
 * Creates and starts the admin listener ({@link createAdminListener}). Rejects with a ConfigError naming
 * `admin.listen` when it cannot bind.
 */
export async function startAdminServer(admin: AdminListenerConfig, deps: AdminDeps): Promise<Listener> {
  const listener = createAdminListener(admin, deps);
  await listener.start();
  return listener;
}

function noop(): void {
  /* the socket or stream is destroyed by its owner; the error must not become an uncaught exception */
}
