/**
 * Addresses in the config: a `listen` value (`host:port`, `[v6]:port`) and whether a host stays on this
 * machine (what decides if plaintext is allowed to reach it under requireEncryption).
 */
import { isIP } from 'node:net';
import { ConfigError } from '../errors.js';
import type { ListenAddress } from './runtime.js';

/** Parses `host:port` / `[v6]:port`. */
export function parseListen(
  value: string,
  keyPath: string,
  errors: ConfigError[],
): ListenAddress | undefined {
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

