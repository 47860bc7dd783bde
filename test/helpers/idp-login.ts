/**
 * A real OpenID provider for browser-login tests: `oidc-provider` 9 with its development login and consent
 * forms (any login name, any password), a confidential `web` client whose redirect and back-channel logout URIs
 * are the gateway's, refresh tokens with rotation, and claims (`email`, `groups`) in the ID token. Its own
 * outbound calls (the back-channel logout POST) trust the test CA.
 *
 * {@link driveIdpLogin} plays the browser at the IdP without one: it follows the authorization redirect through
 * the login and consent forms and returns the IdP's redirect back to the gateway (the callback URL).
 */
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Agent, fetch as undiciFetch } from 'undici';
import { signingKey, type OidcProvider, type OidcProviderClass } from './oidc.js';

export const WEB = { id: 'web', secret: 'web-secret:+/ odd' };

export interface LoginIdp {
  readonly issuer: string;
  /** A file holding the `web` client's secret (mode 0600), for the gateway's `clientSecretFile`. */
  readonly secretFile: string;
  /** The CA the IdP's own outbound calls (back-channel logout) trust: the gateway's test CA. */
  trust(caFile: string): void;
  readonly server: Server;
  /** Token endpoint grants by type (authorization_code, refresh_token), counted as the IdP answered them. */
  readonly grants: Map<string, number>;
  /** When set, the token endpoint answers every refresh with 400 invalid_grant. */
  refuseRefresh: boolean;
  /** Builds the provider for the gateway's origins (call once the gateway's ports are known). */
  configure(origins: readonly string[], accessTokenTtl: number): Promise<void>;
  close(): Promise<void>;
}

/** Starts the IdP's HTTP server on 127.0.0.1:0; its provider is made by {@link LoginIdp.configure}. */
export async function startLoginIdp(Provider: OidcProviderClass): Promise<LoginIdp> {
  let current: OidcProvider | undefined;
  let caFile = '';
  const dir = await mkdtemp(join(tmpdir(), 'portcullis-idp-'));
  const secretFile = join(dir, 'client-secret');
  await writeFile(secretFile, `${WEB.secret}\n`, { mode: 0o600 });
  const grants = new Map<string, number>();
  const idp: LoginIdp = {
    issuer: '',
    secretFile,
    trust(file) {
      caFile = file;
    },
    server: createServer((req: IncomingMessage, res: ServerResponse) => {
      if (current === undefined) {
        res.writeHead(503).end();
        return;
      }
      if (req.url === '/token' && idp.refuseRefresh) {
        // Read the grant type without consuming the body for the provider: refuse refreshes only.
        const chunks: Buffer[] = [];
        req.on('data', (c: Buffer) => chunks.push(c));
        req.on('end', () => {
          const body = Buffer.concat(chunks).toString();
          if (new URLSearchParams(body).get('grant_type') === 'refresh_token') {
            res.writeHead(400, { 'content-type': 'application/json' }).end('{"error":"invalid_grant"}');
            return;
          }
          res.writeHead(500).end();
        });
        return;
      }
      current.callback()(req, res);
    }),
    grants,
    refuseRefresh: false,
    async configure(origins, accessTokenTtl) {
      const key = await signingKey('login-k1');
      const ca = readFileSync(caFile);
      const agent = new Agent({ connect: { ca } });
      const p = new Provider(idp.issuer, {
        clients: [
          {
            client_id: WEB.id,
            client_secret: WEB.secret,
            grant_types: ['authorization_code', 'refresh_token'],
            response_types: ['code'],
            redirect_uris: origins.map((o) => `${o}/_portcullis/callback`),
            post_logout_redirect_uris: origins.map((o) => `${o}/_portcullis/logged-out`),
            backchannel_logout_uri: `${origins[0] ?? ''}/_portcullis/backchannel-logout`,
            backchannel_logout_session_required: true,
            id_token_signed_response_alg: 'ES256',
          },
        ],
        jwks: { keys: [key] },
        cookies: { keys: ['login-test-cookie-key'] },
        conformIdTokenClaims: false,
        claims: { openid: ['sub'], email: ['email'], groups: ['groups'] },
        scopes: ['openid', 'offline_access', 'email', 'groups'],
        findAccount: (_ctx: unknown, id: string) => ({
          accountId: id,
          claims: () => ({ sub: id, email: `${id}@example.com`, groups: id === 'mallory' ? ['guests'] : ['data-science'] }),
        }),
        features: {
          devInteractions: { enabled: true },
          backchannelLogout: { enabled: true },
          rpInitiatedLogout: { enabled: true },
        },
        rotateRefreshToken: true,
        ttl: { AccessToken: accessTokenTtl, IdToken: 3600, RefreshToken: 86400, Grant: 86400, Session: 86400 },
        pkce: { required: () => true },
        fetch: (url: string, init: Record<string, unknown>) => {
          // Its SSRF-guarding dispatcher would refuse the gateway on 127.0.0.1: replaced by one trusting the test CA.
          return undiciFetch(url, { ...init, dispatcher: agent });
        },
      });
      const events = p as unknown as { on(event: string, fn: (ctx: { oidc: { params?: { grant_type?: string } } }) => void): void };
      events.on('grant.success', (ctx) => {
        const type = ctx.oidc.params?.grant_type ?? 'unknown';
        grants.set(type, (grants.get(type) ?? 0) + 1);
      });
      current = p;
    },
    async close() {
      await new Promise<void>((resolve) => idp.server.close(() => resolve()));
      await rm(dir, { recursive: true, force: true });
    },
  };
  await new Promise<void>((resolve) => idp.server.listen(0, '127.0.0.1', resolve));
  (idp as { issuer: string }).issuer = `http://127.0.0.1:${(idp.server.address() as AddressInfo).port}`;
  return idp;
}

