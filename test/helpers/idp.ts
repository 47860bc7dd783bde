/**
 * A fake identity provider with fault knobs: one JWKS endpoint and one RFC 7662
 * introspection endpoint, ES256 keys it can rotate, opaque tokens it can issue and revoke, and request counts.
 *
 * Two ways to reach it, same handlers and counters:
 * - `idp.fetch`: an in-memory fetch for unit tests (no socket; `reset` rejects like a dropped connection,
 *   `slow` honours the AbortSignal);
 * - `await idp.listen()`: a real HTTP server on 127.0.0.1:0 for integration tests (`reset` destroys the socket).
 *
 * Faults, per endpoint (`setFault(fault, 'jwks' | 'introspection' | 'all')`):
 * `ok` | `500` | `{ slowMs }` | `reset` | `non-json` (200 text/html) | `redirect` (302 elsewhere) | `big` (a
 * 10 MB body) | `wrong-type` (valid JSON, `text/plain`).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomBytes } from 'node:crypto';
import {
  CompactSign,
  exportJWK,
  generateKeyPair,
  SignJWT,
  type CryptoKey,
  type JWK,
  type JWTPayload,
} from 'jose';

export type IdpFault =
  'ok' | '500' | 'reset' | 'non-json' | 'redirect' | 'big' | 'wrong-type' | { readonly slowMs: number };
export type IdpEndpoint = 'jwks' | 'introspection';

interface SigningKey {
  readonly kid: string;
  readonly privateKey: CryptoKey;
  readonly publicJwk: JWK;
}

/** What the introspection endpoint answers for a token (RFC 7662 §2.2); any JSON is allowed, for hostile answers. */
export type IntrospectionAnswer = Record<string, unknown>;

/** One introspection call as received. */
export interface ReceivedIntrospection {
  readonly authorization: string | undefined;
  readonly contentType: string | undefined;
  readonly params: URLSearchParams;
}

interface Reply {
  readonly status: number;
  readonly headers: Record<string, string>;
  readonly body: string | Buffer;
}

export interface FakeIdp {
  /** `https://idp.test` until `listen()`, then `http://127.0.0.1:PORT`. */
  readonly issuer: string;
  readonly jwksUri: string;
  readonly introspectionUri: string;
  readonly clientId: string;
  readonly clientSecret: string;
  /** In-memory fetch to this IdP (unit tests). */
  readonly fetch: (url: string, init: RequestInit) => Promise<Response>;
  /** Requests received per endpoint (both transports). */
  readonly counts: { jwks: number; introspection: number; other: number };
  /** The introspection calls received, oldest first. */
  readonly introspections: ReceivedIntrospection[];
  setFault(fault: IdpFault, endpoint?: IdpEndpoint | 'all'): void;
  /** The kid that `sign` uses now. */
  readonly currentKid: string;
  /** Signs a JWT with the current key (or `kid`'s); `iss` defaults to the issuer, `alg` to ES256. */
  sign(claims: JWTPayload, header?: Record<string, unknown>, kid?: string): Promise<string>;
  /** Signs raw payload bytes (e.g. JSON with duplicate keys) with the current key. */
  signRaw(payload: string, header?: Record<string, unknown>): Promise<string>;
  /**
   * `<header>.<payloadSegment>.<ES256 signature>` with the current key and no check of the header at all
   * (jose refuses to sign a malformed `crit`): a signature-valid token whose header is the test's subject.
   * `alg` defaults to ES256 and `kid` to the current key's.
   */
  signUnchecked(header: Record<string, unknown>, payloadSegment: string): Promise<string>;
  /** Adds a new key and makes it current; with `dropOld`, the JWKS serves only the new key. Returns its kid. */
  rotate(opts?: { dropOld?: boolean; reuseKid?: string }): Promise<string>;
  /** Registers a new random opaque token with its answer (default: active, sub alice, scope read, exp +1 h). */
  issueOpaque(answer?: IntrospectionAnswer): string;
  /** Sets the answer for a token (any JSON). */
  setAnswer(token: string, answer: IntrospectionAnswer): void;
  /** Makes a token inactive. */
  revoke(token: string): void;
  /** The JWKS it serves now. */
  jwks(): { keys: JWK[] };
  /** Starts the HTTP server on 127.0.0.1:0. */
  listen(): Promise<void>;
  close(): Promise<void>;
}

/** Options of {@link createFakeIdp}. */
export interface FakeIdpOptions {
  /** Epoch ms used for default `iat`/`exp` (a test's fake clock); default Date.now(). */
  readonly now?: () => number;
}

