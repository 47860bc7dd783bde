/**
 * Where a route or a tcp listener forwards to. A route's upstream is an origin (`http://`, `https://`) or
 * `builtin:echo`; a tcp listener's is `tcp://` or `tls://` with an explicit port. Under requireEncryption a
 * plaintext upstream must be on loopback; TLS options come only with a TLS scheme.
 */
import { ConfigError } from '../errors.js';
import type { TcpUpstream } from '../proxy/tcp-pipe.js';
import type { UpstreamSpec } from '../proxy/upstream.js';
import { isLoopbackHost } from '../policy/loopback.js';
import type { CompileContext } from './context.js';
import type { TcpUpstreamFile, UpstreamFile } from './schema.js';
import { resolveUpstreamTls } from './tls.js';

/** What an upstream URL may be, and what each refusal expects instead. */
interface UrlRule<S extends string> {
  /** The schemes allowed (with their colon, as `URL.protocol` has them). */
  readonly schemes: readonly S[];
  /** Expected, when the value does not parse as a URL. */
  readonly unparsable: string;
  /** Expected, when its scheme is another. */
  readonly otherScheme: string;
  /** Expected, when it has more than scheme, host and port. */
  readonly notOrigin: string;
}

const HTTP_URL: UrlRule<'http:' | 'https:'> = {
  schemes: ['http:', 'https:'],
  unparsable: 'an upstream URL like http://127.0.0.1:8787, https://host:port or builtin:echo',
  otherScheme: 'an http:// or https:// upstream (or builtin:echo)',
  notOrigin: 'an origin only: scheme, host and port, no credentials, path or query',
};

const TCP_URL: UrlRule<'tcp:' | 'tls:'> = {
  schemes: ['tcp:', 'tls:'],
  unparsable: 'an upstream URL like tcp://127.0.0.1:8786 or tls://host:port',
  otherScheme:
    'a tcp:// or tls:// upstream (a tcp listener pipes bytes; http://, https:// and builtin:echo are for http listeners)',
  notOrigin: 'host and port only: no credentials, path or query (e.g. tcp://127.0.0.1:8786)',
};

/**
 * `value` as a URL with one of the rule's schemes and nothing but a host and a port: no credentials (they
 * would be logged and forwarded), path, query or fragment. Undefined, with the error at `keyPath`, otherwise.
 */
function parseUpstreamUrl<S extends string>(
  ctx: CompileContext,
  value: string,
  keyPath: string,
  rule: UrlRule<S>,
): (URL & { readonly protocol: S }) | undefined {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    ctx.errors.push(new ConfigError(keyPath, value, rule.unparsable));
    return undefined;
  }
  if (!(rule.schemes as readonly string[]).includes(url.protocol)) {
    ctx.errors.push(new ConfigError(keyPath, value, rule.otherScheme));
    return undefined;
  }
  // A scheme URL does not know may come without a host (`tcp://`, `tcp:`); http(s) never does.
  const notOrigin =
    url.username || url.password || url.search || url.hash || (url.pathname !== '/' && url.pathname !== '');
  if (notOrigin || url.hostname === '') {
    ctx.errors.push(new ConfigError(keyPath, value, rule.notOrigin));
    return undefined;
  }
  return url as URL & { readonly protocol: S };
}

/**
 * The upstream of a `protocol: tcp` listener: `tcp://host:port` or `tls://host:port`, port explicit (there
 * is no default port for a byte pipe). TLS options only with `tls://`; under requireEncryption a `tcp://`
 * upstream must be loopback (the rule of `http://` upstreams).
 */
export function resolveTcpUpstream(ctx: CompileContext, u: TcpUpstreamFile, p: string): TcpUpstream | undefined {
  const spec = typeof u === 'string' ? { url: u } : u;
  const keyPath = typeof u === 'string' ? p : `${p}.url`;
  const url = parseUpstreamUrl(ctx, spec.url, keyPath, TCP_URL);
  if (url === undefined) return undefined;
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
  const url = parseUpstreamUrl(ctx, spec.url, keyPath, HTTP_URL);
  if (url === undefined) return undefined;
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
