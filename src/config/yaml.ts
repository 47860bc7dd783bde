/**
 * The config file as YAML: parsing, and key paths ↔ places in the text. A syntax error (tabs, an
 * unterminated quote, a duplicate key) names the key path around it, the offending line and its line and
 * column; any later error gets the line of its key from {@link ConfigYaml.lineOf}.
 */
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
import { ConfigError } from '../errors.js';

/** A config file's text, parsed. */
export interface ConfigYaml {
  /** The YAML syntax errors; when there is any, nothing else of the document is to be trusted. */
  readonly syntaxErrors: readonly ConfigError[];
  /** The document as plain data, or the error of an alias that expands too far (a "billion laughs"). */
  toValue(): { readonly value: unknown } | { readonly error: ConfigError };
  /** The 1-based line of the key at `path` (or of its closest parent present in the file). */
  lineOf(path: string): number | undefined;
}

/** Parses the text of a config file (duplicate keys are errors). */
export function parseConfigYaml(text: string): ConfigYaml {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { uniqueKeys: true, prettyErrors: false, lineCounter });
  return {
    syntaxErrors: doc.errors.map((e) => yamlError(doc, text, lineCounter, e)),
    toValue: () => {
      try {
        return { value: doc.toJS({ maxAliasCount: 100 }) as unknown };
      } catch (err) {
        return {
          error: new ConfigError(
            '',
            undefined,
            `a YAML document that expands (${err instanceof Error ? err.message : 'failed'})`,
          ),
        };
      }
    },
    lineOf: (path) => lineOfPath(doc, lineCounter, path),
  };
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

/** `listeners[0].tls.cert` style path. */
export function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const p of path) {
    if (typeof p === 'number') out += `[${p}]`;
    else out += out === '' ? String(p) : `.${String(p)}`;
  }
  return out;
}
