/**
 * Setup file of every test file: a DeprecationWarning emitted in the test process (the in-process
 * gateway, its dependencies, the test clients) fails the file that caused it. The built binary is held
 * to the same in test/integration/runtime.test.ts.
 */
import { afterAll, expect } from 'vitest';

const deprecations: string[] = [];
process.on('warning', (w) => {
  if (w.name === 'DeprecationWarning') {
    const code = (w as Error & { code?: string }).code;
    deprecations.push(`${code ?? 'DeprecationWarning'}: ${w.message}`);
  }
});

afterAll(() => {
  expect(deprecations, 'DeprecationWarning emitted during this file').toEqual([]);
});
