/**
 * Per-connection state, computed once at the end of the TLS handshake and read by every request on
 * that connection (HTTP/1.1 keep-alive or all streams of an HTTP/2 session): peer identity, its XFCC
 * rendering, the SNI name and the listener ACL decision. Stored on the TLS socket under a symbol; an
 * HTTP/2 request reaches it through `req.socket`, whose proxy forwards property reads to the socket.
 */
import type { TLSSocket } from 'node:tls';
import { normalizeSerialHex } from '../certs/pki.js';
import type { ClientAcl } from '../identity/acl.js';
import { peerIdentityFromX509, type PeerIdentity } from '../identity/peer.js';
import { assertClientCertificatePurpose } from '../identity/purpose.js';
import { formatXfcc } from '../mutate/xfcc.js';
import type { Logger } from '../observability/logger.js';

const kConn = Symbol('portcullis.connection');

/**
 * Where a connection comes from, as every access-log and refusal line carries it (`clientAddress`,
 * `clientPort`): the address alone cannot tell two connections of one host (or of one NAT) apart, the port
 * matches the line with the client's own logs and a packet capture.
 */
export interface ClientPeer {
  /** The TCP peer address ('' when the socket never had one). */
  readonly clientAddress: string;
  /** The TCP peer port; undefined when the socket never had one (pino then leaves the field out). */
  readonly clientPort: number | undefined;
}

/**
 * The peer of `socket`. Read it while the socket is connected (at accept, or at the end of the handshake):
 * Node caches the answer on the socket, so it stays readable after a destroy, and not before.
 */
export function socketPeer(socket: { readonly remoteAddress?: string | undefined; readonly remotePort?: number | undefined }): ClientPeer {
  return { clientAddress: socket.remoteAddress ?? '', clientPort: socket.remotePort };
}

/** What every request on one connection shares. */
export interface ConnectionState extends ClientPeer {
  /** The verified client certificate's identity, if the peer presented one that verified. */
  readonly identity: PeerIdentity | undefined;
  /** `X-Forwarded-Client-Cert` value for `identity`. */
  readonly xfcc: string | undefined;
  /** Lowercased SNI server name, if the client sent one. */
  readonly servername: string | undefined;
  /** The listener ACL's decision (true when the listener has no ACL). */
  readonly listenerAllowed: boolean;
}

/**
 * Computes the state of a TLS connection whose handshake just completed. Call only if `socket.authorized`
 * or no certificate was presented: an unverified certificate must never become an identity.
 *
 * @throws GatewayError `ERR_IDENTITY_BAD_CLIENT_CERT` when the verified certificate is not a client's (a CA,
 *   a keyUsage or extendedKeyUsage that excludes TLS client authentication: identity/purpose.ts) or cannot
 *   be read exactly. Every listener refuses the connection then, counted as `bad_client_cert`.
 */
export function createConnectionState(socket: TLSSocket, acl: ClientAcl | undefined): ConnectionState {
  let identity: PeerIdentity | undefined;
  if (socket.authorized) {
    // Not getPeerCertificate(): that builds the whole legacy object on every handshake (bench: about a
    // tenth of a handshake's CPU); the X509Certificate wrapper computes only the fields read.
    const cert = socket.getPeerX509Certificate();
    if (cert !== undefined) {
      assertClientCertificatePurpose(cert);
      identity = peerIdentityFromX509(cert);
    }
  }
  const sni = (socket as TLSSocket & { servername?: string | false }).servername;
  return {
    identity,
    xfcc: identity ? formatXfcc(identity) : undefined,
    servername: typeof sni === 'string' && sni !== '' ? sni.toLowerCase() : undefined,
    listenerAllowed: acl === undefined ? true : acl.allows(identity),
    clientAddress: socket.remoteAddress ?? '',
    clientPort: socket.remotePort,
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

/**
 * The open connections of a listener that carry a verified client certificate, so that a reload whose CRL
 * revokes one of them can close it: a TLS session is verified once, at its handshake, and would otherwise
 * outlive the revocation for as long as the client keeps it open (a Dask worker's connection lives for
 * hours). Entries leave at the socket's close.
 */
export interface VerifiedConnections {
  add(socket: TLSSocket, state: ConnectionState): void;
  /** Destroys each open connection whose client certificate's serial is in `serials` (normalized hex), logging
   * each at warn with the client's subject and serial; returns how many it closed. */
  closeRevoked(serials: ReadonlySet<string>): number;
}

export function createVerifiedConnections(
  logger: Pick<Logger, 'warn'>,
  listener: string,
): VerifiedConnections {
  const open = new Map<TLSSocket, ConnectionState>();
  return {
    add(socket, state) {
      if (state.identity === undefined) return;
      open.set(socket, state);
      socket.once('close', () => open.delete(socket));
    },
    closeRevoked(serials) {
      let closed = 0;
      for (const [socket, state] of open) {
        const id = state.identity;
        const serial = id === undefined ? undefined : serialKey(id.serialNumber);
        if (serial === undefined || !serials.has(serial)) continue;
        open.delete(socket);
        socket.destroy();
        closed++;
        logger.warn(
          {
            listener,
            clientSubject: id?.subject,
            clientSerial: id?.serialNumber,
            clientAddress: state.clientAddress,
            clientPort: state.clientPort,
          },
          'connection closed: the new CRL revokes its client certificate',
        );
      }
      return closed;
    },
  };
}

/** A certificate serial as a CRL lists it (certs/pki.ts normalizeSerialHex); undefined when it is not hex. */
function serialKey(serialNumber: string): string | undefined {
  try {
    return normalizeSerialHex(serialNumber);
  } catch {
    return undefined;
  }
}
