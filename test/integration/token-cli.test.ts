/**
 * The `token` commands through the built binary (dist/, built by test/global-setup.ts), end to end:
 *
 * - `token create | list | revoke` on a tokens file: the token printed once, only its hash stored (mode
 *   0600), and a running gateway (the binary, `type: static` provider) accepting a token created while it
 *   runs and refusing it once revoked, each within about a second (the provider re-reads the file);
 * - `certs init` + `token mint` + the embedded default config (a copy of config/portcullis.yaml pointing at a
 *   fresh certs-dev, ports 0): the README's curl lines — certificate + token → 200, no token → 401.
 */
import { type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { decodeJwt, decodeProtectedHeader } from 'jose';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { killAll, listeningPorts, runCli, startBinary, type StartedBinary } from '../helpers/binary.js';
import { writePki, type TestPkiPaths } from '../helpers/pki.js';

const EXIT = { ok: 0, failure: 1, usage: 2, config: 3 } as const;

let dir: string;
const children = new Set<ChildProcess>();

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'portcullis-token-cli-'));
});

afterAll(async () => {
  killAll(children);
  await rm(dir, { recursive: true, force: true });
});

/** A started gateway child (see test/helpers/binary.ts) and the port of its listener. */
interface Running extends StartedBinary {
  port: number;
}

/** Starts `portcullis start --config file` and waits for the `listening` line of `name`. */
async function startGateway(file: string, name: string): Promise<Running> {
  const run = startBinary(file);
  children.add(run.child);
  return { ...run, port: (await listeningPorts(run, { name })).port };
}

async function stop(gw: Running): Promise<void> {
  gw.child.kill('SIGTERM');
  expect((await gw.exited).code).toBe(EXIT.ok);
}

/** GET over mTLS with PEM files; resolves with status, headers and body. */
function get(
  port: number,
  files: { ca: string; cert: string; key: string },
  path: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }> {
  return new Promise((res, rej) => {
    const req = httpsRequest(
      {
        host: '127.0.0.1',
        port,
        path,
        servername: 'localhost',
        headers: { host: `localhost:${port}`, ...headers },
        ca: readFileSync(files.ca),
        cert: readFileSync(files.cert),
        key: readFileSync(files.key),
        agent: false,
      },
      (r) => {
        let body = '';
        r.on('data', (c: Buffer) => (body += c.toString()));
        r.on('end', () => res({ status: r.statusCode ?? 0, headers: r.headers, body }));
      },
    );
    req.on('error', rej);
    req.end();
  });
}

/** Polls `fn` every 100 ms until it returns `want` or `ms` pass; returns the last value and the time taken. */
async function until<T>(fn: () => Promise<T>, want: T, ms: number): Promise<{ value: T; elapsed: number }> {
  const start = Date.now();
  let value = await fn();
  while (value !== want && Date.now() - start < ms) {
    await new Promise((r) => setTimeout(r, 100));
    value = await fn();
  }
  return { value, elapsed: Date.now() - start };
}

const sha256 = (t: string): string => createHash('sha256').update(t).digest('hex');

