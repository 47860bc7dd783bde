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
import { commandHelp, parseArgs, runtimeProblem, usageLine, type Command } from './cli.js';
import { TOKEN_DEFAULTS } from './commands/defaults.js';
import { ConfigError } from './errors.js';
import type { App, ReloadResult } from './app.js';
import type { DevHome } from './commands/dev-home.js';
import type { RuntimeConfig } from './config/runtime.js';
import type { ClusterPrimary } from './cluster/primary.js';
import type { WorkerChannel } from './cluster/worker.js';
import { LOGIN_ROUTE_ID } from './endpoints/login-paths.js';

/**
 * The modules of `start` and `check`, loaded only for them: `probe` (run every few seconds by a health
 * check), `--version`, `schema`, `certs` and `token` do not pay for the gateway's code.
 */
async function loadRuntime() {
  const [load, watch, app, logger, policy, primary, worker, admin, certs, check] = await Promise.all([
    import('./load-config.js'),
    import('./config/watch.js'),
    import('./app.js'),
    import('./observability/logger.js'),
    import('./cluster/policy.js'),
    import('./cluster/primary.js'),
    import('./cluster/worker.js'),
    import('./admin/server.js'),
    import('./commands/certs.js'),
    import('./commands/check.js'),
  ]);
  return {
    loadConfigFile: load.loadConfigFile,
    startFileWatch: watch.startFileWatch,
    startApp: app.startApp,
    reloadFromFile: app.reloadFromFile,
    createLogger: logger.createLogger,
    resolveWorkerCount: policy.resolveWorkerCount,
    ClusterStartFailed: primary.ClusterStartFailed,
    startClusterPrimary: primary.startClusterPrimary,
    startClusterWorker: worker.startClusterWorker,
    workerConfig: worker.workerConfig,
    startAdminServer: admin.startAdminServer,
    ensureDevCerts: certs.ensureDevCerts,
    effectiveConfigYaml: check.effectiveConfigYaml,
  };
}
type Runtime = Awaited<ReturnType<typeof loadRuntime>>;

/** The package root (where package.json and config/ live), found from this file. */
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
  if (isConfigInvalid(err)) return { code: EXIT.config, message: err.message };
  if (err instanceof ConfigError) return { code: EXIT.config, message: `invalid config: ${err.message}` };
  return { code: EXIT.failure, message: err instanceof Error ? err.message : String(err) };
}

/** config/load.ts's ConfigInvalid (every problem of a config), told by its name: that module loads lazily. */
function isConfigInvalid(err: unknown): err is Error {
  return err instanceof Error && err.name === 'ConfigInvalid';
}

function printConfigError(err: unknown): boolean {
  if (isConfigInvalid(err) || err instanceof ConfigError) {
    process.stderr.write(
      `portcullis: ${err instanceof ConfigError ? `invalid config: ${err.message}` : err.message}\n`,
    );
    return true;
  }
  return false;
}

/** `wrote:` and the files, one per line. */
function printWritten(written: readonly string[]): void {
  process.stdout.write(`wrote:\n${written.map((f) => `  ${f}`).join('\n')}\n`);
}

