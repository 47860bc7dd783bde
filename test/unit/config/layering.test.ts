/**
 * Config is data: what src/config/ loads, followed through every value import, holds no stage runtime — nothing
 * of listener/ or proxy/ (sockets, servers, pipes), and of authn/ only the pure provider schemas
 * (provider-config.ts), never jose, the caches or fetch. The loader gets the providers' load-time check
 * injected (src/load-config.ts). Type-only imports are erased at build and do not count.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

const SRC = resolve(dirname(fileURLToPath(import.meta.url)), '../../../src');

/** The relative modules `file` imports at run time (type-only imports and exports left out). */
function valueImports(file: string): string[] {
  const source = ts.createSourceFile(file, readFileSync(file, 'utf8'), ts.ScriptTarget.Latest);
  const out: string[] = [];
  for (const node of source.statements) {
    let specifier: ts.Expression | undefined;
    if (ts.isImportDeclaration(node)) {
      const clause = node.importClause;
      const allTypes =
        clause !== undefined &&
        (clause.phaseModifier === ts.SyntaxKind.TypeKeyword ||
          (clause.name === undefined &&
            clause.namedBindings !== undefined &&
            ts.isNamedImports(clause.namedBindings) &&
            clause.namedBindings.elements.length > 0 &&
            clause.namedBindings.elements.every((e) => e.isTypeOnly)));
      if (!allTypes) specifier = node.moduleSpecifier;
    } else if (ts.isExportDeclaration(node) && !node.isTypeOnly) {
      specifier = node.moduleSpecifier;
    }
    if (specifier !== undefined && ts.isStringLiteral(specifier) && specifier.text.startsWith('.'))
      out.push(resolve(dirname(file), specifier.text.replace(/\.js$/, '.ts')));
  }
  return out;
}

/** Every src module reachable from `entries` through value imports, relative to src/. */
function closure(entries: readonly string[]): string[] {
  const seen = new Set<string>();
  const stack = [...entries];
  for (let file = stack.pop(); file !== undefined; file = stack.pop()) {
    if (seen.has(file)) continue;
    seen.add(file);
    stack.push(...valueImports(file));
  }
  return [...seen].map((f) => relative(SRC, f)).sort();
}

describe('src/config/ is data', () => {
  const configModules = readdirSync(join(SRC, 'config'))
    .filter((f) => f.endsWith('.ts'))
    .map((f) => join(SRC, 'config', f));
  const reached = closure(configModules);

  it('reaches no listener/ or proxy/ module', () => {
    expect(reached.filter((f) => f.startsWith('listener/') || f.startsWith('proxy/'))).toEqual([]);
  });

  it('reaches authn/ only for the pure provider schemas', () => {
    expect(reached.filter((f) => f.startsWith('authn/'))).toEqual(['authn/provider-config.ts']);
  });

  it('sees what a real import is (the test is not vacuous)', () => {
    expect(closure([join(SRC, 'load-config.ts')])).toContain('authn/providers.ts');
  });
});
