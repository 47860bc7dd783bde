/**
 * Telemetry opt-out (issue 4 point 4, threat model #98) and the certificate / CRL expiry gauges (issue 4
 * point 2), end to end: the real gateway on loopback, real HTTP/1.1 and HTTP/2 clients, an upstream that
 * records the raw headers it received and answers with telemetry headers of its own, and /metrics scraped
 * from the admin listener.
 */
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { startApp } from '../../src/app.js';
import { parseCrl } from '../../src/certs/pki.js';
import { systemClock } from '../../src/clock.js';
import { loadConfigFile } from '../../src/load-config.js';
import { createLogger } from '../../src/observability/logger.js';
import { adminGet } from '../helpers/admin.js';
import { h1, h2, h2session } from '../helpers/clients.js';
import { startGateway, tlsListener, type TestGateway } from '../helpers/gateway.js';
import { writePki } from '../helpers/pki.js';

/** What the client sends: every default-list family, two operator-added names, and headers that must pass. */
const CLIENT_TELEMETRY: Record<string, string> = {
  traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01',
  tracestate: 'rojo=00f067aa0ba902b7',
  baggage: 'userId=admin,role=root',
  b3: '80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1',
  'X-B3-TraceId': '80f198ee56343ba864fe8b2a57d3eff7',
  'X-B3-Sampled': '1',
  'uber-trace-id': '5d7bfb9d4e3c1a2b:5d7bfb9d4e3c1a2b:0:1',
  'x-datadog-trace-id': '1234567890',
  'x-datadog-sampling-priority': '2',
  'x-cloud-trace-context': '105445aa7843bc8bf206b12000100000/1;o=1',
  'X-Amzn-Trace-Id': 'Root=1-5759e988-bd862e3fe1be46a994272793',
  newrelic: 'eyJ2IjpbMCwxXX0=',
  'sentry-trace': '771a43a4192642f0b136d5159a501700-b12d6b5c57ecd8e8-1',
  'x-custom-span': 'abc', // operator's "x-custom-*"
  'grpc-trace-bin': 'AAA=', // operator's exact name
};
const CLIENT_TELEMETRY_NAMES = Object.keys(CLIENT_TELEMETRY).map((n) => n.toLowerCase());
/** Must pass untouched in every mode: near misses of the prefixes and ordinary headers. */
const CLIENT_KEEP: Record<string, string> = {
  'x-request-id': 'req-1',
  'x-b3': 'not-a-prefix-match',
  'x-app': 'kept',
};

/** What the upstream answers with. */
const UPSTREAM_TELEMETRY: Record<string, string> = {
  traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
  'x-b3-spanid': 'e457b5a2e4d86bd1',
  'x-datadog-parent-id': '42',
  'sentry-trace': '771a43a4192642f0b136d5159a501700-b12d6b5c57ecd8e8',
  'x-custom-upstream': 'u',
};
const UPSTREAM_KEEP: Record<string, string> = { 'x-served-by': 'upstream-1' };

interface Recorder {
  server: Server;
  url: string;
  seen: Record<string, string>[];
}

/** A plain-HTTP loopback upstream that records each request's headers and answers with telemetry headers. */
async function startRecorder(): Promise<Recorder> {
  const seen: Record<string, string>[] = [];
  const server = createServer((req, res) => {
    const h: Record<string, string> = {};
    for (let i = 0; i + 1 < req.rawHeaders.length; i += 2)
      h[(req.rawHeaders[i] as string).toLowerCase()] = req.rawHeaders[i + 1] as string;
    seen.push(h);
    req.resume();
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'text/plain', ...UPSTREAM_TELEMETRY, ...UPSTREAM_KEEP });
      res.end('ok');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, seen };
}

/** Every `name{labels} value` sample of a Prometheus text page. */
function samples(text: string): { name: string; labels: Record<string, string>; value: number }[] {
  const out: { name: string; labels: Record<string, string>; value: number }[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g))
      labels[l[1] as string] = l[2] as string;
    out.push({ name: m[1] as string, labels, value: Number(m[3]) });
  }
  return out;
}

function present(h: Record<string, unknown>, names: readonly string[]): string[] {
  return names.filter((n) => h[n] !== undefined);
}

