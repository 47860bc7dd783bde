/** Values the CLI parser and the commands share (src/commands/defaults.ts). */
import { describe, expect, it } from 'vitest';
import { OU_PATTERN, parseDurationSeconds } from '../../../src/commands/defaults.js';

describe('parseDurationSeconds', () => {
  it.each([
    ['30d', 2_592_000],
    ['12h', 43_200],
    ['45m', 2_700],
    ['90s', 90],
    ['2w', 1_209_600],
  ])('%s → %d', (v, s) => {
    expect(parseDurationSeconds(v)).toBe(s);
  });
  it.each([['0d'], ['1y'], ['d'], ['1.5h'], ['-1h'], ['1h30m']])('refuses %s', (v) => {
    expect(() => parseDurationSeconds(v)).toThrow(TypeError);
  });
});

describe('OU_PATTERN', () => {
  it.each(['dev', 'data-science', 'Team 7', 'a.b_c'])('accepts %j', (ou) =>
    expect(OU_PATTERN.test(ou)).toBe(true),
  );
  it.each(['', ' lead', 'a,b', 'a=b', 'x+y', 'a'.repeat(65)])(
    'refuses %j (it would change an allowClients match)',
    (ou) => expect(OU_PATTERN.test(ou)).toBe(false),
  );
});
