/**
 * `maxConnectionsPerClient`: how many connections one client address may hold open on a listener at once.
 * `maxConnections` bounds the listener; without a per-client bound, one host can take every slot (and the
 * TLS handshakes they cost) from all the others. Checked when a connection is accepted, before a byte of it is
 * read. Off unless configured: behind a load balancer or a NAT every client shares one address.
 */
import type { Socket } from 'node:net';

export interface ClientCap {
  /** Counts a new connection from `address`; false (and nothing counted) when it would pass the cap. */
  admit(address: string): boolean;
  /** The connection `admit` counted has closed. */
  release(address: string): void;
  /** A new cap for connections admitted from now on (undefined: off); open ones stay. */
  setMax(max: number | undefined): void;
  /** Whether a cap is set: when it is not, connections are not counted at all (no cost per connection). */
  isOn(): boolean;
}

export function createClientCap(max: number | undefined): ClientCap {
  let cap = max;
  const open = new Map<string, number>();
  return {
    admit(address) {
      const n = open.get(address) ?? 0;
      if (cap !== undefined && n >= cap) return false;
      open.set(address, n + 1);
      return true;
    },
    release(address) {
      const n = open.get(address) ?? 0;
      if (n <= 1) open.delete(address);
      else open.set(address, n - 1);
    },
    setMax(next) {
      cap = next;
    },
    isOn: () => cap !== undefined,
  };
}

/**
 * Admits an accepted `socket` under `cap` (its count is released at the socket's close), or destroys it at
 * once and calls `onRefused` with the client's address. Returns whether it was admitted. With no cap set,
 * admits without counting: a cap set later by a reload counts the connections accepted from then on.
 */
export function admitSocket(
  cap: ClientCap,
  socket: Pick<Socket, 'remoteAddress' | 'destroy' | 'once'>,
  onRefused: (address: string) => void,
): boolean {
  if (!cap.isOn()) return true;
  const address = socket.remoteAddress ?? '';
  if (!cap.admit(address)) {
    socket.destroy();
    onRefused(address);
    return false;
  }
  socket.once('close', () => cap.release(address));
  return true;
}
