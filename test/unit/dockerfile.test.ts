/**
 * The Dockerfile's invariants, checked on its text (no Docker engine needed): a multi-stage build on
 * node:20, a runtime stage with production dependencies only and the compiled dist/, a non-root user,
 * config and certificates on a volume, exec-form ENTRYPOINT + CMD running `portcullis start`, and
 * nothing secret in the build context (.dockerignore) or copied into the image.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, posix } from 'node:path';
import { describe, expect, it } from 'vitest';

interface Instruction {
  /** Upper-case keyword: FROM, RUN, COPY, ... */
  readonly keyword: string;
  /** Everything after the keyword, continuation lines joined. */
  readonly args: string;
  /** 1-based line where the instruction starts. */
  readonly line: number;
}

interface Stage {
  readonly base: string;
  readonly name: string | undefined;
  readonly instructions: readonly Instruction[];
}

/** Splits a Dockerfile into instructions: comments and parser directives dropped, `\` continuations joined. */
function parseDockerfile(text: string): Instruction[] {
  const out: Instruction[] = [];
  let current: { text: string; line: number } | undefined;
  text.split(/\r?\n/).forEach((raw, i) => {
    const trimmed = raw.trim();
    if (current === undefined && (trimmed === '' || trimmed.startsWith('#'))) return;
    if (current !== undefined && trimmed.startsWith('#')) return; // comment inside a continuation
    const continued = /\\\s*$/.test(raw);
    const piece = continued ? raw.replace(/\\\s*$/, '') : raw;
    if (current === undefined) current = { text: piece.trim(), line: i + 1 };
    else current.text += ` ${piece.trim()}`;
    if (!continued) {
      const m = /^(\S+)\s*([\s\S]*)$/.exec(current.text);
      if (m) out.push({ keyword: (m[1] ?? '').toUpperCase(), args: (m[2] ?? '').trim(), line: current.line });
      current = undefined;
    }
  });
  return out;
}