async function run(): Promise<number> {
  const cmd = parseArgs(process.argv.slice(2));
  // Help and the version print on any Node; everything else needs the runtime `engines` names.
  const tooOld = cmd.kind === 'help' || cmd.kind === 'version' ? undefined : runtimeProblem(process.version);
  if (tooOld !== undefined) {
    process.stderr.write(`portcullis: ${tooOld}\n`);
    return EXIT.failure;
  }
  const root = packageRoot();
  // The defaults' home is worked out only when a command needs one (an installed package without HOME
  // must still run `--version` or a command given --config / --out).
  let home: DevHome | undefined;
  const defaults = async (): Promise<DevHome> => {
    if (home !== undefined) return home;
    const { devHome, isInstalledPackage } = await import('./commands/dev-home.js');
    home = devHome(root, await isInstalledPackage(root), process.env);
    return home;
  };
  const outDir = async (out: string | undefined): Promise<string> => resolve(out ?? (await defaults()).certs);
  switch (cmd.kind) {
    case 'help':
      process.stdout.write(commandHelp(cmd.topic));
      return EXIT.ok;
    case 'version': {
      const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string };
      process.stdout.write(`portcullis ${pkg.version}\n`);
      return EXIT.ok;
    }
    case 'usage-error':
      process.stderr.write(`portcullis: ${cmd.message}\n\n${usageLine(cmd.topic)}`);
      return EXIT.usage;
    case 'schema': {
      const { configJsonSchemaText } = await import('./commands/schema.js');
      process.stdout.write(configJsonSchemaText());
      return EXIT.ok;
    }
    case 'probe': {
      const { probe } = await import('./commands/probe.js');
      const configFile = resolve(cmd.config ?? (await defaults()).config);
      const r = await probe({
        configFile,
        path: cmd.path,
        timeoutMs: cmd.timeoutMs,
        cert: cmd.cert,
        key: cmd.key,
        ca: cmd.ca,
        servername: cmd.servername,
      });
      if (r.ok) process.stdout.write(`portcullis probe: ${r.message}\n`);
      else process.stderr.write(`portcullis probe: ${r.message}\n`);
      return r.ok ? EXIT.ok : EXIT.failure;
    }
    case 'certs-init': {
      const { certsInit } = await import('./commands/certs.js');
      const r = await certsInit({
        out: await outDir(cmd.out),
        hosts: cmd.hosts,
        ...(cmd.clients ? { clients: cmd.clients } : {}),
        ...(cmd.ou !== undefined ? { ou: cmd.ou } : {}),
        cluster: cmd.cluster,
        force: cmd.force,
      });
      printWritten(r.written);
      return EXIT.ok;
    }
    case 'certs-issue': {
      const { certsIssue } = await import('./commands/certs.js');
      const r = await certsIssue({
        out: await outDir(cmd.out),
        name: cmd.name,
        force: cmd.force,
        ...(cmd.days !== undefined ? { days: cmd.days } : {}),
        ...(cmd.ou !== undefined ? { ou: cmd.ou } : {}),
        ...(cmd.p12 !== undefined
          ? {
              p12: {
                passphrase:
                  cmd.p12.passphraseFile === undefined
                    ? undefined
                    : readFileSync(cmd.p12.passphraseFile, 'utf8').split(/\r?\n/)[0],
              },
            }
          : {}),
      });
      printWritten(r.written);
      return EXIT.ok;
    }
    case 'certs-revoke': {
      const { certsRevoke } = await import('./commands/certs.js');
      const r = await certsRevoke({ out: await outDir(cmd.out), name: cmd.name });
      process.stdout.write(
        `wrote:\n${r.written.map((f) => `  ${f}`).join('\n')}\n(a running gateway picks up the new CRL within reload.checkFilesSeconds, 60 s by default, or at once on SIGHUP, and closes the revoked client's open connections)\n`,
      );
      return EXIT.ok;
    }
    case 'token-create': {
      const { tokenCreate } = await import('./commands/token.js');
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
      const { formatTokenTable, tokenList } = await import('./commands/token.js');
      const list = await tokenList({ file: resolve(cmd.file) });
      process.stdout.write(cmd.json ? `${JSON.stringify(list, null, 2)}\n` : formatTokenTable(list));
      return EXIT.ok;
    }
    case 'token-revoke': {
      const { tokenRevoke } = await import('./commands/token.js');
      const file = resolve(cmd.file);
      const r = await tokenRevoke({ file, name: cmd.name });
      process.stdout.write(
        `revoked ${r.revoked} token(s) named "${cmd.name}" in ${file} (a running gateway refuses it within a second)\n`,
      );
      return EXIT.ok;
    }
    case 'token-mint': {
      const [{ tokenMint }, { DEV_KEY_FILES }] = await Promise.all([
        import('./commands/token.js'),
        import('./authn/jwks-dev.js'),
      ]);
      const keyFile = join(await outDir(cmd.out), DEV_KEY_FILES.signingKey);
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
    case 'start':
      return startOrCheck(cmd, defaults);
  }
}

/**
 * `check` and `start`. Without --config, the default config ({@link devHome}): on the first `start`, an
 * installed package copies the embedded config to the user's directory, and the dev certificates are created
 * beside it (a clone's `certs-dev/`).
 */
