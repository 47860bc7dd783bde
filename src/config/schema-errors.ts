/**
 * The config schema's verdict in plain words: every zod issue becomes one or more {@link ConfigError}s
 * (`<key path>: got <value>; expected <what>`), with no zod jargon. An unknown key names the keys allowed
 * there and the closest one ("did you mean"); a listener or an upstream that fits no branch of its union is
 * reported from the branch it was meant for, never as a bare "invalid union".
 */
import { z, type core } from 'zod';
import { ConfigError } from '../errors.js';
import { configSchema, type ConfigFile } from './schema.js';
import { formatPath } from './yaml.js';

/**
 * `raw` (the YAML document as data) against the config schema: the config as written with every default
 * applied, or every problem found.
 */
export function parseConfigSchema(
  raw: unknown,
): { readonly ok: true; readonly config: ConfigFile } | { readonly ok: false; readonly errors: ConfigError[] } {
  const parsed = configSchema.safeParse(raw, { reportInput: true, error: describeIssue });
  if (parsed.success) return { ok: true, config: parsed.data };
  return { ok: false, errors: parsed.error.issues.flatMap((issue) => issueToErrors(issue, [])) };
}

const TYPE_NAMES: Record<string, string> = {
  string: 'a string',
  number: 'a number',
  int: 'a whole number',
  boolean: 'true or false',
  object: 'a mapping (key: value)',
  array: 'a list',
};

/**
 * The "expected" text of a zod issue that has no message of its own in the schema (schema messages
 * win). Plain words, no zod jargon: it ends up after "expected" in a {@link ConfigError}.
 */
function describeIssue(iss: core.$ZodRawIssue): string {
  switch (iss.code) {
    case 'invalid_type': {
      const what = TYPE_NAMES[iss.expected] ?? `a ${iss.expected}`;
      return iss.input === undefined ? `${what} (this key is required)` : what;
    }
    case 'too_small':
    case 'too_big': {
      const bound = Number(iss.code === 'too_small' ? iss.minimum : iss.maximum);
      const op = iss.code === 'too_small' ? (iss.inclusive ? '>=' : '>') : iss.inclusive ? '<=' : '<';
      if (iss.origin === 'string')
        return iss.code === 'too_small' && bound === 1
          ? 'a non-empty string'
          : `a string of ${op} ${bound} characters`;
      if (iss.origin === 'array') return `a list of ${op} ${bound} item(s)`;
      return `a number ${op} ${bound}`;
    }
    case 'invalid_value':
      return iss.values.length === 1
        ? JSON.stringify(iss.values[0])
        : `one of ${iss.values.map((v) => JSON.stringify(v)).join(', ')}`;
    case 'invalid_format':
      return iss.format === 'regex' && iss.pattern !== undefined
        ? `a string matching ${iss.pattern}`
        : `a valid ${iss.format}`;
    case 'unrecognized_keys':
      return 'known keys only';
    default:
      return 'a valid value';
  }
}

/** Names of keys whose value is never printed back (an unknown key may be a misspelt secret). */
const SECRET_KEY_RE = /secret|passw|passphrase|token|credential|private/i;

/** One zod issue → one or more ConfigErrors (an unknown key each; a union error from its matching branch). */
function issueToErrors(issue: core.$ZodIssue, base: readonly PropertyKey[]): ConfigError[] {
  const at = [...base, ...issue.path];
  if (issue.code === 'unrecognized_keys') {
    const input = (issue as { input?: unknown }).input;
    const known = knownKeysAt(at, input);
    return issue.keys.map((k) => {
      // A misspelt secret must not be echoed to the terminal and the logs.
      const value = SECRET_KEY_RE.test(k)
        ? '[redacted]'
        : input !== null && typeof input === 'object'
          ? (input as Record<string, unknown>)[k]
          : undefined;
      return new ConfigError(formatPath([...at, k]), value, unknownKeyText(k, known));
    });
  }
  if (issue.code === 'invalid_key') {
    // A record key (an `authProviders` name) that fails its own rule: report that rule's message.
    const inner = issue.issues[0];
    return [new ConfigError(formatPath(at), at.at(-1), inner?.message ?? issue.message)];
  }
  if (issue.code === 'invalid_union') {
    // A listener (union on `protocol`, absent = http): report the branch its `protocol` picks; an unknown
    // protocol is one error at `protocol`.
    const input = (issue as { input?: unknown }).input;
    const listenerBranch = listenerUnionBranch(issue.errors, at, input);
    if (listenerBranch === 'bad-protocol')
      return [
        new ConfigError(
          formatPath([...at, 'protocol']),
          (input as Record<string, unknown>)['protocol'],
          'one of "http", "tcp", "decision"',
        ),
      ];
    if (listenerBranch !== undefined) return listenerBranch.flatMap((i) => issueToErrors(i, at));
    // A union (the upstream: string or mapping) fails as a whole; report the branch of the value's own
    // type, so `upstream: { url: x, crt: y }` names `upstream.crt`, not just `upstream`.
    const fitting = issue.errors.filter(
      (branch) => !branch.some((i) => i.path.length === 0 && i.code === 'invalid_type'),
    );
    if (fitting.length === 1 && fitting[0] !== undefined)
      return fitting[0].flatMap((i) => issueToErrors(i, at));
  }
  return [new ConfigError(formatPath(at), (issue as { input?: unknown }).input, issue.message)];
}

