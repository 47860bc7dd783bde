/**
 * The config loader as the gateway runs it: config/load.ts over the real file system and clock, with each
 * stage's load-time check plugged in (the auth providers' build-and-close, authn/providers.ts). What `start`,
 * `check`, a reload and the tests call.
 *
 * It sits beside the composition root rather than in config/ because the check is a stage's runtime:
 * config/ stays data (schemas and pure compile steps) and never loads jose, caches or fetch.
 */
import { readFileSync } from 'node:fs';
import { checkAuthProvider } from './authn/providers.js';
import type { LoadIo } from './config/context.js';
import { createConfigLoader } from './config/load.js';
import type { RuntimeConfig } from './config/runtime.js';

/** The real reads and clock. */
const SYSTEM_IO: LoadIo = { readFile: (p) => readFileSync(p), now: () => Date.now() };

/**
 * Reads, validates and resolves a config file.
 * @throws ConfigInvalid listing every problem found, each with its key path (and line when it has one).
 */
export function loadConfigFile(file: string, io: LoadIo = SYSTEM_IO): RuntimeConfig {
  return createConfigLoader({ ...io, checkAuthProvider }).loadFile(file);
}

/**
 * Like {@link loadConfigFile} for text already read; relative paths resolve against `source`'s folder.
 * @throws ConfigInvalid
 */
export function loadConfigText(text: string, source: string, io: LoadIo = SYSTEM_IO): RuntimeConfig {
  return createConfigLoader({ ...io, checkAuthProvider }).loadText(text, source);
}
