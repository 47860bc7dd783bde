/**
 * Issue 4 point 2, CONVENTIONS rule 8: metric label values come from closed sets, never from the request.
 * The real gateway is driven with requests whose path, query string, Host, headers, Bearer tokens (JWT
 * subject, opaque token) and client-certificate subject and SAN carry distinctive marker strings, with
 * methods outside the enum (over HTTP/1.1 and HTTP/2), and with refused connections; then `/metrics` is
 * scraped from the admin listener and
 * - no marker (nor a token, nor a client name) appears anywhere in the exposition;
 * - every label value of every `portcullis_` series (Node/process defaults aside) is in its closed set.
 */
import { connect as h2connect } from 'node:http2';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ERRORS } from '../../src/errors.js';
import { CONNECTION_REJECT_REASONS } from '../../src/observability/metrics.js';
import { CLOSE_REASONS } from '../../src/proxy/tcp-pipe.js';
import { TUNNEL_CLOSE_REASONS } from '../../src/proxy/websocket.js';
import { parseSamples, scrapeText, type Sample } from '../helpers/admin.js';
import { startGateway, type TestGateway } from '../helpers/gateway.js';
import { createFakeIdp, type FakeIdp } from '../helpers/idp.js';
import { mintTestPki } from '../helpers/pki.js';
import { mintClientCertificate, rawTcp, tlsAttempt, type ClientPem } from '../helpers/tls-probe.js';
import { startUpstream, type TestUpstream } from '../helpers/upstream.js';
import { STORE_FAILURE_REASONS } from '../../src/store/redis.js';

/** Distinctive strings put into every attacker-controlled part of the requests. */
const MARK = {
  path: 'mk-path-91c3',
  query: 'mk-query-5a0e',
  host: 'mk-host-0b7a',
  header: 'mk-header-77aa',
  telemetry: 'mk-trace-3f19',
  jwtSub: 'mk-jwt-sub-e41d',
  scope: 'mk-scope-c2b8',
  certCn: 'secret-subject-7f3a',
  certOu: 'mk-ou-8d21',
  certUri: 'mk-uri-6b40',
  method: 'MKMETHOD',
} as const;

const LISTENERS = ['web', 'comm'] as const;
const ROUTES = ['up', 'jwt', 'opaque'] as const;
const PROVIDERS = ['idp-jwt', 'idp-opaque'] as const;
const ERR_CODES = Object.keys(ERRORS);
const LATENCY_LE = [
  '0.0001',
  '0.00025',
  '0.0005',
  '0.001',
  '0.0025',
  '0.005',
  '0.01',
  '0.025',
  '0.05',
  '0.1',
  '0.25',
  '0.5',
  '1',
  '2.5',
  '5',
  '10',
  '+Inf',
];
const TCP_LE = ['0.01', '0.1', '1', '10', '60', '300', '1800', '3600', '14400', '86400', '+Inf'];

/** The closed set of each label, by label name; a function where the set is a pattern. */
const CLOSED: Record<string, readonly string[] | ((v: string) => boolean)> = {
  listener: LISTENERS,
  route: [...ROUTES, 'none'],
  method: ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'OTHER'],
  status_class: ['1xx', '2xx', '3xx', '4xx', '5xx', 'other'],
  provider: [...PROVIDERS, 'none'],
  alpn: ['h2', 'http/1.1', 'none'],
  kind: ['server', 'ca', 'upstream_ca', 'upstream_client'],
  index: (v) => /^\d{1,3}$/.test(v),
  // portcullis_build_info: the package's version and this Node.js release, nothing else.
  version: [(JSON.parse(readFileSync('package.json', 'utf8')) as { version: string }).version],
  node: [process.version.slice(1)],
};

/** Every `portcullis_` family (histograms by base name): its label names, and the values of `reason`,
 * `result` and `direction` it may use. Process and Node.js default metrics are checked apart. */
const FAMILIES: Record<
  string,
  {
    labels: readonly string[];
    reason?: readonly string[];
    result?: readonly string[];
    direction?: readonly string[];
    le?: readonly string[];
  }
