/**
 * Config loading: file → YAML → schema → files on disk → one immutable {@link RuntimeConfig}.
 *
 * Everything that can be checked before the first byte is served is checked here, once: key paths,
 * types, unknown keys, readable cert/key/CA/CRL files, a key that matches its certificate, a server
 * certificate that is valid now, a CA bundle that really holds certificates (Node silently trusts its
 * bundled public roots when `ca` is empty — threat model #26), the require-encryption policy. Every
 * failure names the key path, the value and what was expected ({@link ConfigError}).
 *
 * The result is deep-frozen and never mutated: a reload builds a new one and swaps it in whole.
 */
import { readFileSync } from 'node:fs';
import { X509Certificate, createHash, createPrivateKey, type KeyObject } from 'node:crypto';
import { isIP } from 'node:net';
import { dirname, resolve } from 'node:path';
import { createSecureContext, type SecureContextOptions } from 'node:tls';
import {
  isMap,
  isNode,
  isScalar,
  isSeq,
  LineCounter,
  parseDocument,
  type Document,
  type YAMLError,
} from 'yaml';
import { z, type core } from 'zod';
import { ConfigError } from '../errors.js';
import { serverCertificateProblem } from '../identity/purpose.js';
import { readCrlFile } from '../certs/crl.js';
import { checkServerNames, serverNameProblem } from '../certs/server-names.js';
import { compileTelemetryHeaders, type TelemetryMatcher } from '../mutate/telemetry.js';
import { createAuthenticator } from '../authn/providers.js';
import { providerFiles, type AuthProviderConfig } from '../authn/provider-config.js';
import { compileRoutePolicy, type RoutePolicy } from '../authz/policy.js';
import { compileClientAcl, type ClientAcl } from '../identity/acl.js';
import { compileRouteTable, type Route, type RouteTable } from '../authz/routes.js';
import { compileMethodPolicy, DEFAULT_METHOD_POLICY, type MethodPolicy } from '../authz/methods.js';
import type { UpstreamSpec } from '../proxy/upstream.js';
import { DEFAULTS, TLS_CIPHERS } from './defaults.js';
import {
  configSchema,
  type ConfigFile,
  type Http2Config,
  type AdminFile,
  type HttpListenerFile,
  type ListenerFile,
  type ListenerTlsFile,
  type RouteAuthFile,
  type TcpListenerFile,
  type TcpUpstreamFile,
  type TimeoutsConfig,
  type UpstreamFile,
} from './schema.js';
import type { TcpUpstream } from '../proxy/tcp-pipe.js';

/**
 * Several config errors at once: the message lists each on its own line, with the line of the config
 * file it points at when it can be found (`lines[i]` belongs to `errors[i]`).
 */
export class ConfigInvalid extends Error {
  readonly errors: readonly ConfigError[];
  readonly lines: readonly (number | undefined)[];
  constructor(source: string, errors: readonly ConfigError[], lines: readonly (number | undefined)[] = []) {
    const list = errors.map((e, i) => {
      const line = lines[i];
      return `  - ${e.message}${line === undefined ? '' : ` (line ${line})`}`;
    });
    super(`invalid config ${source}:\n${list.join('\n')}`);
    this.name = 'ConfigInvalid';
    this.errors = errors;
    this.lines = lines;
  }
}

/** host + port to bind. */
export interface ListenAddress {
  readonly host: string;
  readonly port: number;
}

/** What the gateway knows about one certificate it serves or trusts (for expiry checks and metrics). */
export interface CertInfo {
  /** What the certificate is for; a metric label (closed set). */
  readonly kind: 'server' | 'ca' | 'upstream_ca' | 'upstream_client';
  /** Position in its PEM bundle (0 = first), a metric label instead of the subject. */
  readonly index: number;
  readonly keyPath: string;
  readonly file: string;
  readonly subject: string;
  readonly validToMs: number;
}

/** TLS settings of a listener, ready for `http2.createSecureServer`. */
export interface ListenerTls {
  readonly clientCertificate: 'require' | 'optional' | 'none';
  readonly options: SecureContextOptions & {
    readonly requestCert: boolean;
    readonly rejectUnauthorized: boolean;
  };
  readonly certificates: readonly CertInfo[];
  /**
   * Each CRL of `tls.crl` (one per client CA, certs/crl.ts): its position in the file, the metric label,
   * and its nextUpdate (ms since the epoch) when it carries one.
   */
  readonly crls?: readonly { readonly index: number; readonly nextUpdateMs: number | undefined }[];
  /**
   * The serial numbers the CRLs of `tls.crl` revoke, all of them (uppercase hex without leading zero bytes,
   * certs/pki.ts `normalizeSerialHex`): a reload closes the open connections of these clients (app.ts).
   */
  readonly revokedSerials?: readonly string[];
  /**
   * The names clients use to reach the listener (`serverNames`, or the listen host when it is a DNS name),
   * lowercased; empty when there is nothing to check the certificate against.
   */
  readonly serverNames?: readonly string[];
  /** True when {@link serverNames} is not empty and the server certificate's SANs cover none of them. */
  readonly serverNameMismatch?: boolean;
}

/**
 * A route's Bearer authentication, compiled at load. The providers themselves are runtime objects the app
 * builds from {@link RuntimeConfig.authProviders}; this holds their names, in the order the route lists them.
 */
export interface RouteAuth {
  /** `listeners[i].routes[j].auth`, for logs. */
  readonly keyPath: string;
  /** Names from `authProviders`, tried in this order (authn/chain.ts). */
  readonly providers: readonly string[];
  /** Scopes and claims, checked on every request (authz/policy.ts). */
  readonly policy: RoutePolicy;
  /** RFC 6750 §2.3 `?access_token=` accepted (and stripped before forwarding). Off by default. */
  readonly allowQueryToken: boolean;
  /** Forward the client's Authorization header upstream. Off by default: the gateway removes it. */
  readonly forwardToken: boolean;
  /** Introspection only: serve a cached answer this long past freshness while the IdP is down (0 = never). */
  readonly staleIfErrorSeconds: number;
}

/** One `protocol: http` listener, fully resolved. */
export interface HttpRuntimeListener {
  readonly name: string;
  readonly keyPath: string;
  readonly address: ListenAddress;
  readonly protocol: 'http';
  /** undefined only for an explicit `plaintext: true` listener with requireEncryption off. */
  readonly tls: ListenerTls | undefined;
  /** Listener-level allow-list; undefined means any certificate the CA vouches for. */
  readonly acl: ClientAcl | undefined;
  readonly routes: RouteTable;
  /** Open client connections accepted at once (`maxConnections`); more are closed before the handshake. */
  readonly maxConnections: number;
  /** Open connections one client address may hold (`maxConnectionsPerClient`); undefined: no such cap. */
  readonly maxConnectionsPerClient: number | undefined;
  /** Route id → its Bearer authentication; a route without `auth` has no entry (no token needed). */
  readonly routeAuth: Readonly<Record<string, RouteAuth>>;
  /** Route id → its `telemetry.optOut` override; a route without one has no entry (the top level decides). */
  readonly routeTelemetryOptOut?: Readonly<Record<string, boolean>>;
  /** Certificates of the routes' upstream TLS mappings (`ca`, `cert`), for expiry metrics. */
  readonly upstreamCertificates?: readonly CertInfo[];
}

