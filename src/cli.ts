/**
 * argv → a typed command. No I/O here: `main.ts` runs what this returns. Unknown commands, unknown
 * flags and missing values are usage errors with a message that says what was expected.
 *
 * Every command is described once, in {@link COMMANDS}: its options (what the parser accepts) and its exit
 * codes. `portcullis <command> --help` prints that description, so the help can never list an option the
 * parser refuses, or miss one it takes.
 */
import { OU_PATTERN, parseDurationSeconds, TOKEN_DEFAULTS } from './commands/defaults.js';

/** Default of `portcullis probe --timeout`: 2 s, above a healthy /readyz answer (a few ms) by far, and below
 * kubelet's usual probe `timeoutSeconds` of 3 (see the README's Kubernetes section). */
export const PROBE_DEFAULT_TIMEOUT_MS = 2_000;

/** Every command the `portcullis` binary understands. */
export type Command =
  | { readonly kind: 'start'; readonly config: string | undefined }
  | { readonly kind: 'check'; readonly config: string | undefined; readonly print: boolean }
  | { readonly kind: 'schema' }
  | {
      readonly kind: 'probe';
      readonly config: string | undefined;
      readonly path: '/readyz' | '/healthz';
      readonly timeoutMs: number;
      readonly cert: string | undefined;
      readonly key: string | undefined;
      readonly ca: string | undefined;
      readonly servername: string | undefined;
    }
  | {
      readonly kind: 'certs-init';
      readonly out: string | undefined;
      readonly hosts: readonly string[];
      readonly clients: readonly string[] | undefined;
      /** OU of the client certificates; undefined: the default (`dev`). */
      readonly ou: string | undefined;
      /** Also write the cluster side of a scheduler behind the gateway (cluster CA, scheduler, worker, gateway client). */
      readonly cluster: boolean;
      readonly force: boolean;
    }
  | {
      readonly kind: 'certs-issue';
      readonly out: string | undefined;
      readonly name: string;
      readonly days: number | undefined;
      readonly ou: string | undefined;
      readonly force: boolean;
      /** `--p12`: also a PKCS#12 bundle; `passphraseFile` from `--p12-passphrase-file`. */
      readonly p12?: { readonly passphraseFile: string | undefined };
    }
  | { readonly kind: 'certs-revoke'; readonly out: string | undefined; readonly name: string }
  | {
      readonly kind: 'token-create';
      readonly file: string;
      readonly name: string;
      /** undefined: never expires (`--expires-in never`). */
      readonly expiresInSeconds: number | undefined;
      readonly scopes: readonly string[];
    }
  | { readonly kind: 'token-list'; readonly file: string; readonly json: boolean }
  | { readonly kind: 'token-revoke'; readonly file: string; readonly name: string }
  | {
      readonly kind: 'token-mint';
      readonly out: string | undefined;
      readonly sub: string;
      readonly scope: string | undefined;
      readonly ttlSeconds: number;
    }
  /** `topic`: a command (`start`, `certs`, `certs init`, ...) whose help is asked for; undefined: the overview. */
  | { readonly kind: 'help'; readonly topic: string | undefined }
  | { readonly kind: 'version' }
  /** `topic`: the command whose usage line goes with the message, when the error is inside one. */
  | { readonly kind: 'usage-error'; readonly message: string; readonly topic?: string | undefined };

/** One option of a command: its kind, the placeholder of its value, and one line of help. */
interface OptionSpec {
  readonly kind: 'string' | 'boolean';
  /** The value's placeholder in the usage line, e.g. `FILE` (string options only). */
  readonly value?: string;
  readonly required?: true;
  readonly help: string;
}

/** One command, as its `--help` shows it. */
interface CommandSpec {
  /** One line for the overview. */
  readonly summary: string;
  /** Paragraphs after the usage line. */
  readonly description: string;
  readonly options: Readonly<Record<string, OptionSpec>>;
  /** Exit code → when. */
  readonly exitCodes: readonly (readonly [number, string])[];
}

