/** readBuildInfo: the version of the package this code belongs to, found upward from a folder; never throws. */
import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readBuildInfo } from '../../../src/observability/build-info.js';

describe('readBuildInfo', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'portcullis-build-info-'));
    // An installed layout: <root>/package.json (ours), <root>/node_modules/x/package.json (not ours).
    await mkdir(join(dir, 'root', 'dist', 'src', 'observability'), { recursive: true });
    await writeFile(
      join(dir, 'root', 'package.json'),
      JSON.stringify({ name: 'portcullis', version: '9.8.7' }),
    );
    await mkdir(join(dir, 'root', 'dist', 'src', 'other'), { recursive: true });
    await writeFile(join(dir, 'root', 'dist', 'src', 'other', 'package.json'), '{ not json');
    await mkdir(join(dir, 'stray'), { recursive: true });
    await writeFile(
      join(dir, 'stray', 'package.json'),
      JSON.stringify({ name: 'something-else', version: '1.0.0' }),
    );
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('finds the portcullis package.json above dist/src/observability', () => {
    expect(readBuildInfo(join(dir, 'root', 'dist', 'src', 'observability'))).toEqual({
      version: '9.8.7',
      node: process.version.slice(1),
    });
  });

  it('skips an unreadable package.json on the way up', () => {
    expect(readBuildInfo(join(dir, 'root', 'dist', 'src', 'other')).version).toBe('9.8.7');
  });

  it('says unknown, without throwing, when no package.json is ours', () => {
    expect(readBuildInfo(join(dir, 'stray')).version).toBe('unknown');
  });

  it('from its own file: this repository’s version', () => {
    const pkg = JSON.parse(readFileSync('package.json', 'utf8')) as { version: string };
    expect(readBuildInfo().version).toBe(pkg.version);
  });
});
