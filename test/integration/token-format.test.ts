/**
 * Issue 12 point 8, end to end over HTTP/1.1 and HTTP/2: a credential that is not token68 (RFC 7235 §2.1,
 * RFC 6750 §2.1) is `400 invalid_request` before any provider is asked; a JWS in a form the gateway does
 * not accept (`b64` other than true, RFC 7797; any `crit`, RFC 7515 §4.1.11), even signed with the IdP's
 * real key, is `401 invalid_token`. Each refusal is logged with its reason code and counted by reason; the
 * upstream sees nothing.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { h1, h2, h2session, type Reply } from '../helpers/clients.js';
import { startGateway, tlsListener, type TestGateway } from '../helpers/gateway.js';
import { createFakeIdp, type FakeIdp } from '../helpers/idp.js';
import { startUpstream, type TestUpstream } from '../helpers/upstream.js';

const AUD = 'fmt-api';
type Proto = 'h1' | 'h2';

let idp: FakeIdp;
let up: TestUpstream;
let gw: TestGateway;

beforeAll(async () => {
  idp = await createFakeIdp();
  await idp.listen();
  up = await startUpstream();
  gw = await startGateway((pki) => ({
    authProviders: {
      idp: { type: 'jwt', issuer: idp.issuer, audience: AUD, jwksUri: idp.jwksUri, algorithms: ['ES256'] },
    },
    listeners: [
      tlsListener(pki, {
        routes: [
          { id: 'api', match: { pathPrefix: '/api' }, upstream: up.url, auth: { providers: ['idp'] } },
        ],
      }),
    ],
  }));
});

afterAll(async () => {
  await gw?.close();
  await up?.close();
  await idp?.close();
});

/** One request with `authorization` on a fresh connection; the reply and whether the upstream saw it. */
async function send(proto: Proto, authorization: string): Promise<{ reply: Reply; reached: boolean }> {
  const before = up.seen.length;
  let reply: Reply;
  if (proto === 'h1') reply = await h1(gw.port(), gw.pki, { path: '/api/x', headers: { authorization } });
  else {
    const s = h2session(gw.port(), gw.pki);
    try {
      reply = await h2(s, { ':path': '/api/x', authorization });
    } finally {
      s.close();
    }
  }
  return { reply, reached: up.seen.length > before };
}

const decisions = (result: string): Promise<number> =>
  gw.metric('portcullis_auth_decisions_total', { route: 'api', result });
const denials = (reason: string): Promise<number> =>
  gw.metric('portcullis_http_denials_total', { listener: 'main', reason });
/** Access-log lines of refused requests with this reason, their `detail`s. */
const logged = (reason: string): string[] =>
  gw
    .logs()
    .filter((l) => l.msg === 'request' && l.path === '/api/x' && l.reason === reason)
    .map((l) => String(l.detail));

const b64url = (v: unknown): string => Buffer.from(JSON.stringify(v)).toString('base64url');
const claims = (): Record<string, unknown> => ({
  iss: idp.issuer,
  aud: AUD,
  sub: 'alice',
  exp: Math.floor(Date.now() / 1000) + 600,
});

describe('a credential that is not token68 → 400 invalid_request (RFC 7235 §2.1, RFC 6750 §2.1)', () => {
  it.each<[Proto, string, string]>([
    ['h1', 'raw JSON', 'Bearer {"sub":"admin","scope":"admin"}'],
    ['h2', 'raw JSON', 'Bearer {"sub":"admin","scope":"admin"}'],
    ['h1', 'a space inside', 'Bearer eyJhbGciOiJFUzI1NiJ9 eyJzdWIiOiJhIn0'],
    ['h2', 'a space inside', 'Bearer eyJhbGciOiJFUzI1NiJ9 eyJzdWIiOiJhIn0'],
    ['h1', 'two spaces after Bearer', 'Bearer  abc'],
    ['h2', 'two spaces after Bearer', 'Bearer  abc'],
    ['h1', 'a quoted string', 'Bearer "abc"'],
    ['h2', 'an auth-param list', 'Bearer token="abc", realm="x"'],
  ])(
    '%s: %s → 400, challenge invalid_request, counted and logged, nothing forwarded',
    async (proto, _n, value) => {
      const counted = await decisions('ERR_AUTHN_MALFORMED');
      const denied = await denials('ERR_AUTHN_MALFORMED');
      const lines = logged('ERR_AUTHN_MALFORMED').length;
      const jwks = idp.counts.jwks;
      const { reply, reached } = await send(proto, value);
      expect(reply.status).toBe(400);
      expect(reply.headers['www-authenticate']).toBe('Bearer realm="portcullis", error="invalid_request"');
      expect(reached).toBe(false);
      expect(idp.counts.jwks).toBe(jwks);
      expect(await decisions('ERR_AUTHN_MALFORMED')).toBe(counted + 1);
      expect(await denials('ERR_AUTHN_MALFORMED')).toBe(denied + 1);
      await expect.poll(() => logged('ERR_AUTHN_MALFORMED').length).toBe(lines + 1);
      expect(logged('ERR_AUTHN_MALFORMED').at(-1)).toMatch(/token68/);
    },
  );
});

describe('a JWS the gateway does not accept → 401 invalid_token, even with a valid signature', () => {
  const cases: [string, Record<string, unknown>, RegExp][] = [
    ['b64:false with crit ["b64"] (RFC 7797)', { b64: false, crit: ['b64'] }, /b64/],
    ['b64:false without crit', { b64: false }, /b64/],
    ['an unknown crit parameter', { crit: ['urn:example:x'], 'urn:example:x': 1 }, /crit/],
    ['crit ["b64"] with b64:true', { crit: ['b64'], b64: true }, /crit/],
  ];
  it.each<[Proto, ...(typeof cases)[number]]>([
    ...cases.map((c): [Proto, ...(typeof cases)[number]] => ['h1', ...c]),
    ...cases.map((c): [Proto, ...(typeof cases)[number]] => ['h2', ...c]),
  ])('%s: %s → 401, counted by reason, logged, nothing forwarded', async (proto, _n, header, why) => {
    const token = await idp.signUnchecked(header, b64url(claims()));
    const counted = await decisions('ERR_AUTHN_INVALID_TOKEN');
    const denied = await denials('ERR_AUTHN_INVALID_TOKEN');
    const lines = logged('ERR_AUTHN_INVALID_TOKEN').length;
    const { reply, reached } = await send(proto, `Bearer ${token}`);
    expect(reply.status).toBe(401);
    expect(reply.headers['www-authenticate']).toBe('Bearer realm="portcullis", error="invalid_token"');
    expect(reached).toBe(false);
    expect(await decisions('ERR_AUTHN_INVALID_TOKEN')).toBe(counted + 1);
    expect(await denials('ERR_AUTHN_INVALID_TOKEN')).toBe(denied + 1);
    await expect.poll(() => logged('ERR_AUTHN_INVALID_TOKEN').length).toBe(lines + 1);
    expect(logged('ERR_AUTHN_INVALID_TOKEN').at(-1)).toMatch(why);
  });

  it.each<Proto>(['h1', 'h2'])(
    '%s: the control, the same signer with an ordinary header → 200',
    async (proto) => {
      const token = await idp.signUnchecked({}, b64url(claims()));
      const { reply, reached } = await send(proto, `Bearer ${token}`);
      expect(reply.status).toBe(200);
      expect(reached).toBe(true);
    },
  );

  it('no refusal above was a 500', async () => {
    expect(await denials('ERR_INTERNAL')).toBe(0);
  });
});
