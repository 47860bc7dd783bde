#!/usr/bin/env node
/**
 * Process entry: dispatches the CLI command, wires signals, and is the only place that calls
 * process.exit. Exit codes: 0 success, 1 runtime failure, 2 usage error, 3 invalid config.
 */
import cluster from 'node:cluster';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs, USAGE } from './cli.js';
import { ConfigInvalid, loadConfigFile } from './config/load.js';
import { startFileWatch } from './config/watch.js';
import { ConfigError } from './errors.js';
import { reloadFromFile, startApp, type App, type ReloadResult } from './app.js';
import { certsInit, certsIssue, certsRevoke, ensureDevCerts, CertsError } from './commands/certs.js';
import { tokenCreate, tokenList, tokenMint, tokenRevoke, TokenCommandError } from './commands/token.js';
import { DEV_KEY_FILES } from './authn/jwks-dev.js';
import { TOKEN_DEFAULTS } from './authn/token-store.js';
import { startAdminServer } from './admin/server.js';
import type { RuntimeConfig } from './config/load.js';
import { createLogger } from './observability/logger.js';
import { resolveWorkerCount } from './cluster/policy.js';
import { ClusterStartFailed, startClusterPrimary, type ClusterPrimary } from './cluster/primary.js';
import { startClusterWorker, workerConfig, type WorkerChannel } from './cluster/worker.js';

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

/**
 * Cluster scheduling of `workers` > 1: round-robin in the primary (SCHED_RR, Node's default on Linux) or
 * accept in the workers (SCHED_NONE). Measured with bench/ (see the README's `workers` row); the operator
 * can still choose with Node's own NODE_CLUSTER_SCHED_POLICY=rr|none, which wins when set.
 */
const CLUSTER_SCHEDULING = cluster.SCHED_RR;

/** The exit code and the one-line message of a failure to start. */
function describeStartFailure(err: unknown): { code: number; message: string } {
  if (err instanceof ConfigInvalid) return { code: EXIT.config, message: err.message };
  if (err instanceof ConfigError) return { code: EXIT.config, message: `invalid config: ${err.message}` };
  return { code: EXIT.failure, message: err instanceof Error ? err.message : String(err) };
}

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
        `wrote:\n${r.written.map((f) => `  ${f}`).join('\n')}\n(a running gateway picks up the new CRL within reload.checkFilesSeconds, 60 s by default, or at once on SIGHUP, and closes the revoked client's open connections)\n`,
      );
      return EXIT.ok;
    }
    case 'token-create': {
      const file = resolve(cmd.file);
      const r = await tokenCreate({
        file,
        name: cmd.name,
        expiresInSeconds: cmd.expiresInSeconds,
        scopes: cmd.scopes,
      });
      // stdout carries the token alone (TOKEN=$(portcullis token create ...)); everything else goes to stderr.
      process.stdout.write(`${r.token}\n`);
      process.stderr.write(
        `portcullis: token "${r.record.name}" added to ${file} (expires ${r.record.expiresAt ?? 'never'}` +
          `${r.record.scopes ? `, scopes: ${r.record.scopes.join(' ')}` : ''}). It is shown only now: store it safely.\n`,
      );
      if (r.record.expiresAt === undefined)
        process.stderr.write(
          'portcullis: warning: this token never expires; revoke it when it is no longer needed\n',
        );
      return EXIT.ok;
    }
    case 'token-list': {
      const list = await tokenList({ file: resolve(cmd.file) });
      if (cmd.json) {
        process.stdout.write(`${JSON.stringify(list, null, 2)}\n`);
        return EXIT.ok;
      }
      const header = ['NAME', 'STATUS', 'CREATED', 'EXPIRES', 'SCOPES', 'SHA256'];
      const rows = [
        header,
        ...list.map((t) => [
          t.name,
          t.status,
          t.createdAt,
          t.expiresAt ?? 'never',
          t.scopes.join(' ') || '-',
          `${t.hashPrefix}...`,
        ]),
      ];
      const widths = header.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
      for (const r of rows)
        process.stdout.write(
          `${r
            .map((c, i) => c.padEnd(widths[i] ?? 0))
            .join('  ')
            .trimEnd()}\n`,
        );
      return EXIT.ok;
    }
    case 'token-revoke': {
      const file = resolve(cmd.file);
      const r = await tokenRevoke({ file, name: cmd.name });
      process.stdout.write(
        `revoked ${r.revoked} token(s) named "${cmd.name}" in ${file} (a running gateway refuses it within a second)\n`,
      );
      return EXIT.ok;
    }
    case 'token-mint': {
      const keyFile = join(resolve(cmd.out ?? defaultCerts), DEV_KEY_FILES.signingKey);
      const jwt = await tokenMint({
        keyFile,
        sub: cmd.sub,
        ...(cmd.scope !== undefined ? { scope: cmd.scope } : {}),
        ttlSeconds: cmd.ttlSeconds,
      });
      if (cmd.ttlSeconds > TOKEN_DEFAULTS.mintTtlWarnSeconds)
        process.stderr.write(
          `portcullis: warning: a jwt provider refuses an exp more than maxExpiresInSeconds ahead (default ${TOKEN_DEFAULTS.mintTtlWarnSeconds} s)\n`,
        );
      process.stdout.write(`${jwt}\n`);
      return EXIT.ok;
    }
    case 'check':
    case 'start': {
      const embedded = cmd.config === undefined;
      const configPath = resolve(cmd.config ?? join(root, 'config', 'portcullis.yaml'));
      if (embedded && cmd.kind === 'start' && cluster.isPrimary && (await ensureDevCerts(defaultCerts))) {
        process.stderr.write(
          `portcullis: created dev certificates and the dev JWT signing key in ${defaultCerts} (first run); ` +
            `\`portcullis token mint --sub alice\` prints a token the default route accepts\n`,
        );
      }
      const config = loadConfigFile(configPath);
      if (cmd.kind === 'check') {
        const routes = config.listeners.reduce(
          (n, l) => n + (l.protocol === 'http' ? l.routes.routes.length : 0),
          0,
        );
        process.stdout.write(
          `config OK: ${configPath} (${config.listeners.length} listener(s), ${routes} route(s))\n`,
        );
        for (const w of config.warnings) process.stdout.write(`warning: ${w}\n`);
        return EXIT.ok;
      }
      // `workers` > 1: this process is the cluster primary (or one of its workers, forked with the same
      // argv: each loads the same config file).
      if (cluster.isWorker) return runClusterWorker(config, configPath);
      const count = resolveWorkerCount(config.workers, { availableParallelism });
      if (count > 1) return runClusterPrimary(config, configPath, count);
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
      const requestReload = installSignals(app, () => reloadFromFile(app, configPath));
      const seconds = config.reload.checkFilesSeconds;
      if (seconds > 0)
        startFileWatch(
          seconds * 1000,
          () => app.config.files,
          async (change) => {
            await requestReload({ trigger: 'files changed', files: change.changed });
            return app.config.files;
          },
          { onError: (err) => app.logger.error({ err }, 'file watch failed (the next look goes on)') },
        );
      return new Promise<number>(() => {
        /* runs until a signal */
      });
    }
  }
}

