/**
 * Where the defaults live (src/commands/dev-home.ts): a clone keeps its config/ and certs-dev/, an installed
 * package never writes into itself and uses the user's $XDG_CONFIG_HOME/portcullis (~/.config/portcullis).
 */
import { execFileSync } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  devHome,
  DevHomeError,
  ensureUserConfig,
  isInstalledPackage,
} from '../../../src/commands/dev-home.js';

const dirs: string[] = [];
async function fresh(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'portcullis-home-'));
  dirs.push(d);
  return d;
}
/** Directories made immutable (root cannot be kept out by mode bits): cleared before removal. */
const immutable: string[] = [];
afterAll(async () => {
  for (const d of immutable) execFileSync('chattr', ['-i', d]);
  for (const d of dirs) {
    await chmod(d, 0o700).catch(() => undefined);
    await rm(d, { recursive: true, force: true });
  }
});

describe('devHome', () => {
  it('a clone: the embedded config and certs-dev/ of the checkout', () => {
    expect(devHome('/src/portcullis', false, { HOME: '/home/u' })).toEqual({
      config: '/src/portcullis/config/portcullis.yaml',
      certs: '/src/portcullis/certs-dev',
      embedded: '/src/portcullis/config/portcullis.yaml',
      installed: false,
    });
  });

  it.each([
    [{ XDG_CONFIG_HOME: '/xdg', HOME: '/home/u' }, '/xdg/portcullis'],
    [{ XDG_CONFIG_HOME: 'relative/xdg', HOME: '/home/u' }, '/home/u/.config/portcullis'], // XDG spec: relative is ignored
    [{ HOME: '/home/u' }, '/home/u/.config/portcullis'],
  ])('an installed package with %j: %s', (env, base) => {
    const home = devHome('/usr/lib/node_modules/portcullis', true, env);
    expect(home).toEqual({
      config: `${base}/config/portcullis.yaml`,
      certs: `${base}/certs-dev`,
      embedded: '/usr/lib/node_modules/portcullis/config/portcullis.yaml',
      installed: true,
    });
    // The copy's `../certs-dev` paths point at the certificates beside it.
    expect(join(home.config, '..', '..', 'certs-dev')).toBe(home.certs);
  });

  it('an installed package without HOME or XDG_CONFIG_HOME: an error that says to pass --config or --out', () => {
    expect(() => devHome('/opt/node_modules/portcullis', true, {})).toThrow(DevHomeError);
    expect(() => devHome('/opt/node_modules/portcullis', true, { HOME: 'rel' })).toThrow(
      /pass --config \(or --out\)/,
    );
  });
});

describe('isInstalledPackage', () => {
  it('inside node_modules: installed, even when writable', async () => {
    const d = await fresh();
    const root = join(d, 'lib', 'node_modules', 'portcullis');
    await mkdir(root, { recursive: true });
    expect(await isInstalledPackage(root)).toBe(true);
  });

  it('a writable checkout: not installed', async () => {
    expect(await isInstalledPackage(await fresh())).toBe(false);
  });

  it("a checkout this user cannot write (an image's /app): installed", async () => {
    const d = await fresh();
    await chmod(d, 0o555);
    // Mode bits do not stop root; the immutable attribute does (access(2) answers EPERM for W_OK).
    if (process.getuid?.() === 0) {
      execFileSync('chattr', ['+i', d]);
      immutable.push(d);
    }
    expect(await isInstalledPackage(d)).toBe(true);
  });
});

describe('ensureUserConfig', () => {
  it('an installed package: copies the embedded config once (0644 in 0700 directories), then leaves the copy alone', async () => {
    const pkg = await fresh();
    const user = await fresh();
    await mkdir(join(pkg, 'config'));
    await writeFile(
      join(pkg, 'config', 'portcullis.yaml'),
      '# yaml-language-server: $schema=../schema/portcullis.schema.json\nembedded: 1\n',
    );
    const home = devHome(pkg, true, { XDG_CONFIG_HOME: user });
    expect(await ensureUserConfig(home)).toBe(true);
    // The copy's modeline names the package's schema by its absolute path (the relative one would not resolve).
    expect(await readFile(home.config, 'utf8')).toBe(
      `# yaml-language-server: $schema=${join(pkg, 'schema', 'portcullis.schema.json')}\nembedded: 1\n`,
    );
    expect((await stat(home.config)).mode & 0o777).toBe(0o644);
    expect((await stat(join(user, 'portcullis'))).mode & 0o777).toBe(0o700);
    await writeFile(home.config, 'edited: 1\n');
    expect(await ensureUserConfig(home)).toBe(false);
    expect(await readFile(home.config, 'utf8')).toBe('edited: 1\n');
  });

  it('a clone: nothing to copy', async () => {
    const pkg = await fresh();
    expect(await ensureUserConfig(devHome(pkg, false, {}))).toBe(false);
  });
});
