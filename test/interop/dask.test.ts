/**
 * Interop with a real Dask cluster (issue 5 point 5): Debian's python3-distributed run by /usr/bin/python3
 * (test/helpers/dask.ts), a scheduler and one worker on loopback, and a Dask client process configured as
 * docs/dask-notes.md says — `Security(require_encryption=True, tls_ca_file, tls_client_cert, tls_client_key)`,
 * `direct_to_workers=False` — connecting through the gateway's TCP listener, started in this process:
 *
 * 1. scheduler on plain `tcp://` on loopback: the listener pipes to it;
 * 2. scheduler on `tls://` with `require_encryption=True` and its own cluster CA: the listener re-encrypts
 *    with the gateway's own client certificate (which the scheduler verifies).
 *
 * In both, alice gets `submit(lambda x: x + 1, 1) == 2` and `sum(map(inc, range(300))) == 45150`, and a
 * client with no certificate, with one from another CA, or with a revoked one fails and is counted by the
 * gateway with the matching reason. Without the Debian packages the suite is skipped with a printed reason.
 *
 * Issue 5 point 6, in the plain tcp:// block: ONE app (the real loader and `startApp`, test/helpers/gateway.ts)
 * with the tcp listener AND an http listener whose route goes to the scheduler's own HTTP server, behind a
 * `type: jwt` provider (dev JWKS file) requiring scope `dask:read`. While alice's Dask client runs its submit
 * and map through the tcp listener, /health and /metrics answer through the http listener with her
 * certificate and a token; no token is 401 with a Bearer challenge, a token without the scope is 403, both
 * logged with their reason codes, and the scheduler's HTTP server (its tornado access log, see
 * test/helpers/dask.ts) saw neither.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { createDevSigningKey, DEV_AUDIENCE, DEV_ISSUER, mintDevJwt } from '../../src/authn/jwks-dev.js';
import { createCa, issueClientCert, issueServerCert } from '../../src/certs/pki.js';
import { loadConfigText } from '../../src/load-config.js';
import type { ListenerTls, RuntimeListener } from '../../src/config/runtime.js';
import type { Listener } from '../../src/listener/listener.js';
import { createTcpListener } from '../../src/listener/tcp-listener.js';
import { createLogger } from '../../src/observability/logger.js';
import { createMetrics } from '../../src/observability/metrics.js';
import type { TcpUpstream } from '../../src/proxy/tcp-pipe.js';
import { h1 } from '../helpers/clients.js';
import {
  daskHasPrometheus,
  daskUnavailableReason,
  daskVersion,
  issueClusterCert,
  runDaskClient,
  startDaskCluster,
  type DaskCluster,
  type DaskTlsFiles,
} from '../helpers/dask.js';
import { startGateway as startApp, type TestGateway } from '../helpers/gateway.js';
import { mintTestPki, writePki, type TestClientName, type TestPkiPaths } from '../helpers/pki.js';

const unavailable = daskUnavailableReason();
if (unavailable !== undefined) console.warn(`test/interop/dask.test.ts skipped: ${unavailable}`);
else console.info(`test/interop/dask.test.ts: distributed ${daskVersion()} via /usr/bin/python3`);

/** sum(x + 1 for x in range(300)). */
const MAP_SUM = 45_150;
/** Per client run: Python start-up and import (~1 s), connect, 301 tasks. */
const RUN_MS = 90_000;

interface Gateway {
  listener: Listener;
  address: string;
  logs: Record<string, unknown>[];
  metric(name: string, labels?: Record<string, string>): Promise<number>;
}

