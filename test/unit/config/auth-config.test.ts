/**
 * `authProviders` and a route's `auth` block through the real loader: what loads (paths resolved against the
 * config file, the policy compiled, warnings), and every bad value refused with its key path, before anything
 * listens.
 */
import { mkdtempSync } from 'node:fs';
import { rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDevSigningKey } from '../../../src/authn/jwks-dev.js';
import { ConfigInvalid } from '../../../src/config/load.js';
import { loadConfigText } from '../../../src/load-config.js';
import type { HttpRuntimeListener, RuntimeConfig } from '../../../src/config/runtime.js';
import { GatewayError } from '../../../src/errors.js';
import { writePki, type TestPkiPaths } from '../../helpers/pki.js';

type Obj = Record<string, unknown>;

const dir = mkdtempSync(join(tmpdir(), 'portcullis-auth-config-'));
let pki: TestPkiPaths;

beforeAll(async () => {
  pki = await writePki(join(dir, 'pki'));
  const key = await createDevSigningKey();
  await writeFile(join(dir, 'jwks.json'), JSON.stringify(key.publicJwks));
  await writeFile(join(dir, 'not-json.json'), 'hello');
  await writeFile(join(dir, 'secret'), 's3cret\n');
  await writeFile(join(dir, 'empty-secret'), '\n');
  await writeFile(join(dir, 'tokens.json'), '{"tokens":[]}\n');
  await writeFile(join(dir, 'bad-tokens.json'), '{"tokens":[{"name":"x"}]}\n');
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const providers = (): Obj => ({
  corp: {
    type: 'jwt',
    issuer: 'https://idp.example/',
    audience: 'api',
    jwksFile: 'jwks.json',
    algorithms: ['ES256'],
  },
  opaque: {
    type: 'introspection',
    endpoint: 'https://idp.example/introspect',
    clientId: 'gw',
    clientSecretFile: 'secret',
  },
  team: { type: 'static', tokensFile: 'tokens.json' },
});

function config(opts: { authProviders?: unknown; routes?: Obj[] } = {}): string {
  return stringify({
    admin: { enabled: false },
    ...(opts.authProviders !== undefined ? { authProviders: opts.authProviders } : {}),
    listeners: [
      {
        name: 'main',
        listen: '127.0.0.1:0',
        tls: { cert: pki.server.cert, key: pki.server.key, clientCertificate: 'require', clientCa: pki.ca },
        routes: opts.routes ?? [{ id: 'echo', match: { pathPrefix: '/' }, upstream: 'builtin:echo' }],
      },
    ],
  });
}

const route = (auth: unknown, id = 'api'): Obj => ({
  id,
  match: { pathPrefix: '/' },
  upstream: 'builtin:echo',
  auth,
});

function load(text: string): RuntimeConfig {
  return loadConfigText(text, join(dir, 'portcullis.yaml'));
}

function refusal(text: string): ConfigInvalid {
  try {
    load(text);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigInvalid);
    return err as ConfigInvalid;
  }
  throw new Error('expected ConfigInvalid, the config loaded');
}

describe('authProviders and route auth: what loads', () => {
  it('resolves provider files against the config folder and compiles the route policy', () => {
    const cfg = load(
      config({
        authProviders: providers(),
        routes: [
          route({
            providers: ['team', 'corp', 'opaque'],
            scopes: ['read'],
            claims: { tenant: 'acme' },
            staleIfErrorSeconds: 30,
          }),
        ],
      }),
    );
    expect(cfg.authProviders.corp).toMatchObject({
      type: 'jwt',
      jwksFile: join(dir, 'jwks.json'),
      clockToleranceSeconds: 30,
    });
    expect(cfg.authProviders.opaque).toMatchObject({
      clientSecretFile: join(dir, 'secret'),
      authMethod: 'client_secret_basic',
    });
    expect(cfg.authProviders.team).toMatchObject({ tokensFile: join(dir, 'tokens.json') });
    const auth = (cfg.listeners[0] as HttpRuntimeListener).routeAuth.api!;
    expect(auth).toMatchObject({
      keyPath: 'listeners[0].routes[0].auth',
      providers: ['team', 'corp', 'opaque'],
      allowQueryToken: false,
      forwardToken: false,
      staleIfErrorSeconds: 30,
    });
    expect(auth.policy.requiredScopes).toEqual(['read']);
    const principal = {
      subject: 'a',
      scopes: ['read'],
      provider: 'corp',
      claims: { tenant: 'acme' },
      expiresAtMs: undefined,
    };
    expect(() => auth.policy.check(principal)).not.toThrow();
    expect(() => auth.policy.check({ ...principal, claims: { tenant: 'other' } })).toThrow(GatewayError);
    expect(Object.isFrozen(cfg.authProviders)).toBe(true);
    expect(Object.isFrozen((cfg.listeners[0] as HttpRuntimeListener).routeAuth)).toBe(true);
  });

  it('a route without auth has no entry; no authProviders is an empty map', () => {
    const cfg = load(config());
    expect(cfg.authProviders).toEqual({});
    expect(Object.keys((cfg.listeners[0] as HttpRuntimeListener).routeAuth)).toEqual([]);
  });

  it('warns about an unused provider and a route that accepts query tokens', () => {
    const cfg = load(
      config({ authProviders: providers(), routes: [route({ providers: ['corp'], allowQueryToken: true })] }),
    );
    expect(cfg.warnings).toContain(
      'authProviders.opaque is not used by any route (no route lists it in auth.providers)',
    );
    expect(cfg.warnings).toContain(
      'authProviders.team is not used by any route (no route lists it in auth.providers)',
    );
    expect(cfg.warnings.some((w) => w.includes('route "api" accepts a token in the query string'))).toBe(
      true,
    );
  });
});

describe('authProviders and route auth: every bad value is refused with its key path', () => {
  const withProvider = (name: string, p: Obj): Obj => ({ ...providers(), [name]: p });
  const jwt = (over: Obj): Obj => ({
    type: 'jwt',
    issuer: 'https://idp.example/',
    audience: 'api',
    jwksFile: 'jwks.json',
    algorithms: ['ES256'],
    ...over,
  });

  const oidc = (over: Obj): Obj => ({
    type: 'oidc',
    issuer: 'https://idp.example/',
    clientId: 'gw',
    clientSecretFile: 'secret',
    ...over,
  });

  it('refuses a login route on a plaintext listener, and workers other than 1 with an oidc provider', () => {
    const text = stringify({
      admin: { enabled: false },
      requireEncryption: false,
      workers: 2,
      authProviders: { sso: oidc({}) },
      listeners: [{ name: 'main', listen: '127.0.0.1:0', plaintext: true, routes: [route({ login: 'sso' })] }],
    });
    const err = refusal(text);
    expect(err.errors.find((e) => e.path === 'listeners[0].routes[0].auth.login')?.message).toMatch(/TLS listener/);
    expect(err.errors.find((e) => e.path === 'workers')?.message).toMatch(/authProviders.sso \(type oidc\)/);
  });

  it('loads a login route and adds the gateway login paths to its listener', () => {
    const c = load(config({ authProviders: withProvider('sso', oidc({})), routes: [route({ login: 'sso', providers: ['corp'] })] }));
    const l = c.listeners[0];
    if (l?.protocol !== 'http') throw new Error('no http listener');
    expect(l.routeAuth.api).toMatchObject({ login: 'sso', providers: ['corp'] });
    expect(l.routes.lookup('localhost', '/_portcullis/callback')?.upstream).toEqual({ kind: 'gateway', endpoint: 'login' });
    expect(l.routes.lookup('localhost', '/app')?.id).toBe('api');
  });

  it.each<[string, () => string, string, RegExp]>([
    [
      'a route naming a provider that does not exist',
      () => config({ authProviders: providers(), routes: [route({ providers: ['corp', 'nope'] })] }),
      'listeners[0].routes[0].auth.providers[1]',
      /the name of a provider in authProviders \(corp, opaque, team\)/,
    ],
    [
      'a route naming a provider when none is configured',
      () => config({ routes: [route({ providers: ['corp'] })] }),
      'listeners[0].routes[0].auth.providers[0]',
      /none is configured/,
    ],
    [
      'a provider listed twice',
      () => config({ authProviders: providers(), routes: [route({ providers: ['corp', 'corp'] })] }),
      'listeners[0].routes[0].auth.providers[1]',
      /each provider listed once/,
    ],
    [
      'an empty provider list',
      () => config({ authProviders: providers(), routes: [route({ providers: [] })] }),
      'listeners[0].routes[0].auth.providers',
      /at least one provider/,
    ],
    [
      'a scope with a space',
      () => config({ authProviders: providers(), routes: [route({ providers: ['corp'], scopes: ['a b'] })] }),
      'listeners[0].routes[0].auth.scopes[0]',
      /scope token/,
    ],
    [
      'staleIfErrorSeconds without an introspection provider',
      () =>
        config({
          authProviders: providers(),
          routes: [route({ providers: ['corp'], staleIfErrorSeconds: 10 })],
        }),
      'listeners[0].routes[0].auth.staleIfErrorSeconds',
      /only on a route with an introspection provider/,
    ],
    [
      'a misspelt auth key',
      () =>
        config({ authProviders: providers(), routes: [route({ providers: ['corp'], forwardTokens: true })] }),
      'listeners[0].routes[0].auth.forwardTokens',
      /did you mean "forwardToken"/,
    ],
    [
      'an HMAC algorithm',
      () => config({ authProviders: withProvider('corp', jwt({ algorithms: ['HS256'] })) }),
      'authProviders.corp.algorithms[0]',
      /asymmetric JWS algorithm/,
    ],
    [
      'a jwt provider without an issuer',
      () => config({ authProviders: withProvider('corp', jwt({ issuer: undefined })) }),
      'authProviders.corp.issuer',
      /required/,
    ],
    [
      'both jwksUri and jwksFile',
      () => config({ authProviders: withProvider('corp', jwt({ jwksUri: 'https://idp.example/jwks' })) }),
      'authProviders.corp.jwksFile',
      /only one of jwksUri or jwksFile/,
    ],
    [
      'a JWKS file that does not exist',
      () => config({ authProviders: withProvider('corp', jwt({ jwksFile: 'missing.json' })) }),
      'authProviders.corp.jwksFile',
      /a readable file \(ENOENT/,
    ],
    [
      'a JWKS file that is not a key set',
      () => config({ authProviders: withProvider('corp', jwt({ jwksFile: 'not-json.json' })) }),
      'authProviders.corp.jwksFile',
      /not JSON/,
    ],
    [
      'an introspection endpoint over plain http to another host',
      () =>
        config({
          authProviders: withProvider('opaque', {
            ...(providers().opaque as Obj),
            endpoint: 'http://idp.example/i',
          }),
        }),
      'authProviders.opaque.endpoint',
      /https:\/\//,
    ],
    [
      'an empty client secret file',
      () =>
        config({
          authProviders: withProvider('opaque', {
            ...(providers().opaque as Obj),
            clientSecretFile: 'empty-secret',
          }),
        }),
      'authProviders.opaque.clientSecretFile',
      /non-empty client secret/,
    ],
    [
      'a tokens file that does not parse',
      () =>
        config({ authProviders: withProvider('team', { type: 'static', tokensFile: 'bad-tokens.json' }) }),
      'authProviders.team.tokensFile',
      /readable tokens file/,
    ],
    [
      'an unknown provider type',
      () => config({ authProviders: withProvider('corp', { type: 'saml' }) }),
      'authProviders.corp.type',
      /jwt, introspection, static or oidc/,
    ],
    [
      'a provider name with a slash',
      () => config({ authProviders: { 'a/b': providers().team } }),
      'authProviders.a/b',
      /provider name/,
    ],
    [
      'auth.login naming a provider that is not oidc',
      () => config({ authProviders: providers(), routes: [route({ login: 'corp' })] }),
      'listeners[0].routes[0].auth.login',
      /type: oidc/,
    ],
    [
      'an oidc provider among the Bearer providers',
      () => config({ authProviders: withProvider('sso', oidc({})), routes: [route({ login: 'sso', providers: ['sso'] })] }),
      'listeners[0].routes[0].auth.providers[0]',
      /goes in login/,
    ],
    [
      'an oidc provider with neither a client secret nor a private key',
      () => config({ authProviders: withProvider('sso', oidc({ clientSecretFile: undefined })) }),
      'authProviders.sso.clientSecretFile',
      /exactly one of clientSecretFile .* or privateKeyFile/,
    ],
    [
      'an oidc provider with both a client secret and a private key',
      () => config({ authProviders: withProvider('sso', oidc({ privateKeyFile: 'secret' })) }),
      'authProviders.sso.privateKeyFile',
      /only one of clientSecretFile or privateKeyFile/,
    ],
    [
      'an oidc provider whose private key file is not a key',
      () => config({ authProviders: withProvider('sso', oidc({ clientSecretFile: undefined, privateKeyFile: 'secret' })) }),
      'authProviders.sso.privateKeyFile',
      /PKCS#8 PEM private key/,
    ],
    [
      'an oidc provider without openid among its scopes',
      () => config({ authProviders: withProvider('sso', oidc({ scopes: ['profile'] })) }),
      'authProviders.sso.scopes',
      /includes "openid"/,
    ],
    [
      'an oidc issuer in clear over a network',
      () => config({ authProviders: withProvider('sso', oidc({ issuer: 'http://idp.example/' })) }),
      'authProviders.sso.issuer',
      /https:\/\//,
    ],
    [
      'a route of its own under /_portcullis on a listener with a login',
      () =>
        config({
          authProviders: withProvider('sso', oidc({})),
          routes: [route({ login: 'sso' }), { id: 'mine', match: { pathPrefix: '/_portcullis/x' }, upstream: 'builtin:echo' }],
        }),
      'listeners[0].routes[1].match.pathPrefix',
      /outside \/_portcullis\//,
    ],
    [
      'an absolute timeout shorter than the idle one',
      () =>
        config({
          authProviders: withProvider('sso', oidc({ session: { idleTimeoutSeconds: 7200, absoluteTimeoutSeconds: 3600 } })),
        }),
      'authProviders.sso.session.absoluteTimeoutSeconds',
      /at least session.idleTimeoutSeconds/,
    ],
  ])('%s', (_label, text, path, expected) => {
    const err = refusal(text());
    const found = err.errors.find((e) => e.path === path);
    if (found === undefined) throw new Error(`no error at "${path}"; got:\n${err.message}`);
    expect(found.message).toMatch(expected);
  });

  it('an unknown key of an introspection provider lists its own keys and never echoes a secret', () => {
    const err = refusal(
      config({
        authProviders: withProvider('opaque', { ...(providers().opaque as Obj), clientSecret: 'hunter2' }),
      }),
    );
    const e = err.errors.find((x) => x.path === 'authProviders.opaque.clientSecret');
    // The keys listed are those of the provider's own type (the discriminator picks the branch).
    expect(e?.message).toMatch(/keys here: type, endpoint, clientId, clientSecretFile, authMethod/);
    expect(err.message).not.toContain('hunter2');
  });
});