describe('portcullis token create | list | revoke', () => {
  let file: string;
  let alice: string;

  beforeAll(async () => {
    await mkdir(join(dir, 'tokens'), { recursive: true });
    file = join(dir, 'tokens', 'team.json');
  });

  it('create prints the token once on stdout and stores only its hash (file mode 0600)', async () => {
    const r = await runCli([
      'token',
      'create',
      '--name',
      'alice-laptop',
      '--expires-in',
      '30d',
      '--scope',
      'read write',
      '--file',
      file,
    ]);
    expect(r.code).toBe(EXIT.ok);
    const lines = r.stdout.split('\n').filter((l) => l !== '');
    expect(lines).toHaveLength(1);
    alice = lines[0]!;
    expect(alice).toMatch(/^pcs_[A-Za-z0-9_-]{43}$/);
    expect(r.stderr).toContain('"alice-laptop"');
    expect(r.stderr).not.toContain(alice);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    const text = await readFile(file, 'utf8');
    expect(text).not.toContain(alice);
    const stored = (JSON.parse(text) as { tokens: Record<string, unknown>[] }).tokens;
    expect(stored).toHaveLength(1);
    expect(Object.keys(stored[0]!).sort()).toEqual(['createdAt', 'expiresAt', 'name', 'scopes', 'sha256']);
    expect(stored[0]).toMatchObject({
      name: 'alice-laptop',
      sha256: sha256(alice),
      scopes: ['read', 'write'],
    });
    const lifetime = Date.parse(stored[0]!.expiresAt as string) - Date.parse(stored[0]!.createdAt as string);
    expect(lifetime).toBe(30 * 86_400_000);
  });

  it('a second live token with the same name is refused (exit 1), nothing printed on stdout', async () => {
    const before = await readFile(file, 'utf8');
    const r = await runCli(['token', 'create', '--name', 'alice-laptop', '--file', file]);
    expect(r.code).toBe(EXIT.failure);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain('already exists');
    expect(await readFile(file, 'utf8')).toBe(before);
  });

  it('create without --expires-in expires in 90 days; "never" is allowed with a warning', async () => {
    const r = await runCli(['token', 'create', '--name', 'ci', '--file', file]);
    expect(r.code).toBe(EXIT.ok);
    const never = await runCli([
      'token',
      'create',
      '--name',
      'forever',
      '--expires-in',
      'never',
      '--file',
      file,
    ]);
    expect(never.code).toBe(EXIT.ok);
    expect(never.stderr).toContain('never expires');
    const list = JSON.parse((await runCli(['token', 'list', '--json', '--file', file])).stdout) as {
      name: string;
      createdAt: string;
      expiresAt?: string;
    }[];
    const ci = list.find((t) => t.name === 'ci')!;
    expect(Date.parse(ci.expiresAt!) - Date.parse(ci.createdAt)).toBe(90 * 86_400_000);
    expect(list.find((t) => t.name === 'forever')!.expiresAt).toBeUndefined();
  });

  it('list shows names, status, dates and a hash prefix, never a token', async () => {
    const r = await runCli(['token', 'list', '--file', file]);
    expect(r.code).toBe(EXIT.ok);
    expect(r.stdout).toMatch(/^NAME\s+STATUS\s+CREATED\s+EXPIRES\s+SCOPES\s+SHA256$/m);
    expect(r.stdout).toMatch(
      new RegExp(
        `^alice-laptop\\s+active\\s+\\S+\\s+\\S+\\s+read write\\s+${sha256(alice).slice(0, 12)}\\.\\.\\.$`,
        'm',
      ),
    );
    expect(r.stdout).toMatch(/^forever\s+active\s+\S+\s+never\s+-/m);
    expect(r.stdout).not.toContain(alice);
    expect(r.stdout).not.toContain(sha256(alice));
  });

  it('revoke marks it revoked (kept for audit); revoking again is an error', async () => {
    const r = await runCli(['token', 'revoke', '--name', 'alice-laptop', '--file', file]);
    expect(r.code).toBe(EXIT.ok);
    expect(r.stdout).toContain('revoked 1 token(s)');
    expect((await runCli(['token', 'list', '--file', file])).stdout).toMatch(/^alice-laptop\s+revoked/m);
    const again = await runCli(['token', 'revoke', '--name', 'alice-laptop', '--file', file]);
    expect(again.code).toBe(EXIT.failure);
    expect(again.stderr).toContain('no token named "alice-laptop"');
  });

  it.each<[string[], RegExp]>([
    [['token', 'create', '--name', 'x'], /--file FILE is required/],
    [['token', 'create', '--file', 'f'], /--name NAME is required/],
    [['token', 'create', '--name', 'x', '--file', 'f', '--expires-in', '30 days'], /--expires-in: duration/],
    [['token', 'list'], /--file FILE is required/],
    [['token', 'revoke', '--file', 'f'], /--name NAME is required/],
    [['token', 'mint'], /--sub SUBJECT is required/],
    [['token', 'mint', '--sub', 'a', '--ttl', 'forever'], /--ttl: duration/],
    [['token', 'burn'], /token: expected create, list, revoke or mint, got "burn"/],
  ])('%j → exit 2 with the reason', async (argv, reason) => {
    const r = await runCli(argv);
    expect(r.code).toBe(EXIT.usage);
    expect(r.stderr).toMatch(reason);
    expect(r.stdout).toBe('');
  });

  it.each<[string[], RegExp]>([
    [['token', 'list', '--file', '/nonexistent/tokens.json'], /not found/],
    [['token', 'create', '--name', 'bad name', '--file', '/tmp/x.json'], /token name "bad name"/],
    [
      ['token', 'mint', '--sub', 'alice', '--out', '/nonexistent'],
      /jwt-signing-key\.pem not found: run `portcullis certs init` first/,
    ],
  ])('%j → exit 1 naming what is wrong', async (argv, reason) => {
    const r = await runCli(argv);
    expect(r.code).toBe(EXIT.failure);
    expect(r.stderr).toMatch(reason);
    expect(r.stdout).toBe('');
  });
});

