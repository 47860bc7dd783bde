/**
 * argv → a typed command. No I/O here: `main.ts` runs what this returns. Unknown commands, unknown
 * flags and missing values are usage errors with a message that says what was expected.
 */
import { parseDurationSeconds, TOKEN_DEFAULTS } from './authn/token-store.js';

/** Every command the `portcullis` binary understands. */
export type Command =
  | { readonly kind: 'start'; readonly config: string | undefined }
  | { readonly kind: 'check'; readonly config: string | undefined }
  | {
      readonly kind: 'certs-init';
      readonly out: string | undefined;
      readonly hosts: readonly string[];
      readonly clients: readonly string[] | undefined;
      readonly force: boolean;
    }
  | {
      readonly kind: 'certs-issue';
      readonly out: string | undefined;
      readonly name: string;
      readonly days: number | undefined;
      readonly force: boolean;
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
  | { readonly kind: 'help' }
  | { readonly kind: 'version' }
  | { readonly kind: 'usage-error'; readonly message: string };

export const USAGE = `Usage: portcullis <command> [options]

Commands:
  start  [--config FILE]        start the gateway (default: the embedded config/portcullis.yaml,
                                creating dev certificates in certs-dev/ on first run)
  check  [--config FILE]        validate a config file and every file it names, then exit
  certs init   [--out DIR] [--hosts h1,h2] [--clients alice,bob] [--force]
                                write a dev CA, server and client certificates and an empty CRL
  certs issue  [--out DIR] --name NAME [--days N] [--force]
                                sign one more client certificate with the dev CA
  certs revoke [--out DIR] --name NAME
                                add a client certificate to the CRL (ca.crl)
  token create --name NAME --file FILE [--expires-in 90d|never] [--scope 'a b']
                                make a static Bearer token: prints it ONCE on stdout, stores only its
                                SHA-256 (file mode 0600); a running gateway picks it up within a second
  token list   --file FILE [--json]
                                names, status, dates, scopes and hash prefixes (never a token)
  token revoke --name NAME --file FILE
                                revoke a static token (refused by a running gateway within a second)
  token mint   --sub SUBJECT [--scope 'a b'] [--ttl 1h] [--out DIR]
                                print a dev JWT signed with DIR/jwt-signing-key.pem (default certs-dev/),
                                accepted by the dev-jwt provider of the embedded config
  help | --help                 this text
  version | --version           the version
`;

type FlagSpec = Record<string, 'string' | 'boolean'>;

function parseFlags(args: readonly string[], spec: FlagSpec): Record<string, string | boolean> | string {
  const out: Record<string, string | boolean> = {};
  for (let i = 0; i < args.length; i++) {
    const arg = args[i] as string;
    const eq = arg.indexOf('=');
    const name = arg.startsWith('--') ? arg.slice(2, eq === -1 ? undefined : eq) : undefined;
    if (name === undefined) return `unexpected argument "${arg}"`;
    const kind = spec[name];
    if (kind === undefined) return `unknown option --${name}`;
    if (name in out) return `--${name} given twice`;
    if (kind === 'boolean') {
      if (eq !== -1) return `--${name} takes no value`;
      out[name] = true;
    } else {
      const value = eq !== -1 ? arg.slice(eq + 1) : args[++i];
      if (value === undefined || value === '' || (eq === -1 && value.startsWith('--')))
        return `--${name} needs a value`;
      out[name] = value;
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

/** Parses the arguments after the binary name. `--help` / `-h` anywhere asks for the usage text. */
export function parseArgs(argv: readonly string[]): Command {
  const [cmd, ...rest] = argv;
  const usage = (message: string): Command => ({ kind: 'usage-error', message });
  if (rest.includes('--help') || rest.includes('-h')) return { kind: 'help' };
  switch (cmd) {
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      return { kind: 'help' };
    case 'version':
    case '--version':
      return { kind: 'version' };
    case 'start':
    case 'check': {
      const f = parseFlags(rest, { config: 'string' });
      if (typeof f === 'string') return usage(`${cmd}: ${f}`);
      return { kind: cmd, config: str(f.config) };
    }
    case 'certs': {
      const [sub, ...args] = rest;
      if (sub === 'init') {
        const f = parseFlags(args, { out: 'string', hosts: 'string', clients: 'string', force: 'boolean' });
        if (typeof f === 'string') return usage(`certs init: ${f}`);
        // `--clients ,` is a typo, not a request for a PKI without clients.
        for (const name of ['hosts', 'clients'] as const) {
          if (f[name] !== undefined && list(f[name]).length === 0)
            return usage(`certs init: --${name} needs at least one name`);
        }
        return {
          kind: 'certs-init',
          out: str(f.out),
          hosts: list(f.hosts),
          clients: f.clients === undefined ? undefined : list(f.clients),
          force: f.force === true,
        };
      }
      if (sub === 'issue') {
        const f = parseFlags(args, { out: 'string', name: 'string', days: 'string', force: 'boolean' });
        if (typeof f === 'string') return usage(`certs issue: ${f}`);
        const name = str(f.name);
        if (name === undefined) return usage('certs issue: --name NAME is required');
        const daysText = str(f.days);
        const days = daysText === undefined ? undefined : Number(daysText);
        if (days !== undefined && (!Number.isInteger(days) || days < 1 || days > 36_500))
          return usage(
            `certs issue: --days must be a whole number of days from 1 to 36500, got "${daysText ?? ''}"`,
          );
        return { kind: 'certs-issue', out: str(f.out), name, days, force: f.force === true };
      }
      if (sub === 'revoke') {
        const f = parseFlags(args, { out: 'string', name: 'string' });
        if (typeof f === 'string') return usage(`certs revoke: ${f}`);
        const name = str(f.name);
        if (name === undefined) return usage('certs revoke: --name NAME is required');
        return { kind: 'certs-revoke', out: str(f.out), name };
      }
      return usage(
        `certs: expected init, issue or revoke, got ${sub === undefined ? 'nothing' : `"${sub}"`}`,
      );
    }
    case 'token':
      return parseToken(rest, usage);
    default:
      return usage(`unknown command "${cmd}"`);
  }
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

function parseToken(rest: readonly string[], usage: (message: string) => Command): Command {
  const [sub, ...args] = rest;
  if (sub === 'create') {
    const f = parseFlags(args, { name: 'string', file: 'string', 'expires-in': 'string', scope: 'string' });
    if (typeof f === 'string') return usage(`token create: ${f}`);
    const name = str(f.name);
    const file = str(f.file);
    if (name === undefined) return usage('token create: --name NAME is required');
    if (file === undefined) return usage('token create: --file FILE is required (the tokens file of a static provider)');
    const expires = str(f['expires-in']);
    let expiresInSeconds: number | undefined = TOKEN_DEFAULTS.expiresInSeconds;
    if (expires === 'never') expiresInSeconds = undefined;
    else if (expires !== undefined) {
      const d = duration('expires-in', expires);
      if (typeof d === 'string') return usage(`token create: ${d} (or "never")`);
      expiresInSeconds = d;
    }
    return { kind: 'token-create', file, name, expiresInSeconds, scopes: scopeList(f.scope) };
  }
  if (sub === 'list') {
    const f = parseFlags(args, { file: 'string', json: 'boolean' });
    if (typeof f === 'string') return usage(`token list: ${f}`);
    const file = str(f.file);
    if (file === undefined) return usage('token list: --file FILE is required');
    return { kind: 'token-list', file, json: f.json === true };
  }
  if (sub === 'revoke') {
    const f = parseFlags(args, { name: 'string', file: 'string' });
    if (typeof f === 'string') return usage(`token revoke: ${f}`);
    const name = str(f.name);
    const file = str(f.file);
    if (name === undefined) return usage('token revoke: --name NAME is required');
    if (file === undefined) return usage('token revoke: --file FILE is required');
    return { kind: 'token-revoke', file, name };
  }
  if (sub === 'mint') {
    const f = parseFlags(args, { sub: 'string', scope: 'string', ttl: 'string', out: 'string' });
    if (typeof f === 'string') return usage(`token mint: ${f}`);
    const subject = str(f.sub);
    if (subject === undefined) return usage('token mint: --sub SUBJECT is required');
    const ttlText = str(f.ttl);
    let ttlSeconds: number = TOKEN_DEFAULTS.mintTtlSeconds;
    if (ttlText !== undefined) {
      const d = duration('ttl', ttlText);
      if (typeof d === 'string') return usage(`token mint: ${d}`);
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
  return usage(`token: expected create, list, revoke or mint, got ${sub === undefined ? 'nothing' : `"${sub}"`}`);
}