/** Groups instructions by `FROM` into stages. */
function stagesOf(instructions: readonly Instruction[]): Stage[] {
  const stages: { base: string; name: string | undefined; instructions: Instruction[] }[] = [];
  for (const ins of instructions) {
    if (ins.keyword === 'FROM') {
      const m = /^(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?$/i.exec(ins.args);
      stages.push({ base: m?.[1] ?? '', name: m?.[2], instructions: [] });
    } else {
      const stage = stages.at(-1);
      if (stage === undefined) throw new Error(`line ${ins.line}: ${ins.keyword} before any FROM`);
      stage.instructions.push(ins);
    }
  }
  return stages;
}

/** The JSON array of an exec-form instruction (throws on shell form). */
function execForm(ins: Instruction | undefined): string[] {
  if (ins === undefined) throw new Error('instruction missing');
  const parsed: unknown = JSON.parse(ins.args);
  if (!Array.isArray(parsed) || !parsed.every((x) => typeof x === 'string'))
    throw new Error(`line ${ins.line}: not exec form`);
  return parsed;
}

/** COPY/ADD: flags, sources, destination. */
function copyParts(ins: Instruction): { flags: string[]; sources: string[]; dest: string } {
  const words = ins.args.startsWith('[') ? execForm(ins) : ins.args.split(/\s+/);
  const flags = words.filter((w) => w.startsWith('--'));
  const rest = words.filter((w) => !w.startsWith('--'));
  return { flags, sources: rest.slice(0, -1), dest: rest.at(-1) ?? '' };
}

/** The WORKDIR in force at each instruction of a stage, for resolving relative COPY destinations. */
function withWorkdir(stage: Stage): { ins: Instruction; workdir: string }[] {
  let workdir = '/';
  return stage.instructions.map((ins) => {
    if (ins.keyword === 'WORKDIR') workdir = posix.resolve(workdir, ins.args);
    return { ins, workdir };
  });
}

/** A minimal .dockerignore matcher: exact names, folder prefixes, `*` within a segment, leading `**\/`. */
function ignored(patterns: readonly string[], path: string): boolean {
  const toRe = (p: string): RegExp => {
    const body = p
      .replace(/^\/+/, '')
      .split('/')
      .map((seg) =>
        seg === '**'
          ? '(?:.*/)?'
          : `${seg
              .replace(/[.+^${}()|[\]\\]/g, '\\$&')
              .replace(/\*/g, '[^/]*')
              .replace(/\?/g, '[^/]')}/`,
      )
      .join('');
    return new RegExp(`^${body.replace(/\/$/, '')}(?:/.*)?$`);
  };
  let out = false;
  for (const p of patterns) {
    if (p.startsWith('!')) {
      if (toRe(p.slice(1)).test(path)) out = false;
    } else if (toRe(p).test(path)) out = true;
  }
  return out;
}

const text = readFileSync('Dockerfile', 'utf8');
const instructions = parseDockerfile(text);
const stages = stagesOf(instructions);
const runtime = stages.at(-1)!;
const build = stages[0]!;
const ignore = readFileSync('.dockerignore', 'utf8')
  .split(/\r?\n/)
  .map((l) => l.trim())
  .filter((l) => l !== '' && !l.startsWith('#'));
const of = (stage: Stage, keyword: string): Instruction[] =>
  stage.instructions.filter((i) => i.keyword === keyword);

describe('Dockerfile parser (self-test)', () => {
  it('joins continuations, drops comments, keeps line numbers', () => {
    const parsed = parseDockerfile(
      '# syntax=docker/dockerfile:1\nFROM a AS b\n# c\nRUN x \\\n  # inside\n  && y\nUSER 1\n',
    );
    expect(parsed).toEqual([
      { keyword: 'FROM', args: 'a AS b', line: 2 },
      { keyword: 'RUN', args: 'x && y', line: 4 },
      { keyword: 'USER', args: '1', line: 7 },
    ]);
  });

  it.each<[string, boolean]>([
    ['certs-dev', true],
    ['certs-dev/ca-key.pem', true],
    ['config/server.pem', true],
    ['config/portcullis.yaml', false],
    ['src/main.ts', false],
  ])('the ignore matcher: %s → %s', (path, expected) => {
    expect(ignored(['certs-dev', '**/*.pem'], path)).toBe(expected);
  });
});

describe('Dockerfile: stages', () => {
  it('is multi-stage: a named build stage first, then a runtime stage', () => {
    expect(stages.length).toBeGreaterThanOrEqual(2);
    expect(build.name?.toLowerCase()).toBe('build');
    expect(runtime).not.toBe(build);
  });

  it('every stage is based on node:20', () => {
    for (const s of stages)
      expect(s.base).toMatch(
        /^(?:docker\.io\/(?:library\/)?)?node:20(?:[.-][\w.-]*)?(?:@sha256:[0-9a-f]{64})?$/,
      );
  });

  it('the build stage installs all dependencies and compiles', () => {
    const runs = of(build, 'RUN').map((i) => i.args);
    expect(runs.some((r) => /\bnpm ci\b/.test(r) && !/--omit=dev/.test(r))).toBe(true);
    expect(runs.some((r) => /\bnpm run build\b|\btsc\b/.test(r))).toBe(true);
  });
});

describe('Dockerfile: runtime stage', () => {
  it('installs production dependencies only', () => {
    const installs = of(runtime, 'RUN').filter((i) => /\bnpm (ci|install|i)\b/.test(i.args));
    expect(installs.length).toBeGreaterThan(0);
    for (const i of installs) {
      expect(i.args, `line ${i.line}`).toMatch(/\bnpm ci\b/);
      expect(i.args, `line ${i.line}`).toMatch(/--omit=dev\b/);
    }
  });

  it('copies dist/ from the build stage, and compiles nothing itself', () => {
    const fromBuild = of(runtime, 'COPY')
      .map(copyParts)
      .filter((c) =>
        c.flags.some(
          (f) => f.toLowerCase() === `--from=${build.name?.toLowerCase() ?? ''}` || f === '--from=0',
        ),
      );
    expect(fromBuild.some((c) => c.sources.some((s) => /(^|\/)dist(\/|$)/.test(s)))).toBe(true);
    expect(of(runtime, 'RUN').some((i) => /\btsc\b|npm run build/.test(i.args))).toBe(false);
  });

  it('copies only what it names from the context: no sources, tests, certificates or keys', () => {
    for (const ins of [...of(runtime, 'COPY'), ...of(runtime, 'ADD')]) {
      const c = copyParts(ins);
      if (c.flags.some((f) => f.startsWith('--from='))) continue;
      for (const src of c.sources) {
        expect(src, `line ${ins.line}`).not.toMatch(/^\.\/?$|^\*$/); // no `COPY . .`
        expect(src, `line ${ins.line}`).not.toMatch(
          /^(\.\/)?(src|test|bench|certs-dev|node_modules|\.git)(\/|$)/,
        );
        expect(src, `line ${ins.line}`).not.toMatch(/\.(pem|key|crt|crl|p12|pfx)$|(^|\/)certs?(\/|$)/i);
      }
    }
    expect(of(runtime, 'ADD').filter((i) => /https?:\/\//.test(i.args))).toEqual([]);
  });

  it('runs as a non-root user', () => {
    const users = of(runtime, 'USER');
    expect(users.length).toBeGreaterThan(0);
    const last = users.at(-1)!.args;
    const [user = '', group] = last.split(':');
    expect(['root', '0']).not.toContain(user);
    if (group !== undefined) expect(['root', '0']).not.toContain(group);
    // Nothing after the last USER switches back or runs as root.
    const lastIndex = runtime.instructions.lastIndexOf(users.at(-1)!);
    expect(runtime.instructions.slice(lastIndex + 1).filter((i) => i.keyword === 'RUN')).toEqual([]);
  });

  it('puts config and certificates on a volume', () => {
    const volumes = of(runtime, 'VOLUME').flatMap((i) =>
      i.args.startsWith('[') ? execForm(i) : i.args.split(/\s+/),
    );
    expect(volumes).toContain('/etc/portcullis');
  });

  it('ENTRYPOINT runs the compiled main.js with node, in exec form', () => {
    const entry = execForm(of(runtime, 'ENTRYPOINT').at(-1));
    expect(entry).toEqual(['node', '/app/dist/src/main.js']);
    // The same file package.json publishes as the `portcullis` binary.
    const pkg = JSON.parse(readFileSync('package.json', 'utf8')) as { bin: Record<string, string> };
    expect(entry[1]?.endsWith(`/${pkg.bin.portcullis ?? '?'}`)).toBe(true);
    // ...and a COPY puts it there.
    const dests = withWorkdir(runtime)
      .filter(({ ins }) => ins.keyword === 'COPY' && /--from=/.test(ins.args))
      .map(({ ins, workdir }) => posix.resolve(workdir, copyParts(ins).dest));
    expect(dests.some((d) => '/app/dist/src/main.js'.startsWith(`${d}/`))).toBe(true);
  });

  it('CMD is `start --config <file on the volume>`, in exec form', () => {
    const cmd = execForm(of(runtime, 'CMD').at(-1));
    expect(cmd[0]).toBe('start');
    const i = cmd.indexOf('--config');
    expect(i).toBeGreaterThan(0);
    expect(cmd[i + 1]).toMatch(/^\/etc\/portcullis\/[^/]+\.ya?ml$/);
  });

  it('bakes in no secrets through ENV or ARG', () => {
    for (const ins of instructions.filter((i) => i.keyword === 'ENV' || i.keyword === 'ARG')) {
      expect(ins.args, `line ${ins.line}`).not.toMatch(
        /secret|password|passphrase|token|private|_key\b|apikey/i,
      );
    }
  });
});

describe('.dockerignore', () => {
  it.each(['certs-dev', 'node_modules', 'dist', '.git', 'test', 'bench'])('excludes %s', (path) => {
    expect(ignored(ignore, path)).toBe(true);
  });

  it.each(['config/server.pem', 'config/server-key.pem', 'deploy/ca.key', 'x/ca.crl', '.env'])(
    'excludes key material anywhere: %s',
    (path) => {
      expect(ignored(ignore, path)).toBe(true);
    },
  );

  it('keeps everything the Dockerfile copies from the context', () => {
    for (const ins of instructions.filter((i) => i.keyword === 'COPY' && !/--from=/.test(i.args))) {
      for (const src of copyParts(ins).sources)
        expect([src, ignored(ignore, src.replace(/^\.\//, ''))]).toEqual([src, false]);
    }
  });

  it('the copied config folder holds no key or certificate', () => {
    const walk = (dir: string): string[] =>
      readdirSync(dir).flatMap((e) =>
        statSync(join(dir, e)).isDirectory() ? walk(join(dir, e)) : [join(dir, e)],
      );
    for (const file of walk('config')) {
      if (ignored(ignore, file)) continue;
      expect(readFileSync(file, 'utf8'), file).not.toMatch(
        /-----BEGIN [A-Z ]*(PRIVATE KEY|CERTIFICATE)-----/,
      );
    }
  });
});