const USAGE_EXIT: readonly [number, string] = [2, 'usage error (an unknown option, a missing or bad value)'];

const configOption = (what: string): OptionSpec => ({
  kind: 'string',
  value: 'FILE',
  help: `${what} (default: the embedded config/portcullis.yaml; see "Quick start" in the README)`,
});
const outOption: OptionSpec = {
  kind: 'string',
  value: 'DIR',
  help: 'the PKI directory (default: certs-dev/ of a clone; ~/.config/portcullis/certs-dev of an installed package)',
};

/**
 * Every command and subcommand, in the order the overview lists them. The keys are what a user types
 * (`certs init`); `certs` and `token` alone are groups whose help lists their subcommands.
 */
export const COMMANDS: Readonly<Record<string, CommandSpec>> = {
  start: {
    summary: 'start the gateway',
    description:
      'Loads the config, binds every listener and the admin listener, and serves until SIGTERM or SIGINT\n' +
      '(drain, then exit). SIGHUP, or a change of a file the config names, reloads without dropping a\n' +
      'connection. Without --config, the embedded default runs and its dev certificates are created on first\n' +
      'start. JSON log lines go to stdout.',
    options: { config: configOption('the config file') },
    exitCodes: [
      [0, 'stopped by SIGTERM or SIGINT after the drain'],
      [1, 'a runtime failure (e.g. the drain failed)'],
      USAGE_EXIT,
      [3, 'invalid config, or a listener could not bind (nothing was left listening)'],
    ],
  },
  check: {
    summary: 'validate a config and every file it names, then exit',
    description:
      'Loads the config exactly as `start` does (certificates, keys, CAs, CRLs, JWKS, token and secret\n' +
      'files) without binding anything, and prints "config OK" or every error with its key path.\n' +
      'With --print, also prints the effective config (the file with every default applied) as YAML, every\n' +
      'secret shown as "[redacted]" (the contents of secret files are never read into it).',
    options: {
      config: configOption('the config file'),
      print: { kind: 'boolean', help: 'print the effective config, secrets redacted' },
    },
    exitCodes: [[0, 'config OK'], USAGE_EXIT, [3, 'invalid config (every error is listed on stderr)']],
  },
  schema: {
    summary: 'print the JSON Schema of the config file',
    description:
      'Prints the JSON Schema (draft-07) of the config file, made from the schema the gateway validates with.\n' +
      'The same file ships as schema/portcullis.schema.json; point your editor at it, e.g. with a first line\n' +
      '# yaml-language-server: $schema=<path or URL of portcullis.schema.json>',
    options: {},
    exitCodes: [[0, 'printed'], USAGE_EXIT],
  },
  probe: {
    summary: "ask the running gateway's admin listener whether it is ready (for health checks)",
    description:
      "Reads the admin listener's address and TLS settings from the config and GETs --path from it (the\n" +
      'loopback address when the admin listens on a wildcard). Exits 0 on a 200 answer and 1 on anything\n' +
      'else, with one line on stderr. For Docker HEALTHCHECK and Kubernetes exec probes.\n' +
      'With admin.tls, the probe speaks TLS: when the admin requires a client certificate, give one with\n' +
      "--cert and --key (one that admin.allowClients admits). The admin's certificate is verified against\n" +
      '--ca when given; without --ca it is not verified: the probe connects only to an address of this host,\n' +
      "sends no secret, and reads nothing but a status (as kubelet's HTTPS probes do).",
    options: {
      config: configOption('the config whose admin listener is asked'),
      path: {
        kind: 'string',
        value: 'PATH',
        help: '/readyz (default: ready to serve) or /healthz (the process answers)',
      },
      timeout: {
        kind: 'string',
        value: 'DURATION',
        help: `give up after this long, e.g. 2s or 500ms (default ${PROBE_DEFAULT_TIMEOUT_MS / 1000}s)`,
      },
      cert: {
        kind: 'string',
        value: 'FILE',
        help: 'client certificate (PEM) for an admin listener that asks for one',
      },
      key: { kind: 'string', value: 'FILE', help: 'its private key (PEM)' },
      ca: {
        kind: 'string',
        value: 'FILE',
        help: "verify the admin's certificate against this CA bundle (PEM)",
      },
      servername: {
        kind: 'string',
        value: 'NAME',
        help: "with --ca: the name the admin's certificate must carry (and the SNI)",
      },
    },
    exitCodes: [
      [0, 'the admin listener answered 200'],
      [1, 'any other answer, no answer within the timeout, a TLS failure, or a config the probe cannot read'],
      USAGE_EXIT,
    ],
  },
  certs: {
    summary: 'a development PKI: init, issue, revoke',
    description:
      'Subcommands: certs init, certs issue, certs revoke. `portcullis certs <subcommand> --help` for each.',
    options: {},
    exitCodes: [],
  },
  'certs init': {
    summary: 'write a dev CA, server and client certificates, an empty CRL and the dev JWT signing key',
    description:
      'Writes ca.pem, ca-key.pem, server.pem + server-key.pem (localhost, 127.0.0.1, ::1 and --hosts),\n' +
      'client-<name>.pem + -key.pem per client (CN=name, OU=dev or --ou, URI spiffe://portcullis.dev/client/<name>),\n' +
      'an empty ca.crl, and jwt-signing-key.pem (ES256) with its public jwks.json. With --cluster, also the\n' +
      'cluster side of a Dask scheduler behind the gateway: cluster-ca.pem (+ key), scheduler.pem and\n' +
      'worker.pem (+ keys; serverAuth and clientAuth, localhost and 127.0.0.1) and gateway-client.pem (+ key;\n' +
      'clientAuth), all signed by the cluster CA. Keys are mode 0600, the directory 0700; an existing file is\n' +
      'never overwritten without --force.',
    options: {
      out: outOption,
      hosts: { kind: 'string', value: 'H1,H2', help: 'more names and IPs for the server certificate' },
      clients: { kind: 'string', value: 'A,B', help: 'client certificates to issue (default: alice)' },
      ou: {
        kind: 'string',
        value: 'OU',
        help: 'the OU of the client certificates (default: dev), for allowClients "OU=..."',
      },
      cluster: {
        kind: 'boolean',
        help: 'also write the cluster CA and the scheduler, worker and gateway-client certificates',
      },
      force: { kind: 'boolean', help: 'overwrite existing files' },
    },
    exitCodes: [
      [0, 'written (the files are listed on stdout)'],
      [1, 'a file exists (without --force), a bad name or host; nothing was written'],
      USAGE_EXIT,
    ],
  },
  'certs issue': {
    summary: 'sign one more client certificate with the dev CA',
    description:
      'Reads ca.pem and ca-key.pem from --out and writes client-<name>.pem (0644) and client-<name>-key.pem (0600).',
    options: {
      out: outOption,
      name: { kind: 'string', value: 'NAME', required: true, help: 'the client (CN, file names, URI SAN)' },
      days: { kind: 'string', value: 'N', help: 'validity in days, 1 to 36500 (default 365)' },
      ou: { kind: 'string', value: 'OU', help: 'the OU of the certificate (default: dev)' },
      force: { kind: 'boolean', help: 'overwrite an existing certificate of that name' },
      p12: {
        kind: 'boolean',
        help: 'also client-<name>.p12 (0600) for a browser; passphrase in client-<name>.p12.pass (0600)',
      },
      'p12-passphrase-file': {
        kind: 'string',
        value: 'FILE',
        help: 'with --p12: the passphrase from this file (first line) instead of a random one',
      },
    },
    exitCodes: [
      [0, 'written'],
      [1, 'the files exist (without --force), the CA is missing, expired or does not match its key'],
      USAGE_EXIT,
    ],
  },
  'certs revoke': {
    summary: 'add a client certificate to the CRL (ca.crl)',
    description:
      "Re-signs ca.crl with the client's serial added. A running gateway loads it within\n" +
      "reload.checkFilesSeconds (60 s by default), or at once on SIGHUP, and closes that client's open connections.",
    options: {
      out: outOption,
      name: { kind: 'string', value: 'NAME', required: true, help: 'the client to revoke' },
    },
    exitCodes: [
      [0, 'revoked (or already revoked)'],
      [1, 'no such client, the CA is missing, or ca.crl is not signed by the CA'],
      USAGE_EXIT,
    ],
  },
  token: {
    summary: 'static Bearer tokens and dev JWTs: create, list, revoke, mint',
    description:
      'Subcommands: token create, token list, token revoke, token mint. `portcullis token <subcommand> --help` for each.',
    options: {},
    exitCodes: [],
  },
  'token create': {
    summary: 'make a static Bearer token; print it once',
    description:
      'Prints the token (pcs_...) ONCE on stdout and nothing else (TOKEN=$(...) works); appends its name,\n' +
      'SHA-256, dates and scopes to FILE (written atomically, mode 0600, created if missing). A running\n' +
      'gateway accepts it within a second.',
    options: {
      name: { kind: 'string', value: 'NAME', required: true, help: 'a name unique among the live tokens' },
      file: { kind: 'string', value: 'FILE', required: true, help: 'the tokensFile of a static provider' },
      'expires-in': {
        kind: 'string',
        value: 'DURATION',
        help: 'e.g. 30d, 12h (units s m h d w), or never (default 90d)',
      },
      scope: { kind: 'string', value: "'A B'", help: 'space-separated scopes' },
    },
    exitCodes: [
      [0, 'created'],
      [1, 'the file is invalid or locked, or a live token has that name'],
      USAGE_EXIT,
    ],
  },
  'token list': {
    summary: 'names, status, dates, scopes and hash prefixes (never a token)',
    description:
      'One row per token: name, active/expired/revoked, created, expires, scopes, the first 12 hex digits of its SHA-256.',
    options: {
      file: { kind: 'string', value: 'FILE', required: true, help: 'the tokens file' },
      json: { kind: 'boolean', help: 'print JSON instead of a table' },
    },
    exitCodes: [[0, 'listed'], [1, 'the file is missing or invalid'], USAGE_EXIT],
  },
  'token revoke': {
    summary: 'revoke a static token',
    description:
      'Marks the token revoked (the record stays, for audit); a running gateway refuses it within a second.',
    options: {
      name: { kind: 'string', value: 'NAME', required: true, help: 'the token to revoke' },
      file: { kind: 'string', value: 'FILE', required: true, help: 'the tokens file' },
    },
    exitCodes: [
      [0, 'revoked'],
      [1, 'no live token of that name, or the file is invalid or locked'],
      USAGE_EXIT,
    ],
  },
  'token mint': {
    summary: "print a dev JWT the embedded config's dev-jwt provider accepts",
    description:
      'Signs with DIR/jwt-signing-key.pem (ES256): iss https://portcullis.dev/, aud portcullis-dev, typ at+jwt.\n' +
      'Not for production.',
    options: {
      sub: { kind: 'string', value: 'SUBJECT', required: true, help: 'the sub claim' },
      scope: { kind: 'string', value: "'A B'", help: 'the scope claim' },
      ttl: { kind: 'string', value: 'DURATION', help: 'lifetime, e.g. 15m (default 1h)' },
      out: { ...outOption, help: 'the directory holding jwt-signing-key.pem (default: as certs init)' },
    },
    exitCodes: [[0, 'printed'], [1, 'the signing key is missing or unreadable'], USAGE_EXIT],
  },
  help: {
    summary: 'this overview, or `help <command>` for one command',
    description: 'The same as `portcullis <command> --help`.',
    options: {},
    exitCodes: [[0, 'printed'], USAGE_EXIT],
  },
  version: {
    summary: 'print the version (also -v, --version)',
    description: 'Prints "portcullis <version>".',
    options: {},
    exitCodes: [[0, 'printed']],
  },
};

