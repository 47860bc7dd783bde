/**
 * argv → typed command. No I/O: every unknown command, unknown flag or missing value is a usage error
 * (exit 2 in main.ts) whose message says what was expected.
 */
import { describe, expect, it } from 'vitest';
import {
  COMMANDS,
  commandHelp,
  parseArgs,
  PROBE_DEFAULT_TIMEOUT_MS,
  runtimeProblem,
  USAGE,
  type Command,
} from '../../src/cli.js';

describe('parseArgs: commands', () => {
  it.each<[string[], Command]>([
    [[], { kind: 'help', topic: undefined }],
    [['help'], { kind: 'help', topic: undefined }],
    [['--help'], { kind: 'help', topic: undefined }],
    [['-h'], { kind: 'help', topic: undefined }],
    [['start', '--help'], { kind: 'help', topic: 'start' }],
    [['certs', 'issue', '-h'], { kind: 'help', topic: 'certs issue' }],
    [['certs', '--help'], { kind: 'help', topic: 'certs' }],
    [['certs', 'nonsense', '--help'], { kind: 'help', topic: 'certs' }],
    [['token', 'mint', '--sub', 'a', '--help'], { kind: 'help', topic: 'token mint' }],
    [['probe', '--help'], { kind: 'help', topic: 'probe' }],
    [['help', 'certs', 'init'], { kind: 'help', topic: 'certs init' }],
    [['help', 'check'], { kind: 'help', topic: 'check' }],
    [['version'], { kind: 'version' }],
    [['--version'], { kind: 'version' }],
    [['-v'], { kind: 'version' }],
    [['schema'], { kind: 'schema' }],
    [['start'], { kind: 'start', config: undefined }],
    [['start', '--config', 'a.yaml'], { kind: 'start', config: 'a.yaml' }],
    [['start', '--config=/etc/portcullis/p.yaml'], { kind: 'start', config: '/etc/portcullis/p.yaml' }],
    [['check', '--config', 'b.yaml'], { kind: 'check', config: 'b.yaml', print: false }],
    [['check'], { kind: 'check', config: undefined, print: false }],
    [['check', '--print', '--config', 'b.yaml'], { kind: 'check', config: 'b.yaml', print: true }],
    [
      ['probe'],
      {
        kind: 'probe',
        config: undefined,
        path: '/readyz',
        timeoutMs: PROBE_DEFAULT_TIMEOUT_MS,
        cert: undefined,
        key: undefined,
        ca: undefined,
        servername: undefined,
      },
    ],
    [
      ['probe', '--config', 'p.yaml', '--path', '/healthz', '--timeout', '500ms', '--cert', 'c.pem', '--key', 'k.pem'],
      {
        kind: 'probe',
        config: 'p.yaml',
        path: '/healthz',
        timeoutMs: 500,
        cert: 'c.pem',
        key: 'k.pem',
        ca: undefined,
        servername: undefined,
      },
    ],
    [
      ['probe', '--timeout', '3', '--ca', 'ca.pem', '--servername', 'admin.local'],
      {
        kind: 'probe',
        config: undefined,
        path: '/readyz',
        timeoutMs: 3000,
        cert: undefined,
        key: undefined,
        ca: 'ca.pem',
        servername: 'admin.local',
      },
    ],
    [
      ['certs', 'init'],
      { kind: 'certs-init', out: undefined, hosts: [], clients: undefined, ou: undefined, cluster: false, force: false },
    ],
    [
      ['certs', 'init', '--out', 'c', '--clients', 'alice', '--ou', 'data-science', '--cluster'],
      { kind: 'certs-init', out: 'c', hosts: [], clients: ['alice'], ou: 'data-science', cluster: true, force: false },
    ],
    [
      ['certs', 'init', '--out', 'd', '--hosts', 'gw.example, 10.0.0.5', '--clients', 'alice,bob', '--force'],
      {
        kind: 'certs-init',
        out: 'd',
        hosts: ['gw.example', '10.0.0.5'],
        clients: ['alice', 'bob'],
        ou: undefined,
        cluster: false,
        force: true,
      },
    ],
    [
      ['certs', 'issue', '--name', 'carol'],
      { kind: 'certs-issue', out: undefined, name: 'carol', days: undefined, ou: undefined, force: false },
    ],
    [
      ['certs', 'issue', '--out', 'd', '--name', 'carol', '--days', '30', '--force'],
      { kind: 'certs-issue', out: 'd', name: 'carol', days: 30, ou: undefined, force: true },
    ],
    [
      ['certs', 'issue', '--name', 'carol', '--p12'],
      { kind: 'certs-issue', out: undefined, name: 'carol', days: undefined, ou: undefined, force: false, p12: { passphraseFile: undefined } },
    ],
    [
      ['certs', 'issue', '--name', 'carol', '--p12', '--p12-passphrase-file', 'pw.txt'],
      { kind: 'certs-issue', out: undefined, name: 'carol', days: undefined, ou: undefined, force: false, p12: { passphraseFile: 'pw.txt' } },
    ],
    [['certs', 'revoke', '--out', 'd', '--name', 'carol'], { kind: 'certs-revoke', out: 'd', name: 'carol' }],
  ])('%j', (argv, expected) => {
    expect(parseArgs(argv)).toEqual(expected);
  });
});