/**
 * One `protocol: tcp` listener, fully resolved: what listener/tcp-listener.ts `startTcpListener` takes (with
 * `upstream` as its second argument and `proxyProtocol` in its deps). Always TLS; no routes.
 */
export interface TcpRuntimeListener {
  readonly protocol: 'tcp';
  readonly name: string;
  readonly keyPath: string;
  readonly address: ListenAddress;
  readonly tls: ListenerTls;
  /** `allowClients`; undefined means any certificate the CA vouches for. */
  readonly acl: ClientAcl | undefined;
  readonly upstream: TcpUpstream;
  /** `v2`: a PROXY protocol v2 header with the client's address goes to the upstream first. */
  readonly proxyProtocol: 'v2' | undefined;
  /** Open client connections accepted at once (`maxConnections`); more are closed before the handshake. */
  readonly maxConnections: number;
  /** Open connections one client address may hold (`maxConnectionsPerClient`); undefined: no such cap. */
  readonly maxConnectionsPerClient: number | undefined;
  /** Certificates of the upstream TLS mapping (`ca`, `cert`), for expiry metrics. */
  readonly upstreamCertificates?: readonly CertInfo[];
}

/**
 * The admin listener, resolved: what admin/server.ts `startAdminServer` takes. Plaintext HTTP when `tls` is
 * undefined (loopback, or requireEncryption off); HTTPS with the same secure-context options as a data
 * listener otherwise.
 */
export interface AdminRuntimeConfig {
  readonly enabled: boolean;
  /** Always `admin`: a bind failure is reported at `admin.listen`. */
  readonly keyPath: 'admin';
  readonly address: ListenAddress;
  /** `admin.tls`, resolved exactly like a listener's `tls` (certificates labelled for expiry metrics). */
  readonly tls: ListenerTls | undefined;
  /** `admin.allowClients`; undefined means any client that passed the TLS handshake. */
  readonly acl: ClientAcl | undefined;
}

/** One listener, fully resolved: narrow on `protocol`. */
export type RuntimeListener = HttpRuntimeListener | TcpRuntimeListener;

/** The running configuration: one immutable value made at load. */
export interface RuntimeConfig {
  readonly source: string;
  readonly requireEncryption: boolean;
  readonly admin: AdminRuntimeConfig;
  readonly log: ConfigFile['log'];
  /** Worker processes: 1 serves in this process; more (or "auto") runs a node:cluster primary. */
  readonly workers: number | 'auto';
  readonly timeouts: TimeoutsConfig;
  readonly http2: Http2Config;
  /** `reload`: how often the files below are looked at for a change (0: never; SIGHUP only). */
  readonly reload: { readonly checkFilesSeconds: number };
  /**
   * Every file this config was made from, by absolute path, with the SHA-256 (hex) of the content that was
   * read: the config file, certificates, keys, CAs, CRLs, JWKS, token and secret files. config/watch.ts
   * compares them with the files as they are now.
   */
  readonly files: Readonly<Record<string, string>>;
  /** Telemetry header stripping: the default list plus `telemetry.headers`, compiled. */
  readonly telemetry: {
    readonly optOut: boolean;
    readonly honorClientSignals: boolean;
    readonly matcher: TelemetryMatcher;
  };
  readonly listeners: readonly RuntimeListener[];
  /**
   * `authProviders` as validated, with their file paths (`jwksFile`, `tokensFile`, `clientSecretFile`)
   * resolved against the config file's folder. Plain data: the app builds the providers from it.
   */
  readonly authProviders: Readonly<Record<string, AuthProviderConfig>>;
  /** Non-fatal findings for the start-up log (e.g. a plaintext listener). */
  readonly warnings: readonly string[];
}

/** Injected side effects: file reads and the clock (for expiry checks). */
export interface LoadDeps {
  readonly readFile: (path: string) => Buffer;
  readonly now: () => number;
}

const defaultDeps: LoadDeps = { readFile: (p) => readFileSync(p), now: () => Date.now() };

/** Reads, validates and resolves a config file. Throws {@link ConfigInvalid} listing every problem found. */
export function loadConfigFile(file: string, deps: LoadDeps = defaultDeps): RuntimeConfig {
  const source = resolve(file);
  const files: Record<string, string> = {};
  const recording = recordReads(deps, files);
  let text: string;
  try {
    text = recording.readFile(source).toString('utf8');
  } catch (err) {
    throw new ConfigInvalid(source, [
      new ConfigError('', source, `a readable config file (${errnoText(err)})`),
    ]);
  }
  return loadText(text, source, recording, files);
}

/** SHA-256 (hex) of a file's content, as {@link RuntimeConfig.files} records it. */
export function fileDigest(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/** `deps` whose `readFile` also records each file read, by absolute path, with its digest, into `files`. */
function recordReads(deps: LoadDeps, files: Record<string, string>): LoadDeps {
  return {
    ...deps,
    readFile: (path) => {
      const data = deps.readFile(path);
      files[resolve(path)] = fileDigest(data);
      return data;
    },
  };
}

/**
 * Like {@link loadConfigFile} for text already read; relative paths resolve against `source`'s folder.
 * YAML syntax errors (tabs, unterminated quotes, duplicate keys) name the key path, the offending line
 * and its line/column; schema and file errors name the key path and carry the line of that key.
 */
export function loadConfigText(text: string, source: string, deps: LoadDeps = defaultDeps): RuntimeConfig {
  const files: Record<string, string> = {};
  return loadText(text, source, recordReads(deps, files), files);
}

/** {@link loadConfigText} with the reads already recorded into `files` (which the config then carries). */
function loadText(text: string, source: string, deps: LoadDeps, files: Record<string, string>): RuntimeConfig {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { uniqueKeys: true, prettyErrors: false, lineCounter });
  if (doc.errors.length > 0) {
    throw new ConfigInvalid(
      source,
      doc.errors.map((e) => yamlError(doc, text, lineCounter, e)),
    );
  }
  const fail = (errors: readonly ConfigError[]): never => {
    throw new ConfigInvalid(
      source,
      errors,
      errors.map((e) => lineOfPath(doc, lineCounter, e.path)),
    );
  };
  let raw: unknown;
  try {
    raw = doc.toJS({ maxAliasCount: 100 });
  } catch (err) {
    return fail([
      new ConfigError(
        '',
        undefined,
        `a YAML document that expands (${err instanceof Error ? err.message : 'failed'})`,
      ),
    ]);
  }
  if (raw === null || raw === undefined) {
    return fail([
      new ConfigError(
        '',
        raw ?? null,
        'a YAML mapping with at least a `listeners` list (the document is empty)',
      ),
    ]);
  }
  const parsed = configSchema.safeParse(raw, { reportInput: true, error: describeIssue });
  if (!parsed.success) return fail(parsed.error.issues.flatMap((issue) => issueToErrors(issue, [])));
  const errors: ConfigError[] = [];
  const runtime = resolveConfig(parsed.data, source, deps, errors);
  if (errors.length > 0 || runtime === undefined) return fail(errors);
  return deepFreeze({ ...runtime, files: { ...files } });
}

type PathSegment = string | number;