/** `[--out DIR] --name NAME [--force]`: the options of a command as its usage line shows them. */
function synopsis(name: string): string {
  const spec = COMMANDS[name];
  if (spec === undefined) return name;
  const parts = Object.entries(spec.options).map(([opt, o]) => {
    const text = o.kind === 'boolean' ? `--${opt}` : `--${opt} ${o.value ?? 'VALUE'}`;
    return o.required ? text : `[${text}]`;
  });
  return [name, ...parts].join(' ');
}

/** The overview: every command with its summary, and where to find the rest. */
export const USAGE = ((): string => {
  const leaves = Object.keys(COMMANDS).filter((n) => n !== 'certs' && n !== 'token');
  const width = Math.max(...leaves.map((n) => n.length));
  const lines = leaves.map((n) => `  ${n.padEnd(width)}  ${COMMANDS[n]?.summary ?? ''}`);
  return (
    `Usage: portcullis <command> [options]\n\nCommands:\n${lines.join('\n')}\n\n` +
    'Run `portcullis <command> --help` for its options and exit codes (e.g. `portcullis certs init --help`).\n' +
    'Exit codes: 0 ok, 1 failure, 2 usage error, 3 invalid config.\n'
  );
})();

/**
 * The help of one command: usage line, description, options and exit codes; the overview for an unknown
 * topic. A group (`certs`, `token`) lists its subcommands.
 */
