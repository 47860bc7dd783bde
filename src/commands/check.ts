/**
 * `portcullis check [--print]`: the config validated exactly as `start` loads it, and on request the
 * effective config — the file as written with every default applied — with every secret redacted.
 *
 * The printed config is made from the file's text and the schema alone: no file the config names is read
 * into it (a `clientSecretFile` is shown as its path; the secret in it is never read here beyond the
 * validation `check` already does). Values that look like secrets anyway are replaced by {@link REDACTED}
 * (see {@link redactSecrets}): today's schema has no inline secret, so this is the net for a key added
 * later, not the primary defence.
 */
import { parse, stringify } from 'yaml';
import { configSchema } from '../config/schema.js';
import { fileDigest } from '../config/files.js';
import type { RuntimeConfig } from '../config/runtime.js';

/** What a redacted value is shown as. */
export const REDACTED = '[redacted]';

/**
 * Key names whose values are secrets, by their last word: `clientSecret`, `password`, `cookieKey`,
 * `apiToken`, `hmacKey`, ... (`maxTokenAgeSeconds` is not one; `forwardToken: true` is a boolean, kept).
 */
const SECRET_KEY =
  /(?:secret|password|passphrase|passwd|credentials?|token|api[-_]?key|private[-_]?key|signing[-_]?key|secret[-_]?key|cookie[-_]?key|session[-_]?key|hmac[-_]?key|auth[-_]?key)s?$/i;
/** ... unless the key names a file or files: a path is what an operator needs to see, and it is not the secret. */
const FILE_KEY = /Files?$/;
/** Query parameters that carry a credential whatever {@link SECRET_KEY} says: signatures, API keys, codes. */
const SECRET_QUERY_NAME = /^(?:sig|signature|x-amz-signature|x-goog-signature|key|code)$/i;
/** Private key material inline (PEM). */
const PEM_PRIVATE_KEY = /-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----/;
/** A JWT (three base64url parts, JSON header) or a Portcullis static token (`pcs_…`). */
const TOKEN_LIKE = /^(?:eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*|pcs_[A-Za-z0-9_-]{16,})$/;
/** `scheme://user:password@`: the password part. */
const URL_PASSWORD = /^([A-Za-z][A-Za-z0-9+.-]*:\/\/[^/?#@:]*:)([^/?#@]*)@/;

/** A string value with the secrets it carries replaced: inline keys, tokens, URL passwords, secret query values. */
function redactString(value: string): string {
  if (PEM_PRIVATE_KEY.test(value) || TOKEN_LIKE.test(value)) return REDACTED;
  let out = value.replace(URL_PASSWORD, `$1${REDACTED}@`);
  const q = out.indexOf('?');
  if (q !== -1 && /^[A-Za-z][A-Za-z0-9+.-]*:/.test(out)) {
    const hash = out.indexOf('#', q);
    const end = hash === -1 ? out.length : hash;
    const query = out
      .slice(q + 1, end)
      .split('&')
      .map((pair) => {
        const eq = pair.indexOf('=');
        const name = eq === -1 ? pair : pair.slice(0, eq);
        const decoded = decodeQueryName(name);
        const secret = SECRET_KEY.test(decoded) || SECRET_QUERY_NAME.test(decoded);
        return eq !== -1 && secret ? `${name}=${REDACTED}` : pair;
      })
      .join('&');
    out = `${out.slice(0, q + 1)}${query}${out.slice(end)}`;
  }
  return out;
}

function decodeQueryName(name: string): string {
  try {
    return decodeURIComponent(name.replace(/\+/g, ' '));
  } catch {
    return name;
  }
}

/**
 * A deep copy of `value` with every secret-ish value replaced by {@link REDACTED}: any string or number under
 * a key whose name says secret (`clientSecret`, `password`, `token`, `apiKey`, ... but not `...File`), inline
 * PEM private keys, JWTs and static tokens anywhere, the password of a URL and the values of its secret-named
 * query parameters. Booleans are kept (`forwardToken: true` is a setting, not a secret).
 */
export function redactSecrets(value: unknown, key = ''): unknown {
  if (Array.isArray(value)) return value.map((v) => redactSecrets(v, key));
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = redactSecrets(v, k);
    return out;
  }
  const secretKey = key !== '' && SECRET_KEY.test(key) && !FILE_KEY.test(key);
  if (typeof value === 'string') return secretKey ? REDACTED : redactString(value);
  if (typeof value === 'number' || typeof value === 'bigint') return secretKey ? REDACTED : value;
  return value;
}

/** Thrown when the config file changed between the validation and the second read. */
export class ConfigChangedError extends Error {
  override readonly name = 'ConfigChangedError';
}

/**
 * The effective config of an already validated `config` as YAML text: the file's own document through the
 * schema (every default applied), secrets redacted, under a comment naming the file and how relative paths
 * resolve. `text` is the config file as read again by the caller; it must be the text `config` was loaded
 * from (checked by digest), or the print could show a config that was never validated.
 *
 * @throws ConfigChangedError when `text` is not what was validated.
 */
export function effectiveConfigYaml(config: RuntimeConfig, text: Buffer, header: readonly string[]): string {
  if (config.files[config.source] !== fileDigest(text))
    throw new ConfigChangedError(`${config.source} changed while it was being checked; run check again`);
  const data = configSchema.parse(parse(text.toString('utf8'), { maxAliasCount: 100 }));
  const comments = [
    ...header,
    `Effective config of ${config.source}: the file with every default applied; secrets shown as "${REDACTED}".`,
    'Relative paths resolve against the folder of that file.',
  ];
  return `${comments.map((c) => `# ${c}`).join('\n')}\n${stringify(redactSecrets(data), { lineWidth: 0 })}`;
}