> = {
  portcullis_http_requests_total: { labels: ['listener', 'route', 'method', 'status_class'] },
  portcullis_http_request_duration_seconds: { labels: ['listener', 'route'], le: LATENCY_LE },
  portcullis_upstream_response_duration_seconds: { labels: ['route'], le: LATENCY_LE },
  portcullis_http_denials_total: { labels: ['listener', 'reason'], reason: ERR_CODES },
  portcullis_upstream_errors_total: { labels: ['route', 'reason'], reason: ERR_CODES },
  portcullis_tls_rejected_connections_total: {
    labels: ['listener', 'reason'],
    reason: CONNECTION_REJECT_REASONS,
  },
  portcullis_tls_handshakes_total: { labels: ['listener', 'alpn'] },
  portcullis_websocket_tunnels_closed_total: {
    labels: ['listener', 'reason'],
    reason: TUNNEL_CLOSE_REASONS,
  },
  portcullis_active_connections: { labels: ['listener'] },
  portcullis_active_streams: { labels: ['listener'] },
  portcullis_tcp_bytes_total: { labels: ['listener', 'direction'], direction: ['in', 'out'] },
  portcullis_tcp_connections_total: { labels: ['listener', 'reason'], reason: CLOSE_REASONS },
  portcullis_tcp_connection_duration_seconds: { labels: ['listener'], le: TCP_LE },
  portcullis_telemetry_headers_stripped_total: { labels: ['direction'], direction: ['request', 'response'] },
  portcullis_certificate_expiry_timestamp_seconds: { labels: ['listener', 'kind', 'index'] },
  portcullis_crl_next_update_timestamp_seconds: { labels: ['listener', 'index'] },
  portcullis_tls_certificate_name_mismatch: { labels: ['listener'] },
  portcullis_auth_decisions_total: {
    labels: ['route', 'provider', 'result'],
    result: ['allow', ...ERR_CODES],
  },
  portcullis_auth_cache_entries: { labels: ['provider'] },
  portcullis_auth_cache_hits_total: { labels: ['provider'] },
  portcullis_auth_cache_misses_total: { labels: ['provider'] },
  portcullis_auth_cache_evictions_total: { labels: ['provider'] },
  portcullis_auth_idp_requests_total: { labels: ['provider'] },
  portcullis_auth_idp_failures_total: { labels: ['provider'] },
  portcullis_auth_stale_served_total: { labels: ['provider'] },
  portcullis_auth_reloads_total: { labels: ['provider'] },
  portcullis_auth_jwks_refreshes_total: { labels: ['provider', 'result'], result: ['success', 'failure'] },
  portcullis_auth_introspection_calls_total: {
    labels: ['provider', 'result'],
    result: ['active', 'inactive', 'invalid', 'error'],
  },
  portcullis_auth_introspection_duration_seconds: {
    labels: ['provider', 'result'],
    result: ['active', 'inactive', 'invalid', 'error'],
    le: LATENCY_LE,
  },
  portcullis_config_reloads_total: { labels: ['result'], result: ['success', 'failure'] },
  portcullis_config_last_reload_success_timestamp_seconds: { labels: [] },
  portcullis_build_info: { labels: ['version', 'node'] },
  portcullis_store_up: { labels: [] },
  portcullis_store_failures_total: { labels: ['reason'], reason: STORE_FAILURE_REASONS },
};

/** The family of a sample name: histogram series carry `_bucket`, `_count`, `_sum`. */
function familyOf(name: string): string {
  if (name in FAMILIES) return name;
  const base = name.replace(/_(bucket|count|sum)$/, '');
  return base;
}

