/**
 * The config file's schema (zod, strict: an unknown key is an error, never ignored — a typo in a
 * security key must not silently fall back to a default). This validates shape and types only; files,
 * keys and cross-field rules are checked by the loader (`load.ts`, `compile.ts` and its steps), which turns the
 * result into the runtime config.
 *
 * Custom messages here are the "what was expected" part of a `ConfigError` (`<key path>: got
 * <value>; expected <message>`), so they never start with "expected"; issues without one get their text
 * from `describeIssue` in schema-errors.ts.
 */
import { z } from 'zod';
import { authProvidersSchema } from '../authn/provider-config.js';
import { routeAuthSchema } from '../authz/policy.js';
import { DEFAULTS } from './defaults.js';
import { storeSchema } from './store.js';

/** Milliseconds as a plain number: `"5m"` or `"5s"` is refused, never guessed. */
const positiveMs = z
  .number({ error: 'a whole number of milliseconds, e.g. 5000 (no unit suffix)' })
  .int('a whole number of milliseconds')
  .positive('a number of milliseconds > 0')
  .max(86_400_000, 'at most 86400000 ms (one day)');
const nonEmpty = z.string().min(1);

/** `host:port` or `[v6]:port`. Validated further (port range, host syntax) in addresses.ts. */
const listenAddress = z
  .string({ error: 'a "host:port" string, e.g. 127.0.0.1:8443 or [::1]:8443' })
  .regex(/^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/, 'host:port, e.g. 127.0.0.1:8443 or [::1]:8443');

const timeouts = z.strictObject({
  tlsHandshakeMs: positiveMs.default(DEFAULTS.timeouts.tlsHandshakeMs),
  requestHeadersMs: positiveMs.default(DEFAULTS.timeouts.requestHeadersMs),
  requestBodyMs: positiveMs.default(DEFAULTS.timeouts.requestBodyMs),
  keepAliveMs: positiveMs.default(DEFAULTS.timeouts.keepAliveMs),
  idleMs: positiveMs.default(DEFAULTS.timeouts.idleMs),
  upstreamConnectMs: positiveMs.default(DEFAULTS.timeouts.upstreamConnectMs),
  upstreamResponseMs: positiveMs.default(DEFAULTS.timeouts.upstreamResponseMs),
  upstreamIdleMs: positiveMs.default(DEFAULTS.timeouts.upstreamIdleMs),
  /** Longest life of a WebSocket tunnel or a TCP-listener connection; unset: no limit (see defaults.ts). */
  tunnelMaxMs: positiveMs.optional(),
  shutdownGraceMs: positiveMs.default(DEFAULTS.timeouts.shutdownGraceMs),
});

const http2 = z.strictObject({
  maxConcurrentStreams: z.number().int().min(1).max(10_000).default(DEFAULTS.http2.maxConcurrentStreams),
  maxSessionMemoryMb: z.number().int().min(1).max(1024).default(DEFAULTS.http2.maxSessionMemoryMb),
  maxHeaderListSize: z.number().int().min(1024).max(1_048_576).default(DEFAULTS.http2.maxHeaderListSize),
  initialWindowSize: z.number().int().min(1024).max(2_147_483_647).default(DEFAULTS.http2.initialWindowSize),
});

/** TLS 1.0 and 1.1 are refused outright (RFC 8996), whatever requireEncryption says. */
const tlsVersion = z.enum(['TLSv1.2', 'TLSv1.3'], {
  error: '"TLSv1.2" or "TLSv1.3" (TLS 1.0 and 1.1 are deprecated by RFC 8996 and refused)',
});

const listenerTls = z.strictObject({
  cert: nonEmpty,
  key: nonEmpty,
  minVersion: tlsVersion.default(DEFAULTS.tls.minVersion),
  clientCertificate: z.enum(['require', 'optional', 'none']).default(DEFAULTS.tls.clientCertificate),
  // An empty `ca` makes Node trust its ~140 bundled public roots (threat model #26): never accepted.
  clientCa: z
    .string()
    .min(1, 'the path of a CA bundle file (an empty clientCa would make Node trust its public roots)')
    .optional(),
  crl: nonEmpty.optional(),
});

/** An upstream written as a mapping: its URL and the TLS options to reach it (for a TLS scheme only). */
const upstreamMapping = z.strictObject({
  url: nonEmpty,
  ca: nonEmpty.optional(),
  cert: nonEmpty.optional(),
  key: nonEmpty.optional(),
  servername: nonEmpty.optional(),
});

/** An upstream: `http://`, `https://` or `builtin:echo` as a string, or an object for TLS options. */
const upstream = z.union(
  [nonEmpty, upstreamMapping],
  {
    error:
      'an upstream URL string (http://127.0.0.1:8787, https://host:port, builtin:echo) or a mapping with url and TLS options',
  },
);

const allowClients = z.array(z.string());

