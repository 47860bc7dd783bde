/**
 * The raw TCP pipe of a `protocol: tcp` listener: one client stream (already TLS-terminated and allowed by
 * the listener ACL) joined to one upstream connection, `tcp://` or re-encrypted `tls://` (issue 5 points 1–3).
 *
 * What it guarantees, per connection (threat model #110; ghostunnel's half-close, abortive-close, tiny-writes,
 * large-transfer and backend-flapping tests):
 * - bounded memory: a side is paused as soon as a write to the other side returns false (its write buffer
 *   holds its `writableHighWaterMark`, {@link PIPE_BUFFER_BYTES}) and resumed at its `'drain'`, what
 *   `stream.pipe` does, so a reader that stops reading stops the writer on the other side; the gateway
 *   holds at most that plus one read (64 KiB) per direction, never the whole transfer;
 * - half-close: a FIN from one side becomes `end()` on the other, and the opposite direction stays open
 *   until its own FIN (a client may `shutdown(SHUT_WR)` and still read the answer);
 * - an abortive close (RST, or any socket error) on one side resets the other side too (`SO_LINGER 0`
 *   where the TCP socket is reachable), so a truncated stream never looks like a complete one;
 * - timeouts: connecting (TCP + PROXY header + TLS) is bounded by `connectTimeoutMs`; a connection with no
 *   byte in either direction for `idleMs` (a stalled reader included) is closed on both sides, at most
 *   `idleMs / 4` later;
 * - the upstream's certificate is verified against `ca` (the system roots when absent) and its name
 *   (`servername`, else the host; an IP literal is checked against the certificate's IP SANs and no SNI is
 *   sent); `cert`/`key` are the gateway's own client certificate for upstreams that require one;
 * - it never throws and never rejects: every socket has an error listener, and the outcome is a value.
 */