/** Creates a fake IdP with one ES256 key. */
export async function createFakeIdp(opts: FakeIdpOptions = {}): Promise<FakeIdp> {
  const now = opts.now ?? (() => Date.now());
  let base = 'https://idp.test';
  const clientId = 'portcullis';
  const clientSecret = 's3cr+t:with/odd chars!';
  const faults: Record<IdpEndpoint, IdpFault> = { jwks: 'ok', introspection: 'ok' };
  const counts = { jwks: 0, introspection: 0, other: 0 };
  const introspections: ReceivedIntrospection[] = [];
  const answers = new Map<string, IntrospectionAnswer>();
  let keys: SigningKey[] = [];
  let current: SigningKey;
  let server: Server | undefined;

  const newKey = async (kid?: string): Promise<SigningKey> => {
    const { publicKey, privateKey } = await generateKeyPair('ES256', { extractable: true });
    const jwk = await exportJWK(publicKey);
    const id = kid ?? `k${keys.length + 1}-${randomBytes(4).toString('hex')}`;
    return { kid: id, privateKey, publicJwk: { ...jwk, kid: id, alg: 'ES256', use: 'sig' } };
  };
  current = await newKey();
  keys = [current];

  const expectedBasic = `Basic ${Buffer.from(`${enc(clientId)}:${enc(clientSecret)}`).toString('base64')}`;

  /** The handlers, transport-independent. 'reset' means drop the connection. */
  async function handle(
    method: string,
    path: string,
    headers: Headers,
    body: string,
    signal?: AbortSignal,
  ): Promise<Reply | 'reset'> {
    let endpoint: IdpEndpoint;
    if (method === 'GET' && path === '/jwks') endpoint = 'jwks';
    else if (method === 'POST' && path === '/introspect') endpoint = 'introspection';
    else {
      counts.other++;
      return { status: 404, headers: { 'content-type': 'text/plain' }, body: 'not found' };
    }
    counts[endpoint]++;
    const fault = faults[endpoint];
    if (typeof fault === 'object') await sleep(fault.slowMs, signal);
    else if (fault === 'reset') return 'reset';
    else if (fault === '500')
      return {
        status: 500,
        headers: { 'content-type': 'application/json' },
        body: '{"error":"server_error"}',
      };
    else if (fault === 'non-json')
      return { status: 200, headers: { 'content-type': 'text/html' }, body: '<html>maintenance</html>' };
    else if (fault === 'redirect')
      return { status: 302, headers: { location: 'http://127.0.0.1:1/elsewhere' }, body: '' };
    else if (fault === 'big')
      return {
        status: 200,
        headers: { 'content-type': 'application/json' },
        body: Buffer.alloc(10 * 1024 * 1024, 0x20),
      };

    const type = fault === 'wrong-type' ? 'text/plain' : 'application/json';
    if (endpoint === 'jwks')
      return { status: 200, headers: { 'content-type': type }, body: JSON.stringify(jwksNow()) };

    const params = new URLSearchParams(body);
    introspections.push({
      authorization: headers.get('authorization') ?? undefined,
      contentType: headers.get('content-type') ?? undefined,
      params,
    });
    const basicOk = headers.get('authorization') === expectedBasic;
    const postOk = params.get('client_id') === clientId && params.get('client_secret') === clientSecret;
    if (!basicOk && !postOk)
      return {
        status: 401,
        headers: { 'content-type': 'application/json' },
        body: '{"error":"invalid_client"}',
      };
    const token = params.get('token') ?? '';
    const answer = answers.get(token) ?? { active: false };
    return {
      status: 200,
      headers: { 'content-type': `${type}; charset=utf-8` },
      body: JSON.stringify(answer),
    };
  }

  function jwksNow(): { keys: JWK[] } {
    return { keys: keys.map((k) => k.publicJwk) };
  }

  const idp: FakeIdp = {
    get issuer() {
      return base;
    },
    get jwksUri() {
      return `${base}/jwks`;
    },
    get introspectionUri() {
      return `${base}/introspect`;
    },
    clientId,
    clientSecret,
    counts,
    introspections,
    get currentKid() {
      return current.kid;
    },
    async fetch(url: string, init: RequestInit): Promise<Response> {
      const signal = init.signal ?? undefined;
      signal?.throwIfAborted();
      const u = new URL(url);
      const headers = new Headers(init.headers);
      const body = typeof init.body === 'string' ? init.body : '';
      const reply = await handle(init.method ?? 'GET', u.pathname, headers, body, signal);
      if (reply === 'reset')
        throw new TypeError('fetch failed', {
          cause: Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' }),
        });
      const status = reply.status;
      const payload = status === 302 || status === 204 ? null : reply.body;
      return new Response(payload, { status, headers: reply.headers });
    },
    setFault(fault, endpoint = 'all') {
      if (endpoint === 'all' || endpoint === 'jwks') faults.jwks = fault;
      if (endpoint === 'all' || endpoint === 'introspection') faults.introspection = fault;
    },
    async sign(claims, header = {}, kid) {
      const key = kid === undefined ? current : keys.find((k) => k.kid === kid);
      if (key === undefined) throw new Error(`no key ${kid ?? ''}`);
      const iat = Math.floor(now() / 1000);
      return new SignJWT({ iss: base, iat, exp: iat + 3600, ...claims })
        .setProtectedHeader({ alg: 'ES256', kid: key.kid, ...header })
        .sign(key.privateKey, critOption(header));
    },
    async signRaw(payload, header = {}) {
      return new CompactSign(new TextEncoder().encode(payload))
        .setProtectedHeader({ alg: 'ES256', kid: current.kid, ...header })
        .sign(current.privateKey, critOption(header));
    },
    async signUnchecked(header, payloadSegment) {
      const h = Buffer.from(JSON.stringify({ alg: 'ES256', kid: current.kid, ...header })).toString(
        'base64url',
      );
      const input = new TextEncoder().encode(`${h}.${payloadSegment}`);
      // WebCrypto ECDSA gives r || s, which is the JWS form (RFC 7518 §3.4).
      const sig = await crypto.subtle.sign({ name: 'ECDSA', hash: 'SHA-256' }, current.privateKey, input);
      return `${h}.${payloadSegment}.${Buffer.from(sig).toString('base64url')}`;
    },
    async rotate(o = {}) {
      const next = await newKey(o.reuseKid);
      keys = o.dropOld === true ? [next] : [...keys.filter((k) => k.kid !== next.kid), next];
      current = next;
      return next.kid;
    },
    issueOpaque(answer) {
      const token = randomBytes(32).toString('base64url');
      answers.set(
        token,
        answer ?? {
          active: true,
          sub: 'alice',
          scope: 'read',
          client_id: 'app',
          exp: Math.floor(now() / 1000) + 3600,
        },
      );
      return token;
    },
    setAnswer(token, answer) {
      answers.set(token, answer);
    },
    revoke(token) {
      answers.set(token, { active: false });
    },
    jwks: jwksNow,
    async listen() {
      server = createServer((req, res) => void serve(req, res));
      await new Promise<void>((resolve) => server?.listen(0, '127.0.0.1', resolve));
      const { port } = server.address() as AddressInfo;
      base = `http://127.0.0.1:${port}`;
    },
    async close() {
      if (server === undefined) return;
      const s = server;
      server = undefined;
      s.closeAllConnections();
      await new Promise<void>((resolve) => s.close(() => resolve()));
    },
  };

  async function serve(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const headers = new Headers();
    for (const [k, v] of Object.entries(req.headers)) if (typeof v === 'string') headers.set(k, v);
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    const reply = await handle(req.method ?? 'GET', path, headers, Buffer.concat(chunks).toString('utf8'));
    if (reply === 'reset') {
      req.socket.destroy();
      return;
    }
    if (res.destroyed) return;
    res.writeHead(reply.status, reply.headers);
    res.end(reply.body);
  }

  return idp;
}