describe('a running gateway and its static tokens file', () => {
  let pki: TestPkiPaths;
  let file: string;
  let gw: Running;
  const client = (): { ca: string; cert: string; key: string } => ({
    ca: pki.ca,
    cert: pki.clients.alice.cert,
    key: pki.clients.alice.key,
  });

  beforeAll(async () => {
    pki = await writePki(join(dir, 'static-pki'));
    file = join(dir, 'static-tokens.json');
    expect((await runCli(['token', 'create', '--name', 'first', '--file', file])).code).toBe(EXIT.ok);
    const config = join(dir, 'static.yaml');
    await writeFile(
      config,
      stringify({
        admin: { enabled: false },
        authProviders: { team: { type: 'static', tokensFile: file } },
        listeners: [
          {
            name: 'main',
            listen: '127.0.0.1:0',
            tls: {
              cert: pki.server.cert,
              key: pki.server.key,
              clientCertificate: 'require',
              clientCa: pki.ca,
            },
            routes: [
              {
                id: 'echo',
                match: { pathPrefix: '/' },
                upstream: 'builtin:echo',
                auth: { providers: ['team'], scopes: ['deploy'] },
              },
            ],
          },
        ],
      }),
    );
    gw = await startGateway(config, 'main');
  });

  afterAll(async () => {
    await stop(gw);
  });

  it('a token created while it runs works within ~1 s; once revoked it is refused within ~1 s', async () => {
    const created = await runCli([
      'token',
      'create',
      '--name',
      'deployer',
      '--scope',
      'deploy',
      '--file',
      file,
    ]);
    expect(created.code).toBe(EXIT.ok);
    const token = created.stdout.trim();
    const status = async (): Promise<number> =>
      (await get(gw.port, client(), '/x', { authorization: `Bearer ${token}` })).status;
    const accepted = await until(status, 200, 5_000);
    console.log(`static token accepted ${accepted.elapsed} ms after token create`);
    expect(accepted.value).toBe(200);
    // The once-a-second file check, plus up to two fresh TLS requests to the child on a loaded machine.
    expect(accepted.elapsed).toBeLessThanOrEqual(3_000);
    const echo = JSON.parse(
      (await get(gw.port, client(), '/x', { authorization: `Bearer ${token}` })).body,
    ) as {
      headers: Record<string, string>;
    };
    expect(echo.headers).toMatchObject({
      'x-auth-subject': 'deployer',
      'x-auth-scopes': 'deploy',
      'x-auth-provider': 'team',
    });
    expect(echo.headers.authorization).toBeUndefined();

    expect((await runCli(['token', 'revoke', '--name', 'deployer', '--file', file])).code).toBe(EXIT.ok);
    const refused = await until(status, 401, 5_000);
    console.log(`static token refused ${refused.elapsed} ms after token revoke`);
    expect(refused.value).toBe(401);
    // As above: one file check plus up to two requests.
    expect(refused.elapsed).toBeLessThanOrEqual(3_000);
    expect(JSON.stringify(gw.lines)).not.toContain(token);
  });

  it('a token without the route scope → 403; no token → 401', async () => {
    const created = await runCli(['token', 'create', '--name', 'reader', '--scope', 'read', '--file', file]);
    const token = created.stdout.trim();
    const r = await until(
      async () => (await get(gw.port, client(), '/x', { authorization: `Bearer ${token}` })).status,
      403,
      3_000,
    );
    expect(r.value).toBe(403);
    const none = await get(gw.port, client(), '/x');
    expect(none.status).toBe(401);
    expect(none.headers['www-authenticate']).toBe('Bearer realm="portcullis"');
  });
});

