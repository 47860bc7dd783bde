/**
 * The static tokens file: what `portcullis token create | list | revoke` read and write, and what the
 * `type: static` provider loads. Pure functions over the file's text (the CLI does the I/O, atomically).
 *
 * Format (JSON, one object):
 *
 * ```json
 * { "tokens": [ { "name": "alice-laptop", "sha256": "<64 hex>", "createdAt": "2025-01-01T00:00:00.000Z",
 *                 "expiresAt": "2025-01-31T00:00:00.000Z", "scopes": ["read"], "revoked": true,
 *                 "revokedAt": "..." } ] }
 * ```
 *
 * Only the SHA-256 of a token is ever stored; the token itself is printed once by `token create`. A token is
 * `pcs_` + 32 random bytes in base64url (43 characters): 256 bits, so a hash without salt or stretching is
 * enough (no dictionary can reach it), and the prefix makes leaked tokens easy to grep for and lets the static
 * provider claim them (see `static.ts`).
 */
import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import { tokenHash } from './bearer.js';

/** Prefix of every token `createToken` makes. */
export const STATIC_TOKEN_PREFIX = 'pcs_';

const NAME = /^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$/;
/** RFC 6749 §3.3 scope-token: printable ASCII except space, `"` and `\`. */
const SCOPE_TOKEN = /^[\x21\x23-\x5b\x5d-\x7e]+$/;
const isoTime = z.string().refine((s) => Number.isFinite(Date.parse(s)), 'an ISO 8601 date-time');

/** One record of the tokens file. */
export const tokenRecordSchema = z.strictObject({
  name: z.string().regex(NAME, 'a name of letters, digits, . _ @ - (max 64)'),
  sha256: z.string().regex(/^[0-9a-f]{64}$/, 'a lower-case SHA-256 hex digest'),
  createdAt: isoTime,
  expiresAt: isoTime.optional(),
  scopes: z.array(z.string().regex(SCOPE_TOKEN, 'a scope token (RFC 6749 §3.3)')).optional(),
  revoked: z.boolean().optional(),
  revokedAt: isoTime.optional(),
});

/** The whole tokens file. */
export const tokenFileSchema = z.strictObject({ tokens: z.array(tokenRecordSchema) });

export type TokenRecord = z.infer<typeof tokenRecordSchema>;
export type TokenFile = z.infer<typeof tokenFileSchema>;

/** The tokens file could not be understood; `message` says where. */
export class TokenFileError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'TokenFileError';
  }
}

/**
 * Parses the file's text. An empty text is an empty file.
 * @throws TokenFileError for invalid JSON, an unknown key, a bad field, or two records with one hash.
 */
export function parseTokenFile(text: string): TokenFile {
  if (text.trim() === '') return { tokens: [] };
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new TokenFileError('not valid JSON (a half-written file?)', { cause: err });
  }
  const parsed = tokenFileSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const where = issue === undefined ? '' : issue.path.map(String).join('.');
    throw new TokenFileError(`${where || '(root)'}: ${issue?.message ?? 'invalid'}`);
  }
  const seen = new Set<string>();
  for (const [i, r] of parsed.data.tokens.entries()) {
    if (seen.has(r.sha256)) throw new TokenFileError(`tokens.${i}.sha256: the same hash appears twice`);
    seen.add(r.sha256);
  }
  return parsed.data;
}

/** The file's text for a value: stable, pretty, newline-terminated. */
export function serializeTokenFile(file: TokenFile): string {
  return `${JSON.stringify({ tokens: file.tokens }, null, 2)}\n`;
}

/** Options of {@link createToken}. */
export interface CreateTokenOptions {
  readonly scopes?: readonly string[];
  /** Randomness (tests); default `crypto.randomBytes`. */
  readonly random?: (size: number) => Buffer;
}

