/**
 * What compiling one config carries from step to step: where relative paths start, the injected reads and
 * clock, and the errors and warnings found so far. Every step adds to `errors` and goes on, so that one run
 * reports every problem of the file, not only the first.
 */
import type { AuthProviderConfig } from '../authn/provider-config.js';
import type { ConfigError } from '../errors.js';
import type { CertInfo } from './runtime.js';

/** Injected side effects: file reads and the clock (for expiry checks). */
export interface LoadIo {
  readonly readFile: (path: string) => Buffer;
  readonly now: () => number;
}

/**
 * {@link LoadIo} plus the stages' load-time checks that need their runtime, injected so that config/ holds
 * data only and never loads a stage's runtime.
 */
export interface LoadDeps extends LoadIo {
  /**
   * Builds the auth provider `name` once from its resolved config (file paths absolute) and closes it again,
   * reading through `io`: a file the provider cannot use is a config error at load.
   * @throws ConfigError naming `authProviders.<name>.<key>`; anything else is reported as an unusable provider.
   */
  readonly checkAuthProvider: (name: string, config: AuthProviderConfig, io: LoadIo) => void;
}

/** What reading the files a config names needs: their folder, the reads, and where a failure is reported. */
export interface FileContext {
  /** The config file's folder: relative paths resolve against it. */
  readonly baseDir: string;
  readonly deps: LoadIo;
  readonly errors: ConfigError[];
}

/** {@link FileContext} plus what the listeners, routes and admin steps share. */
export interface CompileContext extends FileContext {
  readonly warnings: string[];
  readonly requireEncryption: boolean;
  /** `authProviders` name → type, for the routes' `auth.providers`. */
  readonly providerTypes: ReadonlyMap<string, AuthProviderConfig['type']>;
  /** Providers some route references (an unused one is worth a warning). */
  readonly usedProviders: Set<string>;
  /** Upstream TLS certificates of the listener being resolved (for expiry metrics). */
  readonly upstreamCerts: CertInfo[];
}
