/**
 * Monitoring that ships (deploy/prometheus/, deploy/grafana/), checked against what the real gateway
 * exposes. A single gateway (test/helpers/gateway.ts, admin listener on) with an HTTP listener in front of a
 * real upstream and a dead one, a route behind a JWT provider whose JWKS a fake IdP serves, and a TCP
 * listener in front of a TCP echo; real HTTP/1.1, HTTP/2, TLS and TCP clients drive each path once. And a
 * `workers: 2` cluster (the built binary), whose primary serves the sum of its workers.
 *
 * - Both `/metrics` scrapes pass `promtool check metrics` (prom-client's `_total` gauges are dropped:
 *   metrics.ts DROPPED_DEFAULT_METRICS); every `_total` is a counter, also checked without promtool.
 * - `portcullis_build_info{version,node}` is 1, with package.json's version and this Node.js, in both
 *   (the cluster takes one value, not the sum).
 * - Every metric named in every query of deploy/grafana/portcullis.json, and in every rule of
 *   deploy/prometheus/alerts.yaml, has a sample in a scrape (histograms by _bucket/_sum/_count);
 *   `portcullis_cluster_*` in the cluster's.
 * - `promtool check rules` and `promtool test rules` (deploy/prometheus/alerts.test.yaml) pass.
 * promtool cases are skipped, with the reason printed, where promtool is missing (.ci/run installs
 * Debian's prometheus package, which provides it).
 */
import { spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer as createNetServer, type AddressInfo, type Server as NetServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import { parse as parseYaml, stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DROPPED_DEFAULT_METRICS } from '../../src/observability/metrics.js';
import { parseSamples, scrapeText } from '../helpers/admin.js';
import { freePort, killAll, startBinary } from '../helpers/binary.js';
import { h1, h2, h2session, tlsOptions } from '../helpers/clients.js';
import { startGateway, type TestGateway } from '../helpers/gateway.js';
import { createFakeIdp, type FakeIdp } from '../helpers/idp.js';
import { writePki } from '../helpers/pki.js';
import { startUpstream, type TestUpstream } from '../helpers/upstream.js';

const promtool = spawnSync('promtool', ['--version'], { encoding: 'utf8' });
const havePromtool = promtool.status === 0;
if (!havePromtool)
  console.log('skipped: promtool is not installed (Debian package prometheus; .ci/run installs it)');

/** `promtool check metrics` on an exposition: exit code and what it said. */
function promtoolCheckMetrics(text: string): { status: number | null; output: string } {
  const r = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
  return { status: r.status, output: `${r.stdout}${r.stderr}` };
}

/** The metric families that have at least one sample, histogram/summary series under their own names. */
function sampledNames(text: string): Set<string> {
  return new Set(parseSamples(text).map((s) => s.name));
}

/** Every `portcullis_*` metric name a PromQL expression names. */
function metricNames(expr: string): string[] {
  return [...new Set(expr.match(/\bportcullis_[a-zA-Z0-9_:]+/g) ?? [])];
}

const PKG = JSON.parse(readFileSync('package.json', 'utf8')) as { version: string };

/** Every query of the dashboard: panel targets (rows included) and templating queries. */
function dashboardQueries(): { where: string; expr: string }[] {
  const dash = JSON.parse(readFileSync('deploy/grafana/portcullis.json', 'utf8')) as {
    panels: { title: string; targets?: { expr: string }[]; panels?: unknown[] }[];
    templating: { list: { name: string; type: string; query?: unknown }[] };
  };
  const out: { where: string; expr: string }[] = [];
  const walk = (panels: typeof dash.panels): void => {
    for (const p of panels) {
      for (const t of p.targets ?? []) out.push({ where: p.title, expr: t.expr });
      walk((p.panels ?? []) as typeof dash.panels);
    }
  };
  walk(dash.panels);
  for (const v of dash.templating.list) {
    if (v.type !== 'query') continue;
    const q = typeof v.query === 'string' ? v.query : (v.query as { query: string }).query;
    out.push({ where: `variable ${v.name}`, expr: q });
  }
  return out;
}

/** Every rule expression of alerts.yaml. */
function alertExprs(): { where: string; expr: string }[] {
  const doc = parseYaml(readFileSync('deploy/prometheus/alerts.yaml', 'utf8')) as {
    groups: { name: string; rules: { alert?: string; record?: string; expr: string }[] }[];
  };
  return doc.groups.flatMap((g) =>
    g.rules.map((r) => ({ where: r.alert ?? r.record ?? g.name, expr: r.expr })),
  );
}

describe('monitoring: one gateway, driven through each path', () => {
  let idp: FakeIdp;
  let up: TestUpstream;
  let echo: NetServer;
  let gw: TestGateway;
  let scrape: string;

  beforeAll(async () => {
    idp = await createFakeIdp();
    await idp.listen();
    up = await startUpstream();
    echo = createNetServer({ allowHalfOpen: true }, (s) => {
      s.on('error', () => undefined);
      s.pipe(s);
    });
    await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
    gw = await startGateway((pki) => {
      const tls = {
        cert: pki.server.cert,
        key: pki.server.key,
        clientCertificate: 'require',
        clientCa: pki.ca,
        crl: pki.crl,
      };
      const route = (
        id: string,
        upstream: string,
        extra: Record<string, unknown> = {},
      ): Record<string, unknown> => ({
        id,
        match: { pathPrefix: `/${id}` },
        upstream,
        ...extra,
      });
      return {
        admin: { enabled: true, listen: '127.0.0.1:0' },
        authProviders: {
          corp: {
            type: 'jwt',
            issuer: idp.issuer,
            audience: 'api',
            jwksUri: idp.jwksUri,
            algorithms: ['ES256'],
          },
        },
        listeners: [
          {
            name: 'main',
            listen: '127.0.0.1:0',
            tls,
            routes: [
              route('up', up.url),
              route('down', 'http://127.0.0.1:1'), // nothing listens there: 502
              route('auth', 'builtin:echo', { auth: { providers: ['corp'] } }),
            ],
          },
          {
            name: 'comm',
            listen: '127.0.0.1:0',
            protocol: 'tcp',
            tls,
            upstream: `tcp://127.0.0.1:${(echo.address() as AddressInfo).port}`,
          },
        ],
      };
    });
    const port = gw.port('main');
    // HTTP/1.1 to a live upstream (with a telemetry header to strip), to a dead one, with and without a token.
    expect(
      (
        await h1(port, gw.pki, {
          path: '/up/a',
          headers: { traceparent: `00-${'1'.repeat(32)}-${'2'.repeat(16)}-01` },
        })
      ).status,
    ).toBe(200);
    expect((await h1(port, gw.pki, { path: '/down/a' })).status).toBe(502);
    expect((await h1(port, gw.pki, { path: '/auth/a' })).status).toBe(401);
    const token = await idp.sign({ sub: 'alice', aud: 'api', exp: Math.floor(Date.now() / 1000) + 600 });
    expect(
      (await h1(port, gw.pki, { path: '/auth/a', headers: { authorization: `Bearer ${token}` } })).status,
    ).toBe(200);
    // No client certificate: refused at the handshake.
    await expect(h1(port, gw.pki, { client: undefined, path: '/up/a' })).rejects.toThrow();
    // HTTP/2.
    const session = h2session(port, gw.pki);
    expect((await h2(session, { ':path': '/up/h2' })).status).toBe(200);
    session.close();
    // The TCP listener: bytes in and out, one connection that ends.
    await new Promise<void>((resolve, reject) => {
      const s = tlsConnect({ ...tlsOptions(gw.pki, 'alice'), host: '127.0.0.1', port: gw.port('comm') });
      s.on('secureConnect', () => s.end(randomBytes(1024)));
      s.on('data', () => undefined);
      s.on('error', reject);
      s.on('close', () => resolve());
    });
    // The refusal and the TCP close are counted after the client saw them: let the gateway catch up.
    const adminPort = gw.app.adminPort() as number;
    const deadline = Date.now() + 5_000;
    do {
      scrape = await scrapeText(adminPort);
      const names = sampledNames(scrape);
      if (
        names.has('portcullis_tcp_connection_duration_seconds_bucket') &&
        /reason="no_client_cert"/.test(scrape)
      )
        break;
      await new Promise((r) => setTimeout(r, 50));
    } while (Date.now() < deadline);
  });

  afterAll(async () => {
    await gw?.close();
    await up?.close();
    await idp?.close();
    await new Promise<void>((r) => (echo ? echo.close(() => r()) : r()));
  });

  it.skipIf(!havePromtool)('the scrape passes `promtool check metrics`', () => {
    const r = promtoolCheckMetrics(scrape);
    expect(r.output).toBe('');
    expect(r.status).toBe(0);
  });

  it.skipIf(!havePromtool)(
    'promtool does flag a gauge named like a counter (the check above can fail)',
    () => {
      const r = promtoolCheckMetrics(
        `${scrape}# HELP portcullis_x_total x\n# TYPE portcullis_x_total gauge\nportcullis_x_total 1\n`,
      );
      expect(r.output).toMatch(/portcullis_x_total non-counter metrics should not have "_total" suffix/);
      expect(r.status).not.toBe(0);
    },
  );

  it('every family named `_total` is a counter; prom-client’s `_total` gauges are not exposed', () => {
    const types = [...scrape.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((m) => [m[1]!, m[2]!] as const);
    expect(types.length).toBeGreaterThan(30);
    for (const [name, type] of types)
      if (name.endsWith('_total')) expect([name, type]).toEqual([name, 'counter']);
    for (const name of DROPPED_DEFAULT_METRICS) expect(scrape).not.toContain(name);
    // The per-type gauges of those families stay.
    expect(sampledNames(scrape)).toContain('portcullis_nodejs_active_handles');
  });

  it('portcullis_build_info{version,node} is 1, with the package version and this Node.js', () => {
    const info = parseSamples(scrape).filter((s) => s.name === 'portcullis_build_info');
    expect(info).toEqual([
      {
        name: 'portcullis_build_info',
        labels: { version: PKG.version, node: process.version.slice(1) },
        value: 1,
      },
    ]);
  });

  it('every metric of every Grafana query has a sample (portcullis_cluster_* in the cluster test)', () => {
    const have = sampledNames(scrape);
    const queries = dashboardQueries();
    expect(queries.length).toBeGreaterThan(25);
    for (const q of queries) {
      const names = metricNames(q.expr);
      expect(names.length, `${q.where}: ${q.expr}`).toBeGreaterThan(0);
      for (const n of names.filter((x) => !x.startsWith('portcullis_cluster_')))
        expect(have.has(n), `${q.where}: ${n} is not in the scrape`).toBe(true);
    }
  });

  it('every metric of every alert rule has a sample (portcullis_cluster_* in the cluster test)', () => {
    const have = sampledNames(scrape);
    for (const r of alertExprs())
      for (const n of metricNames(r.expr).filter((x) => !x.startsWith('portcullis_cluster_')))
        expect(have.has(n), `${r.where}: ${n} is not in the scrape`).toBe(true);
  });

  it('the alert rules cover certificates, CRLs, the IdP, upstreams, reloads and connection limits', () => {
    const all = alertExprs()
      .map((r) => r.expr)
      .join('\n');
    for (const needle of [
      'portcullis_certificate_expiry_timestamp_seconds',
      'portcullis_crl_next_update_timestamp_seconds',
      'portcullis_auth_idp_failures_total',
      'portcullis_auth_jwks_refreshes_total{result="failure"}',
      'portcullis_upstream_errors_total',
      'portcullis_config_reloads_total{result="failure"}',
      'connection_limit|client_connection_limit',
    ])
      expect(all).toContain(needle);
  });
});

describe.skipIf(!havePromtool)('deploy/prometheus/alerts.yaml with promtool', () => {
  it('`promtool check rules` accepts it', () => {
    const r = spawnSync('promtool', ['check', 'rules', 'deploy/prometheus/alerts.yaml'], {
      encoding: 'utf8',
    });
    expect(r.status, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/SUCCESS: \d+ rules found/);
  });

  it('`promtool test rules`: each alert fires on the series of its situation, and not on healthy ones', () => {
    const r = spawnSync('promtool', ['test', 'rules', 'deploy/prometheus/alerts.test.yaml'], {
      encoding: 'utf8',
    });
    expect(r.status, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toContain('SUCCESS');
  });
});

describe('monitoring: a workers: 2 cluster, scraped at its primary', () => {
  let dir: string;
  let scrape: string;
  const children = new Set<ChildProcess>();

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'portcullis-monitoring-'));
    const pki = await writePki(join(dir, 'pki'));
    const adminPort = await freePort();
    const file = join(dir, 'cluster.yaml');
    await writeFile(
      file,
      stringify({
        workers: 2,
        admin: { listen: `127.0.0.1:${adminPort}` },
        listeners: [
          {
            name: 'main',
            listen: '127.0.0.1:0',
            tls: {
              cert: pki.server.cert,
              key: pki.server.key,
              clientCertificate: 'require',
              clientCa: pki.ca,
            },
            routes: [{ id: 'echo', match: { pathPrefix: '/' }, upstream: 'builtin:echo' }],
          },
        ],
      }),
    );
    const run = startBinary(file);
    children.add(run.child);
    await run.waitFor((l) => l.msg === 'admin listening', 'the cluster to start', 30_000);
    const port = run.lines.find((l) => l.msg === 'listening' && l.listener === 'main')?.port as number;
    expect((await h1(port, pki, { path: '/x' })).status).toBe(200);
    scrape = await scrapeText(adminPort);
  });

  afterAll(async () => {
    killAll(children);
    await rm(dir, { recursive: true, force: true });
  });

  it.skipIf(!havePromtool)('the primary’s aggregated scrape passes `promtool check metrics`', () => {
    const r = promtoolCheckMetrics(scrape);
    expect(r.output).toBe('');
    expect(r.status).toBe(0);
  });

  it('portcullis_build_info is 1 across primary and workers, not their sum', () => {
    const info = parseSamples(scrape).filter((s) => s.name === 'portcullis_build_info');
    expect(info).toEqual([
      {
        name: 'portcullis_build_info',
        labels: { version: PKG.version, node: process.version.slice(1) },
        value: 1,
      },
    ]);
  });

  it('the portcullis_cluster_* metrics the dashboard and the alerts name have samples', () => {
    const have = sampledNames(scrape);
    const named = [...dashboardQueries(), ...alertExprs()].flatMap((q) =>
      metricNames(q.expr).filter((n) => n.startsWith('portcullis_cluster_')),
    );
    expect(named.length).toBeGreaterThan(0);
    for (const n of named) expect(have.has(n), `${n} is not in the cluster scrape`).toBe(true);
  });
});