export function commandHelp(topic: string | undefined): string {
  const spec = topic === undefined ? undefined : COMMANDS[topic];
  if (topic === undefined || spec === undefined) return USAGE;
  if (topic === 'certs' || topic === 'token') {
    const subs = Object.keys(COMMANDS).filter((n) => n.startsWith(`${topic} `));
    return (
      `Usage: portcullis ${topic} <${subs.map((s) => s.slice(topic.length + 1)).join('|')}> [options]\n\n` +
      `${subs.map((s) => `  portcullis ${synopsis(s)}\n      ${COMMANDS[s]?.summary ?? ''}`).join('\n')}\n\n` +
      `Run \`portcullis ${topic} <subcommand> --help\` for its options and exit codes.\n`
    );
  }
  const opts = Object.entries(spec.options).map(([opt, o]) => [
    o.kind === 'boolean' ? `--${opt}` : `--${opt} ${o.value ?? 'VALUE'}`,
    `${o.help}${o.required ? ' (required)' : ''}`,
  ]);
  opts.push(['-h, --help', 'this text']);
  const width = Math.max(...opts.map(([o]) => (o ?? '').length));
  const exits = spec.exitCodes.map(([code, when]) => `  ${code}  ${when}`);
  return (
    `Usage: portcullis ${synopsis(topic)}\n\n${spec.description}\n\n` +
    `Options:\n${opts.map(([o, h]) => `  ${(o ?? '').padEnd(width)}  ${h ?? ''}`).join('\n')}\n` +
    (exits.length > 0 ? `\nExit codes:\n${exits.join('\n')}\n` : '')
  );
}

