/**
 * Real proxies in front of a decision listener, made from the ready-to-use examples in deploy/: Debian's nginx
 * (`deploy/nginx/portcullis.conf`) and Debian's caddy (`deploy/caddy/Caddyfile`), each run in the foreground
 * from a temp folder with the example's paths and ports replaced by the test's (PKI, free loopback ports, the
 * decision listener, the recording upstream). Skipped with a printed reason when the binary is missing.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { freePort } from './binary.js';
import WebSocket from 'ws';
import { rawTls, tlsOptions } from './clients.js';
import type { TestPkiPaths } from './pki.js';
import type { SeenRequest } from './upstream.js';

export const NGINX = '/usr/sbin/nginx';
export const CADDY = '/usr/bin/caddy';

/** Why a proxy's suite cannot run here (printed by the suite), or undefined when its binary is there. */
export function missing(binary: string): string | undefined {
  if (existsSync(binary)) return undefined;
  const reason = `${binary} is not installed: skipping its interop tests (.ci/run installs it)`;
  console.warn(reason);
  return reason;
}

export interface FrontProxy {
  readonly port: number;
  readonly dir: string;
  /** stderr and the error log so far (for a failing test's message). */
  log(): string;
  close(): Promise<void>;
}

/** Replaces each `from` (a literal string of the example) with its `to`; throws when one is not there. */
export function substitute(text: string, pairs: readonly (readonly [string, string])[]): string {
  let out = text;
  for (const [from, to] of pairs) {
    if (!out.includes(from)) throw new Error(`the example no longer contains ${JSON.stringify(from)}`);
    out = out.split(from).join(to);
  }
  return out;
}

