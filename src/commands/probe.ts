/**
 * `portcullis probe`: one GET to the running gateway's admin listener (`/readyz` or `/healthz`), for Docker
 * `HEALTHCHECK` and Kubernetes exec probes — a kubelet `httpGet` probe cannot present a client certificate,
 * and the admin listener is loopback-only or mTLS by design.
 *
 * Only the `admin` section of the config is read (its address, `enabled` and `tls`): a config being edited
 * elsewhere, or a certificate being rotated, must not fail the probe of a gateway that serves fine. It is
 * read by hand, with the defaults of config/defaults.ts, rather than through the config schema: a probe runs
 * every few seconds, and loading zod and every stage's schema would cost it more CPU than the probe. The
 * probe dials an address of this host (the admin's bind address, or loopback for a wildcard one), so it
 * verifies the admin's certificate only when given `--ca`: it sends no secret and reads only a status, as
 * kubelet's own HTTPS probes do.
 */
import { readFile } from 'node:fs/promises';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { isIP } from 'node:net';
import { parse } from 'yaml';
import { DEFAULTS } from '../config/defaults.js';

export interface ProbeOptions {
  /** The config file whose `admin` section says where to ask. */
  readonly configFile: string;
  readonly path: '/readyz' | '/healthz';
  /** The whole exchange (connect, TLS, answer) must end within this many ms. */
  readonly timeoutMs: number;
  /** Client certificate and key (PEM files), for an admin listener that asks for one. */
  readonly cert?: string | undefined;
  readonly key?: string | undefined;
  /** CA bundle (PEM file) to verify the admin's certificate against; unverified without it. */
  readonly ca?: string | undefined;
  /** With `ca`: the name the certificate must carry, also sent as SNI. */
  readonly servername?: string | undefined;
}

/** The verdict: `ok` only for a 200 answer; `message` is one line for the operator (never a secret). */
export interface ProbeResult {
  readonly ok: boolean;
  readonly message: string;
}

/** Largest answer body read (a /readyz answer is a few hundred bytes). */
const MAX_BODY_BYTES = 16 * 1024;

/** The host to dial for a bind address: the loopback of the same family for a wildcard one. */
export function probeHost(bindHost: string): string {
  if (bindHost === '0.0.0.0') return '127.0.0.1';
  if (bindHost === '::' || bindHost === '0:0:0:0:0:0:0:0') return '::1';
  return bindHost;
}

const fail = (message: string): ProbeResult => ({ ok: false, message });

function errText(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as NodeJS.ErrnoException).code;
    return code !== undefined && !err.message.includes(code) ? `${code}: ${err.message}` : err.message;
  }
  return String(err);
}

/** What the probe needs of `admin`: where it listens and how its TLS asks for a client certificate. */
export interface AdminTarget {
  readonly enabled: boolean;
  readonly host: string;
  readonly port: number;
  /** undefined: plaintext. */
  readonly clientCertificate: 'require' | 'optional' | 'none' | undefined;
}

const LISTEN = /^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9.-]+)):(\d{1,5})$/;
const CLIENT_CERTIFICATE = new Set(['require', 'optional', 'none']);

/**
 * The admin target of a config text (YAML): `admin.enabled`, `admin.listen` and `admin.tls.clientCertificate`
 * with their defaults, or the reason they cannot be read. Nothing else of the config is looked at.
 */
export function adminTarget(text: string): AdminTarget | string {
  let raw: unknown;
  try {
    raw = parse(text, { maxAliasCount: 100 });
  } catch (err) {
    return `not YAML (${errText(err)})`;
  }
  const admin: unknown =
    raw !== null && typeof raw === 'object' ? (raw as { admin?: unknown }).admin : undefined;
  if (admin !== undefined && (admin === null || typeof admin !== 'object' || Array.isArray(admin)))
    return 'admin is not a mapping';
  const a = (admin ?? {}) as { enabled?: unknown; listen?: unknown; tls?: unknown };
  const enabled = a.enabled ?? true;
  if (typeof enabled !== 'boolean') return 'admin.enabled is not true or false';
  const listen = a.listen ?? DEFAULTS.admin.listen;
  const m = typeof listen === 'string' ? LISTEN.exec(listen) : null;
  const port = Number(m?.[3]);
  const host = m?.[1] ?? m?.[2];
  if (host === undefined || !Number.isInteger(port) || port > 65_535)
    return `admin.listen ${JSON.stringify(listen)} is not a host:port`;
  let clientCertificate: AdminTarget['clientCertificate'];
  if (a.tls !== undefined) {
    if (a.tls === null || typeof a.tls !== 'object') return 'admin.tls is not a mapping';
    const mode =
      (a.tls as { clientCertificate?: unknown }).clientCertificate ?? DEFAULTS.tls.clientCertificate;
    if (typeof mode !== 'string' || !CLIENT_CERTIFICATE.has(mode))
      return 'admin.tls.clientCertificate is not "require", "optional" or "none"';
    clientCertificate = mode as AdminTarget['clientCertificate'];
  }
  return { enabled, host, port, clientCertificate };
}

