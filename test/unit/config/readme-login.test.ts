/**
 * The README's "Put a login in front of the Dask dashboard" config, read as text, loads through the real
 * loader (with this run's certificates and a secret file in place of its paths): the example a person copies
 * is a config the gateway accepts, with the login route and the gateway's own paths it describes.
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfigText } from '../../../src/load-config.js';
import { writePki } from '../../helpers/pki.js';

const HEADING = '## Put a login in front of the Dask dashboard';
const dirs: string[] = [];
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

/** The first ```yaml block after the heading. */
function readmeConfig(): string {
  const readme = readFileSync('README.md', 'utf8');
  const at = readme.indexOf(HEADING);
  expect(at, 'the README has the login section').toBeGreaterThan(-1);
  const m = /```yaml\n([\s\S]*?)```/.exec(readme.slice(at));
  if (m === null) throw new Error('no yaml block after the heading');
  return m[1] ?? '';
}

describe('README: the Dask dashboard login config', () => {
  it('loads, with a login route, Bearer tokens next to it, and the gateway login paths', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'portcullis-readme-login-'));
    dirs.push(dir);
    const pki = await writePki(join(dir, 'pki'));
    await mkdir(join(dir, 'secrets'));
    await writeFile(join(dir, 'secrets', 'oidc-client-secret'), 'not-a-real-secret\n');
    const text = readmeConfig().replace('certs/server.pem', pki.server.cert).replace('certs/server-key.pem', pki.server.key);
    const config = loadConfigText(text, join(dir, 'portcullis.yaml'));
    const l = config.listeners[0];
    if (l?.protocol !== 'http') throw new Error('no http listener');
    expect(l.routeAuth['dask-dashboard']).toMatchObject({ login: 'corp-sso', providers: ['corp-jwt'] });
    expect(l.routes.lookup('dask.example.com', '/_portcullis/callback')?.upstream).toEqual({ kind: 'gateway', endpoint: 'login' });
    expect(l.routes.lookup('dask.example.com', '/status')?.id).toBe('dask-dashboard');
    expect(config.authProviders['corp-sso']).toMatchObject({ type: 'oidc', scopes: ['openid', 'email', 'groups', 'offline_access'] });
  });
});