import { connect as netConnect, isIP, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { connect as tlsConnect, createSecureContext, TLSSocket, type SecureContext } from 'node:tls';
import { encodeProxyV2, type ProxyEndpoint } from './proxy-protocol.js';

/**
 * Bytes one direction may hold in the gateway's write buffer before the other side is paused: Node's
 * default `writableHighWaterMark` (64 KiB on Node 24), the mark `write()` answers false at. Why not more
 * (it was 256 KiB for a while in issue 18): chunks that wait behind a pending TLS write are handed to the
 * TLS socket together on its next write, and Node's TLS layer copies such a batch into one new buffer
 * before encrypting it; that copy and the garbage it made cost more CPU (about a quarter of a download's)
 * than the pause and resume per 64 KiB read it saved. One chunk per TLS write is what `stream.pipe` gets.
 */
export const PIPE_BUFFER_BYTES = 64 * 1024;

/**
 * ms between two live byte-metric updates of a busy connection: `onBytes` gets the bytes moved since the
 * last call, at most this often, and the rest when the connection ends. (Before issue 18 it was called per
 * chunk: one prom-client label hash per 16 KiB.)
 */
export const BYTES_REPORT_MS = 1_000;

/**
 * Bytes of a chunk from the client (a full TLS record: 16 KiB) from which writes to a `tcp://` upstream are
 * batched. Why: Node's TLS layer hands one 64 KiB read of the client's bytes over as four records, one
 * 'data' event each; written one by one, each was a write() system call and a TCP segment, and on an upload
 * that was the largest single cost of the gateway (on loopback the receiver's side of TCP runs inside the
 * sender's call). Corked until the end of the event-loop turn (setImmediate), the records of a read go out
 * in one writev: a quarter of the calls (measured: 8.6 k instead of 33 k write calls per 512 MiB). Smaller
 * chunks are interactive traffic (a request, a ping): they start no batch, so they wait for nothing.
 */
export const BATCH_FROM_BYTES = 16 * 1024;

/** Where the bytes go. `tls` upstreams get a new TLS session from the gateway (re-encryption). */
export type TcpUpstream =
  | { readonly kind: 'tcp'; readonly host: string; readonly port: number }
  | {
      readonly kind: 'tls';
      readonly host: string;
      readonly port: number;
      /** PEM CA bundle the upstream's certificate must chain to; absent: Node's bundled public roots. */
      readonly ca?: Buffer | string;
      /** The gateway's own client certificate and key (PEM), for upstreams that require one. */
      readonly cert?: Buffer | string;
      readonly key?: Buffer | string;
      /** SNI and the name the upstream certificate is checked against; default: `host` (none for an IP). */
      readonly servername?: string;
    };

/** How a piped connection ended. A closed set: it is a metric label and an access-log field. */
export const CLOSE_REASONS = [
  /** Both directions finished with a FIN (the normal end). */
  'closed',
  /** The client reset the connection or its socket failed (ECONNRESET, TLS error, ...). */
  'client_reset',
  /** The upstream reset the connection or its socket failed after it was established. */
  'upstream_reset',
  /** No byte in either direction for `idleMs`. */
  'idle_timeout',
  /** The upstream did not accept (TCP, PROXY header, TLS) within `connectTimeoutMs`. */
  'connect_timeout',
  /** The upstream refused the connection, or its name did not resolve. */
  'upstream_unavailable',
  /** The upstream TLS handshake failed: certificate not trusted, wrong name, our certificate refused. */
  'upstream_tls',
  /** The PROXY v2 header could not be built (the client's address is unknown): nothing was sent. */
  'proxy_protocol',
  /** The gateway aborted the connection (`signal`, at shutdown after the grace period). */
  'shutdown',
  /** Open for `maxLifetimeMs` (`timeouts.tunnelMaxMs`): closed however busy. */
  'max_lifetime',
] as const;
export type CloseReason = (typeof CLOSE_REASONS)[number];

export interface PipeOptions {
  /** ms to establish the upstream connection: TCP connect, PROXY header write and TLS handshake. */
  readonly connectTimeoutMs: number;
  /** ms without a byte read from either side before both are closed. */
  readonly idleMs: number;
  /** ms after which the connection is closed on both sides however busy; absent: no limit. */
  readonly maxLifetimeMs?: number;
  /** Send a PROXY protocol v2 header with these addresses before anything else (before TLS for `tls`). */
  readonly proxyProtocol?: { readonly source: ProxyEndpoint; readonly destination: ProxyEndpoint };
  /** Aborting it closes both sides at once, reason `shutdown`. */
  readonly signal?: AbortSignal;
  /**
   * Live byte metrics: called with the bytes moved since the last call in that direction (`in` client →
   * upstream, `out` upstream → client), at most every {@link BYTES_REPORT_MS} while bytes flow and once more
   * when the connection ends, so the calls of a connection add up to its `bytesIn` / `bytesOut`.
   */
  readonly onBytes?: (direction: 'in' | 'out', bytes: number) => void;
  /**
   * Where a `tcp://` upstream's bytes are read into, for a TLS client: one buffer shared by every pipe of a
   * listener (see {@link createReadBuffer}). Absent: Node allocates a new 64 KiB buffer per read.
   */
  readonly readBuffer?: Buffer;
  /**
   * Told the size of every buffer the pipe receives, each garbage once written (the client's TLS records,
   * the upstream's reads when they are not in `readBuffer`, the copies of those that had to wait): what
   * paces the collections that free them (gc-pacer.ts). Absent: V8 alone decides.
   */
  readonly onReleased?: (bytes: number) => void;
}

/**
 * Bytes of the buffer a listener's `tcp://` upstream reads go into ({@link PipeOptions.readBuffer}): Node's
 * read size, 64 KiB. Why one shared buffer instead of a new one per read: on a download every 64 KiB read
 * was a new buffer for the garbage collector, which (with the gateway's larger heap than a bare pipe's)
 * took about a seventh of the CPU of a download. Sharing is safe because the event loop runs one read at
 * a time and each read is handed to the client's TLS socket before the next: the TLS layer copies the
 * bytes while encrypting them, inside `write()`, and a chunk that has to wait behind a pending write is
 * copied first (see `pumpFromBuffer`).
 */
export const READ_BUFFER_BYTES = 64 * 1024;

/** The buffer one listener's pipes share for their upstream reads ({@link PipeOptions.readBuffer}). */
export function createReadBuffer(): Buffer {
  return Buffer.allocUnsafe(READ_BUFFER_BYTES);
}

export interface PipeResult {
  /** Bytes read from the client and handed to the upstream (the PROXY header is not counted). */
  readonly bytesIn: number;
  /** Bytes read from the upstream and handed to the client. */
  readonly bytesOut: number;
  readonly closeReason: CloseReason;
  /** For the log only: the error code behind a failure (`ECONNREFUSED`, `CERT_HAS_EXPIRED`, ...). */
  readonly detail?: string;
  /** Whether the upstream connection was established. */
  readonly connected: boolean;
}

/** ms without progress a connection whose two sides both sent their FIN may take to flush its last writes. */
const LINGER_MS = 1_000;

/** Secure contexts per upstream object: building one parses PEM and costs about a millisecond. */
const contexts = new WeakMap<object, SecureContext>();

function secureContextFor(upstream: Extract<TcpUpstream, { kind: 'tls' }>): SecureContext {
  let ctx = contexts.get(upstream);
  if (ctx === undefined) {
    ctx = createSecureContext({
      minVersion: 'TLSv1.2',
      ...(upstream.ca !== undefined ? { ca: upstream.ca } : {}),
      ...(upstream.cert !== undefined ? { cert: upstream.cert } : {}),
      ...(upstream.key !== undefined ? { key: upstream.key } : {}),
    });
    contexts.set(upstream, ctx);
  }
  return ctx;
}

/** Error codes that mean "the upstream's TLS did not check out", as opposed to "nobody answered". */
const TLS_FAILURE =
  /CERT|SELF_SIGNED|UNABLE_TO_(GET|VERIFY)|ERR_TLS|ERR_SSL|HOSTNAME|ALTNAME|DEPTH_ZERO|ALERT|SSL/;

function errorCode(err: unknown): string {
  if (err !== null && typeof err === 'object') {
    const code = (err as { code?: unknown }).code;
    if (typeof code === 'string' && code !== '') return code;
    const message = (err as { message?: unknown }).message;
    if (typeof message === 'string' && message !== '') return message.slice(0, 120);
  }
  return 'unknown';
}

/**
 * The TCP socket under `stream`, when there is one: the stream itself, or the socket a server-side or
 * client-side TLSSocket was built on (Node keeps it as `_parent`; no public accessor exists).
 */
function tcpSocketOf(stream: Duplex): Socket | undefined {
  if (stream instanceof TLSSocket) {
    const parent = (stream as TLSSocket & { _parent?: unknown })._parent;
    return parent instanceof Socket ? parent : undefined;
  }
  return stream instanceof Socket ? stream : undefined;
}

/**
 * Closes `stream` abortively: a TCP RST (SO_LINGER 0) when its TCP socket is reachable and connected,
 * a plain destroy otherwise. Never throws.
 */
function reset(stream: Duplex, tcp: Socket | undefined = tcpSocketOf(stream)): void {
  if (tcp !== undefined && !tcp.destroyed && !tcp.connecting) {
    try {
      tcp.resetAndDestroy();
    } catch {
      // Not a TCP handle (a pipe, a JS stream): the destroy below closes it.
    }
  }
  stream.destroy();
  tcp?.destroy();
}

/** Resolves when `stream` has emitted 'close' (at once if it already has). */
function whenClosed(stream: Duplex): Promise<void> {
  if (stream.closed) return Promise.resolve();
  return new Promise((resolve) => stream.once('close', () => resolve()));
}

/**
 * Connects to `upstream` and pipes `client` to it until both directions are finished or one side fails.
 * `client` is not read before the upstream is connected (its bytes wait in its own bounded buffer). Both
 * sockets are closed when the promise resolves. Never rejects.
 */
export function pipeTcp(client: Duplex, upstream: TcpUpstream, opts: PipeOptions): Promise<PipeResult> {
  return new Promise<PipeResult>((resolve) => {
    let bytesIn = 0;
    let bytesOut = 0;
    /** What `onBytes` has been told so far. */
    let reportedIn = 0;
    let reportedOut = 0;
    /** A byte moved (either way) since the idle timer last looked. */
    let moved = false;
    let connected = false;
    let done = false;
    let raw: Socket | undefined;
    /** The stream bytes are exchanged with: `raw` for tcp://, the TLS socket over it for tls://. */
    let up: Duplex | undefined;
    const clientTcp = tcpSocketOf(client);

    // The idle timer is not pushed back per chunk (a timer-list move per 16 KiB): it looks every quarter of
    // idleMs whether a byte moved, and closes after idleMs without one (so between idleMs and 1.25 × idleMs
    // after the last byte).
    const idleTick = Math.max(1, Math.ceil(opts.idleMs / 4));
    let quietMs = 0;
    const idle = setInterval(() => {
      if (moved) {
        moved = false;
        quietMs = 0;
        return;
      }
      quietMs += idleTick;
      if (quietMs >= opts.idleMs) finish('idle_timeout', undefined, 'none');
    }, idleTick);
    idle.unref();
    /** Armed while bytes wait to be reported (so an idle connection has no report timer). */
    let report: NodeJS.Timeout | undefined;
    const reportBytes = (): void => {
      report = undefined;
      if (opts.onBytes === undefined) return;
      if (bytesIn > reportedIn) opts.onBytes('in', bytesIn - reportedIn);
      if (bytesOut > reportedOut) opts.onBytes('out', bytesOut - reportedOut);
      reportedIn = bytesIn;
      reportedOut = bytesOut;
    };
    const connectTimer = setTimeout(
      () => finish('connect_timeout', undefined, 'none'),
      opts.connectTimeoutMs,
    );
    connectTimer.unref();
    const lifetime =
      opts.maxLifetimeMs === undefined
        ? undefined
        : setTimeout(() => finish('max_lifetime', undefined, 'none'), opts.maxLifetimeMs);
    lifetime?.unref();
    const onAbort = (): void => finish('shutdown', undefined, 'none');
    /** Armed once both sides sent their FIN: what is left is flushing our last writes (see `start`). */
    let linger: NodeJS.Timeout | undefined;

    /**
     * Ends the connection once. `abort` says which side gets a RST because the other one failed; 'none'
     * destroys both plainly (timeouts, shutdown, clean end).
     */
    function finish(
      closeReason: CloseReason,
      detail: string | undefined,
      abort: 'client' | 'upstream' | 'none',
    ): void {
      if (done) return;
      done = true;
      clearInterval(idle);
      clearTimeout(report);
      reportBytes();
      clearTimeout(connectTimer);
      clearTimeout(lifetime);
      clearTimeout(linger);
      opts.signal?.removeEventListener('abort', onAbort);
      if (abort === 'client') reset(client, clientTcp);
      else client.destroy();
      const upstreamSide = up ?? raw;
      if (upstreamSide !== undefined) {
        if (abort === 'upstream') reset(upstreamSide, raw);
        else upstreamSide.destroy();
      }
      raw?.destroy();
      const closing = [
        whenClosed(client),
        ...(raw ? [whenClosed(raw)] : []),
        ...(up && up !== raw ? [whenClosed(up)] : []),
      ];
      void Promise.all(closing).then(() =>
        resolve({ bytesIn, bytesOut, closeReason, connected, ...(detail !== undefined ? { detail } : {}) }),
      );
    }

    // The client's listeners come first: its failure before the upstream is reached aborts the connect.
    client.on('error', (err: unknown) => finish('client_reset', errorCode(err), 'upstream'));
    client.on('close', () => {
      if (done) return;
      if (connected && client.readableEnded && client.writableFinished) {
        // Both directions of the client finished cleanly; the upstream finishes its own (see `up` below).
        if (up?.closed) finish('closed', undefined, 'none');
        return;
      }
      finish('client_reset', 'closed', 'upstream');
    });
    if (client.destroyed) {
      finish('client_reset', 'closed', 'none');
      return;
    }
    if (opts.signal !== undefined) {
      if (opts.signal.aborted) {
        finish('shutdown', undefined, 'none');
        return;
      }
      opts.signal.addEventListener('abort', onAbort, { once: true });
    }

    let header: Buffer | undefined;
    if (opts.proxyProtocol !== undefined) {
      try {
        header = encodeProxyV2(opts.proxyProtocol.source, opts.proxyProtocol.destination);
      } catch (err) {
        finish('proxy_protocol', errorCode(err), 'none');
        return;
      }
    }

    /** Bytes flow both ways from here; `stream` is the verified upstream. */
    const start = (stream: Duplex): void => {
      if (done) return;
      connected = true;
      clearTimeout(connectTimer);
      // The idle clock starts now: connecting took time without a byte moving.
      moved = true;
      /**
       * Both sides sent their FIN: each gets its last bytes and our FIN, and the connection closes when
       * both writes finish. A write that never finishes must not hold it until `idleMs`: on Node 24 a
       * TLS client that closed (close_notify, then a reset) leaves the gateway's last write pending
       * forever, with no error. So once both FINs are in, LINGER_MS without any of the pending bytes
       * leaving closes the connection as it would have been; a slow reader that still takes bytes keeps
       * it open.
       */
      const bothEnded = (): void => {
        if (linger !== undefined || !client.readableEnded || !stream.readableEnded) return;
        let pending = client.writableLength + stream.writableLength;
        const check = (): void => {
          const now = client.writableLength + stream.writableLength;
          if (now > 0 && now < pending) {
            pending = now;
            linger = setTimeout(check, LINGER_MS);
            linger.unref();
            return;
          }
          finish('closed', undefined, 'none');
        };
        linger = setTimeout(check, LINGER_MS);
        linger.unref();
      };
      // Batched only into a TCP socket: its writev sends the chunks as they are, where a TLS socket's
      // copies them into one buffer first (see PIPE_BUFFER_BYTES).
      pump(client, stream, bothEnded, (n) => (bytesIn += n), stream === raw);
      if (fromBuffer !== undefined && stream === raw) pumpFromBuffer(raw, fromBuffer, bothEnded);
      else pump(stream, client, bothEnded, (n) => (bytesOut += n));
    };

    /** Bytes moved: the idle timer sees it, and `onBytes` gets them within BYTES_REPORT_MS. */
    const progress = (): void => {
      moved = true;
      if (report === undefined && opts.onBytes !== undefined) {
        report = setTimeout(reportBytes, BYTES_REPORT_MS);
        report.unref();
      }
    };

    /**
     * src → dst with backpressure and half-close. Per chunk: a count, a flag, the pacer's sum, the write;
     * nothing else (no timer moved, no metric touched: see the idle timer and `reportBytes`). `batch`: a
     * chunk of a full TLS record or more corks dst until the end of this event-loop turn (see
     * BATCH_FROM_BYTES).
     */
    const pump = (
      src: Duplex,
      dst: Duplex,
      ended: () => void,
      count: (n: number) => void,
      batch = false,
    ): void => {
      let corked = false;
      const flush = (): void => {
        corked = false;
        dst.uncork();
      };
      const released = opts.onReleased;
      src.on('data', (chunk: Buffer) => {
        count(chunk.length);
        progress();
        released?.(chunk.length);
        if (batch && !corked && chunk.length >= BATCH_FROM_BYTES) {
          corked = true;
          dst.cork();
          setImmediate(flush);
        }
        // false: dst holds its highWaterMark (PIPE_BUFFER_BYTES); read no more until it drains.
        if (!dst.write(chunk)) src.pause();
      });
      dst.on('drain', () => {
        moved = true;
        if (src.isPaused()) src.resume();
      });
      // FIN from src: finish our writes to dst and send its FIN; dst → src stays open (half-close).
      src.on('end', () => {
        dst.end();
        ended();
      });
    };

    /**
     * upstream → client when the upstream reads into the shared `opts.readBuffer` (`onread`, set up at
     * connect): what `pump` does, with `onUpstreamRead` instead of 'data' and a callback answer of false
     * instead of `pause()` (Node then stops reading the socket; `resume()` starts it again).
     */
    const pumpFromBuffer = (src: Socket, dst: TLSSocket, ended: () => void): void => {
      let stopped = false;
      onUpstreamRead = (n, buf) => {
        if (done) return false;
        bytesOut += n;
        progress();
        // Written at once (nothing pending, not corked), the TLS layer has copied the bytes when write()
        // returns; a chunk that has to wait is kept as it is, so it must not be the shared buffer.
        const now = dst.writableLength === 0 && dst.writableCorked === 0;
        const chunk = now ? buf.subarray(0, n) : Buffer.copyBytesFrom(buf, 0, n);
        // Only a copy is a buffer of its own for the collector to free (the shared one stays).
        if (!now) opts.onReleased?.(n);
        if (dst.write(chunk)) return true;
        stopped = true;
        return false;
      };
      dst.on('drain', () => {
        moved = true;
        if (stopped) {
          stopped = false;
          src.resume();
        }
      });
      src.on('end', () => {
        dst.end();
        ended();
      });
      src.resume();
    };

    const upstreamFailed = (err: unknown): void => {
      const code = errorCode(err);
      // A TLS alert can arrive after `secureConnect`: with TLS 1.3 the server checks the gateway's client
      // certificate after the client considers the handshake done. It is still a TLS failure.
      const reason: CloseReason = TLS_FAILURE.test(code)
        ? 'upstream_tls'
        : connected
          ? 'upstream_reset'
          : 'upstream_unavailable';
      finish(reason, code, connected ? 'client' : 'none');
    };
    const upstreamClosed = (stream: Duplex) => (): void => {
      if (done) return;
      if (connected && stream.readableEnded && stream.writableFinished) {
        if (client.closed) finish('closed', undefined, 'none');
        return;
      }
      if (connected) finish('upstream_reset', 'closed', 'client');
      else finish('upstream_unavailable', 'closed', 'none');
    };

    // Only a TLS client consumes a write at once (see READ_BUFFER_BYTES); only a `tcp://` upstream's reads
    // are the bytes the client gets (a `tls://` one's are TLS records, read by its TLS socket).
    const fromBuffer =
      opts.readBuffer !== undefined && upstream.kind === 'tcp' && client instanceof TLSSocket
        ? client
        : undefined;
    /**
     * The upstream's reads while they go to the shared buffer: set by `pumpFromBuffer`. Never needed before
     * that: the socket is paused from its creation until `start`, so Node does not read it.
     */
    let onUpstreamRead: ((n: number, buf: Buffer) => boolean) | undefined;
    try {
      raw = netConnect({
        host: upstream.host,
        port: upstream.port,
        noDelay: true,
        allowHalfOpen: true,
        ...(fromBuffer !== undefined && opts.readBuffer !== undefined
          ? {
              onread: {
                buffer: opts.readBuffer,
                callback: (n: number, buf: Uint8Array) => onUpstreamRead?.(n, buf as Buffer) ?? false,
              },
            }
          : {}),
      });
      // Not a byte read before `start` (as without the shared buffer, where the bytes wait in the socket).
      if (fromBuffer !== undefined) raw.pause();
    } catch (err) {
      // An invalid port or host string: Node throws synchronously.
      finish('upstream_unavailable', errorCode(err), 'none');
      return;
    }
    const tcp = raw;
    tcp.on('error', upstreamFailed);
    if (upstream.kind === 'tcp') {
      up = tcp;
      tcp.on('close', upstreamClosed(tcp));
    }
    tcp.once('connect', () => {
      if (done) return;
      // The PROXY header is the first byte on the wire, before any TLS record (what HAProxy's
      // send-proxy-v2 does and what a receiver with `proxy_protocol` on a TLS port parses first).
      const next = (): void => {
        if (done) return;
        if (upstream.kind === 'tcp') {
          start(tcp);
          return;
        }
        let secure: TLSSocket;
        try {
          // No SNI for an IP literal (RFC 6066 §3): Node then checks the certificate against `host` as an IP.
          const servername = upstream.servername ?? (isIP(upstream.host) === 0 ? upstream.host : '');
          secure = tlsConnect({
            socket: tcp,
            host: upstream.host,
            servername,
            secureContext: secureContextFor(upstream),
            rejectUnauthorized: true,
          });
          // Inherited from `tcp` already; stated because half-close forwarding depends on it.
          secure.allowHalfOpen = true;
        } catch (err) {
          // Unreadable PEM material (validated at load; never expected here).
          finish('upstream_tls', errorCode(err), 'none');
          return;
        }
        up = secure;
        secure.on('error', upstreamFailed);
        secure.on('close', upstreamClosed(secure));
        secure.once('secureConnect', () => {
          // rejectUnauthorized already failed the handshake on a bad chain or name; belt and braces.
          if (!secure.authorized) {
            finish('upstream_tls', String(secure.authorizationError), 'none');
            return;
          }
          start(secure);
        });
      };
      // A failed write is reported by the socket's 'error' event (upstreamFailed).
      if (header === undefined) next();
      else
        tcp.write(header, (err) => {
          if (err == null) next();
        });
    });
  });
}
