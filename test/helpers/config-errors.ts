/**
 * Assertions for config refusals shared by the config test tables: a refused config is a ConfigInvalid
 * listing ConfigErrors, each `<key path>: got <value>; expected <what>`.
 */
import { expect } from 'vitest';
import { ConfigInvalid } from '../../src/config/load.js';
import { ConfigError } from '../../src/errors.js';

/** Runs `fn`, expecting a ConfigInvalid; returns it. */
export function refusal(fn: () => unknown): ConfigInvalid {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigInvalid);
    return err as ConfigInvalid;
  }
  throw new Error('expected ConfigInvalid, the config loaded');
}

/** The error at exactly `path` (failing with the whole list when there is none). */
export function errorAt(err: ConfigInvalid, path: string): ConfigError {
  const found = err.errors.find((e) => e.path === path);
  if (!found) throw new Error(`no error at "${path}"; got:\n${err.message}`);
  return found;
}

/** Checks one row of a refusal table: the error at `path` reads `<path>: got <value>; expected <expected>`. */
export function expectConfigError(
  err: ConfigInvalid,
  path: string,
  value: string | RegExp,
  expected: string | RegExp,
): ConfigError {
  const e = errorAt(err, path);
  expect(e).toBeInstanceOf(ConfigError);
  const head = `${path || '(root)'}: `;
  expect(e.message.startsWith(`${head}got `), e.message).toBe(true);
  const [got, expectedText] = e.message.slice(head.length).split('; expected ');
  expect(expectedText, e.message).toBeDefined();
  if (typeof value === 'string') expect(got).toContain(value);
  else expect(got).toMatch(value);
  if (typeof expected === 'string') expect(expectedText).toContain(expected);
  else expect(expectedText).toMatch(expected);
  return e;
}
