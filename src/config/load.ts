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
import { resolve } from 'node:path';
import { ConfigError } from '../errors.js';
import { compileConfig } from './compile.js';
import type { LoadDeps } from './context.js';
import { errnoText, recordReads } from './files.js';
import type { RuntimeConfig } from './runtime.js';
import { parseConfigSchema } from './schema-errors.js';
import { parseConfigYaml } from './yaml.js';

/**
 * The runtime types the listener modules and the composition root name through the loader (they are defined,
 * with all the others, in config/runtime.ts).
 */
export type {
  DecisionRuntimeListener,
  HttpRuntimeListener,
  ListenAddress,
  ListenerTls,
  RuntimeConfig,
  TcpRuntimeListener,
} from './runtime.js';

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

/** Loads config files and texts with the reads, clock and stage checks it was made with. */
export interface ConfigLoader {
  /** Reads, validates and resolves a config file. Throws {@link ConfigInvalid} listing every problem found. */
  loadFile(file: string): RuntimeConfig;
  /**
   * Like {@link ConfigLoader.loadFile} for text already read; relative paths resolve against `source`'s folder.
   * YAML syntax errors (tabs, unterminated quotes, duplicate keys) name the key path, the offending line
   * and its line/column; schema and file errors name the key path and carry the line of that key.
   */
  loadText(text: string, source: string): RuntimeConfig;
}

/**
 * A loader over injected side effects. Every file read (the config file included) is recorded with its digest
 * into the config it makes (`RuntimeConfig.files`, for the file watch).
 */
export function createConfigLoader(deps: LoadDeps): ConfigLoader {
  return {
    loadFile(file) {
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
    },
    loadText(text, source) {
      const files: Record<string, string> = {};
      return loadText(text, source, recordReads(deps, files), files);
    },
  };
}

/** {@link ConfigLoader.loadText} with the reads already recorded into `files` (which the config then carries). */
function loadText(text: string, source: string, deps: LoadDeps, files: Record<string, string>): RuntimeConfig {
  const yaml = parseConfigYaml(text);
  if (yaml.syntaxErrors.length > 0) throw new ConfigInvalid(source, yaml.syntaxErrors);
  const fail = (errors: readonly ConfigError[]): never => {
    throw new ConfigInvalid(
      source,
      errors,
      errors.map((e) => yaml.lineOf(e.path)),
    );
  };
  const document = yaml.toValue();
  if ('error' in document) return fail([document.error]);
  const raw = document.value;
  if (raw === null || raw === undefined) {
    return fail([
      new ConfigError(
        '',
        raw ?? null,
        'a YAML mapping with at least a `listeners` list (the document is empty)',
      ),
    ]);
  }
  const parsed = parseConfigSchema(raw);
  if (!parsed.ok) return fail(parsed.errors);
  const errors: ConfigError[] = [];
  const runtime = compileConfig(parsed.config, source, deps, errors);
  if (errors.length > 0 || runtime === undefined) return fail(errors);
  return deepFreeze({ ...runtime, files: { ...files } });
}

/** Freezes the runtime config all the way down (Buffers excepted: Node cannot freeze their bytes). */
function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object' && !Buffer.isBuffer(value) && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}
