/**
 * Addresses in the config: a `listen` value (`host:port`, `[v6]:port`) and whether a host stays on this
 * machine (what decides if plaintext is allowed to reach it under requireEncryption).
 */
import { isIP } from 'node:net';
import { ConfigError } from '../errors.js';
import type { ListenAddress } from './runtime.js';

/** The `listen` form of a Unix socket: `unix:` and an absolute path. */
const UNIX_LISTEN_RE = /^unix:(\/[^\0]+)$/;

/** The socket path of a listen address made from `unix:<path>` (a decision listener), or undefined. */
export function unixSocketPath(address: ListenAddress): string | undefined {
  return UNIX_LISTEN_RE.exec(address.host)?.[1];
}

/**
 * Parses `host:port` / `[v6]:port`, or `unix:/path` (the schema lets only a decision listener write one):
 * that is kept whole as the host, port 0 ({@link unixSocketPath} reads it back).
 */
export function parseListen(
  value: string,
  keyPath: string,
  errors: ConfigError[],
): ListenAddress | undefined {
  if (UNIX_LISTEN_RE.test(value)) return { host: value, port: 0 };
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9.-]+)):(\d{1,5})$/.exec(value);
  const host = m?.[1] ?? m?.[2];
  const port = Number(m?.[3]);
  if (m === null || host === undefined || !Number.isInteger(port) || port > 65_535) {
    errors.push(new ConfigError(keyPath, value, 'host:port with a port from 0 to 65535'));
    return undefined;
  }
  if (m[1] !== undefined && isIP(host) !== 6) {
    errors.push(new ConfigError(keyPath, value, 'a valid IPv6 address inside [ ]'));
    return undefined;
  }
  return { host, port };
}