describe('metrics labels: closed sets only, nothing from the request (issue 4 point 2)', () => {
  let idp: FakeIdp;
  let up: TestUpstream;
  let gw: TestGateway;
  let files: string;
  let port: number;
  let text: string;
  let samples: Sample[];
  let markerCert: ClientPem;
  let ca: Buffer;
  const secrets: string[] = [];
  const statuses: Record<string, number> = {};

  beforeAll(async () => {
    idp = await createFakeIdp();
    await idp.listen();
    up = await startUpstream();
    files = await mkdtemp(join(tmpdir(), 'portcullis-labels-'));
    const secretFile = join(files, 'secret');
    await writeFile(secretFile, `${idp.clientSecret}\n`, { mode: 0o600 });
    // Signed by the gateway's own CA (the per-process test PKI): it verifies, so its subject reaches the
    // identity parser, the XFCC header and the ACL — and must still never reach a label.
    const issued = mintClientCertificate(mintTestPki().ca, {
      subject: [
        { shortName: 'CN', value: MARK.certCn },
        { shortName: 'OU', value: MARK.certOu },
      ],
      uris: [`spiffe://${MARK.certUri}/client`],
    });
    markerCert = { cert: issued.certPem, key: issued.keyPem };
    // The same subject from an unknown CA: refused at the handshake.
    const stranger = mintClientCertificate(mintTestPki().otherCa, {
      subject: [{ shortName: 'CN', value: MARK.certCn }],
    });
    gw = await startGateway((pki) => {
      const tls = {
        cert: pki.server.cert,
        key: pki.server.key,
        clientCertificate: 'require',
        clientCa: pki.ca,
        crl: pki.crl,
      };
      return {
        admin: { enabled: true, listen: '127.0.0.1:0' },
        authProviders: {
          'idp-jwt': {
            type: 'jwt',
            issuer: idp.issuer,
            audience: 'api',
            jwksUri: idp.jwksUri,
            algorithms: ['ES256'],
          },
          'idp-opaque': {
            type: 'introspection',
            endpoint: idp.introspectionUri,
            clientId: idp.clientId,
            clientSecretFile: secretFile,
          },
        },
        listeners: [
          {
            name: 'web',
            listen: '127.0.0.1:0',
            tls,
            routes: [
              { id: 'up', match: { pathPrefix: '/up' }, upstream: up.url },
              {
                id: 'jwt',
                match: { pathPrefix: '/jwt' },
                upstream: up.url,
                auth: { providers: ['idp-jwt'], scopes: ['read'] },
              },
              {
                id: 'opaque',
                match: { pathPrefix: '/opaque' },
                upstream: up.url,
                auth: { providers: ['idp-opaque'], scopes: ['read'] },
              },
            ],
          },
          // Nothing listens on port 1: the accepted connection's upstream fails.
          {
            name: 'comm',
            listen: '127.0.0.1:0',
            protocol: 'tcp',
            tls,
            allowClients: ['CN=nobody-else'],
            upstream: 'tcp://127.0.0.1:1',
          },
        ],
      };
    });
    port = gw.port('web');
    ca = readFileSync(gw.pki.ca);

    const jwtGood = await idp.sign({ sub: MARK.jwtSub, aud: 'api', scope: `read ${MARK.scope}` });
    const jwtNarrow = await idp.sign({ sub: MARK.jwtSub, aud: 'api', scope: MARK.scope });
    const opaqueGood = idp.issueOpaque({
      active: true,
      sub: MARK.jwtSub,
      scope: 'read',
      client_id: MARK.scope,
      exp: Math.floor(Date.now() / 1000) + 600,
    });
    const opaqueUnknown = `mk-opaque-${'z'.repeat(24)}`;
    secrets.push(jwtGood, jwtNarrow, opaqueGood, opaqueUnknown);

    const raw = (method: string, path: string, headers: string[] = []): string =>
      `${method} ${path} HTTP/1.1\r\nHost: localhost:${port}\r\n${headers.map((h) => `${h}\r\n`).join('')}Connection: close\r\n\r\n`;
    const markedHeaders = [
      `X-Marker: ${MARK.header}`,
      `User-Agent: ${MARK.header}-agent`,
      `traceparent: 00-${MARK.telemetry.padEnd(32, '0').replace(/[^0-9a-f]/g, '0')}-00f067aa0ba902b7-01`,
      `baggage: k=${MARK.telemetry}`,
      `Cookie: session=${MARK.header}`,
    ];
    const h1 = async (key: string, request: string, client: ClientPem = markerCert): Promise<void> => {
      const r = await tlsAttempt(port, { ca, client, request });
      statuses[key] = r.status;
    };
    await h1('good', raw('GET', `/up/${MARK.path}?q=${MARK.query}&token=${jwtGood}`, markedHeaders));
    await h1('notFound', raw('GET', `/${MARK.path}/${jwtGood}?${MARK.query}`, markedHeaders));
    await h1('badHost', `GET /up/x HTTP/1.1\r\nHost: ${MARK.host}.example\r\nConnection: close\r\n\r\n`);
    await h1(
      'jwtGood',
      raw('GET', `/jwt/${MARK.path}`, [`Authorization: Bearer ${jwtGood}`, ...markedHeaders]),
    );
    await h1('jwtNarrow', raw('GET', `/jwt/${MARK.path}`, [`Authorization: Bearer ${jwtNarrow}`]));
    await h1(
      'jwtBad',
      raw('GET', `/jwt/${MARK.path}`, [`Authorization: Bearer ${jwtGood.slice(0, -4)}AAAA`]),
    );
    await h1('opaqueGood', raw('GET', `/opaque/${MARK.path}`, [`Authorization: Bearer ${opaqueGood}`]));
    await h1('opaqueUnknown', raw('GET', `/opaque/${MARK.path}`, [`Authorization: Bearer ${opaqueUnknown}`]));
    await h1(
      'basic',
      raw('GET', `/jwt/${MARK.path}`, [
        `Authorization: Basic ${Buffer.from(`${MARK.jwtSub}:pw`).toString('base64')}`,
      ]),
    );
    // llhttp knows PROPFIND (WebDAV); the gateway's method enum does not: OTHER.
    await h1('propfind', raw('PROPFIND', `/up/${MARK.path}`));
    // llhttp refuses a method it does not know: a 400 from the parser, never a label.
    await h1('unknownH1', raw(MARK.method, `/up/${MARK.path}`));
    // HTTP/2 carries any token as :method.
    statuses['unknownH2'] = await new Promise<number>((resolve) => {
      const session = h2connect(`https://localhost:${port}`, {
        ca,
        cert: markerCert.cert,
        key: markerCert.key,
        host: '127.0.0.1',
        port,
      });
      session.on('error', () => resolve(0));
      const stream = session.request({
        ':method': 'FOOBAR',
        ':path': `/up/${MARK.path}?${MARK.query}`,
        'x-marker': MARK.header,
      });
      stream.on('response', (h) => {
        stream.resume();
        stream.on('close', () => {
          session.close();
          resolve(Number(h[':status']));
        });
      });
      stream.on('error', () => resolve(0));
      stream.end();
    });
    // Refused connections: a stranger's certificate with the marker subject, plaintext with marker bytes, an ACL miss.
    statuses['stranger'] = (
      await tlsAttempt(port, { ca, client: { cert: stranger.certPem, key: stranger.keyPem } })
    ).status;
    await rawTcp(port, [`GET /${MARK.path} HTTP/1.1\r\nHost: ${MARK.host}\r\n\r\n`]);
    await tlsAttempt(gw.port('comm'), { ca, client: markerCert, request: `${MARK.path}\n` });

    text = await scrapeText(gw.app.adminPort() as number);
    samples = parseSamples(text);
  });

  afterAll(async () => {
    await gw?.close();
    await up?.close();
    await idp?.close();
    if (files) await rm(files, { recursive: true, force: true });
  });

  it('the requests went where intended (so the scrape covers allow, deny, 404, 400, OTHER and refusals)', () => {
    expect(statuses).toEqual({
      good: 200,
      notFound: 404,
      badHost: expect.any(Number) as number,
      jwtGood: 200,
      jwtNarrow: 403,
      jwtBad: 401,
      opaqueGood: 200,
      opaqueUnknown: 401,
      basic: 401,
      propfind: 200,
      unknownH1: 400,
      // Answered (whatever the method policy says) and counted: see the OTHER test below.
      unknownH2: expect.any(Number) as number,
      stranger: 0,
    });
    expect(statuses['badHost']).toBeGreaterThanOrEqual(400);
    expect(statuses['unknownH2']).toBeGreaterThanOrEqual(200);
  });

  it('no marker, token or subject appears anywhere in /metrics', () => {
    const lower = text.toLowerCase();
    for (const m of [...Object.values(MARK), 'mk-', 'alice', 'spiffe', 'CN='])
      expect(lower, m).not.toContain(m.toLowerCase());
    for (const s of secrets) {
      expect(text).not.toContain(s);
      // Any 16-character piece of a token (a prefix, a hash fragment would be different but a slice is not).
      expect(text).not.toContain(s.slice(10, 26));
    }
  });

  it('every label value of every portcullis_ series is from its closed set', () => {
    const ours = samples.filter((s) => !/^portcullis_(process|nodejs)_/.test(s.name));
    expect(ours.length).toBeGreaterThan(50);
    const bad: string[] = [];
    for (const s of ours) {
      const family = familyOf(s.name);
      const spec = FAMILIES[family];
      if (spec === undefined) {
        bad.push(`unknown family ${s.name}`);
        continue;
      }
      const isBucket = s.name.endsWith('_bucket');
      const expected = [...spec.labels, ...(isBucket ? ['le'] : [])].sort();
      if (JSON.stringify(Object.keys(s.labels).sort()) !== JSON.stringify(expected))
        bad.push(`${s.name} labels ${JSON.stringify(s.labels)}`);
      for (const [k, v] of Object.entries(s.labels)) {
        const set =
          k === 'reason'
            ? spec.reason
            : k === 'result'
              ? spec.result
              : k === 'direction'
                ? spec.direction
                : k === 'le'
                  ? spec.le
                  : CLOSED[k];
        const ok = set === undefined ? false : typeof set === 'function' ? set(v) : set.includes(v);
        if (!ok) bad.push(`${s.name} ${k}="${v}"`);
      }
    }
    expect(bad).toEqual([]);
  });

  it('process and Node.js default metrics carry only their own fixed labels', () => {
    const defaults = samples.filter((s) => /^portcullis_(process|nodejs)_/.test(s.name));
    expect(defaults.length).toBeGreaterThan(10);
    const allowed = new Set(['type', 'space', 'kind', 'version', 'major', 'minor', 'patch', 'le']);
    const bad = defaults.flatMap((s) =>
      Object.keys(s.labels)
        .filter((k) => !allowed.has(k))
        .map((k) => `${s.name} ${k}`),
    );
    expect(bad).toEqual([]);
  });

  it('methods outside the enum land in OTHER: PROPFIND over HTTP/1.1, FOOBAR over HTTP/2', () => {
    const other = samples.filter(
      (s) =>
        s.name === 'portcullis_http_requests_total' &&
        s.labels['method'] === 'OTHER' &&
        s.labels['route'] === 'up',
    );
    expect(other.reduce((n, s) => n + s.value, 0)).toBe(2);
    expect(
      samples.some(
        (s) =>
          s.labels['method'] !== undefined &&
          !(CLOSED['method'] as readonly string[]).includes(s.labels['method']),
      ),
    ).toBe(false);
  });

  it('the refusals are counted by reason, without the subject', () => {
    const rejected = (listener: string, reason: string): number =>
      samples
        .filter(
          (s) =>
            s.name === 'portcullis_tls_rejected_connections_total' &&
            s.labels['listener'] === listener &&
            s.labels['reason'] === reason,
        )
        .reduce((n, s) => n + s.value, 0);
    expect(rejected('web', 'bad_client_cert')).toBe(1);
    expect(rejected('web', 'plaintext')).toBe(1);
    expect(rejected('comm', 'acl')).toBe(1);
  });
});
