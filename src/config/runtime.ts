/**
 * The runtime config: what the loader makes of a config file, and what every stage is built from. One
 * immutable value (deep-frozen at load): a reload makes a new one and swaps it in whole.
 *
 * Types only. The stages' compiled values (route table, ACLs, policies, upstreams) are named by their own
 * types; this module composes them.
 */
import type { SecureContextOptions } from 'node:tls';
import type { AuthProviderConfig } from '../authn/provider-config.js';
import type { RoutePolicy } from '../authz/policy.js';
import type { RouteTable } from '../authz/routes.js';
import type { ClientAcl } from '../identity/acl.js';
import type { TelemetryMatcher } from '../mutate/telemetry.js';
import type { TcpUpstream } from '../proxy/tcp-pipe.js';
import type { ConfigFile, Http2Config, TimeoutsConfig } from './schema.js';
import type { StoreRuntimeConfig } from './store.js';

/** host + port to bind. */
export interface ListenAddress {
  readonly host: string;
  readonly port: number;
}

/** What the gateway knows about one certificate it serves or trusts (for expiry checks and metrics). */
export interface CertInfo {
  /** What the certificate is for; a metric label (closed set). */
  readonly kind: 'server' | 'ca' | 'upstream_ca' | 'upstream_client';
  /** Position in its PEM bundle (0 = first), a metric label instead of the subject. */
  readonly index: number;
  readonly keyPath: string;
  readonly file: string;
  readonly subject: string;
  readonly validToMs: number;
}

/** TLS settings of a listener, ready for `http2.createSecureServer`. */
export interface ListenerTls {
  readonly clientCertificate: 'require' | 'optional' | 'none';
  readonly options: SecureContextOptions & {
    readonly requestCert: boolean;
    readonly rejectUnauthorized: boolean;
  };
  readonly certificates: readonly CertInfo[];
  /**
   * Each CRL of `tls.crl` (one per client CA, certs/crl.ts): its position in the file, the metric label,
   * and its nextUpdate (ms since the epoch) when it carries one.
   */
  readonly crls?: readonly { readonly index: number; readonly nextUpdateMs: number | undefined }[];
  /**
   * The serial numbers the CRLs of `tls.crl` revoke, all of them (uppercase hex without leading zero bytes,
   * certs/pki.ts `normalizeSerialHex`): a reload closes the open connections of these clients (app.ts).
   */
  readonly revokedSerials?: readonly string[];
  /**
   * The names clients use to reach the listener (`serverNames`, or the listen host when it is a DNS name),
   * lowercased; empty when there is nothing to check the certificate against.
   */
  readonly serverNames?: readonly string[];
  /** True when {@link serverNames} is not empty and the server certificate's SANs cover none of them. */
  readonly serverNameMismatch?: boolean;
}

/**
 * A route's Bearer authentication, compiled at load. The providers themselves are runtime objects the app
 * builds from {@link RuntimeConfig.authProviders}; this holds their names, in the order the route lists them.
 */
export interface RouteAuth {
  /** `listeners[i].routes[j].auth`, for logs. */
  readonly keyPath: string;
  /** Names from `authProviders`, tried in this order (authn/chain.ts). */
  readonly providers: readonly string[];
  /** The `type: oidc` provider browsers log in with (`auth.login`); undefined: no browser login. */
  readonly login?: string;
  /** Scopes and claims, checked on every request (authz/policy.ts). */
  readonly policy: RoutePolicy;
  /** RFC 6750 §2.3 `?access_token=` accepted (and stripped before forwarding). Off by default. */
  readonly allowQueryToken: boolean;
  /** Forward the client's Authorization header upstream. Off by default: the gateway removes it. */
  readonly forwardToken: boolean;
  /** Introspection only: serve a cached answer this long past freshness while the IdP is down (0 = never). */
  readonly staleIfErrorSeconds: number;
}

/** One `protocol: http` listener, fully resolved. */
export interface HttpRuntimeListener {
  readonly name: string;
  readonly keyPath: string;
  readonly address: ListenAddress;
  readonly protocol: 'http';
  /** undefined only for an explicit `plaintext: true` listener with requireEncryption off. */
  readonly tls: ListenerTls | undefined;
  /** Listener-level allow-list; undefined means any certificate the CA vouches for. */
  readonly acl: ClientAcl | undefined;
  readonly routes: RouteTable;
  /** Open client connections accepted at once (`maxConnections`); more are closed before the handshake. */
  readonly maxConnections: number;
  /** Open connections one client address may hold (`maxConnectionsPerClient`); undefined: no such cap. */
  readonly maxConnectionsPerClient: number | undefined;
  /** Route id → its Bearer authentication; a route without `auth` has no entry (no token needed). */
  readonly routeAuth: Readonly<Record<string, RouteAuth>>;
  /** Route id → its `telemetry.optOut` override; a route without one has no entry (the top level decides). */
  readonly routeTelemetryOptOut?: Readonly<Record<string, boolean>>;
  /** Certificates of the routes' upstream TLS mappings (`ca`, `cert`), for expiry metrics. */
  readonly upstreamCertificates?: readonly CertInfo[];
}

/**
 * One `protocol: tcp` listener, fully resolved: what listener/tcp-listener.ts `createTcpListener` takes,
 * its upstream and PROXY protocol settings included. Always TLS; no routes.
 */