describe('telemetry opt-out', () => {
  let up: Recorder;
  let gw: TestGateway; // optOut on (default), route /off/ overrides it off, honorClientSignals on
  let gwOff: TestGateway; // optOut off everywhere, honorClientSignals off

  beforeAll(async () => {
    up = await startRecorder();
    gw = await startGateway((pki) => ({
      admin: { enabled: true, listen: '127.0.0.1:0' },
      telemetry: { headers: ['x-custom-*', 'GRPC-Trace-Bin'], honorClientSignals: true },
      listeners: [
        tlsListener(pki, {
          routes: [
            { id: 'off', match: { pathPrefix: '/off/' }, upstream: up.url, telemetry: { optOut: false } },
            {
              id: 'tls-up',
              match: { pathPrefix: '/tls-up/' },
              upstream: {
                url: 'https://127.0.0.1:9',
                ca: pki.ca,
                cert: pki.clients.alice.cert,
                key: pki.clients.alice.key,
              },
            },
            { id: 'on', match: { pathPrefix: '/' }, upstream: up.url },
          ],
        }),
      ],
    }));
    gwOff = await startGateway((pki) => ({
      telemetry: { optOut: false },
      listeners: [
        tlsListener(pki, { routes: [{ id: 'plain', match: { pathPrefix: '/' }, upstream: up.url }] }),
      ],
    }));
  });
  afterAll(async () => {
    await gw?.close();
    await gwOff?.close();
    await new Promise<void>((r) => up?.server.close(() => r()));
  });

  const stripped = (g: TestGateway, direction: 'request' | 'response'): Promise<number> =>
    g.metric('portcullis_telemetry_headers_stripped_total', { direction });

  it('HTTP/1.1: strips every listed header (defaults, prefixes, operator additions) both ways and counts them', async () => {
    const reqBefore = await stripped(gw, 'request');
    const resBefore = await stripped(gw, 'response');
    const n = up.seen.length;
    const reply = await h1(gw.port(), gw.pki, {
      path: '/x',
      headers: { ...CLIENT_TELEMETRY, ...CLIENT_KEEP },
    });
    expect(reply.status).toBe(200);
    const seen = up.seen[n] as Record<string, string>;
    expect(present(seen, CLIENT_TELEMETRY_NAMES)).toEqual([]);
    for (const [k, v] of Object.entries(CLIENT_KEEP)) expect(seen[k]).toBe(v);
    expect(present(reply.headers, Object.keys(UPSTREAM_TELEMETRY))).toEqual([]);
    expect(reply.headers['x-served-by']).toBe('upstream-1');
    expect((await stripped(gw, 'request')) - reqBefore).toBe(CLIENT_TELEMETRY_NAMES.length);
    expect((await stripped(gw, 'response')) - resBefore).toBe(Object.keys(UPSTREAM_TELEMETRY).length);
  });

  it('HTTP/2: strips both ways too', async () => {
    const session = h2session(gw.port(), gw.pki);
    try {
      const n = up.seen.length;
      const lower = Object.fromEntries(
        Object.entries({ ...CLIENT_TELEMETRY, ...CLIENT_KEEP }).map(([k, v]) => [k.toLowerCase(), v]),
      );
      const reply = await h2(session, { ':path': '/h2', ...lower });
      expect(reply.status).toBe(200);
      const seen = up.seen[n] as Record<string, string>;
      expect(present(seen, CLIENT_TELEMETRY_NAMES)).toEqual([]);
      expect(seen['x-app']).toBe('kept');
      expect(present(reply.headers, Object.keys(UPSTREAM_TELEMETRY))).toEqual([]);
      expect(reply.headers['x-served-by']).toBe('upstream-1');
    } finally {
      session.close();
    }
  });

  it('a route with telemetry.optOut: false passes them untouched both ways, and counts nothing', async () => {
    const reqBefore = await stripped(gw, 'request');
    const resBefore = await stripped(gw, 'response');
    const n = up.seen.length;
    const reply = await h1(gw.port(), gw.pki, {
      path: '/off/x',
      headers: { ...CLIENT_TELEMETRY, ...CLIENT_KEEP },
    });
    expect(reply.status).toBe(200);
    const seen = up.seen[n] as Record<string, string>;
    for (const [k, v] of Object.entries(CLIENT_TELEMETRY)) expect(seen[k.toLowerCase()]).toBe(v);
    for (const [k, v] of Object.entries(UPSTREAM_TELEMETRY)) expect(reply.headers[k]).toBe(v);
    expect(await stripped(gw, 'request')).toBe(reqBefore);
    expect(await stripped(gw, 'response')).toBe(resBefore);
  });

  it.each([
    ['DNT: 1', { DNT: '1' }],
    ['Sec-GPC: 1', { 'Sec-GPC': '1' }],
    ['DNT: 1 sent after the telemetry headers', { zzz: 'x', DNT: ' 1 ' }],
  ])('honorClientSignals: %s strips on a route whose optOut is off (HTTP/1.1)', async (_name, signal) => {
    const reqBefore = await stripped(gw, 'request');
    const n = up.seen.length;
    const reply = await h1(gw.port(), gw.pki, {
      path: '/off/x',
      headers: { ...CLIENT_TELEMETRY, ...CLIENT_KEEP, ...signal },
    });
    expect(reply.status).toBe(200);
    const seen = up.seen[n] as Record<string, string>;
    expect(present(seen, CLIENT_TELEMETRY_NAMES)).toEqual([]);
    expect(seen['x-app']).toBe('kept');
    expect(present(reply.headers, Object.keys(UPSTREAM_TELEMETRY))).toEqual([]);
    expect((await stripped(gw, 'request')) - reqBefore).toBe(CLIENT_TELEMETRY_NAMES.length);
  });

  it('honorClientSignals over HTTP/2: Sec-GPC: 1 strips on a route whose optOut is off', async () => {
    const session = h2session(gw.port(), gw.pki);
    try {
      const n = up.seen.length;
      const reply = await h2(session, {
        ':path': '/off/h2',
        traceparent: CLIENT_TELEMETRY.traceparent,
        'x-b3-sampled': '1',
        'sec-gpc': '1',
      });
      expect(reply.status).toBe(200);
      expect(present(up.seen[n] as Record<string, string>, ['traceparent', 'x-b3-sampled'])).toEqual([]);
      expect(present(reply.headers, Object.keys(UPSTREAM_TELEMETRY))).toEqual([]);
    } finally {
      session.close();
    }
  });

  it.each([
    ['DNT: 0', { DNT: '0' }],
    ['Sec-GPC: yes', { 'Sec-GPC': 'yes' }],
  ])('a signal other than "1" (%s) opts nothing out', async (_name, signal) => {
    const n = up.seen.length;
    const reply = await h1(gw.port(), gw.pki, {
      path: '/off/x',
      headers: { ...CLIENT_TELEMETRY, ...signal },
    });
    expect(reply.status).toBe(200);
    expect((up.seen[n] as Record<string, string>).traceparent).toBe(CLIENT_TELEMETRY.traceparent);
  });

  it('telemetry.optOut: false with honorClientSignals off passes everything, DNT or not', async () => {
    const before = await stripped(gwOff, 'request');
    const n = up.seen.length;
    const reply = await h1(gwOff.port(), gwOff.pki, {
      path: '/p',
      headers: { ...CLIENT_TELEMETRY, DNT: '1', 'Sec-GPC': '1' },
    });
    expect(reply.status).toBe(200);
    const seen = up.seen[n] as Record<string, string>;
    // Only the operator-added names of the other gateway are not on this one's list: the defaults pass.
    for (const [k, v] of Object.entries(CLIENT_TELEMETRY))
      if (!['x-custom-span', 'grpc-trace-bin'].includes(k)) expect(seen[k.toLowerCase()]).toBe(v);
    for (const [k, v] of Object.entries(UPSTREAM_TELEMETRY)) expect(reply.headers[k]).toBe(v);
    expect(await stripped(gwOff, 'request')).toBe(before);
  });

  it('the certificate and CRL gauges equal the notAfter of each certificate and the CRL nextUpdate', async () => {
    const text = (await adminGet(gw.app.adminPort() as number, '/metrics')).body;
    const all = samples(text);
    const gauge = (kind: string, index: string): number | undefined =>
      all.find(
        (s) =>
          s.name === 'portcullis_certificate_expiry_timestamp_seconds' &&
          s.labels.listener === 'main' &&
          s.labels.kind === kind &&
          s.labels.index === index,
      )?.value;
    const notAfter = (file: string): number =>
      Date.parse(new X509Certificate(readFileSync(file)).validTo) / 1000;
    expect(gauge('server', '0')).toBe(notAfter(gw.pki.server.cert));
    expect(gauge('ca', '0')).toBe(notAfter(gw.pki.ca));
    expect(gauge('upstream_ca', '0')).toBe(notAfter(gw.pki.ca));
    expect(gauge('upstream_client', '0')).toBe(notAfter(gw.pki.clients.alice.cert));
    const nextUpdate = parseCrl(readFileSync(gw.pki.crl, 'latin1')).nextUpdate as Date;
    const crl = all.find(
      (s) => s.name === 'portcullis_crl_next_update_timestamp_seconds' && s.labels.listener === 'main',
    );
    expect(crl?.value).toBe(nextUpdate.getTime() / 1000);
    // Bounded labels only: listener, kind, index.
    for (const s of all.filter((x) => x.name === 'portcullis_certificate_expiry_timestamp_seconds'))
      expect(Object.keys(s.labels).sort()).toEqual(['index', 'kind', 'listener']);
  });

  it('no label value in /metrics holds a path, a token or a certificate subject', async () => {
    const token = 'eyJhbGciOiJIUzI1NiJ9.c2VjcmV0LXRva2Vu.sig-telemetry-test';
    await h1(gw.port(), gw.pki, {
      path: '/secret-path/abc?access_token=qtoken123',
      headers: { authorization: `Bearer ${token}`, ...CLIENT_TELEMETRY },
    });
    await h1(gw.port(), gw.pki, {
      path: '/off/other-secret',
      headers: { authorization: `Bearer ${token}`, DNT: '1' },
    });
    await h1(gw.port(), gw.pki, { path: '/nope', client: 'bob', headers: { host: 'evil.example' } }).catch(
      () => undefined,
    );
    await h1(gw.port(), gw.pki, { path: '/tls-up/x' }); // upstream down: an upstream error series
    const text = (await adminGet(gw.app.adminPort() as number, '/metrics')).body;
    const values = samples(text).flatMap((s) => Object.values(s.labels));
    expect(values.length).toBeGreaterThan(10);
    const subjects = [gw.pki.server.cert, gw.pki.ca, gw.pki.clients.alice.cert, gw.pki.clients.bob.cert].map(
      (f) => new X509Certificate(readFileSync(f)).subject,
    );
    const forbidden = [
      '/',
      'secret-path',
      'other-secret',
      'qtoken123',
      token,
      'Bearer',
      'evil.example',
      'CN=',
      'Portcullis Test CA',
      ...subjects.flatMap((s) => s.split('\n')),
      // Client header values long enough to be recognisable ("1", "2" are digits of any version label).
      ...Object.values(CLIENT_TELEMETRY).filter((v) => v.length >= 6),
    ];
    for (const v of values)
      for (const f of forbidden)
        expect(v.includes(f), `label value ${JSON.stringify(v)} contains ${JSON.stringify(f)}`).toBe(false);
  });
});

