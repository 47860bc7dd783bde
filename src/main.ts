#!/usr/bin/env node
/**
 * Process entry: dispatches the CLI command, wires signals, and is the only place that calls
 * process.exit. Exit codes: 0 success, 1 runtime failure, 2 usage error, 3 invalid config.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs, USAGE } from './cli.js';
import { ConfigInvalid, loadConfigFile } from './config/load.js';
import { ConfigError } from './errors.js';
import { startApp, type App } from './app.js';
import { certsInit, certsIssue, certsRevoke, ensureDevCerts, CertsError } from './certs/command.js';

/** The package root (where package.json, config/ and certs-dev/ live), found from this file. */
function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'config', 'portcullis.yaml')))
      return dir;
    dir = dirname(dir);
  }
  return process.cwd();
}

const EXIT = { ok: 0, failure: 1, usage: 2, config: 3 } as const;

function printConfigError(err: unknown): boolean {
  if (err instanceof ConfigInvalid || err instanceof ConfigError) {
    process.stderr.write(
      `portcullis: ${err instanceof ConfigError ? `invalid config: ${err.message}` : err.message}\n`,
    );
    return true;
  }
  return false;
}

async function run(): Promise<number> {
  const cmd = parseArgs(process.argv.slice(2));
  const root = packageRoot();
  const defaultCerts = join(root, 'certs-dev');
  switch (cmd.kind) {
    case 'help':
      process.stdout.write(USAGE);
      return EXIT.ok;
    case 'version': {
      const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string };
      process.stdout.write(`portcullis ${pkg.version}\n`);
      return EXIT.ok;
    }
    case 'usage-error':
      process.stderr.write(`portcullis: ${cmd.message}\n\n${USAGE}`);
      return EXIT.usage;
    case 'certs-init': {
      const r = await certsInit({
        out: resolve(cmd.out ?? defaultCerts),
        hosts: cmd.hosts,
        ...(cmd.clients ? { clients: cmd.clients } : {}),
        force: cmd.force,
      });
      process.stdout.write(`wrote:\n${r.written.map((f) => `  ${f}`).join('\n')}\n`);
      return EXIT.ok;
    }
    case 'certs-issue': {
      const r = await certsIssue({
        out: resolve(cmd.out ?? defaultCerts),
        name: cmd.name,
        force: cmd.force,
        ...(cmd.days !== undefined ? { days: cmd.days } : {}),
      });
      process.stdout.write(`wrote:\n${r.written.map((f) => `  ${f}`).join('\n')}\n`);
      return EXIT.ok;
    }
    case 'certs-revoke': {
      const r = await certsRevoke({ out: resolve(cmd.out ?? defaultCerts), name: cmd.name });
      process.stdout.write(
        `wrote:\n${r.written.map((f) => `  ${f}`).join('\n')}\n(a running gateway picks up the new CRL when it restarts)\n`,
      );
      return EXIT.ok;
    }
    case 'check':
    case 'start': {
      const embedded = cmd.config === undefined;
      const configPath = resolve(cmd.config ?? join(root, 'config', 'portcullis.yaml'));
      if (embedded && cmd.kind === 'start' && (await ensureDevCerts(defaultCerts))) {
        process.stderr.write(`portcullis: created dev certificates in ${defaultCerts} (first run)\n`);
      }
      const config = loadConfigFile(configPath);
      if (cmd.kind === 'check') {
        const routes = config.listeners.reduce((n, l) => n + l.routes.routes.length, 0);
        process.stdout.write(
          `config OK: ${configPath} (${config.listeners.length} listener(s), ${routes} route(s))\n`,
        );
        for (const w of config.warnings) process.stdout.write(`warning: ${w}\n`);
        return EXIT.ok;
      }
      // Binds every listener, then the admin one; a bind failure closes what was bound and throws a
      // ConfigError naming the key path (exit 3): nothing stays half-listening.
      const app = await startApp(config);
      const adminPort = app.adminPort();
      if (adminPort !== undefined) {
        app.logger.info(
          { listener: 'admin', address: config.admin.address.host, port: adminPort },
          'admin listening',
        );
      }
      installSignals(app);
      return new Promise<number>(() => {
        /* runs until a signal */
      });
    }
  }
}

function installSignals(app: App): void {
  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    app.logger.info({ signal }, 'draining');
    // The logger writes asynchronously: exit only once the last lines are out (or after a bound wait).
    const exit = (code: number): void => {
      setTimeout(() => process.exit(code), 2_000);
      app.logger.flush(() => process.exit(code));
    };
    app.close().then(
      () => {
        app.logger.info('stopped');
        exit(EXIT.ok);
      },
      (err: unknown) => {
        app.logger.error({ err }, 'shutdown failed');
        exit(EXIT.failure);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  // Hot reload is not built yet. Without a handler SIGHUP would kill the gateway (Node's default), which
  // an operator who expects a reload would not want: say so instead, and keep serving the old config.
  process.on('SIGHUP', () => app.logger.warn('SIGHUP: reload is not implemented yet; restart the gateway to apply a new config'));
  // A bug must not become a denial of service for every client: log it loudly and keep serving.
  process.on('uncaughtException', (err) => app.logger.fatal({ err }, 'uncaught exception (kept running)'));
  process.on('unhandledRejection', (err) => app.logger.fatal({ err }, 'unhandled rejection (kept running)'));
}

run().then(
  (code) => process.exit(code),
  (err: unknown) => {
    if (printConfigError(err)) process.exit(EXIT.config);
    if (err instanceof CertsError) {
      process.stderr.write(`portcullis: ${err.message}\n`);
      process.exit(EXIT.failure);
    }
    process.stderr.write(`portcullis: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(EXIT.failure);
  },
);
