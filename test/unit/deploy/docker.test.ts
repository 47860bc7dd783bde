/**
 * Docker, without a Docker engine (CI has none): the Dockerfile, deploy/docker/compose.yaml and the
 * README's "Deploy > Docker" command lines, read as text, and what they name, run for real.
 *
 * - The Dockerfile's invariants: a multi-stage build on node:24, a runtime stage with production
 *   dependencies only and the compiled dist/, a non-root user, config and certificates on a volume, a
 *   HEALTHCHECK running `portcullis probe` against the same config as CMD, exec-form ENTRYPOINT + CMD
 *   running `portcullis start`, and nothing secret in the build context (.dockerignore) or the image.
 * - The README's `docker run` lines: the `certs init` line's arguments run with the built binary (its
 *   mount mapped to a temp folder) write every file deploy/docker/portcullis.yaml names, at the paths its
 *   mounts give them inside the container; `portcullis check` passes on the result; the gateway's run uses
 *   CMD, mounts the config folder read-only, runs as the uid that owns the 0600 keys, gives `docker stop`
 *   more than the drain, and joins the namespace of a service that publishes the listener's port.
 * - compose.yaml: the same layout (shared namespace, mounts, user, grace period, stop order).
 * - End to end: the real gateway on deploy/docker/portcullis.yaml (ports rewritten to loopback ones) in
 *   front of the real deploy/docker/sample-upstream.mjs, reached with the client certificate `certs init`
 *   made, refusing a client without one; and the HEALTHCHECK command against it, when the CLI has `probe`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { dirname, join, posix, relative, resolve } from 'node:path';
import { parse as parseYaml, stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfigFile } from '../../../src/load-config.js';
import type { RuntimeConfig } from '../../../src/config/runtime.js';
import {
  freePort,
  killAll,
  listeningPorts,
  runCli,
  startBinary,
  type StartedBinary,
} from '../../helpers/binary.js';

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

/** An official Node.js 24 image reference: `node:24`, `node:24-bookworm-slim`, `node:24.11@sha256:…`. */
const NODE_24_IMAGE = /^(?:docker\.io\/(?:library\/)?)?node:24(?:[.-][\w.-]*)?(?:@sha256:[0-9a-f]{64})?$/;

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

  it('every stage is based on node:24 (the LTS line the package supports)', () => {
    for (const s of stages) expect(s.base).toMatch(NODE_24_IMAGE);
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

// ---------------------------------------------------------------------------------------------------------
// HEALTHCHECK, EXPOSE, and the container config they go with

/** The `--config` value of an argv (CMD, HEALTHCHECK), or undefined. */
function configArg(argv: readonly string[]): string | undefined {
  const i = argv.indexOf('--config');
  return i === -1 ? undefined : argv[i + 1];
}

const cmd = execForm(of(runtime, 'CMD').at(-1));
const entrypoint = execForm(of(runtime, 'ENTRYPOINT').at(-1));
const CONTAINER_CONFIG = configArg(cmd) ?? '';
const SHUTDOWN_FLUSH_S = 2; // main.ts: after the drain, up to 2 s for the last log lines before exit

describe('Dockerfile: health and ports', () => {
  it('HEALTHCHECK runs `portcullis probe --path /readyz` on the same config as CMD, in exec form', () => {
    const checks = of(runtime, 'HEALTHCHECK');
    expect(checks).toHaveLength(1);
    const m = /^((?:--[a-z-]+=\S+\s+)*)CMD\s+(\[.*\])$/s.exec(checks[0]!.args);
    expect(m, checks[0]!.args).not.toBeNull();
    const argv = JSON.parse(m![2]!) as string[];
    // The same program as the ENTRYPOINT, its `probe` command, the config CMD starts with.
    expect(argv.slice(0, entrypoint.length)).toEqual(entrypoint);
    expect(argv[entrypoint.length]).toBe('probe');
    expect(configArg(argv)).toBe(CONTAINER_CONFIG);
    expect(argv[argv.indexOf('--path') + 1]).toBe('/readyz');
    // Bounded: a probe that hangs must not count as healthy forever.
    expect(m![1]).toMatch(/--timeout=\d+s/);
    expect(m![1]).toMatch(/--interval=\d+s/);
  });

  it('EXPOSEs the data listener of deploy/docker/portcullis.yaml, and not the admin port', () => {
    const exposed = of(runtime, 'EXPOSE').flatMap((i) => i.args.split(/\s+/).map((p) => p.split('/')[0]));
    const doc = parseYaml(readFileSync('deploy/docker/portcullis.yaml', 'utf8')) as DockerConfigFile;
    const ports = doc.listeners.map((l) => l.listen.split(':').at(-1));
    expect(exposed.sort()).toEqual([...ports].sort());
    expect(exposed).not.toContain(doc.admin.listen.split(':').at(-1));
  });
});

// ---------------------------------------------------------------------------------------------------------
// The README's `docker` lines

/** The shape of deploy/docker/portcullis.yaml this file relies on. */
interface DockerConfigFile {
  admin: { listen: string };
  timeouts?: { shutdownGraceMs?: number };
  listeners: { name: string; listen: string; tls: { key: string }; routes: { upstream: string }[] }[];
}

const ROOT = process.cwd();
const UID = String(process.getuid?.() ?? 1000);
const GID = String(process.getgid?.() ?? 1000);

/** The first ```sh block after `heading` in the README, continuation lines joined, comments dropped. */
function readmeCommands(heading: string): string[] {
  const readme = readFileSync('README.md', 'utf8');
  const at = readme.indexOf(`\n${heading}\n`);
  if (at === -1) throw new Error(`README has no "${heading}" section`);
  const block = /```sh\n([\s\S]*?)```/.exec(readme.slice(at));
  if (!block) throw new Error(`no sh block after "${heading}"`);
  return (block[1] ?? '')
    .replace(/\\\n\s*/g, ' ')
    .split('\n')
    .map((l) => l.replace(/\s+#.*$/, '').trim())
    .filter((l) => l !== '' && !l.startsWith('#'));
}

/** Splits a command line as sh would, for the forms the README uses: $PWD, $(id -u/-g), '…' and "…". */
function shellWords(line: string): string[] {
  const expanded = (t: string): string =>
    t.replaceAll('$(id -u)', UID).replaceAll('$(id -g)', GID).replaceAll('$PWD', ROOT);
  const words: string[] = [];
  const re = /"((?:[^"\\]|\\.)*)"|'([^']*)'|(\S+?)(?=\s|$|"|')|(\s+)/g;
  let current: string | undefined;
  for (const m of line.matchAll(re)) {
    if (m[4] !== undefined) {
      if (current !== undefined) words.push(current);
      current = undefined;
      continue;
    }
    const piece = m[1] !== undefined ? expanded(m[1]) : m[2] !== undefined ? m[2] : expanded(m[3] ?? '');
    current = (current ?? '') + piece;
  }
  if (current !== undefined) words.push(current);
  return words;
}

interface DockerRun {
  readonly image: string;
  readonly args: string[];
  readonly mounts: { host: string; container: string; readOnly: boolean }[];
  readonly publish: string[];
  readonly values: Map<string, string>;
  readonly flags: Set<string>;
}

/** `docker run` options that take a value, and the boolean ones, that the README may use. */
const VALUE_OPTIONS = new Set([
  '-v',
  '--volume',
  '-p',
  '--publish',
  '--name',
  '--user',
  '--network',
  '--stop-timeout',
  '--cap-drop',
  '--security-opt',
]);
const FLAG_OPTIONS = new Set(['-d', '--rm', '--read-only']);

/** Parses `docker run [options] IMAGE [ARG...]`; an option this parser does not know fails the test. */
function parseDockerRun(words: readonly string[]): DockerRun {
  expect(words.slice(0, 2)).toEqual(['docker', 'run']);
  const run: DockerRun = {
    image: '',
    args: [],
    mounts: [],
    publish: [],
    values: new Map(),
    flags: new Set(),
  };
  let i = 2;
  for (; i < words.length && words[i]!.startsWith('-'); i++) {
    const w = words[i]!;
    if (FLAG_OPTIONS.has(w)) {
      run.flags.add(w);
      continue;
    }
    if (!VALUE_OPTIONS.has(w)) throw new Error(`docker run option unknown to this test: ${w}`);
    const v = words[++i] ?? '';
    if (w === '-v' || w === '--volume') {
      const [host = '', container = '', mode] = v.split(':');
      run.mounts.push({ host, container, readOnly: mode === 'ro' });
    } else if (w === '-p' || w === '--publish') run.publish.push(v);
    else run.values.set(w, v);
  }
  return { ...run, image: words[i] ?? '', args: words.slice(i + 1) };
}

/** The host path a container path of `run` is, through its bind mounts (longest prefix), or undefined. */
function hostPath(run: DockerRun, containerPath: string): string | undefined {
  const m = run.mounts
    .filter((x) => containerPath === x.container || containerPath.startsWith(`${x.container}/`))
    .sort((a, b) => b.container.length - a.container.length)[0];
  return m === undefined ? undefined : join(m.host, posix.relative(m.container, containerPath));
}

const commands = readmeCommands('### Docker').map(shellWords);
const runs = commands.filter((w) => w[0] === 'docker' && w[1] === 'run').map(parseDockerRun);
const certsRun = runs.find((r) => r.image === 'portcullis' && r.args[0] === 'certs');
const gatewayRun = runs.find((r) => r.image === 'portcullis' && r.args[0] !== 'certs');
const appRun = runs.find((r) => r.image !== 'portcullis');
const dockerConfig = parseYaml(readFileSync('deploy/docker/portcullis.yaml', 'utf8')) as DockerConfigFile;
const graceS = (dockerConfig.timeouts?.shutdownGraceMs ?? 10_000) / 1000;

describe('README: the docker lines', () => {
  it('builds the image under the name the runs use, from the repository root', () => {
    expect(commands[0]).toEqual(['docker', 'build', '-t', 'portcullis', '.']);
    expect([certsRun, gatewayRun, appRun].every((r) => r !== undefined)).toBe(true);
  });

  it('creates the certificates folder before mounting it (a missing one docker would create as root)', () => {
    const out = certsRun!.args[certsRun!.args.indexOf('--out') + 1] ?? '';
    const host = hostPath(certsRun!, out);
    expect(host).toBe(join(ROOT, 'deploy/docker/certs'));
    const mkdirs = commands
      .filter((w) => w[0] === 'mkdir')
      .flatMap((w) => w.filter((x) => !x.startsWith('-')).slice(1));
    expect(mkdirs.map((d) => resolve(ROOT, d))).toContain(host);
    // Written as the user who will run the gateway: the keys it writes are 0600 and theirs.
    expect(certsRun!.values.get('--user')).toBe(`${UID}:${GID}`);
    expect(certsRun!.args.slice(0, 2)).toEqual(['certs', 'init']);
  });

  it('the gateway run: CMD as is, the config folder read-only, the keys owner, a stop timeout above the drain', () => {
    const run = gatewayRun!;
    expect(run.args).toEqual([]); // CMD: start --config CONTAINER_CONFIG
    const cfgHost = hostPath(run, CONTAINER_CONFIG);
    expect(cfgHost).toBe(join(ROOT, 'deploy/docker/portcullis.yaml'));
    expect(run.mounts.every((m) => m.readOnly)).toBe(true);
    expect(run.values.get('--user')).toBe(certsRun!.values.get('--user'));
    expect(Number(run.values.get('--stop-timeout'))).toBeGreaterThan(graceS + SHUTDOWN_FLUSH_S);
    expect(run.flags.has('--read-only')).toBe(true);
    expect(run.values.get('--cap-drop')).toBe('ALL');
    // The certificates the certs line wrote are where the gateway run sees them.
    const out = certsRun!.args[certsRun!.args.indexOf('--out') + 1] ?? '';
    expect(hostPath(run, posix.join(posix.dirname(CONTAINER_CONFIG), 'certs'))).toBe(
      hostPath(certsRun!, out),
    );
  });

  it('the service it fronts: shares its namespace, publishes the listener port, listens where the route points', () => {
    const app = appRun!;
    expect(gatewayRun!.values.get('--network')).toBe(`container:${app.values.get('--name') ?? '?'}`);
    expect(app.image).toMatch(NODE_24_IMAGE);
    const [listener] = dockerConfig.listeners;
    const port = listener!.listen.split(':').at(-1);
    expect(app.publish).toEqual([`${port}:${port}`]);
    expect(listener!.listen.startsWith('0.0.0.0:')).toBe(true);
    expect(dockerConfig.admin.listen).toMatch(/^127\.0\.0\.1:\d+$/);
    // node /srv/sample-upstream.mjs, mounted from deploy/docker/, answering where the route forwards.
    expect(app.args[0]).toBe('node');
    expect(hostPath(app, app.args[1] ?? '')).toBe(join(ROOT, 'deploy/docker/sample-upstream.mjs'));
    const upstream = new URL(listener!.routes[0]!.upstream);
    expect(upstream.hostname).toBe('127.0.0.1');
    expect(readFileSync('deploy/docker/sample-upstream.mjs', 'utf8')).toContain(
      `process.env.PORT ?? ${upstream.port}`,
    );
  });
});

// ---------------------------------------------------------------------------------------------------------
// compose.yaml

interface ComposeService {
  image?: string;
  build?: { context: string; dockerfile?: string };
  command?: string[];
  user?: string;
  volumes?: string[];
  ports?: string[];
  network_mode?: string;
  depends_on?: string[];
  read_only?: boolean;
  cap_drop?: string[];
  security_opt?: string[];
  stop_grace_period?: string;
  stop_signal?: string;
}
const COMPOSE_DIR = join(ROOT, 'deploy/docker');
const compose = parseYaml(readFileSync(join(COMPOSE_DIR, 'compose.yaml'), 'utf8')) as {
  services: Record<string, ComposeService>;
};

/** A compose volume `src:dst[:ro]` as a bind mount, its source resolved against the compose file's folder. */
function composeMount(v: string): { host: string; container: string; readOnly: boolean } {
  const [host = '', container = '', mode] = v.split(':');
  return { host: resolve(COMPOSE_DIR, host), container, readOnly: mode === 'ro' };
}

describe('deploy/docker/compose.yaml', () => {
  const gw = compose.services.portcullis!;
  const app = compose.services.app!;

  it('builds this repository’s Dockerfile under the image name the README uses', () => {
    expect(resolve(COMPOSE_DIR, gw.build!.context)).toBe(ROOT);
    expect(existsSync(join(ROOT, gw.build!.dockerfile ?? 'Dockerfile'))).toBe(true);
    expect(gw.image).toBe('portcullis');
  });

  it('portcullis joins app’s namespace, mounts this folder read-only at the config folder, runs as the keys’ owner', () => {
    expect(gw.network_mode).toBe('service:app');
    const mounts = (gw.volumes ?? []).map(composeMount);
    expect(mounts).toEqual([
      { host: COMPOSE_DIR, container: posix.dirname(CONTAINER_CONFIG), readOnly: true },
    ]);
    expect(gw.user).toBe('${PORTCULLIS_UID:-1000}:${PORTCULLIS_GID:-1000}');
    expect(gw.read_only).toBe(true);
    expect(gw.cap_drop).toEqual(['ALL']);
    expect(gw.security_opt).toContain('no-new-privileges:true');
  });

  it('stops portcullis first (it depends on app) and gives it more than the drain', () => {
    expect(gw.depends_on).toEqual(['app']);
    expect(gw.stop_signal ?? 'SIGTERM').toBe('SIGTERM');
    const m = /^(\d+)s$/.exec(gw.stop_grace_period ?? '');
    expect(Number(m?.[1])).toBeGreaterThan(graceS + SHUTDOWN_FLUSH_S);
  });

  it('app is the sample upstream on Node 24, publishing the gateway’s port', () => {
    expect(app.image).toMatch(NODE_24_IMAGE);
    const mounts = (app.volumes ?? []).map(composeMount);
    const script = app.command?.[1] ?? '';
    expect(app.command?.[0]).toBe('node');
    expect(mounts.find((m) => m.container === script)?.host).toBe(join(COMPOSE_DIR, 'sample-upstream.mjs'));
    const port = dockerConfig.listeners[0]!.listen.split(':').at(-1);
    expect(app.ports).toEqual([`${port}:${port}`]);
    expect(app.read_only).toBe(true);
  });
});

// ---------------------------------------------------------------------------------------------------------
// The README's steps, run (without Docker): certs init, check, the gateway in front of the sample upstream

/** Re-roots a host path under deploy/docker/ into `dir` (the tests never write into the repository). */
const intoTemp = (dir: string, host: string): string => join(dir, relative(COMPOSE_DIR, host));

/** GET over HTTPS with the certificates `certs init` made (`client` absent: no client certificate). */
function get(
  port: number,
  certs: string,
  path: string,
  client?: string,
): Promise<{ status: number; body: string } | { error: string }> {
  return new Promise((done) => {
    const req = httpsRequest(
      {
        host: '127.0.0.1',
        port,
        path,
        servername: 'localhost',
        headers: { host: `localhost:${port}` },
        ca: readFileSync(join(certs, 'ca.pem')),
        ...(client
          ? {
              cert: readFileSync(join(certs, `client-${client}.pem`)),
              key: readFileSync(join(certs, `client-${client}-key.pem`)),
            }
          : {}),
        agent: false,
        timeout: 5_000,
      },
      (res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c.toString()));
        res.on('end', () => done({ status: res.statusCode ?? 0, body }));
      },
    );
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (err) => done({ error: err.message }));
    req.end();
  });
}