export interface TcpRuntimeListener {
  readonly protocol: 'tcp';
  readonly name: string;
  readonly keyPath: string;
  readonly address: ListenAddress;
  readonly tls: ListenerTls;
  /** `allowClients`; undefined means any certificate the CA vouches for. */
  readonly acl: ClientAcl | undefined;
  readonly upstream: TcpUpstream;
  /** `v2`: a PROXY protocol v2 header with the client's address goes to the upstream first. */
  readonly proxyProtocol: 'v2' | undefined;
  /** Open client connections accepted at once (`maxConnections`); more are closed before the handshake. */
  readonly maxConnections: number;
  /** Open connections one client address may hold (`maxConnectionsPerClient`); undefined: no such cap. */
  readonly maxConnectionsPerClient: number | undefined;
  /** Certificates of the upstream TLS mapping (`ca`, `cert`), for expiry metrics. */
  readonly upstreamCertificates?: readonly CertInfo[];
}

/**
 * How a decision listener checks a client certificate the proxy forwards (`clientCertificateHeader`): the
 * header, the CA bundle it must be issued by and the serials its CRLs revoke. Held as PEM text: the
 * handler parses it once when it is built (listener/decision-handler.ts).
 */
export interface ForwardedCertificateTrust {
  /** The header name, lowercased. */
  readonly header: string;
  /** `clientCa`, PEM text. */
  readonly caPem: string;
  /** The serials `crl` revokes, normalized hex (certs/pki.ts `normalizeSerialHex`); empty without a CRL. */
  readonly revokedSerials: readonly string[];
  /** The earliest nextUpdate of the CRLs (ms since the epoch): past it, every forwarded certificate is
   * denied, as OpenSSL refuses every client of a TLS listener whose CRL expired. */
  readonly crlNextUpdateMs: number | undefined;
}

/**
 * One `protocol: decision` listener, fully resolved: it answers a proxy's auth subrequests
 * (listener/decision-handler.ts) from the same route table, authentication and authorization as an http
 * listener; the fields it shares with {@link HttpRuntimeListener} mean the same (its `acl` applies to the
 * forwarded client certificate; its routes have no upstream). Plaintext on loopback only.
 */
export interface DecisionRuntimeListener extends Omit<HttpRuntimeListener, 'protocol' | 'tls'> {
  readonly protocol: 'decision';
  /** Always undefined: the proxy connects over loopback (the field is there for the code it shares). */
  readonly tls: undefined;
  /** Which headers describe the original request. */
  readonly from: 'nginx' | 'ingress-nginx' | 'caddy' | 'traefik';
  /** Undefined: a certificate header is not read (and is removed from the original request's view). */
  readonly forwardedCertificate: ForwardedCertificateTrust | undefined;
}

/** What the route pipeline (stages, route runtimes, login endpoints) reads of a listener with routes. */
export type RoutedListener = Pick<
  HttpRuntimeListener,
  'name' | 'keyPath' | 'tls' | 'acl' | 'routes' | 'routeAuth' | 'routeTelemetryOptOut'
>;

/**
 * The admin listener, resolved: what admin/server.ts `startAdminServer` takes. Plaintext HTTP when `tls` is
 * undefined (loopback, or requireEncryption off); HTTPS with the same secure-context options as a data
 * listener otherwise.
 */
export interface AdminRuntimeConfig {
  readonly enabled: boolean;
  /** Always `admin`: a bind failure is reported at `admin.listen`. */
  readonly keyPath: 'admin';
  readonly address: ListenAddress;
  /** `admin.tls`, resolved exactly like a listener's `tls` (certificates labelled for expiry metrics). */
  readonly tls: ListenerTls | undefined;
  /** `admin.allowClients`; undefined means any client that passed the TLS handshake. */
  readonly acl: ClientAcl | undefined;
}

/** One listener, fully resolved: narrow on `protocol`. */
export type RuntimeListener = HttpRuntimeListener | TcpRuntimeListener | DecisionRuntimeListener;

/** The running configuration: one immutable value made at load. */
export interface RuntimeConfig {
  readonly source: string;
  readonly requireEncryption: boolean;
  readonly admin: AdminRuntimeConfig;
  readonly log: ConfigFile['log'];
  /** Worker processes: 1 serves in this process; more (or "auto") runs a node:cluster primary. */
  readonly workers: number | 'auto';
  readonly timeouts: TimeoutsConfig;
  readonly http2: Http2Config;
  /** `reload`: how often the files below are looked at for a change (0: never; SIGHUP only). */
  readonly reload: { readonly checkFilesSeconds: number };
  /**
   * Every file this config was made from, by absolute path, with the SHA-256 (hex) of the content that was
   * read: the config file, certificates, keys, CAs, CRLs, JWKS, token and secret files. config/watch.ts
   * compares them with the files as they are now.
   */
  readonly files: Readonly<Record<string, string>>;
  /** Telemetry header stripping: the default list plus `telemetry.headers`, compiled. */
  readonly telemetry: {
    readonly optOut: boolean;
    readonly honorClientSignals: boolean;
    readonly matcher: TelemetryMatcher;
  };
  readonly listeners: readonly RuntimeListener[];
  /**
   * `authProviders` as validated, with their file paths (`jwksFile`, `tokensFile`, `clientSecretFile`)
   * resolved against the config file's folder. Plain data: the app builds the providers from it.
   */
  readonly authProviders: Readonly<Record<string, AuthProviderConfig>>;
  /** `store`: memory (this process) or Redis (shared by every replica), resolved with its files read. */
  readonly store: StoreRuntimeConfig;
  /** Non-fatal findings for the start-up log (e.g. a plaintext listener). */
  readonly warnings: readonly string[];
}