/** The usage line of `topic` (or the overview's first line), for a usage error. */
export function usageLine(topic: string | undefined): string {
  if (topic !== undefined && COMMANDS[topic] !== undefined && topic !== 'certs' && topic !== 'token')
    return `Usage: portcullis ${synopsis(topic)}\nRun \`portcullis ${topic} --help\` for its options and exit codes.\n`;
  return USAGE;
}

/** Parses `args` against the options of command `name` (from {@link COMMANDS}); a string is the usage error. */
function parseFlags(args: readonly string[], name: string): Record<string, string | boolean> | string {
  const spec = COMMANDS[name]?.options ?? {};
  const out: Record<string, string | boolean> = {};
  for (let i = 0; i < args.length; i++) {
    const arg = args[i] as string;
    const eq = arg.indexOf('=');
    const flag = arg.startsWith('--') ? arg.slice(2, eq === -1 ? undefined : eq) : undefined;
    if (flag === undefined) return `unexpected argument "${arg}"`;
    const kind = Object.hasOwn(spec, flag) ? spec[flag]?.kind : undefined;
    if (kind === undefined) return `unknown option --${flag}`;
    if (flag in out) return `--${flag} given twice`;
    if (kind === 'boolean') {
      if (eq !== -1) return `--${flag} takes no value`;
      out[flag] = true;
    } else {
      const value = eq !== -1 ? arg.slice(eq + 1) : args[++i];
      if (value === undefined || value === '' || (eq === -1 && value.startsWith('--')))
        return `--${flag} needs a value`;
      out[flag] = value;
    }
  }
  return out;
}

