/**
 * The composition of a config: every section compiled by its own step (listeners, admin, authentication,
 * telemetry headers) into one {@link RuntimeConfig}, and the rules that span sections.
 */
import { dirname } from 'node:path';
import { ConfigError } from '../errors.js';
import { compileTelemetryHeaders } from '../mutate/telemetry.js';
import { resolveAdmin } from './admin.js';
import { resolveAuthProviders } from './auth.js';
import type { CompileContext, LoadDeps } from './context.js';
import { DEFAULTS } from './defaults.js';
import { resolveListener } from './listeners.js';
import { unixSocketPath } from './addresses.js';
import type { RuntimeConfig, RuntimeListener } from './runtime.js';
import type { ConfigFile } from './schema.js';
import { resolveStore } from './store.js';

/**
 * A schema-valid config file → the runtime config (without `files`, which the loader adds). Each section is
 * compiled by its step and each stage's own compile function; cross-section rules (unique listener names,
 * no two listeners on one address, the admin address free) are checked here. Every problem is pushed to
 * `errors`; undefined when there is any.
 */
export function compileConfig(
  file: ConfigFile,
  source: string,
  deps: LoadDeps,
  errors: ConfigError[],
): Omit<RuntimeConfig, 'files'> | undefined {
  const warnings: string[] = [];
  const baseDir = dirname(source);
  const authProviders = resolveAuthProviders(file.authProviders, baseDir, deps, errors);
  const ctx: CompileContext = {
    baseDir,
    deps,
    errors,
    warnings,
    requireEncryption: file.requireEncryption,
    providerTypes: new Map(Object.entries(file.authProviders).map(([name, p]) => [name, p.type])),
    usedProviders: new Set(),
    upstreamCerts: [],
  };
  const names = new Set<string>();
  const binds = new Map<string, string>();
  const seenRouteIds = new Set<string>();
  const listeners: RuntimeListener[] = [];
  file.listeners.forEach((l, i) => {
    if (names.has(l.name))
      errors.push(new ConfigError(`listeners[${i}].name`, l.name, 'a listener name used only once'));
    names.add(l.name);
    const r = resolveListener(ctx, l, i, seenRouteIds);
    if (!r) return;
    const bindKey = `${r.address.host}:${r.address.port}`;
    const other = binds.get(bindKey);
    // Port 0 picks a free port each time; a Unix socket (port 0 too) is one path.
    if ((r.address.port !== 0 || unixSocketPath(r.address) !== undefined) && other !== undefined) {
      errors.push(
        new ConfigError(`listeners[${i}].listen`, l.listen, `an address not already used by ${other}`),
      );
    }
    binds.set(bindKey, `listeners[${i}]`);
    // A decision listener is plaintext on loopback by its own rule (listeners.ts): nothing to warn about.
    if (!r.tls && r.protocol !== 'decision')
      warnings.push(
        `listener "${l.name}" serves PLAINTEXT on ${l.listen}: requireEncryption is false and plaintext: true is set`,
      );
    if (r.acl?.entries.length === 0)
      warnings.push(`listener "${l.name}" has an empty allowClients: it denies every client`);
    listeners.push(r);
  });
  const store = resolveStore(ctx, file.store);
  // Sessions and pre-login records in the memory store live in each process: a login made on one worker would
  // be unknown to the next request's worker. A shared store (Redis) lifts the rule.
  const loginProvider = Object.entries(file.authProviders).find(([, p]) => p.type === 'oidc')?.[0];
  if (loginProvider !== undefined && file.workers !== 1 && store?.type !== 'redis')
    errors.push(
      new ConfigError(
        'workers',
        file.workers,
        `1 while authProviders.${loginProvider} (type oidc) keeps its sessions in this process's memory (or a store with type: redis, shared by every worker)`,
      ),
    );
  for (const name of Object.keys(file.authProviders)) {
    if (!ctx.usedProviders.has(name))
      warnings.push(`authProviders.${name} is not used by any route (no route lists it in auth.providers)`);
  }
  // The operator's list is added to the defaults (DESIGN.md: "operators may extend it"); an error names
  // `telemetry.headers[i]` of the operator's list.
  const telemetryMatcher = compileTelemetryHeaders(
    [...DEFAULTS.telemetry.headers, ...file.telemetry.headers],
    'telemetry.headers',
    errors,
    DEFAULTS.telemetry.headers.length,
  );
  const admin = resolveAdmin(ctx, file.admin);
  const adminAddress = admin?.address;
  const adminClash =
    adminAddress && adminAddress.port !== 0
      ? binds.get(`${adminAddress.host}:${adminAddress.port}`)
      : undefined;
  if (file.admin.enabled && adminClash !== undefined) {
    errors.push(
      new ConfigError('admin.listen', file.admin.listen, `an address not already used by ${adminClash}`),
    );
  }
  if (admin?.tls !== undefined) {
    // The admin certificates' expiry gauges carry listener="admin" (set even where this process does not
    // serve admin: cluster workers): a data listener of that name would share (and overwrite) their series.
    file.listeners.forEach((l, i) => {
      if (l.name === 'admin')
        errors.push(
          new ConfigError(
            `listeners[${i}].name`,
            l.name,
            'a name other than "admin" while admin.tls is set (the admin certificates\' metrics use listener="admin")',
          ),
        );
    });
  }
  if (errors.length > 0 || !admin || !store) return undefined;
  return {
    source,
    requireEncryption: file.requireEncryption,
    admin,
    log: file.log,
    workers: file.workers,
    timeouts: file.timeouts,
    http2: file.http2,
    reload: file.reload,
    telemetry: {
      optOut: file.telemetry.optOut,
      honorClientSignals: file.telemetry.honorClientSignals,
      matcher: telemetryMatcher,
    },
    listeners,
    authProviders,
    store,
    warnings,
  };
}