/** A YAML syntax error as a ConfigError: the key path around it, the offending line, line and column. */
function yamlError(doc: Document, text: string, lc: LineCounter, e: YAMLError): ConfigError {
  const offset = e.pos[0];
  const { line, col } = lc.linePos(offset);
  // The offending line; when the parser points at a blank line (an unterminated quote at the end),
  // the last line with text before it.
  const lines = text.split(/\r?\n/);
  let shown = line - 1;
  while (shown > 0 && (lines[shown] ?? '').trim() === '') shown--;
  const lineText = (lines[shown] ?? '').trimEnd();
  const what = (e.message.split('\n')[0] ?? e.message).replace(/ at line \d+, column \d+:?$/, '');
  return new ConfigError(
    formatPath(pathAt(doc.contents, offset, [])),
    lineText,
    `valid YAML: ${what} (line ${line}, column ${col})`,
  );
}

/**
 * The key path at `offset`: the last key that starts at or before it, descending while `offset` lies
 * inside (or just at the end of) that key's value. YAML errors often point just past the node at fault.
 */
function pathAt(node: unknown, offset: number, path: PathSegment[]): PathSegment[] {
  const start = (n: unknown): number | undefined => (isNode(n) && n.range ? n.range[0] : undefined);
  const reaches = (n: unknown): boolean =>
    isNode(n) && !!n.range && offset >= n.range[0] && offset <= n.range[2];
  if (isMap(node)) {
    let chosen: (typeof node.items)[number] | undefined;
    for (const pair of node.items) {
      const s = start(pair.key);
      if (s !== undefined && s <= offset) chosen = pair;
    }
    if (chosen === undefined) return path;
    const key = isScalar(chosen.key) ? String(chosen.key.value) : String(chosen.key);
    return reaches(chosen.value) ? pathAt(chosen.value, offset, [...path, key]) : [...path, key];
  }
  if (isSeq(node)) {
    for (let i = node.items.length - 1; i >= 0; i--) {
      const s = start(node.items[i]);
      if (s !== undefined && s <= offset)
        return reaches(node.items[i]) ? pathAt(node.items[i], offset, [...path, i]) : path;
    }
  }
  return path;
}

/** `listeners[0].tls.cert` → ['listeners', 0, 'tls', 'cert']. */
function parsePath(path: string): PathSegment[] {
  const out: PathSegment[] = [];
  for (const m of path.matchAll(/([^.[\]]+)|\[(\d+)\]/g))
    out.push(m[2] !== undefined ? Number(m[2]) : (m[1] ?? ''));
  return out;
}

/** The 1-based line of the key at `path` (or of its closest parent present in the file). */
function lineOfPath(doc: Document, lc: LineCounter, path: string): number | undefined {
  const segs = parsePath(path);
  for (let n = segs.length; n > 0; n--) {
    const parent = n === 1 ? doc.contents : doc.getIn(segs.slice(0, n - 1), true);
    const last = segs[n - 1];
    let node: unknown;
    if (isMap(parent))
      node = parent.items.find((p) => isScalar(p.key) && String(p.key.value) === String(last))?.key;
    else if (isSeq(parent) && typeof last === 'number') node = parent.items[last];
    if (isNode(node) && node.range) return lc.linePos(node.range[0]).line;
  }
  return undefined;
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
          'one of "http", "tcp"',
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
  const index = protocol === undefined || protocol === 'http' ? 0 : protocol === 'tcp' ? 1 : -1;
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

/** `listeners[0].tls.cert` style path. */
export function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const p of path) {
    if (typeof p === 'number') out += `[${p}]`;
    else out += out === '' ? String(p) : `.${String(p)}`;
  }
  return out;
}

function errnoText(err: unknown): string {
  if (err && typeof err === 'object' && 'code' in err && typeof err.code === 'string') {
    const map: Record<string, string> = {
      ENOENT: 'ENOENT: no such file',
      EACCES: 'EACCES: permission denied',
      EISDIR: 'EISDIR: it is a directory',
    };
    return map[err.code] ?? err.code;
  }
  return err instanceof Error ? err.message : 'unreadable';
}

/** Parses `host:port` / `[v6]:port`. */
export function parseListen(
  value: string,
  keyPath: string,
  errors: ConfigError[],
): ListenAddress | undefined {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9.-]+)):(\d{1,5})$/.exec(value);
  const host = m?.[1] ?? m?.[2];
  const port = Number(m?.[3]);
  if (m === null || host === undefined || !Number.isInteger(port) || port > 65_535) {
    errors.push(new ConfigError(keyPath, value, 'host:port with a port from 0 to 65535'));
    return undefined;
  }
  if (m[1] !== undefined && isIP(host) !== 6) {
    errors.push(new ConfigError(keyPath, value, 'a valid IPv6 address inside [ ]'));
    return undefined;
  }
  return { host, port };
}

/**
 * True for addresses that never leave the machine: 127.0.0.0/8, ::1, `localhost`. Other `*.localhost`
 * names are not trusted: without a resolver that special-cases them (RFC 6761 §6.3) they go to DNS,
 * which could send plaintext anywhere.
 */
export function isLoopbackHost(host: string): boolean {
  const h = host.toLowerCase().replace(/^\[|\]$/g, '');
  if (h === 'localhost') return true;
  if (h === '::1' || h === '0:0:0:0:0:0:0:1') return true;
  if (isIP(h) === 4) return h.startsWith('127.');
  if (h.startsWith('::ffff:')) return h.slice(7).startsWith('127.');
  return false;
}

interface Ctx {
  readonly baseDir: string;
  readonly deps: LoadDeps;
  readonly errors: ConfigError[];
  readonly warnings: string[];
  readonly requireEncryption: boolean;
  /** `authProviders` name → type, for the routes' `auth.providers`. */
  readonly providerTypes: ReadonlyMap<string, AuthProviderConfig['type']>;
  /** Providers some route references (an unused one is worth a warning). */
  readonly usedProviders: Set<string>;
  /** Upstream TLS certificates of the listener being resolved (for expiry metrics). */
  readonly upstreamCerts: CertInfo[];
}

function readAt(ctx: Ctx, keyPath: string, value: string): { file: string; data: Buffer } | undefined {
  const file = resolve(ctx.baseDir, value);
  try {
    return { file, data: ctx.deps.readFile(file) };
  } catch (err) {
    ctx.errors.push(new ConfigError(keyPath, value, `a readable file (${errnoText(err)}: ${file})`));
    return undefined;
  }
}

const PEM_CERT_RE = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/** Parses every certificate of a PEM bundle; errors when there is none or one does not parse. */
function readCertificates(
  ctx: Ctx,
  keyPath: string,
  value: string,
): { file: string; data: Buffer; certs: X509Certificate[] } | undefined {
  const read = readAt(ctx, keyPath, value);
  if (read === undefined) return undefined;
  const blocks = read.data.toString('latin1').match(PEM_CERT_RE) ?? [];
  if (blocks.length === 0) {
    ctx.errors.push(
      new ConfigError(keyPath, value, `a PEM file with at least one certificate (${read.file} has none)`),
    );
    return undefined;
  }
  const certs: X509Certificate[] = [];
  for (const block of blocks) {
    try {
      certs.push(new X509Certificate(block));
    } catch {
      ctx.errors.push(
        new ConfigError(keyPath, value, `PEM certificates that parse (${read.file} has a broken one)`),
      );
      return undefined;
    }
  }
  return { ...read, certs };
}

