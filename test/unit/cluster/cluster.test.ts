/**
 * The cluster units in memory: worker-count resolution, the restart budget (fake monotonic clock), the worker's
 * config (admin disabled, nothing mutated), the worker's handshake with its primary over a fake channel,
 * the IPC message guards, and the metric aggregation rules (sums, and the gauges that must not be summed).
 */
import { Counter, Gauge, Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import type { App, AppDeps } from '../../../src/app.js';
import { aggregateMetrics } from '../../../src/cluster/metrics.js';
import { parseToPrimary, parseToWorker, type ToPrimary } from '../../../src/cluster/messages.js';
import { createRestartBudget, resolveWorkerCount, RESTART_DEFAULTS } from '../../../src/cluster/policy.js';
import { startClusterWorker, TICKET_KEYS_BYTES, workerConfig } from '../../../src/cluster/worker.js';
import { loadConfigText } from '../../../src/load-config.js';
import type { RuntimeConfig } from '../../../src/config/runtime.js';
import { createLogger } from '../../../src/observability/logger.js';
import { createMetrics, createRejectedConnectionsCounter } from '../../../src/observability/metrics.js';
import { adminRefusalReporter } from '../../../src/admin/server.js';

describe('resolveWorkerCount', () => {
  it.each([
    [1, 8, 1],
    [3, 8, 3],
    ['auto', 8, 8],
    ['auto', 1, 1],
    ['auto', 0, 1],
    ['auto', Number.NaN, 1],
  ] as const)('workers: %s on %s cores → %s', (workers, cores, expected) => {
    expect(resolveWorkerCount(workers, { availableParallelism: () => cores })).toBe(expected);
  });
});

describe('createRestartBudget', () => {
  it('allows 5 restarts a minute with doubling delays, refuses the 6th, and allows again once the window slid', () => {
    let now = 1_000_000;
    const budget = createRestartBudget(RESTART_DEFAULTS, { clock: { hrtime: () => BigInt(now) * 1_000_000n } });
    const delays: number[] = [];
    for (let i = 0; i < 5; i++) {
      const d = budget.next();
      expect(d.restart).toBe(true);
      if (d.restart) delays.push(d.delayMs);
      now += 1_000;
    }
    expect(delays).toEqual([100, 200, 400, 800, 1_600]);
    expect(budget.next()).toEqual({ restart: false, restartsInWindow: 5 });
    // The first restart was at t0; 60 s after it, one slot is free again.
    now = 1_000_000 + 60_000;
    expect(budget.next()).toEqual({ restart: true, delayMs: 1_600 });
    expect(budget.next()).toEqual({ restart: false, restartsInWindow: 5 });
  });

  it('caps the delay', () => {
    const budget = createRestartBudget(
      { maxRestarts: 20, windowMs: 60_000, baseDelayMs: 100, maxDelayMs: 5_000 },
      { clock: { hrtime: () => 0n } },
    );
    const delays: number[] = [];
    for (let i = 0; i < 10; i++) {
      const d = budget.next();
      if (d.restart) delays.push(d.delayMs);
    }
    expect(Math.max(...delays)).toBe(5_000);
    expect(delays).toHaveLength(10);
  });
});

const CONFIG = `
workers: 2
requireEncryption: false
admin: { listen: 127.0.0.1:0 }
listeners:
  - name: plain
    listen: 127.0.0.1:0
    plaintext: true
    routes: [{ id: r, match: {}, upstream: builtin:echo }]
`;

function config(): RuntimeConfig {
  try {
    return loadConfigText(CONFIG, '/tmp/portcullis.yaml');
  } catch (err) {
    throw new Error(`test config rejected: ${String(err)}`);
  }
}

describe('workerConfig', () => {
  it('disables admin in a new frozen object and leaves the loaded config untouched', () => {
    const c = config();
    expect(c.admin.enabled).toBe(true);
    const w = workerConfig(c);
    expect(w.admin.enabled).toBe(false);
    expect(w.admin.address).toEqual(c.admin.address);
    expect(w.listeners).toBe(c.listeners);
    expect(Object.isFrozen(w)).toBe(true);
    expect(Object.isFrozen(w.admin)).toBe(true);
    expect(c.admin.enabled).toBe(true);
  });
});

/** A fake IPC channel: records what the worker sent, and delivers messages from the "primary". */
function fakeChannel(): {
  sent: ToPrimary[];
  deliver(m: unknown): void;
  channel: { send(m: ToPrimary): Promise<void>; onMessage(l: (m: unknown) => void): void };
} {
  const sent: ToPrimary[] = [];
  const listeners: ((m: unknown) => void)[] = [];
  return {
    sent,
    deliver: (m) => {
      for (const l of listeners) l(m);
    },
    channel: {
      send: (m) => {
        sent.push(m);
        return Promise.resolve();
      },
      onMessage: (l) => {
        listeners.push(l);
      },
    },
  };
}

describe('startClusterWorker', () => {
  it('asks for its init, starts the app with admin off and the shared ticket keys, then answers questions', async () => {
    const fake = fakeChannel();
    const keys = Buffer.alloc(TICKET_KEYS_BYTES, 7);
    let started: { config: RuntimeConfig; deps: AppDeps } | undefined;
    const registry = new Registry();
    new Counter({ name: 'x_total', help: 'x', registers: [registry] }).inc(3);
    const purged: (string | undefined)[] = [];
    const startApp = (c: RuntimeConfig, deps: AppDeps): Promise<App> => {
      started = { config: c, deps };
      const app: Partial<App> = {
        registry,
        logger: deps.logger as App['logger'],
        notReady: () => ['authProviders.a: no key set yet'],
        purgeTokenCache: (sha) => {
          purged.push(sha);
          return 2;
        },
      };
      return Promise.resolve(app as App);
    };
    const running = startClusterWorker(config(), {
      channel: fake.channel,
      startApp,
      createLogger: (level) => createLogger(level, { write: () => undefined }),
    });
    await new Promise((r) => setTimeout(r, 0));
    expect(fake.sent).toEqual([{ type: 'portcullis:hello' }]);
    expect(started).toBeUndefined(); // nothing starts before the primary's keys arrive
    fake.deliver({ type: 'prom-client:getMetricsReq', requestId: 1 }); // not ours: ignored
    fake.deliver({ type: 'portcullis:init', slot: 2, ticketKeys: keys.toString('base64') });
    await running;
    expect(started?.config.admin.enabled).toBe(false);
    expect(started?.deps.ticketKeys?.equals(keys)).toBe(true);
    expect(fake.sent.at(-1)).toEqual({ type: 'portcullis:started' });

    fake.deliver({ type: 'portcullis:ask', id: 5, q: 'notReady' });
    fake.deliver({ type: 'portcullis:ask', id: 6, q: 'purge', sha256: 'ab'.repeat(32) });
    fake.deliver({ type: 'portcullis:ask', id: 7, q: 'metrics' });
    await new Promise((r) => setTimeout(r, 10));
    const answers = fake.sent.filter((m) => m.type === 'portcullis:answer');
    expect(answers.find((a) => a.id === 5)).toEqual({
      type: 'portcullis:answer',
      id: 5,
      value: ['authProviders.a: no key set yet'],
    });
    expect(answers.find((a) => a.id === 6)).toEqual({ type: 'portcullis:answer', id: 6, value: 2 });
    expect(purged).toEqual(['ab'.repeat(32)]);
    const metrics = answers.find((a) => a.id === 7)?.value as { name: string; values: { value: number }[] }[];
    expect(metrics.find((m) => m.name === 'x_total')?.values[0]?.value).toBe(3);
  });

  it('refuses ticket keys of the wrong size without starting the app', async () => {
    const fake = fakeChannel();
    let starts = 0;
    const running = startClusterWorker(config(), {
      channel: fake.channel,
      startApp: () => {
        starts += 1;
        return Promise.reject(new Error('unreachable'));
      },
      createLogger: (level) => createLogger(level, { write: () => undefined }),
    });
    fake.deliver({ type: 'portcullis:init', slot: 1, ticketKeys: Buffer.alloc(16).toString('base64') });
    await expect(running).rejects.toThrow(/16 bytes of TLS ticket keys, not 48/);
    expect(starts).toBe(0);
  });

  it('gives up when the primary never sends its init', async () => {
    const fake = fakeChannel();
    const running = startClusterWorker(config(), {
      channel: fake.channel,
      startApp: () => Promise.reject(new Error('unreachable')),
      createLogger: (level) => createLogger(level, { write: () => undefined }),
      initTimeoutMs: 20,
    });
    await expect(running).rejects.toThrow(/no init message/);
  });
});

describe('IPC message guards', () => {
  it.each([
    [null],
    ['portcullis:init'],
    [{ type: 'portcullis:init', slot: '1', ticketKeys: 'x' }],
    [{ type: 'portcullis:ask', id: 1, q: 'shutdown' }],
    [{ type: 'portcullis:ask', q: 'metrics' }],
  ])('a worker ignores %j', (m) => {
    expect(parseToWorker(m)).toBeUndefined();
  });

  it.each([
    [{ type: 'portcullis:failed', code: '3', message: 'x' }],
    [{ type: 'portcullis:answer' }],
    [{ type: 'prom-client:getMetricsRes' }],
    [[1]],
  ])('the primary ignores %j', (m) => {
    expect(parseToPrimary(m)).toBeUndefined();
  });
});

describe('aggregateMetrics', () => {
  async function worker(opts: {
    requests: number;
    active: number;
    expiry: number;
  }): Promise<Awaited<ReturnType<Registry['getMetricsAsJSON']>>> {
    const r = new Registry();
    new Counter({
      name: 'portcullis_http_requests_total',
      help: 'h',
      labelNames: ['listener'],
      registers: [r],
    })
      .labels('main')
      .inc(opts.requests);
    new Gauge({ name: 'portcullis_active_connections', help: 'h', labelNames: ['listener'], registers: [r] })
      .labels('main')
      .set(opts.active);
    new Gauge({
      name: 'portcullis_certificate_expiry_timestamp_seconds',
      help: 'h',
      labelNames: ['listener'],
      registers: [r],
    })
      .labels('main')
      .set(opts.expiry);
    new Gauge({ name: 'portcullis_process_start_time_seconds', help: 'h', registers: [r] }).set(
      opts.expiry - 5,
    );
    return r.getMetricsAsJSON();
  }

  it("the primary's admin refusals join the workers' refusal series in one exposition", async () => {
    // What the primary does (cluster/primary.ts): its own counter, same definition, fed by the admin server.
    const primary = new Registry();
    const lines: string[] = [];
    const report = adminRefusalReporter(
      { info: (o: object, msg: string) => lines.push(`${msg} ${JSON.stringify(o)}`) } as never,
      createRejectedConnectionsCounter(primary),
    );
    const peer = { clientAddress: '10.0.0.9', clientPort: 41_000 };
    report({ reason: 'no_client_cert', detail: 'ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE', ...peer });
    report({ reason: 'acl', detail: 'not on admin.allowClients', ...peer });
    report({ reason: 'acl', detail: 'not on admin.allowClients', ...peer });
    // What each worker's data listener counts.
    const workers = [new Registry(), new Registry()];
    createMetrics(workers[0]!).rejectedConnections.labels('main', 'no_client_cert').inc(2);
    createMetrics(workers[1]!).rejectedConnections.labels('main', 'no_client_cert').inc(3);
    const text = await aggregateMetrics([
      await primary.getMetricsAsJSON(),
      ...(await Promise.all(workers.map((w) => w.getMetricsAsJSON()))),
    ]).metrics();
    expect(text).toContain(
      'portcullis_tls_rejected_connections_total{listener="admin",reason="no_client_cert"} 1',
    );
    expect(text).toContain('portcullis_tls_rejected_connections_total{listener="admin",reason="acl"} 2');
    expect(text).toContain(
      'portcullis_tls_rejected_connections_total{listener="main",reason="no_client_cert"} 5',
    );
    expect(lines).toHaveLength(3);
    expect(lines[0]).toMatch(/^admin connection refused .*"listener":"admin","reason":"no_client_cert"/);
    expect(lines[0]).toContain('"clientAddress":"10.0.0.9","clientPort":41000');
  });

  it('sums counters and connection gauges, and takes the minimum of timestamps every worker shares', async () => {
    const text = await aggregateMetrics([
      await worker({ requests: 120, active: 3, expiry: 2_000_000_000 }),
      await worker({ requests: 80, active: 4, expiry: 2_000_000_000 }),
    ]).metrics();
    expect(text).toContain('portcullis_http_requests_total{listener="main"} 200');
    expect(text).toContain('portcullis_active_connections{listener="main"} 7');
    expect(text).toContain('portcullis_certificate_expiry_timestamp_seconds{listener="main"} 2000000000');
    expect(text).toContain('portcullis_process_start_time_seconds 1999999995');
  });
});
