/**
 * Where the commands' defaults live: the embedded default config (`start`, `check` and `probe` without
 * `--config`) and the dev PKI (`certs` and `token mint` without `--out`).
 *
 * From a clone (`npm ci && npm start`) that is the checkout itself, as the README's quick start says:
 * `config/portcullis.yaml` and `certs-dev/` next to it. An installed package (`npm install -g`, `npx`, an
 * image whose files belong to root) must never write into its own directory — it may be root's, shared by
 * every user, and replaced by the next upgrade — so there the defaults live in the user's config directory,
 * `$XDG_CONFIG_HOME/portcullis` (`~/.config/portcullis`): the first `start` copies the embedded config to
 * `config/portcullis.yaml` there (the user's to edit from then on) and creates `certs-dev/` beside it,
 * where that copy's `../certs-dev` paths point (its editor modeline then names the package's schema).
 */
import { constants } from 'node:fs';
import { access, mkdir, readFile, stat } from 'node:fs/promises';
import { dirname, isAbsolute, join, sep } from 'node:path';
import { SCHEMA_FILE } from './defaults.js';
import { writeFileAtomic } from './files.js';

/** The embedded default config, relative to the package root. */
export const EMBEDDED_CONFIG = join('config', 'portcullis.yaml');
/** The dev PKI directory, relative to the folder above the default config's (its paths say `../certs-dev`). */
export const DEV_CERTS_DIR = 'certs-dev';

/** `# yaml-language-server: $schema=<relative path>` on the first line. */
const SCHEMA_MODELINE = /^(# yaml-language-server: \$schema=)\.\.\/schema\/portcullis\.schema\.json$/m;

export interface DevHome {
  /** The default config file. */
  readonly config: string;
  /** The default `--out` of `certs` and `token mint`. */
  readonly certs: string;
  /** The embedded default config inside the package. */
  readonly embedded: string;
  /** True for an installed package: `config` is the user's copy of `embedded`, made at the first start. */
  readonly installed: boolean;
}

/** No directory the defaults could go to (an installed package, and neither XDG_CONFIG_HOME nor HOME is set). */
export class DevHomeError extends Error {
  override readonly name = 'DevHomeError';
}

/** Whether the package at `root` is an installed one (see the module comment), not a clone to work in. */
export async function isInstalledPackage(root: string): Promise<boolean> {
  if (root.split(sep).includes('node_modules')) return true;
  try {
    await access(root, constants.W_OK);
    return false;
  } catch {
    return true;
  }
}

/**
 * The defaults for the package at `root`.
 * @param env `XDG_CONFIG_HOME` (used when absolute, per the XDG spec) and `HOME`.
 * @throws DevHomeError for an installed package when neither is usable.
 */
export function devHome(
  root: string,
  installed: boolean,
  env: { readonly XDG_CONFIG_HOME?: string | undefined; readonly HOME?: string | undefined },
): DevHome {
  const embedded = join(root, EMBEDDED_CONFIG);
  if (!installed) return { config: embedded, certs: join(root, DEV_CERTS_DIR), embedded, installed };
  const xdg = env.XDG_CONFIG_HOME;
  const home = env.HOME;
  const base =
    xdg !== undefined && isAbsolute(xdg)
      ? join(xdg, 'portcullis')
      : home !== undefined && isAbsolute(home)
        ? join(home, '.config', 'portcullis')
        : undefined;
  if (base === undefined)
    throw new DevHomeError(
      'neither XDG_CONFIG_HOME nor HOME names a directory for the default config and dev certificates: pass --config (or --out)',
    );
  return { config: join(base, EMBEDDED_CONFIG), certs: join(base, DEV_CERTS_DIR), embedded, installed };
}

/**
 * For an installed package: copies the embedded config to `home.config` (directories 0700, file 0644) when it
 * is not there yet, and returns whether it did. An existing copy is the user's and is left alone.
 */
export async function ensureUserConfig(home: DevHome): Promise<boolean> {
  if (!home.installed) return false;
  try {
    await stat(home.config);
    return false;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  await mkdir(dirname(home.config), { recursive: true, mode: 0o700 });
  // The editor modeline names the schema relative to the embedded file: the copy names the package's own.
  const schema = join(dirname(home.embedded), '..', SCHEMA_FILE);
  const text = (await readFile(home.embedded, 'utf8')).replace(SCHEMA_MODELINE, `$1${schema}`);
  await writeFileAtomic(home.config, text, 0o644);
  return true;
}
