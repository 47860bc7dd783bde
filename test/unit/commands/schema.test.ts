/**
 * `portcullis schema`: the committed schema/portcullis.schema.json is exactly what the command prints (a
 * schema change without `portcullis schema > schema/portcullis.schema.json` fails here), and it is a JSON
 * Schema a standard validator (ajv, draft-07) compiles, accepts the shipped configs with, and refuses an
 * unknown key, a wrong type and a bad enum with.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { parse } from 'yaml';
import { describe, expect, it } from 'vitest';
import { configJsonSchema, configJsonSchemaText, SCHEMA_FILE } from '../../../src/commands/schema.js';
import { runCli } from '../../helpers/binary.js';

interface Validate {
  (data: unknown): boolean;
  errors?: { dataPath?: string; message?: string }[] | null;
}
interface Ajv {
  compile(schema: object): Validate;
}

/** ajv 6 (draft-07), the validator eslint already brings; loaded from node_modules, not a dependency of ours. */
function loadAjv(): (new (opts: object) => Ajv) | undefined {
  try {
    return createRequire(import.meta.url)('ajv') as new (opts: object) => Ajv;
  } catch {
    return undefined;
  }
}

describe('portcullis schema', () => {
  it(`${SCHEMA_FILE} is what the command prints`, async () => {
    const committed = readFileSync(SCHEMA_FILE, 'utf8');
    expect(configJsonSchemaText()).toBe(committed);
    const r = await runCli(['schema']);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe(committed);
  });

  it('is draft-07, titled, with every top-level key of the config and no zod-only format', () => {
    const schema = configJsonSchema();
    expect(schema.$schema).toBe('http://json-schema.org/draft-07/schema#');
    expect(schema.title).toBe('Portcullis config');
    expect(Object.keys(schema.properties as object).sort()).toEqual(
      [
        'admin',
        'authProviders',
        'http2',
        'listeners',
        'log',
        'reload',
        'requireEncryption',
        'store',
        'telemetry',
        'timeouts',
        'workers',
      ].sort(),
    );
    expect(schema.additionalProperties).toBe(false);
    expect(schema.required).toEqual(['listeners']);
    expect(configJsonSchemaText()).not.toContain('"format": "starts_with"');
  });

  const Ajv = loadAjv();
  it.skipIf(Ajv === undefined)(
    'a standard validator accepts the shipped configs and refuses broken ones',
    () => {
      const validate = new Ajv!({ allErrors: true }).compile(configJsonSchema());
      for (const file of ['config/portcullis.yaml', 'config/examples/dask.yaml']) {
        const ok = validate(parse(readFileSync(file, 'utf8')));
        expect(ok, `${file}: ${JSON.stringify(validate.errors)}`).toBe(true);
      }
      const base = {
        listeners: [
          { name: 'a', listen: '127.0.0.1:8443', routes: [{ match: {}, upstream: 'builtin:echo' }] },
        ],
      };
      expect(validate(base)).toBe(true);
      for (const broken of [
        { ...base, requireEncryptoin: false }, // a typo in a security key
        { ...base, requireEncryption: 'no' },
        { ...base, log: { level: 'verbose' } },
        { ...base, workers: 0 },
        { listeners: [] },
        {},
      ]) {
        expect(validate(broken), JSON.stringify(broken)).toBe(false);
      }
    },
  );
});