function checkValidNow(ctx: Ctx, keyPath: string, value: string, cert: X509Certificate): void {
  const now = ctx.deps.now();
  const from = Date.parse(cert.validFrom);
  const to = Date.parse(cert.validTo);
  if (to <= now)
    ctx.errors.push(new ConfigError(keyPath, value, `a certificate valid now (it expired ${cert.validTo})`));
  else if (from > now)
    ctx.errors.push(
      new ConfigError(keyPath, value, `a certificate valid now (it is not valid before ${cert.validFrom})`),
    );
}

function readKey(ctx: Ctx, keyPath: string, value: string): { data: Buffer; key: KeyObject } | undefined {
  const read = readAt(ctx, keyPath, value);
  if (read === undefined) return undefined;
  // An encrypted key is refused up front: there is no passphrase option, and nothing may ever prompt
  // for one (threat model #115). Node 20 reports a missing passphrase as "interrupted or cancelled".
  const text = read.data.toString('latin1');
  if (/-----BEGIN ENCRYPTED PRIVATE KEY-----|Proc-Type:\s*4,\s*ENCRYPTED/.test(text)) {
    ctx.errors.push(
      new ConfigError(
        keyPath,
        value,
        `a PEM private key (it is encrypted; give an unencrypted key: ${read.file})`,
      ),
    );
    return undefined;
  }
  try {
    return { data: read.data, key: createPrivateKey(read.data) };
  } catch (err) {
    const code = err && typeof err === 'object' && 'code' in err ? String(err.code) : '';
    const encrypted = [
      'ERR_MISSING_PASSPHRASE',
      'ERR_OSSL_CRYPTO_INTERRUPTED_OR_CANCELLED',
      'ERR_OSSL_BAD_DECRYPT',
    ].includes(code);
    const why = encrypted ? 'it is encrypted; give an unencrypted key' : 'it does not parse';
    ctx.errors.push(new ConfigError(keyPath, value, `a PEM private key (${why}: ${read.file})`));
    return undefined;
  }
}

/**
 * Resolves a `tls` section (a listener's, or `admin.tls`) whose parent key path is `p`: errors are named
 * `${p}.tls.cert`, `${p}.tls.clientCa`, ... Reads and checks every file (key matches cert, certificate
 * valid now, CA bundle of CA certificates only, CRL current) and builds the secure-context options.
 * Returns undefined when `t` is absent or anything failed (the errors are in `ctx.errors`).
 */
function resolveListenerTls(ctx: Ctx, t: ListenerTlsFile | undefined, p: string): ListenerTls | undefined {
  if (t === undefined) return undefined;
  const errorsBefore = ctx.errors.length;
  const cert = readCertificates(ctx, `${p}.tls.cert`, t.cert);
  const key = readKey(ctx, `${p}.tls.key`, t.key);
  const leaf = cert?.certs[0];
  if (cert && leaf) {
    checkValidNow(ctx, `${p}.tls.cert`, t.cert, leaf);
    const purpose = serverCertificateProblem(leaf);
    if (purpose !== undefined)
      ctx.errors.push(new ConfigError(`${p}.tls.cert`, t.cert, `a TLS server certificate (${purpose}: ${cert.file})`));
    if (key && !leaf.checkPrivateKey(key.key)) {
      ctx.errors.push(
        new ConfigError(`${p}.tls.key`, t.key, `the private key of the certificate in ${p}.tls.cert`),
      );
    }
  }
  let ca: Buffer | undefined;
  let caCerts: X509Certificate[] | undefined;
  const certificates: CertInfo[] = [];
  if (leaf && cert)
    certificates.push({
      kind: 'server',
      index: 0,
      keyPath: `${p}.tls.cert`,
      file: cert.file,
      subject: leaf.subject,
      validToMs: Date.parse(leaf.validTo),
    });
  if (t.clientCertificate !== 'none') {
    if (t.clientCa === undefined) {
      ctx.errors.push(
        new ConfigError(
          `${p}.tls.clientCa`,
          undefined,
          `a CA bundle file (clientCertificate is "${t.clientCertificate}"; without a CA Node would trust its public roots)`,
        ),
      );
    } else {
      const bundle = readCertificates(ctx, `${p}.tls.clientCa`, t.clientCa);
      if (bundle) {
        ca = bundle.data;
        caCerts = bundle.certs;
        for (const [index, c] of bundle.certs.entries()) {
          if (!c.ca)
            ctx.errors.push(
              new ConfigError(
                `${p}.tls.clientCa`,
                t.clientCa,
                `CA certificates only (${c.subject.replace(/\n/g, ',')} is not a CA)`,
              ),
            );
          // An expired CA makes OpenSSL refuse every client: say so now rather than at the first handshake.
          else checkValidNow(ctx, `${p}.tls.clientCa`, t.clientCa, c);
          certificates.push({
            kind: 'ca',
            index,
            keyPath: `${p}.tls.clientCa`,
            file: bundle.file,
            subject: c.subject,
            validToMs: Date.parse(c.validTo),
          });
        }
      }
    }
  } else if (t.clientCa !== undefined) {
    ctx.errors.push(
      new ConfigError(
        `${p}.tls.clientCa`,
        t.clientCa,
        `no clientCa when ${p}.tls.clientCertificate is "none"`,
      ),
    );
  }
  const crl = t.crl === undefined ? undefined : resolveCrl(ctx, t.clientCertificate, t.crl, p, caCerts);
  if (ctx.errors.length > errorsBefore || !cert || !key) return undefined;
  const options = {
    cert: cert.data,
    key: key.data,
    minVersion: t.minVersion,
    ciphers: TLS_CIPHERS,
    honorCipherOrder: true,
    ...(ca ? { ca } : {}),
    ...(crl ? { crl: crl.crls.map((c) => c.pem) } : {}),
    requestCert: t.clientCertificate !== 'none',
    // `optional` completes the handshake without a certificate; the listener then closes connections
    // that presented a certificate which failed verification, and routes that need one answer 403.
    rejectUnauthorized: t.clientCertificate === 'require',
  };
  try {
    createSecureContext(options);
  } catch (err) {
    ctx.errors.push(
      new ConfigError(
        `${p}.tls`,
        t,
        `TLS material Node accepts (${err instanceof Error ? err.message : 'rejected'})`,
      ),
    );
    return undefined;
  }
  return {
    clientCertificate: t.clientCertificate,
    options,
    certificates,
    ...(crl
      ? {
          crls: crl.crls.map((c) => ({ index: c.index, nextUpdateMs: c.nextUpdateMs })),
          revokedSerials: [...new Set(crl.crls.flatMap((c) => c.revoked))],
        }
      : {}),
  };
}

/**
 * `${p}.tls.crl`: every CRL of the file, split and checked against the client CA bundle (certs/crl.ts).
 * Each problem is a config error at `${p}.tls.crl`; undefined then, or when the bundle itself failed (its
 * own errors say why).
 */
function resolveCrl(
  ctx: Ctx,
  mode: ListenerTlsFile['clientCertificate'],
  value: string,
  p: string,
  cas: readonly X509Certificate[] | undefined,
): ReturnType<typeof readCrlFile> | undefined {
  if (mode === 'none') {
    ctx.errors.push(new ConfigError(`${p}.tls.crl`, value, `no crl when ${p}.tls.clientCertificate is "none"`));
    return undefined;
  }
  const read = readAt(ctx, `${p}.tls.crl`, value);
  if (read === undefined || cas === undefined) return undefined;
  const result = readCrlFile(read.data.toString('latin1'), read.file, cas, ctx.deps.now());
  for (const problem of result.problems) ctx.errors.push(new ConfigError(`${p}.tls.crl`, value, problem));
  return result.problems.length === 0 ? result : undefined;
}

