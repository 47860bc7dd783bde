/**
 * Defaults and value checks shared by the CLI parser (`cli.ts`) and the commands. Nothing here imports
 * anything: `cli.ts` parses every command line, `probe` included, and must stay cheap to load.
 */

/** Every default of the `token` commands, with its unit and the reason for it. */
export const TOKEN_DEFAULTS = {
  /** Lifetime of a static token, seconds (90 days): a forgotten token dies on its own. `--expires-in never` opts out. */
  expiresInSeconds: 90 * 86_400,
  /** Lifetime of a dev JWT, seconds (1 hour). */
  mintTtlSeconds: 3_600,
  /** The dev provider refuses an `exp` further ahead than this (its `maxExpiresInSeconds` default, 24 h). */
  mintTtlWarnSeconds: 86_400,
  /** How long an edit waits for another one's lock, ms. */
  lockWaitMs: 5_000,
  /** A lock older than this is left over from a crashed edit and is removed, ms. */
  staleLockMs: 30_000,
} as const;

/**
 * Parses a CLI duration such as `30d`, `12h`, `45m`, `90s`, `2w` (one number, one unit) into seconds.
 * @throws TypeError for anything else.
 */
export function parseDurationSeconds(value: string): number {
  const m = /^([1-9][0-9]{0,8})([smhdw])$/.exec(value.trim());
  if (m === null)
    throw new TypeError(
      `duration ${JSON.stringify(value)}: a number and a unit, e.g. 30d, 12h, 45m, 90s, 2w`,
    );
  const unit = { s: 1, m: 60, h: 3_600, d: 86_400, w: 604_800 }[m[2] as 's' | 'm' | 'h' | 'd' | 'w'];
  return Number(m[1]) * unit;
}

/** The committed JSON Schema of the config (`portcullis schema`), relative to the package root: what editors are pointed at. */
export const SCHEMA_FILE = 'schema/portcullis.schema.json';

/** An OU ends up in an allowClients "OU=..." match: letters, digits, space, `.`, `_`, `-` only (no `,` or `=`). */
export const OU_PATTERN = /^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$/;
