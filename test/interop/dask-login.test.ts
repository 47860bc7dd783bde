/**
 * A real Dask scheduler's HTTP pages behind a login route (issue 15 point 10; the README's "Put a login in
 * front of the Dask dashboard"): Debian's python3-distributed scheduler and worker, oidc-provider as the IdP,
 * the gateway configured as the README says. A browser is sent to log in and then sees the scheduler's
 * workers page; a person outside the group, an API client without a credential and a session after logout
 * are refused, and none of those requests reaches the scheduler (its own access log says so).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { daskUnavailableReason, startDaskCluster, type DaskCluster } from '../helpers/dask.js';
import { loadOidcProvider } from '../helpers/oidc.js';
import { driveIdpLogin, ssoProvider, startLoginIdp, untilLoginRedirects, type LoginIdp } from '../helpers/idp-login.js';
import { startGateway, type TestGateway } from '../helpers/gateway.js';
import { h1, type Reply } from '../helpers/clients.js';

const unavailable = daskUnavailableReason();
if (unavailable !== undefined) console.warn(`test/interop/dask-login.test.ts skipped: ${unavailable}`);
const Provider = await loadOidcProvider('test/interop/dask-login.test.ts');
const HTML = 'text/html';

describe.skipIf(unavailable !== undefined || Provider === undefined)('a Dask scheduler behind a login route', () => {
  let cluster: DaskCluster;
  let idp: LoginIdp;
  let gw: TestGateway;

  const get = (path: string, headers: Record<string, string> = {}): Promise<Reply> =>
    h1(gw.port(), gw.pki, { client: undefined, path, headers });

  const sessionOf = (r: Reply): string => {
    const lines = ([] as string[]).concat(r.headers['set-cookie'] ?? []);
    return lines.find((l) => l.startsWith('__Host-portcullis='))?.split(';')[0] ?? '';
  };

  async function login(user: string): Promise<string> {
    const start = await get('/info/main/workers.html', { accept: HTML });
    expect(start.status).toBe(302);
    const pre = ([] as string[]).concat(start.headers['set-cookie'] ?? [])[0]?.split(';')[0] ?? '';
    const callback = new URL(await driveIdpLogin(start.headers.location as string, user));
    const back = await get(callback.pathname + callback.search, { cookie: pre, accept: HTML });
    expect(back.status).toBe(302);
    expect(back.headers.location).toBe(`https://localhost:${gw.port()}/info/main/workers.html`);
    return sessionOf(back);
  }

  beforeAll(async () => {
    cluster = await startDaskCluster();
    idp = await startLoginIdp(Provider!);
    gw = await startGateway((pki) => {
      idp.trust(pki.ca);
      return {
        log: { level: 'debug', access: true },
        authProviders: { 'corp-sso': ssoProvider(idp) },
        listeners: [
          {
            name: 'web',
            listen: '127.0.0.1:0',
            tls: { cert: pki.server.cert, key: pki.server.key, clientCertificate: 'none' },
            routes: [
              {
                id: 'dashboard',
                match: { pathPrefix: '/' },
                upstream: `http://127.0.0.1:${cluster.schedulerHttpPort}`,
                auth: { login: 'corp-sso', claims: { groups: ['data-science'] } },
              },
            ],
          },
        ],
      };
    });
    await idp.configure([`https://localhost:${gw.port()}`], 3600);
    await untilLoginRedirects(async () => (await get('/', { accept: HTML })).status);
  }, 120_000);

  afterAll(async () => {
    await gw?.close();
    await idp?.close();
    await cluster?.stop();
  });

  it('sends a browser to log in, then shows the scheduler’s workers page through the session', async () => {
    const before = cluster.httpRequests().length;
    const cookie = await login('alice');
    expect(cluster.httpRequests().length).toBe(before);
    const page = await get('/info/main/workers.html', { cookie, accept: HTML });
    expect(page.status).toBe(200);
    expect(page.body).toContain(cluster.workerAddress);
    await expect.poll(() => cluster.httpRequests().slice(before)).toEqual([expect.stringMatching(/^200 GET \/info\/main\/workers\.html /)]);
    const health = await get('/health', { cookie });
    expect(health.status).toBe(200);
    expect(health.body).toBe('ok');

    const out = await get('/_portcullis/logout', { cookie, accept: HTML });
    expect(out.status).toBe(302);
    const after = cluster.httpRequests().length;
    expect((await get('/health', { cookie })).status).toBe(401);
    expect((await get('/info/main/workers.html', { cookie, accept: HTML })).status).toBe(302);
    expect(cluster.httpRequests().length).toBe(after);
  }, 60_000);

  it('refuses a person outside the group and an API client without a credential; nothing reaches Dask', async () => {
    const cookie = await login('mallory');
    const before = cluster.httpRequests().length;
    const page = await get('/info/main/workers.html', { cookie, accept: HTML });
    expect(page.status).toBe(403);
    expect(page.body).toContain('href="/_portcullis/login?rd=%2Finfo%2Fmain%2Fworkers.html"');
    expect((await get('/health')).status).toBe(401);
    await new Promise((r) => setTimeout(r, 200));
    expect(cluster.httpRequests().length).toBe(before);
  }, 60_000);
});