/**
 * `${p}.serverNames` (or, when absent, the listen host if it is a DNS name) against the server certificate
 * of `tls` (certs/server-names.ts). A certificate whose SANs cover none of them is a warning naming the
 * listener and the names, and `serverNameMismatch` on the returned TLS settings (the metric): it loads,
 * because a client that checks only the CA still connects. An invalid entry, or `serverNames` on a
 * listener without TLS, is an error.
 */
function withServerNames(
  ctx: Ctx,
  tls: ListenerTls | undefined,
  tlsFile: ListenerTlsFile | undefined,
  names: readonly string[] | undefined,
  address: ListenAddress | undefined,
  p: string,
  label: string,
): ListenerTls | undefined {
  if (names !== undefined) {
    if (tlsFile === undefined) {
      ctx.errors.push(
        new ConfigError(`${p}.serverNames`, names, `no serverNames without ${p}.tls (they are checked against its certificate)`),
      );
    }
    names.forEach((n, i) => {
      const problem = serverNameProblem(n);
      if (problem !== undefined) ctx.errors.push(new ConfigError(`${p}.serverNames[${i}]`, n, problem));
    });
  }
  if (tls === undefined) return undefined;
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(tls.options.cert as Buffer);
  } catch {
    return tls; // resolveListenerTls parsed it already; nothing better to say here
  }
  const check = checkServerNames(leaf, names, address?.host);
  if (check.mismatch)
    ctx.warnings.push(
      `${label}: the server certificate (${p}.tls.cert) covers none of the names clients use, ${check.names.join(', ')} ` +
        `(${names !== undefined ? `${p}.serverNames` : `the listen host; set ${p}.serverNames to the names clients use`}); ` +
        `its subjectAltNames: ${check.subjectAltNames || 'none'}. Clients that check the host name will refuse the handshake`,
    );
  return { ...tls, serverNames: check.names, serverNameMismatch: check.mismatch };
}

/** The TLS options of an upstream mapping (`https://` or `tls://`): CA bundle, client cert + key, servername. */
function resolveUpstreamTls(
  ctx: Ctx,
  u: { ca?: string | undefined; cert?: string | undefined; key?: string | undefined; servername?: string | undefined },
  p: string,
): { ca?: Buffer; cert?: Buffer; key?: Buffer; servername?: string } {
  const tls: { ca?: Buffer; cert?: Buffer; key?: Buffer; servername?: string } = {};
  if (u.ca !== undefined) {
    const ca = readCertificates(ctx, `${p}.ca`, u.ca);
    if (ca) {
      tls.ca = ca.data;
      for (const [index, c] of ca.certs.entries())
        ctx.upstreamCerts.push({ kind: 'upstream_ca', index, keyPath: `${p}.ca`, file: ca.file, subject: c.subject, validToMs: Date.parse(c.validTo) });
    }
  }
  if ((u.cert === undefined) !== (u.key === undefined)) {
    ctx.errors.push(
      new ConfigError(
        u.cert === undefined ? `${p}.cert` : `${p}.key`,
        undefined,
        `both ${p}.cert and ${p}.key, or neither`,
      ),
    );
  } else if (u.cert !== undefined && u.key !== undefined) {
    const cert = readCertificates(ctx, `${p}.cert`, u.cert);
    const key = readKey(ctx, `${p}.key`, u.key);
    if (cert?.certs[0] && key && !cert.certs[0].checkPrivateKey(key.key))
      ctx.errors.push(new ConfigError(`${p}.key`, u.key, `the private key of the certificate in ${p}.cert`));
    if (cert && key) {
      tls.cert = cert.data;
      tls.key = key.data;
      const leaf = cert.certs[0];
      if (leaf)
        ctx.upstreamCerts.push({ kind: 'upstream_client', index: 0, keyPath: `${p}.cert`, file: cert.file, subject: leaf.subject, validToMs: Date.parse(leaf.validTo) });
    }
  }
  if (u.servername !== undefined) tls.servername = u.servername;
  return tls;
}

/**
 * The upstream of a `protocol: tcp` listener: `tcp://host:port` or `tls://host:port`, port explicit (there
 * is no default port for a byte pipe). TLS options only with `tls://`; under requireEncryption a `tcp://`
 * upstream must be loopback (the rule of `http://` upstreams).
 */
function resolveTcpUpstream(ctx: Ctx, u: TcpUpstreamFile, p: string): TcpUpstream | undefined {
  const spec = typeof u === 'string' ? { url: u } : u;
  const keyPath = typeof u === 'string' ? p : `${p}.url`;
  const example = 'an upstream URL like tcp://127.0.0.1:8786 or tls://host:port';
  let url: URL;
  try {
    url = new URL(spec.url);
  } catch {
    ctx.errors.push(new ConfigError(keyPath, spec.url, example));
    return undefined;
  }
  if (url.protocol !== 'tcp:' && url.protocol !== 'tls:') {
    ctx.errors.push(
      new ConfigError(
        keyPath,
        spec.url,
        'a tcp:// or tls:// upstream (a tcp listener pipes bytes; http://, https:// and builtin:echo are for http listeners)',
      ),
    );
    return undefined;
  }
  if (
    url.username ||
    url.password ||
    url.search ||
    url.hash ||
    (url.pathname !== '/' && url.pathname !== '') ||
    url.hostname === ''
  ) {
    ctx.errors.push(
      new ConfigError(keyPath, spec.url, 'host and port only: no credentials, path or query (e.g. tcp://127.0.0.1:8786)'),
    );
    return undefined;
  }
  const port = url.port === '' ? NaN : Number(url.port);
  if (!Number.isInteger(port) || port < 1 || port > 65_535) {
    ctx.errors.push(
      new ConfigError(keyPath, spec.url, `an explicit port from 1 to 65535 (e.g. ${url.protocol}//${url.hostname}:8786)`),
    );
    return undefined;
  }
  const host = url.hostname.replace(/^\[|\]$/g, '');
  if (ctx.requireEncryption && url.protocol === 'tcp:' && !isLoopbackHost(host)) {
    ctx.errors.push(
      new ConfigError(
        keyPath,
        spec.url,
        'tls:// or a loopback tcp:// upstream (requireEncryption is true: plaintext must not leave the machine)',
      ),
    );
    return undefined;
  }
  if (typeof u !== 'string' && url.protocol === 'tcp:' && (u.ca ?? u.cert ?? u.key ?? u.servername) !== undefined) {
    ctx.errors.push(new ConfigError(p, u, 'TLS options (ca, cert, key, servername) only with a tls:// url'));
    return undefined;
  }
  if (url.protocol === 'tcp:') return { kind: 'tcp', host, port };
  const before = ctx.errors.length;
  const tls = typeof u === 'string' ? {} : resolveUpstreamTls(ctx, u, p);
  if (ctx.errors.length > before) return undefined;
  return { kind: 'tls', host, port, ...tls };
}