/**
 * Makes a new token and its record. The token is returned once and never stored.
 * @param expiresInSeconds lifetime; undefined for a token that does not expire (not recommended).
 * @param now epoch ms.
 * @throws TypeError for a bad name, lifetime or scope.
 */
export function createToken(
  name: string,
  expiresInSeconds: number | undefined,
  now: number,
  opts: CreateTokenOptions = {},
): { token: string; record: TokenRecord } {
  if (!NAME.test(name))
    throw new TypeError(`token name ${JSON.stringify(name)}: letters, digits, . _ @ - (max 64)`);
  if (expiresInSeconds !== undefined && (!Number.isInteger(expiresInSeconds) || expiresInSeconds <= 0)) {
    throw new TypeError('expiresInSeconds: a whole number of seconds > 0');
  }
  for (const s of opts.scopes ?? [])
    if (!SCOPE_TOKEN.test(s)) throw new TypeError(`scope ${JSON.stringify(s)} is not a scope token`);
  const token = STATIC_TOKEN_PREFIX + (opts.random ?? randomBytes)(32).toString('base64url');
  const record: TokenRecord = {
    name,
    sha256: tokenHash(token),
    createdAt: new Date(now).toISOString(),
    ...(expiresInSeconds !== undefined
      ? { expiresAt: new Date(now + expiresInSeconds * 1000).toISOString() }
      : {}),
    ...(opts.scopes !== undefined && opts.scopes.length > 0 ? { scopes: [...opts.scopes] } : {}),
  };
  return { token, record };
}

/** Whether a record is usable at `now`. */
export function tokenStatus(record: TokenRecord, now: number): 'active' | 'expired' | 'revoked' {
  if (record.revoked === true) return 'revoked';
  if (record.expiresAt !== undefined && Date.parse(record.expiresAt) <= now) return 'expired';
  return 'active';
}

/**
 * The file's text with `record` appended.
 * @param text the current file's text, or undefined when there is no file yet.
 * @throws TokenFileError when the file is invalid, or a non-revoked token already has this name.
 */
export function addToken(text: string | undefined, record: TokenRecord, now: number): string {
  const file = parseTokenFile(text ?? '');
  if (file.tokens.some((r) => r.name === record.name && tokenStatus(r, now) !== 'revoked')) {
    throw new TokenFileError(`a token named ${JSON.stringify(record.name)} already exists (revoke it first)`);
  }
  return serializeTokenFile({ tokens: [...file.tokens, tokenRecordSchema.parse(record)] });
}

/** One line of `token list`: never the hash in full, never a token. */
export interface TokenListing {
  readonly name: string;
  readonly status: 'active' | 'expired' | 'revoked';
  readonly createdAt: string;
  readonly expiresAt: string | undefined;
  readonly scopes: readonly string[];
  /** First 12 hex digits of the hash: enough to match a log line's `tokenHash`. */
  readonly hashPrefix: string;
}

/** The records of the file, with their status at `now`. @throws TokenFileError */
export function listTokens(text: string, now: number): TokenListing[] {
  return parseTokenFile(text).tokens.map((r) => ({
    name: r.name,
    status: tokenStatus(r, now),
    createdAt: r.createdAt,
    expiresAt: r.expiresAt,
    scopes: r.scopes ?? [],
    hashPrefix: r.sha256.slice(0, 12),
  }));
}

/**
 * Marks every non-revoked token named `name` as revoked (kept in the file for audit).
 * @returns the new text and how many records changed (0: no such token; the caller decides if that's an error).
 * @throws TokenFileError when the file is invalid.
 */
export function revokeToken(text: string, name: string, now: number): { text: string; revoked: number } {
  const file = parseTokenFile(text);
  let revoked = 0;
  const tokens = file.tokens.map((r) => {
    if (r.name !== name || r.revoked === true) return r;
    revoked++;
    return { ...r, revoked: true, revokedAt: new Date(now).toISOString() };
  });
  return { text: serializeTokenFile({ tokens }), revoked };
}
