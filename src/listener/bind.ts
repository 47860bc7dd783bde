/** Binding a listening socket, shared by the data listeners and the admin listener. */
import type { Server } from 'node:net';
import type { ListenAddress } from '../config/runtime.js';
import { ConfigError } from '../errors.js';
import { chmodSync } from 'node:fs';
import { unixSocketPath } from '../config/addresses.js';
import { socketPeer, type ClientPeer } from './connection.js';

/** Binds `server` to the listener's address; a failure (EADDRINUSE, EACCES) is a ConfigError naming
 * `<keyPath>.listen`, so start-up fails before anything half-listens. Shared by every listener kind. */
export function bindListener(
  server: Server,
  listener: { readonly keyPath: string; readonly address: ListenAddress },
): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException): void => {
      reject(
        new ConfigError(
          `${listener.keyPath}.listen`,
          unixSocketPath(listener.address) !== undefined
            ? listener.address.host
            : `${listener.address.host}:${listener.address.port}`,
          `an address this process can bind (${err.code ?? err.message})`,
        ),
      );
    };
    server.once('error', onError);
    // Not `exclusive`: in a cluster worker (`workers` > 1) the listening socket is the primary's, shared by
    // every worker (src/cluster/); an exclusive bind would make the second worker fail with EADDRINUSE.
    // Outside a cluster the flag changes nothing.
    const path = unixSocketPath(listener.address);
    const onListening = (): void => {
      server.off('error', onError);
      // Owner and group may connect (put the proxy's user in the gateway's group), nobody else.
      if (path !== undefined) {
        try {
          chmodSync(path, 0o660);
        } catch (err) {
          onError(err as NodeJS.ErrnoException);
          return;
        }
      }
      resolve();
    };
    // A Unix socket path left by a process that died is not removed here (it could be another's live
    // socket): the bind fails with EADDRINUSE naming the key. Node removes it at a clean close.
    if (path !== undefined) server.listen({ path }, onListening);
    else server.listen({ host: listener.address.host, port: listener.address.port }, onListening);
  });
}

/**
 * Caps the open connections of a listener's front server at `max` (per process). Past it Node closes a new
 * connection as soon as it is accepted, before a byte of it is read (no TLS handshake is paid for it), and
 * emits `drop`; `onDrop` counts and logs it. `setMax` changes the cap for connections from now on (reload).
 */
export function capConnections(
  server: Server,
  max: number,
  onDrop: (peer: ClientPeer) => void,
): { setMax(n: number): void } {
  server.maxConnections = max;
  // 'drop' (Node ≥ 18.6) is missing from @types/node's Server events: the string overload takes it. Its
  // argument describes the dropped connection (remoteAddress, remotePort, ...).
  server.on('drop', (data?: { remoteAddress?: string; remotePort?: number }) => onDrop(socketPeer(data ?? {})));
  return {
    setMax(n: number): void {
      server.maxConnections = n;
    },
  };
}