function resolveUpstream(ctx: Ctx, u: UpstreamFile, p: string): UpstreamSpec | undefined {
  const spec = typeof u === 'string' ? { url: u } : u;
  const keyPath = typeof u === 'string' ? p : `${p}.url`;
  if (spec.url === 'builtin:echo') {
    if (typeof u !== 'string')
      ctx.errors.push(new ConfigError(p, u, 'the string "builtin:echo" (it takes no TLS options)'));
    return { kind: 'gateway', endpoint: 'echo' };
  }
  let url: URL;
  try {
    url = new URL(spec.url);
  } catch {
    ctx.errors.push(
      new ConfigError(
        keyPath,
        spec.url,
        'an upstream URL like http://127.0.0.1:8787, https://host:port or builtin:echo',
      ),
    );
    return undefined;
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    ctx.errors.push(new ConfigError(keyPath, spec.url, 'an http:// or https:// upstream (or builtin:echo)'));
    return undefined;
  }
  if (
    url.username ||
    url.password ||
    url.search ||
    url.hash ||
    (url.pathname !== '/' && url.pathname !== '')
  ) {
    ctx.errors.push(
      new ConfigError(
        keyPath,
        spec.url,
        'an origin only: scheme, host and port, no credentials, path or query',
      ),
    );
    return undefined;
  }
  const hostname = url.hostname.replace(/^\[|\]$/g, '');
  const loopback = isLoopbackHost(hostname);
  if (ctx.requireEncryption && url.protocol === 'http:' && !loopback) {
    ctx.errors.push(
      new ConfigError(
        keyPath,
        spec.url,
        'https:// or a loopback http:// upstream (requireEncryption is true: plaintext must not leave the machine)',
      ),
    );
    return undefined;
  }
  const isObj = typeof u !== 'string';
  if (isObj && url.protocol === 'http:' && (u.ca ?? u.cert ?? u.key ?? u.servername) !== undefined) {
    ctx.errors.push(
      new ConfigError(p, u, `TLS options (ca, cert, key, servername) only with an https:// url`),
    );
    return undefined;
  }
  const tls = isObj && url.protocol === 'https:' ? resolveUpstreamTls(ctx, u, p) : undefined;
  const port = url.port ? Number(url.port) : url.protocol === 'https:' ? 443 : 80;
  return {
    kind: 'http',
    origin: `${url.protocol}//${url.host}`,
    protocol: url.protocol,
    hostname,
    port,
    loopback,
    ...(tls ? { tls } : {}),
  };
}

function compileAcl(
  ctx: Ctx,
  entries: readonly string[] | undefined,
  keyPath: string,
): ClientAcl | undefined {
  if (entries === undefined) return undefined;
  try {
    return compileClientAcl(entries, keyPath);
  } catch (err) {
    if (err instanceof ConfigError) ctx.errors.push(err);
    else throw err;
    return undefined;
  }
}

function normalizeRouteHost(ctx: Ctx, host: string | undefined, keyPath: string): string | undefined {
  if (host === undefined) return undefined;
  const h = host.toLowerCase().replace(/\.$/, '');
  const label = '[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?';
  if (!new RegExp(`^(?:\\*\\.)?${label}(?:\\.${label})*$`).test(h)) {
    ctx.errors.push(
      new ConfigError(keyPath, host, 'a host name, optionally with a leading "*." wildcard (no port)'),
    );
  }
  return h;
}

function resolveListener(
  ctx: Ctx,
  l: ListenerFile,
  i: number,
  seenRouteIds: Set<string>,
): RuntimeListener | undefined {
  ctx.upstreamCerts.length = 0;
  const r = l.protocol === 'tcp' ? resolveTcpListener(ctx, l, i) : resolveHttpListener(ctx, l, i, seenRouteIds);
  if (r === undefined || ctx.upstreamCerts.length === 0) return r;
  return { ...r, upstreamCertificates: [...ctx.upstreamCerts] };
}

/**
 * A `protocol: tcp` listener. Fail closed on the client certificate policy: a TCP listener has no later
 * stage (no route, no 403) that could demand a certificate, so
 * - `optional` is accepted only with `allowClients` (the ACL then refuses anonymous clients); without it,
 *   `optional` would silently admit anyone — an error naming both keys;
 * - `none` (anonymous TLS, anyone may pipe) is accepted only with requireEncryption false and no
 *   `allowClients` (which could match nobody), and is then warned about.
 */
function resolveTcpListener(ctx: Ctx, l: TcpListenerFile, i: number): TcpRuntimeListener | undefined {
  const p = `listeners[${i}]`;
  const address = parseListen(l.listen, `${p}.listen`, ctx.errors);
  const tls = withServerNames(ctx, resolveListenerTls(ctx, l.tls, p), l.tls, l.serverNames, address, p, `listener "${l.name}"`);
  const mode = l.tls.clientCertificate;
  if (mode === 'optional' && l.allowClients === undefined) {
    ctx.errors.push(
      new ConfigError(
        `${p}.tls.clientCertificate`,
        mode,
        `"require", or "optional" together with ${p}.allowClients (a tcp listener has no later stage that could demand a certificate: "optional" alone would admit anonymous clients)`,
      ),
    );
  }
  if (mode === 'none') {
    if (l.allowClients !== undefined) {
      ctx.errors.push(
        new ConfigError(
          `${p}.allowClients`,
          l.allowClients,
          `no allowClients when ${p}.tls.clientCertificate is "none" (no client could match)`,
        ),
      );
    } else if (ctx.requireEncryption) {
      ctx.errors.push(
        new ConfigError(
          `${p}.tls.clientCertificate`,
          mode,
          '"require" (or "optional" with allowClients): a tcp listener without client certificates admits anyone, refused while requireEncryption is true',
        ),
      );
    } else {
      ctx.warnings.push(
        `listener "${l.name}" (tcp) asks for no client certificate: anyone who reaches ${l.listen} is piped to the upstream`,
      );
    }
  }
  const acl = compileAcl(ctx, l.allowClients, `${p}.allowClients`);
  const upstream = resolveTcpUpstream(ctx, l.upstream, `${p}.upstream`);
  if (!address || !tls || !upstream) return undefined;
  return {
    protocol: 'tcp',
    name: l.name,
    keyPath: p,
    address,
    tls,
    acl,
    upstream,
    proxyProtocol: l.proxyProtocol,
    maxConnections: l.maxConnections,
    maxConnectionsPerClient: l.maxConnectionsPerClient,
  };
}

