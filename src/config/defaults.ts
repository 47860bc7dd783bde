/**
 * Every default of Portcullis in one place, each with its unit and the reason for its value.
 * The schema (`schema.ts`) applies these; the README's config reference is written from this file.
 */
export const DEFAULTS = {
  /** Refuse plaintext listeners, TLS < 1.2 and non-loopback plaintext upstreams. Safe by default. */
  requireEncryption: true,

  telemetry: {
    /** Strip tracing/telemetry headers in both directions: a gateway in front of a private service must
     * not relay a client's forged trace context (W3C Trace Context §security, threat model #98) nor leak
     * the upstream's tracing identifiers to callers. */
    optOut: true,
    /** Header names stripped when optOut is on; a trailing `*` is a prefix. Sentry (sentry-trace, baggage),
     * W3C (traceparent, tracestate), B3 (b3, x-b3-*), Jaeger (uber-trace-id), Datadog (x-datadog-*),
     * Google Cloud (x-cloud-trace-context), AWS X-Ray (x-amzn-trace-id), New Relic (newrelic).
     * A configured `telemetry.headers` list is added to these, never replaces them. */
    headers: [
      'sentry-trace',
      'baggage',
      'traceparent',
      'tracestate',
      'b3',
      'x-b3-*',
      'uber-trace-id',
      'x-datadog-*',
      'x-cloud-trace-context',
      'x-amzn-trace-id',
      'newrelic',
    ],
    /** Honour a client's `DNT: 1` / `Sec-GPC: 1` as a per-request opt-out even where optOut is off. */
    honorClientSignals: false,
  },

  admin: {
    /** host:port of the admin listener (/metrics, /healthz, /readyz). Loopback: metrics are not public. */
    listen: '127.0.0.1:9090',
    /* No `tls` by default: plaintext on loopback never leaves the machine. Given `admin.tls`, its
     * minVersion and clientCertificate default as a listener's (`tls` below: TLSv1.2, "require"), because
     * /metrics names routes and listeners and POST /cache/purge changes state. */
  },

  /** Worker processes serving the listeners: 1 (this process), a number, or "auto" (one per CPU core,
   * node:cluster, metrics aggregated by the primary). 1 keeps the process model simple for sidecars. */
  workers: 1 as number | 'auto',

  /** Open client connections one listener accepts (per process: each worker of `workers: N` has its own).
   * Past it new connections are closed before the TLS handshake and counted `reason="connection_limit"`.
   * Node holds ~55 KiB per idle TLS connection (bench:soak): 10,000 bounds a listener near 550 MB instead of
   * letting a connection flood exhaust memory or file descriptors (HAProxy `maxconn`, Envoy overload). */
  maxConnections: 10_000,

  log: {
    /** pino level. `info` logs one line per denial and per start/stop event. */
    level: 'info',
    /** One JSON access-log line per request. */
    access: true,
  },

  timeouts: {
    /** ms to complete the TLS handshake (and to send the first byte). Node's own default is 120 s,
     * which lets silent sockets hold file descriptors for two minutes (threat model #5). */
    tlsHandshakeMs: 10_000,
    /** ms from connection (or from the end of the previous response) until a request's headers are
     * complete on HTTP/1.1. Node's http2 server does not enforce headersTimeout on its HTTP/1
     * fallback, so the gateway runs its own timer: slowloris is cut off after this (threat model #101). */
    requestHeadersMs: 10_000,
    /** ms from a request's headers until its whole body has arrived, unless the upstream's response
     * started first (Envoy's `request_timeout` semantics). Past it, a request still waiting for its body
     * gets 408 and its upstream exchange is aborted, freeing the upstream connection: `idleMs` alone
     * lets a client that trickles one byte a minute hold a request, and an upstream socket, forever
     * (R.U.D.Y., threat model #102). 5 minutes is Node's own `requestTimeout`. */
    requestBodyMs: 300_000,
    /** ms an idle keep-alive HTTP/1.1 connection is kept between requests. */
    keepAliveMs: 5_000,
    /** ms without any byte in either direction before a connection or HTTP/2 session is closed;
     * also the idle limit of an established WebSocket tunnel. */
    idleMs: 120_000,
    /** ms to open a connection (TCP + TLS) to the upstream; past it the client gets 504. */
    upstreamConnectMs: 5_000,
    /** ms until the upstream sends its response headers; past it the client gets 504. */
    upstreamResponseMs: 30_000,
    /** ms without a byte of the upstream's response body before the exchange is aborted. */
    upstreamIdleMs: 60_000,
    /* `tunnelMaxMs` has no default: a WebSocket tunnel or a TCP-listener connection may stay open as long
     * as it is used (a Dask worker's connection lives for hours), as with ghostunnel's and Envoy's
     * connection lifetimes, off unless set (threat model #90d). */
    /** ms a SIGTERM waits for in-flight requests before closing connections. */
    shutdownGraceMs: 10_000,
  },

  reload: {
    /** Seconds between two looks at the files the config names (certificates, keys, CAs, CRLs, the config
     * file itself): a change reloads as SIGHUP does, so a certificate renewed in place or a refreshed CRL is
     * served without anyone sending a signal. ghostunnel's `--timed-reload` in spirit; 0 turns it off. */
    checkFilesSeconds: 60,
  },

  http2: {
    /** Streams per HTTP/2 connection. Node's default is 2^32-1 (no cap); Envoy's edge guide says 100. */
    maxConcurrentStreams: 100,
    /** MiB of nghttp2 session memory per connection before new streams are refused (Node default 10). */
    maxSessionMemoryMb: 10,
    /** Bytes of decoded request header list accepted (SETTINGS_MAX_HEADER_LIST_SIZE); 64 KiB. */
    maxHeaderListSize: 65_536,
    /** Bytes of the per-stream flow-control window (Envoy's edge guide: 64 KiB) — bounds memory
     * a slow reader can make the gateway hold per stream. */
    initialWindowSize: 65_535,
  },

  tls: {
    /** Lowest TLS version. Below 1.2 is never allowed under requireEncryption (RFC 8996). */
    minVersion: 'TLSv1.2',
    /** Client certificate policy of a listener: required unless the operator says otherwise. */
    clientCertificate: 'require',
  },

  upstream: {
    /** Keep-alive connections per upstream origin and gateway process. */
    maxConnections: 128,
  },
} as const;

/**
 * TLS 1.2 suites offered: ECDHE key exchange with AEAD only (no RSA key exchange, no CBC, no 3DES/RC4),
 * per threat model #3; TLS 1.3 suites are the standard three.
 */
export const TLS_CIPHERS = [
  'TLS_AES_128_GCM_SHA256',
  'TLS_AES_256_GCM_SHA384',
  'TLS_CHACHA20_POLY1305_SHA256',
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-CHACHA20-POLY1305',
].join(':');
