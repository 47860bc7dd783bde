/**
 * The file-writing logic behind `portcullis token create | list | revoke | mint`. No console and no
 * process.exit here: each command returns what it did, and a refusal is a {@link TokenCommandError} whose
 * message the CLI prints as is.
 *
 * The tokens file (format in `token-store.ts`) is rewritten whole through a temporary file and a rename, with
 * mode 0600 set before a byte is written: the `type: static` provider of a running gateway, which re-reads
 * the file when its mtime or size changes, sees the old file or the new one, never half of one. Concurrent
 * edits are serialised by an exclusive `<file>.lock`.
 */
import { open, readFile, rm, stat } from 'node:fs/promises';
import { DEV_AUDIENCE, DEV_ISSUER, mintDevJwt } from '../authn/jwks-dev.js';
import { writeFileAtomic } from './files.js';

export { TOKEN_DEFAULTS } from './defaults.js';
import { TOKEN_DEFAULTS } from './defaults.js';
import {
  addToken,
  createToken,
  listTokens,
  revokeToken,
  TokenFileError,
  type TokenListing,
  type TokenRecord,
} from '../authn/token-store.js';

/** Mode of the tokens file: it holds only hashes, but who may use the service is nobody else's business. */
const TOKENS_FILE_MODE = 0o600;

/** A refusal of a `token` command; `message` is meant for the operator. */
export class TokenCommandError extends Error {
  override readonly name = 'TokenCommandError';
}

/** What `token create` made: the token (print it once, never store it) and the record that was stored. */
export interface TokenCreated {
  readonly token: string;
  readonly record: TokenRecord;
  readonly file: string;
}

/**
 * Makes a random static token, appends its record (name, SHA-256, createdAt, expiresAt, scopes) to `file`
 * (created with mode 0600 when missing) and returns the token.
 * @param expiresInSeconds undefined: never expires.
 * @throws TokenCommandError for a bad name or scope, an invalid file, or a live token with that name.
 */
export async function tokenCreate(opts: {
  file: string;
  name: string;
  expiresInSeconds: number | undefined;
  scopes?: readonly string[];
  now?: number;
}): Promise<TokenCreated> {
  const now = opts.now ?? Date.now();
  let created: { token: string; record: TokenRecord };
  try {
    created = createToken(opts.name, opts.expiresInSeconds, now, { scopes: opts.scopes ?? [] });
  } catch (err) {
    throw new TokenCommandError(messageOf(err));
  }
  await withLock(opts.file, async () => {
    const text = await readIfExists(opts.file);
    let next: string;
    try {
      next = addToken(text, created.record, now);
    } catch (err) {
      throw fileError(opts.file, err);
    }
    await writeFileAtomic(opts.file, next, TOKENS_FILE_MODE);
  });
  return { token: created.token, record: created.record, file: opts.file };
}

/**
 * The tokens of `file` with their status at `now`: names, dates, scopes and a hash prefix; never a token.
 * @throws TokenCommandError when the file is missing or invalid.
 */
export async function tokenList(opts: { file: string; now?: number }): Promise<TokenListing[]> {
  const text = await readRequired(opts.file);
  try {
    return listTokens(text, opts.now ?? Date.now());
  } catch (err) {
    throw fileError(opts.file, err);
  }
}

/**
 * Marks every live token named `name` as revoked (the record stays, for audit). A running gateway stops
 * accepting it within about a second (the static provider's reload interval).
 * @throws TokenCommandError when the file is missing or invalid, or holds no live token with that name.
 */
export async function tokenRevoke(opts: {
  file: string;
  name: string;
  now?: number;
}): Promise<{ revoked: number }> {
  const now = opts.now ?? Date.now();
  let revoked = 0;
  await withLock(opts.file, async () => {
    const text = await readRequired(opts.file);
    let result: { text: string; revoked: number };
    try {
      result = revokeToken(text, opts.name, now);
    } catch (err) {
      throw fileError(opts.file, err);
    }
    if (result.revoked === 0)
      throw new TokenCommandError(
        `${opts.file} has no token named ${JSON.stringify(opts.name)} that is not already revoked`,
      );
    await writeFileAtomic(opts.file, result.text, TOKENS_FILE_MODE);
    revoked = result.revoked;
  });
  return { revoked };
}