function resolveHttpListener(
  ctx: Ctx,
  l: HttpListenerFile,
  i: number,
  seenRouteIds: Set<string>,
): HttpRuntimeListener | undefined {
  const p = `listeners[${i}]`;
  const address = parseListen(l.listen, `${p}.listen`, ctx.errors);
  if (l.tls !== undefined && l.plaintext === true) {
    ctx.errors.push(new ConfigError(`${p}.plaintext`, true, `either ${p}.tls or ${p}.plaintext, not both`));
  } else if (l.tls === undefined) {
    if (ctx.requireEncryption) {
      ctx.errors.push(
        new ConfigError(
          `${p}.tls`,
          undefined,
          'a tls section (requireEncryption is true; plaintext listeners are refused)',
        ),
      );
      if (l.plaintext === true) {
        ctx.errors.push(
          new ConfigError(
            `${p}.plaintext`,
            true,
            'no plaintext listener while requireEncryption is true (set requireEncryption: false to allow one)',
          ),
        );
      }
    } else if (l.plaintext !== true) {
      ctx.errors.push(
        new ConfigError(
          `${p}.tls`,
          undefined,
          `a tls section, or ${p}.plaintext: true to serve plaintext on purpose`,
        ),
      );
    }
  }
  const tls = withServerNames(ctx, resolveListenerTls(ctx, l.tls, p), l.tls, l.serverNames, address, p, `listener "${l.name}"`);
  const mode = l.tls?.clientCertificate ?? 'none';
  if (mode === 'none' && l.allowClients !== undefined) {
    ctx.errors.push(
      new ConfigError(
        `${p}.allowClients`,
        l.allowClients,
        `no allowClients when ${p}.tls.clientCertificate is "none" (no client could match)`,
      ),
    );
  }
  const acl = compileAcl(ctx, l.allowClients, `${p}.allowClients`);
  const routes: Route[] = [];
  // No prototype: a route id such as "constructor" is a plain key.
  const routeAuth = Object.create(null) as Record<string, RouteAuth>;
  const routeTelemetryOptOut = Object.create(null) as Record<string, boolean>;
  l.routes.forEach((r, j) => {
    if (r.telemetry !== undefined) routeTelemetryOptOut[r.id ?? `${l.name}-${j}`] = r.telemetry.optOut;
    const rp = `${p}.routes[${j}]`;
    const id = r.id ?? `${l.name}-${j}`;
    if (seenRouteIds.has(id)) ctx.errors.push(new ConfigError(`${rp}.id`, id, 'a route id used only once'));
    seenRouteIds.add(id);
    if (mode === 'none' && r.allowClients !== undefined) {
      ctx.errors.push(
        new ConfigError(
          `${rp}.allowClients`,
          r.allowClients,
          `no allowClients when ${p}.tls.clientCertificate is "none"`,
        ),
      );
    }
    const upstream = resolveUpstream(ctx, r.upstream, `${rp}.upstream`);
    const host = normalizeRouteHost(ctx, r.match.host, `${rp}.match.host`);
    const prefix = r.match.pathPrefix;
    if (
      prefix !== '/' &&
      (/[?#;\\%]|\/\/|\/\.\.?(?:\/|$)/.test(prefix) ||
        (prefix.endsWith('/') && prefix.length > 1 && prefix.slice(0, -1).endsWith('/')))
    ) {
      ctx.errors.push(
        new ConfigError(
          `${rp}.match.pathPrefix`,
          prefix,
          'a normalized path prefix (no ?, #, ;, \\, %, //, or dot segments)',
        ),
      );
    }
    const pathPrefix = prefix.length > 1 && prefix.endsWith('/') ? prefix.slice(0, -1) : prefix;
    const racl = compileAcl(ctx, r.allowClients, `${rp}.allowClients`);
    let methods: MethodPolicy = DEFAULT_METHOD_POLICY;
    try {
      methods = compileMethodPolicy(r.methods, `${rp}.methods`);
    } catch (err) {
      if (err instanceof ConfigError) ctx.errors.push(err);
      else throw err;
    }
    if (r.auth !== undefined) {
      const auth = resolveRouteAuth(ctx, r.auth, `${rp}.auth`, id);
      if (auth !== undefined) routeAuth[id] = auth;
    }
    if (upstream) routes.push({ id, host, pathPrefix, upstream, acl: racl, methods });
  });
  if (!address) return undefined;
  return {
    name: l.name,
    keyPath: p,
    address,
    protocol: 'http',
    tls,
    acl,
    routes: compileRouteTable(routes),
    maxConnections: l.maxConnections,
    maxConnectionsPerClient: l.maxConnectionsPerClient,
    routeAuth,
    routeTelemetryOptOut,
  };
}

function resolveConfig(
  file: ConfigFile,
  source: string,
  deps: LoadDeps,
  errors: ConfigError[],
): Omit<RuntimeConfig, 'files'> | undefined {
  const warnings: string[] = [];
  const baseDir = dirname(source);
  const authProviders = resolveAuthProviders(file.authProviders, baseDir, deps, errors);
  const ctx: Ctx = {
    baseDir,
    deps,
    errors,
    warnings,
    requireEncryption: file.requireEncryption,
    providerTypes: new Map(Object.entries(file.authProviders).map(([name, p]) => [name, p.type])),
    usedProviders: new Set(),
    upstreamCerts: [],
  };
  const names = new Set<string>();
  const binds = new Map<string, string>();
  const seenRouteIds = new Set<string>();
  const listeners: RuntimeListener[] = [];
  file.listeners.forEach((l, i) => {
    if (names.has(l.name))
      errors.push(new ConfigError(`listeners[${i}].name`, l.name, 'a listener name used only once'));
    names.add(l.name);
    const r = resolveListener(ctx, l, i, seenRouteIds);
    if (!r) return;
    const bindKey = `${r.address.host}:${r.address.port}`;
    const other = binds.get(bindKey);
    if (r.address.port !== 0 && other !== undefined) {
      errors.push(
        new ConfigError(`listeners[${i}].listen`, l.listen, `an address not already used by ${other}`),
      );
    }
    binds.set(bindKey, `listeners[${i}]`);
    if (!r.tls)
      warnings.push(
        `listener "${l.name}" serves PLAINTEXT on ${l.listen}: requireEncryption is false and plaintext: true is set`,
      );
    if (r.acl?.entries.length === 0)
      warnings.push(`listener "${l.name}" has an empty allowClients: it denies every client`);
    listeners.push(r);
  });
  for (const name of Object.keys(file.authProviders)) {
    if (!ctx.usedProviders.has(name))
      warnings.push(`authProviders.${name} is not used by any route (no route lists it in auth.providers)`);
  }
  // The operator's list is added to the defaults (DESIGN.md: "operators may extend it"); an error names
  // `telemetry.headers[i]` of the operator's list.
  const telemetryMatcher = compileTelemetryHeaders(
    [...DEFAULTS.telemetry.headers, ...file.telemetry.headers],
    'telemetry.headers',
    errors,
    DEFAULTS.telemetry.headers.length,
  );
  const admin = resolveAdmin(ctx, file.admin);
  const adminAddress = admin?.address;
  const adminClash =
    adminAddress && adminAddress.port !== 0
      ? binds.get(`${adminAddress.host}:${adminAddress.port}`)
      : undefined;
  if (file.admin.enabled && adminClash !== undefined) {
    errors.push(
      new ConfigError('admin.listen', file.admin.listen, `an address not already used by ${adminClash}`),
    );
  }
  if (admin?.tls !== undefined) {
    // The admin certificates' expiry gauges carry listener="admin" (set even where this process does not
    // serve admin: cluster workers): a data listener of that name would share (and overwrite) their series.
    file.listeners.forEach((l, i) => {
      if (l.name === 'admin')
        errors.push(
          new ConfigError(
            `listeners[${i}].name`,
            l.name,
            'a name other than "admin" while admin.tls is set (the admin certificates\' metrics use listener="admin")',
          ),
        );
    });
  }
  if (errors.length > 0 || !admin) return undefined;
  return {
    source,
    requireEncryption: file.requireEncryption,
    admin,
    log: file.log,
    workers: file.workers,
    timeouts: file.timeouts,
    http2: file.http2,
    reload: file.reload,
    telemetry: {
      optOut: file.telemetry.optOut,
      honorClientSignals: file.telemetry.honorClientSignals,
      matcher: telemetryMatcher,
    },
    listeners,
    authProviders,
    warnings,
  };
}

/**
 * `admin`: the address, `admin.tls` (the listener resolver, errors at `admin.tls.*`) and `allowClients`.
 * Fail closed off loopback: under requireEncryption a non-loopback admin listener needs `tls`, and that
 * `tls` must authenticate its clients — `clientCertificate: none`, or `optional` without `allowClients`,
 * would let anyone who reaches the port read /metrics (route and listener names, traffic) and purge the
 * token cache. With requireEncryption off those are warnings. Loopback keeps plaintext as the default.
 */
function resolveAdmin(ctx: Ctx, a: AdminFile): AdminRuntimeConfig | undefined {
  const { errors } = ctx;
  const errorsBefore = errors.length;
  const address = parseListen(a.listen, 'admin.listen', errors);
  const tls = withServerNames(ctx, resolveListenerTls(ctx, a.tls, 'admin'), a.tls, a.serverNames, address, 'admin', 'the admin listener');
  const mode = a.tls?.clientCertificate;
  const offLoopback = address !== undefined && !isLoopbackHost(address.host);
  const anonymous = mode === 'none' || (mode === 'optional' && a.allowClients === undefined);
  if (a.enabled && offLoopback && ctx.requireEncryption) {
    if (a.tls === undefined) {
      errors.push(
        new ConfigError(
          'admin.listen',
          a.listen,
          'a loopback address, or a tls section at admin.tls (the admin listener is not on loopback and requireEncryption is true; give it client certificates too: clientCertificate "require", and allowClients)',
        ),
      );
    } else if (anonymous) {
      errors.push(
        new ConfigError(
          'admin.tls.clientCertificate',
          mode,
          '"require", or "optional" together with admin.allowClients (the admin listener is not on loopback and requireEncryption is true: without client certificates anyone who reaches it reads /metrics and purges the token cache)',
        ),
      );
    }
  } else if (a.enabled && offLoopback) {
    if (a.tls === undefined)
      ctx.warnings.push(
        `the admin listener serves PLAINTEXT on ${a.listen} (not loopback; requireEncryption is false): /metrics and POST /cache/purge are open to anyone who reaches it`,
      );
    else if (anonymous)
      ctx.warnings.push(
        `the admin listener on ${a.listen} (not loopback) asks for no client certificate: anyone who reaches it reads /metrics and purges the token cache`,
      );
  }
  if (a.allowClients !== undefined && (a.tls === undefined || mode === 'none')) {
    errors.push(
      new ConfigError(
        'admin.allowClients',
        a.allowClients,
        a.tls === undefined
          ? 'no allowClients without admin.tls (the allow-list matches client certificates, which need TLS with clientCertificate "require" or "optional")'
          : 'no allowClients when admin.tls.clientCertificate is "none" (no client could match)',
      ),
    );
  }
  const acl = compileAcl(ctx, a.allowClients, 'admin.allowClients');
  if (a.enabled && acl?.entries.length === 0)
    ctx.warnings.push('admin.allowClients is empty: the admin listener denies every client');
  if (errors.length > errorsBefore || address === undefined) return undefined;
  return { enabled: a.enabled, keyPath: 'admin', address, tls, acl };
}

/**
 * `authProviders` with their file paths made absolute, each provider built once and closed again so that a
 * file it cannot use (an unreadable JWKS, a malformed tokens file, an empty secret) is a config error now,
 * naming its key path, and not a 401 storm later. Nothing is fetched here: a remote JWKS is the app's
 * business at start (warmUp), reported by readiness.
 */
function resolveAuthProviders(
  map: ConfigFile['authProviders'],
  baseDir: string,
  deps: LoadDeps,
  errors: ConfigError[],
): Record<string, AuthProviderConfig> {
  const out = Object.create(null) as Record<string, AuthProviderConfig>;
  for (const [name, config] of Object.entries(map)) {
    const resolved: Record<string, unknown> = { ...config };
    let readable = true;
    // The provider table names each type's file keys: relative paths resolve against the config's folder.
    for (const [key, value] of providerFiles(config)) {
      const file = resolve(baseDir, value);
      resolved[key] = file;
      try {
        deps.readFile(file);
      } catch (err) {
        readable = false;
        errors.push(
          new ConfigError(`authProviders.${name}.${key}`, value, `a readable file (${errnoText(err)}: ${file})`),
        );
      }
    }
    const provider = resolved as AuthProviderConfig;
    out[name] = provider;
    if (!readable) continue;
    try {
      createAuthenticator(name, provider, {
        // Providers read wall time only (expiry); nothing is measured here.
        clock: { now: deps.now, hrtime: () => 0n },
        readFile: (path) => deps.readFile(path).toString('utf8'),
        // The content is what is checked here; the static provider's change detection starts in the app.
        statFile: () => ({ mtimeMs: 0, size: 0 }),
      }).close();
    } catch (err) {
      if (err instanceof ConfigError) errors.push(err);
      else
        errors.push(
          new ConfigError(
            `authProviders.${name}`,
            provider.type,
            `a usable provider (${err instanceof Error ? err.message : 'it failed to start'})`,
          ),
        );
    }
  }
  return out;
}

/** A route's `auth` block: provider names that exist, a policy that compiles, options that fit the providers. */
function resolveRouteAuth(ctx: Ctx, auth: RouteAuthFile, keyPath: string, id: string): RouteAuth | undefined {
  const before = ctx.errors.length;
  const seen = new Set<string>();
  auth.providers.forEach((name, k) => {
    const type = ctx.providerTypes.get(name);
    if (type === undefined) {
      const known = [...ctx.providerTypes.keys()];
      ctx.errors.push(
        new ConfigError(
          `${keyPath}.providers[${k}]`,
          name,
          known.length === 0
            ? 'the name of a provider in authProviders (none is configured)'
            : `the name of a provider in authProviders (${known.join(', ')})`,
        ),
      );
    } else if (seen.has(name)) {
      ctx.errors.push(new ConfigError(`${keyPath}.providers[${k}]`, name, 'each provider listed once'));
    }
    seen.add(name);
    ctx.usedProviders.add(name);
  });
  if (
    auth.staleIfErrorSeconds > 0 &&
    !auth.providers.some((name) => ctx.providerTypes.get(name) === 'introspection')
  ) {
    ctx.errors.push(
      new ConfigError(
        `${keyPath}.staleIfErrorSeconds`,
        auth.staleIfErrorSeconds,
        'staleIfErrorSeconds only on a route with an introspection provider (it applies to nothing else)',
      ),
    );
  }
  let policy: RoutePolicy | undefined;
  try {
    policy = compileRoutePolicy(
      {
        ...(auth.scopes !== undefined ? { scopes: auth.scopes } : {}),
        ...(auth.claims !== undefined ? { claims: auth.claims } : {}),
      },
      keyPath,
    );
  } catch (err) {
    if (err instanceof ConfigError) ctx.errors.push(err);
    else throw err;
  }
  if (auth.allowQueryToken) {
    ctx.warnings.push(
      `route "${id}" accepts a token in the query string (${keyPath}.allowQueryToken): URLs end up in logs, proxies and browser history (RFC 6750 §5.3)`,
    );
  }
  if (ctx.errors.length > before || policy === undefined) return undefined;
  return {
    keyPath,
    providers: [...auth.providers],
    policy,
    allowQueryToken: auth.allowQueryToken,
    forwardToken: auth.forwardToken,
    staleIfErrorSeconds: auth.staleIfErrorSeconds,
  };
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object' && !Buffer.isBuffer(value) && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}
