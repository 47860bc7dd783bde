/**
 * Every Prometheus metric of Portcullis, defined once. Names follow `portcullis_<subsystem>_<name>_<unit>`,
 * `_total` only on counters; label values come from closed sets (listener names, route ids, reason
 * codes, method enum, status class) — never a raw path, host, token or subject.
 */
import { Counter, Gauge, Histogram, collectDefaultMetrics, type Registry } from 'prom-client';

/** Bounded method label: anything else is `OTHER`, so random methods cannot explode cardinality. */
const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS']);
export function methodLabel(method: string | undefined): string {
  return method !== undefined && METHODS.has(method) ? method : 'OTHER';
}

/** `2xx`, `4xx`, ... from a status code. */
export function statusClass(status: number): string {
  return status >= 100 && status < 600 ? `${Math.floor(status / 100)}xx` : 'other';
}

/** Reasons a connection is refused before any HTTP exchange. */
export type ConnectionRejectReason =
  | 'plaintext'
  | 'protocol'
  | 'no_client_cert'
  | 'bad_client_cert'
  | 'revoked'
  | 'acl'
  | 'handshake_timeout'
  | 'headers_timeout';

/** Latency buckets in seconds: 100 µs to 10 s. */
const LATENCY_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** Creates (and registers in `registry`) every metric; one instance per process. */
export function createMetrics(registry: Registry, opts: { processMetrics?: boolean } = {}) {
  if (opts.processMetrics !== false) collectDefaultMetrics({ register: registry, prefix: 'portcullis_' });
  return {
    requests: new Counter({
      name: 'portcullis_http_requests_total',
      help: 'HTTP requests answered, by listener, route id, method and status class.',
      labelNames: ['listener', 'route', 'method', 'status_class'] as const,
      registers: [registry],
    }),
    requestDuration: new Histogram({
      name: 'portcullis_http_request_duration_seconds',
      help: 'Time from request headers to the end of the response, by listener and route id.',
      labelNames: ['listener', 'route'] as const,
      buckets: LATENCY_BUCKETS,
      registers: [registry],
    }),
    upstreamDuration: new Histogram({
      name: 'portcullis_upstream_response_duration_seconds',
      help: 'Time from sending a request upstream to its response headers, by route id.',
      labelNames: ['route'] as const,
      buckets: LATENCY_BUCKETS,
      registers: [registry],
    }),
    denials: new Counter({
      name: 'portcullis_http_denials_total',
      help: 'Requests ended by the gateway itself, by listener and reason code (ERR_*).',
      labelNames: ['listener', 'reason'] as const,
      registers: [registry],
    }),
    upstreamErrors: new Counter({
      name: 'portcullis_upstream_errors_total',
      help: 'Upstream exchanges that failed, by route id and reason code.',
      labelNames: ['route', 'reason'] as const,
      registers: [registry],
    }),
    rejectedConnections: new Counter({
      name: 'portcullis_tls_rejected_connections_total',
      help: 'Connections refused before any request, by listener and reason.',
      labelNames: ['listener', 'reason'] as const,
      registers: [registry],
    }),
    handshakes: new Counter({
      name: 'portcullis_tls_handshakes_total',
      help: 'Completed TLS handshakes, by listener and negotiated protocol (h2, http/1.1).',
      labelNames: ['listener', 'alpn'] as const,
      registers: [registry],
    }),
    activeConnections: new Gauge({
      name: 'portcullis_active_connections',
      help: 'Open client connections, by listener.',
      labelNames: ['listener'] as const,
      registers: [registry],
    }),
    tcpBytes: new Counter({
      name: 'portcullis_tcp_bytes_total',
      help: 'Bytes piped by TCP listeners, by listener and direction (in: client to upstream, out: upstream to client).',
      labelNames: ['listener', 'direction'] as const,
      registers: [registry],
    }),
    tcpConnections: new Counter({
      name: 'portcullis_tcp_connections_total',
      help: 'Piped TCP connections that ended, by listener and close reason (upstream failures included).',
      labelNames: ['listener', 'reason'] as const,
      registers: [registry],
    }),
    tcpConnectionDuration: new Histogram({
      name: 'portcullis_tcp_connection_duration_seconds',
      help: 'Lifetime of piped TCP connections, from the end of the client handshake to the close, by listener.',
      labelNames: ['listener'] as const,
      // Dask comms live for minutes to days: 10 ms to one day.
      buckets: [0.01, 0.1, 1, 10, 60, 300, 1_800, 3_600, 14_400, 86_400],
      registers: [registry],
    }),
    telemetryStripped: new Counter({
      name: 'portcullis_telemetry_headers_stripped_total',
      help: 'Telemetry headers removed by the telemetry opt-out, by direction (request: client to upstream, response: upstream to client).',
      labelNames: ['direction'] as const,
      registers: [registry],
    }),
    certificateExpiry: new Gauge({
      name: 'portcullis_certificate_expiry_timestamp_seconds',
      help: 'notAfter of each configured certificate (Unix seconds), by listener, kind (server, ca, upstream_ca, upstream_client) and position in its PEM bundle. Never the subject.',
      labelNames: ['listener', 'kind', 'index'] as const,
      registers: [registry],
    }),
    crlNextUpdate: new Gauge({
      name: 'portcullis_crl_next_update_timestamp_seconds',
      help: "nextUpdate of each listener's CRL (Unix seconds): past it OpenSSL refuses every client certificate.",
      labelNames: ['listener'] as const,
      registers: [registry],
    }),
  };
}

export type Metrics = ReturnType<typeof createMetrics>;