/** `listeners[i]`: a path of exactly the `listeners` key and an index. */
function isListenerPath(at: readonly PropertyKey[]): boolean {
  return at.length === 2 && at[0] === 'listeners' && typeof at[1] === 'number';
}

/**
 * The issues of the listener-union branch that `input.protocol` selects (http when absent), or
 * `'bad-protocol'` for a protocol neither branch knows; undefined when `at` is not a listener.
 */
function listenerUnionBranch(
  branches: readonly (readonly core.$ZodIssue[])[],
  at: readonly PropertyKey[],
  input: unknown,
): readonly core.$ZodIssue[] | 'bad-protocol' | undefined {
  if (!isListenerPath(at) || input === null || typeof input !== 'object' || Array.isArray(input)) return undefined;
  const protocol = (input as Record<string, unknown>)['protocol'];
  const index = protocol === undefined ? 0 : (['http', 'tcp', 'decision'] as unknown[]).indexOf(protocol);
  if (index === -1) return 'bad-protocol';
  return branches[index];
}

/**
 * The keys the schema allows in the mapping at `path` (empty when it is not a mapping). `input` is that
 * mapping as written: for a discriminated union (an `authProviders` entry), its `type` picks the branch.
 */
function knownKeysAt(path: readonly PropertyKey[], input?: unknown): string[] {
  const record = input !== null && typeof input === 'object' ? (input as Record<string, unknown>) : {};
  let s: z.ZodType | undefined = configSchema;
  /** The literal value of `key` in an object schema (through `.default()` / `.optional()`). */
  const literalOf = (o: z.ZodObject, key: string): unknown => {
    let t: z.ZodType | undefined = (o.shape as Record<string, z.ZodType>)[key];
    while (t instanceof z.ZodOptional || t instanceof z.ZodDefault) t = t.unwrap() as z.ZodType;
    return t instanceof z.ZodLiteral ? t.value : undefined;
  };
  /**
   * Through optional/default wrappers and unions. In a union of mappings, the branch is picked by a
   * discriminator of the mapping as written (`type` for auth providers, `protocol` for listeners, where
   * an absent protocol means the branch whose literal has a default: http) when it is the last segment,
   * else by the first branch that has the next key (`upstream` exists on tcp listeners only).
   */
  const unwrap = (t: z.ZodType, last: boolean, next?: PropertyKey): z.ZodType | undefined => {
    let cur: z.ZodType = t;
    for (;;) {
      if (cur instanceof z.ZodOptional || cur instanceof z.ZodDefault) cur = cur.unwrap() as z.ZodType;
      else if (cur instanceof z.ZodUnion) {
        const objects = (cur.options as readonly z.ZodType[]).filter(
          (o): o is z.ZodObject => o instanceof z.ZodObject,
        );
        let chosen: z.ZodObject | undefined;
        if (last) {
          for (const key of ['type', 'protocol']) {
            chosen ??= objects.find((o) => {
              const value = literalOf(o, key);
              if (value === undefined) return false;
              if (record[key] !== undefined) return value === record[key];
              // Absent discriminator: the branch whose discriminator has a default.
              return (o.shape as Record<string, z.ZodType>)[key] instanceof z.ZodDefault;
            });
          }
        } else if (typeof next === 'string') {
          chosen = objects.find((o) => next in (o.shape as Record<string, z.ZodType>));
        }
        const obj = chosen ?? objects[0];
        if (obj === undefined) return undefined;
        cur = obj;
      } else return cur;
    }
  };
  for (const seg of path) {
    const cur: z.ZodType | undefined = s === undefined ? undefined : unwrap(s, false, seg);
    if (cur instanceof z.ZodObject && typeof seg === 'string')
      s = (cur.shape as Record<string, z.ZodType>)[seg];
    else if (cur instanceof z.ZodArray && typeof seg === 'number') s = cur.element as z.ZodType;
    else if (cur instanceof z.ZodRecord && typeof seg === 'string') s = cur.valueType as z.ZodType;
    else return [];
  }
  const last = s === undefined ? undefined : unwrap(s, true);
  return last instanceof z.ZodObject ? Object.keys(last.shape) : [];
}

function unknownKeyText(key: string, known: readonly string[]): string {
  const norm = (k: string): string => k.toLowerCase().replace(/[^a-z0-9]/g, '');
  let best: { key: string; d: number } | undefined;
  for (const k of known) {
    const d = editDistance(norm(key), norm(k));
    if (best === undefined || d < best.d) best = { key: k, d };
  }
  const hint =
    best !== undefined && best.d <= Math.max(2, Math.floor(norm(key).length / 4))
      ? `did you mean "${best.key}"? `
      : '';
  const list = known.length > 0 ? `; keys here: ${known.join(', ')}` : '';
  return `a known key — ${hint}(unknown keys are refused, never ignored${list})`;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      const sub = (prev[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1);
      cur.push(Math.min((prev[j] ?? 0) + 1, (cur[j - 1] ?? 0) + 1, sub));
    }
    prev = cur;
  }
  return prev[b.length] ?? 0;
}