/**
 * The names clients use to reach a listener (DNS names or IP addresses; checked in tls.ts): the server
 * certificate should cover one of them, else `check` and `start` warn. Absent: the listen host, when it is
 * a DNS name.
 */
const serverNames = z.array(nonEmpty).min(1, 'at least one name (or leave the key out)').max(100);

const route = z.strictObject({
  id: z
    .string()
    .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/, 'a route id of letters, digits, . _ - (max 64)')
    .optional(),
  match: z.strictObject({
    host: nonEmpty.optional(),
    pathPrefix: z.string().startsWith('/', 'a path starting with /').default('/'),
  }),
  upstream,
  allowClients: allowClients.optional(),
  /** The methods this route forwards (checked in listeners.ts: authz/methods.ts); absent: every method but CONNECT and TRACE. */
  methods: z.array(z.string()).optional(),
  /** Bearer authentication and policy (providers from `authProviders`, scopes, claims). Absent: no token needed. */
  auth: routeAuthSchema.optional(),
  /** Overrides the top-level `telemetry.optOut` for this route. */
  telemetry: z.strictObject({ optOut: z.boolean() }).optional(),
});

const listenerName = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/, 'a name of letters, digits, . _ - (max 64)');

/** `protocol: http` (the default): HTTP/1.1 + HTTP/2 over TLS, routed. */
const httpListener = z.strictObject({
  name: listenerName,
  listen: listenAddress,
  protocol: z.literal('http').default('http'),
  tls: listenerTls.optional(),
  serverNames: serverNames.optional(),
  /** With requireEncryption: false only. Named so that nobody turns it on by accident. */
  plaintext: z.literal(true, { error: 'true (or leave the key out: TLS is the default)' }).optional(),
  allowClients: allowClients.optional(),
  /** Open client connections this listener accepts (per process); more are closed before the handshake. */
  maxConnections: z.int().min(1).max(1_000_000).default(DEFAULTS.maxConnections),
  /** Open connections one client address may hold (per process); off unless set. */
  maxConnectionsPerClient: z.int().min(1).max(1_000_000).optional(),
  routes: z.array(route).min(1, 'at least one route (a listener without routes would deny everything)'),
});

/** A TCP upstream: `tcp://host:port` / `tls://host:port`, or a mapping with url and TLS options (tls:// only). */
const tcpUpstream = z.union(
  [nonEmpty, upstreamMapping],
  {
    error: 'an upstream URL string (tcp://127.0.0.1:8786, tls://host:port) or a mapping with url and TLS options',
  },
);

/**
 * `protocol: tcp`: TLS in, raw bytes piped to one upstream (listener/tcp-listener.ts). Always TLS (no
 * `plaintext`), no routes: the ACL is the listener's `allowClients`.
 */
const tcpListener = z.strictObject({
  name: listenerName,
  listen: listenAddress,
  protocol: z.literal('tcp'),
  tls: listenerTls,
  serverNames: serverNames.optional(),
  allowClients: allowClients.optional(),
  /** Open client connections this listener accepts (per process); more are closed before the handshake. */
  maxConnections: z.int().min(1).max(1_000_000).default(DEFAULTS.maxConnections),
  /** Open connections one client address may hold (per process); off unless set. */
  maxConnectionsPerClient: z.int().min(1).max(1_000_000).optional(),
  upstream: tcpUpstream,
  /** Send a PROXY protocol v2 header with the client's address to the upstream first. */
  proxyProtocol: z.literal('v2', { error: '"v2" (or leave the key out: no PROXY header)' }).optional(),
});

/** A route of a decision listener: an http route without an upstream (a decision never forwards). */
const decisionRoute = route.omit({ upstream: true, telemetry: true });

/**
 * `protocol: decision`: answers the auth subrequests of a proxy in front (nginx `auth_request`, Caddy
 * `forward_auth`, Traefik `forwardAuth`) instead of forwarding (listener/decision-handler.ts). Plaintext on
 * a loopback address or a Unix socket only (checked in listeners.ts): whoever can connect is the proxy it
 * believes.
 */
const decisionListener = z.strictObject({
  name: listenerName,
  /** A loopback `host:port`, or `unix:/run/portcullis/decide.sock` (checked in listeners.ts). */
  listen: z
    .string({ error: 'a loopback "host:port" (127.0.0.1:4180) or "unix:/absolute/path.sock"' })
    .regex(
      /^(?:unix:\/[^\0]+|(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):\d{1,5})$/,
      'a loopback host:port (127.0.0.1:4180) or unix:/absolute/path.sock',
    ),
  protocol: z.literal('decision'),
  /** Which headers describe the original request (X-Original-* for nginx and ingress-nginx, X-Forwarded-* for caddy/traefik). */
  from: z.enum(['nginx', 'ingress-nginx', 'caddy', 'traefik'], { error: '"nginx", "ingress-nginx", "caddy" or "traefik"' }),
  /** The header the proxy puts the client's verified certificate in (URL-escaped PEM, or base64 DER). */
  clientCertificateHeader: z
    .string()
    .regex(/^[A-Za-z0-9-]{1,64}$/, 'a header name of letters, digits and - (e.g. X-SSL-Client-Cert)')
    .optional(),
  /** The CA bundle a forwarded client certificate must be issued by (with clientCertificateHeader). */
  clientCa: z.string().min(1, 'the path of a CA bundle file').optional(),
  /** The CRLs of clientCa (one per CA); a forwarded certificate they revoke is denied. */
  crl: nonEmpty.optional(),
  allowClients: allowClients.optional(),
  maxConnections: z.int().min(1).max(1_000_000).default(DEFAULTS.maxConnections),
  maxConnectionsPerClient: z.int().min(1).max(1_000_000).optional(),
  routes: z.array(decisionRoute).min(1, 'at least one route (a decision listener without routes would deny everything)'),
});