/** The IPC channel of a forked cluster worker (`process.send` and its `message` events). */
const processChannel: WorkerChannel = {
  send: (message) =>
    new Promise((resolve, reject) => {
      if (process.send === undefined) {
        reject(new Error('no IPC channel to the cluster primary'));
        return;
      }
      process.send(message, undefined, {}, (err: Error | null) => (err ? reject(err) : resolve()));
    }),
  onMessage: (listener) => {
    process.on('message', listener);
  },
};

/**
 * A cluster worker: serves the data listeners with the primary's ticket keys and no admin listener, and
 * drains on SIGTERM like a single process. A failure to start is told to the primary (which reports it
 * once for the whole cluster) instead of stderr, and ends this worker with its exit code.
 */
async function runClusterWorker(config: RuntimeConfig, configPath: string): Promise<number> {
  let app: App;
  try {
    app = await startClusterWorker(config, { channel: processChannel, startApp, createLogger });
  } catch (err) {
    const failure = describeStartFailure(err);
    await processChannel.send({ type: 'portcullis:failed', ...failure }).catch(() => undefined);
    return failure.code;
  }
  // The primary forwards SIGHUP: this worker reloads itself, as a single process does.
  installSignals(app, () => reloadFromFile(app, configPath, { prepare: workerConfig }));
  return new Promise<number>(() => {
    /* runs until a signal, or until the primary goes away (node:cluster then ends this worker) */
  });
}

/**
 * The primary of `workers` > 1: forks the workers, serves the admin listener for all of them, and turns
 * SIGTERM / SIGINT into a drain of every worker (exit 0 once they have all exited), SIGHUP into a SIGHUP
 * to every worker. A worker that fails to start makes the whole start fail with its exit code.
 */
