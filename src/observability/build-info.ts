/**
 * What `portcullis_build_info{version,node}` says: the version of the installed package and the Node.js
 * release running it. Dashboards and alerts join on it (which version runs where; is any gateway still on an
 * old runtime), so it is read from the package this code was installed with, never from the caller.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The labels of `portcullis_build_info`. */
export interface BuildInfo {
  /** `version` of Portcullis's package.json (`unknown` if no package.json named `portcullis` is found). */
  readonly version: string;
  /** `process.version` without the leading `v`, e.g. `24.11.1`. */
  readonly node: string;
}

/**
 * The package version, found by walking up from this file (src/observability/ in a checkout, and
 * dist/src/observability/ once built or installed) to the first package.json named `portcullis`. Never
 * throws: a missing or unreadable package.json gives `unknown`, so the metric is still exposed.
 */
export function readBuildInfo(from: string = dirname(fileURLToPath(import.meta.url))): BuildInfo {
  const node = process.version.replace(/^v/, '');
  let dir = from;
  for (let i = 0; i < 6; i++) {
    const file = join(dir, 'package.json');
    if (existsSync(file)) {
      try {
        const pkg = JSON.parse(readFileSync(file, 'utf8')) as { name?: unknown; version?: unknown };
        if (pkg.name === 'portcullis' && typeof pkg.version === 'string')
          return { version: pkg.version, node };
      } catch {
        // An unreadable package.json on the way up is not ours: keep looking.
      }
    }
    const parent = dirname(dir);
    if (parent === dir) break;
    dir = parent;
  }
  return { version: 'unknown', node };
}