describe('README steps, run with the built binary', () => {
  let dir: string;
  let certs: string;
  let configFile: string;
  let loaded: RuntimeConfig;
  const children = new Set<ChildProcess>();

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'portcullis-docker-'));
    // `mkdir -p deploy/docker/certs`, then the certs line's arguments with its mount mapped into `dir`.
    certs = intoTemp(dir, hostPath(certsRun!, certsRun!.args[certsRun!.args.indexOf('--out') + 1] ?? '')!);
    await mkdir(certs, { recursive: true });
    const args = certsRun!.args.map((a) => {
      const h = a.startsWith('/') ? hostPath(certsRun!, a) : undefined;
      return h === undefined ? a : intoTemp(dir, h);
    });
    const r = await runCli(args, { timeoutMs: 60_000 });
    expect(r.code, r.stderr).toBe(0);
    configFile = intoTemp(dir, hostPath(gatewayRun!, CONTAINER_CONFIG)!);
    await writeFile(configFile, await readFile('deploy/docker/portcullis.yaml'));
    loaded = loadConfigFile(configFile);
  });

  afterAll(async () => {
    killAll(children);
    await rm(dir, { recursive: true, force: true });
  });

  it('`portcullis check` passes on the container config with the certificates the certs line made', async () => {
    const r = await runCli(['check', '--config', configFile]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^config OK: /);
  });

  it('every file the config names is inside the config mount, where the certs line wrote it', () => {
    const named = Object.keys(loaded.files).filter((f) => f !== configFile);
    expect(named.length).toBeGreaterThanOrEqual(4); // cert, key, client CA, CRL
    const mountRoot = intoTemp(dir, hostPath(gatewayRun!, posix.dirname(CONTAINER_CONFIG))!);
    for (const f of named) {
      expect(relative(mountRoot, f).startsWith('..'), f).toBe(false);
      expect(relative(certs, f).startsWith('..'), `${f} not written by certs init`).toBe(false);
    }
  });

  it('the keys certs init writes are 0600: the reason the runs pass --user', async () => {
    const key = resolve(dirname(configFile), dockerConfig.listeners[0]!.tls.key);
    expect(Object.keys(loaded.files)).toContain(key);
    expect((await stat(key)).mode & 0o077).toBe(0);
  });

  describe('the gateway in front of sample-upstream.mjs', () => {
    let upstream: ChildProcess;
    let upstreamLines: string[];
    let gw: StartedBinary;
    let port: number;
    let adminPort: number;
    let runFile: string;

    beforeAll(async () => {
      // The sample upstream on a free loopback port (PORT), as the compose/README `app` runs it.
      const upstreamPort = await freePort();
      upstreamLines = [];
      upstream = spawn(process.execPath, ['deploy/docker/sample-upstream.mjs'], {
        env: { ...process.env, PORT: String(upstreamPort) },
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      children.add(upstream);
      upstream.stdout?.on('data', (c: Buffer) =>
        upstreamLines.push(...c.toString().split('\n').filter(Boolean)),
      );
      // The container config, only its addresses rewritten: listener and admin on free loopback ports.
      const doc = parseYaml(await readFile(configFile, 'utf8')) as DockerConfigFile;
      adminPort = await freePort();
      doc.admin.listen = `127.0.0.1:${adminPort}`;
      doc.listeners[0]!.listen = '127.0.0.1:0';
      const route = doc.listeners[0]!.routes[0]!;
      route.upstream = route.upstream.replace(/:\d+$/, `:${upstreamPort}`);
      runFile = join(dir, 'run.yaml');
      await writeFile(runFile, stringify(doc));
      gw = startBinary(runFile);
      children.add(gw.child);
      ({ port } = await listeningPorts(gw, { name: doc.listeners[0]!.name, admin: true }));
      const deadline = Date.now() + 10_000;
      while (!upstreamLines.some((l) => l.includes('sample upstream listening')) && Date.now() < deadline)
        await new Promise((r) => setTimeout(r, 20));
    });

    it('a client with the certificate certs init made reaches the sample upstream, which sees who it is', async () => {
      const r = await get(port, certs, '/hello', 'alice');
      expect('status' in r ? r.status : r.error).toBe(200);
      const body = JSON.parse((r as { body: string }).body) as Record<string, unknown>;
      expect(body.upstream).toBe('sample-upstream');
      expect(body.path).toBe('/hello');
      expect(String(body.clientCert)).toContain('CN=alice');
    });

    it('a client without a certificate is refused, and the sample upstream sees nothing', async () => {
      const before = upstreamLines.filter((l) => l.includes('"msg":"request"')).length;
      const r = await get(port, certs, '/hello');
      expect('error' in r).toBe(true);
      await new Promise((res) => setTimeout(res, 100));
      expect(upstreamLines.filter((l) => l.includes('"msg":"request"')).length).toBe(before);
      expect(before).toBeGreaterThan(0); // the previous case's request was logged: the count can move
    });

    it('the HEALTHCHECK command passes against it', async () => {
      const argv = JSON.parse(/CMD\s+(\[.*\])$/s.exec(of(runtime, 'HEALTHCHECK')[0]!.args)![1]!) as string[];
      const args = argv.slice(entrypoint.length).map((a) => (a === CONTAINER_CONFIG ? runFile : a));
      const r = await runCli(args);
      expect(r.code, r.stdout + r.stderr).toBe(0);
    });

    it('SIGTERM (docker stop) drains and exits 0 within the stop timeout', async () => {
      const started = Date.now();
      gw.child.kill('SIGTERM');
      const exit = await gw.exited;
      expect(exit.code).toBe(0);
      expect(Date.now() - started).toBeLessThan(Number(gatewayRun!.values.get('--stop-timeout')) * 1000);
      upstream.kill('SIGTERM');
    });
  });
});
