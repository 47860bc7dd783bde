/**
 * A decision listener across a reload (issue 16): a new route table applies to the next decision, the
 * listener keeps its address, and `portcullis check` reads a decision config.
 */
import { request as httpRequest, type OutgoingHttpHeaders } from 'node:http';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nginxDecisionListener, reloadGateway, startGateway, type TestGateway } from '../helpers/gateway.js';
import { runCli } from '../helpers/binary.js';

function ask(port: number, uri: string): Promise<number> {
  const headers: OutgoingHttpHeaders = { 'X-Original-Method': 'GET', 'X-Original-URI': uri, 'X-Forwarded-Host': 'app.test' };
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path: '/decide', headers, agent: false }, (res) => {
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
