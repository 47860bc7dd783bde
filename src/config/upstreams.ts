/**
 * Where a route or a tcp listener forwards to. A route's upstream is an origin (`http://`, `https://`) or
 * `builtin:echo`; a tcp listener's is `tcp://` or `tls://` with an explicit port. Under requireEncryption a
 * plaintext upstream must be on loopback; TLS options come only with a TLS scheme.
 */
import { ConfigError } from '../errors.js';
import type { TcpUpstream } from '../proxy/tcp-pipe.js';
import type { UpstreamSpec } from '../proxy/upstream.js';
import { isLoopbackHost } from './addresses.js';
import type { CompileContext } from './context.js';
import type { TcpUpstreamFile, UpstreamFile } from './schema.js';
import { resolveUpstreamTls } from './tls.js';

/**
 * The upstream of a `protocol: tcp` listener: `tcp://host:port` or `tls://host:port`, port explicit (there
 * is no default port for a byte pipe). TLS options only with `tls://`; under requireEncryption a `tcp://`
 * upstream must be loopback (the rule of `http://` upstreams).
 */
export function resolveTcpUpstream(ctx: CompileContext, u: TcpUpstreamFile, p: string): TcpUpstream | undefined {
  const spec = typeof u === 'string' ? { url: u } : u;
  const keyPath = typeof u === 'string' ? p : `${p}.url`;
  const example = 'an upstream URL like tcp://127.0.0.1:8786 or tls://host:port';
  let url: URL;
  try {
    url = new URL(spec.url);
  } catch {
    ctx.errors.push(new ConfigError(keyPath, spec.url, example));
    return undefined;
  }
  if (url.protocol !== 'tcp:' && url.protocol !== 'tls:') {
    ctx.errors.push(
      new ConfigError(
        keyPath,
        spec.url,
        'a tcp:// or tls:// upstream (a tcp listener pipes bytes; http://, https:// and builtin:echo are for http listeners)',
      ),
    );
    return undefined;
  }
  if (
    url.username ||
    url.password ||
    url.search ||
    url.hash ||
    (url.pathname !== '/' && url.pathname !== '') ||
    url.hostname === ''
  ) {
    ctx.errors.push(
      new ConfigError(keyPath, spec.url, 'host and port only: no credentials, path or query (e.g. tcp://127.0.0.1:8786)'),
    );
    return undefined;
  }
  const port = url.port === '' ? NaN : Number(url.port);
  if (!Number.isInteger(port) || port < 1 || port > 65_535) {
    ctx.errors.push(
      new ConfigError(keyPath, spec.url, `an explicit port from 1 to 65535 (e.g. ${url.protocol}//${url.hostname}:8786)`),
    );
    return undefined;
  }
  const host = url.hostname.replace(/^\[|\]$/g, '');
  if (ctx.requireEncryption && url.protocol === 'tcp:' && !isLoopbackHost(host)) {
    ctx.errors.push(
      new ConfigError(
        keyPath,
        spec.url,
        'tls:// or a loopback tcp:// upstream (requireEncryption is true: plaintext must not leave the machine)',
      ),
    );
    return undefined;
  }
  if (typeof u !== 'string' && url.protocol === 'tcp:' && (u.ca ?? u.cert ?? u.key ?? u.servername) !== undefined) {
    ctx.errors.push(new ConfigError(p, u, 'TLS options (ca, cert, key, servername) only with a tls:// url'));
    return undefined;
  }
  if (url.protocol === 'tcp:') return { kind: 'tcp', host, port };
  const before = ctx.errors.length;
  const tls = typeof u === 'string' ? {} : resolveUpstreamTls(ctx, u, p);
  if (ctx.errors.length > before) return undefined;
  return { kind: 'tls', host, port, ...tls };
}

/**
 * A route's upstream: `builtin:echo`, or an origin (`http://` or `https://`, no path or credentials) with
 * its TLS options. Under requireEncryption an `http://` upstream must be loopback.
 */
export function resolveUpstream(ctx: CompileContext, u: UpstreamFile, p: string): UpstreamSpec | undefined {
  const spec = typeof u === 'string' ? { url: u } : u;
  const keyPath = typeof u === 'string' ? p : `${p}.url`;
  if (spec.url === 'builtin:echo') {
    if (typeof u !== 'string')
      ctx.errors.push(new ConfigError(p, u, 'the string "builtin:echo" (it takes no TLS options)'));
    return { kind: 'gateway', endpoint: 'echo' };
  }
  let url: URL;
  try {
    url = new URL(spec.url);
  } catch {
    ctx.errors.push(
      new ConfigError(
        keyPath,
        spec.url,
        'an upstream URL like http://127.0.0.1:8787, https://host:port or builtin:echo',
      ),
    );
    return undefined;
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    ctx.errors.push(new ConfigError(keyPath, spec.url, 'an http:// or https:// upstream (or builtin:echo)'));
    return undefined;
  }
  if (
    url.username ||
    url.password ||
    url.search ||
    url.hash ||
    (url.pathname !== '/' && url.pathname !== '')
  ) {
    ctx.errors.push(
      new ConfigError(
        keyPath,
        spec.url,
        'an origin only: scheme, host and port, no credentials, path or query',
      ),
    );
    return undefined;
  }
  const hostname = url.hostname.replace(/^\[|\]$/g, '');
  const loopback = isLoopbackHost(hostname);
  if (ctx.requireEncryption && url.protocol === 'http:' && !loopback) {
    ctx.errors.push(
      new ConfigError(
        keyPath,
        spec.url,
        'https:// or a loopback http:// upstream (requireEncryption is true: plaintext must not leave the machine)',
      ),
    );
    return undefined;
  }
  const isObj = typeof u !== 'string';
  if (isObj && url.protocol === 'http:' && (u.ca ?? u.cert ?? u.key ?? u.servername) !== undefined) {
    ctx.errors.push(
      new ConfigError(p, u, `TLS options (ca, cert, key, servername) only with an https:// url`),
    );
    return undefined;
  }
  const tls = isObj && url.protocol === 'https:' ? resolveUpstreamTls(ctx, u, p) : undefined;
  const port = url.port ? Number(url.port) : url.protocol === 'https:' ? 443 : 80;
  return {
    kind: 'http',
    origin: `${url.protocol}//${url.host}`,
    protocol: url.protocol,
    hostname,
    port,
    loopback,
    ...(tls ? { tls } : {}),
  };
}