describe.skipIf(unavailable !== undefined)('interop: a Dask cluster behind the TCP listener', () => {
  let dir: string;
  let pki: TestPkiPaths;
  let listenerConfig: RuntimeListener;
  /** The cluster's own PKI (scheduler and worker certificate, the gateway's client certificate). */
  let clusterFiles: DaskTlsFiles;
  let gatewayClient: { cert: string; key: string; ca: string };
  const cleanup: (() => Promise<void>)[] = [];

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'portcullis-dask-'));
    pki = await writePki(join(dir, 'pki'));
    listenerConfig = loadConfigText(
      stringify({
        admin: { enabled: false },
        listeners: [
          {
            name: 'dask-comm',
            listen: '127.0.0.1:0',
            tls: {
              cert: pki.server.cert,
              key: pki.server.key,
              clientCertificate: 'require',
              clientCa: pki.ca,
              crl: pki.crl,
            },
            allowClients: ['OU=data-science'],
            routes: [{ match: { pathPrefix: '/' }, upstream: 'builtin:echo' }],
          },
        ],
      }),
      join(dir, 'portcullis.yaml'),
    ).listeners[0]!;
    const clusterCa = createCa({ commonName: 'Dask Cluster CA', days: 30 });
    const node = issueClusterCert(clusterCa, {
      commonName: 'dask-node',
      hosts: ['127.0.0.1', 'localhost'],
      days: 30,
    });
    const gw = issueClientCert(clusterCa, { commonName: 'portcullis-gateway', days: 30 });
    const put = async (name: string, pem: string): Promise<string> => {
      const path = join(dir, name);
      await writeFile(path, pem, { mode: 0o600 });
      return path;
    };
    clusterFiles = {
      ca: await put('cluster-ca.pem', clusterCa.certPem),
      cert: await put('node.pem', node.certPem),
      key: await put('node-key.pem', node.keyPem),
    };
    gatewayClient = {
      ca: clusterFiles.ca,
      cert: await put('gateway.pem', gw.certPem),
      key: await put('gateway-key.pem', gw.keyPem),
    };
  });

  afterAll(async () => {
    for (const f of cleanup.reverse()) await f();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  async function startGateway(
    upstream: TcpUpstream,
    tls: ListenerTls = listenerConfig.tls!,
  ): Promise<Gateway> {
    const logs: Record<string, unknown>[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        for (const line of chunk.toString('utf8').split('\n'))
          if (line !== '') logs.push(JSON.parse(line) as Record<string, unknown>);
        cb();
      },
    });
    const registry = new Registry();
    const listener = createTcpListener(
      {
        name: 'dask-comm',
        keyPath: 'listeners[0]',
        address: { host: '127.0.0.1', port: 0 },
        tls,
        acl: listenerConfig.acl,
        upstream,
        proxyProtocol: undefined,
      },
      {
        logger: createLogger('debug', sink),
        metrics: createMetrics(registry, { processMetrics: false }),
        timeouts: { tlsHandshakeMs: 10_000, upstreamConnectMs: 5_000, idleMs: 120_000 },
      },
    );
    await listener.start();
    cleanup.push(() => listener.close());
    return {
      listener,
      // Dask's `tls://` scheme; an IP address, as Dask deployments use (no SNI is sent for it).
      address: `tls://127.0.0.1:${listener.address().port}`,
      logs,
      async metric(name, labels = {}) {
        const m = registry.getSingleMetric(name);
        if (!m) return 0;
        let total = 0;
        for (const v of (await m.get()).values) {
          const ls = v.labels as Record<string, string | number>;
          if (Object.entries(labels).every(([k, want]) => String(ls[k]) === want)) total += v.value;
        }
        return total;
      },
    };
  }

  const clientTls = (who: TestClientName | 'none'): { ca: string; cert?: string; key?: string } =>
    who === 'none' ? { ca: pki.ca } : { ca: pki.ca, cert: pki.clients[who].cert, key: pki.clients[who].key };

  /** The refusals every deployment must show, with the reason the gateway counts. */
  const REFUSED: readonly [string, TestClientName | 'none', string][] = [
    ['no certificate', 'none', 'no_client_cert'],
    ['a certificate from another CA (same subject as alice)', 'otherCaAlice', 'bad_client_cert'],
    ['a revoked certificate', 'revoked', 'revoked'],
  ];

  async function expectWorks(gw: Gateway, cluster: DaskCluster): Promise<void> {
    const run = await runDaskClient({ address: gw.address, tls: clientTls('alice'), timeoutMs: RUN_MS });
    console.info('dask client (alice):', JSON.stringify(run.result ?? run.error));
    expect(run.error, run.stderr.slice(-2_000)).toBeUndefined();
    expect(run.exitCode).toBe(0);
    expect(run.result).toMatchObject({ submit: 2, mapSum: MAP_SUM });
    // The scheduler reports its worker by a loopback address the client never dials (direct_to_workers=False).
    expect(run.result?.workers).toEqual([cluster.workerAddress]);
    // Every connection of the client went through the listener and is logged with alice's identity (once
    // closed: a comm may still be half-closed through the gateway when the client process has exited).
    await settle(gw);
    const lines = gw.logs.filter((l) => l.msg === 'tcp connection');
    console.info(
      `  ${lines.length} connection(s) through the gateway:`,
      lines.map((l) => `${String(l.reason)} in=${String(l.bytesIn)} out=${String(l.bytesOut)}`).join(', '),
    );
    expect(lines.length).toBeGreaterThan(0);
    for (const l of lines) {
      expect(l.clientSubject).toContain('CN=alice');
      expect(['closed', 'client_reset']).toContain(l.reason);
    }
    expect(await gw.metric('portcullis_tcp_bytes_total', { direction: 'out' })).toBeGreaterThan(0);
  }

  /**
   * Waits until the previous test's connections have closed and been logged: a Dask client's comm may still be
   * half-closed through the gateway when its process has exited, and its `tcp connection` line lands later.
   */
  async function settle(gw: Gateway): Promise<void> {
    await settleOn(
      () => gw.metric('portcullis_active_connections'),
      () => gw.logs.filter((l) => l.msg === 'tcp connection').length,
    );
  }

  /** `settle` for any listener: `active` is its active-connections gauge, `logged` its `tcp connection` lines. */
  async function settleOn(active: () => Promise<number>, logged: () => number): Promise<void> {
    const deadline = Date.now() + 15_000;
    let last = -1;
    while (Date.now() < deadline) {
      const open = await active();
      const lines = logged();
      if (open === 0 && lines === last) return;
      last = open === 0 ? lines : -1;
      await new Promise((r) => setTimeout(r, 250));
    }
    throw new Error('connections through the gateway did not close within 15 s');
  }

  async function expectRefused(gw: Gateway, who: TestClientName | 'none', reason: string): Promise<void> {
    await settle(gw);
    const before = await gw.metric('portcullis_tls_rejected_connections_total', { reason });
    const piped = gw.logs.filter((l) => l.msg === 'tcp connection').length;
    const run = await runDaskClient({
      address: gw.address,
      tls: clientTls(who),
      connectTimeoutS: 3,
      timeoutMs: RUN_MS,
    });
    console.info(`dask client (${who}):`, run.error ?? `exit ${String(run.exitCode)}`);
    expect(run.result).toBeUndefined();
    expect(run.exitCode === 0 && !run.timedOut).toBe(false);
    expect(run.error).toBeDefined();
    expect(await gw.metric('portcullis_tls_rejected_connections_total', { reason })).toBeGreaterThan(before);
    // Nothing was piped to the scheduler.
    expect(gw.logs.filter((l) => l.msg === 'tcp connection').length).toBe(piped);
  }

  describe('scheduler on plain tcp:// on loopback', () => {
    let cluster: DaskCluster;
    let gw: Gateway;
    beforeAll(async () => {
      cluster = await startDaskCluster();
      cleanup.push(() => cluster.stop());
      gw = await startGateway({ kind: 'tcp', host: '127.0.0.1', port: cluster.schedulerPort });
    }, 120_000);

    it(
      'alice (Security with require_encryption) submits and maps through the gateway',
      async () => {
        await expectWorks(gw, cluster);
      },
      RUN_MS + 10_000,
    );

    it.each(REFUSED)(
      '%s: the client fails, the gateway counts it, nothing reaches the scheduler',
      async (_name, who, reason) => {
        await expectRefused(gw, who, reason);
      },
      RUN_MS + 10_000,
    );

    it(
      'one gateway process fronts both halves: Dask comm on its tcp listener, the scheduler HTTP server behind Bearer auth on its http listener',
      async () => {
        // The app from a YAML config through the real loader, as `portcullis run` starts it
        // (config/examples/dask.yaml, with a plain tcp:// scheduler and a dev JWKS).
        const signing = await createDevSigningKey();
        const jwksFile = join(dir, 'dask-jwks.json');
        await writeFile(jwksFile, JSON.stringify(signing.publicJwks));
        const app: TestGateway = await startApp((p) => {
          const tls = {
            cert: p.server.cert,
            key: p.server.key,
            clientCertificate: 'require',
            clientCa: p.ca,
            crl: p.crl,
          };
          return {
            log: { level: 'debug', access: true },
            authProviders: {
              'dask-jwt': {
                type: 'jwt',
                issuer: DEV_ISSUER,
                audience: DEV_AUDIENCE,
                jwksFile,
                algorithms: ['ES256'],
              },
            },
            listeners: [
              {
                name: 'dask-comm',
                listen: '127.0.0.1:0',
                protocol: 'tcp',
                tls,
                allowClients: ['OU=data-science'],
                upstream: `tcp://127.0.0.1:${cluster.schedulerPort}`,
              },
              {
                name: 'dask-http',
                listen: '127.0.0.1:0',
                protocol: 'http',
                tls,
                allowClients: ['OU=data-science'],
                routes: [
                  {
                    id: 'dask-dashboard',
                    match: { pathPrefix: '/' },
                    upstream: `http://127.0.0.1:${cluster.schedulerHttpPort}`,
                    auth: { providers: ['dask-jwt'], scopes: ['dask:read'] },
                  },
                ],
              },
            ],
          };
        });
        cleanup.push(() => app.close());
        const httpPort = app.port('dask-http');
        const mint = (scope: string): Promise<string> =>
          mintDevJwt({
            key: signing.privateJwk,
            issuer: DEV_ISSUER,
            audience: DEV_AUDIENCE,
            sub: 'alice',
            scope,
            ttlSeconds: 300,
            now: Date.now(),
          });
        const reader = await mint('dask:read');
        const writer = await mint('dask:write');
        const bearer = (token: string): Record<string, string> => ({ authorization: `Bearer ${token}` });
        const seenBefore = cluster.httpRequests().length;

        // The Dask client runs its submit and map through the tcp listener while the HTTP side is exercised.
        const running = runDaskClient({
          address: `tls://127.0.0.1:${app.port('dask-comm')}`,
          tls: { ca: app.pki.ca, cert: app.pki.clients.alice.cert, key: app.pki.clients.alice.key },
          timeoutMs: RUN_MS,
        });

        const health = await h1(httpPort, app.pki, { path: '/health', headers: bearer(reader) });
        expect(health.status, health.body).toBe(200);
        expect(health.body).toBe('ok');

        const metrics = await h1(httpPort, app.pki, { path: '/metrics', headers: bearer(reader) });
        expect(metrics.status, metrics.body).toBe(200);
        expect(String(metrics.headers['content-type'])).toMatch(/^text\/plain; version=0\.0\.4/);
        if (daskHasPrometheus()) {
          expect(metrics.body).toMatch(/^dask_scheduler_\w+/m);
        } else {
          // No prometheus_client for /usr/bin/python3: Dask's own placeholder, still a Prometheus text.
          console.info('scheduler /metrics without prometheus_client:', metrics.body.trim());
          expect(metrics.body).toMatch(/^# Prometheus metrics are not available/);
        }
        // Both reached the scheduler's HTTP server.
        await expect
          .poll(() => cluster.httpRequests().slice(seenBefore))
          .toEqual([
            expect.stringMatching(/^200 GET \/health \(127\.0\.0\.1\)/),
            expect.stringMatching(/^200 GET \/metrics \(127\.0\.0\.1\)/),
          ]);
        const seenAllowed = cluster.httpRequests().length;

        const missing = await h1(httpPort, app.pki, { path: '/health' });
        expect(missing.status).toBe(401);
        expect(String(missing.headers['www-authenticate'])).toMatch(/^Bearer\b/);
        expect(missing.body).not.toBe('ok');

        const unscoped = await h1(httpPort, app.pki, { path: '/metrics', headers: bearer(writer) });
        expect(unscoped.status).toBe(403);
        expect(String(unscoped.headers['www-authenticate'])).toMatch(/^Bearer .*error="insufficient_scope"/);
        expect(unscoped.body).not.toContain('Prometheus');

        // The gateway logged both denials on the route, with their reason codes...
        const denials = app
          .logs()
          .filter((l) => l.msg === 'request' && l.listener === 'dask-http' && typeof l.reason === 'string');
        expect(denials).toEqual([
          expect.objectContaining({ route: 'dask-dashboard', status: 401, reason: 'ERR_AUTHN_MISSING' }),
          expect.objectContaining({
            route: 'dask-dashboard',
            status: 403,
            reason: 'ERR_AUTHZ_INSUFFICIENT_SCOPE',
          }),
        ]);
        // ...counted them before serving any route (a denial is counted on route "none"), and answered from the
        // route only the two allowed requests.
        for (const reason of ['ERR_AUTHN_MISSING', 'ERR_AUTHZ_INSUFFICIENT_SCOPE'])
          expect(await app.metric('portcullis_http_denials_total', { listener: 'dask-http', reason })).toBe(
            1,
          );
        expect(
          await app.metric('portcullis_http_requests_total', {
            listener: 'dask-http',
            route: 'dask-dashboard',
            status_class: '2xx',
          }),
        ).toBe(2);
        // The two auth denials happened after routing: they count under the route, not under `none`.
        expect(
          await app.metric('portcullis_http_requests_total', {
            listener: 'dask-http',
            route: 'dask-dashboard',
            status_class: '4xx',
          }),
        ).toBe(2);
        expect(
          await app.metric('portcullis_http_requests_total', { listener: 'dask-http', route: 'none' }),
        ).toBe(0);

        const run = await running;
        console.info('dask client (alice, shared gateway):', JSON.stringify(run.result ?? run.error));
        expect(run.error, run.stderr.slice(-2_000)).toBeUndefined();
        expect(run.exitCode).toBe(0);
        expect(run.result).toMatchObject({ submit: 2, mapSum: MAP_SUM });
        const comm = (): Record<string, unknown>[] =>
          app.logs().filter((l) => l.msg === 'tcp connection' && l.listener === 'dask-comm');
        await settleOn(
          () => app.metric('portcullis_active_connections', { listener: 'dask-comm' }),
          () => comm().length,
        );
        const piped = comm();
        expect(piped.length).toBeGreaterThan(0);
        for (const l of piped) expect(String(l.clientSubject)).toContain('CN=alice');

        // ...and the scheduler's HTTP server never saw the denied ones (by now it has had every chance to).
        expect(cluster.httpRequests().length).toBe(seenAllowed);
      },
      RUN_MS + 10_000,
    );

    it(
      'direct_to_workers=True fails: the worker address the scheduler hands out is tcp:// on its loopback',
      async () => {
        const run = await runDaskClient({
          address: gw.address,
          tls: clientTls('alice'),
          directToWorkers: true,
          connectTimeoutS: 3,
          timeoutMs: RUN_MS,
        });
        console.info('dask client (alice, direct_to_workers=True):', JSON.stringify(run.result ?? run.error));
        expect(run.result).toBeUndefined();
        expect(run.error).toMatch(
          /encryption required .* refusing communication .* 'tcp:\/\/127\.0\.0\.1:\d+'/,
        );
      },
      RUN_MS + 10_000,
    );

    it(
      'SNI: sent when the client dials a host name, absent for an IP address; the gateway needs neither',
      async () => {
        const servernames = async (host: string): Promise<unknown[]> => {
          const g = await startGateway({ kind: 'tcp', host: '127.0.0.1', port: cluster.schedulerPort });
          const run = await runDaskClient({
            address: g.address.replace('127.0.0.1', host),
            tls: clientTls('alice'),
            timeoutMs: RUN_MS,
          });
          expect(run.error, run.stderr.slice(-2_000)).toBeUndefined();
          expect(run.result).toMatchObject({ submit: 2, mapSum: MAP_SUM });
          await settle(g);
          const lines = g.logs.filter((l) => l.msg === 'tcp connection');
          expect(lines.length).toBeGreaterThan(0);
          return [...new Set(lines.map((l) => l.servername))];
        };
        expect(await servernames('127.0.0.1')).toEqual([undefined]);
        expect(await servernames('localhost')).toEqual(['localhost']);
      },
      RUN_MS + 10_000,
    );

    it(
      'no hostname check: a gateway certificate that names neither the address nor the name dialled still works',
      async () => {
        const odd = issueServerCert(mintTestPki().ca, { hosts: ['gateway.elsewhere.example'], days: 1 });
        const tls = listenerConfig.tls!;
        const other = await startGateway(
          { kind: 'tcp', host: '127.0.0.1', port: cluster.schedulerPort },
          {
            ...tls,
            options: { ...tls.options, cert: odd.certPem, key: odd.keyPem },
          },
        );
        const run = await runDaskClient({
          address: other.address,
          tls: clientTls('alice'),
          timeoutMs: RUN_MS,
        });
        expect(run.error, run.stderr.slice(-2_000)).toBeUndefined();
        expect(run.result).toMatchObject({ submit: 2, mapSum: MAP_SUM });
      },
      RUN_MS + 10_000,
    );
  });

  describe('scheduler on tls:// with require_encryption, the gateway re-encrypting with its own certificate', () => {
    let cluster: DaskCluster;
    let gw: Gateway;
    beforeAll(async () => {
      cluster = await startDaskCluster({ tls: clusterFiles });
      cleanup.push(() => cluster.stop());
      gw = await startGateway({
        kind: 'tls',
        host: '127.0.0.1',
        port: cluster.schedulerPort,
        ca: await readText(gatewayClient.ca),
        cert: await readText(gatewayClient.cert),
        key: await readText(gatewayClient.key),
      });
    }, 120_000);

    it(
      'the scheduler speaks TLS only: alice going around the gateway (her CA is not the cluster CA) is refused',
      async () => {
        expect(cluster.schedulerAddress).toMatch(/^tls:\/\//);
        const run = await runDaskClient({
          address: cluster.schedulerAddress,
          tls: clientTls('alice'),
          connectTimeoutS: 3,
          timeoutMs: RUN_MS,
        });
        expect(run.result).toBeUndefined();
        expect(run.error).toBeDefined();
      },
      RUN_MS + 10_000,
    );

    it(
      'alice submits and maps through the gateway, which the scheduler accepts by its cluster certificate',
      async () => {
        await expectWorks(gw, cluster);
      },
      RUN_MS + 10_000,
    );

    it.each(REFUSED)(
      '%s: the client fails, the gateway counts it, nothing reaches the scheduler',
      async (_name, who, reason) => {
        await expectRefused(gw, who, reason);
      },
      RUN_MS + 10_000,
    );

    it(
      'a gateway without its client certificate is refused by the scheduler: alice fails, logged as upstream_tls',
      async () => {
        const bare = await startGateway({
          kind: 'tls',
          host: '127.0.0.1',
          port: cluster.schedulerPort,
          ca: await readText(gatewayClient.ca),
        });
        const run = await runDaskClient({
          address: bare.address,
          tls: clientTls('alice'),
          connectTimeoutS: 3,
          timeoutMs: RUN_MS,
        });
        expect(run.result).toBeUndefined();
        expect(run.error).toBeDefined();
        const lines = bare.logs.filter((l) => l.msg === 'tcp connection');
        console.info(
          'gateway without its certificate:',
          lines.map((l) => `${String(l.reason)} (${String(l.detail)})`).join(', '),
        );
        expect(lines.length).toBeGreaterThan(0);
        expect(lines.map((l) => l.reason)).toContain('upstream_tls');
      },
      RUN_MS + 10_000,
    );
  });
});

function readText(path: string): Promise<string> {
  return readFile(path, 'utf8');
}