/** Reads at most MAX_BODY_BYTES of an answer, as text. */
function readBody(res: IncomingMessage): Promise<string> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let total = 0;
    res.on('data', (c: Buffer) => {
      if (total < MAX_BODY_BYTES) chunks.push(c);
      total += c.length;
    });
    res.on('end', () => resolve(Buffer.concat(chunks).toString('utf8').slice(0, MAX_BODY_BYTES)));
    res.on('error', () => resolve(Buffer.concat(chunks).toString('utf8')));
  });
}

/** What a non-200 answer says, in one line: the readiness reasons of a /readyz 503, else the body's start. */
function answerSummary(body: string): string {
  try {
    const json = JSON.parse(body) as { notReady?: unknown };
    if (Array.isArray(json.notReady) && json.notReady.length > 0)
      return `not ready: ${json.notReady.map(String).join('; ')}`;
  } catch {
    // not JSON
  }
  const line = body.replace(/\s+/g, ' ').trim();
  return line.length > 200 ? `${line.slice(0, 200)}…` : line;
}

/**
 * Asks the admin listener of `opts.configFile` for `opts.path`. Never throws: every failure (config, files,
 * connection, TLS, timeout, status) is a `{ ok: false }` with the reason.
 */
export async function probe(opts: ProbeOptions): Promise<ProbeResult> {
  let text: string;
  try {
    text = await readFile(opts.configFile, 'utf8');
  } catch (err) {
    return fail(`cannot read the config ${opts.configFile}: ${errText(err)}`);
  }
  const admin = adminTarget(text);
  if (typeof admin === 'string') return fail(`${opts.configFile}: ${admin}`);
  if (!admin.enabled) return fail(`the admin listener is off (admin.enabled: false in ${opts.configFile})`);
  if (admin.port === 0) return fail('admin.listen has port 0 (chosen at start): the probe cannot know it');
  const host = probeHost(admin.host);
  const address = { host, port: admin.port };
  const tls =
    admin.clientCertificate === undefined ? undefined : { clientCertificate: admin.clientCertificate };
  if (tls !== undefined && tls.clientCertificate === 'require' && opts.cert === undefined)
    return fail('the admin listener requires a client certificate: pass --cert FILE --key FILE');

  const files: { cert?: Buffer; key?: Buffer; ca?: Buffer } = {};
  for (const name of ['cert', 'key', 'ca'] as const) {
    const file = opts[name];
    if (file === undefined || tls === undefined) continue;
    try {
      files[name] = await readFile(file);
    } catch (err) {
      return fail(`cannot read --${name} ${file}: ${errText(err)}`);
    }
  }

  const scheme = tls === undefined ? 'http' : 'https';
  const where = `${scheme}://${isIP(host) === 6 ? `[${host}]` : host}:${address.port}${opts.path}`;
  return new Promise<ProbeResult>((resolve) => {
    let settled = false;
    // Called only from events, after `req` and `timer` below exist.
    function settle(r: ProbeResult): void {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      req.destroy();
      resolve(r);
    }
    const common = { host, port: address.port, path: opts.path, method: 'GET', agent: false } as const;
    const onResponse = (res: IncomingMessage): void => {
      const status = res.statusCode ?? 0;
      if (status === 200) {
        res.resume();
        settle({ ok: true, message: `${where}: 200` });
        return;
      }
      void readBody(res).then((body) => {
        const summary = answerSummary(body);
        settle(fail(`${where}: ${status}${summary === '' ? '' : ` (${summary})`}`));
      });
    };
    const req =
      tls === undefined
        ? httpRequest(common, onResponse)
        : httpsRequest(
            {
              ...common,
              minVersion: 'TLSv1.2',
              ...(files.cert !== undefined && files.key !== undefined
                ? { cert: files.cert, key: files.key }
                : {}),
              ...(files.ca !== undefined
                ? {
                    ca: files.ca,
                    rejectUnauthorized: true,
                    ...(opts.servername !== undefined
                      ? { servername: opts.servername }
                      : // The dialled address is this host's own; the chain is what --ca vouches for.
                        { checkServerIdentity: () => undefined }),
                  }
                : { rejectUnauthorized: false }),
            },
            onResponse,
          );
    req.on('error', (err) => {
      const text = errText(err);
      const hint =
        tls !== undefined &&
        opts.cert === undefined &&
        /certificate required|handshake failure|alert/i.test(text)
          ? ' (does the admin listener ask for a client certificate? pass --cert and --key)'
          : '';
      settle(fail(`${where}: ${text}${hint}`));
    });
    const timer = setTimeout(
      () => settle(fail(`${where}: no answer within ${opts.timeoutMs} ms`)),
      opts.timeoutMs,
    );
    req.end();
  });
}