const list = (v: string | boolean | undefined): string[] =>
  typeof v === 'string'
    ? v
        .split(',')
        .map((s) => s.trim())
        .filter((s) => s !== '')
    : [];
const str = (v: string | boolean | undefined): string | undefined => (typeof v === 'string' ? v : undefined);

const HELP_FLAGS = new Set(['--help', '-h']);
const VERSION_FLAGS = new Set(['version', '--version', '-v']);

/** The command a `--help` after `cmd sub ...` asks about: `certs init`, or the group `certs`, or `start`. */
function helpTopic(cmd: string, sub: string | undefined): string | undefined {
  if (cmd === 'certs' || cmd === 'token') {
    const full = `${cmd} ${sub ?? ''}`;
    return COMMANDS[full] !== undefined ? full : cmd;
  }
  return COMMANDS[cmd] !== undefined ? cmd : undefined;
}

/** The oldest Node.js major Portcullis runs on (`engines`); the npm scripts bring their own Node 24. */
export const MIN_NODE_MAJOR = 24;

/**
 * Why this Node.js cannot run the gateway, or undefined when it can. An older Node fails later and deep
 * inside (a missing API), with a message that names nothing the user can act on.
 * @param version `process.version`, e.g. `v20.20.2`.
 */
export function runtimeProblem(version: string): string | undefined {
  const major = Number(/^v?(\d+)\./.exec(version)?.[1] ?? NaN);
  if (major >= MIN_NODE_MAJOR) return undefined;
  return `needs Node.js ${MIN_NODE_MAJOR} or newer, and this is ${version}: run it through npm (npm start, npx portcullis), which uses the Node ${MIN_NODE_MAJOR} that npm ci installs, or install Node.js ${MIN_NODE_MAJOR} LTS`;
}

/**
 * Parses the arguments after the binary name. `--help` / `-h` anywhere asks for the help of the command
 * it follows (the overview when there is none); `-v`, `--version` and `version` print the version.
 */
export function parseArgs(argv: readonly string[]): Command {
  const [cmd, ...rest] = argv;
  const usage = (message: string, topic?: string): Command => ({ kind: 'usage-error', message, topic });
  if (cmd === undefined || HELP_FLAGS.has(cmd)) return { kind: 'help', topic: undefined };
  if (VERSION_FLAGS.has(cmd)) return { kind: 'version' };
  if (cmd === 'help') {
    const topic = rest.join(' ');
    if (topic === '') return { kind: 'help', topic: undefined };
    if (COMMANDS[topic] === undefined) return usage(`help: unknown command "${topic}"`);
    return { kind: 'help', topic };
  }
  if (rest.some((a) => HELP_FLAGS.has(a))) {
    const topic = helpTopic(cmd, rest[0]);
    return topic === undefined ? usage(`unknown command "${cmd}"`) : { kind: 'help', topic };
  }
  switch (cmd) {
    case 'start': {
      const f = parseFlags(rest, cmd);
      if (typeof f === 'string') return usage(`${cmd}: ${f}`, cmd);
      return { kind: cmd, config: str(f.config) };
    }
    case 'check': {
      const f = parseFlags(rest, cmd);
      if (typeof f === 'string') return usage(`${cmd}: ${f}`, cmd);
      return { kind: cmd, config: str(f.config), print: f.print === true };
    }
    case 'schema': {
      const f = parseFlags(rest, cmd);
      if (typeof f === 'string') return usage(`${cmd}: ${f}`, cmd);
      return { kind: 'schema' };
    }
    case 'probe':
      return parseProbe(rest, usage);
    case 'certs':
      return parseCerts(rest, usage);
    case 'token':
      return parseToken(rest, usage);
    default:
      return usage(`unknown command "${cmd}"`);
  }
}