async function runClusterPrimary(config: RuntimeConfig, configPath: string, count: number): Promise<number> {
  const logger = createLogger(config.log.level).child({ role: 'primary' });
  for (const w of config.warnings) logger.warn(w);
  if (process.env.NODE_CLUSTER_SCHED_POLICY === undefined) cluster.schedulingPolicy = CLUSTER_SCHEDULING;
  const scheduling = cluster.schedulingPolicy === cluster.SCHED_RR ? 'round-robin' : 'workers accept';
  let primary: ClusterPrimary;
  try {
    primary = await startClusterPrimary(config, count, {
      logger,
      fork: () => cluster.fork(),
      // Called exactly as app.ts calls it for a single process.
      startAdmin: (c, deps) => startAdminServer(c.admin, deps),
      randomBytes,
    });
  } catch (err) {
    if (err instanceof ClusterStartFailed) {
      process.stderr.write(`portcullis: ${err.message}\n`);
      return err.exitCode;
    }
    throw err;
  }
  logger.info({ workers: count, scheduling }, 'cluster started');
  const adminPort = primary.adminPort();
  if (adminPort !== undefined)
    logger.info(
      { listener: 'admin', address: config.admin.address.host, port: adminPort },
      'admin listening',
    );
  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'draining workers');
    void primary.stop();
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  /** Passes a reload to every worker (each reloads itself, as a single process does). */
  const forwardReload = (why: Record<string, unknown>): boolean => {
    if (stopping) {
      logger.info(why, 'reload skipped: the workers are draining');
      return false;
    }
    logger.info(why, 'SIGHUP: forwarded to every worker');
    primary.forward('SIGHUP');
    return true;
  };
  process.on('SIGHUP', () => forwardReload({ signal: 'SIGHUP' }));
  // The primary watches the files for the whole cluster. It cannot see the workers' reloads: what it watches
  // next is the file set of its own fresh load (or, when that fails, the contents it saw).
  let watched = config.files;
  if (config.reload.checkFilesSeconds > 0)
    startFileWatch(
      config.reload.checkFilesSeconds * 1000,
      () => watched,
      (change) => {
        if (!forwardReload({ trigger: 'files changed', files: change.changed }))
          return Promise.resolve(undefined);
        try {
          watched = loadConfigFile(configPath).files;
          return Promise.resolve(watched);
        } catch {
          return Promise.resolve(undefined);
        }
      },
      { onError: (err) => logger.error({ err }, 'file watch failed (the next look goes on)') },
    );
  process.on('uncaughtException', (err) =>
    logger.fatal({ err }, 'uncaught exception in the cluster primary (kept running)'),
  );
  process.on('unhandledRejection', (err) =>
    logger.fatal({ err }, 'unhandled rejection in the cluster primary (kept running)'),
  );
  const code = await primary.done;
  logger.info({ code }, 'stopped');
  // The logger writes asynchronously: exit only once the last lines are out (or after a bound wait).
  await new Promise<void>((resolve) => {
    setTimeout(resolve, 2_000).unref();
    logger.flush(() => resolve());
  });
  return code;
}

function installSignals(
  app: App,
  reload: () => Promise<ReloadResult>,
): (why: Record<string, unknown>) => Promise<void> {
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
  // SIGHUP: load the config file again and swap it in (app.ts reload); an invalid one is refused and the
  // running config keeps serving. One reload at a time: SIGHUPs during a reload are coalesced into one
  // more reload after it, which reads the file as it is then.
  let running: Promise<void> | undefined;
  let again = false;
  const requestReload = (why: Record<string, unknown>): Promise<void> => {
    // A drain is under way: the config it would load serves no new connection (threat model #131).
    if (stopping) {
      app.logger.info(why, 'reload skipped: the gateway is draining');
      return Promise.resolve();
    }
    if (running !== undefined) {
      again = true;
      app.logger.info(why, 'reload already running: one more follows it');
      return running;
    }
    const loop = async (): Promise<void> => {
      do {
        again = false;
        app.logger.info(why, 'reloading config');
        await reload();
      } while (again && !stopping);
    };
    running = loop()
      .catch((err: unknown) =>
        app.logger.error({ err }, 'config reload failed (the running config keeps serving)'),
      )
      .finally(() => {
        running = undefined;
      });
    return running;
  };
  process.on('SIGHUP', () => void requestReload({ signal: 'SIGHUP' }));
  // A bug must not become a denial of service for every client: log it loudly and keep serving.
  process.on('uncaughtException', (err) => app.logger.fatal({ err }, 'uncaught exception (kept running)'));
  process.on('unhandledRejection', (err) => app.logger.fatal({ err }, 'unhandled rejection (kept running)'));
  return requestReload;
}

run().then(
  (code) => process.exit(code),
  (err: unknown) => {
    if (printConfigError(err)) process.exit(EXIT.config);
    if (err instanceof CertsError || err instanceof TokenCommandError) {
      process.stderr.write(`portcullis: ${err.message}\n`);
      process.exit(EXIT.failure);
    }
    process.stderr.write(`portcullis: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(EXIT.failure);
  },
);
