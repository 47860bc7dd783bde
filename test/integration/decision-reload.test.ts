/**
 * A decision listener across a reload (issue 16): a new route table applies to the next decision, the
 * listener keeps its address; a decision listener on a Unix socket; `portcullis check` reads a decision
 * config.
 */
import { request as httpRequest, type OutgoingHttpHeaders } from 'node:http';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nginxDecisionListener, reloadGateway, startGateway, type TestGateway } from '../helpers/gateway.js';
import { runCli } from '../helpers/binary.js';

function ask(to: number | { readonly socketPath: string }, uri: string): Promise<number> {
  const headers: OutgoingHttpHeaders = { 'X-Original-Method': 'GET', 'X-Original-URI': uri, 'X-Forwarded-Host': 'app.test' };
  const where = typeof to === 'number' ? { host: '127.0.0.1', port: to } : to;
  return new Promise((resolve, reject) => {
    const req = httpRequest({ ...where, path: '/decide', headers, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('decision listener: reload and check', () => {
  let gw: TestGateway;
  const routes = (extra: Record<string, unknown>[] = []): Record<string, unknown>[] => [
    { id: 'public', match: { pathPrefix: '/public' } },
    ...extra,
  ];

  beforeAll(async () => {
    gw = await startGateway((pki) => ({ listeners: [nginxDecisionListener(pki, routes())] }));
  });

  afterAll(async () => {
    await gw?.close();
  });

  it('a reload that adds a route: the next decision uses it, on the same port', async () => {
    const port = gw.port('nginx-decisions');
    expect(await ask(port, '/docs/x')).toBe(403);
    const result = await reloadGateway(gw, (pki) => ({
      listeners: [nginxDecisionListener(pki, routes([{ id: 'docs', match: { pathPrefix: '/docs' } }]))],
    }));
    expect(result.ok, JSON.stringify(result)).toBe(true);
    expect(gw.port('nginx-decisions')).toBe(port);
    expect(await ask(port, '/docs/x')).toBe(200);
    expect(await ask(port, '/public/x')).toBe(200);
  });

  it('on a Unix socket: decisions over the path; the socket is owner and group only; gone after close', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'portcullis-sock-'));
    const path = join(dir, 'decide.sock');
    const sock = await startGateway((pki) => ({
      listeners: [nginxDecisionListener(pki, routes(), { name: 'unix-decisions', listen: `unix:${path}` })],
    }));
    try {
      expect((await stat(path)).mode & 0o777).toBe(0o660);
      expect(await ask({ socketPath: path }, '/public/x')).toBe(200);
      expect(await ask({ socketPath: path }, '/elsewhere')).toBe(403);
      await expect
        .poll(() => sock.logs().find((l) => l.msg === 'listening' && l.listener === 'unix-decisions'))
        .toMatchObject({ address: path, port: 0 });
    } finally {
      await sock.close();
    }
    expect(existsSync(path)).toBe(false);
    await rm(dir, { recursive: true, force: true });
  });

  it('portcullis check accepts a decision config and refuses one on a non-loopback address', async () => {
    const file = join(gw.dir, 'check.yaml');
    const config = (listen: string): string =>
      stringify({ admin: { enabled: false }, listeners: [nginxDecisionListener(gw.pki, routes(), { listen })] });
    await writeFile(file, config('127.0.0.1:4180'));
    const good = await runCli(['check', '--config', file]);
    expect(good.code, good.stderr).toBe(0);
    expect(good.stdout).toContain('(1 listener(s), 1 route(s))');
    await writeFile(file, config('0.0.0.0:4180'));
    const bad = await runCli(['check', '--config', file]);
    expect(bad.code).toBe(3);
    expect(bad.stderr + bad.stdout).toContain('listeners[0].listen');
  });
});