describe('parseArgs: usage errors say what was expected', () => {
  it.each<[string[], RegExp]>([
    [['serve'], /^unknown command "serve"$/],
    [['START'], /^unknown command "START"$/],
    [['start', '--conf', 'a.yaml'], /^start: unknown option --conf$/],
    [['start', '--config'], /^start: --config needs a value$/],
    [['start', '--config='], /^start: --config needs a value$/],
    [['start', '--config', '--force'], /^start: --config needs a value$/],
    [['check', '--config', 'a', '--config', 'b'], /^check: --config given twice$/],
    [['check', 'a.yaml'], /^check: unexpected argument "a\.yaml"$/],
    [['check', '-c', 'a.yaml'], /^check: unexpected argument "-c"$/],
    [['certs'], /^certs: expected init, issue or revoke, got nothing$/],
    [['certs', 'destroy'], /^certs: expected init, issue or revoke, got "destroy"$/],
    [['certs', 'init', '--force=yes'], /^certs init: --force takes no value$/],
    [['certs', 'init', '--clients', ','], /^certs init: --clients needs at least one name$/],
    [['certs', 'init', '--hosts', ' , '], /^certs init: --hosts needs at least one name$/],
    [['certs', 'init', '--name', 'x'], /^certs init: unknown option --name$/],
    [['certs', 'issue'], /^certs issue: --name NAME is required$/],
    [
      ['certs', 'issue', '--name', 'c', '--days', '0'],
      /^certs issue: --days must be a whole number of days from 1 to 36500, got "0"$/,
    ],
    [['certs', 'issue', '--name', 'c', '--days', '1.5'], /--days must be a whole number/],
    [['certs', 'issue', '--name', 'c', '--days', 'ten'], /got "ten"/],
    [['certs', 'issue', '--name', 'c', '--days', '36501'], /from 1 to 36500/],
    [['certs', 'revoke'], /^certs revoke: --name NAME is required$/],
    [['certs', 'revoke', '--name', 'c', '--force'], /^certs revoke: unknown option --force$/],
    [['certs', 'init', '--ou', 'a,b=c'], /^certs init: --ou must be 1-64 letters/],
    [['certs', 'issue', '--name', 'c', '--ou', ''], /^certs issue: --ou needs a value$/],
    [['schema', '--config', 'x'], /^schema: unknown option --config$/],
    [['check', '--print=yes'], /^check: --print takes no value$/],
    [['probe', '--path', '/metrics'], /^probe: --path must be \/readyz or \/healthz, got "\/metrics"$/],
    [['probe', '--timeout', '2m'], /^probe: --timeout must be a duration from 1ms to 60s/],
    [['probe', '--timeout', '0'], /^probe: --timeout must be a duration/],
    [['probe', '--timeout', '61s'], /^probe: --timeout must be a duration/],
    [['probe', '--cert', 'c.pem'], /^probe: --cert and --key go together$/],
    [['probe', '--servername', 'x'], /^probe: --servername needs --ca/],
    [['help', 'nonsense'], /^help: unknown command "nonsense"$/],
    [['nonsense', '--help'], /^unknown command "nonsense"$/],
  ])('%j', (argv, message) => {
    const cmd = parseArgs(argv);
    expect(cmd.kind).toBe('usage-error');
    if (cmd.kind === 'usage-error') expect(cmd.message).toMatch(message);
  });
});