type Usage = (message: string, topic?: string) => Command;

/** `2s`, `500ms`, `2` (seconds): milliseconds from 1 to 60,000, or undefined when it is none of those. */
function probeTimeoutMs(text: string): number | undefined {
  const m = /^(\d{1,6})(ms|s)?$/.exec(text);
  if (m === null) return undefined;
  const ms = Number(m[1]) * (m[2] === 'ms' ? 1 : 1000);
  return ms >= 1 && ms <= 60_000 ? ms : undefined;
}

function parseProbe(args: readonly string[], usage: Usage): Command {
  const t = 'probe';
  const f = parseFlags(args, t);
  if (typeof f === 'string') return usage(`${t}: ${f}`, t);
  const path = str(f.path) ?? '/readyz';
  if (path !== '/readyz' && path !== '/healthz')
    return usage(`${t}: --path must be /readyz or /healthz, got "${path}"`, t);
  const timeoutText = str(f.timeout);
  const timeoutMs = timeoutText === undefined ? PROBE_DEFAULT_TIMEOUT_MS : probeTimeoutMs(timeoutText);
  if (timeoutMs === undefined)
    return usage(
      `${t}: --timeout must be a duration from 1ms to 60s such as 2s or 500ms, got "${timeoutText ?? ''}"`,
      t,
    );
  const cert = str(f.cert);
  const key = str(f.key);
  if ((cert === undefined) !== (key === undefined)) return usage(`${t}: --cert and --key go together`, t);
  const servername = str(f.servername);
  const ca = str(f.ca);
  if (servername !== undefined && ca === undefined)
    return usage(`${t}: --servername needs --ca (without --ca the admin's certificate is not verified)`, t);
  return { kind: 'probe', config: str(f.config), path, timeoutMs, cert, key, ca, servername };
}

function parseOu(
  value: string | boolean | undefined,
  topic: string,
  usage: Usage,
): string | Command | undefined {
  const ou = str(value);
  if (ou !== undefined && !OU_PATTERN.test(ou))
    return usage(`${topic}: --ou must be 1-64 letters, digits, space, ".", "_" or "-", got "${ou}"`, topic);
  return ou;
}

function parseCerts(rest: readonly string[], usage: Usage): Command {
  const [sub, ...args] = rest;
  if (sub === 'init') {
    const t = 'certs init';
    const f = parseFlags(args, t);
    if (typeof f === 'string') return usage(`${t}: ${f}`, t);
    // `--clients ,` is a typo, not a request for a PKI without clients.
    for (const name of ['hosts', 'clients'] as const) {
      if (f[name] !== undefined && list(f[name]).length === 0)
        return usage(`${t}: --${name} needs at least one name`, t);
    }
    const ou = parseOu(f.ou, t, usage);
    if (typeof ou === 'object') return ou;
    return {
      kind: 'certs-init',
      out: str(f.out),
      hosts: list(f.hosts),
      clients: f.clients === undefined ? undefined : list(f.clients),
      ou,
      cluster: f.cluster === true,
      force: f.force === true,
    };
  }
  if (sub === 'issue') {
    const t = 'certs issue';
    const f = parseFlags(args, t);
    if (typeof f === 'string') return usage(`${t}: ${f}`, t);
    const name = str(f.name);
    if (name === undefined) return usage(`${t}: --name NAME is required`, t);
    const daysText = str(f.days);
    const days = daysText === undefined ? undefined : Number(daysText);
    if (days !== undefined && (!Number.isInteger(days) || days < 1 || days > 36_500))
      return usage(`${t}: --days must be a whole number of days from 1 to 36500, got "${daysText ?? ''}"`, t);
    const ou = parseOu(f.ou, t, usage);
    if (typeof ou === 'object') return ou;
    const passphraseFile = str(f['p12-passphrase-file']);
    if (passphraseFile !== undefined && f.p12 !== true)
      return usage(`${t}: --p12-passphrase-file only with --p12`, t);
    return {
      kind: 'certs-issue',
      out: str(f.out),
      name,
      days,
      ou,
      force: f.force === true,
      ...(f.p12 === true ? { p12: { passphraseFile } } : {}),
    };
  }
  if (sub === 'revoke') {
    const t = 'certs revoke';
    const f = parseFlags(args, t);
    if (typeof f === 'string') return usage(`${t}: ${f}`, t);
    const name = str(f.name);
    if (name === undefined) return usage(`${t}: --name NAME is required`, t);
    return { kind: 'certs-revoke', out: str(f.out), name };
  }
  return usage(
    `certs: expected init, issue or revoke, got ${sub === undefined ? 'nothing' : `"${sub}"`}`,
    'certs',
  );
}

