/**
 * Where a route sends its requests: an HTTP(S) upstream, or an endpoint the gateway answers itself
 * (src/endpoints/: never forwarded). Compiled by the config loader; the route table carries it.
 */

/** An HTTP or HTTPS upstream, resolved at load. */
export interface HttpUpstream {
  readonly kind: 'http';
  /** `http://host:port` or `https://host:port`, no path. */
  readonly origin: string;
  readonly protocol: 'http:' | 'https:';
  readonly hostname: string;
  readonly port: number;
  readonly loopback: boolean;
  readonly tls?: {
    readonly ca?: Buffer;
    readonly cert?: Buffer;
    readonly key?: Buffer;
    readonly servername?: string;
  };
}

/** An endpoint of the gateway's own (`upstream: builtin:<name>`), answered by its handler in src/endpoints/. */
export interface GatewayEndpointTarget {
  readonly kind: 'gateway';
  readonly endpoint: string;
}

/** What a route's `upstream` resolves to. */
export type UpstreamSpec = HttpUpstream | GatewayEndpointTarget;