async function startOrCheck(
  cmd: Extract<Command, { kind: 'check' | 'start' }>,
  defaults: () => Promise<DevHome>,
): Promise<number> {
  const rt = await loadRuntime();
  let configPath: string;
  if (cmd.config === undefined) {
    const home = await defaults();
    configPath = home.config;
    if (cmd.kind === 'start' && cluster.isPrimary) {
      const { ensureUserConfig } = await import('./commands/dev-home.js');
      if (await ensureUserConfig(home))
        process.stderr.write(`portcullis: copied the embedded default config to ${home.config} (first run)\n`);
      if (await rt.ensureDevCerts(home.certs))
        process.stderr.write(
          `portcullis: created dev certificates and the dev JWT signing key in ${home.certs} (first run); ` +
            `\`portcullis token mint --sub alice\` prints a token the default route accepts\n`,
        );
    } else if (home.installed && !existsSync(configPath)) {
      configPath = home.embedded;
    }
  } else {
    configPath = resolve(cmd.config);
  }
  const config = rt.loadConfigFile(configPath);
  if (cmd.kind === 'check') {
    // The operator's routes: not the gateway's own login paths (endpoints/login-paths.ts).
    const routes = config.listeners.reduce(
      (n, l) => n + (l.protocol !== 'tcp' ? l.routes.routes.filter((r) => r.id !== LOGIN_ROUTE_ID).length : 0),
      0,
    );
    const ok = `config OK: ${configPath} (${config.listeners.length} listener(s), ${routes} route(s))`;
    const warnings = config.warnings.map((w) => `warning: ${w}`);
    if (cmd.print) {
      // stdout is one YAML document: the verdict and the warnings ride along as comments.
      process.stdout.write(rt.effectiveConfigYaml(config, readFileSync(config.source), [ok, ...warnings]));
      return EXIT.ok;
    }
    process.stdout.write(`${ok}\n`);
    for (const w of warnings) process.stdout.write(`${w}\n`);
    return EXIT.ok;
  }
  // `workers` > 1: this process is the cluster primary (or one of its workers, forked with the same
  // argv: each loads the same config file).
  if (cluster.isWorker) return runClusterWorker(rt, config, configPath);
  const count = rt.resolveWorkerCount(config.workers, { availableParallelism });
  if (count > 1) return runClusterPrimary(rt, config, configPath, count);
  // Binds every listener, then the admin one; a bind failure closes what was bound and throws a
  // ConfigError naming the key path (exit 3): nothing stays half-listening.
  const app = await rt.startApp(config);
  const adminPort = app.adminPort();
  if (adminPort !== undefined) {
    app.logger.info(
      { listener: 'admin', address: config.admin.address.host, port: adminPort },
      'admin listening',
    );
  }
  const requestReload = installSignals(app, () => rt.reloadFromFile(app, configPath));
  const seconds = config.reload.checkFilesSeconds;
  if (seconds > 0)
    rt.startFileWatch(
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
async function runClusterWorker(rt: Runtime, config: RuntimeConfig, configPath: string): Promise<number> {
  let app: App;
  try {
    app = await rt.startClusterWorker(config, {
      channel: processChannel,
      startApp: rt.startApp,
      createLogger: rt.createLogger,
    });
  } catch (err) {
    const failure = describeStartFailure(err);
    await processChannel.send({ type: 'portcullis:failed', ...failure }).catch(() => undefined);
    return failure.code;
  }
  // The primary forwards SIGHUP: this worker reloads itself, as a single process does.
  installSignals(app, () => rt.reloadFromFile(app, configPath, { prepare: rt.workerConfig }));
  return new Promise<number>(() => {
    /* runs until a signal, or until the primary goes away (node:cluster then ends this worker) */
  });
}

/**
 * The primary of `workers` > 1: forks the workers, serves the admin listener for all of them, and turns
 * SIGTERM / SIGINT into a drain of every worker (exit 0 once they have all exited), SIGHUP into a SIGHUP
 * to every worker. A worker that fails to start makes the whole start fail with its exit code.
 */
async function runClusterPrimary(
  rt: Runtime,
  config: RuntimeConfig,
  configPath: string,
  count: number,
): Promise<number> {
  const logger = rt.createLogger(config.log.level).child({ role: 'primary' });
  for (const w of config.warnings) logger.warn(w);
  if (process.env.NODE_CLUSTER_SCHED_POLICY === undefined) cluster.schedulingPolicy = CLUSTER_SCHEDULING;
  const scheduling = cluster.schedulingPolicy === cluster.SCHED_RR ? 'round-robin' : 'workers accept';
  let primary: ClusterPrimary;
  try {
    primary = await rt.startClusterPrimary(config, count, {
      logger,
      fork: () => cluster.fork(),
      // Called exactly as app.ts calls it for a single process.
      startAdmin: (c, deps) => rt.startAdminServer(c.admin, deps),
      randomBytes,
    });
  } catch (err) {
    if (err instanceof rt.ClusterStartFailed) {
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
    rt.startFileWatch(
      config.reload.checkFilesSeconds * 1000,
      () => watched,
      (change) => {
        if (!forwardReload({ trigger: 'files changed', files: change.changed }))
          return Promise.resolve(undefined);
        try {
          watched = rt.loadConfigFile(configPath).files;
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
    process.stderr.write(`portcullis: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(EXIT.failure);
  },
);