/**
 * Signs a dev access token with the dev key (`jwt-signing-key.pem` of `portcullis certs init`): issuer
 * {@link DEV_ISSUER}, audience {@link DEV_AUDIENCE}, `typ: at+jwt`, the given subject, scopes and lifetime.
 * @throws TokenCommandError when the key file is missing or not an ES256 key, or the ttl is not positive.
 */
export async function tokenMint(opts: {
  keyFile: string;
  sub: string;
  scope?: string;
  ttlSeconds: number;
  now?: number;
}): Promise<string> {
  if (opts.sub === '') throw new TokenCommandError('--sub needs a subject');
  let key: string;
  try {
    key = await readFile(opts.keyFile, 'utf8');
  } catch (err) {
    if (isNotFound(err))
      throw new TokenCommandError(
        `${opts.keyFile} not found: run \`portcullis certs init\` first (it writes the dev signing key)`,
      );
    throw new TokenCommandError(`${opts.keyFile}: ${messageOf(err)}`);
  }
  try {
    return await mintDevJwt({
      key,
      issuer: DEV_ISSUER,
      audience: DEV_AUDIENCE,
      sub: opts.sub,
      ...(opts.scope !== undefined ? { scope: opts.scope } : {}),
      ttlSeconds: opts.ttlSeconds,
      now: opts.now ?? Date.now(),
    });
  } catch (err) {
    throw new TokenCommandError(`cannot sign with ${opts.keyFile}: ${messageOf(err)}`);
  }
}

// ---------------------------------------------------------------------------------------------------------

/** Runs `fn` holding `<file>.lock` (created exclusively); waits for another holder, removes a stale lock. */
async function withLock(file: string, fn: () => Promise<void>): Promise<void> {
  const lock = `${file}.lock`;
  const deadline = Date.now() + TOKEN_DEFAULTS.lockWaitMs;
  for (;;) {
    try {
      const handle = await open(lock, 'wx', 0o600);
      await handle.close();
      break;
    } catch (err) {
      const code = err instanceof Error && 'code' in err ? err.code : undefined;
      if (code === 'ENOENT' || code === 'ENOTDIR')
        throw new TokenCommandError(`cannot write ${file}: its directory does not exist`);
      if (code !== 'EEXIST') throw new TokenCommandError(`cannot lock ${file}: ${messageOf(err)}`);
      const age = await stat(lock).then(
        (st) => Date.now() - st.mtimeMs,
        () => 0,
      );
      if (age > TOKEN_DEFAULTS.staleLockMs) {
        await rm(lock, { force: true });
        continue;
      }
      if (Date.now() > deadline)
        throw new TokenCommandError(
          `${lock} is held by another edit (remove it if no \`portcullis token\` command is running)`,
        );
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  try {
    await fn();
  } finally {
    await rm(lock, { force: true });
  }
}

/**
 * `token list` as a table: NAME, STATUS, CREATED, EXPIRES, SCOPES and the hash prefix (what log lines carry
 * as `tokenHash`), columns padded, one line per token with its newline. Never a token.
 */
export function formatTokenTable(list: readonly TokenListing[]): string {
  const header = ['NAME', 'STATUS', 'CREATED', 'EXPIRES', 'SCOPES', 'SHA256'];
  const rows = [
    header,
    ...list.map((t) => [
      t.name,
      t.status,
      t.createdAt,
      t.expiresAt ?? 'never',
      t.scopes.join(' ') || '-',
      `${t.hashPrefix}...`,
    ]),
  ];
  const widths = header.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows
    .map(
      (r) =>
        `${r
          .map((c, i) => c.padEnd(widths[i] ?? 0))
          .join('  ')
          .trimEnd()}\n`,
    )
    .join('');
}

async function readIfExists(file: string): Promise<string | undefined> {
  try {
    return await readFile(file, 'utf8');
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw err;
  }
}

async function readRequired(file: string): Promise<string> {
  const text = await readIfExists(file);
  if (text === undefined)
    throw new TokenCommandError(`${file} not found: \`portcullis token create --file ${file} ...\` makes it`);
  return text;
}

function fileError(file: string, err: unknown): TokenCommandError {
  if (err instanceof TokenFileError) return new TokenCommandError(`${file}: ${err.message}`);
  return new TokenCommandError(`${file}: ${messageOf(err)}`);
}

function isNotFound(error: unknown): boolean {
  return error instanceof Error && 'code' in error && error.code === 'ENOENT';
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
