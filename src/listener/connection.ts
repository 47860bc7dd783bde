/**
 * Per-connection state, computed once at the end of the TLS handshake and read by every request on
 * that connection (HTTP/1.1 keep-alive or all streams of an HTTP/2 session): peer identity, its XFCC
 * rendering, the SNI name and the listener ACL decision. Stored on the TLS socket under a symbol; an
 * HTTP/2 request reaches it through `req.socket`, whose proxy forwards property reads to the socket.
 */
import type { TLSSocket } from 'node:tls';
import type { ClientAcl } from '../identity/acl.js';
import { peerIdentityFromX509, type PeerIdentity } from '../identity/peer.js';
import { formatXfcc } from '../mutate/xfcc.js';

const kConn = Symbol('portcullis.connection');

/** What every request on one connection shares. */
export interface ConnectionState {
  /** The verified client certificate's identity, if the peer presented one that verified. */
  readonly identity: PeerIdentity | undefined;
  /** `X-Forwarded-Client-Cert` value for `identity`. */
  readonly xfcc: string | undefined;
  /** Lowercased SNI server name, if the client sent one. */
  readonly servername: string | undefined;
  /** The listener ACL's decision (true when the listener has no ACL). */
  readonly listenerAllowed: boolean;
  /** The TCP peer address. */
  readonly clientAddress: string;
}

/** Computes the state of a TLS connection whose handshake just completed. Call only if `socket.authorized`
 * or no certificate was presented: an unverified certificate must never become an identity. */
export function createConnectionState(socket: TLSSocket, acl: ClientAcl | undefined): ConnectionState {
  let identity: PeerIdentity | undefined;
  if (socket.authorized) {
    // Not getPeerCertificate(): that builds the whole legacy object on every handshake (bench: about a
    // tenth of a handshake's CPU); the X509Certificate wrapper computes only the fields read.
    const cert = socket.getPeerX509Certificate();
    if (cert !== undefined) identity = peerIdentityFromX509(cert);
  }
  const sni = (socket as TLSSocket & { servername?: string | false }).servername;
  return {
    identity,
    xfcc: identity ? formatXfcc(identity) : undefined,
    servername: typeof sni === 'string' && sni !== '' ? sni.toLowerCase() : undefined,
    listenerAllowed: acl === undefined ? true : acl.allows(identity),
    clientAddress: socket.remoteAddress ?? '',
  };
}

/** Attaches the state to its socket. */
export function attachConnectionState(socket: object, state: ConnectionState): void {
  (socket as Record<symbol, unknown>)[kConn] = state;
}

/** The state of the connection `socket` (a TLS socket, or the HTTP/2 proxy of one); undefined on a
 * plaintext listener. */
export function connectionStateOf(socket: object | null | undefined): ConnectionState | undefined {
  if (socket === null || socket === undefined) return undefined;
  return (socket as Record<symbol, ConnectionState | undefined>)[kConn];
}
