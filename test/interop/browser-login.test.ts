/**
 * A real browser through the login (issue 15 point 10): headless Chromium (Debian's `chromium`, driven by
 * playwright-core, never a downloaded browser) logs in through oidc-provider's login and consent forms,
 * reaches an upstream page, opens a WebSocket through its session, survives an access-token expiry by a
 * refresh, and logs out (RP-initiated, the IdP's confirmation form) to the gateway's logged-out page.
 * Skipped with a printed reason when /usr/bin/chromium or oidc-provider is missing.
 */
import { existsSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { loadOidcProvider } from '../helpers/oidc.js';
import { ssoProvider, startLoginIdp, untilLoginRedirects, type LoginIdp } from '../helpers/idp-login.js';
import { h1 } from '../helpers/clients.js';
import { startGateway, type TestGateway } from '../helpers/gateway.js';
import { startUpstream, type TestUpstream } from '../helpers/upstream.js';

const CHROMIUM = '/usr/bin/chromium';
const Provider = await loadOidcProvider('test/interop/browser-login.test.ts');
if (!existsSync(CHROMIUM)) console.warn(`browser-login skipped: ${CHROMIUM} is missing (apt-get install chromium)`);

describe.skipIf(Provider === undefined || !existsSync(CHROMIUM))('headless Chromium through the login', () => {
  let idp: LoginIdp;
  let up: TestUpstream;
  let gw: TestGateway;
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  let origin: string;

  beforeAll(async () => {
    up = await startUpstream();
    idp = await startLoginIdp(Provider!);
    gw = await startGateway((pki) => {
      idp.trust(pki.ca);
      return {
        authProviders: {
          sso: ssoProvider(idp),
        },
        listeners: [
          {
            name: 'web',
            listen: '127.0.0.1:0',
            tls: { cert: pki.server.cert, key: pki.server.key, clientCertificate: 'none' },
            routes: [{ id: 'app', match: { pathPrefix: '/' }, upstream: up.url, auth: { login: 'sso', claims: { groups: ['data-science'] } } }],
          },
        ],
      };
    });
    origin = `https://localhost:${gw.port()}`;
    await idp.configure([origin], 62);
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
    // The gateway's certificate is from the per-run test CA, which Chromium does not know.
    context = await browser.newContext({ ignoreHTTPSErrors: true });
    page = await context.newPage();
    await untilLoginRedirects(
      async () => (await h1(gw.port(), gw.pki, { client: undefined, path: '/', headers: { accept: 'text/html' } })).status,
    );
  }, 60_000);

  afterAll(async () => {
    await browser?.close();
    await gw?.close();
    await idp?.close();
    await up?.close();
  });

  it('logs in through the IdP form, reaches the upstream page, opens a WebSocket, refreshes, logs out', async () => {
    await page.goto(`${origin}/dashboard/status?tab=1`);
    expect(new URL(page.url()).origin).toBe(idp.issuer);
    await page.fill('input[name="login"]', 'alice');
    await page.fill('input[name="password"]', 'any');
    await page.click('button[type="submit"]');
    // The consent form, then back through the gateway's callback to the page first asked for.
    await page.click('button[type="submit"]');
    await page.waitForURL(`${origin}/dashboard/status?tab=1`);
    const seen = up.seen.at(-1);
    expect(seen?.url).toBe('/dashboard/status?tab=1');
    const cookies = await context.cookies(origin);
    const session = cookies.find((c) => c.name === '__Host-portcullis');
    expect(session).toMatchObject({ secure: true, httpOnly: true, sameSite: 'Lax', path: '/' });
    // The page's script cannot read it (HttpOnly) and the upstream never saw it.
    expect(await page.evaluate('document.cookie')).not.toContain('__Host-portcullis');

    const echo = await page.evaluate(
      (url) =>
        new Promise<string>((resolve, reject) => {
          const ws = new WebSocket(url);
          ws.onopen = () => ws.send('hello through the session');
          ws.onmessage = (e) => resolve(String(e.data));
          ws.onerror = () => reject(new Error('websocket failed'));
        }),
      `wss://localhost:${gw.port()}/ws`,
    );
    expect(echo).toBe('hello through the session');

    // The access token lives 62 s and is refreshed 60 s before it ends: due after 2 s.
    await new Promise((r) => setTimeout(r, 2_300));
    const before = idp.grants.get('refresh_token') ?? 0;
    const again = await page.goto(`${origin}/dashboard/again`);
    expect(again?.status()).toBe(200);
    expect(idp.grants.get('refresh_token') ?? 0).toBe(before + 1);

    await page.goto(`${origin}/_portcullis/logout`);
    // oidc-provider asks to confirm the sign-out, then sends the browser to the gateway's logged-out page.
    expect(new URL(page.url()).origin).toBe(idp.issuer);
    await page.click('button[autofocus], button[type="submit"]');
    await page.waitForURL(`${origin}/_portcullis/logged-out`);
    expect(await page.textContent('h1')).toBe('You are logged out');
    // The session is gone: the next page sends the browser to the IdP's login form again.
    await page.goto(`${origin}/dashboard/status`);
    expect(new URL(page.url()).origin).toBe(idp.issuer);
    expect(await page.locator('input[name="login"]').count()).toBe(1);
  }, 60_000);
});