describe('the embedded default config: certs init + token mint (the README curl lines)', () => {
  let root: string;
  let certs: string;
  let gw: Running;
  const client = (): { ca: string; cert: string; key: string } => ({
    ca: join(certs, 'ca.pem'),
    cert: join(certs, 'client-alice.pem'),
    key: join(certs, 'client-alice-key.pem'),
  });

  beforeAll(async () => {
    root = join(dir, 'embedded');
    certs = join(root, 'certs-dev');
    await mkdir(join(root, 'config'), { recursive: true });
    const init = await runCli(['certs', 'init', '--out', certs]);
    expect(init.code).toBe(EXIT.ok);
    const yaml = (await readFile(resolve('config/portcullis.yaml'), 'utf8'))
      .replace('listen: 127.0.0.1:9090', 'listen: 127.0.0.1:0')
      .replace('listen: 127.0.0.1:8443', 'listen: 127.0.0.1:0');
    expect(yaml).toContain('jwksFile: ../certs-dev/jwks.json');
    await writeFile(join(root, 'config', 'portcullis.yaml'), yaml);
    gw = await startGateway(join(root, 'config', 'portcullis.yaml'), 'default');
  });

  afterAll(async () => {
    await stop(gw);
  });

  it('certs init wrote the ES256 signing key (0600) and its JWKS (0644)', async () => {
    expect(statSync(join(certs, 'jwt-signing-key.pem')).mode & 0o777).toBe(0o600);
    expect(statSync(join(certs, 'jwks.json')).mode & 0o777).toBe(0o644);
    const jwks = JSON.parse(await readFile(join(certs, 'jwks.json'), 'utf8')) as {
      keys: Record<string, unknown>[];
    };
    expect(jwks.keys).toHaveLength(1);
    expect(jwks.keys[0]).toMatchObject({ kty: 'EC', crv: 'P-256', alg: 'ES256', use: 'sig' });
    expect(jwks.keys[0]).not.toHaveProperty('d');
  });

  it('token mint signs a dev JWT: iss https://portcullis.dev/, aud portcullis-dev, typ at+jwt, sub, scope, exp', async () => {
    const r = await runCli([
      'token',
      'mint',
      '--sub',
      'alice',
      '--scope',
      'read write',
      '--ttl',
      '2h',
      '--out',
      certs,
    ]);
    expect(r.code).toBe(EXIT.ok);
    const jwt = r.stdout.trim();
    const jwks = JSON.parse(await readFile(join(certs, 'jwks.json'), 'utf8')) as { keys: { kid: string }[] };
    expect(decodeProtectedHeader(jwt)).toEqual({ alg: 'ES256', kid: jwks.keys[0]!.kid, typ: 'at+jwt' });
    const claims = decodeJwt(jwt);
    expect(claims).toMatchObject({
      iss: 'https://portcullis.dev/',
      aud: 'portcullis-dev',
      sub: 'alice',
      scope: 'read write',
    });
    expect(claims.exp! - claims.iat!).toBe(7200);
  });

  it('certificate + token → 200 with the principal upstream; certificate without token → 401 with the challenge', async () => {
    const jwt = (
      await runCli(['token', 'mint', '--sub', 'alice', '--scope', 'read', '--out', certs])
    ).stdout.trim();
    const ok = await get(gw.port, client(), '/hello', { authorization: `Bearer ${jwt}` });
    expect(ok.status).toBe(200);
    const echo = JSON.parse(ok.body) as { headers: Record<string, string> };
    expect(echo.headers).toMatchObject({
      'x-auth-subject': 'alice',
      'x-auth-scopes': 'read',
      'x-auth-provider': 'dev-jwt',
    });
    expect(echo.headers['x-forwarded-client-cert']).toContain('CN=alice');
    expect(echo.headers.authorization).toBeUndefined();

    const none = await get(gw.port, client(), '/hello');
    expect(none.status).toBe(401);
    expect(none.headers['www-authenticate']).toBe('Bearer realm="portcullis"');
    expect(none.body).toBe('Unauthorized: a Bearer token is required.\n');

    // A token from another key (a second certs init) is refused: the JWKS decides, not the token.
    const other = join(root, 'other-certs');
    expect((await runCli(['certs', 'init', '--out', other])).code).toBe(EXIT.ok);
    const foreign = (await runCli(['token', 'mint', '--sub', 'alice', '--out', other])).stdout.trim();
    const bad = await get(gw.port, client(), '/hello', { authorization: `Bearer ${foreign}` });
    expect(bad.status).toBe(401);
    expect(bad.headers['www-authenticate']).toBe('Bearer realm="portcullis", error="invalid_token"');
    expect(JSON.stringify(gw.lines)).not.toContain(jwt);
  });
});