describe('USAGE and per-command help', () => {
  it('the overview names every command and how to get its help', () => {
    for (const cmd of ['start', 'check', 'schema', 'probe', 'certs init', 'certs issue', 'certs revoke', 'help', 'version']) {
      expect(USAGE).toContain(cmd);
    }
    expect(USAGE).toContain('portcullis <command> --help');
  });

  // The help is rendered from the same table the parser reads: every option it lists is accepted, and every
  // option the parser accepts is listed (an option the table lacks is "unknown option" to the parser).
  it.each(Object.keys(COMMANDS).filter((c) => c !== 'certs' && c !== 'token'))(
    '`%s --help` lists its usage, every option and its exit codes',
    (name) => {
      const help = commandHelp(name);
      const spec = COMMANDS[name]!;
      expect(help).toMatch(new RegExp(`^Usage: portcullis ${name}`));
      for (const opt of Object.keys(spec.options)) expect(help).toContain(`--${opt}`);
      expect(help).toContain('-h, --help');
      expect(help).toContain('Exit codes:');
      for (const [code] of spec.exitCodes) expect(help).toMatch(new RegExp(`^  ${code}  `, 'm'));
    },
  );

  it('a group lists its subcommands', () => {
    expect(commandHelp('certs')).toContain('portcullis certs init [--out DIR]');
    expect(commandHelp('token')).toContain('portcullis token create --name NAME --file FILE');
  });

  it('the exit codes a command documents are the ones main.ts uses: usage errors are 2, config errors 3', () => {
    for (const [name, spec] of Object.entries(COMMANDS)) {
      for (const [code, when] of spec.exitCodes) {
        if (code === 2) expect(when, name).toMatch(/usage error/);
        if (code === 3) expect(when, name).toMatch(/invalid config/);
      }
    }
  });
});

describe('parseArgs: token commands', () => {
  it.each<[string[], Command]>([
    [
      ['token', 'create', '--name', 'alice', '--file', 't.json'],
      { kind: 'token-create', file: 't.json', name: 'alice', expiresInSeconds: 90 * 86_400, scopes: [] },
    ],
    [
      ['token', 'create', '--name', 'a', '--file', 't.json', '--expires-in', '30d', '--scope', ' read  write '],
      { kind: 'token-create', file: 't.json', name: 'a', expiresInSeconds: 30 * 86_400, scopes: ['read', 'write'] },
    ],
    [
      ['token', 'create', '--name', 'a', '--file', 't.json', '--expires-in', 'never'],
      { kind: 'token-create', file: 't.json', name: 'a', expiresInSeconds: undefined, scopes: [] },
    ],
    [['token', 'list', '--file', 't.json'], { kind: 'token-list', file: 't.json', json: false }],
    [['token', 'list', '--file', 't.json', '--json'], { kind: 'token-list', file: 't.json', json: true }],
    [['token', 'revoke', '--name', 'a', '--file', 't.json'], { kind: 'token-revoke', file: 't.json', name: 'a' }],
    [
      ['token', 'mint', '--sub', 'alice'],
      { kind: 'token-mint', out: undefined, sub: 'alice', scope: undefined, ttlSeconds: 3600 },
    ],
    [
      ['token', 'mint', '--sub', 'alice', '--scope', 'a  b', '--ttl', '15m', '--out', 'd'],
      { kind: 'token-mint', out: 'd', sub: 'alice', scope: 'a b', ttlSeconds: 900 },
    ],
  ])('%j', (argv, expected) => {
    expect(parseArgs(argv)).toEqual(expected);
  });

  it.each<[string[], RegExp]>([
    [['token'], /^token: expected create, list, revoke or mint, got nothing$/],
    [['token', 'create', '--name', 'a'], /^token create: --file FILE is required/],
    [['token', 'create', '--file', 'f'], /^token create: --name NAME is required$/],
    [['token', 'create', '--name', 'a', '--file', 'f', '--expires-in', '0d'], /^token create: --expires-in: duration "0d"/],
    [['token', 'create', '--name', 'a', '--file', 'f', '--token', 'x'], /^token create: unknown option --token$/],
    [['token', 'list'], /^token list: --file FILE is required$/],
    [['token', 'revoke', '--name', 'a'], /^token revoke: --file FILE is required$/],
    [['token', 'mint', '--scope', 'a'], /^token mint: --sub SUBJECT is required$/],
    [['token', 'mint', '--sub', 'a', '--ttl', '1y'], /^token mint: --ttl: duration "1y"/],
  ])('%j', (argv, message) => {
    const cmd = parseArgs(argv);
    expect(cmd.kind).toBe('usage-error');
    if (cmd.kind === 'usage-error') expect(cmd.message).toMatch(message);
  });

  it('USAGE documents the token commands', () => {
    for (const cmd of ['token create', 'token list', 'token revoke', 'token mint']) expect(USAGE).toContain(cmd);
  });
});

describe('runtimeProblem: the Node.js the gateway needs', () => {
  it.each(['v24.0.0', 'v24.21.0', 'v26.1.0'])('%s runs it', (v) => {
    expect(runtimeProblem(v)).toBeUndefined();
  });
  it.each(['v20.20.2', 'v22.12.0', 'v23.11.1', 'garbage'])('%s is refused with what to do', (v) => {
    expect(runtimeProblem(v)).toMatch(new RegExp(`needs Node\\.js 24 or newer, and this is ${v}: run it through npm`));
  });
});
