/**
 * Starts the real gateway in-process for integration tests: writes a YAML config into a temp folder
 * next to a per-run PKI, loads it through the real loader, starts the real app on 127.0.0.1:0, and
 * captures its JSON log lines so tests can assert on reason codes.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { stringify } from 'yaml';
import { reloadFromFile, startApp, type App, type ReloadResult } from '../../src/app.js';
import type { Clock } from '../../src/clock.js';
import { loadConfigFile } from '../../src/load-config.js';
import { createLogger } from '../../src/observability/logger.js';
import { writePki, type TestPkiPaths } from './pki.js';

export interface TestGateway {
  readonly app: App;
  readonly pki: TestPkiPaths;
  readonly dir: string;
  /** Port of the first listener (or of the named one). */
  port(name?: string): number;
  /** Parsed JSON log lines so far. */
  logs(): Record<string, unknown>[];
  /** Current value of a metric series from the app's registry (0 when absent). */
  metric(name: string, labels?: Record<string, string>): Promise<number>;
  close(): Promise<void>;
}

/** A TLS listener block using the test PKI, client certificate required, with overrides. */
export function tlsListener(pki: TestPkiPaths, overrides: Record<string, unknown> = {}): Record<string, unknown> {
  const { tls, ...rest } = overrides as { tls?: Record<string, unknown> };
  return {
    name: 'main',
    listen: '127.0.0.1:0',
    tls: { cert: pki.server.cert, key: pki.server.key, clientCertificate: 'require', clientCa: pki.ca, crl: pki.crl, ...tls },
    routes: [{ id: 'echo', match: { pathPrefix: '/' }, upstream: 'builtin:echo' }],
    ...rest,
  };
}

/**
 * A decision listener block (`protocol: decision`) for nginx on 127.0.0.1:0 reading forwarded client
 * certificates from `X-SSL-Client-Cert` against the test CA and CRL, with `routes` and overrides.
 */
export function nginxDecisionListener(
  pki: TestPkiPaths,
  routes: readonly Record<string, unknown>[],
  overrides: Record<string, unknown> = {},
): Record<string, unknown> {
  return {
    name: 'nginx-decisions',
    protocol: 'decision',
    listen: '127.0.0.1:0',
    from: 'nginx',
    clientCertificateHeader: 'X-SSL-Client-Cert',
    clientCa: pki.ca,
    crl: pki.crl,
    routes,
    ...overrides,
  };
}

/**
 * Starts a gateway. `build` gets the PKI paths and returns the config object (written as YAML);
 * `admin.enabled` defaults to false so parallel tests do not fight over port 9090. `opts.clock` replaces the
 * system clock (a test that steps the wall clock).
 */
export async function startGateway(
  build: (pki: TestPkiPaths) => Record<string, unknown>,
  opts: { readonly clock?: Clock } = {},
): Promise<TestGateway> {
  const dir = await mkdtemp(join(tmpdir(), 'portcullis-it-'));
  const pki = await writePki(join(dir, 'pki'));
  const config = { admin: { enabled: false, listen: '127.0.0.1:0' }, ...build(pki) };
  const file = join(dir, 'portcullis.yaml');
  await writeFile(file, stringify(config));
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(...chunk.toString('utf8').split('\n').filter((l) => l !== ''));
      cb();
    },
  });
  const logger = createLogger('debug', sink);
  let app: App;
  try {
    app = await startApp(loadConfigFile(file), { logger, ...(opts.clock !== undefined ? { clock: opts.clock } : {}) });
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
  return {
    app,
    pki,
    dir,
    port: (name?: string) => app.port(name ?? (app.config.listeners[0]?.name as string)),
    logs: () => lines.map((l) => JSON.parse(l) as Record<string, unknown>),
    async metric(name, labels = {}) {
      const m = app.registry.getSingleMetric(name);
      if (!m) return 0;
      const data = await m.get();
      let total = 0;
      for (const v of data.values) {
        const ls = v.labels as Record<string, string | number>;
        if (Object.entries(labels).every(([k, want]) => String(ls[k]) === want)) total += v.value;
      }
      return total;
    },
    async close() {
      await app.close(0);
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/**
 * Rewrites the gateway's config file and reloads it the way SIGHUP does (app.ts `reloadFromFile`). `next`
 * builds the config object as `startGateway`'s `build` does (admin disabled unless it says otherwise), or is
 * raw text written as is (garbage, unknown keys).
 */
export async function reloadGateway(
  gw: TestGateway,
  next: string | ((pki: TestPkiPaths) => Record<string, unknown>),
): Promise<ReloadResult> {
  const file = join(gw.dir, 'portcullis.yaml');
  const text =
    typeof next === 'string' ? next : stringify({ admin: { enabled: false, listen: '127.0.0.1:0' }, ...next(gw.pki) });
  await writeFile(file, text);
  return reloadFromFile(gw.app, file);
}