/** Space-separated scopes (`--scope 'a b'`), empty entries dropped. */
function scopeList(v: string | boolean | undefined): string[] {
  return typeof v === 'string' ? v.split(' ').filter((s) => s !== '') : [];
}

/** `--expires-in 30d` / `--ttl 1h`: seconds, or the usage error text. */
function duration(flag: string, v: string): number | string {
  try {
    return parseDurationSeconds(v);
  } catch (err) {
    return `--${flag}: ${err instanceof Error ? err.message : 'a duration such as 30d, 12h, 45m'}`;
  }
}

function parseToken(rest: readonly string[], usage: Usage): Command {
  const [sub, ...args] = rest;
  if (sub === 'create') {
    const t = 'token create';
    const f = parseFlags(args, t);
    if (typeof f === 'string') return usage(`${t}: ${f}`, t);
    const name = str(f.name);
    const file = str(f.file);
    if (name === undefined) return usage(`${t}: --name NAME is required`, t);
    if (file === undefined)
      return usage(`${t}: --file FILE is required (the tokens file of a static provider)`, t);
    const expires = str(f['expires-in']);
    let expiresInSeconds: number | undefined = TOKEN_DEFAULTS.expiresInSeconds;
    if (expires === 'never') expiresInSeconds = undefined;
    else if (expires !== undefined) {
      const d = duration('expires-in', expires);
      if (typeof d === 'string') return usage(`${t}: ${d} (or "never")`, t);
      expiresInSeconds = d;
    }
    return { kind: 'token-create', file, name, expiresInSeconds, scopes: scopeList(f.scope) };
  }
  if (sub === 'list') {
    const t = 'token list';
    const f = parseFlags(args, t);
    if (typeof f === 'string') return usage(`${t}: ${f}`, t);
    const file = str(f.file);
    if (file === undefined) return usage(`${t}: --file FILE is required`, t);
    return { kind: 'token-list', file, json: f.json === true };
  }
  if (sub === 'revoke') {
    const t = 'token revoke';
    const f = parseFlags(args, t);
    if (typeof f === 'string') return usage(`${t}: ${f}`, t);
    const name = str(f.name);
    const file = str(f.file);
    if (name === undefined) return usage(`${t}: --name NAME is required`, t);
    if (file === undefined) return usage(`${t}: --file FILE is required`, t);
    return { kind: 'token-revoke', file, name };
  }
  if (sub === 'mint') {
    const t = 'token mint';
    const f = parseFlags(args, t);
    if (typeof f === 'string') return usage(`${t}: ${f}`, t);
    const subject = str(f.sub);
    if (subject === undefined) return usage(`${t}: --sub SUBJECT is required`, t);
    const ttlText = str(f.ttl);
    let ttlSeconds: number = TOKEN_DEFAULTS.mintTtlSeconds;
    if (ttlText !== undefined) {
      const d = duration('ttl', ttlText);
      if (typeof d === 'string') return usage(`${t}: ${d}`, t);
      ttlSeconds = d;
    }
    const scopes = scopeList(f.scope);
    return {
      kind: 'token-mint',
      out: str(f.out),
      sub: subject,
      scope: scopes.length > 0 ? scopes.join(' ') : undefined,
      ttlSeconds,
    };
  }
  return usage(
    `token: expected create, list, revoke or mint, got ${sub === undefined ? 'nothing' : `"${sub}"`}`,
    'token',
  );
}
