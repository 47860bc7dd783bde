/**
 * Threat model #57 over the wire: a flood of random opaque tokens (every one a cache miss) against a slow
 * IdP. The gateway holds at most `maxConcurrentCalls` introspection calls; every miss past it is refused
 * 503 `ERR_AUTHN_UNAVAILABLE` at once, without an IdP call and without reaching the upstream, while a token
 * already in the cache keeps working and the IdP is asked again as soon as the calls finish.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { h2, h2session } from '../helpers/clients.js';
import { startGateway, tlsListener, type TestGateway } from '../helpers/gateway.js';
import { createFakeIdp, type FakeIdp } from '../helpers/idp.js';
import { startUpstream, type TestUpstream } from '../helpers/upstream.js';

const CAP = 4;
const IDP_DELAY_MS = 600;
const FLOOD = 60;

let idp: FakeIdp;
let up: TestUpstream;
let gw: TestGateway;
let files: string;

beforeAll(async () => {
  idp = await createFakeIdp();
  await idp.listen();
  up = await startUpstream();
  files = await mkdtemp(join(tmpdir(), 'portcullis-flood-'));
  const secretFile = join(files, 'introspection-secret');
  await writeFile(secretFile, `${idp.clientSecret}\n`, { mode: 0o600 });
  gw = await startGateway((pki) => ({
    authProviders: {
      opaque: {
        type: 'introspection',
        endpoint: idp.introspectionUri,
        clientId: idp.clientId,
        clientSecretFile: secretFile,
        timeoutMs: 5_000,
        maxConcurrentCalls: CAP,
      },
    },
    listeners: [
      tlsListener(pki, {
        routes: [
          { id: 'api', match: { pathPrefix: '/' }, upstream: up.url, auth: { providers: ['opaque'] } },
        ],
      }),
    ],
  }));
});

afterAll(async () => {
  await gw?.close();
  await up?.close();
  await idp?.close();
  if (files) await rm(files, { recursive: true, force: true });
});

describe(`introspection flood: maxConcurrentCalls ${CAP}, IdP answering after ${IDP_DELAY_MS} ms (threat model #57)`, () => {
  it('past the cap, random tokens get 503 at once and never reach the IdP or the upstream; a cached token still passes', async () => {
    const session = h2session(gw.port(), gw.pki);
    try {
      const cached = idp.issueOpaque();
      expect((await h2(session, { ':path': '/warm', authorization: `Bearer ${cached}` })).status).toBe(200);

      idp.setFault({ slowMs: IDP_DELAY_MS }, 'introspection');
      const callsBefore = idp.counts.introspection;
      const seenBefore = up.seen.length;
      const started = Date.now();
      const flood = Array.from({ length: FLOOD }, async (_, i) => {
        const token = randomBytes(24).toString('base64url');
        const r = await h2(session, { ':path': `/flood-${i}`, authorization: `Bearer ${token}` });
        return { status: r.status, ms: Date.now() - started };
      });
      // While the flood's calls hang at the IdP, the cached token is answered from the cache.
      const during = await h2(session, {
        ':path': '/cached-during-flood',
        authorization: `Bearer ${cached}`,
      });
      const duringMs = Date.now() - started;
      const results = await Promise.all(flood);

      expect(during.status).toBe(200);
      expect(duringMs).toBeLessThan(IDP_DELAY_MS);
      // CAP calls went to the IdP (random tokens are unknown there: 401 after the delay); every other one
      // was shed with 503 before the IdP could have answered anything.
      expect(idp.counts.introspection - callsBefore).toBe(CAP);
      const shed = results.filter((r) => r.status === 503);
      const asked = results.filter((r) => r.status === 401);
      expect(asked).toHaveLength(CAP);
      expect(shed).toHaveLength(FLOOD - CAP);
      expect(Math.max(...shed.map((r) => r.ms))).toBeLessThan(IDP_DELAY_MS);
      // No flood request reached the upstream; only the cached one did.
      expect(up.seen.slice(seenBefore).map((s) => s.url)).toEqual(['/cached-during-flood']);
      const lines = gw.logs().filter((l) => l.msg === 'request' && String(l.path).startsWith('/flood-'));
      expect(lines.filter((l) => l.status === 503 && l.reason === 'ERR_AUTHN_UNAVAILABLE')).toHaveLength(
        FLOOD - CAP,
      );
      expect(
        await gw.metric('portcullis_auth_decisions_total', { route: 'api', result: 'ERR_AUTHN_UNAVAILABLE' }),
      ).toBe(FLOOD - CAP);

      // The calls are done: a new token is introspected again.
      idp.setFault('ok', 'introspection');
      const fresh = idp.issueOpaque();
      expect((await h2(session, { ':path': '/after-flood', authorization: `Bearer ${fresh}` })).status).toBe(
        200,
      );
    } finally {
      session.close();
    }
  });
});