/**
 * The gateway's `type: oidc` provider block for this IdP's `web` client: refresh tokens asked for, the access
 * token refreshed 60 s before it ends (with the IdP's 62 s tokens: due 2 s after each login or refresh).
 */
export function ssoProvider(idp: Pick<LoginIdp, 'issuer' | 'secretFile'>): Record<string, unknown> {
  return {
    type: 'oidc',
    issuer: idp.issuer,
    clientId: WEB.id,
    clientSecretFile: idp.secretFile,
    scopes: ['openid', 'offline_access', 'email', 'groups'],
    refreshBeforeSeconds: 60,
  };
}

/** A cookie jar for one "browser" at the IdP. */
export class Jar {
  private readonly cookies = new Map<string, string>();
  take(res: Response): void {
    for (const line of res.headers.getSetCookie()) {
      const [pair] = line.split(';');
      const eq = (pair ?? '').indexOf('=');
      if (eq > 0) this.cookies.set((pair ?? '').slice(0, eq).trim(), (pair ?? '').slice(eq + 1).trim());
    }
  }
  header(): string {
    return [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; ');
  }
}

/**
 * Waits until a browser navigation to `path` is sent to log in (`status` 302): the gateway's discovery
 * failed while the IdP had no provider yet, and retries after its backoff.
 */
export async function untilLoginRedirects(status: () => Promise<number>): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline && (await status()) !== 302) await new Promise((r) => setTimeout(r, 200));
}

/**
 * Logs `user` in at the IdP from `authorizeUrl` (the gateway's redirect) through the development login and
 * consent forms, and returns the IdP's final redirect: the gateway's callback URL with `code` and `state`.
 */
export async function driveIdpLogin(authorizeUrl: string, user: string, jar = new Jar()): Promise<string> {
  let url = authorizeUrl;
  for (let step = 0; step < 12; step++) {
    const res = await fetch(url, { redirect: 'manual', headers: { cookie: jar.header() } });
    jar.take(res);
    const location = res.headers.get('location');
    if (res.status >= 300 && res.status < 400 && location !== null) {
      const next = new URL(location, url).href;
      if (next.includes('/_portcullis/callback')) return next;
      url = next;
      continue;
    }
    const html = await res.text();
    const action = /<form[^>]*action="([^"]+)"/.exec(html)?.[1];
    if (res.status !== 200 || action === undefined) throw new Error(`IdP step ${step}: ${res.status} ${html.slice(0, 300)}`);
    const form = html.includes('name="login"')
      ? { prompt: 'login', login: user, password: 'any' }
      : { prompt: 'consent' };
    const post = await fetch(new URL(action, url).href, {
      method: 'POST',
      redirect: 'manual',
      headers: { cookie: jar.header(), 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams(form).toString(),
    });
    jar.take(post);
    const loc = post.headers.get('location');
    if (loc === null) throw new Error(`IdP form ${step}: ${post.status} ${(await post.text()).slice(0, 300)}`);
    url = new URL(loc, url).href;
    if (url.includes('/_portcullis/callback')) return url;
  }
  throw new Error('IdP login did not come back to the gateway');
}

/**
 * Ends the IdP session of the browser holding `jar` through its end-session confirmation form: the IdP then
 * POSTs a back-channel logout token to the client's `backchannel_logout_uri` (the gateway).
 */
export async function endIdpSession(issuer: string, jar: Jar): Promise<number> {
  const end = await fetch(`${issuer}/session/end`, { headers: { cookie: jar.header() } });
  jar.take(end);
  const html = await end.text();
  const action = /action="([^"]+)"/.exec(html)?.[1] ?? '';
  const xsrf = /name="xsrf" value="([^"]+)"/.exec(html)?.[1] ?? '';
  const confirm = await fetch(new URL(action, issuer).href, {
    method: 'POST',
    redirect: 'manual',
    headers: { cookie: jar.header(), 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ xsrf, logout: 'yes' }).toString(),
  });
  return confirm.status;
}