/**
 * A listener: a union on `protocol` (absent means `http`). Errors are reported from the branch the value's
 * `protocol` picks (schema-errors.ts issueToErrors / knownKeysAt), never as a bare "invalid union".
 */
const listener = z.union([httpListener, tcpListener, decisionListener]);

/** The whole config file. */
export const configSchema = z.strictObject({
  requireEncryption: z.boolean().default(DEFAULTS.requireEncryption),
  /**
   * The admin listener (/metrics /healthz /readyz, POST /cache/purge). `tls` has the shape and checks of a
   * listener's `tls` (same resolver: tls.ts); `allowClients` needs client certificates. Loopback and
   * plaintext by default; off loopback under requireEncryption, `tls` is required (admin.ts).
   */
  admin: z
    .strictObject({
      listen: listenAddress.default(DEFAULTS.admin.listen),
      enabled: z.boolean().default(true),
      tls: listenerTls.optional(),
      serverNames: serverNames.optional(),
      allowClients: allowClients.optional(),
    })
    .default({ listen: DEFAULTS.admin.listen, enabled: true }),
  workers: z
    .union([z.literal('auto'), z.int().min(1).max(64)], { error: 'a number of worker processes from 1 to 64, or "auto" (one per CPU core)' })
    .default(DEFAULTS.workers),
  log: z
    .strictObject({
      level: z
        .enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'])
        .default(DEFAULTS.log.level),
      access: z.boolean().default(DEFAULTS.log.access),
    })
    .default({ level: DEFAULTS.log.level, access: DEFAULTS.log.access }),
  /**
   * Telemetry header stripping. `headers` adds names to the default list (DEFAULTS.telemetry.headers);
   * names are checked and compiled in compile.ts (mutate/telemetry.ts) (a `*` only at the end, as a prefix).
   */
  telemetry: z
    .strictObject({
      optOut: z.boolean().default(DEFAULTS.telemetry.optOut),
      headers: z.array(z.string()).default([]),
      honorClientSignals: z.boolean().default(DEFAULTS.telemetry.honorClientSignals),
    })
    .default({ optOut: DEFAULTS.telemetry.optOut, headers: [], honorClientSignals: DEFAULTS.telemetry.honorClientSignals }),
  timeouts: timeouts.default(timeouts.parse({})),
  http2: http2.default(http2.parse({})),
  reload: z
    .strictObject({
      checkFilesSeconds: z
        .number({ error: 'a whole number of seconds, 0 to 86400 (0: only SIGHUP reloads)' })
        .int('a whole number of seconds')
        .min(0, '0 (off) or more seconds')
        .max(86_400, 'at most 86400 seconds (one day)')
        .default(DEFAULTS.reload.checkFilesSeconds),
    })
    .default({ checkFilesSeconds: DEFAULTS.reload.checkFilesSeconds }),
  /** Bearer token providers by name (jwt, introspection, static); routes reference them in `auth.providers`. */
  authProviders: authProvidersSchema.default({}),
  /** Where sessions, token caches and revocations live (store.ts): absent = this process's memory. */
  store: storeSchema.optional(),
  listeners: z.array(listener).min(1, 'at least one listener'),
});

/** The config as written in the file, after defaults. */
export type ConfigFile = z.infer<typeof configSchema>;
export type ListenerFile = z.infer<typeof listener>;
export type HttpListenerFile = z.infer<typeof httpListener>;
export type TcpListenerFile = z.infer<typeof tcpListener>;
export type DecisionListenerFile = z.infer<typeof decisionListener>;
export type TcpUpstreamFile = z.infer<typeof tcpUpstream>;
/** A `tls` section as written: a listener's or `admin.tls`. */
export type ListenerTlsFile = z.infer<typeof listenerTls>;
export type AdminFile = ConfigFile['admin'];
export type RouteFile = z.infer<typeof route>;
export type DecisionRouteFile = z.infer<typeof decisionRoute>;
export type UpstreamFile = z.infer<typeof upstream>;
export type RouteAuthFile = NonNullable<RouteFile['auth']>;
export type TimeoutsConfig = z.infer<typeof timeouts>;
export type Http2Config = z.infer<typeof http2>;