/** Lets jose sign a header with `crit` extensions it does not know (the verifier must refuse them). */
function critOption(header: Record<string, unknown>): { crit: Record<string, boolean> } | undefined {
  const crit = header['crit'];
  if (!Array.isArray(crit)) return undefined;
  return { crit: Object.fromEntries(crit.map((c) => [String(c), true])) };
}

function enc(value: string): string {
  return new URLSearchParams({ v: value }).toString().slice(2);
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener(
      'abort',
      () => {
        clearTimeout(t);
        reject(signal.reason as Error);
      },
      { once: true },
    );
  });
}

/**
 * The gateway's `authProviders` for this IdP: `jwt` (its JWKS, audience `audience`, ES256) and `opaque`
 * (introspection with the client secret in `secretFile`, cached up to 60 s, a 500 ms timeout).
 */
export function idpProviders(idp: FakeIdp, audience: string, secretFile: string): Record<string, unknown> {
  return {
    jwt: { type: 'jwt', issuer: idp.issuer, audience, jwksUri: idp.jwksUri, algorithms: ['ES256'] },
    opaque: {
      type: 'introspection',
      endpoint: idp.introspectionUri,
      clientId: idp.clientId,
      clientSecretFile: secretFile,
      timeoutMs: 500,
      cache: { maxTtlSeconds: 60, negativeTtlSeconds: 1 },
    },
  };
}
