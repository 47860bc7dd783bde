/**
 * The one shape the app sees of a listener, whatever it serves: an HTTP listener (http-listener.ts), a TCP
 * listener (tcp-listener.ts) or the admin listener (admin/server.ts). Each is made unbound, bound by `start`,
 * moved to a reloaded config by `update`, and drained at shutdown; behind it, each accepts through the same
 * front door (front-door.ts). The app holds a list of them and never asks which kind one is: what differs per
 * kind is in the listener itself and in the table of kinds (listener-types.ts).
 */
import type { AddressInfo } from 'node:net';
import type { ListenerTls, RuntimeConfig, RuntimeListener } from '../config/runtime.js';
import type { HttpHandler } from './http-handler.js';

/**
 * What a listener serves with, made by the app from one config (at start and at every reload). A listener
 * reads its own block of `config` by name: a reload changes neither the names, their order nor a listener's
 * protocol (app.ts `restartNeeded` refuses it).
 */
export interface ListenerRuntime {
  readonly config: RuntimeConfig;
  /** The request handler the app built from `config` for each HTTP listener, by listener name. */
  readonly handlers: ReadonlyMap<string, HttpHandler>;
  /**
   * The TLS session ticket keys, as of now, of a secure context made from `tls` (listener/ticket-keys.ts):
   * every worker of a cluster derives the same ones from the same files.
   */
  readonly ticketKeys: (tls: ListenerTls) => Buffer;
}

/** A listener: made unbound, bound once by `start`, drained or closed once. */
export interface Listener {
  /** `listeners[].name`, or `admin`: the `listener` label of its metrics and log lines. */
  readonly name: string;
  /**
   * Binds the listener's address and starts accepting. Rejects with a ConfigError naming `<keyPath>.listen`
   * when the address cannot be bound; after that, nothing it does throws.
   */
  start(): Promise<void>;
  /** The bound address (useful with port 0). Throws before `start`. */
  address(): AddressInfo;
  /**
   * Moves the listener to a reloaded config: new connections and requests get the new settings (TLS
   * material, ACL, connection caps, routes, upstream); connections and requests already running keep what
   * they started with. Throws, and changes nothing, when OpenSSL refuses the new TLS material, or when
   * `runtime` has no block of this listener's name and kind (a reload that should have been refused).
   */
  update(runtime: ListenerRuntime): void;
  /** Replaces the TLS session ticket keys of the current context (hourly rotation); no TLS: ignored. */
  setTicketKeys(keys: Buffer): void;
  /**
   * Closes the open connections whose client certificate's serial is in `serials` (a reload's new CRL revoked
   * it), each logged at warn; returns how many. A TLS session is verified only at its handshake.
   */
  closeRevoked(serials: ReadonlySet<string>): number;
  /**
   * Stops accepting, lets what is in flight finish for up to `graceMs`, then closes what is left. Resolves
   * when every connection is closed; at once when the listener was never started.
   */
  drain(graceMs: number): Promise<void>;
  /** Stops accepting and closes every connection now: `drain(0)`. */
  close(): Promise<void>;
}

/**
 * The block of the listener called `name` in `config`, which must be of `protocol`.
 * @throws Error when there is none, or it is of another protocol: a reload that changes either is refused
 *   before any listener is touched (app.ts `restartNeeded`), so this is a wiring bug.
 */
export function listenerBlock<P extends RuntimeListener['protocol']>(
  config: RuntimeConfig,
  name: string,
  protocol: P,
): Extract<RuntimeListener, { readonly protocol: P }> {
  const block = config.listeners.find((l) => l.name === name);
  if (block === undefined) throw new Error(`listener ${name} is missing`);
  if (block.protocol !== protocol) throw new Error(`listener ${name} changed protocol`);
  return block as Extract<RuntimeListener, { readonly protocol: P }>;
}
