/**
 * The request context: what the stages of one HTTP request (or WebSocket upgrade) have established so far.
 * Created by the listener's adapter (listener/http-handler.ts), filled stage by stage (pipeline/http-stages.ts),
 * read at the end by the terminal (forward, tunnel, endpoint) and by the access log.
 */
import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';
import type { Credential } from '../authn/credential.js';
import type { Principal } from '../authn/principal.js';
import type { ClientPeer, ConnectionState } from '../listener/connection.js';
import type { ResolvedRequest } from '../listener/request-form.js';
import type { ScannedHeaders } from '../mutate/request-headers.js';
import type { ClientRequest } from '../proxy/types.js';
import type { RouteRuntime } from './route-runtime.js';

/**
 * What the stages read of a request: its line and its headers. A node request is one; so is the original
 * request a proxy describes to a decision listener (listener/decision-request.ts), which never reached
 * this process.
 */
export interface RequestView {
  readonly method?: string | undefined;
  readonly url?: string | undefined;
  readonly rawHeaders: readonly string[];
  readonly headers: IncomingHttpHeaders;
}

/** The context of a request; `R` is what its adapter knows the request to be (a node request by default). */
export interface RequestContext<R extends RequestView = ClientRequest | IncomingMessage> {
  readonly req: R;
  readonly isH2: boolean;
  /** A WebSocket upgrade (HTTP/1.1 `upgrade` event), not a request with a response object. */
  readonly upgrade: boolean;
  /** The client sent `Expect: 100-continue`: the terminal answers `100` only after every stage passed. */
  readonly expectContinue: boolean;
  /** The TLS connection's identity, SNI and listener-ACL decision; undefined on a plaintext listener. */
  readonly conn: ConnectionState | undefined;
  /** Who sent it: the connection's peer (read once at its handshake), or the socket's on a plaintext listener,
   * read when the request starts (a client that leaves takes its address with it). */
  readonly peer: ClientPeer;
  /** hrtime at arrival, for the duration metrics and the access log. */
  readonly started: bigint;

  /** The checked form and the route (stage `form`). */
  target?: ResolvedRequest;
  /** The route's runtime (stage `form`). */
  rt?: RouteRuntime;
  /** Normalized path once the target was checked (else the access log shows the raw one). */
  path?: string;
  /** What is forwarded: the normalized path and query, without a query token. */
  forwardPath?: string;
  /** The credential presented (stage `credential`, routes with `auth`). */
  credential?: Credential;
  /** The upstream request headers (stage `headers`). */
  headers?: ScannedHeaders;
  requestId?: string;
  /** The authenticated caller (stage `authenticate`). */
  principal?: Principal;
  /** First 12 hex digits of the credential's hash: the log handle of a token. */
  hashPrefix?: string;
  /** The provider that vouched for, or refused, the credential. */
  provider?: string;
  /** The route's required scopes, for the `scope` of a 403 challenge. */
  scope?: string;
  /** `Sec-WebSocket-Key` of a checked upgrade. */
  websocketKey?: string;
}
