/**
 * The README's Dask example works as documented: the shell block under "Try the example" is run as written
 * (with `portcullis` being the built binary) in a fresh directory holding config/examples/dask.yaml, and its
 * last step, `portcullis check`, passes. The same block without its `certs init` line fails the check: the
 * step is what makes the example whole.
 */
import { spawnSync } from 'node:child_process';
import { mkdtemp, mkdir, copyFile, rm } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { BIN } from '../helpers/binary.js';

const MARKER = '<!-- steps: dask-example';

/** The first ```sh block after the README's marker. */
function readmeSteps(): string {
  const readme = readFileSync('README.md', 'utf8');
  const at = readme.indexOf(MARKER);
  expect(at, 'the README marks the Dask example steps').toBeGreaterThan(-1);
  const m = /```sh\n([\s\S]*?)```/.exec(readme.slice(at));
  expect(m, 'a ```sh block follows the marker').not.toBeNull();
  return m?.[1] ?? '';
}

const dirs: string[] = [];
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

/** Runs `script` with bash in a fresh directory that has config/examples/dask.yaml, `portcullis` = the binary. */
async function runSteps(
  script: string,
): Promise<{ status: number | null; stdout: string; stderr: string; cwd: string }> {
  const cwd = await mkdtemp(join(tmpdir(), 'portcullis-dask-example-'));
  dirs.push(cwd);
  await mkdir(join(cwd, 'config', 'examples'), { recursive: true });
  await copyFile('config/examples/dask.yaml', join(cwd, 'config', 'examples', 'dask.yaml'));
  const prelude = `set -euo pipefail\nportcullis() { ${JSON.stringify(process.execPath)} ${JSON.stringify(BIN)} "$@"; }\n`;
  const r = spawnSync('bash', ['-c', prelude + script], { cwd, encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr, cwd };
}

describe('README: the Dask example', () => {
  it('the documented steps end with `portcullis check` passing on config/examples/dask.yaml', async () => {
    const steps = readmeSteps();
    expect(steps).toContain('portcullis certs init');
    expect(steps).toMatch(/portcullis check --config \S*dask\.yaml/);
    const r = await runSteps(steps);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/config OK: \S*dask\.yaml \(2 listener\(s\), 1 route\(s\)\)/);
  }, 90_000);

  it('without the certs step the check fails, naming a missing file', async () => {
    const steps = readmeSteps()
      .split('\n')
      .filter((l) => !l.includes('certs init'))
      .join('\n');
    const r = await runSteps(steps);
    expect(r.status).toBe(3);
    expect(r.stderr).toMatch(/ENOENT/);
  }, 90_000);
});