describe('/readyz and certificate expiry', () => {
  it('answers 503 naming the listener once its server certificate has expired (checked against the clock)', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'portcullis-readyz-'));
    const pki = await writePki(join(dir, 'pki'));
    const file = join(dir, 'portcullis.yaml');
    await writeFile(
      file,
      stringify({
        admin: { enabled: true, listen: '127.0.0.1:0' },
        listeners: [tlsListener(pki, { name: 'edge' })],
      }),
    );
    const validTo = Date.parse(new X509Certificate(readFileSync(pki.server.cert)).validTo);
    let now = Date.now();
    const clock = { now: () => now, hrtime: () => systemClock.hrtime() };
    const app = await startApp(loadConfigFile(file), { logger: createLogger('silent'), clock });
    try {
      const port = app.adminPort() as number;
      expect((await adminGet(port, '/readyz')).status).toBe(200);
      now = validTo + 1000;
      const r = await adminGet(port, '/readyz');
      expect(r.status).toBe(503);
      const body = JSON.parse(r.body) as { ready: boolean; notReady: string[] };
      expect(body.ready).toBe(false);
      expect(body.notReady.some((s) => s.includes('listeners.edge') && s.includes('expired'))).toBe(true);
    } finally {
      await app.close(0);
      await rm(dir, { recursive: true, force: true });
    }
  });
});