/** Waits until something accepts on 127.0.0.1:`port` (or the child exits). */
async function untilListening(port: number, child: ChildProcess, log: () => string): Promise<void> {
  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`proxy exited ${child.exitCode}: ${log()}`);
    const ok = await new Promise<boolean>((r) => {
      const s = connect({ host: '127.0.0.1', port }, () => {
        s.destroy();
        r(true);
      });
      s.on('error', () => r(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`proxy did not listen on ${port}: ${log()}`);
}

function run(bin: string, args: string[], dir: string, port: number, env: NodeJS.ProcessEnv = {}): Promise<FrontProxy> {
  const child = spawn(bin, args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  let text = '';
  child.stdout?.on('data', (c: Buffer) => (text += c.toString()));
  child.stderr?.on('data', (c: Buffer) => (text += c.toString()));
  const log = (): string => {
    const errorLog = join(dir, 'error.log');
    return text + (existsSync(errorLog) ? readFileSync(errorLog, 'utf8') : '');
  };
  const proxy: FrontProxy = {
    port,
    dir,
    log,
    async close() {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        await Promise.race([exited, new Promise((r) => setTimeout(r, 3_000))]);
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
  return untilListening(port, child, log).then(
    () => proxy,
    async (err: unknown) => {
      await proxy.close();
      throw err;
    },
  );
}

/** What the nginx example is started with. */
export interface NginxOptions {
  readonly pki: TestPkiPaths;
  readonly decisionPort: number;
  readonly upstreamPort: number;
  /** Keep the example's decision cache (proxy_cache); false removes it. */
  readonly cache: boolean;
}

/** The nginx example with the test's paths and ports, as `http { }` content. */
export function nginxSite(o: NginxOptions & { readonly port: number; readonly dir: string }): string {
  const example = readFileSync(resolve('deploy/nginx/portcullis.conf'), 'utf8');
  const site = substitute(example, [
    ['/var/cache/nginx/portcullis', join(o.dir, 'cache')],
    ['127.0.0.1:4180', `127.0.0.1:${o.decisionPort}`],
    ['127.0.0.1:8080', `127.0.0.1:${o.upstreamPort}`],
    ['listen 443 ssl http2;', `listen 127.0.0.1:${o.port} ssl http2;`],
    ['server_name app.example.com;', 'server_name localhost;'],
    ['/etc/nginx/tls/server.pem', o.pki.server.cert],
    ['/etc/nginx/tls/server-key.pem', o.pki.server.key],
    ['/etc/nginx/tls/client-ca.pem', o.pki.ca],
    ['/etc/nginx/tls/client-ca.crl', o.pki.crl],
  ]);
  return o.cache ? site : substitute(site, [['        proxy_cache portcullis_decisions;\n', '']]);
}

/** The main config around a site: foreground, every path in `dir`. */
function nginxMain(dir: string): string {
  return [
    'daemon off;',
    'worker_processes 1;',
    `pid ${join(dir, 'nginx.pid')};`,
    `error_log ${join(dir, 'error.log')} info;`,
    'events { worker_connections 256; }',
    'http {',
    `  access_log ${join(dir, 'access.log')};`,
    ...['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((t) => `  ${t}_temp_path ${join(dir, `${t}-temp`)};`),
    `  include ${join(dir, 'portcullis.conf')};`,
    '}',
    '',
  ].join('\n');
}

/** Writes the nginx configs into a new temp folder; returns the folder and the main config's path. */
export async function writeNginx(o: NginxOptions, port: number): Promise<{ dir: string; conf: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'portcullis-nginx-'));
  // Started as root, nginx's workers run as nobody: they must reach the folder and write the cache.
  await chmod(dir, 0o755);
  await mkdir(join(dir, 'cache'), { mode: 0o777 });
  await chmod(join(dir, 'cache'), 0o777);
  await writeFile(join(dir, 'portcullis.conf'), nginxSite({ ...o, port, dir }));
  const conf = join(dir, 'nginx.conf');
  await writeFile(conf, nginxMain(dir));
  return { dir, conf };
}

/** Starts Debian's nginx with the example in front of the decision listener and the upstream. */
export async function startNginx(o: NginxOptions): Promise<FrontProxy> {
  const port = await freePort();
  const { dir, conf } = await writeNginx(o, port);
  return run(NGINX, ['-e', join(dir, 'error.log'), '-p', dir, '-c', conf], dir, port);
}

/** What the caddy example is started with. */
export interface CaddyOptions {
  readonly pki: TestPkiPaths;
  readonly decisionPort: number;
  readonly upstreamPort: number;
}

/** The caddy example with the test's paths and ports; redirects off (no port 80), storage in `dir`. */
export function caddyfile(o: CaddyOptions & { readonly port: number; readonly dir: string }): string {
  const example = readFileSync(resolve('deploy/caddy/Caddyfile'), 'utf8');
  return substitute(example, [
    ['\tadmin off\n', `\tadmin off\n\tauto_https disable_redirects\n\tstorage file_system ${join(o.dir, 'data')}\n`],
    ['app.example.com {', `https://localhost:${o.port} {`],
    ['127.0.0.1:4180', `127.0.0.1:${o.decisionPort}`],
    ['127.0.0.1:8080', `127.0.0.1:${o.upstreamPort}`],
    ['/etc/caddy/tls/server.pem', o.pki.server.cert],
    ['/etc/caddy/tls/server-key.pem', o.pki.server.key],
    ['/etc/caddy/tls/client-ca.pem', o.pki.ca],
  ]);
}

/** Writes the Caddyfile into a new temp folder. */
export async function writeCaddy(o: CaddyOptions, port: number): Promise<{ dir: string; file: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'portcullis-caddy-'));
  const file = join(dir, 'Caddyfile');
  await writeFile(file, caddyfile({ ...o, port, dir }));
  return { dir, file };
}

/** Caddy's home folders, inside `dir` (it writes its autosave and data there). */
export function caddyEnv(dir: string): NodeJS.ProcessEnv {
  return { HOME: dir, XDG_CONFIG_HOME: join(dir, 'config'), XDG_DATA_HOME: join(dir, 'data') };
}

/** Starts Debian's caddy with the example in front of the decision listener and the upstream. */
export async function startCaddy(o: CaddyOptions): Promise<FrontProxy> {
  const port = await freePort();
  const { dir, file } = await writeCaddy(o, port);
  return run(CADDY, ['run', '--config', file, '--adapter', 'caddyfile'], dir, port, caddyEnv(dir));
}

/** Every value of header `name` among the raw header lines the upstream received. */
export function seenHeader(seen: SeenRequest | undefined, name: string): string[] {
  const out: string[] = [];
  for (let i = 0; seen !== undefined && i + 1 < seen.rawHeaders.length; i += 2)
    if ((seen.rawHeaders[i] as string).toLowerCase() === name) out.push(seen.rawHeaders[i + 1] as string);
  return out;
}

/**
 * Opens a WebSocket to the upstream's echo path `/ws` through the proxy on `port` (no client certificate)
 * and sends `ping`: the echo when the tunnel opened, else the status of the refusal.
 */
export function webSocketThrough(
  port: number,
  pki: TestPkiPaths,
  headers: Record<string, string>,
): Promise<{ status?: number; echo?: string }> {
  return new Promise((resolve) => {
    const ws = new WebSocket(`wss://localhost:${port}/ws`, { ...tlsOptions(pki, undefined), headers });
    ws.on('open', () => ws.send('ping'));
    ws.on('message', (m: Buffer) => {
      resolve({ echo: m.toString() });
      ws.close();
    });
    ws.on('unexpected-response', (_req, res) => resolve({ status: res.statusCode ?? 0 }));
    ws.on('error', () => resolve({ status: -1 }));
  });
}

/** The status of `GET <uri>` sent as raw bytes through the proxy on `port` (the client normalizes nothing). */
export async function rawStatus(port: number, pki: TestPkiPaths, uri: string, headers = ''): Promise<number> {
  const raw = await rawTls(port, pki, `GET ${uri} HTTP/1.1\r\nHost: localhost:${port}\r\n${headers}Connection: close\r\n\r\n`, {
    client: undefined,
    servername: 'localhost',
  });
  return Number(/^HTTP\/1\.1 (\d{3})/.exec(raw.text)?.[1]);
}
