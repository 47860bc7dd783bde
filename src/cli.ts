/**
 * argv → a typed command. No I/O here: `main.ts` runs what this returns. Unknown commands, unknown
 * flags and missing values are usage errors with a message that says what was expected.
 */

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
    default:
      return usage(`unknown command "${cmd}"`);
  }
}
